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
//!   it was;
//! * sidecars (headers with the top bit set) come with the frame that
//!   follows them, in order, and count against the same limit.
#![no_main]

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use mproc_fuzz::{frame_memory_bound, peak, reset_peak, Counting, SliceStream};
use mproc_transport::{
    begin_frame, end_frame, sidecar_header, FrameReader, TransportError, MAX_FRAME_LIMIT,
    MAX_SIDECARS, SIDECAR_BIT,
};

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
    /// A sidecar: its header and bytes.
    Sidecar(Vec<u8>),
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

/// What the stream holds from `at`, as a reader with limit `limit` must
/// take it.
#[derive(Debug)]
enum Model {
    /// A frame: its sidecars (ranges of `data`), where its header ends, and
    /// its length.
    Frame {
        sides: Vec<std::ops::Range<usize>>,
        end: usize,
        len: usize,
    },
    /// A header (ending at `end`) over what the limit leaves: `size` is the
    /// bytes announced, with the sidecars before it.
    TooLarge { end: usize, size: usize },
}

/// The next item of `data` from `at`; `None` when the stream ends first.
fn model(data: &[u8], at: usize, limit: usize) -> Option<Model> {
    let mut pos = at;
    let mut sides = Vec::new();
    let mut side_bytes = 0usize;
    loop {
        let h = data.get(pos..pos + 4)?;
        let h = u32::from_le_bytes(h.try_into().unwrap());
        let len = (h & !SIDECAR_BIT) as usize;
        let end = pos + 4;
        if h & SIDECAR_BIT == 0 {
            if len > limit - side_bytes {
                return Some(Model::TooLarge {
                    end,
                    size: len + side_bytes,
                });
            }
            return Some(Model::Frame { sides, end, len });
        }
        if sides.len() >= MAX_SIDECARS || len > limit - side_bytes {
            return Some(Model::TooLarge {
                end,
                size: len + side_bytes,
            });
        }
        if end + len > data.len() {
            return None;
        }
        sides.push(end..end + len);
        side_bytes += len;
        pos = end + len;
    }
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
            Piece::Sidecar(b) => {
                data.extend_from_slice(&sidecar_header(b.len()));
                data.extend_from_slice(b);
            }
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
        let next = model(&data, at, limit);
        // A frame with no sidecars before it, all arrived: `has_frame`
        // says so, and `try_next_frame` must return it.
        let whole = |arrived: usize| {
            matches!(&next, Some(Model::Frame { sides, end, len })
                if sides.is_empty() && arrived >= end + len)
        };
        match op {
            Op::Has => assert_eq!(reader.has_frame(), whole(stream.delivered())),
            Op::Next | Op::TryNext => {
                let r = match op {
                    Op::Next => reader.next_frame(&stream).map(Some),
                    _ => reader.try_next_frame(&stream),
                };
                let got = r.map(|f| f.map(<[u8]>::to_vec));
                match got {
                    Ok(Some(frame)) => {
                        let Some(Model::Frame { sides, end, len }) = next else {
                            panic!("a frame the stream does not hold: {next:?}");
                        };
                        assert!(frame.len() == len);
                        assert_eq!(frame, &data[end..end + len], "a frame not in the stream");
                        let got_sides = reader.take_sidecars();
                        assert_eq!(got_sides.len(), sides.len(), "sidecars lost or invented");
                        for (g, want) in got_sides.iter().zip(&sides) {
                            assert_eq!(&g[..], &data[want.clone()], "a sidecar changed");
                        }
                        at = end + len;
                    }
                    Ok(None) => {
                        assert!(matches!(op, Op::TryNext));
                        let arrived = stream.delivered();
                        assert!(!whole(arrived), "try_next_frame hid an arrived frame");
                        if let Some(Model::TooLarge { end, .. }) = next {
                            assert!(
                                arrived < end,
                                "an oversized header arrived but was not refused"
                            );
                        }
                    }
                    Err(TransportError::FrameTooLarge { size, limit: l }) => {
                        let Some(Model::TooLarge { end, size: want }) = next else {
                            panic!("refused, but the stream holds {next:?}");
                        };
                        assert!(size == want as u64 && l == limit as u64);
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
                        let complete = matches!(&next, Some(Model::Frame { end, len, .. })
                            if total >= end + len);
                        assert!(!complete, "disconnected with a whole frame left");
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
