//! The per-process runtime: the handles and tables every API call needs, and starting and
//! stopping the embedded cluster.
//!
//! `lumen::init()` starts an actix system on its own thread with the GCS, a raylet and the
//! object-store shards, each on its own arbiter, plus a tokio runtime that is the event loop of
//! async tasks and actors. The [`Runtime`] holds their addresses and this process's ownership
//! tables; it is published in a global so that `ObjectRef`s, handles and executors reach it
//! without threading it through user code.

use crate::actors::client::ActorClients;
use crate::api::config::Config;
use crate::error::{Error, Result};
use crate::ids::{JobId, NodeId, WorkerId};
use crate::node::raylet::{GetResources, Raylet};
use crate::objects::object_ref::OwnerAddress;
use crate::objects::ownership::RefTable;
use crate::objects::store::{StoreClient, StoreShard};
use crate::system::gcs::{Gcs, GetNodes, RegisterJob};
use actix::prelude::*;
use arc_swap::ArcSwapOption;
use parking_lot::Mutex;
use std::sync::Arc;
use std::thread::JoinHandle;

static CURRENT: ArcSwapOption<Runtime> = ArcSwapOption::const_empty();

/// Runs `f` on the current runtime, if there is one.
#[inline]
pub(crate) fn with_current<R>(f: impl FnOnce(&Arc<Runtime>) -> R) -> Option<R> {
    let guard = CURRENT.load();
    guard.as_ref().map(f)
}

/// The current runtime, or `Error::NotInitialized`.
pub(crate) fn current() -> Result<Arc<Runtime>> {
    CURRENT.load_full().ok_or(Error::NotInitialized)
}

/// Whether `lumen::init()` has run (and `shutdown()` has not).
pub(crate) fn is_initialized() -> bool {
    CURRENT.load().is_some()
}

/// The runtime of this process.
pub(crate) struct Runtime {
    pub(crate) job_id: JobId,
    pub(crate) node_id: NodeId,
    pub(crate) worker_id: WorkerId,
    pub(crate) namespace: String,
    pub(crate) gcs: Addr<Gcs>,
    pub(crate) raylet: Addr<Raylet>,
    pub(crate) store: StoreClient,
    pub(crate) refs: RefTable,
    pub(crate) actors: ActorClients,
    /// The event loop of async tasks and async actors.
    pub(crate) executor: tokio::runtime::Handle,
    async_rt: Mutex<Option<tokio::runtime::Runtime>>,
    system: Mutex<Option<(actix::System, JoinHandle<()>)>>,
}

impl Runtime {
    /// This process as the owner of the objects it creates.
    pub(crate) fn owner(&self) -> OwnerAddress {
        OwnerAddress {
            worker: self.worker_id,
            node: self.node_id,
        }
    }

    fn stop(&self) {
        // Blocked reads waiting in the owner's table end with Error::Shutdown.
        self.refs.drop_waiters();
        if let Some((system, thread)) = self.system.lock().take() {
            system.stop();
            let _ = thread.join();
        }
        if let Some(rt) = self.async_rt.lock().take() {
            rt.shutdown_background();
        }
    }
}

/// Starts the embedded cluster and publishes its runtime.
pub(crate) fn start(config: Config) -> Result<()> {
    if is_initialized() {
        return Err(Error::AlreadyInitialized);
    }
    let address = config.address.clone().or_else(|| {
        std::env::var("LUMEN_ADDRESS")
            .ok()
            .filter(|a| !a.is_empty())
    });
    if let Some(addr) = address {
        return Err(Error::Connection {
            peer: addr,
            reason: "joining a running cluster needs lumen's cluster transport, which this \
                     version does not include yet; unset LUMEN_ADDRESS (and Config::address) to \
                     run on the embedded cluster"
                .into(),
        });
    }
    let resources = config.node_resources()?;
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    let async_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cpus.max(2))
        .thread_name("lumen-async")
        .enable_all()
        .build()
        .map_err(|e| Error::invalid(format!("cannot start the async executor: {e}")))?;
    let executor = async_rt.handle().clone();

    let node_id = NodeId::fresh();
    let job_id = JobId::fresh();
    let namespace = config
        .namespace
        .clone()
        .unwrap_or_else(|| format!("anonymous-{}", job_id.hex()));
    let shards = cpus.clamp(1, 8);

    let (tx, rx) = std::sync::mpsc::channel();
    let exec2 = executor.clone();
    let thread = std::thread::Builder::new()
        .name("lumen-system".into())
        .spawn(move || {
            let system = actix::System::new();
            system.block_on(async move {
                let gcs = Gcs::start_in_arbiter(&Arbiter::new().handle(), |_| Gcs::new());
                let store = StoreClient::new(
                    (0..shards)
                        .map(|_| {
                            StoreShard::start_in_arbiter(&Arbiter::new().handle(), |_| {
                                StoreShard::default()
                            })
                        })
                        .collect(),
                );
                let (g, s) = (gcs.clone(), store.clone());
                let raylet = Raylet::start_in_arbiter(&Arbiter::new().handle(), move |_| {
                    Raylet::new(node_id, resources, g, s, exec2)
                });
                // init() returns only once the node is registered: the raylet registers when it
                // starts, so a round trip through it, then one through the GCS, orders after that.
                let _ = raylet.send(GetResources).await;
                let _ = gcs.send(GetNodes).await;
                let _ = tx.send((actix::System::current(), gcs, raylet, store));
            });
            system.run().ok();
        })
        .map_err(|e| Error::invalid(format!("cannot start the lumen system thread: {e}")))?;
    let (system, gcs, raylet, store) = rx
        .recv()
        .map_err(|_| Error::shutdown("starting the embedded cluster"))?;

    let rt = Arc::new(Runtime {
        job_id,
        node_id,
        worker_id: WorkerId::fresh(),
        namespace: namespace.clone(),
        gcs: gcs.clone(),
        raylet,
        refs: RefTable::new(store.clone(), gcs.clone()),
        actors: ActorClients::default(),
        store,
        executor,
        async_rt: Mutex::new(Some(async_rt)),
        system: Mutex::new(Some((system, thread))),
    });
    gcs.do_send(RegisterJob { job_id, namespace });
    // Publish only if nobody else won a race to initialize.
    let prev = CURRENT.compare_and_swap(&None::<Arc<Runtime>>, Some(rt.clone()));
    if prev.is_some() {
        rt.stop();
        return Err(Error::AlreadyInitialized);
    }
    tracing::debug!(node = %node_id, job = %job_id, "lumen initialized");
    Ok(())
}

/// Stops the runtime, if any.
pub(crate) fn stop() {
    if let Some(rt) = CURRENT.swap(None) {
        rt.stop();
        tracing::debug!("lumen shut down");
    }
}
