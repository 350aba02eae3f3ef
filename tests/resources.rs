//! Resources and scheduling: CPUs, GPUs, memory and custom resources, admission limits,
//! validation of amounts, infeasible tasks, the cluster's state and scheduling strategies.
//!
//! Concurrency is measured by counting tasks in flight (never by wall-clock). Tests that measure
//! the whole node's CPUs, GPUs or availability take [`common::exclusive`]; the others take
//! [`common::shared`] and use custom resources of their own.

mod common;

use common::{exclusive, shared, wait_until, Gauge, PATIENCE};
use lumen::{Error, NodeId, ObjectRef, SchedulingStrategy};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

fn init() {
    common::init(
        lumen::Config::default()
            .num_cpus(4.0)
            .num_gpus(2.0)
            .resource("node0", 2.0)
            .resource("rc_conc", 2.0)
            .resource("rc_frac", 1.0)
            .resource("rc_attr", 1.0)
            .resource("rs_special", 1.0)
            .resource("r_avail", 1.0),
    );
}

/// Every test of this file again, on a two-node local cluster with worker processes.
#[test]
fn suite_on_a_local_cluster() {
    common::rerun_on_a_local_cluster("suite_on_a_local_cluster");
}

// ---------------------------------------------------------------------------------------------
// Gauges, one per test, and the remote functions that use them.

static GAUGES: [Gauge; 16] = [
    Gauge::new("g0"),
    Gauge::new("g1"),
    Gauge::new("g2"),
    Gauge::new("g3"),
    Gauge::new("g4"),
    Gauge::new("g5"),
    Gauge::new("g6"),
    Gauge::new("g7"),
    Gauge::new("g8"),
    Gauge::new("g9"),
    Gauge::new("g10"),
    Gauge::new("g11"),
    Gauge::new("g12"),
    Gauge::new("g13"),
    Gauge::new("g14"),
    Gauge::new("g15"),
];

const G_DEFAULT_CPU: usize = 0;
const G_TWO_CPUS: usize = 1;
const G_HALF_CPU: usize = 2;
const G_CUSTOM: usize = 3;
const G_CUSTOM_FRAC: usize = 4;
const G_ONE_GPU: usize = 5;
const G_HALF_GPU: usize = 6;
const G_ATTR: usize = 7;
const G_GPU_IDS: usize = 8;
const G_WHOLE_NODE: usize = 9;

/// Enters gauge `g`, waits (up to `patience_ms`) until `target` tasks are in it together,
/// lingers `linger_ms`, and returns its GPU ids.
#[lumen::remote]
fn hold(g: usize, target: usize, patience_ms: u64, linger_ms: u64) -> Vec<u32> {
    GAUGES[g].rendezvous(
        target,
        Duration::from_millis(patience_ms),
        Duration::from_millis(linger_ms),
    );
    lumen::runtime_context().gpu_ids()
}

/// Gets every `hold` result (each task's GPU ids).
fn run_held(refs: Vec<ObjectRef<Vec<u32>>>) -> Vec<Vec<u32>> {
    refs.iter().map(|r| common::get(r).unwrap()).collect()
}

/// Runs until flag `flag` is released (at most a minute); returns its GPU ids. Flags are
/// counted in the shared scratch folder, so the driver sees them whichever process runs this.
#[lumen::remote]
fn hold_until_released(flag: usize) -> Vec<u32> {
    common::tally(&format!("started-{flag}"));
    let deadline = Instant::now() + Duration::from_secs(60);
    while common::tally_count(&format!("release-{flag}")) == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    lumen::runtime_context().gpu_ids()
}

#[lumen::remote]
fn counted() -> u8 {
    common::tally("runs");
    1
}

/// The driver's node: tests about one node's admission keep their tasks there (so that on a
/// cluster they measure a node, not the cluster).
fn on_here() -> SchedulingStrategy {
    SchedulingStrategy::NodeAffinity {
        node_id: lumen::runtime_context().node_id(),
        soft: false,
    }
}

/// The cluster's total of a resource each node has `per_node` of.
fn all(per_node: f64) -> f64 {
    per_node * common::nodes() as f64
}

