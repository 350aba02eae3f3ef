//! The object store: `put`, `get`, `get_all`, `get_timeout`, `wait`, awaiting refs, and freeing
//! objects when the last ref is dropped.
//!
//! Tests that count what the store holds take [`common::exclusive`], every other test
//! [`common::shared`], and every test waits for all the tasks it started before it ends, so the
//! counts are not disturbed by neighbours.

mod common;

use common::{exclusive, shared, wait_until, PATIENCE};
use lumen::{Error, ObjectRef};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

fn init() {
    common::init(lumen::Config::default().num_cpus(4.0).num_gpus(0.0));
}

/// Every test of this file again, on a two-node local cluster with worker processes.
#[test]
fn suite_on_a_local_cluster() {
    common::rerun_on_a_local_cluster("suite_on_a_local_cluster");
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Point {
    x: f64,
    y: f64,
    label: String,
    tags: Vec<String>,
}

#[lumen::remote]
fn square(x: i64) -> i64 {
    x * x
}

#[lumen::remote]
fn nap(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

#[lumen::remote]
fn fails(msg: String) -> Result<i64, String> {
    Err(msg)
}

#[lumen::remote]
fn shift(p: Point, dx: f64) -> Point {
    Point { x: p.x + dx, ..p }
}

/// Returns a ref to an object the task itself put.
#[lumen::remote]
fn put_inside(v: i64) -> ObjectRef<i64> {
    lumen::put(v * 10)
}

/// Returns a ref to a child task's result.
#[lumen::remote]
fn child_ref(v: i64) -> ObjectRef<i64> {
    square::remote(v)
}

/// Returns the refs it got, nested in its own result.
#[lumen::remote]
fn keep_refs(refs: Vec<ObjectRef<Vec<u8>>>) -> Vec<ObjectRef<Vec<u8>>> {
    refs
}

#[lumen::remote]
async fn await_all(refs: Vec<ObjectRef<i64>>) -> Result<Vec<i64>, String> {
    let mut out = Vec::new();
    for r in refs {
        out.push(r.await.map_err(|e| e.to_string())?);
    }
    Ok(out)
}

/// A failed task with the same element type as `nap`.
#[lumen::remote]
fn fails_u64() -> Result<u64, String> {
    Err("failed u64".to_string())
}

#[lumen::remote]
fn nap_then(ms: i64) -> i64 {
    std::thread::sleep(Duration::from_millis(ms as u64));
    ms
}

#[lumen::remote]
fn make_bytes(n: usize) -> Vec<u8> {
    vec![1u8; n]
}

#[lumen::remote]
fn slow_len(v: Vec<u8>) -> usize {
    std::thread::sleep(Duration::from_millis(200));
    v.len()
}

#[lumen::remote]
fn gated_len(gate: u64, v: Vec<u8>) -> usize {
    let _ = gate;
    v.len()
}

/// `wait` from inside a sync task.
#[lumen::remote]
fn wait_inside(refs: Vec<ObjectRef<u64>>) -> (usize, usize) {
    let (ready, rest) = lumen::wait(&refs, 1, Some(Duration::from_secs(20)));
    (ready.len(), rest.len())
}

// ---------------------------------------------------------------------------------------------
// put and get.

#[test]
fn put_get_round_trips_values() {
    init();
    let _g = shared();
    assert_eq!(lumen::get(&lumen::put(7i64)).unwrap(), 7);
    assert_eq!(lumen::get(&lumen::put("text".to_string())).unwrap(), "text");
    assert_eq!(
        lumen::get(&lumen::put(vec![1u32, 2, 3])).unwrap(),
        vec![1, 2, 3]
    );
    assert_eq!(
        lumen::get(&lumen::put((1u8, -2i16, 3.5f64))).unwrap(),
        (1, -2, 3.5)
    );
    assert_eq!(lumen::get(&lumen::put(Some(4u8))).unwrap(), Some(4));
    assert_eq!(lumen::get(&lumen::put(None::<u8>)).unwrap(), None);
    let map: BTreeMap<String, Vec<i32>> =
        [("a".to_string(), vec![1]), ("b".to_string(), vec![])].into();
    assert_eq!(lumen::get(&lumen::put(map.clone())).unwrap(), map);
    lumen::get(&lumen::put(())).unwrap();
}

#[test]
fn put_get_user_struct() {
    init();
    let _g = shared();
    let p = Point {
        x: 1.5,
        y: -2.0,
        label: "p".into(),
        tags: vec!["a".into(), "b".into()],
    };
    let r = lumen::put(p.clone());
    assert_eq!(lumen::get(&r).unwrap(), p);
    let moved = common::get(&shift::remote(&r, 1.0)).unwrap();
    assert_eq!(moved, Point { x: 2.5, ..p });
}

#[test]
fn put_get_large_object() {
    init();
    let _g = shared();
    let v: Vec<u8> = (0..(8usize << 20)).map(|i| (i * 7 % 256) as u8).collect();
    let r = lumen::put(v.clone());
    let back: Vec<u8> = lumen::get(&r).unwrap();
    assert_eq!(back.len(), v.len());
    assert_eq!(back, v);
}

#[test]
fn object_ref_clone_eq_and_id() {
    init();
    let _g = shared();
    let a = lumen::put(1u8);
    let b = a.clone();
    assert_eq!(a, b);
    assert_eq!(a.id(), b.id());
    let c = lumen::put(1u8);
    assert_ne!(a, c);
    assert_ne!(a.id(), c.id());
    let ids: HashSet<_> = (0..100).map(|i| lumen::put(i).id()).collect();
    assert_eq!(ids.len(), 100, "every put gets a fresh id");
    drop(a);
    assert_eq!(lumen::get(&b).unwrap(), 1);
}

#[test]
fn object_ref_is_send_sync_and_usable_from_other_threads() {
    fn assert_send_sync<T: Send + Sync + Clone>() {}
    assert_send_sync::<ObjectRef<Vec<u8>>>();
    init();
    let _g = shared();
    let r = square::remote(12);
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let r = r.clone();
            std::thread::spawn(move || lumen::get_timeout(&r, PATIENCE).unwrap())
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), 144);
    }
}

