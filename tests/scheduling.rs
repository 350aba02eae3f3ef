//! Where the default policy and SPREAD put work on a cluster, after Ray's own scheduling tests:
//! `test_scheduling.py::test_load_balancing`, `test_load_balancing_with_dependencies` and
//! `test_hybrid_policy_threshold`, `test_locality_aware_leasing`,
//! `test_actor_advanced.py::test_actor_load_balancing`, and SPREAD
//! sent right after a burst of tasks and right after a node joins; and what happens to work no
//! node fits (a warning at its driver, a demand that leaves with its job) and to work a detached
//! actor submits after its job ended (it runs). The last two run a second driver in a child
//! process (this binary, running only that test).
//!
//! Each test starts its own in-process cluster ([`Session`]): nodes with their own QUIC endpoints
//! on 127.0.0.1 and their own worker processes (this binary re-executed in worker mode).
//!
//! **Modes.** Cluster only, by nature: every test here is about how work spreads over nodes.

// `new()` without arguments is the actor constructor; a `Default` impl would add nothing.
#![allow(clippy::new_without_default)]

mod common;

use common::infeasible;
use common::session::Session;
use common::{gate_is_open, open_gate, wait_until, Gauge};
use lumen::{NodeId, ObjectRef, SchedulingStrategy};
use std::collections::BTreeMap;
use std::time::Duration;

/// A generous bound for anything that should finish: a bug shows as an error, not a hang.
const LONG: Duration = Duration::from_secs(60);

fn here() -> NodeId {
    lumen::runtime_context().node_id()
}

/// Sleeps `ms` milliseconds, then returns the node that ran it.
#[lumen::remote]
fn node_after(ms: u64) -> NodeId {
    std::thread::sleep(Duration::from_millis(ms));
    here()
}

/// Reads its argument, sleeps `ms` milliseconds, then returns the node that ran it.
#[lumen::remote]
fn node_after_reading(x: Vec<f64>, ms: u64) -> NodeId {
    assert_eq!(x.len(), 1_000_000);
    std::thread::sleep(Duration::from_millis(ms));
    here()
}

/// The batches of `test_hybrid_policy_threshold`: who is running, and the gate each waits at.
static BATCHES: [(Gauge, &str); 2] = [
    (Gauge::new("hybrid-pack"), "hybrid-pack"),
    (Gauge::new("hybrid-spill"), "hybrid-spill"),
];

/// Stays in batch `b`'s gauge until its gate opens; returns the node that ran it.
#[lumen::remote]
fn node_at_gate(b: usize) -> NodeId {
    let (gauge, gate) = &BATCHES[b];
    let _inside = gauge.enter();
    while !gate_is_open(gate) {
        std::thread::sleep(Duration::from_millis(2));
    }
    here()
}

/// An actor that says where it lives.
pub struct Located;

#[lumen::remote]
impl Located {
    pub fn new() -> Self {
        Located
    }

    pub fn node(&self) -> NodeId {
        here()
    }
}

/// How many of `nodes` each id names (nodes that ran nothing count 0).
fn per_node(nodes: &[NodeId], ran: &[NodeId]) -> Vec<usize> {
    let mut counts: BTreeMap<NodeId, usize> = BTreeMap::new();
    for n in ran {
        *counts.entry(*n).or_default() += 1;
    }
    assert!(
        counts.keys().all(|n| nodes.contains(n)),
        "work ran on a node not in the cluster: {counts:?}"
    );
    nodes
        .iter()
        .map(|n| counts.get(n).copied().unwrap_or(0))
        .collect()
}

fn get_all(refs: &[ObjectRef<NodeId>]) -> Vec<NodeId> {
    refs.iter()
        .map(|r| lumen::get_timeout(r, LONG).expect("a task that reports its node"))
        .collect()
}

/// Ray's `attempt_to_load_balance`: up to `attempts` times, runs `total` tasks made by `submit`
/// at once; passes as soon as every node ran at least `minimum` of them in one attempt.
fn attempt_to_load_balance(
    nodes: &[NodeId],
    total: usize,
    minimum: usize,
    attempts: usize,
    submit: impl Fn() -> ObjectRef<NodeId>,
) {
    let mut seen = Vec::new();
    for _ in 0..attempts {
        let refs: Vec<_> = (0..total).map(|_| submit()).collect();
        let counts = per_node(nodes, &get_all(&refs));
        eprintln!("{total} tasks per node: {counts:?}");
        if counts.iter().all(|&c| c >= minimum) {
            return;
        }
        seen.push(counts);
    }
    panic!("in {attempts} attempts of {total} tasks, some node never ran {minimum}: {seen:?}");
}

fn ids(s: &Session, n: usize) -> Vec<NodeId> {
    (0..n).map(|k| s.node(k)).collect()
}

// ---------------------------------------------------------------------------------------------
// The default (hybrid) policy
// ---------------------------------------------------------------------------------------------

