//! The frame codec on an in-memory stream: no descriptors, no system
//! calls, so it also runs under miri (`scripts/miri.sh`), which checks the
//! reader's buffer handling (`copy_within`, growth, shrinking) for
//! undefined behaviour. The fuzz target `fuzz/fuzz_targets/frame.rs`
//! checks the same properties on random input.

use std::io;
use std::sync::Mutex;

use mproc_transport::{
    begin_frame, end_frame, sidecar_header, ByteStream, FrameReader, TransportError,
};

/// `data` handed out in reads of `sizes` bytes (cycled).
#[derive(Debug)]
struct Mem {
    st: Mutex<(Vec<u8>, usize, Vec<usize>, usize)>,
}

impl Mem {
    fn new(data: Vec<u8>, sizes: &[usize]) -> Self {
        Mem {
            st: Mutex::new((data, 0, sizes.to_vec(), 0)),
        }
    }
    fn delivered(&self) -> usize {
        self.st.lock().unwrap().1
    }
}

impl ByteStream for Mem {
    fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        let mut s = self.st.lock().unwrap();
        let (data, pos, sizes, next) = &mut *s;
        let size = sizes[*next % sizes.len()];
        *next += 1;
        let n = size.min(buf.len()).min(data.len() - *pos);
        buf[..n].copy_from_slice(&data[*pos..*pos + n]);
        *pos += n;
        Ok(n)
    }
    fn try_read(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        self.read(buf).map(Some)
    }
    fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        Ok(buf.len())
    }
    fn wait_writable(&self) -> io::Result<()> {
        Ok(())
    }
    fn shutdown(&self) {}
}

fn encode(payloads: &[Vec<u8>], max: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for p in payloads {
        let start = begin_frame(&mut out);
        out.extend_from_slice(p);
        end_frame(&mut out, start, max).unwrap();
    }
    out
}

fn payloads() -> Vec<Vec<u8>> {
    // Sizes around the reader's 64 KiB read buffer, so that frames straddle
    // it, the buffer compacts and grows, and shrinks again after a large one.
    let big = if cfg!(miri) { 70_000 } else { 1_200_000 };
    [0, 1, 3, 65_531, 65_536, 7, big, 2, 65_540, 0]
        .iter()
        .enumerate()
        .map(|(i, &n)| (0..n).map(|j| (i * 31 + j) as u8).collect())
        .collect()
}

#[test]
fn frames_round_trip_whatever_the_read_sizes() {
    let ps = payloads();
    let wire = encode(&ps, usize::MAX);
    let splits: &[&[usize]] = if cfg!(miri) {
        &[&[usize::MAX], &[4093, 1, 70_000]]
    } else {
        &[&[usize::MAX], &[1, 2, 3], &[4093, 1, 70_000], &[65_536]]
    };
    for sizes in splits {
        let s = Mem::new(wire.clone(), sizes);
        let mut r = FrameReader::new(2 << 20);
        for p in &ps {
            assert_eq!(r.next_frame(&s).unwrap(), &p[..], "reads of {sizes:?}");
        }
        assert!(matches!(
            r.next_frame(&s),
            Err(TransportError::Disconnected)
        ));
    }
}

#[test]
fn try_next_frame_returns_each_frame_once_it_has_arrived() {
    let ps = payloads();
    let wire = encode(&ps, usize::MAX);
    let s = Mem::new(wire, &[5000]);
    let mut r = FrameReader::new(2 << 20);
    let mut got = Vec::new();
    while got.len() < ps.len() {
        if let Some(f) = r.try_next_frame(&s).unwrap() {
            got.push(f.to_vec());
        }
    }
    assert_eq!(got, ps);
}

#[test]
fn an_oversized_header_is_refused_before_its_payload_is_read() {
    let mut wire = encode(&[b"ok".to_vec()], 100);
    wire.extend_from_slice(&(1u32 << 30).to_le_bytes());
    wire.extend_from_slice(&[7; 100]);
    let s = Mem::new(wire, &[3]);
    let mut r = FrameReader::new(1000);
    assert_eq!(r.next_frame(&s).unwrap(), b"ok");
    match r.next_frame(&s) {
        Err(TransportError::FrameTooLarge { size, limit }) => {
            assert_eq!((size, limit), (1 << 30, 1000));
        }
        other => panic!("{other:?}"),
    }
    // Reads of 3 bytes: the header ended at byte 14 of the stream, and no
    // read went past the one that completed it.
    assert!(s.delivered() <= 15, "{} bytes read", s.delivered());
}

