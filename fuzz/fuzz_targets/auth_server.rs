//! The handshake's server side (`auth::server`, run by a Manager, an actor
//! and a cluster's driver on every connection) against a client that
//! plays as an attacker would: its bytes arrive in reads of any size, and
//! are raw bytes, bare headers (oversized or not), an honest answer made
//! with the key (the legitimate client), an honest answer with one bit
//! flipped, a replay of an honest answer to an earlier challenge, the
//! server's own challenge reflected back, answers made for another purpose
//! or with another key, read timeouts, interruptions — in any order.
//!
//! Checked:
//! * the server never reads more than one header and `PREAUTH_MAX` bytes;
//! * it returns `Ok` only if the answer it read is the one the legitimate
//!   client made for *this* challenge: every byte of it came from the
//!   key-holder unchanged, and its MAC verifies (computed here
//!   independently) — so no input of the fuzzer's can authenticate;
//! * on `Ok` its proof (`Accepted`) verifies for the client; on a wrong
//!   answer it says `Refused`;
//! * an empty key is refused before anything is sent.
#![no_main]

use std::io::{self, Read, Write};

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use mproc_core::__fuzz::{auth_server, AuthFailure, Purpose, PREAUTH_MAX};
use mproc_fuzz::{accepted, answer, mac, other_key, parse_challenge, refused, Counting};

#[global_allocator]
static ALLOC: Counting = Counting;

#[derive(Debug, Arbitrary)]
enum Piece {
    /// Attacker's bytes.
    Raw(Vec<u8>),
    /// A bare header.
    Header(u32),
    /// The legitimate client's answer to the challenge sent.
    Honest,
    /// The same with one bit flipped.
    Flipped { at: u8, bit: u8 },
    /// The legitimate client's answer to an earlier challenge.
    Replay { old: [u8; 32] },
    /// The server's own bytes, sent back.
    Reflect,
    /// An answer with the right key for another purpose.
    OtherPurpose,
    /// An answer made with another key.
    OtherKey(Vec<u8>),
    /// A read that times out (the deadline).
    Timeout,
}

#[derive(Debug, Arbitrary)]
struct Input {
    key: Vec<u8>,
    purpose: u8,
    /// The legitimate client's nonce.
    nc: [u8; 32],
    /// Read sizes, cycled (0: `Interrupted`).
    reads: Vec<u8>,
    /// The write that fails (none when past the last).
    fail_write: u8,
    pieces: Vec<Piece>,
}

/// What the attacker's connection has queued, byte by byte with whether the
/// key-holder made it.
struct Client<'a> {
    input: &'a Input,
    purpose: u8,
    pieces: std::slice::Iter<'a, Piece>,
    queue: std::collections::VecDeque<(u8, bool)>,
    /// Bytes the server read, with their provenance.
    read: Vec<(u8, bool)>,
    /// Bytes the server wrote.
    written: Vec<u8>,
    writes: u8,
    reads: usize,
    timeouts: bool,
}

impl Client<'_> {
    fn live_nonce(&self) -> Option<[u8; 32]> {
        parse_challenge(self.written.get(..42)?).map(|(_, ns)| ns)
    }

    fn honest(&self, key: &[u8], purpose: u8, ns: &[u8; 32]) -> Vec<u8> {
        answer(
            &mac(key, b"mproc client", purpose, ns, &self.input.nc),
            &self.input.nc,
        )
    }

    /// Queues the next piece; false when there are none left.
    fn refill(&mut self) -> bool {
        let Some(p) = self.pieces.next() else {
            return false;
        };
        let key = &self.input.key;
        let ns = self.live_nonce();
        // Each byte, and whether the key-holder made it as it is.
        let bytes: Vec<(u8, bool)> = match p {
            Piece::Raw(b) => mark(b, false),
            Piece::Header(n) => mark(&n.to_le_bytes(), false),
            Piece::Honest => ns
                .map(|ns| mark(&self.honest(key, self.purpose, &ns), true))
                .unwrap_or_default(),
            Piece::Flipped { at, bit } => {
                let mut b = ns
                    .map(|ns| mark(&self.honest(key, self.purpose, &ns), true))
                    .unwrap_or_default();
                if !b.is_empty() {
                    let i = usize::from(*at) % b.len();
                    b[i] = (b[i].0 ^ (1 << (bit % 8)), false);
                }
                b
            }
            Piece::Replay { old } => {
                let old = if Some(*old) == ns {
                    [!old[0]; 32]
                } else {
                    *old
                };
                mark(&self.honest(key, self.purpose, &old), false)
            }
            Piece::Reflect => mark(&self.written, false),
            Piece::OtherPurpose => ns
                .map(|ns| mark(&self.honest(key, (self.purpose + 1) % 3, &ns), false))
                .unwrap_or_default(),
            Piece::OtherKey(k) => {
                let k = other_key(key, k);
                ns.map(|ns| mark(&self.honest(&k, self.purpose, &ns), false))
                    .unwrap_or_default()
            }
            Piece::Timeout => {
                self.timeouts = true;
                Vec::new()
            }
        };
        self.queue.extend(bytes);
        true
    }
}

