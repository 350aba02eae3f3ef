//! Placement groups as data: [`Bundle`], the [`PlacementGroup`] handle and its builder's
//! options, their states and table rows; and how a group's reserved resources are named. What
//! users call on them (creating, waiting, listing, removing) is in the API layer.
//!
//! A group reserves its bundles atomically (the GCS prepares every bundle on its node, then
//! commits, or rolls all back). A committed bundle turns its node's resources into resources named
//! for the group, as Ray does: `CPU_group_<id>` (any bundle) and `CPU_group_<i>_<id>` (bundle
//! `i`), so only work scheduled into the group can use them, and only up to the bundle.

use crate::error::{Error, Result};
use crate::ids::{NodeId, PlacementGroupId};
use crate::placement::bundles::PlacementStrategy;
use crate::placement::SchedulingStrategy;
use crate::resources::{Amount, Resource, ResourceRequest, ResourceSet};
use dashmap::DashMap;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};

/// Resources reserved together on one node: one bundle of a placement group.
///
/// # Examples
/// ```
/// let b = lumen::Bundle::new().cpu(1.0).gpu(1.0).resource("disk", 2.0);
/// # let _ = b;
/// ```
#[derive(Clone, Debug, Default)]
pub struct Bundle {
    request: ResourceRequest,
}

impl Bundle {
    /// An empty bundle; add resources with the setters.
    pub fn new() -> Self {
        Bundle::default()
    }

    /// CPUs to reserve.
    pub fn cpu(mut self, n: f64) -> Self {
        self.request.num_cpus = Some(n);
        self
    }

    /// GPUs to reserve.
    pub fn gpu(mut self, n: f64) -> Self {
        self.request.num_gpus = Some(n);
        self
    }

    /// Bytes of the `memory` resource to reserve.
    pub fn memory(mut self, bytes: f64) -> Self {
        self.request.memory = Some(bytes);
        self
    }

    /// An amount of a custom resource to reserve.
    pub fn resource(mut self, name: impl Into<String>, amount: f64) -> Self {
        let name = name.into();
        self.request.custom.retain(|(n, _)| *n != name);
        self.request.custom.push((name, amount));
        self
    }

    pub(crate) fn to_set(&self) -> Result<ResourceSet> {
        if let Some((name, _)) = self.request.custom.iter().find(|(n, _)| n == "bundle") {
            return Err(Error::invalid(format!(
                "{name:?} is a system reserved resource name and cannot be used in a bundle"
            )));
        }
        let set = self.request.to_set(0.0)?;
        if set.is_empty() {
            return Err(Error::invalid(
                "a bundle must reserve something: give it cpu, gpu, memory or a resource",
            ));
        }
        Ok(set)
    }
}

/// The lifecycle of a placement group (Ray's states).
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PlacementGroupState {
    /// Waiting for resources (or for a node that can fit a bundle).
    Pending,
    /// Every bundle is reserved.
    Created,
    /// Removed; its resources are free and what used it was killed.
    Removed,
    /// A node holding some of its bundles died; those are being placed again.
    Rescheduling,
}

impl PlacementGroupState {
    /// Ray's name: `PENDING`, `CREATED`, `REMOVED`, `RESCHEDULING`.
    pub fn name(&self) -> &'static str {
        match self {
            PlacementGroupState::Pending => "PENDING",
            PlacementGroupState::Created => "CREATED",
            PlacementGroupState::Removed => "REMOVED",
            PlacementGroupState::Rescheduling => "RESCHEDULING",
        }
    }
}

/// A placement group, as [`placement_group_table`](crate::placement_group_table) reports it.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlacementGroupInfo {
    /// The group's id.
    pub id: PlacementGroupId,
    /// Its name, if it has one.
    pub name: Option<String>,
    /// Where it is in its lifecycle.
    pub state: PlacementGroupState,
    /// How its bundles spread.
    pub strategy: PlacementStrategy,
    /// Each bundle's resources.
    pub bundles: Vec<BTreeMap<String, f64>>,
    /// The node holding each bundle (`None` while unplaced).
    pub bundle_nodes: Vec<Option<NodeId>>,
    /// Whether it outlives its creating driver.
    pub detached: bool,
}

