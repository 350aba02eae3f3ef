//! The state API's tasks: `lumen::list_tasks()` lists each attempt of each task, actor creation
//! and actor call with its state, node, process and error, as processes report them to the GCS;
//! summaries and the Chrome trace are made from those rows.
//!
//! After Ray's `test_state_api.py` (`test_list_get_tasks`, `test_parent_task_id`,
//! `test_list_get_task_multiple_attempt_all_failed`, `test_list_actor_tasks`, `test_filter`) and
//! `test_task_events.py::test_failed_task_error`, in both modes.

#![allow(clippy::new_without_default)]

mod common;

use common::PATIENCE;
use lumen::{Filter, TaskInfo};
use std::collections::BTreeSet;
use std::time::Duration;

/// Four CPUs a node: three held tasks and one waiting for its argument fit at once.
fn init() {
    common::init(lumen::Config::default().num_cpus(4.0).num_gpus(0.0));
}

/// Every test of this file again, on a two-node local cluster with worker processes.
#[test]
fn suite_on_a_local_cluster() {
    common::rerun_on_a_local_cluster("suite_on_a_local_cluster");
}

/// Waits (polling, not sleeping as synchronization) until the gate opens.
fn wait_for_gate(gate: &str) {
    while !common::gate_is_open(gate) {
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[lumen::remote]
fn held(gate: String) -> u32 {
    wait_for_gate(&gate);
    std::process::id()
}

#[lumen::remote]
fn gated(gate: String) -> u32 {
    wait_for_gate(&gate);
    std::process::id()
}

#[lumen::remote]
fn after(dep: u32, gate: String) -> u32 {
    wait_for_gate(&gate);
    dep
}

#[lumen::remote]
fn impossible() {}

#[lumen::remote]
fn child() -> u8 {
    1
}

#[lumen::remote]
fn parent() -> u8 {
    lumen::get(&child::remote()).expect("the child runs")
}

#[lumen::remote(max_retries = 2, retry_exceptions = true)]
fn always_fails() -> Result<u8, String> {
    Err("always_fails is expected to fail".into())
}

#[lumen::remote]
fn panics_here() -> u8 {
    panic!("a panic the task events carry")
}

#[lumen::remote]
fn timed(i: u32) -> u32 {
    i
}

/// An actor whose calls wait at a gate.
pub struct Waiter;

#[lumen::remote]
impl Waiter {
    pub fn new() -> Self {
        Waiter
    }

    pub fn wait(&self, gate: String) -> u8 {
        wait_for_gate(&gate);
        1
    }
}

/// An actor that keeps an object it made.
pub struct Keeper {
    kept: Option<lumen::ObjectRef<Vec<u8>>>,
}

#[lumen::remote]
impl Keeper {
    pub fn new() -> Self {
        Keeper { kept: None }
    }

    /// Puts an object and keeps its ref; says which and where.
    pub fn keep(&mut self) -> (String, u32) {
        let r = lumen::put(vec![7u8; 1000]);
        let id = r.id().to_string();
        self.kept = Some(r);
        (id, std::process::id())
    }
}

#[lumen::remote]
fn total(v: Vec<u8>) -> usize {
    v.len()
}

/// This job's attempts of the function (or method) whose path ends with `name`.
fn attempts(name: &str) -> Vec<TaskInfo> {
    let me = lumen::runtime_context().job_id();
    lumen::list_tasks()
        .expect("list_tasks")
        .into_iter()
        .filter(|t| t.job_id == Some(me) && t.name.ends_with(name))
        .collect()
}

fn in_state<'a>(rows: &'a [TaskInfo], state: &str) -> Vec<&'a TaskInfo> {
    rows.iter().filter(|t| t.state == state).collect()
}

/// Waits until `check` passes on the listed attempts; fails with the last rows seen.
fn eventually(what: &str, mut check: impl FnMut() -> Result<(), String>) {
    let mut last = String::new();
    let ok = common::wait_until(PATIENCE, || match check() {
        Ok(()) => true,
        Err(e) => {
            last = e;
            false
        }
    });
    assert!(ok, "{what}: {last}");
}

