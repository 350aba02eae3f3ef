//! The public face of actors: [`ActorHandle`], [`ActorOptions`], [`ActorCall`], [`get_actor`]
//! and [`kill`].

use crate::api::args::{self, PreparedArg};
use crate::api::task::{detached_ref, failed_ref};
use crate::context;
use crate::error::{Error, Result};
use crate::ids::{ActorId, ObjectId, TaskId};
use crate::objects::object_ref::ObjectRef;
use crate::placement::SchedulingStrategy;
use crate::protocol::events::TaskType;
use crate::protocol::gcs::{CreateActor, KillActor, LookupActor, Registered};
use crate::protocol::refs::RawRef;
use crate::protocol::task::{ActorCreation, FunctionRef, TaskKind, TaskSpec};
use crate::protocol::worker::ActorCall as CallMessage;
use crate::resources::{ResourceRequest, ResourceSet};
use crate::worker::runtime;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;
use std::ops::Deref;
use std::sync::Arc;

/// A type made into an actor by `#[lumen::remote] impl`. Implemented by the macro.
pub trait RemoteActor: Sized + Send + Sync + 'static {
    /// `crate::module::Type`: the stable name of the actor type.
    #[doc(hidden)]
    const PATH: &'static str;
    /// The stable id of the actor type (path and definition site, hashed).
    #[doc(hidden)]
    const ID: u64;
    /// The generated type carrying the remote methods.
    #[doc(hidden)]
    type Methods: ActorMethods;
    /// The generated type carrying `remote(..)` with the constructor's parameters.
    #[doc(hidden)]
    type Constructor: ActorConstructor;
}

/// The untyped part of a handle: which actor, of which type. What travels on the wire.
#[doc(hidden)]
#[derive(Clone, Serialize, Deserialize)]
pub struct RawActorHandle {
    pub(crate) actor_id: ActorId,
    pub(crate) class: Cow<'static, str>,
    /// Keeps an unnamed actor alive while any handle (or call in flight) exists.
    pub(crate) anchor: Option<ObjectRef<()>>,
}

impl fmt::Debug for RawActorHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}({})", self.class, self.actor_id)
    }
}

/// Implemented by the generated methods type of each actor.
#[doc(hidden)]
pub trait ActorMethods: Send + Sync + 'static {
    fn from_raw(raw: RawActorHandle) -> Self;
    fn raw(&self) -> &RawActorHandle;
}

/// Implemented by the generated constructor type of each actor.
#[doc(hidden)]
pub trait ActorConstructor: Send + Sync + 'static {
    fn from_options(options: ActorOptionsData) -> Self;
    fn options_mut(&mut self) -> &mut ActorOptionsData;
}

/// A handle to an actor of type `T`: call its methods with `handle.method(args).remote()`.
///
/// Handles are cheap to clone and serializable: pass them to tasks and other actors. An actor
/// that is neither named nor detached stops when every handle to it (and every call in flight)
/// is gone.
///
/// # Examples
/// ```no_run
/// pub struct Counter { value: i64 }
///
/// #[lumen::remote]
/// impl Counter {
///     pub fn new(start: i64) -> Self { Counter { value: start } }
///     pub fn inc(&mut self) -> i64 { self.value += 1; self.value }
/// }
///
/// lumen::init()?;
/// let c: lumen::ActorHandle<Counter> = Counter::remote(0);
/// let r = c.inc().remote();
/// assert_eq!(lumen::get(&r)?, 1);
/// # Ok::<(), lumen::Error>(())
/// ```
pub struct ActorHandle<T: RemoteActor> {
    methods: T::Methods,
}

impl<T: RemoteActor> ActorHandle<T> {
    pub(crate) fn from_raw(raw: RawActorHandle) -> Self {
        ActorHandle {
            methods: T::Methods::from_raw(raw),
        }
    }

    /// The actor's id.
    pub fn id(&self) -> ActorId {
        self.methods.raw().actor_id
    }

    #[doc(hidden)]
    pub fn __raw(&self) -> &RawActorHandle {
        self.methods.raw()
    }
}

impl<T: RemoteActor> Deref for ActorHandle<T> {
    type Target = T::Methods;
    fn deref(&self) -> &T::Methods {
        &self.methods
    }
}

impl<T: RemoteActor> Clone for ActorHandle<T> {
    fn clone(&self) -> Self {
        ActorHandle::from_raw(self.methods.raw().clone())
    }
}

