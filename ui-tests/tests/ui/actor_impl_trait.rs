#[mproc::actor]
struct Store {
    items: Vec<String>,
}

#[mproc::actor]
impl Store {
    fn new() -> Self {
        Store { items: Vec::new() }
    }

    fn push(&mut self, item: impl Into<String>) {
        self.items.push(item.into());
    }

    fn all(&self) -> impl Iterator<Item = String> {
        self.items.clone().into_iter()
    }
}

fn main() {}
