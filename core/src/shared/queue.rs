//! [`Queue`], [`SimpleQueue`] and [`JoinableQueue`]: multi-producer,
//! multi-consumer queues of any serde type between processes, on one shared
//! byte ring (`ring/`, protocol in `README.md`).
//!
//! Items are encoded with postcard into a per-thread buffer, then copied into
//! the ring under the producer lock; a consumer decodes straight from the
//! ring under the consumer lock. There is no broker process.
//!
//! # Capacity
//!
//! A queue holds up to [`QUEUE_BYTES`] (1 GiB) of encoded items waiting at
//! once (a put past that waits, like a bounded queue); `Queue::bounded(n)`
//! also limits the number of items to `n`. One item may be at most
//! 1 GiB − 8 bytes encoded.
//!
//! Neither memory nor address space is taken up front. The data area starts
//! at 64 KiB and doubles, in place, when a put does not fit (`ring/`), so
//! each process that uses a queue maps a window as large as the most the
//! queue has held, not 1 GiB: many queues fit under a `ulimit -v`. Memory is
//! used only as bytes are written, and for large areas consumed chunks are
//! given back to the kernel, so memory follows what is queued, not what
//! passed through.

use std::cell::RefCell;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::ring::{Ring, RingError};
use super::segment::{decode_error_message, type_hash, Kind, Segment, HEADER_SIZE};
use super::wait::{self, Deadline};
use crate::error::{Error, ErrorKind, QueueError};

/// The most bytes of encoded items a queue can hold at once.
///
/// A limit, not a reservation: a queue's data area starts at 64 KiB and
/// grows by doubling up to this size when items do not fit, and the address
/// space it takes in each process follows its current size.
pub const QUEUE_BYTES: usize = 1 << 30;

/// The first size of a queue's data area.
const INITIAL_BYTES: usize = 64 << 10;

const DATA_OFFSET: usize = 4096;

fn layout(max: usize) -> Ring {
    Ring::at(HEADER_SIZE, DATA_OFFSET, max, 0)
}

const _: () = assert!(HEADER_SIZE + Ring::CTRL_SIZE <= DATA_OFFSET);

