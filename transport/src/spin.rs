//! [`Spin`]: a short adaptive spin before a blocking wait, learned per use
//! site (a ring's reader, a lock, a completion).
//!
//! On a VM a blocking wake-up across cores costs tens of microseconds, while
//! an answer that a running thread finds by polling shared memory costs a
//! fraction of one. A waiter that expects its answer soon therefore polls
//! for a while before it sleeps — but only while polling pays: the budget
//! follows how long successful spins took, shrinks after misses, and is
//! zero on a one-CPU machine, so an idle waiter (an idle pool's worker)
//! goes to sleep after one short miss and burns nothing while it sleeps.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

/// An adaptive spinner: how long to poll before sleeping, learned per use
/// site.
///
/// The budget is eight times a moving average of how long successful spins
/// took (at least twice the last one), so a ping-pong whose answers come in
/// microseconds keeps spinning. Isolated misses (a preemption, an
/// interrupt) leave it alone; from the third miss in a row it halves per
/// miss, so sporadic traffic quickly stops burning CPU, and every sixteenth
/// miss in a row probes with the full budget so the budget can recover.
/// Polling is `pause`, turning to `yield` only after a few thousand (a
/// `yield` costs microseconds on a VM) — or after a few microseconds for a
/// [`polite`](Spin::polite) spinner; on a one-CPU machine there is no
/// spinning at all.
#[derive(Debug)]
pub struct Spin {
    budget_ns: AtomicU32,
    /// Moving average of successful spin times.
    avg_ns: AtomicU32,
    /// Spins that ran out in a row.
    misses: AtomicU32,
    max_ns: u32,
    /// Rounds of `pause` before each further round yields the CPU.
    pause_rounds: u32,
    /// Spins only while the machine has a CPU to spare.
    spare_only: bool,
    /// The budget follows the spins' outcomes (else it stays `max_ns`).
    adaptive: bool,
}

const SPIN_MIN_NS: u32 = 500;

/// The longest spin of a link's reader (a worker waiting for its next
/// request, the parent waiting for a result, a caller waiting for its
/// task), in nanoseconds: well under the cost of the wake-up it saves, so
/// a miss costs less than the wake-up would have.
pub const LINK_SPIN_NS: u32 = 20_000;

/// Measured task time, in nanoseconds, from which a worker's or its
/// reader's blocking read sleeps for input only (see
/// [`ByteStream::wake_on_input_only`](crate::ByteStream::wake_on_input_only)):
/// with tasks this long the CPUs are busy computing, a needless wake-up
/// takes one from a worker, and the two system calls that avoid it are
/// small beside the task; with shorter tasks a reader sleeps so often that
/// those calls cost more than they save.
pub const LONG_TASK_NS: u64 = 50_000;

impl Spin {
    /// A spinner that never spins longer than `max_ns` nanoseconds at a
    /// time, starting at a fifth of that.
    pub const fn new(max_ns: u32) -> Spin {
        let start = max_ns / 5;
        Spin {
            budget_ns: AtomicU32::new(start),
            avg_ns: AtomicU32::new(start / 8),
            misses: AtomicU32::new(0),
            max_ns,
            pause_rounds: 256,
            spare_only: false,
            adaptive: true,
        }
    }

    /// A spinner that always polls for up to `max_ns`, yielding the CPU
    /// between polls after its first few microseconds as a
    /// [`polite`](Spin::polite) one does: for a wait that comes seldom
    /// (once per call) and whose caller knows a CPU has just gone free —
    /// such as a caller polling for the last answers of its map once a
    /// worker has gone idle. An adaptive budget would learn from too few
    /// spins and shrink to nothing after a couple of late endings, and the
    /// machine-wide count of runnable threads, sampled, still counts the
    /// worker that has just finished.
    pub const fn steady(max_ns: u32) -> Spin {
        let mut s = Spin::polite(max_ns);
        s.budget_ns = AtomicU32::new(max_ns);
        s.adaptive = false;
        s.spare_only = false;
        s
    }

    /// A spinner that yields the CPU between polls after its first few
    /// microseconds: for a waiter whose answer comes from another thread
    /// that may need this very CPU (a round trip through three threads on
    /// two cores, or a loaded machine). Unloaded, a yield returns at once
    /// and the poll goes on; loaded, the thread that would answer runs.
    /// It also polls only while the machine has a CPU to spare (no more
    /// runnable threads than CPUs plus one): when every CPU is busy a
    /// wake-up is cheap, and polling would only take CPU time from the
    /// thread that is to answer.
    pub const fn polite(max_ns: u32) -> Spin {
        let mut s = Spin::new(max_ns);
        s.pause_rounds = 4;
        s.spare_only = true;
        s
    }

