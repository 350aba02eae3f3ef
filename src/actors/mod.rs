//! Actors: stateful workers created from `#[lumen::remote] impl` blocks.
//!
//! - [`host`]: the `ActorHost` actix actor that owns one actor's state and runs its calls.
//! - [`groups`]: concurrency groups, each an actix actor bounding its calls.
//! - [`client`]: the caller side: per-actor submit queues, address resolution through the GCS,
//!   and failing calls to dead actors.
//! - [`handle`]: the public [`ActorHandle`](crate::ActorHandle), [`ActorOptions`](crate::ActorOptions)
//!   and [`ActorCall`](crate::ActorCall), plus `get_actor` and `kill`.

pub(crate) mod client;
pub(crate) mod groups;
pub(crate) mod handle;
pub(crate) mod host;
