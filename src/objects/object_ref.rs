//! [`ObjectRef<T>`]: a typed, reference-counted handle to an object that exists now or will
//! exist when the task that makes it finishes.
//!
//! Each ref made in this process (by a submission, a `put`, or deserialization) is one local
//! reference in the owner's table; clones share it (an atomic count, no table lookup), and the
//! last clone dropped removes it. Serializing a ref inside a task argument or a stored value pins
//! the object for as long as that task or value lives. When the owner's count for an object
//! reaches zero, every copy is freed.

use crate::error::Result;
use crate::ids::ObjectId;
use crate::objects::{codec, ownership, read};
use crate::protocol::refs::RawRef;
use futures::future::BoxFuture;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::future::IntoFuture;
use std::hash::{Hash, Hasher};
use std::marker::PhantomData;
use std::sync::Arc;

/// A reference to an object of type `T` in the object store: the result of a task, an actor
/// call or [`put`](crate::put).
///
/// `ObjectRef<T>` is cheap to clone, `Send + Sync`, and serializable: pass it to tasks and
/// actors, store it inside other objects. Read the value with [`get`](crate::get) or by
/// `.await`ing the ref. The object lives as long as any ref to it (or any task or object
/// holding one) does.
///
/// # Examples
/// ```no_run
/// #[lumen::remote]
/// fn square(x: i64) -> i64 { x * x }
///
/// lumen::init()?;
/// let r: lumen::ObjectRef<i64> = square::remote(3);
/// let r2 = square::remote(&r);            // a ref as an argument: resolved before the task runs
/// assert_eq!(lumen::get(&r2)?, 81);
/// # Ok::<(), lumen::Error>(())
/// ```
#[must_use = "dropping an ObjectRef frees its object once no other reference remains"]
pub struct ObjectRef<T> {
    local: Arc<LocalRef>,
    _t: PhantomData<fn() -> T>,
}

/// One local reference in the owner's table, shared by a ref and its clones.
struct LocalRef {
    raw: RawRef,
}

impl Drop for LocalRef {
    fn drop(&mut self) {
        ownership::with_current(|t| t.remove_local(self.raw.id));
    }
}

impl<T> ObjectRef<T> {
    /// Wraps a raw ref whose local count has already been taken for this handle.
    pub(crate) fn adopt(raw: RawRef) -> Self {
        ObjectRef {
            local: Arc::new(LocalRef { raw }),
            _t: PhantomData,
        }
    }

    /// The object's id.
    ///
    /// # Examples
    /// ```no_run
    /// lumen::init()?;
    /// let r = lumen::put(1u8);
    /// println!("object {}", r.id());
    /// # Ok::<(), lumen::Error>(())
    /// ```
    pub fn id(&self) -> ObjectId {
        self.local.raw.id
    }

    pub(crate) fn raw(&self) -> &RawRef {
        &self.local.raw
    }
}

impl<T> Clone for ObjectRef<T> {
    fn clone(&self) -> Self {
        ObjectRef {
            local: self.local.clone(),
            _t: PhantomData,
        }
    }
}

impl<T> fmt::Debug for ObjectRef<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectRef({})", self.raw().id)
    }
}

impl<T> PartialEq for ObjectRef<T> {
    fn eq(&self, other: &Self) -> bool {
        self.raw().id == other.raw().id
    }
}

impl<T> Eq for ObjectRef<T> {}

impl<T> Hash for ObjectRef<T> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.raw().id.hash(state)
    }
}

impl<T> Serialize for ObjectRef<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        codec::note_contained(self.raw());
        self.raw().serialize(s)
    }
}

impl<'de, T> Deserialize<'de> for ObjectRef<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let raw = RawRef::deserialize(d)?;
        ownership::with_current(|t| t.add_borrowed(&raw));
        Ok(ObjectRef::adopt(raw))
    }
}

impl<T: DeserializeOwned + Send + 'static> IntoFuture for ObjectRef<T> {
    type Output = Result<T>;
    type IntoFuture = BoxFuture<'static, Result<T>>;

    /// Waits for the object without blocking a thread; works on any executor.
    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move { read::get_async(self.raw()).await })
    }
}
