// An ordinary program using lumen only through `::lumen` paths, as a user crate would.
// Built as its own crate (an integration test) and run: every assertion must hold.
// Modes: embedded only. The program checks the macros' shapes and the public API from a user
// crate; it asserts a one-node cluster and starts and stops the runtime itself.

use lumen::{ActorHandle, Config, ObjectRef, SchedulingStrategy};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Point {
    pub x: i64,
    pub y: i64,
}

/// A plain synchronous task.
#[lumen::remote]
fn square(x: i64) -> i64 {
    x * x
}

/// A task taking and returning a user type with serde derives.
#[lumen::remote]
pub fn shift(p: Point, by: i64) -> Point {
    Point {
        x: p.x + by,
        y: p.y + by,
    }
}

/// An async task: runs on a tokio runtime, so tokio's timers work in it.
#[lumen::remote]
async fn slow_double(n: u64, millis: u64) -> u64 {
    tokio::time::sleep(Duration::from_millis(millis)).await;
    n * 2
}

/// An async task awaiting a ref it was given inside its argument.
#[lumen::remote]
async fn await_inner(refs: Vec<ObjectRef<i64>>) -> i64 {
    let mut total = 0;
    for r in refs {
        total += r.await.expect("inner ref");
    }
    total
}

/// A `Result` return: `Err` becomes `lumen::Error::Task` at `get`.
#[lumen::remote]
fn parse(s: String) -> Result<i64, std::num::ParseIntError> {
    s.trim().parse::<i64>()
}

/// Attribute options set the defaults of every submission.
#[lumen::remote(num_cpus = 0.5, num_gpus = 0, resources(node0 = 1), max_retries = 1)]
fn with_options() -> Vec<u8> {
    vec![1, 2, 3]
}

/// A task that panics: the panic message comes back as a task error.
#[lumen::remote(max_retries = 0)]
fn boom(msg: String) -> u8 {
    panic!("expected panic: {msg}")
}

/// Nested refs inside an argument are passed as refs, not resolved.
#[lumen::remote]
fn sum_refs(refs: Vec<ObjectRef<i64>>) -> i64 {
    lumen::get_all(&refs)
        .expect("nested refs")
        .into_iter()
        .sum()
}

/// Where a task runs, and whether it sees a task id.
#[lumen::remote]
fn where_am_i() -> (String, bool) {
    assert!(lumen::try_runtime_context().is_ok());
    let ctx = lumen::runtime_context();
    (ctx.node_id().to_string(), ctx.task_id().is_some())
}

/// A task that takes an actor handle and calls the actor.
#[lumen::remote]
fn bump(counter: ActorHandle<Counter>, by: i64) -> i64 {
    lumen::get(&counter.add(by).remote()).expect("counter call from a task")
}

/// A task with several parameters of different types.
#[lumen::remote]
fn describe(name: String, tags: Vec<String>, weight: f64, flag: Option<bool>) -> String {
    format!("{name}:{}:{weight}:{flag:?}", tags.join(","))
}

pub struct Counter {
    value: i64,
}

#[lumen::remote]
impl Counter {
    /// The constructor: its parameters are the creation arguments.
    pub fn new(start: i64) -> Self {
        Counter { value: start }
    }

    pub fn add(&mut self, by: i64) -> i64 {
        self.value += by;
        self.value
    }

    pub fn get_value(&self) -> i64 {
        self.value
    }

    pub fn checked_div(&self, by: i64) -> Result<i64, String> {
        if by == 0 {
            Err("division by zero".to_string())
        } else {
            Ok(self.value / by)
        }
    }

    pub fn in_actor(&self) -> bool {
        lumen::runtime_context().actor_id().is_some()
    }

    /// Not remote: no receiver. Still callable locally.
    pub fn describe(value: i64) -> String {
        format!("Counter({value})")
    }
}

pub struct AsyncEcho {
    prefix: String,
}

#[lumen::remote(concurrency_groups(io = 2), max_concurrency = 4)]
impl AsyncEcho {
    pub fn new(prefix: String) -> Self {
        AsyncEcho { prefix }
    }

    #[lumen::method(concurrency_group = "io")]
    pub async fn echo(&self, s: String) -> String {
        tokio::time::sleep(Duration::from_millis(5)).await;
        format!("{}{s}", self.prefix)
    }

    pub async fn set_prefix(&mut self, prefix: String) {
        self.prefix = prefix;
    }
}