#[lumen::remote]
fn noop() -> u8 {
    1
}

#[lumen::remote]
fn gpu_ids() -> Vec<u32> {
    lumen::runtime_context().gpu_ids()
}

#[lumen::remote]
fn where_am_i() -> String {
    lumen::runtime_context().node_id().to_string()
}

/// Defaults in the attribute.
#[lumen::remote(num_cpus = 2, num_gpus = 1, resources(rs_special = 1), max_retries = 1)]
fn heavy() -> Vec<u32> {
    lumen::runtime_context().gpu_ids()
}

/// A custom resource default in the attribute limits concurrency (rc_attr = 1 on the node).
#[lumen::remote(num_cpus = 0.5, resources(rc_attr = 1))]
fn attr_limited() -> usize {
    GAUGES[G_ATTR].rendezvous(2, Duration::from_millis(500), Duration::from_millis(50))
}

/// Holds the whole node's CPUs and waits for children that need a CPU each.
#[lumen::remote]
fn whole_node_parent(children: u64) -> lumen::Result<u64> {
    let refs: Vec<_> = (0..children)
        .map(|_| hold::remote(G_WHOLE_NODE, 1, 0, 10))
        .collect();
    Ok(lumen::get_all(&refs)?.len() as u64)
}

/// [`whole_node_parent`], draining its children with a `wait` loop instead of one `get`.
#[lumen::remote]
fn whole_node_wait_loop_parent(children: u64) -> u64 {
    let mut rest: Vec<_> = (0..children)
        .map(|_| hold::remote(G_WHOLE_NODE, 1, 0, 10))
        .collect();
    let mut drained = 0;
    while !rest.is_empty() {
        let (ready, left) = lumen::wait(&rest, 1, None);
        drained += ready.len() as u64;
        rest = left;
    }
    drained
}

fn amount(map: &BTreeMap<String, f64>, key: &str) -> f64 {
    map.get(key).copied().unwrap_or(0.0)
}

/// Waits until every resource is free again (after neighbours' tasks finish).
fn wait_idle() {
    let total = lumen::cluster_resources();
    assert!(
        wait_until(PATIENCE, || {
            let avail = lumen::available_resources();
            [
                "CPU",
                "GPU",
                "node0",
                "rc_conc",
                "rc_frac",
                "rc_attr",
                "rs_special",
                "r_avail",
            ]
            .iter()
            .all(|k| amount(&avail, k) == amount(&total, k))
        }),
        "resources never came back: total {total:?}, available {:?}",
        lumen::available_resources()
    );
}

