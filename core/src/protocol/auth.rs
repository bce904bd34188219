//! Mutual challenge–response authentication with HMAC-SHA256, run on every
//! connection to a Manager server, an actor and a cluster's driver before
//! anything else is read — one handshake for all three.
//!
//! 1. server → client: [`Challenge`] (magic, version, the [`Purpose`] of
//!    the listener, 32 random bytes `ns`);
//! 2. client → server: [`Answer`]: `HMAC(key, "mproc client" ‖ purpose ‖ ns
//!    ‖ nc)` and its own 32 random bytes `nc`;
//! 3. server → client: [`Verdict::Accepted`] with `HMAC(key, "mproc
//!    server" ‖ purpose ‖ nc ‖ ns)`, or [`Verdict::Refused`] followed by
//!    closing.
//!
//! The purpose is inside both MACs, so an answer made for one kind of
//! listener is worthless at another even where the same key is used, and a
//! client that dials the wrong kind of server learns so at once.
//!
//! Both sides check the other's MAC in constant time (`Mac::verify_slice`),
//! so neither learns anything from timing, and a client also knows that the
//! server holds the key before it sends a request. Every frame of the
//! handshake is capped at [`PREAUTH_MAX`] bytes, and the server gives a
//! peer [`AUTH_DEADLINE`] to finish. The key itself never travels and is
//! never logged.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::manager::{frame, read_msg, ReadError};

/// The largest frame accepted before authentication.
pub(crate) const PREAUTH_MAX: usize = 256;
/// How long a peer has to authenticate.
pub(crate) const AUTH_DEADLINE: Duration = Duration::from_secs(10);

const MAGIC: [u8; 4] = *b"MPMG";
const VERSION: u32 = 2;

type HmacSha256 = Hmac<Sha256>;

/// What a listener is: part of the handshake, so that a proof made for
/// one is refused by the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Purpose {
    /// A Manager's server.
    Manager,
    /// An actor's address.
    Actor,
    /// A cluster's driver, which nodes join.
    Cluster,
}

