//! Ray's runtime environment (`env_vars`, `working_dir`) in lumen's terms: `Config::env` reaches
//! every worker process of the job, and a worker process starts in the driver's working
//! directory when that exists on its node, so relative paths mean the same as in the driver.
//! A task's own `.env(..)` runs it in another worker process of the job, with the job's
//! variables and its own on top, in the same working directory.
//!
//! The driver is a child process — the calling test binary again, running only the calling
//! test, with [`CHILD`] set to where it connects — started in a fresh directory holding
//! [`DATA_FILE`]; the test calls [`child_driver`] first, which runs the child's part when that
//! variable is set.

use std::process::Command;

/// Set in the child driver: `local` (a two-node local cluster), `embedded`, or a cluster's
/// address and token separated by a space.
const CHILD: &str = "LUMEN_TEST_ENV_CHILD";

/// The file in the child's working directory, and what it holds.
const DATA_FILE: &str = "data.txt";
const DATA: &str = "read by a relative path";

/// What the child says when every task saw the variable and the file.
const SEEN: &str = "child: every task saw MY_SETTING and data.txt";

/// What the child says before the pids of the worker processes its tasks with `.env(..)` ran in.
const ENV_PIDS: &str = "child: .env worker pids:";

#[lumen::remote]
fn what_a_task_sees() -> (Option<String>, Option<String>, u32, Option<String>) {
    (
        std::env::var("MY_SETTING").ok(),
        std::fs::read_to_string(DATA_FILE).ok(),
        std::process::id(),
        std::env::var("TASK_ONLY").ok(),
    )
}

/// In the child (when [`CHILD`] is set): connects with `Config::env("MY_SETTING", "42")`, runs
/// a task on every node and checks what each saw; returns true. Elsewhere returns false at once.
pub fn child_driver() -> bool {
    let Ok(target) = std::env::var(CHILD) else {
        return false;
    };
    let config = lumen::Config::default().env("MY_SETTING", "42");
    if target == "embedded-without" {
        // The embedded cluster's tasks run in this process, which lacks the variable: refused,
        // saying how to give it.
        let e = lumen::init_with(config.num_cpus(1.0)).expect_err("refused");
        assert!(
            matches!(e, lumen::Error::InvalidArgument { .. })
                && e.to_string()
                    .contains("start this program with MY_SETTING=42"),
            "{e}"
        );
        eprintln!("{SEEN}");
        return true;
    }
    let config = match target.split_once(' ') {
        Some((address, token)) => config.address(address).token(token),
        None if target == "local" => config.num_cpus(1.0).local_cluster(2),
        None => config.num_cpus(1.0),
    };
    lumen::init_with(config).expect("the child driver starts");
    let mut env_pids = Vec::new();
    for node in lumen::nodes() {
        let on_node = || {
            what_a_task_sees::options().scheduling_strategy(
                lumen::SchedulingStrategy::NodeAffinity {
                    node_id: node.node_id,
                    soft: false,
                },
            )
        };
        let seen = lumen::get_timeout(&on_node().remote(), std::time::Duration::from_secs(60))
            .expect("the task runs");
        assert_eq!(
            seen.3, None,
            "a variable of another task's, on {}",
            node.node_id
        );
        if target != "embedded" {
            // A task's own variables, over the job's, in a worker process of their own that
            // starts in the driver's directory too.
            let own = lumen::get_timeout(
                &on_node()
                    .env("MY_SETTING", "task")
                    .env("TASK_ONLY", "1")
                    .remote(),
                std::time::Duration::from_secs(60),
            )
            .expect("the task with .env runs");
            assert_eq!(
                own.0.as_deref(),
                Some("task"),
                "task over job, on {}",
                node.node_id
            );
            assert_eq!(own.3.as_deref(), Some("1"), "its own, on {}", node.node_id);
            assert_eq!(
                own.1.as_deref(),
                Some(DATA),
                "the file, on {}",
                node.node_id
            );
            assert_ne!(own.2, seen.2, "another worker process, on {}", node.node_id);
            env_pids.push(own.2);
        }
        assert_eq!(
            seen.0.as_deref(),
            Some("42"),
            "the variable, on {}",
            node.node_id
        );
        assert_eq!(
            seen.1.as_deref(),
            Some(DATA),
            "the file, on {}",
            node.node_id
        );
        if target != "embedded" {
            assert_ne!(seen.2, std::process::id(), "ran in a worker process");
        }
    }
    let pids: Vec<String> = env_pids.iter().map(u32::to_string).collect();
    eprintln!("{ENV_PIDS} {}", pids.join(" "));
    eprintln!("{SEEN}");
    lumen::shutdown();
    true
}

/// The parent's part: runs `test` (the calling test's name) again as a child driver of
/// `target` (see [`CHILD`]) in a fresh directory holding [`DATA_FILE`], after `prepare` adjusts
/// its command; checks that every task saw the variable and the file. Returns the pids of the
/// worker processes the child's tasks with `.env(..)` ran in (none embedded).
pub fn check(test: &str, target: &str, prepare: impl FnOnce(&mut Command)) -> Vec<u32> {
    static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("lumen-env-{}-{run}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("the child's directory");
    std::fs::write(dir.join(DATA_FILE), DATA).expect("the child's file");
    let mut cmd = Command::new(std::env::current_exe().expect("this test binary"));
    cmd.args(["--exact", test, "--nocapture", "--test-threads=1"])
        .current_dir(&dir)
        .env(CHILD, target)
        .env_remove("LUMEN_TEST_LOCAL_CLUSTER")
        .env_remove("LUMEN_ADDRESS");
    if target == "embedded" {
        // Tasks run in the driver's process: it must have the variable itself.
        cmd.env("MY_SETTING", "42");
    } else {
        cmd.env_remove("MY_SETTING");
    }
    prepare(&mut cmd);
    let out = cmd.output().expect("run the child driver");
    let _ = std::fs::remove_dir_all(&dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.contains(SEEN),
        "the child driver ({target}) failed ({}):\n{stderr}",
        out.status
    );
    stderr
        .lines()
        .find_map(|l| l.strip_prefix(ENV_PIDS))
        .map(|pids| {
            pids.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}
