//! Submitting remote functions: [`TaskOptions`] and the submit path behind `f::remote(..)`.

use crate::api::args::{self, PreparedArg};
use crate::context;
use crate::error::Result;
use crate::ids::{ObjectId, TaskId};
use crate::objects::object_ref::ObjectRef;
use crate::placement::SchedulingStrategy;
use crate::protocol::refs::{OwnerAddress, RawRef, Stored};
use crate::protocol::task::{FunctionRef, TaskEnv, TaskKind, TaskSpec};
use crate::resources::{ResourceRequest, ResourceSet};
use crate::worker::runtime::{self, Runtime};
use std::borrow::Cow;
use std::ops::Deref;
use std::sync::Arc;

/// Ray's default number of retries of a task after a system failure.
pub(crate) const DEFAULT_MAX_RETRIES: i32 = 3;

/// Static facts about a remote function, emitted by `#[remote]`.
#[doc(hidden)]
#[derive(Debug)]
pub struct FunctionMeta {
    pub path: &'static str,
    pub id: u64,
    pub is_async: bool,
}

/// The options of one task submission.
#[doc(hidden)]
#[derive(Clone, Debug, Default)]
pub struct TaskOptionsData {
    pub(crate) resources: ResourceRequest,
    pub(crate) max_retries: Option<i32>,
    pub(crate) retry_exceptions: bool,
    /// `None`: not given, so a captured placement group applies.
    pub(crate) strategy: Option<SchedulingStrategy>,
    /// Environment variables of its own, in the order given (empty: none; no allocation).
    pub(crate) env: Vec<(String, String)>,
}

/// Implemented by the caller type `#[remote]` generates for each function.
#[doc(hidden)]
pub trait TaskCaller: Sized {
    fn from_options(options: TaskOptionsData) -> Self;
    fn options_mut(&mut self) -> &mut TaskOptionsData;
}

/// Options for one submission of a remote function: `f::options().num_cpus(2.0).remote(..)`.
///
/// The setters return the builder; `.remote(args)` submits (it comes from the generated caller
/// this builder dereferences to, so it takes the function's own parameters).
///
/// # Examples
/// ```no_run
/// #[lumen::remote(num_cpus = 2)]
/// fn heavy(n: u64) -> u64 { (0..n).sum() }
///
/// lumen::init_with(lumen::Config::default().num_cpus(4.0).resource("node1", 1.0))?;
/// let r = heavy::options().num_cpus(0.5).resource("node1", 1.0).max_retries(0).remote(10);
/// assert_eq!(lumen::get(&r)?, 45);
/// # Ok::<(), lumen::Error>(())
/// ```
#[must_use = "options do nothing until .remote(..) is called"]
#[derive(Debug)]
pub struct TaskOptions<C: TaskCaller> {
    caller: C,
}

impl<C: TaskCaller> TaskOptions<C> {
    #[doc(hidden)]
    pub fn __new() -> Self {
        TaskOptions {
            caller: C::from_options(TaskOptionsData::default()),
        }
    }

    /// CPUs the task needs (default 1). Fractions down to 0.0001.
    pub fn num_cpus(mut self, n: f64) -> Self {
        self.caller.options_mut().resources.num_cpus = Some(n);
        self
    }

    /// GPUs the task needs (default 0). Fractions up to 1, whole numbers above.
    pub fn num_gpus(mut self, n: f64) -> Self {
        self.caller.options_mut().resources.num_gpus = Some(n);
        self
    }

    /// Bytes of the `memory` resource the task needs.
    pub fn memory(mut self, bytes: f64) -> Self {
        self.caller.options_mut().resources.memory = Some(bytes);
        self
    }

    /// An amount of a custom resource, e.g. `resource("node1", 1.0)`.
    pub fn resource(mut self, name: impl Into<String>, amount: f64) -> Self {
        let r = &mut self.caller.options_mut().resources.custom;
        let name = name.into();
        r.retain(|(n, _)| *n != name);
        r.push((name, amount));
        self
    }

