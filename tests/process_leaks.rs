//! `Process` leaves nothing behind under any start method: no process, no
//! descriptor, no file in the temp dir or `/dev/shm`. One test in this
//! binary, so the counts are exact.

mod common;

use std::time::{Duration, Instant};

use common::wait_gone;
use mproc::prelude::*;

#[mproc::task]
fn noop() {}

#[mproc::task]
fn crash() {
    std::process::abort()
}

const METHODS: [StartMethod; 3] = [
    StartMethod::Spawn,
    StartMethod::Forkserver,
    StartMethod::Fork,
];

#[test]
fn processes_leave_no_process_descriptor_or_file_behind() {
    // Warm up: the spawner thread and the fork server (which mproc keeps for
    // the life of the program) start once.
    for m in METHODS {
        let p = Process::new(noop, ()).start_method(m).start().unwrap();
        p.join().unwrap();
    }
    let fds = common::open_fds();
    let files = common::mproc_files();
    let mut pids = Vec::new();
    for m in METHODS {
        let ps: Vec<ProcessHandle> = (0..5)
            .map(|i| {
                let p = if i == 0 {
                    Process::new(crash, ())
                } else {
                    Process::new(noop, ())
                };
                p.start_method(m).start().unwrap()
            })
            .collect();
        for p in &ps {
            pids.push(p.pid());
            p.join().unwrap();
            assert!(p.exitcode().is_some());
        }
        // A dropped, unjoined handle is reaped by `active_children`.
        let p = Process::new(noop, ()).start_method(m).start().unwrap();
        pids.push(p.pid());
        drop(p);
        let end = Instant::now() + Duration::from_secs(10);
        while !active_children().is_empty() {
            assert!(Instant::now() < end, "{:?}", active_children());
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    assert!(wait_gone(&pids, Duration::from_secs(5)), "left: {pids:?}");
    assert_eq!(common::open_fds(), fds, "descriptors leaked");
    assert_eq!(common::mproc_files(), files, "files left behind");
}
