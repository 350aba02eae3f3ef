//! # Threaded actors: a pool of threads inside one actor
//!
//! Ray's "Threaded actors", in Rust. It shows:
//!
//! - an actor without `async fn` methods, created with `max_concurrency(n)`, runs up to `n`
//!   calls at once, each on a thread of its own (Ray's `ThreadedActor` with `task_1`/`task_2`:
//!   here the two calls even wait for each other, which only works because they run at once);
//! - `max_concurrency(4)`: eight blocking calls of 300 ms run four at a time, on four threads,
//!   in about 0.6 s instead of 2.4 s;
//! - a `&mut self` method still runs alone, whatever `max_concurrency` says;
//! - without `max_concurrency` the same actor is serial: one call at a time, and the calls of
//!   one submitter run in submission order.
//!
//! Use a threaded actor for methods that block (CPU work, blocking IO) and an async actor
//! (`examples/async_actor.rs`) for methods that mostly wait.
//!
//! Run it with:
//!
//! ```text
//! cargo run --release --example threaded_actor
//! ```

// `new()` without arguments is the actor constructor; a `Default` impl would add nothing.
#![allow(clippy::new_without_default)]

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

/// The calling thread, as text.
fn thread_tag() -> String {
    format!("{:?}", thread::current().id())
}

pub struct ThreadedActor {
    /// Calls running now, and the most seen at once (`&self` calls share them: atomics).
    running: AtomicUsize,
    max_running: AtomicUsize,
    /// Which tasks have arrived (for task_1 and task_2 to meet).
    arrived: Mutex<BTreeSet<String>>,
    /// The order in which `work` calls ran.
    order: Mutex<Vec<u32>>,
    /// Updated by `&mut self` calls only.
    updates: u64,
}

impl ThreadedActor {
    fn enter(&self) {
        let now = self.running.fetch_add(1, SeqCst) + 1;
        self.max_running.fetch_max(now, SeqCst);
    }

    fn leave(&self) {
        self.running.fetch_sub(1, SeqCst);
    }

    /// Registers `me`, then waits (up to 10 s) for `other`; returns whether it came.
    fn meet(&self, me: &str, other: &str) -> bool {
        self.arrived.lock().unwrap().insert(me.to_string());
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if self.arrived.lock().unwrap().contains(other) {
                return true;
            }
            thread::sleep(Duration::from_millis(1));
        }
        false
    }
}

#[lumen::remote]
impl ThreadedActor {
    pub fn new() -> Self {
        ThreadedActor {
            running: AtomicUsize::new(0),
            max_running: AtomicUsize::new(0),
            arrived: Mutex::new(BTreeSet::new()),
            order: Mutex::new(Vec::new()),
            updates: 0,
        }
    }

    /// Waits for task_2 to arrive: only possible if both run at once.
    pub fn task_1(&self) -> (bool, String) {
        println!(
            "  (ThreadedActor) I'm running in a thread! ({})",
            thread_tag()
        );
        (self.meet("task_1", "task_2"), thread_tag())
    }

    /// Waits for task_1 to arrive.
    pub fn task_2(&self) -> (bool, String) {
        println!(
            "  (ThreadedActor) I'm running in another thread! ({})",
            thread_tag()
        );
        (self.meet("task_2", "task_1"), thread_tag())
    }

    /// Blocks its thread for `ms` milliseconds (a stand-in for CPU work or blocking IO).
    pub fn work(&self, id: u32, ms: u64) -> String {
        self.enter();
        self.order.lock().unwrap().push(id);
        thread::sleep(Duration::from_millis(ms));
        self.leave();
        thread_tag()
    }

    /// The most calls seen running at once.
    pub fn max_running(&self) -> usize {
        self.max_running.load(SeqCst)
    }

    /// The order in which `work` calls ran.
    pub fn order(&self) -> Vec<u32> {
        self.order.lock().unwrap().clone()
    }

    /// Runs alone: returns how many other calls were running meanwhile.
    pub fn update(&mut self) -> (u64, usize) {
        self.updates += 1;
        (self.updates, self.running.load(SeqCst))
    }
}

fn main() -> lumen::Result<()> {
    lumen::init_with(lumen::Config::default().num_cpus(4.0))?;

    // 1. Ray's example: two calls at the same time, on two threads.
    println!("1. ThreadedActor.options(max_concurrency=2): task_1 and task_2");
    let a = ThreadedActor::options().max_concurrency(2).remote();
    let r1 = a.task_1().remote();
    let r2 = a.task_2().remote();
    let ((met1, thread1), (met2, thread2)) = (lumen::get(&r1)?, lumen::get(&r2)?);
    assert!(
        met1 && met2,
        "task_1 and task_2 should have run at the same time"
    );
    assert_ne!(thread1, thread2);
    println!("   => they ran at the same time, on threads {thread1} and {thread2}\n");

    // 2. A pool of four threads: eight blocking calls, four at a time.
    println!("2. max_concurrency(4): eight blocking calls of 300 ms");
    let pool = ThreadedActor::options().max_concurrency(4).remote();
    let start = Instant::now();
    let refs: Vec<_> = (0..8).map(|i| pool.work(i, 300).remote()).collect();
    let threads: BTreeSet<String> = lumen::get_all(&refs)?.into_iter().collect();
    let took = start.elapsed();
    let max = lumen::get(&pool.max_running().remote())?;
    assert_eq!(max, 4, "four at once, never more");
    assert_eq!(threads.len(), 4, "four threads: {threads:?}");
    println!(
        "   => at most {max} calls at once, on {} threads {threads:?}; {:.2} s (serially: 2.4 s)\n",
        threads.len(),
        took.as_secs_f64()
    );

    // 3. &mut self runs alone, even in a threaded actor.
    println!("3. a &mut self call among running &self calls:");
    let mut refs: Vec<_> = (10..14).map(|i| pool.work(i, 200).remote()).collect();
    let update = pool.update().remote();
    refs.extend((14..18).map(|i| pool.work(i, 200).remote()));
    lumen::get_all(&refs)?;
    let (updates, running) = lumen::get(&update)?;
    assert_eq!((updates, running), (1, 0));
    println!("   => update #{updates} ran while {running} other calls were running\n");

    // 4. Without max_concurrency: serial, in submission order.
    println!("4. the same actor without max_concurrency: four blocking calls of 200 ms");
    let serial = ThreadedActor::remote();
    let start = Instant::now();
    let refs: Vec<_> = (0..4).map(|i| serial.work(i, 200).remote()).collect();
    let threads: BTreeSet<String> = lumen::get_all(&refs)?.into_iter().collect();
    let took = start.elapsed();
    let max = lumen::get(&serial.max_running().remote())?;
    let order = lumen::get(&serial.order().remote())?;
    assert_eq!(max, 1);
    assert_eq!(threads.len(), 1);
    assert_eq!(order, vec![0, 1, 2, 3]);
    println!(
        "   => one at a time on one thread, in order {order:?}; {:.2} s",
        took.as_secs_f64()
    );

    lumen::shutdown();
    Ok(())
}
