//! A real multi-process cluster, started, inspected and stopped with the `lumen` CLI.
//!
//! Every test runs its commands with `LUMEN_SESSION_DIR` set to a fresh temporary folder of its
//! own, so it never touches a real user's cluster and the tests can run in parallel: each has its
//! own session (node records, logs, binary cache) and its own head on a free port (`--port 0`).
//! [`Session`]'s `Drop` runs `lumen stop` for that folder, so whatever a test starts is stopped,
//! on failure too.
//!
//! One test is also the cluster's driver (`lumen::init_with` in this process, whose remote
//! functions run in worker processes started by the daemons from a copy of this test binary).
//! lumen has one driver runtime per process, so such tests take [`DRIVER`] first.
//!
//! **Modes.** Cluster only, by nature: it is about `lumen start` daemons and their worker
//! processes.

// `new()` without arguments is the actor constructor; a `Default` impl would add nothing.
#![allow(clippy::new_without_default)]

mod common;
// The dashboard and metrics endpoints of `lumen start` nodes (tests/cli/dashboard.rs).
#[path = "cli/dashboard.rs"]
mod dashboard;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The `lumen` CLI built with this test.
const LUMEN: &str = env!("CARGO_BIN_EXE_lumen");

/// Serializes the tests that make this process a driver: one driver runtime per process.
static DRIVER: Mutex<()> = Mutex::new(());

/// Longest any one CLI command may take (`lumen start` itself waits up to 60 s for its node).
const COMMAND_LIMIT: Duration = Duration::from_secs(90);

/// A generous bound for a task: a bug shows as an error, not a hang.
const TASK_LIMIT: Duration = Duration::from_secs(60);

/// How long processes may take to disappear after `lumen stop`.
const EXIT_LIMIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------------

/// Whether process `pid` is running. A zombie (exited, not yet reaped) counts as gone: a daemon
/// is orphaned once `lumen start` returns, and its reaper may take a moment.
fn running(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // `pid (comm) S ...`: the state follows the last ')' (comm may contain anything).
    let state = stat
        .rfind(')')
        .and_then(|i| stat[i + 1..].trim_start().chars().next());
    !matches!(state, Some('Z') | Some('X') | None)
}

/// The executable of process `pid`, without the " (deleted)" the kernel appends to a replaced
/// file.
fn exe_of(pid: u32) -> Option<String> {
    let link = std::fs::read_link(format!("/proc/{pid}/exe")).ok()?;
    let text = link.to_string_lossy().into_owned();
    Some(text.trim_end_matches(" (deleted)").to_string())
}

/// The pid of every process in `/proc`.
fn all_pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
        .collect()
}

/// Every running process of the session in `dir`: the worker processes (started from the
/// session's binary cache) and the `lumen` daemons started with this session folder.
fn session_processes(dir: &Path) -> Vec<u32> {
    let dir_text = dir.to_string_lossy().into_owned();
    let lumen = std::fs::canonicalize(LUMEN)
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|_| LUMEN.to_string());
    let marker = format!("LUMEN_SESSION_DIR={dir_text}");
    let mut out = Vec::new();
    for pid in all_pids() {
        if pid == std::process::id() || !running(pid) {
            continue;
        }
        let Some(exe) = exe_of(pid) else { continue };
        let ours = if exe.starts_with(&format!("{dir_text}/")) {
            true
        } else if exe == lumen || exe == LUMEN {
            std::fs::read(format!("/proc/{pid}/environ"))
                .map(|env| env.split(|&b| b == 0).any(|v| v == marker.as_bytes()))
                .unwrap_or(false)
        } else {
            false
        };
        if ours {
            out.push(pid);
        }
    }
    out
}

/// Makes `dir` with mode 0700 (a session folder others can write to is refused).
fn private_dir(dir: &Path) {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .expect("create the session folder");
}

/// Every process whose command line contains `text`, as `(pid, command line)`.
fn command_lines_containing(text: &str) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    for pid in all_pids() {
        let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let line = String::from_utf8_lossy(&raw).replace('\0', " ");
        if line.contains(text) {
            out.push((pid, line));
        }
    }
    out
}

/// Resident and peak resident memory of process `pid`, in KiB (`VmRSS`, `VmHWM`).
fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("process status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Polls `cond` every 50 ms until it holds or `timeout` passes; returns whether it held.
fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What a finished command did.
#[derive(Debug)]
struct Run {
    status: ExitStatus,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

impl Run {
    fn ok(&self) -> bool {
        self.status.success()
    }

    /// Panics with the command's output unless it exited 0.
    fn expect_ok(self, what: &str) -> Run {
        assert!(self.ok(), "{what} failed: {self}");
        self
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} after {:?}\n--- stdout\n{}--- stderr\n{}",
            self.status, self.elapsed, self.stdout, self.stderr
        )
    }
}

