use std::borrow::Cow;

#[mproc::actor]
struct Store {
    items: Vec<String>,
}

#[mproc::actor]
impl Store {
    fn new() -> Self {
        Store { items: Vec::new() }
    }

    fn first(&self) -> &str {
        &self.items[0]
    }

    fn last(&self) -> Cow<'_, str> {
        Cow::Borrowed(&self.items[self.items.len() - 1])
    }
}

fn main() {}
