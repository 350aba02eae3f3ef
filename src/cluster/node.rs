//! A cluster node running in this process: its QUIC endpoint, raylet and (on the head) the GCS,
//! assembled by the [`Builder`] like every process. `lumen start` runs one per daemon process;
//! a local cluster ([`Config::local_cluster`]) and [`TestCluster`](crate::testing::TestCluster)
//! run several in one process. A node starts a worker process per job for the job's tasks and
//! actors.

use crate::cluster::builder::{cores, Assembly, Builder, RayletPart};
use crate::cluster::contact::{find_token, resolve_address};
use crate::cluster::session;
use crate::cluster::web::{WebServers, WebSettings};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::ids::NodeId;
use crate::node::processes::WorkerSettings;
use crate::protocol::gcs::GetNodes;
use crate::protocol::svc;
use crate::resources::Resource;
use crate::system::binaries::BinaryCache;
use crate::system::gcs::Settings as GcsSettings;
use crate::system::packages::WorkingDirs;
use crate::transport::{Token, TransportConfig};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How to start a node.
///
/// # Examples
/// ```no_run
/// use lumen::cluster::{Node, NodeOptions};
/// let head = Node::start(NodeOptions::head("127.0.0.1:0".parse().unwrap()))?;
/// println!("join with --address {} --token {}", head.address(), head.token());
/// head.stop();
/// # Ok::<(), lumen::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct NodeOptions {
    /// Whether this node is the head (runs the GCS).
    pub head: bool,
    /// Where the node's endpoint listens (port 0: any free port).
    pub listen: SocketAddr,
    /// The head's address, for a node joining a cluster.
    pub gcs: Option<String>,
    /// The cluster token (64 hex digits). The head makes a fresh one when none is given; a
    /// joining node looks in `LUMEN_TOKEN` and the session folder.
    pub token: Option<String>,
    /// The node's resources (CPUs, GPUs, memory, custom).
    pub resources: Config,
    /// A node silent this long is marked dead (head only).
    pub node_timeout: Duration,
    /// How often the raylet reports to the GCS.
    pub heartbeat: Duration,
    /// Where the node keeps what its worker processes print (`worker-<pid>.out` and `.err`),
    /// besides sending it to the drivers; none: nowhere (a node in a program's own process).
    pub log_dir: Option<std::path::PathBuf>,
    /// Serve Prometheus metrics at `/metrics` on this port of the listen address's host (0: any
    /// free port; [`Node::metrics_address`] says which), to holders of the token only; none:
    /// not served.
    pub metrics_port: Option<u16>,
    /// Where the head serves its dashboard (port 0: any free port; [`Node::dashboard_address`]
    /// says which), to holders of the token only; none: not served. Ignored on other nodes.
    pub dashboard: Option<SocketAddr>,
}

impl NodeOptions {
    /// A head node listening at `listen`.
    pub fn head(listen: SocketAddr) -> Self {
        NodeOptions {
            head: true,
            listen,
            gcs: None,
            token: None,
            resources: Config::default(),
            node_timeout: node_timeout_default(),
            heartbeat: Duration::from_millis(200),
            log_dir: None,
            metrics_port: None,
            dashboard: None,
        }
    }

    /// A node joining the cluster whose head is at `gcs`.
    pub fn join(listen: SocketAddr, gcs: impl Into<String>) -> Self {
        NodeOptions {
            head: false,
            gcs: Some(gcs.into()),
            ..NodeOptions::head(listen)
        }
    }
}

/// `LUMEN_NODE_TIMEOUT_MS`, else 5 s.
fn node_timeout_default() -> Duration {
    std::env::var("LUMEN_NODE_TIMEOUT_MS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(Duration::from_secs(5), Duration::from_millis)
}

/// A running node. Dropping it stops it.
pub struct Node {
    node_id: NodeId,
    token: Token,
    assembly: Assembly,
    web: WebServers,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Node({} at {})", self.node_id, self.address())
    }
}

/// Where job executables are cached: `$LUMEN_CACHE_DIR`, else `bin` in the session folder
/// (checked: another user's folder is refused).
fn cache_dir() -> Result<std::path::PathBuf> {
    if let Some(d) = std::env::var_os("LUMEN_CACHE_DIR") {
        return Ok(std::path::PathBuf::from(d));
    }
    session::session_subdir("bin")
}

