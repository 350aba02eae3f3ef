//! The protocol between lumen's components: every message one component sends another, and the
//! data those messages carry (task specs, refs, objects' values).
//!
//! This layer sits between the transport, which moves messages, and the services, which handle
//! them: the GCS, raylets, workers and owners each import the messages of the others from here,
//! never each other's code, so no service depends on another's implementation.
//!
//! - [`svc`]: the kinds of component a [`Target`](crate::transport::net::Target) can name.
//! - [`task`]: the task specification (a task's arguments, resources, owner and lineage).
//! - [`refs`]: untyped object refs, owners' addresses, and objects' stored content.
//! - [`gcs`], [`raylet`], [`worker`], [`owner`]: the messages each kind of component takes.
//! - [`events`]: task events, what each task and actor call went through.
//! - [`output`]: how what a worker process prints is labelled on its way to the driver.
//!
//! Every message has a tag unique among all messages ([`TAGS`] lists them; a unit test checks
//! they are distinct).

pub(crate) mod events;
pub(crate) mod gcs;
pub(crate) mod output;
pub(crate) mod owner;
pub(crate) mod raylet;
pub(crate) mod refs;
pub(crate) mod task;
pub(crate) mod worker;

/// Implements [`Wire`](crate::transport::net::Wire) for each message: its tag and its service,
/// lists the tags in `$all` for the uniqueness test, and makes `decode_tagged`, which decodes a
/// message body by its tag as the node does (for the fuzzers).
macro_rules! wire {
    ($all:ident, $svc:ty: $($ty:ident = $tag:expr),* $(,)?) => {
        $(impl crate::transport::net::Wire for $ty {
            const TAG: u16 = $tag;
            type To = $svc;
        })*
        /// The tags of this service's messages.
        #[cfg(test)]
        pub(crate) const $all: &[(&str, u16)] = &[$((stringify!($ty), $tag)),*];

        /// Decodes `body` as this service's message with `tag` (dropping it); `None` when no
        /// message of this service has that tag.
        pub(crate) fn decode_tagged(tag: u16, body: &[u8]) -> Option<Result<(), String>> {
            $(if tag == $tag {
                return Some(
                    rmp_serde::from_slice::<$ty>(body)
                        .map(drop)
                        .map_err(|e| e.to_string()),
                );
            })*
            None
        }
    };
}
pub(crate) use wire;

/// The kinds of component.
pub(crate) mod svc {
    use crate::transport::net::Service;

    /// The GCS: membership, jobs, actors, placement groups.
    #[derive(Debug)]
    pub(crate) struct Gcs;
    impl Service for Gcs {
        const NAME: &'static str = "GCS";
    }

    /// A node's raylet: resources, admission and dispatch.
    #[derive(Debug)]
    pub(crate) struct Raylet;
    impl Service for Raylet {
        const NAME: &'static str = "raylet";
    }

    /// A process that runs tasks and hosts actors: a worker process, or an embedded runtime.
    #[derive(Debug)]
    pub(crate) struct Worker;
    impl Service for Worker {
        const NAME: &'static str = "worker";
    }

    /// A process that owns objects: a driver or a worker (what it submitted and put).
    #[derive(Debug)]
    pub(crate) struct Owner;
    impl Service for Owner {
        const NAME: &'static str = "object owner";
    }
}

/// Decodes `body` as the message with `tag`, whichever service takes it (what a node does
/// with what arrives); `None` for a tag no message has.
pub(crate) fn decode_tagged(tag: u16, body: &[u8]) -> Option<Result<(), String>> {
    gcs::decode_tagged(tag, body)
        .or_else(|| raylet::decode_tagged(tag, body))
        .or_else(|| worker::decode_tagged(tag, body))
        .or_else(|| owner::decode_tagged(tag, body))
}

/// Every message's tag, by service.
#[cfg(test)]
pub(crate) const TAGS: &[&[(&str, u16)]] = &[gcs::TAGS, raylet::TAGS, worker::TAGS, owner::TAGS];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tag_is_distinct_and_in_range() {
        let mut seen = std::collections::HashMap::new();
        for (name, tag) in TAGS.iter().flat_map(|t| t.iter()) {
            assert!(
                (*tag as usize) < crate::transport::net::MAX_TAGS,
                "{name}: tag {tag}"
            );
            if let Some(other) = seen.insert(*tag, *name) {
                panic!("{name} and {other} share tag {tag}");
            }
        }
        assert!(seen.len() > 40);
    }
}
