//! The GCS (global control store): cluster membership, jobs and the actor directory.
//!
//! - [`actor_directory`]: the table of actors (names per namespace, lifecycle, watchers), as
//!   plain data with no actix, so its rules are unit-tested directly.
//! - [`binaries`]: job executables, content-addressed, cached on disk.
//! - [`placement_groups`]: the placement-group table and the messages of its two-phase
//!   reservation.
//! - [`gcs`]: the `Gcs` actix actor: node table, job table, the actor directory, and actor
//!   scheduling (it picks the node whose raylet creates each actor).
//!
//! The hot path never goes through the GCS: tasks go to raylets and actor calls to the hosting
//! actor directly; callers ask the GCS only to find an actor or learn that it died.

pub(crate) mod actor_directory;
pub(crate) mod binaries;
pub(crate) mod gcs;
pub(crate) mod placement_groups;