/// A handle to a placement group: cheap to clone, serializable (pass it to tasks and actors).
///
/// # Examples
/// ```no_run
/// use lumen::{Bundle, PlacementGroup, PlacementStrategy};
/// use std::time::Duration;
///
/// lumen::init_with(lumen::Config::default().num_cpus(4.0))?;
/// let pg = PlacementGroup::builder([Bundle::new().cpu(1.0), Bundle::new().cpu(1.0)])
///     .strategy(PlacementStrategy::Pack)
///     .create()?;
/// assert!(pg.wait(Duration::from_secs(10)));
/// lumen::remove_placement_group(&pg)?;
/// # Ok::<(), lumen::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlacementGroup {
    pub(crate) id: PlacementGroupId,
    /// Each bundle's resources (a group's bundles never change).
    pub(crate) bundles: Arc<[ResourceSet]>,
}

/// Options of a placement group being created: `PlacementGroup::builder(bundles)`.
#[must_use = "a placement group is made by .create()"]
#[derive(Clone, Debug)]
pub struct PlacementGroupBuilder {
    pub(crate) bundles: Vec<Bundle>,
    pub(crate) strategy: PlacementStrategy,
    pub(crate) name: Option<String>,
    pub(crate) namespace: Option<String>,
    pub(crate) detached: bool,
}

impl PlacementGroup {
    /// Starts building a group of `bundles`.
    pub fn builder(bundles: impl IntoIterator<Item = Bundle>) -> PlacementGroupBuilder {
        PlacementGroupBuilder {
            bundles: bundles.into_iter().collect(),
            strategy: PlacementStrategy::Pack,
            name: None,
            namespace: None,
            detached: false,
        }
    }

    /// The group's id.
    pub fn id(&self) -> PlacementGroupId {
        self.id
    }

    /// How many bundles it has.
    pub fn bundle_count(&self) -> usize {
        self.bundles.len()
    }
}

/// The bundles of every group whose handle this process turned into a scheduling strategy, so
/// that work sent into a group is checked against its bundles before it is sent: a group's
/// bundles never change, so an entry is never stale. Entries go when this process removes the
/// group.
static KNOWN: LazyLock<DashMap<PlacementGroupId, Arc<[ResourceSet]>>> = LazyLock::new(DashMap::new);

/// Remembers `pg`'s bundles (see [`KNOWN`]).
pub(crate) fn remember(pg: &PlacementGroup) {
    KNOWN.entry(pg.id).or_insert_with(|| pg.bundles.clone());
}

/// The bundles of the group `strategy` captures children into, if it does and they are known
/// here: what a task or actor carries so that the process running it can check its children.
pub(crate) fn captured_bundles(strategy: &SchedulingStrategy) -> Option<Arc<[ResourceSet]>> {
    match strategy {
        SchedulingStrategy::PlacementGroup {
            group,
            capture_child_tasks: true,
            ..
        } => KNOWN.get(group).map(|b| b.clone()),
        _ => None,
    }
}

/// Remembers the bundles a task or actor scheduled into a group carried (see
/// [`captured_bundles`]).
pub(crate) fn learn(strategy: &SchedulingStrategy, bundles: Option<&Arc<[ResourceSet]>>) {
    if let (SchedulingStrategy::PlacementGroup { group, .. }, Some(b)) = (strategy, bundles) {
        KNOWN.entry(*group).or_insert_with(|| b.clone());
    }
}

/// Forgets the bundles of a group this process removed.
pub(crate) fn forget(id: PlacementGroupId) {
    KNOWN.remove(&id);
}

