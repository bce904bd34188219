//! The operating-system seam. Everything Linux-specific, and every `unsafe`
//! block of the core crate, lives below this module behind a small safe API.

mod linux;

pub(crate) use linux::*;