impl Purpose {
    fn label(self) -> &'static [u8] {
        match self {
            Purpose::Manager => b"manager",
            Purpose::Actor => b"actor",
            Purpose::Cluster => b"cluster",
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Challenge {
    magic: [u8; 4],
    version: u32,
    purpose: Purpose,
    nonce: [u8; 32],
}

#[derive(Debug, Serialize, Deserialize)]
struct Answer {
    mac: [u8; 32],
    nonce: [u8; 32],
}

#[derive(Debug, Serialize, Deserialize)]
enum Verdict {
    Accepted { mac: [u8; 32] },
    Refused,
}

/// Why a handshake failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AuthError {
    /// The peer does not hold the key (or sent a wrong answer).
    #[error("authentication refused: wrong key")]
    Refused,
    /// The server's proof is wrong: it does not hold our key.
    #[error("authentication failed: the server does not hold the key")]
    ServerUnproven,
    /// The peer does not speak this protocol.
    #[error("the peer is not an mproc server of this kind")]
    NotMproc,
    /// The key is empty.
    #[error("the authentication key is empty")]
    EmptyKey,
    /// The conversation broke.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// Writing failed.
    #[error("connection lost: {0}")]
    Write(#[from] std::io::Error),
}

fn nonce() -> [u8; 32] {
    let mut n = [0u8; 32];
    for chunk in n.chunks_mut(8) {
        chunk.copy_from_slice(&crate::sys::shm::random_u64().to_le_bytes());
    }
    n
}

fn mac(key: &[u8], label: &[u8], purpose: Purpose, a: &[u8; 32], b: &[u8; 32]) -> HmacSha256 {
    let mut m = HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length");
    m.update(label);
    m.update(purpose.label());
    m.update(a);
    m.update(b);
    m
}

fn send<M: Serialize>(w: &mut impl Write, msg: &M) -> Result<(), AuthError> {
    let bytes = frame(msg, PREAUTH_MAX).map_err(|_| AuthError::NotMproc)?;
    w.write_all(&bytes)?;
    w.flush()?;
    Ok(())
}

/// The server's side; `Ok` once the peer proved it holds `key`. On a wrong
/// answer the peer is told so before the caller closes the connection.
pub(crate) fn server(
    s: &mut (impl Read + Write),
    key: &[u8],
    purpose: Purpose,
) -> Result<(), AuthError> {
    if key.is_empty() {
        return Err(AuthError::EmptyKey);
    }
    let ns = nonce();
    send(
        s,
        &Challenge {
            magic: MAGIC,
            version: VERSION,
            purpose,
            nonce: ns,
        },
    )?;
    let answer: Answer = read_msg(s, PREAUTH_MAX)?;
    if mac(key, b"mproc client", purpose, &ns, &answer.nonce)
        .verify_slice(&answer.mac)
        .is_err()
    {
        let _ = send(s, &Verdict::Refused);
        return Err(AuthError::Refused);
    }
    let proof = mac(key, b"mproc server", purpose, &answer.nonce, &ns)
        .finalize()
        .into_bytes();
    send(s, &Verdict::Accepted { mac: proof.into() })
}

/// A connection whose reads can be bounded in time, so that
/// [`server_within`] can hold a peer to one deadline for the whole
/// exchange.
pub(crate) trait Bounded: Read + Write {
    /// Makes a read that waits `t` without a byte fail (`None`: no bound).
    fn bound_reads(&self, t: Option<Duration>) -> std::io::Result<()>;
}

impl Bounded for std::os::unix::net::UnixStream {
    fn bound_reads(&self, t: Option<Duration>) -> std::io::Result<()> {
        self.set_read_timeout(t)
    }
}

impl Bounded for std::net::TcpStream {
    fn bound_reads(&self, t: Option<Duration>) -> std::io::Result<()> {
        self.set_read_timeout(t)
    }
}

/// [`server`] within `within` for the whole handshake: a peer that
/// trickles its answer a byte at a time gets no more time than a silent
/// one (a bound per read would give it `within` per byte). Reads are left
/// bounded by what was left of the deadline; the caller sets the bound it
/// wants next.
pub(crate) fn server_within<S: Bounded>(
    s: &mut S,
    key: &[u8],
    purpose: Purpose,
    within: Duration,
) -> Result<(), AuthError> {
    let mut io = Within {
        s,
        end: Instant::now() + within,
    };
    server(&mut io, key, purpose)
}

/// Reads of `s` bounded together by `end`.
struct Within<'a, S: Bounded> {
    s: &'a mut S,
    end: Instant,
}

impl<S: Bounded> Read for Within<'_, S> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        // A zero timeout would mean "no bound".
        self.s
            .bound_reads(Some(left.max(Duration::from_millis(1))))?;
        self.s.read(buf)
    }
}

impl<S: Bounded> Write for Within<'_, S> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.s.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.s.flush()
    }
}

