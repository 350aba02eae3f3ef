//! # Objects: the object store
//!
//! Ray's "Ray Objects" section, in Rust. It shows:
//!
//! - `lumen::put` and `lumen::get` / `lumen::get_all`;
//! - `lumen::get_timeout`, which gives up with `Error::GetTimeout`;
//! - passing a value directly versus `put`ting it once and passing the ref;
//! - top-level refs (resolved to values before the task runs) versus refs nested inside an
//!   argument (passed as refs), for tasks, actor constructors and actor methods;
//! - an object containing refs, which keeps the objects it refers to alive;
//! - objects freed when their last ref is dropped, observed with `lumen::memory_summary()`.
//!
//! Run it with:
//!
//! ```text
//! cargo run --release --example objects
//! ```

use lumen::ObjectRef;
use std::time::{Duration, Instant};

/// Sleeps, then returns 42: something slow to wait for.
#[lumen::remote]
fn long_running_function(ms: u64) -> i64 {
    std::thread::sleep(Duration::from_millis(ms));
    42
}

/// Sums all elements of a matrix.
#[lumen::remote]
fn sum_matrix(matrix: Vec<Vec<f64>>) -> f64 {
    matrix.iter().flatten().sum()
}

/// Top-level parameters: refs passed here are resolved, so the task sees plain numbers.
#[lumen::remote]
fn echo(a: i64, b: i64, c: i64) -> String {
    let line = format!("{a} {b} {c}");
    println!("   (inside echo) {line}");
    line
}

/// A parameter holding refs: they arrive as refs, and the task fetches what it needs.
#[lumen::remote]
fn echo_and_get(x_list: Vec<ObjectRef<i64>>) -> lumen::Result<Vec<i64>> {
    println!("   (inside echo_and_get) args: {x_list:?}");
    let values = lumen::get_all(&x_list)?;
    println!("   (inside echo_and_get) values: {values:?}");
    Ok(values)
}

/// An actor: top-level and nested refs work the same way for constructors and methods.
pub struct Holder {
    value: i64,
}

#[lumen::remote]
impl Holder {
    /// By value: a ref passed here is resolved before the constructor runs.
    pub fn new(value: i64) -> Self {
        Holder { value }
    }

    /// By value: the method sees the number.
    pub fn add(&self, arg: i64) -> i64 {
        self.value + arg
    }

    /// By reference: the method receives the refs and fetches them itself.
    pub fn add_all(&self, args: Vec<ObjectRef<i64>>) -> lumen::Result<i64> {
        Ok(self.value + lumen::get_all(&args)?.iter().sum::<i64>())
    }
}

/// Waits (briefly) until the local store holds `objects` objects: freeing is asynchronous.
fn wait_for_stored_objects(objects: usize) -> lumen::Result<lumen::MemorySummary> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let summary = lumen::memory_summary()?;
        if summary.stored_objects == objects || Instant::now() > deadline {
            return Ok(summary);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The memory summary once the stored-object count has stopped moving (unchanged over five
/// reads 10 ms apart, or after 5 s): what earlier calls pinned is let go in the background, just
/// after their results become readable, so a count taken at once may still drop.
fn settled_summary() -> lumen::Result<lumen::MemorySummary> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut last = lumen::memory_summary()?;
    let mut unchanged = 0;
    while unchanged < 5 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
        let now = lumen::memory_summary()?;
        unchanged = if now.stored_objects == last.stored_objects {
            unchanged + 1
        } else {
            0
        };
        last = now;
    }
    Ok(last)
}

