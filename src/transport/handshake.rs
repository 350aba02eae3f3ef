//! The lumen handshake: authenticates both ends of a fresh QUIC connection with the cluster
//! token, bound to the TLS channel.
//!
//! The client opens a bidirectional stream, writes a length-prefixed (u32, big-endian)
//! rmp-serde [`Hello`] and finishes its side. Its `proof` is
//! `blake3::keyed_hash(token, b"lumen/client" ++ server_cert_fingerprint ++ nonce)`: only a holder
//! of the token can make it, and it is only valid for the server certificate the client saw,
//! so it cannot be relayed to another server. The server checks the magic, the protocol
//! version and the proof (constant-time) and answers [`Answer::Welcome`] with its own proof
//! over `b"lumen/server"` and the same nonce (so a server without the token is refused by the
//! client too), or [`Answer::Refused`] with a reason, after which it closes the connection with
//! `CLOSE_REFUSED` and the same reason.
//!
//! The proof functions and message checks are pure and unit-tested; the two async functions at
//! the bottom drive them over a connection.

use super::{describe_connection_error, CLOSE_REFUSED, PROTOCOL_VERSION};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::time::Duration;

/// The magic string that opens every hello.
pub(crate) const MAGIC: &str = "LUMEN";
/// Largest hello (or answer) accepted, length prefix excluded.
pub(crate) const MAX_HELLO: usize = 4096;
/// How long a server waits for a connecting client's hello.
pub(crate) const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a refusing server waits for its answer to be acknowledged before closing.
const LINGER: Duration = Duration::from_secs(1);

/// Reason given to a client whose proof does not match the server's token.
pub(crate) const TOKEN_MISMATCH: &str = "the cluster token does not match: this process was \
     given a different LUMEN_TOKEN / --token than the cluster's";
/// Reason given (by a client) to a server whose proof does not match the client's token.
pub(crate) const SERVER_TOKEN_MISMATCH: &str = "the peer does not know the cluster token (its \
     handshake proof does not match): it belongs to a different cluster, or was given a different \
     LUMEN_TOKEN / --token";

/// The client's first message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Hello {
    /// Always [`MAGIC`].
    pub(crate) magic: String,
    /// The client's [`PROTOCOL_VERSION`].
    pub(crate) version: u32,
    /// The address the client listens on, so the server can reuse this connection to reach it.
    pub(crate) listen: Option<SocketAddr>,
    /// Fresh random bytes; both proofs cover them.
    pub(crate) nonce: [u8; 32],
    /// [`client_proof`] of the token, the server's certificate and the nonce.
    pub(crate) proof: [u8; 32],
}

/// The server's answer to a [`Hello`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Answer {
    /// Accepted; `proof` is [`server_proof`] over the client's nonce.
    Welcome {
        /// The server's protocol version.
        version: u32,
        /// Proves the server holds the token.
        proof: [u8; 32],
    },
    /// Refused, and why.
    Refused {
        /// Human-readable reason.
        reason: String,
    },
}

/// `keyed_hash(token, label ++ server_fp ++ nonce)`.
fn proof(label: &[u8], token: &[u8; 32], server_fp: &[u8; 32], nonce: &[u8; 32]) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new_keyed(token);
    hasher.update(label);
    hasher.update(server_fp);
    hasher.update(nonce);
    *hasher.finalize().as_bytes()
}

/// `keyed_hash(token, b"lumen/client" ++ server_fp ++ nonce)`.
pub(crate) fn client_proof(token: &[u8; 32], server_fp: &[u8; 32], nonce: &[u8; 32]) -> [u8; 32] {
    proof(b"lumen/client", token, server_fp, nonce)
}

/// `keyed_hash(token, b"lumen/server" ++ server_fp ++ nonce)`.
pub(crate) fn server_proof(token: &[u8; 32], server_fp: &[u8; 32], nonce: &[u8; 32]) -> [u8; 32] {
    proof(b"lumen/server", token, server_fp, nonce)
}

/// Constant-time equality of two proofs.
pub(crate) fn proofs_equal(a: &[u8; 32], b: &[u8; 32]) -> bool {
    // `blake3::Hash`'s equality is constant-time.
    blake3::Hash::from(*a) == blake3::Hash::from(*b)
}