impl<T: RemoteActor> fmt::Debug for ActorHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ActorHandle<{}>({})", T::PATH, self.id())
    }
}

impl<T: RemoteActor> Serialize for ActorHandle<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.methods.raw().serialize(s)
    }
}

impl<'de, T: RemoteActor> Deserialize<'de> for ActorHandle<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let raw = RawActorHandle::deserialize(d)?;
        if raw.class != T::PATH {
            return Err(serde::de::Error::custom(format!(
                "an actor handle of {} cannot be used as ActorHandle<{}>",
                raw.class,
                T::PATH
            )));
        }
        Ok(ActorHandle::from_raw(raw))
    }
}

/// The options of one actor creation.
#[doc(hidden)]
#[derive(Clone, Debug, Default)]
pub struct ActorOptionsData {
    pub(crate) resources: ResourceRequest,
    /// `None`: not given, so a captured placement group applies.
    pub(crate) strategy: Option<SchedulingStrategy>,
    pub(crate) name: Option<String>,
    pub(crate) namespace: Option<String>,
    pub(crate) detached: bool,
    pub(crate) get_if_exists: bool,
    pub(crate) max_restarts: i32,
    pub(crate) max_task_retries: i32,
    pub(crate) max_concurrency: Option<usize>,
    /// Environment variables of its own, in the order given (empty: none).
    pub(crate) env: Vec<(String, String)>,
}

/// Options for creating an actor: `T::options().name("x").num_cpus(1.0).remote(args)`.
///
/// # Examples
/// ```no_run
/// pub struct Store { items: Vec<String> }
///
/// #[lumen::remote]
/// impl Store {
///     pub fn new() -> Self { Store { items: Vec::new() } }
///     pub fn add(&mut self, s: String) -> usize { self.items.push(s); self.items.len() }
/// }
///
/// lumen::init()?;
/// let s = Store::options().name("store").num_cpus(0.5).remote();
/// let again: lumen::ActorHandle<Store> = lumen::get_actor("store")?;
/// assert_eq!(lumen::get(&again.add("x".to_string()).remote())?, 1);
/// # drop(s);
/// # Ok::<(), lumen::Error>(())
/// ```
#[must_use = "options do nothing until .remote(..) is called"]
pub struct ActorOptions<T: RemoteActor> {
    ctor: T::Constructor,
}

impl<T: RemoteActor> fmt::Debug for ActorOptions<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ActorOptions<{}>", T::PATH)
    }
}

impl<T: RemoteActor> ActorOptions<T> {
    #[doc(hidden)]
    pub fn __new() -> Self {
        ActorOptions {
            ctor: T::Constructor::from_options(ActorOptionsData::default()),
        }
    }

    fn o(&mut self) -> &mut ActorOptionsData {
        self.ctor.options_mut()
    }

    /// CPUs held while the actor lives (default: 1 to place it, 0 while it runs).
    pub fn num_cpus(mut self, n: f64) -> Self {
        self.o().resources.num_cpus = Some(n);
        self
    }

    /// GPUs held while the actor lives.
    pub fn num_gpus(mut self, n: f64) -> Self {
        self.o().resources.num_gpus = Some(n);
        self
    }

    /// Bytes of the `memory` resource held while the actor lives.
    pub fn memory(mut self, bytes: f64) -> Self {
        self.o().resources.memory = Some(bytes);
        self
    }

    /// An amount of a custom resource held while the actor lives.
    pub fn resource(mut self, name: impl Into<String>, amount: f64) -> Self {
        let name = name.into();
        let r = &mut self.o().resources.custom;
        r.retain(|(n, _)| *n != name);
        r.push((name, amount));
        self
    }

    /// Where to place the actor. Given explicitly, it wins over a placement group the creating
    /// task captures: `SchedulingStrategy::Default` places the actor outside the group.
    pub fn scheduling_strategy(mut self, strategy: SchedulingStrategy) -> Self {
        self.o().strategy = Some(strategy);
        self
    }

