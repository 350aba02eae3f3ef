//! Wire framing of the transport's unidirectional streams: the stream-kind tag that opens
//! every uni stream, the control frames carried on a connection's single control stream, and
//! the header of a blob stream.
//!
//! Everything here is pure (bytes in, bytes out) so that it can be tested without a network.
//!
//! Layout (all integers big-endian):
//!
//! * uni stream: `[u8 stream kind]` — [`STREAM_CONTROL`] or [`STREAM_BLOB`] — then its content;
//! * control frame: `[u32 payload length][u8 kind][u64 id][payload]`; the length counts only
//!   the payload, and a frame announcing more than the receiver's `max_frame` is refused before
//!   any of its payload is read;
//! * blob marker (a control frame of kind [`KIND_BLOB_MARKER`]): `id` is the id of the
//!   message it stands for, and its 9-byte payload is `[u8 inner kind][u64 blob sequence]`;
//! * blob stream (after its tag): `[u64 blob sequence][u64 length]`, then exactly `length`
//!   bytes, then the end of the stream.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use std::fmt;

/// Tag byte of the stream that carries a connection's control frames.
pub(crate) const STREAM_CONTROL: u8 = 0x01;
/// Tag byte of a stream that carries one large payload (a blob).
pub(crate) const STREAM_BLOB: u8 = 0x02;

/// Size of a control frame header: length (4) + kind (1) + id (8).
pub(crate) const HEADER_LEN: usize = 13;
/// Size of a blob stream header after its tag: sequence (8) + length (8).
pub(crate) const BLOB_HEADER_LEN: usize = 16;

/// Frame kind: a one-way message.
pub(crate) const KIND_MESSAGE: u8 = 1;
/// Frame kind: a request expecting a reply with the same id.
pub(crate) const KIND_REQUEST: u8 = 2;
/// Frame kind: the reply to the request with this id.
pub(crate) const KIND_REPLY: u8 = 3;
/// Frame kind: the payload of the frame travels on blob stream `seq`.
pub(crate) const KIND_BLOB_MARKER: u8 = 4;

/// Payload length of a blob marker: inner kind (1) + blob sequence (8).
const MARKER_PAYLOAD_LEN: usize = 9;

/// What a delivered payload is: the kinds a blob marker can stand for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A one-way message.
    Message,
    /// A request (its id is the request id).
    Request,
    /// A reply (its id is the id of the request it answers).
    Reply,
}

impl Kind {
    /// The kind's tag byte.
    pub(crate) fn tag(self) -> u8 {
        match self {
            Kind::Message => KIND_MESSAGE,
            Kind::Request => KIND_REQUEST,
            Kind::Reply => KIND_REPLY,
        }
    }

    /// The kind with this tag byte, if any (the blob marker is not a `Kind`).
    pub(crate) fn from_tag(tag: u8) -> Option<Kind> {
        match tag {
            KIND_MESSAGE => Some(Kind::Message),
            KIND_REQUEST => Some(Kind::Request),
            KIND_REPLY => Some(Kind::Reply),
            _ => None,
        }
    }
}

/// One control frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Frame {
    /// A one-way message.
    Message(Bytes),
    /// A request; the peer answers with a [`Frame::Reply`] of the same id.
    Request {
        /// Request id, unique per connection and direction.
        id: u64,
        /// The request's payload.
        payload: Bytes,
    },
    /// The reply to request `id`.
    Reply {
        /// Id of the request answered.
        id: u64,
        /// The reply's payload.
        payload: Bytes,
    },
    /// Stands for a `inner` frame with this `id` whose payload travels on blob stream `seq`;
    /// nothing after it is delivered before that blob has arrived.
    BlobMarker {
        /// What the blob's payload is.
        inner: Kind,
        /// Request or reply id (0 for a message).
        id: u64,
        /// Sequence number of the blob stream, per connection and direction.
        seq: u64,
    },
}

/// Why received bytes were refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FrameError {
    /// A control frame announced a payload above the receiver's limit.
    TooLarge {
        /// Announced payload length.
        len: u64,
        /// The receiver's limit.
        max: u64,
    },
    /// A blob stream announced a length above the receiver's limit.
    BlobTooLarge {
        /// Announced blob length.
        len: u64,
        /// The receiver's limit.
        max: u64,
    },
    /// A frame of an unknown kind.
    UnknownKind(u8),
    /// A well-sized frame whose content makes no sense.
    Malformed(String),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::TooLarge { len, max } => {
                write!(f, "frame of {len} bytes exceeds the limit of {max} bytes")
            }
            FrameError::BlobTooLarge { len, max } => {
                write!(f, "blob of {len} bytes exceeds the limit of {max} bytes")
            }
            FrameError::UnknownKind(kind) => write!(f, "unknown control frame kind {kind}"),
            FrameError::Malformed(why) => write!(f, "malformed control frame: {why}"),
        }
    }
}

