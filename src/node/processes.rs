//! A node's worker processes: one per job, started from the job's own executable (fetched from
//! the GCS by hash and cached on disk), in worker mode, registered back over QUIC, and watched
//! until they exit. Work admitted before a job's worker is up waits here, in order.

use crate::error::Error;
use crate::ids::{ActorId, JobId, NodeId};
use crate::node::pool::{Launch, StopActor, WorkerPool};
use crate::node::raylet::Raylet;
use crate::objects::owner::NodeDied;
use crate::system::binaries::BinaryCache;
use crate::system::gcs::{Gcs, GetBinary, GetJob};
use crate::transport::wire::{Body, Remote, Target};
use crate::transport::{Token, Transport};
use actix::prelude::*;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
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
}

/// A job's worker process exited.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct WorkerExited {
    pub(crate) job_id: JobId,
    pub(crate) pid: u32,
    pub(crate) status: String,
}

/// A job's worker process could not be started.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct WorkerStartFailed {
    pub(crate) job_id: JobId,
    pub(crate) error: Error,
}

/// What a node passes to the worker processes it starts.
#[derive(Clone)]
pub(crate) struct WorkerSettings {
    pub(crate) net: Arc<Transport>,
    pub(crate) token: Token,
    pub(crate) gcs: SocketAddr,
    pub(crate) node_id: NodeId,
    pub(crate) cpus: usize,
    pub(crate) binaries: BinaryCache,
}

enum JobWorker {
    Starting {
        queue: Vec<Launch>,
        pid: Arc<AtomicU32>,
    },
    Ready {
        addr: SocketAddr,
        pid: u32,
    },
}

impl JobWorker {
    fn pid(&self) -> u32 {
        match self {
            JobWorker::Starting { pid, .. } => pid.load(Ordering::Acquire),
            JobWorker::Ready { pid, .. } => *pid,
        }
    }
}

/// The worker processes of a node, by job.
pub(crate) struct JobWorkers {
    settings: WorkerSettings,
    jobs: HashMap<JobId, JobWorker>,
}

fn kill_pid(pid: u32) {
    if pid > 0 {
        // SAFETY: kill(2) has no memory-safety preconditions; pid is a child we started.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGKILL);
        }
    }
}

impl JobWorkers {
    pub(crate) fn new(settings: WorkerSettings) -> Self {
        JobWorkers {
            settings,
            jobs: HashMap::new(),
        }
    }

    /// Sends admitted work to its job's worker process, starting the process if needed.
    pub(crate) fn launch(
        &mut self,
        launch: Launch,
        gcs: &Target<Gcs>,
        executor: &tokio::runtime::Handle,
        raylet: Addr<Raylet>,
    ) {
        let job = launch.spec.job_id;
        match self.jobs.get_mut(&job) {
            Some(JobWorker::Ready { addr, .. }) => {
                Target::<WorkerPool>::remote(&self.settings.net, *addr).do_send(launch)
            }
            Some(JobWorker::Starting { queue, .. }) => queue.push(launch),
            None => {
                let pid = Arc::new(AtomicU32::new(0));
                self.jobs.insert(
                    job,
                    JobWorker::Starting {
                        queue: vec![launch],
                        pid: pid.clone(),
                    },
                );
                let settings = self.settings.clone();
                let gcs = gcs.clone();
                executor.spawn(async move {
                    match spawn_worker(&settings, job, &gcs).await {
                        Ok(mut child) => {
                            let id = child.id().unwrap_or(0);
                            pid.store(id, Ordering::Release);
                            let status = match child.wait().await {
                                Ok(s) => s.to_string(),
                                Err(e) => format!("could not be waited for: {e}"),
                            };
                            raylet.do_send(WorkerExited {
                                job_id: job,
                                pid: id,
                                status,
                            });
                        }
                        Err(error) => raylet.do_send(WorkerStartFailed { job_id: job, error }),
                    }
                });
            }
        }
    }

