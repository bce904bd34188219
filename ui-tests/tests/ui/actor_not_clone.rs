//! Constructor arguments are kept to run `new` again on a restart: they
//! must be `Clone` (and `Sync`), reported at the argument.
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Config {
    size: u64,
}

#[mproc::actor]
struct Cache {
    size: u64,
}

#[mproc::actor]
impl Cache {
    fn new(config: Config) -> Self {
        Cache { size: config.size }
    }
}

#[mproc::actor]
struct Pool {
    size: u64,
}

#[mproc::actor]
impl Pool {
    fn new(name: String, config: Config) -> Self {
        let _ = name;
        Pool { size: config.size }
    }
}

fn main() {}