/// A hello for the server whose certificate has fingerprint `server_fp`; without a token the
/// proof is all zeros (and will be refused).
pub(crate) fn make_hello(
    token: Option<&[u8; 32]>,
    server_fp: &[u8; 32],
    listen: Option<SocketAddr>,
    nonce: [u8; 32],
) -> Hello {
    let proof = token.map_or([0; 32], |t| client_proof(t, server_fp, &nonce));
    Hello {
        magic: MAGIC.to_string(),
        version: PROTOCOL_VERSION,
        listen,
        nonce,
        proof,
    }
}

/// Server side: checks a hello; `Err` holds the reason to refuse with.
pub(crate) fn check_hello(
    hello: &Hello,
    token: &[u8; 32],
    server_fp: &[u8; 32],
) -> Result<(), String> {
    if hello.magic != MAGIC {
        return Err(format!(
            "not a lumen handshake (magic {:?}, expected {MAGIC:?})",
            hello.magic
        ));
    }
    if hello.version != PROTOCOL_VERSION {
        return Err(format!(
            "peer speaks lumen protocol v{}, this node speaks v{PROTOCOL_VERSION}",
            hello.version
        ));
    }
    if !proofs_equal(&hello.proof, &client_proof(token, server_fp, &hello.nonce)) {
        return Err(TOKEN_MISMATCH.to_string());
    }
    Ok(())
}

/// Server side: the welcome for an accepted hello.
pub(crate) fn welcome(token: &[u8; 32], server_fp: &[u8; 32], hello: &Hello) -> Answer {
    Answer::Welcome {
        version: PROTOCOL_VERSION,
        proof: server_proof(token, server_fp, &hello.nonce),
    }
}

/// Client side: checks the server's answer to a hello with `nonce`; `Err` holds the reason the
/// connection failed.
pub(crate) fn check_answer(
    answer: &Answer,
    token: &[u8; 32],
    server_fp: &[u8; 32],
    nonce: &[u8; 32],
) -> Result<(), String> {
    match answer {
        Answer::Refused { reason } => Err(format!("refused by the peer: {reason}")),
        Answer::Welcome { version, .. } if *version != PROTOCOL_VERSION => Err(format!(
            "peer speaks lumen protocol v{version}, this node speaks v{PROTOCOL_VERSION}"
        )),
        Answer::Welcome { proof, .. } => {
            if proofs_equal(proof, &server_proof(token, server_fp, nonce)) {
                Ok(())
            } else {
                Err(SERVER_TOKEN_MISMATCH.to_string())
            }
        }
    }
}

/// Encodes a handshake message: `[u32 length][rmp-serde map]`.
pub(crate) fn encode<T: Serialize>(message: &T) -> Result<Vec<u8>, String> {
    let body = rmp_serde::to_vec_named(message)
        .map_err(|e| format!("cannot encode the handshake message: {e}"))?;
    let len = u32::try_from(body.len())
        .ok()
        .filter(|&len| len as usize <= MAX_HELLO)
        .ok_or_else(|| format!("handshake message of {} bytes is too long", body.len()))?;
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// Decodes a whole handshake stream written by [`encode`]; `Err` holds the refusal reason.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    let Some((prefix, body)) = bytes.split_first_chunk::<4>() else {
        return Err(format!(
            "not a lumen handshake (only {} bytes)",
            bytes.len()
        ));
    };
    let len = u32::from_be_bytes(*prefix) as usize;
    if len > MAX_HELLO {
        return Err(format!(
            "not a lumen handshake (announces {len} bytes, the limit is {MAX_HELLO})"
        ));
    }
    if len != body.len() {
        return Err(format!(
            "not a lumen handshake (announces {len} bytes, {} followed)",
            body.len()
        ));
    }
    rmp_serde::from_slice(body).map_err(|e| format!("not a lumen handshake ({e})"))
}