fn main() -> lumen::Result<()> {
    lumen::init_with(lumen::Config::default().num_cpus(4.0))?;

    // ----- put and get -----------------------------------------------------------------------
    println!("put and get");
    // Put an object in the object store; objects are immutable once stored.
    let y = 1i64;
    let object_ref = lumen::put(y);
    println!("   put(1) -> {object_ref:?}");
    assert_eq!(lumen::get(&object_ref)?, 1);
    // Get the values of several refs at once.
    let refs: Vec<ObjectRef<i64>> = (0..3).map(lumen::put).collect();
    let values = lumen::get_all(&refs)?;
    println!("   get_all([put(0), put(1), put(2)]) -> {values:?}\n");
    assert_eq!(values, vec![0, 1, 2]);

    // ----- Timeouts --------------------------------------------------------------------------
    println!("get_timeout");
    let obj_ref = long_running_function::remote(1000);
    match lumen::get_timeout(&obj_ref, Duration::from_millis(200)) {
        Err(e @ lumen::Error::GetTimeout { .. }) => println!("   `get` timed out: {e}"),
        other => panic!("expected a timeout, got {other:?}"),
    }
    // The task itself goes on; a later `get` returns its value.
    let v = lumen::get(&obj_ref)?;
    println!("   a later get() returns its value: {v}\n");
    assert_eq!(v, 42);

    // ----- Passing objects to tasks -----------------------------------------------------------
    println!("Passing objects to tasks");
    // A small matrix can be passed directly: it is copied into the task's arguments.
    let small_matrix = vec![vec![1.0; 100]; 100];
    let result_small = lumen::get(&sum_matrix::remote(small_matrix))?;
    println!("   sum of small matrix (passed by value): {result_small}");
    assert_eq!(result_small, 10_000.0);
    // A large one is better stored once: every task that gets the ref reads the same copy.
    let large_matrix = vec![vec![1.0; 1000]; 1000];
    let matrix_ref = lumen::put(large_matrix);
    let sums: Vec<_> = (0..3).map(|_| sum_matrix::remote(&matrix_ref)).collect();
    let result_large = lumen::get_all(&sums)?;
    println!("   sum of large matrix (put once, passed by ref to 3 tasks): {result_large:?}\n");
    assert_eq!(result_large, vec![1_000_000.0; 3]);
    drop(matrix_ref);

    // ----- Top-level versus nested refs -----------------------------------------------------
    println!("Top-level refs are resolved; nested refs are passed as refs");
    let line = lumen::get(&echo::remote(1, 2, 3))?;
    assert_eq!(line, "1 2 3");
    let (a, b, c) = (lumen::put(1i64), lumen::put(2i64), lumen::put(3i64));
    // The same task, given refs as top-level arguments: it still sees 1 2 3.
    let line = lumen::get(&echo::remote(&a, &b, &c))?;
    assert_eq!(line, "1 2 3");
    // Refs inside a Vec are not resolved: the task gets the refs themselves.
    let values = lumen::get(&echo_and_get::remote(vec![a.clone(), b.clone(), c.clone()]))?;
    assert_eq!(values, vec![1, 2, 3]);
    // Actor constructors and methods follow the same convention.
    let two = lumen::put(2i64);
    let holder = Holder::remote(&two); // by value: new(2)
    let by_value = lumen::get(&holder.add(&two).remote())?; // 2 + 2
    let by_ref = lumen::get(
        &holder
            .add_all(vec![a.clone(), b.clone(), c.clone()])
            .remote(),
    )?;
    println!("   actor: new(&two).add(&two) = {by_value}, add_all(vec![a, b, c]) = {by_ref}\n");
    assert_eq!((by_value, by_ref), (4, 8));
    // (Python can also capture refs in a closure; a Rust remote function is a plain `fn` and
    // cannot capture, so pass refs as arguments, or keep them in a named actor.)

    // ----- Objects that contain refs -----------------------------------------------------
    println!("An object containing refs");
    let baseline = settled_summary()?;
    let inner: Vec<ObjectRef<i64>> = (1..=3).map(|i| lumen::put(i * 10)).collect();
    // Storing the refs inside another object keeps their objects alive as long as it lives,
    // even after every other handle to them is gone.
    let outer: ObjectRef<Vec<ObjectRef<i64>>> = lumen::put(inner);
    let summary = wait_for_stored_objects(baseline.stored_objects + 4)?;
    println!(
        "   stored objects: {} before, {} with the outer object and its 3 inner ones",
        baseline.stored_objects, summary.stored_objects
    );
    assert_eq!(summary.stored_objects, baseline.stored_objects + 4);
    let refs = lumen::get(&outer)?;
    let values = lumen::get_all(&refs)?;
    println!(
        "   get(outer) -> {} refs; get_all(refs) -> {values:?}",
        refs.len()
    );
    assert_eq!(values, vec![10, 20, 30]);
    drop(refs);
    // Dropping the outer ref frees it, and with it the inner objects.
    drop(outer);
    let summary = wait_for_stored_objects(baseline.stored_objects)?;
    println!(
        "   after dropping the outer ref: {} stored objects\n",
        summary.stored_objects
    );
    assert_eq!(summary.stored_objects, baseline.stored_objects);

    // ----- Freeing ---------------------------------------------------------------------------
    println!("Objects are freed when their last ref is dropped");
    let baseline = settled_summary()?;
    let buffers: Vec<ObjectRef<Vec<u8>>> = (0..8).map(|_| lumen::put(vec![7u8; 1 << 20])).collect();
    let full = wait_for_stored_objects(baseline.stored_objects + 8)?;
    println!(
        "   8 x 1 MiB put: {} -> {} stored objects, {} -> {} KiB",
        baseline.stored_objects,
        full.stored_objects,
        baseline.stored_bytes >> 10,
        full.stored_bytes >> 10
    );
    assert_eq!(full.stored_objects, baseline.stored_objects + 8);
    assert!(full.stored_bytes >= baseline.stored_bytes + 8 * (1 << 20));
    // A clone is another ref to the same object: dropping the original keeps it alive.
    let kept = buffers[0].clone();
    drop(buffers);
    let after = wait_for_stored_objects(baseline.stored_objects + 1)?;
    println!(
        "   dropped all refs but one clone: {} stored objects, {} KiB",
        after.stored_objects,
        after.stored_bytes >> 10
    );
    assert_eq!(after.stored_objects, baseline.stored_objects + 1);
    assert_eq!(lumen::get(&kept)?.len(), 1 << 20);
    drop(kept);
    let after = wait_for_stored_objects(baseline.stored_objects)?;
    println!(
        "   dropped the clone too: {} stored objects, {} KiB",
        after.stored_objects,
        after.stored_bytes >> 10
    );
    assert_eq!(after.stored_objects, baseline.stored_objects);

    lumen::shutdown();
    println!("\ndone");
    Ok(())
}
