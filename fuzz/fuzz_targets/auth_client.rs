//! The handshake's client side (`auth::client`, run by Manager proxies,
//! actor callers and joining nodes) against a server that plays as an
//! attacker would: raw bytes, bare headers, well-formed challenges (which
//! need no key), the legitimate server's verdict (made with the key from
//! the client's actual answer), that verdict with one bit flipped, a
//! verdict replayed from another exchange, the client's own MAC or bytes
//! reflected back, a refusal, read timeouts — in any order, in reads of any
//! size.
//!
//! Checked:
//! * the client never reads more than one header and `PREAUTH_MAX` bytes
//!   per frame, and answers only a well-formed challenge for its purpose;
//! * its answer's MAC is the one the protocol defines (verified here
//!   independently);
//! * it returns `Ok` only if the verdict it read is the legitimate
//!   server's, unchanged, for this exchange — no input of the fuzzer's can
//!   pass for a server that holds the key.
#![no_main]

use std::io::{self, Read, Write};

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use mproc_core::__fuzz::{auth_client, AuthFailure, Purpose, PREAUTH_MAX};
use mproc_fuzz::{
    accepted, challenge, mac, other_key, parse_answer, parse_challenge, refused, varint, Counting,
};

#[global_allocator]
static ALLOC: Counting = Counting;

#[derive(Debug, Arbitrary)]
enum Piece {
    Raw(Vec<u8>),
    Header(u32),
    /// A well-formed challenge (anyone can make one).
    Challenge {
        purpose: u8,
        nonce: [u8; 32],
    },
    /// The legitimate server's verdict on the answer the client sent.
    Honest,
    /// The same with one bit flipped.
    Flipped {
        at: u8,
        bit: u8,
    },
    /// The legitimate server's verdict in another exchange.
    Replay {
        nc: [u8; 32],
    },
    /// `Accepted` carrying the client's own MAC.
    ReflectMac,
    /// The client's bytes, sent back.
    Echo,
    /// A verdict made with another key.
    OtherKey(Vec<u8>),
    Refused,
    Timeout,
}

#[derive(Debug, Arbitrary)]
struct Input {
    key: Vec<u8>,
    purpose: u8,
    reads: Vec<u8>,
    fail_write: u8,
    pieces: Vec<Piece>,
}

struct Server<'a> {
    input: &'a Input,
    purpose: u8,
    pieces: std::slice::Iter<'a, Piece>,
    queue: std::collections::VecDeque<(u8, bool)>,
    /// Bytes the client read (with whether the key-holder made them),
    /// before its first write and after.
    before: Vec<(u8, bool)>,
    after: Vec<(u8, bool)>,
    written: Vec<u8>,
    writes: u8,
    reads: usize,
    timeouts: bool,
}

impl Server<'_> {
    /// The nonces of this exchange, once the client has answered.
    fn nonces(&self) -> Option<([u8; 32], [u8; 32])> {
        let frame: Vec<u8> = self.before.iter().map(|&(b, _)| b).collect();
        let (_, ns) = parse_challenge(&frame)?;
        let (_, nc) = parse_answer(&self.written)?;
        Some((ns, nc))
    }

    fn verdict(&self, key: &[u8], nc: Option<[u8; 32]>) -> Vec<u8> {
        match self.nonces() {
            Some((ns, their)) => accepted(&mac(
                key,
                b"mproc server",
                self.purpose,
                &nc.unwrap_or(their),
                &ns,
            )),
            None => Vec::new(),
        }
    }

    fn refill(&mut self) -> bool {
        let Some(p) = self.pieces.next() else {
            return false;
        };
        let key = &self.input.key;
        // Each byte, and whether the key-holder made it as it is.
        let bytes: Vec<(u8, bool)> = match p {
            Piece::Raw(b) => mark(b, false),
            Piece::Header(n) => mark(&n.to_le_bytes(), false),
            Piece::Challenge { purpose, nonce } => mark(&challenge(purpose % 4, nonce), false),
            Piece::Honest => mark(&self.verdict(key, None), true),
            Piece::Flipped { at, bit } => {
                let mut v = mark(&self.verdict(key, None), true);
                if !v.is_empty() {
                    let i = usize::from(*at) % v.len();
                    v[i] = (v[i].0 ^ (1 << (bit % 8)), false);
                }
                v
            }
            Piece::Replay { nc } => {
                let mine = self.nonces().map(|(_, nc)| nc);
                let nc = if Some(*nc) == mine { [!nc[0]; 32] } else { *nc };
                mark(&self.verdict(key, Some(nc)), false)
            }
            Piece::ReflectMac => match parse_answer(&self.written) {
                Some((m, _)) => mark(&accepted(&m), false),
                None => Vec::new(),
            },
            Piece::Echo => mark(&self.written, false),
            Piece::OtherKey(k) => {
                let k = other_key(key, k);
                mark(&self.verdict(&k, None), false)
            }
            Piece::Refused => mark(&refused(), false),
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

impl Read for Server<'_> {
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
            let got = self.queue.pop_front().unwrap();
            *b = got.0;
            if self.written.is_empty() {
                self.before.push(got);
            } else {
                self.after.push(got);
            }
        }
        Ok(n)
    }
}