    /// Registers the actor under `name` (in its namespace) before `remote()` returns, so
    /// [`get_actor`] finds it at once.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.o().name = Some(name.into());
        self
    }

    /// The namespace of the name (default: the driver's namespace).
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.o().namespace = Some(namespace.into());
        self
    }

    /// The actor outlives its handles (and, on a cluster, its driver) until killed.
    pub fn detached(mut self) -> Self {
        self.o().detached = true;
        self
    }

    /// If an actor of this name exists, return a handle to it instead of failing.
    pub fn get_if_exists(mut self, yes: bool) -> Self {
        self.o().get_if_exists = yes;
        self
    }

    /// Restarts after the actor's process dies (default 0; -1 forever).
    pub fn max_restarts(mut self, n: i32) -> Self {
        self.o().max_restarts = n;
        self
    }

    /// Retries of a call interrupted by the actor's death (default 0; -1 forever).
    pub fn max_task_retries(mut self, n: i32) -> Self {
        self.o().max_task_retries = n;
        self
    }

    /// Calls that may run at once (async actors: default 1000).
    pub fn max_concurrency(mut self, n: usize) -> Self {
        self.o().max_concurrency = Some(n);
        self
    }

    /// An environment variable for the actor (Ray's per-actor `runtime_env={"env_vars": ..}`),
    /// over the job's ([`Config::env`](crate::Config::env)) and over those of the task that
    /// creates it: the actor lives in a worker process of its job started with that
    /// environment (shared with the job's other tasks and actors of the same environment on
    /// its node), so every method sees it, and the tasks it submits inherit it. The same
    /// checks and the same embedded-cluster rule as a task's
    /// [`env`](crate::TaskOptions::env); a refused one makes the handle's calls fail with the
    /// reason.
    ///
    /// # Examples
    /// ```no_run
    /// pub struct Reader;
    ///
    /// #[lumen::remote]
    /// impl Reader {
    ///     pub fn new() -> Self { Reader }
    ///     pub fn read(&self, name: String) -> Option<String> { std::env::var(name).ok() }
    /// }
    ///
    /// lumen::init_with(lumen::Config::default().local_cluster(1))?;
    /// let r = Reader::options().env("MY_SETTING", "1").remote();
    /// assert_eq!(lumen::get(&r.read("MY_SETTING".to_string()).remote())?.as_deref(), Some("1"));
    /// # Ok::<(), lumen::Error>(())
    /// ```
    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.o().env.push((name.into(), value.into()));
        self
    }
}

impl<T: RemoteActor> Deref for ActorOptions<T> {
    type Target = T::Constructor;
    fn deref(&self) -> &T::Constructor {
        &self.ctor
    }
}

/// A handle whose actor never came to be: its calls fail with `error`.
fn dead_handle<T: RemoteActor>(actor_id: ActorId, error: Option<Error>) -> ActorHandle<T> {
    if let Some(e) = error {
        runtime::with_current(|rt| rt.actors.mark_dead(actor_id, e));
    }
    ActorHandle::from_raw(RawActorHandle {
        actor_id,
        class: Cow::Borrowed(T::PATH),
        anchor: None,
    })
}

/// Creates an actor: the body of every generated constructor `remote(..)`.
///
/// A named actor's name is registered before it returns, which blocks: in async code (see
/// `crate::context::async_context`) it does not, and the handle's calls fail with the refusal.
#[doc(hidden)]
pub fn create_actor<T: RemoteActor>(
    options: &ActorOptionsData,
    args: Vec<Result<PreparedArg>>,
) -> ActorHandle<T> {
    if let Some(name) = &options.name {
        let what = format!("creating the named actor {name:?} with `remote(..)`");
        let instead = format!("{}::options().name(..).remote_async(..).await", T::PATH);
        if let Err(e) = context::refuse_blocking(&what, &instead) {
            return dead_handle(ActorId::fresh(), Some(e));
        }
    }
    match prepare_creation::<T>(options, args) {
        Creation::Done(handle) => handle,
        Creation::Naming(naming, msg) => {
            let outcome = naming.rt.request(&naming.rt.gcs, msg);
            naming.finish(outcome.and_then(|r| r))
        }
    }
}

/// Creates an actor without blocking a thread: the body of every generated constructor
/// `remote_async(..)`. Everything but waiting for the name's registration happens before it
/// returns (the arguments are prepared, the creation is sent); the future awaits the GCS's
/// answer, on any executor.
#[doc(hidden)]
pub fn create_actor_async<T: RemoteActor>(
    options: &ActorOptionsData,
    args: Vec<Result<PreparedArg>>,
) -> impl std::future::Future<Output = ActorHandle<T>> + Send + 'static {
    use futures::future::Either;
    match prepare_creation::<T>(options, args) {
        Creation::Done(handle) => Either::Left(futures::future::ready(handle)),
        Creation::Naming(naming, msg) => {
            let registered = naming.rt.ask(&naming.rt.gcs, msg);
            Either::Right(async move { naming.finish(registered.await.and_then(|r| r)) })
        }
    }
}

