//! Integration tests for actors: creation, method calls, ordering, named actors and namespaces,
//! `kill`, errors in methods and constructors, actor resources, runtime context, handles passed
//! to tasks and other actors, and nesting.
//!
//! All tests share one embedded cluster (one runtime per process), started once by [`init`].
//! Tests run in parallel, so every named actor gets a name unique to its test, and no test
//! asserts tight wall-clock bounds.

// `new()` without arguments is the actor constructor; a `Default` impl would add nothing.
#![allow(clippy::new_without_default)]

mod common;

use lumen::{ActorHandle, Error, ObjectRef};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// Setup and helpers
// ---------------------------------------------------------------------------------------------

/// Starts the shared cluster exactly once: 4 CPUs, `res` = 2 (used only by
/// `actor_with_custom_resource_holds_it_for_its_lifetime`), `hold` = 1 (used only by
/// `explicit_actor_resources_leave_available_resources_until_killed`), per node.
fn init() {
    common::init(
        lumen::Config::default()
            .num_cpus(4.0)
            .resource("res", 2.0)
            .resource("hold", 1.0),
    );
}

/// Every test of this file again, on a two-node local cluster with worker processes.
#[test]
fn suite_on_a_local_cluster() {
    common::rerun_on_a_local_cluster("suite_on_a_local_cluster");
}

/// A generous bound for anything that should finish: a bug shows as an error, not a hang.
const LONG: Duration = Duration::from_secs(60);

/// `get` that cannot hang the test suite.
fn get<T: serde::de::DeserializeOwned + 'static>(r: &ObjectRef<T>) -> lumen::Result<T> {
    lumen::get_timeout(r, LONG)
}

/// Polls `f` until it returns true or `LONG` elapses.
fn eventually(mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < LONG {
        if f() {
            return true;
        }
        thread::sleep(Duration::from_millis(20));
    }
    false
}

