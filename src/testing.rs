//! Clusters for tests: [`TestCluster`] starts several nodes in this process, each with its own
//! QUIC endpoint on 127.0.0.1, so tests cross the real network path; a node can be killed.
//! Their worker processes are this program's own executable, started in worker mode.

use crate::cluster::{Node, NodeOptions};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::ids::NodeId;
use std::net::SocketAddr;
use std::time::Duration;

/// Several nodes in this process, the first one the head.
///
/// # Examples
/// ```no_run
/// use lumen::testing::TestCluster;
/// let cluster = TestCluster::start(vec![
///     lumen::Config::default().num_cpus(2.0).resource("node0", 2.0),
///     lumen::Config::default().num_cpus(2.0).resource("node1", 2.0),
/// ])?;
/// lumen::init_with(cluster.driver_config())?;
/// assert_eq!(lumen::nodes().len(), 2);
/// lumen::shutdown();
/// # Ok::<(), lumen::Error>(())
/// ```
#[derive(Debug)]
pub struct TestCluster {
    nodes: Vec<Option<Node>>,
    head: SocketAddr,
    token: String,
    node_timeout: Duration,
}

impl TestCluster {
    /// Starts one node per config on 127.0.0.1; the first is the head.
    pub fn start(nodes: Vec<Config>) -> Result<TestCluster> {
        Self::start_with(nodes, Duration::from_secs(2))
    }

    /// Like [`start`](Self::start), with how long a silent node takes to be declared dead.
    pub fn start_with(nodes: Vec<Config>, node_timeout: Duration) -> Result<TestCluster> {
        let mut configs = nodes.into_iter();
        let first = configs
            .next()
            .ok_or_else(|| Error::invalid("a test cluster needs at least one node"))?;
        let mut options = NodeOptions::head(SocketAddr::from(([127, 0, 0, 1], 0)));
        options.resources = first;
        options.node_timeout = node_timeout;
        let head = Node::start(options)?;
        let mut cluster = TestCluster {
            head: head.address(),
            token: head.token(),
            nodes: vec![Some(head)],
            node_timeout,
        };
        for config in configs {
            cluster.add_node(config)?;
        }
        Ok(cluster)
    }

    /// Starts another node; returns its index.
    pub fn add_node(&mut self, config: Config) -> Result<usize> {
        let mut options =
            NodeOptions::join(SocketAddr::from(([127, 0, 0, 1], 0)), self.head.to_string());
        options.token = Some(self.token.clone());
        options.resources = config;
        options.node_timeout = self.node_timeout;
        self.nodes.push(Some(Node::start(options)?));
        Ok(self.nodes.len() - 1)
    }

    /// The head's address (`LUMEN_ADDRESS`).
    pub fn address(&self) -> String {
        self.head.to_string()
    }

    /// The cluster token.
    pub fn token(&self) -> String {
        self.token.clone()
    }

    /// A driver config pointing at this cluster.
    pub fn driver_config(&self) -> Config {
        Config::default()
            .address(self.address())
            .token(self.token())
    }

    /// The id of node `i` (`None` once killed).
    pub fn node_id(&self, i: usize) -> Option<NodeId> {
        self.nodes.get(i)?.as_ref().map(Node::node_id)
    }

    /// The address of node `i` (`None` once killed).
    pub fn node_address(&self, i: usize) -> Option<SocketAddr> {
        self.nodes.get(i)?.as_ref().map(Node::address)
    }

    /// How many new peers node `i` asked to prove their address (QUIC retry) because many
    /// connections were waiting to authenticate; 0 once killed.
    pub fn address_checks(&self, i: usize) -> u64 {
        self.nodes
            .get(i)
            .and_then(Option::as_ref)
            .map_or(0, Node::address_checks)
    }

    /// Stops node `i` at once: its connections close, its worker processes are killed.
    pub fn kill_node(&mut self, i: usize) {
        if let Some(node) = self.nodes.get_mut(i).and_then(Option::take) {
            node.stop();
        }
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        // Worker nodes first, the head last.
        while let Some(n) = self.nodes.pop() {
            if let Some(n) = n {
                n.stop();
            }
        }
    }
}

/// What the GCS answered to [`forge_work`]'s actors.
#[doc(hidden)]
#[derive(Debug)]
pub struct ForgedReplies {
    /// `CreateActor` for a job the cluster does not know.
    pub actor_of_unknown_job: Result<()>,
    /// `CreateActor` asking for -1 CPU.
    pub actor_with_negative_cpu: Result<()>,
    /// `CreatePlacementGroup` of one 1-CPU bundle for a job the cluster does not know.
    pub group_of_unknown_job: Result<()>,
    /// A `SubmitTask` for an unknown job sent as a request, though it is a one-way message:
    /// whether it was answered within 10 s (`Err` with "no answer" if not).
    pub task_as_request: Result<()>,
}

