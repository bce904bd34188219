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
//! is taken over whole, not copied ([`Outbox::send_owned`]); sidecars (large
//! byte strings sent out of band before their frame) are written from where
//! they are ([`Outbox::enqueue_with_sidecars`]); a partial write only moves
//! an offset (no `memmove` of what is left); and a large buffer that has
//! been written goes to `mproc_transport::spare` for the next large message
//! instead of back to the system.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};

use mproc_transport::{sidecar_header, spare, ByteStream};
use serde::Serialize;

use crate::protocol::{encode_frame, FrameError};

/// Byte strings sent out of band before a frame (see
/// `mproc_transport::FrameReader::take_sidecars`), shared between the
/// outbox writing them and whoever may send them again (a request's
/// arguments, kept until it finishes).
pub(crate) type Sidecars = Arc<Vec<Vec<u8>>>;

/// Bytes waiting to be written, after what is written of them already.
#[derive(Debug)]
enum Chunk {
    /// Frames encoded here or handed over: `buf[off..]`.
    Own(Vec<u8>, usize),
    /// Sidecar `index` of a set: its bytes from `off`, written from where
    /// they are.
    Side(Sidecars, usize, usize),
}

impl Chunk {
    fn rest(&self) -> &[u8] {
        match self {
            Chunk::Own(buf, off) => &buf[*off..],
            Chunk::Side(set, i, off) => &set[*i][*off..],
        }
    }

    fn advance(&mut self, n: usize) {
        match self {
            Chunk::Own(_, off) | Chunk::Side(_, _, off) => *off += n,
        }
    }
}

#[derive(Debug, Default)]
struct State {
    /// What goes out before `buf`, in order: earlier frames and the
    /// sidecars between them.
    sealed: VecDeque<Chunk>,
    /// Frames to write after `sealed`: `buf[off..]` (`buf[..off]` is
    /// written already). New frames are appended here.
    buf: Vec<u8>,
    off: usize,
    spare: Vec<u8>,
    /// An empty queue with room, swapped with `sealed` by the flusher so
    /// the common write allocates nothing.
    spare_queue: VecDeque<Chunk>,
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
    /// True when bytes are queued and not yet written.
    fn has_pending(&self) -> bool {
        !self.sealed.is_empty() || self.buf.len() > self.off
    }

    /// Drops every queued frame.
    fn clear(&mut self) {
        self.sealed.clear();
        self.buf.clear();
        self.off = 0;
    }

    /// Moves the open buffer's frames behind `sealed`, so that what is
    /// queued next goes after them.
    fn seal(&mut self) {
        if self.buf.len() > self.off {
            let spare = std::mem::take(&mut self.spare);
            let buf = std::mem::replace(&mut self.buf, spare);
            self.sealed
                .push_back(Chunk::Own(buf, std::mem::take(&mut self.off)));
        } else {
            self.buf.clear();
            self.off = 0;
        }
    }

    /// Everything queued, in order, for the flusher to write.
    fn take_work(&mut self) -> VecDeque<Chunk> {
        self.seal();
        let empty = std::mem::take(&mut self.spare_queue);
        std::mem::replace(&mut self.sealed, empty)
    }

    /// Takes back what the flusher did not write: it goes before anything
    /// queued meanwhile.
    fn put_back(&mut self, mut work: VecDeque<Chunk>) {
        while let Some(c) = work.pop_back() {
            self.sealed.push_front(c);
        }
        self.spare_queue = work;
    }

