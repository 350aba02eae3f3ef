// Environment variables in #[lumen::remote]: names are identifiers, values string literals;
// lumen's own names and NUL bytes are refused at compile time.

#[lumen::remote(env(LUMEN_WORKER = "1"))]
fn own_name() -> u8 {
    1
}

#[lumen::remote(env(MY_SETTING = 1))]
fn not_a_string() -> u8 {
    1
}

#[lumen::remote(env(MY_SETTING = "a\0b"))]
fn nul_value() -> u8 {
    1
}

pub struct Holder;

#[lumen::remote(env(LUMEN_ADDRESS = "x"))]
impl Holder {
    pub fn new() -> Self {
        Holder
    }
}

fn main() {}
