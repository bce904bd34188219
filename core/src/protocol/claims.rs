//! The claim table: who decides whether a request sent to a worker runs.
//!
//! A parent sends requests ahead to a worker, numbered by a per-worker
//! sequence number `seq`. Each request has a slot in a table shared by the
//! two processes (one page of a memfd; `seq % SLOTS` picks the slot), which
//! holds `seq` and a state. Every change of state is one compare-and-swap,
//! so parent and worker can never both win:
//!
//! ```text
//!            worker: start            worker: finish
//!   SENT ───────────────────▶ STARTED ───────────────▶ DONE
//!    │                           │
//!    │ parent: revoke            │ parent: doom (kill the worker for it)
//!    ▼                           ▼
//!  REVOKED                    DOOMED
//! ```
//!
//! * The worker runs a request only after it moved its slot from `SENT` to
//!   `STARTED`; a request it finds revoked (or a slot already reused for a
//!   later `seq`) is skipped without a word.
//! * The parent takes back a request that has not started by moving it
//!   from `SENT` to `REVOKED` — even from a worker that is stopped or
//!   wedged, since nothing of the worker has to run — and sends it
//!   elsewhere. It never runs twice.
//! * A timeout or `cancel` kills a worker only after it moved *that*
//!   request from `STARTED` to `DOOMED`. A worker that finishes a request
//!   whose slot it cannot move to `DONE` was doomed: it starts nothing more
//!   and exits, so the kill can never hit a later, innocent request.
//! * When a worker dies, its requests still `SENT` never started and are
//!   sent elsewhere; the others (`STARTED`, `DONE` without an answer yet,
//!   `DOOMED`) fail with `WorkerDied`.
//!
//! The parent reuses a slot only after the request that held it has been
//! resolved, so at most [`SLOTS`] requests of one worker are outstanding.
//!
//! **Kept results.** A worker may hold back the answer of a short request
//! and send it with the next ones, one write for many (see `child::worker`).
//! So that no finished request is lost with a worker that dies before that
//! write, a small result is first copied into the request's *keep slot* in
//! the same shared memory ([`Claims::keep`]), and only then is the request
//! moved to `DONE`. A parent that finds a dead worker's request `DONE`
//! without an answer takes the result from there ([`Claims::kept`]), so a
//! request that finished keeps its result whatever happens to its worker
//! afterwards, as when every answer was written at once.
//!
//! **The worker's CPU.** A word after the keep slots holds the CPU the
//! worker last went to wait on ([`Claims::note_cpu`]), so the parent can
//! wake the workers waiting on other CPUs before one waiting on its own
//! (see `sched::run_flush`). It is a hint: read without ordering, and
//! wrong at worst for one wake-up.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::sys::SharedPage;

/// Slots in a table: one 4 KiB page of 64-bit words.
pub(crate) const SLOTS: u64 = 512;

/// The largest result (an encoded batch) a keep slot holds.
pub(crate) const KEEP_MAX: usize = 56;
/// Words of a keep slot: a tag (`(seq + 1) << 8 | length`), then the
/// bytes; one cache line.
const KEEP_WORDS: usize = 1 + KEEP_MAX / 8;
/// Pages of a shared table: the claims, then a keep slot per claim slot,
/// then a page of words about the worker (see [`Claims::note_cpu`]).
const SHARED_PAGES: usize = 2 + SLOTS as usize * KEEP_WORDS * 8 / 4096;
/// The word, after the keep slots, where a worker notes its CPU.
const CPU_WORD: usize = SLOTS as usize * (1 + KEEP_WORDS);

const STATE_BITS: u32 = 3;
const STATE_MASK: u64 = (1 << STATE_BITS) - 1;

/// Where a request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Claim {
    /// Sent, not started; the parent may still take it back.
    Sent,
    /// The worker has started it.
    Started,
    /// The worker has finished it; its answer is on the way.
    Done,
    /// The parent took it back; the worker will skip it.
    Revoked,
    /// The parent is killing the worker for it.
    Doomed,
    /// The slot holds another request (never sent, or already reused).
    Stale,
}

impl Claim {
    fn code(self) -> u64 {
        match self {
            Claim::Sent => 1,
            Claim::Started => 2,
            Claim::Done => 3,
            Claim::Revoked => 4,
            Claim::Doomed => 5,
            Claim::Stale => 0,
        }
    }

