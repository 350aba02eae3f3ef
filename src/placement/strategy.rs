//! The scheduling strategies a task or actor may ask for.

use crate::ids::{NodeId, PlacementGroupId};
use crate::placement::group::PlacementGroup;
use serde::{Deserialize, Serialize};

/// How to pick the node for a task or actor ([Ray's scheduling strategies]).
///
/// [Ray's scheduling strategies]: https://docs.ray.io/en/latest/ray-core/scheduling/index.html
///
/// # Examples
/// ```no_run
/// use lumen::SchedulingStrategy;
///
/// #[lumen::remote]
/// fn where_am_i() -> String { lumen::runtime_context().node_id().to_string() }
///
/// lumen::init()?;
/// let node_id = lumen::runtime_context().node_id();
/// let a = where_am_i::options().scheduling_strategy(SchedulingStrategy::Spread).remote();
/// let b = where_am_i::options()
///     .scheduling_strategy(SchedulingStrategy::NodeAffinity { node_id, soft: false })
///     .remote();
/// assert_eq!(lumen::get(&b)?, node_id.to_string());
/// # let _ = a;
/// # Ok::<(), lumen::Error>(())
/// ```
#[non_exhaustive]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum SchedulingStrategy {
    /// Ray's hybrid policy: prefer the local node while it is under half utilised, else one of
    /// the least utilised nodes that fit.
    #[default]
    Default,
    /// Spread tasks over the nodes that fit, round robin.
    Spread,
    /// Run on a given node. With `soft: false` the task fails with `TaskUnschedulable` (an actor
    /// with `ActorUnschedulable`) if that node is dead or can never fit it; with `soft: true` it
    /// falls back to the default policy.
    NodeAffinity {
        /// The node to run on.
        node_id: NodeId,
        /// Fall back to another node when this one can't be used.
        soft: bool,
    },
    /// Run inside a placement group's reserved resources: any bundle, or one bundle. Build it
    /// with [`SchedulingStrategy::placement_group`].
    PlacementGroup {
        /// The group.
        group: PlacementGroupId,
        /// The bundle to use (`None`: any bundle with room).
        bundle_index: Option<u32>,
        /// Whether tasks and actors this one submits go into the group too (unless they pick
        /// their own strategy).
        capture_child_tasks: bool,
    },
}

impl SchedulingStrategy {
    /// Schedule into `pg` (any bundle); refine with [`bundle_index`](Self::bundle_index) and
    /// [`capture_child_tasks`](Self::capture_child_tasks).
    ///
    /// # Examples
    /// ```no_run
    /// use lumen::{Bundle, PlacementGroup, SchedulingStrategy};
    ///
    /// #[lumen::remote]
    /// fn work() -> u8 { 1 }
    ///
    /// lumen::init_with(lumen::Config::default().num_cpus(2.0))?;
    /// let pg = PlacementGroup::builder([Bundle::new().cpu(1.0)]).create()?;
    /// let r = work::options()
    ///     .scheduling_strategy(SchedulingStrategy::placement_group(&pg).bundle_index(0))
    ///     .remote();
    /// assert_eq!(lumen::get(&r)?, 1);
    /// # Ok::<(), lumen::Error>(())
    /// ```
    pub fn placement_group(pg: &PlacementGroup) -> Self {
        crate::placement::group::remember(pg);
        SchedulingStrategy::PlacementGroup {
            group: pg.id(),
            bundle_index: None,
            capture_child_tasks: false,
        }
    }

    /// Use only bundle `index` of the group (no effect on other strategies).
    pub fn bundle_index(mut self, index: usize) -> Self {
        if let SchedulingStrategy::PlacementGroup { bundle_index, .. } = &mut self {
            *bundle_index = Some(index as u32);
        }
        self
    }

    /// Children of this task or actor go into the group too (no effect on other strategies).
    pub fn capture_child_tasks(mut self, yes: bool) -> Self {
        if let SchedulingStrategy::PlacementGroup {
            capture_child_tasks,
            ..
        } = &mut self
        {
            *capture_child_tasks = yes;
        }
        self
    }
}
