//! The one builder of every process: an embedded runtime, a driver, a worker process, a
//! `lumen start` node and a test cluster's node are all assembled here, from the same
//! components, by saying which of them this process runs.
//!
//! A process has one switchboard ([`Net`]), with or without a QUIC endpoint; a tokio runtime
//! (its event loop: the endpoint, async tasks and actors); and an actix system thread on which
//! each component gets its own arbiter: the GCS, a raylet (with the worker pool, when the process
//! has both), store shards, a worker pool. The core
//! worker (the [`Runtime`]: owner of objects, submitter of tasks) sits on top when the process
//! runs user code. Which components a process runs is the only difference between the modes:
//!
//! | mode | endpoint | GCS | raylet | pool | core |
//! |---|---|---|---|---|---|
//! | embedded (`lumen::init()`) | – | ✓ | ✓ (its own pool is its worker) | ✓ | ✓ |
//! | driver (`LUMEN_ADDRESS`) | ✓ | – | – | – | ✓ |
//! | worker process | ✓ | – | – | ✓ | ✓ |
//! | head node | ✓ | ✓ | ✓ (starts worker processes) | – | – |
//! | other node | ✓ | – | ✓ (starts worker processes) | – | – |

use crate::actors::host::HostSite;
use crate::config::StoreLimits;
use crate::error::{Error, Result};
use crate::ids::{JobId, NodeId, WorkerId};
use crate::node::processes::WorkerSettings;
use crate::node::raylet::{Raylet, RayletSettings};
use crate::objects::ownership::RefTable;
use crate::objects::store::StoreClient;
use crate::protocol::gcs::GetNodes;
use crate::protocol::raylet::GetResources;
use crate::protocol::svc;
use crate::resources::ResourceSet;
use crate::system::binaries::BinaryCache;
use crate::system::gcs::{Gcs, Settings as GcsSettings};
use crate::transport::net::Net;
use crate::transport::TransportConfig;
use crate::worker::owner;
use crate::worker::pool::WorkerPool;
use crate::worker::runtime::{Core, Runtime, CLOSE_WAIT};
use actix::prelude::*;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// The raylet a process runs.
pub(crate) struct RayletPart {
    pub(crate) node_id: NodeId,
    pub(crate) total: ResourceSet,
    pub(crate) heartbeat: Duration,
    /// How it starts worker processes (`None`: jobs bring their own worker, as an embedded
    /// runtime does).
    pub(crate) spawn: Option<WorkerSettings>,
}

/// Which components a process runs (see the module docs).
pub(crate) struct Builder {
    /// Thread names start with this.
    pub(crate) name: &'static str,
    /// Threads of the event loop.
    pub(crate) threads: usize,
    /// The QUIC endpoint, if the process talks to others.
    pub(crate) endpoint: Option<TransportConfig>,
    /// Certificates to expect at given addresses.
    pub(crate) pins: Vec<(SocketAddr, [u8; 32])>,
    /// Run the GCS here, with these settings (and executables kept here, if given)...
    pub(crate) gcs: Option<(GcsSettings, Option<BinaryCache>)>,
    /// ...or use the one at this address.
    pub(crate) gcs_at: Option<SocketAddr>,
    pub(crate) raylet: Option<RayletPart>,
    /// The node this process is on when it runs no raylet itself, and its raylet's process.
    pub(crate) node: Option<(NodeId, SocketAddr)>,
    /// Run tasks and actors here, with this many CPUs to size the thread pool.
    pub(crate) pool: Option<usize>,
    /// Keep objects here, within these limits (a process that owns objects: it will run a core
    /// worker).
    pub(crate) store: Option<StoreLimits>,
}

/// An assembled process: what runs, and how to stop it.
pub(crate) struct Assembly {
    pub(crate) net: Arc<Net>,
    pub(crate) gcs: SocketAddr,
    /// The node this process is on and its raylet's process, if it is on one.
    pub(crate) node: Option<(NodeId, SocketAddr)>,
    store: Option<StoreClient>,
    parts: Option<Parts>,
}

struct Parts {
    system: actix::System,
    thread: JoinHandle<()>,
    tokio: tokio::runtime::Runtime,
}

/// The machine's cores.
pub(crate) fn cores() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

impl Builder {
    /// A process that runs nothing yet.
    pub(crate) fn new(name: &'static str, threads: usize) -> Self {
        Builder {
            name,
            threads,
            endpoint: None,
            pins: Vec::new(),
            gcs: None,
            gcs_at: None,
            raylet: None,
            node: None,
            pool: None,
            store: None,
        }
    }