/// An actor creation prepared on the caller's thread.
enum Creation<T: RemoteActor> {
    /// Nothing to wait for: the handle (possibly dead, with why).
    Done(ActorHandle<T>),
    /// A named actor: the GCS must register the name (with this request) first.
    Naming(Naming<T>, CreateActor),
}

/// A named creation waiting for the GCS to register its name.
struct Naming<T: RemoteActor> {
    rt: Arc<runtime::Runtime>,
    actor_id: ActorId,
    return_id: ObjectId,
    /// The arguments' pins, released if nothing is scheduled.
    pinned: Vec<ObjectId>,
    anchor: ObjectRef<()>,
    name: String,
    _t: PhantomData<fn() -> T>,
}

/// Refuses options Ray refuses, before anything is sent.
fn check_options(o: &ActorOptionsData) -> Result<()> {
    if o.max_concurrency == Some(0) {
        return Err(Error::invalid("max_concurrency must be at least 1"));
    }
    for (what, n) in [
        ("max_restarts", o.max_restarts),
        ("max_task_retries", o.max_task_retries),
    ] {
        if n < -1 {
            return Err(Error::invalid(format!(
                "{what} = {n}: it must be -1 (forever), 0 or more"
            )));
        }
    }
    if o.get_if_exists && o.name.is_none() {
        return Err(Error::invalid(
            "get_if_exists(true) needs a name: give the actor one with .name(..)",
        ));
    }
    if let Some(ns) = &o.namespace {
        crate::config::check_namespace(ns)?;
    }
    Ok(())
}

/// Checks the options, prepares the arguments and the creation task, and sends an unnamed
/// creation; returns at once, without blocking.
fn prepare_creation<T: RemoteActor>(
    options: &ActorOptionsData,
    args: Vec<Result<PreparedArg>>,
) -> Creation<T> {
    let actor_id = ActorId::fresh();
    let dead = |e| Creation::Done(dead_handle(actor_id, e));
    let Ok(rt) = runtime::current() else {
        return dead(None);
    };
    let explicit = options.resources.is_explicit();
    let lifetime = match options.resources.to_set(0.0) {
        Ok(r) if explicit => r,
        Ok(_) => ResourceSet::new(),
        Err(e) => return dead(Some(e)),
    };
    if let Err(e) = check_options(options) {
        return dead(Some(e));
    }
    let placement = if explicit {
        lifetime.clone()
    } else {
        ResourceSet::one_cpu()
    };
    // In a placement group, both draw on the group's reservation.
    let strategy = crate::api::task::effective_strategy(options.strategy.as_ref());
    let what = || format!("actor {}", T::PATH);
    if let Err(e) = crate::placement::group::check_request(&strategy, &placement, what) {
        let e = match e {
            Error::InvalidArgument { message } if !explicit => Error::invalid(format!(
                "{message} (an actor given no resources asks for 1 CPU to be created: give the \
                 group's bundles a CPU, or give the actor resources that fit a bundle)"
            )),
            other => other,
        };
        return dead(Some(e));
    }
    let env = match crate::api::task::task_env(&rt, &options.env) {
        Ok(e) => e,
        Err(e) => return dead(Some(e)),
    };
    let placement = crate::api::task::in_group(placement, &strategy);
    let lifetime = if explicit {
        crate::api::task::in_group(lifetime, &strategy)
    } else {
        lifetime
    };
    let (args, pinned) = match args::collect(args) {
        Ok(a) => a,
        Err(e) => return dead(Some(e)),
    };
    if options.name.as_deref() == Some("") {
        // Nothing was scheduled: release the arguments.
        rt.refs.unpin(&pinned);
        return dead(Some(Error::invalid("an actor name must not be empty")));
    }
    let task_id = TaskId::fresh();
    let return_id = ObjectId::for_return(task_id, 0);
    let namespace = options
        .namespace
        .clone()
        .unwrap_or_else(|| rt.namespace.clone());
    let group_bundles = crate::placement::group::captured_bundles(&strategy);
    let spec = Arc::new(TaskSpec {
        task_id,
        job_id: rt.job_id,
        parent: context::exec(|e| e.task_id),
        function: FunctionRef {
            id: T::ID,
            path: Cow::Borrowed(T::PATH),
        },
        args,
        return_id,
        resources: placement,
        strategy,
        max_retries: 0,
        retry_exceptions: false,
        attempt: 0,
        owner: rt.owner(),
        kind: TaskKind::ActorCreation(Box::new(ActorCreation {
            actor_id,
            lifetime_resources: lifetime,
            max_restarts: options.max_restarts,
            max_task_retries: options.max_task_retries,
            max_concurrency: options.max_concurrency,
            name: options.name.clone(),
            namespace,
            detached: options.detached,
        })),
        pinned,
        group_bundles,
        env,
    });
    // The arguments' pins were taken when they were prepared; the spec now owns them.
    let pinned = spec.pinned.clone();
    rt.refs.add_pending_actor(return_id, spec.clone(), actor_id);
    // The creation's outcome arrives as a result, like any task's.
    rt.inflight.insert(return_id, (spec.clone(), None));
    crate::events::submitted(
        spec.task_id,
        0,
        rt.job_id,
        spec.function.path.clone(),
        TaskType::ActorCreation,
        Some(actor_id),
        spec.parent,
    );
    let anchor = ObjectRef::adopt(RawRef {
        id: return_id,
        owner: rt.owner(),
    });
    let msg = CreateActor {
        spec,
        get_if_exists: options.get_if_exists,
    };
    let Some(name) = options.name.clone() else {
        // Same sender, same path: the GCS sees the creation before the watch.
        rt.gcs.do_send(msg);
        rt.actors.created(actor_id);
        return Creation::Done(ActorHandle::from_raw(RawActorHandle {
            actor_id,
            class: Cow::Borrowed(T::PATH),
            anchor: Some(anchor),
        }));
    };
    // A name is registered before the handle is given out.
    Creation::Naming(
        Naming {
            rt,
            actor_id,
            return_id,
            pinned,
            anchor,
            name,
            _t: PhantomData,
        },
        msg,
    )
}

