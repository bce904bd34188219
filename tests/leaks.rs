//! Nothing is left behind, on any transport: no process, no descriptor, no
//! file in the temp dir or `/dev/shm`. One test per binary, so nothing else runs
//! concurrently and the counts are exact.

mod common;

use std::time::Duration;

use common::{run, wait_gone};
use mproc::prelude::*;

#[mproc::task]
fn square(x: u64) -> u64 {
    x * x
}

#[mproc::task]
fn crash() {
    std::process::abort()
}

#[test]
fn executors_leave_no_process_descriptor_or_file_behind() {
    run(async {
        // Warm up once: the runtime's and mproc's long-lived threads start.
        Executor::new(1).await.unwrap().shutdown().await;
        let fds = common::open_fds();
        let files = common::mproc_files();
        let mut all_pids = Vec::new();
        let kinds = [
            TransportKind::UnixSocket,
            TransportKind::Pipe,
            TransportKind::ShmRing,
        ];
        for (round, kind) in kinds.into_iter().cycle().take(6).enumerate() {
            let ex = Executor::builder()
                .max_workers(2)
                .transport(kind)
                .build()
                .await
                .unwrap();
            all_pids.extend(ex.worker_pids());
            let v: Vec<u64> = ex.map(square, 0..1000u64).try_collect().await.unwrap();
            assert_eq!(v.len(), 1000);
            assert!(ex.submit(crash, ()).await.is_err());
            assert_eq!(ex.submit(square, 3).await, Ok(9));
            all_pids.extend(ex.worker_pids());
            if round % 2 == 0 {
                ex.shutdown().await;
            } else {
                drop(ex);
            }
        }
        assert!(
            wait_gone(&all_pids, Duration::from_secs(5)),
            "left behind: {all_pids:?}"
        );
        // Writer threads close their descriptors as they finish.
        let end = std::time::Instant::now() + Duration::from_secs(5);
        while common::open_fds() > fds && std::time::Instant::now() < end {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(common::open_fds(), fds, "descriptors leaked");
        assert_eq!(
            common::mproc_files(),
            files,
            "files left in the temp dir or /dev/shm"
        );
    });
}
