//! Serialization of values that cross a task, actor or object boundary.
//!
//! Values are encoded with rmp-serde, except vectors of plain numbers (`Vec<u8>`, `Vec<i32>`,
//! `Vec<i64>`, `Vec<u32>`, `Vec<u64>`, `Vec<f32>`, `Vec<f64>`): those are their raw
//! little-endian bytes, one copy rather than a per-element walk, and none at all when the vector
//! is moved in ([`encode_owned`]: `put`, arguments and return values), where the store then owns
//! the vector's own buffer (an 800 MB array is stored in microseconds). A [`Buffer`] is stored
//! as the same bytes, shared both ways: [`decode_shared`] hands the stored bytes to the buffer. Encoding and decoding both pick the format from the static type, and
//! refs are typed, so the two sides always agree. While a value is being encoded, every `ObjectRef`
//! serialized inside it is recorded ([`note_contained`]), so the caller learns which objects the
//! encoded bytes refer to: a task keeps the objects in its arguments alive until it finishes, and
//! a stored object keeps the objects inside it alive until it is freed.

use crate::error::{Error, Result};
use crate::objects::buffer::Buffer;
use crate::objects::ownership;
use crate::protocol::refs::RawRef;
use bytemuck::Pod;
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::any::{Any, TypeId};
use std::cell::{Cell, RefCell};

thread_local! {
    static CONTAINED: RefCell<Option<Vec<RawRef>>> = const { RefCell::new(None) };
    /// Decodes in progress on this thread (they nest).
    static DECODING: Cell<u32> = const { Cell::new(0) };
    /// A decode on this thread met refs whose owners must hear of this process as a borrower.
    static BORROWS_PENDING: Cell<bool> = const { Cell::new(false) };
}

/// Whether a decode is in progress on this thread; if so, the caller's borrow notices are sent
/// when the outermost decode ends (one message per owner instead of one per ref).
pub(crate) fn defer_borrows() -> bool {
    let decoding = DECODING.with(Cell::get) > 0;
    if decoding {
        BORROWS_PENDING.with(|p| p.set(true));
    }
    decoding
}

/// Runs a decode, then sends the borrow notices it deferred.
fn decoding<R>(f: impl FnOnce() -> R) -> R {
    DECODING.with(|d| d.set(d.get() + 1));
    let out = f();
    let depth = DECODING.with(|d| {
        d.set(d.get() - 1);
        d.get()
    });
    if depth == 0 && BORROWS_PENDING.with(|p| p.replace(false)) {
        ownership::with_current(|t| t.flush_borrows());
    }
    out
}

/// Encoded bytes, and pins on the objects referenced inside the value.
///
/// The pins are taken while the value is still alive, so a ref moved into a value (or a task
/// argument, or a task's return value) can never be freed between encoding and use. Whoever
/// stores or sends the bytes takes the pins over (`into_parts`); if the
/// `Encoded` is dropped instead, its pins are released.
#[derive(Debug, Default)]
pub struct Encoded {
    pub(crate) bytes: Bytes,
    pins: Vec<RawRef>,
}

impl Encoded {
    /// The bytes, and the pins (on the refs inside the value) the caller now owns.
    pub(crate) fn into_parts(mut self) -> (Bytes, Vec<RawRef>) {
        (
            std::mem::take(&mut self.bytes),
            std::mem::take(&mut self.pins),
        )
    }
}

impl Drop for Encoded {
    fn drop(&mut self) {
        if !self.pins.is_empty() {
            ownership::with_current(|t| t.unpin_refs(&self.pins));
        }
    }
}

/// Records a ref being serialized, if an [`encode`] is in progress on this thread.
pub(crate) fn note_contained(raw: &RawRef) {
    CONTAINED.with(|c| {
        if let Some(v) = c.borrow_mut().as_mut() {
            v.push(raw.clone());
        }
    });
}

/// The little-endian bytes of `xs`: their memory as it is on little-endian machines.
fn le_bytes<X: Pod + Numeric>(xs: &[X]) -> Bytes {
    if cfg!(target_endian = "little") {
        Bytes::copy_from_slice(bytemuck::cast_slice(xs))
    } else {
        let mut buf = Vec::with_capacity(std::mem::size_of_val(xs));
        for x in xs {
            buf.extend_from_slice(x.le().as_ref());
        }
        Bytes::from(buf)
    }
}

/// A vector of plain numbers viewed as its bytes: lets the store own a moved-in vector
/// without copying it.
struct LeVec<X>(Vec<X>);

impl<X: Pod> AsRef<[u8]> for LeVec<X> {
    fn as_ref(&self) -> &[u8] {
        bytemuck::cast_slice(&self.0)
    }
}

