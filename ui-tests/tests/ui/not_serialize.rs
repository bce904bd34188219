use mproc::task;

struct Point {
    x: f64,
    y: f64,
}

#[task]
fn norm(p: Point) -> f64 {
    (p.x * p.x + p.y * p.y).sqrt()
}

#[task]
fn scale(factor: f64, p: Point) -> f64 {
    factor * p.x
}

#[task]
fn origin() -> Point {
    Point { x: 0.0, y: 0.0 }
}

fn main() {}
