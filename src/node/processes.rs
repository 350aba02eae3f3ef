//! A node's workers, by job and environment: where each job's tasks and actors run on this
//! node.
//!
//! A job's worker is a process that registered with the raylet ([`RegisterWorker`]): a worker
//! process this node started from the job's own executable (fetched from the GCS by hash and
//! cached on disk, started in worker mode — in the job's working directory, unpacked here from
//! its package when the driver uploaded one — watched until it exits), or a process that runs the
//! job's work itself (an embedded runtime is its own node's worker). Work admitted before a
//! job's worker is up waits here, in order.
//!
//! Tasks and actors with environment variables of their own ([`TaskEnv`]) run in a worker
//! process of their job started with the job's variables and theirs on top, one per distinct
//! environment ([`WorkerKey`]), reused by later work with the same one (Ray's worker pool keys
//! workers by runtime environment). Such a process ends with its job like the job's own.
//!
//! [`TaskEnv`]: crate::protocol::task::TaskEnv
//!
//! [`RegisterWorker`]: crate::protocol::raylet::RegisterWorker

use crate::error::Error;
use crate::ids::{ActorId, JobId, NodeId};
use crate::node::output::{self, Destination};
use crate::protocol::gcs::{GetBinary, GetJob};
use crate::protocol::owner::NodeDied;
use crate::protocol::raylet::WorkerSummary;
use crate::protocol::svc;
use crate::protocol::task::{TaskEnv, WorkerKey};
use crate::protocol::worker::{Launch, StopActor};
use crate::system::binaries::BinaryCache;
use crate::system::packages::WorkingDirs;
use crate::transport::net::{Net, Target};
use crate::transport::Token;
use actix::prelude::*;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

/// Environment variables that put a process into worker mode.
pub(crate) mod env {
    /// Set (to "1") in every worker process.
    pub(crate) const WORKER: &str = "LUMEN_WORKER";
    /// The node's raylet address.
    pub(crate) const NODE: &str = "LUMEN_WORKER_NODE";
    /// The node's id.
    pub(crate) const NODE_ID: &str = "LUMEN_WORKER_NODE_ID";
    /// The GCS address.
    pub(crate) const GCS: &str = "LUMEN_WORKER_GCS";
    /// The job the worker serves.
    pub(crate) const JOB: &str = "LUMEN_WORKER_JOB";
    /// The job's namespace.
    pub(crate) const NAMESPACE: &str = "LUMEN_WORKER_NAMESPACE";
    /// CPUs of the node (sizes the worker's thread pool).
    pub(crate) const CPUS: &str = "LUMEN_WORKER_CPUS";
    /// The cluster token.
    pub(crate) const TOKEN: &str = "LUMEN_TOKEN";
    /// The node's object-store memory: the cap of the worker's store.
    pub(crate) const STORE_MEMORY: &str = "LUMEN_WORKER_STORE_MEMORY";
    /// The node's spill folder.
    pub(crate) const SPILL_DIR: &str = "LUMEN_WORKER_SPILL_DIR";
    /// The worker's environment beyond its job's, when it was started for one
    /// ([`TaskEnv::encode`](crate::protocol::task::TaskEnv::encode)).
    pub(crate) const RUNTIME_ENV: &str = "LUMEN_WORKER_RUNTIME_ENV";
}

/// A job's worker process exited.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct WorkerExited {
    pub(crate) key: WorkerKey,
    pub(crate) pid: u32,
    pub(crate) status: String,
}

/// A job's worker process could not be started.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct WorkerStartFailed {
    pub(crate) key: WorkerKey,
    pub(crate) error: Error,
}

/// How a node starts worker processes.
#[derive(Clone, Debug)]
pub(crate) struct WorkerSettings {
    pub(crate) token: Token,
    pub(crate) node_id: NodeId,
    pub(crate) cpus: usize,
    pub(crate) binaries: BinaryCache,
    /// Where jobs' working-directory packages are unpacked, one folder per hash.
    pub(crate) working_dirs: WorkingDirs,
    /// Where to keep what worker processes print (see `node::output`).
    pub(crate) log_dir: Option<PathBuf>,
    /// The limits of each worker process's object store.
    pub(crate) store: crate::config::StoreLimits,
}

enum JobWorker {
    /// A worker process being started; what it will run waits here.
    Starting {
        queue: Vec<Launch>,
        pid: Arc<AtomicU32>,
    },
    /// The job's worker: its process, and the pid of it if this node started it.
    Ready { addr: SocketAddr, pid: Option<u32> },
}

