//! `lumen::shutdown()`: blocked reads end with `Error::Shutdown`, and lumen can start again.
//! One test per process: shutting down affects the whole process. It runs embedded here and on
//! a two-node local cluster (whose worker processes must go with it) in a child process.

mod common;

use std::time::{Duration, Instant};

/// Two CPUs per node; a two-node local cluster in the cluster-mode child.
fn config() -> lumen::Config {
    let config = lumen::Config::default().num_cpus(2.0);
    if common::on_cluster() {
        config.local_cluster(common::nodes())
    } else {
        config
    }
}

/// The test below again, on a two-node local cluster with worker processes.
#[test]
fn suite_on_a_local_cluster() {
    common::rerun_on_a_local_cluster("suite_on_a_local_cluster");
}

#[lumen::remote]
fn slow(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

#[lumen::remote]
fn square(x: i64) -> i64 {
    x * x
}

#[test]
fn shutdown_ends_blocked_reads_and_lumen_can_start_again() {
    assert!(!lumen::is_initialized());
    assert!(matches!(
        lumen::get(&lumen::put(1u8)),
        Err(lumen::Error::NotInitialized)
    ));

    lumen::init_with(config()).expect("first init");
    assert!(matches!(
        lumen::init(),
        Err(lumen::Error::AlreadyInitialized)
    ));
    assert_eq!(lumen::get(&square::remote(7)).unwrap(), 49);

    // A read blocked on a task that will not finish before the shutdown.
    let pending = slow::remote(30_000);
    let reader = std::thread::spawn(move || lumen::get(&pending));
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    lumen::shutdown();
    assert!(!lumen::is_initialized());
    let result = reader.join().expect("reader thread");
    assert!(
        matches!(result, Err(lumen::Error::Shutdown { .. })),
        "{result:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "shutdown must not wait for running tasks"
    );

    // A ref from the old runtime is refused, not waited for forever.
    let old = lumen::put(5u8);
    lumen::init_with(config()).expect("second init");
    assert!(matches!(
        lumen::get(&old),
        Err(lumen::Error::ObjectLost { .. })
    ));
    assert_eq!(lumen::get(&square::remote(9)).unwrap(), 81);
    assert_eq!(
        lumen::cluster_resources()["CPU"],
        2.0 * common::nodes() as f64
    );
    lumen::shutdown();
    lumen::shutdown(); // harmless when not running
}