#[test]
fn test_list_get_tasks() {
    init();
    let _alone = common::exclusive();
    let gate = format!("state-list-{}", std::process::id());
    let running: Vec<_> = (0..2).map(|_| held::remote(gate.clone())).collect();
    let waiting = after::remote(held::remote(gate.clone()), gate.clone());
    let _never = impossible::options().num_gpus(1.0).remote();
    eventually(
        "two held tasks and the dependency run, one waits, one is unplaceable",
        || {
            let held_rows = attempts("::held");
            let after_rows = attempts("::after");
            let impossible_rows = attempts("::impossible");
            let ok = in_state(&held_rows, "RUNNING").len() == 3
                && in_state(&after_rows, "PENDING_ARGS_AVAIL").len() == 1
                && in_state(&impossible_rows, "PENDING_NODE_ASSIGNMENT").len() == 1;
            if ok {
                Ok(())
            } else {
                Err(format!(
                    "{held_rows:#?}\n{after_rows:#?}\n{impossible_rows:#?}"
                ))
            }
        },
    );
    // Where they are: running and waiting ones on a node of the cluster, the running ones in a
    // process; the unplaceable one on none.
    for t in attempts("::held").iter().chain(&attempts("::after")) {
        let node = t.node_id.expect("a placed task has a node").to_string();
        assert!(common::is_node(&node), "{t:?}");
        assert_eq!(t.pid.is_some(), t.state == "RUNNING", "{t:?}");
        assert!(
            t.submitted_time_us.is_some() && t.task_type == "NORMAL_TASK",
            "{t:?}"
        );
    }
    let unplaced = attempts("::impossible");
    assert_eq!(unplaced[0].node_id, None, "{unplaced:?}");
    // Filters, as Ray's: by state, by job.
    let me = lumen::runtime_context().job_id();
    let running_rows =
        lumen::list_tasks_filtered(&["state=RUNNING".parse().expect("a filter")]).expect("list");
    assert!(running_rows.len() >= 3, "{running_rows:#?}");
    assert!(running_rows.iter().all(|t| t.node_id.is_some()));
    let mine = lumen::list_tasks_filtered(&[Filter::eq("job_id", me.to_string())]).expect("list");
    assert!(mine.iter().all(|t| t.job_id == Some(me)) && mine.len() >= 5);
    let not_running = lumen::list_tasks_filtered(&[Filter::ne("state", "RUNNING")]).expect("list");
    assert!(not_running.iter().all(|t| t.state != "RUNNING"));
    let unknown = lumen::list_tasks_filtered(&[Filter::eq("colour", "red")]).unwrap_err();
    assert!(
        unknown.to_string().contains("no field \"colour\""),
        "{unknown}"
    );

    common::open_gate(&gate);
    for r in &running {
        common::get(r).expect("held returns");
    }
    common::get(&waiting).expect("after returns");
    eventually("every held and after task finished", || {
        let rows: Vec<TaskInfo> = attempts("::held")
            .into_iter()
            .chain(attempts("::after"))
            .collect();
        let done = in_state(&rows, "FINISHED").len();
        if done == 4 {
            Ok(())
        } else {
            Err(format!("{rows:#?}"))
        }
    });
    for t in attempts("::held") {
        let (start, end) = (
            t.start_time_us.expect("started"),
            t.end_time_us.expect("ended"),
        );
        assert!(
            t.submitted_time_us.expect("submitted") <= start && start <= end,
            "{t:?}"
        );
    }
}

#[test]
fn test_parent_task_id() {
    init();
    let _shared = common::shared();
    assert_eq!(common::get(&parent::remote()).expect("parent"), 1);
    eventually("the parent and its child are listed", || {
        let (p, c) = (attempts("::parent"), attempts("::child"));
        match (p.first(), c.first()) {
            (Some(p), Some(c)) if p.state == "FINISHED" && c.state == "FINISHED" => {
                assert_eq!(c.parent_task_id, Some(p.task_id), "{p:?}\n{c:?}");
                assert_eq!(p.parent_task_id, None, "the driver submitted it: {p:?}");
                Ok(())
            }
            _ => Err(format!("{p:#?}\n{c:#?}")),
        }
    });
}