    fn from_code(c: u64) -> Claim {
        match c {
            1 => Claim::Sent,
            2 => Claim::Started,
            3 => Claim::Done,
            4 => Claim::Revoked,
            5 => Claim::Doomed,
            _ => Claim::Stale,
        }
    }
}

/// Slots per 64-byte cache line.
const PER_LINE: u64 = 8;

/// The slot of request `seq`: a bijection of `seq % SLOTS` that puts
/// consecutive requests on different cache lines, so the parent marking the
/// next requests sent does not steal the line the worker is claiming on.
fn slot_index(seq: u64) -> usize {
    let lines = SLOTS / PER_LINE;
    let s = seq % SLOTS;
    ((s % lines) * PER_LINE + s / lines) as usize
}

fn word(seq: u64, c: Claim) -> u64 {
    debug_assert!(seq < (1 << (64 - STATE_BITS)));
    (seq << STATE_BITS) | c.code()
}

#[derive(Debug)]
enum Backing {
    /// Shared with a worker process.
    Page(SharedPage),
    /// In this process only (a node's slot, the scheduler's tests).
    Local(Box<[AtomicU64]>),
}

/// One worker's claim table (see the module docs).
#[derive(Debug)]
pub(crate) struct Claims {
    backing: Backing,
}

impl Claims {
    /// A table in a fresh shared page, to pass to a worker process.
    pub(crate) fn create_shared() -> std::io::Result<Self> {
        Ok(Claims {
            backing: Backing::Page(SharedPage::create(SHARED_PAGES)?),
        })
    }

    /// Maps the table a parent passed to this worker.
    pub(crate) fn map_shared(fd: std::os::fd::OwnedFd) -> std::io::Result<Self> {
        Ok(Claims {
            backing: Backing::Page(SharedPage::map(fd, SHARED_PAGES)?),
        })
    }

    /// A table in this process's memory (a node's slot, and the tests).
    pub(crate) fn local() -> Self {
        Claims {
            backing: Backing::Local((0..SLOTS).map(|_| AtomicU64::new(0)).collect()),
        }
    }

    /// The shared page's descriptor, to pass to the worker.
    pub(crate) fn shared_fd(&self) -> Option<std::os::fd::RawFd> {
        match &self.backing {
            Backing::Page(p) => Some(p.fd()),
            Backing::Local(_) => None,
        }
    }

    fn words(&self) -> &[AtomicU64] {
        match &self.backing {
            Backing::Page(p) => p.words(),
            Backing::Local(b) => b,
        }
    }

    fn slot(&self, seq: u64) -> &AtomicU64 {
        let words = self.words();
        debug_assert!(words.len() as u64 >= SLOTS);
        &words[slot_index(seq)]
    }

    /// Request `seq`'s keep slot; `None` in a local table, which has none.
    fn keep_slot(&self, seq: u64) -> Option<&[AtomicU64]> {
        let at = SLOTS as usize + (seq % SLOTS) as usize * KEEP_WORDS;
        self.words().get(at..at + KEEP_WORDS)
    }

    /// Notes the CPU `cpu` this table's worker runs on as it goes to wait
    /// for requests (the CPU it will most likely wake up on). Nothing in a
    /// local table.
    pub(crate) fn note_cpu(&self, cpu: Option<u32>) {
        if let Some(w) = self.words().get(CPU_WORD) {
            w.store(cpu.map_or(0, |c| u64::from(c) + 1), Ordering::Relaxed);
        }
    }

    /// The CPU the worker last noted (see [`note_cpu`](Self::note_cpu)).
    pub(crate) fn worker_cpu(&self) -> Option<u32> {
        let w = self.words().get(CPU_WORD)?.load(Ordering::Relaxed);
        u32::try_from(w.checked_sub(1)?).ok()
    }

    /// Where request `seq` stands.
    pub(crate) fn state(&self, seq: u64) -> Claim {
        let w = self.slot(seq).load(Ordering::Acquire);
        if w >> STATE_BITS != seq {
            return Claim::Stale;
        }
        Claim::from_code(w & STATE_MASK)
    }

