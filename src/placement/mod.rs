//! Placement: which node runs a task or hosts an actor.
//!
//! - [`strategy`]: the user-facing [`SchedulingStrategy`].
//! - [`policy`]: the pure decision over a view of the cluster's nodes: Ray's hybrid default
//!   (pack onto nodes under 50% utilisation, else a random pick among the top-k least utilised),
//!   SPREAD, and node affinity (hard or soft).

pub(crate) mod policy;
pub(crate) mod strategy;

pub use strategy::SchedulingStrategy;
