//! Unix-domain stream socket pairs.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{self, AddressFamily, MsgFlags, Shutdown, SockFlag, SockType};

use crate::ByteStream;

/// One end of a connected Unix-domain stream socket.
#[derive(Debug)]
pub struct UnixChannel {
    fd: OwnedFd,
    /// A blocking read sleeps in `poll` for input (see
    /// [`ByteStream::wake_on_input_only`]).
    input_only: AtomicBool,
}

/// Creates a connected pair of Unix-domain stream sockets, both close-on-exec.
pub fn socketpair() -> io::Result<(UnixChannel, UnixChannel)> {
    let (a, b) = socket::socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(io::Error::from)?;
    Ok((UnixChannel::from_fd(a), UnixChannel::from_fd(b)))
}

impl UnixChannel {
    /// Wraps a connected stream socket.
    pub fn from_fd(fd: OwnedFd) -> Self {
        UnixChannel {
            fd,
            input_only: AtomicBool::new(false),
        }
    }

    /// Gives the socket back.
    pub fn into_fd(self) -> OwnedFd {
        self.fd
    }
}

impl UnixChannel {
    /// Sleeps until input (or the end of the stream) is there to read.
    fn wait_input(&self) -> io::Result<()> {
        let mut fds = [PollFd::new(self.fd.as_fd(), PollFlags::POLLIN)];
        loop {
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) => return Ok(()),
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }
}

impl AsFd for UnixChannel {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl ByteStream for UnixChannel {
    fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        if self.input_only.load(Ordering::Relaxed) {
            // What has arrived costs one call, as a blocking `recv`.
            loop {
                match self.try_read(buf)? {
                    Some(n) => return Ok(n),
                    None => self.wait_input()?,
                }
            }
        }
        loop {
            match socket::recv(self.fd.as_raw_fd(), buf, MsgFlags::empty()) {
                Ok(n) => return Ok(n),
                Err(Errno::EINTR) => continue,
                Err(Errno::ECONNRESET) => return Ok(0),
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn try_read(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        loop {
            match socket::recv(self.fd.as_raw_fd(), buf, MsgFlags::MSG_DONTWAIT) {
                Ok(n) => return Ok(Some(n)),
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => return Ok(None),
                Err(Errno::ECONNRESET) => return Ok(Some(0)),
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn ready(&self) -> bool {
        let mut one = [0u8; 1];
        let peek = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_PEEK;
        !matches!(
            socket::recv(self.fd.as_raw_fd(), &mut one, peek),
            Err(Errno::EAGAIN | Errno::EINTR)
        )
    }

    fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        loop {
            match socket::send(
                self.fd.as_raw_fd(),
                buf,
                MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
            ) {
                Ok(n) => return Ok(n),
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => return Ok(0),
                Err(Errno::EPIPE | Errno::ECONNRESET) => {
                    return Err(io::Error::new(
                        io::ErrorKind::BrokenPipe,
                        "peer disconnected",
                    ))
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn wait_writable(&self) -> io::Result<()> {
        let mut fds = [PollFd::new(self.fd.as_fd(), PollFlags::POLLOUT)];
        loop {
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) => return Ok(()),
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn shutdown(&self) {
        let _ = socket::shutdown(self.fd.as_raw_fd(), Shutdown::Both);
    }

    /// A blocking `recv` sleeps on the socket's one wait queue, and so also
    /// wakes (in the kernel, to sleep again) each time the peer takes in
    /// what this side sent — the "room to write" signal: a worker reading
    /// its request rouses the parent's reader. With `on`, a blocking read
    /// sleeps in `poll` for input instead, which nothing else wakes. Not
    /// for a socket read under `SO_RCVTIMEO`, which `poll` ignores.
    fn wake_on_input_only(&self, on: bool) {
        self.input_only.store(on, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{begin_frame, end_frame, FrameReader, TransportError};

    #[test]
    fn frames_round_trip_and_limits_hold() {
        let (a, b) = socketpair().unwrap();
        let mut out = Vec::new();
        for payload in [&b""[..], b"x", &[7u8; 100_000][..]] {
            let s = begin_frame(&mut out);
            out.extend_from_slice(payload);
            end_frame(&mut out, s, 1 << 20).unwrap();
        }
        let writer = std::thread::spawn(move || {
            a.write_all(&out).unwrap();
            // A header announcing 3 GiB: refused, never allocated.
            a.write_all(&(3u32 << 30).to_le_bytes()).unwrap();
            a
        });
        let mut r = FrameReader::new(1 << 20);
        assert_eq!(r.next_frame(&b).unwrap(), b"");
        assert_eq!(r.next_frame(&b).unwrap(), b"x");
        assert_eq!(r.next_frame(&b).unwrap(), &[7u8; 100_000][..]);
        let a = writer.join().unwrap();
        assert!(matches!(
            r.next_frame(&b),
            Err(TransportError::FrameTooLarge { .. })
        ));
        drop(a);
    }

    #[test]
    fn a_large_frame_is_handed_over_and_reading_goes_on() {
        let (a, b) = socketpair().unwrap();
        let big: Vec<u8> = (0..3 << 20).map(|i| (i % 251) as u8).collect();
        let mut out = Vec::new();
        for payload in [&big[..], b"after", b"x"] {
            let s = begin_frame(&mut out);
            out.extend_from_slice(payload);
            end_frame(&mut out, s, 8 << 20).unwrap();
        }
        let writer = std::thread::spawn(move || {
            a.write_all(&out).unwrap();
            a
        });
        let mut r = FrameReader::new(8 << 20);
        assert_eq!(r.next_frame(&b).unwrap().len(), big.len());
        let (buf, start) = r.take_last_frame().expect("a large frame");
        assert_eq!(&buf[start..], &big[..], "the payload, to the buffer's end");
        assert!(r.take_last_frame().is_none(), "taken once");
        assert_eq!(r.next_frame(&b).unwrap(), b"after");
        assert!(r.take_last_frame().is_none(), "a small frame is copied");
        assert_eq!(r.next_frame(&b).unwrap(), b"x");
        drop(writer.join().unwrap());
        assert!(matches!(
            r.next_frame(&b),
            Err(TransportError::Disconnected)
        ));
    }

    #[test]
    fn torn_frame_is_disconnect_not_data() {
        let (a, b) = socketpair().unwrap();
        a.write_all(&10u32.to_le_bytes()).unwrap();
        a.write_all(b"abc").unwrap();
        drop(a);
        let mut r = FrameReader::new(1 << 20);
        assert!(matches!(
            r.next_frame(&b),
            Err(TransportError::Disconnected)
        ));
    }

    #[test]
    fn oversize_frame_refused_on_sending_side() {
        let mut out = vec![1, 2, 3];
        let s = begin_frame(&mut out);
        out.extend_from_slice(&[0; 11]);
        assert!(matches!(
            end_frame(&mut out, s, 10),
            Err(TransportError::FrameTooLarge {
                size: 11,
                limit: 10
            })
        ));
        assert_eq!(out, vec![1, 2, 3]);
    }
}
