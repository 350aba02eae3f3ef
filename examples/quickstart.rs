//! # lumen quickstart
//!
//! A five-minute tour of lumen, Ray's core in native Rust:
//!
//! 1. **Tasks**: a `#[lumen::remote]` function runs in parallel; `f::remote(..)` returns an
//!    [`lumen::ObjectRef`] at once and `lumen::get_all` collects the results.
//! 2. **A task graph**: refs passed as arguments chain tasks into a DAG; each task starts as
//!    soon as the objects it needs exist.
//! 3. **Actors**: a `#[lumen::remote] impl` turns a struct into a stateful service.
//! 4. **Actor handles are values**: worker tasks receive a handle and send messages into one
//!    shared actor, which the driver reads back.
//! 5. **The object store**: `lumen::put` a 64 MiB `lumen::Buffer` once, read it back with
//!    `lumen::get` (a view of the stored bytes, not a copy).
//!
//! `lumen::init()` starts a whole one-node cluster inside this process: nothing to install or
//! start first.
//!
//! Run it with:
//!
//! ```text
//! cargo run --release --example quickstart
//! ```

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// 1. Tasks: an ordinary function, made remote.
// ---------------------------------------------------------------------------------------------

/// Squares a number. `#[lumen::remote]` keeps `square` as a normal function and adds a module
/// `square` with `square::remote(x)` (submit as a task) and `square::options()`.
#[lumen::remote]
fn square(x: i64) -> i64 {
    x * x
}

// ---------------------------------------------------------------------------------------------
// 2. A task graph: refs as arguments.
// ---------------------------------------------------------------------------------------------

/// Produces some data: the numbers `1..=n`.
#[lumen::remote]
fn load(n: u64) -> Vec<u64> {
    (1..=n).collect()
}

/// Derives new data from `load`'s output: each number times ten.
#[lumen::remote]
fn transform(data: Vec<u64>) -> Vec<u64> {
    data.iter().map(|x| x * 10).collect()
}

/// Needs both the raw and the transformed data: the sum of all of them.
#[lumen::remote]
fn combine(raw: Vec<u64>, transformed: Vec<u64>) -> u64 {
    raw.iter().sum::<u64>() + transformed.iter().sum::<u64>()
}

// ---------------------------------------------------------------------------------------------
// 3. An actor: a struct with state, living in the cluster.
// ---------------------------------------------------------------------------------------------

/// A counter. Its methods run one at a time, so there are no data races on `value`.
pub struct Counter {
    value: i64,
}

#[lumen::remote]
impl Counter {
    /// The constructor: `Counter::remote(start)` calls it inside the new actor.
    pub fn new(start: i64) -> Self {
        Counter { value: start }
    }

    /// Adds one and returns the new value.
    pub fn inc(&mut self) -> i64 {
        self.value += 1;
        self.value
    }

    /// The current value.
    pub fn get_value(&self) -> i64 {
        self.value
    }
}

// ---------------------------------------------------------------------------------------------
// 4. A message actor, fed by tasks that hold its handle.
// ---------------------------------------------------------------------------------------------

/// Collects messages sent by any task or actor that holds a handle to it.
#[derive(Default)]
pub struct MessageActor {
    messages: Vec<String>,
}

#[lumen::remote]
impl MessageActor {
    /// An empty mailbox.
    pub fn new() -> Self {
        MessageActor {
            messages: Vec::new(),
        }
    }

    /// Stores one message.
    pub fn add_message(&mut self, message: String) {
        self.messages.push(message);
    }

    /// Returns the messages received since the last call, and forgets them.
    pub fn get_and_clear_messages(&mut self) -> Vec<String> {
        std::mem::take(&mut self.messages)
    }
}

/// Messages each worker sends.
const MESSAGES_PER_WORKER: u32 = 5;

/// A worker task: it received a handle to the mailbox actor as an ordinary argument, and sends
/// it a few messages, doing some "work" between them.
#[lumen::remote]
fn worker(mailbox: lumen::ActorHandle<MessageActor>, id: u32) -> lumen::Result<u32> {
    let mut sent = Vec::new();
    for i in 0..MESSAGES_PER_WORKER {
        std::thread::sleep(Duration::from_millis(40)); // simulate some work
        sent.push(
            mailbox
                .add_message(format!("message {i} from worker {id}"))
                .remote(),
        );
    }
    // Wait until the actor has stored them all before reporting back.
    lumen::get_all(&sent)?;
    Ok(MESSAGES_PER_WORKER)
}