/// Sends the head at `gcs`, holding the cluster's `token` (64 hex digits), work that no driver
/// sends: a task and an actor of one CPU each for a job the cluster does not know, and a task and
/// an actor asking for -1 CPU, a placement group for the unknown job, and once more the task of the unknown job as a request though it
/// is a one-way message. Returns what the GCS answered to the actors and to that request. For tests that a token holder's malformed-but-decodable requests are refused
/// without holding resources (`docs/semantics.md`, Security).
#[doc(hidden)]
pub fn forge_work(gcs: SocketAddr, token: &str) -> Result<ForgedReplies> {
    use crate::cluster::builder::Builder;
    use crate::ids::{ActorId, JobId, ObjectId, PlacementGroupId, TaskId, WorkerId};
    use crate::placement::{PlacementStrategy, SchedulingStrategy};
    use crate::protocol::gcs::{CreateActor, CreatePlacementGroup};
    use crate::protocol::raylet::SubmitTask;
    use crate::protocol::refs::OwnerAddress;
    use crate::protocol::svc;
    use crate::protocol::task::{ActorCreation, FunctionRef, TaskKind, TaskSpec};
    use crate::resources::{Amount, Resource, ResourceSet};
    use std::sync::Arc;

    let token = crate::transport::Token::parse(token)?;
    let client = Builder::towards("lumen-forge", 1, gcs, token).build()?;
    let net = client.net.clone();
    let owner = OwnerAddress {
        worker: WorkerId::fresh(),
        node: NodeId::fresh(),
        addr: net.addr(),
    };
    let spec = |cpu: Amount, actor: bool| {
        let mut resources = ResourceSet::new();
        resources.set(Resource::Cpu, cpu);
        let task_id = TaskId::fresh();
        let kind = if actor {
            TaskKind::ActorCreation(Box::new(ActorCreation {
                actor_id: ActorId::fresh(),
                lifetime_resources: resources.clone(),
                max_restarts: 0,
                max_task_retries: 0,
                max_concurrency: None,
                name: None,
                namespace: "forged".into(),
                detached: false,
            }))
        } else {
            TaskKind::Normal { is_async: false }
        };
        Arc::new(TaskSpec {
            task_id,
            job_id: JobId::fresh(),
            parent: None,
            function: FunctionRef {
                id: 1,
                path: "forged::work".into(),
            },
            args: Vec::new(),
            return_id: ObjectId::for_return(task_id, 0),
            resources,
            strategy: SchedulingStrategy::Default,
            max_retries: 0,
            retry_exceptions: false,
            attempt: 0,
            owner,
            kind,
            pinned: Vec::new(),
            group_bundles: None,
            env: None,
        })
    };
    let negative = Amount::forged(-10_000);
    let mut one_cpu = ResourceSet::new();
    one_cpu.set(Resource::Cpu, Amount::ONE);
    client.block_on(async move {
        let raylet = net.target::<svc::Raylet>(gcs);
        raylet.do_send(SubmitTask {
            spec: spec(Amount::ONE, false),
            hops: 0,
        });
        let task_as_request = answered(raylet.send(SubmitTask {
            spec: spec(Amount::ONE, false),
            hops: 0,
        }))
        .await;
        raylet.do_send(SubmitTask {
            spec: spec(negative, false),
            hops: 0,
        });
        let gcs = net.target::<svc::Gcs>(gcs);
        let ask = |spec| {
            let gcs = gcs.clone();
            async move {
                answered(gcs.send(CreateActor {
                    spec,
                    get_if_exists: false,
                }))
                .await?
                .map(|_| ())
            }
        };
        ForgedReplies {
            actor_of_unknown_job: ask(spec(Amount::ONE, true)).await,
            actor_with_negative_cpu: ask(spec(negative, true)).await,
            group_of_unknown_job: answered(gcs.send(CreatePlacementGroup {
                id: PlacementGroupId::fresh(),
                name: None,
                bundles: vec![one_cpu],
                strategy: PlacementStrategy::Pack,
                job: JobId::fresh(),
                detached: false,
                watcher: None,
            }))
            .await
            .and_then(|answer| answer),
            task_as_request,
        }
    })
}

/// The head's answer to a request of [`forge_work`], or an error if none came within 10 s.
async fn answered<T>(request: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    tokio::time::timeout(Duration::from_secs(10), request)
        .await
        .map_err(|_| Error::connection("the head", "no answer within 10 s"))?
}

/// The unhandled errors this process printed (the last 1,000, oldest first, as their error
/// texts): failed objects whose last reference went before anyone read them, each printed on
/// stderr as a `lumen: Unhandled error …` line; none are printed, nor listed, while
/// `LUMEN_IGNORE_UNHANDLED_ERRORS` is set. What Ray's tests observe by replacing
/// `ray._private.worker._unhandled_error_handler`.
///
/// ```no_run
/// #[lumen::remote]
/// fn fail(why: String) -> Result<i64, String> {
///     Err(why)
/// }
///
/// lumen::init()?;
/// let seen = fail::remote("seen".to_string());
/// assert!(lumen::get(&seen).is_err());
/// drop(seen); // its error was read: not reported
/// drop(fail::remote("dropped".to_string())); // reported once it has failed
/// while !lumen::testing::unhandled_errors().iter().any(|e| e.ends_with(": dropped")) {
///     std::thread::yield_now();
/// }
/// assert!(!lumen::testing::unhandled_errors().iter().any(|e| e.ends_with(": seen")));
/// # Ok::<(), lumen::Error>(())
/// ```
pub fn unhandled_errors() -> Vec<String> {
    crate::objects::ownership::unhandled_printed()
}
