//! [`Buffer<T>`]: an immutable array of plain numbers that is stored, passed and read without
//! copying its bytes.
//!
//! A buffer is a view of shared bytes (`Bytes`): putting one hands its bytes to the store,
//! reading one back (a `get`, a task argument passed by ref) shares the stored bytes again, so a
//! 100 MiB array moves between tasks of a process in microseconds. The stored form is the
//! elements' little-endian bytes, the same as a `Vec` of the same numbers, so a `Buffer<f64>`
//! and a `Vec<f64>` read each other's objects. Bytes that arrive misaligned for `T` (from the
//! network, at an odd offset of a frame) are copied once into aligned memory.

use crate::objects::shm;
use bytemuck::Pod;
use bytes::Bytes;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use std::fmt;
use std::marker::PhantomData;
use std::ops::Deref;

mod sealed {
    pub trait Sealed {}
}

/// The element types a [`Buffer`] holds: `u8`, `i32`, `u32`, `i64`, `u64`, `f32`, `f64`.
///
/// # Examples
/// ```
/// fn total<T: lumen::Element + Into<f64>>(b: &lumen::Buffer<T>) -> f64 {
///     b.iter().map(|x| (*x).into()).sum()
/// }
/// assert_eq!(total(&lumen::Buffer::from(vec![1.5f32, 2.5])), 4.0);
/// ```
pub trait Element: Pod + Send + Sync + PartialEq + fmt::Debug + sealed::Sealed + 'static {
    /// The element read from its little-endian bytes (`size_of::<Self>()` of them).
    #[doc(hidden)]
    fn from_le(bytes: &[u8]) -> Self;
    /// The element's little-endian bytes, appended to `out`.
    #[doc(hidden)]
    fn push_le(self, out: &mut Vec<u8>);
}