fn expect_pending<T: std::fmt::Debug + serde::de::DeserializeOwned + 'static>(r: &ObjectRef<T>) {
    match lumen::get_timeout(r, Duration::from_millis(500)) {
        Err(Error::GetTimeout { object, .. }) => assert_eq!(object, r.id().to_string()),
        other => panic!("expected the task to stay pending, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// The cluster's state.

#[test]
fn cluster_resources_report_the_config() {
    init();
    let _g = shared();
    let total = lumen::cluster_resources();
    assert_eq!(total["CPU"], all(4.0));
    assert_eq!(total["GPU"], all(2.0));
    assert_eq!(total["node0"], all(2.0));
    assert_eq!(total["rc_conc"], all(2.0));
    assert_eq!(total["r_avail"], all(1.0));
    assert!(amount(&total, "memory") > 0.0, "{total:?}");
    assert!(amount(&total, "object_store_memory") > 0.0, "{total:?}");
}

#[test]
fn nodes_lists_every_node() {
    init();
    let _g = shared();
    let nodes = lumen::nodes();
    assert_eq!(nodes.len(), common::nodes(), "{nodes:?}");
    let here = lumen::runtime_context().node_id();
    let n = nodes
        .iter()
        .find(|n| n.node_id == here)
        .expect("the driver's node is listed");
    assert!(nodes.iter().all(|n| n.alive));
    assert!(!n.address.is_empty());
    assert_eq!(n.resources["CPU"], 4.0);
    assert_eq!(n.resources["GPU"], 2.0);
    assert_eq!(n.resources["node0"], 2.0);
    for (k, v) in &n.available {
        let total = n.resources.get(k).copied();
        assert!(
            total.is_some(),
            "available {k} is not a resource of the node"
        );
        assert!(*v >= 0.0 && *v <= total.unwrap(), "{k}: {v} of {total:?}");
    }
}

#[test]
fn cluster_state_twins_work_on_a_tokio_runtime_and_in_a_plain_executor() {
    init();
    let _g = exclusive();
    wait_idle();
    let check = || async {
        let nodes = lumen::nodes_async().await;
        assert_eq!(nodes.len(), common::nodes(), "{nodes:?}");
        assert!(nodes
            .iter()
            .any(|n| n.node_id == lumen::runtime_context().node_id()));
        assert!(nodes.iter().all(|n| n.resources["node0"] == 2.0));
        let total = lumen::cluster_resources_async().await;
        assert_eq!(
            (total["CPU"], total["GPU"], total["node0"]),
            (all(4.0), all(2.0), all(2.0))
        );
        let avail = lumen::available_resources_async().await;
        assert_eq!(
            (avail["CPU"], avail["GPU"], avail["node0"]),
            (all(4.0), all(2.0), all(2.0))
        );
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(check());
    futures::executor::block_on(check());
}

#[test]
fn cluster_state_calls_in_a_tokio_runtime_answer_nothing_without_blocking() {
    init();
    let _g = shared();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // They cannot return an error: each logs the refusal once and answers as before init.
        for _ in 0..2 {
            assert!(lumen::nodes().is_empty());
            let none = BTreeMap::from([("CPU".to_string(), 0.0), ("GPU".to_string(), 0.0)]);
            assert_eq!(lumen::cluster_resources(), none);
            assert_eq!(lumen::available_resources(), none);
        }
    });
    assert_eq!(lumen::nodes().len(), common::nodes());
    assert_eq!(lumen::cluster_resources()["CPU"], all(4.0));
}

/// The slots an owner leases for its tasks go back to the raylet once it has nothing more to run
/// there: after a burst, every CPU is available again.
#[test]
fn leased_slots_go_back_when_their_owner_has_nothing_to_run() {
    init();
    let _g = exclusive();
    wait_idle();
    let refs: Vec<_> = (0..200).map(|_| noop::remote()).collect();
    lumen::get_all(&refs).expect("the burst");
    wait_idle();
}

#[test]
fn available_resources_when_idle_equal_the_total() {
    init();
    let _g = exclusive();
    wait_idle();
    let avail = lumen::available_resources();
    assert_eq!(avail["CPU"], all(4.0));
    assert_eq!(avail["GPU"], all(2.0));
    assert_eq!(avail["node0"], all(2.0));
    for node in lumen::nodes() {
        assert_eq!(amount(&node.available, "CPU"), 4.0);
        assert_eq!(amount(&node.available, "GPU"), 2.0);
    }
}

#[test]
fn available_resources_reflect_a_running_task() {
    init();
    let _g = exclusive();
    wait_idle();
    let r = hold_until_released::options()
        .num_cpus(2.0)
        .num_gpus(1.0)
        .resource("r_avail", 1.0)
        .remote(0);
    assert!(wait_until(PATIENCE, || common::tally_count("started-0") > 0));
    assert!(
        wait_until(PATIENCE, || {
            let a = lumen::available_resources();
            amount(&a, "CPU") == all(4.0) - 2.0
                && amount(&a, "GPU") == all(2.0) - 1.0
                && amount(&a, "r_avail") == all(1.0) - 1.0
        }),
        "available while running: {:?}",
        lumen::available_resources()
    );
    // The total does not change.
    assert_eq!(lumen::cluster_resources()["CPU"], all(4.0));
    assert_eq!(lumen::cluster_resources()["r_avail"], all(1.0));
    common::tally("release-0");
    assert_eq!(common::get(&r).unwrap().len(), 1);
    wait_idle();
}

// ---------------------------------------------------------------------------------------------
// Admission: never more in flight than fits.

#[test]
fn default_task_needs_one_cpu() {
    init();
    let _g = exclusive();
    wait_idle();
    let refs: Vec<_> = (0..8)
        .map(|_| {
            hold::options()
                .scheduling_strategy(on_here())
                .remote(G_DEFAULT_CPU, 4, 10_000, 150)
        })
        .collect();
    run_held(refs);
    assert_eq!(GAUGES[G_DEFAULT_CPU].max(), 4);
    assert_eq!(GAUGES[G_DEFAULT_CPU].total(), 8);
}

#[test]
fn two_cpu_tasks_on_four_cpus_run_two_at_a_time() {
    init();
    let _g = exclusive();
    wait_idle();
    let refs: Vec<_> = (0..6)
        .map(|_| {
            hold::options()
                .scheduling_strategy(on_here())
                .num_cpus(2.0)
                .remote(G_TWO_CPUS, 2, 10_000, 150)
        })
        .collect();
    run_held(refs);
    assert_eq!(GAUGES[G_TWO_CPUS].max(), 2);
    assert_eq!(GAUGES[G_TWO_CPUS].total(), 6);
}

#[test]
fn fractional_cpus_pack_more_tasks() {
    init();
    let _g = exclusive();
    wait_idle();
    let refs: Vec<_> = (0..16)
        .map(|_| {
            hold::options()
                .scheduling_strategy(on_here())
                .num_cpus(0.5)
                .remote(G_HALF_CPU, 8, 10_000, 150)
        })
        .collect();
    run_held(refs);
    assert_eq!(GAUGES[G_HALF_CPU].max(), 8);
    assert_eq!(GAUGES[G_HALF_CPU].total(), 16);
}

#[test]
fn smallest_fraction_is_accepted() {
    init();
    let _g = shared();
    assert_eq!(
        common::get(&noop::options().num_cpus(0.0001).remote()).unwrap(),
        1
    );
    assert_eq!(
        common::get(&noop::options().num_cpus(0.0).remote()).unwrap(),
        1
    );
    let r = noop::options()
        .num_cpus(0.25)
        .resource("node0", 0.0001)
        .remote();
    assert_eq!(common::get(&r).unwrap(), 1);
}

#[test]
fn custom_resource_limits_concurrency() {
    init();
    let _g = exclusive();
    wait_idle();
    let refs: Vec<_> = (0..6)
        .map(|_| {
            hold::options()
                .scheduling_strategy(on_here())
                .num_cpus(0.5)
                .resource("rc_conc", 1.0)
                .remote(G_CUSTOM, 2, 10_000, 150)
        })
        .collect();
    run_held(refs);
    assert_eq!(GAUGES[G_CUSTOM].max(), 2);
    assert_eq!(GAUGES[G_CUSTOM].total(), 6);
}

#[test]
fn fractional_custom_resource() {
    init();
    let _g = exclusive();
    wait_idle();
    let refs: Vec<_> = (0..8)
        .map(|_| {
            hold::options()
                .scheduling_strategy(on_here())
                .num_cpus(0.5)
                .resource("rc_frac", 0.25)
                .remote(G_CUSTOM_FRAC, 4, 10_000, 150)
        })
        .collect();
    run_held(refs);
    assert_eq!(GAUGES[G_CUSTOM_FRAC].max(), 4);
}

#[test]
fn attribute_resources_limit_concurrency() {
    init();
    let _g = exclusive();
    wait_idle();
    let refs: Vec<_> = (0..3)
        .map(|_| {
            attr_limited::options()
                .scheduling_strategy(on_here())
                .remote()
        })
        .collect();
    let seen: Vec<usize> = refs.iter().map(|r| common::get(r).unwrap()).collect();
    assert_eq!(seen, vec![1, 1, 1]);
    assert_eq!(GAUGES[G_ATTR].max(), 1);
}

#[test]
fn task_holding_every_cpu_lends_them_while_blocked() {
    init();
    let _g = exclusive();
    wait_idle();
    let r = whole_node_parent::options()
        .num_cpus(4.0)
        .scheduling_strategy(on_here())
        .remote(3);
    assert_eq!(common::get(&r).unwrap(), 3);
}

/// As Ray's `ray.wait` in a task: a task blocked in a `wait` loop lends its CPUs as `get` does,
/// at every call of the loop (the calls after the first reuse its registrations).
#[test]
fn task_holding_every_cpu_lends_them_while_it_waits_in_a_loop() {
    init();
    let _g = exclusive();
    wait_idle();
    let r = whole_node_wait_loop_parent::options()
        .num_cpus(4.0)
        .scheduling_strategy(on_here())
        .remote(5);
    assert_eq!(common::get(&r).unwrap(), 5);
}

// ---------------------------------------------------------------------------------------------
// GPUs.

#[test]
fn gpu_task_gets_one_gpu_id() {
    init();
    let _g = exclusive();
    let ids = common::get(
        &gpu_ids::options()
            .num_gpus(1.0)
            .scheduling_strategy(on_here())
            .remote(),
    )
    .unwrap();
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert!(ids[0] < 2, "{ids:?}");
    // Without GPUs, no ids.
    assert!(common::get(&gpu_ids::remote()).unwrap().is_empty());
    assert!(lumen::runtime_context().gpu_ids().is_empty());
}

#[test]
fn concurrent_gpu_tasks_get_distinct_gpus() {
    init();
    let _g = exclusive();
    wait_idle();
    let refs: Vec<_> = (0..2)
        .map(|_| {
            hold::options()
                .scheduling_strategy(on_here())
                .num_gpus(1.0)
                .remote(G_GPU_IDS, 2, 10_000, 50)
        })
        .collect();
    let mut ids: Vec<u32> = run_held(refs).into_iter().flatten().collect();
    ids.sort();
    assert_eq!(ids, vec![0, 1]);
}

#[test]
fn gpu_tasks_never_exceed_the_gpus() {
    init();
    let _g = exclusive();
    wait_idle();
    let refs: Vec<_> = (0..4)
        .map(|_| {
            hold::options()
                .scheduling_strategy(on_here())
                .num_cpus(0.5)
                .num_gpus(1.0)
                .remote(G_ONE_GPU, 2, 10_000, 150)
        })
        .collect();
    for ids in run_held(refs) {
        assert_eq!(ids.len(), 1);
        assert!(ids[0] < 2);
    }
    assert_eq!(GAUGES[G_ONE_GPU].max(), 2);
}

#[test]
fn fractional_gpus_share_a_device() {
    init();
    let _g = exclusive();
    wait_idle();
    let refs: Vec<_> = (0..8)
        .map(|_| {
            hold::options()
                .scheduling_strategy(on_here())
                .num_cpus(0.5)
                .num_gpus(0.5)
                .remote(G_HALF_GPU, 4, 10_000, 150)
        })
        .collect();
    for ids in run_held(refs) {
        assert_eq!(ids.len(), 1, "a fractional GPU task sees one GPU: {ids:?}");
        assert!(ids[0] < 2);
    }
    assert_eq!(GAUGES[G_HALF_GPU].max(), 4);
}

#[test]
fn two_gpu_task_gets_both() {
    init();
    let _g = exclusive();
    let mut ids = common::get(
        &gpu_ids::options()
            .num_gpus(2.0)
            .scheduling_strategy(on_here())
            .remote(),
    )
    .unwrap();
    ids.sort();
    assert_eq!(ids, vec![0, 1]);
}

#[test]
fn attribute_options_apply_and_can_be_overridden() {
    init();
    let _g = exclusive();
    let ids = common::get(&heavy::remote()).unwrap();
    assert_eq!(ids.len(), 1, "num_gpus = 1 from the attribute: {ids:?}");
    let ids = common::get(&heavy::options().num_gpus(0.0).remote()).unwrap();
    assert!(ids.is_empty(), "options override the attribute: {ids:?}");
}

// ---------------------------------------------------------------------------------------------
// Invalid amounts.

#[test]
fn invalid_amounts_are_refused_with_a_reason() {
    init();
    let _g = shared();
    let before = common::tally_count("runs");
    common::expect_invalid(
        counted::options().num_cpus(-1.0).remote(),
        &["num_cpus", "negative"],
    );
    common::expect_invalid(
        counted::options().num_cpus(f64::NAN).remote(),
        &["num_cpus", "finite"],
    );
    common::expect_invalid(
        counted::options().num_cpus(f64::INFINITY).remote(),
        &["num_cpus"],
    );
    common::expect_invalid(
        counted::options().num_cpus(0.00001).remote(),
        &["num_cpus", "0.0001"],
    );
    common::expect_invalid(
        counted::options().num_gpus(1.5).remote(),
        &["num_gpus", "whole"],
    );
    common::expect_invalid(
        counted::options().num_gpus(2.5).remote(),
        &["num_gpus", "whole"],
    );
    common::expect_invalid(
        counted::options().num_gpus(-0.5).remote(),
        &["num_gpus", "negative"],
    );
    common::expect_invalid(
        counted::options().num_gpus(0.00005).remote(),
        &["num_gpus", "0.0001"],
    );
    common::expect_invalid(
        counted::options().memory(-5.0).remote(),
        &["memory", "negative"],
    );
    common::expect_invalid(
        counted::options().resource("CPU", 1.0).remote(),
        &["CPU", "num_cpus"],
    );
    common::expect_invalid(
        counted::options().resource("GPU", 1.0).remote(),
        &["GPU", "num_gpus"],
    );
    common::expect_invalid(
        counted::options().resource("memory", 1.0).remote(),
        &["memory"],
    );
    common::expect_invalid(counted::options().resource("", 1.0).remote(), &["empty"]);
    common::expect_invalid(
        counted::options().resource("node0", -1.0).remote(),
        &["node0", "negative"],
    );
    common::expect_invalid(
        counted::options().resource("node0", 0.00001).remote(),
        &["node0", "0.0001"],
    );
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        common::tally_count("runs"),
        before,
        "a refused task must not run"
    );
}