#[test]
fn get_of_wrong_type_is_an_error_not_a_crash() {
    init();
    let _g = shared();
    // A ref smuggled through serialization with a different type parameter.
    let r = lumen::put("not a number".to_string());
    let bytes = rmp_serde::to_vec(&r).unwrap();
    let wrong: ObjectRef<u64> = rmp_serde::from_slice(&bytes).unwrap();
    assert!(common::get(&wrong).is_err());
    assert_eq!(common::get(&r).unwrap(), "not a number");
}

#[test]
fn get_failed_object_returns_the_task_error() {
    init();
    let _g = shared();
    let r = fails::remote("bad input".to_string());
    match lumen::get(&r) {
        Err(Error::Task {
            function, message, ..
        }) => {
            assert!(function.contains("fails"), "{function}");
            assert_eq!(message, "bad input");
        }
        other => panic!("expected Error::Task, got {other:?}"),
    }
    // Every get of it fails the same way.
    assert_eq!(lumen::get(&r).unwrap_err(), lumen::get(&r).unwrap_err());
}

// ---------------------------------------------------------------------------------------------
// get_all.

#[test]
fn get_all_keeps_input_order() {
    init();
    let _g = shared();
    // The first ones finish last.
    let refs: Vec<_> = [300u64, 200, 100, 0]
        .iter()
        .map(|&ms| nap::remote(ms))
        .collect();
    assert_eq!(lumen::get_all(&refs).unwrap(), vec![300, 200, 100, 0]);
}

#[test]
fn get_all_of_nothing_is_empty() {
    init();
    let _g = shared();
    let refs: Vec<ObjectRef<i64>> = Vec::new();
    assert_eq!(lumen::get_all(&refs).unwrap(), Vec::<i64>::new());
}

#[test]
fn get_all_mixes_puts_and_task_results() {
    init();
    let _g = shared();
    let refs = vec![
        lumen::put(1i64),
        square::remote(2),
        lumen::put(3i64),
        square::remote(4),
    ];
    assert_eq!(lumen::get_all(&refs).unwrap(), vec![1, 4, 3, 16]);
}

#[test]
fn get_all_with_same_ref_twice() {
    init();
    let _g = shared();
    let r = square::remote(5);
    assert_eq!(lumen::get_all(&[r.clone(), r]).unwrap(), vec![25, 25]);
}

