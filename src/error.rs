//! The public error type, [`Error`], and the crate's [`Result`] alias.
//!
//! Every failure a user can see is a variant here, with enough context in its fields to say what
//! failed, where and why. Errors are `Clone + Serialize + Deserialize` because they are stored as
//! the value of a failed task's result object and cross process boundaries unchanged.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// `Result<T, lumen::Error>`.
///
/// # Examples
/// ```
/// fn half(x: i64) -> lumen::Result<i64> {
///     if x % 2 == 0 { Ok(x / 2) } else {
///         Err(lumen::Error::InvalidArgument { message: format!("{x} is odd") })
///     }
/// }
/// assert_eq!(half(4).unwrap(), 2);
/// assert!(half(3).is_err());
/// ```
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in lumen.
///
/// # Examples
/// ```
/// let e = lumen::Error::Task {
///     function: "my_crate::square".into(),
///     message: "attempt to multiply with overflow".into(),
///     node: "1f2e".into(),
/// };
/// assert!(e.to_string().contains("my_crate::square"));
/// ```
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
pub enum Error {
    /// A task or actor method returned `Err` or panicked. `message` is the error's `Display`
    /// (or the panic message); `function` is the task's or method's path.
    #[error("task {function} failed on node {node}: {message}")]
    Task {
        /// Path of the function or `Type::method` that failed.
        function: String,
        /// The error's `Display` text or the panic message.
        message: String,
        /// Id of the node the task ran on.
        node: String,
    },
    /// `get_timeout` gave up before the object was ready.
    #[error("timed out after {timeout:?} waiting for object {object}")]
    GetTimeout {
        /// The object waited for.
        object: String,
        /// How long the caller waited.
        timeout: Duration,
    },
    /// The actor is dead: killed, its constructor failed, or its host went away.
    #[error("actor {actor} ({class}) is dead: {reason}")]
    ActorDied {
        /// Actor id.
        actor: String,
        /// Actor type name.
        class: String,
        /// Why it died.
        reason: String,
    },
    /// The actor can never be placed (e.g. hard node affinity to a node that is gone).
    #[error("actor {actor} ({class}) cannot be scheduled: {reason}")]
    ActorUnschedulable {
        /// Actor id.
        actor: String,
        /// Actor type name.
        class: String,
        /// Why it cannot be placed.
        reason: String,
    },
    /// The task can never be placed (e.g. hard node affinity to a node that is gone).
    #[error("task {function} cannot be scheduled: {reason}")]
    TaskUnschedulable {
        /// Path of the function.
        function: String,
        /// Why it cannot be placed.
        reason: String,
    },
    /// The object's value is gone and cannot be recreated.
    #[error("object {object} is lost: {reason}")]
    ObjectLost {
        /// The object.
        object: String,
        /// Why it cannot be recovered.
        reason: String,
    },
    /// The process that owned the object (the driver or worker that submitted its task or
    /// `put` it) is gone: the object's state, locations and lineage went with it (Ray's
    /// `OwnerDiedError`).
    #[error("object {object} is lost: its owner at {owner} died: {reason}")]
    OwnerDied {
        /// The object.
        object: String,
        /// The owner's address.
        owner: String,
        /// How its death was seen.
        reason: String,
    },
    /// The object store could not take a value even after spilling what it could: the put or
    /// task result is refused rather than the node running out of memory.
    #[error("object store full: {asked} bytes were asked for {what}, {free} of {capacity} bytes are free: {reason}")]
    ObjectStoreFull {
        /// The object being stored.
        what: String,
        /// Bytes asked for.
        asked: u64,
        /// Bytes free in the store.
        free: u64,
        /// The store's capacity (`object_store_memory`).
        capacity: u64,
        /// Why nothing more could be spilled or evicted.
        reason: String,
    },
    /// The task was cancelled before it produced a value.
    #[error("task {task} was cancelled: {reason}")]
    Cancelled {
        /// The task.
        task: String,
        /// Why.
        reason: String,
    },
    /// An option, resource amount, name or argument was refused.
    #[error("invalid argument: {message}")]
    InvalidArgument {
        /// What was wrong and what is accepted instead.
        message: String,
    },
    /// An API that needs a running cluster was called before `lumen::init()` or after
    /// `lumen::shutdown()`.
    #[error("lumen is not initialized: call lumen::init() first")]
    NotInitialized,
    /// lumen is already running in this process.
    #[error("lumen is already initialized in this process: call lumen::shutdown() before initializing again")]
    AlreadyInitialized,
    /// A connection to another process failed or was refused.
    #[error("connection to {peer} failed: {reason}")]
    Connection {
        /// The address or node.
        peer: String,
        /// What went wrong.
        reason: String,
    },
    /// A named actor or placement group does not exist.
    #[error("{kind} named {name:?} not found in namespace {namespace:?}")]
    NotFound {
        /// "actor" or "placement group".
        kind: String,
        /// The name looked up.
        name: String,
        /// The namespace searched.
        namespace: String,
    },
    /// A value could not be serialized or deserialized.
    #[error("serialization failed for {what}: {reason}")]
    Serialization {
        /// The value or argument concerned.
        what: String,
        /// The codec's message.
        reason: String,
    },
    /// The runtime was shut down while the operation was in progress.
    #[error("lumen was shut down while {what}")]
    Shutdown {
        /// What was in progress.
        what: String,
    },
    /// The process or node running a task or actor died before it finished (a system failure:
    /// tasks are retried per `max_retries`).
    #[error("the worker running {function} died: {reason}")]
    WorkerDied {
        /// Path of the function or actor type.
        function: String,
        /// What happened to the worker or its node.
        reason: String,
    },
    /// `Config::working_dir` names a directory too large to upload: its package (a gzipped
    /// tar) passes the cap (Ray's 100 MiB by default).
    #[error(
        "Config::working_dir({path}): the directory is too large to upload: its package passes \
         the cap of {cap} bytes (its files hold {size} bytes). Leave large files out of it (data \
         sets belong on each node's disk or in object storage), or raise the cap with \
         Config::working_dir_max_bytes or LUMEN_WORKING_DIR_MAX_BYTES"
    )]
    WorkingDirTooLarge {
        /// The directory.
        path: String,
        /// Bytes of the plain files in it, before compression.
        size: u64,
        /// The cap on the package, in bytes.
        cap: u64,
    },
}

impl Error {
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Error::InvalidArgument {
            message: message.into(),
        }
    }

    pub(crate) fn connection(peer: impl ToString, reason: impl Into<String>) -> Self {
        Error::Connection {
            peer: peer.to_string(),
            reason: reason.into(),
        }
    }

    pub(crate) fn shutdown(what: impl Into<String>) -> Self {
        Error::Shutdown { what: what.into() }
    }
}

/// Names the limit behind an error from the operating system, if it is one.
pub(crate) fn describe_io(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::EMFILE) | Some(libc::ENFILE) => {
            let limit = open_file_limit()
                .map(|n| format!(" ({n})"))
                .unwrap_or_default();
            format!(
                "{e}: the process's open-file limit{limit} is reached (raise it with `ulimit -n`)"
            )
        }
        Some(libc::EAGAIN) => format!(
            "{e}: the operating system refused another process or thread (limit on processes \
             or threads, `ulimit -u`, or memory)"
        ),
        Some(libc::ENOMEM) => format!("{e}: out of memory"),
        _ => e.to_string(),
    }
}

/// The soft limit on open files of this process.
pub(crate) fn open_file_limit() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct it is given.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    (rc == 0).then_some(lim.rlim_cur)
}
