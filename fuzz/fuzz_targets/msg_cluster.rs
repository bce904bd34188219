//! Node ↔ driver, both sides, after the key's handshake:
//! * the driver reads the node's `NodeHello` (`read_msg`, 4 KiB at most),
//!   then `ToDriver` frames, and decodes each finished batch;
//! * the node reads the driver's `Welcome` (`read_msg`, 4 KiB), then
//!   `ToNode` frames, and decodes each argument batch.
//!
//! Input: `[side: even driver, odd node][read size][frames…]`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mproc_core::__fuzz::{decode, decode_args, decode_results, read_frame, Message, Seen};
use mproc_fuzz::{each_frame, split_head, ChunkReader, Counting};
use mproc_transport::DEFAULT_MAX_FRAME;

#[global_allocator]
static ALLOC: Counting = Counting;

fuzz_target!(|data: &[u8]| {
    let Some((side, chunk, stream)) = split_head(data) else {
        return;
    };
    let (hello, then) = if side % 2 == 0 {
        (Message::NodeHello, Message::ToDriver)
    } else {
        (Message::Welcome, Message::ToNode)
    };
    let mut r = ChunkReader::new(stream, chunk);
    let Ok(first) = read_frame(&mut r, 4096) else {
        return;
    };
    assert!(first.len() <= 4096);
    if decode(hello, &first).is_err() {
        return;
    }
    each_frame(r.rest(), chunk, DEFAULT_MAX_FRAME, |frame| {
        match decode(then, frame) {
            Err(_) => false,
            Ok(Seen::Args(args)) => {
                let _ = decode_args(&args);
                true
            }
            Ok(Seen::Done { result, .. }) => {
                let (items, _) = decode_results(result, 2);
                assert_eq!(items.len(), 2);
                true
            }
            Ok(_) => true,
        }
    });
});
