//! Bad peers are refused, each with a reason that says what was wrong, while the cluster keeps
//! serving its good driver.
//!
//! The cluster is a [`TestCluster`] (nodes in this process, each with a real QUIC endpoint on
//! 127.0.0.1); the bad peers are the probes of `lumen::__probe`: a wrong or missing token,
//! garbage UDP datagrams, garbage instead of the lumen hello, a frame announcing more than the
//! frame cap, a hello for another protocol version. After each one the good driver still runs a
//! task and reads the cluster's nodes.
//!
//! lumen has one driver runtime per process, so the tests of this file take [`LOCK`] first.
//!
//! **Modes.** Cluster only, by nature: the bad peers come over the network, which an embedded
//! runtime does not listen on.

mod common;

use lumen::testing::TestCluster;
use lumen::Error;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Serializes the tests of this binary: one driver runtime per process.
static LOCK: Mutex<()> = Mutex::new(());

/// The longest a refusal may take: a probe must never hang.
const PROMPT: Duration = Duration::from_secs(8);

/// A generous bound for a task: a bug shows as an error, not a hang.
const TASK_LIMIT: Duration = Duration::from_secs(30);

#[lumen::remote]
fn double(x: u64) -> u64 {
    2 * x
}

/// Holds [`LOCK`], a fresh, empty session folder (so no token is found in a real user's one,
/// and the nodes' binary cache is private) and a one-node [`TestCluster`]. Dropping it shuts the
/// driver down, then stops the cluster, then removes the folder.
struct Isolated {
    cluster: Option<TestCluster>,
    dir: PathBuf,
    _lock: MutexGuard<'static, ()>,
}