#[test]
fn end_frame_refuses_a_payload_over_the_limit_and_restores_the_buffer() {
    let mut out = vec![9, 9];
    let start = begin_frame(&mut out);
    out.extend_from_slice(&[1; 11]);
    assert!(matches!(
        end_frame(&mut out, start, 10),
        Err(TransportError::FrameTooLarge {
            size: 11,
            limit: 10
        })
    ));
    assert_eq!(out, [9, 9]);
}

#[test]
fn a_torn_frame_at_the_end_is_disconnected_not_returned() {
    let mut wire = encode(&[vec![1; 10]], 100);
    wire.truncate(9);
    let s = Mem::new(wire, &[4]);
    let mut r = FrameReader::new(100);
    assert!(matches!(
        r.next_frame(&s),
        Err(TransportError::Disconnected)
    ));
}

/// `frame` preceded by `sides` as sidecars, as a writer sends them.
fn with_sidecars(out: &mut Vec<u8>, sides: &[Vec<u8>], frame: &[u8]) {
    for side in sides {
        out.extend_from_slice(&sidecar_header(side.len()));
        out.extend_from_slice(side);
    }
    let start = begin_frame(out);
    out.extend_from_slice(frame);
    end_frame(out, start, usize::MAX).unwrap();
}

#[test]
fn sidecars_arrive_with_their_frame_whatever_the_read_sizes() {
    let big = if cfg!(miri) { 70_000 } else { 1_500_000 };
    let sides: Vec<Vec<u8>> = [big, 0, 5, 65_536]
        .iter()
        .enumerate()
        .map(|(i, &n)| (0..n).map(|j| (i * 7 + j) as u8).collect())
        .collect();
    let mut wire = Vec::new();
    with_sidecars(&mut wire, &sides, b"first");
    with_sidecars(&mut wire, &[], b"plain");
    with_sidecars(&mut wire, &sides[2..3], b"third");
    let splits: &[&[usize]] = if cfg!(miri) {
        &[&[usize::MAX], &[4093, 1, 70_000]]
    } else {
        &[&[usize::MAX], &[1, 2, 3], &[4093, 1, 70_000]]
    };
    for sizes in splits {
        let s = Mem::new(wire.clone(), sizes);
        let mut r = FrameReader::new(4 << 20);
        assert_eq!(r.next_frame(&s).unwrap(), b"first", "{sizes:?}");
        assert_eq!(r.take_sidecars(), sides, "{sizes:?}");
        assert_eq!(r.next_frame(&s).unwrap(), b"plain");
        assert!(r.take_sidecars().is_empty(), "a frame without sidecars");
        assert_eq!(r.next_frame(&s).unwrap(), b"third");
        // Not taken: dropped at the next call, not handed to a later frame.
        assert!(matches!(
            r.next_frame(&s),
            Err(TransportError::Disconnected)
        ));
        assert!(r.take_sidecars().is_empty());
    }
}

#[test]
fn try_next_frame_waits_out_a_frame_whose_sidecars_are_coming() {
    let mut wire = Vec::new();
    with_sidecars(&mut wire, &[vec![3; 200_000]], b"x");
    let s = Mem::new(wire, &[1000]);
    let mut r = FrameReader::new(1 << 20);
    let mut got = None;
    while got.is_none() {
        got = r.try_next_frame(&s).unwrap().map(<[u8]>::to_vec);
    }
    assert_eq!(got.unwrap(), b"x");
    assert_eq!(r.take_sidecars(), vec![vec![3; 200_000]]);
}

#[test]
fn sidecars_count_against_the_limit_with_their_frame() {
    // Each sidecar fits, all of them together do not.
    let mut wire = Vec::new();
    with_sidecars(&mut wire, &[vec![1; 600], vec![2; 600]], b"y");
    let s = Mem::new(wire, &[usize::MAX]);
    let mut r = FrameReader::new(1000);
    match r.next_frame(&s) {
        Err(TransportError::FrameTooLarge { size, limit }) => {
            assert_eq!((size, limit), (1200, 1000));
        }
        other => panic!("{other:?}"),
    }
    // The frame itself over what the sidecars left of the limit.
    let mut wire = Vec::new();
    with_sidecars(&mut wire, &[vec![1; 990]], &[0; 20]);
    let s = Mem::new(wire, &[usize::MAX]);
    let mut r = FrameReader::new(1000);
    assert!(matches!(
        r.next_frame(&s),
        Err(TransportError::FrameTooLarge { size: 1010, .. })
    ));
    // A sidecar header announcing more than the limit is refused before
    // its bytes are read.
    let mut wire = sidecar_header(1 << 30).to_vec();
    wire.extend_from_slice(&[0; 64]);
    let s = Mem::new(wire, &[4]);
    let mut r = FrameReader::new(1000);
    assert!(matches!(
        r.next_frame(&s),
        Err(TransportError::FrameTooLarge { .. })
    ));
    assert_eq!(s.delivered(), 4);
}
