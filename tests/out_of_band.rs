//! Large `Bytes` travel out of band: as sidecars before their message,
//! read straight into buffers of their own. What a user relies on: the
//! bytes come back equal on every transport, in arguments and results,
//! alone or inside other values; results too large for one message still
//! come in parts, and one over the limit fails alone; a request sent again
//! after its worker died carries its bytes again.

mod common;

use std::time::Duration;

use common::run_within;
use mproc::prelude::*;

/// Above the size from which a byte string goes out of band (256 KiB).
const BIG: usize = 3 << 20;

fn pattern(n: usize, seed: u8) -> Bytes {
    Bytes::from(
        (0..n)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect::<Vec<u8>>(),
    )
}

#[mproc::task]
fn echo(b: Bytes) -> Bytes {
    b
}

/// Hands back the large strings swapped and a checksum of everything it
/// received, so both directions are checked.
#[mproc::task]
fn mix(a: Bytes, tag: u32, rest: Vec<Bytes>) -> (u32, Vec<Bytes>, Bytes, u64) {
    let sum = std::iter::once(&a)
        .chain(rest.iter())
        .flat_map(|b| b.iter())
        .fold(0u64, |s, &x| s.wrapping_mul(3).wrapping_add(u64::from(x)));
    (tag + 1, rest, a, sum)
}

fn checksum(parts: &[&Bytes]) -> u64 {
    parts
        .iter()
        .flat_map(|b| b.iter())
        .fold(0u64, |s, &x| s.wrapping_mul(3).wrapping_add(u64::from(x)))
}

#[mproc::task]
fn make(n: usize, seed: u8) -> Bytes {
    pattern(n, seed)
}

/// Kills its worker the first time (the flag file is absent), answers with
/// the bytes reversed the second time.
#[mproc::task]
fn die_once(b: Bytes, flag: String) -> Bytes {
    if std::fs::metadata(&flag).is_err() {
        std::fs::write(&flag, b"seen").unwrap();
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    }
    let mut v = b.into_vec();
    v.reverse();
    Bytes::from(v)
}

#[test]
fn large_bytes_come_back_equal_on_every_transport() {
    run_within(Duration::from_secs(120), async {
        for transport in [
            TransportKind::UnixSocket,
            TransportKind::Pipe,
            TransportKind::ShmRing,
        ] {
            let ex = Executor::builder()
                .max_workers(2)
                .transport(transport)
                .build()
                .await
                .unwrap();
            // Around the threshold, and on both sides of it.
            for (n, seed) in [
                (0, 1),
                (100, 2),
                (256 << 10, 3),
                ((256 << 10) - 1, 4),
                (BIG, 5),
            ] {
                let b = pattern(n, seed);
                let back = ex.submit(echo, b.clone()).await.unwrap();
                assert_eq!(back, b, "{transport:?}: {n} bytes");
            }
            // Several at once, nested, large and small mixed.
            let a = pattern(BIG, 6);
            let rest = vec![pattern(300_000, 7), pattern(10, 8), pattern(2 << 20, 9)];
            let (tag, back_rest, back_a, sum) =
                ex.submit(mix, (a.clone(), 41, rest.clone())).await.unwrap();
            assert_eq!(tag, 42);
            assert_eq!(back_a, a, "{transport:?}");
            assert_eq!(back_rest, rest, "{transport:?}");
            assert_eq!(sum, checksum(&[&a, &rest[0], &rest[1], &rest[2]]));
            // Many in flight on both workers: nothing mixed up.
            let handles: Vec<_> = (0..16u8)
                .map(|i| (i, ex.submit(make, (300_000 + usize::from(i), i))))
                .collect();
            for (i, h) in handles {
                assert_eq!(h.await.unwrap(), pattern(300_000 + usize::from(i), i));
            }
            ex.shutdown().await;
        }
    });
}

#[test]
fn large_results_come_in_parts_and_one_over_the_limit_fails_alone() {
    run_within(Duration::from_secs(60), async {
        let ex = Executor::builder()
            .max_workers(1)
            .max_message_size(1 << 20)
            .build()
            .await
            .unwrap();
        // One chunk of eight results of 400 kB each (and one of 2 MiB):
        // far over one message, so they come in parts with their sidecars.
        let sizes = [
            400_000usize,
            400_000,
            400_000,
            2 << 20,
            400_000,
            400_000,
            10,
            400_000,
        ];
        let items: Vec<(usize, u8)> = sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| (n, i as u8))
            .collect();
        let got: Vec<_> = ex
            .map_with(make, items, MapOptions::default().chunksize(8))
            .collect()
            .await;
        for (i, (r, &n)) in got.into_iter().zip(&sizes).enumerate() {
            if n > 1 << 20 {
                match r {
                    Err(TaskError::Serialization { message }) => {
                        assert!(message.contains("message limit"), "{message}")
                    }
                    other => panic!("item {i}: {other:?}"),
                }
            } else {
                assert_eq!(r.unwrap(), pattern(n, i as u8), "item {i}");
            }
        }
        // An argument over the limit fails before it is sent.
        match ex.submit(echo, pattern(2 << 20, 1)).await {
            Err(TaskError::Serialization { message }) => {
                assert!(message.contains("message limit"), "{message}")
            }
            other => panic!("{other:?}"),
        }
        // And the executor goes on.
        assert_eq!(
            ex.submit(echo, pattern(BIG / 4, 2)).await.unwrap(),
            pattern(BIG / 4, 2)
        );
        ex.shutdown().await;
    });
}

#[test]
fn a_large_argument_is_sent_again_when_its_worker_dies() {
    let flag = std::env::temp_dir()
        .join(format!("mproc-oob-test-{}", std::process::id()))
        .to_string_lossy()
        .into_owned();
    let _ = std::fs::remove_file(&flag);
    run_within(Duration::from_secs(60), async {
        let ex = Executor::builder().max_workers(2).build().await.unwrap();
        let b = pattern(BIG, 3);
        let back = ex
            .submit_with(
                die_once,
                (b.clone(), flag.clone()),
                TaskOptions::default().retries(1),
            )
            .await
            .unwrap();
        let mut want = b.into_vec();
        want.reverse();
        assert_eq!(back.into_vec(), want);
        ex.shutdown().await;
    });
    assert!(std::fs::metadata(&flag).is_ok(), "the first run died");
    std::fs::remove_file(&flag).unwrap();
}
