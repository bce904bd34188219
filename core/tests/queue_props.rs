//! Property tests of `mproc::Queue` shared by threads of one process: every
//! item arrives exactly once, and each consumer sees each producer's items
//! in the order they were put. (The same across worker processes is in the
//! facade's `tests/shared_queue.rs`.)

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use mproc_core::Queue;
use proptest::prelude::*;

const LONG: Duration = Duration::from_secs(20);

fn check(per_consumer: &[Vec<(u32, u32)>], producers: u32, n: u32) {
    let mut all: Vec<(u32, u32)> = per_consumer.iter().flatten().copied().collect();
    all.sort();
    let want: Vec<(u32, u32)> = (0..producers)
        .flat_map(|p| (0..n).map(move |i| (p, i)))
        .collect();
    assert_eq!(all, want, "items lost or duplicated");
    for seen in per_consumer {
        let mut last: HashMap<u32, u32> = HashMap::new();
        for &(p, i) in seen {
            if let Some(prev) = last.insert(p, i) {
                assert!(prev < i, "producer {p}: {i} after {prev}");
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Concurrent producers and consumers (threads on one shared ring):
    /// every item arrives exactly once, and each consumer sees each
    /// producer's items in the order they were put.
    #[test]
    fn no_loss_and_per_producer_order(
        producers in 1u32..4,
        consumers in 1usize..4,
        n in 0u32..300,
        cap in prop::option::of(1usize..8),
        ring in 0u8..3,
    ) {
        // A small ring that wraps often, one that grows from 4 KiB while in
        // use, and the default.
        let q: Queue<(u32, u32)> = match ring {
            0 => Queue::__with_data_bytes(4096, cap).unwrap(),
            1 => Queue::__with_growth(4096, 64 << 10, cap).unwrap(),
            _ => match cap { Some(c) => Queue::bounded(c).unwrap(), None => Queue::new().unwrap() },
        };
        let total = producers as usize * n as usize;
        let taken = AtomicUsize::new(0);
        let seen: Vec<Vec<(u32, u32)>> = std::thread::scope(|s| {
            for p in 0..producers {
                let q = q.clone();
                s.spawn(move || for i in 0..n { q.put_timeout((p, i), LONG).unwrap() });
            }
            let hs: Vec<_> = (0..consumers).map(|_| {
                let (q, taken) = (q.clone(), &taken);
                s.spawn(move || {
                    let mut got = Vec::new();
                    let end = Instant::now() + LONG;
                    while taken.load(Ordering::SeqCst) < total && Instant::now() < end {
                        if let Ok(x) = q.get_timeout(Duration::from_millis(5)) {
                            taken.fetch_add(1, Ordering::SeqCst);
                            got.push(x);
                        }
                    }
                    got
                })
            }).collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        check(&seen, producers, n);
        prop_assert!(q.is_empty());
    }
}
