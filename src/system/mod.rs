//! The GCS (global control store): cluster membership, jobs, the actor directory and placement
//! groups.
//!
//! - [`membership`]: the node table (registration, heartbeats, deaths), a pure state machine.
//! - [`actor_directory`]: the table of actors (names per namespace, lifecycle, watchers), plain
//!   data with no actix, so its rules are unit-tested directly.
//! - [`placement_groups`]: the table of placement groups.
//! - [`actor_directory`] also holds each actor's restart policy; `simulated` (tests) wires the
//!   node table, the directory and the placement policy over several nodes with time advanced
//!   by hand.
//! - [`reservation`]: the two-phase reservation of a group's bundles, a pure state machine with
//!   rollback.
//! - [`task_events`]: what each task and actor call went through, merged from the processes'
//!   reports and bounded.
//! - [`binaries`]: job executables, content-addressed, cached on disk.
//! - [`packages`]: jobs' working directories, packed by the driver and unpacked on each node.
//! - [`gcs`]: the `Gcs` actix actor around those tables: it answers their messages, places
//!   actors and groups, and broadcasts the resource view to the raylets.
//!
//! The hot path never goes through the GCS: tasks go to raylets and actor calls to the hosting
//! worker directly; callers ask the GCS only to find an actor or learn that it died.

pub(crate) mod actor_directory;
pub(crate) mod binaries;
pub(crate) mod gcs;
pub(crate) mod membership;
pub(crate) mod packages;
pub(crate) mod placement_groups;
pub(crate) mod reservation;
#[cfg(test)]
mod simulated;
pub(crate) mod task_events;
