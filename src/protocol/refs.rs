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
    pub(crate) addr: SocketAddr,
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
