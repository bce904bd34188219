//! The keep-alive list of handles in flight, and the thread that prunes it.

use super::*;

/// What this process keeps alive for one segment while handles it
/// encoded may still be decoded.
struct Kept {
    seg: Arc<Segment>,
    /// Values kept besides the segment, one per key (pipe ends).
    extra: Vec<(u8, KeptValue)>,
    /// Our acknowledgement slot, or `NO_SLOT` (kept until exit).
    slot: u8,
    /// The latest ticket issued; the entry goes once it is acknowledged.
    ticket: u32,
    /// The process that made the entry (a forked child drops its copies).
    pid: u32,
}

impl Kept {
    fn done(&self, me: u32) -> bool {
        self.pid != me || (self.slot != NO_SLOT && self.seg.acknowledged(self.slot, self.ticket))
    }
}

struct List {
    /// By segment token: one entry per segment, however many encodes.
    items: HashMap<u64, Kept>,
    /// The pid whose reaper thread runs (a forked child has none).
    reaper: u32,
    /// When a handle was last issued: the reaper polls fast after that.
    last_issue: Option<Instant>,
}

fn list() -> &'static (Mutex<List>, Condvar) {
    static L: std::sync::OnceLock<(Mutex<List>, Condvar)> = std::sync::OnceLock::new();
    L.get_or_init(|| {
        (
            Mutex::new(List {
                items: HashMap::new(),
                reaper: 0,
                last_issue: None,
            }),
            Condvar::new(),
        )
    })
}

/// Issues a ticket for `seg` and keeps it (and `extra`) alive until the
/// ticket is acknowledged. Slot claims, tickets and slot releases all
/// happen under the list lock, so a slot is never freed while this
/// process has a ticket of it in flight.
pub(super) fn issue(seg: &Arc<Segment>, extra: Option<(u8, &dyn Fn() -> KeptValue)>) -> Wire {
    let me = shm::pid();
    let (m, cv) = list();
    let mut l = m.lock().unwrap_or_else(|e| e.into_inner());
    if l.items.get(&seg.token).is_some_and(|k| k.pid != me) {
        // Inherited through fork: the parent's entry, not ours.
        l.items.remove(&seg.token);
    }
    let kept = l.items.entry(seg.token).or_insert_with(|| Kept {
        seg: seg.clone(),
        extra: Vec::new(),
        slot: seg.claim_ack_slot(me).map_or(NO_SLOT, |i| i as u8),
        ticket: 0,
        pid: me,
    });
    if kept.slot != NO_SLOT {
        kept.ticket = seg.next_ticket(kept.slot);
    }
    if let Some((key, make)) = extra {
        if !kept.extra.iter().any(|(k, _)| *k == key) {
            kept.extra.push((key, make()));
        }
    }
    let wire = seg.wire(kept.slot, kept.ticket);
    l.last_issue = Some(Instant::now());
    if l.reaper != me {
        l.reaper = me;
        let spawned = std::thread::Builder::new()
            .name("mproc-keepalive".into())
            .spawn(reap);
        if spawned.is_err() {
            l.reaper = 0;
        }
    }
    cv.notify_one();
    wire
}

/// The number of values kept for the segment `token` (the segment
/// itself counts one), or `None` when nothing is kept.
#[cfg(test)]
pub(super) fn kept(token: u64) -> Option<usize> {
    let l = list().0.lock().unwrap_or_else(|e| e.into_inner());
    l.items.get(&token).map(|k| 1 + k.extra.len())
}

fn reap() {
    let (m, cv) = list();
    let me = shm::pid();
    let mut pause = Duration::from_micros(500);
    let mut l = m.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let done: Vec<u64> = l
            .items
            .iter()
            .filter(|(_, k)| k.done(me))
            .map(|(t, _)| *t)
            .collect();
        let mut dropped = Vec::with_capacity(done.len());
        for t in done {
            if let Some(k) = l.items.remove(&t) {
                if k.pid == me && k.slot != NO_SLOT {
                    k.seg.release_ack_slot(k.slot, me);
                }
                dropped.push(k);
            }
        }
        // Only entries that an acknowledgement can end need watching.
        let waiting = l.items.values().any(|k| k.slot != NO_SLOT);
        if !waiting {
            l.reaper = 0;
            drop(l);
            drop(dropped);
            return;
        }
        // Fast while handles were just sent; slower for ones that have
        // waited long (a queued task, or one that will never run).
        let recent = l
            .last_issue
            .is_some_and(|t| t.elapsed() < Duration::from_secs(2));
        let max = if recent {
            Duration::from_millis(20)
        } else {
            Duration::from_millis(250)
        };
        // Drop released entries outside the lock: dropping a handle may
        // take other locks.
        drop(l);
        drop(dropped);
        pause = (pause * 2).min(max);
        l = m.lock().unwrap_or_else(|e| e.into_inner());
        let (g, woken) = cv.wait_timeout(l, pause).unwrap_or_else(|e| e.into_inner());
        l = g;
        if !woken.timed_out() {
            pause = Duration::from_micros(500);
        }
    }
}
