//! The per-process runtime: the handles and tables every API call needs, and starting and
//! stopping it in each of its three modes.
//!
//! - **Embedded** (`lumen::init()` with no address): an actix system on its own thread with the
//!   GCS, a raylet, a worker pool and the object-store shards, each on its own arbiter.
//! - **Driver** (`LUMEN_ADDRESS` / `Config::address`): this process's own QUIC endpoint and
//!   store shards, talking to a running cluster's GCS and to the head node's raylet.
//! - **Worker** (started by a node, with the worker environment variables): an endpoint, store
//!   shards and a worker pool that runs the job's tasks and actors; entered before `main` (see
//!   [`worker_entry`]), it never returns to user code.
//!
//! In each mode a tokio runtime is the event loop of async tasks, async actors and the
//! transport. The [`Runtime`] holds the components' addresses and this process's ownership
//! tables; it is published in a global so that `ObjectRef`s, handles and executors reach it
//! without threading it through user code.

use crate::actors::client::ActorClients;
use crate::api::config::Config;
use crate::error::{Error, Result};
use crate::ids::{JobId, NodeId, ObjectId, WorkerId};
use crate::node::pool::{Executors, WorkerPool};
use crate::node::processes::env;
use crate::node::raylet::{GetResources, Raylet, RegisterWorker, Runner, SubmitTask};
use crate::objects::object_ref::OwnerAddress;
use crate::objects::ownership::RefTable;
use crate::objects::store::{StoreClient, StoreShard};
use crate::system::binaries;
use crate::system::gcs::{ExeInfo, Gcs, GetNodes, PutBinary, RegisterJob};
use crate::task::TaskSpec;
use crate::transport::router::Router;
use crate::transport::wire::Target;
use crate::transport::{Token, Transport, TransportConfig};
use actix::prelude::*;
use arc_swap::ArcSwapOption;
use dashmap::DashMap;
use parking_lot::Mutex;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

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
    pub(crate) gcs: Target<Gcs>,
    pub(crate) raylet: Target<Raylet>,
    /// This process's endpoint, on a cluster.
    pub(crate) net: Option<Arc<Transport>>,
    pub(crate) store: StoreClient,
    pub(crate) refs: Arc<RefTable>,
    pub(crate) actors: ActorClients,
    /// Tasks this process owns that were submitted to a cluster, by return object: the owner
    /// keeps each spec until its result arrives (to retry it, or to unpin its arguments), with
    /// the node that queued it once a raylet reports it (to retry it if that node dies).
    pub(crate) inflight: DashMap<ObjectId, (Arc<TaskSpec>, Option<NodeId>)>,
    /// Where tasks of each kind were last queued, to send the next ones there directly.
    pub(crate) routes: Routes,
    /// Nodes this process heard died, with why (a placement report may come after the notice).
    pub(crate) dead_nodes: Mutex<std::collections::HashMap<NodeId, String>>,
    /// The event loop of async tasks and async actors.
    pub(crate) executor: tokio::runtime::Handle,
    async_rt: Mutex<Option<tokio::runtime::Runtime>>,
    system: Mutex<Option<(actix::System, JoinHandle<()>)>>,
}

/// Where this owner's tasks of each kind (their resources, under the default strategy) were
/// last queued, as their raylets reported: the next ones are sent there directly, saving the
/// hop through the driver's own raylet (Ray's owners likewise reuse the lease they were granted
/// for a scheduling class). Tasks with another strategy always go through the local raylet.
#[derive(Default)]
pub(crate) struct Routes {
    by_kind: DashMap<crate::resources::ResourceSet, (NodeId, SocketAddr)>,
}

impl Routes {
    fn routable(spec: &TaskSpec) -> bool {
        spec.is_normal() && matches!(spec.strategy, crate::placement::SchedulingStrategy::Default)
    }

