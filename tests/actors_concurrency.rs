//! Integration tests for actor concurrency (API.md section 5, Ray's "AsyncIO / concurrency for
//! actors"): async actors, threaded actors, concurrency groups, the default group and its
//! `max_concurrency`, per-call group overrides, `&mut self` exclusion, blocking reads inside async
//! methods, and the execution order of serial actors.
//!
//! Concurrency is asserted by counting, never by wall time alone: every method under test visits
//! a [`Gauge`] that counts the calls inside it at once and remembers the most it saw. A visit
//! waits until the gauge's `target` calls have been inside together (a rendezvous, so a group of
//! size n fills up exactly even on a loaded machine), then stays a little longer (the hold), so
//! that a call beyond the group's bound would get in if the bound were broken. So for a group of
//! size n fed more than n calls, `max == n` checks both that the group runs n at once and never
//! more.
//!
//! All tests share one embedded cluster (one runtime per process, never shut down), started once
//! by [`init`]. Tests run in parallel, so every test uses gauges of its own, found by a key
//! unique to the test; actor state holds no gauge (state is built in the actor from constructor
//! arguments), methods look theirs up by key.
//!
//! Inside async methods the tests use tokio's timer and `Notify`: async actor methods run on a
//! tokio runtime (API.md section 2), and tokio is one of lumen's dependencies, which Cargo lets
//! integration tests name.

// `new()` without arguments is the actor constructor; a `Default` impl would add nothing.
#![allow(clippy::new_without_default)]

mod common;

use lumen::{Error, ObjectRef};
use std::collections::{BTreeMap, BTreeSet};
use std::thread;
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// Setup and helpers
// ---------------------------------------------------------------------------------------------

/// Starts the shared cluster exactly once. Each actor needs a CPU to be placed and the slow
/// tasks used by the ordering tests need one to run, so each node gets plenty. (`init_with`
/// returns once the node is registered: an actor created right after is placed.)
fn init() {
    common::init(lumen::Config::default().num_cpus(32.0));
}

/// Every test of this file again, on a two-node local cluster with worker processes.
#[test]
fn suite_on_a_local_cluster() {
    common::rerun_on_a_local_cluster("suite_on_a_local_cluster");
}

/// A generous bound for anything that should finish: a bug shows as an error, not a hang.
const LONG: Duration = Duration::from_secs(60);

/// How long a visit waits for its gauge's rendezvous before giving up (and counting a miss).
const RENDEZVOUS: Duration = Duration::from_secs(20);

/// `get` that cannot hang the test suite.
fn get<T: serde::de::DeserializeOwned + 'static>(r: &ObjectRef<T>) -> lumen::Result<T> {
    lumen::get_timeout(r, LONG)
}

/// Every result, or a panic naming the first failure (with the cluster's view of its actors and
/// node when a call hung, to tell a lost call from an actor that never started).
fn get_each<T: serde::de::DeserializeOwned + 'static>(refs: &[ObjectRef<T>]) -> Vec<T> {
    refs.iter()
        .enumerate()
        .map(|(i, r)| {
            get(r).unwrap_or_else(|e| {
                let hung = matches!(e, Error::GetTimeout { .. });
                let state = if hung {
                    format!(
                        "\nactors: {:#?}\nnodes: {:#?}",
                        lumen::list_actors(),
                        lumen::nodes()
                    )
                } else {
                    String::new()
                };
                panic!("call #{i} failed: {e}{state}")
            })
        })
        .collect()
}

/// The error of a call that must fail (not hang, not succeed).
fn failure<T: std::fmt::Debug>(r: lumen::Result<T>) -> Error {
    match r {
        Err(Error::GetTimeout { .. }) => panic!("expected a failure, but the call hung"),
        Err(e) => e,
        Ok(v) => panic!("expected a failure, got Ok({v:?})"),
    }
}

/// The current thread, as a string a method can return.
fn thread_tag() -> String {
    format!("{:?}", thread::current().id())
}

// ---------------------------------------------------------------------------------------------
// Gauges: how many calls are inside a method at once
// ---------------------------------------------------------------------------------------------

/// Counts the calls inside a method at once, and the most it ever saw, across the processes of
/// the test's cluster (its numbers live in a file of the shared scratch folder, see
/// [`common::locked`]).
///
/// A visit enters, waits until `target` visits have been inside together (at most its
/// patience, [`RENDEZVOUS`] unless set; a visit that gives up counts a miss), stays `hold`
/// longer and leaves. Once the rendezvous has happened, later visits don't wait for it again.
struct Gauge {
    key: String,
}

