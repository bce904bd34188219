//! Worker ← parent: a worker's first frame (`ToWorker::Welcome`, or the
//! `StartProcess` of a child started by `Process`), then `ToWorker` frames;
//! every argument batch they carry (a `Run`'s, the initializer's, the
//! process target's) is decoded as the worker does (`batch::decode_args`).
//!
//! Input: `[mode: even worker, odd process][read size][frames…]`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mproc_core::__fuzz::{decode, decode_args, Message, Seen};
use mproc_fuzz::{each_frame, split_head, Counting};
use mproc_transport::DEFAULT_MAX_FRAME;

#[global_allocator]
static ALLOC: Counting = Counting;

fuzz_target!(|data: &[u8]| {
    let Some((mode, chunk, stream)) = split_head(data) else {
        return;
    };
    let first = if mode % 2 == 0 {
        Message::ToWorker
    } else {
        Message::StartProcess
    };
    let mut next = first;
    each_frame(stream, chunk, DEFAULT_MAX_FRAME, |frame| {
        let seen = decode(next, frame);
        next = Message::ToWorker;
        match seen {
            Err(_) => false,
            Ok(Seen::Args(args)) => {
                let _ = decode_args(&args);
                first == Message::ToWorker
            }
            Ok(_) => first == Message::ToWorker,
        }
    });
});