    fn swap(&self, seq: u64, from: Claim, to: Claim) -> Result<(), Claim> {
        self.slot(seq)
            .compare_exchange(
                word(seq, from),
                word(seq, to),
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .map(|_| ())
            .map_err(|w| {
                if w >> STATE_BITS == seq {
                    Claim::from_code(w & STATE_MASK)
                } else {
                    Claim::Stale
                }
            })
    }

    // ----- parent ------------------------------------------------------

    /// Marks request `seq` as sent. The slot must be free: the request that
    /// held it last has been resolved.
    pub(crate) fn offer(&self, seq: u64) {
        self.slot(seq)
            .store(word(seq, Claim::Sent), Ordering::Release);
    }

    /// Takes request `seq` back unless it has started; on failure, returns
    /// where it stands.
    pub(crate) fn revoke(&self, seq: u64) -> Result<(), Claim> {
        self.swap(seq, Claim::Sent, Claim::Revoked)
    }

    /// Claims the running request `seq` for a kill; fails (with where it
    /// stands) when it is not running any more.
    pub(crate) fn doom(&self, seq: u64) -> Result<(), Claim> {
        self.swap(seq, Claim::Started, Claim::Doomed)
    }

    // ----- worker ------------------------------------------------------

    /// Before running request `seq`: true when the worker may run it.
    pub(crate) fn start(&self, seq: u64) -> bool {
        self.swap(seq, Claim::Sent, Claim::Started).is_ok()
    }

    /// After running request `seq`: false when the parent doomed it, and the
    /// worker must start nothing more.
    pub(crate) fn finish(&self, seq: u64) -> bool {
        self.swap(seq, Claim::Started, Claim::Done).is_ok()
    }

    /// While running request `seq`, before [`finish`](Self::finish):
    /// copies its `result` into the request's keep slot, so the parent
    /// finds it should this worker die before sending it. False (nothing
    /// kept) when the result is over [`KEEP_MAX`] bytes or the table has
    /// no keep slots; the answer must then be written before anything
    /// else starts.
    pub(crate) fn keep(&self, seq: u64, result: &[u8]) -> bool {
        let Some(slot) = self.keep_slot(seq).filter(|_| result.len() <= KEEP_MAX) else {
            return false;
        };
        for (word, chunk) in slot[1..].iter().zip(result.chunks(8)) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            word.store(u64::from_le_bytes(b), Ordering::Relaxed);
        }
        // Published by `finish`'s release.
        slot[0].store(((seq + 1) << 8) | result.len() as u64, Ordering::Relaxed);
        true
    }

    // ----- parent, after the worker is gone ------------------------------

