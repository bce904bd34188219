//! One conformance suite for every transport: each test runs on the Unix
//! socket pair, the pipe pair and the shared-memory ring, with both ends in
//! this process (the in-process variant) and, for peer death, with the other
//! end in a forked child.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use mproc_transport::{
    begin_frame, end_frame, socketpair, ByteStream, FrameReader, PipeChannel, ShmChannel,
    TransportError, UnixChannel, UnixListener,
};

#[derive(Debug, Clone, Copy)]
enum Kind {
    Unix,
    Pipe,
    Shm,
}

const KINDS: [Kind; 3] = [Kind::Unix, Kind::Pipe, Kind::Shm];
const LIMIT: usize = 128 << 20;

/// Both ends of one transport, in this process.
fn pair(kind: Kind) -> (Arc<dyn ByteStream>, Arc<dyn ByteStream>) {
    match kind {
        Kind::Unix => {
            let (a, b) = socketpair().unwrap();
            (Arc::new(a), Arc::new(b))
        }
        Kind::Pipe => {
            let (a, (r, w)) = PipeChannel::pair().unwrap();
            (Arc::new(a), Arc::new(PipeChannel::from_fds(r, w).unwrap()))
        }
        Kind::Shm => {
            let me = std::process::id();
            let (a, fds) = ShmChannel::create(1 << 16, me).unwrap();
            (Arc::new(a), Arc::new(ShmChannel::open(fds, me).unwrap()))
        }
    }
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 4);
    let s = begin_frame(&mut out);
    out.extend_from_slice(payload);
    end_frame(&mut out, s, LIMIT).unwrap();
    out
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[test]
fn ordered_frames_from_one_byte_to_64_mib() {
    for kind in KINDS {
        let (a, b) = pair(kind);
        let sizes = [
            0usize,
            1,
            2,
            3,
            100,
            4095,
            4096,
            4097,
            65_535,
            65_536,
            65_537,
            1 << 20,
            64 << 20,
        ];
        let writer = std::thread::spawn(move || {
            for (i, n) in sizes.iter().enumerate() {
                a.write_all(&frame(&pattern(*n, i as u8))).unwrap();
            }
            a
        });
        let mut r = FrameReader::new(LIMIT);
        for (i, n) in sizes.iter().enumerate() {
            let f = r.next_frame(&*b).unwrap();
            assert_eq!(f.len(), *n, "{kind:?} frame {i}");
            assert!(
                f == pattern(*n, i as u8).as_slice(),
                "{kind:?} frame {i} corrupted"
            );
        }
        drop(writer.join().unwrap());
    }
}

#[test]
fn a_million_small_frames() {
    for kind in KINDS {
        let (a, b) = pair(kind);
        const N: u64 = 1_000_000;
        let writer = std::thread::spawn(move || {
            let mut batch = Vec::new();
            for i in 0..N {
                let s = begin_frame(&mut batch);
                batch.extend_from_slice(&i.to_le_bytes());
                end_frame(&mut batch, s, LIMIT).unwrap();
                if batch.len() > 16 << 10 {
                    a.write_all(&batch).unwrap();
                    batch.clear();
                }
            }
            a.write_all(&batch).unwrap();
            a
        });
        let mut r = FrameReader::new(LIMIT);
        for i in 0..N {
            let f = r.next_frame(&*b).unwrap();
            assert_eq!(f, &i.to_le_bytes(), "{kind:?} frame {i}");
        }
        drop(writer.join().unwrap());
    }
}

/// Each kind with a blocking read as it comes, then with reads that sleep
/// for input only (see `ByteStream::wake_on_input_only`).
fn pairs() -> impl Iterator<Item = (Kind, bool, Arc<dyn ByteStream>, Arc<dyn ByteStream>)> {
    [false, true].into_iter().flat_map(|input_only| {
        KINDS.into_iter().map(move |kind| {
            let (a, b) = pair(kind);
            a.wake_on_input_only(input_only);
            b.wake_on_input_only(input_only);
            (kind, input_only, a, b)
        })
    })
}

