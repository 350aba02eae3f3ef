//! Placement groups as users call them: creating one, waiting for it, reading the table,
//! removing it, finding it by name; each blocking call with its async twin.

use crate::context::{refuse_blocking, refuse_blocking_logged};
use crate::error::{Error, Result};
use crate::ids::{ObjectId, PlacementGroupId};
use crate::objects::object_ref::ObjectRef;
use crate::placement::bundles::PlacementStrategy;
use crate::placement::group::{PlacementGroup, PlacementGroupBuilder, PlacementGroupInfo};
use crate::protocol::gcs::{
    CreatePlacementGroup, GetPlacementGroup, ListPlacementGroups, PgSummary, RemovePlacementGroup,
    WaitPlacementGroup,
};
use crate::protocol::refs::RawRef;
use crate::resources::ResourceSet;
use crate::worker::placement::ready_value;
use crate::worker::runtime::{self, Runtime};
use std::future::Future;
use std::sync::Arc;
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
        if rt.groups.is_created(self.id) {
            // This process created it, and the GCS reported it created.
            rt.refs.complete(id, ready_value(Ok(())), Vec::new());
            return r;
        }
        // The GCS tells this process's owner service, which completes the object.
        rt.gcs.do_send(WaitPlacementGroup {
            id: self.id,
            object: id,
            owner: rt.net.addr(),
        });
        r
    }

    /// Waits up to `timeout` for the group to be created; whether it was.
    ///
    /// In async code (a lumen async task or actor method, or any thread of a tokio runtime
    /// outside a lumen sync task) it does not wait: it reports what is known at that moment
    /// without asking the GCS, which is nothing, so `false` (and logs that once, with
    /// `tracing::error!`). Use [`wait_async`](Self::wait_async) or `.await` [`ready`](Self::ready)
    /// there.
    ///
    /// # Examples
    /// ```no_run
    /// use lumen::{Bundle, PlacementGroup};
    /// use std::time::Duration;
    /// lumen::init()?;
    /// let pg = PlacementGroup::builder([Bundle::new().cpu(1.0)]).create()?;
    /// assert!(pg.wait(Duration::from_secs(10)));
    /// # Ok::<(), lumen::Error>(())
    /// ```
    pub fn wait(&self, timeout: Duration) -> bool {
        if runtime::is_initialized()
            && refuse_blocking_logged(
                "PlacementGroup::wait",
                "pg.wait_async(timeout).await (or pg.ready().await)",
            )
        {
            return false;
        }
        crate::api::objects::get_timeout(&self.ready(), timeout).is_ok()
    }

    /// Waits up to `timeout` for the group to be created, without blocking a thread; whether it
    /// was (a removed group never is): the async twin of [`wait`](Self::wait). Works on any
    /// executor.
    ///
    /// # Examples
    /// ```no_run
    /// use lumen::{Bundle, PlacementGroup};
    /// use std::time::Duration;
    /// # async fn run() -> lumen::Result<()> {
    /// let pg = PlacementGroup::builder([Bundle::new().cpu(1.0)]).create_async().await?;
    /// assert!(pg.wait_async(Duration::from_secs(10)).await);
    /// # Ok(())
    /// # }
    /// lumen::init()?;
    /// futures::executor::block_on(run())?;
    /// # Ok::<(), lumen::Error>(())
    /// ```
    pub fn wait_async(&self, timeout: Duration) -> impl Future<Output = bool> + Send + 'static {
        let ready = crate::api::objects::get_timeout_async(&self.ready(), timeout);
        async move { ready.await.is_ok() }
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
    ///
    /// A name is claimed before it returns, which blocks: with a name, in async code (a lumen
    /// async task or actor method, or any thread of a tokio runtime outside a lumen sync task)
    /// it returns `Error::InvalidArgument` without blocking. Use
    /// [`create_async`](Self::create_async) there.
    ///
    /// # Examples
    /// ```no_run
    /// use lumen::{Bundle, PlacementGroup, PlacementStrategy};
    /// lumen::init()?;
    /// let pg = PlacementGroup::builder([Bundle::new().cpu(1.0), Bundle::new().cpu(1.0)])
    ///     .strategy(PlacementStrategy::Spread)
    ///     .name("pair")
    ///     .create()?;
    /// # let _ = pg;
    /// # Ok::<(), lumen::Error>(())
    /// ```
    pub fn create(self) -> Result<PlacementGroup> {
        let rt = runtime::current()?;
        if self.name.is_some() {
            refuse_blocking(
                "PlacementGroupBuilder::create with a name",
                "PlacementGroupBuilder::create_async().await",
            )?;
        }
        let (msg, group) = self.prepare(&rt)?;
        if msg.name.is_none() {
            // Nothing can be refused remotely: send and return at once. Later requests about the
            // group from this process arrive after it (same mailbox, or same connection, in order).
            rt.gcs.do_send(msg);
        } else if let Err(e) = rt.request(&rt.gcs, msg).and_then(|claimed| claimed) {
            // A name must be claimed before create() returns, so a duplicate is an error here.
            rt.groups.forget(group.id);
            return Err(e);
        }
        Ok(group)
    }

    /// Asks the cluster for the group without blocking a thread: the async twin of
    /// [`create`](Self::create). The request is checked and sent before this returns; the future
    /// gives the group once a name (if any) is claimed, or the error. Works on any executor.
    ///
    /// # Examples
    /// ```no_run
    /// use lumen::{Bundle, PlacementGroup};
    /// # async fn run() -> lumen::Result<()> {
    /// let pg = PlacementGroup::builder([Bundle::new().cpu(1.0)])
    ///     .name("one")
    ///     .create_async()
    ///     .await?;
    /// pg.ready().await?;
    /// # Ok(())
    /// # }
    /// lumen::init()?;
    /// futures::executor::block_on(run())?;
    /// # Ok::<(), lumen::Error>(())
    /// ```
    pub fn create_async(self) -> impl Future<Output = Result<PlacementGroup>> + Send + 'static {
        let sent = runtime::current().and_then(|rt| {
            let (msg, group) = self.prepare(&rt)?;
            let claimed = if msg.name.is_none() {
                rt.gcs.do_send(msg);
                None
            } else {
                Some(rt.ask(&rt.gcs, msg))
            };
            Ok((group, claimed.map(|c| (c, rt))))
        });
        async move {
            let (group, claimed) = sent?;
            if let Some((claimed, rt)) = claimed {
                if let Err(e) = claimed.await.and_then(|claimed| claimed) {
                    rt.groups.forget(group.id);
                    return Err(e);
                }
            }
            Ok(group)
        }
    }

    /// Checks the builder; the request for the GCS and the group it creates.
    fn prepare(self, rt: &Runtime) -> Result<(CreatePlacementGroup, PlacementGroup)> {
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
        if let Some(ns) = &self.namespace {
            crate::config::check_namespace(ns)?;
        }
        let id = PlacementGroupId::fresh();
        let namespace = self.namespace.unwrap_or_else(|| rt.namespace.clone());
        let group = PlacementGroup {
            id,
            bundles: bundles.clone().into(),
        };
        let msg = CreatePlacementGroup {
            id,
            name: self.name.map(|n| (namespace, n)),
            bundles,
            strategy: self.strategy,
            job: rt.job_id,
            detached: self.detached,
            watcher: Some(rt.net.addr()),
        };
        // Tracked before the request goes, so that no report about it comes first.
        rt.groups.created(id);
        Ok((msg, group))
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

fn list_async(
    id: Option<PlacementGroupId>,
) -> impl Future<Output = Result<Vec<PlacementGroupInfo>>> + Send + 'static {
    let asked = runtime::current().map(|rt| rt.ask(&rt.gcs, ListPlacementGroups { id }));
    async move { Ok(asked?.await?.into_iter().map(to_info).collect()) }
}