impl<T: RemoteActor> Naming<T> {
    /// The handle, given the GCS's answer to the registration.
    fn finish(self, outcome: Result<Registered>) -> ActorHandle<T> {
        let Naming {
            rt,
            actor_id,
            return_id,
            pinned,
            anchor,
            name,
            ..
        } = self;
        // Nothing was scheduled for an unused creation: release its arguments.
        let unused = || {
            rt.inflight.remove(&return_id);
            rt.refs.unpin(&pinned);
        };
        match outcome {
            Ok(Registered::New) => {
                rt.actors.created(actor_id);
                ActorHandle::from_raw(RawActorHandle {
                    actor_id,
                    class: Cow::Borrowed(T::PATH),
                    anchor: Some(anchor),
                })
            }
            Ok(Registered::Existing {
                actor_id: existing,
                class: c,
            }) => {
                unused();
                if c != T::PATH {
                    let e = Error::invalid(format!(
                        "the existing actor {name:?} is a {c}, not a {}",
                        T::PATH
                    ));
                    return dead_handle(actor_id, Some(e));
                }
                ActorHandle::from_raw(RawActorHandle {
                    actor_id: existing,
                    class: Cow::Borrowed(T::PATH),
                    anchor: None,
                })
            }
            Err(e) => {
                unused();
                dead_handle(actor_id, Some(e))
            }
        }
    }
}

/// A call of an actor method, ready to submit with [`remote`](ActorCall::remote).
///
/// # Examples
/// ```no_run
/// pub struct Echo;
/// #[lumen::remote]
/// impl Echo {
///     pub fn new() -> Self { Echo }
///     pub fn echo(&self, s: String) -> String { s }
/// }
///
/// lumen::init()?;
/// let e = Echo::remote();
/// let call: lumen::ActorCall<String> = e.echo("hi".to_string());
/// assert_eq!(lumen::get(&call.remote())?, "hi");
/// # Ok::<(), lumen::Error>(())
/// ```
#[must_use = "an actor call does nothing until .remote() is called"]
pub struct ActorCall<R> {
    raw: RawActorHandle,
    method: u32,
    /// The method's path (`module::Type::method`), for the task events.
    path: &'static str,
    args: Vec<Result<PreparedArg>>,
    group: Option<String>,
    _r: PhantomData<fn() -> R>,
}

