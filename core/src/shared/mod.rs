//! Objects that let processes cooperate (API.md §6): queues, pipes, shared
//! values and arrays, and synchronization primitives.
//!
//! Each object lives in its own shared-memory segment (a memfd, see
//! `segment/`) and is used through a cheap `Clone` handle that is also
//! `Serialize + Deserialize`: pass it to a task or a process as an argument
//! and the other process uses the same object. Nothing has a name in the file
//! system, so nothing is left behind when the program ends, however it ends.
//!
//! | module | what |
//! |---|---|
//! | `bytemap` | the dict/list table in shared memory under a Manager's dicts and lists |
//! | `segment` | memfd segments and their growing data windows, handle encoding through `/proc/<pid>/fd/<n>`, keep-alive of handles in flight |
//! | `robust` | the robust futex mutex every lock is built on |
//! | `wait` | bounded futex sleeps, adaptive spinning, async bridging |
//! | `ring` | the MPMC byte ring under queues and pipes, growing in place (see `README.md`) |
//! | `queue`, `pipe` | [`Queue`], [`SimpleQueue`], [`JoinableQueue`], [`pipe`]/[`Connection`] |
//! | `value`, `array`, `pod` | [`Value`], [`Array`] of [`Pod`] types |
//! | `lock`, `rlock`, `semaphore`, `event`, `condition`, `barrier` | the synchronization primitives |

mod array;
mod barrier;
pub(crate) mod bytemap;
mod bytes;
mod condition;
mod event;
mod lock;
mod pipe;
mod pod;
mod queue;
mod ring;
mod rlock;
mod robust;
mod segment;
mod semaphore;
mod value;
mod wait;

pub use array::{Array, ArrayGuard};
pub use barrier::{Barrier, BrokenBarrierError};
pub use bytes::{Bytes, SharedBytes};
pub use condition::{Condition, ConditionGuard};
pub use event::Event;
pub use lock::{Lock, LockGuard};
pub use pipe::{pipe, Connection, PIPE_BYTES};
pub use pod::Pod;
pub use queue::{JoinableQueue, Queue, SimpleQueue, QUEUE_BYTES};
pub use rlock::{RLock, RLockGuard};
pub use semaphore::{BoundedSemaphore, Semaphore, SemaphoreGuard};
pub use value::{Value, ValueGuard};

/// `Serialize`/`Deserialize` for a non-generic handle `{ seg: Arc<Segment> }`.
macro_rules! handle_serde {
    ($ty:ident, $kind:expr) => {
        impl serde::Serialize for $ty {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                super::segment::serialize_handle(&self.seg, s)
            }
        }

        impl<'de> serde::Deserialize<'de> for $ty {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let seg = super::segment::deserialize_handle(d, $kind, 0)?;
                Ok($ty { seg })
            }
        }
    };
}
use handle_serde;