/// Runs `cmd` to completion, killing it (and failing the test) if it takes longer than `limit`.
fn run_bounded(mut cmd: Command, limit: Duration) -> Run {
    let what = format!("{cmd:?}");
    let started = Instant::now();
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(Ok(out)) => Run {
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            elapsed: started.elapsed(),
        },
        Ok(Err(e)) => panic!("cannot wait for {what}: {e}"),
        Err(_) => {
            // SAFETY: kill(2) on the child this function started (not yet reaped: its waiter
            // thread is still blocked in wait).
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGKILL);
            }
            panic!("{what} did not finish within {limit:?}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// A session: one temporary session folder and what was started in it
// ---------------------------------------------------------------------------------------------

/// What `lumen start` records of a node (`$LUMEN_SESSION_DIR/nodes/<pid>.json`).
#[derive(Debug, Clone, Deserialize)]
struct NodeRecord {
    pid: u32,
    address: String,
    head: bool,
    gcs: String,
    token: String,
    node_id: String,
}

/// `lumen status --format json`, with node ids as hex text.
#[derive(Debug, Deserialize)]
struct StatusJson<Id = String> {
    address: String,
    nodes: Vec<NodeJson<Id>>,
    actors: Vec<serde_json::Value>,
}

/// One node of [`StatusJson`].
#[derive(Debug, Deserialize)]
struct NodeJson<Id = String> {
    node_id: Id,
    address: String,
    head: bool,
    alive: bool,
    total: BTreeMap<String, f64>,
    available: BTreeMap<String, f64>,
    /// Each shape waiting there, with how many wait.
    demands: serde_json::Value,
}

impl StatusJson {
    /// Parses the JSON, accepting a node id given as hex text or as a (128-bit) JSON number.
    fn parse(text: &str) -> StatusJson {
        fn parse<Id: DeserializeOwned>(text: &str) -> serde_json::Result<StatusJson<Id>> {
            serde_json::from_str(text)
        }
        if let Ok(s) = parse::<String>(text) {
            return s;
        }
        let s = parse::<u128>(text)
            .unwrap_or_else(|e| panic!("lumen status --format json: {e}:\n{text}"));
        StatusJson {
            address: s.address,
            actors: s.actors,
            nodes: s
                .nodes
                .into_iter()
                .map(|n| NodeJson {
                    node_id: format!("{:032x}", n.node_id),
                    address: n.address,
                    head: n.head,
                    alive: n.alive,
                    total: n.total,
                    available: n.available,
                    demands: n.demands,
                })
                .collect(),
        }
    }

    fn node(&self, node_id: &str) -> &NodeJson {
        self.nodes
            .iter()
            .find(|n| n.node_id == node_id)
            .unwrap_or_else(|| panic!("node {node_id} is not in the status: {self:#?}"))
    }
}

/// A fresh session folder. Dropping it runs `lumen stop` for it, checks (by `/proc`) that
/// nothing of the session still runs, ends any leftover by pid, and removes the folder.
struct Session {
    dir: PathBuf,
}

impl Session {
    fn new(tag: &str) -> Session {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = std::env::temp_dir().join(format!(
            "lumen-cli-test-{tag}-{}-{}-{nanos}",
            std::process::id(),
            COUNT.fetch_add(1, Ordering::Relaxed)
        ));
        private_dir(&dir);
        Session { dir }
    }

    /// A command with this session's environment (and none of the caller's cluster settings).
    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(program);
        self.isolate(&mut cmd);
        cmd
    }

    /// Gives `cmd` this session's environment, and none of the caller's cluster settings.
    fn isolate(&self, cmd: &mut Command) {
        cmd.env("LUMEN_SESSION_DIR", &self.dir)
            .env_remove("LUMEN_ADDRESS")
            .env_remove("LUMEN_TOKEN")
            .env_remove("LUMEN_CACHE_DIR")
            .env_remove("LUMEN_NODE_TIMEOUT_MS")
            .env_remove("LUMEN_WORKER");
    }

    /// Runs `lumen <args>` in this session.
    fn lumen(&self, args: &[&str]) -> Run {
        let mut cmd = self.command(LUMEN);
        cmd.args(args);
        run_bounded(cmd, COMMAND_LIMIT)
    }

    /// The node records of this session (only those of running daemons).
    fn records(&self) -> Vec<NodeRecord> {
        let Ok(dir) = std::fs::read_dir(self.dir.join("nodes")) else {
            return Vec::new();
        };
        let mut out: Vec<NodeRecord> = dir
            .flatten()
            .filter_map(|e| std::fs::read_to_string(e.path()).ok())
            .filter_map(|text| serde_json::from_str(&text).ok())
            .filter(|r: &NodeRecord| running(r.pid))
            .collect();
        out.sort_by_key(|r| (!r.head, r.pid));
        out
    }

    /// `lumen start --head --port 0 <extra>`; returns the head's record (and checks what the
    /// command printed against it).
    fn start_head(&self, extra: &[&str]) -> NodeRecord {
        let mut args = vec!["start", "--head", "--port", "0"];
        args.extend_from_slice(extra);
        let out = self.lumen(&args).expect_ok("lumen start --head");
        let line = out
            .stdout
            .lines()
            .find(|l| l.starts_with("Started the lumen head node "))
            .unwrap_or_else(|| panic!("lumen start --head printed no address: {out}"));
        // "Started the lumen head node <id> at <address>."
        let printed = line
            .rsplit(" at ")
            .next()
            .map(|a| a.trim_end_matches('.'))
            .unwrap_or_default()
            .to_string();
        let head = self
            .records()
            .into_iter()
            .find(|r| r.head)
            .unwrap_or_else(|| panic!("no head record after lumen start: {out}"));
        assert_eq!(head.address, printed, "printed and recorded address: {out}");
        assert_eq!(head.gcs, head.address);
        assert!(line.contains(&head.node_id), "{line}");
        assert!(
            out.stdout
                .contains(&format!("lumen start --address {}", head.gcs)),
            "lumen start --head says how to join: {out}"
        );
        assert_eq!(head.token.len(), 64, "{head:?}");
        head
    }

    /// `lumen start --address <gcs> <extra>` (token found through the session folder); returns
    /// the new node's record.
    fn join(&self, gcs: &str, extra: &[&str]) -> NodeRecord {
        let before: BTreeSet<u32> = self.records().iter().map(|r| r.pid).collect();
        let mut args = vec!["start", "--address", gcs];
        args.extend_from_slice(extra);
        let out = self.lumen(&args).expect_ok("lumen start --address");
        let node = self
            .records()
            .into_iter()
            .find(|r| !before.contains(&r.pid))
            .unwrap_or_else(|| panic!("no new node record after lumen start: {out}"));
        assert!(!node.head);
        assert_eq!(node.gcs, gcs);
        assert!(
            out.stdout.contains(&node.node_id) && out.stdout.contains(gcs),
            "lumen start --address says which node joined where: {out}"
        );
        node
    }

    /// `lumen status --format json`, parsed.
    fn status(&self) -> StatusJson {
        let out = self
            .lumen(&["status", "--format", "json"])
            .expect_ok("lumen status --format json");
        StatusJson::parse(&out.stdout)
    }

    /// The last lines of every node log of this session (for failure messages).
    fn logs(&self) -> String {
        let mut text = String::new();
        if let Ok(dir) = std::fs::read_dir(self.dir.join("logs")) {
            for entry in dir.flatten() {
                let log = std::fs::read_to_string(entry.path()).unwrap_or_default();
                let lines: Vec<&str> = log.lines().collect();
                text += &format!("--- {}\n", entry.path().display());
                for l in &lines[lines.len().saturating_sub(40)..] {
                    text += l;
                    text.push('\n');
                }
            }
        }
        text
    }

    /// `lumen stop`, then waits until no process of the session runs; returns the leftovers.
    fn stop(&self) -> (Run, Vec<u32>) {
        let out = self.lumen(&["stop"]);
        let mut left = Vec::new();
        wait_until(EXIT_LIMIT, || {
            left = session_processes(&self.dir);
            left.is_empty()
        });
        (out, left)
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let panicking = std::thread::panicking();
        if panicking {
            eprintln!("session {} node logs:\n{}", self.dir.display(), self.logs());
        }
        let (out, left) = self.stop();
        if !out.ok() {
            eprintln!("lumen stop failed while cleaning up: {out}");
        }
        for pid in &left {
            eprintln!(
                "process {pid} of {} outlived lumen stop; killing it",
                self.dir.display()
            );
            // SAFETY: kill(2) on a process that session_processes identified as this
            // session's (its executable or environment names the session folder).
            unsafe {
                libc::kill(*pid as libc::pid_t, libc::SIGKILL);
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        if !panicking {
            assert!(
                out.ok() && left.is_empty(),
                "cleanup: lumen stop: {out}\nleft running: {left:?}"
            );
        }
    }
}

/// This process as the cluster's driver: holds [`DRIVER`]; dropping it shuts lumen down and
/// forgets the session folder.
struct Driver {
    _lock: MutexGuard<'static, ()>,
}

impl Driver {
    fn connect(session: &Session, address: &str, token: &str) -> Driver {
        let lock = common::one_driver_at_a_time(&DRIVER);
        std::env::set_var("LUMEN_SESSION_DIR", &session.dir);
        let driver = Driver { _lock: lock };
        lumen::init_with(lumen::Config::default().address(address).token(token))
            .unwrap_or_else(|e| panic!("lumen::init_with({address}): {e}\n{}", session.logs()));
        driver
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        lumen::shutdown();
        std::env::remove_var("LUMEN_SESSION_DIR");
    }
}

/// Node ids made in one process share their first half; the example prints a short form.
fn short(id: &str) -> String {
    format!("{}..{}", &id[..6], &id[20..28])
}

/// The path of an example built by `cargo test` (next to `target/<profile>/deps/cli-<hash>`).
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile> directory");
    profile_dir
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX))
}

