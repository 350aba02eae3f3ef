//! # Concurrency groups: a concurrency limit per method
//!
//! Ray's "Limiting concurrency per-method with concurrency groups", in Rust. It shows:
//!
//! - `#[lumen::remote(concurrency_groups(io = 2, compute = 4))]` declares groups, and
//!   `#[lumen::method(concurrency_group = "io")]` puts a method in one: Ray's `AsyncIOActor`,
//!   with `f1`, `f2` in "io", `f3`, `f4` in "compute" and `f5` in the default group;
//! - each group bounds its own calls and the groups run side by side: six calls of each kind at
//!   once run 2 (io), 4 (compute) and 6 (default, up to 1000) at a time;
//! - `max_concurrency(n)` sizes the default group only;
//! - setting the group at runtime: `a.f2().options().concurrency_group("compute").remote()`;
//!   an unknown group is refused with `Error::InvalidArgument`, which lists the groups;
//! - groups work for threaded (sync) actors too, each with threads of its own: a health check in
//!   its own group answers at once while the default group is busy with a long call.
//!
//! Run it with:
//!
//! ```text
//! cargo run --release --example concurrency_groups
//! ```

// `new()` without arguments is the actor constructor; a `Default` impl would add nothing.
#![allow(clippy::new_without_default)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

/// Calls in flight right now and the most seen at once, per label. The caller labels each call
/// with the kind of call it is, so the driver can see how each kind was limited.
#[derive(Default)]
struct InFlight(Mutex<BTreeMap<String, (usize, usize)>>);

impl InFlight {
    fn enter(&self, label: &str) {
        let mut m = self.0.lock().unwrap();
        let e = m.entry(label.to_string()).or_default();
        e.0 += 1;
        e.1 = e.1.max(e.0);
    }

    fn leave(&self, label: &str) {
        self.0.lock().unwrap().get_mut(label).unwrap().0 -= 1;
    }

    fn max(&self) -> BTreeMap<String, usize> {
        let m = self.0.lock().unwrap();
        m.iter().map(|(k, (_, max))| (k.clone(), *max)).collect()
    }
}

/// Ray's `AsyncIOActor`.
pub struct AsyncIOActor {
    in_flight: InFlight,
}

impl AsyncIOActor {
    /// The body of every method: 200 ms of waiting (an IO call, say), counted under `label`.
    async fn call(&self, label: String) {
        self.in_flight.enter(&label);
        tokio::time::sleep(Duration::from_millis(200)).await;
        self.in_flight.leave(&label);
    }
}

#[lumen::remote(concurrency_groups(io = 2, compute = 4))]
impl AsyncIOActor {
    pub fn new() -> Self {
        AsyncIOActor {
            in_flight: InFlight::default(),
        }
    }

    #[lumen::method(concurrency_group = "io")]
    pub async fn f1(&self, label: String) {
        self.call(label).await
    }

    #[lumen::method(concurrency_group = "io")]
    pub async fn f2(&self, label: String) {
        self.call(label).await
    }

    #[lumen::method(concurrency_group = "compute")]
    pub async fn f3(&self, label: String) {
        self.call(label).await
    }

    #[lumen::method(concurrency_group = "compute")]
    pub async fn f4(&self, label: String) {
        self.call(label).await
    }

    /// In the default group.
    pub async fn f5(&self, label: String) {
        self.call(label).await
    }

    /// The most calls seen in flight at once, per label.
    pub async fn max_in_flight(&self) -> BTreeMap<String, usize> {
        self.in_flight.max()
    }
}

/// A threaded (sync) actor: a long job in the default group, a health check in its own group.
pub struct Server {
    pinged: AtomicBool,
}

#[lumen::remote(concurrency_groups(health = 1))]
impl Server {
    pub fn new() -> Self {
        Server {
            pinged: AtomicBool::new(false),
        }
    }

    /// A long blocking job (the default group of a sync actor runs one call at a time). It works
    /// until it has been pinged (5 s at most) and says whether a ping came while it ran.
    pub fn serve(&self) -> bool {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if self.pinged.load(Ordering::SeqCst) {
                return true;
            }
            thread::sleep(Duration::from_millis(10));
        }
        false
    }

    /// Answers on the health group's own thread, whatever the default group is doing.
    #[lumen::method(concurrency_group = "health")]
    pub fn ping(&self) -> String {
        self.pinged.store(true, Ordering::SeqCst);
        "ok".to_string()
    }
}

