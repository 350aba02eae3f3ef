//! Placement groups as users call them: creating one, waiting for it, reading the table,
//! removing it, finding it by name.

use crate::error::{Error, Result};
use crate::ids::{ObjectId, PlacementGroupId};
use crate::objects::codec;
use crate::objects::object_ref::ObjectRef;
use crate::placement::bundles::PlacementStrategy;
use crate::placement::group::{PlacementGroup, PlacementGroupBuilder, PlacementGroupInfo};
use crate::protocol::gcs::{
    CreatePlacementGroup, GetPlacementGroup, ListPlacementGroups, PgSummary, RemovePlacementGroup,
    WaitPlacementGroup,
};
use crate::protocol::refs::{RawRef, Stored};
use crate::resources::ResourceSet;
use crate::worker::runtime;
use std::time::Duration;

impl PlacementGroup {
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
        let reply = rt.gcs.send(WaitPlacementGroup { id: self.id });
        let refs = std::sync::Arc::downgrade(&rt.refs);
        rt.executor.spawn(async move {
            let outcome = reply.await.and_then(|r| r);
            if let Some(refs) = refs.upgrade() {
                refs.complete(id, ready_value(outcome), Vec::new());
            }
        });
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
