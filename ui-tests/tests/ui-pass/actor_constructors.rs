//! Constructors of several arguments, of none, `const fn new`, `new`
//! returning the type by name; enums.
#![deny(warnings, missing_docs, missing_debug_implementations, unreachable_pub)]

use mproc::__private::ActorType;
use mproc::{ActorRef, Executor};
use serde::{Deserialize, Serialize};

/// Settings, kept to build the actor again on a restart.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Settings {
    /// A size.
    pub size: usize,
}

/// Several arguments: a tuple.
#[mproc::actor]
#[derive(Debug)]
pub struct Cache {
    name: String,
    entries: Vec<(String, String)>,
}

#[mproc::actor]
impl Cache {
    /// Named, sized.
    pub fn new(name: String, settings: Settings, (a, b): (u8, u8)) -> Cache {
        let _ = (a, b);
        Cache {
            name,
            entries: Vec::with_capacity(settings.size),
        }
    }

    /// Stores a value.
    pub fn put(&mut self, key: String, value: String) {
        self.entries.push((key, value));
    }

    /// The name.
    pub fn name(&self) -> String {
        self.name.clone()
    }
}

/// No arguments: `()`.
#[mproc::actor]
#[derive(Debug, Default)]
pub struct Ticker {
    ticks: u64,
}

#[mproc::actor]
impl Ticker {
    /// From zero.
    pub const fn new() -> Self {
        Ticker { ticks: 0 }
    }

    /// One more.
    pub fn tick(&mut self) -> u64 {
        self.ticks += 1;
        self.ticks
    }
}

/// An enum.
#[mproc::actor]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Light {
    /// On.
    On,
    /// Off.
    Off,
}

#[mproc::actor]
impl Light {
    /// In the state given.
    pub fn new(on: bool) -> Self {
        if on {
            Light::On
        } else {
            Light::Off
        }
    }

    /// Switches, and says the new state.
    pub fn toggle(&mut self) -> Light {
        *self = match self {
            Light::On => Light::Off,
            Light::Off => Light::On,
        };
        *self
    }
}

async fn use_them(executor: &Executor) -> Result<(), Box<dyn std::error::Error>> {
    let settings = Settings { size: 4 };
    let cache: ActorRef<Cache> = Cache::spawn(executor, ("c".into(), settings, (1, 2))).await?;
    cache.put("k".into(), "v".into()).await?;
    let _: String = cache.name().await?;
    let ticker: ActorRef<Ticker> = Ticker::spawn(executor, ()).await?;
    let _: u64 = ticker.tick().await?;
    let light = Light::spawn(executor, true).await?;
    let _: Light = light.toggle().await?;
    Ok(())
}

fn main() {
    let _ = use_them;
    type CacheArgs = <Cache as ActorType>::Args;
    let args: CacheArgs = ("c".to_string(), Settings { size: 1 }, (0, 0));
    let cache = <Cache as ActorType>::construct(args);
    assert_eq!(cache.name(), "c");
    let () = <<Ticker as ActorType>::Args>::default();
    assert_eq!(<Ticker as ActorType>::construct(()).tick(), 1);
    assert_eq!(<Light as ActorType>::construct(false).toggle(), Light::On);
    assert_eq!(<Light as ActorType>::METHODS, ["toggle"]);
}