fn main() -> lumen::Result<()> {
    lumen::init_with(lumen::Config::default().num_cpus(4.0))?;

    // 1. Each group bounds its own calls; the groups run side by side.
    println!("1. six calls of each kind at once on AsyncIOActor (io = 2, compute = 4):");
    let a = AsyncIOActor::remote();
    let mut refs = Vec::new();
    for i in 0..6 {
        refs.push(if i % 2 == 0 {
            a.f1("io group: f1, f2".to_string()).remote() // executed in the "io" group
        } else {
            a.f2("io group: f1, f2".to_string()).remote() // executed in the "io" group
        });
        refs.push(if i % 2 == 0 {
            a.f3("compute group: f3, f4".to_string()).remote() // executed in the "compute" group
        } else {
            a.f4("compute group: f3, f4".to_string()).remote() // executed in the "compute" group
        });
        refs.push(a.f5("default group: f5".to_string()).remote()); // executed in the default group
    }
    let start = Instant::now();
    lumen::get_all(&refs)?;
    let max = lumen::get(&a.max_in_flight().remote())?;
    for (label, n) in &max {
        println!("   {label:<22} at most {n} at once");
    }
    assert_eq!(max["io group: f1, f2"], 2);
    assert_eq!(max["compute group: f3, f4"], 4);
    assert_eq!(max["default group: f5"], 6);
    println!(
        "   => all 18 calls took {:.2} s: io needed 3 rounds of 0.2 s, the others ran meanwhile\n",
        start.elapsed().as_secs_f64()
    );

    // 2. max_concurrency sizes the default group only.
    println!("2. AsyncIOActor.options(max_concurrency=3): six f5 and six f1 calls");
    let b = AsyncIOActor::options().max_concurrency(3).remote();
    let mut refs: Vec<_> = (0..6)
        .map(|_| b.f5("f5 (default)".to_string()).remote())
        .collect();
    refs.extend((0..6).map(|_| b.f1("f1 (io)".to_string()).remote()));
    lumen::get_all(&refs)?;
    let max = lumen::get(&b.max_in_flight().remote())?;
    println!(
        "   => f5 (default group): at most {} at once; f1 (io): at most {}\n",
        max["f5 (default)"], max["f1 (io)"]
    );
    assert_eq!((max["f5 (default)"], max["f1 (io)"]), (3, 2));

    // 3. Setting the group at runtime.
    println!("3. setting the group of a call at runtime:");
    let c = AsyncIOActor::remote();
    let mut refs: Vec<_> = (0..6)
        .map(|_| c.f2("f2 as declared (io)".to_string()).options().remote())
        .collect();
    refs.extend((0..6).map(|_| {
        c.f2("f2 in compute".to_string())
            .options()
            .concurrency_group("compute")
            .remote()
    }));
    lumen::get_all(&refs)?;
    let max = lumen::get(&c.max_in_flight().remote())?;
    println!(
        "   f2.options().remote():                             at most {} at once",
        max["f2 as declared (io)"]
    );
    println!(
        "   f2.options().concurrency_group(\"compute\").remote(): at most {} at once",
        max["f2 in compute"]
    );
    assert_eq!(max["f2 as declared (io)"], 2);
    assert_eq!(max["f2 in compute"], 4);
    let err = lumen::get(
        &c.f2("x".to_string())
            .options()
            .concurrency_group("gpu")
            .remote(),
    )
    .expect_err("there is no group \"gpu\"");
    assert!(matches!(err, lumen::Error::InvalidArgument { .. }));
    assert!(err.to_string().contains("compute, io"), "{err}");
    println!("   an unknown group: {err}\n");

    // 4. A sync actor: the health group has its own thread.
    println!("4. Server (a sync actor, health = 1): ping while serve() runs");
    let s = Server::remote();
    let serving = s.serve().remote(); // busy until pinged
    let start = Instant::now();
    let pong = lumen::get(&s.ping().remote())?;
    let latency = start.elapsed();
    let pinged_while_serving = lumen::get(&serving)?;
    println!(
        "   => ping answered {pong:?} after {:.0} ms; serve saw the ping while running: {pinged_while_serving}",
        latency.as_secs_f64() * 1000.0
    );
    assert_eq!(pong, "ok");
    assert!(
        pinged_while_serving,
        "the health group should answer while the default group is busy"
    );

    lumen::shutdown();
    Ok(())
}