impl Node {
    /// Starts a node; returns once it is registered with the GCS.
    pub fn start(options: NodeOptions) -> Result<Node> {
        let total = options.resources.node_resources()?;
        let cpus = total.get(&Resource::Cpu).whole_units() as usize;
        let token = match (&options.token, options.head, &options.gcs) {
            (Some(t), _, _) => Token::parse(t)?,
            (None, true, _) => Token::random(),
            (None, false, Some(gcs)) => find_token(None, gcs)?,
            (None, false, None) => {
                return Err(Error::invalid(
                    "a node that is not the head needs the head's address",
                ))
            }
        };
        let gcs_at = match (&options.gcs, options.head) {
            (_, true) => None,
            (Some(g), false) => Some(resolve_address(g)?),
            (None, false) => return Err(Error::invalid("a joining node needs the head's address")),
        };
        let binaries = BinaryCache::open(cache_dir()?)?;
        let node_id = NodeId::fresh();
        // The node's event loop only moves messages (the GCS and raylet run on their own
        // threads): one thread per four cores, so that on small machines it does not compete
        // with the work it serves.
        let mut b = Builder::new("lumen-node", (cores() / 4).clamp(1, 4));
        b.endpoint = Some(TransportConfig::new(options.listen, token.clone()));
        if let Some(gcs) = gcs_at {
            if let Some(fp) = session::local_fingerprint(gcs) {
                b.pins.push((gcs, fp));
            }
            b.gcs_at = Some(gcs);
        } else {
            b.gcs = Some((
                GcsSettings {
                    node_timeout: options.node_timeout,
                    ..GcsSettings::default()
                },
                Some(binaries.clone()),
            ));
        }
        b.raylet = Some(RayletPart {
            node_id,
            total,
            heartbeat: options.heartbeat,
            spawn: Some(WorkerSettings {
                token: token.clone(),
                node_id,
                cpus: cpus.max(1),
                binaries,
                working_dirs: WorkingDirs::new(session::session_subdir("working_dirs")?),
                log_dir: options.log_dir.clone(),
                store: options.resources.store_limits()?,
            }),
        });
        // A wrong token or an unreachable head fails the first request below, with the reason.
        let assembly = b.build()?;
        let mut node = Node {
            node_id,
            token,
            assembly,
            web: WebServers::default(),
        };
        node.wait_registered()?;
        node.web = WebServers::start(
            &node.assembly.handle(),
            WebSettings {
                node_id,
                net: node.assembly.net.clone(),
                gcs: node.assembly.gcs,
                token: node.token.clone(),
                metrics: options
                    .metrics_port
                    .map(|p| SocketAddr::new(options.listen.ip(), p)),
                dashboard: options.dashboard.filter(|_| options.head),
                log_dir: options.log_dir.clone(),
            },
        )?;
        tracing::info!(node = %node_id, address = %node.address(), head = options.head, "node started");
        Ok(node)
    }

    /// Waits until the GCS lists this node.
    fn wait_registered(&self) -> Result<()> {
        // Over the switchboard (the head asks itself): the same path drivers use.
        let gcs = self.assembly.net.target::<svc::Gcs>(self.assembly.gcs);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let ask = gcs.send(GetNodes);
            let nodes = self
                .assembly
                .block_on(async { tokio::time::timeout(Duration::from_secs(15), ask).await })?
                .map_err(|_| {
                    Error::connection(self.assembly.gcs, "the head did not answer within 15 s")
                })??;
            if nodes.iter().any(|n| n.node_id == self.node_id && n.alive) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::connection(
                    self.assembly.gcs,
                    "the node did not register within 15 s",
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The node's id.
    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// Where the node's endpoint listens.
    pub fn address(&self) -> SocketAddr {
        self.assembly.net.addr()
    }

    /// The GCS (head) address of the node's cluster.
    pub fn gcs_address(&self) -> SocketAddr {
        self.assembly.gcs
    }

    /// The BLAKE3 fingerprint of this node's TLS certificate, as hex (peers may pin it).
    pub fn fingerprint(&self) -> String {
        session::hex(&self.assembly.net.fingerprint())
    }

    /// How many new peers the node asked to prove their address (a QUIC retry) because many
    /// connections were waiting to authenticate (`docs/semantics.md`, Security).
    pub fn address_checks(&self) -> u64 {
        self.assembly.net.address_checks()
    }

    /// Where the node serves Prometheus metrics (`http://<address>/metrics`), if it does.
    ///
    /// # Examples
    /// ```no_run
    /// use lumen::cluster::{Node, NodeOptions};
    /// let mut options = NodeOptions::head("127.0.0.1:0".parse().unwrap());
    /// options.metrics_port = Some(0);
    /// let head = Node::start(options)?;
    /// let at = head.metrics_address().expect("asked for");
    /// println!("curl -H 'Authorization: Bearer {}' http://{at}/metrics", head.token());
    /// # Ok::<(), lumen::Error>(())
    /// ```
    pub fn metrics_address(&self) -> Option<SocketAddr> {
        self.web.metrics_address()
    }

    /// Where the head serves its dashboard (`http://<address>/`), if it does.
    ///
    /// # Examples
    /// ```no_run
    /// use lumen::cluster::{Node, NodeOptions};
    /// let mut options = NodeOptions::head("127.0.0.1:0".parse().unwrap());
    /// options.dashboard = Some("127.0.0.1:8265".parse().unwrap());
    /// let head = Node::start(options)?;
    /// if let Some(at) = head.dashboard_address() {
    ///     println!("open http://{at}/?token={}", head.token());
    /// }
    /// # Ok::<(), lumen::Error>(())
    /// ```
    pub fn dashboard_address(&self) -> Option<SocketAddr> {
        self.web.dashboard_address()
    }

    /// The cluster token, as 64 hex digits.
    pub fn token(&self) -> String {
        self.token.to_hex()
    }

    /// Blocks until the node is stopped (by a signal handler calling [`stop`](Self::stop), or
    /// process exit).
    pub fn wait(&self) {
        loop {
            std::thread::park();
        }
    }

    /// Stops the node: its connections close (the cluster sees it leave), its worker processes
    /// are killed, and its components stop.
    pub fn stop(mut self) {
        self.web.stop();
        self.assembly.stop();
    }
}