    /// Keeps a written chunk's buffer for the next frames: a small one as
    /// this connection's spare, a large one in the process-wide pool
    /// (bounded, released after a while) rather than here for good.
    fn recycle(&mut self, chunk: Chunk) {
        let mut data = match chunk {
            Chunk::Own(data, _) => data,
            Chunk::Side(set, _, _) => {
                // The last chunk of a set nobody else holds (a worker's
                // results; a request's arguments are kept by its job):
                // its buffers serve the next large message.
                if let Ok(set) = Arc::try_unwrap(set) {
                    set.into_iter().for_each(spare::give);
                }
                return;
            }
        };
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

thread_local! {
    /// The outboxes to flush when this thread's [`deferring_flushes`]
    /// scope ends; `None` outside one.
    static DEFERRED: RefCell<Option<Vec<Arc<Outbox>>>> = const { RefCell::new(None) };
}

/// Runs `f`, during which [`Outbox::send_deferred`] on this thread only
/// queues; each outbox sent to is flushed once when `f` returns or
/// unwinds. A scope inside another is part of the outer one. Call it where
/// no lock is held at the end: the flushes write.
pub(crate) fn deferring_flushes<R>(f: impl FnOnce() -> R) -> R {
    /// Flushes what the scope deferred, also when `f` panics.
    struct Scope {
        outer: bool,
    }
    impl Drop for Scope {
        fn drop(&mut self) {
            if self.outer {
                let list = DEFERRED.with(|d| d.borrow_mut().take());
                for outbox in list.into_iter().flatten() {
                    outbox.flush();
                }
            }
        }
    }
    let outer = DEFERRED.with(|d| {
        let mut d = d.borrow_mut();
        let outer = d.is_none();
        if outer {
            *d = Some(Vec::new());
        }
        outer
    });
    let _scope = Scope { outer };
    f()
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

    /// Queues `sides` as the sidecars of one frame, then the frame of
    /// `msg`, without writing them; the sidecars are written from where
    /// they are, not copied. Call [`flush`](Self::flush) afterwards.
    pub(crate) fn enqueue_with_sidecars<M: Serialize>(
        &self,
        msg: &M,
        sides: &Sidecars,
    ) -> Result<(), FrameError> {
        // Encoded apart first: a frame that cannot be built leaves nothing
        // queued, not sidecars without their frame.
        let mut frame = Vec::new();
        encode_frame(&mut frame, msg, self.max_frame)?;
        let mut st = self.state.lock().unwrap();
        if st.broken || st.closed {
            return Ok(());
        }
        for (i, side) in sides.iter().enumerate() {
            st.buf.extend_from_slice(&sidecar_header(side.len()));
            st.seal();
            st.sealed.push_back(Chunk::Side(sides.clone(), i, 0));
        }
        st.buf.extend_from_slice(&frame);
        Ok(())
    }

    /// Queues the frame of `msg` after `sides`, its sidecars (see
    /// [`enqueue_with_sidecars`](Self::enqueue_with_sidecars)); a frame
    /// without sidecars as [`enqueue`](Self::enqueue) does.
    pub(crate) fn enqueue_with<M: Serialize>(
        &self,
        msg: &M,
        sides: Vec<Vec<u8>>,
    ) -> Result<(), FrameError> {
        if sides.is_empty() {
            self.enqueue(msg)
        } else {
            self.enqueue_with_sidecars(msg, &Arc::new(sides))
        }
    }

    /// Queues a frame that `frame[start..]` holds, taking the buffer over
    /// (no copy), and writes what is pending.
    pub(crate) fn send_owned(&self, frame: Vec<u8>, start: usize) {
        {
            let mut st = self.state.lock().unwrap();
            if st.broken || st.closed {
                return;
            }
            st.seal();
            st.sealed.push_back(Chunk::Own(frame, start));
        }
        self.flush();
    }

    /// Appends one frame and writes what is pending.
    pub(crate) fn send<M: Serialize>(&self, msg: &M) -> Result<(), FrameError> {
        self.enqueue(msg)?;
        self.flush();
        Ok(())
    }

    /// [`send`](Self::send), except that inside a [`deferring_flushes`]
    /// scope on this thread the frame is only queued, and this outbox is
    /// flushed once when the scope ends: many messages sent from one batch
    /// of events (a node relaying the answers of one read from its worker)
    /// leave in one write, not one each.
    pub(crate) fn send_deferred<M: Serialize>(self: &Arc<Self>, msg: &M) -> Result<(), FrameError> {
        self.enqueue(msg)?;
        let deferred = DEFERRED.with(|d| match d.borrow_mut().as_mut() {
            Some(list) => {
                if !list.iter().any(|o| Arc::ptr_eq(o, self)) {
                    list.push(self.clone());
                }
                true
            }
            None => false,
        });
        if !deferred {
            self.flush();
        }
        Ok(())
    }

    /// Writes pending frames without blocking; the writer thread takes over
    /// whatever does not fit.
    pub(crate) fn flush(&self) {
        let mut st = self.state.lock().unwrap();
        if st.flushing || !st.has_pending() {
            return;
        }
        st.flushing = true;
        loop {
            let mut work = st.take_work();
            drop(st);
            // Chunks written whole, from the front.
            let mut done = 0;
            let mut failed = false;
            'chunks: for chunk in work.iter_mut() {
                while !chunk.rest().is_empty() {
                    match self.chan.try_write(chunk.rest()) {
                        Ok(0) => break 'chunks,
                        Ok(n) => chunk.advance(n),
                        Err(_) => {
                            failed = true;
                            break 'chunks;
                        }
                    }
                }
                done += 1;
            }
            st = self.state.lock().unwrap();
            for c in work.drain(..done) {
                st.recycle(c);
            }
            if failed {
                st.broken = true;
                st.clear();
                work.clear();
                st.spare_queue = work;
                st.flushing = false;
                self.flush_ended(&st);
                return;
            }
            if !work.is_empty() {
                // Channel full: the rest, then what came meanwhile, goes to
                // the writer thread, which blocks for it.
                st.put_back(work);
                st.handoff = true;
                self.to_writer.notify_one();
                return;
            }
            st.spare_queue = work;
            if !st.has_pending() {
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
        while (st.flushing || st.has_pending()) && !st.broken && !st.closed {
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
            let mut work = st.take_work();
            drop(st);
            let mut res = Ok(());
            let mut done = 0;
            for chunk in work.iter() {
                res = self.chan.write_all(chunk.rest());
                if res.is_err() {
                    break;
                }
                done += 1;
            }
            st = self.state.lock().unwrap();
            if res.is_err() {
                st.broken = true;
                st.clear();
            }
            for c in work.drain(..done) {
                st.recycle(c);
            }
            work.clear();
            st.spare_queue = work;
            if !st.has_pending() || st.broken {
                st.handoff = false;
                st.flushing = false;
                self.flush_ended(&st);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mproc_transport::{socketpair, FrameReader};

    #[test]
    fn deferred_sends_leave_in_one_write_when_the_scope_ends() {
        let (a, b) = socketpair().unwrap();
        let one = Outbox::new(Arc::new(a), 1 << 20);
        let (c, d) = socketpair().unwrap();
        let two = Outbox::new(Arc::new(c), 1 << 20);
        deferring_flushes(|| {
            for n in 0..3u32 {
                one.send_deferred(&n).unwrap();
                two.send_deferred(&(n + 10)).unwrap();
            }
            // A scope inside another is part of it.
            deferring_flushes(|| one.send_deferred(&3u32).unwrap());
            assert!(!b.ready() && !d.ready(), "nothing written inside the scope");
        });
        assert!(b.ready() && d.ready(), "both flushed when it ended");
        let mut r = FrameReader::new(1 << 20);
        for n in 0..4u32 {
            assert_eq!(
                postcard::from_bytes::<u32>(r.next_frame(&b).unwrap()).unwrap(),
                n
            );
        }
        let mut r = FrameReader::new(1 << 20);
        for n in 10..13u32 {
            assert_eq!(
                postcard::from_bytes::<u32>(r.next_frame(&d).unwrap()).unwrap(),
                n
            );
        }
        // Outside a scope it is a plain send; and a scope that unwinds
        // still flushes.
        one.send_deferred(&4u32).unwrap();
        assert!(b.ready(), "written at once outside a scope");
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            deferring_flushes(|| {
                one.send_deferred(&5u32).unwrap();
                panic!("a hook failed");
            })
        }));
        assert!(caught.is_err());
        let mut r = FrameReader::new(1 << 20);
        for n in 4..6u32 {
            assert_eq!(
                postcard::from_bytes::<u32>(r.next_frame(&b).unwrap()).unwrap(),
                n
            );
        }
        one.close();
        two.close();
    }

    /// Frames and sidecars queued from two threads come out in the order
    /// queued, each frame with its own sidecars, also when the socket
    /// fills and the writer thread finishes the flush.
    #[test]
    fn frames_and_sidecars_arrive_in_order_through_a_full_socket() {
        let (a, b) = socketpair().unwrap();
        let ob = Outbox::new(Arc::new(a), 64 << 20);
        let reader = std::thread::spawn(move || {
            let mut r = FrameReader::new(64 << 20);
            let mut got = Vec::new();
            while let Ok(f) = r.next_frame(&b) {
                let n: u32 = postcard::from_bytes(f).unwrap();
                let sides = r.take_sidecars();
                got.push((n, sides));
            }
            got
        });
        let side = |n: u32, len: usize| vec![n as u8; len];
        let mut want = Vec::new();
        for n in 0..40u32 {
            let sides: Vec<Vec<u8>> = match n % 4 {
                0 => Vec::new(),
                1 => vec![side(n, 3 << 20)],
                2 => vec![side(n, 10), Vec::new(), side(n + 1, 700_000)],
                _ => vec![side(n, 1)],
            };
            if sides.is_empty() {
                ob.send(&n).unwrap();
            } else {
                ob.enqueue_with_sidecars(&n, &Arc::new(sides.clone()))
                    .unwrap();
                ob.flush();
            }
            want.push((n, sides));
        }
        ob.drain();
        ob.close();
        drop(ob);
        let got = reader.join().unwrap();
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(g.0, w.0);
            assert_eq!(g.1, w.1, "sidecars of frame {}", w.0);
        }
    }

    #[test]
    fn a_frame_that_cannot_be_built_leaves_no_sidecars_behind() {
        let (a, b) = socketpair().unwrap();
        let ob = Outbox::new(Arc::new(a), 100);
        let big = vec![0u8; 200];
        let sides = Arc::new(vec![vec![1u8; 50]]);
        assert!(ob
            .enqueue_with_sidecars(&serde_bytes::Bytes::new(&big), &sides)
            .is_err());
        ob.send(&7u32).unwrap();
        ob.drain();
        ob.close();
        let mut r = FrameReader::new(100);
        let f = r.next_frame(&b).unwrap();
        assert_eq!(postcard::from_bytes::<u32>(f).unwrap(), 7);
        assert!(r.take_sidecars().is_empty());
    }
}
