//! Placement groups (Ray's `ray.util.placement_group`): reservation on the embedded node and on
//! in-process multi-node clusters ([`lumen::testing::TestCluster`]), the resources a group turns
//! into (`CPU_group_<id>`, `CPU_group_<i>_<id>`), scheduling tasks and actors into a group and
//! into one bundle, the four strategies, all-or-nothing reservation under contention, removal
//! (its users are killed, its resources return), names and lifetimes, capture of child tasks,
//! and rescheduling after a node dies.
//!
//! lumen has one driver runtime per process, so the tests of this file run one at a time: each
//! takes [`LOCK`], starts its own runtime (embedded, or a cluster it then connects to), and shuts
//! it down at the end, on failure too, through [`Session`]'s `Drop`. Every wait is bounded; state
//! that changes asynchronously is polled against a deadline; concurrency is counted, not timed.
//!
//! A group's resources are named after its id in hex (`pg.id().to_string()`): `CPU_group_<id>`
//! for any bundle and `CPU_group_<i>_<id>` for bundle `i`, likewise for every resource a bundle
//! reserves. Tasks run in a worker process per node (this test binary re-executed in worker
//! mode), so the gauges that count how many tasks run at once live there and come back to the
//! test in the tasks' results.
//!
//! **Modes.** Not re-run by a local-cluster child: each test already chooses its mode, the
//! embedded node or a multi-node [`lumen::testing::TestCluster`], because what a group means
//! (bundles packed or spread over nodes, a node dying under a bundle) depends on the nodes.

mod common;

use lumen::testing::TestCluster;
use lumen::{
    Bundle, Config, Error, NodeId, ObjectRef, PlacementGroup, PlacementGroupInfo,
    PlacementGroupState, PlacementStrategy, SchedulingStrategy,
};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex, MutexGuard};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// Setup and helpers
// ---------------------------------------------------------------------------------------------

/// Serializes the tests of this binary: one driver runtime per process.
static LOCK: Mutex<()> = Mutex::new(());

/// A bound for anything that should happen soon (a group created, resources returned, a node
/// noticed dead and its bundles placed again) on a loaded machine.
const SOON: Duration = Duration::from_secs(20);

/// How long something that must not happen is given to happen anyway.
const BRIEF: Duration = Duration::from_millis(500);

/// A generous bound for a task that should finish: a bug shows as an error, not a hang.
const LONG: Duration = Duration::from_secs(60);

/// How long a killed node may take to be reported dead.
const NODE_DEATH: Duration = Duration::from_secs(15);

/// The namespace of the drivers connected to a cluster (the same for a second driver, so that
/// it finds the first one's named groups).
const NAMESPACE: &str = "placement-groups-test";

/// One test's runtime: an embedded node, or a cluster and a driver connected to it. Dropping it
/// shuts the driver down, then stops the nodes, then lets the next test in.
struct Session {
    cluster: Option<TestCluster>,
    _lock: MutexGuard<'static, ()>,
}

impl Session {
    /// Takes the lock and clears what a test that failed half-way may have left running.
    fn lock() -> MutexGuard<'static, ()> {
        common::one_driver_at_a_time(&LOCK)
    }

    /// The embedded node of `config`.
    fn embedded(config: Config) -> Session {
        let lock = Session::lock();
        lumen::init_with(config).expect("lumen::init_with (embedded)");
        Session {
            cluster: None,
            _lock: lock,
        }
    }

    /// One node per config (the first the head), and a driver connected to them.
    fn start_cluster(configs: Vec<Config>) -> Session {
        let lock = Session::lock();
        let cluster = TestCluster::start(configs).expect("TestCluster::start");
        let session = Session {
            cluster: Some(cluster),
            _lock: lock,
        };
        session.connect();
        session
    }

    /// `n` nodes of `cpus` CPUs each (and no GPU).
    fn uniform(n: usize, cpus: f64) -> Session {
        Session::start_cluster(
            (0..n)
                .map(|_| Config::default().num_cpus(cpus).num_gpus(0.0))
                .collect(),
        )
    }

    /// Connects a driver to the cluster (again, after `lumen::shutdown()`: a new job).
    fn connect(&self) {
        lumen::init_with(self.cluster().driver_config().namespace(NAMESPACE))
            .expect("lumen::init_with (driver)");
    }

    fn cluster(&self) -> &TestCluster {
        self.cluster.as_ref().expect("a cluster session")
    }

    fn cluster_mut(&mut self) -> &mut TestCluster {
        self.cluster.as_mut().expect("a cluster session")
    }

    /// The id of node `k` (while it lives).
    fn node(&self, k: usize) -> NodeId {
        self.cluster().node_id(k).expect("node is alive")
    }

    /// The index of `node` among the first `n` nodes.
    fn index_of(&self, node: NodeId, n: usize) -> usize {
        (0..n)
            .find(|&k| self.cluster().node_id(k) == Some(node))
            .unwrap_or_else(|| {
                let ids: Vec<_> = (0..n).map(|k| self.cluster().node_id(k)).collect();
                panic!("{node} is not one of the first {n} nodes: {ids:?}")
            })
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        lumen::shutdown();
        drop(self.cluster.take());
    }
}

/// `get` that cannot hang the test suite.
fn get<T: serde::de::DeserializeOwned + 'static>(r: &ObjectRef<T>) -> lumen::Result<T> {
    lumen::get_timeout(r, LONG)
}

/// The error of `what`, which must fail (not hang, not succeed).
fn failure<T: std::fmt::Debug>(what: &str, r: lumen::Result<T>) -> Error {
    match r {
        Err(Error::GetTimeout { .. }) => panic!("{what}: expected a failure, but it hung"),
        Err(e) => e,
        Ok(v) => panic!("{what}: expected a failure, got Ok({v:?})"),
    }
}

/// `what` must still be waiting after [`BRIEF`]: neither done nor failed.
fn assert_still_pending<T: serde::de::DeserializeOwned + std::fmt::Debug + 'static>(
    what: &str,
    r: &ObjectRef<T>,
) {
    match lumen::get_timeout(r, BRIEF) {
        Err(Error::GetTimeout { .. }) => {}
        other => panic!("{what}: expected it to stay pending, got {other:?}"),
    }
}

/// Polls `cond` every 20 ms until it holds or `timeout` passes; returns whether it held.
fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The node this driver runs on (the embedded one).
fn here() -> NodeId {
    lumen::runtime_context().node_id()
}

/// The group's row in the table.
fn table(pg: &PlacementGroup) -> PlacementGroupInfo {
    lumen::placement_group_table(pg).expect("placement_group_table")
}

fn state(pg: &PlacementGroup) -> PlacementGroupState {
    table(pg).state
}

/// Waits until the group is in `want`; panics with its row if it is not within `timeout`.
fn expect_state(pg: &PlacementGroup, want: PlacementGroupState, timeout: Duration) {
    let ok = wait_until(timeout, || state(pg) == want);
    assert!(
        ok,
        "{} not {want:?} within {timeout:?}: {:?}",
        pg.id(),
        table(pg)
    );
}

/// Creates a group and waits until it is created.
fn create_ready(bundles: Vec<Bundle>, strategy: PlacementStrategy) -> PlacementGroup {
    let pg = PlacementGroup::builder(bundles)
        .strategy(strategy)
        .create()
        .expect("create");
    if let Err(e) = lumen::get_timeout(&pg.ready(), SOON) {
        panic!("group {} not created: {e}; {:?}", pg.id(), table(&pg));
    }
    assert_eq!(state(&pg), PlacementGroupState::Created);
    pg
}

/// `n` bundles of one CPU each.
fn cpus(n: usize) -> Vec<Bundle> {
    (0..n).map(|_| Bundle::new().cpu(1.0)).collect()
}

/// The amount of `key` in a resource map (0 when absent).
fn amount(map: &BTreeMap<String, f64>, key: &str) -> f64 {
    map.get(key).copied().unwrap_or(0.0)
}

/// The resources of a map named after `pg`.
fn of_group(map: &BTreeMap<String, f64>, pg: &PlacementGroup) -> Vec<String> {
    let id = pg.id().to_string();
    map.keys().filter(|k| k.contains(&id)).cloned().collect()
}

/// The resources of a map that belong to some placement group.
fn any_group_resources(map: &BTreeMap<String, f64>) -> Vec<String> {
    map.keys()
        .filter(|k| k.contains("_group_"))
        .cloned()
        .collect()
}

/// Waits until `cond` holds of `lumen::available_resources()`; panics with the last map if it
/// does not within [`SOON`].
fn expect_available(what: &str, cond: impl Fn(&BTreeMap<String, f64>) -> bool) {
    let mut last = BTreeMap::new();
    let ok = wait_until(SOON, || {
        last = lumen::available_resources();
        cond(&last)
    });
    assert!(ok, "{what}: available resources are {last:?}");
}

/// Waits until no live node lists a resource of `pg`, in its totals or as available.
fn expect_no_group_resources(pg: &PlacementGroup) {
    let mut last = Vec::new();
    let ok = wait_until(SOON, || {
        last = lumen::nodes()
            .into_iter()
            .filter(|n| n.alive)
            .flat_map(|n| {
                let mut names = of_group(&n.resources, pg);
                names.extend(of_group(&n.available, pg));
                names.into_iter().map(move |r| (n.node_id, r))
            })
            .collect();
        last.is_empty()
    });
    assert!(ok, "resources of {} remain: {last:?}", pg.id());
}

