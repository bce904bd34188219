//! Two anonymous pipes, one per direction.
//!
//! Both ends are non-blocking; blocking calls wait in `poll` together with a
//! local stop eventfd, so [`shutdown`](ByteStream::shutdown) wakes a blocked
//! reader. Writing to a pipe whose reader is gone raises SIGPIPE: mproc's
//! workers ignore it, and Rust programs ignore it by default (a program that
//! restores the default disposition should not use this transport).

use std::io;
use std::os::fd::{AsFd, OwnedFd};

use nix::errno::Errno;

use crate::sys;
use crate::ByteStream;

/// One end of a pipe pair: reads from one pipe, writes to the other.
#[derive(Debug)]
pub struct PipeChannel {
    rx: OwnedFd,
    tx: OwnedFd,
    stop: OwnedFd,
}

impl PipeChannel {
    /// Creates two pipes; returns this side's channel and the descriptors
    /// for the peer, `(its read end, its write end)`, to pass with
    /// [`PipeChannel::from_fds`].
    pub fn pair() -> io::Result<(PipeChannel, (OwnedFd, OwnedFd))> {
        let (down_r, down_w) = sys::pipe()?;
        let (up_r, up_w) = sys::pipe()?;
        let ours = PipeChannel {
            rx: up_r,
            tx: down_w,
            stop: sys::eventfd()?,
        };
        Ok((ours, (down_r, up_w)))
    }

    /// The peer's side, from the descriptors [`PipeChannel::pair`] gave out.
    pub fn from_fds(rx: OwnedFd, tx: OwnedFd) -> io::Result<PipeChannel> {
        sys::set_nonblocking(&rx)?;
        sys::set_nonblocking(&tx)?;
        Ok(PipeChannel {
            rx,
            tx,
            stop: sys::eventfd()?,
        })
    }
}

impl ByteStream for PipeChannel {
    fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if let Some(n) = self.try_read(buf)? {
                return Ok(n);
            }
            let [_, stop] = sys::wait_readable([self.rx.as_fd(), self.stop.as_fd()], None)?;
            if stop {
                return Ok(0);
            }
        }
    }

    fn try_read(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        loop {
            match nix::unistd::read(&self.rx, buf) {
                Ok(n) => return Ok(Some(n)),
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => return Ok(None),
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn ready(&self) -> bool {
        sys::wait_readable([self.rx.as_fd()], Some(std::time::Duration::ZERO)).map_or(true, |[r]| r)
    }

    fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        loop {
            match nix::unistd::write(&self.tx, buf) {
                Ok(n) => return Ok(n),
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => return Ok(0),
                Err(Errno::EPIPE) => {
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
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        let mut fds = [
            PollFd::new(self.tx.as_fd(), PollFlags::POLLOUT),
            PollFd::new(self.stop.as_fd(), PollFlags::POLLIN),
        ];
        loop {
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) => break,
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        if fds[1].revents().is_some_and(|r| !r.is_empty()) {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "channel shut down",
            ));
        }
        Ok(())
    }

    fn shutdown(&self) {
        sys::eventfd_signal(self.stop.as_fd());
        // The peer sees end of stream once our write end is gone.
        sys::neutralize(&self.tx);
    }
}