#[test]
fn get_all_reports_a_failure() {
    init();
    let _g = shared();
    let refs = vec![
        square::remote(1),
        fails::remote("third".to_string()),
        square::remote(3),
    ];
    match lumen::get_all(&refs) {
        Err(Error::Task { message, .. }) => assert_eq!(message, "third"),
        other => panic!("expected Error::Task, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// get_timeout.

#[test]
fn get_timeout_times_out_on_slow_task() {
    init();
    let _g = shared();
    let r = nap::remote(3000);
    let start = Instant::now();
    match lumen::get_timeout(&r, Duration::from_millis(100)) {
        Err(Error::GetTimeout { object, timeout }) => {
            assert_eq!(object, r.id().to_string());
            assert_eq!(timeout, Duration::from_millis(100));
        }
        other => panic!("expected Error::GetTimeout, got {other:?}"),
    }
    assert!(start.elapsed() >= Duration::from_millis(100));
    assert!(
        start.elapsed() < Duration::from_millis(2500),
        "returned only when the task was done"
    );
    // The object is still fine afterwards.
    assert_eq!(lumen::get_timeout(&r, PATIENCE).unwrap(), 3000);
}

#[test]
fn get_timeout_returns_ready_value() {
    init();
    let _g = shared();
    let r = lumen::put(3u8);
    assert_eq!(lumen::get_timeout(&r, Duration::from_secs(5)).unwrap(), 3);
    // Even with a zero timeout, a ready object is returned.
    assert!(wait_until(PATIENCE, || lumen::get_timeout(
        &r,
        Duration::ZERO
    )
    .is_ok()));
}

#[test]
fn get_timeout_waits_long_enough() {
    init();
    let _g = shared();
    let r = nap::remote(100);
    assert_eq!(lumen::get_timeout(&r, PATIENCE).unwrap(), 100);
}

#[test]
fn get_timeout_returns_task_error_not_timeout() {
    init();
    let _g = shared();
    let r = fails::remote("nope".to_string());
    assert!(matches!(
        lumen::get_timeout(&r, PATIENCE),
        Err(Error::Task { .. })
    ));
}

// ---------------------------------------------------------------------------------------------
// wait.

#[test]
fn wait_returns_first_ready() {
    init();
    let _g = shared();
    let slow = nap::remote(3000);
    let fast = nap::remote(0);
    let refs = vec![slow.clone(), fast.clone()];
    let (ready, rest) = lumen::wait(&refs, 1, Some(Duration::from_secs(2)));
    assert_eq!(ready, vec![fast]);
    assert_eq!(rest, vec![slow.clone()]);
    common::get(&slow).unwrap();
}

#[test]
fn wait_times_out_with_partial_results() {
    init();
    let _g = shared();
    let slow = nap::remote(2000);
    let done = lumen::put(1u64);
    let refs = vec![slow.clone(), done.clone()];
    let start = Instant::now();
    let (ready, rest) = lumen::wait(&refs, 2, Some(Duration::from_millis(200)));
    assert!(start.elapsed() >= Duration::from_millis(200));
    assert_eq!(ready, vec![done]);
    assert_eq!(rest, vec![slow.clone()]);
    common::get(&slow).unwrap();
}

#[test]
fn wait_with_no_timeout_blocks_until_num_returns() {
    init();
    let _g = shared();
    let refs: Vec<_> = [200u64, 100, 300]
        .iter()
        .map(|&ms| nap::remote(ms))
        .collect();
    let (ready, rest) = lumen::wait(&refs, 3, None);
    assert_eq!(ready, refs);
    assert!(rest.is_empty());
}

/// Checks `wait`'s contract: `ready` and `rest` partition `refs`, each keeps the input order,
/// `ready` has at most `num_returns`, and everything in `ready` is in `expected_ready`.
fn check_wait_split<T>(
    refs: &[ObjectRef<T>],
    ready: &[ObjectRef<T>],
    rest: &[ObjectRef<T>],
    num_returns: usize,
    expected_ready: &[ObjectRef<T>],
) {
    assert!(ready.len() <= num_returns, "more than num_returns ready");
    assert_eq!(ready.len() + rest.len(), refs.len());
    let pos = |r: &ObjectRef<T>| {
        refs.iter()
            .position(|x| x == r)
            .expect("a ref not in the input")
    };
    let ready_pos: Vec<usize> = ready.iter().map(pos).collect();
    let rest_pos: Vec<usize> = rest.iter().map(pos).collect();
    assert!(
        ready_pos.windows(2).all(|w| w[0] < w[1]),
        "ready not in input order: {ready_pos:?}"
    );
    assert!(
        rest_pos.windows(2).all(|w| w[0] < w[1]),
        "rest not in input order: {rest_pos:?}"
    );
    for r in ready {
        assert!(
            expected_ready.contains(r),
            "{r:?} reported ready but cannot be"
        );
    }
}

#[test]
fn wait_ready_in_input_order_and_capped_at_num_returns() {
    init();
    let _g = shared();
    let refs: Vec<_> = (0..6).map(lumen::put).collect();
    // All ready: two of them, in input order; the rest keep their order.
    let (ready, rest) = lumen::wait(&refs, 2, Some(PATIENCE));
    assert_eq!(ready.len(), 2);
    check_wait_split(&refs, &ready, &rest, 2, &refs);
    // As in Ray: the first ready refs in input order, not the first to arrive.
    assert_eq!(ready, refs[..2].to_vec());
    // Interleaved ready / pending.
    let gate = nap::remote(1000);
    let mixed = vec![
        gate.clone(),
        lumen::put(1u64),
        nap::remote(1000),
        lumen::put(2u64),
        lumen::put(3u64),
    ];
    let puts = [mixed[1].clone(), mixed[3].clone(), mixed[4].clone()];
    let (ready, rest) = lumen::wait(&mixed, 2, Some(PATIENCE));
    assert_eq!(ready.len(), 2);
    check_wait_split(&mixed, &ready, &rest, 2, &puts);
    assert_eq!(ready, vec![mixed[1].clone(), mixed[3].clone()]);
    // All three puts are ready.
    let (ready, rest) = lumen::wait(&mixed, 3, Some(PATIENCE));
    assert_eq!(ready, puts.to_vec());
    assert_eq!(rest, vec![mixed[0].clone(), mixed[2].clone()]);
    lumen::get_all(&mixed).unwrap();
}

/// The loop of Ray's `wait_multiple_refs` microbenchmark and of most programs that drain
/// results: wait for one, carry on with the rest. Results come out of order; every ref is
/// returned once, only when ready, and a ref known to be ready (its `get` returned) is reported
/// ready by the next call even with a zero timeout.
#[test]
fn wait_loop_drains_a_list_one_ref_at_a_time() {
    init();
    let _g = shared();
    let naps: Vec<u64> = (0..40).map(|i| (i * 7 % 11) * 3).collect();
    let refs: Vec<_> = naps.iter().map(|&ms| nap::remote(ms)).collect();
    let mut rest = refs.clone();
    let mut seen = Vec::new();
    while !rest.is_empty() {
        let before = rest.clone();
        let (ready, left) = lumen::wait(&rest, 1, None);
        assert_eq!(ready.len(), 1);
        check_wait_split(&before, &ready, &left, 1, &before);
        assert!(
            lumen::get_timeout(&ready[0], Duration::ZERO).is_ok(),
            "reported ready before it was"
        );
        seen.push(ready[0].clone());
        rest = left;
        if let Some(next) = rest.first().filter(|_| rest.len() % 8 == 0) {
            // Made ready by a get of its own: the next zero-timeout wait must see it.
            common::get(next).unwrap();
            let (ready, _) = lumen::wait(&rest, 1, Some(Duration::ZERO));
            assert_eq!(
                ready.first(),
                rest.first(),
                "a ref read ready is not reported"
            );
        }
        if rest.len() == 20 {
            // Another list in between, and this one out of its order: answered all the same.
            let other = vec![lumen::put(1u64)];
            assert_eq!(lumen::wait(&other, 1, None).0, other);
            let reversed: Vec<_> = rest.iter().rev().cloned().collect();
            let (ready, left) = lumen::wait(&reversed, reversed.len(), Some(PATIENCE));
            check_wait_split(&reversed, &ready, &left, reversed.len(), &reversed);
            assert_eq!(ready.len(), reversed.len());
        }
    }
    let ids: HashSet<_> = seen.iter().map(|r| r.id()).collect();
    assert_eq!(ids.len(), refs.len(), "each ref returned once");
    assert!(refs.iter().all(|r| ids.contains(&r.id())));
}

#[test]
fn wait_num_returns_larger_than_refs() {
    init();
    let _g = shared();
    let refs: Vec<_> = (0..3).map(lumen::put).collect();
    let (ready, rest) = lumen::wait(&refs, 10, Some(PATIENCE));
    assert_eq!(ready, refs);
    assert!(rest.is_empty());
}

#[test]
fn wait_counts_failed_objects_as_ready() {
    init();
    let _g = shared();
    let slow = nap::remote(2000);
    let failed_u64: ObjectRef<u64> = fails_u64::remote();
    let refs = vec![slow.clone(), failed_u64.clone()];
    let (ready, rest) = lumen::wait(&refs, 1, Some(PATIENCE));
    assert_eq!(ready, vec![failed_u64]);
    assert_eq!(rest, vec![slow.clone()]);
    common::get(&slow).unwrap();
}

#[test]
fn wait_on_empty_list() {
    init();
    let _g = shared();
    let refs: Vec<ObjectRef<u8>> = Vec::new();
    let (ready, rest) = lumen::wait(&refs, 1, Some(Duration::from_millis(10)));
    assert!(ready.is_empty() && rest.is_empty());
}

#[test]
fn wait_inside_a_task() {
    init();
    let _g = shared();
    let slow = nap::remote(2000);
    let refs = vec![slow.clone(), nap::remote(0)];
    assert_eq!(common::get(&wait_inside::remote(refs)).unwrap(), (1, 1));
    common::get(&slow).unwrap();
}

// ---------------------------------------------------------------------------------------------
// Awaiting refs.

#[test]
fn await_ref_with_a_plain_executor() {
    init();
    let _g = shared();
    let r = square::remote(9);
    let v = futures::executor::block_on(async { r.clone().await }).unwrap();
    assert_eq!(v, 81);
    let put = lumen::put("hello".to_string());
    assert_eq!(
        futures::executor::block_on(async { put.await }).unwrap(),
        "hello"
    );
}

#[test]
fn await_ref_on_a_tokio_runtime() {
    init();
    let _g = shared();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let out = rt.block_on(async {
        let a = square::remote(3).await?;
        let b = nap::remote(50).await?;
        let c = lumen::put(a as u64 + b).await?;
        Ok::<_, Error>(c)
    });
    assert_eq!(out.unwrap(), 59);
}

#[test]
fn await_failed_ref_gives_the_error() {
    init();
    let _g = shared();
    let r = fails::remote("awaited failure".to_string());
    match futures::executor::block_on(async { r.await }) {
        Err(Error::Task { message, .. }) => assert_eq!(message, "awaited failure"),
        other => panic!("expected Error::Task, got {other:?}"),
    }
}

#[test]
fn await_inside_async_task() {
    init();
    let _g = shared();
    let refs = vec![square::remote(2), lumen::put(5i64), nap_i64(200)];
    assert_eq!(
        common::get(&await_all::remote(refs)).unwrap(),
        vec![4, 5, 200]
    );
}

fn nap_i64(ms: i64) -> ObjectRef<i64> {
    nap_then::remote(ms)
}

// ---------------------------------------------------------------------------------------------
// Async twins of the blocking reads, and the refusal of blocking reads in async code.

/// Gates that hold [`gated`] tasks pending until their test opens them (one per test), in
/// whichever process the task runs.
const GATE_WAIT_ASYNC: &str = "wait-async";
const GATE_REFUSALS: &str = "refusals";
const GATE_TOKIO_TEST: &str = "tokio-test";

/// Returns `v` once gate `gate` is opened: an object that stays pending until the test says so.
#[lumen::remote]
async fn gated(gate: String, v: u64) -> u64 {
    while !common::gate_is_open(&gate) {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    v
}

fn pending_until_opened(gate: &str, v: u64) -> ObjectRef<u64> {
    gated::options().num_cpus(0.01).remote(gate.to_string(), v)
}

fn open(gate: &str) {
    common::open_gate(gate);
}

#[test]
fn read_twins_work_on_a_tokio_runtime() {
    init();
    let _g = shared();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let one = square::remote(6);
    let refs: Vec<_> = (0..5).map(square::remote).collect();
    let big = lumen::put(vec![7u8; 1 << 20]);
    let failed = fails::remote("twin failure".to_string());
    rt.block_on(async {
        assert_eq!(lumen::get_async(&one).await.unwrap(), 36);
        assert_eq!(
            lumen::get_all_async(&refs).await.unwrap(),
            vec![0, 1, 4, 9, 16]
        );
        assert_eq!(lumen::get_async(&big).await.unwrap().len(), 1 << 20);
        assert_eq!(lumen::get_timeout_async(&one, PATIENCE).await.unwrap(), 36);
        match lumen::get_async(&failed).await {
            Err(Error::Task { message, .. }) => assert_eq!(message, "twin failure"),
            other => panic!("expected Error::Task, got {other:?}"),
        }
        let mixed = vec![square::remote(2), failed.clone(), lumen::put(3i64)];
        match lumen::get_all_async(&mixed).await {
            Err(Error::Task { message, .. }) => assert_eq!(message, "twin failure"),
            other => panic!("expected Error::Task, got {other:?}"),
        }
        assert!(lumen::get_all_async::<i64>(&[]).await.unwrap().is_empty());
        let summary = lumen::memory_summary_async().await.unwrap();
        assert!(summary.referenced_objects >= 8, "{summary:?}");
        assert!(summary.stored_bytes >= 1 << 20, "{summary:?}");
        // The futures own their refs: they may be spawned, and outlive the caller's refs.
        let spawned = tokio::spawn(lumen::get_async(&square::remote(11)));
        assert_eq!(spawned.await.unwrap().unwrap(), 121);
    });
}

#[tokio::test]
async fn read_twins_work_in_a_tokio_test() {
    init();
    let pending = pending_until_opened(GATE_TOKIO_TEST, 9);
    let e = lumen::get_timeout_async(&pending, Duration::from_millis(20))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::GetTimeout { .. }), "{e:?}");
    open(GATE_TOKIO_TEST);
    assert_eq!(
        lumen::get_timeout_async(&pending, PATIENCE).await.unwrap(),
        9
    );
    let (ready, rest) = lumen::wait_async(std::slice::from_ref(&pending), 1, Some(PATIENCE)).await;
    assert_eq!((ready, rest.len()), (vec![pending], 0));
}

#[test]
fn wait_async_has_the_semantics_of_wait() {
    init();
    let _g = shared();
    let pending = pending_until_opened(GATE_WAIT_ASYNC, 1);
    let refs = vec![
        pending.clone(),
        lumen::put(10u64),
        nap::remote(0),
        lumen::put(30u64),
    ];
    // Settled first, so that both calls see the same objects ready.
    common::get(&refs[2]).unwrap();
    futures::executor::block_on(async {
        for n in 0..=5 {
            let twin = lumen::wait_async(&refs, n, Some(Duration::from_millis(20))).await;
            let blocking = lumen::wait(&refs, n, Some(Duration::from_millis(20)));
            assert_eq!(twin, blocking, "num_returns {n}");
        }
        // The first ready ones in input order, at most num_returns of them.
        let (ready, rest) = lumen::wait_async(&refs, 2, None).await;
        assert_eq!(ready, vec![refs[1].clone(), refs[2].clone()]);
        assert_eq!(rest, vec![refs[0].clone(), refs[3].clone()]);
        // More than are ready: the timeout ends the wait with what is ready.
        let (ready, rest) = lumen::wait_async(&refs, 4, Some(Duration::from_millis(20))).await;
        assert_eq!(ready, refs[1..].to_vec());
        assert_eq!(rest, vec![pending.clone()]);
        let (ready, rest) = lumen::wait_async::<u64>(&[], 1, None).await;
        assert!(ready.is_empty() && rest.is_empty());
        // Without a timeout it waits for the pending one.
        open(GATE_WAIT_ASYNC);
        let (ready, rest) = lumen::wait_async(&refs, 9, Some(PATIENCE)).await;
        assert_eq!((ready, rest.len()), (refs.clone(), 0));
    });
}

#[test]
fn blocking_reads_in_a_tokio_runtime_are_refused_without_blocking() {
    init();
    let _g = shared();
    let pending = pending_until_opened(GATE_REFUSALS, 2);
    let ready = lumen::put(5u64);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let refusals = [
            ("lumen::get_async", lumen::get(&pending).map(|_| ())),
            ("lumen::get_async", lumen::get(&ready).map(|_| ())),
            (
                "lumen::get_timeout_async",
                lumen::get_timeout(&pending, PATIENCE).map(|_| ()),
            ),
            (
                "lumen::get_all_async",
                lumen::get_all(&[ready.clone(), pending.clone()]).map(|_| ()),
            ),
            (
                "lumen::memory_summary_async",
                lumen::memory_summary().map(|_| ()),
            ),
        ];
        for (twin, outcome) in refusals {
            match outcome {
                Err(Error::InvalidArgument { message }) => {
                    assert!(message.contains(twin), "{twin}: {message}");
                    assert!(message.contains("tokio runtime"), "{message}");
                }
                other => panic!("expected a refusal naming {twin}, got {other:?}"),
            }
        }
        // `wait` cannot refuse: it reports what is ready now (without a timeout, waiting would
        // never end while the gate is shut).
        let (now, rest) = lumen::wait(&[pending.clone(), ready.clone()], 2, None);
        assert_eq!((now, rest), (vec![ready.clone()], vec![pending.clone()]));
        // Inside a task spawned on the runtime too.
        let spawned = tokio::spawn({
            let pending = pending.clone();
            async move { lumen::get(&pending) }
        });
        assert!(matches!(
            spawned.await.unwrap(),
            Err(Error::InvalidArgument { .. })
        ));
    });
    open(GATE_REFUSALS);
    // Outside the runtime the same calls block as always.
    assert_eq!(common::get(&pending).unwrap(), 2);
    assert!(lumen::memory_summary().is_ok());
}