/// Client side, over a fresh connection: sends `hello`, returns the server's answer, or the
/// reason the exchange failed (the server's close reason if it closed the connection).
pub(crate) async fn exchange(conn: &quinn::Connection, hello: &Hello) -> Result<Answer, String> {
    let lost = |e: &quinn::ConnectionError| describe_connection_error(e, None);
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| lost(&e))?;
    let bytes = encode(hello)?;
    if let Err(e) = send.write_all(&bytes).await {
        return Err(match e {
            quinn::WriteError::ConnectionLost(e) => lost(&e),
            other => format!("cannot send the handshake: {other}"),
        });
    }
    // Finishing only fails if the stream is already closed, which the read below reports.
    let _ = send.finish();
    match recv.read_to_end(MAX_HELLO + 4).await {
        Ok(bytes) => decode(&bytes).map_err(|e| format!("bad handshake answer: {e}")),
        Err(quinn::ReadToEndError::Read(quinn::ReadError::ConnectionLost(e))) => Err(lost(&e)),
        Err(e) => Err(format!("cannot read the handshake answer: {e}")),
    }
}

/// Server side, over a freshly accepted connection: reads and checks the hello (within
/// [`HELLO_TIMEOUT`]), answers, and returns the client's listen address. On refusal it
/// answers `Refused`, closes the connection with [`CLOSE_REFUSED`] and returns the reason.
pub(crate) async fn accept(
    conn: &quinn::Connection,
    token: &[u8; 32],
    server_fp: &[u8; 32],
) -> Result<Option<SocketAddr>, String> {
    let lost = |e: &quinn::ConnectionError| describe_connection_error(e, None);
    let read = async {
        let (send, mut recv) = conn.accept_bi().await.map_err(|e| lost(&e))?;
        let checked = match recv.read_to_end(MAX_HELLO + 4).await {
            Ok(bytes) => decode::<Hello>(&bytes)
                .and_then(|hello| check_hello(&hello, token, server_fp).map(|()| hello)),
            Err(quinn::ReadToEndError::TooLong) => Err(format!(
                "not a lumen handshake (hello longer than {MAX_HELLO} bytes)"
            )),
            Err(quinn::ReadToEndError::Read(quinn::ReadError::ConnectionLost(e))) => {
                return Err(lost(&e))
            }
            Err(e) => Err(format!(
                "not a lumen handshake (cannot read the hello: {e})"
            )),
        };
        Ok((send, checked))
    };
    let (mut send, checked) = match tokio::time::timeout(HELLO_TIMEOUT, read).await {
        Ok(Ok(read)) => read,
        Ok(Err(reason)) => return Err(reason),
        Err(_) => {
            let reason = format!(
                "not a lumen handshake (no hello within {} s)",
                HELLO_TIMEOUT.as_secs()
            );
            conn.close(CLOSE_REFUSED, reason.as_bytes());
            return Err(reason);
        }
    };
    let (answer, result) = match checked {
        Ok(hello) => (welcome(token, server_fp, &hello), Ok(hello.listen)),
        Err(reason) => (
            Answer::Refused {
                reason: reason.clone(),
            },
            Err(reason),
        ),
    };
    let written = match encode(&answer) {
        Ok(bytes) => send.write_all(&bytes).await.is_ok() && send.finish().is_ok(),
        Err(_) => false,
    };
    if let Err(reason) = &result {
        // Let the answer reach the client (it closes on reading it), then close with the reason
        // in case it did not.
        if written {
            let _ = tokio::time::timeout(LINGER, send.stopped()).await;
        }
        conn.close(CLOSE_REFUSED, reason.as_bytes());
    } else if !written {
        return Err(conn
            .close_reason()
            .map(|e| lost(&e))
            .unwrap_or_else(|| "cannot send the handshake answer".to_string()));
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: [u8; 32] = [1; 32];
    const FP: [u8; 32] = [2; 32];
    const NONCE: [u8; 32] = [3; 32];

    #[test]
    fn proofs_are_keyed_labelled_and_bound() {
        let c = client_proof(&TOKEN, &FP, &NONCE);
        let mut expected_input = b"lumen/client".to_vec();
        expected_input.extend_from_slice(&FP);
        expected_input.extend_from_slice(&NONCE);
        assert_eq!(c, *blake3::keyed_hash(&TOKEN, &expected_input).as_bytes());
        assert_ne!(c, server_proof(&TOKEN, &FP, &NONCE));
        assert_ne!(c, client_proof(&[9; 32], &FP, &NONCE));
        assert_ne!(c, client_proof(&TOKEN, &[9; 32], &NONCE));
        assert_ne!(c, client_proof(&TOKEN, &FP, &[9; 32]));
        assert!(proofs_equal(&c, &c));
        assert!(!proofs_equal(&c, &[0; 32]));
    }

    #[test]
    fn good_hello_is_welcomed_and_welcome_checks() {
        let hello = make_hello(Some(&TOKEN), &FP, None, NONCE);
        assert_eq!(check_hello(&hello, &TOKEN, &FP), Ok(()));
        let answer = welcome(&TOKEN, &FP, &hello);
        assert_eq!(check_answer(&answer, &TOKEN, &FP, &NONCE), Ok(()));
        // A server without the token is caught by the client.
        let forged = welcome(&[8; 32], &FP, &hello);
        assert_eq!(
            check_answer(&forged, &TOKEN, &FP, &NONCE),
            Err(SERVER_TOKEN_MISMATCH.to_string())
        );
    }

    #[test]
    fn wrong_or_missing_token_is_refused() {
        let wrong = make_hello(Some(&[7; 32]), &FP, None, NONCE);
        assert_eq!(
            check_hello(&wrong, &TOKEN, &FP),
            Err(TOKEN_MISMATCH.to_string())
        );
        let none = make_hello(None, &FP, None, NONCE);
        assert_eq!(none.proof, [0; 32]);
        assert_eq!(
            check_hello(&none, &TOKEN, &FP),
            Err(TOKEN_MISMATCH.to_string())
        );
        // A proof made for another server's certificate is refused (no relaying).
        let relayed = make_hello(Some(&TOKEN), &[5; 32], None, NONCE);
        assert_eq!(
            check_hello(&relayed, &TOKEN, &FP),
            Err(TOKEN_MISMATCH.to_string())
        );
    }

    #[test]
    fn version_and_magic_are_checked() {
        let mut hello = make_hello(Some(&TOKEN), &FP, None, NONCE);
        hello.version = PROTOCOL_VERSION + 1;
        assert_eq!(
            check_hello(&hello, &TOKEN, &FP),
            Err(format!(
                "peer speaks lumen protocol v{}, this node speaks v{PROTOCOL_VERSION}",
                PROTOCOL_VERSION + 1
            ))
        );
        let mut hello = make_hello(Some(&TOKEN), &FP, None, NONCE);
        hello.magic = "HTTP".into();
        assert!(check_hello(&hello, &TOKEN, &FP)
            .unwrap_err()
            .starts_with("not a lumen handshake"));
        let newer = Answer::Welcome {
            version: PROTOCOL_VERSION + 1,
            proof: [0; 32],
        };
        assert!(check_answer(&newer, &TOKEN, &FP, &NONCE)
            .unwrap_err()
            .contains(&format!("protocol v{}", PROTOCOL_VERSION + 1)));
        let refused = Answer::Refused {
            reason: "nope".into(),
        };
        assert_eq!(
            check_answer(&refused, &TOKEN, &FP, &NONCE),
            Err("refused by the peer: nope".to_string())
        );
    }

    #[test]
    fn messages_round_trip_and_garbage_is_refused() {
        let hello = make_hello(
            Some(&TOKEN),
            &FP,
            Some("10.0.0.1:7000".parse().unwrap()),
            NONCE,
        );
        let bytes = encode(&hello).unwrap();
        assert_eq!(decode::<Hello>(&bytes), Ok(hello));
        let answer = Answer::Refused { reason: "x".into() };
        assert_eq!(decode::<Answer>(&encode(&answer).unwrap()), Ok(answer));

        for garbage in [
            &b""[..],
            &b"GET / HTTP/1.1\r\n\r\n"[..],
            &[0, 0, 0, 3, 1, 2, 3][..],
            &[0, 0, 0, 9, 1][..],
        ] {
            let err = decode::<Hello>(garbage).unwrap_err();
            assert!(err.starts_with("not a lumen handshake"), "{err}");
        }
        // Truncated and extended streams are refused too.
        assert!(decode::<Hello>(&bytes[..bytes.len() - 1]).is_err());
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode::<Hello>(&longer).is_err());
    }
}
