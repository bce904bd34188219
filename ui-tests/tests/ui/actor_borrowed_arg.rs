#[mproc::actor]
struct Store {
    items: Vec<String>,
}

#[mproc::actor]
impl Store {
    fn new(first: &str) -> Self {
        Store { items: vec![first.to_string()] }
    }

    fn push(&mut self, item: &str) {
        self.items.push(item.to_string());
    }
}

fn main() {}