/// Where each number of a gauge is in its file.
const TARGET: usize = 0;
const HOLD_MS: usize = 1;
const PATIENCE_MS: usize = 2;
const INSIDE: usize = 3;
const MAX: usize = 4;
const DONE: usize = 5;
const MISSED: usize = 6;
const RELEASED: usize = 7;

impl Gauge {
    fn with<R>(&self, f: impl FnOnce(&mut [u64; 8]) -> R) -> R {
        common::locked::<8, R>(&format!("cgauge-{}", self.key), f)
    }

    fn hold(&self) -> Duration {
        Duration::from_millis(self.with(|v| v[HOLD_MS]))
    }

    /// Enters; returns how many are inside now, this visit included.
    fn enter(&self) -> usize {
        self.with(|v| {
            v[INSIDE] += 1;
            v[MAX] = v[MAX].max(v[INSIDE]);
            if v[INSIDE] >= v[TARGET] {
                v[RELEASED] = 1;
            }
            v[INSIDE] as usize
        })
    }

    fn leave(&self) {
        self.with(|v| {
            v[INSIDE] = v[INSIDE].saturating_sub(1);
            v[DONE] += 1;
        });
    }

    /// Whether the rendezvous happened; else counts a miss if `deadline` passed.
    fn released_or_missed(&self, waited: Duration) -> bool {
        self.with(|v| {
            if v[RELEASED] == 1 {
                return true;
            }
            if waited.as_millis() as u64 > v[PATIENCE_MS] {
                v[MISSED] += 1;
                return true;
            }
            false
        })
    }

    /// A visit that waits without blocking its thread (for async methods).
    async fn visit(&self) -> usize {
        let n = self.enter();
        let start = Instant::now();
        while !self.released_or_missed(start.elapsed()) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        tokio::time::sleep(self.hold()).await;
        self.leave();
        n
    }

    /// A visit that blocks its thread (for sync methods).
    fn visit_blocking(&self) -> usize {
        let n = self.enter();
        let start = Instant::now();
        while !self.released_or_missed(start.elapsed()) {
            thread::sleep(Duration::from_millis(1));
        }
        thread::sleep(self.hold());
        self.leave();
        n
    }

    /// Enters an exclusive section: returns (inside at entry, inside just before leaving), both
    /// of which must be 1 when nothing overlaps it.
    async fn exclusive(&self) -> (usize, usize) {
        let at_entry = self.enter();
        tokio::time::sleep(self.hold()).await;
        let at_exit = self.with(|v| v[INSIDE] as usize);
        self.leave();
        (at_entry, at_exit)
    }

    fn exclusive_blocking(&self) -> (usize, usize) {
        let at_entry = self.enter();
        thread::sleep(self.hold());
        let at_exit = self.with(|v| v[INSIDE] as usize);
        self.leave();
        (at_entry, at_exit)
    }

    fn max(&self) -> usize {
        self.with(|v| v[MAX] as usize)
    }

    fn done(&self) -> usize {
        self.with(|v| v[DONE] as usize)
    }

    fn missed(&self) -> usize {
        self.with(|v| v[MISSED] as usize)
    }
}

/// Registers a fresh gauge under `key` (unique to the calling test).
fn gauge(key: &str, target: usize, hold_ms: u64) -> Gauge {
    gauge_with_patience(key, target, hold_ms, RENDEZVOUS)
}

/// A gauge whose visits wait at most `patience` for the rendezvous (to fail fast).
fn gauge_with_patience(key: &str, target: usize, hold_ms: u64, patience: Duration) -> Gauge {
    let g = Gauge {
        key: key.to_string(),
    };
    g.with(|v| {
        assert_eq!(v[TARGET], 0, "gauge key {key:?} used twice");
        v[TARGET] = target.max(1) as u64;
        v[HOLD_MS] = hold_ms;
        v[PATIENCE_MS] = patience.as_millis() as u64;
    });
    g
}

/// The gauge registered under `key` (inside a method).
fn find(key: &str) -> Gauge {
    let g = Gauge {
        key: key.to_string(),
    };
    assert!(g.with(|v| v[TARGET]) > 0, "no gauge {key:?}");
    g
}

// ---------------------------------------------------------------------------------------------
// Actor types
// ---------------------------------------------------------------------------------------------

