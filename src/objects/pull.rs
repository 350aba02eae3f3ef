//! Pulls: reading the copy of an object that other processes keep (the result kept where it
//! was made, and the secondary copies of readers that keep what they read).
//!
//! A holder on this process's node is read through shared memory (mapped, not copied). Else
//! the value is sent over QUIC once the pulls in flight leave room for it
//! ([`StoreMemory::pull_room`]): from the one holder in a single request, or, when several
//! processes keep it and it is large, in [`CHUNK`]-byte ranges asked from all of them at once
//! ([`ReadCopy::range`]), as Ray's object manager pulls chunks from several locations. A chunk
//! that a secondary holder cannot give (it evicted its copy, or is gone) is asked of the
//! primary holder instead; what the primary cannot give fails the pull.

use crate::error::Error;
use crate::ids::ObjectId;
use crate::objects::shm;
use crate::objects::spill::StoreMemory;
use crate::protocol::owner::{Fetched, HeldCopy, ReadCopy};
use crate::protocol::refs::Stored;
use crate::protocol::svc;
use crate::transport::net::Net;
use futures::stream::{FuturesUnordered, StreamExt};
use std::collections::VecDeque;
use std::sync::Arc;

/// The size of the ranges a value kept by several processes is pulled in.
pub(crate) const CHUNK: u64 = 8 << 20;

/// Values this large that their owner holds are pulled from it like kept copies
/// ([`read::answer_get`](crate::objects::read::answer_get)).
pub(crate) const PULL_MIN: u64 = 1 << 20;

/// Ranges asked of one holder at a time.
const PER_HOLDER: usize = 2;

/// Asks for object `id`, kept by `copy` (and also by `others`), for the store `memory` (if this
/// process has one): mapped from shared memory when a holder is on this node and it can be,
/// else sent over as the module docs say. A `Shared` answer never comes back from here.
pub(crate) async fn ask_copy(
    net: &Arc<Net>,
    id: ObjectId,
    copy: HeldCopy,
    others: &[HeldCopy],
    memory: Option<&StoreMemory>,
) -> Result<Fetched, Error> {
    let primary = net.target::<svc::Owner>(copy.holder);
    if let Some(m) = memory {
        if let Some(share) = m.share_key(copy.node) {
            let ask = ReadCopy {
                id,
                share: Some(share),
                range: None,
            };
            match primary.send(ask).await? {
                Fetched::Shared(h) => match shm::open(&h) {
                    Ok(b) => return Ok(Fetched::Here(Stored::Value(b))),
                    Err(e) => tracing::debug!(
                        object = %id, holder = %copy.holder, error = %e, "cannot map a shared copy"
                    ),
                },
                other => return Ok(other),
            }
        }
        // A secondary copy on this node: mapped if it still has it.
        for c in others.iter().filter(|c| c.holder != copy.holder) {
            let Some(share) = m.share_key(c.node) else {
                continue;
            };
            let ask = ReadCopy {
                id,
                share: Some(share),
                range: None,
            };
            if let Ok(Fetched::Shared(h)) = net.target::<svc::Owner>(c.holder).send(ask).await {
                if let Ok(b) = shm::open(&h) {
                    return Ok(Fetched::Here(Stored::Value(b)));
                }
            }
        }
    }
    let _room = match memory {
        Some(m) => m.pull_room(copy.size).await,
        None => None,
    };
    let mut holders = vec![copy];
    for c in others {
        if !net.is_here(c.holder) && !holders.iter().any(|h| h.holder == c.holder) {
            holders.push(*c);
        }
    }
    if holders.len() < 2 || copy.size < 2 * CHUNK {
        let ask = ReadCopy {
            id,
            share: None,
            range: None,
        };
        return primary.send(ask).await;
    }
    pull_chunks(net, id, &holders).await
}