/// The one row of `pg`.
fn row_of(pg: PlacementGroupId, rows: Vec<PlacementGroupInfo>) -> Result<PlacementGroupInfo> {
    rows.into_iter().next().ok_or_else(|| Error::NotFound {
        kind: "placement group".into(),
        name: pg.to_string(),
        namespace: String::new(),
    })
}

/// The group's id, name, state, strategy, bundles and the node of each bundle.
///
/// In async code (a lumen async task or actor method, or any thread of a tokio runtime outside a
/// lumen sync task) it returns `Error::InvalidArgument` without blocking: use
/// [`placement_group_table_async`] there.
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
    runtime::current()?;
    refuse_blocking(
        "lumen::placement_group_table",
        "lumen::placement_group_table_async(&pg).await",
    )?;
    row_of(pg.id, list(Some(pg.id))?)
}

/// The group's id, name, state, strategy, bundles and the node of each bundle, without blocking
/// a thread: the async twin of [`placement_group_table`]. Works on any executor.
///
/// # Examples
/// ```no_run
/// use lumen::{Bundle, PlacementGroup, PlacementGroupState};
/// # async fn run() -> lumen::Result<()> {
/// let pg = PlacementGroup::builder([Bundle::new().cpu(1.0)]).create_async().await?;
/// pg.ready().await?;
/// let info = lumen::placement_group_table_async(&pg).await?;
/// assert_eq!(info.state, PlacementGroupState::Created);
/// # Ok(())
/// # }
/// lumen::init()?;
/// futures::executor::block_on(run())?;
/// # Ok::<(), lumen::Error>(())
/// ```
pub fn placement_group_table_async(
    pg: &PlacementGroup,
) -> impl Future<Output = Result<PlacementGroupInfo>> + Send + 'static {
    let id = pg.id;
    let rows = list_async(Some(id));
    async move { row_of(id, rows.await?) }
}