/// Ray's `AsyncIOActor` from "Defining concurrency groups": io = 2, compute = 4, and the
/// default group; plus sync and `&mut self` methods and the blocking-read probes.
pub struct Service {
    writes: u64,
}

#[lumen::remote(concurrency_groups(io = 2, compute = 4))]
impl Service {
    pub fn new() -> Self {
        Service { writes: 0 }
    }

    #[lumen::method(concurrency_group = "io")]
    pub async fn f1(&self, key: String) -> usize {
        find(&key).visit().await
    }

    #[lumen::method(concurrency_group = "io")]
    pub async fn f2(&self, key: String) -> usize {
        find(&key).visit().await
    }

    #[lumen::method(concurrency_group = "compute")]
    pub async fn f3(&self, key: String) -> usize {
        find(&key).visit().await
    }

    #[lumen::method(concurrency_group = "compute")]
    pub async fn f4(&self, key: String) -> usize {
        find(&key).visit().await
    }

    /// In the default group.
    pub async fn f5(&self, key: String) -> usize {
        find(&key).visit().await
    }

    /// A sync method of an async actor (default group): it may block its thread.
    pub fn sync_visit(&self, key: String) -> usize {
        find(&key).visit_blocking()
    }

    /// An async `&mut self` method: must run alone.
    pub async fn exclusive(&mut self, key: String) -> (usize, usize) {
        self.writes += 1;
        find(&key).exclusive().await
    }

    /// A sync `&mut self` method of an async actor: must run alone too.
    pub fn exclusive_sync(&mut self, key: String) -> (usize, usize) {
        self.writes += 1;
        find(&key).exclusive_blocking()
    }

    pub fn writes(&self) -> u64 {
        self.writes
    }

    /// Tries each blocking read inside an async method; returns, for each, whether it was refused
    /// with `InvalidArgument` and its message. Then checks that `.await` works here.
    pub async fn blocking_reads(&self) -> Vec<(String, bool, String)> {
        let r = lumen::put(7u64);
        let mut out = Vec::new();
        let mut record = |what: &str, res: lumen::Result<u64>| {
            let (refused, text) = match res {
                Err(e @ Error::InvalidArgument { .. }) => (true, e.to_string()),
                Err(e) => (false, format!("other error: {e}")),
                Ok(v) => (false, format!("returned {v}")),
            };
            out.push((what.to_string(), refused, text));
        };
        record("get", lumen::get(&r));
        record(
            "get_timeout",
            lumen::get_timeout(&r, Duration::from_secs(1)),
        );
        record(
            "get_all",
            lumen::get_all(std::slice::from_ref(&r)).map(|v| v[0]),
        );
        record("await", r.clone().await);
        out
    }

    /// `.await`s a put object and a task submitted from inside the method.
    pub async fn awaits(&self, ms: u64) -> lumen::Result<u64> {
        let a = lumen::put(40u64).await?;
        let b = after::remote(ms, 2u32).await?;
        Ok(a + u64::from(b))
    }

    /// A blocking `get` is fine in a sync method of an async actor (it runs off the event loop).
    pub fn sync_get(&self) -> lumen::Result<u64> {
        lumen::get(&lumen::put(11u64))
    }

    pub async fn fail(&self, panic: bool) -> Result<u64, String> {
        if panic {
            panic!("async method exploded");
        }
        Err("async method refused".to_string())
    }

    pub async fn ping(&self) -> u64 {
        1
    }
}

/// A sync actor without groups: serial by default, threaded with `max_concurrency(n > 1)`.
pub struct Worker {
    log: Vec<(u32, u32)>,
}

#[lumen::remote]
impl Worker {
    pub fn new() -> Self {
        Worker { log: Vec::new() }
    }

    /// Visits the gauge; returns the thread it ran on.
    pub fn visit(&self, key: String) -> String {
        find(&key).visit_blocking();
        thread_tag()
    }

    pub fn exclusive(&mut self, key: String) -> (usize, usize) {
        find(&key).exclusive_blocking()
    }

    /// Records `seq` from `submitter`; returns how many calls ran before this one.
    pub fn push(&mut self, submitter: u32, seq: u32) -> usize {
        self.log.push((submitter, seq));
        self.log.len() - 1
    }

    pub fn log(&self) -> Vec<(u32, u32)> {
        self.log.clone()
    }
}

/// A sync actor with two groups of one thread each, besides the default group.
pub struct Pool;

#[lumen::remote(concurrency_groups(a = 1, b = 1))]
impl Pool {
    pub fn new() -> Self {
        Pool
    }

