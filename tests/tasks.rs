//! Remote functions: submitting, arguments, results and errors, async tasks, nested tasks,
//! retries, the runtime context and initialization.

mod common;

use common::{Gauge, PATIENCE};
use lumen::{Error, ObjectRef};
use std::collections::HashMap;

use std::time::Duration;

/// Two CPUs: small enough that nested tasks would deadlock unless a task blocked in `get` lends
/// its CPU back.
fn init() {
    common::init(lumen::Config::default().num_cpus(2.0).num_gpus(0.0));
}

/// Every test of this file again, on a two-node local cluster with worker processes.
#[test]
fn suite_on_a_local_cluster() {
    common::rerun_on_a_local_cluster("suite_on_a_local_cluster");
}

// ---------------------------------------------------------------------------------------------
// Remote functions used below.

#[lumen::remote]
fn square(x: i64) -> i64 {
    x * x
}

#[lumen::remote]
fn add(a: i64, b: i64) -> i64 {
    a + b
}

#[lumen::remote]
fn concat(a: String, b: Vec<u8>, c: (u32, bool)) -> String {
    format!("{a}:{}:{}:{}", b.len(), c.0, c.1)
}

#[lumen::remote]
fn no_args() -> u64 {
    42
}

#[lumen::remote]
fn unit_return() {
    common::tally("unit_calls");
}

#[lumen::remote]
fn byte_len(bytes: Vec<u8>) -> usize {
    bytes.len()
}

#[lumen::remote]
fn echo_bytes(bytes: Vec<u8>) -> Vec<u8> {
    bytes
}

#[lumen::remote]
fn word_counts(text: String) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for w in text.split_whitespace() {
        *m.entry(w.to_string()).or_insert(0) += 1;
    }
    m
}

#[lumen::remote]
fn checked_div(a: i64, b: i64) -> Result<i64, String> {
    if b == 0 {
        Err(format!("cannot divide {a} by zero"))
    } else {
        Ok(a / b)
    }
}

#[lumen::remote]
fn io_fail(path: String) -> std::io::Result<String> {
    std::fs::read_to_string(path)
}

#[lumen::remote]
fn panics(msg: String) -> i64 {
    panic!("boom: {msg}");
}

#[lumen::remote]
fn panics_with_payload() -> i64 {
    std::panic::panic_any(17u32)
}

#[lumen::remote]
fn plus_one_counted(x: i64) -> i64 {
    common::tally("after_failure_runs");
    x + 1
}

#[lumen::remote]
async fn async_double(x: u64) -> u64 {
    tokio::time::sleep(Duration::from_millis(20)).await;
    x * 2
}

#[lumen::remote]
async fn async_fails(x: u64) -> Result<u64, String> {
    tokio::task::yield_now().await;
    Err(format!("async failure {x}"))
}

#[lumen::remote]
async fn async_panics() -> u64 {
    tokio::task::yield_now().await;
    panic!("async boom")
}

static ASYNC_GAUGE: Gauge = Gauge::new("async_rendezvous");

/// Sleeps on tokio timers until `target` of these have been in flight together (at most 10 s).
#[lumen::remote]
async fn async_rendezvous(target: usize) -> usize {
    let _g = ASYNC_GAUGE.enter();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while ASYNC_GAUGE.max() < target && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    ASYNC_GAUGE.current()
}

#[lumen::remote]
async fn async_slow_value(ms: u64) -> u64 {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    ms
}

#[lumen::remote]
async fn async_spawns(n: u64) -> u64 {
    let handles: Vec<_> = (0..n)
        .map(|i| tokio::spawn(async move { i * 10 }))
        .collect();
    let mut total = 0;
    for h in handles {
        total += h.await.unwrap();
    }
    total
}

/// Awaits refs passed nested in a Vec (so they are not resolved before the task runs).
#[lumen::remote]
async fn async_sum_refs(refs: Vec<ObjectRef<i64>>) -> Result<i64, String> {
    let mut total = 0;
    for r in refs {
        total += r.await.map_err(|e| e.to_string())?;
    }
    Ok(total)
}

/// Submits children from an async task and awaits them.
#[lumen::remote]
async fn async_parent(n: i64) -> Result<i64, String> {
    let refs: Vec<_> = (0..n).map(square::remote).collect();
    let mut total = 0;
    for r in refs {
        total += r.await.map_err(|e| e.to_string())?;
    }
    Ok(total)
}

/// A blocking `get` inside an async task must be refused; returns what it saw.
#[lumen::remote]
async fn async_blocking_get(refs: Vec<ObjectRef<i64>>) -> String {
    match lumen::get(&refs[0]) {
        Err(Error::InvalidArgument { message }) => format!("refused: {message}"),
        Err(e) => format!("unexpected error: {e:?}"),
        Ok(v) => format!("unexpected value: {v}"),
    }
}

/// Inside an async task the blocking calls refuse (or answer nothing) and their twins work;
/// returns the twins' answers, or what went wrong.
#[lumen::remote]
async fn async_uses_twins(refs: Vec<ObjectRef<i64>>) -> Result<(i64, usize), String> {
    match lumen::get_all(&refs) {
        Err(Error::InvalidArgument { message }) if message.contains("lumen::get_all_async") => {}
        other => return Err(format!("get_all was not refused: {other:?}")),
    }
    if !lumen::nodes().is_empty() {
        return Err("lumen::nodes() blocked inside an async task".into());
    }
    let sum = lumen::get_all_async(&refs)
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .sum();
    Ok((sum, lumen::nodes_async().await.len()))
}