fn mark(b: &[u8], honest: bool) -> Vec<(u8, bool)> {
    b.iter().map(|&b| (b, honest)).collect()
}

impl Read for Client<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.queue.is_empty() {
            if std::mem::take(&mut self.timeouts) {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            if !self.refill() {
                return Ok(0);
            }
        }
        let sizes = &self.input.reads;
        let size = if sizes.is_empty() {
            usize::MAX
        } else {
            usize::from(sizes[self.reads % sizes.len()])
        };
        self.reads += 1;
        if size == 0 && self.reads < 64 {
            return Err(io::ErrorKind::Interrupted.into());
        }
        let n = size.max(1).min(buf.len()).min(self.queue.len());
        for b in buf.iter_mut().take(n) {
            let (byte, honest) = self.queue.pop_front().unwrap();
            *b = byte;
            self.read.push((byte, honest));
        }
        Ok(n)
    }
}

impl Write for Client<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.writes += 1;
        if self.writes == self.input.fail_write {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        self.written.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fuzz_target!(|input: Input| {
    if input.key.len() > 100 || input.pieces.len() > 12 {
        return;
    }
    let purpose = input.purpose % 3;
    let mut c = Client {
        input: &input,
        purpose,
        pieces: input.pieces.iter(),
        queue: Default::default(),
        read: Vec::new(),
        written: Vec::new(),
        writes: 0,
        reads: 0,
        timeouts: false,
    };
    let which = [Purpose::Manager, Purpose::Actor, Purpose::Cluster][usize::from(purpose)];
    let r = auth_server(&mut c, &input.key, which);

    assert!(
        c.read.len() <= 4 + PREAUTH_MAX,
        "the server read {} bytes before authentication",
        c.read.len()
    );
    if input.key.is_empty() {
        assert_eq!(r, Err(AuthFailure::EmptyKey));
        assert!(c.written.is_empty() && c.read.is_empty());
        return;
    }
    if c.written.is_empty() {
        // Its first write failed.
        assert!(matches!(r, Err(AuthFailure::Io(_))), "{r:?}");
        return;
    }
    let (p, ns) = parse_challenge(&c.written[..42.min(c.written.len())])
        .expect("the server opens with a well-formed challenge");
    assert_eq!(p, purpose);
    if matches!(input.pieces.first(), Some(Piece::Honest)) && !matches!(input.fail_write, 1 | 2) {
        // The legitimate client, undisturbed, gets in.
        assert_eq!(r, Ok(()), "the key-holder was refused");
    }
    match r {
        Ok(()) => {
            // The answer it read: a header, then the MAC and the nonce
            // (postcard ignores bytes after them). Those 64 bytes must be
            // the key-holder's, unchanged, for this challenge.
            let body = c.read.get(4..68).expect("accepted a short answer");
            let bytes: Vec<u8> = body.iter().map(|&(b, _)| b).collect();
            let nc: [u8; 32] = bytes[32..].try_into().unwrap();
            assert_eq!(
                bytes[..32],
                mac(&input.key, b"mproc client", purpose, &ns, &nc),
                "accepted a wrong MAC"
            );
            assert!(
                body.iter().all(|&(_, honest)| honest),
                "accepted an answer the attacker made: {input:?}"
            );
            let proof = mac(&input.key, b"mproc server", purpose, &nc, &ns);
            assert_eq!(&c.written[42..], accepted(&proof), "a wrong server proof");
        }
        Err(AuthFailure::Refused) => {
            // Told so, unless that write failed.
            let rest = &c.written[42..];
            assert!(rest == refused() || rest.is_empty(), "{rest:?}");
        }
        Err(AuthFailure::Io(_) | AuthFailure::TooLarge | AuthFailure::Malformed) => {
            assert_eq!(c.written.len(), 42, "no verdict after a broken exchange");
        }
        Err(e) => panic!("unexpected failure on the server side: {e:?}"),
    }
});
