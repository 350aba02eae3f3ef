//! What tasks and actors print in worker processes reaches the driver (Ray's `log_to_driver`):
//! each line on the driver's stdout or stderr, as it was printed, prefixed with where it ran
//! (`(print_lines pid=4123 ip=127.0.0.1:40123) …`, an actor's with its type's name), in order per
//! worker, and nothing lost when a worker exits right after printing; off with
//! `Config::log_to_driver(false)`, where the lines stay with the node.
//!
//! After Ray's `test_output.py::test_worker_stdout` (a task's stdout and stderr lines at the
//! driver, `(foo pid=` before them), on two nodes, with an actor's and a dying worker's lines.
//!
//! The driver is a child process — this test binary again, running the one test, with [`CHILD`]
//! set — on a two-node local cluster with worker processes, so that its output can be read.

#![allow(clippy::new_without_default)]

use lumen::{NodeId, SchedulingStrategy};
use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

/// Set in the child driver: `on` or `off` (whether its output comes back to it).
const CHILD: &str = "LUMEN_TEST_OUTPUT_CHILD";

/// Lines each task prints on each stream.
const LINES: u32 = 2000;

/// What the child prints on stderr once its work is done.
const DONE: &str = "child: done";

/// A bound for the child's side (starting a cluster, its work, the lines arriving).
const LONG: Duration = Duration::from_secs(120);

#[lumen::remote]
fn print_lines(tag: String, n: u32) -> u32 {
    for i in 0..n {
        println!("{tag} out {i}");
        eprintln!("{tag} err {i}");
    }
    std::process::id()
}

#[lumen::remote]
fn prints_then_exits() -> u32 {
    println!("last words");
    eprintln!("last words on stderr");
    std::process::exit(3)
}

/// An actor that prints what it is told.
pub struct Talker;

#[lumen::remote]
impl Talker {
    pub fn new() -> Self {
        Talker
    }

    pub fn say(&self, what: String) -> u32 {
        println!("{what}");
        std::process::id()
    }
}

fn on(node_id: NodeId) -> SchedulingStrategy {
    SchedulingStrategy::NodeAffinity {
        node_id,
        soft: false,
    }
}

/// The child's part: prints from a task on each node, an actor, and a task that exits right
/// after printing; says where each ran (`child: node<i> pid=<pid> ip=<address>`), then waits for
/// its stdin to close.
fn child_driver(mode: &str) {
    let config = lumen::Config::default()
        .num_cpus(2.0)
        .local_cluster(2)
        .log_to_driver(mode == "on");
    lumen::init_with(config).expect("the child's cluster starts");
    let listed = lumen::nodes();
    let nodes: Vec<NodeId> = listed.iter().map(|n| n.node_id).collect();
    assert_eq!(nodes.len(), 2);
    for (i, node) in nodes.iter().enumerate() {
        let pid = lumen::get_timeout(
            &print_lines::options()
                .scheduling_strategy(on(*node))
                .remote(format!("node{i}"), LINES),
            LONG,
        )
        .expect("print_lines runs");
        eprintln!("child: node{i} pid={pid} ip={}", listed[i].address);
    }
    let talker = Talker::options().scheduling_strategy(on(nodes[1])).remote();
    let pid = lumen::get_timeout(&talker.say("the actor speaks".to_string()).remote(), LONG)
        .expect("the actor's call");
    eprintln!("child: actor pid={pid}");
    let exited = prints_then_exits::options()
        .scheduling_strategy(on(nodes[0]))
        .max_retries(0)
        .remote();
    assert!(lumen::get_timeout(&exited, LONG).is_err());
    eprintln!("{DONE}");
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    lumen::shutdown();
}

/// The lines of a stream of the child, read on a thread.
fn lines(stream: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Takes what arrived on `rx` into `into`, waiting (up to the deadline) until `done` holds.
fn collect_until(
    rx: &Receiver<String>,
    into: &mut Vec<String>,
    deadline: Instant,
    done: impl Fn(&[String]) -> bool,
) -> bool {
    while !done(into) {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => into.push(line),
            Err(_) => return false,
        }
    }
    true
}

/// `(pid, address)` of each `child: node<i> pid=.. ip=..` line, by `i`.
fn placements(err: &[String]) -> Vec<(String, String)> {
    (0..2)
        .map(|i| {
            let line = err
                .iter()
                .find(|l| l.starts_with(&format!("child: node{i} ")))
                .expect("where the task ran");
            let field = |key: &str| {
                line.split_whitespace()
                    .find_map(|w| w.strip_prefix(key))
                    .expect("a field")
                    .to_string()
            };
            (field("pid="), field("ip="))
        })
        .collect()
}

