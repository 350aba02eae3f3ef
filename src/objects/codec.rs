//! Serialization of values that cross a task, actor or object boundary.
//!
//! Values are encoded with rmp-serde. While a value is being encoded, every `ObjectRef`
//! serialized inside it is recorded ([`note_contained`]), so the caller learns which objects the
//! encoded bytes refer to: a task keeps the objects in its arguments alive until it finishes, and
//! a stored object keeps the objects inside it alive until it is freed.

use crate::error::{Error, Result};
use crate::ids::ObjectId;
use crate::runtime;
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::cell::RefCell;

thread_local! {
    static CONTAINED: RefCell<Option<Vec<ObjectId>>> = const { RefCell::new(None) };
}

/// Encoded bytes, and pins on the objects referenced inside the value.
///
/// The pins are taken while the value is still alive, so a ref moved into a value (or a task
/// argument, or a task's return value) can never be freed between encoding and use. Whoever
/// stores or sends the bytes takes the pins over ([`into_parts`](Encoded::into_parts)); if the
/// `Encoded` is dropped instead, its pins are released.
#[derive(Debug, Default)]
pub struct Encoded {
    pub(crate) bytes: Bytes,
    pins: Vec<ObjectId>,
}

impl Encoded {
    /// The bytes, and the pins the caller now owns.
    pub(crate) fn into_parts(mut self) -> (Bytes, Vec<ObjectId>) {
        (
            std::mem::take(&mut self.bytes),
            std::mem::take(&mut self.pins),
        )
    }
}

impl Drop for Encoded {
    fn drop(&mut self) {
        if !self.pins.is_empty() {
            runtime::with_current(|rt| rt.refs.unpin(&self.pins));
        }
    }
}

/// Records a ref being serialized, if an [`encode`] is in progress on this thread.
pub(crate) fn note_contained(id: ObjectId) {
    CONTAINED.with(|c| {
        if let Some(v) = c.borrow_mut().as_mut() {
            v.push(id);
        }
    });
}

/// Encodes `value`, pinning the objects referenced inside it.
pub(crate) fn encode<T: Serialize + ?Sized>(what: &str, value: &T) -> Result<Encoded> {
    let outer = CONTAINED.with(|c| c.borrow_mut().replace(Vec::new()));
    let mut buf = Vec::with_capacity(16);
    let res = rmp_serde::encode::write(&mut buf, value);
    let contained = CONTAINED.with(|c| {
        let mine = c.borrow_mut().take().unwrap_or_default();
        *c.borrow_mut() = outer;
        mine
    });
    res.map_err(|e| Error::Serialization {
        what: what.to_string(),
        reason: e.to_string(),
    })?;
    let pins = if contained.is_empty() {
        contained
    } else {
        runtime::with_current(move |rt| {
            rt.refs.pin(&contained);
            contained
        })
        .unwrap_or_default()
    };
    Ok(Encoded {
        bytes: Bytes::from(buf),
        pins,
    })
}

/// Decodes a value of type `T`.
pub(crate) fn decode<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T> {
    rmp_serde::from_slice(bytes).map_err(|e| Error::Serialization {
        what: what.to_string(),
        reason: format!("{e} (expected {})", std::any::type_name::<T>()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_reports_type_mismatch() {
        let e = encode("v", &(1u32, "two".to_string(), vec![3.0f64])).unwrap();
        assert!(e.pins.is_empty());
        let back: (u32, String, Vec<f64>) = decode("v", &e.bytes).unwrap();
        assert_eq!(back, (1, "two".into(), vec![3.0]));
        let err = decode::<String>("arg 0", &e.bytes).unwrap_err().to_string();
        assert!(err.contains("arg 0") && err.contains("String"), "{err}");
    }
}