    /// Retries after a failure (default 3; -1 retries forever). Application errors are retried
    /// only with [`retry_exceptions`](Self::retry_exceptions).
    pub fn max_retries(mut self, n: i32) -> Self {
        self.caller.options_mut().max_retries = Some(n);
        self
    }

    /// Also retry when the task returns `Err` or panics (default false).
    pub fn retry_exceptions(mut self, yes: bool) -> Self {
        self.caller.options_mut().retry_exceptions = yes;
        self
    }

    /// Where to run the task. Given explicitly, it wins over a placement group the parent
    /// task captures: `SchedulingStrategy::Default` runs the child outside the group (Ray's
    /// `placement_group=None`).
    pub fn scheduling_strategy(mut self, strategy: SchedulingStrategy) -> Self {
        self.caller.options_mut().strategy = Some(strategy);
        self
    }

    /// An environment variable for this task (Ray's per-task `runtime_env={"env_vars": ..}`),
    /// over the job's ([`Config::env`](crate::Config::env)) and over those of the task that
    /// submits it. The task runs in a worker process of its job started with that environment
    /// (one per distinct environment per node, reused by later tasks with the same one); tasks
    /// it submits inherit it. Names starting with `LUMEN_`, empty names and names or values no
    /// process can hold are refused when the task is submitted (its ref holds the error). The
    /// embedded cluster runs every task in the driver's process and starts no worker
    /// processes: there a variable is accepted only if this process already has it with that
    /// value (use `Config::local_cluster` or a cluster otherwise).
    ///
    /// # Examples
    /// ```no_run
    /// #[lumen::remote]
    /// fn read(name: String) -> Option<String> { std::env::var(name).ok() }
    ///
    /// lumen::init_with(lumen::Config::default().local_cluster(1))?;
    /// let r = read::options().env("MY_SETTING", "1").remote("MY_SETTING".to_string());
    /// assert_eq!(lumen::get(&r)?.as_deref(), Some("1"));
    /// # Ok::<(), lumen::Error>(())
    /// ```
    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.caller
            .options_mut()
            .env
            .push((name.into(), value.into()));
        self
    }
}

/// The environment a submission runs with beyond its job's: its own variables (checked) over
/// those of the process submitting it. Without variables of its own, no allocation: the
/// process's (`None` outside worker processes started for an environment).
pub(crate) fn task_env(rt: &Runtime, own: &[(String, String)]) -> Result<Option<Arc<TaskEnv>>> {
    let inherited = runtime::process_env();
    if own.is_empty() {
        return Ok(inherited.cloned());
    }
    for (name, value) in own {
        crate::config::check_env(".env", name, value)?;
    }
    if rt.net.addr() == crate::transport::net::IN_PROCESS {
        // The embedded cluster: tasks run on this process's threads, and no other process can
        // reach its node (it has no network endpoint). Accepted when nothing would change.
        for (name, value) in own {
            if std::env::var_os(name).as_deref() != Some(std::ffi::OsStr::new(value)) {
                return Err(crate::error::Error::invalid(format!(
                    ".env({name:?}, {value:?}): the embedded cluster runs every task and actor \
                     in this process, whose environment lumen does not change (changing it \
                     while other threads may read it is unsound), and it starts no worker \
                     processes (its node has no network endpoint for them to reach); start \
                     this program with {name}={value}, or run on a cluster \
                     (Config::local_cluster, Config::address), where the task gets a worker \
                     process with that environment"
                )));
            }
        }
        return Ok(None);
    }
    Ok(TaskEnv::overlay(inherited.map(|e| &**e), own).map(Arc::new))
}

impl<C: TaskCaller> Deref for TaskOptions<C> {
    type Target = C;
    fn deref(&self) -> &C {
        &self.caller
    }
}

