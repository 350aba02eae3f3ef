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
