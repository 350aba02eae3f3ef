//! The task specification: everything needed to run one task, retry it, or re-execute it to
//! recreate a lost object (its lineage).
//!
//! A spec is built by the submitter, kept by the owner of its return object, and travels to the
//! raylet and executor. Arguments are either inline encoded values or refs to objects; refs at
//! the top level are resolved before the task runs, refs nested inside a value are passed as
//! refs.

use crate::ids::{ActorId, JobId, ObjectId, TaskId};
use crate::placement::SchedulingStrategy;
use crate::protocol::refs::{OwnerAddress, RawRef};
use crate::resources::ResourceSet;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::sync::Arc;

/// One argument of a task or actor call.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum TaskArg {
    /// An encoded value.
    Value(Bytes),
    /// A ref whose value is passed (resolved before the task runs).
    Ref(RawRef),
}

/// Which registered function a task runs: a stable id and the path for messages.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct FunctionRef {
    pub(crate) id: u64,
    pub(crate) path: Cow<'static, str>,
}

/// What creating an actor needs beyond an ordinary task.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct ActorCreation {
    pub(crate) actor_id: ActorId,
    /// Resources held while the actor lives (empty unless given explicitly).
    pub(crate) lifetime_resources: ResourceSet,
    pub(crate) max_restarts: i32,
    pub(crate) max_task_retries: i32,
    pub(crate) max_concurrency: Option<usize>,
    pub(crate) name: Option<String>,
    pub(crate) namespace: String,
    pub(crate) detached: bool,
}

/// The kind of task.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum TaskKind {
    /// A remote function; async ones run on the node's event loop.
    Normal { is_async: bool },
    /// The constructor of an actor.
    ActorCreation(Box<ActorCreation>),
}

/// The environment variables a task or actor runs with beyond its job's (Ray's per-task
/// `runtime_env={"env_vars": ..}`), sorted by name, and the key of their worker processes.
///
/// A node runs the job's tasks that have none in the job's worker process, and each distinct
/// `TaskEnv` in a worker process of its own, started with the job's variables and these on top
/// and reused by later tasks with the same key (Ray's worker pool keys workers by runtime env
/// the same way). The key is a hash of the sorted pairs, the same in every process.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct TaskEnv {
    /// A stable hash of `vars` (BLAKE3, first 8 bytes): which worker processes may run it.
    pub(crate) key: u64,
    /// The variables, sorted by name, each name once.
    pub(crate) vars: Vec<(String, String)>,
}

impl TaskEnv {
    /// `own` over `base` (a later pair wins over an earlier one of the same name, and `own`
    /// over `base`); `None` when that leaves nothing.
    pub(crate) fn overlay(base: Option<&TaskEnv>, own: &[(String, String)]) -> Option<TaskEnv> {
        let mut vars: std::collections::BTreeMap<&str, &str> = std::collections::BTreeMap::new();
        for (k, v) in base.map_or(&[][..], |b| &b.vars[..]).iter().chain(own) {
            vars.insert(k, v);
        }
        if vars.is_empty() {
            return None;
        }
        let vars: Vec<(String, String)> = vars
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Some(TaskEnv {
            key: env_key(&vars),
            vars,
        })
    }

    /// The text a worker process started for it finds in its environment.
    pub(crate) fn encode(&self) -> String {
        serde_json::to_string(&self.vars).unwrap_or_default()
    }

    /// The inverse of [`encode`](Self::encode), checking what it reads.
    pub(crate) fn decode(text: &str) -> Result<Option<TaskEnv>, crate::error::Error> {
        let vars: Vec<(String, String)> = serde_json::from_str(text).map_err(|e| {
            crate::error::Error::invalid(format!("a worker's runtime environment is garbled: {e}"))
        })?;
        Ok(TaskEnv::overlay(None, &vars))
    }
}

/// The key of sorted, NUL-free pairs: each name and value followed by a NUL byte, hashed.
fn env_key(sorted: &[(String, String)]) -> u64 {
    let mut h = blake3::Hasher::new();
    for (k, v) in sorted {
        h.update(k.as_bytes());
        h.update(&[0]);
        h.update(v.as_bytes());
        h.update(&[0]);
    }
    let mut first = [0u8; 8];
    first.copy_from_slice(&h.finalize().as_bytes()[..8]);
    u64::from_le_bytes(first)
}

/// Which worker process on a node runs a task: its job's, or the job's one for its
/// [`TaskEnv`] (by key).
pub(crate) type WorkerKey = (JobId, Option<u64>);

/// A task, as submitted.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct TaskSpec {
    pub(crate) task_id: TaskId,
    pub(crate) job_id: JobId,
    pub(crate) parent: Option<TaskId>,
    pub(crate) function: FunctionRef,
    pub(crate) args: Vec<TaskArg>,
    pub(crate) return_id: ObjectId,
    /// Resources needed to place (and, for tasks, to run) it.
    pub(crate) resources: ResourceSet,
    pub(crate) strategy: SchedulingStrategy,
    /// Retries on failure: -1 means forever.
    pub(crate) max_retries: i32,
    /// Whether application errors (Err, panic) are retried too, not only system failures.
    pub(crate) retry_exceptions: bool,
    pub(crate) attempt: u32,
    pub(crate) owner: OwnerAddress,
    pub(crate) kind: TaskKind,
    /// Objects this task's arguments mention (top level and nested), pinned until it finishes.
    pub(crate) pinned: Vec<ObjectId>,
    /// The bundles of the placement group it captures its children into, when it does and its
    /// submitter knew them: the process that runs it checks those children against them.
    pub(crate) group_bundles: Option<Arc<[ResourceSet]>>,
    /// Its environment variables beyond the job's (its own, over those of the task that
    /// submitted it): `None` runs it in the job's worker process.
    pub(crate) env: Option<Arc<TaskEnv>>,
}

