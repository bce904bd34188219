//! Write-combining output for one connection.
//!
//! Any thread appends frames under a short lock. The first thread to find no
//! flush in progress becomes the flusher and writes without blocking, so the
//! common small message costs one `send` and no thread hand-off. Frames that
//! arrive meanwhile ride along in the same write. When the socket is full the
//! remainder goes to a writer thread that blocks for it, so no caller (a
//! submitting task, a reader thread) ever blocks on the peer.
//!
//! Large messages: a frame built in its own buffer (a worker's result batch)
//! is taken over whole, not copied ([`Outbox::send_owned`]); a partial write
//! only moves an offset (no `memmove` of what is left); and a large buffer
//! that has been written goes to `mproc_transport::spare` for the next
//! large message instead of back to the system.

use std::sync::{Arc, Condvar, Mutex};

use mproc_transport::{spare, ByteStream};
use serde::Serialize;

use crate::protocol::{encode_frame, FrameError};

#[derive(Debug, Default)]
struct State {
    /// Frames to write: `buf[off..]` (`buf[..off]` is written already).
    buf: Vec<u8>,
    off: usize,
    spare: Vec<u8>,
    /// A thread (a caller or the writer thread) owns the socket's write side.
    flushing: bool,
    /// The writer thread has been asked to finish the flush.
    handoff: bool,
    closed: bool,
    broken: bool,
    /// Threads blocked in [`Outbox::drain`]: only they need to hear that a
    /// flush ended.
    draining: usize,
}

impl State {
    /// Bytes queued and not yet written.
    fn pending(&self) -> usize {
        self.buf.len() - self.off
    }

    /// Drops every queued frame.
    fn clear(&mut self) {
        self.buf.clear();
        self.off = 0;
    }

    /// Keeps a written buffer for the next frames: a small one as this
    /// connection's spare, a large one in the process-wide pool (bounded,
    /// released after a while) rather than here for good.
    fn keep_spare(&mut self, mut data: Vec<u8>) {
        data.clear();
        if data.capacity() >= spare::LARGE {
            spare::give(data);
        } else if self.spare.capacity() < data.capacity() {
            self.spare = data;
        }
    }
}

