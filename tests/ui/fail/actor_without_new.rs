// An actor's creation arguments come from `new`; without it there is no constructor.

pub struct Counter {
    value: i64,
}

#[lumen::remote]
impl Counter {
    pub fn start(value: i64) -> Self {
        Counter { value }
    }

    pub fn get(&self) -> i64 {
        self.value
    }
}

fn main() {}