impl JobWorker {
    /// The pid of a worker process this node started.
    fn child_pid(&self) -> Option<u32> {
        match self {
            JobWorker::Starting { pid, .. } => Some(pid.load(Ordering::Acquire)).filter(|p| *p > 0),
            JobWorker::Ready { pid, .. } => *pid,
        }
    }
}

/// Where a launch went.
pub(crate) enum Sent {
    /// To the job's worker, or queued for it while it starts.
    Queued,
    /// This node has no worker for the job and cannot start one.
    NoWorker(Box<Launch>, Error),
}

/// The workers of a node, by job and environment.
pub(crate) struct JobWorkers {
    net: Arc<Net>,
    /// How to start worker processes; `None`: jobs bring their own worker.
    spawn: Option<WorkerSettings>,
    jobs: HashMap<WorkerKey, JobWorker>,
    /// For each job whose worker process this node started and whose output goes to its
    /// driver: set when the job ends (its lines then stay here).
    driver_gone: HashMap<JobId, Arc<AtomicBool>>,
}

fn kill_pid(pid: u32) {
    if pid > 0 {
        // SAFETY: kill(2) has no memory-safety preconditions; pid is a child this node started.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGKILL);
        }
    }
}

impl JobWorkers {
    pub(crate) fn new(net: Arc<Net>, spawn: Option<WorkerSettings>) -> Self {
        JobWorkers {
            net,
            spawn,
            jobs: HashMap::new(),
            driver_gone: HashMap::new(),
        }
    }

    fn worker(&self, addr: SocketAddr) -> Target<svc::Worker> {
        self.net.target(addr)
    }

    /// Sends admitted work to its job's worker, starting a worker process if needed.
    pub(crate) fn launch(
        &mut self,
        launch: Launch,
        gcs: &Target<svc::Gcs>,
        raylet: Recipient<WorkerEvent>,
    ) -> Sent {
        let key = launch.spec.worker_key();
        let job = key.0;
        match self.jobs.get_mut(&key) {
            Some(JobWorker::Ready { addr, .. }) => {
                let addr = *addr;
                self.worker(addr).do_send(launch);
                Sent::Queued
            }
            Some(JobWorker::Starting { queue, .. }) => {
                queue.push(launch);
                Sent::Queued
            }
            None => {
                let Some(settings) = self.spawn.clone() else {
                    let e = match key.1 {
                        None => Error::invalid(format!(
                            "this node has no worker for job {job} and starts no worker processes"
                        )),
                        Some(_) => Error::invalid(format!(
                            "this node starts no worker processes, so it cannot run work of job \
                             {job} with environment variables of its own (.env)"
                        )),
                    };
                    return Sent::NoWorker(Box::new(launch), e);
                };
                let task_env = launch.spec.env.clone();
                let pid = Arc::new(AtomicU32::new(0));
                self.jobs.insert(
                    key,
                    JobWorker::Starting {
                        queue: vec![launch],
                        pid: pid.clone(),
                    },
                );
                let (gcs, node, net) = (gcs.clone(), self.net.addr(), self.net.clone());
                let gone = self.driver_gone.entry(job).or_default().clone();
                self.net.runtime().spawn(async move {
                    match spawn_worker(&settings, node, job, task_env.as_deref(), &gcs).await {
                        Ok((mut child, driver)) => {
                            let id = child.id().unwrap_or(0);
                            pid.store(id, Ordering::Release);
                            if let Some(driver) = driver {
                                let to = Destination {
                                    net,
                                    driver,
                                    node,
                                    pid: id,
                                    driver_gone: gone,
                                    log_dir: settings.log_dir.clone(),
                                };
                                if let Some(out) = child.stdout.take() {
                                    tokio::spawn(output::forward(out, false, to.clone()));
                                }
                                if let Some(err) = child.stderr.take() {
                                    tokio::spawn(output::forward(err, true, to));
                                }
                            }
                            let status = match child.wait().await {
                                Ok(s) => s.to_string(),
                                Err(e) => format!("could not be waited for: {e}"),
                            };
                            let _ = raylet.try_send(WorkerEvent::Exited(WorkerExited {
                                key,
                                pid: id,
                                status,
                            }));
                        }
                        Err(error) => {
                            let _ = raylet.try_send(WorkerEvent::StartFailed(WorkerStartFailed {
                                key,
                                error,
                            }));
                        }
                    }
                });
                Sent::Queued
            }
        }
    }