/// The numbers `k` of the lines `<prefix> <tag> <k>`, in the order they came. (The first may
/// follow the child's test harness's `test … ... `, which it prints without a line end.)
fn numbered(lines: &[String], prefix: &str, tag: &str) -> Vec<u32> {
    lines
        .iter()
        .filter_map(|l| l.split_once(prefix)?.1.strip_prefix(' ')?.strip_prefix(tag))
        .filter_map(|k| k.trim().parse().ok())
        .collect()
}

fn run_child(mode: &str) -> (Vec<String>, Vec<String>) {
    let mut child = Command::new(std::env::current_exe().expect("this test binary"))
        .args([
            "--exact",
            "test_worker_stdout",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, mode)
        .env_remove("LUMEN_ADDRESS")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the child driver");
    let out_rx = lines(child.stdout.take().expect("stdout"));
    let err_rx = lines(child.stderr.take().expect("stderr"));
    let deadline = Instant::now() + LONG;
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let finished = collect_until(&err_rx, &mut err, deadline, |e| e.iter().any(|l| l == DONE));
    assert!(
        finished,
        "the {mode} child did not finish its work: {err:?}"
    );
    let places = placements(&err);
    let prefix = |i: usize| format!("(print_lines pid={} ip={})", places[i].0, places[i].1);
    if mode == "on" {
        // Every line, on the stream it was printed on, in order, with where it ran.
        let all: Vec<u32> = (0..LINES).collect();
        let complete = |lines: &[String], stream: &str| {
            (0..2).all(|i| {
                numbered(lines, &prefix(i), &format!("node{i} {stream} ")).len() >= all.len()
            })
        };
        let last_words = |lines: &[String], text: &str| {
            lines
                .iter()
                .any(|l| l.starts_with("(prints_then_exits pid=") && l.ends_with(text))
        };
        assert!(
            collect_until(&out_rx, &mut out, deadline, |o| complete(o, "out")
                && last_words(o, ") last words")
                && o.iter().any(
                    |l| l.starts_with("(Talker pid=") && l.ends_with(") the actor speaks")
                )),
            "stdout lacks lines (of {} and {}, {} and {} came; the child said {:?}): {:?}",
            prefix(0),
            prefix(1),
            numbered(&out, &prefix(0), "node0 out ").len(),
            numbered(&out, &prefix(1), "node1 out ").len(),
            err.iter()
                .filter(|l| l.starts_with("child:"))
                .collect::<Vec<_>>(),
            &out[out.len().saturating_sub(10)..]
        );
        assert!(
            collect_until(&err_rx, &mut err, deadline, |e| complete(e, "err")
                && last_words(e, ") last words on stderr")),
            "stderr lacks lines: {:?}",
            &err[err.len().saturating_sub(20)..]
        );
        for i in 0..2 {
            assert_eq!(numbered(&out, &prefix(i), &format!("node{i} out ")), all);
            assert_eq!(numbered(&err, &prefix(i), &format!("node{i} err ")), all);
        }
    }
    drop(child.stdin.take());
    let status = child.wait().expect("the child exits");
    out.extend(out_rx.iter());
    err.extend(err_rx.iter());
    assert!(
        status.success(),
        "the {mode} child failed: {status}: {err:?}"
    );
    (out, err)
}

#[test]
fn test_worker_stdout() {
    if let Ok(mode) = std::env::var(CHILD) {
        child_driver(&mode);
        return;
    }
    let (out, err) = run_child("on");
    // Once each, not also unprefixed.
    assert!(!out.iter().any(|l| l.starts_with("node0 out")), "{out:?}");

    // Off: nothing comes back prefixed; the lines stay with the node (here, an in-process node,
    // whose output is this child's own).
    let (out, err_off) = run_child("off");
    assert!(
        !out.iter()
            .chain(&err_off)
            .any(|l| l.contains(" pid=") && l.starts_with('(')),
        "{out:?}"
    );
    assert!(
        out.iter().any(|l| l.ends_with("node0 out 0"))
            && err_off.iter().any(|l| l.ends_with("node1 err 0")),
        "the lines printed with log_to_driver(false) are not on the node's output: {out:?}"
    );
    drop(err);
}
