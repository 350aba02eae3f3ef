//! Placement: which node runs a task or hosts an actor.
//!
//! - [`strategy`]: the user-facing [`SchedulingStrategy`].
//! - [`policy`]: the pure decision over a view of the cluster's nodes: Ray's hybrid default
//!   (pack onto nodes under 50% utilisation, else a random pick among the top-k least utilised),
//!   SPREAD, and node affinity (hard or soft).
//! - [`bundles`]: the pure placement of a placement group's bundles under the four strategies.
//! - [`group`]: placement groups as data (bundles, the handle, states, table rows) and the
//!   naming of the resources a group reserves.

pub(crate) mod bundles;
pub(crate) mod group;
pub(crate) mod policy;
pub(crate) mod strategy;

pub use bundles::PlacementStrategy;
pub use group::{
    Bundle, PlacementGroup, PlacementGroupBuilder, PlacementGroupInfo, PlacementGroupState,
};
pub use strategy::SchedulingStrategy;
