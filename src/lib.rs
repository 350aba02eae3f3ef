//! # lumen
//!
//! Ray's core, native in Rust: remote functions become **tasks**, remote structs become
//! **actors**, both return [`ObjectRef`] futures into a shared **object store**, ask for CPUs,
//! GPUs and custom resources, and run anywhere on the cluster. `lumen::init()` starts a whole
//! cluster inside the process; nothing to install or run first.
//!
//! ```no_run
//! #[lumen::remote]
//! fn square(x: i64) -> i64 { x * x }
//!
//! pub struct Counter { value: i64 }
//!
//! #[lumen::remote]
//! impl Counter {
//!     pub fn new(start: i64) -> Self { Counter { value: start } }
//!     pub fn add(&mut self, x: i64) -> i64 { self.value += x; self.value }
//! }
//!
//! fn main() -> lumen::Result<()> {
//!     lumen::init()?;
//!     let squares: Vec<_> = (0..4).map(square::remote).collect();
//!     assert_eq!(lumen::get_all(&squares)?, vec![0, 1, 4, 9]);
//!
//!     let counter = Counter::remote(0);
//!     let total = counter.add(square::remote(3)).remote();   // refs as arguments
//!     assert_eq!(lumen::get(&total)?, 9);
//!     lumen::shutdown();
//!     Ok(())
//! }
//! ```
//!
//! # Async code
//!
//! No lumen call blocks a thread that runs async code (a lumen async task or actor method, or
//! any tokio runtime's thread outside a lumen sync task): there the blocking calls refuse with
//! an error naming their async twin (or, when they cannot fail, log that and answer nothing).
//! Every blocking call has a twin that awaits instead, on any executor: [`get_async`],
//! [`wait_async`], [`nodes_async`], [`get_actor_async`], `T::options().remote_async(..)`,
//! [`PlacementGroupBuilder::create_async`], and so on.
//!
//! ```no_run
//! # pub struct Counter { value: i64 }
//! # #[lumen::remote]
//! # impl Counter {
//! #     pub fn new(start: i64) -> Self { Counter { value: start } }
//! #     pub fn add(&mut self, x: i64) -> i64 { self.value += x; self.value }
//! # }
//! async fn count() -> lumen::Result<i64> {
//!     let counter = Counter::options().name("counter").remote_async(0).await;
//!     lumen::get_async(&counter.add(2).remote()).await
//! }
//! ```
//!
//! # Layers
//!
//! The crate is built in layers; a module imports only from the layers below it (a test,
//! `layers::no_module_uses_one_above_it` in `src/layers.rs`, fails on an import that points up):
//!
//! ```text
//!  api, testing          the public API: init, tasks, objects, actors, placement groups, state
//!  cluster               the one builder of every process; modes; `lumen start` nodes; status
//!  worker                the core worker: runtime, owner of objects, worker pool
//!  system | node | actors  the services: the GCS, the raylet, actor hosts and callers
//!  invoke, registry      running registered functions; the registry of them
//!  objects               refs, ownership (reference counting), stores, reading objects
//!  context, events       the thread's execution context; the task events this process saw
//!  protocol              every message between components
//!  placement             scheduling policy and placement-group bundle placement (pure)
//!  config, transport     `Config`; the switchboard, QUIC endpoint, frames and handshake
//!  error, ids, resources, spin, supervise
//! ```
//!
//! Every component is reached through a `Target` (`transport::net::Target`): a plain actix send
//! when it is in this process, the same message over QUIC when it is not. The embedded runtime
//! is a one-node cluster whose links happen to be in-process.

#![warn(missing_docs, missing_debug_implementations, rust_2018_idioms)]

#[allow(unused_extern_crates)]
extern crate self as lumen;

mod actors;
mod api;
pub mod cluster;
mod config;
mod context;
mod error;
mod events;
#[doc(hidden)]
pub mod fuzzing;
mod ids;
mod invoke;
#[cfg(test)]
mod layers;
mod node;
mod objects;
mod placement;
mod protocol;
mod registry;
mod resources;
mod spin;
pub mod supervise;
pub(crate) mod system;
pub mod testing;
pub(crate) mod transport;
mod worker;

#[doc(hidden)]
pub use transport::echo as __echo;
#[doc(hidden)]
pub use transport::probe as __probe;

