//! Holds the trybuild cases of `#[mproc::task]` and `#[mproc::actor]`
//! (`tests/ui.rs`); no code.
//!
//! Regenerate the expected output after a deliberate change of a message
//! with `TRYBUILD=overwrite cargo test -p mproc-ui-tests` and review the
//! diff.
