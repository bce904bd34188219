//! What the fuzz targets share: byte streams fed from a fuzz input, an
//! allocator that remembers the largest allocation, and the handshake's
//! wire format written out independently of `mproc-core` (an attacker's
//! view: only the bytes, and the key where a target plays an honest peer).

use std::alloc::{GlobalAlloc, Layout, System};
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use hmac::{Hmac, Mac};
use mproc_transport::{ByteStream, FrameReader, TransportError};
use sha2::{Digest, Sha256};

// ----- the largest allocation ---------------------------------------------

/// The system allocator, remembering the largest block asked for since the
/// last [`reset_peak`]: a decoder that trusts an announced length shows up
/// here even when the machine has the memory.
#[derive(Debug)]
pub struct Counting;

static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded unchanged to `System`; only a counter is
// added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        PEAK.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded contract.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        PEAK.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded contract.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded contract.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        PEAK.fetch_max(new_size, Ordering::Relaxed);
        // SAFETY: forwarded contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Forgets the largest allocation so far.
pub fn reset_peak() {
    PEAK.store(0, Ordering::Relaxed);
}

/// The largest block allocated since [`reset_peak`].
pub fn peak() -> usize {
    PEAK.load(Ordering::Relaxed)
}

// ----- streams --------------------------------------------------------------

/// An in-memory [`ByteStream`] that hands out `data` in reads of the sizes
/// in `reads` (cycled; 0 means `Interrupted` for `read`, and "nothing yet"
/// for `try_read`). Records where each read started, so a test can tell
/// whether bytes were read after some point.
#[derive(Debug)]
pub struct SliceStream {
    st: Mutex<SliceState>,
}

#[derive(Debug)]
struct SliceState {
    data: Vec<u8>,
    pos: usize,
    reads: Vec<usize>,
    next: usize,
    zeros: u32,
    last_read_start: Option<usize>,
}

impl SliceStream {
    /// A stream of `data` read in pieces of `reads` bytes.
    pub fn new(data: Vec<u8>, reads: Vec<usize>) -> Self {
        SliceStream {
            st: Mutex::new(SliceState {
                data,
                pos: 0,
                reads,
                next: 0,
                zeros: 0,
                last_read_start: None,
            }),
        }
    }

    /// Bytes handed out so far.
    pub fn delivered(&self) -> usize {
        self.st.lock().unwrap().pos
    }

    /// True once every byte was handed out.
    pub fn at_end(&self) -> bool {
        let s = self.st.lock().unwrap();
        s.pos == s.data.len()
    }

    /// Where the last read that returned bytes started.
    pub fn last_read_start(&self) -> Option<usize> {
        self.st.lock().unwrap().last_read_start
    }

    /// `Ok(None)`: this read is told to deliver nothing.
    fn take(&self, buf: &mut [u8]) -> Option<usize> {
        let mut s = self.st.lock().unwrap();
        let mut size = if s.reads.is_empty() {
            usize::MAX
        } else {
            let n = s.reads[s.next % s.reads.len()];
            s.next += 1;
            n
        };
        if size == 0 {
            s.zeros += 1;
            // Never for ever: a run of empty reads ends after three.
            if s.zeros <= 3 {
                return None;
            }
            size = 1;
        }
        s.zeros = 0;
        let n = size.min(buf.len()).min(s.data.len() - s.pos);
        if n > 0 {
            let at = s.pos;
            buf[..n].copy_from_slice(&s.data[at..at + n]);
            s.last_read_start = Some(at);
            s.pos += n;
        }
        Some(n)
    }
}

impl ByteStream for SliceStream {
    fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.take(buf)
            .ok_or_else(|| io::ErrorKind::Interrupted.into())
    }
    fn try_read(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        Ok(match self.take(buf) {
            None => None,
            Some(n) => Some(n),
        })
    }
    fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        Ok(buf.len())
    }
    fn wait_writable(&self) -> io::Result<()> {
        Ok(())
    }
    fn shutdown(&self) {}
}

/// An `io::Read` over a slice, `chunk` bytes at most per read (0: all).
#[derive(Debug)]
pub struct ChunkReader<'a> {
    data: &'a [u8],
    chunk: usize,
}

impl<'a> ChunkReader<'a> {
    /// A reader of `data`.
    pub fn new(data: &'a [u8], chunk: usize) -> Self {
        ChunkReader {
            data,
            chunk: if chunk == 0 { usize::MAX } else { chunk },
        }
    }

    /// What is left unread.
    pub fn rest(&self) -> &'a [u8] {
        self.data
    }
}

impl io::Read for ChunkReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.chunk.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

/// Runs `f` on each frame of `data` read by a [`FrameReader`] with limit
/// `max` in reads of `chunk` bytes (0: all), as a link's reader does, and
/// stops at the first error (the link would be closed) or when `f` says so.
/// Also checks the reader's promise on memory: no block larger than what
/// arrived allows, whatever length was announced.
pub fn each_frame(data: &[u8], chunk: usize, max: usize, mut f: impl FnMut(&[u8]) -> bool) {
    let stream = SliceStream::new(data.to_vec(), if chunk == 0 { vec![] } else { vec![chunk] });
    let mut reader = FrameReader::new(max);
    loop {
        reset_peak();
        let frame = match reader.next_frame(&stream) {
            Ok(frame) => frame,
            Err(TransportError::Disconnected | TransportError::FrameTooLarge { .. }) => break,
            Err(e) => panic!("unexpected error from an in-memory stream: {e}"),
        };
        assert!(frame.len() <= max);
        assert!(
            peak() <= frame_memory_bound(stream.delivered()),
            "the frame reader allocated {} bytes after {} arrived",
            peak(),
            stream.delivered()
        );
        if !f(frame) {
            break;
        }
    }
}