// ---------------------------------------------------------------------------------------------
// Refs owned by tasks.

#[test]
fn ref_to_object_put_by_a_task_outlives_the_task() {
    init();
    let _g = shared();
    let outer = put_inside::remote(4);
    let inner: ObjectRef<i64> = common::get(&outer).unwrap();
    // The task is finished; the object it put is still reachable through the returned ref.
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(common::get(&inner).unwrap(), 40);
}

#[test]
fn ref_to_child_result_returned_by_a_task() {
    init();
    let _g = shared();
    let inner: ObjectRef<i64> = common::get(&child_ref::remote(6)).unwrap();
    assert_eq!(common::get(&inner).unwrap(), 36);
    // It can be passed on as an argument as well.
    assert_eq!(common::get(&square::remote(&inner)).unwrap(), 1296);
}

// ---------------------------------------------------------------------------------------------
// Freeing objects.

fn stored() -> (usize, usize) {
    let s = lumen::memory_summary().unwrap();
    (s.stored_objects, s.stored_bytes)
}

fn referenced() -> usize {
    lumen::memory_summary().unwrap().referenced_objects
}

/// Waits for the neighbours' objects to go, then returns the store's baseline.
fn settle() -> (usize, usize) {
    let mut last = stored();
    let _ = wait_until(Duration::from_secs(2), || {
        std::thread::sleep(Duration::from_millis(50));
        let now = stored();
        let same = now == last;
        last = now;
        same
    });
    last
}

