//! One test's in-process multi-node cluster and the driver connected to it.
//!
//! lumen has one driver runtime per process, so the tests of a binary that start their own
//! clusters run one at a time: [`Session::start`] takes a lock first, starts the nodes (each
//! with its own QUIC endpoint on 127.0.0.1 and its own worker processes), connects as the
//! driver, and dropping the session shuts both down (on failure too).

use lumen::testing::TestCluster;
use lumen::NodeId;
use std::sync::{Mutex, MutexGuard};

/// Serializes the sessions of this binary: one driver runtime per process.
static LOCK: Mutex<()> = Mutex::new(());

/// One test's cluster and driver. Dropping it shuts the driver down, then stops the nodes, then
/// lets the next test in.
pub struct Session {
    cluster: Option<TestCluster>,
    _lock: MutexGuard<'static, ()>,
}

impl Session {
    /// Takes the lock, starts one node per config (the first the head) and connects as driver.
    pub fn start(configs: Vec<lumen::Config>) -> Session {
        let lock = super::one_driver_at_a_time(&LOCK);
        let cluster = TestCluster::start(configs).expect("TestCluster::start");
        let session = Session {
            cluster: Some(cluster),
            _lock: lock,
        };
        lumen::init_with(session.cluster().driver_config()).expect("lumen::init_with");
        session
    }

    /// `n` nodes with `cpus` CPUs each and a custom resource `nodeK` = 2 on node K.
    pub fn labelled(n: usize, cpus: f64) -> Session {
        Session::start(
            (0..n)
                .map(|k| {
                    lumen::Config::default()
                        .num_cpus(cpus)
                        .num_gpus(0.0)
                        .resource(format!("node{k}"), 2.0)
                })
                .collect(),
        )
    }

    /// `n` nodes with `cpus` CPUs each and nothing else.
    pub fn nodes(n: usize, cpus: f64) -> Session {
        Session::start(
            (0..n)
                .map(|_| lumen::Config::default().num_cpus(cpus).num_gpus(0.0))
                .collect(),
        )
    }

    pub fn cluster(&self) -> &TestCluster {
        self.cluster.as_ref().expect("cluster")
    }

    pub fn cluster_mut(&mut self) -> &mut TestCluster {
        self.cluster.as_mut().expect("cluster")
    }

    /// The id of node `k` (while it lives).
    pub fn node(&self, k: usize) -> NodeId {
        self.cluster().node_id(k).expect("node is alive")
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        lumen::shutdown();
        drop(self.cluster.take());
    }
}
