//! Writes the seed corpus, `fuzz/seeds/<target>/`, from real encodings
//! (`mproc_core::__fuzz::samples`): `cargo +nightly run --bin make_seeds`
//! from `fuzz/`. The handshake targets take structured input (`Arbitrary`)
//! and start from libFuzzer's own seeds plus a few byte strings here.

use std::fs;
use std::path::Path;

use mproc_core::__fuzz::{samples, Message};
use mproc_fuzz::framed;

fn stream(head: [u8; 2], frames: &[Vec<u8>]) -> Vec<u8> {
    let mut v = head.to_vec();
    for f in frames {
        v.extend(framed(f));
    }
    v
}

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("seeds")
        .join(target);
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join(name), bytes).unwrap();
}

fn main() {
    let s = samples;
    // Parent ← worker: every ToParent, then parts joined with a Done.
    let parent = s(Message::ToParent);
    write("msg_parent", "all", &stream([2, 0], &parent));
    write("msg_parent", "all-bytewise", &stream([2, 1], &parent));
    write(
        "msg_parent",
        "part-done",
        &stream([3, 0], &[parent[4].clone(), parent[2].clone()]),
    );

    // Worker ← parent: a worker's conversation, a process child's start.
    write(
        "msg_worker",
        "worker",
        &stream([0, 0], &s(Message::ToWorker)),
    );
    write(
        "msg_worker",
        "worker-7",
        &stream([0, 7], &s(Message::ToWorker)),
    );
    write(
        "msg_worker",
        "process",
        &stream([1, 0], &s(Message::StartProcess)),
    );

    // Node ↔ driver.
    let hello = s(Message::NodeHello);
    write(
        "msg_cluster",
        "driver",
        &stream([0, 0], &[hello, s(Message::ToDriver)].concat()),
    );
    for (i, w) in s(Message::Welcome).into_iter().enumerate() {
        let frames = [vec![w], s(Message::ToNode)].concat();
        write(
            "msg_cluster",
            &format!("node-{i}"),
            &stream([1, 3], &frames),
        );
    }

    // Manager server and client.
    let frames = [s(Message::StartManager), s(Message::Request)].concat();
    write("msg_manager", "server", &stream([0, 0], &frames));
    for (i, r) in s(Message::ManagerReady).into_iter().enumerate() {
        let frames = [vec![r], s(Message::Reply)].concat();
        write(
            "msg_manager",
            &format!("client-{i}"),
            &stream([1, 5], &frames),
        );
    }

    // Actor process and caller.
    let frames = [s(Message::StartActor), s(Message::ToActor)].concat();
    write("msg_actor", "actor", &stream([0, 0], &frames));
    let frames = [s(Message::ActorHello), s(Message::FromActor)].concat();
    write("msg_actor", "caller", &stream([1, 2], &frames));

    // Frames: a few headers and payloads (the input is `Arbitrary`, so
    // any bytes are a valid seed).
    write(
        "frame",
        "small",
        &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16],
    );
    write("frame", "big-header", &[0xff; 48]);
    write(
        "auth_server",
        "a",
        &[3, 1, 2, 3, 0, 0, 0, 0, 2, 1, 2, 3, 4, 5, 6],
    );
    write(
        "auth_client",
        "a",
        &[3, 1, 2, 3, 0, 0, 0, 2, 2, 1, 2, 3, 4, 5, 6],
    );
}
