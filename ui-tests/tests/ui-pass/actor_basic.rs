//! Every kind of actor method `#[actor]` accepts, used the ways the API
//! promises (without an executor: spawning is tested end to end elsewhere).
#![deny(warnings, missing_docs, missing_debug_implementations, unreachable_pub)]

use std::borrow::Cow;

use mproc::__private::{ActorClient, ActorType};
use mproc::{Actor, ActorCall, ActorOptions, ActorRef, Executor, TaskError};
use serde::{Deserialize, Serialize};

/// Counts.
#[mproc::actor]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Counter {
    n: u64,
}

#[mproc::actor]
impl Counter {
    /// The largest count.
    pub const LIMIT: u64 = 1_000;

    /// Starts at `start`.
    pub fn new(start: u64) -> Self {
        Counter { n: start }
    }

    /// Adds `by`.
    pub fn incr(&mut self, by: u64) -> u64 {
        self.n += by;
        self.n
    }

    /// The count.
    pub fn get(&self) -> u64 {
        self.n
    }

    /// The count, later.
    pub async fn slow_get(&self) -> u64 {
        self.n
    }

    /// Adds both, unless that goes past the limit.
    pub fn add2(&mut self, a: u64, b: u64) -> Result<u64, String> {
        if self.n + a + b > Self::LIMIT {
            return Err("too many".into());
        }
        self.n += a + b;
        Ok(self.n)
    }

    /// Forgets the count.
    pub async fn reset(&mut self) {
        self.n = Self::helper(0).into();
    }

    // Not an actor method: no receiver.
    fn helper(x: u32) -> u32 {
        x
    }

    /// Any pattern the method accepts; `Self` in its types.
    pub fn patterns(&self, (a, b): (u64, u64), mut c: u64, _: u8) -> Vec<Self> {
        c += a + b;
        vec![Counter { n: c }]
    }

    /// `'static` is the only lifetime allowed.
    pub fn label(&self, prefix: Cow<'static, str>) -> Cow<'static, str> {
        format!("{prefix}{}", self.n).into()
    }

    // A private method: a private client method.
    fn private(&self) -> bool {
        self.n > 0
    }

    /// A raw identifier.
    pub fn r#match(&self, r#in: u64) -> bool {
        self.n == r#in
    }

    /// Deprecated: only its users are warned.
    #[deprecated = "use `get`"]
    pub fn old_get(&self) -> u64 {
        self.n
    }

    /// Compiled out, with all it generates; its number stays taken, so the
    /// others keep theirs.
    #[cfg(any())]
    pub fn gone(&self, x: NoSuchType) -> NoSuchType {
        x
    }

    /// After a compiled-out method.
    pub fn last(&self) -> u64 {
        self.n
    }
}

/// An `async fn` whose future is not `Send` is fine: it runs on the actor's
/// own thread.
#[mproc::actor]
#[derive(Debug)]
pub struct Local {
    hits: std::rc::Rc<std::cell::Cell<u64>>,
}

#[mproc::actor]
impl Local {
    /// A fresh one.
    pub fn new() -> Self {
        Local {
            hits: Default::default(),
        }
    }

    /// Counts a hit across an await point, holding an `Rc`.
    pub async fn hit(&self) -> u64 {
        let hits = self.hits.clone();
        std::future::ready(()).await;
        hits.set(hits.get() + 1);
        hits.get()
    }
}

mod inner {
    /// An actor in a private module, with crate-visible methods.
    #[mproc::actor]
    #[derive(Debug)]
    pub(crate) struct Inner(pub(crate) u8);

    #[mproc::actor]
    impl Inner {
        pub(crate) fn new(x: u8) -> Self {
            Inner(x)
        }

        pub(crate) fn get(&self) -> u8 {
            self.0
        }
    }
}

// `cfg` applies to everything generated.
#[cfg(any())]
#[mproc::actor]
struct Gone(NoSuchType);

#[cfg(any())]
#[mproc::actor]
impl Gone {
    fn new(x: NoSuchType) -> Self {
        Gone(x)
    }
}

/// What the API promises of the calls; never run.
async fn use_them(executor: &Executor) -> Result<(), Box<dyn std::error::Error>> {
    let c: ActorRef<Counter> = Counter::spawn(executor, 5).await?;
    let incr: ActorCall<u64> = c.incr(2);
    let seven: Result<u64, TaskError> = incr.await;
    let _ = seven?;
    let _: u64 = c.get().await?;
    let _: u64 = c.slow_get().await?;
    let _: Result<u64, String> = c.add2(1, 2).await?;
    let () = c.reset().await?;
    let _: Vec<Counter> = c.patterns((1, 2), 3, 4).await?;
    let _: Cow<'static, str> = c.label("n = ".into()).await?;
    let _: bool = c.private().await?;
    let _: bool = c.r#match(3).await?;
    #[allow(deprecated)]
    let _: u64 = c.old_get().await?;
    let _: u64 = c.last().await?;

    let options = ActorOptions::default();
    let d = Counter::spawn_with(executor, 0, options).await?;
    let client: &CounterClient = &d;
    let copy: CounterClient = client.clone();
    let _ = format!("{copy:?}");
    let _ = CounterClient::from_raw(copy.raw().clone());

    let local = Local::spawn(executor, ()).await?;
    let _: u64 = local.hit().await?;

    let inner = inner::Inner::spawn(executor, 3).await?;
    let _: u8 = inner.get().await?;
    Ok(())
}

fn assert_send<T: Send>(_: &T) {}

fn client_of<A: Actor>(actor: &ActorRef<A>) -> &A::Client {
    actor
}

fn main() {
    let _ = client_of::<Counter>;
    // The futures of the generated functions are `Send`.
    let executor: Option<&Executor> = None;
    if let Some(executor) = executor {
        assert_send(&Counter::spawn(executor, 1));
        assert_send(&use_them(executor));
    }

    // The type and its block are as written.
    let mut c = Counter::new(1);
    assert_eq!(c.incr(1), 2);
    assert_eq!(c.get(), 2);
    assert_eq!(futures::executor::block_on(c.slow_get()), 2);
    assert_eq!(c.add2(1, 2), Ok(5));
    futures::executor::block_on(c.reset());
    assert_eq!(c.patterns((1, 2), 3, 0), vec![Counter { n: 6 }]);
    assert!(!c.private());
    assert_eq!(Counter::helper(4), 4);
    assert_eq!(Counter::LIMIT, 1_000);
    assert_eq!(inner::Inner::new(2).get(), 2);

    // The hidden half.
    assert_eq!(
        <Counter as ActorType>::NAME,
        concat!(module_path!(), "::Counter")
    );
    assert_eq!(
        <Counter as ActorType>::METHODS,
        [
            "incr", "get", "slow_get", "add2", "reset", "patterns", "label", "private", "match",
            "old_get", "gone", "last"
        ]
    );
    let _: fn(u64) -> Counter = <Counter as ActorType>::construct;
    assert_eq!(<Local as ActorType>::METHODS, ["hit"]);
    assert_eq!(
        <inner::Inner as ActorType>::NAME,
        concat!(module_path!(), "::inner::Inner")
    );

    // Registration.
    let registered: Vec<String> = mproc::__private::ACTORS
        .iter()
        .map(|entry| format!("{entry:?}"))
        .collect();
    for name in ["Counter", "Local", "inner::Inner"] {
        let full = format!("{:?}", format!("{}::{name}", module_path!()));
        assert!(
            registered.iter().any(|entry| entry.contains(&full)),
            "{full} is not in {registered:?}"
        );
    }
    assert!(!registered.iter().any(|e| e.contains("Gone")));
}
