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

    /// The most bytes an address takes (IPv6 with flow info and scope id).
    pub(super) const MAX: usize = 26;
    /// What a wrong length is told it should have been.
    pub(super) const EXPECTED: &str = "a socket address as 6 (IPv4) or 26 (IPv6) bytes";

    /// Writes `addr` at the start of `buf` (at least [`MAX`] bytes long); returns how many bytes
    /// it took (6 or 26).
    pub(super) fn pack(addr: &SocketAddr, buf: &mut [u8]) -> usize {
        match addr {
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
        }
    }

    /// The address [`pack`] wrote; `None` for any length but 6 or 26.
    pub(super) fn unpack(b: &[u8]) -> Option<SocketAddr> {
        let u16_at = |i: usize| u16::from_be_bytes([b[i], b[i + 1]]);
        let u32_at = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        match b.len() {
            6 => Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::new(b[0], b[1], b[2], b[3]),
                u16_at(4),
            ))),
            26 => {
                let mut ip = [0u8; 16];
                ip.copy_from_slice(&b[..16]);
                Some(SocketAddr::V6(SocketAddrV6::new(
                    Ipv6Addr::from(ip),
                    u16_at(16),
                    u32_at(18),
                    u32_at(22),
                )))
            }
            _ => None,
        }
    }

    pub(super) fn serialize<S: Serializer>(addr: &SocketAddr, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            return addr.serialize(s);
        }
        let mut buf = [0u8; MAX];
        let n = pack(addr, &mut buf);
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
            f.write_str(EXPECTED)
        }

        fn visit_bytes<E: serde::de::Error>(self, b: &[u8]) -> Result<SocketAddr, E> {
            unpack(b).ok_or_else(|| E::invalid_length(b.len(), &self))
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
///
/// In binary formats a ref is one byte string: the three ids (16 bytes each, big-endian) and
/// the owner's address as `compact_addr` packs it, 54 bytes for IPv4. A value holding thousands
/// of refs decodes each with one call instead of a nested struct of five fields. Human-readable
/// formats see the struct, `{"id": …, "owner": {…}}`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct RawRef {
    pub(crate) id: ObjectId,
    pub(crate) owner: OwnerAddress,
}

/// [`RawRef`] as human-readable formats write it.
#[derive(Serialize, Deserialize)]
#[serde(rename = "RawRef")]
struct ReadableRef {
    id: ObjectId,
    owner: OwnerAddress,
}

/// Bytes of the three ids that start a packed [`RawRef`].
const REF_IDS: usize = 48;

impl Serialize for RawRef {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            let readable = ReadableRef {
                id: self.id,
                owner: self.owner,
            };
            return readable.serialize(s);
        }
        let mut buf = [0u8; REF_IDS + compact_addr::MAX];
        buf[..16].copy_from_slice(&self.id.0.to_be_bytes());
        buf[16..32].copy_from_slice(&self.owner.worker.0.to_be_bytes());
        buf[32..48].copy_from_slice(&self.owner.node.0.to_be_bytes());
        let n = compact_addr::pack(&self.owner.addr, &mut buf[REF_IDS..]);
        s.serialize_bytes(&buf[..REF_IDS + n])
    }
}

impl<'de> Deserialize<'de> for RawRef {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let r = ReadableRef::deserialize(d)?;
            return Ok(RawRef {
                id: r.id,
                owner: r.owner,
            });
        }
        d.deserialize_bytes(PackedRef)
    }
}

struct PackedRef;

impl serde::de::Visitor<'_> for PackedRef {
    type Value = RawRef;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "a ref as {REF_IDS} bytes of ids followed by {}",
            compact_addr::EXPECTED
        )
    }

    fn visit_bytes<E: serde::de::Error>(self, b: &[u8]) -> Result<RawRef, E> {
        let id_at = |i: usize| {
            let mut x = [0u8; 16];
            x.copy_from_slice(&b[i..i + 16]);
            u128::from_be_bytes(x)
        };
        let addr = b
            .get(REF_IDS..)
            .and_then(compact_addr::unpack)
            .ok_or_else(|| E::invalid_length(b.len(), &self))?;
        Ok(RawRef {
            id: ObjectId(id_at(0)),
            owner: OwnerAddress {
                worker: WorkerId(id_at(16)),
                node: NodeId(id_at(32)),
                addr,
            },
        })
    }
}

/// An object's content: its encoded value, or the error its task failed with.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum Stored {
    /// In a reply, a large value is sent without being copied into the message, and shares the
    /// buffer it arrived in when decoded.
    Value(
        #[serde(
            serialize_with = "crate::transport::net::attached_bytes",
            deserialize_with = "crate::transport::net::shared_bytes"
        )]
        Bytes,
    ),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn a_ref(addr: &str) -> RawRef {
        RawRef {
            id: ObjectId::for_put(),
            owner: OwnerAddress {
                worker: WorkerId(u128::MAX - 7),
                node: NodeId(1 << 100),
                addr: addr.parse().unwrap(),
            },
        }
    }

    #[test]
    fn a_ref_is_one_byte_string_in_binary_and_a_struct_in_text() {
        for (addr, packed) in [("127.0.0.1:7000", 54), ("[fe80::1%3]:9", 74)] {
            let r = a_ref(addr);
            let bytes = rmp_serde::to_vec(&r).unwrap();
            // A msgpack bin 8: marker, length, then the packed ref.
            assert_eq!(bytes.len(), 2 + packed, "{addr}");
            assert_eq!(rmp_serde::from_slice::<RawRef>(&bytes).unwrap(), r);
            // Inside a value, as a `Vec` of refs travels.
            let many = vec![r.clone(), a_ref("10.0.0.2:1")];
            let back: Vec<RawRef> =
                rmp_serde::from_slice(&rmp_serde::to_vec(&many).unwrap()).unwrap();
            assert_eq!(back, many);
            // (JSON numbers stop at 64 bits: ids that fit.)
            let r = RawRef {
                id: ObjectId(3),
                owner: OwnerAddress {
                    worker: WorkerId(4),
                    node: NodeId(5),
                    addr: r.owner.addr,
                },
            };
            let json = serde_json::to_value(&r).unwrap();
            assert_eq!(
                json["owner"]["addr"],
                addr.parse::<SocketAddr>().unwrap().to_string()
            );
            assert_eq!(serde_json::from_value::<RawRef>(json).unwrap(), r);
        }
    }

    #[test]
    fn a_ref_of_the_wrong_length_is_refused_with_what_was_expected() {
        for len in [0, 6, 47, 53, 55, 80] {
            let bytes = rmp_serde::to_vec(&serde_bytes::Bytes::new(&vec![0u8; len])).unwrap();
            let err = rmp_serde::from_slice::<RawRef>(&bytes)
                .unwrap_err()
                .to_string();
            assert!(err.contains("48 bytes of ids"), "{len}: {err}");
            assert!(err.contains(&len.to_string()), "{len}: {err}");
        }
    }
}
