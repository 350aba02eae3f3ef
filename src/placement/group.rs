//! Placement groups as users see them: [`Bundle`], [`PlacementGroup`] and its builder,
//! [`placement_group_table`], [`remove_placement_group`], [`get_placement_group`]; and how a
//! group's reserved resources are named.
//!
//! A group reserves its bundles atomically (the GCS prepares every bundle on its node, then
//! commits, or rolls all back). A committed bundle turns its node's resources into resources named
//! for the group, as Ray does: `CPU_group_<id>` (any bundle) and `CPU_group_<i>_<id>` (bundle
//! `i`), so only work scheduled into the group can use them, and only up to the bundle.

use crate::error::{Error, Result};
use crate::ids::{NodeId, ObjectId, PlacementGroupId};
use crate::objects::codec;
use crate::objects::object_ref::{ObjectRef, RawRef};
use crate::objects::store::Stored;
use crate::placement::bundles::PlacementStrategy;
use crate::resources::{Amount, Resource, ResourceRequest, ResourceSet};
use crate::runtime;
use crate::system::placement_groups::{
    CreatePlacementGroup, GetPlacementGroup, ListPlacementGroups, OnPlacementGroupReady, PgSummary,
    RemovePlacementGroup, WaitPlacementGroup,
};
use crate::transport::wire::Target;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

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

    fn to_set(&self) -> Result<ResourceSet> {
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

/// A placement group, as [`placement_group_table`] reports it.
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
    id: PlacementGroupId,
    bundles: usize,
}

/// Options of a placement group being created: `PlacementGroup::builder(bundles)`.
#[must_use = "a placement group is made by .create()"]
#[derive(Clone, Debug)]
pub struct PlacementGroupBuilder {
    bundles: Vec<Bundle>,
    strategy: PlacementStrategy,
    name: Option<String>,
    namespace: Option<String>,
    detached: bool,
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
        self.bundles
    }

    /// An object that becomes ready when every bundle is reserved (or fails if the group is
    /// removed first): use it with `get`, `get_timeout`, `wait` or `.await`.
    pub fn ready(&self) -> ObjectRef<()> {
        let Ok(rt) = runtime::current() else {
            return crate::api::task::detached_ref();
        };
        let id = ObjectId::for_put();
        rt.refs.add_pending(id, None);
        let r = ObjectRef::adopt(RawRef {
            id,
            owner: rt.owner(),
        });
        let group = self.id;
        match &rt.gcs {
            // The GCS is in this process: it completes the object itself.
            Target::Local(gcs) => {
                let refs = Arc::downgrade(&rt.refs);
                gcs.do_send(OnPlacementGroupReady {
                    id: group,
                    then: Box::new(move |outcome| {
                        if let Some(refs) = refs.upgrade() {
                            refs.complete(id, ready_value(outcome), Vec::new());
                        }
                    }),
                });
            }
            Target::Remote(_) => {
                let (gcs, rt2) = (rt.gcs.clone(), rt.clone());
                rt.executor.spawn(async move {
                    let outcome = gcs.send(WaitPlacementGroup { id: group }).await;
                    rt2.refs
                        .complete(id, ready_value(outcome.and_then(|r| r)), Vec::new());
                });
            }
        }
        r
    }

    /// Waits up to `timeout` for the group to be created; whether it was.
    pub fn wait(&self, timeout: Duration) -> bool {
        crate::get_timeout(&self.ready(), timeout).is_ok()
    }
}

/// The value of a group's ready object.
fn ready_value(outcome: Result<()>) -> Stored {
    match outcome.and_then(|()| codec::encode("()", &())) {
        Ok(enc) => Stored::Value(enc.into_parts().0),
        Err(e) => Stored::Error(e),
    }
}

impl PlacementGroupBuilder {
    /// How the bundles spread over nodes (default [`PlacementStrategy::Pack`]).
    pub fn strategy(mut self, strategy: PlacementStrategy) -> Self {
        self.strategy = strategy;
        self
    }