    /// Where to send `spec`, if a task of its kind was queued somewhere.
    pub(crate) fn route(&self, spec: &TaskSpec) -> Option<(NodeId, SocketAddr)> {
        if !Self::routable(spec) {
            return None;
        }
        self.by_kind.get(&spec.resources).map(|r| *r)
    }

    /// A task like `spec` was queued on `node`, whose raylet is at `raylet`; whether it was
    /// recorded (only tasks that may be routed are).
    pub(crate) fn learn(&self, spec: &TaskSpec, node: NodeId, raylet: SocketAddr) -> bool {
        if !Self::routable(spec) {
            return false;
        }
        match self.by_kind.get_mut(&spec.resources) {
            Some(mut r) => *r = (node, raylet),
            None => {
                self.by_kind.insert(spec.resources.clone(), (node, raylet));
            }
        }
        true
    }

    /// A node died: nothing goes to it any more.
    pub(crate) fn forget(&self, node: NodeId) {
        self.by_kind.retain(|_, (n, _)| *n != node);
    }
}

/// What each mode hands to [`Runtime::assemble`].
struct Parts {
    job_id: JobId,
    node_id: NodeId,
    worker_id: WorkerId,
    namespace: String,
    gcs: Target<Gcs>,
    raylet: Target<Raylet>,
    net: Option<Arc<Transport>>,
    store: StoreClient,
    /// The owner table, when a component made before the runtime (the embedded raylet) shares it.
    refs: Option<Arc<RefTable>>,
    executor: tokio::runtime::Handle,
    async_rt: Option<tokio::runtime::Runtime>,
    system: (actix::System, JoinHandle<()>),
}

impl Runtime {
    fn assemble(p: Parts) -> Arc<Runtime> {
        Arc::new(Runtime {
            job_id: p.job_id,
            node_id: p.node_id,
            worker_id: p.worker_id,
            namespace: p.namespace,
            refs: p.refs.unwrap_or_else(|| {
                Arc::new(RefTable::new(p.store.clone(), p.gcs.clone(), p.net.clone()))
            }),
            gcs: p.gcs,
            raylet: p.raylet,
            net: p.net,
            actors: ActorClients::default(),
            inflight: DashMap::new(),
            routes: Routes::default(),
            dead_nodes: Mutex::new(std::collections::HashMap::new()),
            store: p.store,
            executor: p.executor,
            async_rt: Mutex::new(p.async_rt),
            system: Mutex::new(Some(p.system)),
        })
    }

    /// This process as the owner of the objects it creates.
    pub(crate) fn owner(&self) -> OwnerAddress {
        OwnerAddress {
            worker: self.worker_id,
            node: self.node_id,
            addr: self.net.as_ref().map(|n| n.local_addr()),
        }
    }

    /// Submits a task this process owns: on a cluster, straight to the node where the last task
    /// of its kind was queued (that raylet spills it to another node when it is busy), else to
    /// this process's raylet.
    pub(crate) fn submit(&self, spec: Arc<TaskSpec>) {
        let Some(net) = &self.net else {
            return self.raylet.do_send(SubmitTask { spec, hops: 0 });
        };
        match self.routes.route(&spec) {
            Some((node, raylet)) if !self.dead_nodes.lock().contains_key(&node) => {
                // Recorded with its node at once: if that node dies, the task is retried.
                self.inflight
                    .insert(spec.return_id, (spec.clone(), Some(node)));
                // As a fresh submission (no hops yet): that raylet runs the policy itself and
                // spills the task to another node if it is busy.
                Target::<Raylet>::remote(net, raylet).do_send(SubmitTask { spec, hops: 0 });
            }
            _ => {
                self.inflight.insert(spec.return_id, (spec.clone(), None));
                self.raylet.do_send(SubmitTask { spec, hops: 0 });
            }
        }
    }

