//! The `Executor` suite of `executor.rs` with `StartMethod::Forkserver`.

#[path = "executor.rs"]
mod suite;
