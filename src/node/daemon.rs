//! A cluster node running in this process: its QUIC endpoint, raylet, store shards and (on the
//! head) the GCS, each an actix actor on its own arbiter. `lumen start` runs one per daemon
//! process; [`TestCluster`](crate::testing::TestCluster) runs several in one process.

use crate::api::config::Config;
use crate::error::{Error, Result};
use crate::ids::NodeId;
use crate::node::processes::{JobWorkers, WorkerSettings};
use crate::node::raylet::{ClusterLink, GetResources, Raylet, Runner};
use crate::objects::store::{StoreClient, StoreShard};
use crate::resources::Resource;
use crate::runtime::{find_token, resolve_address};
use crate::system::binaries::BinaryCache;
use crate::system::gcs::{Gcs, GetNodes, Membership};
use crate::transport::router::Router;
use crate::transport::wire::Target;
use crate::transport::{Token, Transport, TransportConfig};
use actix::prelude::*;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How to start a node.
///
/// # Examples
/// ```no_run
/// use lumen::node::{Node, NodeOptions};
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
    gcs: SocketAddr,
    token: Token,
    net: Arc<Transport>,
    parts: Option<(actix::System, JoinHandle<()>, tokio::runtime::Runtime)>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Node({} at {})", self.node_id, self.net.local_addr())
    }
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
        // The node's event loop only moves messages (the GCS, raylet and store run on their own
        // threads): one thread per four cores, so that on small machines it does not compete
        // with the work it serves.
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads((cores / 4).clamp(1, 4))
            .thread_name("lumen-node")
            .enable_all()
            .build()
            .map_err(|e| Error::invalid(format!("cannot start the node's event loop: {e}")))?;
        let executor = rt.handle().clone();
        let router = Arc::new(Router::new(executor.clone(), false));
        let net = {
            let _guard = rt.enter();
            Transport::bind(
                TransportConfig::new(options.listen, token.clone()),
                router.clone(),
            )?
        };
        let gcs_addr = match (&options.gcs, options.head) {
            (_, true) => net.local_addr(),
            (Some(g), false) => resolve_address(g)?,
            (None, false) => return Err(Error::invalid("a joining node needs the head's address")),
        };
        if !options.head {
            if let Some(fp) = crate::node::session::local_fingerprint(gcs_addr) {
                net.pin(gcs_addr, fp);
            }
            // Fail fast (wrong token, nobody there) before starting anything.
            let gcs = Target::<Gcs>::remote(&net, gcs_addr);
            let probe = rt.block_on(async move {
                tokio::time::timeout(Duration::from_secs(15), gcs.send(GetNodes)).await
            });
            let failure = match probe {
                Ok(Ok(_)) => None,
                Ok(Err(e)) => Some(e),
                Err(_) => Some(Error::connection(
                    gcs_addr,
                    "the head did not answer within 15 s",
                )),
            };
            if let Some(e) = failure {
                net.close();
                rt.shutdown_background();
                return Err(e);
            }
        }
        let binaries = BinaryCache::open(BinaryCache::default_dir())?;
        let node_id = NodeId::fresh();
        let membership = Membership {
            node_timeout: options.node_timeout,
            ..Membership::default()
        };
        let settings = WorkerSettings {
            net: net.clone(),
            token: token.clone(),
            gcs: gcs_addr,
            node_id,
            cpus: cpus.max(1),
            binaries: binaries.clone(),
        };
        let (net2, router2, head) = (net.clone(), router.clone(), options.head);
        let heartbeat = options.heartbeat;
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("lumen-node-system".into())
            .spawn(move || {
                let system = actix::System::new();
                system.block_on(async move {
                    let gcs: Target<Gcs> = if head {
                        let g = Gcs::start_in_arbiter(&Arbiter::new().handle(), {
                            let net = net2.clone();
                            move |_| Gcs::cluster(net, membership, binaries)
                        });
                        let _ = router2.gcs.set(g.clone());
                        Target::Local(g)
                    } else {
                        Target::remote(&net2, gcs_addr)
                    };
                    let shards: Vec<_> = (0..2)
                        .map(|_| {
                            StoreShard::start_in_arbiter(&Arbiter::new().handle(), |_| {
                                StoreShard::default()
                            })
                        })
                        .collect();
                    let store = StoreClient::new(shards);
                    let link = ClusterLink {
                        net: net2.clone(),
                        heartbeat,
                    };
                    let raylet = Raylet::start_in_arbiter(&Arbiter::new().handle(), move |_| {
                        Raylet::new(node_id, total, gcs, store, executor, Some(link))
                            .with_runner(Runner::Processes(Box::new(JobWorkers::new(settings))))
                    });
                    let _ = router2.raylet.set(raylet.clone());
                    let _ = raylet.send(GetResources).await;
                    let _ = tx.send(actix::System::current());
                });
                system.run().ok();
            })
            .map_err(|e| Error::invalid(format!("cannot start the node's system thread: {e}")))?;
        let system = rx
            .recv()
            .map_err(|_| Error::shutdown("starting the node"))?;
        let node = Node {
            node_id,
            gcs: gcs_addr,
            token,
            net,
            parts: Some((system, thread, rt)),
        };
        node.wait_registered()?;
        tracing::info!(node = %node_id, address = %node.address(), head, "node started");
        Ok(node)
    }

    /// Waits until the GCS lists this node.
    fn wait_registered(&self) -> Result<()> {
        let Some((_, _, rt)) = &self.parts else {
            return Err(Error::shutdown("starting the node"));
        };
        // Over the endpoint (the head asks itself): the same path drivers use.
        let gcs: Target<Gcs> = Target::remote(&self.net, self.gcs);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let nodes = rt.block_on(gcs.send(GetNodes))?;
            if nodes.iter().any(|n| n.node_id == self.node_id && n.alive) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::connection(
                    self.gcs,
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
        self.net.local_addr()
    }

    /// The GCS (head) address of the node's cluster.
    pub fn gcs_address(&self) -> SocketAddr {
        self.gcs
    }

    /// The BLAKE3 fingerprint of this node's TLS certificate, as hex (peers may pin it).
    pub fn fingerprint(&self) -> String {
        crate::node::session::hex(&self.net.fingerprint())
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
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some((system, thread, rt)) = self.parts.take() {
            self.net.close();
            let net = self.net.clone();
            rt.block_on(async move { net.wait_closed(Duration::from_millis(500)).await });
            system.stop();
            let _ = thread.join();
            rt.shutdown_timeout(Duration::from_secs(1));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.shutdown();
    }
}