    /// Runs `fut` on the event loop and waits for it: how a blocking API call (from any thread
    /// that is not an event loop's) talks to a component that may be in another process.
    pub(crate) fn block_on<F>(&self, fut: F) -> Result<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let (tx, rx) = flume::bounded(1);
        self.executor.spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx.recv()
            .map_err(|_| Error::shutdown("waiting for a lumen component"))
    }

    /// Sends a request to a component and waits for its answer, from a thread that is not an
    /// event loop's: the request is made and its answer awaited on this thread (no hop through
    /// the event loop), from a component in this process or, through the transport, another.
    pub(crate) fn request<A, M>(&self, target: &Target<A>, msg: M) -> Result<M::Result>
    where
        A: Actor + Handler<M>,
        A::Context: actix::dev::ToEnvelope<A, M>,
        M: crate::transport::wire::WireRequest,
        M::Result: serde::Serialize + serde::de::DeserializeOwned + Send + 'static,
    {
        match target {
            Target::Local(addr) => wait_here(addr.send(msg))
                .map_err(|_| Error::shutdown("sending to a lumen component")),
            // Polled here too (inside the event loop's context, which the transport's sends
            // need): the reply wakes this thread directly, with no task in between.
            Target::Remote(_) => {
                let _context = self.executor.enter();
                wait_here(target.send(msg))
            }
        }
    }

    fn stop(&self) {
        // Blocked reads waiting in the owner's table end with Error::Shutdown.
        self.refs.drop_waiters();
        if let Some(net) = &self.net {
            // Closing the connections tells the cluster this driver (and its job) is gone.
            net.close();
            let net = net.clone();
            let _ = self.block_on(async move { net.wait_closed(Duration::from_millis(500)).await });
        }
        if let Some((system, thread)) = self.system.lock().take() {
            system.stop();
            let _ = thread.join();
        }
        if let Some(rt) = self.async_rt.lock().take() {
            rt.shutdown_background();
        }
    }
}

/// How long [`wait_here`] polls before it parks the thread.
const POLL_FOR: Duration = Duration::from_micros(50);

/// Wakes a thread parked in [`wait_here`].
struct Unpark(std::thread::Thread);

impl std::task::Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// Runs `fut` to completion on this thread: polling it for a short while (a component in this
/// process answers within microseconds, and sleeping costs more than that), then parking until
/// it is woken.
pub(crate) fn wait_here<F: std::future::Future>(fut: F) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    let waker = std::task::Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    let start = std::time::Instant::now();
    loop {
        if let std::task::Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        if start.elapsed() < POLL_FOR {
            std::hint::spin_loop();
        } else {
            // A wake that came before this park makes it return at once.
            std::thread::park();
        }
    }
}

fn async_runtime(name: &str) -> Result<tokio::runtime::Runtime> {
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cpus.max(2))
        .thread_name(name)
        .enable_all()
        .build()
        .map_err(|e| Error::invalid(format!("cannot start the async executor: {e}")))
}

fn store_shards() -> Vec<Addr<StoreShard>> {
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    (0..cpus.clamp(1, 8))
        .map(|_| StoreShard::start_in_arbiter(&Arbiter::new().handle(), |_| StoreShard::default()))
        .collect()
}

/// Starts an actix system on its own thread, runs `setup` inside it, and returns its result.
fn system_thread<T: Send + 'static>(
    name: &str,
    setup: impl FnOnce() -> futures::future::BoxFuture<'static, T> + Send + 'static,
) -> Result<(T, actix::System, JoinHandle<()>)> {
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let system = actix::System::new();
            system.block_on(async move {
                let out = setup().await;
                let _ = tx.send((out, actix::System::current()));
            });
            system.run().ok();
        })
        .map_err(|e| Error::invalid(format!("cannot start the lumen system thread: {e}")))?;
    let (out, system) = rx
        .recv()
        .map_err(|_| Error::shutdown("starting lumen's components"))?;
    Ok((out, system, thread))
}