    /// Polls `ready()` until it returns true or the current budget runs
    /// out. Returns the last value of `ready()`.
    pub fn until(&self, mut ready: impl FnMut() -> bool) -> bool {
        if ready() {
            return true;
        }
        if !multi_core() || self.max_ns == 0 {
            return false;
        }
        if self.spare_only && !cpu_to_spare() {
            return false;
        }
        let budget = self.budget_ns.load(Ordering::Relaxed);
        let misses = self.misses.load(Ordering::Relaxed);
        let limit = if !self.adaptive || misses % 16 == 15 {
            self.max_ns
        } else {
            budget
        };
        let start = Instant::now();
        let mut round = 0u32;
        loop {
            if round < self.pause_rounds {
                for _ in 0..32 {
                    std::hint::spin_loop();
                }
            } else {
                std::thread::yield_now();
            }
            round += 1;
            if ready() {
                if !self.adaptive {
                    return true;
                }
                let took = start.elapsed().as_nanos().min(u128::from(self.max_ns)) as u32;
                let avg = self.avg_ns.load(Ordering::Relaxed);
                let avg = ((u64::from(avg) * 7 + u64::from(took)) / 8) as u32;
                self.avg_ns.store(avg, Ordering::Relaxed);
                let want = avg.saturating_mul(8).max(took.saturating_mul(2));
                self.budget_ns.store(
                    want.clamp(SPIN_MIN_NS.min(self.max_ns), self.max_ns),
                    Ordering::Relaxed,
                );
                self.misses.store(0, Ordering::Relaxed);
                return true;
            }
            if start.elapsed().as_nanos() >= u128::from(limit) {
                if !self.adaptive {
                    return false;
                }
                if misses >= 2 {
                    self.budget_ns.store(
                        (budget / 2).max(SPIN_MIN_NS.min(self.max_ns)),
                        Ordering::Relaxed,
                    );
                }
                self.misses.store(misses.wrapping_add(1), Ordering::Relaxed);
                return false;
            }
        }
    }
}

/// True unless the machine has more runnable threads than CPUs (plus one,
/// for a round trip's own third thread), looked up at most every 2 ms.
///
/// A polite spinner polls only while a CPU is to spare: a wake-up is dear
/// when it must rouse an idle CPU (tens of microseconds on a VM), and cheap
/// when every CPU is busy anyway — where polling would only take CPU time
/// from the thread that is to answer.
fn cpu_to_spare() -> bool {
    use std::sync::atomic::{AtomicBool, AtomicU64};
    static CHECKED_AT: AtomicU64 = AtomicU64::new(0);
    static SPARE: AtomicBool = AtomicBool::new(true);
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let now = EPOCH.get_or_init(Instant::now).elapsed().as_micros() as u64 + 1;
    let last = CHECKED_AT.load(Ordering::Relaxed);
    if now.saturating_sub(last) < 2_000
        || CHECKED_AT
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
    {
        return SPARE.load(Ordering::Relaxed);
    }
    let spare = match runnable_threads() {
        Some(n) => n <= cpus() + 1,
        None => true,
    };
    SPARE.store(spare, Ordering::Relaxed);
    spare
}

/// Runnable threads on the machine now (the fourth field of
/// `/proc/loadavg`, "running/total").
fn runnable_threads() -> Option<usize> {
    use std::io::Read;
    let mut buf = [0u8; 128];
    let n = std::fs::File::open("/proc/loadavg")
        .and_then(|mut f| f.read(&mut buf))
        .ok()?;
    let text = std::str::from_utf8(&buf[..n]).ok()?;
    let field = text.split_whitespace().nth(3)?;
    field.split('/').next()?.parse().ok()
}

fn cpus() -> usize {
    static N: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *N.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// True on a machine (or CPU set) with more than one CPU: spinning on one
/// CPU only delays the thread that would answer.
pub fn multi_core() -> bool {
    static MULTI: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *MULTI.get_or_init(|| cpus() > 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ready_condition_returns_at_once_and_a_false_one_gives_up() {
        // A budget of 200 ms (a fifth of the most), so that four polls fit
        // in it however slow the machine (memcheck, a loaded host): the
        // test is about what is returned, not how fast.
        let s = Spin::new(1_000_000_000);
        assert!(s.until(|| true));
        // Bounded: a condition that never holds returns false.
        assert!(!s.until(|| false));
        let mut n = 0;
        assert_eq!(
            s.until(|| {
                n += 1;
                n > 3
            }),
            multi_core()
        );
    }

    #[test]
    fn misses_in_a_row_shrink_the_budget() {
        let s = Spin::new(20_000);
        let before = s.budget_ns.load(Ordering::Relaxed);
        for _ in 0..6 {
            s.until(|| false);
        }
        if multi_core() {
            assert!(s.budget_ns.load(Ordering::Relaxed) < before);
        }
    }

    #[test]
    fn a_steady_spinner_keeps_its_whole_budget() {
        // Misses in a row, then a quick success: the budget stays the most,
        // where an adaptive spinner's would have shrunk, then followed the
        // quick success down.
        let s = Spin::steady(20_000);
        for _ in 0..6 {
            assert!(!s.until(|| false));
        }
        let mut n = 0;
        assert_eq!(
            s.until(|| {
                n += 1;
                n > 1
            }),
            multi_core()
        );
        assert_eq!(s.budget_ns.load(Ordering::Relaxed), 20_000);
    }
}