thread_local! {
    static BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Encodes `v` into a reused per-thread buffer and hands the bytes to `f`.
pub(crate) fn with_encoded<T: Serialize, R>(
    v: &T,
    f: impl FnOnce(&[u8]) -> R,
) -> Result<R, postcard::Error> {
    BUF.with(|b| match b.try_borrow_mut() {
        Ok(mut buf) => {
            buf.clear();
            postcard::to_io(v, &mut *buf)?;
            let r = f(&buf);
            if buf.capacity() > 1 << 20 {
                *buf = Vec::new();
            }
            Ok(r)
        }
        // Re-entered from a Serialize impl: use a fresh buffer.
        Err(_) => Ok(f(&postcard::to_stdvec(v)?)),
    })
}

fn ring_err(e: RingError, size: usize, ring: &Ring) -> QueueError {
    match e {
        RingError::Empty => QueueError::Empty,
        RingError::Full => QueueError::Full,
        RingError::Closed => QueueError::Closed,
        RingError::TooLarge => QueueError::TooLarge {
            size,
            max: ring.max_payload(),
        },
        RingError::NoMemory => QueueError::OutOfMemory,
    }
}

fn encoding(e: postcard::Error) -> QueueError {
    QueueError::Encoding {
        message: e.to_string(),
    }
}

fn decoding(e: postcard::Error) -> QueueError {
    QueueError::Encoding {
        message: decode_error_message(&e),
    }
}

/// The shared implementation of the three queue types.
struct Core<T> {
    seg: Arc<Segment>,
    ring: Ring,
    _t: PhantomData<fn(T) -> T>,
}

impl<T> Clone for Core<T> {
    fn clone(&self) -> Self {
        Core {
            seg: self.seg.clone(),
            ring: self.ring,
            _t: PhantomData,
        }
    }
}

impl<T> Core<T> {
    /// The queue in a received segment; `None` when its header is corrupt.
    fn open(seg: Arc<Segment>) -> Option<Core<T>> {
        let ring = Ring::open(&seg, HEADER_SIZE, DATA_OFFSET, 0)?;
        Some(Core {
            seg,
            ring,
            _t: PhantomData,
        })
    }
}

impl<T: Serialize + DeserializeOwned> Core<T> {
    /// A queue whose data area starts at `initial` bytes and may grow to
    /// `max` (powers of two).
    fn create(cap: Option<usize>, hash: u64, initial: usize, max: usize) -> Result<Core<T>, Error> {
        let cap = match cap {
            None => 0,
            Some(0) => {
                return Err(Error::new(
                    ErrorKind::Queue,
                    "a bounded queue needs room for at least one item",
                ))
            }
            Some(n) => u32::try_from(n).unwrap_or(u32::MAX).min(i32::MAX as u32),
        };
        let ring = layout(max);
        let seg = Segment::create_sparse(Kind::Queue, hash, DATA_OFFSET, DATA_OFFSET + max)?;
        ring.init(&seg, cap, initial);
        Ok(Core {
            seg,
            ring,
            _t: PhantomData,
        })
    }

    fn put(&self, v: &T, deadline: Deadline, stall: Option<Duration>) -> Result<(), QueueError> {
        with_encoded(v, |bytes| {
            self.ring
                .put_stalled(&self.seg, bytes, deadline, &mut || false, stall)
                .map_err(|e| ring_err(e, bytes.len(), &self.ring))
        })
        .map_err(encoding)?
    }

    async fn put_async(&self, v: &T) -> Result<(), QueueError> {
        let bytes = postcard::to_stdvec(v).map_err(encoding)?;
        loop {
            match self
                .ring
                .put(&self.seg, &bytes, Deadline::now(), &mut || false)
            {
                Err(RingError::Full) => {
                    let (seg, ring, n) = (self.seg.clone(), self.ring, bytes.len());
                    wait::off_runtime(move || ring.wait_writable(&seg, n)).await;
                }
                r => return r.map_err(|e| ring_err(e, bytes.len(), &self.ring)),
            }
        }
    }

    fn get(&self, deadline: Deadline, stall: Option<Duration>) -> Result<T, QueueError> {
        self.ring
            .get_stalled(
                &self.seg,
                deadline,
                &mut || false,
                |b| postcard::from_bytes::<T>(b),
                stall,
            )
            .map_err(|e| ring_err(e, 0, &self.ring))?
            .map_err(decoding)
    }

    async fn get_async(&self) -> Result<T, QueueError> {
        loop {
            match self.get(Deadline::now(), None) {
                Err(QueueError::Empty) => {
                    let (seg, ring) = (self.seg.clone(), self.ring);
                    wait::off_runtime(move || ring.wait_readable(&seg)).await;
                }
                r => return r,
            }
        }
    }
}

macro_rules! queue_api {
    ($ty:ident) => {
        impl<T> Clone for $ty<T> {
            fn clone(&self) -> Self {
                $ty {
                    core: self.core.clone(),
                }
            }
        }

        impl<T> fmt::Debug for $ty<T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($ty))
                    .field("len", &self.core.ring.len(&self.core.seg))
                    .field("closed", &self.core.ring.is_closed(&self.core.seg))
                    .finish()
            }
        }

        impl<T: Serialize + DeserializeOwned> $ty<T> {
            /// Adds an item, waiting while the queue is full.
            ///
            /// # Errors
            /// [`QueueError::Closed`] after [`close`](Self::close);
            /// [`QueueError::TooLarge`] / [`QueueError::Encoding`] when the
            /// item cannot be stored.
            pub fn put(&self, item: T) -> Result<(), QueueError> {
                self.core.put(&item, Deadline::NEVER, None)
            }

            /// Adds an item, waiting at most `d` for room.
            ///
            /// # Errors
            /// [`QueueError::Full`] on timeout, else as [`put`](Self::put).
            pub fn put_timeout(&self, item: T, d: Duration) -> Result<(), QueueError> {
                self.core.put(&item, Deadline::after(d), None)
            }

            /// Adds an item if there is room now.
            ///
            /// # Errors
            /// [`QueueError::Full`] when there is none, else as
            /// [`put`](Self::put).
            pub fn try_put(&self, item: T) -> Result<(), QueueError> {
                self.core.put(&item, Deadline::now(), None)
            }

            /// Adds an item, waiting for room without blocking the async
            /// runtime's thread.
            ///
            /// # Cancel safety
            /// The item is stored only on the polling thread: a dropped
            /// future either stored it whole or not at all.
            ///
            /// # Errors
            /// As [`put`](Self::put).
            pub async fn put_async(&self, item: T) -> Result<(), QueueError> {
                self.core.put_async(&item).await
            }

            /// Removes and returns the oldest item, waiting while the queue
            /// is empty.
            ///
            /// # Errors
            /// [`QueueError::Closed`] when the queue is closed and empty.
            pub fn get(&self) -> Result<T, QueueError> {
                self.core.get(Deadline::NEVER, None)
            }

            /// As [`get`](Self::get), waiting at most `d`.
            ///
            /// # Errors
            /// [`QueueError::Empty`] on timeout, else as [`get`](Self::get).
            pub fn get_timeout(&self, d: Duration) -> Result<T, QueueError> {
                self.core.get(Deadline::after(d), None)
            }

            /// Removes the oldest item if there is one now.
            ///
            /// # Errors
            /// [`QueueError::Empty`] when there is none (or another consumer
            /// is taking one right now), else as [`get`](Self::get).
            pub fn try_get(&self) -> Result<T, QueueError> {
                self.core.get(Deadline::now(), None)
            }

            /// As [`get`](Self::get), without blocking the async runtime's
            /// thread.
            ///
            /// # Cancel safety
            /// Cancel-safe: items are only taken on the polling thread, so a
            /// dropped future loses none.
            ///
            /// # Errors
            /// As [`get`](Self::get).
            pub async fn get_async(&self) -> Result<T, QueueError> {
                self.core.get_async().await
            }

            /// Crash-test hook, not API: a `put` that sleeps `stall` after
            /// writing the record, before making it visible.
            #[doc(hidden)]
            pub fn __put_stalled(&self, item: T, stall: Duration) -> Result<(), QueueError> {
                self.core.put(&item, Deadline::NEVER, Some(stall))
            }

            /// Crash-test hook, not API: a `get` that sleeps `stall` after
            /// decoding the item, before consuming it.
            #[doc(hidden)]
            pub fn __get_stalled(&self, stall: Duration) -> Result<T, QueueError> {
                self.core.get(Deadline::NEVER, Some(stall))
            }
        }

        impl<T> $ty<T> {
            /// The number of items waiting (a snapshot: other processes may
            /// change it at once).
            pub fn len(&self) -> usize {
                self.core.ring.len(&self.core.seg)
            }

            /// True when no item is waiting (a snapshot).
            pub fn is_empty(&self) -> bool {
                self.len() == 0
            }

            /// Closes the queue for every process: later puts fail with
            /// [`QueueError::Closed`]; gets return what is left, then fail
            /// with `Closed` instead of waiting. Waiters are woken.
            pub fn close(&self) {
                self.core.ring.close(&self.core.seg)
            }

            /// True once the queue was closed.
            pub fn is_closed(&self) -> bool {
                self.core.ring.is_closed(&self.core.seg)
            }

            /// The item bound of a bounded queue.
            pub fn capacity(&self) -> Option<usize> {
                self.core.ring.cap(&self.core.seg)
            }
        }

        impl<T> serde::Serialize for $ty<T> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                super::segment::serialize_handle(&self.core.seg, s)
            }
        }

        impl<'de, T> serde::Deserialize<'de> for $ty<T> {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let seg =
                    super::segment::deserialize_handle(d, Kind::Queue, type_hash::<$ty<T>>())?;
                Ok($ty {
                    core: Core::open(seg).ok_or_else(|| {
                        serde::de::Error::custom("shared queue header is corrupt")
                    })?,
                })
            }
        }
    };
}

