//! The frame codec: `begin_frame`/`end_frame` on the sending side and
//! `FrameReader` on the receiving side, over a stream cut into reads of
//! any size (including interrupted and would-block reads).
//!
//! Checked against a model that parses the same bytes directly:
//! * every frame returned is the next frame of the stream, whole, and
//!   within the limit; none is skipped, none is torn;
//! * `FrameTooLarge` is returned exactly when the next header announces
//!   more than the limit, before any byte past that header is read;
//! * `Disconnected` only at end of stream, with no whole frame left;
//! * `has_frame` and `try_next_frame` never hide a frame that arrived;
//! * no allocation is larger than what arrived allows, whatever length is
//!   announced;
//! * `end_frame` refuses a payload over its limit and leaves the buffer as
//!   it was.
#![no_main]

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use mproc_fuzz::{frame_memory_bound, peak, reset_peak, Counting, SliceStream};
use mproc_transport::{begin_frame, end_frame, FrameReader, TransportError, MAX_FRAME_LIMIT};

#[global_allocator]
static ALLOC: Counting = Counting;

#[derive(Debug, Arbitrary)]
enum Piece {
    /// A payload framed by `begin_frame`/`end_frame`.
    Frame(Vec<u8>),
    /// Bytes as they are.
    Raw(Vec<u8>),
    /// A bare header announcing this many bytes.
    Header(u32),
}

#[derive(Debug, Arbitrary)]
enum Op {
    Next,
    TryNext,
    Has,
}

#[derive(Debug, Arbitrary)]
struct Input {
    /// The reader's limit.
    max: u64,
    /// The writer's limit.
    wmax: u16,
    /// Read sizes, cycled.
    reads: Vec<u16>,
    pieces: Vec<Piece>,
    ops: Vec<Op>,
}

/// The next frame of `data` from `at`: `(header end, announced length)`.
fn model(data: &[u8], at: usize) -> Option<(usize, usize)> {
    let h = data.get(at..at + 4)?;
    Some((at + 4, u32::from_le_bytes(h.try_into().unwrap()) as usize))
}

fuzz_target!(|input: Input| {
    // The sending side.
    let wmax = usize::from(input.wmax);
    let mut data = Vec::new();
    for p in &input.pieces {
        match p {
            Piece::Frame(payload) => {
                let before = data.len();
                let start = begin_frame(&mut data);
                data.extend_from_slice(payload);
                match end_frame(&mut data, start, wmax) {
                    Ok(()) => {
                        assert!(payload.len() <= wmax);
                        assert_eq!(data[start..start + 4], (payload.len() as u32).to_le_bytes());
                    }
                    Err(TransportError::FrameTooLarge { size, limit }) => {
                        assert!(payload.len() > wmax);
                        assert_eq!((size, limit), (payload.len() as u64, wmax as u64));
                        assert_eq!(data.len(), before, "a refused frame is removed");
                    }
                    Err(e) => panic!("end_frame: {e}"),
                }
            }
            Piece::Raw(b) => data.extend_from_slice(b),
            Piece::Header(n) => data.extend_from_slice(&n.to_le_bytes()),
        }
    }

    // The receiving side.
    let max = usize::try_from(input.max).unwrap_or(usize::MAX);
    let limit = max.min(MAX_FRAME_LIMIT);
    let total = data.len();
    let stream = SliceStream::new(
        data.clone(),
        input.reads.iter().map(|&n| usize::from(n)).collect(),
    );
    let mut reader = FrameReader::new(max);
    // Where the next frame starts in `data`.
    let mut at = 0;
    reset_peak();
    for op in input.ops.iter().take(64) {
        let whole = |arrived: usize| {
            model(&data, at).is_some_and(|(end, len)| len <= limit && arrived >= end + len)
        };
        match op {
            Op::Has => assert_eq!(reader.has_frame(), whole(stream.delivered())),
            Op::Next | Op::TryNext => {
                let r = match op {
                    Op::Next => reader.next_frame(&stream).map(Some),
                    _ => reader.try_next_frame(&stream),
                };
                match r {
                    Ok(Some(frame)) => {
                        let (end, len) = model(&data, at).expect("a frame from nothing");
                        assert!(len <= limit && frame.len() == len);
                        assert_eq!(frame, &data[end..end + len], "a frame not in the stream");
                        at = end + len;
                    }
                    Ok(None) => {
                        assert!(matches!(op, Op::TryNext));
                        let arrived = stream.delivered();
                        assert!(!whole(arrived), "try_next_frame hid an arrived frame");
                        if let Some((end, len)) = model(&data, at) {
                            assert!(
                                arrived < end || len <= limit,
                                "an oversized header arrived but was not refused"
                            );
                        }
                    }
                    Err(TransportError::FrameTooLarge { size, limit: l }) => {
                        let (end, len) = model(&data, at).expect("refused without a header");
                        assert!(len > limit && size == len as u64 && l == limit as u64);
                        assert!(stream.delivered() >= end);
                        let started = stream.last_read_start().unwrap();
                        assert!(
                            started < end,
                            "bytes were read after the oversized header (from {started}, header \
                             ends at {end})"
                        );
                        break;
                    }
                    Err(TransportError::Disconnected) => {
                        assert!(stream.at_end(), "disconnected before the end");
                        assert!(!whole(total), "disconnected with a whole frame left");
                        break;
                    }
                    Err(e) => panic!("unexpected error: {e}"),
                }
            }
        }
        assert!(
            peak() <= frame_memory_bound(stream.delivered()),
            "the reader allocated {} bytes after {} arrived",
            peak(),
            stream.delivered()
        );
    }
});