/// `test_load_balancing`: short tasks sent at once reach every node of three, roughly evenly.
#[test]
fn test_load_balancing() {
    let s = Session::nodes(3, 7.0);
    let nodes = ids(&s, 3);
    attempt_to_load_balance(&nodes, 100, 10, 20, || node_after::remote(10));
    attempt_to_load_balance(&nodes, 1000, 100, 20, || node_after::remote(10));
}

/// `test_load_balancing_with_dependencies`: an argument held by the driver does not keep the
/// tasks that read it on one node.
#[test]
fn test_load_balancing_with_dependencies() {
    let s = Session::nodes(3, 1.0);
    let nodes = ids(&s, 3);
    let x = lumen::put(vec![0.0f64; 1_000_000]);
    attempt_to_load_balance(&nodes, 100, 20, 20, || node_after_reading::remote(&x, 100));
}

/// A 1 MiB buffer, made where the task runs.
#[lumen::remote]
fn big_buffer(n: usize) -> lumen::Buffer<u8> {
    lumen::Buffer::from(vec![1u8; n])
}

/// Reads its argument; returns the node that ran it.
#[lumen::remote]
fn node_reading(x: lumen::Buffer<u8>) -> NodeId {
    assert_eq!(x.len(), 1 << 20);
    here()
}

/// `test_scheduling.py::test_locality_aware_leasing`: a task runs on the node that keeps its
/// argument (a 1 MiB result made there by a task pinned to it by a resource), not on the
/// driver's node where the default policy would otherwise pack it.
#[test]
fn test_locality_aware_leasing() {
    let s = Session::labelled(2, 1.0);
    let far = s.node(1);
    for _ in 0..5 {
        let x = big_buffer::options().resource("node1", 1.0).remote(1 << 20);
        let ran = lumen::get(&node_reading::remote(&x)).expect("the reading task");
        assert_eq!(ran, far, "ran away from its argument");
    }
}

/// `test_hybrid_policy_threshold`: the local node is packed up to half its CPUs, then the
/// remote one is.
#[test]
fn test_hybrid_policy_threshold() {
    const CPUS: usize = 4;
    const THRESHOLD: usize = CPUS / 2;
    let s = Session::nodes(2, CPUS as f64);
    let nodes = ids(&s, 2);

    // Each batch runs at once (all inside the gauge), so nothing frees a CPU in between.
    let batch = |b: usize, n: usize| -> Vec<usize> {
        let (gauge, gate) = &BATCHES[b];
        let refs: Vec<_> = (0..n).map(|_| node_at_gate::remote(b)).collect();
        assert!(
            wait_until(LONG, || gauge.current() == n),
            "{n} tasks were never running at once: {} were",
            gauge.current()
        );
        open_gate(gate);
        per_node(&nodes, &get_all(&refs))
    };

    // Up to the threshold, everything stays on one node.
    let counts = batch(0, THRESHOLD);
    assert_eq!(
        counts.iter().filter(|&&c| c > 0).count(),
        1,
        "{THRESHOLD} tasks on an idle cluster were not packed on one node: {counts:?}"
    );

    // Twice the threshold: half on each node.
    let counts = batch(1, 2 * THRESHOLD);
    assert_eq!(
        counts,
        vec![THRESHOLD; 2],
        "the local node was not packed to half, then the other"
    );
}

/// `test_actor_load_balancing`: default actors (one CPU to place, none held while they live)
/// spread over the nodes.
#[test]
fn test_actor_load_balancing() {
    let s = Session::nodes(3, 1.0);
    let nodes = ids(&s, 3);
    let mut seen = Vec::new();
    for _ in 0..20 {
        let actors: Vec<_> = (0..30).map(|_| Located::remote()).collect();
        let refs: Vec<_> = actors.iter().map(|a| a.node().remote()).collect();
        let counts = per_node(&nodes, &get_all(&refs));
        eprintln!("30 actors per node: {counts:?}");
        if counts.iter().all(|&c| c >= 5) {
            return;
        }
        seen.push(counts);
    }
    panic!("30 default actors never spread with at least 5 on each of 3 nodes: {seen:?}");
}

// ---------------------------------------------------------------------------------------------
// SPREAD
// ---------------------------------------------------------------------------------------------

/// 20 SPREAD tasks, run at once; each of `nodes` must run at least a quarter of them.
fn spread_twenty(nodes: &[NodeId], when: &str) {
    let refs: Vec<_> = (0..20)
        .map(|_| {
            node_after::options()
                .scheduling_strategy(SchedulingStrategy::Spread)
                .remote(20)
        })
        .collect();
    let counts = per_node(nodes, &get_all(&refs));
    eprintln!("SPREAD {when}: {counts:?}");
    assert!(
        counts.iter().all(|&c| c >= 5),
        "20 SPREAD tasks {when} did not reach every node: {counts:?}"
    );
}

