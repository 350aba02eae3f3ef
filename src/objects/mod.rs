//! Objects: the immutable values that tasks return and `put` stores.
//!
//! - [`budget`]: the store's memory budget, least recently used first (a pure core).
//! - [`buffer`]: [`Buffer<T>`](crate::Buffer), plain numbers whose bytes are shared, not copied.
//! - [`codec`]: values to bytes (rmp-serde) and back, recording every `ObjectRef` serialized
//!   inside a value so that the outer object or task keeps the inner objects alive.
//! - [`object_ref`]: [`ObjectRef<T>`](crate::ObjectRef), the typed, reference-counted future
//!   of an object.
//! - [`ownership`]: reference counting with borrowers (a pure core) and this process's table
//!   of what it owns and borrows.
//! - [`pull`]: reading a copy other processes keep: mapped on one node, else sent over, in
//!   chunks from several holders at once when there are several.
//! - [`read`]: reading an object from this process's table, its store, or its owner.
//! - [`reply`]: the channel a read's objects arrive on, waking a sleeping reader once per batch.
//! - [`shm`]: shared memory between the processes of a node: large objects in memfd segments
//!   that other processes map instead of copying.
//! - [`spill`]: the store's memory: objects in memory or spilled to disk, within the capacity.
//! - [`standing`]: a `wait` loop's registrations, kept from one call to the next.
//! - [`store`]: object-store shards, each an actix actor that holds bytes and wakes waiters.

pub(crate) mod budget;
pub(crate) mod buffer;
pub(crate) mod codec;
pub(crate) mod object_ref;
pub(crate) mod ownership;
pub(crate) mod pull;
pub(crate) mod read;
pub(crate) mod reply;
pub(crate) mod shm;
pub(crate) mod spill;
pub(crate) mod standing;
pub(crate) mod store;