/// Publishes a runtime unless another won a race to initialize.
fn publish(rt: Arc<Runtime>) -> Result<()> {
    let prev = CURRENT.compare_and_swap(&None::<Arc<Runtime>>, Some(rt.clone()));
    if prev.is_some() {
        rt.stop();
        return Err(Error::AlreadyInitialized);
    }
    Ok(())
}

/// Starts the runtime for `config`: joins a cluster if an address is given, else embedded.
pub(crate) fn start(config: Config) -> Result<()> {
    if std::env::var_os(env::WORKER).is_some() {
        // A worker process whose constructor hook did not run: serve here instead.
        worker_main();
    }
    if is_initialized() {
        return Err(Error::AlreadyInitialized);
    }
    let address = config.address.clone().or_else(|| {
        std::env::var("LUMEN_ADDRESS")
            .ok()
            .filter(|a| !a.trim().is_empty())
    });
    match address {
        Some(addr) => start_driver(config, addr.trim()),
        None => start_embedded(config),
    }
}

fn start_embedded(config: Config) -> Result<()> {
    let resources = config.node_resources()?;
    let async_rt = async_runtime("lumen-async")?;
    let executor = async_rt.handle().clone();
    let node_id = NodeId::fresh();
    let job_id = JobId::fresh();
    let namespace = config
        .namespace
        .clone()
        .unwrap_or_else(|| format!("anonymous-{}", job_id.hex()));
    let cpus = resources
        .get(&crate::resources::Resource::Cpu)
        .whole_units() as usize;

    let exec2 = executor.clone();
    let ((gcs, raylet, store, refs), system, thread) = system_thread("lumen-system", move || {
        Box::pin(async move {
            let gcs = Gcs::start_in_arbiter(&Arbiter::new().handle(), |_| Gcs::new());
            let store = StoreClient::new(store_shards());
            let refs = Arc::new(RefTable::new(
                store.clone(),
                Target::Local(gcs.clone()),
                None,
            ));
            let (g, s, r) = (gcs.clone(), store.clone(), refs.clone());
            let raylet_addr = Raylet::start_in_arbiter(&Arbiter::new().handle(), move |ctx| {
                let exec = Executors::new(
                    node_id,
                    cpus,
                    Target::Local(ctx.address()),
                    Target::Local(g.clone()),
                    exec2.clone(),
                    None,
                );
                Raylet::new(node_id, resources, Target::Local(g), s, exec2, None)
                    .with_runner(Runner::Local(Box::new(exec)))
                    .with_owner_table(r)
            });
            // init() returns only once the node is registered: the raylet registers when it
            // starts, so a round trip through it, then one through the GCS, orders after that.
            let _ = raylet_addr.send(GetResources).await;
            let _ = gcs.send(GetNodes).await;
            (gcs, raylet_addr, store, refs)
        })
    })?;

    let gcs = Target::Local(gcs);
    let rt = Runtime::assemble(Parts {
        job_id,
        node_id,
        worker_id: WorkerId::fresh(),
        namespace: namespace.clone(),
        gcs: gcs.clone(),
        raylet: Target::Local(raylet),
        net: None,
        store,
        refs: Some(refs),
        executor,
        async_rt: Some(async_rt),
        system: (system, thread),
    });
    gcs.do_send(RegisterJob {
        job_id,
        namespace,
        driver: None,
        exe: None,
    });
    publish(rt)?;
    tracing::debug!(node = %node_id, job = %job_id, "lumen initialized (embedded)");
    Ok(())
}

/// Resolves `HOST:PORT` (or `auto`: the head started on this machine).
pub(crate) fn resolve_address(address: &str) -> Result<SocketAddr> {
    let text = if address == "auto" {
        crate::node::session::local_head().ok_or_else(|| {
            Error::connection(
                "auto",
                "no cluster is running on this machine (start one with `lumen start --head`)",
            )
        })?
    } else {
        address.to_string()
    };
    text.to_socket_addrs()
        .map_err(|e| Error::connection(&text, format!("not a HOST:PORT address: {e}")))?
        .next()
        .ok_or_else(|| Error::connection(&text, "the address resolves to nothing"))
}

