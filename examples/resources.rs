//! # Resources and scheduling
//!
//! Ray's "Resources" and "Scheduling" sections, in Rust. It shows:
//!
//! - a node's logical resources given to `lumen::init_with(Config..)`: CPUs, GPUs and custom
//!   resources;
//! - resource requirements of tasks and actors, in the attribute and overridden per call;
//! - `lumen::cluster_resources()`, `lumen::available_resources()` and `lumen::nodes()`;
//! - resources limiting how many tasks run at once, and fractional CPUs letting more run;
//! - GPUs: `num_gpus` tasks and actors, and `runtime_context().gpu_ids()`;
//! - the actors' default: 1 CPU to be placed, none held while running;
//! - scheduling strategies on the single node: `Default`, `Spread`, `NodeAffinity`;
//! - a task that fits no node staying pending (seen with `get_timeout`), and invalid amounts.
//!
//! Placement groups and multi-node clusters are part of lumen's API but come later; this
//! example leaves them out.
//!
//! Run it with:
//!
//! ```text
//! cargo run --release --example resources
//! ```

use lumen::SchedulingStrategy;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// Resource requirements.
// ---------------------------------------------------------------------------------------------

/// The defaults of every call of this function: 2 CPUs, 2 GPUs and 1 `special_hardware`.
#[lumen::remote(num_cpus = 2, num_gpus = 2, resources(special_hardware = 1))]
fn func() -> i64 {
    1
}

/// An actor that asks for a GPU and no CPU.
#[derive(Default)]
pub struct GpuActor;

#[lumen::remote(num_cpus = 0, num_gpus = 1)]
impl GpuActor {
    /// Nothing to set up.
    pub fn new() -> Self {
        GpuActor
    }

    /// The GPUs this actor was given.
    pub fn gpu_ids(&self) -> Vec<u32> {
        lumen::runtime_context().gpu_ids()
    }
}

// ---------------------------------------------------------------------------------------------
// Concurrency: resources bound how many tasks run at once.
// ---------------------------------------------------------------------------------------------

/// Tasks of the current batch running right now, and the most seen at once. (The embedded
/// cluster runs tasks in this process, so statics are shared by all of them.)
static RUNNING: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

/// Pretends to work for `ms` milliseconds, counting how many tasks run alongside.
#[lumen::remote]
fn busy(ms: u64) -> usize {
    let now = RUNNING.fetch_add(1, Ordering::SeqCst) + 1;
    PEAK.fetch_max(now, Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(ms));
    RUNNING.fetch_sub(1, Ordering::SeqCst);
    now
}

/// Runs `refs` to completion; returns the peak number of tasks seen running at once.
fn peak_of(refs: Vec<lumen::ObjectRef<usize>>) -> lumen::Result<usize> {
    lumen::get_all(&refs)?;
    Ok(PEAK.swap(0, Ordering::SeqCst))
}

// ---------------------------------------------------------------------------------------------
// GPUs.
// ---------------------------------------------------------------------------------------------

/// A task using one GPU: which one it got is in its runtime context.
#[lumen::remote(num_gpus = 1)]
fn gpu_task() -> Vec<u32> {
    std::thread::sleep(Duration::from_millis(200)); // hold it a while, so both run together
    lumen::runtime_context().gpu_ids()
}

/// An IO-bound actor that needs half a GPU: two of them share one GPU.
#[derive(Default)]
pub struct IoActor;

#[lumen::remote(num_gpus = 0.5)]
impl IoActor {
    /// Nothing to set up.
    pub fn new() -> Self {
        IoActor
    }

    /// The GPUs this actor shares (Ray's example prints `CUDA_VISIBLE_DEVICES`).
    pub fn ping(&self) -> Vec<u32> {
        lumen::runtime_context().gpu_ids()
    }
}

/// An actor with the default resources.
#[derive(Default)]
pub struct Idle;

#[lumen::remote]
impl Idle {
    /// Nothing to set up.
    pub fn new() -> Self {
        Idle
    }

    /// Answers.
    pub fn ping(&self) -> bool {
        true
    }
}

// ---------------------------------------------------------------------------------------------
// Scheduling.
// ---------------------------------------------------------------------------------------------

/// Where it ran.
#[lumen::remote]
fn node_affinity_func() -> String {
    lumen::runtime_context().node_id().to_string()
}