    /// Starts every component; returns once each has started (a raylet has registered its
    /// node, a pool can take work).
    pub(crate) fn build(self) -> Result<Assembly> {
        // Before any task can run: task panics carry where they happened.
        crate::supervise::install();
        let tokio = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(self.threads.max(1))
            .thread_name(format!("{}-async", self.name))
            .enable_all()
            .build()
            .map_err(|e| Error::invalid(format!("cannot start an event loop: {e}")))?;
        let net = match self.endpoint {
            Some(config) => {
                let bound = {
                    let _guard = tokio.enter();
                    Net::bind(config)
                };
                match bound {
                    Ok(net) => net,
                    Err(e) => {
                        // Not dropped: dropping a runtime in async code panics.
                        tokio.shutdown_background();
                        return Err(e);
                    }
                }
            }
            None => Net::in_process(tokio.handle().clone()),
        };
        for (addr, fp) in &self.pins {
            net.pin(*addr, *fp);
        }
        let stop_early = |net: &Arc<Net>, tokio: tokio::runtime::Runtime| {
            net.close();
            tokio.shutdown_background();
        };
        let gcs = match (&self.gcs, self.gcs_at) {
            (Some(_), _) => net.addr(),
            (None, Some(at)) => at,
            (None, None) => {
                stop_early(&net, tokio);
                return Err(Error::invalid(
                    "a process needs a GCS: its own, or the address of one",
                ));
            }
        };
        let node = match (&self.raylet, self.node) {
            (Some(r), _) => Some((r.node_id, net.addr())),
            (None, node) => node,
        };
        let store = self.store.map(|limits| (cores().clamp(1, 8), limits));
        if self.pool.is_some() && node.is_none() {
            stop_early(&net, tokio);
            return Err(Error::invalid(
                "a process that runs tasks needs a raylet: its own, or its node's",
            ));
        }
        if self.raylet.is_some() {
            // What the raylet and the work in this process saw of tasks goes to the GCS.
            crate::events::spawn_reporter(tokio.handle(), net.target(gcs));
        }
        let executor = tokio.handle().clone();
        let n = net.clone();
        let (gcs_part, raylet_part, pool) = (self.gcs, self.raylet, self.pool);
        let (tx, rx) = std::sync::mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name(format!("{}-system", self.name))
            .spawn(move || {
                let system = actix::System::new();
                system.block_on(async move {
                    let started = start_components(
                        &n,
                        gcs,
                        gcs_part,
                        raylet_part,
                        node,
                        pool,
                        store,
                        executor,
                    )
                    .await;
                    let _ = tx.send((started, actix::System::current()));
                });
                system.run().ok();
            });
        let thread = match spawned {
            Ok(thread) => thread,
            Err(e) => {
                stop_early(&net, tokio);
                return Err(Error::invalid(format!(
                    "cannot start lumen's system thread: {}",
                    crate::error::describe_io(&e)
                )));
            }
        };
        let Ok((started, system)) = rx.recv() else {
            let _ = thread.join();
            stop_early(&net, tokio);
            return Err(Error::shutdown("starting lumen's components"));
        };
        let mut assembly = Assembly {
            net: net.clone(),
            gcs,
            node,
            store: None,
            parts: Some(Parts {
                system,
                thread,
                tokio,
            }),
        };
        match started {
            Ok(store) => assembly.store = store,
            Err(e) => {
                assembly.stop();
                return Err(e);
            }
        }
        Ok(assembly)
    }
}

