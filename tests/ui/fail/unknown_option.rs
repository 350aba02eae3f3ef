// An unknown option is refused, and the message lists the valid ones.

#[lumen::remote(foo = 1)]
fn task() {}

pub struct Actor;

// Task-only options are unknown on an actor, and the other way round.
#[lumen::remote(max_retries = 3)]
impl Actor {
    pub fn new() -> Self {
        Actor
    }
}

#[lumen::remote(max_restarts = 3)]
fn task_with_actor_option() {}

fn main() {}
