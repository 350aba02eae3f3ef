//! Runs every example (built by `cargo test` alongside the tests) and checks it exits 0.
//!
//! Each example asserts what it prints, so this is an end-to-end check of the README's promise
//! that `cargo run --example <name>` works.
//!
//! **Modes.** Each example picks its own (the embedded cluster, or `--two-nodes`), as a user
//! running it would; they are not re-run in another mode.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn example(name: &str) -> PathBuf {
    // target/<profile>/deps/examples-<hash> -> target/<profile>/examples/<name>
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile> directory");
    profile_dir
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX))
}

fn run(name: &str, args: &[&str]) {
    let path = example(name);
    assert!(
        path.exists(),
        "{} is missing: cargo test builds examples, was it run with --tests only?",
        path.display()
    );
    let mut child = Command::new(&path)
        .args(args)
        .env_remove("LUMEN_ADDRESS")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start example");
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        if let Some(status) = child.try_wait().expect("wait for example") {
            let out = child.wait_with_output().expect("example output");
            assert!(
                status.success(),
                "example {name} failed ({status}):\n--- stdout\n{}\n--- stderr\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            return;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("example {name} did not finish within 180 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn quickstart() {
    run("quickstart", &[]);
}

#[test]
fn tasks() {
    run("tasks", &[]);
}

#[test]
fn actors() {
    run("actors", &[]);
}

#[test]
fn objects() {
    run("objects", &[]);
}

#[test]
fn resources() {
    run("resources", &[]);
}

#[test]
fn async_actor() {
    run("async_actor", &[]);
}

#[test]
fn threaded_actor() {
    run("threaded_actor", &[]);
}

#[test]
fn concurrency_groups() {
    run("concurrency_groups", &[]);
}

#[test]
fn microbenchmark_runs_every_metric() {
    run(
        "microbenchmark",
        &[
            "--rounds",
            "1",
            "--seconds",
            "0.1",
            "--drain",
            "2000",
            "--smoke",
        ],
    );
}

#[test]
fn microbenchmark_runs_over_two_nodes() {
    run(
        "microbenchmark",
        &[
            "--two-nodes",
            "--rounds",
            "1",
            "--seconds",
            "0.1",
            "--filter",
            "tasks|transport",
            "--smoke",
        ],
    );
}

/// Without LUMEN_ADDRESS it starts its own two-node cluster in-process.
#[test]
fn custom_resources() {
    run("custom_resources", &[]);
}

#[test]
fn placement_groups() {
    run("placement_groups", &[]);
}
