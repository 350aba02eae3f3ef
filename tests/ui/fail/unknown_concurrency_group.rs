// A method's concurrency group must be one the impl declares.

pub struct Service;

#[lumen::remote(concurrency_groups(io = 2))]
impl Service {
    pub fn new() -> Self {
        Service
    }

    #[lumen::method(concurrency_group = "io")]
    pub async fn read(&self) -> u8 {
        1
    }

    #[lumen::method(concurrency_group = "nope")]
    pub async fn write(&self) -> u8 {
        2
    }
}

fn main() {}
