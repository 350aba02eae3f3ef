//! Submitting remote functions: [`TaskOptions`] and the submit path behind `f::remote(..)`.

use crate::api::args::{self, PreparedArg};
use crate::context;
use crate::error::Result;
use crate::ids::{ObjectId, TaskId};
use crate::objects::object_ref::ObjectRef;
use crate::placement::SchedulingStrategy;
use crate::protocol::refs::{OwnerAddress, RawRef, Stored};
use crate::protocol::task::{FunctionRef, TaskKind, TaskSpec};
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