macro_rules! element {
    ($($t:ty),*) => {$(
        impl sealed::Sealed for $t {}
        impl Element for $t {
            fn from_le(bytes: &[u8]) -> Self {
                let mut a = [0u8; std::mem::size_of::<$t>()];
                a.copy_from_slice(bytes);
                <$t>::from_le_bytes(a)
            }
            fn push_le(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
        }
    )*};
}

element!(u8, i32, u32, i64, u64, f32, f64);

/// A vector's memory viewed as bytes: lets a `Bytes` own the vector without copying it.
struct Owned<T>(Vec<T>);

impl<T: Pod> AsRef<[u8]> for Owned<T> {
    fn as_ref(&self) -> &[u8] {
        bytemuck::cast_slice(&self.0)
    }
}

/// An immutable array of plain numbers whose bytes are shared, never copied, when it is put,
/// passed to a task or read back in this process. It derefs to `&[T]`.
///
/// Use it for large numeric data (arrays, tensors, byte blobs): `lumen::get` of a
/// `Buffer<f64>` object returns a view of the store's bytes, where a `Vec<f64>` would be
/// decoded into fresh memory. Cloning a buffer is a reference-count increment.
///
/// # Examples
/// ```no_run
/// let b = lumen::Buffer::from(vec![0.5f64; 1 << 20]); // no copy: the buffer owns the vector
/// assert_eq!(b.len(), 1 << 20);
/// assert_eq!(b[7], 0.5);
/// let total: f64 = b.iter().sum();                    // Deref<Target = [f64]>
/// assert_eq!(total, 524288.0);
/// lumen::init()?;
/// let r = lumen::put(b.clone());
/// let view: lumen::Buffer<f64> = lumen::get(&r)?;      // the same bytes, shared
/// assert_eq!(view, b);
/// # Ok::<(), lumen::Error>(())
/// ```
pub struct Buffer<T: Element> {
    /// Native-order elements, aligned for `T`, a whole number of them.
    bytes: Bytes,
    _t: PhantomData<T>,
}

impl<T: Element> Buffer<T> {
    /// An empty buffer.
    ///
    /// # Examples
    /// ```
    /// assert!(lumen::Buffer::<u8>::new().is_empty());
    /// ```
    pub fn new() -> Self {
        Buffer {
            bytes: Bytes::new(),
            _t: PhantomData,
        }
    }

    /// The elements.
    ///
    /// # Examples
    /// ```
    /// let b = lumen::Buffer::from(vec![1u32, 2, 3]);
    /// assert_eq!(b.as_slice(), &[1, 2, 3]);
    /// ```
    pub fn as_slice(&self) -> &[T] {
        if self.bytes.is_empty() {
            return &[];
        }
        // Every constructor keeps the bytes aligned for `T` and a whole number of elements.
        bytemuck::cast_slice(&self.bytes)
    }

    /// The elements' bytes (little-endian on little-endian machines, as stored).
    ///
    /// # Examples
    /// ```
    /// let b = lumen::Buffer::from(vec![1u32]);
    /// assert_eq!(b.as_bytes().len(), 4);
    /// ```
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The elements, copied into a vector.
    ///
    /// # Examples
    /// ```
    /// let b = lumen::Buffer::from(vec![1i64, -2]);
    /// assert_eq!(b.to_vec(), vec![1, -2]);
    /// ```
    pub fn to_vec(&self) -> Vec<T> {
        self.as_slice().to_vec()
    }

    /// A buffer of stored bytes (little-endian elements): shares them when they are aligned for
    /// `T` on a little-endian machine, else copies them once. `None` if they are not a whole
    /// number of elements.
    pub(crate) fn from_stored(bytes: Bytes) -> Option<Self> {
        let size = std::mem::size_of::<T>();
        if bytes.len() % size != 0 {
            return None;
        }
        let aligned = (bytes.as_ptr() as usize) % std::mem::align_of::<T>() == 0;
        if cfg!(target_endian = "little") && (aligned || bytes.is_empty()) {
            return Some(Buffer {
                bytes,
                _t: PhantomData,
            });
        }
        Some(Self::from(
            bytes.chunks_exact(size).map(T::from_le).collect::<Vec<T>>(),
        ))
    }

    /// The stored form: the elements' little-endian bytes (shared on little-endian machines).
    pub(crate) fn to_stored(&self) -> Bytes {
        if cfg!(target_endian = "little") {
            return self.bytes.clone();
        }
        let mut out = Vec::with_capacity(self.bytes.len());
        for x in self.as_slice() {
            x.push_le(&mut out);
        }
        Bytes::from(out)
    }
}

impl<T: Element> Default for Buffer<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Element> Clone for Buffer<T> {
    fn clone(&self) -> Self {
        Buffer {
            bytes: self.bytes.clone(),
            _t: PhantomData,
        }
    }
}

impl<T: Element> Deref for Buffer<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        self.as_slice()
    }
}

impl<T: Element> AsRef<[T]> for Buffer<T> {
    fn as_ref(&self) -> &[T] {
        self.as_slice()
    }
}

impl<T: Element> From<Vec<T>> for Buffer<T> {
    /// Takes the vector's memory as it is: no copy.
    fn from(v: Vec<T>) -> Self {
        Buffer {
            bytes: Bytes::from_owner(Owned(v)),
            _t: PhantomData,
        }
    }
}

impl<T: Element> From<&[T]> for Buffer<T> {
    /// Copies the elements: a large slice into shared memory (reused from buffers freed
    /// before, so the copy does not fault in fresh pages), which other processes of the node
    /// then map without a copy of their own.
    fn from(v: &[T]) -> Self {
        let raw: &[u8] = bytemuck::cast_slice(v);
        if cfg!(target_endian = "little") && raw.len() >= shm::SHARE_MIN {
            if let Ok(seg) = shm::Segment::copy_of(raw) {
                // A segment is page-aligned: aligned for any element.
                return Buffer {
                    bytes: seg.bytes(),
                    _t: PhantomData,
                };
            }
        }
        Self::from(v.to_vec())
    }
}

