// An actor lives on across calls: a method may borrow it (`&self`, `&mut self`), not consume it.

pub struct Session {
    log: Vec<String>,
}

#[lumen::remote]
impl Session {
    pub fn new() -> Self {
        Session { log: Vec::new() }
    }

    pub fn finish(self) -> Vec<String> {
        self.log
    }
}

fn main() {}