/// Waits (up to 5 s) until `amount` of resource `name` is available again: a killed actor's
/// resources are released asynchronously.
fn wait_until_available(name: &str, amount: f64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while lumen::available_resources()
        .get(name)
        .copied()
        .unwrap_or(0.0)
        < amount
    {
        assert!(
            Instant::now() < deadline,
            "{amount} {name} never became available"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn main() -> lumen::Result<()> {
    // A node with 4 logical CPUs, 2 logical GPUs and two custom resources, whatever the
    // machine actually has: resources are logical, used only to decide what may run where.
    lumen::init_with(
        lumen::Config::default()
            .num_cpus(4.0)
            .num_gpus(2.0)
            .resource("special_hardware", 1.0)
            .resource("custom_label", 1.0),
    )?;
    let node_id = lumen::runtime_context().node_id();

    // ----- Task and actor requirements --------------------------------------------------------
    println!("Resource requirements");
    let r = lumen::get(&func::remote())?;
    println!("   func() with its defaults (2 CPUs, 2 GPUs, 1 special_hardware) -> {r}");
    // Override the defaults for one call.
    let r = func::options()
        .num_cpus(3.0)
        .num_gpus(1.0)
        .resource("special_hardware", 0.0)
        .remote();
    println!(
        "   func::options().num_cpus(3.0).num_gpus(1.0)... -> {}",
        lumen::get(&r)?
    );
    // Custom resources as labels: ask for a tiny amount so the label never limits parallelism.
    let r = node_affinity_func::options()
        .resource("custom_label", 0.001)
        .remote();
    println!(
        "   a task needing custom_label = 0.001 ran on node {}",
        lumen::get(&r)?
    );
    // Actors too: GpuActor asks for 1 GPU and 0 CPUs; options override that.
    let gpu_actor = GpuActor::remote();
    let gpus = lumen::get(&gpu_actor.gpu_ids().remote())?;
    println!("   GpuActor (num_cpus = 0, num_gpus = 1) got GPU {gpus:?}");
    assert_eq!(gpus.len(), 1);
    let cpu_actor = GpuActor::options().num_cpus(1.0).num_gpus(0.0).remote();
    let gpus = lumen::get(&cpu_actor.gpu_ids().remote())?;
    println!("   GpuActor::options().num_cpus(1.0).num_gpus(0.0) got GPUs {gpus:?}\n");
    assert!(gpus.is_empty());

    // ----- The cluster's resources ------------------------------------------------------------
    println!("Cluster resources");
    let total = lumen::cluster_resources();
    // The tasks above gave their slots back a moment after their results; the view catches up.
    wait_until_available("CPU", 3.0);
    wait_until_available("GPU", 1.0);
    let available = lumen::available_resources();
    for name in ["CPU", "GPU", "special_hardware", "custom_label"] {
        println!(
            "   {name:>16}: {} available of {}",
            available.get(name).copied().unwrap_or(0.0),
            total[name]
        );
    }
    // The two actors above hold what they asked for as long as they live.
    assert_eq!((total["CPU"], total["GPU"]), (4.0, 2.0));
    assert_eq!((available["CPU"], available["GPU"]), (3.0, 1.0));
    assert_eq!(total["special_hardware"], 1.0);
    for node in lumen::nodes() {
        println!(
            "   node {} ({}), alive: {}",
            node.node_id, node.address, node.alive
        );
    }
    // Killing them gives their resources back.
    lumen::kill(&gpu_actor);
    lumen::kill(&cpu_actor);
    wait_until_available("CPU", 4.0);
    wait_until_available("GPU", 2.0);
    println!("   after killing both actors: all 4 CPUs and 2 GPUs available again\n");

    // ----- Resources bound concurrency --------------------------------------------------------
    println!("Resources limit how many tasks run at once (4 CPUs)");
    let t = Instant::now();
    let peak = peak_of(
        (0..4)
            .map(|_| busy::options().num_cpus(2.0).remote(150))
            .collect(),
    )?;
    println!(
        "   4 tasks needing 2 CPUs each: at most {peak} at once, {:.0?} in all",
        t.elapsed()
    );
    assert_eq!(peak, 2);
    // Fractional requirements (down to 0.0001): IO-bound tasks can share a CPU.
    let t = Instant::now();
    let peak = peak_of(
        (0..8)
            .map(|_| busy::options().num_cpus(0.5).remote(150))
            .collect(),
    )?;
    println!(
        "   8 tasks needing 0.5 CPU each: {peak} at once, {:.0?} in all\n",
        t.elapsed()
    );
    assert_eq!(peak, 8);

    // ----- GPUs --------------------------------------------------------------------------------
    println!("GPUs (2 logical GPUs)");
    let refs = vec![gpu_task::remote(), gpu_task::remote()];
    let assigned = lumen::get_all(&refs)?;
    println!("   two num_gpus = 1 tasks at once got GPUs {assigned:?}");
    assert!(assigned.iter().all(|ids| ids.len() == 1 && ids[0] < 2));
    assert_ne!(assigned[0], assigned[1], "two whole-GPU tasks shared a GPU");
    // Two actors needing half a GPU each share one.
    let io_actor1 = IoActor::remote();
    let io_actor2 = IoActor::remote();
    let gpus1 = lumen::get(&io_actor1.ping().remote())?;
    let gpus2 = lumen::get(&io_actor2.ping().remote())?;
    // As above: the GPU tasks' slots come back a moment after their results.
    wait_until_available("GPU", 1.0);
    let gpus_left = lumen::available_resources()["GPU"];
    println!("   two num_gpus = 0.5 actors got GPUs {gpus1:?} and {gpus2:?}; {gpus_left} GPU left");
    assert_eq!((gpus1.len(), gpus2.len()), (1, 1));
    assert_eq!(gpus_left, 1.0);
    lumen::kill(&io_actor1);
    lumen::kill(&io_actor2);
    wait_until_available("GPU", 2.0);
    println!();

    // ----- Actors' default resources ---------------------------------------------------------
    println!("Actors' defaults: 1 CPU to be placed, 0 held while running");
    let idle: Vec<_> = (0..8).map(|_| Idle::remote()).collect();
    let refs: Vec<_> = idle.iter().map(|a| a.ping().remote()).collect();
    assert!(lumen::get_all(&refs)?.into_iter().all(|ok| ok));
    wait_until_available("CPU", 4.0);
    let cpus = lumen::available_resources()["CPU"];
    println!("   8 default actors alive on 4 CPUs; CPUs available: {cpus}\n");
    assert_eq!(cpus, 4.0);
    drop(idle);

    // ----- Scheduling strategies ---------------------------------------------------------------
    println!("Scheduling strategies (one node, so every task lands on it)");
    let here = node_id.to_string();
    let r = node_affinity_func::options()
        .scheduling_strategy(SchedulingStrategy::Default)
        .remote();
    assert_eq!(lumen::get(&r)?, here);
    let spread: Vec<_> = (0..10)
        .map(|_| {
            node_affinity_func::options()
                .scheduling_strategy(SchedulingStrategy::Spread)
                .remote()
        })
        .collect();
    let nodes = lumen::get_all(&spread)?;
    println!("   Spread: 10 tasks ran on {} node(s)", {
        let mut n = nodes.clone();
        n.dedup();
        n.len()
    });
    assert!(nodes.iter().all(|n| *n == here));
    // Only on this node (hard affinity).
    let r = node_affinity_func::options()
        .scheduling_strategy(SchedulingStrategy::NodeAffinity {
            node_id,
            soft: false,
        })
        .remote();
    println!(
        "   NodeAffinity {{ this node, soft: false }} ran on {}",
        lumen::get(&r)?
    );
    // A node that does not exist: soft affinity falls back to another node, hard fails.
    let gone: lumen::NodeId = "00000000000000000000000000dead00".parse()?;
    let r = node_affinity_func::options()
        .scheduling_strategy(SchedulingStrategy::NodeAffinity {
            node_id: gone,
            soft: true,
        })
        .remote();
    println!(
        "   NodeAffinity {{ unknown node, soft: true }} ran on {}",
        lumen::get(&r)?
    );
    let r = node_affinity_func::options()
        .scheduling_strategy(SchedulingStrategy::NodeAffinity {
            node_id: gone,
            soft: false,
        })
        .remote();
    let e = lumen::get_timeout(&r, Duration::from_secs(5)).unwrap_err();
    println!("   NodeAffinity {{ unknown node, soft: false }}: {e}\n");
    assert!(matches!(e, lumen::Error::TaskUnschedulable { .. }), "{e:?}");

    // ----- Infeasible and invalid requests ---------------------------------------------------
    println!("Requests that cannot run");
    // No node has 8 CPUs: the task waits (on a real cluster, until a big enough node joins).
    let too_big = busy::options().num_cpus(8.0).remote(0);
    let e = lumen::get_timeout(&too_big, Duration::from_millis(500)).unwrap_err();
    println!("   a task needing 8 CPUs stays pending: {e}");
    assert!(matches!(e, lumen::Error::GetTimeout { .. }));
    // GPU amounts above 1 must be whole numbers.
    let e = lumen::get(&gpu_task::options().num_gpus(1.5).remote()).unwrap_err();
    println!("   num_gpus(1.5): {e}");
    assert!(matches!(e, lumen::Error::InvalidArgument { .. }));

    // Placement groups (reserving bundles of resources across nodes) come later.

    lumen::shutdown();
    println!("\ndone");
    Ok(())
}
