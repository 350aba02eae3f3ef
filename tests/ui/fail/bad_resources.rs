// Literal resource amounts are checked at compile time, with the runtime's rules; every bad
// amount is reported, not just the first.

// GPU amounts above 1 must be whole.
#[lumen::remote(num_gpus = 1.5)]
fn gpus_not_whole() {}

// Amounts are non-negative.
#[lumen::remote(num_cpus = -1)]
fn negative_cpus() {}

// Amounts have a precision of 0.0001.
#[lumen::remote(num_cpus = 0.00001)]
fn too_precise() {}

// CPU is a predefined resource: it is set with num_cpus.
#[lumen::remote(resources(CPU = 1))]
fn predefined_in_resources() {}

// Several problems in one attribute are all reported.
#[lumen::remote(num_cpus = -0.5, memory = -1, resources(GPU = 2, special = 0.123456))]
fn many_problems() {}

// The same rules hold for actors.
pub struct Gpu;

#[lumen::remote(num_gpus = 2.5)]
impl Gpu {
    pub fn new() -> Self {
        Gpu
    }
}

fn main() {}