/// A token of the right shape that is not `token`.
fn wrong_token(token: &str) -> String {
    token
        .chars()
        .map(|c| if c == '0' { '1' } else { '0' })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Remote functions
// ---------------------------------------------------------------------------------------------

/// The node that ran this and the process it ran in.
#[lumen::remote]
fn where_am_i(i: u64) -> (u64, String, u32) {
    (
        i,
        lumen::runtime_context().node_id().to_string(),
        std::process::id(),
    )
}

/// An actor that says where it lives.
pub struct Located;

#[lumen::remote]
impl Located {
    pub fn new() -> Self {
        Located
    }

    pub fn node(&self) -> String {
        lumen::runtime_context().node_id().to_string()
    }
}

/// Prints `text`; returns the process it ran in.
#[lumen::remote]
fn print_and_pid(text: String) -> u32 {
    println!("{text}");
    std::process::id()
}

/// Reads the file at `path` (relative: in the task's working directory); returns what it holds
/// and where the task ran.
#[lumen::remote]
fn read_relative(path: String) -> (Option<String>, String) {
    (
        std::fs::read_to_string(&path).ok(),
        std::env::current_dir()
            .map(|d| d.display().to_string())
            .unwrap_or_default(),
    )
}

/// An actor that prints what it is told.
pub struct Talker;

#[lumen::remote]
impl Talker {
    pub fn new() -> Self {
        Talker
    }

    pub fn say(&self, what: String) {
        println!("{what}");
    }
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

/// The issue's "done when": a head and a node started with the CLI, this process as driver
/// placing tasks on each by custom resource, `lumen status` showing both, the example program
/// run against the same cluster, and `lumen stop` leaving no daemon and no worker behind.
#[test]
fn two_node_cluster_runs_tasks_and_the_example_then_stops_clean() {
    let session = Session::new("flow");
    let t = Instant::now();
    let head = session.start_head(&["--num-cpus", "2", "--resources", r#"{"node0": 2}"#]);
    let node = session.join(
        &head.gcs,
        &["--num-cpus", "2", "--resources", r#"{"node1": 2}"#],
    );
    eprintln!("flow: head and node started in {:?}", t.elapsed());
    assert_ne!(head.node_id, node.node_id);
    assert_ne!(head.pid, node.pid);
    assert_eq!(node.token, head.token, "the node found the cluster's token");

    // The cluster as `lumen status --format json` sees it.
    let status = session.status();
    assert_eq!(status.address, head.gcs);
    assert_eq!(status.nodes.len(), 2, "{status:#?}");
    let (s0, s1) = (status.node(&head.node_id), status.node(&node.node_id));
    assert!(s0.head && s0.alive && s0.address == head.address, "{s0:?}");
    assert!(!s1.head && s1.alive && s1.address == node.address, "{s1:?}");
    assert_eq!(s0.total.get("node0"), Some(&2.0), "{s0:?}");
    assert_eq!(s0.total.get("CPU"), Some(&2.0), "{s0:?}");
    assert_eq!(s0.total.get("node1"), None, "{s0:?}");
    assert_eq!(s1.total.get("node1"), Some(&2.0), "{s1:?}");
    assert_eq!(s1.total.get("CPU"), Some(&2.0), "{s1:?}");
    assert_eq!(s1.available.get("node1"), Some(&2.0), "{s1:?}");
    assert!(status.actors.is_empty(), "{status:#?}");

    // This process as the driver: tasks pinned by custom resource land on their node.
    let mut worker_pids = BTreeSet::new();
    {
        let t = Instant::now();
        let _driver = Driver::connect(&session, &head.gcs, &head.token);
        eprintln!("flow: driver connected in {:?}", t.elapsed());
        let nodes = lumen::nodes();
        assert_eq!(nodes.iter().filter(|n| n.alive).count(), 2, "{nodes:?}");
        let refs: Vec<_> = (0..6u64)
            .map(|i| {
                where_am_i::options()
                    .resource(format!("node{}", i % 2), 1.0)
                    .remote(i)
            })
            .collect();
        let mut ran_on: BTreeMap<u64, String> = BTreeMap::new();
        for r in &refs {
            let (i, node_id, pid) = lumen::get_timeout(r, TASK_LIMIT)
                .unwrap_or_else(|e| panic!("task: {e}\n{}", session.logs()));
            assert_ne!(pid, std::process::id(), "tasks run in worker processes");
            assert_ne!(
                pid, head.pid,
                "tasks run in worker processes, not the daemon"
            );
            assert_ne!(
                pid, node.pid,
                "tasks run in worker processes, not the daemon"
            );
            worker_pids.insert(pid);
            ran_on.insert(i, node_id);
        }
        eprintln!(
            "flow: driver connected and 6 tasks ran in {:?}",
            t.elapsed()
        );
        for (i, node_id) in &ran_on {
            let expected = if i % 2 == 0 {
                &head.node_id
            } else {
                &node.node_id
            };
            assert_eq!(
                node_id, expected,
                "task {i} ran on the wrong node: {ran_on:?}"
            );
        }
        assert_ne!(ran_on[&0], ran_on[&1]);
        // One worker process per node for this job, none shared between nodes.
        assert!(worker_pids.len() >= 2, "worker pids {worker_pids:?}");
        let ids: BTreeSet<&String> = status.nodes.iter().map(|n| &n.node_id).collect();
        assert_eq!(
            ids,
            ran_on.values().collect::<BTreeSet<_>>(),
            "the nodes tasks ran on are the nodes of lumen status"
        );

        // The table: both nodes, and the custom resources' totals.
        let table = session.lumen(&["status"]).expect_ok("lumen status");
        for id in [&head.node_id, &node.node_id] {
            assert!(table.stdout.contains(id.as_str()), "{table}");
        }
        assert!(table.stdout.contains("/2.0 node0"), "{table}");
        assert!(table.stdout.contains("/2.0 node1"), "{table}");
        assert!(table.stdout.contains("/4.0 CPU"), "{table}");
        assert!(table.stdout.contains("(no dead nodes)"), "{table}");
        let list = session
            .lumen(&["list", "nodes"])
            .expect_ok("lumen list nodes");
        for id in [&head.node_id, &node.node_id] {
            let line = list
                .stdout
                .lines()
                .find(|l| l.contains(id.as_str()))
                .unwrap_or_else(|| panic!("node {id} missing: {list}"));
            assert!(line.contains("ALIVE"), "{list}");
        }
        // The task events: `lumen list tasks` shows the six attempts finished, on both nodes,
        // in the worker processes (each process reports within about a second).
        let my_tasks = || -> Vec<serde_json::Value> {
            let out = session
                .lumen(&[
                    "list",
                    "tasks",
                    "--format",
                    "json",
                    "--filter",
                    "state=FINISHED",
                ])
                .expect_ok("lumen list tasks --format json");
            let rows: Vec<serde_json::Value> = serde_json::from_str(&out.stdout)
                .unwrap_or_else(|e| panic!("lumen list tasks --format json: {e}: {}", out.stdout));
            rows.into_iter()
                .filter(|t| {
                    t["name"]
                        .as_str()
                        .is_some_and(|n| n.ends_with("::where_am_i"))
                })
                .filter(|t| t["state"] == "FINISHED")
                .collect()
        };
        let mut rows = Vec::new();
        let reported = wait_until(TASK_LIMIT, || {
            rows = my_tasks();
            rows.len() == 6 && rows.iter().all(|t| t["node_id"].is_string())
        });
        assert!(reported, "six finished where_am_i attempts: {rows:#?}");
        let task_nodes: BTreeSet<&str> =
            rows.iter().filter_map(|t| t["node_id"].as_str()).collect();
        assert_eq!(task_nodes.len(), 2, "{rows:#?}");
        for t in &rows {
            let pid = t["pid"].as_u64().map(|p| p as u32);
            assert!(pid.is_some_and(|p| worker_pids.contains(&p)), "{t}");
        }
        let summary = session
            .lumen(&["summary", "tasks"])
            .expect_ok("lumen summary tasks");
        let line = summary
            .stdout
            .lines()
            .find(|l| l.contains("::where_am_i"))
            .unwrap_or_else(|| panic!("where_am_i missing: {summary}"));
        assert!(line.contains("FINISHED: 6"), "{summary}");
        // `lumen timeline`: a Chrome trace with one complete event per attempt.
        let trace_path = session.dir.join("timeline.json");
        let trace_arg = trace_path.to_string_lossy().into_owned();
        session
            .lumen(&["timeline", "-o", &trace_arg])
            .expect_ok("lumen timeline");
        let text = std::fs::read_to_string(&trace_path).expect("the trace was written");
        let trace: serde_json::Value = serde_json::from_str(&text).expect("the trace is JSON");
        let spans = trace["traceEvents"]
            .as_array()
            .expect("traceEvents")
            .iter()
            .filter(|e| {
                e["ph"] == "X"
                    && e["name"]
                        .as_str()
                        .is_some_and(|n| n.ends_with("::where_am_i"))
            })
            .count();
        assert_eq!(spans, 6, "{text}");
        // `lumen list objects`: this driver owns the six results it still holds.
        let out = session
            .lumen(&[
                "list",
                "objects",
                "--format",
                "json",
                "--filter",
                "owned=true",
            ])
            .expect_ok("lumen list objects --format json");
        let objects: Vec<serde_json::Value> = serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("lumen list objects --format json: {e}: {}", out.stdout));
        let held_here = objects
            .iter()
            .filter(|o| o["pid"] == std::process::id() && o["state"] == "READY")
            .count();
        assert!(held_here >= 6, "{}", out.stdout);
        let summary = session
            .lumen(&["summary", "objects"])
            .expect_ok("lumen summary objects");
        assert!(summary.stdout.contains("LOCAL_REFERENCE"), "{summary}");
        // `lumen memory`: this driver's store and the worker processes' ones, per node.
        let out = session
            .lumen(&["memory", "--format", "json"])
            .expect_ok("lumen memory --format json");
        let stores: Vec<serde_json::Value> = serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("lumen memory --format json: {e}: {}", out.stdout));
        let mine = stores
            .iter()
            .find(|s| s["pid"] == std::process::id())
            .unwrap_or_else(|| panic!("this driver's store is listed: {}", out.stdout));
        assert!(mine["capacity"].as_u64().is_some_and(|c| c > 0), "{mine}");
        for pid in &worker_pids {
            assert!(
                stores.iter().any(|s| s["pid"] == *pid),
                "worker {pid}'s store: {}",
                out.stdout
            );
        }
        let table = session.lumen(&["memory"]).expect_ok("lumen memory");
        assert!(
            table.stdout.contains("IN MEMORY / CAP") && table.stdout.contains(&head.node_id[..8]),
            "{table}"
        );
        let bad = session.lumen(&["list", "tasks", "--filter", "colour=red"]);
        assert!(!bad.ok() && bad.stderr.contains("no field"), "{bad}");

        // The workers are recognised as this session's processes (what the checks after
        // `lumen stop` look for).
        let procs = session_processes(&session.dir);
        for pid in worker_pids.iter().chain([&head.pid, &node.pid]) {
            assert!(procs.contains(pid), "{pid} is not among {procs:?}");
        }
    } // lumen::shutdown()

    // The example program, a driver of its own, against the same cluster.
    let path = example("custom_resources");
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --examples` first (`cargo test` builds the examples \
         only when run without target filters such as `--test cli`)",
        path.display()
    );
    let mut cmd = session.command(&path);
    cmd.env("LUMEN_ADDRESS", &head.gcs);
    let out = run_bounded(cmd, Duration::from_secs(180));
    eprintln!("flow: example custom_resources ran in {:?}", out.elapsed);
    assert!(
        out.ok(),
        "example custom_resources against the CLI cluster: {out}\n{}",
        session.logs()
    );
    assert!(
        !out.stdout.contains("No LUMEN_ADDRESS"),
        "the example must join the cluster, not start its own: {out}"
    );
    for (i, id) in [(0, &head.node_id), (1, &node.node_id)] {
        let line = format!("f({i}) with {{node{i}: 1}} ran on node {}", short(id));
        assert!(
            out.stdout.lines().any(|l| l.trim() == line),
            "expected {line:?} in the example's output: {out}"
        );
    }

    // `lumen stop`: every daemon and every worker process is gone.
    let daemons = [head.pid, node.pid];
    let (out, left) = session.stop();
    eprintln!("flow: lumen stop took {:?}", out.elapsed);
    assert!(out.ok(), "lumen stop: {out}");
    assert!(out.stdout.contains("Stopped 2 lumen node(s)"), "{out}");
    assert!(
        left.is_empty(),
        "processes of the session still running after lumen stop: {left:?}\n{}",
        session.logs()
    );
    let mut survivors = Vec::new();
    let gone = wait_until(EXIT_LIMIT, || {
        survivors = daemons
            .iter()
            .chain(worker_pids.iter())
            .copied()
            .filter(|&pid| running(pid))
            .collect();
        survivors.is_empty()
    });
    assert!(
        gone,
        "still running after lumen stop: {survivors:?} (daemons {daemons:?}, workers \
         {worker_pids:?})"
    );
    assert!(session.records().is_empty(), "{:?}", session.records());
    let again = session.lumen(&["status"]);
    assert!(!again.ok(), "lumen status after lumen stop: {again}");
}

/// A node daemon killed for real (SIGKILL) is reported dead by the head within its
/// `--node-timeout`, and the head keeps answering.
#[test]
fn killed_node_is_reported_dead() {
    let session = Session::new("kill");
    let head = session.start_head(&["--num-cpus", "1", "--node-timeout", "2"]);
    let node = session.join(&head.gcs, &["--num-cpus", "1"]);
    assert_eq!(session.status().nodes.len(), 2);

    // SAFETY: kill(2) on the daemon this test started (its pid from its record).
    let rc = unsafe { libc::kill(node.pid as libc::pid_t, libc::SIGKILL) };
    assert_eq!(rc, 0, "kill {}", node.pid);
    let killed = Instant::now();
    let mut last = None;
    let dead = wait_until(Duration::from_secs(15), || {
        let status = session.status();
        let dead = status
            .nodes
            .iter()
            .any(|n| n.node_id == node.node_id && !n.alive);
        last = Some(status);
        dead
    });
    assert!(
        dead,
        "node {} not reported dead {:?} after SIGKILL: {last:#?}",
        node.node_id,
        killed.elapsed()
    );
    eprintln!("killed node reported dead after {:?}", killed.elapsed());
    let status = last.expect("a status");
    let h = status.node(&head.node_id);
    assert!(h.alive && h.head, "{h:?}");
    let n = status.node(&node.node_id);
    assert!(
        n.available.is_empty(),
        "a dead node has no available resources: {n:?}"
    );

    let list = session
        .lumen(&["list", "nodes"])
        .expect_ok("lumen list nodes");
    let line = |id: &str| {
        list.stdout
            .lines()
            .find(|l| l.contains(id))
            .unwrap_or_else(|| panic!("node {id} missing: {list}"))
            .to_string()
    };
    assert!(line(&node.node_id).contains("DEAD"), "{list}");
    assert!(line(&head.node_id).contains("ALIVE"), "{list}");
    let table = session.lumen(&["status"]).expect_ok("lumen status");
    let dead_part = table.stdout.split("Dead:").nth(1).unwrap_or_default();
    assert!(dead_part.contains(&node.node_id), "{table}");

    let (out, left) = session.stop();
    assert!(out.ok(), "lumen stop: {out}");
    assert!(left.is_empty(), "left running: {left:?}");
}

/// Bad flags fail before anything starts, each with a message naming the flag.
#[test]
fn bad_start_flags_are_refused() {
    let session = Session::new("flags");
    let cases: [(&[&str], &[&str]); 4] = [
        (&["--resources", "{bad"], &["--resources", "JSON"]),
        (
            &["--resources", r#"{"node0": "x"}"#],
            &["--resources", "node0", "number"],
        ),
        (&["--resources", "[1, 2]"], &["--resources", "JSON"]),
        (&["--num-cpus", "-1"], &["num_cpus", "-1", "non-negative"]),
    ];
    for (flags, words) in cases {
        let mut args = vec!["start", "--head", "--port", "0"];
        args.extend_from_slice(flags);
        let out = session.lumen(&args);
        assert!(!out.ok(), "lumen {args:?} must fail: {out}");
        for w in words {
            assert!(
                out.stderr.contains(w),
                "lumen {args:?}: the message should mention {w:?}: {out}"
            );
        }
        assert!(
            out.elapsed < Duration::from_secs(10),
            "lumen {args:?} took {:?}",
            out.elapsed
        );
        assert!(
            session.records().is_empty(),
            "lumen {args:?} started a node"
        );
    }
    assert!(session_processes(&session.dir).is_empty());
}

/// A node with a wrong token is refused at once, with a message about the token, and the
/// cluster keeps answering; a second head in the same session is refused too.
#[test]
fn join_with_wrong_token_fails_fast() {
    let session = Session::new("token");
    let head = session.start_head(&["--num-cpus", "1"]);
    let wrong = wrong_token(&head.token);
    assert_ne!(wrong, head.token);

    let out = session.lumen(&[
        "start",
        "--address",
        &head.gcs,
        "--num-cpus",
        "1",
        "--token",
        &wrong,
    ]);
    assert!(!out.ok(), "joining with a wrong token must fail: {out}");
    assert!(out.stderr.contains("token"), "{out}");
    assert!(
        out.elapsed < Duration::from_secs(8),
        "a wrong token must fail fast, took {:?}",
        out.elapsed
    );
    // Not a token at all.
    let out = session.lumen(&["start", "--address", &head.gcs, "--token", "not-hex"]);
    assert!(!out.ok(), "{out}");
    assert!(
        out.stderr.contains("token") && out.stderr.contains("64 hex"),
        "{out}"
    );

    // The cluster still answers, with only the head in it.
    let status = session.status();
    assert_eq!(status.nodes.len(), 1, "{status:#?}");
    assert!(status.nodes[0].alive);
    assert_eq!(session.records().len(), 1, "{:?}", session.records());
    let out = session.lumen(&["status"]).expect_ok("lumen status");
    assert!(out.stdout.contains(&head.node_id), "{out}");

    // `lumen status` with the wrong token is refused, with the reason.
    let out = session.lumen(&["status", "--address", &head.gcs, "--token", &wrong]);
    assert!(!out.ok(), "{out}");
    assert!(out.stderr.contains("token"), "{out}");

    // One head per session folder.
    let out = session.lumen(&["start", "--head", "--port", "0"]);
    assert!(!out.ok(), "a second head must be refused: {out}");
    assert!(out.stderr.contains("already running"), "{out}");
    assert_eq!(session.records().len(), 1);

    // The head logged each refusal, in files only this user can read.
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777;
    let logs = session.dir.join("logs");
    assert_eq!(mode(&logs), 0o700, "{}", logs.display());
    let logged = wait_until(Duration::from_secs(10), || {
        std::fs::read_dir(&logs)
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| {
                std::fs::read_to_string(e.path())
                    .is_ok_and(|t| t.contains("refused a connection") && t.contains("token"))
            })
    });
    assert!(logged, "no refusal in the head's log:\n{}", session.logs());
    for e in std::fs::read_dir(&logs).expect("logs").flatten() {
        assert_eq!(mode(&e.path()), 0o600, "{}", e.path().display());
    }
}

/// The token is on no command line `ps` shows while a cluster runs: not the node's, though it
/// was started with `--token` (the node process gets it in its environment, which only its user
/// can read), not the worker processes', not the driver's.
#[test]
fn the_token_is_on_no_command_line() {
    let session = Session::new("ps");
    let head = session.start_head(&["--num-cpus", "1"]);
    let node = session.join(&head.gcs, &["--num-cpus", "1", "--token", &head.token]);
    assert_eq!(
        node.token, head.token,
        "the node runs with the token it was given"
    );
    let out = session.lumen(&["start", "--head", "--port", "0"]);
    assert!(!out.ok(), "{out}");
    let out = session.lumen(&["status"]).expect_ok("lumen status");
    assert!(out.stdout.contains(&node.node_id), "{out}");

    let _driver = Driver::connect(&session, &head.gcs, &head.token);
    // Work on both nodes, so that each has a worker process while the command lines are read.
    let refs: Vec<_> = (0..4u64).map(where_am_i::remote).collect();
    let mut pids = BTreeSet::new();
    for r in &refs {
        let (_, _, pid) = lumen::get_timeout(r, TASK_LIMIT)
            .unwrap_or_else(|e| panic!("task: {e}\n{}", session.logs()));
        pids.insert(pid);
    }
    assert!(
        pids.iter().all(|p| running(*p)),
        "workers stay up between tasks"
    );
    let shown = command_lines_containing(&head.token);
    assert!(
        shown.is_empty(),
        "the token shows on command lines: {shown:?}"
    );
    let nodes = command_lines_containing("__node");
    assert!(
        nodes
            .iter()
            .filter(|(p, _)| *p == node.pid || *p == head.pid)
            .count()
            == 2,
        "both node processes are there to be read: {nodes:?}"
    );
}

/// A session folder that is a symbolic link, that other users can write to, or (run as root,
/// where the test can make one) that belongs to another user is refused by every command, with
/// a message that says why and what to do; nothing is started from it.
#[test]
fn a_session_folder_of_another_user_or_a_link_is_refused() {
    let base = Session::new("refused");
    let real = base.dir.join("real");
    private_dir(&real);
    let link = base.dir.join("link");
    std::os::unix::fs::symlink(&real, &link).expect("symlink");
    let open = base.dir.join("open");
    private_dir(&open);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let mut cases = vec![(link, "symbolic link"), (open, "other users can write")];
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let theirs = base.dir.join("theirs");
        private_dir(&theirs);
        std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).expect("chown");
        cases.push((theirs, "belongs to user 65534"));
    }
    for (dir, why) in cases {
        for args in [
            &["start", "--head", "--port", "0"][..],
            &["stop"],
            &["status"],
        ] {
            let mut cmd = base.command(LUMEN);
            cmd.env("LUMEN_SESSION_DIR", &dir).args(args);
            let out = run_bounded(cmd, COMMAND_LIMIT);
            assert!(!out.ok(), "lumen {args:?} with {}: {out}", dir.display());
            assert!(
                out.stderr.contains(why) && out.stderr.contains("LUMEN_SESSION_DIR"),
                "lumen {args:?} with {}: {out}",
                dir.display()
            );
        }
        assert!(
            !dir.join("nodes").exists() && !real.join("nodes").exists(),
            "nothing was started from {}",
            dir.display()
        );
    }
}

/// Records planted in the session folder are never believed: a pid of 1, one that is -1 or
/// another negative number as a `pid_t` (`kill(-1)` signals every process), or a live process
/// that is not a lumen node. `lumen stop` signals none of them, `lumen status` connects to
/// none of their addresses, and the bogus records are removed.
#[test]
fn planted_node_records_are_never_signalled() {
    let session = Session::new("planted");
    let nodes = session.dir.join("nodes");
    private_dir(&nodes);
    let mut bystander = Command::new("sleep")
        .arg("120")
        .spawn()
        .expect("start a process that is not a lumen node");
    let pids = [1u32, u32::MAX, 4_294_939_918, bystander.id()];
    for pid in pids {
        let record = serde_json::json!({
            "pid": pid, "address": "127.0.0.1:9", "head": true, "gcs": "127.0.0.1:9",
            "token": "0".repeat(64), "node_id": "0".repeat(32), "fingerprint": "",
        });
        std::fs::write(nodes.join(format!("{pid}.json")), record.to_string()).expect("plant");
    }
    let out = session.lumen(&["stop"]).expect_ok("lumen stop");
    assert!(out.stdout.contains("No lumen nodes are running"), "{out}");
    assert!(
        bystander.try_wait().expect("poll the bystander").is_none(),
        "a process named by a planted record was signalled"
    );
    let out = session.lumen(&["status"]);
    assert!(!out.ok() && out.stderr.contains("no cluster"), "{out}");
    let left: Vec<_> = std::fs::read_dir(&nodes)
        .expect("nodes")
        .flatten()
        .collect();
    assert!(left.is_empty(), "bogus records are removed: {left:?}");
    let _ = bystander.kill();
    let _ = bystander.wait();
}

/// Sixteen connections that never authenticate, each pushing all the node will take (the
/// audit's attack: before, each could fill 64 MiB of receive window for the whole hello
/// timeout), cost the node less than 32 MiB, and a real driver is served while they are there.
/// The node's memory is sampled from when they connect until the node has closed each of them
/// for its silence (a full hello timeout of pushing).
#[test]
fn unauthenticated_connections_cost_the_node_little_and_a_driver_is_served() {
    let session = Session::new("squat");
    let head = session.start_head(&["--num-cpus", "1"]);
    let addr: std::net::SocketAddr = head.address.parse().expect("the head's address");
    let _driver = Driver::connect(&session, &head.gcs, &head.token);
    // The job's executable is uploaded and its worker started before the baseline.
    for i in 0..2 {
        lumen::get_timeout(&where_am_i::remote(i), TASK_LIMIT)
            .unwrap_or_else(|e| panic!("task: {e}\n{}", session.logs()));
    }
    let (baseline, _) = memory_kib(head.pid);
    let squatters = lumen::__probe::Squatters::start(addr, 16).expect("squatters");
    let mut peak = baseline;
    let mut served = 0;
    let done = wait_until(Duration::from_secs(60), || {
        let (i, _, _) = lumen::get_timeout(&where_am_i::remote(100 + served), TASK_LIMIT)
            .unwrap_or_else(|e| panic!("a task while squatted: {e}\n{}", session.logs()));
        assert_eq!(i, 100 + served);
        served += 1;
        peak = peak.max(memory_kib(head.pid).0);
        squatters.report().close_reasons.len() >= 16
    });
    let report = squatters.stop();
    assert!(
        done,
        "the node never closed the silent connections: {report:?}"
    );
    assert!(served > 0 && report.connections >= 16, "{report:?}");
    assert_eq!(
        report.uni_streams, 0,
        "no stream opens before the hello: {report:?}"
    );
    assert!(
        peak < baseline + 32 * 1024,
        "the node grew from {baseline} KiB to {peak} KiB under {report:?}"
    );
}

/// With nothing running: `lumen status` and `lumen list` say so, `lumen stop` is a no-op.
#[test]
fn commands_with_no_cluster() {
    let session = Session::new("empty");
    for args in [
        &["status"][..],
        &["status", "--format", "json"],
        &["list", "nodes"],
    ] {
        let out = session.lumen(args);
        assert!(!out.ok(), "lumen {args:?} with no cluster must fail: {out}");
        assert!(
            out.stderr.contains("no cluster") && out.stderr.contains("lumen start --head"),
            "lumen {args:?}: {out}"
        );
    }
    let out = session.lumen(&["stop"]);
    assert!(out.ok(), "lumen stop with nothing running: {out}");
    assert!(out.stdout.contains("No lumen nodes are running"), "{out}");
}

/// `lumen status --format json` gives node ids as the same hex text every other output uses
/// (the table, `lumen list`, the session records, `NodeId`'s `Display`).
#[test]
fn status_json_gives_node_ids_as_hex_text() {
    let session = Session::new("json");
    let head = session.start_head(&["--num-cpus", "1"]);
    let out = session
        .lumen(&["status", "--format", "json"])
        .expect_ok("lumen status --format json");
    let value: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON");
    assert_eq!(
        value["nodes"][0]["node_id"].as_str(),
        Some(head.node_id.as_str()),
        "{out}"
    );
    let out = session
        .lumen(&["list", "nodes", "--format", "json"])
        .expect_ok("lumen list nodes --format json");
    let value: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON");
    assert_eq!(
        value[0]["node_id"].as_str(),
        Some(head.node_id.as_str()),
        "{out}"
    );
}

/// Set in the child driver of [`a_detached_actors_output_stays_on_its_node_after_its_job`]:
/// the cluster's address and token.
const TALKER_DRIVER: &str = "LUMEN_TEST_TALKER_DRIVER";

/// On `lumen start` nodes: once the job of a detached actor has ended (its driver, a child
/// process, exited), what the actor prints stays on its node, prefixed, in the node's output
/// (`logs/node-*.out`), even when a later driver calls it.
#[test]
fn a_detached_actors_output_stays_on_its_node_after_its_job() {
    if let Ok(cluster) = std::env::var(TALKER_DRIVER) {
        let (address, token) = cluster.split_once(' ').expect("address and token");
        lumen::init_with(
            lumen::Config::default()
                .address(address)
                .token(token)
                .namespace("talk"),
        )
        .expect("the child driver connects");
        let talker = Talker::options().name("talker").detached().remote();
        lumen::get_timeout(
            &talker.say("while my driver lives".to_string()).remote(),
            TASK_LIMIT,
        )
        .expect("the call");
        lumen::shutdown();
        return;
    }
    let session = Session::new("talk");
    let head = session.start_head(&["--num-cpus", "1"]);
    let mut cmd = Command::new(std::env::current_exe().expect("this test binary"));
    cmd.args([
        "--exact",
        "a_detached_actors_output_stays_on_its_node_after_its_job",
        "--nocapture",
        "--test-threads=1",
    ]);
    session.isolate(&mut cmd);
    cmd.env(TALKER_DRIVER, format!("{} {}", head.gcs, head.token));
    run_bounded(cmd, COMMAND_LIMIT).expect_ok("the child driver");
    {
        let _driver = Driver::connect(&session, &head.gcs, &head.token);
        let talker = lumen::get_actor_in::<Talker>("talker", "talk").expect("the detached actor");
        lumen::get_timeout(
            &talker.say("after its job ended".to_string()).remote(),
            TASK_LIMIT,
        )
        .expect("the call");
        let on_node = |session: &Session| {
            std::fs::read_dir(session.dir.join("logs"))
                .into_iter()
                .flatten()
                .flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == "out"))
                .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                .any(|text| {
                    text.lines().any(|l| {
                        l.starts_with("(Talker pid=") && l.ends_with(") after its job ended")
                    })
                })
        };
        assert!(
            wait_until(TASK_LIMIT, || on_node(&session)),
            "the line is not in the node's output:\n{}",
            session.logs()
        );
        lumen::kill(&talker);
    }
}

/// `lumen logs`: a `lumen start` node keeps what its worker processes print
/// (`worker-<pid>.out`, prefixed as at the driver) next to its own logs; `lumen logs` lists
/// them, prints one (`--tail N`), follows one as it grows, and refuses a name it does not list.
/// The lines `child` prints on its (piped) standard output, as they come.
fn lines_of(child: &mut std::process::Child) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().expect("its output is piped");
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

#[test]
fn lumen_logs_lists_and_prints_worker_output_kept_by_the_node() {
    let session = Session::new("logs");
    let head = session.start_head(&["--num-cpus", "1"]);
    let _driver = Driver::connect(&session, &head.gcs, &head.token);
    let pid = lumen::get_timeout(&print_and_pid::remote("first line".to_string()), TASK_LIMIT)
        .expect("the task");
    let file = format!("worker-{pid}.out");
    let kept = |text: &str| {
        std::fs::read_to_string(session.dir.join("logs").join(&file)).is_ok_and(|t| {
            t.lines()
                .any(|l| l.ends_with(text) && l.contains(&format!("pid={pid} ")))
        })
    };
    assert!(
        wait_until(TASK_LIMIT, || kept(") first line")),
        "{}",
        session.logs()
    );
    let listed = session.lumen(&["logs"]).expect_ok("lumen logs");
    assert!(
        listed.stdout.lines().any(|l| l.starts_with(&file))
            && listed.stdout.lines().any(|l| l.starts_with("node-")),
        "{listed}"
    );
    let last = session
        .lumen(&["logs", &file, "--tail", "1"])
        .expect_ok("lumen logs --tail 1");
    assert!(
        last.stdout.lines().count() == 1 && last.stdout.trim_end().ends_with(") first line"),
        "{last}"
    );
    // Following: what the worker prints next arrives.
    let mut follow = session.command(LUMEN);
    let mut follow = follow
        .args(["logs", &file, "--follow"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("lumen logs --follow");
    let rx = lines_of(&mut follow);
    lumen::get_timeout(
        &print_and_pid::remote("second line".to_string()),
        TASK_LIMIT,
    )
    .expect("the second task");
    let deadline = Instant::now() + TASK_LIMIT;
    let mut seen = Vec::new();
    while !seen.iter().any(|l: &String| l.ends_with(") second line")) {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => seen.push(line),
            Err(_) => break,
        }
    }
    let _ = follow.kill();
    let _ = follow.wait();
    assert!(
        seen.first().is_some_and(|l| l.ends_with(") first line"))
            && seen.iter().any(|l| l.ends_with(") second line")),
        "lumen logs --follow printed {seen:?}"
    );
    let unknown = session.lumen(&["logs", "../secrets"]);
    assert!(
        !unknown.ok() && unknown.stderr.contains("no log named"),
        "{unknown}"
    );
    // By process, by actor (the process hosting it, from the task events), by node.
    let pid_arg = pid.to_string();
    let by_pid = session
        .lumen(&["logs", "--pid", &pid_arg, "--tail", "1"])
        .expect_ok("lumen logs --pid");
    assert!(
        by_pid.stdout.trim_end().ends_with(") second line"),
        "{by_pid}"
    );
    let actor = Located::remote();
    lumen::get_timeout(&actor.node().remote(), TASK_LIMIT).expect("the actor runs");
    let actor_id = actor.id().to_string();
    let mut by_actor = None;
    assert!(
        wait_until(TASK_LIMIT, || {
            let run = session.lumen(&["logs", "--actor", &actor_id[..12]]);
            let ok = run.ok() && run.stdout.contains(") first line");
            by_actor = Some(run);
            ok
        }),
        "lumen logs --actor: {by_actor:?}"
    );
    let by_node = session
        .lumen(&["logs", "--node", &head.node_id[..12]])
        .expect_ok("lumen logs --node");
    assert!(by_node.stdout.contains("node started"), "{by_node}");
    let nobody = session.lumen(&["logs", "--actor", "ffffffffffff"]);
    assert!(
        !nobody.ok() && nobody.stderr.contains("no actor"),
        "{nobody}"
    );
    // A node on "another machine" (a session folder of its own): its logs are read through it.
    let far = Session::new("logs-far");
    let far_node = far.join(
        &head.gcs,
        &[
            "--num-cpus",
            "1",
            "--resources",
            r#"{"far": 2}"#,
            "--token",
            &head.token,
        ],
    );
    let far_pid = lumen::get_timeout(
        &print_and_pid::options()
            .resource("far", 1.0)
            .remote("far line".to_string()),
        TASK_LIMIT,
    )
    .expect("the task on the far node");
    let far_file = format!("worker-{far_pid}.out");
    let far_id = &far_node.node_id[..12];
    let mut listed = None;
    assert!(
        wait_until(TASK_LIMIT, || {
            let run = session.lumen(&["logs", "--node", far_id]);
            let ok = run.ok() && run.stdout.lines().any(|l| l.starts_with(&far_file));
            listed = Some(run);
            ok
        }),
        "lumen logs --node (another machine's): {listed:?}"
    );
    let mut read = None;
    assert!(
        wait_until(TASK_LIMIT, || {
            let run = session.lumen(&["logs", "--node", far_id, &far_file, "--tail", "1"]);
            let ok = run.ok() && run.stdout.trim_end().ends_with(") far line");
            read = Some(run);
            ok
        }),
        "lumen logs --node ID NAME: {read:?}"
    );
    let far_actor = Located::options().resource("far", 1.0).remote();
    lumen::get_timeout(&far_actor.node().remote(), TASK_LIMIT).expect("the far actor runs");
    let far_actor_id = far_actor.id().to_string();
    let mut by_far_actor = None;
    assert!(
        wait_until(TASK_LIMIT, || {
            let run = session.lumen(&["logs", "--actor", &far_actor_id[..12]]);
            let ok = run.ok() && run.stdout.contains(") far line");
            by_far_actor = Some(run);
            ok
        }),
        "lumen logs --actor (on another machine's node): {by_far_actor:?}"
    );
    let bad = session.lumen(&["logs", "--node", far_id, "../secrets"]);
    assert!(!bad.ok() && bad.stderr.contains("no log named"), "{bad}");
    // Following it through the node: its last line, then what the worker prints next.
    let mut follow = session.command(LUMEN);
    let mut follow = follow
        .args([
            "logs", "--node", far_id, &far_file, "--tail", "1", "--follow",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("lumen logs --node ID NAME --follow");
    let rx = lines_of(&mut follow);
    let deadline = Instant::now() + TASK_LIMIT;
    let mut seen: Vec<String> = Vec::new();
    let wait_for = |text: &str, seen: &mut Vec<String>| {
        while !seen.iter().any(|l| l.ends_with(text)) {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) => seen.push(line),
                Err(_) => return false,
            }
        }
        true
    };
    let started = wait_for(") far line", &mut seen);
    let again = lumen::get_timeout(
        &print_and_pid::options()
            .resource("far", 1.0)
            .remote("far follow line".to_string()),
        TASK_LIMIT,
    )
    .expect("the second task on the far node");
    let arrived = started && wait_for(") far follow line", &mut seen);
    let _ = follow.kill();
    let _ = follow.wait();
    assert_eq!(
        again, far_pid,
        "the same worker process prints to the same log"
    );
    assert!(
        started && arrived,
        "lumen logs --node ID NAME --follow printed {seen:?}"
    );
}

/// `Config::working_dir` on a node of "another machine" (a session folder of its own): the
/// directory is uploaded, unpacked in that node's session folder, and a task there reads a file
/// by a relative path that exists neither in the node's folder nor in the driver's. A path that
/// is not a directory, and a directory over the cap, are refused at init, saying why.
#[test]
fn an_uploaded_working_dir_reaches_a_node_on_another_machine() {
    let session = Session::new("wd");
    let head = session.start_head(&["--num-cpus", "1"]);
    let far = Session::new("wd-far");
    far.join(
        &head.gcs,
        &[
            "--num-cpus",
            "1",
            "--resources",
            r#"{"far": 1}"#,
            "--token",
            &head.token,
        ],
    );
    let dir = std::env::temp_dir().join(format!("lumen-cli-test-wd-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("inputs")).expect("the folder to upload");
    std::fs::write(dir.join("inputs/greeting.txt"), "from the uploaded folder").expect("a file");
    assert!(
        !Path::new("inputs/greeting.txt").exists(),
        "the driver's own folder must not have it"
    );
    let _driver = Driver {
        _lock: common::one_driver_at_a_time(&DRIVER),
    };
    std::env::set_var("LUMEN_SESSION_DIR", &session.dir);
    let config = || {
        lumen::Config::default()
            .address(&head.gcs)
            .token(&head.token)
    };
    let file = lumen::init_with(config().working_dir(dir.join("inputs/greeting.txt")))
        .expect_err("a file is not a working directory");
    assert!(
        matches!(file, lumen::Error::InvalidArgument { .. })
            && file.to_string().contains("not a directory"),
        "{file}"
    );
    let big = lumen::init_with(config().working_dir(&dir).working_dir_max_bytes(16))
        .expect_err("over the cap");
    assert!(
        matches!(
            big,
            lumen::Error::WorkingDirTooLarge {
                cap: 16,
                size: 24,
                ..
            }
        ) && big.to_string().contains("LUMEN_WORKING_DIR_MAX_BYTES"),
        "{big}"
    );
    lumen::init_with(config().working_dir(&dir))
        .unwrap_or_else(|e| panic!("lumen::init_with: {e}\n{}", session.logs()));
    let (content, cwd) = lumen::get_timeout(
        &read_relative::options()
            .resource("far", 1.0)
            .remote("inputs/greeting.txt".to_string()),
        TASK_LIMIT,
    )
    .unwrap_or_else(|e| panic!("the task on the far node: {e}\n{}", far.logs()));
    assert_eq!(
        content.as_deref(),
        Some("from the uploaded folder"),
        "in {cwd}"
    );
    let unpacked = far.dir.join("working_dirs");
    assert!(
        cwd.starts_with(&unpacked.display().to_string()),
        "the task ran in {cwd}, not in the copy in {}",
        unpacked.display()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Ray's `runtime_env` on `lumen start` nodes, whose worker processes a daemon starts (its own
/// working directory and environment are not the driver's): `Config::env` reaches a task on
/// each node, and a relative path there reads the driver's working directory; a task's own
/// `.env(..)` runs it in another worker process with its variables over the job's, and those
/// processes end with the job (`common::runtime_env`; the driver is a child process).
#[test]
fn started_nodes_give_tasks_the_drivers_env_and_working_directory() {
    if common::runtime_env::child_driver() {
        return;
    }
    let session = Session::new("env");
    let head = session.start_head(&["--num-cpus", "1"]);
    session.join(&head.gcs, &["--num-cpus", "1"]);
    let env_pids = common::runtime_env::check(
        "started_nodes_give_tasks_the_drivers_env_and_working_directory",
        &format!("{} {}", head.gcs, head.token),
        |cmd| session.isolate(cmd),
    );
    assert_eq!(env_pids.len(), 2, "one .env worker process per node");
    // The driver has gone: the nodes stop its job's worker processes, those for an
    // environment too.
    assert!(
        common::wait_until(EXIT_LIMIT, || !env_pids.iter().any(|p| running(*p))),
        "the .env worker processes {env_pids:?} outlived their job"
    );
}

/// Ray's scheduling on `lumen start` nodes with worker processes: default actors spread over
/// three one-CPU nodes (`test_actor_load_balancing`: at least 5 of 30 on each, in one of 20
/// attempts), and work no node fits is reported at its driver and leaves `lumen status` with
/// its job (`common::infeasible`; the driver is a child process).
#[test]
fn started_nodes_spread_default_actors_and_report_infeasible_work() {
    if common::infeasible::child_driver() {
        return;
    }
    let session = Session::new("sched");
    let head = session.start_head(&["--num-cpus", "1"]);
    session.join(&head.gcs, &["--num-cpus", "1"]);
    session.join(&head.gcs, &["--num-cpus", "1"]);
    {
        let _driver = Driver::connect(&session, &head.gcs, &head.token);
        let mut seen = Vec::new();
        let spread = (0..20).any(|_| {
            let actors: Vec<_> = (0..30).map(|_| Located::remote()).collect();
            let mut counts: BTreeMap<String, usize> = BTreeMap::new();
            for a in &actors {
                let node = lumen::get_timeout(&a.node().remote(), TASK_LIMIT)
                    .unwrap_or_else(|e| panic!("actor: {e}\n{}", session.logs()));
                *counts.entry(node).or_default() += 1;
            }
            let ok = counts.len() == 3 && counts.values().all(|&c| c >= 5);
            seen.push(counts.into_values().collect::<Vec<_>>());
            ok
        });
        assert!(
            spread,
            "30 default actors never spread 5+ per node: {seen:?}"
        );
        // The actors run in this job's worker process on each node: `lumen list workers`
        // shows them, and this driver.
        let out = session
            .lumen(&["list", "workers", "--format", "json"])
            .expect_ok("lumen list workers --format json");
        let workers: Vec<serde_json::Value> = serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("lumen list workers --format json: {e}: {}", out.stdout));
        let of = |kind: &'static str| workers.iter().filter(move |w| w["worker_type"] == kind);
        assert!(
            of("DRIVER").any(|w| w["pid"] == std::process::id()),
            "{}",
            out.stdout
        );
        let nodes: std::collections::BTreeSet<String> = of("WORKER")
            .filter(|w| w["alive"] == true && w["pid"].is_u64())
            .filter_map(|w| w["node_id"].as_str().map(str::to_string))
            .collect();
        assert_eq!(nodes.len(), 3, "{}", out.stdout);
    }
    let demands = || -> Vec<common::infeasible::Shape> {
        session
            .status()
            .nodes
            .iter()
            .flat_map(|n| {
                serde_json::from_value::<Vec<(common::infeasible::Shape, usize)>>(n.demands.clone())
                    .unwrap_or_else(|e| panic!("demands {}: {e}", n.demands))
            })
            .map(|(shape, _)| shape)
            .collect()
    };
    common::infeasible::check_reported_and_cleared(
        "started_nodes_spread_default_actors_and_report_infeasible_work",
        &head.gcs,
        &head.token,
        |cmd| session.isolate(cmd),
        demands,
    );
    // Both drivers have gone (this one, and the child): `lumen list jobs` shows both jobs
    // finished, with the program the nodes ran for them.
    let out = session
        .lumen(&["list", "jobs", "--format", "json"])
        .expect_ok("lumen list jobs --format json");
    let jobs: Vec<serde_json::Value> = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("lumen list jobs --format json: {e}: {}", out.stdout));
    assert!(jobs.len() >= 2, "{}", out.stdout);
    for j in &jobs {
        assert_eq!(j["status"], "FINISHED", "{}", out.stdout);
        assert!(j["entrypoint"].is_string(), "{}", out.stdout);
        assert!(
            j["end_time_ms"].as_u64() >= j["start_time_ms"].as_u64(),
            "{}",
            out.stdout
        );
    }
    let table = session
        .lumen(&["list", "jobs"])
        .expect_ok("lumen list jobs");
    assert!(
        table.stdout.starts_with("JOB_ID") && table.stdout.matches("FINISHED").count() >= 2,
        "{}",
        table.stdout
    );
}

/// Where it runs, and its private (anonymous) resident memory in bytes.
#[lumen::remote]
fn private_memory() -> (u32, u64) {
    (std::process::id(), rss_anon())
}

/// Reads every byte of `b`; returns where it ran, their sum, and its private resident memory
/// after reading them.
#[lumen::remote]
fn read_all(b: lumen::Buffer<u8>) -> (u32, u64, u64) {
    (
        std::process::id(),
        b.iter().map(|x| *x as u64).sum(),
        rss_anon(),
    )
}

/// This process's `RssAnon`, in bytes.
fn rss_anon() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .expect("RssAnon in /proc/self/status")
        * 1024
}

/// On a node started with `lumen start`, the job's worker process (a separate program from
/// this driver) reads a 100 MiB buffer the driver put by mapping the driver's shared memory:
/// its private memory grows by far less than the object, and every byte reads back.
#[test]
fn a_started_nodes_worker_maps_the_drivers_buffer() {
    const MIB: u64 = 1 << 20;
    let session = Session::new("shm");
    let head = session.start_head(&["--num-cpus", "1"]);
    let _driver = Driver::connect(&session, &head.gcs, &head.token);
    let len = 100 * MIB as usize;
    let r = lumen::put(lumen::Buffer::from(vec![3u8; len]));
    let (pid, before) = lumen::get_timeout(&private_memory::remote(), TASK_LIMIT)
        .unwrap_or_else(|e| panic!("private_memory: {e}\n{}", session.logs()));
    assert_ne!(pid, std::process::id(), "the task runs in a worker process");
    let (pid2, sum, after) = lumen::get_timeout(&read_all::remote(&r), TASK_LIMIT)
        .unwrap_or_else(|e| panic!("read_all: {e}\n{}", session.logs()));
    assert_eq!(pid2, pid, "the same worker process");
    assert_eq!(sum, 3 * len as u64, "every byte read back");
    assert!(
        after < before + 20 * MIB,
        "the worker's private memory grew by {} MiB reading a 100 MiB object",
        after.saturating_sub(before) / MIB
    );
}