/// Writes a control frame header.
fn put_header(out: &mut BytesMut, kind: u8, id: u64, len: usize) {
    // Payloads are bounded by the sender's blob threshold (far below 4 GiB), so the length
    // always fits; saturate rather than wrap if a caller ever breaks that.
    out.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
    out.put_u8(kind);
    out.put_u64(id);
}

/// Appends `frame`, encoded, to `out`.
pub(crate) fn encode(frame: &Frame, out: &mut BytesMut) {
    match frame {
        Frame::Message(payload) => {
            out.reserve(HEADER_LEN + payload.len());
            put_header(out, KIND_MESSAGE, 0, payload.len());
            out.extend_from_slice(payload);
        }
        Frame::Request { id, payload } => {
            out.reserve(HEADER_LEN + payload.len());
            put_header(out, KIND_REQUEST, *id, payload.len());
            out.extend_from_slice(payload);
        }
        Frame::Reply { id, payload } => {
            out.reserve(HEADER_LEN + payload.len());
            put_header(out, KIND_REPLY, *id, payload.len());
            out.extend_from_slice(payload);
        }
        Frame::BlobMarker { inner, id, seq } => {
            out.reserve(HEADER_LEN + MARKER_PAYLOAD_LEN);
            put_header(out, KIND_BLOB_MARKER, *id, MARKER_PAYLOAD_LEN);
            out.put_u8(inner.tag());
            out.put_u64(*seq);
        }
    }
}

/// Encodes only a frame header announcing `len` payload bytes (used to test a peer's limit).
pub(crate) fn encode_header(kind: u8, id: u64, len: u32) -> [u8; HEADER_LEN] {
    let mut out = [0u8; HEADER_LEN];
    out[..4].copy_from_slice(&len.to_be_bytes());
    out[4] = kind;
    out[5..].copy_from_slice(&id.to_be_bytes());
    out
}

/// Takes the first complete frame off the front of `buf`.
///
/// Returns `Ok(None)` when `buf` holds only part of a frame (nothing is consumed: read more
/// and call again). A header announcing more than `max_frame` payload bytes is refused as soon
/// as the header's length field has arrived.
pub(crate) fn decode(buf: &mut BytesMut, max_frame: usize) -> Result<Option<Frame>, FrameError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len > max_frame {
        return Err(FrameError::TooLarge {
            len: len as u64,
            max: max_frame as u64,
        });
    }
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let kind = buf[4];
    if kind != KIND_BLOB_MARKER && Kind::from_tag(kind).is_none() {
        return Err(FrameError::UnknownKind(kind));
    }
    if buf.len() < HEADER_LEN + len {
        return Ok(None);
    }
    buf.advance(5);
    let id = buf.get_u64();
    let mut payload = buf.split_to(len);
    let frame = match kind {
        KIND_MESSAGE => Frame::Message(payload.freeze()),
        KIND_REQUEST => Frame::Request {
            id,
            payload: payload.freeze(),
        },
        KIND_REPLY => Frame::Reply {
            id,
            payload: payload.freeze(),
        },
        _ => {
            if len != MARKER_PAYLOAD_LEN {
                return Err(FrameError::Malformed(format!(
                    "blob marker of {len} bytes (expected {MARKER_PAYLOAD_LEN})"
                )));
            }
            let inner_tag = payload.get_u8();
            let inner = Kind::from_tag(inner_tag).ok_or_else(|| {
                FrameError::Malformed(format!("blob marker for unknown kind {inner_tag}"))
            })?;
            let seq = payload.get_u64();
            Frame::BlobMarker { inner, id, seq }
        }
    };
    Ok(Some(frame))
}

/// The header of a blob stream, tag included: `[STREAM_BLOB][u64 seq][u64 len]`.
pub(crate) fn encode_blob_header(seq: u64, len: u64) -> [u8; 1 + BLOB_HEADER_LEN] {
    let mut out = [0u8; 1 + BLOB_HEADER_LEN];
    out[0] = STREAM_BLOB;
    out[1..9].copy_from_slice(&seq.to_be_bytes());
    out[9..].copy_from_slice(&len.to_be_bytes());
    out
}