/// A first-in, first-out queue between processes (Python's
/// `multiprocessing.Queue`).
///
/// A cheap handle: clones, and copies passed to tasks or processes as
/// arguments, are the same queue. Many processes may put and get at once;
/// each producer's items arrive in the order it put them. A consumer killed
/// in the middle of a `get` loses no item (the record is consumed by one
/// atomic store after it was decoded), and a producer killed in the middle of
/// a `put` leaves nothing behind (the record becomes visible by one atomic
/// store after it was written).
///
/// # Examples
/// ```
/// let q: mproc::Queue<String> = mproc::Queue::new()?;
/// q.put("Data from worker".to_string())?;
/// assert_eq!(q.get()?, "Data from worker");
/// assert_eq!(q.try_get(), Err(mproc::QueueError::Empty));
/// # Ok::<(), mproc::Error>(())
/// ```
pub struct Queue<T> {
    core: Core<T>,
}

queue_api!(Queue);

impl<T: Serialize + DeserializeOwned> Queue<T> {
    /// Creates a queue bounded only by [`QUEUE_BYTES`] of encoded items.
    ///
    /// # Errors
    /// [`ErrorKind::Io`](crate::ErrorKind::Io) when no shared memory can be
    /// had.
    pub fn new() -> Result<Queue<T>, Error> {
        Ok(Queue {
            core: Core::create(None, type_hash::<Queue<T>>(), INITIAL_BYTES, QUEUE_BYTES)?,
        })
    }

    /// Creates a queue that holds at most `n` items.
    ///
    /// # Errors
    /// [`ErrorKind::Queue`](crate::ErrorKind::Queue) when `n` is 0;
    /// [`ErrorKind::Io`](crate::ErrorKind::Io) when no shared memory can be
    /// had.
    pub fn bounded(n: usize) -> Result<Queue<T>, Error> {
        Ok(Queue {
            core: Core::create(Some(n), type_hash::<Queue<T>>(), INITIAL_BYTES, QUEUE_BYTES)?,
        })
    }