/// The cluster token: given, else `LUMEN_TOKEN`, else the session folder of a local head.
pub(crate) fn find_token(given: Option<&str>, address: &str) -> Result<Token> {
    if let Some(t) = given {
        return Token::parse(t);
    }
    if let Ok(t) = std::env::var(env::TOKEN) {
        if !t.trim().is_empty() {
            return Token::parse(&t);
        }
    }
    match crate::node::session::local_token(Some(address)) {
        Some(t) => Token::parse(&t),
        None => Err(Error::connection(
            address,
            "no cluster token: set LUMEN_TOKEN (or Config::token, or --token) to the token \
             `lumen start --head` printed; on the head's machine it is found automatically",
        )),
    }
}

/// The local IP address that reaches `peer` (what this process advertises to it).
pub(crate) fn local_ip_towards(peer: SocketAddr) -> IpAddr {
    if peer.ip().is_loopback() {
        return peer.ip();
    }
    let probe = std::net::UdpSocket::bind(("0.0.0.0", 0)).and_then(|s| {
        s.connect(peer)?;
        s.local_addr()
    });
    probe.map_or(IpAddr::from([127, 0, 0, 1]), |a| a.ip())
}

/// Binds this process's endpoint, inside the tokio runtime.
fn bind_transport(
    rt: &tokio::runtime::Runtime,
    ip: IpAddr,
    token: Token,
    router: Arc<Router>,
) -> Result<Arc<Transport>> {
    let _guard = rt.enter();
    Transport::bind(TransportConfig::new(SocketAddr::new(ip, 0), token), router)
}

fn start_driver(config: Config, address: &str) -> Result<()> {
    let gcs_addr = resolve_address(address)?;
    let token = find_token(config.token.as_deref(), address)?;
    let async_rt = async_runtime("lumen-async")?;
    let executor = async_rt.handle().clone();
    let router = Arc::new(Router::new(executor.clone(), true));
    let net = bind_transport(&async_rt, local_ip_towards(gcs_addr), token, router)?;
    if let Some(fp) = crate::node::session::local_fingerprint(gcs_addr) {
        // A head started on this machine: expect exactly its certificate.
        net.pin(gcs_addr, fp);
    }
    let gcs: Target<Gcs> = Target::remote(&net, gcs_addr);
    let job_id = JobId::fresh();
    let namespace = config
        .namespace
        .clone()
        .unwrap_or_else(|| format!("anonymous-{}", job_id.hex()));
    let exe = binaries::current_exe()?;

    // First contact: a wrong token or an unreachable head fails here, with the reason.
    let contact = async_rt.block_on(async {
        let nodes = tokio::time::timeout(Duration::from_secs(15), gcs.send(GetNodes))
            .await
            .map_err(|_| Error::connection(gcs_addr, "no answer within 15 s"))??;
        let head = nodes
            .iter()
            .filter(|n| n.alive)
            .find(|n| n.address == gcs_addr.to_string())
            .or_else(|| nodes.iter().find(|n| n.alive))
            .cloned()
            .ok_or_else(|| Error::connection(gcs_addr, "the cluster has no live node"))?;
        let need = gcs
            .send(RegisterJob {
                job_id,
                namespace: namespace.clone(),
                driver: Some(net.local_addr()),
                exe: Some(ExeInfo {
                    hash: exe.1.clone(),
                    name: exe.2.clone(),
                }),
            })
            .await??;
        if need {
            let data = std::fs::read(&exe.0)
                .map_err(|e| Error::invalid(format!("cannot read {}: {e}", exe.0.display())))?;
            gcs.send(PutBinary {
                hash: exe.1.clone(),
                data: data.into(),
            })
            .await??;
        }
        Ok::<_, Error>(head)
    });
    let head = match contact {
        Ok(h) => h,
        Err(e) => {
            net.close();
            async_rt.shutdown_background();
            return Err(e);
        }
    };
    let head_addr: SocketAddr = head
        .address
        .parse()
        .map_err(|e| Error::connection(&head.address, format!("bad node address: {e}")))?;

    let (store, system, thread) = system_thread("lumen-system", || {
        Box::pin(async { StoreClient::new(store_shards()) })
    })?;
    let rt = Runtime::assemble(Parts {
        job_id,
        node_id: head.node_id,
        worker_id: WorkerId::fresh(),
        namespace,
        gcs,
        raylet: Target::remote(&net, head_addr),
        net: Some(net),
        store,
        refs: None,
        executor,
        async_rt: Some(async_rt),
        system: (system, thread),
    });
    publish(rt)?;
    tracing::info!(cluster = %gcs_addr, job = %job_id, "lumen connected to the cluster");
    Ok(())
}

