//! An argument type that is not serde is reported at that type.

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

    fn plot(&mut self, p: Point) -> f64 {
        p.x * self.scale
    }

    fn plot_scaled(&mut self, factor: f64, p: Point) -> f64 {
        factor * p.x
    }
}

fn main() {}
