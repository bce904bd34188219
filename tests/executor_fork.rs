//! The `Executor` suite of `executor.rs` with `StartMethod::Fork`: workers
//! forked from this multi-threaded test harness.

#[path = "executor.rs"]
mod suite;