impl Write for Server<'_> {
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
    let mut s = Server {
        input: &input,
        purpose,
        pieces: input.pieces.iter(),
        queue: Default::default(),
        before: Vec::new(),
        after: Vec::new(),
        written: Vec::new(),
        writes: 0,
        reads: 0,
        timeouts: false,
    };
    let which = [Purpose::Manager, Purpose::Actor, Purpose::Cluster][usize::from(purpose)];
    let r = auth_client(&mut s, &input.key, which);

    if input.key.is_empty() {
        assert_eq!(r, Err(AuthFailure::EmptyKey));
        assert!(s.before.is_empty() && s.written.is_empty());
        return;
    }
    assert!(
        s.before.len() <= 4 + PREAUTH_MAX,
        "{} bytes read",
        s.before.len()
    );
    assert!(
        s.after.len() <= 4 + PREAUTH_MAX,
        "{} bytes read",
        s.after.len()
    );
    if !s.written.is_empty() {
        // It answered: the challenge was well-formed and for its purpose,
        // and the answer is the protocol's.
        let frame: Vec<u8> = s.before.iter().map(|&(b, _)| b).collect();
        let (p, ns) = parse_challenge(&frame).expect("answered a malformed challenge");
        assert_eq!(p, purpose, "answered a challenge for another purpose");
        let (m, nc) = parse_answer(&s.written).expect("a malformed answer");
        assert_eq!(m, mac(&input.key, b"mproc client", purpose, &ns, &nc));
    }
    if let [Piece::Challenge { purpose: p, .. }, Piece::Honest, ..] = input.pieces.as_slice() {
        if p % 4 == purpose && input.fail_write != 1 {
            // The legitimate server, undisturbed, is accepted.
            assert_eq!(r, Ok(()), "the key-holding server was refused");
        }
    }
    match r {
        Ok(()) => {
            // The verdict it read: a header, the variant (0, perhaps in an
            // overlong varint) and the server's MAC; postcard ignores what
            // follows. The MAC must be the key-holder's, unchanged, for
            // this exchange.
            let (ns, nc) = s.nonces().expect("accepted without an exchange");
            let bytes: Vec<u8> = s.after.iter().map(|&(b, _)| b).collect();
            let (variant, rest) = varint(&bytes[4..]).expect("accepted no verdict");
            assert_eq!(variant, 0, "accepted a refusal");
            let at = bytes.len() - rest.len();
            let theirs = s.after.get(at..at + 32).expect("accepted a short verdict");
            assert_eq!(
                theirs.iter().map(|&(b, _)| b).collect::<Vec<u8>>(),
                mac(&input.key, b"mproc server", purpose, &nc, &ns),
                "accepted a wrong proof"
            );
            assert!(
                theirs.iter().all(|&(_, honest)| honest),
                "accepted a proof the attacker made: {input:?}"
            );
        }
        Err(
            AuthFailure::Refused
            | AuthFailure::ServerUnproven
            | AuthFailure::NotMproc
            | AuthFailure::TooLarge
            | AuthFailure::Malformed
            | AuthFailure::Io(_),
        ) => {}
        Err(AuthFailure::EmptyKey) => panic!("EmptyKey with a key"),
    }
});
