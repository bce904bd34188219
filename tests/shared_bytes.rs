//! `SharedBytes` crosses to workers and `Process` children by handle and is
//! read in place there; `Bytes` travels as one byte string.

mod common;

use std::time::Duration;

use common::{mproc_files, open_fds, run};
use mproc::prelude::*;

/// A checksum of the bytes, read in place in the worker.
#[mproc::task]
fn checksum(b: SharedBytes) -> (usize, u64) {
    (b.len(), b.iter().map(|&x| u64::from(x)).sum())
}

/// Makes a buffer in the worker and hands it back by handle.
#[mproc::task]
fn make(n: usize) -> SharedBytes {
    SharedBytes::with_len(n, |b| b.fill(5)).unwrap()
}

#[mproc::task]
fn reverse(b: Bytes) -> Bytes {
    let mut v = b.into_vec();
    v.reverse();
    Bytes::from(v)
}

/// Checks the bytes in a `Process` child; exits non-zero if they differ.
#[mproc::task]
fn verify(b: SharedBytes, want: u64) {
    let got: u64 = b.iter().map(|&x| u64::from(x)).sum();
    assert_eq!(got, want, "wrong bytes in the child");
}

#[test]
fn shared_bytes_cross_by_handle_and_leave_nothing() {
    let files = mproc_files();
    run(async {
        for method in [
            StartMethod::Spawn,
            StartMethod::Forkserver,
            StartMethod::Fork,
        ] {
            let ex = Executor::builder()
                .max_workers(2)
                .start_method(method)
                .build()
                .await
                .unwrap();
            let fds = open_fds();
            {
                let n = 16 << 20;
                let big = SharedBytes::with_len(n, |b| {
                    for (i, x) in b.iter_mut().enumerate() {
                        *x = (i % 7) as u8;
                    }
                })
                .unwrap();
                let want: u64 = big.iter().map(|&x| u64::from(x)).sum();
                let handles: Vec<_> = (0..8).map(|_| ex.submit(checksum, big.clone())).collect();
                for h in handles {
                    assert_eq!(h.await, Ok((n, want)), "{method}");
                }
                // Made in a worker, read here.
                let back = ex.submit(make, 4096).await.unwrap();
                assert_eq!(back.len(), 4096);
                assert!(back.iter().all(|&x| x == 5));
                // Read by a `Process` child.
                let p = Process::new(verify, (big.clone(), want))
                    .start_method(method)
                    .start()
                    .unwrap();
                assert!(p.join_timeout(Duration::from_secs(30)).unwrap());
                assert_eq!(p.exitcode(), Some(0), "{method}");
                let r = ex.submit(reverse, Bytes::from(vec![1, 2, 3])).await;
                assert_eq!(r, Ok(Bytes::from(vec![3, 2, 1])));
            }
            ex.shutdown().await;
            // Every handle is gone: so is every descriptor of the buffers.
            let end = std::time::Instant::now() + Duration::from_secs(10);
            while open_fds() > fds && std::time::Instant::now() < end {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            assert!(
                open_fds() <= fds,
                "{method}: {} fds, {} before",
                open_fds(),
                fds
            );
        }
    });
    assert_eq!(mproc_files(), files, "nothing in /dev/shm or the temp dir");
}