    /// The result kept for request `seq` ([`keep`](Self::keep)), when it
    /// finished with one kept. Read only once the worker is gone (or can no
    /// longer write the slot).
    pub(crate) fn kept(&self, seq: u64) -> Option<Vec<u8>> {
        if self.state(seq) != Claim::Done {
            return None;
        }
        let slot = self.keep_slot(seq)?;
        let tag = slot[0].load(Ordering::Relaxed);
        let len = (tag & 0xff) as usize;
        if tag >> 8 != seq + 1 || len > KEEP_MAX {
            return None;
        }
        let mut out = Vec::with_capacity(KEEP_WORDS * 8);
        for word in &slot[1..] {
            out.extend_from_slice(&word.load(Ordering::Relaxed).to_le_bytes());
        }
        out.truncate(len);
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_worker_and_the_parent_never_both_win() {
        let c = Claims::local();
        c.offer(7);
        assert_eq!(c.revoke(7), Ok(()));
        assert!(!c.start(7), "a revoked request must not start");

        c.offer(8);
        assert!(c.start(8));
        assert_eq!(c.revoke(8), Err(Claim::Started));
        assert_eq!(c.doom(8), Ok(()));
        assert!(!c.finish(8), "a doomed request's worker must stop");

        c.offer(9);
        assert!(c.start(9));
        assert!(c.finish(9));
        assert_eq!(
            c.doom(9),
            Err(Claim::Done),
            "a finished request is never doomed"
        );
    }

    #[test]
    fn slots_are_a_permutation_with_neighbours_on_other_lines() {
        let mut seen = vec![false; SLOTS as usize];
        for seq in 0..SLOTS {
            let i = slot_index(seq);
            assert!(!seen[i], "slot {i} twice");
            seen[i] = true;
            let next = slot_index(seq + 1);
            assert_ne!(i / PER_LINE as usize, next / PER_LINE as usize);
        }
        assert_eq!(slot_index(5), slot_index(5 + SLOTS));
    }

    #[test]
    fn a_reused_slot_is_stale_for_the_old_request() {
        let c = Claims::local();
        c.offer(3);
        assert_eq!(c.revoke(3), Ok(()));
        c.offer(3 + SLOTS);
        assert!(!c.start(3), "the old request finds its slot reused");
        assert_eq!(c.state(3), Claim::Stale);
        assert!(c.start(3 + SLOTS));
    }

    #[test]
    fn racing_threads_agree_on_one_winner() {
        use std::sync::Arc;
        let c = Arc::new(Claims::local());
        for seq in 0..2000u64 {
            c.offer(seq);
            let w = c.clone();
            let worker = std::thread::spawn(move || w.start(seq));
            let parent_won = c.revoke(seq).is_ok();
            let worker_won = worker.join().unwrap();
            assert!(parent_won ^ worker_won, "seq {seq}: exactly one side wins");
        }
    }

    #[test]
    fn a_shared_table_is_seen_through_its_page() {
        let c = Claims::create_shared().unwrap();
        assert!(c.shared_fd().is_some());
        c.offer(1);
        assert_eq!(c.state(1), Claim::Sent);
    }

    #[test]
    fn a_kept_result_is_found_once_its_request_is_done() {
        let c = Claims::create_shared().unwrap();
        let seq = 3 * SLOTS + 5;
        c.offer(seq);
        assert!(c.start(seq));
        let result: Vec<u8> = (1..=13).collect();
        assert!(c.keep(seq, &result));
        assert_eq!(c.kept(seq), None, "not done yet: still running");
        assert!(c.finish(seq));
        assert_eq!(c.kept(seq), Some(result));
        // Another request in the same slot does not see it.
        c.offer(seq + SLOTS);
        assert!(c.start(seq + SLOTS));
        assert!(c.finish(seq + SLOTS));
        assert_eq!(c.kept(seq + SLOTS), None, "finished without keeping");
        // Every length up to the limit, and not one byte more.
        for len in [0, 1, 8, 9, KEEP_MAX] {
            let s = 7 + len as u64;
            let bytes = vec![0xa5; len];
            c.offer(s);
            assert!(c.start(s));
            assert!(c.keep(s, &bytes));
            assert!(c.finish(s));
            assert_eq!(c.kept(s).as_deref(), Some(&bytes[..]), "{len}");
        }
        assert!(!c.keep(100, &[0; KEEP_MAX + 1]));
    }

    #[test]
    fn a_local_table_keeps_nothing() {
        let c = Claims::local();
        c.offer(1);
        assert!(c.start(1));
        assert!(!c.keep(1, b"ok"));
        assert!(c.finish(1));
        assert_eq!(c.kept(1), None);
    }

    #[test]
    fn the_worker_cpu_crosses_through_the_page_and_not_a_keep_slot() {
        let parent = Claims::create_shared().unwrap();
        // The worker's own mapping, through a second opening of the memfd.
        let fd = parent.shared_fd().unwrap();
        let again = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(format!("/proc/self/fd/{fd}"))
            .unwrap();
        let worker = Claims::map_shared(again.into()).unwrap();
        assert_eq!(parent.worker_cpu(), None, "nothing noted yet");
        worker.note_cpu(Some(0));
        assert_eq!(parent.worker_cpu(), Some(0));
        worker.note_cpu(Some(3));
        assert_eq!(parent.worker_cpu(), Some(3));
        // The last keep slot is untouched by the note, and the other way.
        let last = SLOTS - 1;
        parent.offer(last);
        assert!(worker.start(last));
        assert!(worker.keep(last, &[0xff; KEEP_MAX]));
        assert!(worker.finish(last));
        assert_eq!(parent.worker_cpu(), Some(3));
        assert_eq!(parent.kept(last).as_deref(), Some(&[0xff; KEEP_MAX][..]));
        worker.note_cpu(None);
        assert_eq!(parent.worker_cpu(), None);
        // A local table has no such word.
        let local = Claims::local();
        local.note_cpu(Some(1));
        assert_eq!(local.worker_cpu(), None);
    }
}