    /// The job's worker process is up: send it what waited.
    pub(crate) fn registered(&mut self, job: JobId, addr: SocketAddr, pid: u32) {
        let queued = match self.jobs.remove(&job) {
            Some(JobWorker::Starting { queue, .. }) => queue,
            Some(JobWorker::Ready { .. }) | None => Vec::new(),
        };
        tracing::info!(job = %job, %addr, pid, "worker process registered");
        let target = Target::<WorkerPool>::remote(&self.settings.net, addr);
        for launch in queued {
            target.do_send(launch);
        }
        self.jobs.insert(job, JobWorker::Ready { addr, pid });
    }

    /// The job's worker could not start: returns what waited for it.
    pub(crate) fn failed(&mut self, job: JobId) -> Vec<Launch> {
        match self.jobs.remove(&job) {
            Some(JobWorker::Starting { queue, .. }) => queue,
            Some(other) => {
                self.jobs.insert(job, other);
                Vec::new()
            }
            None => Vec::new(),
        }
    }

    /// A worker process exited: whether it was the job's current one.
    pub(crate) fn exited(&mut self, job: JobId, pid: u32) -> bool {
        match self.jobs.get(&job) {
            Some(w) if w.pid() == pid || w.pid() == 0 => {
                self.jobs.remove(&job);
                true
            }
            _ => false,
        }
    }

    /// Stops an actor in the job's worker process.
    pub(crate) fn stop_actor(&mut self, job: JobId, actor_id: ActorId) {
        if let Some(JobWorker::Ready { addr, .. }) = self.jobs.get(&job) {
            Target::<WorkerPool>::remote(&self.settings.net, *addr).do_send(StopActor { actor_id });
        }
    }

    /// Sends a node death notice to every worker process here (they own tasks too).
    pub(crate) fn broadcast(&self, msg: &NodeDied) {
        for w in self.jobs.values() {
            if let JobWorker::Ready { addr, .. } = w {
                Remote {
                    net: self.settings.net.clone(),
                    addr: *addr,
                }
                .send_body(Body::NodeDied(msg.clone()));
            }
        }
    }

    /// Kills the job's worker process (its exit is reported as usual).
    pub(crate) fn kill(&mut self, job: JobId) {
        if let Some(w) = self.jobs.get(&job) {
            tracing::info!(job = %job, pid = w.pid(), "stopping the job's worker process");
            kill_pid(w.pid());
        }
    }

    /// Kills the worker process listening at `addr`, if it is one of ours.
    pub(crate) fn kill_at(&mut self, addr: SocketAddr) {
        for w in self.jobs.values() {
            if let JobWorker::Ready { addr: a, pid } = w {
                if *a == addr {
                    kill_pid(*pid);
                }
            }
        }
    }

    /// Kills every worker process (the node is stopping).
    pub(crate) fn kill_all(&mut self) {
        for w in self.jobs.values() {
            kill_pid(w.pid());
        }
    }
}

impl Drop for JobWorkers {
    fn drop(&mut self) {
        self.kill_all();
    }
}

/// Finds the job's executable (cached, else fetched from the GCS) and starts it in worker mode.
async fn spawn_worker(
    settings: &WorkerSettings,
    job: JobId,
    gcs: &Target<Gcs>,
) -> Result<tokio::process::Child, Error> {
    let info = gcs.send(GetJob { job_id: job }).await??;
    let exe = info.exe.ok_or_else(|| {
        Error::invalid(format!(
            "job {job} registered no executable, so this node cannot run its code"
        ))
    })?;
    let path: PathBuf = if settings.binaries.has(&exe.hash) {
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
        .env(env::NODE, settings.net.local_addr().to_string())
        .env(env::NODE_ID, settings.node_id.to_string())
        .env(env::GCS, settings.gcs.to_string())
        .env(env::JOB, job.to_string())
        .env(env::NAMESPACE, &info.namespace)
        .env(env::CPUS, settings.cpus.to_string())
        .env(env::TOKEN, settings.token.to_hex())
        .env_remove("LUMEN_ADDRESS")
        .stdin(std::process::Stdio::null());
    #[cfg(target_os = "linux")]
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    tracing::info!(job = %job, exe = %path.display(), "starting a worker process");
    cmd.spawn().map_err(|e| {
        Error::invalid(format!(
            "cannot start the worker process {}: {e}",
            path.display()
        ))
    })
}