#[test]
fn memory_summary_reports_counts() {
    init();
    let _g = shared();
    let r = lumen::put(vec![0u8; 1000]);
    lumen::get(&r).unwrap();
    let s2 = lumen::memory_summary().unwrap();
    assert!(s2.referenced_objects >= 1);
    assert!(s2.stored_objects >= 1);
    assert!(s2.stored_bytes >= 1000);
}

#[test]
fn dropping_the_last_ref_frees_a_put_object() {
    init();
    let _g = exclusive();
    let (objects0, bytes0) = settle();
    let refs0 = referenced();
    let r = lumen::put(vec![7u8; 1 << 20]);
    assert!(
        wait_until(PATIENCE, || stored().0 > objects0
            && stored().1 >= bytes0 + (1 << 20)),
        "the object never showed up in the store: {:?}",
        lumen::memory_summary()
    );
    assert!(referenced() > refs0);
    drop(r);
    assert!(
        wait_until(PATIENCE, || stored() == (objects0, bytes0)
            && referenced() <= refs0),
        "the object was not freed: before {:?}, now {:?}",
        (objects0, bytes0, refs0),
        lumen::memory_summary()
    );
}

#[test]
fn dropping_the_last_ref_frees_a_task_result() {
    init();
    let _g = exclusive();
    let (objects0, bytes0) = settle();
    let r = make_bytes::remote(1 << 20);
    assert_eq!(common::get(&r).unwrap().len(), 1 << 20);
    assert!(stored().1 >= bytes0 + (1 << 20));
    drop(r);
    assert!(
        wait_until(PATIENCE, || stored() == (objects0, bytes0)),
        "the result was not freed: before {:?}, now {:?}",
        (objects0, bytes0),
        lumen::memory_summary()
    );
}

