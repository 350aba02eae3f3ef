//! `lumen::shutdown()`: blocked reads end with `Error::Shutdown`, and lumen can start again;
//! `init` and `shutdown` work from async code too. Starting and stopping affect the whole
//! process, so the tests take [`LOCK`] and run one at a time. They run embedded here and on a
//! two-node local cluster (whose worker processes must go with it) in a child process.

mod common;

use std::sync::{Mutex, MutexGuard};
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

/// Serializes the tests of this binary: one runtime per process.
static LOCK: Mutex<()> = Mutex::new(());

fn lock() -> MutexGuard<'static, ()> {
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
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
    let _lock = lock();
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

/// `init` and `shutdown` called on a thread that runs a tokio runtime (tokio refuses to start or
/// stop a runtime there with its blocking calls): both work, on either kind of runtime, and the
/// async twins work in between.
#[test]
fn init_and_shutdown_work_inside_a_tokio_runtime() {
    let _lock = lock();
    let runtimes = [
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a current-thread runtime"),
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a multi-thread runtime"),
    ];
    for rt in runtimes {
        rt.block_on(async {
            assert!(!lumen::is_initialized());
            lumen::init_with(config()).expect("init in a runtime");
            assert!(lumen::is_initialized());
            assert_eq!(square::remote(7).await.unwrap(), 49);
            assert_eq!(lumen::nodes_async().await.len(), common::nodes());
            assert_eq!(
                lumen::cluster_resources_async().await["CPU"],
                2.0 * common::nodes() as f64
            );
            lumen::shutdown();
            assert!(!lumen::is_initialized());
        });
        // And from a task the runtime runs, which may be on another of its threads.
        rt.block_on(async {
            tokio::spawn(async {
                lumen::init_with(config()).expect("init in a task");
                assert_eq!(square::remote(3).await.unwrap(), 9);
                lumen::shutdown();
            })
            .await
            .expect("the task");
        });
        assert!(!lumen::is_initialized());
    }
}
