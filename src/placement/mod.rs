//! Placement: which node runs a task or hosts an actor.
//!
//! - [`strategy`]: the user-facing [`SchedulingStrategy`].
//! - [`policy`]: the pure decision over a view of the cluster's nodes: Ray's hybrid default
//!   (pack onto nodes under 50% utilisation, else a random pick among the top-k least utilised),
//!   SPREAD, and node affinity (hard or soft).
//! - [`bundles`]: the pure placement of a placement group's bundles under the four strategies.
//! - [`group`]: placement groups as users see them: builder, handle, table, removal; and the
//!   naming of the resources a group reserves.

pub(crate) mod bundles;
pub(crate) mod group;
pub(crate) mod policy;
pub(crate) mod strategy;

pub use bundles::PlacementStrategy;
pub use group::{
    get_placement_group, list_placement_groups, placement_group_table, remove_placement_group,
    Bundle, PlacementGroup, PlacementGroupBuilder, PlacementGroupInfo, PlacementGroupState,
};
pub use strategy::SchedulingStrategy;
