//! Starting this process's runtime in each mode, with the one [`Builder`]:
//!
//! - **embedded** (`lumen::init()` with no address): a one-node cluster in this process whose
//!   links are in-process: the GCS, a raylet and the worker pool, with this process registered
//!   as its node's worker for its job;
//! - **local cluster** (`Config::local_cluster(n)`): `n` nodes started in this process on
//!   loopback QUIC (as `lumen start` would run them; tasks run in worker processes), and a
//!   driver connected to them;
//! - **driver** (`LUMEN_ADDRESS` / `Config::address`): a core worker connected to a running
//!   cluster;
//! - **worker** (a process a node started in worker mode, before `main`): a core worker and a
//!   worker pool serving its node.

use crate::cluster::builder::{cores, Builder, RayletPart};
use crate::cluster::contact::{find_token, resolve_address};
use crate::cluster::node::{Node, NodeOptions};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::ids::{JobId, NodeId};
use crate::node::processes::env;
use crate::protocol::gcs::{ExeInfo, GetNodes, HasBinary, PutBinary, RegisterJob};
use crate::protocol::raylet::RegisterWorker;
use crate::protocol::svc;
use crate::protocol::task::TaskEnv;
use crate::resources::Resource;
use crate::system::gcs::Settings as GcsSettings;
use crate::system::{binaries, packages};
use crate::transport::{Token, TransportConfig};
use crate::worker::runtime::{self, publish, Runtime};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// How long a first contact with a cluster may take.
const CONTACT: Duration = Duration::from_secs(15);

/// How often a raylet reports to the GCS.
pub(crate) const HEARTBEAT: Duration = Duration::from_millis(200);

/// Starts the runtime for `config`: joins a cluster if an address is given, starts a local one
/// if asked, else embedded.
pub(crate) fn start(config: Config) -> Result<()> {
    if std::env::var_os(env::WORKER).is_some() {
        // A worker process whose constructor hook did not run: serve here instead.
        worker_main();
    }
    if runtime::is_initialized() {
        return Err(Error::AlreadyInitialized);
    }
    config.validate()?;
    if let Some(on) = config.spin {
        crate::spin::set_enabled(on);
    }
    let address = config.address.clone().or_else(|| {
        std::env::var("LUMEN_ADDRESS")
            .ok()
            .filter(|a| !a.trim().is_empty())
    });
    match (address, config.local_cluster) {
        (Some(_), Some(_)) => Err(Error::invalid(
            "Config::address and Config::local_cluster cannot be combined: connect to a \
             running cluster, or start a local one",
        )),
        (Some(addr), None) => {
            let package = working_dir_package(&config)?;
            start_driver(config, addr.trim(), Vec::new(), package)
        }
        (None, Some(n)) => start_local_cluster(config, n),
        (None, None) => start_embedded(config),
    }
}

fn namespace(config: &Config, job_id: JobId) -> String {
    config
        .namespace
        .clone()
        .unwrap_or_else(|| format!("anonymous-{}", job_id.hex()))
}

fn start_embedded(config: Config) -> Result<()> {
    // Tasks run in this process: its environment is theirs, and lumen does not change it.
    for (name, value) in &config.env {
        if std::env::var_os(name).as_deref() != Some(std::ffi::OsStr::new(value)) {
            return Err(Error::invalid(format!(
                "Config::env({name:?}, {value:?}): the embedded cluster runs tasks in this \
                 process, whose environment lumen does not change (changing it while other \
                 threads may read it is unsound); start this program with {name}={value}, or \
                 run on a cluster (Config::local_cluster, Config::address), whose worker \
                 processes get it"
            )));
        }
    }
    let total = config.node_resources()?;
    let cpus = total.get(&Resource::Cpu).whole_units() as usize;
    let job_id = JobId::fresh();
    let namespace = namespace(&config, job_id);
    let mut b = Builder::new("lumen", cores().max(2));
    b.gcs = Some((GcsSettings::default(), None));
    b.raylet = Some(RayletPart {
        node_id: NodeId::fresh(),
        total,
        heartbeat: HEARTBEAT,
        spawn: None,
    });
    b.pool = Some(cpus);
    b.store = Some(config.store_limits()?);
    let assembly = b.build()?;
    let rt = assembly.start_core(job_id, namespace.clone())?;
    let net = assembly.net.clone();
    rt.on_stop(assembly.into_teardown());
    let registered = (|| {
        rt.request(
            &rt.gcs,
            RegisterJob {
                job_id,
                namespace,
                driver: net.addr(),
                exe: None,
                log_to_driver: false,
                pid: std::process::id(),
                env: Vec::new(),
                working_dir: None,
                working_dir_package: None,
            },
        )??;
        // This process is its node's worker for its job: the raylet runs the job's work here.
        rt.request(
            &rt.raylet,
            RegisterWorker {
                job_id,
                worker_id: rt.worker_id,
                address: net.addr(),
                pid: std::process::id(),
                env: None,
            },
        )?
    })();
    if let Err(e) = registered {
        stop_unpublished(rt);
        return Err(e);
    }
    publish(rt)?;
    tracing::debug!(job = %job_id, "lumen initialized (embedded)");
    Ok(())
}