/// The node of every bundle (all placed).
fn placed(t: &PlacementGroupInfo) -> Vec<NodeId> {
    t.bundle_nodes
        .iter()
        .enumerate()
        .map(|(i, n)| n.unwrap_or_else(|| panic!("bundle {i} is not placed: {t:?}")))
        .collect()
}

/// How many different nodes.
fn distinct(nodes: &[NodeId]) -> usize {
    let mut v = nodes.to_vec();
    v.sort();
    v.dedup();
    v.len()
}

/// Into `pg`, any bundle.
fn in_group(pg: &PlacementGroup) -> SchedulingStrategy {
    SchedulingStrategy::placement_group(pg)
}

/// Into bundle `i` of `pg`.
fn in_bundle(pg: &PlacementGroup, i: usize) -> SchedulingStrategy {
    SchedulingStrategy::placement_group(pg).bundle_index(i)
}

/// Waits until `lumen::nodes()` reports `node` dead.
fn wait_node_dead(node: NodeId) {
    let started = Instant::now();
    let dead = wait_until(NODE_DEATH, || {
        lumen::nodes().iter().any(|n| n.node_id == node && !n.alive)
    });
    assert!(
        dead,
        "node {node} still not reported dead {:?} after it was killed: {:?}",
        started.elapsed(),
        lumen::nodes()
    );
}