/// Every placement group the cluster knows, in creation order.
///
/// In async code it does not block: it logs that once (`tracing::error!`) and returns an empty
/// list. Use [`list_placement_groups_async`] there.
///
/// # Examples
/// ```no_run
/// use lumen::{Bundle, PlacementGroup};
/// lumen::init()?;
/// let pg = PlacementGroup::builder([Bundle::new().cpu(1.0)]).create()?;
/// assert!(lumen::list_placement_groups().iter().any(|g| g.id == pg.id()));
/// # Ok::<(), lumen::Error>(())
/// ```
pub fn list_placement_groups() -> Vec<PlacementGroupInfo> {
    if runtime::is_initialized()
        && refuse_blocking_logged(
            "lumen::list_placement_groups",
            "lumen::list_placement_groups_async().await",
        )
    {
        return Vec::new();
    }
    list(None).unwrap_or_default()
}

/// Every placement group the cluster knows, in creation order, without blocking a thread: the
/// async twin of [`list_placement_groups`]. Works on any executor.
///
/// # Examples
/// ```no_run
/// # async fn run() {
/// for g in lumen::list_placement_groups_async().await {
///     println!("{} {:?}", g.id, g.state);
/// }
/// # }
/// lumen::init()?;
/// futures::executor::block_on(run());
/// # Ok::<(), lumen::Error>(())
/// ```
pub fn list_placement_groups_async(
) -> impl Future<Output = Vec<PlacementGroupInfo>> + Send + 'static {
    let rows = list_async(None);
    async move { rows.await.unwrap_or_default() }
}