pub use api::actor::{
    get_actor, get_actor_async, get_actor_in, get_actor_in_async, kill, ActorCall, ActorHandle,
    ActorOptions, RemoteActor,
};
pub use api::args::IntoArg;
pub use api::cluster::{
    available_resources, available_resources_async, cluster_resources, cluster_resources_async,
    list_actors, list_actors_async, list_jobs, list_jobs_async, list_objects, list_objects_async,
    list_objects_filtered, list_tasks, list_tasks_async, list_tasks_filtered, list_workers,
    list_workers_async, nodes, nodes_async, ActorInfo, JobInfo, NodeInfo, WorkerInfo,
};
pub use api::context::{runtime_context, try_runtime_context, RuntimeContext};
pub use api::objects::{
    get, get_all, get_all_async, get_async, get_timeout, get_timeout_async, memory_summary,
    memory_summary_async, put, wait, wait_async, MemorySummary,
};
pub use api::placement_group::{
    get_placement_group, get_placement_group_async, list_placement_groups,
    list_placement_groups_async, placement_group_table, placement_group_table_async,
    remove_placement_group, remove_placement_group_async,
};
pub use api::task::TaskOptions;
pub use api::{init, init_with, is_initialized, shutdown};
pub use cluster::{Filter, ObjectInfo, TaskInfo};
pub use config::Config;
pub use error::{Error, Result};
pub use ids::{ActorId, JobId, NodeId, ObjectId, PlacementGroupId, TaskId};
pub use objects::buffer::{Buffer, Element};
pub use objects::object_ref::ObjectRef;
pub use placement::{
    Bundle, PlacementGroup, PlacementGroupBuilder, PlacementGroupInfo, PlacementGroupState,
    PlacementStrategy, SchedulingStrategy,
};

/// Marks a function as a remote task, or an `impl` block as an actor type.
///
/// On a function `f`, it keeps `f` as an ordinary function and adds a module `f` with
/// `f::remote(args..) -> ObjectRef<R>` and `f::options()`. Options in the attribute set the
/// function's defaults: `num_cpus`, `num_gpus`, `memory`, `resources(name = amount, ..)`,
/// `max_retries`, `retry_exceptions`, `env(NAME = "value", ..)` (environment variables, as
/// [`TaskOptions::env`] gives them; an actor's `impl` takes `env(..)` too, as
/// [`ActorOptions::env`]).
///
/// On `impl T`, `new` is the constructor; it adds `T::remote(args..) -> ActorHandle<T>`,
/// `T::remote_async(args..)` (the same, awaiting a name's registration instead of blocking:
/// use it in async code) and `T::options()`, and every method taking `self` becomes callable as
/// `handle.method(args..).remote()`.
pub use lumen_macros::remote;

/// Options of one actor method inside a `#[lumen::remote] impl`:
/// `#[lumen::method(concurrency_group = "io")]`.
pub use lumen_macros::method;

/// Marks `main` as a lumen program's entry: shuts lumen down when `main` returns.
pub use lumen_macros::main;

/// The most used items: `use lumen::prelude::*;`.
pub mod prelude {
    pub use crate::{
        get, get_all, init, put, remote, wait, ActorHandle, IntoArg, ObjectRef, Result,
        SchedulingStrategy,
    };
}