#[test]
fn both_directions_at_once() {
    for (kind, _, a, b) in pairs() {
        const N: u32 = 50_000;
        let spawn_side = |me: Arc<dyn ByteStream>, seed: u8| {
            let w = me.clone();
            let writer = std::thread::spawn(move || {
                for i in 0..N {
                    let mut p = pattern((i % 700) as usize, seed);
                    p.extend_from_slice(&i.to_le_bytes());
                    w.write_all(&frame(&p)).unwrap();
                }
            });
            let reader = std::thread::spawn(move || {
                let mut r = FrameReader::new(LIMIT);
                for i in 0..N {
                    let f = r.next_frame(&*me).unwrap();
                    let (body, tail) = f.split_at(f.len() - 4);
                    assert_eq!(tail, &i.to_le_bytes());
                    assert!(body == pattern((i % 700) as usize, seed ^ 1).as_slice());
                }
            });
            (writer, reader)
        };
        let (wa, ra) = spawn_side(a, 0);
        let (wb, rb) = spawn_side(b, 1);
        for t in [wa, ra, wb, rb] {
            t.join()
                .unwrap_or_else(|_| panic!("{kind:?}: a side failed"));
        }
    }
}

#[test]
fn shutdown_wakes_blocked_readers_with_end_of_stream() {
    for (kind, input_only, a, b) in pairs() {
        let b2 = b.clone();
        let reader = std::thread::spawn(move || {
            let mut r = FrameReader::new(LIMIT);
            matches!(r.next_frame(&*b2), Err(TransportError::Disconnected))
        });
        std::thread::sleep(Duration::from_millis(50));
        a.shutdown();
        assert!(
            reader.join().unwrap(),
            "{kind:?}: the peer's shutdown is end of stream"
        );
        let (c, d) = pair(kind);
        d.wake_on_input_only(input_only);
        let d2 = d.clone();
        let local = std::thread::spawn(move || {
            let mut buf = [0u8; 8];
            d2.read(&mut buf).unwrap()
        });
        std::thread::sleep(Duration::from_millis(50));
        d.shutdown();
        assert_eq!(
            local.join().unwrap(),
            0,
            "{kind:?}: our own shutdown wakes our blocked reader"
        );
        drop(c);
    }
}

#[test]
fn malformed_length_prefix_is_refused_without_allocating() {
    for kind in KINDS {
        // A header announcing a frame of 1.75 GiB, then one announcing a
        // sidecar of as much (the top bit), then nothing.
        for header in [0x7000_0000u32, 0xF000_0000] {
            let (a, b) = pair(kind);
            a.write_all(&header.to_le_bytes()).unwrap();
            let mut r = FrameReader::new(1 << 20);
            match r.next_frame(&*b) {
                Err(TransportError::FrameTooLarge { size, limit }) => {
                    assert_eq!((size, limit), (0x7000_0000, 1 << 20));
                }
                other => panic!("{kind:?} {header:#x}: {other:?}"),
            }
        }
    }
}

#[test]
fn oversize_frame_is_refused_on_the_sending_side() {
    let mut out = Vec::new();
    let s = begin_frame(&mut out);
    out.resize(s + 4 + 2048, 0);
    assert!(matches!(
        end_frame(&mut out, s, 1024),
        Err(TransportError::FrameTooLarge {
            size: 2048,
            limit: 1024
        })
    ));
    assert!(out.is_empty(), "the refused frame is rolled back");
}

fn send_fds(sock: &UnixChannel, fds: &[OwnedFd]) {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    let raw: Vec<i32> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let iov = [std::io::IoSlice::new(b"f")];
    sendmsg::<()>(
        sock.as_fd_raw(),
        &iov,
        &[ControlMessage::ScmRights(&raw)],
        MsgFlags::empty(),
        None,
    )
    .unwrap();
}

fn recv_fds(sock: &UnixChannel) -> Vec<OwnedFd> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    let mut byte = [0u8; 1];
    let mut iov = [std::io::IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!([i32; 8]);
    let msg = recvmsg::<()>(
        sock.as_fd_raw(),
        &mut iov,
        Some(&mut space),
        MsgFlags::empty(),
    )
    .unwrap();
    let mut out = Vec::new();
    for c in msg.cmsgs().unwrap() {
        if let ControlMessageOwned::ScmRights(fds) = c {
            // SAFETY: freshly received descriptors, owned by nobody else.
            out.extend(
                fds.into_iter()
                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
            );
        }
    }
    out
}

trait RawFdOf {
    fn as_fd_raw(&self) -> i32;
}

impl RawFdOf for UnixChannel {
    fn as_fd_raw(&self) -> i32 {
        use std::os::fd::AsFd;
        self.as_fd().as_raw_fd()
    }
}