    /// In the default group.
    pub fn work(&self, key: String) -> String {
        find(&key).visit_blocking();
        thread_tag()
    }

    #[lumen::method(concurrency_group = "a")]
    pub fn in_a(&self, key: String) -> String {
        find(&key).visit_blocking();
        thread_tag()
    }

    #[lumen::method(concurrency_group = "b")]
    pub fn in_b(&self, key: String) -> String {
        find(&key).visit_blocking();
        thread_tag()
    }

    /// In the default group; its argument may be a slow ref.
    pub fn push_after(&self, v: u32) -> u32 {
        v
    }

    #[lumen::method(concurrency_group = "a")]
    pub fn exclusive_in_a(&mut self, key: String) -> (usize, usize) {
        find(&key).exclusive_blocking()
    }
}

/// Returns `v` after `ms` milliseconds (a slow producer of a ref argument).
#[lumen::remote]
fn after(ms: u64, v: u32) -> u32 {
    thread::sleep(Duration::from_millis(ms));
    v
}

// ---------------------------------------------------------------------------------------------
// Async actors: the default group
// ---------------------------------------------------------------------------------------------

#[test]
fn async_actor_runs_1000_calls_at_once_and_no_more() {
    init();
    let g = gauge("default-1000", 1000, 50);
    let a = Service::remote();
    // 1050 calls: the first 1000 must all be inside together; the last 50 only after some leave.
    let refs: Vec<_> = (0..1050)
        .map(|_| a.f5("default-1000".to_string()).remote())
        .collect();
    get_each(&refs);
    assert_eq!(g.missed(), 0, "some calls never saw 1000 calls in flight");
    assert_eq!(
        g.max(),
        1000,
        "the default group of an async actor holds 1000"
    );
    assert_eq!(g.done(), 1050);
}

#[test]
fn a_thousand_async_sleeps_overlap() {
    init();
    // target 1: no rendezvous, each call just sleeps 100 ms without blocking a thread: one after
    // another they would never overlap; on the event loop, many are asleep at once.
    let g = gauge("sleep-1000", 1, 100);
    let a = Service::remote();
    get(&a.ping().remote()).unwrap();
    let refs: Vec<_> = (0..1000)
        .map(|_| a.f5("sleep-1000".to_string()).remote())
        .collect();
    get_each(&refs);
    assert!(g.max() > 100, "only {} sleeps overlapped", g.max());
    assert_eq!(g.done(), 1000);
}

#[test]
fn max_concurrency_resizes_the_default_group_only() {
    init();
    let def = gauge("mc10-default", 10, 50);
    let io = gauge("mc10-io", 2, 50);
    let a = Service::options().max_concurrency(10).remote();
    let mut refs: Vec<_> = (0..30)
        .map(|_| a.f5("mc10-default".to_string()).remote())
        .collect();
    refs.extend((0..10).map(|_| a.f1("mc10-io".to_string()).remote()));
    get_each(&refs);
    assert_eq!(def.missed(), 0);
    assert_eq!(def.max(), 10, "max_concurrency(10) sizes the default group");
    assert_eq!(io.missed(), 0);
    assert_eq!(io.max(), 2, "the io group keeps its own size");
}

