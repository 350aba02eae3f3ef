//! Objects: the immutable values that tasks return and `put` stores.
//!
//! - [`codec`]: values to bytes (rmp-serde) and back, recording every `ObjectRef` serialized
//!   inside a value so that the outer object or task keeps the inner objects alive.
//! - [`object_ref`]: [`ObjectRef<T>`](crate::ObjectRef), the typed, reference-counted future
//!   of an object.
//! - [`ownership`]: the owner's table: reference counts, lineage (the task that makes an object)
//!   and what each object contains; frees objects when their count reaches zero.
//! - [`owner`]: the owner's side of work done in other processes: task results arriving, and
//!   other processes reading owned objects.
//! - [`store`]: object-store shards, each an actix actor that holds bytes and wakes waiters.

pub(crate) mod codec;
pub(crate) mod object_ref;
pub(crate) mod owner;
pub(crate) mod ownership;
pub(crate) mod store;