/// SPREAD sent right after a burst of default tasks (which the local node packed, and whose
/// slots its owner may still hold) still alternates between the nodes.
#[test]
fn spread_right_after_a_burst_reaches_both_nodes() {
    let s = Session::nodes(2, 2.0);
    let nodes = ids(&s, 2);
    let burst: Vec<_> = (0..50).map(|_| node_after::remote(1)).collect();
    get_all(&burst);
    spread_twenty(&nodes, "right after a burst");
}

/// SPREAD sent right after a node joins uses it.
#[test]
fn spread_right_after_a_node_joins_reaches_it() {
    let mut s = Session::nodes(1, 2.0);
    let first = s.node(0);
    let warm: Vec<_> = (0..20).map(|_| node_after::remote(1)).collect();
    assert!(get_all(&warm).iter().all(|n| *n == first));
    let k = s
        .cluster_mut()
        .add_node(lumen::Config::default().num_cpus(2.0).num_gpus(0.0))
        .expect("add a node");
    let second = s.node(k);
    assert!(
        wait_until(LONG, || lumen::nodes()
            .iter()
            .any(|n| n.node_id == second && n.alive)),
        "the new node never showed up: {:?}",
        lumen::nodes()
    );
    spread_twenty(&[first, second], "right after a node joined");
}

// ---------------------------------------------------------------------------------------------
// Infeasible work
// ---------------------------------------------------------------------------------------------

/// Ray warns at the driver when a task or actor fits no node; its demand shows in the cluster's
/// status while it waits, and leaves with its job. The driver is a child process (see
/// `common::infeasible`), so that its stderr can be read and its job can end.
#[test]
fn infeasible_work_is_reported_at_the_driver_and_leaves_with_its_job() {
    if infeasible::child_driver() {
        return;
    }
    let s = Session::nodes(2, 2.0);
    let (address, token) = (s.cluster().address(), s.cluster().token());
    let demands = || -> Vec<infeasible::Shape> {
        lumen::cluster::cluster_status(Some(&address), Some(&token))
            .map(|st| {
                st.nodes
                    .iter()
                    .flat_map(|n| n.demands.iter().map(|(shape, _)| shape.clone()))
                    .collect()
            })
            .unwrap_or_default()
    };
    infeasible::check_reported_and_cleared(
        "infeasible_work_is_reported_at_the_driver_and_leaves_with_its_job",
        &address,
        &token,
        |_| {},
        demands,
    );
}

// ---------------------------------------------------------------------------------------------
// Detached actors after their job
// ---------------------------------------------------------------------------------------------

/// Set in the child driver of the test below: the cluster's address and token.
const DETACHED_DRIVER: &str = "LUMEN_TEST_DETACHED_DRIVER";

/// An actor that runs a task of its own when asked.
pub struct Spawner;

#[lumen::remote]
impl Spawner {
    pub fn new() -> Self {
        Spawner
    }

    pub fn ping(&self) -> u8 {
        1
    }

    /// Runs a task and returns the node it ran on.
    pub fn run_task(&self) -> lumen::Result<NodeId> {
        lumen::get_timeout(&node_after::remote(1), LONG)
    }
}

/// A detached actor outlives its job, and work it submits after the job ended (work of that
/// job) still runs: ending a job drops its queued work only when none of its detached actors
/// live on. The job is a child process's (this binary, running only this test).
#[test]
fn a_detached_actor_still_runs_tasks_after_its_job_ended() {
    const NAME: &str = "spawner";
    const NAMESPACE: &str = "scheduling-detached";
    if let Ok(cluster) = std::env::var(DETACHED_DRIVER) {
        let (address, token) = cluster.split_once(' ').expect("address and token");
        lumen::init_with(
            lumen::Config::default()
                .address(address)
                .token(token)
                .namespace(NAMESPACE),
        )
        .expect("the child driver connects");
        let h = Spawner::options().name(NAME).detached().remote();
        assert_eq!(lumen::get_timeout(&h.ping().remote(), LONG), Ok(1));
        lumen::shutdown();
        return;
    }
    let s = Session::nodes(2, 2.0);
    let child = std::process::Command::new(std::env::current_exe().expect("this test binary"))
        .args([
            "--exact",
            "a_detached_actor_still_runs_tasks_after_its_job_ended",
            "--test-threads=1",
        ])
        .env(
            DETACHED_DRIVER,
            format!("{} {}", s.cluster().address(), s.cluster().token()),
        )
        .output()
        .expect("run the child driver");
    assert!(
        child.status.success(),
        "the child driver failed: {}\n{}{}",
        child.status,
        String::from_utf8_lossy(&child.stdout),
        String::from_utf8_lossy(&child.stderr)
    );
    let spawner: lumen::ActorHandle<Spawner> =
        lumen::get_actor_in(NAME, NAMESPACE).expect("the detached actor outlived its job");
    let ran = lumen::get_timeout(&spawner.run_task().remote(), LONG);
    lumen::kill(&spawner);
    let node = ran.expect("a task the detached actor submitted after its job ended");
    assert!((0..2).any(|k| s.node(k) == node), "ran on {node}");
}
