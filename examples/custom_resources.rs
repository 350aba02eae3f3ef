//! # Custom resources: placing tasks on chosen nodes
//!
//! The walk-through of Ray's "application-level scheduling with custom resources", in Rust:
//! each node advertises a custom resource named after it (`node0`, `node1`), and a task that asks
//! for one unit of `nodeK` runs on node K.
//!
//! - two tasks pinned to node0 and node1;
//! - the cluster's total and available resources, and its nodes;
//! - 1000 tasks distributed round-robin over however many nodes there are;
//! - a writer and a reader co-located through a file on node1;
//! - a task co-located with an actor it calls.
//!
//! Against a real cluster:
//!
//! ```text
//! lumen start --head --resources '{"node0": 2}'
//! lumen start --address 127.0.0.1:6379 --resources '{"node1": 2}'
//! LUMEN_ADDRESS=127.0.0.1:6379 cargo run --release --example custom_resources
//! lumen stop
//! ```
//!
//! Without `LUMEN_ADDRESS` it starts the same two-node cluster inside this process (each node with
//! its own QUIC endpoint on 127.0.0.1 and its own worker process) and runs against that.

use lumen::testing::TestCluster;
use std::collections::BTreeMap;
use std::time::Duration;

#[lumen::remote]
fn f(i: u64) -> u64 {
    i
}

/// Which node ran this.
#[lumen::remote]
fn f_where(i: u64) -> (u64, String) {
    (i, lumen::runtime_context().node_id().to_string())
}

fn scratch_file() -> String {
    format!(
        "/tmp/lumen-custom-resources-{}.tmp",
        lumen::runtime_context().job_id()
    )
}

/// Writes to a file local to its node (whole: written aside, then renamed into place).
#[lumen::remote]
fn writer(path: String) -> lumen::Result<()> {
    let tmp = format!("{path}.partial");
    std::fs::write(&tmp, "foo")
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|e| lumen::Error::InvalidArgument {
            message: format!("cannot write {path}: {e}"),
        })
}

/// Reads the file the writer wrote (waiting for it to appear): works only on the same node.
#[lumen::remote]
fn reader(path: String) -> lumen::Result<String> {
    for _ in 0..500 {
        if let Ok(data) = std::fs::read_to_string(&path) {
            let _ = std::fs::remove_file(&path);
            return Ok(data);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Err(lumen::Error::InvalidArgument {
        message: format!("{path} never appeared on this node"),
    })
}

#[derive(Default)]
pub struct Actor;

#[lumen::remote]
impl Actor {
    pub fn new() -> Self {
        Actor
    }

    pub fn method(&self, i: u64) -> (u64, String) {
        (i, lumen::runtime_context().node_id().to_string())
    }
}

/// Calls an actor method; faster when co-located with the actor.
#[lumen::remote]
fn foo(i: u64, actor: lumen::ActorHandle<Actor>) -> lumen::Result<(u64, String, String)> {
    let (v, actor_node) = lumen::get(&actor.method(i).remote())?;
    Ok((
        v,
        actor_node,
        lumen::runtime_context().node_id().to_string(),
    ))
}

/// Node ids made in one process share their first half: show the part that differs too.
fn short(id: &str) -> String {
    if id.len() == 32 {
        format!("{}..{}", &id[..6], &id[20..28])
    } else {
        id.to_string()
    }
}

fn main() -> lumen::Result<()> {
    // Without a cluster to join, start one here: node0 (the head) and node1.
    let _local = if std::env::var("LUMEN_ADDRESS").is_ok_and(|a| !a.is_empty()) {
        lumen::init()?;
        None
    } else {
        let cluster = TestCluster::start(vec![
            lumen::Config::default()
                .num_cpus(2.0)
                .resource("node0", 2.0),
            lumen::Config::default()
                .num_cpus(2.0)
                .resource("node1", 2.0),
        ])?;
        println!(
            "No LUMEN_ADDRESS: started a two-node cluster in this process at {}",
            cluster.address()
        );
        lumen::init_with(cluster.driver_config())?;
        Some(cluster)
    };
    let timeout = Duration::from_secs(60);

    // Which custom `nodeK` resource each node has.
    let mut by_label: BTreeMap<String, String> = BTreeMap::new();
    for n in lumen::nodes().iter().filter(|n| n.alive) {
        for name in n.resources.keys().filter(|k| k.starts_with("node")) {
            by_label.insert(name.clone(), n.node_id.to_string());
        }
    }
    println!(
        "nodes by label: {:?}",
        by_label
            .iter()
            .map(|(k, v)| (k, short(v)))
            .collect::<Vec<_>>()
    );

    // 1. Two tasks, each pinned to its node by the custom resource.
    let refs: Vec<_> = (0..2u64)
        .map(|i| {
            f_where::options()
                .resource(format!("node{i}"), 1.0)
                .remote(i)
        })
        .collect();
    for (i, r) in refs.iter().enumerate() {
        let (v, node) = lumen::get_timeout(r, timeout)?;
        let label = format!("node{i}");
        println!("f({v}) with {{{label}: 1}} ran on node {}", short(&node));
        if by_label.get(&label) != Some(&node) {
            return Err(lumen::Error::InvalidArgument {
                message: format!("the task asking for {label} ran on the wrong node"),
            });
        }
    }

    // 2. The cluster's resources.
    let show = |m: BTreeMap<String, f64>| -> BTreeMap<String, f64> {
        m.into_iter()
            .filter(|(k, _)| !k.contains("memory"))
            .collect()
    };
    println!(
        "cluster_resources():   {:?}",
        show(lumen::cluster_resources())
    );
    println!(
        "available_resources(): {:?}",
        show(lumen::available_resources())
    );
    for n in lumen::nodes() {
        println!(
            "node {} at {} alive={} resources={:?}",
            short(&n.node_id.to_string()),
            n.address,
            n.alive,
            show(n.resources.clone())
        );
    }

    // 3. Round-robin 1000 tasks over the labelled nodes.
    let labels: Vec<String> = by_label.keys().cloned().collect();
    let refs: Vec<_> = (0..1000u64)
        .map(|i| {
            let label = &labels[(i as usize) % labels.len()];
            f::options().resource(label.clone(), 1.0).remote(i)
        })
        .collect();
    let values = lumen::get_all(&refs)?;
    println!(
        "1000 tasks round-robin over {} nodes: [{}, {}, {}, ..., {}]",
        labels.len(),
        values[0],
        values[1],
        values[2],
        values[999]
    );
    assert_eq!(values, (0..1000).collect::<Vec<u64>>());

    // 4. A writer and a reader co-located through a file on node1.
    let path = scratch_file();
    let w = writer::options()
        .resource("node1", 1.0)
        .remote(path.clone());
    let r = reader::options().resource("node1", 1.0).remote(path);
    lumen::get_timeout(&w, timeout)?;
    println!(
        "reader on node1 read {:?}",
        lumen::get_timeout(&r, timeout)?
    );

    // 5. A task co-located with the actor it calls.
    let actor = Actor::options().resource("node1", 1.0).remote();
    let r = foo::options()
        .resource("node1", 1.0)
        .remote(1, actor.clone());
    let (v, actor_node, task_node) = lumen::get_timeout(&r, timeout)?;
    println!(
        "foo(1) ran on node {} and called the actor on node {}: {v}",
        short(&task_node),
        short(&actor_node)
    );
    assert_eq!(actor_node, task_node);

    lumen::shutdown();
    Ok(())
}