#[test]
fn test_list_get_task_multiple_attempt_all_failed() {
    init();
    let _shared = common::shared();
    assert!(common::get(&always_fails::remote()).is_err());
    let me = lumen::runtime_context().job_id();
    eventually("three failed attempts of one task", || {
        let rows = attempts("::always_fails");
        let tries: BTreeSet<u32> = rows.iter().map(|t| t.attempt).collect();
        let ids: BTreeSet<_> = rows.iter().map(|t| t.task_id).collect();
        if rows.len() == 3
            && tries == BTreeSet::from([0, 1, 2])
            && ids.len() == 1
            && rows
                .iter()
                .all(|t| t.state == "FAILED" && t.node_id.is_some())
        {
            Ok(())
        } else {
            Err(format!("{rows:#?}"))
        }
    });
    for t in attempts("::always_fails") {
        assert_eq!(t.job_id, Some(me));
        assert!(common::is_node(
            &t.node_id.expect("ran on a node").to_string()
        ));
        let error = t.error.as_deref().unwrap_or_default();
        assert!(error.contains("expected to fail"), "{t:?}");
    }
}

#[test]
fn test_failed_task_error() {
    init();
    let _shared = common::shared();
    assert!(common::get(&panics_here::remote()).is_err());
    eventually(
        "the panic is the attempt's error, with where it happened",
        || {
            let rows = attempts("::panics_here");
            match rows.first() {
                Some(t) if t.state == "FAILED" => {
                    let e = t.error.as_deref().unwrap_or_default();
                    assert!(e.contains("a panic the task events carry"), "{t:?}");
                    assert!(e.contains("state.rs"), "the location: {t:?}");
                    Ok(())
                }
                _ => Err(format!("{rows:#?}")),
            }
        },
    );
}

#[test]
fn test_list_actor_tasks() {
    init();
    let _alone = common::exclusive();
    let gate = format!("state-actor-{}", std::process::id());
    let waiter = Waiter::remote();
    let actor_id = waiter.id().to_string();
    let calls: Vec<_> = (0..10)
        .map(|_| waiter.wait(gate.clone()).remote())
        .collect();
    eventually("one call runs, nine wait in the actor's queue", || {
        let rows = attempts("::wait");
        let ok = rows.len() == 10
            && in_state(&rows, "RUNNING").len() == 1
            && in_state(&rows, "SUBMITTED_TO_WORKER").len() == 9;
        if ok {
            Ok(())
        } else {
            Err(format!("{rows:#?}"))
        }
    });
    for t in attempts("::wait") {
        assert_eq!(
            t.actor_id.map(|a| a.to_string()),
            Some(actor_id.clone()),
            "{t:?}"
        );
        assert_eq!(t.task_type, "ACTOR_TASK", "{t:?}");
    }
    let created: Vec<TaskInfo> = lumen::list_tasks()
        .expect("list")
        .into_iter()
        .filter(|t| t.actor_id.map(|a| a.to_string()) == Some(actor_id.clone()))
        .filter(|t| t.task_type == "ACTOR_CREATION_TASK")
        .collect();
    assert_eq!(created.len(), 1, "{created:#?}");
    assert_eq!(created[0].state, "FINISHED", "{created:#?}");
    common::open_gate(&gate);
    for c in &calls {
        common::get(c).expect("a call returns");
    }
    eventually("every call finished", || {
        let rows = attempts("::wait");
        if in_state(&rows, "FINISHED").len() == 10 {
            Ok(())
        } else {
            Err(format!("{rows:#?}"))
        }
    });
}

#[test]
fn test_summary_and_timeline() {
    init();
    let _shared = common::shared();
    let refs: Vec<_> = (0..5).map(timed::remote).collect();
    for r in &refs {
        common::get(r).expect("timed");
    }
    eventually("five finished attempts", || {
        let rows = attempts("::timed");
        if in_state(&rows, "FINISHED").len() == 5 {
            Ok(())
        } else {
            Err(format!("{rows:#?}"))
        }
    });
    let rows = attempts("::timed");
    let summary = lumen::cluster::summarize_tasks(&rows);
    assert_eq!(summary.len(), 1, "{summary:?}");
    assert_eq!(
        summary[0].state_counts.get("FINISHED"),
        Some(&5),
        "{summary:?}"
    );
    // The trace: valid JSON of the Chrome format, one complete event per attempt.
    let trace = lumen::cluster::chrome_trace(&rows, 0);
    let text = trace.to_string();
    let back: serde_json::Value = serde_json::from_str(&text).expect("the trace is JSON");
    let events = back["traceEvents"].as_array().expect("traceEvents");
    let spans: Vec<&serde_json::Value> = events.iter().filter(|e| e["ph"] == "X").collect();
    assert_eq!(spans.len(), 5, "{text}");
    for e in spans {
        assert!(
            e["name"].as_str().is_some_and(|n| n.ends_with("::timed")),
            "{e}"
        );
        assert!(
            e["ts"].is_u64() && e["dur"].is_u64() && e["pid"].is_u64(),
            "{e}"
        );
    }
}

