// `f::remote(..)` takes, for a parameter of type `T`, a `T`, an `ObjectRef<T>` or a
// `&ObjectRef<T>`: anything else is refused with a message saying so.

#[lumen::remote]
fn square(x: i64) -> i64 {
    x * x
}

fn main() {
    let _a = square::remote("three");
    let r: lumen::ObjectRef<String> = lumen::put(String::from("3"));
    let _b = square::remote(&r);
}