impl TaskSpec {
    /// The worker process on a node that runs it.
    pub(crate) fn worker_key(&self) -> WorkerKey {
        (self.job_id, self.env.as_ref().map(|e| e.key))
    }

    /// Whether this is a plain task (not an actor creation).
    pub(crate) fn is_normal(&self) -> bool {
        matches!(self.kind, TaskKind::Normal { .. })
    }

    /// The top-level ref arguments, with their owners.
    pub(crate) fn dependency_refs(&self) -> Vec<(usize, RawRef)> {
        self.args
            .iter()
            .enumerate()
            .filter_map(|(i, a)| match a {
                TaskArg::Ref(r) => Some((i, r.clone())),
                TaskArg::Value(_) => None,
            })
            .collect()
    }

    /// Whether the worker slot this task runs in is leased to its owner once it finishes: a
    /// plain sync task under the default strategy whose arguments are all values, so that the
    /// owner can push its next task of the same kind to that slot with nothing left to resolve
    /// or place (Ray's owners likewise lease workers per scheduling class). Async tasks are not:
    /// they keep their CPU while they await, so a slot reused for them could hold it from the
    /// tasks they await. Nor are tasks with their own environment: their slots are in worker
    /// processes of that environment, which the owner's other tasks must not reach.
    pub(crate) fn leasable(&self) -> bool {
        matches!(self.kind, TaskKind::Normal { is_async: false })
            && self.env.is_none()
            && matches!(self.strategy, crate::placement::SchedulingStrategy::Default)
            && self.args.iter().all(|a| matches!(a, TaskArg::Value(_)))
    }

    /// Whether another attempt is allowed after `attempt` failed.
    pub(crate) fn may_retry(&self) -> bool {
        self.max_retries < 0 || (self.attempt as i64) < self.max_retries as i64
    }
}

#[cfg(test)]
impl TaskSpec {
    /// A plain sync task needing `resources`, of a fixed job, owned by the process at `owner`:
    /// what unit tests of placement and leasing submit.
    pub(crate) fn for_test(
        resources: crate::resources::ResourceSet,
        strategy: crate::placement::SchedulingStrategy,
        owner: std::net::SocketAddr,
    ) -> TaskSpec {
        use crate::ids::{JobId, NodeId, WorkerId};
        let task_id = TaskId::fresh();
        TaskSpec {
            task_id,
            job_id: JobId(1 << 16),
            parent: None,
            function: FunctionRef {
                id: 1,
                path: Cow::Borrowed("t::f"),
            },
            args: Vec::new(),
            return_id: ObjectId::for_return(task_id, 0),
            resources,
            strategy,
            max_retries: 0,
            retry_exceptions: false,
            attempt: 0,
            owner: OwnerAddress {
                worker: WorkerId(1 << 16),
                node: NodeId(1 << 16),
                addr: owner,
            },
            kind: TaskKind::Normal { is_async: false },
            pinned: Vec::new(),
            group_bundles: None,
            env: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn an_env_key_depends_on_the_pairs_not_their_order() {
        let a = TaskEnv::overlay(None, &pairs(&[("A", "1"), ("B", "2")])).unwrap();
        let b = TaskEnv::overlay(None, &pairs(&[("B", "2"), ("A", "1")])).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.vars, pairs(&[("A", "1"), ("B", "2")]));
        let c = TaskEnv::overlay(None, &pairs(&[("A", "1"), ("B", "3")])).unwrap();
        assert_ne!(a.key, c.key);
        // The separator keeps name and value apart: A=B1 is not AB=1.
        let d = TaskEnv::overlay(None, &pairs(&[("A", "B1")])).unwrap();
        let e = TaskEnv::overlay(None, &pairs(&[("AB", "1")])).unwrap();
        assert_ne!(d.key, e.key);
        assert!(TaskEnv::overlay(None, &[]).is_none());
    }

    #[test]
    fn own_variables_win_over_inherited_ones_and_later_over_earlier() {
        let parent = TaskEnv::overlay(None, &pairs(&[("A", "parent"), ("P", "1")])).unwrap();
        let child = TaskEnv::overlay(
            Some(&parent),
            &pairs(&[("A", "x"), ("C", "2"), ("A", "child")]),
        )
        .unwrap();
        assert_eq!(child.vars, pairs(&[("A", "child"), ("C", "2"), ("P", "1")]));
        // Nothing of its own: the parent's, with the same key (the same worker process).
        assert_eq!(TaskEnv::overlay(Some(&parent), &[]).unwrap(), parent);
    }

    #[test]
    fn an_env_survives_the_trip_through_a_worker_environment() {
        let env = TaskEnv::overlay(None, &pairs(&[("A", "1 = \"two\""), ("EMPTY", "")])).unwrap();
        assert_eq!(TaskEnv::decode(&env.encode()).unwrap(), Some(env));
        assert!(TaskEnv::decode("not json").is_err());
    }
}