fn env_var(name: &str) -> Result<String> {
    std::env::var(name).map_err(|_| {
        Error::invalid(format!(
            "worker mode needs the environment variable {name}, which the node sets"
        ))
    })
}

/// Starts this process as a job's worker: its node starts it with the worker environment.
fn start_worker() -> Result<()> {
    let node_addr: SocketAddr = env_var(env::NODE)?
        .parse()
        .map_err(|e| Error::invalid(format!("{}: {e}", env::NODE)))?;
    let gcs_addr: SocketAddr = env_var(env::GCS)?
        .parse()
        .map_err(|e| Error::invalid(format!("{}: {e}", env::GCS)))?;
    let node_id: NodeId = env_var(env::NODE_ID)?.parse()?;
    let job_id: JobId = env_var(env::JOB)?.parse()?;
    let namespace = env_var(env::NAMESPACE)?;
    let token = Token::parse(&env_var(env::TOKEN)?)?;
    let cpus: usize = env_var(env::CPUS)?.parse().unwrap_or(1);
    for v in [
        env::WORKER,
        env::NODE,
        env::GCS,
        env::NODE_ID,
        env::JOB,
        env::NAMESPACE,
        env::TOKEN,
        env::CPUS,
    ] {
        // Programs this worker starts are not workers.
        std::env::remove_var(v);
    }

    let async_rt = async_runtime("lumen-async")?;
    let executor = async_rt.handle().clone();
    let router = Arc::new(Router::new(executor.clone(), true));
    let _ = router.exit_with.set(node_addr);
    let net = bind_transport(&async_rt, node_addr.ip(), token, router.clone())?;
    let gcs: Target<Gcs> = Target::remote(&net, gcs_addr);
    let raylet: Target<Raylet> = Target::remote(&net, node_addr);
    let listen = net.local_addr();

    let (g, r, e) = (gcs.clone(), raylet.clone(), executor.clone());
    let ((store, pool, hosts), system, thread) = system_thread("lumen-worker", move || {
        Box::pin(async move {
            let store = StoreClient::new(store_shards());
            let exec = Executors::new(node_id, cpus, r, g, e, Some(listen));
            let hosts = exec.directory();
            let pool = WorkerPool::start_in_arbiter(&Arbiter::new().handle(), move |_| {
                WorkerPool::new(exec)
            });
            (store, pool, hosts)
        })
    })?;
    let _ = router.pool.set(pool);
    let _ = router.hosts.set(hosts);
    let worker_id = WorkerId::fresh();
    let rt = Runtime::assemble(Parts {
        job_id,
        node_id,
        worker_id,
        namespace,
        gcs,
        raylet: raylet.clone(),
        net: Some(net),
        store,
        refs: None,
        executor: executor.clone(),
        async_rt: None,
        system: (system, thread),
    });
    publish(rt)?;
    async_rt.block_on(async {
        raylet
            .send(RegisterWorker {
                job_id,
                worker_id,
                address: listen,
                pid: std::process::id(),
            })
            .await?
    })?;
    tracing::info!(job = %job_id, node = %node_addr, %listen, "worker process serving");
    // The runtime lives for the rest of the process.
    std::mem::forget(async_rt);
    Ok(())
}

