//! # Actors: stateful remote objects
//!
//! Ray's "Ray Actor" section, in Rust. It shows:
//!
//! - a `#[lumen::remote] impl` turning a struct into an actor, and calling its methods;
//! - many actors working in parallel, while calls on one actor run one at a time;
//! - actor handles passed to tasks, which then call the same actor;
//! - named actors: `.name(..)`, `lumen::get_actor`, `get_if_exists(true)`;
//! - errors in a method (an `Err` or a panic) fail that call only: the actor lives on;
//! - `lumen::kill`, after which calls fail with `Error::ActorDied`;
//! - execution order: calls from one submitter run in submission order; calls from different
//!   submitters have no order between them.
//!
//! Async actors, threaded actors (`max_concurrency`), concurrency groups and actor restarts
//! (`max_restarts`) are part of lumen's API but come later; this example leaves them out.
//!
//! Run it with:
//!
//! ```text
//! cargo run --release --example actors
//! ```

use lumen::ActorHandle;
use std::time::{Duration, Instant};

/// Ray's `Counter` actor, with a few more methods used below.
#[derive(Default)]
pub struct Counter {
    value: i64,
}

#[lumen::remote]
impl Counter {
    /// The constructor, run inside the new actor.
    pub fn new() -> Self {
        Counter { value: 0 }
    }

    /// Adds one; returns the new value.
    pub fn increment(&mut self) -> i64 {
        self.value += 1;
        self.value
    }

    /// Adds `addition`; returns the new value.
    pub fn add(&mut self, addition: i64) -> i64 {
        self.value += addition;
        self.value
    }

    /// The current value.
    pub fn get_counter(&self) -> i64 {
        self.value
    }

    /// Divides the value by `divisor`; an application error when `divisor` is 0.
    pub fn divide_by(&mut self, divisor: i64) -> Result<i64, String> {
        if divisor == 0 {
            return Err(format!("cannot divide {} by zero", self.value));
        }
        self.value /= divisor;
        Ok(self.value)
    }

    /// A method with a bug: it panics.
    pub fn buggy(&self) -> i64 {
        let empty: Vec<i64> = Vec::new();
        empty[self.value as usize]
    }
}

/// A task that holds a handle to a counter and increments it ten times.
#[lumen::remote]
fn f(counter: ActorHandle<Counter>) -> lumen::Result<()> {
    let mut calls = Vec::new();
    for _ in 0..10 {
        std::thread::sleep(Duration::from_millis(20));
        calls.push(counter.increment().remote());
    }
    // Return once the actor has run all ten calls.
    lumen::get_all(&calls)?;
    Ok(())
}

/// A task that finds a named actor by itself (no handle passed in) and increments it.
#[lumen::remote]
fn bump_named(name: String) -> lumen::Result<i64> {
    let counter = lumen::get_actor::<Counter>(&name)?;
    lumen::get(&counter.increment().remote())
}

/// Submits `counter.add(value)` from inside a task (a different submitter than the driver).
#[lumen::remote]
fn submitter(counter: ActorHandle<Counter>, value: i64) -> lumen::Result<i64> {
    lumen::get(&counter.add(value).remote())
}

/// Returns `value` after a delay: simulates an argument that takes long to compute.
#[lumen::remote]
fn delayed_resolution(value: i64) -> i64 {
    std::thread::sleep(Duration::from_millis(500));
    value
}

