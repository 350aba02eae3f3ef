//! The entry points fuzzers drive: the decoders a node runs on bytes from the network, each fed
//! arbitrary input. Not a public API (doc-hidden): `fuzz/` has a
//! `cargo fuzz` target per function, and `tests/fuzz_decoders.rs` runs them under proptest in
//! every `cargo test`. Each must return (an error is fine) and never panic, allocate without
//! bound, or loop.

use crate::protocol;
use crate::transport::{frame, handshake};
use bytes::BytesMut;

/// The frame cap the fuzzers decode with (a node's default is larger; the logic is the same).
const MAX_FRAME: usize = 1 << 20;

/// The largest blob the fuzzers accept a header for.
const MAX_BLOB: u64 = 1 << 30;

/// A control stream's bytes, as they arrive: frames decoded one after another until the bytes
/// run out or one is refused; then `data`'s first bytes read as a blob header. Returns how many
/// frames decoded.
pub fn frames(data: &[u8]) -> usize {
    let mut buf = BytesMut::from(data);
    let mut decoded = 0;
    while let Ok(Some(_)) = frame::decode(&mut buf, MAX_FRAME) {
        decoded += 1;
    }
    if let Some(header) = data.first_chunk::<{ frame::BLOB_HEADER_LEN }>() {
        let _ = frame::decode_blob_header(header, MAX_BLOB);
    }
    decoded
}

/// A handshake stream's bytes, read as the server reads a hello (and checked against a token)
/// and as the client reads an answer. Returns whether the hello would be accepted.
pub fn handshake(data: &[u8]) -> bool {
    let token = [7u8; 32];
    let server_fp = [9u8; 32];
    let accepted = match handshake::decode::<handshake::Hello>(data) {
        Ok(hello) => handshake::check_hello(&hello, &token, &server_fp).is_ok(),
        Err(_) => false,
    };
    if let Ok(answer) = handshake::decode::<handshake::Answer>(data) {
        let _ = handshake::check_answer(&answer, &token, &server_fp, &[1u8; 32]);
    }
    accepted
}

/// A message payload as a node takes it: a two-byte tag, then the message's encoding, decoded
/// as the message with that tag. `None` for a tag no message has, else whether it decoded.
pub fn message(data: &[u8]) -> Option<bool> {
    let (tag, body) = data.split_first_chunk::<2>()?;
    protocol::decode_tagged(u16::from_be_bytes(*tag), body).map(|r| r.is_ok())
}

/// Every message tag there is (for fuzzers that build payloads around real tags).
pub fn tags() -> Vec<u16> {
    (0..=u16::MAX)
        .filter(|t| protocol::decode_tagged(*t, &[]).is_some())
        .collect()
}
