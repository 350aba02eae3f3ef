// Remote parameters are serialized and may be used on another machine: they must be owned.

#[lumen::remote]
fn greet(name: &str) -> String {
    format!("hello {name}")
}

pub struct Store {
    items: Vec<i64>,
}

#[lumen::remote]
impl Store {
    pub fn new() -> Self {
        Store { items: Vec::new() }
    }

    pub fn extend(&mut self, more: &[i64]) -> usize {
        self.items.extend_from_slice(more);
        self.items.len()
    }
}

fn main() {}