/// Stops a runtime that was never published.
fn stop_unpublished(rt: Arc<Runtime>) {
    if publish(rt).is_ok() {
        runtime::stop();
    }
}

/// `n` nodes in this process with `config`'s resources each, and a driver connected to them.
fn start_local_cluster(config: Config, n: usize) -> Result<()> {
    if n == 0 {
        return Err(Error::invalid("a local cluster needs at least one node"));
    }
    // Refused before any node starts.
    let package = working_dir_package(&config)?;
    let mut options = NodeOptions::head(SocketAddr::from(([127, 0, 0, 1], 0)));
    options.resources = config.clone();
    let head = Node::start(options)?;
    let (head_addr, token) = (head.address(), head.token());
    let mut nodes = vec![head];
    for _ in 1..n {
        let mut options =
            NodeOptions::join(SocketAddr::from(([127, 0, 0, 1], 0)), head_addr.to_string());
        options.token = Some(token.clone());
        options.resources = config.clone();
        nodes.push(Node::start(options)?);
    }
    let driver = Config {
        address: Some(head_addr.to_string()),
        token: Some(token),
        local_cluster: None,
        ..config
    };
    start_driver(driver, &head_addr.to_string(), nodes, package)
}

/// Packs `Config::working_dir`, if given (refused above its cap).
fn working_dir_package(config: &Config) -> Result<Option<packages::Package>> {
    let Some(dir) = &config.working_dir else {
        return Ok(None);
    };
    let cap = packages::max_bytes(config.working_dir_max_bytes)?;
    let package = packages::pack(dir, cap)?;
    tracing::info!(dir = %dir.display(), bytes = package.data.len(), skipped = package.skipped,
        hash = %package.hash, "working directory packed");
    Ok(Some(package))
}

