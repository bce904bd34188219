//! The operating-system seam. Everything Linux-specific lives below this
//! module behind a small safe API, and so does every `unsafe` block of the
//! core crate except the shared-memory leaf modules of `shared/` (segment,
//! ring, value, array), which keep theirs next to the layouts they rely on.

pub(crate) mod alive;
pub(crate) mod futex;
mod linux;
mod process;
pub(crate) mod shm;

pub(crate) use linux::*;
pub(crate) use process::*;
