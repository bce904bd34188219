//! Worker-side events reach the parent's subscriber, tagged with the worker's
//! name and pid and the task's span.

mod common;

use common::{run, Capture};
use mproc::prelude::*;

#[mproc::task]
fn chatty(n: u32) -> u32 {
    tracing::info!(n, "hello from the worker");
    n + 1
}

#[test]
fn worker_events_reach_the_parent_subscriber() {
    let cap = Capture::default();
    let writer = cap.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();
    run(async {
        let ex = Executor::new(1).await.unwrap();
        assert_eq!(ex.submit(chatty, 41).await, Ok(42));
        let (name, pid) = ex.workers()[0].clone();
        ex.shutdown().await;
        let text = String::from_utf8(cap.0.lock().unwrap().clone()).unwrap();
        let line = text
            .lines()
            .find(|l| l.contains("hello from the worker"))
            .unwrap_or_else(|| panic!("no forwarded event in:\n{text}"));
        assert!(
            line.contains(&format!("worker=\"{name}\""))
                || line.contains(&format!("worker={name}")),
            "{line}"
        );
        assert!(line.contains(&format!("pid={pid}")), "{line}");
        assert!(
            line.contains("mproc.task{task="),
            "worker-side span: {line}"
        );
        assert!(line.contains("n=41"), "{line}");
        // The parent-side span of the same task.
        assert!(
            text.lines()
                .any(|l| l.contains("mproc.task") && l.contains("finished")),
            "{text}"
        );
    });
}