/// The outgoing side of a connection.
#[derive(Debug)]
pub(crate) struct Outbox {
    chan: Arc<dyn ByteStream>,
    max_frame: usize,
    state: Mutex<State>,
    /// Wakes the writer thread: a hand-off or close. Signalled only then,
    /// so the common flush costs no wake-up of a sleeping thread.
    to_writer: Condvar,
    /// Wakes `drain` callers when a flush ends.
    idle: Condvar,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Outbox {
    /// Creates the outbox and its writer thread.
    ///
    /// # Panics
    /// When the thread cannot be started; [`try_new`](Self::try_new) says so
    /// instead.
    pub(crate) fn new(chan: Arc<dyn ByteStream>, max_frame: usize) -> Arc<Self> {
        Self::try_new(chan, max_frame).expect("spawn mproc writer thread")
    }

    /// [`new`](Self::new), or the error when the writer thread cannot be
    /// started (the process or thread limit).
    pub(crate) fn try_new(
        chan: Arc<dyn ByteStream>,
        max_frame: usize,
    ) -> std::io::Result<Arc<Self>> {
        let ob = Arc::new(Outbox {
            chan,
            max_frame,
            state: Mutex::new(State::default()),
            to_writer: Condvar::new(),
            idle: Condvar::new(),
            writer: Mutex::new(None),
        });
        let w = ob.clone();
        let handle = std::thread::Builder::new()
            .name("mproc-writer".into())
            .spawn(move || w.writer_thread())?;
        *ob.writer.lock().unwrap() = Some(handle);
        Ok(ob)
    }

    /// Appends one frame without writing it; call [`flush`](Self::flush)
    /// afterwards (outside other locks).
    pub(crate) fn enqueue<M: Serialize>(&self, msg: &M) -> Result<(), FrameError> {
        let mut st = self.state.lock().unwrap();
        if st.broken || st.closed {
            return Ok(()); // the reader side notices the dead peer
        }
        encode_frame(&mut st.buf, msg, self.max_frame)
    }

    /// Queues a frame that `frame[start..]` holds, taking the buffer over
    /// (no copy when nothing else is pending), and writes what is pending.
    pub(crate) fn send_owned(&self, frame: Vec<u8>, start: usize) {
        {
            let mut st = self.state.lock().unwrap();
            if st.broken || st.closed {
                return;
            }
            if st.buf.len() == st.off {
                let old = std::mem::replace(&mut st.buf, frame);
                st.off = start;
                st.keep_spare(old);
            } else {
                st.buf.extend_from_slice(&frame[start..]);
                drop(st);
                spare::give(frame);
            }
        }
        self.flush();
    }

    /// Appends one frame and writes what is pending.
    pub(crate) fn send<M: Serialize>(&self, msg: &M) -> Result<(), FrameError> {
        self.enqueue(msg)?;
        self.flush();
        Ok(())
    }

    /// Writes pending frames without blocking; the writer thread takes over
    /// whatever does not fit.
    pub(crate) fn flush(&self) {
        let mut st = self.state.lock().unwrap();
        if st.flushing || st.pending() == 0 {
            return;
        }
        st.flushing = true;
        loop {
            let spare = std::mem::take(&mut st.spare);
            let mut data = std::mem::replace(&mut st.buf, spare);
            let mut off = std::mem::take(&mut st.off);
            drop(st);
            let mut failed = false;
            while off < data.len() {
                match self.chan.try_write(&data[off..]) {
                    Ok(0) => break,
                    Ok(n) => off += n,
                    Err(_) => {
                        failed = true;
                        break;
                    }
                }
            }
            st = self.state.lock().unwrap();
            if failed {
                st.broken = true;
                st.clear();
                st.flushing = false;
                self.flush_ended(&st);
                return;
            }
            if off < data.len() {
                // Channel full: the rest, then what came meanwhile, goes to
                // the writer thread, which blocks for it.
                if st.pending() > 0 {
                    let o = st.off;
                    data.extend_from_slice(&st.buf[o..]);
                }
                let newer = std::mem::replace(&mut st.buf, data);
                st.off = off;
                st.keep_spare(newer);
                st.handoff = true;
                self.to_writer.notify_one();
                return;
            }
            st.keep_spare(data);
            if st.pending() == 0 {
                st.flushing = false;
                self.flush_ended(&st);
                return;
            }
        }
    }

    /// Tells `drain` callers, if there are any, that a flush ended.
    fn flush_ended(&self, st: &State) {
        if st.draining > 0 {
            self.idle.notify_all();
        }
    }

    /// Blocks until everything enqueued so far has been written (or the peer
    /// is gone).
    pub(crate) fn drain(&self) {
        self.flush();
        let mut st = self.state.lock().unwrap();
        st.draining += 1;
        while (st.flushing || st.pending() > 0) && !st.broken && !st.closed {
            if !st.flushing {
                st.flushing = true;
                st.handoff = true;
                self.to_writer.notify_one();
            }
            st = self.idle.wait(st).unwrap();
        }
        st.draining -= 1;
    }

    /// Stops the writer thread and waits for it, so it holds no reference
    /// to the channel afterwards; later frames are dropped.
    pub(crate) fn close(&self) {
        {
            let mut st = self.state.lock().unwrap();
            st.closed = true;
            self.to_writer.notify_all();
            self.idle.notify_all();
        }
        let handle = self.writer.lock().unwrap().take();
        if let Some(h) = handle {
            if h.thread().id() != std::thread::current().id() {
                let _ = h.join();
            }
        }
    }

    fn writer_thread(self: Arc<Self>) {
        let mut st = self.state.lock().unwrap();
        loop {
            while !st.handoff && !st.closed {
                st = self.to_writer.wait(st).unwrap();
            }
            if st.closed {
                return;
            }
            let data = std::mem::take(&mut st.buf);
            let off = std::mem::take(&mut st.off);
            drop(st);
            let res = self.chan.write_all(&data[off..]);
            st = self.state.lock().unwrap();
            if res.is_err() {
                st.broken = true;
                st.clear();
            }
            st.keep_spare(data);
            if st.pending() == 0 || st.broken {
                st.handoff = false;
                st.flushing = false;
                self.flush_ended(&st);
            }
        }
    }
}