/// The client's side; `Ok` once both sides proved they hold `key`.
pub(crate) fn client(
    s: &mut (impl Read + Write),
    key: &[u8],
    purpose: Purpose,
) -> Result<(), AuthError> {
    if key.is_empty() {
        return Err(AuthError::EmptyKey);
    }
    let challenge: Challenge = read_msg(s, PREAUTH_MAX).map_err(|e| match e {
        ReadError::Malformed(_) | ReadError::TooLarge { .. } => AuthError::NotMproc,
        e => AuthError::Read(e),
    })?;
    if challenge.magic != MAGIC || challenge.version != VERSION || challenge.purpose != purpose {
        return Err(AuthError::NotMproc);
    }
    let nc = nonce();
    let answer = mac(key, b"mproc client", purpose, &challenge.nonce, &nc)
        .finalize()
        .into_bytes();
    send(
        s,
        &Answer {
            mac: answer.into(),
            nonce: nc,
        },
    )?;
    match read_msg(s, PREAUTH_MAX) {
        Ok(Verdict::Accepted { mac: proof }) => {
            mac(key, b"mproc server", purpose, &nc, &challenge.nonce)
                .verify_slice(&proof)
                .map_err(|_| AuthError::ServerUnproven)
        }
        Ok(Verdict::Refused) => Err(AuthError::Refused),
        // A server that refuses may close before its verdict arrives.
        Err(ReadError::Io(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            Err(AuthError::Refused)
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    fn run(server_key: &'static [u8], client_key: &'static [u8]) -> (bool, Result<(), AuthError>) {
        let (mut a, mut b) = UnixStream::pair().unwrap();
        a.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        b.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let t = std::thread::spawn(move || server(&mut a, server_key, Purpose::Manager).is_ok());
        let c = client(&mut b, client_key, Purpose::Manager);
        (t.join().unwrap(), c)
    }

    #[test]
    fn same_key_is_accepted_both_ways() {
        let (s, c) = run(b"secret", b"secret");
        assert!(s);
        assert!(c.is_ok());
    }

    #[test]
    fn a_proof_for_another_purpose_is_refused() {
        let (mut a, mut b) = UnixStream::pair().unwrap();
        a.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        b.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let t = std::thread::spawn(move || server(&mut a, b"secret", Purpose::Cluster).is_ok());
        let c = client(&mut b, b"secret", Purpose::Actor);
        drop(b);
        assert!(!t.join().unwrap());
        assert!(matches!(c, Err(AuthError::NotMproc)), "{c:?}");
    }

    #[test]
    fn wrong_key_is_refused() {
        let (s, c) = run(b"secret", b"guess");
        assert!(!s);
        assert!(matches!(c, Err(AuthError::Refused)), "{c:?}");
    }

    #[test]
    fn an_oversized_preauth_frame_is_refused_unread() {
        let (mut a, mut b) = UnixStream::pair().unwrap();
        a.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let t = std::thread::spawn(move || server(&mut a, b"k", Purpose::Manager));
        let mut hello = [0u8; 64];
        let _ = b.read(&mut hello).unwrap();
        b.write_all(&(1u32 << 30).to_le_bytes()).unwrap();
        let r = t.join().unwrap();
        assert!(
            matches!(r, Err(AuthError::Read(ReadError::TooLarge { .. }))),
            "{r:?}"
        );
    }

    #[test]
    fn a_trickled_answer_fails_at_the_deadline_for_the_whole_handshake() {
        let (mut a, mut b) = UnixStream::pair().unwrap();
        let within = Duration::from_millis(400);
        let t = std::thread::spawn(move || {
            let started = Instant::now();
            let r = server_within(&mut a, b"k", Purpose::Actor, within);
            (r, started.elapsed())
        });
        let mut challenge = [0u8; 256];
        let _ = b.read(&mut challenge).unwrap();
        // A plausible length, then one byte every 50 ms: each read is far
        // within any bound per read, the whole answer is not.
        let mut bytes = 64u32.to_le_bytes().into_iter().chain(std::iter::repeat(0));
        b.set_nonblocking(true).unwrap();
        let trickler_done = Instant::now() + Duration::from_secs(5);
        while !t.is_finished() && Instant::now() < trickler_done {
            let _ = b.write_all(&[bytes.next().unwrap()]);
            std::thread::sleep(Duration::from_millis(50));
        }
        // Without a deadline the server would still be waiting: the end of
        // the stream then makes it fail otherwise, and the test with it.
        drop(b);
        let (r, took) = t.join().unwrap();
        assert!(
            matches!(&r, Err(AuthError::Read(ReadError::Io(e))) if matches!(e.kind(), std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock)),
            "{r:?}"
        );
        assert!(took >= within, "gave up after {took:?}");
    }
}