/// A name unique to this process run and call site.
fn unique(prefix: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// The error of a call that must fail (not hang, not succeed).
fn failure<T: std::fmt::Debug>(r: lumen::Result<T>) -> Error {
    match r {
        Err(Error::GetTimeout { .. }) => panic!("expected a failure, but the call hung"),
        Err(e) => e,
        Ok(v) => panic!("expected a failure, got Ok({v:?})"),
    }
}

fn assert_actor_died<T: std::fmt::Debug>(r: lumen::Result<T>, needle: &str) {
    match r {
        Err(e @ Error::ActorDied { .. }) => {
            let text = e.to_string();
            assert!(
                text.to_lowercase().contains(needle),
                "ActorDied message {text:?} should mention {needle:?}"
            );
        }
        other => panic!("expected Error::ActorDied mentioning {needle:?}, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Actor types
// ---------------------------------------------------------------------------------------------

pub struct Counter {
    value: i64,
}

#[lumen::remote]
impl Counter {
    pub fn new(start: i64) -> Self {
        Counter { value: start }
    }

    pub fn inc(&mut self) -> i64 {
        self.value += 1;
        self.value
    }

    pub fn add(&mut self, x: i64) -> i64 {
        self.value += x;
        self.value
    }

    pub fn get_value(&self) -> i64 {
        self.value
    }

    pub fn fail(&self) -> Result<i64, String> {
        Err(format!("no, value is {}", self.value))
    }

    pub fn checked_add(&mut self, x: i64) -> Result<i64, String> {
        if x < 0 {
            return Err(format!("refusing negative increment {x}"));
        }
        self.value += x;
        Ok(self.value)
    }

    pub fn boom(&mut self) -> i64 {
        panic!("counter exploded at {}", self.value)
    }

    pub fn my_actor_id(&self) -> Option<String> {
        lumen::runtime_context().actor_id().map(|a| a.to_string())
    }

    pub fn my_task_id_is_some(&self) -> bool {
        lumen::runtime_context().task_id().is_some()
    }

    pub fn slow_get(&self, ms: u64) -> i64 {
        thread::sleep(Duration::from_millis(ms));
        self.value
    }
}

/// Records the order of calls.
pub struct Log {
    items: Vec<u64>,
}

#[lumen::remote]
impl Log {
    pub fn new() -> Self {
        Log { items: Vec::new() }
    }

    pub fn push(&mut self, x: u64) -> usize {
        self.items.push(x);
        self.items.len()
    }

    pub fn items(&self) -> Vec<u64> {
        self.items.clone()
    }
}

/// Records `(submitter, seq)` pairs to check per-submitter ordering.
pub struct PairLog {
    items: Vec<(u32, u32)>,
}

#[lumen::remote]
impl PairLog {
    pub fn new() -> Self {
        PairLog { items: Vec::new() }
    }

    pub fn push(&mut self, who: u32, seq: u32) {
        self.items.push((who, seq));
    }

    pub fn items(&self) -> Vec<(u32, u32)> {
        self.items.clone()
    }
}

/// Measures how many of its calls overlap.
pub struct Overlap {
    in_flight: AtomicUsize,
    max_seen: AtomicUsize,
    calls: AtomicUsize,
}

#[lumen::remote]
impl Overlap {
    pub fn new() -> Self {
        Overlap {
            in_flight: AtomicUsize::new(0),
            max_seen: AtomicUsize::new(0),
            calls: AtomicUsize::new(0),
        }
    }

    /// A `&self` method: a serial actor must still run these one at a time.
    pub fn busy(&self, ms: u64) -> usize {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_seen.fetch_max(now, Ordering::SeqCst);
        thread::sleep(Duration::from_millis(ms));
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.calls.fetch_add(1, Ordering::SeqCst)
    }

    pub fn busy_mut(&mut self, ms: u64) -> usize {
        self.busy(ms)
    }

    pub fn max_seen(&self) -> usize {
        self.max_seen.load(Ordering::SeqCst)
    }
}

/// Two actors that meet: `wait_for_flag` only returns true if `set_flag` (on another actor,
/// perhaps in another process: the flag is a gate in the scratch folder) runs while it waits.
const MEET_FLAG: &str = "actors-meet";

pub struct Meeter;

#[lumen::remote]
impl Meeter {
    pub fn new() -> Self {
        Meeter
    }

    pub fn wait_for_flag(&self, max_ms: u64) -> bool {
        if max_ms > 0 {
            common::tally("actors-meet-waiting");
        }
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(max_ms) {
            if common::gate_is_open(MEET_FLAG) {
                return true;
            }
            thread::sleep(Duration::from_millis(5));
        }
        false
    }

    pub fn set_flag(&self) {
        common::open_gate(MEET_FLAG);
    }
}

/// A unit actor with a no-argument constructor and a unit-returning method.
pub struct Pinger;

#[lumen::remote]
impl Pinger {
    pub fn new() -> Self {
        Pinger
    }

    pub fn ping(&self) -> u8 {
        1
    }

    pub fn nothing(&self) {}
}

/// An actor of another type, for type-mismatch tests.
pub struct Other {
    tag: String,
}

#[lumen::remote]
impl Other {
    pub fn new(tag: String) -> Self {
        Other { tag }
    }

    pub fn tag(&self) -> String {
        self.tag.clone()
    }
}

/// An async actor: inside its methods the blocking calls refuse and their twins work.
pub struct Finder;

#[lumen::remote]
impl Finder {
    pub fn new() -> Self {
        Finder
    }

    /// Looks up the counter `name` (and makes a named one of its own) with the twins, after
    /// checking that the blocking calls refuse: the two counters' values, or what went wrong.
    pub async fn find(&self, name: String) -> Result<i64, String> {
        match lumen::get_actor::<Counter>(&name) {
            Err(Error::InvalidArgument { message })
                if message.contains("lumen::get_actor_async") => {}
            other => return Err(format!("get_actor was not refused: {other:?}")),
        }
        let refused = Counter::options()
            .name(format!("{name}-blocking"))
            .remote(0);
        match refused.get_value().remote().await {
            Err(Error::InvalidArgument { message }) if message.contains("remote_async") => {}
            other => return Err(format!("remote() with a name was not refused: {other:?}")),
        }
        let own = Counter::options()
            .name(format!("{name}-own"))
            .remote_async(40)
            .await;
        let found: ActorHandle<Counter> = lumen::get_actor_async(&name)
            .await
            .map_err(|e| e.to_string())?;
        let a = found
            .get_value()
            .remote()
            .await
            .map_err(|e| e.to_string())?;
        let b = own.inc().remote().await.map_err(|e| e.to_string())?;
        Ok(a + b)
    }
}

/// Constructors that fail.
pub struct PanicsInNew;

#[lumen::remote]
impl PanicsInNew {
    pub fn new(msg: String) -> Self {
        panic!("constructor refused: {msg}")
    }

    pub fn ping(&self) -> u8 {
        1
    }
}

pub struct ErrInNew {
    x: i64,
}

#[lumen::remote]
impl ErrInNew {
    pub fn new(x: i64) -> Result<Self, String> {
        if x < 0 {
            Err(format!("negative start {x} not allowed"))
        } else {
            Ok(ErrInNew { x })
        }
    }

    pub fn x(&self) -> i64 {
        self.x
    }
}

/// An actor that uses other actors and tasks from inside its methods.
pub struct Coordinator {
    counter: Option<ActorHandle<Counter>>,
}

#[lumen::remote]
impl Coordinator {
    pub fn new() -> Self {
        Coordinator { counter: None }
    }

    /// Stores a handle passed in as an argument.
    pub fn adopt(&mut self, c: ActorHandle<Counter>) -> bool {
        self.counter = Some(c);
        true
    }

    /// Calls the stored counter `n` times, returns its final value.
    pub fn bump(&self, n: u32) -> lumen::Result<i64> {
        let c = self.counter.as_ref().expect("adopt first");
        let mut last = Err(Error::InvalidArgument {
            message: "no calls".into(),
        });
        for _ in 0..n {
            last = lumen::get(&c.inc().remote());
        }
        last
    }

    /// Calls a counter given directly in the call.
    pub fn add_to(&self, c: ActorHandle<Counter>, x: i64) -> lumen::Result<i64> {
        lumen::get(&c.add(x).remote())
    }

    /// Submits tasks and waits for them.
    pub fn sum_of_squares(&self, n: i64) -> lumen::Result<i64> {
        let refs: Vec<_> = (0..n).map(square::remote).collect();
        Ok(lumen::get_all(&refs)?.into_iter().sum())
    }

    /// Creates a named actor and finds it, blocking both times (allowed: a sync method).
    pub fn named_child(&self, name: String) -> lumen::Result<i64> {
        let _child = Counter::options().name(name.clone()).remote(3);
        let found: ActorHandle<Counter> = lumen::get_actor(&name)?;
        lumen::get(&found.get_value().remote())
    }

    /// Creates a child actor, uses it and returns its value.
    pub fn spawn_counter(&self, start: i64, incs: u32) -> lumen::Result<i64> {
        let c = Counter::remote(start);
        for _ in 0..incs {
            let _ = c.inc().remote();
        }
        lumen::get(&c.get_value().remote())
    }
}

// ---------------------------------------------------------------------------------------------
// Remote functions
// ---------------------------------------------------------------------------------------------

#[lumen::remote]
fn square(x: i64) -> i64 {
    x * x
}

#[lumen::remote]
fn slow_value(ms: u64, v: u64) -> u64 {
    thread::sleep(Duration::from_millis(ms));
    v
}

#[lumen::remote]
fn slow_i64(ms: u64, v: i64) -> i64 {
    thread::sleep(Duration::from_millis(ms));
    v
}

#[lumen::remote]
fn failing_i64() -> Result<i64, String> {
    Err("upstream task failed".into())
}

/// Calls `c.inc()` `n` times through a handle passed as an argument.
#[lumen::remote]
fn inc_worker(c: ActorHandle<Counter>, n: i64) -> lumen::Result<i64> {
    let mut refs = Vec::new();
    for _ in 0..n {
        refs.push(c.inc().remote());
    }
    let vals = lumen::get_all(&refs)?;
    // Calls from one submitter run in order: this worker's results strictly increase.
    assert!(vals.windows(2).all(|w| w[0] < w[1]), "{vals:?}");
    Ok(n)
}

/// Takes several handles nested in a container; waits `delay_ms` before using them.
#[lumen::remote]
fn total_of(cs: Vec<ActorHandle<Counter>>, delay_ms: u64) -> lumen::Result<i64> {
    thread::sleep(Duration::from_millis(delay_ms));
    let refs: Vec<_> = cs.iter().map(|c| c.get_value().remote()).collect();
    Ok(lumen::get_all(&refs)?.into_iter().sum())
}

/// Waits, then reads a counter through a handle passed by value.
#[lumen::remote]
fn delayed_get_value(c: ActorHandle<Counter>, delay_ms: u64) -> lumen::Result<i64> {
    thread::sleep(Duration::from_millis(delay_ms));
    lumen::get(&c.get_value().remote())
}

/// Creates an actor inside a task and calls it.
#[lumen::remote]
fn task_creates_actor(start: i64, incs: u32) -> lumen::Result<i64> {
    let c = Counter::remote(start);
    let mut last = start;
    for _ in 0..incs {
        last = lumen::get(&c.inc().remote())?;
    }
    Ok(last)
}

/// Creates a named actor inside a task; the driver looks it up afterwards.
#[lumen::remote]
fn task_creates_named_actor(name: String, start: i64) -> lumen::Result<i64> {
    let c = Counter::options().name(name).detached().remote(start);
    lumen::get(&c.get_value().remote())
}

/// The actor id seen by a task (none).
#[lumen::remote]
fn actor_id_in_task() -> Option<String> {
    lumen::runtime_context().actor_id().map(|a| a.to_string())
}

// ---------------------------------------------------------------------------------------------
// Basics
// ---------------------------------------------------------------------------------------------

#[test]
fn counter_basic_calls() {
    init();
    let c: ActorHandle<Counter> = Counter::remote(0);
    let r1: ObjectRef<i64> = c.inc().remote();
    let r2 = c.inc().remote();
    assert_eq!(get(&r1).unwrap(), 1);
    assert_eq!(get(&r2).unwrap(), 2);
    assert_eq!(get(&c.get_value().remote()).unwrap(), 2);
    assert_eq!(get(&c.add(40).remote()).unwrap(), 42);
    assert_eq!(get(&c.get_value().remote()).unwrap(), 42);
}

#[test]
fn constructor_arguments_are_used() {
    init();
    let c = Counter::remote(-7);
    assert_eq!(get(&c.get_value().remote()).unwrap(), -7);
    let o = Other::remote("hello".to_string());
    assert_eq!(get(&o.tag().remote()).unwrap(), "hello");
}

#[test]
fn constructor_argument_can_be_a_ref() {
    init();
    let start = lumen::put(100i64);
    let c = Counter::remote(&start);
    assert_eq!(get(&c.inc().remote()).unwrap(), 101);

    let slow = slow_i64::remote(200, 5);
    let c2 = Counter::remote(&slow);
    assert_eq!(get(&c2.inc().remote()).unwrap(), 6);
}

#[test]
fn constructor_argument_can_be_an_owned_ref() {
    init();
    let start = lumen::put(100i64);
    let c = Counter::remote(start);
    assert_eq!(get(&c.inc().remote()).unwrap(), 101);

    let c2 = Counter::remote(slow_i64::remote(200, 5));
    assert_eq!(get(&c2.inc().remote()).unwrap(), 6);
}

#[test]
fn constructor_argument_from_failed_task_fails_the_actor() {
    init();
    let failed = failing_i64::remote();
    let c = Counter::remote(&failed);
    let r = get(&c.get_value().remote());
    match r {
        Err(Error::GetTimeout { .. }) => {
            panic!("calls to an actor whose constructor argument failed should fail, not hang")
        }
        Err(e) => assert!(
            e.to_string().contains("upstream task failed"),
            "the error should carry the argument's failure: {e}"
        ),
        Ok(v) => panic!("an actor whose constructor argument failed answered {v}"),
    }
}

#[test]
fn unit_actor_and_unit_method() {
    init();
    let p = Pinger::remote();
    let n: ObjectRef<()> = p.nothing().remote();
    get(&n).unwrap();
    assert_eq!(get(&p.ping().remote()).unwrap(), 1);
}

#[test]
fn method_args_accept_values_and_borrowed_refs() {
    init();
    let c = Counter::remote(0);
    assert_eq!(get(&c.add(1).remote()).unwrap(), 1);
    let two = lumen::put(2i64);
    assert_eq!(get(&c.add(&two).remote()).unwrap(), 3);
    assert_eq!(get(&c.add(&two).remote()).unwrap(), 5);
    // A ref to a task's result is resolved before the call runs.
    let nine = square::remote(3);
    assert_eq!(get(&c.add(&nine).remote()).unwrap(), 14);
    // A ref to another call's result.
    let other = Counter::remote(10);
    let ten = other.get_value().remote();
    assert_eq!(get(&c.add(&ten).remote()).unwrap(), 24);
    assert_eq!(get(&ten).unwrap(), 10);
    // A ref to a slow task's result.
    let slow = slow_i64::remote(200, 100);
    assert_eq!(get(&c.add(&slow).remote()).unwrap(), 124);
}

#[test]
fn method_args_accept_owned_refs() {
    init();
    let c = Counter::remote(0);
    // An ObjectRef moved into the call (the caller keeps no copy).
    let two = lumen::put(2i64);
    assert_eq!(get(&c.add(two).remote()).unwrap(), 2);
    // A temporary ref to a task's result.
    assert_eq!(get(&c.add(square::remote(3)).remote()).unwrap(), 11);
    // A temporary ref to another actor call's result.
    let other = Counter::remote(10);
    assert_eq!(
        get(&c.add(other.get_value().remote()).remote()).unwrap(),
        21
    );
}

#[test]
fn failed_ref_argument_fails_the_call_but_not_the_actor() {
    init();
    let c = Counter::remote(1);
    let failed = failing_i64::remote();
    let r = get(&c.add(&failed).remote());
    match r {
        Err(e) => assert!(
            e.to_string().contains("upstream task failed"),
            "the error should carry the upstream failure: {e}"
        ),
        Ok(v) => panic!("a call with a failed argument returned {v}"),
    }
    assert_eq!(get(&c.inc().remote()).unwrap(), 2);
}

#[test]
fn results_of_calls_can_feed_tasks_and_other_calls() {
    init();
    let a = Counter::remote(3);
    let b = Counter::remote(0);
    let three = a.get_value().remote();
    let nine = square::remote(&three);
    assert_eq!(get(&b.add(&nine).remote()).unwrap(), 9);
    let four = a.inc().remote();
    assert_eq!(get(&b.add(&four).remote()).unwrap(), 13);
}

#[test]
fn get_all_of_many_calls() {
    init();
    let c = Counter::remote(0);
    let refs: Vec<_> = (0..200).map(|_| c.inc().remote()).collect();
    let vals: Vec<i64> = lumen::get_all(&refs).unwrap();
    assert_eq!(vals, (1..=200).collect::<Vec<i64>>());
}

#[test]
fn each_actor_has_its_own_state() {
    init();
    let cs: Vec<_> = (0..5).map(|i| Counter::remote(i * 100)).collect();
    for (i, c) in cs.iter().enumerate() {
        for _ in 0..=i {
            let _ = c.inc().remote();
        }
    }
    let vals: Vec<i64> = cs
        .iter()
        .map(|c| get(&c.get_value().remote()).unwrap())
        .collect();
    assert_eq!(vals, vec![1, 102, 203, 304, 405]);
}

#[test]
fn handle_clone_debug_and_id() {
    init();
    let c = Counter::remote(0);
    let c2 = c.clone();
    assert_eq!(c.id(), c2.id());
    assert_ne!(c.id(), Counter::remote(0).id());
    let dbg = format!("{c:?}");
    assert!(dbg.contains("Counter"), "{dbg}");
    let _ = c.inc().remote();
    assert_eq!(get(&c2.inc().remote()).unwrap(), 2);
    drop(c);
    assert_eq!(get(&c2.get_value().remote()).unwrap(), 2);
}

// ---------------------------------------------------------------------------------------------
// Ordering and serial execution
// ---------------------------------------------------------------------------------------------

#[test]
fn one_thousand_calls_run_in_submission_order() {
    init();
    let log = Log::remote();
    for i in 0..1000u64 {
        let _ = log.push(i).remote();
    }
    let items = get(&log.items().remote()).unwrap();
    assert_eq!(items, (0..1000).collect::<Vec<u64>>());
}

#[test]
fn push_results_are_positions_in_order() {
    init();
    let log = Log::remote();
    let refs: Vec<_> = (0..300u64).map(|i| log.push(i).remote()).collect();
    let lens = lumen::get_all(&refs).unwrap();
    assert_eq!(lens, (1..=300).collect::<Vec<usize>>());
}

#[test]
fn order_is_kept_when_first_argument_is_a_slow_ref() {
    init();
    let log = Log::remote();
    let slow = slow_value::remote(500, 999);
    let _ = log.push(&slow).remote();
    for i in 1..50u64 {
        let _ = log.push(i).remote();
    }
    let items = get(&log.items().remote()).unwrap();
    let mut expected = vec![999];
    expected.extend(1..50u64);
    assert_eq!(items, expected);
}

#[test]
fn order_is_kept_with_slow_refs_in_the_middle() {
    init();
    let log = Log::remote();
    let mut expected = Vec::new();
    let mut slow = Vec::new();
    for i in 0..30u64 {
        if i % 10 == 5 {
            slow.push(slow_value::remote(150 + i, 1000 + i));
            let _ = log.push(slow.last().unwrap()).remote();
            expected.push(1000 + i);
        } else {
            let _ = log.push(i).remote();
            expected.push(i);
        }
    }
    assert_eq!(get(&log.items().remote()).unwrap(), expected);
}

#[test]
fn per_submitter_order_with_several_driver_threads() {
    init();
    let log = PairLog::remote();
    let threads: Vec<_> = (0..4u32)
        .map(|who| {
            let log = log.clone();
            thread::spawn(move || {
                let mut last = None;
                for seq in 0..200u32 {
                    last = Some(log.push(who, seq).remote());
                }
                get(&last.unwrap()).unwrap();
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let items = get(&log.items().remote()).unwrap();
    assert_eq!(items.len(), 800);
    for who in 0..4u32 {
        let seqs: Vec<u32> = items
            .iter()
            .filter(|(w, _)| *w == who)
            .map(|(_, s)| *s)
            .collect();
        assert_eq!(seqs, (0..200).collect::<Vec<u32>>(), "submitter {who}");
    }
}

#[test]
fn per_submitter_order_from_several_tasks() {
    init();
    let c = Counter::remote(0);
    // Each worker asserts internally that its own results strictly increase.
    let workers: Vec<_> = (0..3).map(|_| inc_worker::remote(c.clone(), 40)).collect();
    assert_eq!(lumen::get_all(&workers).unwrap(), vec![40, 40, 40]);
    assert_eq!(get(&c.get_value().remote()).unwrap(), 120);
}

#[test]
fn serial_actor_runs_one_call_at_a_time() {
    init();
    let a = Overlap::remote();
    let refs: Vec<_> = (0..8).map(|_| a.busy(30).remote()).collect();
    let mut counts = lumen::get_all(&refs).unwrap();
    let mixed: Vec<_> = (0..4).map(|_| a.busy_mut(10).remote()).collect();
    counts.extend(lumen::get_all(&mixed).unwrap());
    // Each call saw the calls before it completed, in order.
    assert_eq!(counts, (0..12).collect::<Vec<usize>>());
    assert_eq!(get(&a.max_seen().remote()).unwrap(), 1);
}

#[test]
fn different_actors_run_concurrently() {
    init();
    let waiter = Meeter::remote();
    let setter = Meeter::remote();
    // Make sure both exist before the meeting.
    get(&waiter.wait_for_flag(0).remote()).unwrap();
    get(&setter.wait_for_flag(0).remote()).unwrap();
    let met = waiter.wait_for_flag(30_000).remote();
    // The waiter is inside its call before the other actor is asked to set the flag.
    assert!(common::wait_until(LONG, || common::tally_count(
        "actors-meet-waiting"
    ) == 1));
    get(&setter.set_flag().remote()).unwrap();
    assert!(
        get(&met).unwrap(),
        "one actor blocked in a call must not stop another actor's calls"
    );
}

#[test]
fn calls_to_many_actors_interleave_correctly() {
    init();
    let cs: Vec<_> = (0..6).map(|_| Counter::remote(0)).collect();
    let mut refs = Vec::new();
    for round in 0..20 {
        for c in &cs {
            refs.push((round, c.inc().remote()));
        }
    }
    for (round, r) in refs {
        assert_eq!(get(&r).unwrap(), round + 1);
    }
}

// ---------------------------------------------------------------------------------------------
// Named actors and namespaces
// ---------------------------------------------------------------------------------------------

#[test]
fn named_actor_is_found_right_after_remote() {
    init();
    let name = unique("named-found");
    let c = Counter::options().name(name.clone()).remote(5);
    let c2: ActorHandle<Counter> = lumen::get_actor(&name).unwrap();
    assert_eq!(c.id(), c2.id());
    assert_eq!(get(&c2.inc().remote()).unwrap(), 6);
    assert_eq!(get(&c.inc().remote()).unwrap(), 7);
    assert_eq!(get(&c2.get_value().remote()).unwrap(), 7);
}

#[test]
fn named_actor_with_options_and_resources() {
    init();
    let name = unique("named-opts");
    let c = Counter::options()
        .num_cpus(0.5)
        .name(name.clone())
        .remote(0);
    assert_eq!(get(&c.inc().remote()).unwrap(), 1);
    let c2: ActorHandle<Counter> = lumen::get_actor(&name).unwrap();
    assert_eq!(get(&c2.inc().remote()).unwrap(), 2);
    lumen::kill(&c);
}

#[test]
fn taken_name_fails_new_handle_calls() {
    init();
    let name = unique("taken");
    let first = Counter::options().name(name.clone()).remote(1);
    assert_eq!(get(&first.inc().remote()).unwrap(), 2);
    let second = Counter::options().name(name.clone()).remote(100);
    let r = get(&second.get_value().remote());
    match r {
        Err(e) => assert!(
            e.to_string().contains("already taken"),
            "the error should say the name is already taken: {e}"
        ),
        Ok(v) => panic!("a second actor with a taken name answered {v}"),
    }
    // Every call of the losing handle fails; the first actor is untouched.
    let _ = failure(get(&second.inc().remote()));
    assert_eq!(get(&first.get_value().remote()).unwrap(), 2);
    let found: ActorHandle<Counter> = lumen::get_actor(&name).unwrap();
    assert_eq!(found.id(), first.id());
}

#[test]
fn taken_name_by_another_type_fails_too() {
    init();
    let name = unique("taken-type");
    let first = Other::options().name(name.clone()).remote("x".to_string());
    assert_eq!(get(&first.tag().remote()).unwrap(), "x");
    let second = Counter::options().name(name.clone()).remote(0);
    let _ = failure(get(&second.get_value().remote()));
    assert_eq!(get(&first.tag().remote()).unwrap(), "x");
}

#[test]
fn get_if_exists_returns_the_existing_actor() {
    init();
    let name = unique("get-if-exists");
    let first = Counter::options().name(name.clone()).remote(10);
    let _ = first.inc().remote();
    let second = Counter::options()
        .name(name.clone())
        .get_if_exists(true)
        .remote(1000);
    assert_eq!(second.id(), first.id());
    // Same state: the second constructor argument is ignored.
    assert_eq!(get(&second.inc().remote()).unwrap(), 12);
    assert_eq!(get(&first.get_value().remote()).unwrap(), 12);
}

#[test]
fn get_if_exists_creates_when_missing() {
    init();
    let name = unique("get-if-exists-new");
    let c = Counter::options()
        .name(name.clone())
        .get_if_exists(true)
        .remote(7);
    assert_eq!(get(&c.get_value().remote()).unwrap(), 7);
    let again: ActorHandle<Counter> = lumen::get_actor(&name).unwrap();
    assert_eq!(again.id(), c.id());
}

#[test]
fn get_if_exists_false_still_refuses_a_taken_name() {
    init();
    let name = unique("get-if-exists-false");
    let first = Counter::options().name(name.clone()).remote(0);
    let second = Counter::options()
        .name(name.clone())
        .get_if_exists(false)
        .remote(0);
    let _ = failure(get(&second.get_value().remote()));
    assert_eq!(get(&first.get_value().remote()).unwrap(), 0);
}

#[test]
fn get_if_exists_with_wrong_type_fails_calls_with_invalid_argument() {
    init();
    let name = unique("get-if-exists-type");
    let first = Other::options().name(name.clone()).remote("o".to_string());
    let wrong = Counter::options()
        .name(name.clone())
        .get_if_exists(true)
        .remote(0);
    let r = get(&wrong.get_value().remote());
    assert!(
        matches!(r, Err(Error::InvalidArgument { .. })),
        "expected InvalidArgument, got {r:?}"
    );
    assert_eq!(get(&first.tag().remote()).unwrap(), "o");
}

#[test]
fn concurrent_get_if_exists_all_get_one_actor() {
    init();
    // Several rounds make the race between the creator and the others likely to show.
    for _ in 0..5 {
        let name = unique("get-if-exists-race");
        let start = std::sync::Arc::new(std::sync::Barrier::new(8));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let name = name.clone();
                let start = start.clone();
                thread::spawn(move || {
                    start.wait();
                    let c = Counter::options().name(name).get_if_exists(true).remote(0);
                    (c.id(), get(&c.inc().remote()))
                })
            })
            .collect();
        let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        let ids: Vec<_> = results.iter().map(|(id, _)| *id).collect();
        assert!(ids.windows(2).all(|w| w[0] == w[1]), "{ids:?}");
        for (_, r) in &results {
            assert!(r.is_ok(), "a get_if_exists handle's call failed: {r:?}");
        }
        let c: ActorHandle<Counter> = lumen::get_actor(&name).unwrap();
        assert_eq!(get(&c.get_value().remote()).unwrap(), 8);
        lumen::kill(&c);
    }
}

#[test]
fn get_actor_racing_with_creation_sees_a_working_actor() {
    init();
    for _ in 0..5 {
        let name = unique("get-actor-race");
        let lookers: Vec<_> = (0..4)
            .map(|_| {
                let name = name.clone();
                thread::spawn(move || {
                    let start = Instant::now();
                    loop {
                        if let Ok(c) = lumen::get_actor::<Counter>(&name) {
                            return get(&c.inc().remote());
                        }
                        assert!(start.elapsed() < LONG, "the named actor never appeared");
                        thread::yield_now();
                    }
                })
            })
            .collect();
        let c = Counter::options().name(name.clone()).remote(0);
        for l in lookers {
            let r = l.join().unwrap();
            assert!(r.is_ok(), "a call through a looked-up handle failed: {r:?}");
        }
        assert_eq!(get(&c.get_value().remote()).unwrap(), 4);
        lumen::kill(&c);
    }
}

#[test]
fn get_actor_of_unknown_name_is_not_found() {
    init();
    let name = unique("nobody");
    let r = lumen::get_actor::<Counter>(&name);
    match r {
        Err(Error::NotFound { name: n, .. }) => assert_eq!(n, name),
        other => panic!("expected NotFound, got {other:?}"),
    }
    let r = lumen::get_actor_in::<Counter>(&name, "some-namespace");
    assert!(
        matches!(r, Err(Error::NotFound { .. })),
        "expected NotFound, got {r:?}"
    );
}

#[test]
fn get_actor_of_wrong_type_is_invalid_argument() {
    init();
    let name = unique("wrong-type");
    let _o = Other::options().name(name.clone()).remote("t".to_string());
    let r = lumen::get_actor::<Counter>(&name);
    assert!(
        matches!(r, Err(Error::InvalidArgument { .. })),
        "expected InvalidArgument, got {r:?}"
    );
    let ok: ActorHandle<Other> = lumen::get_actor(&name).unwrap();
    assert_eq!(get(&ok.tag().remote()).unwrap(), "t");
}

#[test]
fn actor_twins_work_on_a_tokio_runtime() {
    init();
    let name = unique("twin-named");
    let ns = unique("twin-ns");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let c = Counter::options().name(name.clone()).remote_async(5).await;
        // The name is registered once the future is done: found at once.
        let found: ActorHandle<Counter> = lumen::get_actor_async(&name).await.unwrap();
        assert_eq!(found.id(), c.id());
        assert_eq!(found.inc().remote().await.unwrap(), 6);
        let in_ns = Counter::options()
            .name(name.clone())
            .namespace(ns.clone())
            .remote_async(1)
            .await;
        let found_in: ActorHandle<Counter> = lumen::get_actor_in_async(&name, &ns).await.unwrap();
        assert_eq!(found_in.id(), in_ns.id());
        assert_eq!(found_in.get_value().remote().await.unwrap(), 1);
        let plain = Counter::remote_async(2).await;
        assert_eq!(plain.get_value().remote().await.unwrap(), 2);
        let same = Counter::options()
            .name(name.clone())
            .get_if_exists(true)
            .remote_async(1000)
            .await;
        assert_eq!(same.id(), c.id());
        let taken = Counter::options().name(name.clone()).remote_async(0).await;
        match taken.get_value().remote().await {
            Err(e) => assert!(e.to_string().contains("already taken"), "{e}"),
            Ok(v) => panic!("a second actor with a taken name answered {v}"),
        }
        let nobody = lumen::get_actor_async::<Counter>(&unique("nobody")).await;
        assert!(matches!(nobody, Err(Error::NotFound { .. })), "{nobody:?}");
        let wrong = lumen::get_actor_async::<Other>(&name).await;
        assert!(
            matches!(wrong, Err(Error::InvalidArgument { .. })),
            "{wrong:?}"
        );
        let listed = lumen::list_actors_async().await;
        assert!(
            listed
                .iter()
                .any(|a| a.actor_id == c.id() && a.name.as_deref() == Some(name.as_str())),
            "{listed:?}"
        );
    });
}

#[test]
fn remote_async_takes_its_arguments_before_it_returns() {
    init();
    let name = unique("twin-args");
    let create = {
        let start = lumen::put(7i64);
        Counter::options().name(name.clone()).remote_async(&start)
        // `start`, the caller's only ref, is dropped here, before the future runs.
    };
    let c = futures::executor::block_on(create);
    assert_eq!(get(&c.get_value().remote()).unwrap(), 7);
    let found: ActorHandle<Counter> = lumen::get_actor(&name).unwrap();
    assert_eq!(found.id(), c.id());
}

#[test]
fn blocking_actor_calls_in_a_tokio_runtime_are_refused() {
    init();
    let name = unique("refused-named");
    let existing_name = unique("refused-existing");
    let existing = Counter::options().name(existing_name.clone()).remote(1);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let plain = rt.block_on(async {
        let lookups = [
            (
                "lumen::get_actor_async",
                lumen::get_actor::<Counter>(&existing_name).map(|h| h.id()),
            ),
            (
                "lumen::get_actor_in_async",
                lumen::get_actor_in::<Counter>(&existing_name, "elsewhere").map(|h| h.id()),
            ),
        ];
        for (twin, outcome) in lookups {
            match outcome {
                Err(Error::InvalidArgument { message }) => {
                    assert!(message.contains(twin), "{twin}: {message}")
                }
                other => panic!("expected a refusal naming {twin}, got {other:?}"),
            }
        }
        // Creating a named actor would block until the name is registered: the handle's calls
        // fail with the refusal instead.
        let refused = Counter::options().name(name.clone()).remote(0);
        match refused.get_value().remote().await {
            Err(Error::InvalidArgument { message }) => {
                assert!(message.contains("remote_async"), "{message}")
            }
            other => panic!("expected a refusal naming remote_async, got {other:?}"),
        }
        // An unnamed actor is created without blocking: allowed.
        let plain = Counter::remote(3);
        assert_eq!(plain.get_value().remote().await.unwrap(), 3);
        // `list_actors` cannot refuse: it answers nothing.
        assert!(lumen::list_actors().is_empty());
        plain
    });
    // The refused name was never registered; outside the runtime the calls block as always.
    let r = lumen::get_actor::<Counter>(&name);
    assert!(matches!(r, Err(Error::NotFound { .. })), "{r:?}");
    assert!(lumen::list_actors()
        .iter()
        .any(|a| a.actor_id == plain.id()));
    let found: ActorHandle<Counter> = lumen::get_actor(&existing_name).unwrap();
    assert_eq!(found.id(), existing.id());
}

#[test]
fn async_actor_method_uses_the_twins_and_its_blocking_calls_refuse() {
    init();
    let name = unique("found-by-async-method");
    let _c = Counter::options().name(name.clone()).remote(2);
    let finder = Finder::remote();
    assert_eq!(get(&finder.find(name).remote()).unwrap(), 2 + 41);
}

#[test]
fn sync_actor_method_may_create_and_find_named_actors() {
    init();
    let coord = Coordinator::remote();
    let name = unique("named-child");
    assert_eq!(get(&coord.named_child(name.clone()).remote()).unwrap(), 3);
}

#[test]
fn names_are_per_namespace() {
    init();
    let name = unique("ns-name");
    let ns1 = unique("ns1");
    let ns2 = unique("ns2");
    let a = Counter::options()
        .name(name.clone())
        .namespace(ns1.clone())
        .remote(1);
    let b = Counter::options()
        .name(name.clone())
        .namespace(ns2.clone())
        .remote(2);
    assert_ne!(a.id(), b.id());
    assert_eq!(get(&a.get_value().remote()).unwrap(), 1);
    assert_eq!(get(&b.get_value().remote()).unwrap(), 2);

    let a2: ActorHandle<Counter> = lumen::get_actor_in(&name, &ns1).unwrap();
    let b2: ActorHandle<Counter> = lumen::get_actor_in(&name, &ns2).unwrap();
    assert_eq!(a2.id(), a.id());
    assert_eq!(b2.id(), b.id());
    assert_eq!(get(&a2.inc().remote()).unwrap(), 2);
    assert_eq!(get(&b2.inc().remote()).unwrap(), 3);

    // Not visible in the driver's own namespace, nor in a third one.
    assert!(matches!(
        lumen::get_actor::<Counter>(&name),
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        lumen::get_actor_in::<Counter>(&name, &unique("ns3")),
        Err(Error::NotFound { .. })
    ));

    // The same name in the driver's namespace is free too.
    let c = Counter::options().name(name.clone()).remote(3);
    let c2: ActorHandle<Counter> = lumen::get_actor(&name).unwrap();
    assert_eq!(c2.id(), c.id());
    assert_eq!(get(&c2.get_value().remote()).unwrap(), 3);
}

#[test]
fn default_namespace_is_the_drivers() {
    init();
    let name = unique("ns-default");
    let c = Counter::options().name(name.clone()).remote(4);
    let ns = lumen::runtime_context().namespace().to_string();
    let c2: ActorHandle<Counter> = lumen::get_actor_in(&name, &ns).unwrap();
    assert_eq!(c2.id(), c.id());
}

#[test]
fn taken_name_is_per_namespace() {
    init();
    let name = unique("ns-taken");
    let ns = unique("ns-taken-space");
    let a = Counter::options()
        .name(name.clone())
        .namespace(ns.clone())
        .remote(1);
    let b = Counter::options()
        .name(name.clone())
        .namespace(ns.clone())
        .remote(2);
    assert_eq!(get(&a.get_value().remote()).unwrap(), 1);
    let r = get(&b.get_value().remote());
    assert!(
        r.as_ref()
            .is_err_and(|e| e.to_string().contains("already taken")),
        "{r:?}"
    );
    let c = Counter::options()
        .name(name.clone())
        .namespace(ns.clone())
        .get_if_exists(true)
        .remote(3);
    assert_eq!(c.id(), a.id());
}

#[test]
fn empty_name_is_refused() {
    init();
    let c = Counter::options().name("").remote(0);
    let r = get(&c.get_value().remote());
    assert!(
        matches!(r, Err(Error::InvalidArgument { .. })),
        "expected InvalidArgument, got {r:?}"
    );
}

#[test]
fn named_actor_created_in_a_task_is_visible_to_the_driver() {
    init();
    let name = unique("named-in-task");
    assert_eq!(
        get(&task_creates_named_actor::remote(name.clone(), 9)).unwrap(),
        9
    );
    let c: ActorHandle<Counter> = lumen::get_actor(&name).unwrap();
    assert_eq!(get(&c.inc().remote()).unwrap(), 10);
    lumen::kill(&c);
}

#[test]
fn named_actor_outlives_its_creators_handle() {
    init();
    let name = unique("named-outlives");
    {
        let c = Counter::options().name(name.clone()).remote(0);
        get(&c.inc().remote()).unwrap();
    }
    thread::sleep(Duration::from_millis(100));
    let c: ActorHandle<Counter> = lumen::get_actor(&name).unwrap();
    assert_eq!(get(&c.inc().remote()).unwrap(), 2);
    lumen::kill(&c);
}

#[test]
fn detached_actor_outlives_its_handles() {
    init();
    let name = unique("detached");
    {
        let c = Counter::options().name(name.clone()).detached().remote(40);
        get(&c.inc().remote()).unwrap();
    }
    thread::sleep(Duration::from_millis(100));
    let c: ActorHandle<Counter> = lumen::get_actor(&name).unwrap();
    assert_eq!(get(&c.inc().remote()).unwrap(), 42);
    lumen::kill(&c);
    assert_actor_died(get(&c.inc().remote()), "killed");
}

// ---------------------------------------------------------------------------------------------
// kill
// ---------------------------------------------------------------------------------------------

#[test]
fn kill_fails_later_calls_with_actor_died() {
    init();
    let c = Counter::remote(0);
    assert_eq!(get(&c.inc().remote()).unwrap(), 1);
    lumen::kill(&c);
    assert_actor_died(get(&c.inc().remote()), "killed");
    assert_actor_died(get(&c.get_value().remote()), "killed");
}

#[test]
fn kill_is_seen_by_every_handle() {
    init();
    let name = unique("kill-every-handle");
    let c = Counter::options().name(name.clone()).remote(0);
    let clone = c.clone();
    let looked_up: ActorHandle<Counter> = lumen::get_actor(&name).unwrap();
    get(&c.inc().remote()).unwrap();
    lumen::kill(&looked_up);
    assert!(matches!(
        get(&c.inc().remote()),
        Err(Error::ActorDied { .. })
    ));
    assert!(matches!(
        get(&clone.inc().remote()),
        Err(Error::ActorDied { .. })
    ));
}

#[test]
fn kill_is_seen_by_handles_in_tasks() {
    init();
    let c = Counter::remote(0);
    get(&c.inc().remote()).unwrap();
    lumen::kill(&c);
    let e = failure(get(&inc_worker::remote(c.clone(), 1)));
    assert!(
        e.to_string().contains("killed"),
        "a task calling a killed actor should fail saying so: {e}"
    );
}

#[test]
fn kill_before_creation_finishes() {
    init();
    let c = Counter::remote(0);
    lumen::kill(&c);
    assert_actor_died(get(&c.inc().remote()), "killed");
}

#[test]
fn kill_twice_is_harmless() {
    init();
    let c = Counter::remote(0);
    get(&c.inc().remote()).unwrap();
    lumen::kill(&c);
    lumen::kill(&c);
    assert_actor_died(get(&c.inc().remote()), "killed");
}

#[test]
fn kill_with_calls_queued_completes_every_ref() {
    init();
    let c = Counter::remote(0);
    get(&c.inc().remote()).unwrap();
    let slow = c.slow_get(300).remote();
    let queued: Vec<_> = (0..20).map(|_| c.inc().remote()).collect();
    lumen::kill(&c);
    let after = c.inc().remote();
    // Calls submitted before the kill either ran or fail with ActorDied; none hangs.
    match get(&slow) {
        Ok(_) | Err(Error::ActorDied { .. }) => {}
        Err(e) => panic!("unexpected error for a call cut off by kill: {e:?}"),
    }
    let mut last_ok = 1;
    let mut seen_died = false;
    for r in &queued {
        match get(r) {
            Ok(v) => {
                assert!(!seen_died, "a call ran after an earlier one was cut off");
                assert_eq!(v, last_ok + 1);
                last_ok = v;
            }
            Err(Error::ActorDied { .. }) => seen_died = true,
            Err(e) => panic!("unexpected error for a queued call: {e:?}"),
        }
    }
    assert_actor_died(get(&after), "killed");
}

#[test]
fn kill_frees_the_name() {
    init();
    let name = unique("kill-frees");
    let c = Counter::options().name(name.clone()).remote(1);
    assert_eq!(get(&c.get_value().remote()).unwrap(), 1);
    lumen::kill(&c);
    assert!(
        eventually(|| matches!(
            lumen::get_actor::<Counter>(&name),
            Err(Error::NotFound { .. })
        )),
        "the name of a killed actor should be released"
    );
    // A new actor may take the name (retry: the release may lag).
    let mut value = None;
    let freed = eventually(|| {
        let c2 = Counter::options().name(name.clone()).remote(50);
        match get(&c2.get_value().remote()) {
            Ok(v) => {
                value = Some((v, c2.id()));
                true
            }
            Err(_) => false,
        }
    });
    assert!(freed, "could not reuse the name of a killed actor");
    let (v, id) = value.unwrap();
    assert_eq!(v, 50);
    let found: ActorHandle<Counter> = lumen::get_actor(&name).unwrap();
    assert_eq!(found.id(), id);
    assert_ne!(found.id(), c.id());
    assert_eq!(get(&found.inc().remote()).unwrap(), 51);
    // The old handle stays dead.
    assert!(matches!(
        get(&c.get_value().remote()),
        Err(Error::ActorDied { .. })
    ));
    lumen::kill(&found);
}

#[test]
fn kill_in_a_namespace_frees_only_that_name() {
    init();
    let name = unique("kill-ns");
    let ns = unique("kill-ns-space");
    let a = Counter::options()
        .name(name.clone())
        .namespace(ns.clone())
        .remote(1);
    let b = Counter::options().name(name.clone()).remote(2);
    get(&a.get_value().remote()).unwrap();
    get(&b.get_value().remote()).unwrap();
    lumen::kill(&a);
    assert!(eventually(|| matches!(
        lumen::get_actor_in::<Counter>(&name, &ns),
        Err(Error::NotFound { .. })
    )));
    let b2: ActorHandle<Counter> = lumen::get_actor(&name).unwrap();
    assert_eq!(get(&b2.get_value().remote()).unwrap(), 2);
}

// ---------------------------------------------------------------------------------------------
// Errors in methods and constructors
// ---------------------------------------------------------------------------------------------

#[test]
fn method_err_fails_only_that_call() {
    init();
    let c = Counter::remote(0);
    assert_eq!(get(&c.inc().remote()).unwrap(), 1);
    match get(&c.fail().remote()) {
        Err(e @ Error::Task { .. }) => {
            assert!(e.to_string().contains("no, value is 1"), "{e}");
            if let Error::Task { message, .. } = &e {
                assert!(message.contains("no, value is 1"), "{message}");
            }
        }
        other => panic!("expected Error::Task, got {other:?}"),
    }
    assert_eq!(get(&c.inc().remote()).unwrap(), 2);
    match get(&c.checked_add(-3).remote()) {
        Err(Error::Task { message, .. }) => {
            assert!(
                message.contains("refusing negative increment -3"),
                "{message}"
            )
        }
        other => panic!("expected Error::Task, got {other:?}"),
    }
    assert_eq!(get(&c.checked_add(10).remote()).unwrap(), 12);
    assert_eq!(get(&c.get_value().remote()).unwrap(), 12);
}

#[test]
fn method_panic_fails_only_that_call() {
    init();
    let c = Counter::remote(5);
    match get(&c.boom().remote()) {
        Err(Error::Task { message, .. }) => {
            assert!(message.contains("counter exploded at 5"), "{message}")
        }
        other => panic!("expected Error::Task, got {other:?}"),
    }
    // The actor lives on, with its state.
    assert_eq!(get(&c.inc().remote()).unwrap(), 6);
    // Several panics in a row, interleaved with good calls.
    let refs: Vec<_> = (0..5)
        .map(|_| (c.boom().remote(), c.inc().remote()))
        .collect();
    for (i, (bad, good)) in refs.iter().enumerate() {
        assert!(matches!(get(bad), Err(Error::Task { .. })));
        assert_eq!(get(good).unwrap(), 7 + i as i64);
    }
    assert_eq!(get(&c.get_value().remote()).unwrap(), 11);
}

#[test]
fn method_error_names_the_method() {
    init();
    let c = Counter::remote(0);
    match get(&c.fail().remote()) {
        Err(Error::Task { function, .. }) => {
            assert!(function.contains("fail"), "function = {function:?}")
        }
        other => panic!("expected Error::Task, got {other:?}"),
    }
}

#[test]
fn errors_do_not_break_ordering() {
    init();
    let log = Log::remote();
    let c = Counter::remote(0);
    for i in 0..100u64 {
        if i % 7 == 0 {
            let _ = c.fail().remote();
            let _ = c.boom().remote();
        }
        let _ = log.push(i).remote();
        let _ = c.inc().remote();
    }
    assert_eq!(
        get(&log.items().remote()).unwrap(),
        (0..100).collect::<Vec<u64>>()
    );
    assert_eq!(get(&c.get_value().remote()).unwrap(), 100);
}

#[test]
fn constructor_panic_kills_the_actor() {
    init();
    let a = PanicsInNew::remote("bad config".to_string());
    let r = get(&a.ping().remote());
    assert_actor_died(r.clone(), "constructor");
    if let Err(Error::ActorDied { reason, .. }) = &r {
        assert!(
            reason.contains("constructor refused: bad config"),
            "the reason should carry the panic message: {reason}"
        );
    }
    // Every later call fails the same way.
    assert_actor_died(get(&a.ping().remote()), "constructor");
}

#[test]
fn constructor_err_kills_the_actor() {
    init();
    let a = ErrInNew::remote(-1);
    let r = get(&a.x().remote());
    assert_actor_died(r.clone(), "constructor");
    if let Err(Error::ActorDied { reason, .. }) = &r {
        assert!(
            reason.contains("negative start -1 not allowed"),
            "the reason should carry the Err text: {reason}"
        );
    }
    assert_actor_died(get(&a.x().remote()), "constructor");
    // The Ok path of the same constructor works.
    let ok = ErrInNew::remote(3);
    assert_eq!(get(&ok.x().remote()).unwrap(), 3);
}

#[test]
fn many_calls_to_a_failed_constructor_all_fail() {
    init();
    let a = PanicsInNew::remote("many".to_string());
    let refs: Vec<_> = (0..20).map(|_| a.ping().remote()).collect();
    for r in &refs {
        assert!(matches!(get(r), Err(Error::ActorDied { .. })));
    }
}

#[test]
fn failed_constructor_releases_the_name() {
    init();
    let name = unique("named-ctor-fails");
    let a = ErrInNew::options().name(name.clone()).remote(-5);
    assert_actor_died(get(&a.x().remote()), "constructor");
    // A dead actor's name is released (as after kill): a new one can take it.
    let mut got = None;
    let ok = eventually(|| {
        let b = ErrInNew::options().name(name.clone()).remote(5);
        match get(&b.x().remote()) {
            Ok(v) => {
                got = Some(v);
                true
            }
            Err(_) => false,
        }
    });
    assert!(
        ok,
        "the name of an actor whose constructor failed stays taken"
    );
    assert_eq!(got, Some(5));
}

#[test]
fn panic_inside_method_of_named_actor_keeps_it_registered() {
    init();
    let name = unique("named-panic");
    let c = Counter::options().name(name.clone()).remote(0);
    assert!(matches!(get(&c.boom().remote()), Err(Error::Task { .. })));
    let c2: ActorHandle<Counter> = lumen::get_actor(&name).unwrap();
    assert_eq!(get(&c2.inc().remote()).unwrap(), 1);
}

// ---------------------------------------------------------------------------------------------
// Resources
// ---------------------------------------------------------------------------------------------

#[test]
fn default_actors_do_not_hold_cpus() {
    init();
    // The node has 4 CPUs; 10 default actors need 1 CPU to be placed, 0 while running.
    let actors: Vec<_> = (0..10i64).map(Counter::remote).collect();
    let refs: Vec<_> = actors.iter().map(|c| c.inc().remote()).collect();
    let vals = lumen::get_all(&refs).unwrap();
    assert_eq!(vals, (1..=10).collect::<Vec<i64>>());
    // Tasks still run while they all live.
    assert_eq!(get(&square::remote(12)).unwrap(), 144);
    let refs: Vec<_> = actors.iter().map(|c| c.inc().remote()).collect();
    assert_eq!(
        lumen::get_all(&refs).unwrap(),
        (2..=11).collect::<Vec<i64>>()
    );
}

#[test]
fn actor_with_custom_resource_holds_it_for_its_lifetime() {
    init();
    // Each node has res = 2. Only this test uses "res": that many actors fit, one more waits.
    let fit = 2 * common::nodes();
    let holders: Vec<_> = (0..fit)
        .map(|_| Counter::options().resource("res", 1.0).remote(0))
        .collect();
    for h in &holders {
        assert_eq!(get(&h.inc().remote()).unwrap(), 1);
    }

    let c = Counter::options().resource("res", 1.0).remote(100);
    let pending = c.inc().remote();
    match lumen::get_timeout(&pending, Duration::from_secs(1)) {
        Err(Error::GetTimeout { .. }) => {}
        other => panic!("one res actor too many should be pending, got {other:?}"),
    }
    // The others still work while c waits.
    assert_eq!(get(&holders[0].inc().remote()).unwrap(), 2);

    lumen::kill(&holders[0]);
    assert_eq!(get(&pending).unwrap(), 101);
    assert_eq!(get(&c.inc().remote()).unwrap(), 102);
    assert_eq!(get(&holders[1].inc().remote()).unwrap(), 2);
    for h in &holders[1..] {
        lumen::kill(h);
    }
    lumen::kill(&c);
}

#[test]
fn explicit_actor_resources_leave_available_resources_until_killed() {
    init();
    let hold = |m: &BTreeMap<String, f64>| m.get("hold").copied().unwrap_or(0.0);
    // One `hold` per node.
    let all = common::nodes() as f64;
    assert_eq!(hold(&lumen::cluster_resources()), all);
    assert!(eventually(|| hold(&lumen::available_resources()) == all));
    let a = Pinger::options().resource("hold", 1.0).remote();
    assert_eq!(get(&a.ping().remote()).unwrap(), 1);
    assert!(
        eventually(|| hold(&lumen::available_resources()) == all - 1.0),
        "a live actor keeps its explicit resources"
    );
    // Still held after many calls.
    for _ in 0..10 {
        get(&a.ping().remote()).unwrap();
    }
    assert_eq!(hold(&lumen::available_resources()), all - 1.0);
    lumen::kill(&a);
    assert!(
        eventually(|| hold(&lumen::available_resources()) == all),
        "a killed actor's resources should be released"
    );
}

#[test]
fn actor_with_explicit_cpu_holds_it() {
    init();
    let cpu = |m: &BTreeMap<String, f64>| m.get("CPU").copied().unwrap_or(0.0);
    let all = 4.0 * common::nodes() as f64;
    assert_eq!(cpu(&lumen::cluster_resources()), all);
    let a = Pinger::options().num_cpus(1.0).remote();
    assert_eq!(get(&a.ping().remote()).unwrap(), 1);
    // Whatever else runs concurrently, this actor's CPU is not available.
    assert!(eventually(
        || cpu(&lumen::available_resources()) <= all - 1.0
    ));
    lumen::kill(&a);
}

#[test]
fn zero_cpu_actor_works() {
    init();
    let a = Counter::options().num_cpus(0.0).remote(0);
    assert_eq!(get(&a.inc().remote()).unwrap(), 1);
}

#[test]
fn fractional_gpu_above_one_is_invalid() {
    init();
    let a = Counter::options().num_gpus(1.5).remote(0);
    let r = get(&a.inc().remote());
    assert!(
        matches!(r, Err(Error::InvalidArgument { .. })),
        "expected InvalidArgument, got {r:?}"
    );
    // Every call fails the same way.
    assert!(matches!(
        get(&a.get_value().remote()),
        Err(Error::InvalidArgument { .. })
    ));
}

#[test]
fn negative_resources_are_invalid() {
    init();
    let a = Counter::options().num_cpus(-1.0).remote(0);
    let r = get(&a.inc().remote());
    assert!(
        matches!(r, Err(Error::InvalidArgument { .. })),
        "expected InvalidArgument, got {r:?}"
    );
    let b = Counter::options().resource("res", -2.0).remote(0);
    let r = get(&b.inc().remote());
    assert!(
        matches!(r, Err(Error::InvalidArgument { .. })),
        "expected InvalidArgument, got {r:?}"
    );
}

#[test]
fn zero_max_concurrency_is_invalid() {
    init();
    let a = Counter::options().max_concurrency(0).remote(0);
    let r = get(&a.inc().remote());
    assert!(
        matches!(r, Err(Error::InvalidArgument { .. })),
        "expected InvalidArgument, got {r:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Runtime context
// ---------------------------------------------------------------------------------------------

#[test]
fn runtime_context_inside_a_method_names_the_actor() {
    init();
    let c = Counter::remote(0);
    let d = Counter::remote(0);
    assert_eq!(
        get(&c.my_actor_id().remote()).unwrap(),
        Some(c.id().to_string())
    );
    assert_eq!(
        get(&d.my_actor_id().remote()).unwrap(),
        Some(d.id().to_string())
    );
    assert!(get(&c.my_task_id_is_some().remote()).unwrap());
    // Outside actors there is no actor id.
    assert_eq!(lumen::runtime_context().actor_id(), None);
    assert_eq!(get(&actor_id_in_task::remote()).unwrap(), None);
}

// ---------------------------------------------------------------------------------------------
// Handle lifetime
// ---------------------------------------------------------------------------------------------

#[test]
fn call_submitted_before_dropping_the_last_handle_completes() {
    init();
    let c = Counter::remote(0);
    let r = c.add(5).remote();
    drop(c);
    assert_eq!(get(&r).unwrap(), 5);
}

#[test]
fn calls_submitted_right_after_creation_then_handle_dropped() {
    init();
    let refs: Vec<_> = (0..20)
        .map(|i| {
            let c = Counter::remote(i);
            let first = c.inc().remote();
            let second = c.slow_get(10).remote();
            drop(c);
            (i, first, second)
        })
        .collect();
    for (i, first, second) in refs {
        assert_eq!(get(&first).unwrap(), i + 1);
        assert_eq!(get(&second).unwrap(), i + 1);
    }
}

#[test]
fn a_clone_keeps_the_actor_alive() {
    init();
    let c = Counter::remote(0);
    let keep = c.clone();
    get(&c.inc().remote()).unwrap();
    drop(c);
    thread::sleep(Duration::from_millis(100));
    assert_eq!(get(&keep.inc().remote()).unwrap(), 2);
}

#[test]
fn a_handle_inside_a_task_keeps_the_actor_alive() {
    init();
    let c = Counter::remote(0);
    let work = inc_worker::remote(c.clone(), 10);
    drop(c);
    assert_eq!(get(&work).unwrap(), 10);
}

#[test]
fn a_handle_held_by_another_actor_keeps_it_alive() {
    init();
    let c = Counter::remote(0);
    let coord = Coordinator::remote();
    assert!(get(&coord.adopt(c.clone()).remote()).unwrap());
    drop(c);
    thread::sleep(Duration::from_millis(100));
    assert_eq!(get(&coord.bump(3).remote()).unwrap(), 3);
}

// ---------------------------------------------------------------------------------------------
// Handles passed to tasks and actors; nesting
// ---------------------------------------------------------------------------------------------

#[test]
fn handles_passed_to_tasks_share_state() {
    init();
    let c = Counter::remote(0);
    let workers: Vec<_> = (0..4).map(|_| inc_worker::remote(c.clone(), 25)).collect();
    assert_eq!(lumen::get_all(&workers).unwrap(), vec![25; 4]);
    assert_eq!(get(&c.get_value().remote()).unwrap(), 100);
}

#[test]
fn handle_passed_by_ref_to_a_task() {
    init();
    let c = Counter::remote(0);
    let h = lumen::put(c.clone());
    assert_eq!(get(&inc_worker::remote(&h, 5)).unwrap(), 5);
    assert_eq!(get(&c.get_value().remote()).unwrap(), 5);
}

#[test]
fn handles_nested_in_a_container() {
    init();
    let cs: Vec<_> = (1..=4i64).map(Counter::remote).collect();
    assert_eq!(get(&total_of::remote(cs.clone(), 0)).unwrap(), 10);
    // Calls are ordered per caller only: the task's calls come from another process (on a
    // cluster), so the driver's calls must have run before it reads.
    let incs: Vec<_> = cs.iter().map(|c| c.inc().remote()).collect();
    lumen::get_all(&incs).unwrap();
    assert_eq!(get(&total_of::remote(cs.clone(), 0)).unwrap(), 14);
}

#[test]
fn handles_moved_into_a_task_keep_their_actors_alive() {
    init();
    // The only handles are moved into the task's argument; the task uses them later.
    let cs: Vec<_> = (1..=3i64).map(Counter::remote).collect();
    let total = total_of::remote(cs, 300);
    assert_eq!(get(&total).unwrap(), 6);
}

#[test]
fn only_handle_moved_into_a_task_keeps_the_actor_alive() {
    init();
    let c = Counter::remote(33);
    let v = delayed_get_value::remote(c, 300);
    assert_eq!(get(&v).unwrap(), 33);
}

#[test]
fn handle_roundtrips_through_the_object_store() {
    init();
    let c = Counter::remote(1);
    let r = lumen::put(c.clone());
    let back: ActorHandle<Counter> = get(&r).unwrap();
    assert_eq!(back.id(), c.id());
    assert_eq!(get(&back.inc().remote()).unwrap(), 2);
}

#[test]
fn handle_passed_to_another_actor_method() {
    init();
    let c = Counter::remote(0);
    let coord = Coordinator::remote();
    assert_eq!(get(&coord.add_to(c.clone(), 7).remote()).unwrap(), 7);
    assert!(get(&coord.adopt(c.clone()).remote()).unwrap());
    assert_eq!(get(&coord.bump(5).remote()).unwrap(), 12);
    assert_eq!(get(&c.get_value().remote()).unwrap(), 12);
}

#[test]
fn actor_method_submits_tasks_and_gets_them() {
    init();
    let coord = Coordinator::remote();
    // 0 + 1 + 4 + ... + 81
    assert_eq!(get(&coord.sum_of_squares(10).remote()).unwrap(), 285);
}

#[test]
fn actor_method_creates_an_actor() {
    init();
    let coord = Coordinator::remote();
    assert_eq!(get(&coord.spawn_counter(10, 5).remote()).unwrap(), 15);
}

#[test]
fn task_creates_and_calls_an_actor() {
    init();
    assert_eq!(get(&task_creates_actor::remote(100, 10)).unwrap(), 110);
    let refs: Vec<_> = (0..4).map(|i| task_creates_actor::remote(i, 3)).collect();
    assert_eq!(lumen::get_all(&refs).unwrap(), vec![3, 4, 5, 6]);
}

#[test]
fn actors_calling_each_other_and_driver_concurrently() {
    init();
    let c = Counter::remote(0);
    let coords: Vec<_> = (0..3).map(|_| Coordinator::remote()).collect();
    for co in &coords {
        get(&co.adopt(c.clone()).remote()).unwrap();
    }
    let bumps: Vec<_> = coords.iter().map(|co| co.bump(20).remote()).collect();
    let drivers: Vec<_> = (0..20).map(|_| c.inc().remote()).collect();
    for b in &bumps {
        get(b).unwrap();
    }
    lumen::get_all(&drivers).unwrap();
    assert_eq!(get(&c.get_value().remote()).unwrap(), 80);
}

#[test]
fn many_short_lived_actors() {
    init();
    for round in 0..5 {
        let cs: Vec<_> = (0..10).map(|i| Counter::remote(i + round)).collect();
        let refs: Vec<_> = cs.iter().map(|c| c.inc().remote()).collect();
        let vals = lumen::get_all(&refs).unwrap();
        assert_eq!(vals, (1..=10).map(|i| i + round).collect::<Vec<i64>>());
    }
}

/// Options Ray refuses when an actor is created fail the actor at once, each with a message that
/// says what was wrong: restarts or task retries below -1, `get_if_exists` without a name, an
/// empty namespace (also when looking an actor up).
#[test]
fn options_ray_refuses_fail_the_actor_at_once() {
    init();
    let cases: Vec<(ActorHandle<Counter>, &[&str])> = vec![
        (
            Counter::options().max_restarts(-2).remote(0),
            &["max_restarts", "-2"],
        ),
        (
            Counter::options().max_task_retries(-3).remote(0),
            &["max_task_retries", "-3"],
        ),
        (
            Counter::options().get_if_exists(true).remote(0),
            &["get_if_exists", "name"],
        ),
        (
            Counter::options()
                .name(unique("empty-namespace"))
                .namespace("")
                .remote(0),
            &["namespace", "empty"],
        ),
    ];
    for (handle, words) in cases {
        common::expect_invalid(handle.get_value().remote(), words);
    }
    match lumen::get_actor_in::<Counter>("anything", "") {
        Err(Error::InvalidArgument { message }) => assert!(message.contains("namespace")),
        other => panic!("expected InvalidArgument for an empty namespace, got {other:?}"),
    }
    // The limits themselves are fine.
    let ok = Counter::options()
        .max_restarts(-1)
        .max_task_retries(-1)
        .remote(5);
    assert_eq!(get(&ok.get_value().remote()).unwrap(), 5);
}
