#[mproc::actor]
struct A {
    n: u64,
}

#[mproc::actor]
impl A {
    async fn new(&self) -> Self {
        A { n: self.n }
    }
}

#[mproc::actor]
struct B {
    n: u64,
}

#[mproc::actor]
impl B {
    fn new(n: u64) -> Result<Self, String> {
        Ok(B { n })
    }
}

#[mproc::actor]
struct C;

#[mproc::actor]
impl C {
    unsafe fn new() {}
}

fn main() {}