/// Support for the code `#[lumen::remote]` generates. Not a public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::api::actor::{
        create_actor, create_actor_async, ActorConstructor, ActorMethods, ActorOptionsData,
        RawActorHandle,
    };
    pub use crate::api::args::PreparedArg;
    pub use crate::api::task::{submit_task, FunctionMeta, TaskCaller, TaskOptionsData};
    pub use crate::objects::codec::Encoded;
    pub use crate::registry::{
        stable_id, ActorClass, ActorMethod, ActorState, Args, Invoke, MethodInvoke, Outcome,
        RemoteFunction, ACTOR_CLASSES, REMOTE_FUNCTIONS,
    };
    pub use futures::future::BoxFuture;
    pub use linkme;

    /// In a worker process (started by a node), serves tasks and never returns; else returns.
    pub fn enter_worker_mode_if_asked() {
        if std::env::var_os(crate::node::processes::env::WORKER).is_some() {
            crate::cluster::modes::worker_main();
        }
    }

    use crate::error::Error;
    use serde::Serialize;
    use std::fmt::Display;
    use std::sync::Arc;

    /// The `T` of a `Result<T, E>` return type.
    pub trait ResultLike {
        type Ok;
    }
    impl<T, E> ResultLike for Result<T, E> {
        type Ok = T;
    }

    /// Encodes a plain return value.
    pub fn encode_return<T: Serialize + 'static>(value: T) -> Outcome {
        crate::objects::codec::encode_owned(std::any::type_name::<T>(), value)
    }

    /// Encodes a `Result` return value; `Err(e)` becomes `Error::Task` with `e`'s text.
    pub fn encode_result<T: Serialize + 'static, E: Display>(value: Result<T, E>) -> Outcome {
        match value {
            Ok(v) => encode_return(v),
            Err(e) => Err(user_error(e)),
        }
    }

    /// A user error, to be located by the executor.
    pub fn user_error(e: impl Display) -> Error {
        Error::Task {
            function: String::new(),
            message: e.to_string(),
            node: String::new(),
        }
    }

    /// An actor's state cell.
    pub type ActorCell<T> = tokio::sync::RwLock<T>;

    /// Wraps a freshly constructed actor.
    pub fn new_state<T: Send + Sync + 'static>(value: T) -> ActorState {
        Arc::new(ActorCell::new(value))
    }

    /// Wraps a constructor's `Result`.
    pub fn new_state_result<T: Send + Sync + 'static, E: Display>(
        value: Result<T, E>,
    ) -> Result<ActorState, Error> {
        value.map(new_state).map_err(user_error)
    }

    fn wrong_state(path: &str) -> Error {
        Error::invalid(format!("actor state is not a {path}"))
    }

    /// Locks the actor for a `&self` method (blocking).
    pub fn read<'a, T: 'static>(
        state: &'a ActorState,
        path: &str,
    ) -> Result<tokio::sync::RwLockReadGuard<'a, T>, Error> {
        let cell = state
            .downcast_ref::<ActorCell<T>>()
            .ok_or_else(|| wrong_state(path))?;
        Ok(match cell.try_read() {
            Ok(g) => g,
            Err(_) => futures::executor::block_on(cell.read()),
        })
    }

    /// Locks the actor for a `&mut self` method (blocking).
    pub fn write<'a, T: 'static>(
        state: &'a ActorState,
        path: &str,
    ) -> Result<tokio::sync::RwLockWriteGuard<'a, T>, Error> {
        let cell = state
            .downcast_ref::<ActorCell<T>>()
            .ok_or_else(|| wrong_state(path))?;
        Ok(match cell.try_write() {
            Ok(g) => g,
            Err(_) => futures::executor::block_on(cell.write()),
        })
    }

    /// The actor's cell, owned, for async methods.
    pub fn cell<T: Send + Sync + 'static>(
        state: ActorState,
        path: &str,
    ) -> Result<Arc<ActorCell<T>>, Error> {
        state
            .downcast::<ActorCell<T>>()
            .map_err(|_| wrong_state(path))
    }

    /// Compile-time check that a type can cross a task boundary.
    #[diagnostic::on_unimplemented(
        message = "`{Self}` cannot cross a task or actor boundary",
        label = "this type must implement serde's `Serialize` and `Deserialize` (and be `Send + 'static`)",
        note = "derive them: `#[derive(serde::Serialize, serde::Deserialize)]`"
    )]
    pub trait RemoteValue {}
    impl<T: Serialize + serde::de::DeserializeOwned + Send + 'static> RemoteValue for T {}

    /// Used by generated code to check each parameter and return type.
    pub const fn assert_remote_value<T: RemoteValue + ?Sized>() {}

    /// Compile-time check that an actor type can be shared by its calls.
    #[diagnostic::on_unimplemented(
        message = "actor type `{Self}` must be `Send + Sync + 'static`",
        label = "its methods may run on any thread, and `&self` methods may overlap"
    )]
    pub trait ActorStateBound {}
    impl<T: Send + Sync + 'static> ActorStateBound for T {}

    /// Used by generated code to check the actor type.
    pub const fn assert_actor_state<T: ActorStateBound>() {}
}