#[test]
fn a_clone_keeps_the_object_alive() {
    init();
    let _g = exclusive();
    let (objects0, bytes0) = settle();
    let a = lumen::put(vec![3u8; 1 << 20]);
    let b = a.clone();
    drop(a);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(lumen::get(&b).unwrap().len(), 1 << 20);
    assert!(stored().1 >= bytes0 + (1 << 20));
    drop(b);
    assert!(
        wait_until(PATIENCE, || stored() == (objects0, bytes0)),
        "not freed after the last clone: before {:?}, now {:?}",
        (objects0, bytes0),
        lumen::memory_summary()
    );
}

#[test]
fn an_argument_stays_alive_while_its_task_needs_it() {
    init();
    let _g = exclusive();
    // The ref is dropped before the task even started: the task still gets the value.
    let gate = nap::remote(500);
    let data = lumen::put(vec![9u8; 4096]);
    let r = gated_len::remote(&gate, data);
    assert_eq!(common::get(&r).unwrap(), 4096);
    let r2 = slow_len::remote(lumen::put(vec![1u8; 10]));
    assert_eq!(common::get(&r2).unwrap(), 10);
}

#[test]
fn a_ref_nested_in_another_object_keeps_it_alive() {
    init();
    let _g = exclusive();
    let (objects0, bytes0) = settle();
    let inner = lumen::put(vec![5u8; 1 << 20]);
    let outer = keep_refs::remote(vec![inner.clone()]);
    // Only the task's result refers to the inner object now.
    drop(inner);
    let got: Vec<ObjectRef<Vec<u8>>> = common::get(&outer).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(common::get(&got[0]).unwrap().len(), 1 << 20);
    drop(got);
    drop(outer);
    assert!(
        wait_until(PATIENCE, || stored() == (objects0, bytes0)),
        "not freed after every ref is gone: before {:?}, now {:?}",
        (objects0, bytes0),
        lumen::memory_summary()
    );
}

