//! Helpers shared by the integration test binaries.
//!
//! lumen has one global runtime per process and the tests of one binary run on parallel
//! threads, so every test calls [`init`] first: the first call starts lumen with that binary's
//! config, the others wait for it and do nothing.
//!
//! **Both modes.** A binary whose tests mean something embedded and on a cluster runs them
//! twice: in its own process on the embedded one-node cluster, and, through
//! [`rerun_on_a_local_cluster`], in a child process where [`init`] starts a two-node local
//! cluster whose tasks and actors run in worker processes (`Config::local_cluster(2)`). Each
//! node gets the binary's config, so the cluster has twice its resources; [`nodes`] says how
//! many there are.

#![allow(dead_code)]

pub mod infeasible;
pub mod runtime_env;
pub mod session;

use std::path::PathBuf;
use std::sync::{OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

static INIT: OnceLock<()> = OnceLock::new();

/// Set in the child process that runs a binary's tests on a local cluster.
const CLUSTER_MODE: &str = "LUMEN_TEST_LOCAL_CLUSTER";

/// Nodes of the local cluster the tests run on in cluster mode.
const CLUSTER_NODES: usize = 2;

/// Whether this process runs its tests on a local cluster (see the module docs).
pub fn on_cluster() -> bool {
    std::env::var_os(CLUSTER_MODE).is_some()
}

/// How many nodes [`init`] starts: one embedded, or the local cluster's.
pub fn nodes() -> usize {
    if on_cluster() {
        CLUSTER_NODES
    } else {
        1
    }
}

/// Whether `id` (a node id as text, or a prefix of one) names a node of the cluster.
pub fn is_node(id: &str) -> bool {
    !id.is_empty()
        && lumen::nodes()
            .iter()
            .any(|n| n.node_id.to_string().starts_with(id))
}

/// Starts lumen once for this test binary (the first caller's config wins): embedded, or on a
/// local cluster of two nodes with that config each in cluster mode.
pub fn init(config: lumen::Config) {
    INIT.get_or_init(|| {
        // Before the first worker process starts: they inherit where to count.
        scratch();
        let config = if on_cluster() {
            config.local_cluster(CLUSTER_NODES)
        } else {
            config
        };
        lumen::init_with(config).expect("lumen::init_with failed");
    });
    assert!(lumen::is_initialized());
}

/// Runs every other test of this binary again, on a two-node local cluster with worker
/// processes, in a child process; fails with the child's report if any test fails there (or
/// if it runs none). `this` is the name of the calling test, which the child skips. In the
/// child itself it does nothing.
pub fn rerun_on_a_local_cluster(this: &str) {
    if on_cluster() {
        return;
    }
    let exe = std::env::current_exe().expect("test binary");
    let mut child = std::process::Command::new(exe)
        .args(["--skip", this])
        .env(CLUSTER_MODE, "1")
        // Its own scratch folder: its counts are not this process's.
        .env_remove(SCRATCH)
        .env_remove("LUMEN_ADDRESS")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start the cluster-mode run");
    let pipe = |r: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut r) = r {
                let _ = r.read_to_string(&mut text);
            }
            text
        })
    };
    let out = pipe(
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
    );
    let err = pipe(
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
    );
    let deadline = Instant::now() + Duration::from_secs(20 * 60);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the cluster-mode run") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let (out, err) = (
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default(),
    );
    let summary = out
        .lines()
        .rfind(|l| l.starts_with("test result:"))
        .unwrap_or("no summary")
        .to_string();
    eprintln!("on a local cluster of {CLUSTER_NODES} nodes: {summary}");
    match status {
        Some(s) if s.success() && !summary.contains(" 0 passed") => {}
        Some(s) => panic!(
            "the tests failed on a local cluster ({s}):\n{}\n--- stderr (tail)\n{}",
            tail(&out, 200),
            tail(&err, 80)
        ),
        None => panic!(
            "the tests did not finish on a local cluster within 20 minutes:\n{}\n--- stderr \
             (tail)\n{}",
            tail(&out, 200),
            tail(&err, 80)
        ),
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

static ISOLATION: RwLock<()> = RwLock::new(());

/// Held by ordinary tests: they may run alongside each other, but not alongside an
/// [`exclusive`] test.
pub fn shared() -> RwLockReadGuard<'static, ()> {
    ISOLATION.read().unwrap_or_else(|e| e.into_inner())
}

/// Held by tests that measure the whole node (concurrency limits, available resources, store
/// contents): no other test of the binary runs while it is held.
pub fn exclusive() -> RwLockWriteGuard<'static, ()> {
    ISOLATION.write().unwrap_or_else(|e| e.into_inner())
}

/// Polls `cond` every 10 ms until it holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A folder shared by this test process and the worker processes of its cluster (they inherit
/// its path through the environment, as they are started by nodes in this process). Tasks and
/// actors count things there, so that tests count the same way in both modes.
pub fn scratch() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Some(dir) = std::env::var_os(SCRATCH) {
            return PathBuf::from(dir);
        }
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir = std::env::temp_dir().join(format!("lumen-test-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create the scratch folder");
        std::env::set_var(SCRATCH, &dir);
        // The process that made the folder removes it when it exits (worker processes and a
        // rerun child find it in the environment above and leave it alone).
        // SAFETY: registers a plain function with no arguments to run at exit.
        unsafe { libc::atexit(remove_scratch) };
        dir
    })
    .clone()
}

