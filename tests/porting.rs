//! Claims of `docs/porting.md` that a reader could not guess, checked: a
//! global set in `main` reaches the workers under `Fork` only.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};

use common::LIMIT;
use mproc::prelude::*;

static COUNTER: AtomicU64 = AtomicU64::new(0);

#[mproc::task]
fn read_counter() -> u64 {
    COUNTER.load(Ordering::SeqCst)
}

/// Python 3.11 with fork prints `[42, 42]`; mproc's default, `Spawn`, starts
/// workers afresh, so they see the initial value.
#[test]
fn a_global_set_in_main_is_seen_by_workers_under_fork_only() {
    COUNTER.store(42, Ordering::SeqCst);
    for (m, want) in [
        (StartMethod::Spawn, 0),
        (StartMethod::Forkserver, 0),
        (StartMethod::Fork, 42),
    ] {
        let pool = Pool::builder()
            .processes(2)
            .start_method(m)
            .build()
            .unwrap();
        let got = pool.map_async(read_counter, vec![(), ()]);
        assert_eq!(got.get_timeout(LIMIT), Ok(vec![want, want]), "{m}");
    }
}
