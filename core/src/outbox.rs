//! Write-combining output for one connection.
//!
//! Any thread appends frames under a short lock. The first thread to find no
//! flush in progress becomes the flusher and writes without blocking, so the
//! common small message costs one `send` and no thread hand-off. Frames that
//! arrive meanwhile ride along in the same write. When the socket is full the
//! remainder goes to a writer thread that blocks for it, so no caller (a
//! submitting task, a reader thread) ever blocks on the peer.

use std::sync::{Arc, Condvar, Mutex};

use mproc_transport::ByteStream;
use serde::Serialize;

use crate::protocol::{encode_frame, FrameError};

#[derive(Debug, Default)]
struct State {
    buf: Vec<u8>,
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
        if st.flushing || st.buf.is_empty() {
            return;
        }
        st.flushing = true;
        loop {
            let spare = std::mem::take(&mut st.spare);
            let mut data = std::mem::replace(&mut st.buf, spare);
            drop(st);
            let mut off = 0;
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
                st.buf.clear();
                st.flushing = false;
                self.flush_ended(&st);
                return;
            }
            if off < data.len() {
                // Socket full: put the rest in front and let the writer block.
                data.drain(..off);
                data.extend_from_slice(&st.buf);
                st.buf = data;
                st.handoff = true;
                self.to_writer.notify_one();
                return;
            }
            data.clear();
            if st.spare.capacity() < data.capacity() {
                st.spare = data;
            }
            if st.buf.is_empty() {
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
        while (st.flushing || !st.buf.is_empty()) && !st.broken && !st.closed {
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
            drop(st);
            let res = self.chan.write_all(&data);
            st = self.state.lock().unwrap();
            if res.is_err() {
                st.broken = true;
                st.buf.clear();
            }
            if st.buf.is_empty() || st.broken {
                st.handoff = false;
                st.flushing = false;
                self.flush_ended(&st);
            }
        }
    }
}