/// Reads bytes written by [`le_bytes`].
fn from_le<X: Pod + Numeric>(what: &dyn std::fmt::Display, bytes: &[u8]) -> Result<Vec<X>> {
    let n = std::mem::size_of::<X>();
    if bytes.len() % n != 0 {
        return Err(Error::Serialization {
            what: what.to_string(),
            reason: format!(
                "{} bytes is not a whole number of {n}-byte {}",
                bytes.len(),
                std::any::type_name::<X>()
            ),
        });
    }
    if cfg!(target_endian = "little") {
        Ok(bytemuck::pod_collect_to_vec(bytes))
    } else {
        Ok(bytes.chunks_exact(n).map(X::from_le).collect())
    }
}

/// The plain number types whose vectors are encoded as raw bytes.
trait Numeric: Sized {
    type Le: AsRef<[u8]>;
    fn le(self) -> Self::Le;
    fn from_le(bytes: &[u8]) -> Self;
}

macro_rules! numeric {
    ($t:ty, $n:literal) => {
        impl Numeric for $t {
            type Le = [u8; $n];
            fn le(self) -> [u8; $n] {
                self.to_le_bytes()
            }
            fn from_le(bytes: &[u8]) -> Self {
                let mut a = [0u8; $n];
                a.copy_from_slice(bytes);
                <$t>::from_le_bytes(a)
            }
        }
    };
}

macro_rules! numeric_vectors {
    ($mac:ident) => {
        $mac!(u8, 1);
        $mac!(i32, 4);
        $mac!(u32, 4);
        $mac!(i64, 8);
        $mac!(u64, 8);
        $mac!(f32, 4);
        $mac!(f64, 8);
    };
}

numeric_vectors!(numeric);

/// The bytes of a vector of plain numbers, if `value` is one.
fn encode_numeric<T: 'static>(value: &T) -> Option<Bytes> {
    let any = value as &dyn Any;
    macro_rules! try_type {
        ($t:ty, $n:literal) => {
            if let Some(v) = any.downcast_ref::<Vec<$t>>() {
                return Some(le_bytes::<$t>(v));
            }
            if let Some(b) = any.downcast_ref::<Buffer<$t>>() {
                return Some(b.to_stored());
            }
        };
    }
    numeric_vectors!(try_type);
    None
}

/// The bytes of a vector of plain numbers moved in: on little-endian machines the vector itself,
/// without a copy. Gives the value back if it is not one.
fn encode_numeric_owned<T: 'static>(value: T) -> std::result::Result<Bytes, T> {
    if !cfg!(target_endian = "little") {
        return match encode_numeric(&value) {
            Some(b) => Ok(b),
            None => Err(value),
        };
    }
    let mut boxed: Box<dyn Any> = Box::new(value);
    macro_rules! try_type {
        ($t:ty, $n:literal) => {
            boxed = match boxed.downcast::<Vec<$t>>() {
                Ok(v) => return Ok(Bytes::from_owner(LeVec(*v))),
                Err(other) => other,
            };
            boxed = match boxed.downcast::<Buffer<$t>>() {
                Ok(b) => return Ok(b.to_stored()),
                Err(other) => other,
            };
        };
    }
    numeric_vectors!(try_type);
    match boxed.downcast::<T>() {
        Ok(v) => Err(*v),
        Err(_) => unreachable!("the box holds a T"),
    }
}

/// A [`Buffer`] of `bytes`, if `T` is a buffer type: sharing them when they are aligned.
fn decode_buffer<T: 'static>(what: &dyn std::fmt::Display, bytes: &Bytes) -> Option<Result<T>> {
    macro_rules! try_type {
        ($t:ty, $n:literal) => {
            if TypeId::of::<T>() == TypeId::of::<Buffer<$t>>() {
                let b =
                    Buffer::<$t>::from_stored(bytes.clone()).ok_or_else(|| Error::Serialization {
                        what: what.to_string(),
                        reason: format!(
                            "{} bytes is not a whole number of {}-byte {}",
                            bytes.len(),
                            $n,
                            stringify!($t)
                        ),
                    });
                return Some(b.map(|b| {
                    *(Box::new(b) as Box<dyn Any>)
                        .downcast::<T>()
                        .unwrap_or_else(|_| unreachable!("TypeId checked"))
                }));
            }
        };
    }
    numeric_vectors!(try_type);
    None
}

/// Decodes a vector of plain numbers, if `T` is one.
fn decode_numeric<T: 'static>(what: &dyn std::fmt::Display, bytes: &[u8]) -> Option<Result<T>> {
    macro_rules! try_type {
        ($t:ty, $n:literal) => {
            if TypeId::of::<T>() == TypeId::of::<Vec<$t>>() {
                let v = from_le::<$t>(what, bytes);
                return Some(v.map(|v| {
                    *(Box::new(v) as Box<dyn Any>)
                        .downcast::<T>()
                        .unwrap_or_else(|_| unreachable!("TypeId checked"))
                }));
            }
        };
    }
    numeric_vectors!(try_type);
    None
}