/// Removes this test process's [`scratch`] folder; run at exit.
extern "C" fn remove_scratch() {
    if let Some(dir) = std::env::var_os(SCRATCH) {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// The environment variable naming [`scratch`].
const SCRATCH: &str = "LUMEN_TEST_SCRATCH";

/// Runs `f` on the numbers kept in file `name` of the scratch folder, under an exclusive lock
/// (held across processes).
pub fn locked<const N: usize, R>(name: &str, f: impl FnOnce(&mut [u64; N]) -> R) -> R {
    use std::io::{Read, Seek, Write};
    use std::os::unix::io::AsRawFd;
    let path = scratch().join(name);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .expect("open a counter file");
    // SAFETY: flock on a descriptor this function owns.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
    assert_eq!(rc, 0, "lock {}", path.display());
    let mut text = String::new();
    file.read_to_string(&mut text).expect("read a counter file");
    let mut values = [0u64; N];
    for (v, word) in values.iter_mut().zip(text.split_whitespace()) {
        *v = word.parse().unwrap_or(0);
    }
    let out = f(&mut values);
    let line: Vec<String> = values.iter().map(u64::to_string).collect();
    file.set_len(0).expect("truncate a counter file");
    file.rewind().expect("rewind a counter file");
    file.write_all(line.join(" ").as_bytes())
        .expect("write a counter file");
    // Unlocked when the file closes.
    out
}

/// Opens gate `name`: tasks waiting at it (see [`gate_is_open`]), in any process of the test's
/// cluster, go on.
pub fn open_gate(name: &str) {
    std::fs::write(scratch().join(format!("gate-{name}")), b"").expect("open a gate");
}

/// Whether gate `name` was opened (a file in the scratch folder, so worker processes see it).
pub fn gate_is_open(name: &str) -> bool {
    scratch().join(format!("gate-{name}")).exists()
}

/// Counts one occurrence of `name` (in any process of the test's cluster); returns the count.
pub fn tally(name: &str) -> usize {
    locked::<1, _>(&format!("tally-{name}"), |v| {
        v[0] += 1;
        v[0] as usize
    })
}

/// How many occurrences of `name` were counted.
pub fn tally_count(name: &str) -> usize {
    locked::<1, _>(&format!("tally-{name}"), |v| v[0] as usize)
}

/// Counts how many tasks are inside a section at once, and the most ever seen, across every
/// process of the test's cluster (the counts live in the scratch folder).
#[derive(Debug)]
pub struct Gauge {
    name: &'static str,
}

impl Gauge {
    /// The gauge called `name` (unique in its test binary).
    pub const fn new(name: &'static str) -> Self {
        Gauge { name }
    }

    fn file(&self) -> String {
        format!("gauge-{}", self.name)
    }

    /// Enters the section; the guard leaves it when dropped.
    pub fn enter(&self) -> GaugeGuard<'_> {
        locked::<3, _>(&self.file(), |v| {
            v[0] += 1;
            v[1] = v[1].max(v[0]);
            v[2] += 1;
        });
        GaugeGuard(self)
    }

    /// Tasks inside now.
    pub fn current(&self) -> usize {
        locked::<3, _>(&self.file(), |v| v[0] as usize)
    }

    /// The most tasks ever inside at once.
    pub fn max(&self) -> usize {
        locked::<3, _>(&self.file(), |v| v[1] as usize)
    }

    /// How many times the section was entered.
    pub fn total(&self) -> usize {
        locked::<3, _>(&self.file(), |v| v[2] as usize)
    }

    /// Enters, then stays until `target` tasks have been inside together (or `patience` passes),
    /// then lingers `linger` more so that any task admitted beyond the limit would be seen.
    /// Returns how many were inside when it stopped waiting.
    pub fn rendezvous(&self, target: usize, patience: Duration, linger: Duration) -> usize {
        let _g = self.enter();
        let deadline = Instant::now() + patience;
        // `max`, not `current`: once the target was reached, the first to leave must not keep
        // the others waiting.
        while self.max() < target && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let seen = self.current();
        std::thread::sleep(linger);
        seen
    }
}

/// Leaves a [`Gauge`]'s section on drop.
#[derive(Debug)]
pub struct GaugeGuard<'a>(&'a Gauge);

impl Drop for GaugeGuard<'_> {
    fn drop(&mut self) {
        locked::<3, _>(&self.0.file(), |v| v[0] = v[0].saturating_sub(1));
    }
}

/// A generous bound for anything that should finish "soon" on a loaded machine.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// `lumen::get` with a generous timeout, so that a hang fails the test instead of the run.
pub fn get<T: serde::de::DeserializeOwned + 'static>(r: &lumen::ObjectRef<T>) -> lumen::Result<T> {
    lumen::get_timeout(r, PATIENCE)
}

/// Asserts that `r` failed with `Error::InvalidArgument` whose message mentions each of
/// `fragments` (what was refused and why).
pub fn expect_invalid<T: std::fmt::Debug + serde::de::DeserializeOwned + 'static>(
    r: lumen::ObjectRef<T>,
    fragments: &[&str],
) {
    // Refused at submission: no waiting for a timeout.
    match lumen::get_timeout(&r, PATIENCE) {
        Err(lumen::Error::InvalidArgument { message }) => {
            for f in fragments {
                assert!(
                    message.contains(f),
                    "message {message:?} should mention {f:?}"
                );
            }
        }
        other => panic!("expected Error::InvalidArgument mentioning {fragments:?}, got {other:?}"),
    }
}

/// How every test that starts its own runtime begins: takes `lock` (its binary's
/// one-driver-at-a-time lock, even if a failed test poisoned it), sends lumen's logs to the
/// test's output (filtered by `RUST_LOG`), and shuts down any driver a test that failed half-way
/// left behind.
pub fn one_driver_at_a_time(
    lock: &'static std::sync::Mutex<()>,
) -> std::sync::MutexGuard<'static, ()> {
    let guard = lock.lock().unwrap_or_else(|e| e.into_inner());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    lumen::shutdown();
    guard
}