/// A fresh path in the temporary folder, for a task to leave a mark in.
fn scratch(what: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let path = std::env::temp_dir().join(format!(
        "lumen-pg-{}-{}-{what}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_file(&path);
    path.to_string_lossy().into_owned()
}

// ---------------------------------------------------------------------------------------------
// Remote functions and actors used below
// ---------------------------------------------------------------------------------------------

/// The node that ran it.
#[lumen::remote]
fn where_am_i() -> NodeId {
    here()
}

/// Creates the file `marker`, then sleeps `ms` milliseconds; returns the node that ran it.
#[lumen::remote]
fn mark_then_sleep(marker: String, ms: u64) -> NodeId {
    let _ = std::fs::write(&marker, b"started");
    std::thread::sleep(Duration::from_millis(ms));
    here()
}

/// Counts the tasks inside a section at once, in the worker process that runs them.
struct Gauge {
    now: AtomicUsize,
    max: AtomicUsize,
    total: AtomicUsize,
}

impl Gauge {
    const fn new() -> Gauge {
        Gauge {
            now: AtomicUsize::new(0),
            max: AtomicUsize::new(0),
            total: AtomicUsize::new(0),
        }
    }

    /// Enters; stays until `target` tasks have been inside together or `patience` passed; then
    /// lingers `linger` so that a task admitted beyond a limit would be seen; leaves.
    fn rendezvous(&self, target: usize, patience: Duration, linger: Duration) {
        let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.max.fetch_max(n, Ordering::SeqCst);
        self.total.fetch_add(1, Ordering::SeqCst);
        let deadline = Instant::now() + patience;
        while self.max() < target && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(linger);
        self.now.fetch_sub(1, Ordering::SeqCst);
    }

    /// The most tasks ever inside at once.
    fn max(&self) -> usize {
        self.max.load(Ordering::SeqCst)
    }

    /// How many times it was entered.
    fn total(&self) -> usize {
        self.total.load(Ordering::SeqCst)
    }
}

/// One gauge per use; a test's worker process is its own (one per job), so they start at 0.
static GAUGES: [Gauge; 8] = [const { Gauge::new() }; 8];

const G_IN_GROUP: usize = 0;
const G_OUTSIDE: usize = 1;
const G_PINNED: usize = 2;
const G_ANY_BUNDLE: usize = 3;

/// Enters gauge `g` (see [`Gauge::rendezvous`]); returns the most tasks seen in it at once and
/// how many entered it so far.
#[lumen::remote]
fn hold(g: usize, target: usize, patience_ms: u64, linger_ms: u64) -> (usize, usize) {
    GAUGES[g].rendezvous(
        target,
        Duration::from_millis(patience_ms),
        Duration::from_millis(linger_ms),
    );
    (GAUGES[g].max(), GAUGES[g].total())
}

/// Gets every `hold` result (checking that each entered the gauge); returns the most tasks ever
/// inside it together.
fn max_at_once(refs: Vec<ObjectRef<(usize, usize)>>, what: &str) -> usize {
    let n = refs.len();
    let results: Vec<(usize, usize)> = refs
        .iter()
        .map(|r| get(r).unwrap_or_else(|e| panic!("{what}: {e}")))
        .collect();
    let entered = results.iter().map(|r| r.1).max().unwrap_or(0);
    assert_eq!(entered, n, "{what}: {results:?}");
    results.iter().map(|r| r.0).max().unwrap_or(0)
}

/// Submits a child needing one `special` (and a CPU), waits up to `patience_ms` for it; returns
/// its node, or `None` if it did not run in time.
#[lumen::remote]
fn parent_of_special(patience_ms: u64) -> lumen::Result<Option<NodeId>> {
    let child = where_am_i::options().resource("special", 1.0).remote();
    within(&child, patience_ms)
}

/// The value of `r` if it is there within `patience_ms`, `None` if not yet.
fn within<T: serde::de::DeserializeOwned + 'static>(
    r: &ObjectRef<T>,
    patience_ms: u64,
) -> lumen::Result<Option<T>> {
    match lumen::get_timeout(r, Duration::from_millis(patience_ms)) {
        Ok(v) => Ok(Some(v)),
        Err(Error::GetTimeout { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Submits a child asking for `cpus` CPUs with an explicit `SchedulingStrategy::Default`; returns
/// the child's node, or `None` if it did not run within `patience_ms`.
#[lumen::remote]
fn parent_of_default_child(cpus: f64, patience_ms: u64) -> lumen::Result<Option<NodeId>> {
    let child = where_am_i::options()
        .num_cpus(cpus)
        .scheduling_strategy(SchedulingStrategy::Default)
        .remote();
    within(&child, patience_ms)
}

/// Submits a child asking for `cpus` CPUs with no strategy of its own (so a capturing parent's
/// group applies); returns its node, or `None` if it did not run within `patience_ms`.
#[lumen::remote]
fn parent_of_captured_child(cpus: f64, patience_ms: u64) -> lumen::Result<Option<NodeId>> {
    within(&where_am_i::options().num_cpus(cpus).remote(), patience_ms)
}

/// Creates an actor holding `cpus` CPUs with an explicit `SchedulingStrategy::Default`; returns
/// the actor's node, or `None` if it did not answer within `patience_ms`.
#[lumen::remote]
fn parent_of_default_actor(cpus: f64, patience_ms: u64) -> lumen::Result<Option<NodeId>> {
    let actor = Counter::options()
        .num_cpus(cpus)
        .scheduling_strategy(SchedulingStrategy::Default)
        .remote(0);
    within(&actor.node().remote(), patience_ms)
}

/// A serial counter.
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

    pub fn node(&self) -> NodeId {
        here()
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Reservation on the embedded node
// ---------------------------------------------------------------------------------------------

#[test]
fn group_reserves_and_returns_resources_on_the_embedded_node() {
    let _s = Session::embedded(Config::default().num_cpus(2.0).num_gpus(2.0));
    let node = here();

    // Invalid groups are refused and registered nowhere.
    assert!(matches!(
        PlacementGroup::builder(Vec::<Bundle>::new()).create(),
        Err(Error::InvalidArgument { .. })
    ));
    assert!(matches!(
        PlacementGroup::builder([Bundle::new().cpu(1.0), Bundle::new()]).create(),
        Err(Error::InvalidArgument { .. })
    ));
    match PlacementGroup::builder([Bundle::new().cpu(-1.0)]).create() {
        Err(Error::InvalidArgument { .. }) => {}
        other => panic!("a negative amount: expected InvalidArgument, got {other:?}"),
    }
    match PlacementGroup::builder([Bundle::new().resource("accel", -2.0)]).create() {
        Err(Error::InvalidArgument { .. }) => {}
        other => panic!("a negative custom amount: expected InvalidArgument, got {other:?}"),
    }
    assert!(lumen::list_placement_groups().is_empty());

    // {CPU 1, GPU 1}: created, on this node.
    let pg = PlacementGroup::builder([Bundle::new().cpu(1.0).gpu(1.0)])
        .create()
        .expect("create");
    lumen::get_timeout(&pg.ready(), SOON).expect("ready()");
    assert!(pg.wait(SOON), "wait() after ready()");
    let t = table(&pg);
    assert_eq!(t.id, pg.id());
    assert_eq!(t.name, None);
    assert_eq!(t.state, PlacementGroupState::Created);
    assert_eq!(t.strategy, PlacementStrategy::Pack);
    assert_eq!(
        t.bundles,
        vec![BTreeMap::from([
            ("CPU".to_string(), 1.0),
            ("GPU".to_string(), 1.0)
        ])]
    );
    assert_eq!(t.bundle_nodes, vec![Some(node)]);
    assert!(!t.detached);

    // What it reserved became its resources: any bundle, and bundle 0.
    let id = pg.id().to_string();
    let group_cpu = format!("CPU_group_{id}");
    let group_gpu = format!("GPU_group_{id}");
    let bundle_cpu = format!("CPU_group_0_{id}");
    let bundle_gpu = format!("GPU_group_0_{id}");
    expect_available("after reserving {CPU 1, GPU 1}", |a| {
        amount(a, "CPU") == 1.0
            && amount(a, "GPU") == 1.0
            && amount(a, &group_cpu) == 1.0
            && amount(a, &group_gpu) == 1.0
            && amount(a, &bundle_cpu) == 1.0
            && amount(a, &bundle_gpu) == 1.0
    });
    let total = lumen::cluster_resources();
    assert_eq!(amount(&total, "CPU"), 2.0, "{total:?}");
    assert_eq!(amount(&total, &group_cpu), 1.0, "{total:?}");
    assert_eq!(amount(&total, &bundle_gpu), 1.0, "{total:?}");

    // [{CPU 1}, {GPU 2}]: the GPUs are not both free, so it waits, and reserves nothing (not
    // even the CPU bundle that would fit).
    let pending = PlacementGroup::builder([Bundle::new().cpu(1.0), Bundle::new().gpu(2.0)])
        .create()
        .expect("create the second group");
    match lumen::get_timeout(&pending.ready(), BRIEF) {
        Err(Error::GetTimeout { .. }) => {}
        other => panic!("ready() of [{{CPU 1}}, {{GPU 2}}]: expected a timeout, got {other:?}"),
    }
    let t = table(&pending);
    assert_eq!(t.state, PlacementGroupState::Pending, "{t:?}");
    assert_eq!(t.bundle_nodes, vec![None, None]);
    assert!(of_group(&lumen::cluster_resources(), &pending).is_empty());
    let a = lumen::available_resources();
    assert_eq!(
        amount(&a, "CPU"),
        1.0,
        "the pending group reserved a CPU: {a:?}"
    );
    assert_eq!(
        amount(&a, "GPU"),
        1.0,
        "the pending group reserved a GPU: {a:?}"
    );

    // A bundle no node can ever hold: it stays pending.
    let infeasible = PlacementGroup::builder([Bundle::new().cpu(8.0)])
        .create()
        .expect("create an infeasible group");
    assert!(!infeasible.wait(Duration::from_millis(300)));
    assert_eq!(state(&infeasible), PlacementGroupState::Pending);

    // Removing the first: everything it held returns, and the second is created with it.
    lumen::remove_placement_group(&pg).expect("remove");
    expect_state(&pg, PlacementGroupState::Removed, SOON);
    lumen::get_timeout(&pending.ready(), SOON).expect("the second group once the first is gone");
    let pid = pending.id().to_string();
    expect_available("after the second group was created", |a| {
        amount(a, "CPU") == 1.0
            && amount(a, "GPU") == 0.0
            && amount(a, &format!("CPU_group_{pid}")) == 1.0
            && amount(a, &format!("GPU_group_{pid}")) == 2.0
            && amount(a, &format!("CPU_group_0_{pid}")) == 1.0
            && amount(a, &format!("GPU_group_1_{pid}")) == 2.0
            && of_group(a, &pg).is_empty()
    });
    expect_no_group_resources(&pg);
    assert_eq!(table(&pending).bundle_nodes, vec![Some(node), Some(node)]);
    assert!(!infeasible.wait(Duration::from_millis(200)));

    lumen::remove_placement_group(&pending).expect("remove the second group");
    lumen::remove_placement_group(&infeasible).expect("remove the infeasible group");
    expect_available("after removing every group", |a| {
        amount(a, "CPU") == 2.0 && amount(a, "GPU") == 2.0 && any_group_resources(a).is_empty()
    });
    let total = lumen::cluster_resources();
    assert!(any_group_resources(&total).is_empty(), "{total:?}");
    assert_eq!(amount(&total, "CPU"), 2.0);
    assert_eq!(amount(&total, "GPU"), 2.0);
}

// ---------------------------------------------------------------------------------------------
// 2. Scheduling into a group
// ---------------------------------------------------------------------------------------------

#[test]
fn work_in_a_group_uses_only_its_reservation() {
    let _s = Session::embedded(
        Config::default()
            .num_cpus(4.0)
            .num_gpus(0.0)
            .resource("accel", 1.0),
    );
    let node = here();
    let pg = create_ready(cpus(1), PlacementStrategy::Pack);
    let id = pg.id().to_string();
    let group_cpu = format!("CPU_group_{id}");

    // Four 1-CPU tasks in the {CPU 1} group run one at a time, while 1-CPU tasks outside it get
    // the 3 CPUs it left, and never the one it holds.
    let inside: Vec<_> = (0..4)
        .map(|_| {
            hold::options()
                .scheduling_strategy(in_group(&pg))
                .remote(G_IN_GROUP, 2, 300, 20)
        })
        .collect();
    let outside: Vec<_> = (0..6)
        .map(|_| hold::remote(G_OUTSIDE, 3, 10_000, 100))
        .collect();
    assert_eq!(
        max_at_once(inside, "a task in the group"),
        1,
        "tasks in a {{CPU 1}} group ran concurrently"
    );
    assert_eq!(
        max_at_once(outside, "a task outside the group"),
        3,
        "1-CPU tasks outside the group: expected exactly the 3 unreserved CPUs in use at once"
    );

    // Two bundles of one CPU: work pinned to one bundle runs one at a time; work taking any
    // bundle runs two at a time.
    let two = create_ready(cpus(2), PlacementStrategy::Pack);
    let pinned: Vec<_> = (0..4)
        .map(|_| {
            hold::options()
                .scheduling_strategy(in_bundle(&two, 1))
                .remote(G_PINNED, 2, 300, 20)
        })
        .collect();
    assert_eq!(max_at_once(pinned, "tasks pinned to bundle 1"), 1);
    let any: Vec<_> = (0..4)
        .map(|_| {
            hold::options()
                .scheduling_strategy(in_group(&two))
                .remote(G_ANY_BUNDLE, 2, 10_000, 100)
        })
        .collect();
    assert_eq!(max_at_once(any, "tasks in either of 2 bundles"), 2);
    lumen::remove_placement_group(&two).expect("remove");
    expect_available("the group's CPU is free", |a| {
        amount(a, &group_cpu) == 1.0 && amount(a, "CPU") == 3.0 && of_group(a, &two).is_empty()
    });

    // An actor asking for a CPU holds the group's CPU for its lifetime: a task in the group
    // waits until it is killed.
    let actor = Counter::options()
        .num_cpus(1.0)
        .scheduling_strategy(in_group(&pg))
        .remote(0);
    assert_eq!(get(&actor.node().remote()).expect("actor's node"), node);
    expect_available("the actor holds the group's CPU", |a| {
        amount(a, &group_cpu) == 0.0 && amount(a, "CPU") == 3.0
    });
    let task = where_am_i::options()
        .scheduling_strategy(in_group(&pg))
        .remote();
    assert_still_pending("a task in a group whose CPU an actor holds", &task);
    assert_eq!(get(&actor.inc().remote()).expect("actor still alive"), 1);
    lumen::kill(&actor);
    assert_eq!(get(&task).expect("the task once the actor is gone"), node);
    expect_available("the group's CPU is back after the actor died", |a| {
        amount(a, &group_cpu) == 1.0
    });

    // A default actor needs a CPU to be placed: in a group of `accel` only it never could be,
    // and is refused at once, as Ray refuses it. Once placed it keeps none.
    let accel = create_ready(
        vec![Bundle::new().resource("accel", 1.0)],
        PlacementStrategy::Pack,
    );
    let refused = Counter::options()
        .scheduling_strategy(in_group(&accel))
        .remote(0);
    common::expect_invalid(refused.inc().remote(), &["CPU", "accel"]);
    let placed_actor = Counter::options()
        .scheduling_strategy(in_group(&pg))
        .remote(0);
    assert_eq!(
        get(&placed_actor.inc().remote()).expect("a default actor in a {CPU 1} group"),
        1
    );
    expect_available("a default actor keeps no CPU once placed", |a| {
        amount(a, &group_cpu) == 1.0
    });
    // And a task can still use the group's CPU beside it.
    let r = where_am_i::options()
        .scheduling_strategy(in_group(&pg))
        .remote();
    assert_eq!(get(&r).expect("a task in the {CPU 1} group"), node);

    // A task asking for more than any bundle reserved is refused at once.
    let too_big = where_am_i::options()
        .num_cpus(2.0)
        .scheduling_strategy(in_group(&pg))
        .remote();
    common::expect_invalid(too_big, &["fits none"]);
    let r = where_am_i::options()
        .scheduling_strategy(in_bundle(&pg, 0))
        .remote();
    assert_eq!(get(&r).expect("a task in bundle 0 beside it"), node);
}

/// STRICT_SPREAD over 3 nodes: work pinned to bundle `i` runs on bundle `i`'s node.
#[test]
fn bundle_index_pins_work_to_its_node() {
    let _s = Session::uniform(3, 2.0);
    let pg = create_ready(cpus(3), PlacementStrategy::StrictSpread);
    let nodes = placed(&table(&pg));
    assert_eq!(distinct(&nodes), 3, "{nodes:?}");
    let live: Vec<NodeId> = lumen::nodes().iter().map(|n| n.node_id).collect();
    assert!(
        nodes.iter().all(|n| live.contains(n)),
        "bundle node listed: {nodes:?} vs {live:?}"
    );

    for (i, want) in nodes.iter().enumerate() {
        let r = where_am_i::options()
            .scheduling_strategy(in_bundle(&pg, i))
            .remote();
        assert_eq!(
            get(&r).unwrap_or_else(|e| panic!("task in bundle {i}: {e}")),
            *want,
            "a task pinned to bundle {i} ran elsewhere"
        );
    }
    let actors: Vec<_> = (0..3)
        .map(|i| {
            Counter::options()
                .num_cpus(1.0)
                .scheduling_strategy(in_bundle(&pg, i))
                .remote(0)
        })
        .collect();
    for (i, (a, want)) in actors.iter().zip(&nodes).enumerate() {
        let at = get(&a.node().remote()).unwrap_or_else(|e| panic!("actor in bundle {i}: {e}"));
        assert_eq!(at, *want, "an actor pinned to bundle {i} runs elsewhere");
    }
    // The actors hold every bundle's CPU; each bundle's resources are on its own node.
    let id = pg.id().to_string();
    for n in lumen::nodes() {
        let Some(i) = nodes.iter().position(|b| *b == n.node_id) else {
            continue;
        };
        assert_eq!(
            amount(&n.resources, &format!("CPU_group_{i}_{id}")),
            1.0,
            "node {} of bundle {i}: {:?}",
            n.node_id,
            n.resources
        );
    }
    for a in &actors {
        lumen::kill(a);
    }
    // Then a task in the group (any bundle) runs on one of the group's nodes.
    let r = where_am_i::options()
        .scheduling_strategy(in_group(&pg))
        .remote();
    let at = get(&r).expect("task in the group");
    assert!(
        nodes.contains(&at),
        "{at} is none of the group's nodes {nodes:?}"
    );
}

#[test]
fn work_submitted_before_the_group_is_created_runs_once_it_is() {
    let _s = Session::embedded(Config::default().num_cpus(2.0).num_gpus(0.0));
    let node = here();
    let blocker = create_ready(cpus(2), PlacementStrategy::Pack);
    let later = PlacementGroup::builder(cpus(1)).create().expect("create");
    assert!(!later.wait(Duration::from_millis(300)));

    let task = where_am_i::options()
        .scheduling_strategy(in_group(&later))
        .remote();
    let actor = Counter::options()
        .scheduling_strategy(in_bundle(&later, 0))
        .remote(0);
    assert_still_pending("a task in a pending group", &task);
    assert_still_pending("an actor in a pending group", &actor.inc().remote());

    lumen::remove_placement_group(&blocker).expect("remove");
    assert!(later.wait(SOON), "{:?}", table(&later));
    assert_eq!(get(&task).expect("the task once its group exists"), node);
    assert_eq!(get(&actor.node().remote()).expect("the actor"), node);
    // The call made while pending was kept: this is the second.
    assert_eq!(get(&actor.inc().remote()).expect("the actor"), 2);
}

/// On a cluster: work queued (on the head) for a group not yet created goes to the node where
/// the group is then created.
#[test]
fn work_submitted_before_the_group_is_created_reaches_its_node() {
    let s = Session::start_cluster(vec![
        Config::default().num_cpus(2.0).num_gpus(0.0),
        Config::default()
            .num_cpus(2.0)
            .num_gpus(0.0)
            .resource("accel", 1.0),
    ]);
    let accel_node = s.node(1);
    let blocker = create_ready(
        vec![Bundle::new().resource("accel", 1.0)],
        PlacementStrategy::Pack,
    );
    assert_eq!(table(&blocker).bundle_nodes, vec![Some(accel_node)]);
    let later = PlacementGroup::builder([Bundle::new().cpu(1.0).resource("accel", 1.0)])
        .create()
        .expect("create");
    assert!(!later.wait(Duration::from_millis(300)));

    let task = where_am_i::options()
        .scheduling_strategy(in_group(&later))
        .remote();
    let actor = Counter::options()
        .scheduling_strategy(in_group(&later))
        .remote(0);
    assert_still_pending("a task in a pending group", &task);
    // The work waits somewhere as a demand on the group's resources.
    let later_id = later.id().to_string();
    let queued = wait_until(SOON, || {
        lumen::nodes().iter().any(|n| {
            n.pending
                .iter()
                .any(|(shape, _)| shape.keys().any(|k| k.contains(&later_id)))
        })
    });
    assert!(
        queued,
        "no node lists the work as waiting: {:?}",
        lumen::nodes()
    );

    lumen::remove_placement_group(&blocker).expect("remove");
    assert!(later.wait(SOON), "{:?}", table(&later));
    assert_eq!(table(&later).bundle_nodes, vec![Some(accel_node)]);
    assert_eq!(
        get(&task).expect("the task once its group exists"),
        accel_node
    );
    assert_eq!(get(&actor.node().remote()).expect("the actor"), accel_node);
}

// ---------------------------------------------------------------------------------------------
// 3. The four strategies
// ---------------------------------------------------------------------------------------------

#[test]
fn strategies_on_a_three_node_cluster() {
    let mut s = Session::uniform(3, 2.0);
    let all_free = |what: &str, cpus: f64| {
        expect_available(what, |a| {
            amount(a, "CPU") == cpus && any_group_resources(a).is_empty()
        })
    };
    let nodes_of = |pg: &PlacementGroup| placed(&table(pg));

    // PACK: one node when it fits, else as few as possible.
    let pg = create_ready(cpus(2), PlacementStrategy::Pack);
    assert_eq!(distinct(&nodes_of(&pg)), 1, "{:?}", table(&pg));
    lumen::remove_placement_group(&pg).expect("remove");
    all_free("after PACK", 6.0);
    let pg = create_ready(cpus(3), PlacementStrategy::Pack);
    assert_eq!(distinct(&nodes_of(&pg)), 2, "{:?}", table(&pg));
    lumen::remove_placement_group(&pg).expect("remove");
    all_free("after PACK of 3", 6.0);

    // SPREAD: a node each while there are nodes, then share.
    let pg = create_ready(cpus(3), PlacementStrategy::Spread);
    assert_eq!(distinct(&nodes_of(&pg)), 3, "SPREAD: {:?}", table(&pg));
    lumen::remove_placement_group(&pg).expect("remove");
    all_free("after SPREAD", 6.0);
    let pg = create_ready(cpus(5), PlacementStrategy::Spread);
    assert_eq!(distinct(&nodes_of(&pg)), 3, "SPREAD of 5: {:?}", table(&pg));
    lumen::remove_placement_group(&pg).expect("remove");
    all_free("after SPREAD of 5", 6.0);

    // STRICT_PACK: all on one node or wait.
    let too_big = PlacementGroup::builder(cpus(3))
        .strategy(PlacementStrategy::StrictPack)
        .create()
        .expect("create");
    let pg = create_ready(cpus(2), PlacementStrategy::StrictPack);
    assert_eq!(distinct(&nodes_of(&pg)), 1, "STRICT_PACK: {:?}", table(&pg));
    assert!(!too_big.wait(BRIEF));
    assert_eq!(state(&too_big), PlacementGroupState::Pending);
    assert!(of_group(&lumen::available_resources(), &too_big).is_empty());
    lumen::remove_placement_group(&pg).expect("remove");
    lumen::remove_placement_group(&too_big).expect("remove");
    all_free("after STRICT_PACK", 6.0);

    // STRICT_SPREAD: one node each or wait, until a node joins.
    let three = create_ready(cpus(3), PlacementStrategy::StrictSpread);
    assert_eq!(
        distinct(&nodes_of(&three)),
        3,
        "STRICT_SPREAD: {:?}",
        table(&three)
    );
    let four = PlacementGroup::builder(cpus(4))
        .strategy(PlacementStrategy::StrictSpread)
        .create()
        .expect("create");
    assert!(!four.wait(BRIEF));
    assert_eq!(state(&four), PlacementGroupState::Pending);
    assert!(of_group(&lumen::available_resources(), &four).is_empty());
    let k = s
        .cluster_mut()
        .add_node(Config::default().num_cpus(2.0).num_gpus(0.0))
        .expect("add_node");
    let new_node = s.node(k);
    assert!(
        four.wait(SOON),
        "not created after a 4th node joined: {:?}",
        table(&four)
    );
    let at = nodes_of(&four);
    assert_eq!(distinct(&at), 4, "{at:?}");
    assert!(at.contains(&new_node), "{at:?}");
    expect_available("with 7 bundles reserved", |a| amount(a, "CPU") == 1.0);
    lumen::remove_placement_group(&three).expect("remove");
    lumen::remove_placement_group(&four).expect("remove");
    all_free("after STRICT_SPREAD", 8.0);
}

// ---------------------------------------------------------------------------------------------
// 4. All or nothing under contention
// ---------------------------------------------------------------------------------------------

/// Creates a group of 2 x {CPU 1} from another thread once `start` lets it.
fn create_in_thread(
    strategy: PlacementStrategy,
    start: Arc<Barrier>,
) -> std::thread::JoinHandle<PlacementGroup> {
    std::thread::spawn(move || {
        start.wait();
        PlacementGroup::builder(cpus(2))
            .strategy(strategy)
            .create()
            .expect("create from a thread")
    })
}

/// Two groups of 2 x {CPU 1} created from two threads at once.
fn two_at_once(strategy: PlacementStrategy) -> (PlacementGroup, PlacementGroup) {
    let start = Arc::new(Barrier::new(2));
    let a = create_in_thread(strategy, start.clone());
    let b = create_in_thread(strategy, start);
    (
        a.join().expect("a creating thread"),
        b.join().expect("a creating thread"),
    )
}

/// Rounds of two groups of 2 x {CPU 1} of `strategy` where only one fits (2 CPUs in all),
/// created back to back (even rounds) or from two threads (odd rounds): exactly one is created,
/// the other holds nothing; it is created once the winner is removed.
fn contend(strategy: PlacementStrategy, rounds: usize) {
    let total = amount(&lumen::cluster_resources(), "CPU");
    assert_eq!(total, 2.0, "contention needs exactly 2 CPUs");
    for round in 0..rounds {
        let how = if round % 2 == 0 {
            "back to back"
        } else {
            "from two threads"
        };
        let (a, b) = if round % 2 == 0 {
            let create = || {
                PlacementGroup::builder(cpus(2))
                    .strategy(strategy)
                    .create()
                    .expect("create")
            };
            (create(), create())
        } else {
            two_at_once(strategy)
        };
        let label = format!("round {round}, {} created {how}", strategy.name());
        let created = |pg: &PlacementGroup| state(pg) == PlacementGroupState::Created;
        assert!(
            wait_until(SOON, || created(&a) || created(&b)),
            "{label}: neither group created: {:?} {:?}",
            table(&a),
            table(&b)
        );
        // Give a wrongly admitted second group time to show.
        std::thread::sleep(BRIEF);
        let (winner, loser) = match (state(&a), state(&b)) {
            (PlacementGroupState::Created, PlacementGroupState::Pending) => (a, b),
            (PlacementGroupState::Pending, PlacementGroupState::Created) => (b, a),
            other => panic!(
                "{label}: expected exactly one group created, got {other:?}: {:?} {:?}",
                table(&a),
                table(&b)
            ),
        };
        let lt = table(&loser);
        assert!(
            lt.bundle_nodes.iter().all(Option::is_none),
            "{label}: the loser has placed bundles: {lt:?}"
        );
        assert!(of_group(&lumen::cluster_resources(), &loser).is_empty());
        assert!(of_group(&lumen::available_resources(), &loser).is_empty());
        for n in lumen::nodes() {
            assert!(
                of_group(&n.resources, &loser).is_empty()
                    && of_group(&n.available, &loser).is_empty(),
                "{label}: node {} holds resources of the loser: {:?} / {:?}",
                n.node_id,
                n.resources,
                n.available
            );
        }
        let wid = winner.id().to_string();
        expect_available(&format!("{label}: the winner holds both CPUs"), |a| {
            amount(a, "CPU") == 0.0 && amount(a, &format!("CPU_group_{wid}")) == 2.0
        });
        if strategy == PlacementStrategy::StrictSpread {
            assert_eq!(distinct(&placed(&table(&winner))), 2);
        }

        lumen::remove_placement_group(&winner).expect("remove the winner");
        assert!(
            loser.wait(SOON),
            "{label}: the loser is not created once the winner is gone: {:?}",
            table(&loser)
        );
        expect_no_group_resources(&winner);
        lumen::remove_placement_group(&loser).expect("remove the loser");
        expect_available(&format!("{label}: all free"), |a| {
            amount(a, "CPU") == total && any_group_resources(a).is_empty()
        });
    }
}

#[test]
fn contending_groups_are_reserved_whole_or_not_at_all() {
    let _s = Session::embedded(Config::default().num_cpus(2.0).num_gpus(0.0));
    contend(PlacementStrategy::Pack, 6);
}

#[test]
fn contending_groups_across_nodes_are_reserved_whole_or_not_at_all() {
    let _s = Session::uniform(2, 1.0);
    contend(PlacementStrategy::StrictSpread, 4);
    contend(PlacementStrategy::Spread, 4);
}

// ---------------------------------------------------------------------------------------------
// 5. Removal
// ---------------------------------------------------------------------------------------------

/// A group of two {CPU 1} bundles of `strategy`, an actor holding bundle 0's CPU and a task
/// running in bundle 1; removing the group kills both, its state becomes REMOVED, `ready()`
/// fails at once, its resources return; removing it again is fine.
fn removal_kills_users(strategy: PlacementStrategy) {
    let total = amount(&lumen::cluster_resources(), "CPU");
    let pg = create_ready(cpus(2), strategy);
    let id = pg.id().to_string();
    let actor = Counter::options()
        .num_cpus(1.0)
        .scheduling_strategy(in_bundle(&pg, 0))
        .remote(0);
    assert_eq!(
        get(&actor.inc().remote()).expect("the actor in the group"),
        1
    );
    let marker = scratch("running");
    let task = mark_then_sleep::options()
        .scheduling_strategy(in_bundle(&pg, 1))
        .remote(marker.clone(), 120_000);
    assert!(
        wait_until(SOON, || std::path::Path::new(&marker).exists()),
        "the task in the group did not start"
    );
    let _ = std::fs::remove_file(&marker);
    expect_available("the group's CPUs in use", |a| {
        amount(a, &format!("CPU_group_{id}")) == 0.0
    });

    lumen::remove_placement_group(&pg).expect("remove");

    // The running task fails, naming the group.
    let e = failure(
        "a running task in a removed group",
        lumen::get_timeout(&task, SOON),
    );
    assert!(e.to_string().contains("placement group"), "{e}");

    // The actor dies. Removal is asynchronous: calls may succeed until it takes effect, and
    // the first failures may come from the connection closing before the GCS says why; none
    // succeeds after the first failure, and the reason comes within SOON.
    let deadline = Instant::now() + SOON;
    let mut first_failure: Option<Error> = None;
    let died = loop {
        match lumen::get_timeout(&actor.inc().remote(), SOON) {
            Ok(v) => assert!(
                first_failure.is_none(),
                "the actor answered {v} after failing with {first_failure:?}"
            ),
            Err(e @ Error::GetTimeout { .. }) => {
                panic!("a call on an actor of a removed group hung: {e}")
            }
            Err(e @ Error::ActorDied { .. }) if e.to_string().contains("placement group") => {
                break e
            }
            Err(e) => {
                first_failure.get_or_insert(e);
            }
        }
        assert!(
            Instant::now() < deadline,
            "the actor's calls never failed naming the placement group: first failure {first_failure:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    eprintln!("actor of a removed group: {died}");

    let t = table(&pg);
    assert_eq!(t.state, PlacementGroupState::Removed, "{t:?}");
    let started = Instant::now();
    let e = failure(
        "ready() of a removed group",
        lumen::get_timeout(&pg.ready(), SOON),
    );
    assert!(!pg.wait(SOON), "wait() of a removed group");
    assert!(
        started.elapsed() < SOON,
        "ready()/wait() of a removed group waited ({e})"
    );
    expect_available("the group's resources are back", |a| {
        amount(a, "CPU") == total && any_group_resources(a).is_empty()
    });
    expect_no_group_resources(&pg);
    lumen::remove_placement_group(&pg).expect("removing twice");
    assert_eq!(state(&pg), PlacementGroupState::Removed);
}

#[test]
fn removal_kills_users_on_the_embedded_node() {
    let _s = Session::embedded(Config::default().num_cpus(3.0).num_gpus(0.0));
    removal_kills_users(PlacementStrategy::Pack);
}

#[test]
fn removal_kills_users_on_a_cluster() {
    let _s = Session::uniform(3, 2.0);
    removal_kills_users(PlacementStrategy::StrictSpread);
}

/// Removes `pg` from wherever this task runs (a worker process on a cluster).
#[lumen::remote]
fn remove_elsewhere(pg: PlacementGroup) -> lumen::Result<()> {
    lumen::remove_placement_group(&pg)
}

/// A removed group is never ready (Ray: `test_placement_group.py::test_remove_placement_group`),
/// whoever removed it. The creator answers `ready()` of a group it knows to be created from the
/// state changes the GCS reports to it, so a removal by another process must reach it too:
/// here a task in a worker process removes the driver's group. Removed by the creator itself,
/// the same.
fn removed_groups_are_not_ready_for_their_creator() {
    let pg = create_ready(cpus(1), PlacementStrategy::Pack);
    // Answered from what the creator heard, and again from a fresh ready object.
    assert!(pg.wait(SOON));
    lumen::get(&remove_elsewhere::remote(pg.clone())).expect("removed by a task");
    expect_state(&pg, PlacementGroupState::Removed, SOON);
    let not_ready = |pg: &PlacementGroup| {
        matches!(
            lumen::get_timeout(&pg.ready(), SOON),
            Err(Error::Cancelled { .. })
        )
    };
    assert!(
        wait_until(SOON, || not_ready(&pg)),
        "ready() of a group another process removed: {:?}",
        lumen::get_timeout(&pg.ready(), SOON)
    );
    assert!(!pg.wait(Duration::from_millis(50)));

    let own = create_ready(cpus(1), PlacementStrategy::Pack);
    lumen::remove_placement_group(&own).expect("remove");
    assert!(not_ready(&own), "ready() of a group its creator removed");
}

#[test]
fn removed_groups_are_not_ready_for_their_creator_on_the_embedded_node() {
    let _s = Session::embedded(Config::default().num_cpus(2.0).num_gpus(0.0));
    removed_groups_are_not_ready_for_their_creator();
}

#[test]
fn removed_groups_are_not_ready_for_their_creator_on_a_cluster() {
    let _s = Session::uniform(2, 2.0);
    removed_groups_are_not_ready_for_their_creator();
}

/// `e` says that an actor can never be placed because its placement group was removed.
fn expect_unschedulable_actor(e: Error) {
    match &e {
        Error::ActorUnschedulable { reason, .. } => {
            assert!(reason.contains("placement group"), "{e}")
        }
        other => panic!("expected ActorUnschedulable, got {other:?}"),
    }
}

/// An actor waiting for a bundle another actor holds stays pending. Removing the group fails it
/// as unschedulable, not as cancelled and not by leaving it pending.
#[test]
fn pending_actor_of_a_removed_group_is_unschedulable() {
    let _s = Session::embedded(
        Config::default()
            .num_cpus(2.0)
            .num_gpus(0.0)
            .resource("accel", 1.0),
    );
    let pg = create_ready(
        vec![Bundle::new().cpu(1.0).resource("accel", 1.0)],
        PlacementStrategy::Pack,
    );
    let in_the_bundle = || {
        Counter::options()
            .num_cpus(1.0)
            .resource("accel", 1.0)
            .scheduling_strategy(in_group(&pg))
            .remote(0)
    };
    let holder = in_the_bundle();
    assert_eq!(
        get(&holder.inc().remote()).expect("the actor holding the bundle"),
        1
    );
    let stuck = in_the_bundle();
    assert_still_pending(
        "an actor waiting for the bundle another holds",
        &stuck.inc().remote(),
    );
    lumen::remove_placement_group(&pg).expect("remove");
    expect_unschedulable_actor(failure(
        "a call on a pending actor of a removed group",
        lumen::get_timeout(&stuck.inc().remote(), SOON),
    ));
}

/// On a cluster, work waiting for a group that is not placed yet is queued where it was
/// submitted, on a node that holds none of the group's bundles. Removing the group must still
/// fail it, not leave it pending forever.
#[test]
fn removal_fails_pending_users_queued_off_the_groups_nodes() {
    let s = Session::start_cluster(vec![
        Config::default().num_cpus(2.0).num_gpus(0.0),
        Config::default()
            .num_cpus(2.0)
            .num_gpus(0.0)
            .resource("accel", 1.0),
    ]);
    // No node has two `accel`: the group stays pending.
    let pg = PlacementGroup::builder([Bundle::new().resource("accel", 2.0)])
        .create()
        .expect("create");
    assert_eq!(table(&pg).state, PlacementGroupState::Pending);
    let stuck = Counter::options()
        .num_cpus(0.0)
        .resource("accel", 1.0)
        .scheduling_strategy(in_group(&pg))
        .remote(0);
    assert_still_pending("an actor in a group never placed", &stuck.inc().remote());
    lumen::remove_placement_group(&pg).expect("remove");
    match lumen::get_timeout(&stuck.inc().remote(), SOON) {
        Err(Error::GetTimeout { .. }) => {
            let queued: Vec<_> = lumen::nodes()
                .into_iter()
                .map(|n| (n.node_id, n.pending))
                .collect();
            panic!(
                "a call on a pending actor of a removed group hung (nodes {} and {}); demands \
                 queued per node: {queued:?}",
                s.node(0),
                s.node(1)
            )
        }
        Err(e) => eprintln!("pending actor of a removed group (cluster): {e}"),
        Ok(v) => panic!("an actor of a removed group answered {v}"),
    }
}

// ---------------------------------------------------------------------------------------------
// 6. Names and lifetimes
// ---------------------------------------------------------------------------------------------

#[test]
fn named_groups_are_found_unique_and_reusable() {
    let _s = Session::embedded(
        Config::default()
            .num_cpus(2.0)
            .num_gpus(0.0)
            .namespace("pg-names"),
    );
    let name = format!("pg-global-{}", std::process::id());
    let pg = PlacementGroup::builder(cpus(1))
        .name(name.clone())
        .create()
        .expect("create named");
    assert!(pg.wait(SOON));
    assert_eq!(table(&pg).name.as_deref(), Some(name.as_str()));

    // Found by name, with its bundles.
    let found = lumen::get_placement_group(&name).expect("get_placement_group");
    assert_eq!(found.id(), pg.id());
    assert_eq!(found.bundle_count(), 1);
    assert_eq!(found, pg);
    match lumen::get_placement_group("no-such-group") {
        Err(Error::NotFound { .. }) => {}
        other => panic!("an unknown name: expected NotFound, got {other:?}"),
    }
    assert!(matches!(
        PlacementGroup::builder(cpus(1)).name("").create(),
        Err(Error::InvalidArgument { .. })
    ));

    // A duplicate name is refused and reserves nothing; another namespace may use it.
    let before = lumen::list_placement_groups().len();
    match PlacementGroup::builder(cpus(1)).name(name.clone()).create() {
        Err(Error::InvalidArgument { message }) => {
            assert!(message.contains(&name), "{message}")
        }
        other => panic!("a duplicate name: expected InvalidArgument, got {other:?}"),
    }
    assert_eq!(lumen::list_placement_groups().len(), before);
    let elsewhere = PlacementGroup::builder(cpus(1))
        .name(name.clone())
        .namespace("another-namespace")
        .create()
        .expect("the same name in another namespace");
    assert_ne!(elsewhere.id(), pg.id());
    assert_eq!(
        lumen::get_placement_group(&name).expect("lookup").id(),
        pg.id(),
        "the lookup left the driver's namespace"
    );
    lumen::remove_placement_group(&elsewhere).expect("remove");

    // After removal the name is free again.
    lumen::remove_placement_group(&pg).expect("remove");
    match lumen::get_placement_group(&name) {
        Err(Error::NotFound { .. }) => {}
        other => panic!("a removed group's name: expected NotFound, got {other:?}"),
    }
    let again = PlacementGroup::builder(cpus(1))
        .name(name.clone())
        .create()
        .expect("reuse the name");
    assert!(again.wait(SOON));
    assert_eq!(
        lumen::get_placement_group(&name).expect("lookup").id(),
        again.id()
    );
    lumen::remove_placement_group(&again).expect("remove");
}

#[test]
fn placement_group_twins_work_on_a_tokio_runtime() {
    let _s = Session::embedded(
        Config::default()
            .num_cpus(4.0)
            .num_gpus(0.0)
            .namespace("pg-twins"),
    );
    let name = format!("pg-twin-{}", std::process::id());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    rt.block_on(async {
        let named = PlacementGroup::builder(cpus(2))
            .name(name.clone())
            .create_async()
            .await
            .expect("create_async with a name");
        assert!(named.wait_async(SOON).await, "the group was not created");
        named.ready().await.expect("ready");
        let info = lumen::placement_group_table_async(&named)
            .await
            .expect("placement_group_table_async");
        assert_eq!(info.state, PlacementGroupState::Created);
        assert_eq!(info.name.as_deref(), Some(name.as_str()));
        let found = lumen::get_placement_group_async(&name)
            .await
            .expect("get_placement_group_async");
        assert_eq!(found, named);
        match lumen::get_placement_group_async("no-such-group").await {
            Err(Error::NotFound { .. }) => {}
            other => panic!("an unknown name: expected NotFound, got {other:?}"),
        }
        match PlacementGroup::builder(cpus(1))
            .name(name.clone())
            .create_async()
            .await
        {
            Err(Error::InvalidArgument { message }) => {
                assert!(message.contains(&name), "{message}")
            }
            other => panic!("a duplicate name: expected InvalidArgument, got {other:?}"),
        }
        assert!(matches!(
            PlacementGroup::builder(Vec::<Bundle>::new())
                .create_async()
                .await,
            Err(Error::InvalidArgument { .. })
        ));
        let unnamed = PlacementGroup::builder(cpus(1))
            .create_async()
            .await
            .expect("create_async");
        // Without a name, `create` does not wait for the GCS: it is allowed here.
        let plain = PlacementGroup::builder(cpus(1))
            .create()
            .expect("create without a name");
        let listed = lumen::list_placement_groups_async().await;
        for pg in [&named, &unnamed, &plain] {
            assert!(listed.iter().any(|g| g.id == pg.id()), "{listed:?}");
        }
        for pg in [&named, &unnamed, &plain] {
            lumen::remove_placement_group_async(pg)
                .await
                .expect("remove_placement_group_async");
        }
        let info = lumen::placement_group_table_async(&named)
            .await
            .expect("placement_group_table_async");
        assert_eq!(info.state, PlacementGroupState::Removed);
        assert!(
            !named.wait_async(SOON).await,
            "a removed group is never ready"
        );
    });
}

#[test]
fn blocking_placement_group_calls_in_a_tokio_runtime_are_refused() {
    let _s = Session::embedded(
        Config::default()
            .num_cpus(2.0)
            .num_gpus(0.0)
            .namespace("pg-refusals"),
    );
    let name = format!("pg-refused-{}", std::process::id());
    let existing = PlacementGroup::builder(cpus(1))
        .name(format!("{name}-existing"))
        .create()
        .expect("create");
    assert!(existing.wait(SOON));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    rt.block_on(async {
        let refusals = [
            (
                "lumen::placement_group_table_async",
                lumen::placement_group_table(&existing).map(|_| ()),
            ),
            (
                "lumen::get_placement_group_async",
                lumen::get_placement_group(&format!("{name}-existing")).map(|_| ()),
            ),
            (
                "create_async",
                PlacementGroup::builder(cpus(1))
                    .name(name.clone())
                    .create()
                    .map(|_| ()),
            ),
            (
                "lumen::remove_placement_group_async",
                lumen::remove_placement_group(&existing),
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
        // The calls that cannot refuse answer at once with nothing.
        assert!(lumen::list_placement_groups().is_empty());
        assert!(!existing.wait(SOON));
    });
    // Nothing was done by the refused calls: the group is still there, the name still free.
    assert_eq!(state(&existing), PlacementGroupState::Created);
    match lumen::get_placement_group(&name) {
        Err(Error::NotFound { .. }) => {}
        other => panic!("a refused creation's name: expected NotFound, got {other:?}"),
    }
    assert_eq!(lumen::list_placement_groups().len(), 1);
    lumen::remove_placement_group(&existing).expect("remove");
}

#[test]
fn a_drivers_groups_end_with_it_unless_detached() {
    let s = Session::uniform(2, 2.0);
    let name = format!("pg-detached-{}", std::process::id());
    let owned = create_ready(cpus(1), PlacementStrategy::Pack);
    let detached = PlacementGroup::builder(cpus(1))
        .name(name.clone())
        .detached()
        .create()
        .expect("create detached");
    assert!(detached.wait(SOON));
    assert!(table(&detached).detached);
    assert!(!table(&owned).detached);
    expect_available("both groups reserved", |a| amount(a, "CPU") == 2.0);

    // The driver leaves; a second driver connects.
    lumen::shutdown();
    s.connect();
    let row = |pg: &PlacementGroup| {
        lumen::list_placement_groups()
            .into_iter()
            .find(|g| g.id == pg.id())
    };
    assert!(
        wait_until(SOON, || row(&owned)
            .is_some_and(|g| g.state == PlacementGroupState::Removed)),
        "the first driver's group is not removed after it left: {:?}",
        row(&owned)
    );
    let d = row(&detached).expect("the detached group is listed");
    assert_eq!(d.state, PlacementGroupState::Created, "{d:?}");
    assert_eq!(d.name.as_deref(), Some(name.as_str()));
    let did = detached.id().to_string();
    expect_available("only the detached group holds a CPU", |a| {
        amount(a, "CPU") == 3.0
            && amount(a, &format!("CPU_group_{did}")) == 1.0
            && of_group(a, &owned).is_empty()
    });
    expect_no_group_resources(&owned);

    // The second driver finds the detached group by name, uses it and removes it.
    let found = lumen::get_placement_group(&name).expect("found from the second driver");
    assert_eq!(found.id(), detached.id());
    let r = where_am_i::options()
        .scheduling_strategy(in_group(&found))
        .remote();
    let node = get(&r).expect("a task in the detached group");
    assert_eq!(Some(node), table(&found).bundle_nodes[0]);
    lumen::remove_placement_group(&found).expect("remove");
    expect_available("all free", |a| {
        amount(a, "CPU") == 4.0 && any_group_resources(a).is_empty()
    });
}

// ---------------------------------------------------------------------------------------------
// 7. Child tasks captured into the group
// ---------------------------------------------------------------------------------------------

/// The parent takes no CPU, so this does not depend on a blocked parent lending its CPU.
#[test]
fn captured_children_run_in_the_parents_group() {
    let _s = Session::embedded(
        Config::default()
            .num_cpus(2.0)
            .num_gpus(0.0)
            .resource("special", 1.0),
    );
    let node = here();
    let pg = create_ready(
        vec![Bundle::new().cpu(1.0).resource("special", 1.0)],
        PlacementStrategy::Pack,
    );
    // The group holds the node's only `special`.
    expect_available("the group reserved `special`", |a| {
        amount(a, "special") == 0.0 && amount(a, "CPU") == 1.0
    });

    // With capture, the child (no strategy of its own) goes into the group and gets `special`.
    let r = parent_of_special::options()
        .num_cpus(0.0)
        .scheduling_strategy(in_group(&pg).capture_child_tasks(true))
        .remote(30_000);
    assert_eq!(
        get(&r).expect("parent with capture"),
        Some(node),
        "the captured child did not run"
    );

    // Without capture the child asks the node for `special`, which only the group has: it waits.
    let r = parent_of_special::options()
        .num_cpus(0.0)
        .scheduling_strategy(in_group(&pg))
        .remote(1_000);
    assert_eq!(
        get(&r).expect("parent without capture"),
        None,
        "an uncaptured child got `special`, which the group had reserved"
    );
}

/// The parent holds the group's only CPU and blocks in `get` on its captured child, which needs
/// a CPU too: as in Ray (since ray-project/ray#43270), a blocked task lends its CPU, placement
/// group CPU included, so the child runs.
#[test]
fn blocked_parent_lends_its_group_cpu_to_a_captured_child() {
    let _s = Session::embedded(
        Config::default()
            .num_cpus(2.0)
            .num_gpus(0.0)
            .resource("special", 1.0),
    );
    let node = here();
    let pg = create_ready(
        vec![Bundle::new().cpu(1.0).resource("special", 1.0)],
        PlacementStrategy::Pack,
    );
    let r = parent_of_special::options()
        .scheduling_strategy(in_group(&pg).capture_child_tasks(true))
        .remote(10_000);
    assert_eq!(
        get(&r).expect("parent with capture"),
        Some(node),
        "the captured child did not run while its parent (holding the group's CPU) waited"
    );
}

/// Work that can never run in its group is refused when it is submitted, as Ray refuses it
/// (`check_placement_group_index`, `_validate_resource_shape`), instead of waiting forever; so is
/// a bundle that names the reserved resource `bundle`.
#[test]
fn work_that_can_never_run_in_its_group_is_refused_at_once() {
    let _s = Session::embedded(Config::default().num_cpus(4.0).num_gpus(0.0));
    match PlacementGroup::builder([Bundle::new().cpu(1.0).resource("bundle", 1.0)]).create() {
        Err(Error::InvalidArgument { message }) => {
            assert!(
                message.contains("\"bundle\"") && message.contains("reserved"),
                "{message}"
            )
        }
        other => panic!("a bundle asking for `bundle` was not refused: {other:?}"),
    }
    let pg = create_ready(
        vec![Bundle::new().cpu(1.0), Bundle::new().cpu(2.0)],
        PlacementStrategy::Pack,
    );
    common::expect_invalid(
        where_am_i::options()
            .scheduling_strategy(in_group(&pg).bundle_index(3))
            .remote(),
        &["bundle index 3", "2 bundle"],
    );
    common::expect_invalid(
        where_am_i::options()
            .num_cpus(3.0)
            .scheduling_strategy(in_group(&pg))
            .remote(),
        &["where_am_i", "fits none"],
    );
    common::expect_invalid(
        where_am_i::options()
            .num_cpus(2.0)
            .scheduling_strategy(in_group(&pg).bundle_index(0))
            .remote(),
        &["bundle 0", "does not fit"],
    );
    let actor = Counter::options()
        .num_cpus(3.0)
        .scheduling_strategy(in_group(&pg))
        .remote(0);
    common::expect_invalid(actor.inc().remote(), &["actor", "fits none"]);
    // What fits a bundle runs there.
    let r = where_am_i::options()
        .num_cpus(2.0)
        .scheduling_strategy(in_group(&pg).bundle_index(1))
        .remote();
    assert_eq!(get(&r).expect("a task that fits bundle 1"), here());
}

/// Ray's `test_capture_child_tasks[placement_group=None]`: a child that names the default
/// strategy opts out of the group its parent captures. The child asks for 2 CPUs, which the
/// group's 1-CPU bundle can never give: it runs only if it was scheduled outside the group.
/// Returns the nodes the child task and the child actor ran on.
fn children_opting_out_of_the_captured_group() -> (NodeId, NodeId) {
    let pg = create_ready(vec![Bundle::new().cpu(1.0)], PlacementStrategy::Pack);
    let task = parent_of_default_child::options()
        .num_cpus(0.0)
        .scheduling_strategy(in_group(&pg).capture_child_tasks(true))
        .remote(2.0, 30_000);
    let task = get(&task).expect("parent with capture").unwrap_or_else(|| {
        panic!("a child with an explicit default strategy did not run outside the captured group")
    });
    // The same for an actor the parent creates.
    let actor = parent_of_default_actor::options()
        .num_cpus(0.0)
        .scheduling_strategy(in_group(&pg).capture_child_tasks(true))
        .remote(2.0, 30_000);
    let actor = get(&actor)
        .expect("parent with capture")
        .unwrap_or_else(|| {
            panic!("an actor with an explicit default strategy was not placed outside the group")
        });
    (task, actor)
}

#[test]
fn an_explicit_default_strategy_opts_a_child_out_of_the_captured_group() {
    let _s = Session::embedded(Config::default().num_cpus(3.0).num_gpus(0.0));
    assert_eq!(
        children_opting_out_of_the_captured_group(),
        (here(), here())
    );
}

/// The same on two nodes of 3 CPUs, where the children run in worker processes. There, a
/// captured child that fits no bundle of the group is refused too: the parent's process never
/// saw a handle of the group, and learns its bundles from the parent's task.
#[test]
fn an_explicit_default_strategy_opts_a_child_out_of_the_captured_group_on_a_cluster() {
    let s = Session::uniform(2, 3.0);
    let (task, actor) = children_opting_out_of_the_captured_group();
    let nodes = [s.node(0), s.node(1)];
    assert!(
        nodes.contains(&task) && nodes.contains(&actor),
        "{task} {actor}"
    );
    let pg = create_ready(vec![Bundle::new().cpu(1.0)], PlacementStrategy::Pack);
    let r = parent_of_captured_child::options()
        .num_cpus(0.0)
        .scheduling_strategy(in_group(&pg).capture_child_tasks(true))
        .remote(2.0, 30_000);
    match get(&r) {
        Err(e) => assert!(e.to_string().contains("fits none"), "{e}"),
        Ok(v) => panic!("a captured child that fits no bundle was not refused: {v:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// 8. Rescheduling after a node dies
// ---------------------------------------------------------------------------------------------

/// A SPREAD group of 2 x {CPU 1} on a 3-node cluster (2 CPUs each) loses the worker node (never
/// the head) holding one of its bundles. Checks that the group goes RESCHEDULING (or straight
/// back to CREATED) and is CREATED again within [`SOON`], with the lost bundle on a live node and
/// the other bundle where it was. Returns the group, the index of the lost bundle and the nodes
/// after.
fn lose_a_spread_bundle(s: &mut Session) -> (PlacementGroup, usize, Vec<NodeId>) {
    let head = s.node(0);
    let pg = create_ready(cpus(2), PlacementStrategy::Spread);
    let before = placed(&table(&pg));
    assert_eq!(distinct(&before), 2, "SPREAD of 2 on 3 nodes: {before:?}");

    let lost = before
        .iter()
        .position(|n| *n != head)
        .expect("a bundle off the head");
    let kept = 1 - lost;
    let victim = before[lost];
    let k = s.index_of(victim, 3);
    s.cluster_mut().kill_node(k);
    wait_node_dead(victim);

    let mut seen = Vec::new();
    let ok = wait_until(SOON, || {
        let st = state(&pg);
        if seen.last() != Some(&st) {
            seen.push(st);
        }
        st == PlacementGroupState::Created
            && table(&pg)
                .bundle_nodes
                .iter()
                .all(|n| n.is_some_and(|n| n != victim))
    });
    eprintln!("states after node {victim} (bundle {lost}) died: {seen:?}");
    assert!(ok, "not placed again within {SOON:?}: {:?}", table(&pg));
    assert!(
        seen.iter().all(|s| matches!(
            s,
            PlacementGroupState::Rescheduling | PlacementGroupState::Created
        )),
        "{seen:?}"
    );
    let after = placed(&table(&pg));
    assert_eq!(after[kept], before[kept], "the surviving bundle moved");
    assert_ne!(after[lost], victim);
    assert!(
        lumen::nodes()
            .iter()
            .any(|n| n.node_id == after[lost] && n.alive),
        "bundle {lost} is on {} which is not alive",
        after[lost]
    );
    (pg, lost, after)
}

#[test]
fn bundles_of_a_dead_node_are_placed_again() {
    let mut s = Session::uniform(3, 2.0);
    let (pg, lost, after) = lose_a_spread_bundle(&mut s);
    if after[0] == after[1] {
        eprintln!(
            "note: SPREAD re-placed bundle {lost} on the node of the other bundle \
             (see spread_group_re_places_a_lost_bundle_on_a_free_node)"
        );
    }

    // Work pinned to the moved bundle runs on its new node; both bundles hold their CPU again.
    let r = where_am_i::options()
        .scheduling_strategy(in_bundle(&pg, lost))
        .remote();
    assert_eq!(get(&r).expect("a task in the moved bundle"), after[lost]);
    let id = pg.id().to_string();
    expect_available("both bundles reserved again", |a| {
        amount(a, &format!("CPU_group_{id}")) == 2.0 && amount(a, "CPU") == 2.0
    });
    lumen::remove_placement_group(&pg).expect("remove");
    expect_available("all free", |a| {
        amount(a, "CPU") == 4.0 && any_group_resources(a).is_empty()
    });
}

/// SPREAD means "different nodes where possible" (`PlacementStrategy::Spread`'s doc, and what
/// Ray's least-utilised bundle scorer does): with a free live node, a lost bundle should not be
/// re-placed on the node holding the group's other bundle.
#[test]
fn spread_group_re_places_a_lost_bundle_on_a_free_node() {
    let mut s = Session::uniform(3, 2.0);
    let (_pg, lost, after) = lose_a_spread_bundle(&mut s);
    assert_ne!(
        after[0], after[1],
        "SPREAD re-placed bundle {lost} next to the other bundle although a third node was free"
    );
}

#[test]
fn strict_spread_group_waits_for_a_replacement_node() {
    let mut s = Session::uniform(3, 2.0);
    let head = s.node(0);
    let pg = create_ready(cpus(3), PlacementStrategy::StrictSpread);
    let before = placed(&table(&pg));
    assert_eq!(distinct(&before), 3);
    let lost = before
        .iter()
        .position(|n| *n != head)
        .expect("off the head");
    let victim = before[lost];
    let k = s.index_of(victim, 3);
    s.cluster_mut().kill_node(k);
    wait_node_dead(victim);

    // Two live nodes, each holding another bundle: nowhere to go.
    expect_state(&pg, PlacementGroupState::Rescheduling, SOON);
    std::thread::sleep(BRIEF);
    let t = table(&pg);
    assert_eq!(t.state, PlacementGroupState::Rescheduling, "{t:?}");
    assert_eq!(t.bundle_nodes[lost], None, "{t:?}");
    assert!(
        !pg.wait(Duration::from_millis(200)),
        "ready() while rescheduling"
    );

    // A node joins: the bundle goes there.
    let k = s
        .cluster_mut()
        .add_node(Config::default().num_cpus(2.0).num_gpus(0.0))
        .expect("add_node");
    let new_node = s.node(k);
    expect_state(&pg, PlacementGroupState::Created, SOON);
    let after = placed(&table(&pg));
    assert_eq!(after[lost], new_node, "{after:?}");
    assert_eq!(distinct(&after), 3);
    for i in (0..3).filter(|&i| i != lost) {
        assert_eq!(after[i], before[i], "bundle {i} moved");
    }
    assert!(pg.wait(SOON));
}

/// An actor in a bundle whose node dies restarts with the bundle on its new node, as its own
/// `max_restarts` allows.
#[test]
fn actor_in_a_lost_bundle_restarts_where_the_bundle_goes() {
    let mut s = Session::uniform(3, 2.0);
    let head = s.node(0);
    let pg = create_ready(cpus(2), PlacementStrategy::Spread);
    let before = placed(&table(&pg));
    let lost = before
        .iter()
        .position(|n| *n != head)
        .expect("a bundle off the head");
    let victim = before[lost];
    let actor = Counter::options()
        .num_cpus(1.0)
        .max_restarts(1)
        .scheduling_strategy(in_bundle(&pg, lost))
        .remote(10);
    assert_eq!(get(&actor.inc().remote()).expect("first call"), 11);
    assert_eq!(get(&actor.node().remote()).expect("its node"), victim);

    let k = s.index_of(victim, 3);
    s.cluster_mut().kill_node(k);
    wait_node_dead(victim);
    // The restarted actor starts from its constructor, on the bundle's new node.
    let mut answer = None;
    let ok = wait_until(LONG, || {
        match lumen::get_timeout(&actor.inc().remote(), SOON) {
            Ok(v) => {
                answer = Some(v);
                true
            }
            Err(Error::ActorDied { .. }) => false,
            Err(e) => panic!("a call after the node died: {e:?}"),
        }
    });
    assert!(
        ok,
        "the actor never came back: {:?}; actors: {:?}",
        table(&pg),
        lumen::list_actors()
    );
    assert_eq!(
        answer,
        Some(11),
        "a restarted actor starts from its constructor"
    );
    let now = placed(&table(&pg));
    assert_ne!(now[lost], victim);
    assert_eq!(
        get(&actor.node().remote()).expect("its new node"),
        now[lost]
    );
}
