//! The scheduling strategies a task or actor may ask for.

use crate::ids::NodeId;
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
}