/// Starts the components on the system thread; returns the store of the core worker (if any).
#[allow(clippy::too_many_arguments)]
async fn start_components(
    net: &Arc<Net>,
    gcs: SocketAddr,
    gcs_part: Option<(GcsSettings, Option<BinaryCache>)>,
    raylet_part: Option<RayletPart>,
    node: Option<(NodeId, SocketAddr)>,
    pool: Option<usize>,
    store: Option<(usize, StoreLimits)>,
    executor: tokio::runtime::Handle,
) -> Result<Option<StoreClient>> {
    let gcs_addr = match gcs_part {
        Some((settings, binaries)) => Some(Gcs::start(
            net,
            settings,
            binaries,
            &Arbiter::new().handle(),
        )?),
        None => None,
    };
    // The raylet's own thread, when it runs here: the worker pool shares it, so a task's launch
    // and its completion cost no thread wake-up between the two.
    let mut raylet_arbiter = None;
    if let Some(part) = raylet_part {
        let arbiter = Arbiter::new().handle();
        raylet_arbiter = Some(arbiter.clone());
        let raylet = Raylet::start(
            net,
            RayletSettings {
                node_id: part.node_id,
                total: part.total,
                gcs,
                heartbeat: part.heartbeat,
                spawn: part.spawn,
            },
            &arbiter,
        )?;
        // The raylet registers its node as it starts: a round trip through it, then one
        // through the GCS (when it is here), orders after that.
        let _ = raylet.send(GetResources).await;
        if let Some(g) = &gcs_addr {
            let _ = g.send(GetNodes).await;
        }
    }
    if let (Some(cpus), Some((node, raylet))) = (pool, node) {
        let site = HostSite {
            node,
            net: net.clone(),
            raylet: net.target(raylet),
            gcs: net.target(gcs),
            executor,
        };
        let arbiter = raylet_arbiter.unwrap_or_else(|| Arbiter::new().handle());
        WorkerPool::start(net, site, cpus, &arbiter)?;
    }
    Ok(store.map(|(shards, limits)| StoreClient::start(shards, limits, Arc::downgrade(net))))
}

impl Assembly {
    /// Starts the core worker of job `job_id` in this process (it must keep a store and be on a
    /// node) and its owner handlers.
    pub(crate) fn start_core(&self, job_id: JobId, namespace: String) -> Result<Arc<Runtime>> {
        let (Some(store), Some((node_id, raylet))) = (self.store.clone(), self.node) else {
            return Err(Error::invalid(
                "a core worker needs a store and a node: build the process with them",
            ));
        };
        let net = &self.net;
        let refs = Arc::new(RefTable::new(
            store,
            net.clone(),
            net.target::<svc::Gcs>(self.gcs),
            node_id,
        ));
        let rt = Runtime::new(Core {
            job_id,
            node_id,
            worker_id: WorkerId::fresh(),
            namespace,
            net: net.clone(),
            gcs: self.gcs,
            raylet,
            refs,
            executor: self.handle(),
        });
        owner::serve(net, &rt)?;
        if self.node.is_none_or(|(_, raylet)| raylet != net.addr()) {
            // A process with its own raylet reports already (see `build`).
            crate::events::spawn_reporter(&self.handle(), net.target(self.gcs));
        }
        Ok(rt)
    }

    /// The event loop.
    pub(crate) fn handle(&self) -> tokio::runtime::Handle {
        match &self.parts {
            Some(p) => p.tokio.handle().clone(),
            None => self.net.runtime().clone(),
        }
    }

    /// Runs `fut` to completion on this thread, in the event loop's context (its timers and IO
    /// are driven by the loop's own threads), blocking this thread. Unlike tokio's
    /// `Runtime::block_on`, it works on a thread that already runs a tokio runtime (it may then
    /// stall that runtime while it waits: it is for starting and stopping lumen).
    pub(crate) fn block_on<F: std::future::Future>(&self, fut: F) -> Result<F::Output> {
        match &self.parts {
            Some(p) => {
                let _context = p.tokio.enter();
                Ok(crate::spin::wait_here(fut))
            }
            None => Err(Error::shutdown("using a stopped process")),
        }
    }

    /// Stops everything: the endpoint closes (peers see this process leave), the components
    /// stop, the threads end.
    pub(crate) fn stop(&mut self) {
        if let Some(Parts {
            system,
            thread,
            tokio,
        }) = self.parts.take()
        {
            self.net.close();
            let net = self.net.clone();
            {
                let _context = tokio.enter();
                crate::spin::wait_here(async move { net.wait_closed(CLOSE_WAIT).await });
            }
            system.stop();
            let _ = thread.join();
            if tokio::runtime::Handle::try_current().is_ok() {
                // On a thread of a tokio runtime (lumen stopped from async code), which must not
                // block to wait for the loop's threads (tokio panics): they end on their own.
                tokio.shutdown_background();
            } else {
                tokio.shutdown_timeout(Duration::from_secs(1));
            }
        }
    }

    /// Hands the stopping of this process to its runtime (it then owns the threads).
    pub(crate) fn into_teardown(mut self) -> Box<dyn FnOnce() + Send> {
        let parts = self.parts.take();
        let net = self.net.clone();
        Box::new(move || {
            let mut a = Assembly {
                net,
                gcs: self.gcs,
                node: self.node,
                store: None,
                parts,
            };
            a.stop();
        })
    }
}

impl Drop for Assembly {
    fn drop(&mut self) {
        self.stop();
    }
}