    /// The worker `key` is up in the process at `addr`: send it what waited.
    pub(crate) fn registered(&mut self, key: WorkerKey, addr: SocketAddr, pid: u32) {
        let (queued, child) = match self.jobs.remove(&key) {
            Some(JobWorker::Starting { queue, pid }) => (queue, Some(pid.load(Ordering::Acquire))),
            Some(JobWorker::Ready { pid, .. }) => (Vec::new(), pid),
            None => (Vec::new(), None),
        };
        // Only a process this node started is ever signalled.
        let pid = child.filter(|c| *c == pid && pid > 0);
        tracing::info!(job = %key.0, env = ?key.1, %addr, pid, "worker registered");
        let target = self.worker(addr);
        for launch in queued {
            target.do_send(launch);
        }
        self.jobs.insert(key, JobWorker::Ready { addr, pid });
    }

    /// The worker `key` could not start: returns what waited for it.
    pub(crate) fn failed(&mut self, key: WorkerKey) -> Vec<Launch> {
        match self.jobs.remove(&key) {
            Some(JobWorker::Starting { queue, .. }) => {
                self.forget_driver_unless_used(key.0);
                queue
            }
            Some(other) => {
                self.jobs.insert(key, other);
                Vec::new()
            }
            None => Vec::new(),
        }
    }

    /// A worker process exited: whether it was the current one for `key`.
    pub(crate) fn exited(&mut self, key: WorkerKey, pid: u32) -> bool {
        match self.jobs.get(&key) {
            Some(w) if w.child_pid().is_none_or(|p| p == pid) => {
                self.jobs.remove(&key);
                self.forget_driver_unless_used(key.0);
                true
            }
            _ => false,
        }
    }

    /// Drops the job's output flag once none of its workers is left here.
    fn forget_driver_unless_used(&mut self, job: JobId) {
        if !self.jobs.keys().any(|(j, _)| *j == job) {
            self.driver_gone.remove(&job);
        }
    }

    /// Each job's worker here: where it listens, its process, whether it registered.
    pub(crate) fn summaries(&self) -> Vec<WorkerSummary> {
        let mut rows: Vec<WorkerSummary> = self
            .jobs
            .iter()
            .map(|((job, _), w)| match w {
                JobWorker::Starting { .. } => WorkerSummary {
                    job_id: *job,
                    address: None,
                    pid: w.child_pid(),
                    alive: false,
                },
                JobWorker::Ready { addr, pid } => WorkerSummary {
                    job_id: *job,
                    address: Some(*addr),
                    pid: *pid,
                    alive: true,
                },
            })
            .collect();
        rows.sort_by_key(|r| r.job_id);
        rows
    }

    /// Stops an actor in the worker `key`.
    pub(crate) fn stop_actor(&mut self, key: WorkerKey, actor_id: ActorId) {
        if let Some(JobWorker::Ready { addr, .. }) = self.jobs.get(&key) {
            self.worker(*addr).do_send(StopActor { actor_id });
        }
    }

    /// Passes a node death notice to every worker here (they own tasks too).
    pub(crate) fn broadcast(&self, msg: &NodeDied) {
        for w in self.jobs.values() {
            if let JobWorker::Ready { addr, .. } = w {
                self.net.target::<svc::Owner>(*addr).do_send(msg.clone());
            }
        }
    }

    /// The job ended: what its worker process prints from now on stays on this node.
    pub(crate) fn driver_gone(&mut self, job: JobId) {
        if let Some(gone) = self.driver_gone.remove(&job) {
            gone.store(true, Ordering::Release);
        }
    }

    /// Kills the job's worker processes (its own and those for environments) that this node
    /// started (their exits are reported as usual).
    pub(crate) fn kill(&mut self, job: JobId) {
        for ((j, env), w) in &self.jobs {
            if let Some(pid) = w.child_pid().filter(|_| *j == job) {
                tracing::info!(job = %job, env = ?env, pid, "stopping the job's worker process");
                kill_pid(pid);
            }
        }
    }

    /// The worker in the process at `addr` is gone: kill it if this node started it, and
    /// return its key (its exit is then reported as usual; a worker this node did not start is
    /// forgotten here and reported by the caller).
    pub(crate) fn lost(&mut self, addr: SocketAddr) -> Option<(WorkerKey, bool)> {
        let key = self.jobs.iter().find_map(|(key, w)| match w {
            JobWorker::Ready { addr: a, .. } if *a == addr => Some(*key),
            _ => None,
        })?;
        match self.jobs.get(&key).and_then(JobWorker::child_pid) {
            Some(pid) => {
                kill_pid(pid);
                Some((key, true))
            }
            None => {
                self.jobs.remove(&key);
                Some((key, false))
            }
        }
    }