impl Isolated {
    fn new(tag: &str) -> Isolated {
        let lock = common::one_driver_at_a_time(&LOCK);
        let dir = std::env::temp_dir().join(format!(
            "lumen-refusals-{tag}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        ));
        std::fs::create_dir_all(&dir).expect("create the session folder");
        // A session folder others could write to is refused.
        std::fs::set_permissions(
            &dir,
            <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o700),
        )
        .expect("chmod");
        std::env::set_var("LUMEN_SESSION_DIR", &dir);
        std::env::remove_var("LUMEN_TOKEN");
        std::env::remove_var("LUMEN_ADDRESS");
        let mut isolated = Isolated {
            cluster: None,
            dir,
            _lock: lock,
        };
        isolated.cluster = Some(
            TestCluster::start(vec![lumen::Config::default().num_cpus(2.0).num_gpus(0.0)])
                .expect("TestCluster::start"),
        );
        isolated
    }

    fn cluster(&self) -> &TestCluster {
        self.cluster.as_ref().expect("the cluster")
    }
}

impl Drop for Isolated {
    fn drop(&mut self) {
        lumen::shutdown();
        drop(self.cluster.take());
        let _ = std::fs::remove_dir_all(&self.dir);
        std::env::remove_var("LUMEN_SESSION_DIR");
    }
}

fn head(cluster: &TestCluster) -> SocketAddr {
    cluster.address().parse().expect("the head's address")
}

/// Runs `probe`, checks it returned within [`PROMPT`], and returns what it returned.
fn timed<T>(what: &str, probe: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let out = probe();
    let took = started.elapsed();
    assert!(
        took < PROMPT,
        "{what} took {took:?}: a refusal must be prompt"
    );
    eprintln!("{what}: answered in {took:?}");
    out
}

/// The reason of an [`Error::Connection`] (panics on anything else).
fn connection_reason<T: std::fmt::Debug>(what: &str, r: Result<T, Error>) -> String {
    match r {
        Err(Error::Connection { reason, .. }) => reason,
        other => panic!("{what}: expected Error::Connection, got {other:?}"),
    }
}

/// Asserts `text` mentions every word of `words`.
fn mentions(what: &str, text: &str, words: &[&str]) {
    eprintln!("{what}: {text}");
    for w in words {
        assert!(
            text.contains(w),
            "{what}: the reason should mention {w:?}: {text:?}"
        );
    }
}

/// The good driver still works: a task runs, and the cluster's nodes are listed alive.
fn still_serving(after: &str) {
    let r = double::remote(21);
    match lumen::get_timeout(&r, TASK_LIMIT) {
        Ok(v) => assert_eq!(v, 42, "after {after}"),
        Err(e) => panic!("after {after}, the good driver's task failed: {e}"),
    }
    let nodes = lumen::nodes();
    assert!(
        nodes.len() == 1 && nodes.iter().all(|n| n.alive),
        "after {after}: {nodes:?}"
    );
}

/// A driver with no token, or with a token that is not one, fails at once with a reason; lumen
/// stays uninitialized, so a good driver can connect afterwards.
#[test]
fn driver_without_a_valid_token_is_refused_at_once() {
    let iso = Isolated::new("driver");
    let cluster = iso.cluster();
    let address = cluster.address();

    let r = timed("init_with without a token", || {
        lumen::init_with(lumen::Config::default().address(address.clone()))
    });
    let reason = connection_reason("init_with without a token", r);
    mentions("init_with without a token", &reason, &["LUMEN_TOKEN"]);
    assert!(!lumen::is_initialized());

    let r = timed("init_with a non-hex token", || {
        lumen::init_with(
            lumen::Config::default()
                .address(address.clone())
                .token("not-hex"),
        )
    });
    match r {
        Err(e) => mentions(
            "init_with a non-hex token",
            &e.to_string(),
            &["token", "64 hex"],
        ),
        Ok(()) => panic!("init_with a non-hex token succeeded"),
    }
    assert!(!lumen::is_initialized());

    // A well-formed but wrong token: refused by the node, with the reason.
    let wrong: String = cluster
        .token()
        .chars()
        .map(|c| if c == '0' { '1' } else { '0' })
        .collect();
    let r = timed("init_with a wrong token", || {
        lumen::init_with(
            lumen::Config::default()
                .address(address.clone())
                .token(&wrong),
        )
    });
    let reason = connection_reason("init_with a wrong token", r);
    mentions(
        "init_with a wrong token",
        &reason,
        &["token does not match"],
    );
    assert!(!lumen::is_initialized());

    lumen::init_with(cluster.driver_config()).expect("the good driver connects afterwards");
    still_serving("the refused drivers");
    lumen::shutdown();
}

/// Every kind of bad peer is refused promptly with a reason naming what was wrong, and after
/// each the good driver still runs tasks.
#[test]
fn bad_peers_are_refused_while_the_cluster_keeps_serving() {
    let iso = Isolated::new("peers");
    let cluster = iso.cluster();
    let addr = head(cluster);
    let token = cluster.token();
    let wrong: String = token
        .chars()
        .map(|c| if c == '0' { '1' } else { '0' })
        .collect();
    lumen::init_with(cluster.driver_config()).expect("the good driver connects");
    still_serving("connecting");

    // The good token, for contrast: the probe's own handshake works.
    timed("handshake with the cluster's token", || {
        lumen::__probe::handshake_with_token(addr, Some(&token))
    })
    .expect("a handshake with the cluster's token is accepted");
    still_serving("a good handshake");

    // A wrong token.
    let r = timed("handshake with a wrong token", || {
        lumen::__probe::handshake_with_token(addr, Some(&wrong))
    });
    let reason = connection_reason("handshake with a wrong token", r);
    mentions("wrong token", &reason, &["refused", "token does not match"]);
    still_serving("a wrong token");

    // `lumen status` with a wrong token.
    let r = timed("cluster_status with a wrong token", || {
        lumen::cluster::cluster_status(Some(&cluster.address()), Some(&wrong))
    });
    let reason = connection_reason("cluster_status with a wrong token", r);
    mentions("cluster_status with a wrong token", &reason, &["token"]);
    still_serving("a status request with a wrong token");

    // ... and with the right one, for contrast.
    let status = lumen::cluster::cluster_status(Some(&cluster.address()), Some(&token))
        .expect("cluster_status with the cluster's token");
    assert_eq!(status.nodes.len(), 1, "{status:?}");

    // No token at all (a zero proof).
    let r = timed("handshake without a token", || {
        lumen::__probe::handshake_with_token(addr, None)
    });
    let reason = connection_reason("handshake without a token", r);
    mentions("no token", &reason, &["refused", "token"]);
    still_serving("a handshake without a token");

    // Garbage UDP datagrams (some shaped like QUIC initial packets).
    timed("garbage UDP", || lumen::__probe::send_garbage_udp(addr))
        .expect("sending garbage datagrams");
    still_serving("garbage UDP");

    // Garbage where the lumen hello should be.
    let reason = timed("garbage hello", || lumen::__probe::garbage_hello(addr))
        .expect("the node closes a connection that sends a garbage hello, with a reason");
    mentions("garbage hello", &reason, &["not a lumen handshake"]);
    still_serving("a garbage hello");

    // An authenticated peer announcing a 100 MiB frame (the cap is 8 MiB).
    let reason = timed("oversized frame", || {
        lumen::__probe::oversized_frame(addr, &token, 100 << 20)
    })
    .expect("the node closes a connection that announces an oversized frame, with a reason");
    mentions(
        "oversized frame",
        &reason,
        &["exceeds the limit", &(100u32 << 20).to_string()],
    );
    still_serving("an oversized frame");

    // A peer speaking another protocol version (with a valid proof).
    let reason = timed("version mismatch", || {
        lumen::__probe::version_mismatch(addr, &token)
    })
    .expect("the node refuses a hello for another protocol version, with a reason");
    mentions("version mismatch", &reason, &["protocol"]);
    still_serving("a version mismatch");

    // All of them again, at once, while the driver works.
    let probes = std::thread::spawn({
        let (token, wrong) = (token.clone(), wrong.clone());
        move || {
            for _ in 0..3 {
                let _ = lumen::__probe::send_garbage_udp(addr);
                assert!(lumen::__probe::handshake_with_token(addr, Some(&wrong)).is_err());
                assert!(lumen::__probe::handshake_with_token(addr, None).is_err());
                let _ = lumen::__probe::garbage_hello(addr);
                let _ = lumen::__probe::oversized_frame(addr, &token, u32::MAX);
                let _ = lumen::__probe::version_mismatch(addr, &token);
            }
        }
    });
    let refs: Vec<_> = (0..20u64).map(double::remote).collect();
    for (i, r) in refs.iter().enumerate() {
        assert_eq!(
            lumen::get_timeout(r, TASK_LIMIT).expect("a task during the probes"),
            2 * i as u64
        );
    }
    probes.join().expect("the probes");
    still_serving("all probes at once");
    lumen::shutdown();
}

/// A token holder's forged work is refused and holds nothing (issue 12: before, a request for a
/// job the head did not know held its CPU until the node restarted). With the cluster's token,
/// a task and an actor of one CPU each for a job the cluster does not know, and a task and an
/// actor asking for -1 CPU: the actors are refused with the reason, every CPU is available
/// again, and the next real driver runs tasks on all of them.
#[test]
fn forged_work_for_an_unknown_job_or_with_negative_amounts_is_refused() {
    let iso = Isolated::new("forged");
    let cluster = iso.cluster();
    let replies = timed("forged work", || {
        lumen::testing::forge_work(head(cluster), &cluster.token())
    })
    .expect("the forged requests reach the head");
    let unknown = replies
        .actor_of_unknown_job
        .expect_err("an actor of a job the cluster does not know must be refused");
    mentions(
        "an actor of an unknown job",
        &unknown.to_string(),
        &["not running"],
    );
    let negative = replies
        .actor_with_negative_cpu
        .expect_err("an actor asking for -1 CPU must be refused");
    mentions(
        "an actor asking for -1 CPU",
        &negative.to_string(),
        &["out of range"],
    );
    let group = replies
        .group_of_unknown_job
        .expect_err("a placement group of a job the cluster does not know must be refused");
    mentions(
        "a placement group of an unknown job",
        &group.to_string(),
        &["not running"],
    );
    // A one-way message sent as a request is answered (here: taken, the task refused to its
    // owner), never left for the sender to wait on.
    if let Err(e) = &replies.task_as_request {
        assert!(
            !e.to_string().contains("no answer"),
            "a request for a one-way message was not answered: {e}"
        );
    }

    lumen::init_with(cluster.driver_config()).expect("the next driver connects");
    let deadline = Instant::now() + TASK_LIMIT;
    let cpus = |m: &std::collections::BTreeMap<String, f64>| m.get("CPU").copied();
    while cpus(&lumen::available_resources()) != cpus(&lumen::cluster_resources()) {
        assert!(
            Instant::now() < deadline,
            "forged work still holds resources: {:?} of {:?}",
            lumen::available_resources(),
            lumen::cluster_resources()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let refs: Vec<_> = (0..2).map(double::remote).collect();
    for (i, r) in refs.iter().enumerate() {
        assert_eq!(
            lumen::get_timeout(r, TASK_LIMIT).expect("task"),
            2 * i as u64
        );
    }
    still_serving("forged work");
    lumen::shutdown();
}

#[test]
fn a_tampered_cached_executable_is_not_run() {
    let iso = Isolated::new("tampered");
    let cluster = iso.cluster();
    lumen::init_with(cluster.driver_config()).expect("the driver connects");
    // The driver uploaded its executable; the node caches it by hash in the session folder.
    let bin = iso.dir.join("bin");
    let cached: Vec<PathBuf> = std::fs::read_dir(&bin)
        .expect("the executable cache")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().is_some_and(|n| n.len() == 64))
        .collect();
    assert_eq!(
        cached.len(),
        1,
        "one cached executable in {bin:?}: {cached:?}"
    );
    // Someone who can write there replaces it before the job's first worker starts.
    let marker = iso.dir.join("planted-ran");
    std::fs::write(
        &cached[0],
        format!("#!/bin/sh\necho planted > '{}'\n", marker.display()),
    )
    .expect("plant");
    let e = lumen::get_timeout(&double::remote(1), TASK_LIMIT)
        .expect_err("no worker can start from a changed executable");
    mentions(
        "a task whose worker would start from a changed executable",
        &e.to_string(),
        &["changed on disk", "restart the driver"],
    );
    assert!(!marker.exists(), "the planted executable ran");
    assert!(!cached[0].exists(), "the changed file is deleted");
    // The next driver uploads it again, and its tasks run.
    lumen::shutdown();
    lumen::init_with(cluster.driver_config()).expect("the next driver connects");
    still_serving("a tampered cached executable");
    assert!(!marker.exists(), "the planted executable ran");
}

#[test]
fn under_many_unauthenticated_connections_new_peers_prove_their_address_first() {
    let iso = Isolated::new("retry");
    let cluster = iso.cluster();
    // More connections waiting to authenticate than half the node's cap: the later ones are
    // asked to prove their address (a QUIC retry) before the node keeps any state for them.
    let squatters = lumen::__probe::Squatters::start(head(cluster), 40).expect("squatters");
    assert!(
        squatters.report().connections >= 40,
        "{:?}",
        squatters.report()
    );
    assert!(
        cluster.address_checks(0) > 0,
        "no peer was asked to prove its address while 40 connections waited"
    );
    // A real driver (asked to prove its address too, while the squatters hold their places)
    // is served.
    lumen::init_with(cluster.driver_config()).expect("the driver connects while squatted");
    still_serving("40 unauthenticated connections");
    squatters.stop();
}
