//! The operating-system seam. Everything Linux-specific, and every `unsafe`
//! block of the core crate, lives below this module behind a small safe API.

pub(crate) mod futex;
mod linux;
mod process;
pub(crate) mod shm;

pub(crate) use linux::*;
pub(crate) use process::*;