    /// Test hook, not API: a queue whose data area is `bytes` (a power of
    /// two, at least 4 KiB) and never grows, to exercise wrap-around cheaply.
    #[doc(hidden)]
    pub fn __with_data_bytes(bytes: usize, cap: Option<usize>) -> Result<Queue<T>, Error> {
        Self::__with_growth(bytes, bytes, cap)
    }

    /// Test hook, not API: a queue whose data area starts at `initial`
    /// bytes and may grow to `max` (powers of two, 4 KiB to 1 GiB), to
    /// exercise growth cheaply.
    #[doc(hidden)]
    pub fn __with_growth(
        initial: usize,
        max: usize,
        cap: Option<usize>,
    ) -> Result<Queue<T>, Error> {
        let ok = |n: usize| n.is_power_of_two() && (4096..=QUEUE_BYTES).contains(&n);
        if !ok(initial) || !ok(max) || initial > max {
            return Err(Error::new(
                ErrorKind::Queue,
                "data area sizes must be powers of two between 4 KiB and 1 GiB",
            ));
        }
        Ok(Queue {
            core: Core::create(cap, type_hash::<Queue<T>>(), initial, max)?,
        })
    }
}

/// A plain unbounded queue (Python's `multiprocessing.SimpleQueue`): the same
/// ring as [`Queue`], without a bound.
pub struct SimpleQueue<T> {
    core: Core<T>,
}

queue_api!(SimpleQueue);

impl<T: Serialize + DeserializeOwned> SimpleQueue<T> {
    /// Creates a queue bounded only by [`QUEUE_BYTES`] of encoded items.
    ///
    /// # Errors
    /// [`ErrorKind::Io`](crate::ErrorKind::Io) when no shared memory can be
    /// had.
    pub fn new() -> Result<SimpleQueue<T>, Error> {
        Ok(SimpleQueue {
            core: Core::create(
                None,
                type_hash::<SimpleQueue<T>>(),
                INITIAL_BYTES,
                QUEUE_BYTES,
            )?,
        })
    }
}

/// A [`Queue`] whose consumers acknowledge each item with
/// [`task_done`](Self::task_done), so a producer can [`join`](Self::join)
/// until all were processed (Python's `multiprocessing.JoinableQueue`).
///
/// The count of unfinished items is derived from the ring's committed item
/// counter, so a producer killed mid-`put` cannot leave a phantom item that
/// `join` would wait for.
pub struct JoinableQueue<T> {
    core: Core<T>,
}

queue_api!(JoinableQueue);

impl<T: Serialize + DeserializeOwned> JoinableQueue<T> {
    /// Creates a joinable queue bounded only by [`QUEUE_BYTES`].
    ///
    /// # Errors
    /// [`ErrorKind::Io`](crate::ErrorKind::Io) when no shared memory can be
    /// had.
    pub fn new() -> Result<JoinableQueue<T>, Error> {
        Ok(JoinableQueue {
            core: Core::create(
                None,
                type_hash::<JoinableQueue<T>>(),
                INITIAL_BYTES,
                QUEUE_BYTES,
            )?,
        })
    }

    /// Creates a joinable queue that holds at most `n` items.
    ///
    /// # Errors
    /// As [`Queue::bounded`].
    pub fn bounded(n: usize) -> Result<JoinableQueue<T>, Error> {
        Ok(JoinableQueue {
            core: Core::create(
                Some(n),
                type_hash::<JoinableQueue<T>>(),
                INITIAL_BYTES,
                QUEUE_BYTES,
            )?,
        })
    }
}

impl<T> JoinableQueue<T> {
    /// Marks one item taken from the queue as processed.
    ///
    /// # Errors
    /// [`QueueError::TooManyTaskDone`] when called more times than items
    /// were put.
    pub fn task_done(&self) -> Result<(), QueueError> {
        if self.core.ring.task_done(&self.core.seg) {
            Ok(())
        } else {
            Err(QueueError::TooManyTaskDone)
        }
    }

    /// Waits until every item put so far has been marked done.
    pub fn join(&self) {
        self.core.ring.join(&self.core.seg, Deadline::NEVER);
    }

    /// As [`join`](Self::join), for at most `d`; true when all were done.
    pub fn join_timeout(&self, d: Duration) -> bool {
        self.core.ring.join(&self.core.seg, Deadline::after(d))
    }

    /// As [`join`](Self::join), without blocking the async runtime's thread.
    pub async fn join_async(&self) {
        while !self.core.ring.all_done(&self.core.seg) {
            let (seg, ring) = (self.core.seg.clone(), self.core.ring);
            wait::off_runtime(move || ring.wait_join_slice(&seg)).await;
        }
    }
}
