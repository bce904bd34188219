//! Compile-time behaviour of `#[mproc::task]` and `#[mproc::actor]` (the
//! `actor_*` cases): what they reject, with which message and where
//! (`tests/ui/*.rs` against their `.stderr`), and what they accept
//! (`tests/ui-pass/*.rs`, built and run).
//!
//! After a deliberate change of a message, regenerate the expected output
//! with `TRYBUILD=overwrite cargo test -p mproc-ui-tests` and review the diff.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
    t.pass("tests/ui-pass/*.rs");
}