/// Serves as a worker until the node goes away; never returns.
pub(crate) fn worker_main() -> ! {
    match start_worker() {
        Ok(()) => loop {
            std::thread::park();
        },
        Err(e) => {
            eprintln!("lumen worker process: {e}");
            std::process::exit(3);
        }
    }
}

/// Runs before `main` in every program that links lumen: a process started by a node in worker
/// mode serves tasks here and never reaches `main`, whatever kind of binary it is (a program, an
/// example, a test or bench harness). Without the worker environment it returns at once.
#[ctor::ctor]
fn worker_entry() {
    if std::env::var_os(env::WORKER).is_some() {
        worker_main();
    }
}

/// Stops the runtime, if any.
pub(crate) fn stop() {
    if let Some(rt) = CURRENT.swap(None) {
        rt.stop();
        tracing::debug!("lumen shut down");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::TaskId;
    use crate::placement::SchedulingStrategy;
    use crate::resources::{Amount, Resource, ResourceSet};
    use crate::task::{FunctionRef, TaskKind};

    fn spec(cpus: u64, strategy: SchedulingStrategy) -> TaskSpec {
        let mut resources = ResourceSet::new();
        resources.set(Resource::Cpu, Amount::units(cpus));
        let task_id = TaskId::fresh();
        TaskSpec {
            task_id,
            job_id: JobId::fresh(),
            parent: None,
            function: FunctionRef {
                id: 1,
                path: "f".into(),
            },
            args: Vec::new(),
            return_id: ObjectId::for_return(task_id, 0),
            resources,
            strategy,
            max_retries: 0,
            retry_exceptions: false,
            attempt: 0,
            owner: OwnerAddress {
                worker: WorkerId::fresh(),
                node: NodeId::fresh(),
                addr: None,
            },
            kind: TaskKind::Normal { is_async: false },
            pinned: Vec::new(),
        }
    }

    #[test]
    fn routes_are_per_kind_and_forgotten_with_their_node() {
        let routes = Routes::default();
        let one = spec(1, SchedulingStrategy::Default);
        let two = spec(2, SchedulingStrategy::Default);
        assert_eq!(routes.route(&one), None);
        let (n1, n2) = (NodeId::fresh(), NodeId::fresh());
        let (a1, a2): (SocketAddr, SocketAddr) = (
            "127.0.0.1:7001".parse().unwrap(),
            "127.0.0.1:7002".parse().unwrap(),
        );
        assert!(routes.learn(&one, n1, a1));
        assert_eq!(
            routes.route(&spec(1, SchedulingStrategy::Default)),
            Some((n1, a1))
        );
        assert_eq!(routes.route(&two), None, "another kind of task");
        assert!(routes.learn(&two, n2, a2));
        assert!(routes.learn(&one, n2, a2), "the latest placement wins");
        assert_eq!(routes.route(&one), Some((n2, a2)));
        routes.forget(n2);
        assert_eq!(routes.route(&one), None);
        assert_eq!(routes.route(&two), None);
    }

    #[test]
    fn only_default_strategy_tasks_are_routed() {
        let routes = Routes::default();
        let (n, a): (NodeId, SocketAddr) = (NodeId::fresh(), "127.0.0.1:7001".parse().unwrap());
        let spread = spec(1, SchedulingStrategy::Spread);
        assert!(!routes.learn(&spread, n, a));
        assert!(routes.learn(&spec(1, SchedulingStrategy::Default), n, a));
        assert_eq!(
            routes.route(&spread),
            None,
            "spread goes through the local raylet"
        );
        let pinned = spec(
            1,
            SchedulingStrategy::NodeAffinity {
                node_id: n,
                soft: false,
            },
        );
        assert_eq!(routes.route(&pinned), None);
    }
}