    /// A name, unique in the namespace, for [`get_placement_group`].
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// The namespace of the name (default: the driver's).
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = Some(namespace.into());
        self
    }

    /// The group outlives its creating driver (until removed).
    pub fn detached(mut self) -> Self {
        self.detached = true;
        self
    }

    /// Asks the cluster for the group and returns at once; creation is asynchronous (see
    /// [`PlacementGroup::ready`]). Fails for an empty or invalid bundle, no bundles, or a name
    /// already taken.
    pub fn create(self) -> Result<PlacementGroup> {
        let rt = runtime::current()?;
        if self.bundles.is_empty() {
            return Err(Error::invalid(
                "a placement group needs at least one bundle",
            ));
        }
        let bundles = self
            .bundles
            .iter()
            .enumerate()
            .map(|(i, b)| {
                b.to_set().map_err(|e| match e {
                    Error::InvalidArgument { message } => {
                        Error::invalid(format!("bundle {i}: {message}"))
                    }
                    other => other,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        if let Some(n) = &self.name {
            if n.is_empty() {
                return Err(Error::invalid("a placement group name must not be empty"));
            }
        }
        let id = PlacementGroupId::fresh();
        let namespace = self.namespace.unwrap_or_else(|| rt.namespace.clone());
        let msg = CreatePlacementGroup {
            id,
            name: self.name.map(|n| (namespace, n)),
            bundles,
            strategy: self.strategy,
            job: rt.job_id,
            detached: self.detached,
        };
        let n = self.bundles.len();
        if msg.name.is_none() {
            // Nothing can be refused remotely: send and return at once. Later requests about the
            // group from this process arrive after it (same mailbox, or same connection, in order).
            rt.gcs.do_send(msg);
        } else {
            // A name must be claimed before create() returns, so a duplicate is an error here.
            rt.request(&rt.gcs, msg)??;
        }
        Ok(PlacementGroup { id, bundles: n })
    }
}

fn to_info(s: PgSummary) -> PlacementGroupInfo {
    PlacementGroupInfo {
        id: s.id,
        name: s.name.map(|(_, n)| n),
        state: s.state,
        strategy: s.strategy,
        bundles: s.bundles.iter().map(ResourceSet::to_map).collect(),
        bundle_nodes: s.nodes,
        detached: s.detached,
    }
}

fn list(id: Option<PlacementGroupId>) -> Result<Vec<PlacementGroupInfo>> {
    let rt = runtime::current()?;
    let rows = rt.request(&rt.gcs, ListPlacementGroups { id })?;
    Ok(rows.into_iter().map(to_info).collect())
}

/// The group's id, name, state, strategy, bundles and the node of each bundle.
///
/// # Examples
/// ```no_run
/// use lumen::{Bundle, PlacementGroup, PlacementGroupState};
/// lumen::init()?;
/// let pg = PlacementGroup::builder([Bundle::new().cpu(1.0)]).create()?;
/// let info = lumen::placement_group_table(&pg)?;
/// assert!(matches!(info.state, PlacementGroupState::Pending | PlacementGroupState::Created));
/// # Ok::<(), lumen::Error>(())
/// ```
pub fn placement_group_table(pg: &PlacementGroup) -> Result<PlacementGroupInfo> {
    list(Some(pg.id))?
        .into_iter()
        .next()
        .ok_or_else(|| Error::NotFound {
            kind: "placement group".into(),
            name: pg.id.to_string(),
            namespace: String::new(),
        })
}

/// Every placement group the cluster knows, in creation order.
pub fn list_placement_groups() -> Vec<PlacementGroupInfo> {
    list(None).unwrap_or_default()
}

/// Removes the group: its reservations are returned, actors and tasks using it are killed, and
/// its state becomes `Removed`. Returns once the GCS has taken the request; the resources come
/// back asynchronously.
pub fn remove_placement_group(pg: &PlacementGroup) -> Result<()> {
    let rt = runtime::current()?;
    rt.request(&rt.gcs, RemovePlacementGroup { id: pg.id })?
}

/// The named group, in the driver's namespace.
pub fn get_placement_group(name: &str) -> Result<PlacementGroup> {
    let rt = runtime::current()?;
    let msg = GetPlacementGroup {
        namespace: rt.namespace.clone(),
        name: name.to_string(),
    };
    let s = rt.request(&rt.gcs, msg)??;
    Ok(PlacementGroup {
        id: s.id,
        bundles: s.bundles.len(),
    })
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
