//! Refs as they travel, owners' addresses, and what an object holds.

use crate::error::Error;
use crate::ids::{NodeId, ObjectId, WorkerId};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// Where an object's owner lives: the worker that created the ref, its node, and the address of
/// its process (see [`Net::addr`](crate::transport::net::Net::addr)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub(crate) struct OwnerAddress {
    pub(crate) worker: WorkerId,
    pub(crate) node: NodeId,
    #[serde(with = "compact_addr")]
    pub(crate) addr: SocketAddr,
}

/// An owner's socket address as a few raw bytes on the wire (IPv4: address and port, 6 bytes;
/// IPv6: address, port, flow info and scope id, 26 bytes), not serde's default enum with a
/// named variant: every ref carries one, and a value holding 10,000 refs decodes 10,000 of
/// them. Human-readable formats keep the usual `"127.0.0.1:7000"` form.
mod compact_addr {
    use serde::de::Visitor;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::fmt;
    use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

    pub(super) fn serialize<S: Serializer>(addr: &SocketAddr, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            return addr.serialize(s);
        }
        let mut buf = [0u8; 26];
        let n = match addr {
            SocketAddr::V4(a) => {
                buf[..4].copy_from_slice(&a.ip().octets());
                buf[4..6].copy_from_slice(&a.port().to_be_bytes());
                6
            }
            SocketAddr::V6(a) => {
                buf[..16].copy_from_slice(&a.ip().octets());
                buf[16..18].copy_from_slice(&a.port().to_be_bytes());
                buf[18..22].copy_from_slice(&a.flowinfo().to_be_bytes());
                buf[22..26].copy_from_slice(&a.scope_id().to_be_bytes());
                26
            }
        };
        s.serialize_bytes(&buf[..n])
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
        if d.is_human_readable() {
            return SocketAddr::deserialize(d);
        }
        d.deserialize_bytes(Raw)
    }

    struct Raw;

    impl Visitor<'_> for Raw {
        type Value = SocketAddr;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a socket address as 6 (IPv4) or 26 (IPv6) bytes")
        }

        fn visit_bytes<E: serde::de::Error>(self, b: &[u8]) -> Result<SocketAddr, E> {
            let u16_at = |i: usize| u16::from_be_bytes([b[i], b[i + 1]]);
            let u32_at = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
            match b.len() {
                6 => Ok(SocketAddr::V4(SocketAddrV4::new(
                    Ipv4Addr::new(b[0], b[1], b[2], b[3]),
                    u16_at(4),
                ))),
                26 => {
                    let mut ip = [0u8; 16];
                    ip.copy_from_slice(&b[..16]);
                    Ok(SocketAddr::V6(SocketAddrV6::new(
                        Ipv6Addr::from(ip),
                        u16_at(16),
                        u32_at(18),
                        u32_at(22),
                    )))
                }
                n => Err(E::invalid_length(n, &self)),
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use super::super::OwnerAddress;
        use crate::ids::{NodeId, WorkerId};

        #[test]
        fn addresses_round_trip_in_a_few_bytes_and_bad_lengths_are_refused() {
            for addr in [
                "127.0.0.1:7000",
                "0.0.0.0:0",
                "[::1]:65535",
                "[fe80::1%3]:9",
            ] {
                let owner = OwnerAddress {
                    worker: WorkerId::fresh(),
                    node: NodeId::fresh(),
                    addr: addr.parse().unwrap(),
                };
                let bytes = rmp_serde::to_vec(&owner).unwrap();
                let back: OwnerAddress = rmp_serde::from_slice(&bytes).unwrap();
                assert_eq!(back, owner, "{addr}");
                let json = serde_json::to_string(&owner).unwrap();
                assert!(json.contains(&owner.addr.to_string()), "{json}");
                assert_eq!(serde_json::from_str::<OwnerAddress>(&json).unwrap(), owner);
            }
            let v4 = rmp_serde::to_vec(&(1u64, 2u64, serde_bytes::Bytes::new(&[1, 2, 3, 4, 5, 6])));
            assert!(rmp_serde::from_slice::<OwnerAddress>(&v4.unwrap()).is_ok());
            let short = rmp_serde::to_vec(&(1u64, 2u64, serde_bytes::Bytes::new(&[1, 2, 3])));
            let err = rmp_serde::from_slice::<OwnerAddress>(&short.unwrap()).unwrap_err();
            assert!(
                err.to_string().contains("6 (IPv4) or 26 (IPv6) bytes"),
                "{err}"
            );
        }
    }
}

/// An untyped ref: the object's id and its owner. What travels on the wire.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub(crate) struct RawRef {
    pub(crate) id: ObjectId,
    pub(crate) owner: OwnerAddress,
}

/// An object's content: its encoded value, or the error its task failed with.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum Stored {
    Value(Bytes),
    Error(Error),
}

impl Stored {
    /// Bytes of the value (0 for an error).
    pub(crate) fn size(&self) -> usize {
        match self {
            Stored::Value(b) => b.len(),
            Stored::Error(_) => 0,
        }
    }
}