/// The most a frame reader may allocate in one block once `arrived` bytes
/// came in: amortised growth over what arrived, plus its 64 KiB read
/// buffer (see `FrameReader::make_room`).
pub fn frame_memory_bound(arrived: usize) -> usize {
    4 * arrived + 512 * 1024
}

/// Splits the common head of a message target's input: a selector byte, a
/// read-size byte, and the rest.
pub fn split_head(data: &[u8]) -> Option<(u8, usize, &[u8])> {
    match data {
        [sel, chunk, rest @ ..] => Some((*sel, usize::from(*chunk), rest)),
        _ => None,
    }
}

// ----- the handshake, as bytes ----------------------------------------------

/// `HMAC-SHA256(key, label ‖ purpose ‖ a ‖ b)`, as `auth.rs` documents it.
pub fn mac(key: &[u8], label: &[u8], purpose: u8, a: &[u8; 32], b: &[u8; 32]) -> [u8; 32] {
    let mut m = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
    m.update(label);
    m.update(purpose_label(purpose));
    m.update(a);
    m.update(b);
    m.finalize().into_bytes().into()
}

/// Another key than `key`, from `k`: HMAC pads a key with zeros to its
/// block (and hashes a longer one first), so keys that differ only in
/// trailing zero bytes are the same key to it — a property of HMAC, not a
/// weakness: such a key is still only found by knowing this one.
pub fn other_key(key: &[u8], k: &[u8]) -> Vec<u8> {
    let block = |k: &[u8]| {
        let mut b = if k.len() > 64 {
            Sha256::digest(k).to_vec()
        } else {
            k.to_vec()
        };
        b.resize(64, 0);
        b
    };
    if k.is_empty() || block(k) == block(key) {
        [key, b"!".as_slice()].concat()
    } else {
        k.to_vec()
    }
}

/// The purpose's label inside the MACs (0 Manager, 1 Actor, 2 Cluster).
pub fn purpose_label(p: u8) -> &'static [u8] {
    match p {
        0 => b"manager",
        1 => b"actor",
        _ => b"cluster",
    }
}

/// `[len: u32 LE][payload]`.
pub fn framed(payload: &[u8]) -> Vec<u8> {
    let mut v = (payload.len() as u32).to_le_bytes().to_vec();
    v.extend_from_slice(payload);
    v
}

/// A challenge frame: magic, version 2, purpose, nonce.
pub fn challenge(purpose: u8, nonce: &[u8; 32]) -> Vec<u8> {
    let mut p = b"MPMG".to_vec();
    p.push(2);
    p.push(purpose);
    p.extend_from_slice(nonce);
    framed(&p)
}

/// A postcard varint at the start of `b` (as postcard reads one: at most
/// five bytes for a `u32`, overlong forms allowed): the value and the rest.
pub fn varint(b: &[u8]) -> Option<(u64, &[u8])> {
    let mut v = 0u64;
    for (i, byte) in b.iter().enumerate().take(5) {
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((v, &b[i + 1..]));
        }
    }
    None
}

/// The payload of the one whole frame `frame`.
pub fn payload(frame: &[u8]) -> Option<&[u8]> {
    let (head, rest) = frame.split_at_checked(4)?;
    (u32::from_le_bytes(head.try_into().ok()?) as usize == rest.len()).then_some(rest)
}

/// Parses a challenge frame as the client's decoder reads it (trailing
/// bytes ignored): `(purpose, nonce)` when magic and version are right.
pub fn parse_challenge(frame: &[u8]) -> Option<(u8, [u8; 32])> {
    let p = payload(frame)?;
    let rest = p.strip_prefix(b"MPMG")?;
    let (2, rest) = varint(rest)? else {
        return None;
    };
    let (purpose @ 0..=2, rest) = varint(rest)? else {
        return None;
    };
    Some((purpose as u8, rest.get(..32)?.try_into().ok()?))
}

/// An answer frame: the client's MAC, then its nonce.
pub fn answer(mac: &[u8; 32], nonce: &[u8; 32]) -> Vec<u8> {
    let mut p = mac.to_vec();
    p.extend_from_slice(nonce);
    framed(&p)
}

/// Parses an answer frame: `(mac, nonce)`.
pub fn parse_answer(frame: &[u8]) -> Option<([u8; 32], [u8; 32])> {
    match frame {
        [64, 0, 0, 0, rest @ ..] if rest.len() == 64 => {
            Some((rest[..32].try_into().ok()?, rest[32..].try_into().ok()?))
        }
        _ => None,
    }
}

/// `Verdict::Accepted { mac }`.
pub fn accepted(mac: &[u8; 32]) -> Vec<u8> {
    let mut p = vec![0];
    p.extend_from_slice(mac);
    framed(&p)
}

/// `Verdict::Refused`.
pub fn refused() -> Vec<u8> {
    framed(&[1])
}