/// Reads a blob header (the bytes after the tag) and checks its length against `max_blob`.
/// Returns `(seq, len)`.
pub(crate) fn decode_blob_header(
    header: &[u8; BLOB_HEADER_LEN],
    max_blob: u64,
) -> Result<(u64, u64), FrameError> {
    let mut seq = [0u8; 8];
    let mut len = [0u8; 8];
    seq.copy_from_slice(&header[..8]);
    len.copy_from_slice(&header[8..]);
    let (seq, len) = (u64::from_be_bytes(seq), u64::from_be_bytes(len));
    if len > max_blob {
        return Err(FrameError::BlobTooLarge { len, max: max_blob });
    }
    Ok((seq, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(frames: &[Frame]) -> BytesMut {
        let mut out = BytesMut::new();
        for f in frames {
            encode(f, &mut out);
        }
        out
    }

    #[test]
    fn round_trip_every_kind() {
        let frames = vec![
            Frame::Message(Bytes::from_static(b"hello")),
            Frame::Request {
                id: 7,
                payload: Bytes::from_static(b"question"),
            },
            Frame::Reply {
                id: u64::MAX,
                payload: Bytes::new(),
            },
            Frame::BlobMarker {
                inner: Kind::Reply,
                id: 9,
                seq: 42,
            },
        ];
        let mut buf = encoded(&frames);
        for expected in &frames {
            assert_eq!(decode(&mut buf, 1024).unwrap().as_ref(), Some(expected));
        }
        assert!(buf.is_empty());
        assert_eq!(decode(&mut buf, 1024).unwrap(), None);
    }

    #[test]
    fn partial_input_waits_without_consuming() {
        let frame = Frame::Request {
            id: 3,
            payload: Bytes::from(vec![5u8; 100]),
        };
        let full = encoded(std::slice::from_ref(&frame));
        for cut in 0..full.len() {
            let mut part = BytesMut::from(&full[..cut]);
            assert_eq!(decode(&mut part, 1024).unwrap(), None, "cut at {cut}");
            assert_eq!(part.len(), cut, "nothing consumed at {cut}");
        }
        // Feeding the rest byte by byte yields the frame exactly once.
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for b in full.iter() {
            buf.put_u8(*b);
            if let Some(f) = decode(&mut buf, 1024).unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got, vec![frame]);
    }

    #[test]
    fn oversized_frame_is_refused_from_its_length_alone() {
        let mut buf = BytesMut::from(&(1025u32).to_be_bytes()[..]);
        let err = decode(&mut buf, 1024).unwrap_err();
        assert_eq!(
            err,
            FrameError::TooLarge {
                len: 1025,
                max: 1024
            }
        );
        assert_eq!(
            err.to_string(),
            "frame of 1025 bytes exceeds the limit of 1024 bytes"
        );
        // Exactly at the limit is fine.
        let mut buf = encoded(&[Frame::Message(Bytes::from(vec![0u8; 1024]))]);
        assert!(matches!(
            decode(&mut buf, 1024),
            Ok(Some(Frame::Message(p))) if p.len() == 1024
        ));
    }

    #[test]
    fn unknown_kind_is_refused() {
        let mut buf = BytesMut::from(&encode_header(99, 0, 0)[..]);
        assert_eq!(decode(&mut buf, 1024), Err(FrameError::UnknownKind(99)));
        let mut buf = BytesMut::from(&encode_header(0, 0, 0)[..]);
        assert_eq!(decode(&mut buf, 1024), Err(FrameError::UnknownKind(0)));
    }

    #[test]
    fn malformed_blob_marker_is_refused() {
        let mut buf = BytesMut::from(&encode_header(KIND_BLOB_MARKER, 1, 3)[..]);
        buf.extend_from_slice(&[1, 2, 3]);
        assert!(matches!(
            decode(&mut buf, 1024),
            Err(FrameError::Malformed(_))
        ));
        let mut buf = BytesMut::from(&encode_header(KIND_BLOB_MARKER, 1, 9)[..]);
        buf.put_u8(KIND_BLOB_MARKER);
        buf.put_u64(0);
        assert!(matches!(
            decode(&mut buf, 1024),
            Err(FrameError::Malformed(_))
        ));
    }

    #[test]
    fn blob_header_round_trip_and_limit() {
        let header = encode_blob_header(5, 1 << 33);
        assert_eq!(header[0], STREAM_BLOB);
        let rest: [u8; BLOB_HEADER_LEN] = header[1..].try_into().unwrap();
        assert_eq!(decode_blob_header(&rest, 1 << 33), Ok((5, 1 << 33)));
        let err = decode_blob_header(&rest, 1 << 20).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "blob of {} bytes exceeds the limit of {} bytes",
                1u64 << 33,
                1 << 20
            )
        );
    }

    #[test]
    fn payloads_share_the_read_buffer() {
        let mut buf = encoded(&[
            Frame::Message(Bytes::from_static(b"a")),
            Frame::Message(Bytes::from_static(b"bc")),
        ]);
        let first = decode(&mut buf, 16).unwrap();
        let second = decode(&mut buf, 16).unwrap();
        assert_eq!(first, Some(Frame::Message(Bytes::from_static(b"a"))));
        assert_eq!(second, Some(Frame::Message(Bytes::from_static(b"bc"))));
    }
}
