//! Serialization of values that cross a task, actor or object boundary.
//!
//! Values are encoded with rmp-serde. While a value is being encoded, every `ObjectRef`
//! serialized inside it is recorded ([`note_contained`]), so the caller learns which objects the
//! encoded bytes refer to: a task keeps the objects in its arguments alive until it finishes, and
//! a stored object keeps the objects inside it alive until it is freed.

use crate::error::{Error, Result};
use crate::objects::object_ref::RawRef;
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::cell::RefCell;

thread_local! {
    static CONTAINED: RefCell<Option<Vec<RawRef>>> = const { RefCell::new(None) };
}

/// Encoded bytes and the object refs found inside the value.
#[derive(Debug, Clone, Default)]
pub struct Encoded {
    pub(crate) bytes: Bytes,
    pub(crate) contained: Vec<RawRef>,
}

/// Records a ref being serialized, if an [`encode`] is in progress on this thread.
pub(crate) fn note_contained(r: &RawRef) {
    CONTAINED.with(|c| {
        if let Some(v) = c.borrow_mut().as_mut() {
            v.push(r.clone());
        }
    });
}

/// Encodes `value`, collecting the refs inside it.
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
    Ok(Encoded {
        bytes: Bytes::from(buf),
        contained,
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
        assert!(e.contained.is_empty());
        let back: (u32, String, Vec<f64>) = decode("v", &e.bytes).unwrap();
        assert_eq!(back, (1, "two".into(), vec![3.0]));
        let err = decode::<String>("arg 0", &e.bytes).unwrap_err().to_string();
        assert!(err.contains("arg 0") && err.contains("String"), "{err}");
    }
}
