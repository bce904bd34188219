//! [`Array`]: a fixed-length array of plain-old-data values in shared memory
//! with its own robust lock (Python's `multiprocessing.Array`).
//!
//! Layout after the segment header: the 16-byte robust lock, the length
//! (`u64`), then the elements at the next multiple of their alignment.

use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::pod::Pod;
use super::robust::{self, RawLock};
use super::segment::{type_hash, Kind, Segment, SharedState, HEADER_SIZE};
use super::wait::Deadline;
use crate::error::{Error, ErrorKind};

#[repr(C)]
struct State {
    lock: RawLock,
    len: AtomicU64,
}

// SAFETY: repr(C), atomics only.
unsafe impl SharedState for State {}

/// A fixed-length array of a plain-old-data type in shared memory.
///
/// Element access takes the lock briefly, as in Python; hold
/// [`get_lock`](Self::get_lock) to work on the whole slice.
///
/// # Examples
/// ```
/// let arr = mproc_core::Array::from_slice(&[1.0f64, 2.0, 3.0, 4.0])?;
/// for x in arr.get_lock().iter_mut() {
///     *x *= 2.0;
/// }
/// assert_eq!(arr.to_vec(), [2.0, 4.0, 6.0, 8.0]);
/// assert_eq!(arr.get(3), 8.0);
/// # Ok::<(), mproc_core::Error>(())
/// ```
pub struct Array<T: Pod> {
    seg: Arc<Segment>,
    len: usize,
    _t: PhantomData<T>,
}

impl<T: Pod> Clone for Array<T> {
    fn clone(&self) -> Self {
        Array {
            seg: self.seg.clone(),
            len: self.len,
            _t: PhantomData,
        }
    }
}

impl<T: Pod + fmt::Debug> fmt::Debug for Array<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never wait in `Debug`: the caller may hold the lock itself.
        match self.try_get_lock() {
            Some(g) => f.debug_tuple("Array").field(&&*g).finish(),
            None => write!(f, "Array(<locked>, len {})", self.len),
        }
    }
}

/// Holds an [`Array`]'s lock; derefs to the elements as a slice.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct ArrayGuard<'a, T: Pod> {
    array: &'a Array<T>,
    owner_died: bool,
}

impl<T: Pod + fmt::Debug> fmt::Debug for ArrayGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ArrayGuard")
            .field("items", &&**self)
            .field("owner_died", &self.owner_died)
            .finish()
    }
}

const fn data_offset<T>() -> usize {
    (HEADER_SIZE + std::mem::size_of::<State>()).next_multiple_of(std::mem::align_of::<T>())
}

impl<T: Pod> Array<T> {
    fn create(len: usize) -> Result<Array<T>, Error> {
        let bytes = len
            .checked_mul(std::mem::size_of::<T>())
            .and_then(|b| b.checked_add(data_offset::<T>()))
            .filter(|b| *b <= isize::MAX as usize / 2)
            .ok_or_else(|| Error::new(ErrorKind::Io, "shared array too large"))?;
        let seg = Segment::create(Kind::Array, type_hash::<T>(), bytes - HEADER_SIZE)?;
        seg.state::<State>()
            .len
            .store(len as u64, Ordering::Relaxed);
        Ok(Array {
            seg,
            len,
            _t: PhantomData,
        })
    }

    /// An array of `n` zeros (`false`, `'\0'`, `0.0` …).
    ///
    /// # Errors
    /// [`ErrorKind::Io`](crate::ErrorKind::Io) when no shared memory can be
    /// had.
    pub fn zeroed(n: usize) -> Result<Array<T>, Error> {
        // A fresh memfd reads as zeros, which is a valid `T: Pod`.
        Self::create(n)
    }

    /// An array holding a copy of `items`.
    ///
    /// # Errors
    /// [`ErrorKind::Io`](crate::ErrorKind::Io) when no shared memory can be
    /// had.
    pub fn from_slice(items: &[T]) -> Result<Array<T>, Error> {
        let a = Self::create(items.len())?;
        a.get_lock().copy_from_slice(items);
        Ok(a)
    }

    fn state(&self) -> &State {
        self.seg.state()
    }