/// Pulls `holders[0].size` bytes of object `id` in [`CHUNK`]s from all `holders` at once
/// (`holders[0]` is the primary).
async fn pull_chunks(net: &Arc<Net>, id: ObjectId, holders: &[HeldCopy]) -> Result<Fetched, Error> {
    let size = holders[0].size;
    let mut todo: VecDeque<Chunk> = Chunk::all(size).collect();
    tracing::debug!(object = %id, bytes = size, holders = holders.len(), chunks = todo.len(),
        "pulling in chunks from several holders");
    // Zeroed pages come from the kernel as the chunks are written into them.
    let mut value = vec![0u8; size as usize];
    let mut busy = vec![0usize; holders.len()];
    let mut gone = vec![false; holders.len()];
    let mut inflight = FuturesUnordered::new();
    loop {
        // Every holder still answering gets ranges up to its share in flight.
        for (h, holder) in holders.iter().enumerate() {
            while !gone[h] && busy[h] < PER_HOLDER {
                let Some(chunk) = todo.pop_front() else { break };
                busy[h] += 1;
                let to = net.target::<svc::Owner>(holder.holder);
                let ask = ReadCopy {
                    id,
                    share: None,
                    range: Some((chunk.start, chunk.end)),
                };
                inflight.push(async move { (h, chunk, to.send(ask).await) });
            }
        }
        let Some((h, chunk, answer)) = inflight.next().await else {
            break;
        };
        busy[h] -= 1;
        match answer {
            Ok(Fetched::Here(Stored::Value(b))) if b.len() as u64 == chunk.len() => {
                value[chunk.start as usize..chunk.end as usize].copy_from_slice(&b);
            }
            // The primary's answer stands: its error, or no value at all.
            Ok(Fetched::Here(Stored::Error(e))) if h == 0 => {
                return Ok(Fetched::Here(Stored::Error(e)))
            }
            Err(e) if h == 0 => return Err(e),
            _ if h == 0 => {
                return Ok(Fetched::Here(Stored::Error(Error::ObjectLost {
                    object: id.to_string(),
                    reason: format!(
                        "the process keeping it answered bytes {}..{} with no value",
                        chunk.start, chunk.end
                    ),
                })))
            }
            // A secondary holder that cannot: the primary gets its ranges.
            _ => {
                tracing::debug!(object = %id, holder = %holders[h].holder,
                    "a secondary copy could not be read; its chunks go to the primary");
                gone[h] = true;
                todo.push_front(chunk);
            }
        }
    }
    Ok(Fetched::Here(Stored::Value(bytes::Bytes::from(value))))
}

/// A range of a value's bytes, `start..end`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Chunk {
    start: u64,
    end: u64,
}

impl Chunk {
    /// The chunks of a value of `size` bytes, in order.
    fn all(size: u64) -> impl Iterator<Item = Chunk> {
        (0..size.div_ceil(CHUNK)).map(move |k| Chunk {
            start: k * CHUNK,
            end: ((k + 1) * CHUNK).min(size),
        })
    }

    fn len(&self) -> u64 {
        self.end - self.start
    }
}

/// The bytes `range` (`start..end`) of `value`, for a reader pulling it in chunks; an
/// `InvalidArgument` error naming the size when the range is not within it.
pub(crate) fn slice(id: ObjectId, value: Stored, range: Option<(u64, u64)>) -> Stored {
    let (Some((start, end)), Stored::Value(b)) = (range, &value) else {
        return value;
    };
    if start > end || end > b.len() as u64 {
        return Stored::Error(Error::InvalidArgument {
            message: format!(
                "bytes {start}..{end} of object {id} were asked for, but it has {} bytes",
                b.len()
            ),
        });
    }
    Stored::Value(b.slice(start as usize..end as usize))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_the_value_once_in_order() {
        for size in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 5 * CHUNK + 7] {
            let chunks: Vec<Chunk> = Chunk::all(size).collect();
            let mut at = 0;
            for c in &chunks {
                assert_eq!(c.start, at);
                assert!(c.len() > 0 && c.len() <= CHUNK);
                at = c.end;
            }
            assert_eq!(at, size, "{chunks:?}");
        }
    }

    #[test]
    fn a_range_outside_the_value_is_refused_with_its_size() {
        let id = ObjectId::for_put();
        let v = || Stored::Value(bytes::Bytes::from_static(b"0123456789"));
        match slice(id, v(), Some((2, 5))) {
            Stored::Value(b) => assert_eq!(&b[..], b"234"),
            Stored::Error(e) => panic!("{e}"),
        }
        match slice(id, v(), None) {
            Stored::Value(b) => assert_eq!(b.len(), 10),
            Stored::Error(e) => panic!("{e}"),
        }
        for bad in [(5, 2), (0, 11)] {
            match slice(id, v(), Some(bad)) {
                Stored::Error(Error::InvalidArgument { message }) => {
                    assert!(message.contains("has 10 bytes"), "{message}")
                }
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }
}