fn main() -> lumen::Result<()> {
    lumen::init_with(lumen::Config::default().num_cpus(4.0))?;

    // ----- An actor ----------------------------------------------------------------------------
    println!("An actor: c = Counter::remote()");
    // Creates the actor in the cluster and returns its handle at once.
    let c = Counter::remote();
    let v = lumen::get(&c.get_counter().remote())?;
    println!("   get_counter() -> {v}");
    assert_eq!(v, 0);
    // Fire-and-forget calls: the refs to their results are dropped, the calls still run.
    let _ = c.increment().remote();
    let _ = c.increment().remote();
    // Calls from the same caller run in order, so this sees both increments.
    let v = lumen::get(&c.get_counter().remote())?;
    println!("   increment() twice, then get_counter() -> {v}\n");
    assert_eq!(v, 2);

    // ----- Many actors -------------------------------------------------------------------------
    println!("Ten Counter actors");
    let counters: Vec<ActorHandle<Counter>> = (0..10).map(|_| Counter::remote()).collect();
    // Different actors run in parallel.
    let refs: Vec<_> = counters.iter().map(|c| c.increment().remote()).collect();
    let results = lumen::get_all(&refs)?;
    println!("   each incremented once (in parallel): {results:?}");
    assert_eq!(results, vec![1; 10]);
    // Calls on one actor run one at a time and share its state.
    let refs: Vec<_> = (0..5).map(|_| counters[0].increment().remote()).collect();
    let results = lumen::get_all(&refs)?;
    println!("   the first one incremented five more times (serially): {results:?}\n");
    assert_eq!(results, vec![2, 3, 4, 5, 6]);

    // ----- Passing actor handles to tasks ------------------------------------------------------
    println!("Passing a handle to tasks: 3 tasks each increment one counter 10 times");
    let counter = Counter::remote();
    // A handle is an ordinary (serializable) value: clone it into each task.
    let tasks: Vec<_> = (0..3).map(|_| f::remote(counter.clone())).collect();
    let mut seen = Vec::new();
    for _ in 0..10 {
        std::thread::sleep(Duration::from_millis(30));
        seen.push(lumen::get(&counter.get_counter().remote())?);
    }
    println!("   the driver polling get_counter(): {seen:?}");
    lumen::get_all(&tasks)?;
    let total = lumen::get(&counter.get_counter().remote())?;
    println!("   after all tasks finished: {total}\n");
    assert!(seen.windows(2).all(|w| w[0] <= w[1]), "{seen:?}");
    assert_eq!(total, 30);

    // ----- Named actors ------------------------------------------------------------------------
    println!("Named actors");
    let named = Counter::options().name("global_counter").remote();
    // Anyone in the job can find it by name (the name is registered before remote() returns).
    let found: ActorHandle<Counter> = lumen::get_actor("global_counter")?;
    let _ = found.add(10).remote();
    let v = lumen::get(&named.get_counter().remote())?;
    println!("   get_actor(\"global_counter\") reaches the same actor: {v}");
    assert_eq!(v, 10);
    // Also from inside a task, without being passed a handle.
    let v = lumen::get(&bump_named::remote("global_counter".to_string()))?;
    println!("   a task found it by name too and incremented it: {v}");
    assert_eq!(v, 11);
    // An unknown name is an error.
    let e = lumen::get_actor::<Counter>("no_such_actor").unwrap_err();
    println!("   get_actor(\"no_such_actor\"): {e}");
    assert!(matches!(e, lumen::Error::NotFound { .. }));
    // A second actor under a taken name fails its calls, unless it asks for the existing one.
    let duplicate = Counter::options().name("global_counter").remote();
    let e = lumen::get(&duplicate.get_counter().remote()).unwrap_err();
    println!("   creating another \"global_counter\": {e}");
    let same = Counter::options()
        .name("global_counter")
        .get_if_exists(true)
        .remote();
    let v = lumen::get(&same.get_counter().remote())?;
    println!("   with get_if_exists(true) we get the existing one: {v}\n");
    assert_eq!(v, 11);

    // ----- Errors fail one call only ---------------------------------------------------------
    println!("Errors in methods fail that call only");
    let e = lumen::get(&named.divide_by(0).remote()).unwrap_err();
    println!("   divide_by(0) returned Err: {e}");
    assert!(matches!(e, lumen::Error::Task { .. }));
    // (Rust's panic hook prints the panic to stderr as usual; the caller gets an error value.)
    let e = lumen::get(&named.buggy().remote()).unwrap_err();
    println!("   buggy() panicked: {e}");
    assert!(matches!(e, lumen::Error::Task { .. }));
    let v = lumen::get(&named.divide_by(11).remote())?;
    println!("   the actor lives on with its state: divide_by(11) -> {v}\n");
    assert_eq!(v, 1);

    // ----- Killing an actor --------------------------------------------------------------------
    println!("lumen::kill");
    lumen::kill(&named);
    let e = lumen::get(&named.get_counter().remote()).unwrap_err();
    println!("   a call after kill: {e}");
    assert!(matches!(e, lumen::Error::ActorDied { .. }));
    // Its name is free again (the GCS frees it as it processes the kill).
    let deadline = Instant::now() + Duration::from_secs(5);
    while lumen::get_actor::<Counter>("global_counter").is_ok() {
        assert!(Instant::now() < deadline, "the name was not freed");
        std::thread::sleep(Duration::from_millis(10));
    }
    let reborn = Counter::options().name("global_counter").remote();
    let v = lumen::get(&reborn.get_counter().remote())?;
    println!("   the name is free again: a new \"global_counter\" starts at {v}\n");
    assert_eq!(v, 0);

    // ----- Execution order -------------------------------------------------------------------
    println!("Execution order");
    let counter = Counter::remote();
    // From the same submitter, calls run in submission order.
    let value0 = counter.add(1).remote();
    let value1 = counter.add(2).remote();
    let (v0, v1) = (lumen::get(&value0)?, lumen::get(&value1)?);
    println!("   same submitter: add(1) -> {v0}, add(2) -> {v1} (in order)");
    assert_eq!((v0, v1), (1, 3));
    // From different submitters (two tasks), there is no order between their calls: the first
    // task waits for a slow argument, so the second task's call runs first.
    let counter = Counter::remote();
    let value0 = submitter::remote(counter.clone(), delayed_resolution::remote(1));
    let value1 = submitter::remote(counter.clone(), 2);
    let (v0, v1) = (lumen::get(&value0)?, lumen::get(&value1)?);
    println!("   different submitters: add(1) -> {v0}, add(2) -> {v1} (the later one ran first)");
    assert_eq!((v0, v1), (3, 2));

    lumen::shutdown();
    println!("\ndone");
    Ok(())
}