/// Refuses a request scheduled into a group when it can never run there, as Ray does when a task
/// or actor is submitted: a bundle index out of range, or a request no bundle (or not the chosen
/// bundle) can hold. `req` is the request before it is renamed for the group; `what` names the
/// task or actor (made only for the message). Groups whose bundles this process never learned
/// pass unchecked.
pub(crate) fn check_request(
    strategy: &SchedulingStrategy,
    req: &ResourceSet,
    what: impl FnOnce() -> String,
) -> Result<()> {
    let SchedulingStrategy::PlacementGroup {
        group,
        bundle_index,
        ..
    } = strategy
    else {
        return Ok(());
    };
    let Some(bundles) = KNOWN.get(group).map(|b| b.clone()) else {
        return Ok(());
    };
    let what = what();
    let shapes = || {
        bundles
            .iter()
            .map(|b| format!("{b:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match bundle_index {
        Some(i) if *i as usize >= bundles.len() => Err(Error::invalid(format!(
            "bundle index {i} is out of range for placement group {group}, which has {} \
             bundle(s): valid indexes are 0 to {}",
            bundles.len(),
            bundles.len() - 1
        ))),
        Some(i) if !req.is_subset_of(&bundles[*i as usize]) => Err(Error::invalid(format!(
            "cannot schedule {what} into bundle {i} of placement group {group}: it asks for \
             {req:?}, which does not fit the bundle's {:?}",
            bundles[*i as usize]
        ))),
        None if !bundles.iter().any(|b| req.is_subset_of(b)) => Err(Error::invalid(format!(
            "cannot schedule {what} into placement group {group}: it asks for {req:?}, which \
             fits none of its bundles [{}]",
            shapes()
        ))),
        _ => Ok(()),
    }
}

/// The resources bundle `index` of `group` adds to its node once committed: each of its
/// resources under the group's wildcard name and under its bundle's name, plus 1000 units of
/// `bundle_group_..` so that work needing nothing can still be pinned to the bundle's node.
pub(crate) fn committed_resources(
    group: PlacementGroupId,
    index: u32,
    bundle: &ResourceSet,
) -> ResourceSet {
    let mut out = ResourceSet::new();
    let hex = group.hex();
    let mut add = |name: String, a: Amount| {
        let r = Resource::Custom(Arc::from(name.as_str()));
        let cur = out.get(&r);
        out.set(r, cur.plus(a));
    };
    for (r, a) in bundle.iter() {
        add(format!("{}_group_{hex}", r.name()), a);
        add(format!("{}_group_{index}_{hex}", r.name()), a);
    }
    add(format!("bundle_group_{hex}"), Amount::units(1000));
    add(format!("bundle_group_{index}_{hex}"), Amount::units(1000));
    out
}

/// A request rewritten to draw on a group's reservation: the group's wildcard resources, and
/// with a bundle `index` that bundle's too (so work pinned to a bundle and work taking any
/// bundle never use the same reservation twice).
pub(crate) fn request_in_group(
    req: &ResourceSet,
    group: PlacementGroupId,
    index: Option<u32>,
) -> ResourceSet {
    let hex = group.hex();
    let mut out = ResourceSet::new();
    let mut set = |name: String, a: Amount| {
        out.set(Resource::Custom(Arc::from(name.as_str())), a);
    };
    for (r, a) in req.iter() {
        set(format!("{}_group_{hex}", r.name()), a);
        if let Some(i) = index {
            set(format!("{}_group_{i}_{hex}", r.name()), a);
        }
    }
    set(format!("bundle_group_{hex}"), Amount::TICK);
    if let Some(i) = index {
        set(format!("bundle_group_{i}_{hex}"), Amount::TICK);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_resources_cover_exactly_what_the_group_may_use() {
        let g = PlacementGroupId(0xabc << 16);
        let mut b = ResourceSet::new();
        b.set(Resource::Cpu, Amount::units(2));
        let committed = committed_resources(g, 1, &b);
        let any = request_in_group(&ResourceSet::one_cpu(), g, None);
        let this = request_in_group(&ResourceSet::one_cpu(), g, Some(1));
        let other = request_in_group(&ResourceSet::one_cpu(), g, Some(0));
        assert!(any.is_subset_of(&committed));
        assert!(this.is_subset_of(&committed));
        assert!(!other.is_subset_of(&committed));
        let mut three = ResourceSet::new();
        three.set(Resource::Cpu, Amount::units(3));
        assert!(!request_in_group(&three, g, Some(1)).is_subset_of(&committed));
        for (r, _) in committed.iter() {
            assert!(r.name().ends_with(&g.hex()), "{}", r.name());
        }
    }
}
