//! How a task "raises" (`mproc::Failure`) and what the caller gets, against
//! real worker processes: the message, the source chain, the type name and
//! the io kind survive the trip; a panic stays a `TaskError`.

mod common;

use common::run;
use mproc::prelude::*;

/// `fn read_len(path) -> io::Result<usize>` as the issue wrote it, with the
/// error type a task can return.
#[mproc::task]
fn read_len(path: String) -> Result<usize, Failure> {
    Ok(std::fs::read(path)?.len())
}

#[mproc::task]
fn parse_sum(items: Vec<String>) -> Result<u64, Failure> {
    let mut sum = 0u64;
    for s in &items {
        let n: u64 = s
            .parse()
            .map_err(|e| Failure::context(format!("item {s:?}"), e))?;
        sum += n;
    }
    Ok(sum)
}

#[test]
fn a_failure_crosses_the_process_boundary_intact() {
    run(async {
        let ex = Executor::new(1).await.unwrap();
        let here = std::env::current_exe().unwrap();
        // `run` bounds the whole body with a timeout.
        let n = ex
            .submit(read_len, here.display().to_string())
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0);

        let missing = "/nonexistent/mproc-task-errors".to_string();
        let local = read_len(missing.clone()).unwrap_err();
        let remote = ex.submit(read_len, missing).await.unwrap().unwrap_err();
        assert_eq!(remote, local, "the worker's failure is the one made here");
        assert_eq!(remote.io_kind(), Some(std::io::ErrorKind::NotFound));
        assert_eq!(remote.type_name(), "std::io::error::Error");

        let e = ex
            .submit(parse_sum, vec!["1".into(), "x".into()])
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(e.message(), "item \"x\"");
        assert_eq!(
            format!("{e:#}"),
            "item \"x\": invalid digit found in string"
        );
        assert_eq!(e.io_kind(), None);
        // `?` goes on into mproc::Error in the caller.
        let as_mproc: mproc::Error = e.into();
        assert_eq!(as_mproc.kind(), ErrorKind::Task);
        ex.shutdown().await;
    });
}