#[test]
fn invalid_amount_error_propagates_to_dependents() {
    init();
    let _g = shared();
    let bad = gpu_ids::options().num_gpus(1.5).remote();
    let e = common::get(&bad).unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { .. }), "{e:?}");
    let dependent = hold_len::remote(&bad);
    assert_eq!(common::get(&dependent).unwrap_err(), e);
}

#[lumen::remote]
fn hold_len(ids: Vec<u32>) -> usize {
    ids.len()
}

#[test]
fn valid_edge_amounts_run() {
    init();
    let _g = exclusive();
    assert_eq!(
        common::get(&noop::options().num_gpus(1.0).remote()).unwrap(),
        1
    );
    assert_eq!(
        common::get(&noop::options().num_gpus(0.0001).remote()).unwrap(),
        1
    );
    assert_eq!(
        common::get(&noop::options().num_gpus(2.0).remote()).unwrap(),
        1
    );
    assert_eq!(
        common::get(&noop::options().memory(1024.0).remote()).unwrap(),
        1
    );
    assert_eq!(
        common::get(&noop::options().resource("node0", 2.0).remote()).unwrap(),
        1
    );
    // Setting the same resource twice keeps the last amount.
    let r = noop::options()
        .resource("node0", 50.0)
        .resource("node0", 1.0)
        .remote();
    assert_eq!(common::get(&r).unwrap(), 1);
}