impl<T: Element> FromIterator<T> for Buffer<T> {
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Self {
        Self::from(iter.into_iter().collect::<Vec<T>>())
    }
}

impl<T: Element> PartialEq for Buffer<T> {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl<T: Element> fmt::Debug for Buffer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 8;
        let xs = self.as_slice();
        write!(f, "Buffer<{}>[{}]", std::any::type_name::<T>(), xs.len())?;
        let mut list = f.debug_list();
        list.entries(xs.iter().take(SHOWN));
        if xs.len() > SHOWN {
            list.entry(&format_args!(".."));
        }
        list.finish()
    }
}

/// Inside another value (a struct field, a tuple), a buffer is one msgpack byte string of its
/// little-endian elements; on its own it is stored as those bytes with no framing at all.
impl<T: Element> Serialize for Buffer<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.to_stored())
    }
}

impl<'de, T: Element> Deserialize<'de> for Buffer<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_byte_buf(BufferVisitor(PhantomData))
    }
}

struct BufferVisitor<T>(PhantomData<T>);

impl<'de, T: Element> Visitor<'de> for BufferVisitor<T> {
    type Value = Buffer<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the bytes of {}-byte elements", std::mem::size_of::<T>())
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Self::Value, E> {
        let size = std::mem::size_of::<T>();
        if v.len() % size != 0 {
            return Err(E::custom(format_args!(
                "{} bytes is not a whole number of {size}-byte {}",
                v.len(),
                std::any::type_name::<T>()
            )));
        }
        Ok(Buffer::from(
            v.chunks_exact(size).map(T::from_le).collect::<Vec<T>>(),
        ))
    }

    fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Self::Value, E> {
        self.visit_bytes(&v)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(b) = seq.next_element::<u8>()? {
            out.push(b);
        }
        self.visit_byte_buf(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vector_becomes_a_buffer_without_a_copy_and_reads_back() {
        let v: Vec<f64> = (0..1000).map(|i| i as f64 * 0.5).collect();
        let at = v.as_ptr() as usize;
        let b = Buffer::from(v);
        assert_eq!(b.as_ptr() as usize, at, "the vector's own memory");
        assert_eq!(b.len(), 1000);
        assert_eq!(b[999], 499.5);
        let again = Buffer::<f64>::from_stored(b.to_stored()).unwrap();
        assert_eq!(again.as_ptr() as usize, at, "stored bytes are shared");
        assert_eq!(again, b);
    }

    #[test]
    fn misaligned_or_ragged_bytes_are_copied_or_refused() {
        let raw: Vec<u8> = (0..=64).collect();
        let bytes = Bytes::from(raw);
        // One byte in: misaligned for u64 on any allocator that aligns to 8 or more.
        let odd = bytes.slice(1..65);
        let b = Buffer::<u64>::from_stored(odd.clone()).unwrap();
        assert_eq!(b.len(), 8);
        assert_eq!(b.as_bytes(), &odd[..]);
        assert_eq!(b[0], u64::from_le_bytes(odd[..8].try_into().unwrap()));
        assert!(Buffer::<u64>::from_stored(bytes.slice(0..7)).is_none());
        assert!(Buffer::<u32>::from_stored(Bytes::new()).unwrap().is_empty());
    }

    #[test]
    fn inside_other_values_it_round_trips_through_msgpack() {
        let value = (7u32, Buffer::from(vec![1i32, -2, 3]), Buffer::<u8>::new());
        let bytes = rmp_serde::to_vec(&value).unwrap();
        let back: (u32, Buffer<i32>, Buffer<u8>) = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(back.1.as_slice(), &[1, -2, 3]);
        assert!(back.2.is_empty());
        let wrong = rmp_serde::to_vec(&Buffer::from(vec![1u8, 2, 3])).unwrap();
        assert!(rmp_serde::from_slice::<Buffer<u32>>(&wrong).is_err());
        assert_eq!(
            format!("{:?}", Buffer::from(vec![1u8; 3])),
            "Buffer<u8>[3][1, 1, 1]"
        );
    }
}