#[lumen::main]
fn program() -> lumen::Result<()> {
    let started = Instant::now();
    // Keep the expected panic of `boom` out of the test output.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let expected = info
            .payload()
            .downcast_ref::<String>()
            .is_some_and(|m| m.starts_with("expected panic"));
        if !expected {
            default_hook(info);
        }
    }));
    lumen::init_with(
        Config::default()
            .num_cpus(4.0)
            .num_gpus(0.0)
            .resource("node0", 2.0),
    )?;
    assert!(lumen::is_initialized());

    // Cluster state.
    let total = lumen::cluster_resources();
    assert_eq!(total["CPU"], 4.0);
    assert_eq!(total["node0"], 2.0);
    assert_eq!(total.get("GPU").copied().unwrap_or(0.0), 0.0);
    let available = lumen::available_resources();
    assert!(available["CPU"] <= 4.0);
    let nodes = lumen::nodes();
    assert_eq!(nodes.len(), 1);
    assert!(nodes[0].alive);
    assert_eq!(nodes[0].resources["CPU"], 4.0);
    assert!(lumen::try_runtime_context().is_ok());
    let ctx = lumen::runtime_context();
    let node_id = ctx.node_id();
    assert_eq!(node_id, nodes[0].node_id);
    assert!(ctx.task_id().is_none(), "the driver runs no task");
    assert!(ctx.actor_id().is_none());
    let _job = ctx.job_id();

    // Tasks: the function stays an ordinary local function.
    assert_eq!(square(5), 25);
    let r: ObjectRef<i64> = square::remote(3);
    assert_eq!(lumen::get(&r)?, 9);
    let r2 = square::remote(&r); // a ref as an argument is resolved first
    assert_eq!(lumen::get(&r2)?, 81);
    let r3 = square::remote(r2); // by value too
    assert_eq!(lumen::get(&r3)?, 6561);
    let r4 = square::options()
        .num_cpus(0.5)
        .resource("node0", 1.0)
        .remote(4);
    assert_eq!(lumen::get(&r4)?, 16);
    let squares: Vec<ObjectRef<i64>> = (0..5).map(square::remote).collect();
    assert_eq!(lumen::get_all(&squares)?, vec![0, 1, 4, 9, 16]);

    // User types.
    let p = shift::remote(Point { x: 1, y: 2 }, 10);
    assert_eq!(lumen::get(&p)?, Point { x: 11, y: 12 });

    // Several parameter types.
    let d = describe::remote(
        "n".to_string(),
        vec!["a".to_string(), "b".to_string()],
        1.5,
        Some(true),
    );
    assert_eq!(lumen::get(&d)?, "n:a,b:1.5:Some(true)");

    // Attribute options, and options overridden per call.
    assert_eq!(lumen::get(&with_options::remote())?, vec![1, 2, 3]);
    let w = with_options::options()
        .num_cpus(1.0)
        .max_retries(0)
        .remote();
    assert_eq!(lumen::get(&w)?, vec![1, 2, 3]);

    // Result returns and panics become task errors.
    assert_eq!(lumen::get(&parse::remote(" 42 ".to_string()))?, 42);
    match lumen::get(&parse::remote("x".to_string())) {
        Err(lumen::Error::Task { message, .. }) => {
            assert!(message.contains("invalid digit"), "{message}")
        }
        other => panic!("expected a task error, got {other:?}"),
    }
    match lumen::get(&boom::remote("kaboom".to_string())) {
        Err(lumen::Error::Task { message, .. }) => assert!(message.contains("kaboom"), "{message}"),
        other => panic!("expected a task error, got {other:?}"),
    }

    // Async tasks, get_timeout and wait.
    assert_eq!(lumen::get(&slow_double::remote(21, 0))?, 42);
    let slow = slow_double::remote(1, 1500);
    match lumen::get_timeout(&slow, Duration::from_millis(50)) {
        Err(lumen::Error::GetTimeout { .. }) => {}
        other => panic!("expected GetTimeout, got {other:?}"),
    }
    let fast = slow_double::remote(2, 0);
    let refs = vec![slow.clone(), fast.clone()];
    let (ready, rest) = lumen::wait(&refs, 1, Some(Duration::from_secs(1)));
    assert_eq!((ready.len(), rest.len()), (1, 1));
    assert_eq!(ready[0], fast);
    assert_eq!(lumen::get(&ready[0])?, 4);
    assert_eq!(lumen::get_timeout(&slow, Duration::from_secs(4))?, 2);

    // Objects: put/get, and refs nested inside an argument.
    let big = lumen::put(vec![7u8; 1 << 16]);
    assert_eq!(lumen::get(&big)?.len(), 1 << 16);
    let parts: Vec<ObjectRef<i64>> = vec![lumen::put(1i64), lumen::put(2i64), square::remote(3)];
    assert_eq!(lumen::get(&sum_refs::remote(parts.clone()))?, 12);
    assert_eq!(lumen::get(&await_inner::remote(parts))?, 12);
    // An ObjectRef is a future too.
    let awaited = futures::executor::block_on(async { lumen::put(7i64).await })?;
    assert_eq!(awaited, 7);
    let summary = lumen::memory_summary()?;
    assert!(summary.referenced_objects >= 1);
    assert!(summary.stored_objects >= 1);

    // Scheduling strategies.
    let s = where_am_i::options()
        .scheduling_strategy(SchedulingStrategy::Spread)
        .remote();
    assert_eq!(lumen::get(&s)?, (node_id.to_string(), true));
    let a = where_am_i::options()
        .scheduling_strategy(SchedulingStrategy::NodeAffinity {
            node_id,
            soft: false,
        })
        .remote();
    assert_eq!(lumen::get(&a)?.0, node_id.to_string());
    let def = where_am_i::options()
        .scheduling_strategy(SchedulingStrategy::default())
        .remote();
    assert!(lumen::get(&def)?.1);

    // Actors.
    assert_eq!(Counter::describe(1), "Counter(1)");
    let c: ActorHandle<Counter> = Counter::remote(10);
    assert_eq!(lumen::get(&c.add(5).remote())?, 15);
    assert_eq!(lumen::get(&c.get_value().remote())?, 15);
    assert!(lumen::get(&c.in_actor().remote())?);
    assert_eq!(lumen::get(&c.checked_div(3).remote())?, 5);
    match lumen::get(&c.checked_div(0).remote()) {
        Err(lumen::Error::Task { message, .. }) => {
            assert!(message.contains("division by zero"), "{message}")
        }
        other => panic!("expected a task error, got {other:?}"),
    }
    // The actor lives on after a failed call; refs work as method args.
    let five = lumen::put(5i64);
    assert_eq!(lumen::get(&c.add(&five).remote())?, 20);
    // Calls from one submitter run in order.
    let incs: Vec<ObjectRef<i64>> = (0..5).map(|_| c.add(1).remote()).collect();
    assert_eq!(lumen::get_all(&incs)?, vec![21, 22, 23, 24, 25]);

    // Named actors, options, and handles passed to tasks.
    let named = Counter::options()
        .name("ui-counter")
        .num_cpus(0.5)
        .max_restarts(0)
        .remote(100);
    let found: ActorHandle<Counter> = lumen::get_actor("ui-counter")?;
    assert_eq!(found.id(), named.id());
    assert_eq!(lumen::get(&bump::remote(found.clone(), 1))?, 101);
    assert_eq!(lumen::get(&named.get_value().remote())?, 101);
    assert!(lumen::get_actor::<Counter>("nobody").is_err());
    let existing = Counter::options()
        .name("ui-counter")
        .get_if_exists(true)
        .remote(0);
    assert_eq!(existing.id(), named.id());
    let cloned = existing.clone();
    assert_eq!(lumen::get(&cloned.get_value().remote())?, 101);

    // kill: later calls fail with ActorDied and the name is free again.
    lumen::kill(&named);
    match lumen::get_timeout(&named.get_value().remote(), Duration::from_secs(4)) {
        Err(lumen::Error::ActorDied { .. }) => {}
        other => panic!("expected ActorDied, got {other:?}"),
    }

    // Async actors with concurrency groups.
    let e = AsyncEcho::options()
        .max_concurrency(8)
        .remote("> ".to_string());
    assert_eq!(lumen::get(&e.echo("a".to_string()).remote())?, "> a");
    lumen::get(&e.set_prefix("# ".to_string()).remote())?;
    let echoes: Vec<ObjectRef<String>> = (0..4).map(|i| e.echo(i.to_string()).remote()).collect();
    assert_eq!(lumen::get_all(&echoes)?, vec!["# 0", "# 1", "# 2", "# 3"]);
    let o = e
        .echo("b".to_string())
        .options()
        .concurrency_group("io")
        .remote();
    assert_eq!(lumen::get(&o)?, "# b");

    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    // #[lumen::main] shuts lumen down when main returns.
    Ok(())
}

/// The program above, run once in this test's own process (it starts and stops the embedded
/// runtime itself, so it is not repeated on a local cluster).
#[test]
fn full_api() {
    program().expect("the program fails");
}
