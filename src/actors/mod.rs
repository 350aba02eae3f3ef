//! Actors: stateful workers created from `#[lumen::remote] impl` blocks.
//!
//! - [`caller`]: the pure cores of a call's journey: the caller's view of one actor (pending,
//!   alive, dead; calls numbered per caller) and the host's ordering of each caller's calls.
//! - [`client`]: this process's table of the actors it calls, around the caller core.
//! - [`host`]: the `ActorHost` actix actor that owns one actor's state and runs its calls.
//! - [`groups`]: concurrency groups, each an actix actor bounding its calls.
//! - [`pooled`]: the actix context these actors use: they share one pool of threads, so an idle
//!   actor costs memory, not a thread.
//!
//! The public [`ActorHandle`](crate::ActorHandle) and its options live in the API layer.

pub(crate) mod caller;
pub(crate) mod client;
pub(crate) mod groups;
pub(crate) mod host;
pub(crate) mod pooled;
