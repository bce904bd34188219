//! [`Value`]: one plain-old-data value in shared memory with its own robust
//! lock (Python's `multiprocessing.Value`).
//!
//! Layout after the segment header: the 16-byte robust lock, then the value
//! at the next multiple of its alignment — for small types on the lock's
//! cache line, so a locked increment touches one line.

use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::Duration;

use super::pod::Pod;
use super::robust::{self, RawLock};
use super::segment::{type_hash, Kind, Segment, HEADER_SIZE};
use super::wait::Deadline;
use crate::error::Error;

/// A value of a plain-old-data type in shared memory.
///
/// Every access goes through its lock, as in Python (`Value(..., lock=True)`):
/// [`load`](Self::load)/[`store`](Self::store) take it briefly,
/// [`get_lock`](Self::get_lock) holds it for a read-modify-write.
///
/// # Examples
/// ```
/// let counter = mproc_core::Value::new(0i32)?;
/// *counter.get_lock() += 1;
/// counter.store(counter.load() + 1);
/// assert_eq!(counter.load(), 2);
/// # Ok::<(), mproc_core::Error>(())
/// ```
pub struct Value<T: Pod> {
    seg: Arc<Segment>,
    _t: PhantomData<T>,
}

impl<T: Pod> Clone for Value<T> {
    fn clone(&self) -> Self {
        Value {
            seg: self.seg.clone(),
            _t: PhantomData,
        }
    }
}

impl<T: Pod + fmt::Debug> fmt::Debug for Value<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never wait in `Debug`: the caller may hold the lock itself.
        match self.try_get_lock() {
            Some(g) => f.debug_tuple("Value").field(&*g).finish(),
            None => f.write_str("Value(<locked>)"),
        }
    }
}

/// Holds a [`Value`]'s lock; derefs to the value.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct ValueGuard<'a, T: Pod> {
    value: &'a Value<T>,
    owner_died: bool,
}

impl<T: Pod + fmt::Debug> fmt::Debug for ValueGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ValueGuard")
            .field("value", &**self)
            .field("owner_died", &self.owner_died)
            .finish()
    }
}

const fn data_offset<T>() -> usize {
    (HEADER_SIZE + std::mem::size_of::<RawLock>()).next_multiple_of(std::mem::align_of::<T>())
}

impl<T: Pod> Value<T> {
    /// Puts `v` in a new shared segment.
    ///
    /// # Errors
    /// [`ErrorKind::Io`](crate::ErrorKind::Io) when no shared memory can be
    /// had.
    pub fn new(v: T) -> Result<Value<T>, Error> {
        let size = data_offset::<T>() - HEADER_SIZE + std::mem::size_of::<T>();
        let seg = Segment::create(Kind::Value, type_hash::<T>(), size)?;
        let value: Value<T> = Value {
            seg,
            _t: PhantomData,
        };
        let p = value.ptr();
        // SAFETY: `ptr` is aligned and inside the segment (see `ptr`); the
        // segment was created just now and no other handle exists yet.
        unsafe { p.write(v) };
        Ok(value)
    }

    fn raw(&self) -> &RawLock {
        self.seg.state()
    }

    fn ptr(&self) -> *mut T {
        let off = data_offset::<T>();
        debug_assert!(off + std::mem::size_of::<T>() <= self.seg.len());
        let p = self.seg.ptr_at(off).cast::<T>();
        debug_assert_eq!(p as usize % std::mem::align_of::<T>(), 0);
        p
    }

    fn guard(&self, owner_died: bool) -> ValueGuard<'_, T> {
        ValueGuard {
            value: self,
            owner_died,
        }
    }

    /// Takes the value's lock; the guard derefs to the value.
    ///
    /// The lock is not re-entrant: while this thread holds the guard, use
    /// the guard — [`load`](Self::load) and [`store`](Self::store) would wait
    /// for it forever.
    pub fn get_lock(&self) -> ValueGuard<'_, T> {
        let died = self
            .raw()
            .lock(Deadline::NEVER)
            .expect("a wait without deadline only ends with the lock");
        self.guard(died)
    }

    /// Takes the lock if it is free, without waiting.
    pub fn try_get_lock(&self) -> Option<ValueGuard<'_, T>> {
        self.raw().try_lock_or_recover().map(|d| self.guard(d))
    }

    /// Waits at most `d` for the lock.
    pub fn get_lock_timeout(&self, d: Duration) -> Option<ValueGuard<'_, T>> {
        self.raw().lock(Deadline::after(d)).map(|d| self.guard(d))
    }

    /// Takes the lock without blocking the async runtime's thread.
    pub async fn get_lock_async(&self) -> ValueGuard<'_, T> {
        let died = robust::lock_async(&self.seg, HEADER_SIZE).await;
        self.guard(died)
    }

    /// Reads the value (under the lock).
    pub fn load(&self) -> T {
        *self.get_lock()
    }

    /// Writes the value (under the lock).
    pub fn store(&self, v: T) {
        *self.get_lock() = v;
    }
}

impl<T: Pod> ValueGuard<'_, T> {
    /// True when the previous owner died holding the lock: the value may be
    /// half-updated.
    pub fn owner_died(&self) -> bool {
        self.owner_died
    }
}

impl<T: Pod> Deref for ValueGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        let p = self.value.ptr();
        debug_assert!(self.value.raw().held_here());
        // SAFETY: `p` is aligned and in bounds; this process holds the lock,
        // which every access to the value takes, so nothing writes it
        // meanwhile. `T: Pod` is valid for any bytes a `T` was written as
        // (and for zeros).
        unsafe { &*p }
    }
}

impl<T: Pod> DerefMut for ValueGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        let p = self.value.ptr();
        debug_assert!(self.value.raw().held_here());
        // SAFETY: as in `deref`; `&mut self` makes this the only reference
        // derived from the guard, and the lock excludes other processes.
        unsafe { &mut *p }
    }
}

impl<T: Pod> Drop for ValueGuard<'_, T> {
    fn drop(&mut self) {
        self.value.raw().unlock();
    }
}

impl<T: Pod> serde::Serialize for Value<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        super::segment::serialize_handle(&self.seg, s)
    }
}

impl<'de, T: Pod> serde::Deserialize<'de> for Value<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let seg = super::segment::deserialize_handle(d, Kind::Value, type_hash::<T>())?;
        Ok(Value {
            seg,
            _t: PhantomData,
        })
    }
}