impl<R> fmt::Debug for ActorCall<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ActorCall({:?}, method #{})", self.raw, self.method)
    }
}

impl<R> ActorCall<R> {
    #[doc(hidden)]
    pub fn __new(
        raw: &RawActorHandle,
        method: u32,
        path: &'static str,
        args: Vec<Result<PreparedArg>>,
    ) -> Self {
        ActorCall {
            raw: raw.clone(),
            method,
            path,
            args,
            group: None,
            _r: PhantomData,
        }
    }

    /// Per-call options (chain the setters, then `.remote()`).
    pub fn options(self) -> Self {
        self
    }

    /// Runs this call in the named concurrency group instead of the method's own.
    pub fn concurrency_group(mut self, name: impl Into<String>) -> Self {
        self.group = Some(name.into());
        self
    }

    /// Submits the call; returns at once with a ref to its result.
    pub fn remote(self) -> ObjectRef<R> {
        let Ok(rt) = runtime::current() else {
            return detached_ref();
        };
        let (args, mut pinned) = match args::collect(self.args) {
            Ok(a) => a,
            Err(e) => return failed_ref(&rt, e),
        };
        let task_id = TaskId::fresh();
        let return_id = ObjectId::for_return(task_id, 0);
        // The call keeps the actor alive until it has run.
        if let Some(anchor) = &self.raw.anchor {
            rt.refs.pin(&[anchor.id()]);
            pinned.push(anchor.id());
        }
        rt.refs.add_pending(return_id, None);
        let r = ObjectRef::adopt(RawRef {
            id: return_id,
            owner: rt.owner(),
        });
        let actor_id = self.raw.actor_id;
        let call = CallMessage {
            actor_id,
            task_id,
            method: self.method,
            args,
            group: self.group,
            return_id,
            owner: rt.owner(),
            caller: rt.net.addr(),
            seq: 0,
            skip_to: 0,
        };
        let parent = context::exec(|e| e.task_id);
        crate::events::call_submitted(task_id, rt.job_id, actor_id, self.path, parent);
        rt.actors.submit(actor_id, call, pinned);
        r
    }
}

/// Finds the named actor in the driver's namespace.
///
/// In async code (a lumen async task or actor method, or any thread of a tokio runtime outside a
/// lumen sync task) it returns `Error::InvalidArgument` without blocking: use
/// [`get_actor_async`] there.
///
/// # Examples
/// ```no_run
/// pub struct Registry;
/// #[lumen::remote]
/// impl Registry { pub fn new() -> Self { Registry } pub fn ping(&self) -> u8 { 1 } }
///
/// lumen::init()?;
/// let _r = Registry::options().name("registry").remote();
/// let h: lumen::ActorHandle<Registry> = lumen::get_actor("registry")?;
/// assert_eq!(lumen::get(&h.ping().remote())?, 1);
/// assert!(lumen::get_actor::<Registry>("nobody").is_err());
/// # Ok::<(), lumen::Error>(())
/// ```
pub fn get_actor<T: RemoteActor>(name: &str) -> Result<ActorHandle<T>> {
    let rt = runtime::current()?;
    context::refuse_blocking("lumen::get_actor", "lumen::get_actor_async(name).await")?;
    let msg = lookup(name, &rt.namespace);
    found(name, rt.request(&rt.gcs, msg)?)
}

/// Finds the named actor in `namespace`.
///
/// In async code it returns `Error::InvalidArgument` without blocking, as [`get_actor`] does:
/// use [`get_actor_in_async`] there.
///
/// # Examples
/// ```no_run
/// pub struct Registry;
/// #[lumen::remote]
/// impl Registry { pub fn new() -> Self { Registry } pub fn ping(&self) -> u8 { 1 } }
///
/// lumen::init()?;
/// let _r = Registry::options().name("registry").namespace("tools").remote();
/// let h: lumen::ActorHandle<Registry> = lumen::get_actor_in("registry", "tools")?;
/// assert_eq!(lumen::get(&h.ping().remote())?, 1);
/// # Ok::<(), lumen::Error>(())
/// ```
pub fn get_actor_in<T: RemoteActor>(name: &str, namespace: &str) -> Result<ActorHandle<T>> {
    let rt = runtime::current()?;
    crate::config::check_namespace(namespace)?;
    context::refuse_blocking(
        "lumen::get_actor_in",
        "lumen::get_actor_in_async(name, namespace).await",
    )?;
    found(name, rt.request(&rt.gcs, lookup(name, namespace))?)
}

