//! A return type that is not serde is reported at that type.

struct Point {
    x: f64,
}

#[mproc::actor]
struct Canvas {
    scale: f64,
}

#[mproc::actor]
impl Canvas {
    fn new(scale: f64) -> Self {
        Canvas { scale }
    }

    async fn origin(&self) -> Point {
        Point { x: self.scale }
    }
}

fn main() {}
