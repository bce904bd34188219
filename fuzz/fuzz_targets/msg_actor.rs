//! Actor caller ↔ actor, both sides, and the actor's boot:
//! * the actor process decodes its `StartActor` frame (and the
//!   constructor's arguments), then `ToActor` frames and each call's
//!   arguments;
//! * a caller reads the `ActorHello` (`read_msg`, 64 KiB), then
//!   `FromActor` frames, and decodes each reply.
//!
//! Input: `[side: even actor, odd caller][read size][frames…]`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mproc_core::__fuzz::{decode, decode_args, read_frame, Message, Seen};
use mproc_fuzz::{each_frame, split_head, ChunkReader, Counting};
use mproc_transport::DEFAULT_MAX_FRAME;

#[global_allocator]
static ALLOC: Counting = Counting;

fn follow(seen: Result<Seen, String>) -> bool {
    match seen {
        Err(_) => false,
        Ok(
            Seen::Args(bytes)
            | Seen::Done {
                result: Some(bytes),
                ..
            },
        ) => {
            let _ = decode_args(&bytes);
            true
        }
        Ok(_) => true,
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((side, chunk, stream)) = split_head(data) else {
        return;
    };
    if side % 2 == 0 {
        let mut first = true;
        each_frame(stream, chunk, DEFAULT_MAX_FRAME, |frame| {
            let m = if std::mem::take(&mut first) {
                Message::StartActor
            } else {
                Message::ToActor
            };
            follow(decode(m, frame))
        });
    } else {
        let mut r = ChunkReader::new(stream, chunk);
        let Ok(hello) = read_frame(&mut r, 64 * 1024) else {
            return;
        };
        if decode(Message::ActorHello, &hello).is_err() {
            return;
        }
        each_frame(r.rest(), chunk, DEFAULT_MAX_FRAME, |frame| {
            follow(decode(Message::FromActor, frame))
        });
    }
});
