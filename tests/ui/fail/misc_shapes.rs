// Shapes `#[lumen::remote]` and its helpers cannot turn into tasks or actors.

// `#[lumen::method]` only means something inside a `#[lumen::remote] impl`.
#[lumen::method(concurrency_group = "io")]
fn stray() {}

// On a struct rather than a function or an impl.
#[lumen::remote]
pub struct NotAnItem;

// The constructor cannot be async.
pub struct AsyncNew;

#[lumen::remote]
impl AsyncNew {
    pub async fn new() -> Self {
        AsyncNew
    }
}

// An actor type cannot be generic.
pub struct Wrapper<T>(T);

#[lumen::remote]
impl<T: Send + Sync + 'static> Wrapper<T> {
    pub fn new(value: T) -> Self {
        Wrapper(value)
    }
}

// Not on a trait impl.
pub struct Named;

pub trait Greet {
    fn new() -> Self;
}

#[lumen::remote]
impl Greet for Named {
    fn new() -> Self {
        Named
    }
}

// A concurrency group's size is a whole number of at least 1.
pub struct Pool;

#[lumen::remote(concurrency_groups(io = 0))]
impl Pool {
    pub fn new() -> Self {
        Pool
    }
}

// Unknown option of #[lumen::method].
pub struct Svc;

#[lumen::remote]
impl Svc {
    pub fn new() -> Self {
        Svc
    }

    #[lumen::method(group = "io")]
    pub fn work(&self) {}
}

// Remote functions cannot be const or unsafe.
#[lumen::remote]
const fn constant() -> u8 {
    1
}

#[lumen::remote]
unsafe fn dangerous() -> u8 {
    1
}

// `impl Trait` parameters have no concrete type to deserialize.
#[lumen::remote]
fn opaque(x: impl Into<u8>) -> u8 {
    x.into()
}

// #[lumen::main] goes on a plain `fn main()`.
#[lumen::main]
async fn not_main(x: u8) -> u8 {
    x
}

fn main() {}
