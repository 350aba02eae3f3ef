// The attributes imported by name (`use lumen::prelude::*`, `use lumen::method`) rather than
// written as `#[lumen::remote]`, and a program without `#[lumen::main]` that shuts down itself.
// Modes: embedded only. The program checks the macros' shapes and the public API from a user
// crate; it asserts a one-node cluster and starts and stops the runtime itself.

// `#[remote]` strips `#[method]` from the impl before name resolution, so rustc sees this
// import as unused (reported to the macro's maintainers).
#[allow(unused_imports)]
use lumen::method;
use lumen::prelude::*;

#[remote]
fn add(a: i64, b: i64) -> i64 {
    a + b
}

#[remote(num_cpus = 1)]
async fn add_async(a: i64, b: i64) -> i64 {
    a + b
}

// A remote `len` is an actor method, not a collection API: no `is_empty` is wanted.
#[allow(clippy::len_without_is_empty)]
pub struct Queue {
    items: Vec<String>,
}

#[remote(concurrency_groups(io = 1))]
impl Queue {
    pub fn new(items: Vec<String>) -> Self {
        Queue { items }
    }

    #[method(concurrency_group = "io")]
    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn push(&mut self, item: String) -> usize {
        self.items.push(item);
        self.items.len()
    }
}

fn program() -> Result<()> {
    init()?;
    let one = put(1i64);
    let two: ObjectRef<i64> = add::remote(&one, 1);
    let three = add_async::remote(two.clone(), &one);
    assert_eq!(get(&three)?, 3);
    assert_eq!(get_all(&[one, two, three])?, vec![1, 2, 3]);

    let q: ActorHandle<Queue> = Queue::remote(vec!["a".to_string()]);
    assert_eq!(get(&q.push("b".to_string()).remote())?, 2);
    assert_eq!(get(&q.len().remote())?, 2);
    let (ready, _rest) = wait(&[q.len().remote()], 1, None);
    assert_eq!(ready.len(), 1);

    lumen::shutdown();
    assert!(!lumen::is_initialized());
    Ok(())
}

/// The program above, run once in this test's own process (it starts and stops the embedded
/// runtime itself, so it is not repeated on a local cluster).
#[test]
fn prelude_imports() {
    program().expect("the program fails");
}