    /// Kills every worker process this node started (the node is stopping).
    pub(crate) fn kill_all(&mut self) {
        for w in self.jobs.values() {
            if let Some(pid) = w.child_pid() {
                kill_pid(pid);
            }
        }
    }
}

impl Drop for JobWorkers {
    fn drop(&mut self) {
        self.kill_all();
    }
}

/// What the process watcher tells the raylet.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) enum WorkerEvent {
    Exited(WorkerExited),
    StartFailed(WorkerStartFailed),
}

/// Finds the job's executable (cached, else fetched from the GCS) and starts it in worker mode;
/// returns it with the job's driver when the process's output goes there (its stdout and stderr
/// are then piped, for [`output::forward`]).
async fn spawn_worker(
    settings: &WorkerSettings,
    node: SocketAddr,
    job: JobId,
    task_env: Option<&TaskEnv>,
    gcs: &Target<svc::Gcs>,
) -> Result<(tokio::process::Child, Option<SocketAddr>), Error> {
    let info = gcs.send(GetJob { job_id: job }).await??;
    let exe = info.exe.ok_or_else(|| {
        Error::invalid(format!(
            "job {job} registered no executable, so this node cannot run its code"
        ))
    })?;
    // Checked against its hash before every start: the file on disk may have been changed.
    let path: PathBuf = if settings.binaries.verified(&exe.hash)? {
        settings.binaries.path(&exe.hash)
    } else {
        let data = gcs
            .send(GetBinary {
                hash: exe.hash.clone(),
            })
            .await??;
        settings.binaries.put(&exe.hash, &data)?;
        settings.binaries.path(&exe.hash)
    };
    let mut cmd = tokio::process::Command::new(&path);
    cmd.arg0(&exe.name)
        .env(env::WORKER, "1")
        .env(env::NODE, node.to_string())
        .env(env::NODE_ID, settings.node_id.to_string())
        .env(env::GCS, gcs.process().to_string())
        .env(env::JOB, job.to_string())
        .env(env::NAMESPACE, &info.namespace)
        .env(env::CPUS, settings.cpus.to_string())
        .env(env::TOKEN, settings.token.to_hex())
        .env(env::STORE_MEMORY, settings.store.capacity.to_string())
        .env_remove("LUMEN_ADDRESS")
        .envs(info.env.iter().map(|(k, v)| (k, v)))
        .stdin(std::process::Stdio::null());
    if let Some(own) = task_env {
        // The task's variables over the job's; the worker learns them too, for its children.
        cmd.envs(own.vars.iter().map(|(k, v)| (k, v)))
            .env(env::RUNTIME_ENV, own.encode());
    }
    if let Some(dir) = &settings.store.spill_dir {
        cmd.env(env::SPILL_DIR, dir);
    }
    match (&info.working_dir_package, &info.working_dir) {
        // The uploaded directory, unpacked here once per hash.
        (Some(hash), _) => {
            let dir = match settings.working_dirs.path(hash) {
                Some(dir) if dir.is_dir() => dir,
                _ => {
                    let data = gcs.send(GetBinary { hash: hash.clone() }).await??;
                    let (dirs, hash) = (settings.working_dirs.clone(), hash.clone());
                    tokio::task::spawn_blocking(move || dirs.unpack(&hash, &data))
                        .await
                        .map_err(|e| {
                            Error::invalid(format!("unpacking the working directory failed: {e}"))
                        })??
                }
            };
            cmd.current_dir(dir);
        }
        (None, Some(dir)) if dir.is_dir() => {
            cmd.current_dir(dir);
        }
        (None, Some(dir)) => tracing::info!(job = %job, dir = %dir.display(),
            "the driver's working directory is not on this node: the worker starts in the node's"),
        (None, None) => {}
    }
    if info.log_to_driver {
        cmd.env(crate::protocol::output::ANNOUNCE_ENV, "1")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
    }
    #[cfg(target_os = "linux")]
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    tracing::info!(job = %job, env = ?task_env.map(|e| e.key), exe = %path.display(),
        "starting a worker process");
    let child = cmd.spawn().map_err(|e| {
        Error::invalid(format!(
            "cannot start the worker process {}: {}",
            path.display(),
            crate::error::describe_io(&e)
        ))
    })?;
    Ok((child, info.log_to_driver.then_some(info.driver)))
}
