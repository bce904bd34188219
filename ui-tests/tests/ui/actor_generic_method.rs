#[mproc::actor]
struct Store {
    items: Vec<String>,
}

#[mproc::actor]
impl Store {
    fn new() -> Self {
        Store { items: Vec::new() }
    }

    fn push<T: ToString>(&mut self, item: T) {
        self.items.push(item.to_string());
    }

    fn len(&self) -> usize
    where
        u64: Copy,
    {
        self.items.len()
    }
}

fn main() {}