// ---------------------------------------------------------------------------------------------
// Tasks that do not fit.

#[test]
fn task_needing_more_cpus_than_the_node_stays_pending() {
    init();
    let _g = shared();
    let r = noop::options().num_cpus(100.0).remote();
    expect_pending(&r);
    // It does not hold up tasks that fit.
    assert_eq!(common::get(&noop::remote()).unwrap(), 1);
    expect_pending(&r);
}

#[test]
fn tasks_needing_missing_resources_stay_pending() {
    init();
    let _g = shared();
    let gpus = noop::options().num_gpus(3.0).remote();
    let unknown = noop::options().resource("no_such_resource", 1.0).remote();
    let too_much = noop::options().resource("node0", 3.0).remote();
    let memory = noop::options().memory(1e13).remote();
    expect_pending(&gpus);
    expect_pending(&unknown);
    expect_pending(&too_much);
    expect_pending(&memory);
    let fits: Vec<_> = (0..8).map(|_| noop::remote()).collect();
    assert_eq!(lumen::get_all(&fits).unwrap(), vec![1; 8]);
}

// ---------------------------------------------------------------------------------------------
// Scheduling strategies.

#[test]
fn default_and_spread_run_on_the_nodes() {
    init();
    let _g = shared();
    let a = where_am_i::options()
        .scheduling_strategy(SchedulingStrategy::Default)
        .remote();
    let b = where_am_i::options()
        .scheduling_strategy(SchedulingStrategy::Spread)
        .remote();
    assert!(common::is_node(&common::get(&a).unwrap()));
    assert!(common::is_node(&common::get(&b).unwrap()));
    let many: Vec<_> = (0..8)
        .map(|_| {
            where_am_i::options()
                .scheduling_strategy(SchedulingStrategy::Spread)
                .remote()
        })
        .collect();
    let used: std::collections::BTreeSet<String> =
        lumen::get_all(&many).unwrap().into_iter().collect();
    assert!(used.iter().all(|n| common::is_node(n)), "{used:?}");
    // SPREAD uses every node (one on an embedded cluster).
    assert_eq!(used.len(), common::nodes(), "{used:?}");
}