#[test]
fn many_puts_and_drops_do_not_leak() {
    init();
    let _g = exclusive();
    let (objects0, bytes0) = settle();
    for i in 0..200u32 {
        let r = lumen::put(vec![i as u8; 10_000]);
        if i % 20 == 0 {
            assert_eq!(lumen::get(&r).unwrap()[0], i as u8);
        }
    }
    let results: Vec<_> = (0..50).map(square::remote).collect();
    lumen::get_all(&results).unwrap();
    drop(results);
    assert!(
        wait_until(PATIENCE, || stored() == (objects0, bytes0)),
        "objects leaked: before {:?}, now {:?}",
        (objects0, bytes0),
        lumen::memory_summary()
    );
}

#[lumen::remote]
fn big_after_nap(ms: u64) -> Vec<u8> {
    std::thread::sleep(Duration::from_millis(ms));
    common::tally("dropped_done");
    vec![2u8; 1 << 20]
}

#[test]
fn result_of_a_task_whose_ref_was_dropped_is_freed() {
    init();
    let _g = exclusive();
    let (objects0, bytes0) = settle();
    drop(big_after_nap::remote(200));
    assert!(
        wait_until(PATIENCE, || common::tally_count("dropped_done") == 1),
        "the task never ran"
    );
    assert!(
        wait_until(PATIENCE, || stored() == (objects0, bytes0)),
        "the result of a task nobody refers to was kept: before {:?}, now {:?}",
        (objects0, bytes0),
        lumen::memory_summary()
    );
}

#[test]
fn failed_objects_are_freed_too() {
    init();
    let _g = exclusive();
    let (objects0, _) = settle();
    let refs: Vec<_> = (0..10).map(|i| fails::remote(format!("f{i}"))).collect();
    for r in &refs {
        assert!(common::get(r).is_err());
    }
    drop(refs);
    assert!(
        wait_until(PATIENCE, || stored().0 == objects0),
        "failed objects leaked: before {objects0}, now {:?}",
        lumen::memory_summary()
    );
}
