#[mproc::actor]
struct Holder<T> {
    value: T,
}

#[mproc::actor]
impl<T: Clone> Holder<T> {
    fn new(value: T) -> Self {
        Holder { value }
    }

    fn get(&self) -> T {
        self.value.clone()
    }
}

fn main() {}