/// Connects to the cluster at `address` as a driver; `nodes` are nodes this process started
/// for it (a local cluster), stopped with the runtime.
fn start_driver(
    config: Config,
    address: &str,
    nodes: Vec<Node>,
    package: Option<packages::Package>,
) -> Result<()> {
    let gcs_addr = resolve_address(address)?;
    let token = find_token(config.token.as_deref(), address)?;
    let job_id = JobId::fresh();
    let namespace = namespace(&config, job_id);
    let log_to_driver = config.log_to_driver.unwrap_or(true);
    let env = config.env.clone();
    let exe = binaries::current_exe()?;
    let mut b = Builder::towards("lumen", cores().max(2), gcs_addr, token);
    b.store = Some(config.store_limits()?);
    let mut assembly = b.build()?;
    let gcs = assembly.net.target::<svc::Gcs>(gcs_addr);
    let driver = assembly.net.addr();
    // First contact: a wrong token or an unreachable head fails here, with the reason.
    let contact = assembly.block_on(async {
        let nodes = tokio::time::timeout(CONTACT, gcs.send(GetNodes))
            .await
            .map_err(|_| Error::connection(gcs_addr, "no answer within 15 s"))??;
        let head = nodes
            .iter()
            .filter(|n| n.alive)
            .find(|n| n.address == gcs_addr)
            .or_else(|| nodes.iter().find(|n| n.alive))
            .cloned()
            .ok_or_else(|| Error::connection(gcs_addr, "the cluster has no live node"))?;
        // The working directory first: a node may start a worker as soon as the job is known.
        if let Some(p) = &package {
            let held = gcs
                .send(HasBinary {
                    hash: p.hash.clone(),
                })
                .await??;
            if !held {
                gcs.send(PutBinary {
                    hash: p.hash.clone(),
                    data: p.data.clone(),
                })
                .await??;
            }
        }
        let need = gcs
            .send(RegisterJob {
                job_id,
                namespace: namespace.clone(),
                driver,
                exe: Some(ExeInfo {
                    hash: exe.1.clone(),
                    name: exe.2.clone(),
                }),
                log_to_driver,
                pid: std::process::id(),
                env: env.clone(),
                working_dir: std::env::current_dir().ok(),
                working_dir_package: package.as_ref().map(|p| p.hash.clone()),
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
    })?;
    let head = contact?;
    assembly.node = Some((head.node_id, head.address));
    let rt = assembly.start_core(job_id, namespace)?;
    rt.on_stop(assembly.into_teardown());
    if !nodes.is_empty() {
        rt.on_stop(Box::new(move || {
            // Worker nodes first, the head last.
            for node in nodes.into_iter().rev() {
                node.stop();
            }
        }));
    }
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

/// A worker process's store limits: its node's (`lumen start --object-store-memory`,
/// `--spill-dir`), passed in its environment.
fn worker_store_limits() -> Result<crate::config::StoreLimits> {
    let mut config = Config::default();
    if let Ok(v) = std::env::var(env::STORE_MEMORY) {
        let bytes: f64 = v
            .parse()
            .map_err(|e| Error::invalid(format!("{}={v:?}: {e}", env::STORE_MEMORY)))?;
        config = config.object_store_memory(bytes);
    }
    if let Some(dir) = std::env::var_os(env::SPILL_DIR) {
        config = config.spill_dir(dir);
    }
    config.store_limits()
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
    let store = worker_store_limits()?;
    // Started for an environment of its own: the tasks it submits inherit it.
    let task_env = match std::env::var(env::RUNTIME_ENV) {
        Ok(text) => TaskEnv::decode(&text)?,
        Err(_) => None,
    };
    let task_env_key = task_env.as_ref().map(|e| e.key);
    if let Some(e) = task_env {
        runtime::set_process_env(e);
    }
    for v in [
        env::WORKER,
        env::NODE,
        env::GCS,
        env::NODE_ID,
        env::JOB,
        env::NAMESPACE,
        env::TOKEN,
        env::CPUS,
        env::STORE_MEMORY,
        env::SPILL_DIR,
        env::RUNTIME_ENV,
    ] {
        // Programs this worker starts are not workers.
        std::env::remove_var(v);
    }
    let mut b = Builder::new("lumen-worker", cores().max(2));
    b.endpoint = Some(TransportConfig::new(
        SocketAddr::new(node_addr.ip(), 0),
        token,
    ));
    b.gcs_at = Some(gcs_addr);
    b.node = Some((node_id, node_addr));
    b.pool = Some(cpus);
    b.store = Some(store);
    let assembly = b.build()?;
    let net = assembly.net.clone();
    // The worker lives as long as its node: losing it ends the process.
    net.on_lost(Arc::new(move |peer, _| {
        if peer == node_addr {
            tracing::info!(node = %peer, "lost the node this worker serves; exiting");
            std::process::exit(0);
        }
    }));
    let rt = assembly.start_core(job_id, namespace)?;
    let listen = net.addr();
    rt.on_stop(assembly.into_teardown());
    let raylet = rt.raylet.clone();
    let worker_id = rt.worker_id;
    publish(rt.clone())?;
    rt.request(
        &raylet,
        RegisterWorker {
            job_id,
            worker_id,
            address: listen,
            pid: std::process::id(),
            env: task_env_key,
        },
    )??;
    tracing::info!(job = %job_id, node = %node_addr, %listen, "worker process serving");
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
