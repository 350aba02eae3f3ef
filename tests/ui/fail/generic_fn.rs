// A remote function is registered once, by name: it cannot be generic.

#[lumen::remote]
fn identity<T: serde::Serialize + serde::de::DeserializeOwned + Send + 'static>(x: T) -> T {
    x
}

fn main() {}