/// The strategy a submission uses: its own if it gave one, else the placement group its parent
/// captures (`capture_child_tasks`), else the default.
pub(crate) fn effective_strategy(given: Option<&SchedulingStrategy>) -> SchedulingStrategy {
    match given {
        Some(own) => own.clone(),
        None => context::exec(|e| e.captured.clone()).unwrap_or_default(),
    }
}

/// Resources rewritten to draw on a placement group's reservation, when scheduled into one.
pub(crate) fn in_group(resources: ResourceSet, strategy: &SchedulingStrategy) -> ResourceSet {
    match strategy {
        SchedulingStrategy::PlacementGroup {
            group,
            bundle_index,
            ..
        } => crate::placement::group::request_in_group(&resources, *group, *bundle_index),
        _ => resources,
    }
}

/// A ref to a fresh object that will never be made (used when there is no runtime).
pub(crate) fn detached_ref<R>() -> ObjectRef<R> {
    ObjectRef::adopt(RawRef {
        id: ObjectId::for_put(),
        owner: OwnerAddress {
            worker: crate::ids::WorkerId(0),
            node: crate::ids::NodeId(0),
            addr: crate::transport::net::IN_PROCESS,
        },
    })
}

/// A new object owned by this process that already holds `error`.
pub(crate) fn failed_ref<R>(rt: &Runtime, error: crate::error::Error) -> ObjectRef<R> {
    let id = ObjectId::for_put();
    rt.refs.add_pending(id, None);
    rt.refs.complete(id, Stored::Error(error), Vec::new());
    ObjectRef::adopt(RawRef {
        id,
        owner: rt.owner(),
    })
}

/// Submits a task: the body of every generated `remote(..)`.
#[doc(hidden)]
pub fn submit_task<R>(
    options: &TaskOptionsData,
    meta: &'static FunctionMeta,
    args: Vec<Result<PreparedArg>>,
) -> ObjectRef<R> {
    let Ok(rt) = runtime::current() else {
        return detached_ref();
    };
    let resources = match options.resources.to_set(1.0) {
        Ok(r) => r,
        Err(e) => return failed_ref(&rt, e),
    };
    if let Some(n) = options.max_retries.filter(|n| *n < -1) {
        return failed_ref(
            &rt,
            crate::error::Error::invalid(format!(
                "max_retries = {n}: it must be -1 (retry forever), 0 or more"
            )),
        );
    }
    let strategy = effective_strategy(options.strategy.as_ref());
    let what = || format!("task {}", meta.path);
    if let Err(e) = crate::placement::group::check_request(&strategy, &resources, what) {
        return failed_ref(&rt, e);
    }
    let env = match task_env(&rt, &options.env) {
        Ok(e) => e,
        Err(e) => return failed_ref(&rt, e),
    };
    let resources = in_group(resources, &strategy);
    let (args, pinned) = match args::collect(args) {
        Ok(a) => a,
        Err(e) => return failed_ref(&rt, e),
    };
    let group_bundles = crate::placement::group::captured_bundles(&strategy);
    let task_id = TaskId::fresh();
    let return_id = ObjectId::for_return(task_id, 0);
    let spec = Arc::new(TaskSpec {
        task_id,
        job_id: rt.job_id,
        parent: context::exec(|e| e.task_id),
        function: FunctionRef {
            id: meta.id,
            path: Cow::Borrowed(meta.path),
        },
        args,
        return_id,
        resources,
        strategy,
        max_retries: options.max_retries.unwrap_or(DEFAULT_MAX_RETRIES),
        retry_exceptions: options.retry_exceptions,
        attempt: 0,
        owner: rt.owner(),
        kind: TaskKind::Normal {
            is_async: meta.is_async,
        },
        pinned,
        group_bundles,
        env,
    });
    // The arguments' pins were taken when they were prepared; the spec now owns them.
    rt.refs.add_pending(return_id, Some(spec.clone()));
    let r = ObjectRef::adopt(RawRef {
        id: return_id,
        owner: rt.owner(),
    });
    rt.submit(spec);
    r
}
