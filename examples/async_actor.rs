//! # Async actors: calls that overlap on an event loop
//!
//! Ray's "AsyncIO for actors", in Rust. It shows:
//!
//! - an actor with any `async fn` method is an async actor: its calls run on lumen's tokio event
//!   loop and overlap while they `.await` (four calls of a 500 ms sleep print "started" four
//!   times, then "finished" four times, in about 0.5 s);
//! - `max_concurrency(2)` bounds how many calls are in flight at once (the default is 1000):
//!   eight calls then run two at a time;
//! - `ObjectRef`s are futures: an async method `.await`s the tasks it submits, and the driver can
//!   `.await` actor calls on any executor;
//! - a blocking `lumen::get` inside an async method is refused with an error that says to
//!   `.await` instead (it would stall the event loop);
//! - a `&mut self` method of an async actor still runs alone.
//!
//! Inside async methods, tokio's timers, IO and `spawn` work as in any tokio program.
//!
//! Run it with:
//!
//! ```text
//! cargo run --release --example async_actor
//! ```

// `new()` without arguments is the actor constructor; a `Default` impl would add nothing.
#![allow(clippy::new_without_default)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What the actor's calls did, in order: printed as it happens and kept for the checks in `main`.
static EVENTS: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn event(what: String) {
    println!("  (AsyncActor) {what}");
    EVENTS.lock().unwrap().push(what);
}

/// Takes the events recorded so far.
fn take_events() -> Vec<String> {
    std::mem::take(&mut *EVENTS.lock().unwrap())
}

/// The most calls in flight at once, from a list of "started"/"finished" events.
fn max_in_flight(events: &[String]) -> usize {
    let (mut now, mut max) = (0usize, 0usize);
    for e in events {
        if e.starts_with("started") {
            now += 1;
            max = max.max(now);
        } else if e.starts_with("finished") {
            now -= 1;
        }
    }
    max
}

/// A plain task, awaited from inside the actor.
#[lumen::remote]
fn square(x: u64) -> u64 {
    x * x
}

pub struct AsyncActor {
    /// Calls inside `run_concurrent` right now (state shared by `&self` calls needs interior
    /// mutability, as with any `Sync` type).
    running: AtomicUsize,
    /// Updated by `&mut self` calls only.
    updates: u64,
}

#[lumen::remote]
impl AsyncActor {
    pub fn new() -> Self {
        AsyncActor {
            running: AtomicUsize::new(0),
            updates: 0,
        }
    }

    /// Many calls of this method can be on the event loop at the same time: each one gives the
    /// loop back while it sleeps.
    pub async fn run_concurrent(&self, id: u32, ms: u64) -> u32 {
        self.running.fetch_add(1, Ordering::SeqCst);
        event(format!("started {id}"));
        tokio::time::sleep(Duration::from_millis(ms)).await; // the concurrent workload here
        event(format!("finished {id}"));
        self.running.fetch_sub(1, Ordering::SeqCst);
        id
    }

    /// Submits tasks and `.await`s their results: the loop keeps serving other calls meanwhile.
    pub async fn sum_of_squares(&self, n: u64) -> lumen::Result<u64> {
        let refs: Vec<_> = (1..=n).map(square::remote).collect();
        let mut total = 0;
        for r in refs {
            total += r.await?;
        }
        Ok(total)
    }

    /// Tries a blocking `lumen::get` on the event loop; returns what happened.
    pub async fn try_blocking_get(&self) -> String {
        match lumen::get(&lumen::put(1u8)) {
            Err(e) => e.to_string(),
            Ok(_) => "lumen::get was allowed".to_string(),
        }
    }

    /// A `&mut self` method runs alone: returns how many `run_concurrent` calls were running.
    pub async fn update(&mut self) -> (u64, usize) {
        self.updates += 1;
        (self.updates, self.running.load(Ordering::SeqCst))
    }
}

fn main() -> lumen::Result<()> {
    lumen::init_with(lumen::Config::default().num_cpus(4.0))?;

    // 1. Four calls overlap: all start before any finishes.
    println!("1. four calls of a 500 ms sleep on one async actor:");
    let actor = AsyncActor::remote();
    let start = Instant::now();
    let refs: Vec<_> = (0..4)
        .map(|i| actor.run_concurrent(i, 500).remote())
        .collect();
    assert_eq!(lumen::get_all(&refs)?, vec![0, 1, 2, 3]);
    let took = start.elapsed();
    let events = take_events();
    let started = events.iter().filter(|e| e.starts_with("started")).count();
    assert_eq!(events.len(), 8);
    assert!(
        events[..4].iter().all(|e| e.starts_with("started")),
        "all four should start before any finishes: {events:?}"
    );
    println!(
        "   => started x{started}, then finished x{}, in {:.2} s (one after another: 2.0 s)\n",
        events.len() - started,
        took.as_secs_f64()
    );

    // 2. max_concurrency(2): at most two in flight.
    println!("2. eight calls of a 300 ms sleep with max_concurrency(2):");
    let limited = AsyncActor::options().max_concurrency(2).remote();
    let start = Instant::now();
    let refs: Vec<_> = (0..8)
        .map(|i| limited.run_concurrent(i, 300).remote())
        .collect();
    lumen::get_all(&refs)?;
    let events = take_events();
    let max = max_in_flight(&events);
    assert_eq!(max, 2, "max_concurrency(2) runs two at a time: {events:?}");
    println!(
        "   => at most {max} calls in flight at once; 8 calls took {:.2} s (4 rounds of 0.3 s)\n",
        start.elapsed().as_secs_f64()
    );

    // 3. Refs are futures: await them inside the actor, or from the driver.
    println!("3. ObjectRefs as futures:");
    let sum = lumen::get(&actor.sum_of_squares(10).remote())?;
    assert_eq!(sum, 385);
    println!("   inside the actor: awaited 10 square tasks, sum = {sum}");
    let refs: Vec<_> = (10..13)
        .map(|i| actor.run_concurrent(i, 100).remote())
        .collect();
    // `ObjectRef` is `IntoFuture`: any executor works; here the `futures` crate's `block_on`.
    let ids: Vec<u32> = futures::executor::block_on(async {
        let mut ids = Vec::new();
        for r in refs {
            ids.push(r.await?);
        }
        Ok::<_, lumen::Error>(ids)
    })?;
    assert_eq!(ids, vec![10, 11, 12]);
    take_events();
    println!("   on the driver: awaited three calls: {ids:?}\n");

    // 4. A blocking get on the event loop is refused.
    println!("4. a blocking lumen::get inside an async method:");
    let refused = lumen::get(&actor.try_blocking_get().remote())?;
    assert!(refused.contains("await"), "{refused}");
    println!("   => refused: {refused}\n");

    // 5. &mut self runs alone, even while &self calls are in flight.
    println!("5. a &mut self call among overlapping &self calls:");
    let mut refs: Vec<_> = (20..24)
        .map(|i| actor.run_concurrent(i, 200).remote())
        .collect();
    let update = actor.update().remote();
    refs.extend((24..28).map(|i| actor.run_concurrent(i, 200).remote()));
    lumen::get_all(&refs)?;
    let (updates, running) = lumen::get(&update)?;
    take_events();
    assert_eq!((updates, running), (1, 0));
    println!("   => update #{updates} ran while {running} run_concurrent calls were running");

    lumen::shutdown();
    Ok(())
}