    fn ptr(&self) -> *mut T {
        let off = data_offset::<T>();
        debug_assert!(off + self.len * std::mem::size_of::<T>() <= self.seg.len());
        let p = self.seg.ptr_at(off).cast::<T>();
        debug_assert_eq!(p as usize % std::mem::align_of::<T>(), 0);
        p
    }

    fn guard(&self, owner_died: bool) -> ArrayGuard<'_, T> {
        ArrayGuard {
            array: self,
            owner_died,
        }
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Takes the array's lock; the guard derefs to `[T]`.
    ///
    /// The lock is not re-entrant: while this thread holds the guard, use
    /// the guard — [`get`](Self::get), [`set`](Self::set) and
    /// [`to_vec`](Self::to_vec) would wait for it forever.
    pub fn get_lock(&self) -> ArrayGuard<'_, T> {
        let died = self
            .state()
            .lock
            .lock(Deadline::NEVER)
            .expect("a wait without deadline only ends with the lock");
        self.guard(died)
    }

    /// Takes the lock if it is free, without waiting.
    pub fn try_get_lock(&self) -> Option<ArrayGuard<'_, T>> {
        self.state()
            .lock
            .try_lock_or_recover()
            .map(|d| self.guard(d))
    }

    /// Waits at most `d` for the lock.
    pub fn get_lock_timeout(&self, d: Duration) -> Option<ArrayGuard<'_, T>> {
        self.state()
            .lock
            .lock(Deadline::after(d))
            .map(|d| self.guard(d))
    }

    /// Takes the lock without blocking the async runtime's thread.
    pub async fn get_lock_async(&self) -> ArrayGuard<'_, T> {
        let died = robust::lock_async(&self.seg, HEADER_SIZE).await;
        self.guard(died)
    }

    /// The element at `i` (under the lock).
    ///
    /// # Panics
    /// When `i >= len()`, like slice indexing.
    pub fn get(&self, i: usize) -> T {
        self.get_lock()[i]
    }

    /// Writes the element at `i` (under the lock).
    ///
    /// # Panics
    /// When `i >= len()`, like slice indexing.
    pub fn set(&self, i: usize, v: T) {
        self.get_lock()[i] = v;
    }

    /// A copy of all elements (under the lock).
    pub fn to_vec(&self) -> Vec<T> {
        self.get_lock().to_vec()
    }
}

impl<T: Pod> ArrayGuard<'_, T> {
    /// True when the previous owner died holding the lock: elements may be
    /// half-updated.
    pub fn owner_died(&self) -> bool {
        self.owner_died
    }
}

impl<T: Pod> Deref for ArrayGuard<'_, T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        let a = self.array;
        debug_assert!(a.state().lock.held_here());
        // SAFETY: `ptr` is aligned and `len` elements fit in the segment
        // (asserted in `ptr`); the lock, which every access takes, is held by
        // this process; any bytes written as `T`, and zeros, are valid `T`.
        unsafe { std::slice::from_raw_parts(a.ptr(), a.len) }
    }
}

impl<T: Pod> DerefMut for ArrayGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut [T] {
        let a = self.array;
        debug_assert!(a.state().lock.held_here());
        // SAFETY: as in `deref`; `&mut self` makes this the only slice
        // derived from the guard.
        unsafe { std::slice::from_raw_parts_mut(a.ptr(), a.len) }
    }
}

impl<T: Pod> Drop for ArrayGuard<'_, T> {
    fn drop(&mut self) {
        self.array.state().lock.unlock();
    }
}

impl<T: Pod> serde::Serialize for Array<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        super::segment::serialize_handle(&self.seg, s)
    }
}

impl<'de, T: Pod> serde::Deserialize<'de> for Array<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let seg = super::segment::deserialize_handle(d, Kind::Array, type_hash::<T>())?;
        let len = seg.state::<State>().len.load(Ordering::Relaxed) as usize;
        let bytes = len
            .checked_mul(std::mem::size_of::<T>())
            .and_then(|b| b.checked_add(data_offset::<T>()));
        if bytes.is_none_or(|b| b > seg.len()) {
            return Err(serde::de::Error::custom("shared array header is corrupt"));
        }
        Ok(Array {
            seg,
            len,
            _t: PhantomData,
        })
    }
}
