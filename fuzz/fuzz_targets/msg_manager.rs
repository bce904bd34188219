//! Manager client ↔ server, both sides, and the server's boot:
//! * the server decodes its `StartManager` frame, then reads `Request`s
//!   one frame at a time (`read_msg`, up to the default frame limit);
//! * the parent reads the server's `ManagerReady` (`read_msg`, 4 KiB) and a
//!   proxy reads `Reply`s (`read_msg`, up to the default frame limit).
//!
//! `read_frame` must never allocate for an announced length before the
//! bytes arrive.
//!
//! Input: `[side: even server, odd client][read size][frames…]`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mproc_core::__fuzz::{decode, read_frame, Message};
use mproc_fuzz::{frame_memory_bound, peak, reset_peak, split_head, ChunkReader, Counting};
use mproc_transport::DEFAULT_MAX_FRAME;

#[global_allocator]
static ALLOC: Counting = Counting;

fuzz_target!(|data: &[u8]| {
    let Some((side, chunk, stream)) = split_head(data) else {
        return;
    };
    let (boot, boot_max, then) = if side % 2 == 0 {
        (Message::StartManager, DEFAULT_MAX_FRAME, Message::Request)
    } else {
        (Message::ManagerReady, 4096, Message::Reply)
    };
    let mut r = ChunkReader::new(stream, chunk);
    let mut first = Some((boot, boot_max));
    loop {
        let (m, max) = first.take().unwrap_or((then, DEFAULT_MAX_FRAME));
        let before = r.rest().len();
        reset_peak();
        let frame = match read_frame(&mut r, max) {
            Ok(f) => f,
            Err(_) => return,
        };
        assert!(frame.len() <= max);
        assert!(
            peak() <= frame_memory_bound(before - r.rest().len()),
            "read_frame allocated {} bytes for a {}-byte frame",
            peak(),
            frame.len()
        );
        if decode(m, &frame).is_err() {
            return;
        }
    }
});