#[test]
fn node_affinity_to_the_local_node_runs_there() {
    init();
    let _g = shared();
    let node_id = lumen::runtime_context().node_id();
    for soft in [false, true] {
        let r = where_am_i::options()
            .scheduling_strategy(SchedulingStrategy::NodeAffinity { node_id, soft })
            .remote();
        assert_eq!(common::get(&r).unwrap(), node_id.to_string());
    }
}

#[test]
fn hard_affinity_to_an_unknown_node_is_unschedulable() {
    init();
    let _g = shared();
    let node_id: NodeId = "0123456789abcdef0123456789abcdef".parse().unwrap();
    let r = where_am_i::options()
        .scheduling_strategy(SchedulingStrategy::NodeAffinity {
            node_id,
            soft: false,
        })
        .remote();
    match common::get(&r) {
        Err(Error::TaskUnschedulable { function, reason }) => {
            assert!(function.contains("where_am_i"), "{function}");
            assert!(!reason.is_empty());
        }
        other => panic!("expected Error::TaskUnschedulable, got {other:?}"),
    }
}

#[test]
fn soft_affinity_to_an_unknown_node_falls_back() {
    init();
    let _g = shared();
    let node_id: NodeId = "0123456789abcdef0123456789abcdef".parse().unwrap();
    let r = where_am_i::options()
        .scheduling_strategy(SchedulingStrategy::NodeAffinity {
            node_id,
            soft: true,
        })
        .remote();
    assert!(common::is_node(&common::get(&r).unwrap()));
}

