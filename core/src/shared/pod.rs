//! [`Pod`]: the plain-old-data types that [`Value`](super::Value) and
//! [`Array`](super::Array) may hold in shared memory.

mod sealed {
    pub trait Sealed {}
}

/// A plain-old-data type: copyable, without pointers, valid for the all-zero
/// bit pattern, and the same in every process. Implemented for the integers,
/// floats, `bool`, `char` and fixed arrays of them; sealed, so other types
/// are refused at compile time.
///
/// ```compile_fail
/// let v = mproc::Value::new(String::new()); // String is not Pod
/// ```
pub trait Pod: Copy + Send + Sync + 'static + sealed::Sealed {}

macro_rules! pod {
    ($($t:ty),*) => {$(
        impl sealed::Sealed for $t {}
        impl Pod for $t {}
    )*};
}

pod!(i8, i16, i32, i64, i128, isize, u8, u16, u32, u64, u128, usize, f32, f64, bool, char);

impl<T: Pod, const N: usize> sealed::Sealed for [T; N] {}
impl<T: Pod, const N: usize> Pod for [T; N] {}
