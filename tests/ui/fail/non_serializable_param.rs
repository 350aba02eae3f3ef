// A task parameter whose type has no serde impls cannot be sent to a worker.

pub struct Point {
    pub x: i64,
    pub y: i64,
}

#[lumen::remote]
fn norm(p: Point) -> i64 {
    p.x * p.x + p.y * p.y
}

fn main() {}