#[test]
fn hard_affinity_to_a_node_that_can_never_fit_is_unschedulable() {
    init();
    let _g = shared();
    let node_id = lumen::runtime_context().node_id();
    let r = noop::options()
        .num_cpus(100.0)
        .scheduling_strategy(SchedulingStrategy::NodeAffinity {
            node_id,
            soft: false,
        })
        .remote();
    match lumen::get_timeout(&r, PATIENCE) {
        Err(Error::TaskUnschedulable { .. }) => {}
        other => panic!("expected Error::TaskUnschedulable, got {other:?}"),
    }
}

#[test]
fn unschedulable_error_propagates_to_dependents() {
    init();
    let _g = shared();
    let node_id: NodeId = "0123456789abcdef0123456789abcdef".parse().unwrap();
    let bad = gpu_ids::options()
        .scheduling_strategy(SchedulingStrategy::NodeAffinity {
            node_id,
            soft: false,
        })
        .remote();
    let dependent = hold_len::remote(&bad);
    let e = common::get(&dependent).unwrap_err();
    assert!(matches!(e, Error::TaskUnschedulable { .. }), "{e:?}");
    assert_eq!(e, common::get(&bad).unwrap_err());
}

#[test]
fn node_ids_parse_and_print() {
    init();
    let _g = shared();
    let here = lumen::runtime_context().node_id();
    assert_eq!(here.to_string().parse::<NodeId>().unwrap(), here);
    assert_eq!(here.to_string().len(), 32);
    match "not a node id".parse::<NodeId>() {
        Err(Error::InvalidArgument { message }) => assert!(message.contains("not a node id")),
        other => panic!("expected Error::InvalidArgument, got {other:?}"),
    }
}