/// Encodes a value moved in: like [`encode`], except that a vector of plain numbers becomes
/// the stored bytes as it is (no copy).
pub(crate) fn encode_owned<T: Serialize + 'static>(what: &str, value: T) -> Result<Encoded> {
    match encode_numeric_owned(value) {
        Ok(bytes) => Ok(Encoded {
            bytes,
            pins: Vec::new(),
        }),
        Err(value) => encode(what, &value),
    }
}

/// Encodes `value`, pinning the objects referenced inside it.
pub(crate) fn encode<T: Serialize + 'static>(what: &str, value: &T) -> Result<Encoded> {
    if let Some(bytes) = encode_numeric(value) {
        return Ok(Encoded {
            bytes,
            pins: Vec::new(),
        });
    }
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
        ownership::with_current(move |t| {
            t.pin_refs(&contained);
            contained
        })
        .unwrap_or_default()
    };
    Ok(Encoded {
        bytes: Bytes::from(buf),
        pins,
    })
}

/// Decodes a value from shared bytes: a [`Buffer`] shares them instead of copying.
pub(crate) fn decode_shared<T: DeserializeOwned + 'static>(
    what: &dyn std::fmt::Display,
    bytes: &Bytes,
) -> Result<T> {
    match decode_buffer::<T>(what, bytes) {
        Some(v) => v,
        None => decode(what, bytes),
    }
}

/// Decodes a value; `what` names it in an error (formatted only then).
pub(crate) fn decode<T: DeserializeOwned + 'static>(
    what: &dyn std::fmt::Display,
    bytes: &[u8],
) -> Result<T> {
    if let Some(v) = decode_numeric::<T>(what, bytes) {
        return v;
    }
    if let Some(v) = decode_buffer::<T>(what, &Bytes::copy_from_slice(bytes)) {
        return v;
    }
    decoding(|| rmp_serde::from_slice(bytes)).map_err(|e| Error::Serialization {
        what: what.to_string(),
        reason: format!("{e} (expected {})", std::any::type_name::<T>()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_vectors_are_raw_bytes_and_round_trip() {
        let v: Vec<i64> = (0..1000).map(|i| i * -7).collect();
        let e = encode("v", &v).unwrap();
        assert_eq!(e.bytes.len(), 8000, "the raw bytes");
        let owned = encode_owned("v", v.clone()).unwrap();
        assert_eq!(owned.bytes, e.bytes, "moved in or not, the same bytes");
        assert_eq!(decode::<Vec<i64>>(&"v", &e.bytes).unwrap(), v);
        let f = vec![0.5f32, -1.25, f32::MAX];
        assert_eq!(
            decode::<Vec<f32>>(&"f", &encode("f", &f).unwrap().bytes).unwrap(),
            f
        );
        let b = vec![7u8; 300];
        assert_eq!(
            decode::<Vec<u8>>(&"b", &encode("b", &b).unwrap().bytes).unwrap(),
            b
        );
        let empty: Vec<u64> = Vec::new();
        assert_eq!(
            decode::<Vec<u64>>(&"e", &encode("e", &empty).unwrap().bytes).unwrap(),
            empty
        );
        // Other types still go through serde, inside containers too.
        let nested = vec![vec![1i64, 2], vec![3]];
        let back: Vec<Vec<i64>> = decode(&"n", &encode("n", &nested).unwrap().bytes).unwrap();
        assert_eq!(back, nested);
        // Reading raw bytes as the wrong width is an error, not garbage.
        let err = decode::<Vec<i64>>(&"w", &encode("w", &vec![1u8, 2, 3]).unwrap().bytes);
        assert!(err.is_err());
        // Other types moved in are encoded as usual.
        let s = encode_owned("s", "text".to_string()).unwrap();
        assert_eq!(decode::<String>(&"s", &s.bytes).unwrap(), "text");
    }

    #[test]
    fn round_trips_and_reports_type_mismatch() {
        let e = encode("v", &(1u32, "two".to_string(), vec![3.0f64])).unwrap();
        assert!(e.pins.is_empty());
        let back: (u32, String, Vec<f64>) = decode(&"v", &e.bytes).unwrap();
        assert_eq!(back, (1, "two".into(), vec![3.0]));
        let err = decode::<String>(&"arg 0", &e.bytes)
            .unwrap_err()
            .to_string();
        assert!(err.contains("arg 0") && err.contains("String"), "{err}");
    }
}