/// A sync task may block, though its thread runs a tokio runtime (an actix arbiter's): it is
/// sync lumen code. Returns whether the thread had a tokio context, and the sum.
#[lumen::remote]
fn blocks_on_a_thread_with_a_tokio_context(
    refs: Vec<ObjectRef<i64>>,
) -> lumen::Result<(bool, i64)> {
    let tokio_here = tokio::runtime::Handle::try_current().is_ok();
    Ok((tokio_here, lumen::get_all(&refs)?.into_iter().sum()))
}

/// Submits `n` children and gets them all (blocking: lends its CPU while waiting).
#[lumen::remote]
fn parent_of(n: i64) -> lumen::Result<i64> {
    let refs: Vec<_> = (0..n).map(square::remote).collect();
    Ok(lumen::get_all(&refs)?.into_iter().sum())
}

/// A chain of tasks each blocked on the next one: `n + (n-1) + .. + 0`.
#[lumen::remote]
fn sum_chain(n: i64) -> lumen::Result<i64> {
    if n == 0 {
        return Ok(0);
    }
    Ok(n + lumen::get(&sum_chain::remote(n - 1))?)
}

#[lumen::remote]
fn fib(n: u32) -> lumen::Result<u64> {
    if n < 2 {
        return Ok(n as u64);
    }
    let a = fib::remote(n - 1);
    let b = fib::remote(n - 2);
    Ok(lumen::get(&a)? + lumen::get(&b)?)
}

/// Passes a ref it did not resolve on to a child task.
#[lumen::remote]
fn forward_ref(refs: Vec<ObjectRef<i64>>) -> lumen::Result<i64> {
    lumen::get(&square::remote(&refs[0]))
}

/// Returns the ids of the refs it was given, without resolving them.
#[lumen::remote]
fn ids_of(refs: Vec<ObjectRef<i64>>) -> Vec<String> {
    refs.iter().map(|r| r.id().to_string()).collect()
}

/// A `get` of refs nested in an argument, from a sync task.
#[lumen::remote]
fn sum_nested(refs: Vec<ObjectRef<i64>>) -> lumen::Result<i64> {
    Ok(lumen::get_all(&refs)?.into_iter().sum())
}

/// How many attempts of `key` ran (counted by the tasks, in whichever process they ran).
fn attempts(key: &str) -> usize {
    common::tally_count(key)
}

/// Fails (returns Err) the first `failures` attempts for `key`, then succeeds with the attempt
/// number (1-based).
#[lumen::remote]
fn flaky(key: String, failures: usize) -> Result<usize, String> {
    let attempt = common::tally(&key);
    if attempt <= failures {
        Err(format!("{key}: attempt {attempt} failed"))
    } else {
        Ok(attempt)
    }
}

/// Like `flaky`, but fails by panicking.
#[lumen::remote]
fn flaky_panic(key: String, failures: usize) -> usize {
    let attempt = common::tally(&key);
    if attempt <= failures {
        panic!("{key}: attempt {attempt} panicked");
    }
    attempt
}

/// Retry options given in the attribute.
#[lumen::remote(max_retries = 2, retry_exceptions = true)]
fn flaky_attr(key: String, failures: usize) -> Result<usize, String> {
    let attempt = common::tally(&key);
    if attempt <= failures {
        Err(format!("{key}: attempt {attempt} failed"))
    } else {
        Ok(attempt)
    }
}

/// What the runtime context says inside a task.
#[lumen::remote]
fn context_in_task() -> (String, String, Option<String>, Option<String>, Vec<u32>) {
    let ctx = lumen::runtime_context();
    (
        ctx.node_id().to_string(),
        ctx.job_id().to_string(),
        ctx.task_id().map(|t| t.to_string()),
        ctx.actor_id().map(|a| a.to_string()),
        ctx.gpu_ids(),
    )
}

#[lumen::remote]
async fn async_context_in_task() -> (String, Option<String>) {
    tokio::task::yield_now().await;
    let ctx = lumen::runtime_context();
    (
        ctx.node_id().to_string(),
        ctx.task_id().map(|t| t.to_string()),
    )
}

/// The task id seen by a parent and by its child.
#[lumen::remote]
fn parent_and_child_ids() -> lumen::Result<(Option<String>, Option<String>)> {
    let mine = lumen::runtime_context().task_id().map(|t| t.to_string());
    let child = lumen::get(&context_in_task::remote())?.2;
    Ok((mine, child))
}

// ---------------------------------------------------------------------------------------------
// Submitting and results.

#[test]
fn remote_call_returns_result() {
    init();
    let r = square::remote(3);
    assert_eq!(lumen::get(&r).unwrap(), 9);
    // Getting twice gives the same value.
    assert_eq!(lumen::get(&r).unwrap(), 9);
}

#[test]
fn function_stays_an_ordinary_local_function() {
    init();
    assert_eq!(square(5), 25);
    assert_eq!(add(2, 3), 5);
    assert_eq!(
        checked_div(7, 0),
        Err("cannot divide 7 by zero".to_string())
    );
}

#[test]
fn many_tasks_get_all_in_submission_order() {
    init();
    let refs: Vec<_> = (0..50).map(square::remote).collect();
    let expected: Vec<i64> = (0..50).map(|x| x * x).collect();
    assert_eq!(lumen::get_all(&refs).unwrap(), expected);
}

/// Counts arrivals. Async methods, so that a call waiting for arrivals leaves room for them.
#[derive(Default)]
pub struct Arrivals {
    count: std::sync::atomic::AtomicUsize,
}

#[lumen::remote]
impl Arrivals {
    pub fn new() -> Self {
        Arrivals::default()
    }

    pub async fn arrive(&self) -> usize {
        self.count.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1
    }