#[test]
fn test_list_get_objects() {
    init();
    let _shared = common::shared();
    let data = lumen::put(vec![1u8; 5 << 20]);
    assert_eq!(common::get(&total::remote(&data)).expect("total"), 5 << 20);
    let id = data.id().to_string();
    let rows = lumen::list_objects_filtered(&[Filter::eq("object_id", &id)]).expect("list");
    let mine: Vec<&lumen::ObjectInfo> = rows
        .iter()
        .filter(|o| o.pid == std::process::id())
        .collect();
    assert_eq!(mine.len(), 1, "{rows:#?}");
    let o = mine[0];
    assert!(
        o.owned && o.state == "READY" && o.reference_type == "LOCAL_REFERENCE",
        "{o:?}"
    );
    assert!(o.size.is_some_and(|s| s >= 5 << 20), "{o:?}");
    assert_eq!(o.task_id, None, "a put has no task: {o:?}");
    assert_eq!(o.locations.len(), 1, "{o:?}");
    assert!(common::is_node(&o.locations[0].to_string()), "{o:?}");
    assert_eq!(o.job_id, lumen::runtime_context().job_id());
    // The JSON the CLI prints: ids as hex text.
    let json = serde_json::to_value(o).expect("a row is JSON");
    assert_eq!(json["object_id"], id.as_str());

    // A task's result before it returns: pending, made by that task.
    let gate = format!("state-objects-{}", std::process::id());
    let pending = gated::remote(gate.clone());
    let rows = lumen::list_objects_filtered(&[Filter::eq("object_id", pending.id().to_string())])
        .expect("list");
    assert_eq!(rows.len(), 1, "{rows:#?}");
    assert_eq!(rows[0].state, "PENDING", "{rows:#?}");
    assert!(
        rows[0].task_id.is_some() && rows[0].size.is_none(),
        "{rows:#?}"
    );
    common::open_gate(&gate);
    common::get(&pending).expect("gated returns");
    let rows = lumen::list_objects_filtered(&[Filter::eq("object_id", pending.id().to_string())])
        .expect("list");
    assert_eq!(rows[0].state, "READY", "{rows:#?}");
}

#[test]
fn test_filter() {
    init();
    let _shared = common::shared();
    // As Ray's: an object an actor made and keeps is found by the actor's pid and its
    // reference type.
    let keeper = Keeper::remote();
    let (id, pid) = common::get(&keeper.keep().remote()).expect("keep");
    let rows = lumen::list_objects_filtered(&[
        Filter::eq("pid", pid.to_string()),
        Filter::eq("reference_type", "LOCAL_REFERENCE"),
        Filter::eq("object_id", &id),
    ])
    .expect("list");
    assert_eq!(rows.len(), 1, "{rows:#?}");
    assert!(rows[0].owned, "{rows:#?}");
    let others = lumen::list_objects_filtered(&[
        Filter::ne("pid", pid.to_string()),
        Filter::eq("object_id", &id),
    ])
    .expect("list");
    assert!(others.is_empty(), "{others:#?}");
    // The other listings filter the same way.
    let me = lumen::runtime_context().job_id().to_string();
    let jobs = lumen::cluster::filter_rows(
        lumen::list_jobs().expect("jobs"),
        &[
            Filter::eq("job_id", &me),
            "status=RUNNING".parse().expect("a filter"),
        ],
    )
    .expect("filter");
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    let drivers = lumen::cluster::filter_rows(
        lumen::list_workers().expect("workers"),
        &[
            Filter::eq("worker_type", "DRIVER"),
            Filter::eq("job_id", &me),
        ],
    )
    .expect("filter");
    assert!(
        drivers.iter().any(|w| w.pid == Some(std::process::id())),
        "{drivers:?}"
    );
    let alive = lumen::cluster::filter_rows(
        lumen::list_actors(),
        &[
            Filter::eq("actor_id", keeper.id().to_string()),
            Filter::eq("state", "ALIVE"),
        ],
    )
    .expect("filter");
    assert_eq!(alive.len(), 1, "{alive:?}");
    let summary = lumen::cluster::summarize_objects(&lumen::list_objects().expect("list"));
    assert!(
        summary
            .iter()
            .any(|r| r.reference_type == "LOCAL_REFERENCE" && r.count >= 1),
        "{summary:?}"
    );
}
