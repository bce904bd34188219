//! Serde types that are not `Send`: `PhantomData<*const u8>` is serde (of
//! nothing) but not `Send`.
use std::marker::PhantomData;

type Local = PhantomData<*const u8>;

#[mproc::actor]
struct Shape {
    p: u64,
}

#[mproc::actor]
impl Shape {
    fn new(p: u64) -> Self {
        Shape { p }
    }

    fn one(&self, _marker: Local) -> u64 {
        self.p
    }

    fn two(&self, _marker: Local, x: u64) -> u64 {
        x
    }

    fn back(&self) -> Local {
        PhantomData
    }
}

fn main() {}
