//! # Placement groups: reserving resources together
//!
//! Ray's placement-group walk-through, in Rust, on the embedded cluster:
//!
//! - a group of one `{CPU: 1, GPU: 1}` bundle on a node with 2 logical CPUs and 2 logical GPUs,
//!   waited for with `ready()` and shown with `placement_group_table`;
//! - a `{CPU: 1}, {GPU: 2}` group that cannot be placed while the first holds a GPU: it stays
//!   `Pending` (and `get_timeout` on its `ready()` times out);
//! - an actor scheduled into the group (any bundle), and a GPU actor into bundle 0: the reserved
//!   resources show up as `CPU_group_<id>` / `GPU_group_<id>` in `available_resources()`;
//! - removing the group: its actors are killed, its resources come back, and the pending group
//!   is created with them;
//! - a named, detached group found again with `get_placement_group`, and the four strategies.
//!
//! ```text
//! cargo run --release --example placement_groups
//! ```

use lumen::{Bundle, PlacementGroup, PlacementGroupState, PlacementStrategy, SchedulingStrategy};
use std::collections::BTreeMap;
use std::time::Duration;

pub struct Actor;

#[lumen::remote]
impl Actor {
    pub fn new() -> Self {
        Actor
    }

    pub fn ready(&self) -> String {
        "ready".to_string()
    }
}

impl Default for Actor {
    fn default() -> Self {
        Actor
    }
}

fn show(label: &str, pg: &PlacementGroup) -> lumen::Result<()> {
    let t = lumen::placement_group_table(pg)?;
    println!(
        "{label}: {} state={} strategy={} bundles={:?} placed={}/{}",
        t.id,
        t.state.name(),
        t.strategy.name(),
        t.bundles,
        t.bundle_nodes.iter().filter(|n| n.is_some()).count(),
        t.bundles.len()
    );
    Ok(())
}

/// The CPU and GPU lines of available_resources(), group resources included.
fn usage() -> BTreeMap<String, f64> {
    lumen::available_resources()
        .into_iter()
        .filter(|(k, _)| k.starts_with("CPU") || k.starts_with("GPU"))
        .collect()
}

fn main() -> lumen::Result<()> {
    lumen::init_with(lumen::Config::default().num_cpus(2.0).num_gpus(2.0))?;

    // A group of one bundle, reserved from the 2-CPU, 2-GPU node.
    let pg = PlacementGroup::builder([Bundle::new().cpu(1.0).gpu(1.0)]).create()?;
    lumen::get_timeout(&pg.ready(), Duration::from_secs(10))?;
    show("created", &pg)?;
    println!("available after reserving: {:?}", usage());

    // {CPU: 1}, {GPU: 2}: the GPUs are not both free, so it waits.
    let pending =
        PlacementGroup::builder([Bundle::new().cpu(1.0), Bundle::new().gpu(2.0)]).create()?;
    match lumen::get_timeout(&pending.ready(), Duration::from_secs(1)) {
        Err(lumen::Error::GetTimeout { .. }) => println!("the second group is not ready yet"),
        other => println!("unexpected: {other:?}"),
    }
    show("pending", &pending)?;
    assert_eq!(
        lumen::placement_group_table(&pending)?.state,
        PlacementGroupState::Pending
    );

    // An actor that needs 1 CPU, in the group (any bundle).
    let actor = Actor::options()
        .num_cpus(1.0)
        .scheduling_strategy(SchedulingStrategy::placement_group(&pg))
        .remote();
    println!(
        "actor in the group: {}",
        lumen::get_timeout(&actor.ready().remote(), Duration::from_secs(10))?
    );
    // A GPU actor in bundle 0.
    let gpu_actor = Actor::options()
        .num_cpus(0.0)
        .num_gpus(1.0)
        .scheduling_strategy(SchedulingStrategy::placement_group(&pg).bundle_index(0))
        .remote();
    println!(
        "GPU actor in bundle 0: {}",
        lumen::get_timeout(&gpu_actor.ready().remote(), Duration::from_secs(10))?
    );
    println!("available with both actors: {:?}", usage());

    // Remove the group: its actors die, its resources return, the pending group gets them.
    lumen::remove_placement_group(&pg)?;
    match lumen::get_timeout(&actor.ready().remote(), Duration::from_secs(10)) {
        Err(e) => println!("after removal, the actor's call fails: {e}"),
        Ok(v) => println!("unexpected: the actor still answered {v}"),
    }
    show("removed", &pg)?;
    lumen::get_timeout(&pending.ready(), Duration::from_secs(10))?;
    show("the pending group, now", &pending)?;
    lumen::remove_placement_group(&pending)?;

    // A named, detached group, found by name.
    let named = PlacementGroup::builder([Bundle::new().cpu(0.5)])
        .name("global_name")
        .detached()
        .create()?;
    let again = lumen::get_placement_group("global_name")?;
    assert_eq!(again.id(), named.id());
    println!("get_placement_group(\"global_name\") found {}", again.id());
    match PlacementGroup::builder([Bundle::new().cpu(0.5)])
        .name("global_name")
        .create()
    {
        Err(e) => println!("a second group of the same name is refused: {e}"),
        Ok(_) => println!("unexpected: duplicate name accepted"),
    }
    lumen::remove_placement_group(&named)?;

    // The strategies on this one node.
    for strategy in [
        PlacementStrategy::Pack,
        PlacementStrategy::Spread,
        PlacementStrategy::StrictPack,
        PlacementStrategy::StrictSpread,
    ] {
        let g = PlacementGroup::builder([Bundle::new().cpu(0.5), Bundle::new().cpu(0.5)])
            .strategy(strategy)
            .create()?;
        let ok = g.wait(Duration::from_millis(500));
        println!(
            "{:<13} two bundles on one node: {}",
            strategy.name(),
            if ok {
                "created"
            } else {
                "pending (needs a node per bundle)"
            }
        );
        lumen::remove_placement_group(&g)?;
    }
    lumen::shutdown();
    Ok(())
}
