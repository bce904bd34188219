//! Tracing across the process boundary.
//!
//! In a worker, a small [`tracing::Subscriber`] forwards every enabled event
//! to the parent as a `Log` message, prefixed with the fields of the spans it
//! happened in (the per-task span carries the task's name and id). The
//! parent re-emits it through its own subscriber, under target
//! `mproc::worker`, with the worker's name and pid as fields. The level
//! filter is the parent's, read when the worker starts.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

use crate::outbox::Outbox;
use crate::protocol::ToParent;

struct Fields(String);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if !self.0.is_empty() {
            self.0.push(' ');
        }
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, "{}={value:?}", field.name());
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.record_debug(field, &format_args!("{value}"));
        } else {
            self.record_debug(field, &value);
        }
    }
}

thread_local! {
    static STACK: RefCell<Vec<u64>> = const { RefCell::new(Vec::new()) };
}

struct Forwarder {
    outbox: Arc<Outbox>,
    max: LevelFilter,
    next: AtomicU64,
    spans: Mutex<HashMap<u64, String>>,
}

fn level_u8(l: &Level) -> u8 {
    match *l {
        Level::ERROR => 1,
        Level::WARN => 2,
        Level::INFO => 3,
        Level::DEBUG => 4,
        _ => 5,
    }
}

impl Subscriber for Forwarder {
    fn enabled(&self, m: &Metadata<'_>) -> bool {
        m.level() <= &self.max
    }
    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(self.max)
    }
    fn new_span(&self, span: &Attributes<'_>) -> Id {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let mut f = Fields(format!("{}{{", span.metadata().name()));
        let open = f.0.len();
        span.record(&mut f);
        if f.0.len() > open && f.0.as_bytes()[open] == b' ' {
            f.0.remove(open);
        }
        f.0.push('}');
        self.spans.lock().unwrap().insert(id, f.0);
        Id::from_u64(id)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut msg = String::new();
        STACK.with(|s| {
            let spans = self.spans.lock().unwrap();
            for id in s.borrow().iter() {
                if let Some(text) = spans.get(id) {
                    msg.push_str(text);
                    msg.push(':');
                }
            }
        });
        if !msg.is_empty() {
            msg.push(' ');
        }
        let mut f = Fields(msg);
        event.record(&mut f);
        let _ = self.outbox.send(&ToParent::Log {
            level: level_u8(event.metadata().level()),
            target: event.metadata().target(),
            message: &f.0,
        });
    }
    fn enter(&self, span: &Id) {
        STACK.with(|s| s.borrow_mut().push(span.into_u64()));
    }
    fn exit(&self, span: &Id) {
        STACK.with(|s| {
            let mut s = s.borrow_mut();
            if let Some(pos) = s.iter().rposition(|x| *x == span.into_u64()) {
                s.remove(pos);
            }
        });
    }
    fn try_close(&self, span: Id) -> bool {
        self.spans.lock().unwrap().remove(&span.into_u64());
        true
    }
}

/// Installs the forwarding subscriber in a worker (no-op when the parent has
/// tracing off and no subscriber was inherited).
///
/// A worker forked from a parent that has a global subscriber inherits that
/// subscriber, which may hold locks of the parent's threads; the worker must
/// not log through it. There the forwarder (or, with tracing off, a
/// subscriber that drops everything) becomes the default of each worker
/// thread instead (see [`enter_worker_dispatch`]).
pub(crate) fn install_forwarder(outbox: Arc<Outbox>, level: u8) {
    let max = match level {
        0 => LevelFilter::OFF,
        1 => LevelFilter::ERROR,
        2 => LevelFilter::WARN,
        3 => LevelFilter::INFO,
        4 => LevelFilter::DEBUG,
        _ => LevelFilter::TRACE,
    };
    let inherited = tracing::dispatcher::has_been_set();
    if level == 0 && !inherited {
        return;
    }
    let dispatch = if level == 0 {
        tracing::Dispatch::none()
    } else {
        tracing::Dispatch::new(Forwarder {
            outbox,
            max,
            next: AtomicU64::new(1),
            spans: Mutex::new(HashMap::new()),
        })
    };
    if inherited || tracing::dispatcher::set_global_default(dispatch.clone()).is_err() {
        let _ = WORKER_DISPATCH.set(dispatch);
        enter_worker_dispatch();
    }
}

static WORKER_DISPATCH: std::sync::OnceLock<tracing::Dispatch> = std::sync::OnceLock::new();

/// Makes the worker's subscriber the default of the calling thread, when the
/// worker could not install it globally (a forked worker).
pub(crate) fn enter_worker_dispatch() {
    if let Some(d) = WORKER_DISPATCH.get() {
        // The thread keeps this default for the rest of its life.
        std::mem::forget(tracing::dispatcher::set_default(d));
    }
}

/// Re-emits a worker's event in the parent.
pub(crate) fn reemit(worker: &str, pid: u32, level: u8, target: &str, message: &str) {
    macro_rules! emit {
        ($lvl:expr) => {
            tracing::event!(target: "mproc::worker", $lvl, worker, pid, source = target, "{message}")
        };
    }
    match level {
        1 => emit!(Level::ERROR),
        2 => emit!(Level::WARN),
        3 => emit!(Level::INFO),
        4 => emit!(Level::DEBUG),
        _ => emit!(Level::TRACE),
    }
}