/// Removes the group: its reservations are returned, actors and tasks using it are killed, and
/// its state becomes `Removed`. Returns once the GCS has taken the request; the resources come
/// back asynchronously.
///
/// In async code it returns `Error::InvalidArgument` without blocking: use
/// [`remove_placement_group_async`] there.
///
/// # Examples
/// ```no_run
/// use lumen::{Bundle, PlacementGroup};
/// lumen::init()?;
/// let pg = PlacementGroup::builder([Bundle::new().cpu(1.0)]).create()?;
/// lumen::remove_placement_group(&pg)?;
/// # Ok::<(), lumen::Error>(())
/// ```
pub fn remove_placement_group(pg: &PlacementGroup) -> Result<()> {
    let rt = runtime::current()?;
    refuse_blocking(
        "lumen::remove_placement_group",
        "lumen::remove_placement_group_async(&pg).await",
    )?;
    rt.groups.forget(pg.id);
    crate::placement::group::forget(pg.id);
    rt.request(&rt.gcs, RemovePlacementGroup { id: pg.id })?
}

/// Removes the group without blocking a thread: the async twin of [`remove_placement_group`].
/// The request is sent before this returns; the future gives the GCS's answer. Works on any
/// executor.
///
/// # Examples
/// ```no_run
/// use lumen::{Bundle, PlacementGroup};
/// # async fn run() -> lumen::Result<()> {
/// let pg = PlacementGroup::builder([Bundle::new().cpu(1.0)]).create_async().await?;
/// lumen::remove_placement_group_async(&pg).await?;
/// # Ok(())
/// # }
/// lumen::init()?;
/// futures::executor::block_on(run())?;
/// # Ok::<(), lumen::Error>(())
/// ```
pub fn remove_placement_group_async(
    pg: &PlacementGroup,
) -> impl Future<Output = Result<()>> + Send + 'static {
    let asked = runtime::current().map(|rt| {
        rt.groups.forget(pg.id);
        crate::placement::group::forget(pg.id);
        rt.ask(&rt.gcs, RemovePlacementGroup { id: pg.id })
    });
    async move { asked?.await? }
}

/// The named group, in the driver's namespace.
///
/// In async code it returns `Error::InvalidArgument` without blocking: use
/// [`get_placement_group_async`] there.
///
/// # Examples
/// ```no_run
/// use lumen::{Bundle, PlacementGroup};
/// lumen::init()?;
/// let pg = PlacementGroup::builder([Bundle::new().cpu(1.0)]).name("mine").create()?;
/// assert_eq!(lumen::get_placement_group("mine")?.id(), pg.id());
/// # Ok::<(), lumen::Error>(())
/// ```
pub fn get_placement_group(name: &str) -> Result<PlacementGroup> {
    let rt = runtime::current()?;
    refuse_blocking(
        "lumen::get_placement_group",
        "lumen::get_placement_group_async(name).await",
    )?;
    let s = rt.request(&rt.gcs, named_group(&rt, name))??;
    Ok(group_of(&s))
}

/// The named group, in the driver's namespace, without blocking a thread: the async twin of
/// [`get_placement_group`]. Works on any executor.
///
/// # Examples
/// ```no_run
/// use lumen::{Bundle, PlacementGroup};
/// # async fn run() -> lumen::Result<()> {
/// let pg = PlacementGroup::builder([Bundle::new().cpu(1.0)]).name("mine").create_async().await?;
/// assert_eq!(lumen::get_placement_group_async("mine").await?.id(), pg.id());
/// # Ok(())
/// # }
/// lumen::init()?;
/// futures::executor::block_on(run())?;
/// # Ok::<(), lumen::Error>(())
/// ```
pub fn get_placement_group_async(
    name: &str,
) -> impl Future<Output = Result<PlacementGroup>> + Send + 'static {
    let asked = runtime::current().map(|rt| rt.ask(&rt.gcs, named_group(&rt, name)));
    async move { Ok(group_of(&asked?.await??)) }
}

fn named_group(rt: &Arc<Runtime>, name: &str) -> GetPlacementGroup {
    GetPlacementGroup {
        namespace: rt.namespace.clone(),
        name: name.to_string(),
    }
}

fn group_of(s: &PgSummary) -> PlacementGroup {
    PlacementGroup {
        id: s.id,
        bundles: s.bundles.clone().into(),
    }
}
