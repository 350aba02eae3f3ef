//! The static registry of remote functions and actor types.
//!
//! `#[lumen::remote]` puts one entry per function and per actor type into a linker section
//! (`linkme` distributed slices), so the registry is complete before `main` runs, whatever kind
//! of binary the program is. Entries are keyed by a stable id: an FNV-1a hash of the item's full
//! path (`crate::module::name`), identical in every process running the same executable.

use crate::error::Error;
use crate::objects::codec::Encoded;
use bytes::Bytes;
use futures::future::BoxFuture;
use serde::de::DeserializeOwned;
use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

/// FNV-1a over a path: the stable id of a function or actor type.
pub const fn stable_id(path: &str) -> u64 {
    let bytes = path.as_bytes();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        h ^= bytes[i] as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    h
}

/// The arguments of one invocation, decoded one by one in parameter order.
#[derive(Debug)]
pub struct Args {
    items: std::vec::IntoIter<Bytes>,
    function: &'static str,
    index: usize,
}

impl Args {
    pub(crate) fn new(items: Vec<Bytes>, function: &'static str) -> Self {
        Args {
            items: items.into_iter(),
            function,
            index: 0,
        }
    }

    /// Decodes the next argument.
    pub fn take<T: DeserializeOwned + 'static>(&mut self) -> Result<T, Error> {
        let i = self.index;
        self.index += 1;
        let Some(bytes) = self.items.next() else {
            return Err(Error::invalid(format!(
                "{} was called with {i} arguments but takes more",
                self.function
            )));
        };
        crate::objects::codec::decode_shared(
            &format_args!("argument {i} of {}", self.function),
            &bytes,
        )
    }

    /// Checks that every argument was consumed.
    pub fn finish(self) -> Result<(), Error> {
        let extra = self.items.len();
        if extra > 0 {
            return Err(Error::invalid(format!(
                "{} takes {} arguments but was called with {}",
                self.function,
                self.index,
                self.index + extra
            )));
        }
        Ok(())
    }
}

/// The result of running a task body: encoded return value, or the failure.
pub type Outcome = Result<Encoded, Error>;

/// How a remote function is invoked.
#[derive(Clone, Copy)]
pub enum Invoke {
    /// A plain function, run on an executor thread.
    Sync(fn(Args) -> Outcome),
    /// An `async fn`, run on the node's event loop.
    Async(fn(Args) -> BoxFuture<'static, Outcome>),
}

impl std::fmt::Debug for Invoke {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Invoke::Sync(_) => "Invoke::Sync",
            Invoke::Async(_) => "Invoke::Async",
        })
    }
}

/// A registered remote function.
#[derive(Debug)]
pub struct RemoteFunction {
    /// `crate::module::name`.
    pub path: &'static str,
    /// Its stable id: the path and the definition site, hashed.
    pub id: u64,
    /// How to run it.
    pub invoke: Invoke,
}

/// The state of a live actor: an `ActorCell<T>` behind `Any`.
pub type ActorState = Arc<dyn Any + Send + Sync>;

/// How an actor method is invoked.
#[derive(Clone, Copy)]
pub enum MethodInvoke {
    /// A plain method, run on one of the actor's threads.
    Sync(fn(&ActorState, Args) -> Outcome),
    /// An `async fn` method, run on the actor's event loop.
    Async(fn(ActorState, Args) -> BoxFuture<'static, Outcome>),
}

impl std::fmt::Debug for MethodInvoke {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            MethodInvoke::Sync(_) => "MethodInvoke::Sync",
            MethodInvoke::Async(_) => "MethodInvoke::Async",
        })
    }
}

/// One method of an actor type.
#[derive(Debug)]
pub struct ActorMethod {
    /// The method's name.
    pub name: &'static str,
    /// `crate::module::Type::method`, for messages.
    pub path: &'static str,
    /// Whether it takes `&mut self` (and so runs alone).
    pub mutates: bool,
    /// Its concurrency group, if declared.
    pub group: Option<&'static str>,
    /// How to run it.
    pub invoke: MethodInvoke,
}

/// A registered actor type.
#[derive(Debug)]
pub struct ActorClass {
    /// `crate::module::Type`.
    pub path: &'static str,
    /// Its stable id: the path and the definition site, hashed.
    pub id: u64,
    /// Runs `new` with the decoded arguments.
    pub construct: fn(Args) -> Result<ActorState, Error>,
    /// Its methods; calls name them by index.
    pub methods: &'static [ActorMethod],
    /// Declared concurrency groups and their sizes.
    pub groups: &'static [(&'static str, usize)],
    /// Whether any method is `async` (an async actor).
    pub is_async: bool,
}

/// All remote functions linked into this executable.
#[linkme::distributed_slice]
pub static REMOTE_FUNCTIONS: [RemoteFunction];

/// All actor types linked into this executable.
#[linkme::distributed_slice]
pub static ACTOR_CLASSES: [ActorClass];

fn functions() -> &'static HashMap<u64, &'static RemoteFunction> {
    static MAP: OnceLock<HashMap<u64, &'static RemoteFunction>> = OnceLock::new();
    MAP.get_or_init(|| REMOTE_FUNCTIONS.iter().map(|f| (f.id, f)).collect())
}

fn classes() -> &'static HashMap<u64, &'static ActorClass> {
    static MAP: OnceLock<HashMap<u64, &'static ActorClass>> = OnceLock::new();
    MAP.get_or_init(|| ACTOR_CLASSES.iter().map(|c| (c.id, c)).collect())
}

/// Looks up a function by id.
pub(crate) fn function(id: u64, path: &str) -> Result<&'static RemoteFunction, Error> {
    functions().get(&id).copied().ok_or_else(|| {
        Error::invalid(format!(
            "unknown remote function {path} (id {id:016x}): this executable has no such \
             #[lumen::remote] function; are the driver and the workers the same build?"
        ))
    })
}

/// Looks up an actor type by id.
pub(crate) fn class(id: u64, path: &str) -> Result<&'static ActorClass, Error> {
    classes().get(&id).copied().ok_or_else(|| {
        Error::invalid(format!(
            "unknown actor type {path} (id {id:016x}): this executable has no such \
             #[lumen::remote] impl; are the driver and the workers the same build?"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_ids_are_fnv1a() {
        // Reference values of FNV-1a 64.
        assert_eq!(stable_id(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(stable_id("a"), 0xaf63_dc4c_8601_ec8c);
        assert_ne!(stable_id("x::f"), stable_id("x::g"));
    }

    #[test]
    fn unknown_ids_are_refused_clearly() {
        let e = function(1, "nowhere::f").unwrap_err().to_string();
        assert!(e.contains("unknown remote function nowhere::f"), "{e}");
        let e = class(1, "nowhere::T").unwrap_err().to_string();
        assert!(e.contains("unknown actor type"), "{e}");
    }
}