/// Finds the named actor in the driver's namespace without blocking a thread: the async twin of
/// [`get_actor`]. Works on any executor.
///
/// # Examples
/// ```no_run
/// pub struct Registry;
/// #[lumen::remote]
/// impl Registry { pub fn new() -> Self { Registry } pub fn ping(&self) -> u8 { 1 } }
///
/// # async fn run() -> lumen::Result<()> {
/// let _r = Registry::options().name("registry").remote_async().await;
/// let h: lumen::ActorHandle<Registry> = lumen::get_actor_async("registry").await?;
/// assert_eq!(h.ping().remote().await?, 1);
/// # Ok(())
/// # }
/// lumen::init()?;
/// futures::executor::block_on(run())?;
/// # Ok::<(), lumen::Error>(())
/// ```
pub fn get_actor_async<T: RemoteActor>(
    name: &str,
) -> impl std::future::Future<Output = Result<ActorHandle<T>>> + Send + 'static {
    let found = runtime::current().map(|rt| get_actor_in_async::<T>(name, &rt.namespace));
    async move { found?.await }
}

/// Finds the named actor in `namespace` without blocking a thread: the async twin of
/// [`get_actor_in`]. Works on any executor.
///
/// # Examples
/// ```no_run
/// pub struct Registry;
/// #[lumen::remote]
/// impl Registry { pub fn new() -> Self { Registry } pub fn ping(&self) -> u8 { 1 } }
///
/// # async fn run() -> lumen::Result<()> {
/// let _r = Registry::options().name("registry").namespace("tools").remote_async().await;
/// let h: lumen::ActorHandle<Registry> = lumen::get_actor_in_async("registry", "tools").await?;
/// assert_eq!(h.ping().remote().await?, 1);
/// # Ok(())
/// # }
/// lumen::init()?;
/// futures::executor::block_on(run())?;
/// # Ok::<(), lumen::Error>(())
/// ```
pub fn get_actor_in_async<T: RemoteActor>(
    name: &str,
    namespace: &str,
) -> impl std::future::Future<Output = Result<ActorHandle<T>>> + Send + 'static {
    let asked = crate::config::check_namespace(namespace)
        .and_then(|()| runtime::current())
        .map(|rt| rt.ask(&rt.gcs, lookup(name, namespace)));
    let name = name.to_string();
    async move { found(&name, asked?.await?) }
}

fn lookup(name: &str, namespace: &str) -> LookupActor {
    LookupActor {
        namespace: namespace.to_string(),
        name: name.to_string(),
    }
}

/// The handle of the actor the GCS found under `name`, if it is a `T`.
fn found<T: RemoteActor>(name: &str, answer: Result<(ActorId, String)>) -> Result<ActorHandle<T>> {
    let (actor_id, class) = answer?;
    if class != T::PATH {
        return Err(Error::invalid(format!(
            "the actor {name:?} is a {class}, not a {}",
            T::PATH
        )));
    }
    Ok(ActorHandle::from_raw(RawActorHandle {
        actor_id,
        class: Cow::Owned(class),
        anchor: None,
    }))
}

/// Kills the actor at once (no restart). Calls not yet run fail with `Error::ActorDied`; a named
/// actor's name becomes free.
///
/// # Examples
/// ```no_run
/// pub struct Worker;
/// #[lumen::remote]
/// impl Worker { pub fn new() -> Self { Worker } pub fn work(&self) -> u8 { 1 } }
///
/// lumen::init()?;
/// let w = Worker::remote();
/// lumen::kill(&w);
/// assert!(matches!(lumen::get(&w.work().remote()), Err(lumen::Error::ActorDied { .. })));
/// # Ok::<(), lumen::Error>(())
/// ```
pub fn kill<T: RemoteActor>(handle: &ActorHandle<T>) {
    runtime::with_current(|rt| {
        let actor_id = handle.id();
        let reason = "killed by lumen::kill".to_string();
        rt.actors.mark_dead(
            actor_id,
            Error::ActorDied {
                actor: actor_id.to_string(),
                class: T::PATH.to_string(),
                reason: reason.clone(),
            },
        );
        rt.gcs.do_send(KillActor { actor_id, reason });
    });
}