fn main() -> lumen::Result<()> {
    let started = Instant::now();
    lumen::init()?;
    println!(
        "lumen started: a one-node cluster inside this process (node {})\n",
        lumen::runtime_context().node_id()
    );

    // ----- 1. Parallel tasks ------------------------------------------------------------------
    println!("1. Tasks: square(i) for i in 0..8, as parallel remote tasks");
    // Each call returns at once with a ref; the tasks run in the background, in parallel.
    let refs: Vec<lumen::ObjectRef<i64>> = (0..8).map(square::remote).collect();
    // `get_all` blocks until every result is ready and returns them in order.
    let squares = lumen::get_all(&refs)?;
    println!("   square::remote(i) -> {squares:?}");
    assert_eq!(squares, vec![0, 1, 4, 9, 16, 25, 36, 49]);
    // `square` is still a plain local function, too.
    assert_eq!(square(12), 144);
    println!("   square(12) called locally -> {}", square(12));
    let cpus = lumen::cluster_resources()["CPU"];
    println!("   (the node has {cpus} CPUs: that many tasks run at once)\n");

    // ----- 2. A task DAG --------------------------------------------------------------------
    println!("2. A task graph: a = load(100); b = transform(a); c = combine(a, b)");
    let a = load::remote(100u64);
    // A ref as an argument: `transform` runs once `a` exists and sees its value (a Vec).
    let b = transform::remote(&a);
    // `a` is used twice: objects are immutable and shared, never recomputed.
    let c = combine::remote(&a, &b);
    let total = lumen::get(&c)?;
    println!("   sum(1..=100) + sum(10..=1000 step 10) = {total}");
    assert_eq!(total, 5050 + 50500);
    println!("   (the driver only ever fetched the final number; the Vecs stayed in the store)\n");

    // ----- 3. A counter actor ---------------------------------------------------------------
    println!("3. An actor: Counter::remote(0)");
    let counter = Counter::remote(0); // creation is asynchronous; the handle is usable at once
    println!(
        "   initial value: {}",
        lumen::get(&counter.get_value().remote())?
    );
    // Calls from one caller run in the order they were made.
    let incs: Vec<_> = (0..5).map(|_| counter.inc().remote()).collect();
    let after_each = lumen::get_all(&incs)?;
    println!("   inc() five times -> {after_each:?}");
    assert_eq!(after_each, vec![1, 2, 3, 4, 5]);
    let value = lumen::get(&counter.get_value().remote())?;
    println!("   get_value() -> {value}\n");
    assert_eq!(value, 5);

    // ----- 4. Handles passed to tasks -------------------------------------------------------
    println!("4. Actor handles as arguments: 3 worker tasks send messages to one MessageActor");
    let mailbox = MessageActor::remote();
    let workers: Vec<_> = (0..3)
        .map(|id| worker::remote(mailbox.clone(), id))
        .collect();
    // Meanwhile, the driver polls the mailbox, like the Ray example it is modelled on.
    let expected = 3 * MESSAGES_PER_WORKER as usize;
    let mut received = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while received.len() < expected {
        assert!(Instant::now() < deadline, "messages did not all arrive");
        let batch = lumen::get(&mailbox.get_and_clear_messages().remote())?;
        if !batch.is_empty() {
            println!("   new messages: {batch:?}");
        }
        received.extend(batch);
        std::thread::sleep(Duration::from_millis(60));
    }
    let sent: u32 = lumen::get_all(&workers)?.iter().sum();
    assert_eq!(sent as usize, expected);
    assert_eq!(received.len(), expected);
    // Each worker's messages arrive in the order that worker sent them.
    let mut per_worker: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for m in &received {
        let (_, from) = m.split_once(" from ").expect("message format");
        per_worker
            .entry(from.to_string())
            .or_default()
            .push(m.clone());
    }
    for (from, msgs) in &per_worker {
        let want: Vec<String> = (0..MESSAGES_PER_WORKER)
            .map(|i| format!("message {i} from {from}"))
            .collect();
        assert_eq!(msgs, &want, "{from}'s messages out of order");
    }
    println!(
        "   received all {expected} messages; each worker's arrived in the order it sent them\n"
    );

    // ----- 5. The object store --------------------------------------------------------------
    println!("5. The object store: put and get a 64 MiB buffer");
    // Values are stored serialized (MessagePack); vectors of plain numbers as their raw bytes.
    // A `lumen::Buffer` (bytes or plain numbers) is stored as those bytes too, and reading it
    // back shares them: `put` takes the vector over and `get` returns a view, so neither copies
    // the 64 MiB (a `Vec<u8>` would be decoded into fresh memory on every `get`).
    let size = 64 << 20;
    let buffer: lumen::Buffer<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    let t = Instant::now();
    let buffer_ref = lumen::put(buffer);
    let put_time = t.elapsed();
    let t = Instant::now();
    let back: lumen::Buffer<u8> = lumen::get(&buffer_ref)?;
    let get_time = t.elapsed();
    println!(
        "   put {} MiB in {put_time:.2?}, got it back in {get_time:.2?}",
        back.len() >> 20
    );
    assert_eq!(back.len(), size);
    assert!(back.iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));
    drop(buffer_ref); // the last ref: the object is freed from the store

    lumen::shutdown();
    println!(
        "\nall done in {:.2?}: lumen::shutdown() stopped the cluster",
        started.elapsed()
    );
    Ok(())
}