    /// Answers once `n` arrived (or after [`PATIENCE`], with how many did).
    pub async fn wait_for(&self, n: usize) -> usize {
        let start = std::time::Instant::now();
        let count = || self.count.load(std::sync::atomic::Ordering::SeqCst);
        while count() < n && start.elapsed() < PATIENCE {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        count()
    }
}

/// Blocks in `get` until `n` tasks arrived.
#[lumen::remote]
fn wait_for_arrivals(arrivals: lumen::ActorHandle<Arrivals>, n: usize) -> lumen::Result<usize> {
    lumen::get(&arrivals.wait_for(n).remote())
}

#[lumen::remote]
fn arrive(arrivals: lumen::ActorHandle<Arrivals>) -> lumen::Result<usize> {
    lumen::get(&arrivals.arrive().remote())
}

/// A task that blocks until tasks submitted after it have run. An owner pushes a few tasks of a
/// kind to a worker slot it leases, behind the one running there, so some of those may wait
/// behind the blocked task: they go back to the owner and run elsewhere, never deadlock. (Ray
/// pushes one task per leased worker at a time, so it has no such queue; see
/// `docs/semantics.md`.)
#[test]
fn a_task_blocked_on_tasks_submitted_after_it_is_not_stuck_behind_them() {
    init();
    let arrivals = Arrivals::options().num_cpus(0.0).remote();
    for round in 0..3 {
        // Quick tasks first, so that slots are taken and requests wait at the raylet when the
        // waiting task and the arrivals are submitted: they queue behind each other.
        let warm: Vec<_> = (0..16).map(|_| no_args::remote()).collect();
        let n = 12 * (round + 1);
        let waiting = wait_for_arrivals::remote(arrivals.clone(), n);
        let arrived: Vec<_> = (0..12).map(|_| arrive::remote(arrivals.clone())).collect();
        assert_eq!(common::get(&waiting).unwrap(), n, "round {round}");
        for r in warm.iter() {
            assert_eq!(common::get(r).unwrap(), 42);
        }
        for r in &arrived {
            common::get(r).unwrap();
        }
    }
}

/// Tasks of one kind, one after another from one thread, and in bursts from several: every
/// result arrives once, right, whichever slot it ran in (the owner reuses its leased slots).
#[test]
fn tasks_on_leased_slots_return_every_result_once() {
    init();
    for i in 0..200i64 {
        assert_eq!(common::get(&square::remote(i)).unwrap(), i * i);
    }
    let threads: Vec<_> = (0..4i64)
        .map(|t| {
            std::thread::spawn(move || {
                let refs: Vec<_> = (0..250).map(|i| add::remote(t * 1000, i)).collect();
                lumen::get_all(&refs).unwrap()
            })
        })
        .collect();
    for (t, h) in threads.into_iter().enumerate() {
        let expected: Vec<i64> = (0..250).map(|i| t as i64 * 1000 + i).collect();
        assert_eq!(h.join().unwrap(), expected);
    }
}

/// Appends `i` to the file at `path` (a line each; small appends are atomic), after a moment of
/// work: a record of every run, readable from any process of the machine.
#[lumen::remote]
fn record_run(path: String, i: u32) -> u32 {
    use std::io::Write;
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_micros(200) {
        std::hint::spin_loop();
    }
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .expect("the record file");
    f.write_all(format!("{i}\n").as_bytes()).expect("append");
    i
}

/// Bursts larger than the slots the owner holds can take leave tasks queued at raylets, and a
/// slot that frees takes one of them back to run it instead (as Ray's owner cancels the lease
/// requests it no longer needs): each task still runs exactly once, and every result arrives.
#[test]
fn tasks_taken_back_from_a_raylet_run_exactly_once() {
    init();
    let dir = std::env::temp_dir().join(format!("lumen-runs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("taken-back.txt");
    std::fs::write(&path, "").unwrap();
    let p = path.to_string_lossy().into_owned();
    let threads: Vec<_> = (0..3u32)
        .map(|t| {
            let p = p.clone();
            std::thread::spawn(move || {
                let mut all = Vec::new();
                for round in 0..5u32 {
                    let refs: Vec<_> = (0..40)
                        .map(|i| record_run::remote(p.clone(), t * 1000 + round * 100 + i))
                        .collect();
                    all.extend(lumen::get_all(&refs).unwrap());
                }
                all
            })
        })
        .collect();
    let mut expected = Vec::new();
    for (t, h) in threads.into_iter().enumerate() {
        let want: Vec<u32> = (0..5u32)
            .flat_map(|round| (0..40).map(move |i| t as u32 * 1000 + round * 100 + i))
            .collect();
        assert_eq!(h.join().unwrap(), want);
        expected.extend(want);
    }
    let mut ran: Vec<u32> = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    ran.sort_unstable();
    expected.sort_unstable();
    assert_eq!(ran, expected, "each task ran exactly once");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_thousand_small_tasks() {
    init();
    let refs: Vec<_> = (0..1000).map(|i| add::remote(i, 1)).collect();
    let out = lumen::get_all(&refs).unwrap();
    assert_eq!(out, (1..=1000).collect::<Vec<i64>>());
}

#[test]
fn submitting_from_many_driver_threads() {
    init();
    let handles: Vec<_> = (0..8i64)
        .map(|t| {
            std::thread::spawn(move || {
                let refs: Vec<_> = (0..50).map(|i| add::remote(t * 1000, i)).collect();
                lumen::get_all(&refs).unwrap()
            })
        })
        .collect();
    for (t, h) in handles.into_iter().enumerate() {
        let expected: Vec<i64> = (0..50).map(|i| t as i64 * 1000 + i).collect();
        assert_eq!(h.join().unwrap(), expected);
    }
}

#[lumen::remote]
fn runs_even_if_dropped(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    common::tally("dropped_runs");
    ms
}

#[test]
fn task_runs_even_if_its_ref_is_dropped() {
    init();
    // As in Ray, dropping the only ref does not cancel the task.
    drop(runs_even_if_dropped::remote(100));
    assert!(
        common::wait_until(PATIENCE, || common::tally_count("dropped_runs") == 1),
        "the task never ran"
    );
    // The node is fine afterwards.
    assert_eq!(common::get(&square::remote(11)).unwrap(), 121);
}

#[test]
fn zero_argument_and_unit_tasks() {
    init();
    assert_eq!(common::get(&no_args::remote()).unwrap(), 42);
    let before = common::tally_count("unit_calls");
    let r: ObjectRef<()> = unit_return::remote();
    common::get(&r).unwrap();
    assert!(common::tally_count("unit_calls") > before);
}

#[test]
fn several_argument_types() {
    init();
    let r = concat::remote("hi".to_string(), vec![1u8, 2, 3], (7u32, true));
    assert_eq!(common::get(&r).unwrap(), "hi:3:7:true");
    let counts = common::get(&word_counts::remote("a b a c a".to_string())).unwrap();
    assert_eq!(counts["a"], 3);
    assert_eq!(counts["b"], 1);
    assert_eq!(counts.len(), 3);
}

#[test]
fn large_arguments_and_results_round_trip() {
    init();
    let big: Vec<u8> = (0..(4usize << 20)).map(|i| (i % 251) as u8).collect();
    assert_eq!(
        common::get(&byte_len::remote(big.clone())).unwrap(),
        big.len()
    );
    let back = common::get(&echo_bytes::remote(big.clone())).unwrap();
    assert_eq!(back, big);
}

// ---------------------------------------------------------------------------------------------
// Refs as arguments.

#[test]
fn ref_arguments_by_reference_and_by_value() {
    init();
    let one = lumen::put(1i64);
    let two = add::remote(&one, 1); // &ObjectRef<i64> and i64
    let three = add::remote(two, &one); // ObjectRef<i64> by value
    assert_eq!(common::get(&three).unwrap(), 3);
    // `one` is still usable after being passed.
    assert_eq!(common::get(&one).unwrap(), 1);
}

#[test]
fn chained_tasks_resolve_refs_first() {
    init();
    let a = square::remote(2); // 4
    let b = square::remote(&a); // 16
    let c = add::remote(&a, &b); // 20
    let d = square::remote(c); // 400
    assert_eq!(common::get(&d).unwrap(), 400);
    assert_eq!(common::get(&b).unwrap(), 16);
}

#[test]
fn ref_argument_to_slow_task_waits_for_it() {
    init();
    let slow = async_slow_value::remote(300);
    let doubled = async_double::remote(&slow);
    assert_eq!(common::get(&doubled).unwrap(), 600);
}

#[test]
fn nested_refs_are_passed_as_refs_not_values() {
    init();
    let refs: Vec<ObjectRef<i64>> = (1..=3).map(lumen::put).collect();
    let ids: Vec<String> = refs.iter().map(|r| r.id().to_string()).collect();
    assert_eq!(common::get(&ids_of::remote(refs.clone())).unwrap(), ids);
    // A sync task can get them itself.
    assert_eq!(common::get(&sum_nested::remote(refs.clone())).unwrap(), 6);
    // And pass one on to a child as a top-level argument.
    assert_eq!(common::get(&forward_ref::remote(refs)).unwrap(), 1);
}

#[test]
fn nested_refs_to_pending_task_results() {
    init();
    let refs: Vec<ObjectRef<i64>> = vec![square::remote(2), square::remote(3)];
    assert_eq!(common::get(&sum_nested::remote(refs)).unwrap(), 13);
}

// ---------------------------------------------------------------------------------------------
// Errors.

#[test]
fn err_result_becomes_task_error() {
    init();
    assert_eq!(common::get(&checked_div::remote(9, 3)).unwrap(), 3);
    match common::get(&checked_div::remote(9, 0)) {
        Err(Error::Task {
            function,
            message,
            node,
        }) => {
            assert!(function.contains("checked_div"), "function = {function:?}");
            assert!(
                message.contains("cannot divide 9 by zero"),
                "message = {message:?}"
            );
            assert!(common::is_node(&node), "node = {node:?}");
        }
        other => panic!("expected Error::Task, got {other:?}"),
    }
}

#[test]
fn task_error_display_names_function_and_message() {
    init();
    let e = common::get(&checked_div::remote(1, 0)).unwrap_err();
    let text = e.to_string();
    assert!(text.contains("checked_div"), "{text}");
    assert!(text.contains("cannot divide 1 by zero"), "{text}");
}

#[test]
fn io_error_result_becomes_task_error() {
    init();
    let e = common::get(&io_fail::remote("/definitely/not/here.txt".to_string())).unwrap_err();
    match e {
        Error::Task { function, .. } => assert!(function.contains("io_fail"), "{function}"),
        other => panic!("expected Error::Task, got {other:?}"),
    }
}

#[test]
fn panic_becomes_task_error_with_message() {
    init();
    match common::get(&panics::remote("xyzzy".to_string())) {
        Err(Error::Task {
            function, message, ..
        }) => {
            assert!(function.contains("panics"), "function = {function:?}");
            assert!(message.contains("boom: xyzzy"), "message = {message:?}");
            // Where it panicked, as Rust's own panic message says it.
            assert!(
                message.starts_with("panicked at tests/tasks.rs:"),
                "message = {message:?}"
            );
        }
        other => panic!("expected Error::Task, got {other:?}"),
    }
    // The node is still fine after a panic.
    assert_eq!(common::get(&square::remote(6)).unwrap(), 36);
}

#[test]
fn panic_with_non_string_payload_is_a_task_error() {
    init();
    match common::get(&panics_with_payload::remote()) {
        Err(Error::Task { function, .. }) => {
            assert!(function.contains("panics_with_payload"), "{function}")
        }
        other => panic!("expected Error::Task, got {other:?}"),
    }
}

#[test]
fn many_panics_do_not_exhaust_workers() {
    init();
    let refs: Vec<_> = (0..20).map(|i| panics::remote(format!("p{i}"))).collect();
    for (i, r) in refs.iter().enumerate() {
        let e = common::get(r).unwrap_err();
        assert!(e.to_string().contains(&format!("boom: p{i}")), "{e}");
    }
    let refs: Vec<_> = (0..10).map(square::remote).collect();
    assert_eq!(
        lumen::get_all(&refs).unwrap(),
        (0..10).map(|x| x * x).collect::<Vec<_>>()
    );
}

#[test]
fn failed_argument_propagates_same_error() {
    init();
    let failed = checked_div::remote(5, 0);
    let original = common::get(&failed).unwrap_err();
    let before = common::tally_count("after_failure_runs");
    let downstream = plus_one_counted::remote(&failed);
    let e = common::get(&downstream).unwrap_err();
    assert_eq!(e, original);
    // Propagates through a chain too, without running the downstream functions.
    let further = plus_one_counted::remote(plus_one_counted::remote(downstream));
    assert_eq!(common::get(&further).unwrap_err(), original);
    assert_eq!(common::tally_count("after_failure_runs"), before);
}

#[test]
fn failed_argument_from_pending_task_propagates() {
    init();
    // The argument is not done yet when the downstream task is submitted.
    let failed = async_fails::remote(3);
    let downstream = async_double::remote(&failed);
    match common::get(&downstream) {
        Err(Error::Task { message, .. }) => {
            assert!(message.contains("async failure 3"), "{message}")
        }
        other => panic!("expected Error::Task, got {other:?}"),
    }
    assert_eq!(
        common::get(&downstream).unwrap_err(),
        common::get(&failed).unwrap_err()
    );
}

#[test]
fn get_all_fails_when_one_fails() {
    init();
    let refs = vec![
        checked_div::remote(4, 2),
        checked_div::remote(4, 0),
        checked_div::remote(4, 1),
    ];
    match lumen::get_all(&refs) {
        Err(Error::Task { message, .. }) => assert!(message.contains("divide 4 by zero")),
        other => panic!("expected Error::Task, got {other:?}"),
    }
    assert_eq!(common::get(&refs[0]).unwrap(), 2);
    assert_eq!(common::get(&refs[2]).unwrap(), 4);
}

// ---------------------------------------------------------------------------------------------
// Async tasks.

#[test]
fn async_task_with_tokio_timer() {
    init();
    assert_eq!(common::get(&async_double::remote(21)).unwrap(), 42);
}

#[test]
fn async_task_can_tokio_spawn() {
    init();
    assert_eq!(common::get(&async_spawns::remote(5)).unwrap(), 100);
}

#[test]
fn async_task_err_and_panic_become_task_errors() {
    init();
    match common::get(&async_fails::remote(9)) {
        Err(Error::Task {
            function, message, ..
        }) => {
            assert!(function.contains("async_fails"), "{function}");
            assert!(message.contains("async failure 9"), "{message}");
        }
        other => panic!("expected Error::Task, got {other:?}"),
    }
    match common::get(&async_panics::remote()) {
        Err(Error::Task {
            function, message, ..
        }) => {
            assert!(function.contains("async_panics"), "{function}");
            assert!(message.contains("async boom"), "{message}");
        }
        other => panic!("expected Error::Task, got {other:?}"),
    }
}

#[test]
fn async_tasks_overlap_on_the_event_loop() {
    init();
    // Small CPU shares, so that admission lets them all in at once: sleeping on tokio timers,
    // they must all be in flight together (more of them than the node has CPUs or threads).
    let refs: Vec<_> = (0..20)
        .map(|_| async_rendezvous::options().num_cpus(0.01).remote(20))
        .collect();
    for r in &refs {
        common::get(r).unwrap();
    }
    assert_eq!(
        ASYNC_GAUGE.max(),
        20,
        "async tasks did not all overlap on the event loop"
    );
}

#[test]
fn async_task_awaits_refs() {
    init();
    let refs = vec![lumen::put(1i64), square::remote(3), lumen::put(5i64)];
    assert_eq!(common::get(&async_sum_refs::remote(refs)).unwrap(), 15);
}

#[test]
fn async_task_await_of_failed_ref_reports_error() {
    init();
    let refs = vec![lumen::put(1i64), checked_div::remote(1, 0)];
    match common::get(&async_sum_refs::remote(refs)) {
        Err(Error::Task { message, .. }) => {
            assert!(message.contains("divide 1 by zero"), "{message}")
        }
        other => panic!("expected Error::Task, got {other:?}"),
    }
}

#[test]
fn async_task_submits_and_awaits_children() {
    init();
    assert_eq!(common::get(&async_parent::remote(5)).unwrap(), 30);
}

#[test]
fn blocking_get_inside_async_task_is_refused() {
    init();
    let out = common::get(&async_blocking_get::remote(vec![lumen::put(3i64)])).unwrap();
    assert!(out.starts_with("refused: "), "{out}");
    assert!(
        out.contains(".await"),
        "message should tell to .await: {out}"
    );
}

#[test]
fn async_task_uses_the_twins_and_its_blocking_calls_refuse() {
    init();
    let refs = vec![square::remote(3), lumen::put(4i64)];
    assert_eq!(
        common::get(&async_uses_twins::remote(refs)).unwrap(),
        (13, common::nodes())
    );
}

#[test]
fn blocking_get_inside_a_sync_task_on_a_tokio_thread_is_allowed() {
    init();
    let refs = vec![square::remote(5), lumen::put(1i64)];
    assert_eq!(
        common::get(&blocks_on_a_thread_with_a_tokio_context::remote(refs)).unwrap(),
        (true, 26)
    );
}

// Unhandled errors (Ray's `test_failure.py::test_unhandled_errors`): a failed object whose
// last ref goes before anyone read it is printed at its owner, once.

#[lumen::remote]
fn fails_with(why: String) -> Result<i64, String> {
    Err(why)
}

/// An actor whose method fails with the reason it is given.
#[derive(Default)]
pub struct FailsWith;

#[lumen::remote]
impl FailsWith {
    pub fn new() -> Self {
        FailsWith
    }

    pub fn fail(&self, why: String) -> Result<i64, String> {
        Err(why)
    }
}

/// Whether this process printed an unhandled error whose message is `why`.
fn printed_unhandled(why: &str) -> bool {
    lumen::testing::unhandled_errors()
        .iter()
        .any(|e| e.ends_with(&format!(": {why}")))
}

#[test]
fn test_unhandled_errors() {
    init();
    let actor = FailsWith::remote();
    // Dropped unread (before or after they failed): reported, a task's and an actor call's.
    drop(fails_with::remote("unread task".to_string()));
    drop(actor.fail("unread call".to_string()).remote());
    assert!(
        common::wait_until(PATIENCE, || printed_unhandled("unread task")
            && printed_unhandled("unread call")),
        "not reported: {:?}",
        lumen::testing::unhandled_errors()
    );

    // Read, then dropped: not reported. Read by `get`, by `get_all`, or by a task that took it
    // as its argument (and failed with the same error, which is read).
    let got = fails_with::remote("read by get".to_string());
    let call = actor.fail("read by get_all".to_string()).remote();
    assert!(common::get(&got).is_err());
    assert!(lumen::get_all(std::slice::from_ref(&call)).is_err());
    let taken = fails_with::remote("read as an argument".to_string());
    assert!(common::get(&plus_one_counted::remote(&taken)).is_err());
    drop((got, call, taken));
    // Their reads were over before the drops, so a report would have come with the drop; one
    // more unread object, dropped last, shows that reports are still made.
    let last = fails_with::remote("unread, last".to_string());
    drop(last);
    assert!(common::wait_until(PATIENCE, || printed_unhandled(
        "unread, last"
    )));
    for read in ["read by get", "read by get_all", "read as an argument"] {
        assert!(
            !printed_unhandled(read),
            "{read:?} was read, yet reported: {:?}",
            lumen::testing::unhandled_errors()
        );
    }
    // Each is reported once.
    let times = |why: &str| {
        lumen::testing::unhandled_errors()
            .iter()
            .filter(|e| e.ends_with(&format!(": {why}")))
            .count()
    };
    assert_eq!(times("unread task"), 1);
    assert_eq!(times("unread call"), 1);
}

/// Ray's `list_jobs` (the state API): this driver's job is listed, running, with when it
/// started; on a cluster, with the program the nodes run for it.
#[test]
fn list_jobs_shows_this_driver_running() {
    init();
    let me = lumen::runtime_context().job_id();
    let jobs = lumen::list_jobs().expect("list_jobs");
    let mine = jobs
        .iter()
        .find(|j| j.job_id == me)
        .unwrap_or_else(|| panic!("this job is not listed: {jobs:?}"));
    assert_eq!(mine.status, "RUNNING");
    assert_eq!(mine.end_time_ms, None);
    assert!(mine.start_time_ms > 0);
    assert_eq!(mine.entrypoint.is_some(), common::on_cluster(), "{mine:?}");
    let again = futures::executor::block_on(lumen::list_jobs_async()).expect("list_jobs_async");
    assert!(again.iter().any(|j| j.job_id == me));
    // In async code the blocking form refuses, naming its twin.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    match runtime.block_on(async { lumen::list_jobs() }) {
        Err(Error::InvalidArgument { message }) => {
            assert!(message.contains("list_jobs_async"), "{message}")
        }
        other => panic!("list_jobs in async code: {other:?}"),
    }
}

#[lumen::remote]
fn process_id() -> u32 {
    std::process::id()
}

/// Ray's `list_workers`: this driver is listed once, as the driver, with its pid; on a cluster,
/// the process a task ran in is listed as this job's worker on its node.
#[test]
fn list_workers_shows_this_driver_and_its_worker_processes() {
    init();
    let me = lumen::runtime_context().job_id();
    let here = std::process::id();
    // On a cluster, a task first, so that this job has a worker process somewhere.
    let worker_pid = common::on_cluster().then(|| common::get(&process_id::remote()).unwrap());
    let workers = lumen::list_workers().expect("list_workers");
    let mine: Vec<_> = workers.iter().filter(|w| w.job_id == me).collect();
    let drivers: Vec<_> = mine.iter().filter(|w| w.worker_type == "DRIVER").collect();
    assert_eq!(drivers.len(), 1, "{mine:?}");
    assert_eq!(drivers[0].pid, Some(here));
    assert!(
        !mine
            .iter()
            .any(|w| w.worker_type == "WORKER" && w.pid == Some(here)),
        "this process is listed twice: {mine:?}"
    );
    if let Some(pid) = worker_pid {
        assert!(
            mine.iter().any(|w| w.worker_type == "WORKER"
                && w.pid == Some(pid)
                && w.alive
                && w.node_id.is_some_and(|n| common::is_node(&n.to_string()))),
            "the task's process {pid} is not listed: {mine:?}"
        );
    }
    assert!(futures::executor::block_on(lumen::list_workers_async())
        .expect("list_workers_async")
        .iter()
        .any(|w| w.job_id == me));
}

/// Ray's `runtime_env` (`env_vars`, `working_dir`): `Config::env` reaches the tasks on every
/// node of a two-node local cluster with worker processes, and a relative path reads the
/// driver's working directory there; embedded, the variable must be the process's own
/// (`common::runtime_env`; the drivers are child processes).
#[test]
fn runtime_env_reaches_every_worker() {
    if common::runtime_env::child_driver() {
        return;
    }
    if common::on_cluster() {
        // The parent part runs once, from the embedded run; its children cover both modes.
        return;
    }
    for target in ["local", "embedded", "embedded-without"] {
        common::runtime_env::check("runtime_env_reaches_every_worker", target, |_| {});
    }
}

/// Set in the child driver of [`unhandled_errors_print_at_the_driver_unless_ignored`]: where it
/// runs (`embedded`, or `cluster` for a two-node local cluster with worker processes).
const UNHANDLED_CHILD: &str = "LUMEN_TEST_UNHANDLED_CHILD";

/// What an unhandled error's line on stderr starts with.
const UNHANDLED_LINE: &str =
    "lumen: Unhandled error (suppress with LUMEN_IGNORE_UNHANDLED_ERRORS=1)";

/// A driver in a child process whose task fails on a worker node and whose failed ref it drops
/// after a `wait` (which only looks): its stderr has the unhandled-error line, with the task's
/// error, once; with `LUMEN_IGNORE_UNHANDLED_ERRORS=1` it has none. Embedded and on a two-node
/// cluster with worker processes.
#[test]
fn unhandled_errors_print_at_the_driver_unless_ignored() {
    if let Ok(mode) = std::env::var(UNHANDLED_CHILD) {
        let config = lumen::Config::default().num_cpus(1.0);
        let config = match mode.as_str() {
            "cluster" => config.local_cluster(2),
            _ => config,
        };
        lumen::init_with(config).expect("the child's cluster starts");
        let failed = fails_with::remote("dropped by the child".to_string());
        let (ready, _) = lumen::wait(&[failed], 1, Some(PATIENCE));
        assert_eq!(ready.len(), 1, "the failing task did not finish");
        // The report is made here, where the last ref goes.
        drop(ready);
        eprintln!("the child dropped its failed ref");
        lumen::shutdown();
        return;
    }
    if common::on_cluster() {
        // The parent part runs once, from the embedded run; its children cover both modes.
        return;
    }
    for mode in ["embedded", "cluster"] {
        for ignored in [false, true] {
            let mut child =
                std::process::Command::new(std::env::current_exe().expect("test binary"));
            child
                .args([
                    "--exact",
                    "unhandled_errors_print_at_the_driver_unless_ignored",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(UNHANDLED_CHILD, mode)
                .env_remove("LUMEN_TEST_LOCAL_CLUSTER")
                .env_remove("LUMEN_ADDRESS");
            if ignored {
                child.env("LUMEN_IGNORE_UNHANDLED_ERRORS", "1");
            } else {
                child.env_remove("LUMEN_IGNORE_UNHANDLED_ERRORS");
            }
            let out = child.output().expect("run the child driver");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                out.status.success() && stderr.contains("the child dropped its failed ref"),
                "{mode} child driver failed ({}):\n{stderr}",
                out.status
            );
            let lines: Vec<&str> = stderr
                .lines()
                .filter(|l| l.starts_with(UNHANDLED_LINE))
                .collect();
            if ignored {
                assert!(lines.is_empty(), "{mode}, ignored, yet printed: {lines:?}");
            } else {
                assert_eq!(lines.len(), 1, "{mode}: {stderr}");
                assert!(
                    lines[0].contains("fails_with failed on node")
                        && lines[0].contains(": dropped by the child"),
                    "{mode}: {}",
                    lines[0]
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Nested tasks.

#[test]
fn task_submits_and_gets_children() {
    init();
    // 0 + 1 + 4 + 9
    assert_eq!(common::get(&parent_of::remote(4)).unwrap(), 14);
}

#[test]
fn parents_blocked_on_children_lend_their_cpus() {
    init();
    // Four parents on a 2-CPU node, each waiting for four children: without CPU lending the
    // parents would hold every CPU and the children could never start.
    let parents: Vec<_> = (0..4).map(|_| parent_of::remote(4)).collect();
    for p in &parents {
        assert_eq!(common::get(p).unwrap(), 14);
    }
}

#[test]
fn deep_chain_of_blocked_tasks() {
    init();
    assert_eq!(common::get(&sum_chain::remote(12)).unwrap(), 78);
}

#[test]
fn recursive_fibonacci() {
    init();
    assert_eq!(common::get(&fib::remote(8)).unwrap(), 21);
}

// ---------------------------------------------------------------------------------------------
// Retries.

#[test]
fn retry_exceptions_retries_until_success() {
    init();
    let key = "retry_until_success";
    let r = flaky::options()
        .max_retries(2)
        .retry_exceptions(true)
        .remote(key.to_string(), 2);
    assert_eq!(common::get(&r).unwrap(), 3);
    assert_eq!(attempts(key), 3);
}

#[test]
fn retry_exceptions_gives_up_after_max_retries() {
    init();
    let key = "retry_gives_up";
    let r = flaky::options()
        .max_retries(1)
        .retry_exceptions(true)
        .remote(key.to_string(), 5);
    match common::get(&r) {
        Err(Error::Task { message, .. }) => {
            assert!(
                message.contains("attempt 2 failed"),
                "last error is kept: {message}"
            )
        }
        other => panic!("expected Error::Task, got {other:?}"),
    }
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(attempts(key), 2);
}

#[test]
fn no_retry_without_retry_exceptions() {
    init();
    let key = "no_retry_exceptions";
    let r = flaky::options()
        .max_retries(3)
        .retry_exceptions(false)
        .remote(key.to_string(), 1);
    match common::get(&r) {
        Err(Error::Task { message, .. }) => assert!(message.contains("attempt 1 failed")),
        other => panic!("expected Error::Task, got {other:?}"),
    }
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(attempts(key), 1);
}

#[test]
fn application_errors_are_not_retried_by_default() {
    init();
    let key = "default_no_retry";
    assert!(common::get(&flaky::remote(key.to_string(), 1)).is_err());
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(attempts(key), 1);
}

#[test]
fn zero_max_retries_runs_once() {
    init();
    let key = "zero_max_retries";
    let r = flaky::options()
        .max_retries(0)
        .retry_exceptions(true)
        .remote(key.to_string(), 1);
    assert!(common::get(&r).is_err());
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(attempts(key), 1);
}

#[test]
fn panics_are_retried_with_retry_exceptions() {
    init();
    let key = "retry_panics";
    let r = flaky_panic::options()
        .max_retries(3)
        .retry_exceptions(true)
        .remote(key.to_string(), 2);
    assert_eq!(common::get(&r).unwrap(), 3);
    assert_eq!(attempts(key), 3);
}

#[test]
fn infinite_retries_until_success() {
    init();
    let key = "retry_forever";
    let r = flaky::options()
        .max_retries(-1)
        .retry_exceptions(true)
        .remote(key.to_string(), 6);
    assert_eq!(common::get(&r).unwrap(), 7);
}

#[test]
fn retry_options_from_the_attribute() {
    init();
    let ok = "attr_retry_ok";
    assert_eq!(
        common::get(&flaky_attr::remote(ok.to_string(), 2)).unwrap(),
        3
    );
    let fail = "attr_retry_fail";
    assert!(common::get(&flaky_attr::remote(fail.to_string(), 3)).is_err());
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(attempts(fail), 3);
    // Options override the attribute.
    let off = "attr_retry_off";
    let r = flaky_attr::options()
        .retry_exceptions(false)
        .remote(off.to_string(), 1);
    assert!(common::get(&r).is_err());
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(attempts(off), 1);
}

// ---------------------------------------------------------------------------------------------
// Runtime context and initialization.

#[test]
fn runtime_context_in_driver() {
    init();
    let ctx = lumen::runtime_context();
    assert!(ctx.task_id().is_none());
    assert!(ctx.actor_id().is_none());
    assert!(ctx.gpu_ids().is_empty());
    assert!(common::is_node(&ctx.node_id().to_string()));
    assert!(lumen::try_runtime_context().is_ok());
}

#[test]
fn runtime_context_in_task() {
    init();
    let driver = lumen::runtime_context();
    let (node, job, task, actor, gpus) = common::get(&context_in_task::remote()).unwrap();
    assert!(common::is_node(&node), "{node}");
    assert_eq!(job, driver.job_id().to_string());
    assert!(task.is_some());
    assert!(actor.is_none());
    assert!(gpus.is_empty());
    // Each task has its own id.
    let (.., task2, _, _) = common::get(&context_in_task::remote()).unwrap();
    assert!(task2.is_some());
    assert_ne!(task, task2);
}

#[test]
fn runtime_context_in_async_task() {
    init();
    let (node, task) = common::get(&async_context_in_task::remote()).unwrap();
    assert!(common::is_node(&node), "{node}");
    assert!(task.is_some());
}

#[test]
fn nested_task_has_its_own_task_id() {
    init();
    let (parent, child) = common::get(&parent_and_child_ids::remote()).unwrap();
    assert!(parent.is_some() && child.is_some());
    assert_ne!(parent, child);
}

#[test]
fn second_init_is_refused() {
    init();
    assert!(lumen::is_initialized());
    assert_eq!(lumen::init(), Err(Error::AlreadyInitialized));
    assert_eq!(
        lumen::init_with(lumen::Config::default().num_cpus(1.0)),
        Err(Error::AlreadyInitialized)
    );
    // Still running with the first config.
    assert!(lumen::is_initialized());
    assert_eq!(
        lumen::cluster_resources()["CPU"],
        2.0 * common::nodes() as f64
    );
    assert_eq!(common::get(&square::remote(7)).unwrap(), 49);
}

#[test]
fn get_with_patience_helper_bound() {
    // Sanity of the helper used everywhere: a ready object comes back well within it.
    init();
    let r = lumen::put(5u8);
    assert_eq!(lumen::get_timeout(&r, PATIENCE).unwrap(), 5);
}

/// Remote functions may be declared inside a function body (as tests and doc examples do), and
/// two of the same name in different bodies of one module stay distinct.
#[test]
fn remote_functions_declared_in_function_bodies_are_distinct() {
    init();
    #[lumen::remote]
    fn local_helper(x: u32) -> u32 {
        x + 1
    }
    assert_eq!(lumen::get(&local_helper::remote(1)).unwrap(), 2);
    assert_eq!(local_twin(), 1000);
}

fn local_twin() -> u32 {
    #[lumen::remote]
    fn local_helper(x: u32) -> u32 {
        x * 1000
    }
    lumen::get(&local_helper::remote(1)).unwrap()
}

/// Actor types may be declared inside a function body too.
#[test]
fn actors_declared_in_function_bodies_work() {
    init();
    struct Local {
        n: u32,
    }
    #[lumen::remote]
    impl Local {
        fn new(n: u32) -> Self {
            Local { n }
        }
        fn double(&self) -> u32 {
            self.n * 2
        }
    }
    let a = Local::remote(21);
    assert_eq!(lumen::get(&a.double().remote()).unwrap(), 42);
}

/// Ray refuses `max_retries` below -1 when the task is submitted; -1 (forever) is fine.
#[test]
fn max_retries_below_minus_one_is_refused() {
    init();
    common::expect_invalid(
        square::options().max_retries(-5).remote(3),
        &["max_retries", "-5"],
    );
    let forever = square::options().max_retries(-1).remote(3);
    assert_eq!(common::get(&forever).unwrap(), 9);
}