/// The other end lives in a forked child that writes half a frame and is
/// then SIGKILLed: the reader must see `Disconnected`, never a torn frame,
/// and must not hang (the ring notices the death through a pidfd).
#[test]
fn peer_killed_mid_message() {
    for kind in KINDS {
        let (ctl_parent, ctl_child) = socketpair().unwrap();
        let (ready_r, ready_w) = nix::unistd::pipe().unwrap();
        let (ours, theirs): (Option<Arc<dyn ByteStream>>, Vec<OwnedFd>) = match kind {
            Kind::Unix => {
                let (a, b) = socketpair().unwrap();
                (Some(Arc::new(a)), vec![b.into_fd()])
            }
            Kind::Pipe => {
                let (a, (r, w)) = PipeChannel::pair().unwrap();
                (Some(Arc::new(a)), vec![r, w])
            }
            Kind::Shm => (None, Vec::new()),
        };
        // SAFETY: the child uses only what was created before the fork, plain
        // syscalls and (for the ring) a fresh mapping, then waits to be
        // killed; it never returns into the test harness.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            let child: Box<dyn ByteStream> = match kind {
                Kind::Unix => Box::new(UnixChannel::from_fd(theirs.into_iter().next().unwrap())),
                Kind::Pipe => {
                    let mut it = theirs.into_iter();
                    Box::new(PipeChannel::from_fds(it.next().unwrap(), it.next().unwrap()).unwrap())
                }
                Kind::Shm => Box::new(
                    ShmChannel::open(recv_fds(&ctl_child), std::os::unix::process::parent_id())
                        .unwrap(),
                ),
            };
            let mut half = 1000u32.to_le_bytes().to_vec();
            half.extend_from_slice(&[7; 300]);
            let _ = child.write_all(&half);
            let _ = nix::unistd::write(&ready_w, b"x");
            loop {
                // SAFETY: pause only waits for a signal.
                unsafe { libc::pause() };
            }
        }
        drop(theirs);
        let ours: Arc<dyn ByteStream> = match ours {
            Some(o) => o,
            None => {
                let (a, fds) = ShmChannel::create(1 << 16, pid as u32).unwrap();
                send_fds(&ctl_parent, &fds);
                Arc::new(a)
            }
        };
        drop(ctl_child);
        let mut b = [0u8; 1];
        nix::unistd::read(&ready_r, &mut b).unwrap();
        let child = nix::unistd::Pid::from_raw(pid);
        nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL).unwrap();
        let mut r = FrameReader::new(LIMIT);
        let res = r.next_frame(&*ours);
        assert!(
            matches!(res, Err(TransportError::Disconnected)),
            "{kind:?}: {res:?}"
        );
        nix::sys::wait::waitpid(child, None).unwrap();
    }
}

#[test]
fn private_listener_accepts_and_cleans_up() {
    use std::os::unix::fs::PermissionsExt;
    let l = UnixListener::bind_private().unwrap();
    let path = l.path().to_path_buf();
    let dir = path.parent().unwrap().to_path_buf();
    assert_eq!(
        std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let p2 = path.clone();
    let client = std::thread::spawn(move || {
        let c = UnixListener::connect(&p2).unwrap();
        c.write_all(&frame(b"hello")).unwrap();
        c
    });
    let server = l.accept().unwrap();
    let mut r = FrameReader::new(LIMIT);
    assert_eq!(r.next_frame(&server).unwrap(), b"hello");
    drop(client.join().unwrap());
    drop(l);
    assert!(
        !path.exists() && !dir.exists(),
        "socket and directory removed"
    );
}

mod ring_properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Random write and read sizes through a small ring: every byte comes
        /// out once and in order, across many wrap-arounds.
        #[test]
        fn bytes_come_out_in_order(
            writes in proptest::collection::vec(1usize..10_000, 1..60),
            reads in proptest::collection::vec(1usize..9_000, 1..60),
        ) {
            let me = std::process::id();
            let (a, fds) = ShmChannel::create(4096, me).unwrap();
            let b = ShmChannel::open(fds, me).unwrap();
            let total: usize = writes.iter().sum();
            let input: Vec<u8> = (0..total).map(|i| (i * 7 % 251) as u8).collect();
            let mut output = Vec::with_capacity(total);
            let (mut wi, mut woff, mut ri, mut pos) = (0usize, 0usize, 0usize, 0usize);
            let mut buf = vec![0u8; 9_000];
            while output.len() < total {
                if wi < writes.len() {
                    let end = (pos + writes[wi] - woff).min(total);
                    let n = a.try_write(&input[pos..end]).unwrap();
                    pos += n;
                    woff += n;
                    if woff == writes[wi] {
                        wi += 1;
                        woff = 0;
                    }
                }
                let want = reads[ri % reads.len()];
                ri += 1;
                if let Some(n) = b.try_read(&mut buf[..want]).unwrap() {
                    output.extend_from_slice(&buf[..n]);
                }
            }
            prop_assert_eq!(output, input);
        }
    }
}
