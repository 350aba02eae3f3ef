// An actor's methods may run on any thread, and `&self` methods may overlap: the actor type
// must be `Send + Sync + 'static`.

use std::rc::Rc;

pub struct Cache {
    shared: Rc<Vec<u8>>,
}

#[lumen::remote]
impl Cache {
    pub fn new() -> Self {
        Cache {
            shared: Rc::new(Vec::new()),
        }
    }

    pub fn len(&self) -> usize {
        self.shared.len()
    }
}

fn main() {}
