//! Compile-time behaviour of `#[mproc::task]`: what it rejects, with which
//! message and where (`tests/ui/*.rs` against their `.stderr`), and what it
//! accepts (`tests/ui-pass/*.rs`, built and run).
//!
//! After a deliberate change of a message, regenerate the expected output
//! with `TRYBUILD=overwrite cargo test -p mproc-ui-tests` and review the diff.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
    t.pass("tests/ui-pass/*.rs");
}