#[test]
fn max_concurrency_one_runs_async_calls_one_at_a_time() {
    init();
    let g = gauge("mc1", 1, 30);
    let a = Service::options().max_concurrency(1).remote();
    let refs: Vec<_> = (0..8).map(|_| a.f5("mc1".to_string()).remote()).collect();
    let entries = get_each(&refs);
    assert_eq!(g.max(), 1);
    assert!(
        entries.iter().all(|&n| n == 1),
        "each call should have been alone: {entries:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Async actors: named groups and per-call overrides
// ---------------------------------------------------------------------------------------------

#[test]
fn named_groups_bound_their_methods() {
    init();
    let io = gauge("groups-io", 2, 50);
    let compute = gauge("groups-compute", 4, 50);
    let a = Service::remote();
    let mut refs = Vec::new();
    for i in 0..10 {
        // f1 and f2 share the io group, f3 and f4 the compute group.
        refs.push(if i % 2 == 0 {
            a.f1("groups-io".to_string()).remote()
        } else {
            a.f2("groups-io".to_string()).remote()
        });
        refs.push(if i % 2 == 0 {
            a.f3("groups-compute".to_string()).remote()
        } else {
            a.f4("groups-compute".to_string()).remote()
        });
    }
    get_each(&refs);
    assert_eq!((io.missed(), compute.missed()), (0, 0));
    assert_eq!(io.max(), 2, "io = 2");
    assert_eq!(compute.max(), 4, "compute = 4");
    assert_eq!((io.done(), compute.done()), (10, 10));
}

#[test]
fn groups_run_side_by_side() {
    init();
    // 2 io + 4 compute + 3 default calls, all inside at once: no group waits for another.
    let g = gauge("side-by-side", 9, 50);
    let a = Service::remote();
    let mut refs = Vec::new();
    refs.extend((0..2).map(|_| a.f1("side-by-side".to_string()).remote()));
    refs.extend((0..4).map(|_| a.f3("side-by-side".to_string()).remote()));
    refs.extend((0..3).map(|_| a.f5("side-by-side".to_string()).remote()));
    get_each(&refs);
    assert_eq!(g.missed(), 0, "the groups did not all run at once");
    assert_eq!(g.max(), 9);
}

#[test]
fn per_call_group_overrides_the_methods_group() {
    init();
    let compute = gauge("override-compute", 4, 50);
    let io = gauge("override-io", 2, 50);
    let a = Service::remote();
    let mut refs = Vec::new();
    for _ in 0..6 {
        // f1 is an io method; these calls run in compute, alongside f3's.
        refs.push(
            a.f1("override-compute".to_string())
                .options()
                .concurrency_group("compute")
                .remote(),
        );
        refs.push(a.f3("override-compute".to_string()).remote());
        // `.options()` without a group keeps f1 in io; f5 (default group) moved into io.
        refs.push(a.f1("override-io".to_string()).options().remote());
        refs.push(
            a.f5("override-io".to_string())
                .options()
                .concurrency_group("io")
                .remote(),
        );
    }
    get_each(&refs);
    assert_eq!((compute.missed(), io.missed()), (0, 0));
    assert_eq!(
        compute.max(),
        4,
        "f1 overridden into compute shares compute's 4 slots with f3"
    );
    assert_eq!(io.max(), 2, "f5 overridden into io shares io's 2 slots");
}

#[test]
fn unknown_group_is_an_invalid_argument_that_lists_the_groups() {
    init();
    gauge("unknown-group", 1, 0);
    let a = Service::remote();
    let e = failure(get(&a
        .f1("unknown-group".to_string())
        .options()
        .concurrency_group("nope")
        .remote()));
    let text = e.to_string();
    assert!(
        matches!(e, Error::InvalidArgument { .. }),
        "expected InvalidArgument, got {e:?}"
    );
    for needle in ["nope", "io", "compute"] {
        assert!(text.contains(needle), "{text:?} should mention {needle:?}");
    }
    // The actor lives on.
    assert_eq!(get(&a.f1("unknown-group".to_string()).remote()).unwrap(), 1);
}

// ---------------------------------------------------------------------------------------------
// Async actors: &mut self, sync methods, blocking reads, errors
// ---------------------------------------------------------------------------------------------

#[test]
fn mut_self_methods_of_an_async_actor_run_alone() {
    init();
    let g = gauge("async-mut", 1, 20);
    let a = Service::remote();
    let mut reads = Vec::new();
    let mut writes = Vec::new();
    for i in 0..20 {
        reads.extend((0..10).map(|_| a.f5("async-mut".to_string()).remote()));
        reads.extend((0..2).map(|_| a.f1("async-mut".to_string()).remote()));
        writes.push(if i % 2 == 0 {
            a.exclusive("async-mut".to_string()).remote()
        } else {
            a.exclusive_sync("async-mut".to_string()).remote()
        });
    }
    get_each(&reads);
    for (i, (at_entry, at_exit)) in get_each(&writes).into_iter().enumerate() {
        assert_eq!(
            (at_entry, at_exit),
            (1, 1),
            "&mut self call #{i} overlapped other calls"
        );
    }
    assert!(g.max() >= 2, "&self calls should have overlapped");
    assert_eq!(get(&a.writes().remote()).unwrap(), 20);
}

#[test]
fn sync_methods_of_an_async_actor_overlap_and_may_block() {
    init();
    // 8 blocking calls inside at once: more than the event loop's worker threads on a small
    // machine, so each must have been moved off the loop rather than stall it.
    let g = gauge("async-sync", 8, 30);
    let a = Service::remote();
    let refs: Vec<_> = (0..8)
        .map(|_| a.sync_visit("async-sync".to_string()).remote())
        .collect();
    // An async call still gets through while they block.
    let ping = a.ping().remote();
    get_each(&refs);
    assert_eq!(get(&ping).unwrap(), 1);
    assert_eq!(g.missed(), 0);
    assert_eq!(g.max(), 8);
}

#[test]
fn blocking_reads_inside_an_async_method_are_refused_with_advice_to_await() {
    init();
    let a = Service::remote();
    let results = get(&a.blocking_reads().remote()).unwrap();
    assert_eq!(results.len(), 4);
    for (what, refused, text) in &results[..3] {
        assert!(
            refused,
            "{what} inside an async method should be refused with InvalidArgument: {text}"
        );
        assert!(
            text.contains("await"),
            "the refusal of {what} should say to `.await`: {text:?}"
        );
    }
    let (what, refused, text) = &results[3];
    assert_eq!(what, "await");
    assert!(!refused);
    assert_eq!(text, "returned 7", "awaiting the ref works");
}

#[test]
fn blocking_get_in_a_sync_method_of_an_async_actor_is_allowed() {
    init();
    let a = Service::remote();
    assert_eq!(get(&a.sync_get().remote()).unwrap(), 11);
}

#[test]
fn async_methods_await_puts_and_tasks() {
    init();
    let a = Service::remote();
    let refs: Vec<_> = (0..8).map(|_| a.awaits(50).remote()).collect();
    assert_eq!(get_each(&refs), vec![42; 8]);
}

#[test]
fn errors_and_panics_in_async_methods_fail_only_that_call() {
    init();
    let a = Service::remote();
    let e = failure(get(&a.fail(false).remote()));
    assert!(matches!(e, Error::Task { .. }), "got {e:?}");
    assert!(e.to_string().contains("async method refused"), "{e}");
    let e = failure(get(&a.fail(true).remote()));
    assert!(matches!(e, Error::Task { .. }), "got {e:?}");
    assert!(e.to_string().contains("async method exploded"), "{e}");
    // The actor lives on, and a &mut self call still gets the lock after the panic.
    assert_eq!(get(&a.ping().remote()).unwrap(), 1);
    gauge("after-panic", 1, 0);
    assert_eq!(
        get(&a.exclusive("after-panic".to_string()).remote()).unwrap(),
        (1, 1)
    );
}

#[test]
fn async_calls_can_be_awaited_from_the_driver() {
    init();
    let g = gauge("driver-await", 4, 20);
    let a = Service::remote();
    let refs: Vec<_> = (0..4)
        .map(|_| a.f5("driver-await".to_string()).remote())
        .collect();
    // `ObjectRef` is `IntoFuture`: it can be awaited on any executor, here futures' own.
    let values = futures::executor::block_on(async move {
        let mut out = Vec::new();
        for r in refs {
            out.push(r.await);
        }
        out
    });
    assert_eq!(values.len(), 4);
    assert!(values.iter().all(|v| v.is_ok()), "{values:?}");
    assert_eq!(g.max(), 4);
}

// ---------------------------------------------------------------------------------------------
// Threaded actors
// ---------------------------------------------------------------------------------------------

#[test]
fn threaded_actor_runs_max_concurrency_calls_at_once() {
    init();
    let g = gauge("threaded-4", 4, 100);
    let w = Worker::options().max_concurrency(4).remote();
    let refs: Vec<_> = (0..12)
        .map(|_| w.visit("threaded-4".to_string()).remote())
        .collect();
    let threads: BTreeSet<String> = get_each(&refs).into_iter().collect();
    assert_eq!(g.missed(), 0);
    assert_eq!(g.max(), 4, "max_concurrency(4): exactly 4 calls at once");
    assert!(
        threads.len() >= 4,
        "4 calls at once need 4 threads: {threads:?}"
    );
    assert_ne!(
        threads.iter().next().unwrap(),
        &thread_tag(),
        "calls run on the actor's threads, not the caller's"
    );
}

#[test]
fn mut_self_methods_of_a_threaded_actor_run_alone() {
    init();
    let reads = gauge("threaded-mut", 1, 10);
    let w = Worker::options().max_concurrency(4).remote();
    let mut r = Vec::new();
    let mut x = Vec::new();
    for _ in 0..10 {
        r.extend((0..6).map(|_| w.visit("threaded-mut".to_string()).remote()));
        x.push(w.exclusive("threaded-mut".to_string()).remote());
    }
    get_each(&r);
    for (i, v) in get_each(&x).into_iter().enumerate() {
        assert_eq!(v, (1, 1), "&mut self call #{i} overlapped other calls");
    }
    assert!(reads.max() >= 2, "&self calls should have overlapped");
}

#[test]
fn serial_actor_runs_one_call_at_a_time_on_one_thread() {
    init();
    let g = gauge("serial", 1, 10);
    let w = Worker::remote();
    let handles: Vec<_> = (0..3)
        .map(|_| {
            let w = w.clone();
            thread::spawn(move || {
                (0..5)
                    .map(|_| w.visit("serial".to_string()).remote())
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let refs: Vec<_> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    let threads: BTreeSet<String> = get_each(&refs).into_iter().collect();
    assert_eq!(g.max(), 1, "a serial actor never overlaps calls");
    assert_eq!(threads.len(), 1, "{threads:?}");
    assert_eq!(g.done(), 15);
}

#[test]
fn serial_actor_keeps_each_submitters_order_under_load() {
    init();
    const SUBMITTERS: u32 = 4;
    const CALLS: u32 = 500;
    // Submitting starts right after creation, so early calls are queued until the actor is up.
    let w = Worker::remote();
    let handles: Vec<_> = (0..SUBMITTERS)
        .map(|s| {
            let w = w.clone();
            thread::spawn(move || {
                (0..CALLS)
                    .map(|seq| w.push(s, seq).remote())
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let refs: Vec<_> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    let positions = get_each(&refs);
    let mut sorted = positions.clone();
    sorted.sort_unstable();
    assert_eq!(
        sorted,
        (0..(SUBMITTERS * CALLS) as usize).collect::<Vec<_>>(),
        "every call ran exactly once, one at a time"
    );
    let log = get(&w.log().remote()).unwrap();
    let mut per: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for (s, seq) in log {
        per.entry(s).or_default().push(seq);
    }
    assert_eq!(per.len(), SUBMITTERS as usize);
    for (s, seqs) in per {
        assert_eq!(
            seqs,
            (0..CALLS).collect::<Vec<_>>(),
            "submitter {s}'s calls ran out of order"
        );
    }
}

#[test]
fn serial_actor_keeps_order_when_the_first_call_waits_for_a_ref() {
    init();
    let w = Worker::remote();
    let slow = after::remote(300, 0u32);
    let first = w.push(7, &slow).remote();
    let rest: Vec<_> = (1..20u32).map(|i| w.push(7, i).remote()).collect();
    assert_eq!(
        get(&first).unwrap(),
        0,
        "the call waiting on a ref still ran first"
    );
    assert_eq!(get_each(&rest), (1..20usize).collect::<Vec<_>>());
    let log = get(&w.log().remote()).unwrap();
    assert_eq!(
        log,
        (0..20u32).map(|i| (7, i)).collect::<Vec<_>>(),
        "calls ran in submission order"
    );
}

// ---------------------------------------------------------------------------------------------
// Concurrency groups on sync (threaded) actors
// ---------------------------------------------------------------------------------------------

#[test]
fn sync_groups_run_on_their_own_threads_side_by_side() {
    init();
    // One call in a, one in b and one in the default group, all inside together.
    let g = gauge("pool-ab", 3, 30);
    let p = Pool::remote();
    let ra = p.in_a("pool-ab".to_string()).remote();
    let rb = p.in_b("pool-ab".to_string()).remote();
    let rd = p.work("pool-ab".to_string()).remote();
    let (ta, tb, td) = (get(&ra).unwrap(), get(&rb).unwrap(), get(&rd).unwrap());
    assert_eq!(g.missed(), 0, "groups a, b and default did not run at once");
    assert_eq!(g.max(), 3);
    let distinct: BTreeSet<_> = [&ta, &tb, &td].into_iter().collect();
    assert_eq!(
        distinct.len(),
        3,
        "each group has its own thread: {ta} {tb} {td}"
    );
}

#[test]
fn a_busy_default_group_does_not_hold_up_other_groups_of_a_sync_actor() {
    init();
    // Ray: each group has threads of its own. The default-group call is submitted first and
    // waits, inside the actor, for the calls in a and b to arrive; they must not queue behind it.
    let g = gauge_with_patience("pool-default-first", 3, 10, Duration::from_secs(5));
    let p = Pool::remote();
    let rd = p.work("pool-default-first".to_string()).remote();
    let ra = p.in_a("pool-default-first".to_string()).remote();
    let rb = p.in_b("pool-default-first".to_string()).remote();
    get_each(&[rd, ra, rb]);
    assert_eq!(
        g.missed(),
        0,
        "calls in groups a and b waited for the default group's call to finish"
    );
    assert_eq!(g.max(), 3);
}

#[test]
fn a_default_call_waiting_for_its_argument_does_not_hold_up_other_groups() {
    init();
    // The default-group call's argument is a slow task's result; a call in group a, submitted
    // after it, runs (and finishes) while the first still waits.
    gauge("pool-arg-first", 1, 0);
    let p = Pool::remote();
    let slow = after::remote(3000, 0u32);
    let first = p.push_after(&slow).remote();
    let second = p.in_a("pool-arg-first".to_string()).remote();
    let start = Instant::now();
    get(&second).unwrap();
    let took = start.elapsed();
    assert!(
        took < Duration::from_millis(2500),
        "the call in group a took {took:?}: it waited for the default group's argument"
    );
    get(&first).unwrap();
}

#[test]
fn a_sync_group_of_one_runs_its_calls_one_at_a_time() {
    init();
    let a = gauge("pool-a1", 1, 20);
    let def = gauge("pool-default1", 1, 20);
    let p = Pool::remote();
    let mut refs = Vec::new();
    for _ in 0..6 {
        refs.push(p.in_a("pool-a1".to_string()).remote());
        // A per-call override into a shares its one thread.
        refs.push(
            p.in_b("pool-a1".to_string())
                .options()
                .concurrency_group("a")
                .remote(),
        );
        // The default group of a sync actor without max_concurrency is serial too.
        refs.push(p.work("pool-default1".to_string()).remote());
    }
    get_each(&refs);
    // Calls borrow a pool thread while they run, not a thread of their own: what a group's
    // size bounds is how many of its calls run at once.
    assert_eq!(a.max(), 1, "group a has size 1");
    assert_eq!(def.max(), 1, "the default group of a sync actor has size 1");
}

#[test]
fn max_concurrency_sizes_the_default_group_of_a_sync_actor_with_groups() {
    init();
    let def = gauge("pool-mc3", 3, 50);
    let a = gauge("pool-mc3-a", 1, 20);
    let p = Pool::options().max_concurrency(3).remote();
    let mut refs: Vec<_> = (0..9)
        .map(|_| p.work("pool-mc3".to_string()).remote())
        .collect();
    refs.extend((0..4).map(|_| p.in_a("pool-mc3-a".to_string()).remote()));
    get_each(&refs);
    assert_eq!(def.missed(), 0);
    assert_eq!(def.max(), 3, "max_concurrency(3) sizes the default group");
    assert_eq!(a.max(), 1, "group a keeps its size");
}

#[test]
fn mut_self_in_a_sync_group_runs_alone_across_groups() {
    init();
    let g = gauge("pool-mut", 1, 10);
    let p = Pool::options().max_concurrency(3).remote();
    let mut reads = Vec::new();
    let mut writes = Vec::new();
    for _ in 0..10 {
        reads.extend((0..3).map(|_| p.work("pool-mut".to_string()).remote()));
        reads.push(p.in_b("pool-mut".to_string()).remote());
        writes.push(p.exclusive_in_a("pool-mut".to_string()).remote());
    }
    get_each(&reads);
    for (i, v) in get_each(&writes).into_iter().enumerate() {
        assert_eq!(
            v,
            (1, 1),
            "&mut self call #{i} overlapped calls of other groups"
        );
    }
    assert!(g.max() >= 2, "&self calls should have overlapped");
}

#[test]
fn unknown_group_on_a_sync_actor_is_an_invalid_argument() {
    init();
    gauge("pool-unknown", 1, 0);
    let p = Pool::remote();
    let e = failure(get(&p
        .work("pool-unknown".to_string())
        .options()
        .concurrency_group("c")
        .remote()));
    assert!(matches!(e, Error::InvalidArgument { .. }), "got {e:?}");
    let text = e.to_string();
    assert!(text.contains("\"c\"") && text.contains("a, b"), "{text}");
    // A sync actor without declared groups says it has none besides the default one.
    let w = Worker::remote();
    let e = failure(get(&w
        .push(0, 0)
        .options()
        .concurrency_group("io")
        .remote()));
    assert!(matches!(e, Error::InvalidArgument { .. }), "got {e:?}");
    assert!(e.to_string().contains("io"), "{e}");
    assert_eq!(get(&w.log().remote()).unwrap(), Vec::<(u32, u32)>::new());
}
