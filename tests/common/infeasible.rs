//! Work no node fits, submitted by a driver in a child process: its warnings on the child's
//! stderr, its demands in the cluster's status, and their end with the child's job. The same
//! check runs against an in-process cluster and against `lumen start` nodes.
//!
//! The child is the calling test binary itself, running only the calling test (`--exact`), with
//! [`DRIVER`] set: the test calls [`child_driver`] first, which runs the child's part when that
//! variable is set.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

/// Set in the child driver: the cluster's address and token, separated by a space.
const DRIVER: &str = "LUMEN_TEST_INFEASIBLE_DRIVER";

/// What the child prints once its work is submitted.
const SUBMITTED: &str = "infeasible work submitted";

/// What the owner's warning says.
const WARNING: &str = "cannot be scheduled right now";

/// A generous bound for the cluster's side (starting the child, status, the job's end).
const LONG: Duration = Duration::from_secs(60);

/// One resource shape of a demand, as the status shows it.
pub type Shape = BTreeMap<String, f64>;

#[lumen::remote]
fn never_placed() -> u8 {
    1
}

/// An actor that asks for a resource no node has.
pub struct NeverPlaced;

#[lumen::remote]
impl NeverPlaced {
    pub fn new() -> Self {
        NeverPlaced
    }

    pub fn ping(&self) -> u8 {
        1
    }
}

/// In the child (when [`DRIVER`] is set): connects, submits three tasks asking for 64 CPUs and
/// an actor asking for a `tpu`, says so, and ends its job when its stdin closes; returns true.
/// Elsewhere returns false at once.
pub fn child_driver() -> bool {
    let Ok(cluster) = std::env::var(DRIVER) else {
        return false;
    };
    let (address, token) = cluster.split_once(' ').expect("address and token");
    lumen::init_with(lumen::Config::default().address(address).token(token))
        .expect("the child driver connects");
    let tasks: Vec<_> = (0..3)
        .map(|_| never_placed::options().num_cpus(64.0).remote())
        .collect();
    let actor = NeverPlaced::options().resource("tpu", 1.0).remote();
    eprintln!("{SUBMITTED}");
    let mut rest = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut rest);
    drop((tasks, actor));
    lumen::shutdown();
    true
}

/// Whether a demand is one of the child's.
fn childs(shape: &Shape) -> bool {
    shape.get("CPU") == Some(&64.0) || shape.contains_key("tpu")
}

/// The lines of a child's stderr, read on a thread.
fn lines(child: &mut std::process::Child) -> Receiver<String> {
    let stderr = child.stderr.take().expect("the child's stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// The parent's part: runs `test` (the calling test's name) again as a child driver of the
/// cluster at `address`, after `prepare` adjusts its command (environment); checks that the
/// child's stderr warns once for each of its two shapes within 10 s of the submission, that
/// `demands` (the status's demand shapes, all nodes) shows both while the child lives, and none
/// once its job ended.
pub fn check_reported_and_cleared(
    test: &str,
    address: &str,
    token: &str,
    prepare: impl FnOnce(&mut Command),
    demands: impl Fn() -> Vec<Shape>,
) {
    let mut cmd = Command::new(std::env::current_exe().expect("this test binary"));
    cmd.args(["--exact", test, "--nocapture", "--test-threads=1"]);
    prepare(&mut cmd);
    let mut child = cmd
        .env(DRIVER, format!("{address} {token}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the child driver");
    let rx = lines(&mut child);
    let mut before = Vec::new();
    while let Ok(line) = rx.recv_timeout(LONG) {
        let done = line.contains(SUBMITTED);
        before.push(line);
        if done {
            break;
        }
    }
    assert!(
        before.iter().any(|l| l.contains(SUBMITTED)),
        "the child driver never submitted its work: {before:?}"
    );

    // Within 10 s of the submission: one warning per shape, saying what it requires. (A warning
    // may come before the child says it submitted everything: its first task's can.)
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut warnings: Vec<String> = before
        .iter()
        .filter(|l| l.contains(WARNING))
        .cloned()
        .collect();
    let mut other = Vec::new();
    let both = |w: &[String]| {
        w.iter().any(|l| l.contains("CPU: 64")) && w.iter().any(|l| l.contains("tpu: 1"))
    };
    while !both(&warnings) {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) if line.contains(WARNING) => warnings.push(line),
            Ok(line) => other.push(line),
            Err(_) => break,
        }
    }
    assert!(
        both(&warnings),
        "no warning for each shape within 10 s of the submission: {warnings:?} (the child's \
         other lines: {other:?})"
    );
    assert!(
        warnings.iter().any(|l| l.contains("never_placed"))
            && warnings.iter().any(|l| l.contains("NeverPlaced")),
        "the warnings name what waits: {warnings:?}"
    );

    // The demands show in the status while the job lives.
    let count = || demands().iter().filter(|s| childs(s)).count();
    assert!(
        super::wait_until(LONG, || count() == 2),
        "the status does not show both demands: {:?}",
        demands()
    );

    // The job ends: its demands go with it, and the warnings were not repeated.
    drop(child.stdin.take());
    let status = child.wait().expect("the child driver exits");
    assert!(status.success(), "the child driver failed: {status}");
    assert!(
        super::wait_until(LONG, || count() == 0),
        "the ended job's demands stay: {:?}",
        demands()
    );
    // The child has exited: its stderr ends, and so do the lines.
    let repeated = rx.iter().filter(|l| l.contains(WARNING)).count();
    assert_eq!(
        warnings.len() + repeated,
        2,
        "one warning per shape: {warnings:?}, and {repeated} more"
    );
}
