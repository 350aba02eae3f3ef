//! Per-task and per-actor environment variables (Ray's `runtime_env={"env_vars": ..}` in
//! `.options()`), after Ray's `python/ray/tests/test_runtime_env_env_vars.py`: a task or actor
//! with `.env(..)` runs in a worker process of its job started with the job's variables and its
//! own on top, one per distinct environment per node and reused; tasks it submits inherit it.
//!
//! Both modes: on the two-node local cluster every test checks what tasks see; embedded, where
//! every task runs in the test's own process and no worker process can be started, a variable
//! the process lacks is refused with an error saying why and what to do, and one it already has
//! is accepted. The job-level variables (`Config::env`) are given on the cluster only (the
//! embedded cluster accepts only those the process already has, which `tests/tasks.rs` covers).

mod common;

use lumen::{Error, SchedulingStrategy};

/// The job's own variables (`Config::env`), on the cluster.
const JOB_ENV: [(&str, &str); 3] = [("foo1", "bar1"), ("foo2", "bar2"), ("z", "job_z")];

fn init() {
    let mut config = lumen::Config::default().num_cpus(2.0).num_gpus(0.0);
    if common::on_cluster() {
        for (name, value) in JOB_ENV {
            config = config.env(name, value);
        }
    }
    common::init(config);
}

/// Every test of this file again, on a two-node local cluster with worker processes.
#[test]
fn suite_on_a_local_cluster() {
    common::rerun_on_a_local_cluster("suite_on_a_local_cluster");
}

#[lumen::remote]
fn get_env(key: String) -> Option<String> {
    std::env::var(key).ok()
}

#[lumen::remote]
fn get_env_and_pid(key: String) -> (Option<String>, u32) {
    (std::env::var(key).ok(), std::process::id())
}

/// Variables given in the attribute (Ray's `@ray.remote(runtime_env=..)`): every call has them.
#[lumen::remote(env(ATTR_SETTING = "attr", OTHER = "o"))]
fn get_attr_env(key: String) -> Option<String> {
    std::env::var(key).ok()
}

/// Ray's `get_env_wrapper`: a nested task without an environment of its own.
#[lumen::remote]
fn get_env_wrapper(key: String) -> Result<Option<String>, Error> {
    common::get(&get_env::remote(key))
}

#[derive(Default)]
pub struct EnvGetter;

#[lumen::remote]
impl EnvGetter {
    pub fn new() -> Self {
        EnvGetter
    }

    pub fn get(&self, key: String) -> Option<String> {
        std::env::var(key).ok()
    }

    /// A task the actor submits, without an environment of its own.
    pub fn get_task(&self, key: String) -> Result<Option<String>, Error> {
        common::get(&get_env::remote(key))
    }

    /// An actor this actor creates with an environment of its own (Ray's `nested_get`).
    pub fn nested_get(&self, key: String) -> Result<Option<String>, Error> {
        let nested = EnvGetter::options().env("c", "e").env("d", "dd").remote();
        common::get(&nested.get(key).remote())
    }
}

fn s(text: &str) -> String {
    text.to_string()
}

/// The first node: tasks pinned there share its worker processes (for pid comparisons).
fn first_node() -> SchedulingStrategy {
    SchedulingStrategy::NodeAffinity {
        node_id: lumen::nodes()[0].node_id,
        soft: false,
    }
}

/// Embedded: the refusal of a variable this process lacks, which says what to do instead.
fn assert_refused_embedded<T: std::fmt::Debug>(result: lumen::Result<T>) {
    let e = result.expect_err("refused on the embedded cluster");
    let text = e.to_string();
    assert!(
        text.contains("embedded cluster")
            && text.contains("start this program with")
            && text.contains("Config::local_cluster"),
        "{e}"
    );
}

#[test]
fn test_environment_variables_task() {
    let _g = common::shared();
    init();
    let with = get_env::options().env("a", "b").remote(s("a"));
    if common::on_cluster() {
        assert_eq!(common::get(&with).unwrap().as_deref(), Some("b"));
    } else {
        assert!(matches!(
            common::get(&with),
            Err(Error::InvalidArgument { .. })
        ));
        assert_refused_embedded(common::get(&with));
        // A variable the process already has, with that value, changes nothing: accepted.
        let path = std::env::var("PATH").unwrap_or_default();
        let same = get_env::options().env("PATH", &path).remote(s("PATH"));
        assert_eq!(common::get(&same).unwrap(), Some(path));
    }
    // A task without one does not see it.
    assert_eq!(common::get(&get_env::remote(s("a"))).unwrap(), None);
}

#[test]
fn test_environment_variables_actor() {
    let _g = common::shared();
    init();
    let a = EnvGetter::options().env("a", "b").env("c", "d").remote();
    if common::on_cluster() {
        assert_eq!(
            common::get(&a.get(s("a")).remote()).unwrap().as_deref(),
            Some("b")
        );
        assert_eq!(
            common::get(&a.get(s("c")).remote()).unwrap().as_deref(),
            Some("d")
        );
        // An actor without one does not see them.
        let plain = EnvGetter::remote();
        assert_eq!(common::get(&plain.get(s("a")).remote()).unwrap(), None);
    } else {
        // The creation is refused: every call says why.
        assert_refused_embedded(common::get(&a.get(s("a")).remote()));
        assert_refused_embedded(common::get(&a.get(s("c")).remote()));
    }
}

#[test]
fn test_environment_variables_nested_task() {
    let _g = common::shared();
    init();
    if !common::on_cluster() {
        return;
    }
    // A child task without an environment of its own inherits its parent's (Ray's
    // `get_env_wrapper`), from a task and from an actor's method.
    let r = get_env_wrapper::options().env("a", "b").remote(s("a"));
    assert_eq!(common::get(&r).unwrap().as_deref(), Some("b"));
    let a = EnvGetter::options().env("a", "b").remote();
    let r = a.get_task(s("a")).remote();
    assert_eq!(common::get(&r).unwrap().as_deref(), Some("b"));
    // Without one, the child has none either.
    let r = get_env_wrapper::remote(s("a"));
    assert_eq!(common::get(&r).unwrap(), None);
}

#[test]
fn test_environment_variables_multitenancy() {
    let _g = common::shared();
    init();
    if !common::on_cluster() {
        return;
    }
    // The job's variables reach every task...
    assert_eq!(
        common::get(&get_env::remote(s("foo1"))).unwrap().as_deref(),
        Some("bar1")
    );
    assert_eq!(
        common::get(&get_env::remote(s("foo2"))).unwrap().as_deref(),
        Some("bar2")
    );
    // ...a task's own win over them, and the others stay (lumen merges; Ray's test expects
    // foo2 to be gone: its per-task env replaces the job's).
    let own = || get_env::options().env("foo1", "baz1");
    assert_eq!(
        common::get(&own().remote(s("foo1"))).unwrap().as_deref(),
        Some("baz1")
    );
    assert_eq!(
        common::get(&own().remote(s("foo2"))).unwrap().as_deref(),
        Some("bar2")
    );
}

#[test]
fn test_environment_variables_complex() {
    let _g = common::shared();
    init();
    if !common::on_cluster() {
        return;
    }
    let a = EnvGetter::options().env("a", "b").env("c", "d").remote();
    let get = |r: lumen::ObjectRef<Option<String>>| common::get(&r).unwrap();
    assert_eq!(get(a.get(s("a")).remote()).as_deref(), Some("b"));
    assert_eq!(
        common::get(&a.get_task(s("a")).remote())
            .unwrap()
            .as_deref(),
        Some("b")
    );
    // The nested actor's own (c, d) over its creator's (a, c) over the job's (z).
    let nested = |key: &str| common::get(&a.nested_get(s(key)).remote()).unwrap();
    assert_eq!(nested("a").as_deref(), Some("b"));
    assert_eq!(nested("c").as_deref(), Some("e"));
    assert_eq!(nested("d").as_deref(), Some("dd"));
    assert_eq!(nested("z").as_deref(), Some("job_z"));
    assert_eq!(get(a.get(s("z")).remote()).as_deref(), Some("job_z"));
}

#[test]
fn test_environment_variables_reuse() {
    let _g = common::shared();
    init();
    if !common::on_cluster() {
        return;
    }
    // New tasks do not reuse another environment's process by mistake.
    let f = |val: Option<&str>| {
        let o = get_env::options();
        let o = match val {
            Some(v) => o.env("TEST123", v),
            None => o,
        };
        common::get(&o.remote(s("TEST123"))).unwrap()
    };
    assert_eq!(f(None), None);
    assert_eq!(f(Some("VAL1")).as_deref(), Some("VAL1"));
    assert_eq!(f(None), None);
    assert_eq!(f(Some("VAL2")).as_deref(), Some("VAL2"));
    assert_eq!(f(None), None);
    assert_eq!(f(Some("VAL1")).as_deref(), Some("VAL1"));
}

#[test]
fn test_environment_variables_env_caching() {
    let _g = common::shared();
    init();
    if !common::on_cluster() {
        return;
    }
    // Pinned to one node: a node keeps one worker process per environment of the job.
    let run = |val: Option<&str>| {
        let o = get_env_and_pid::options().scheduling_strategy(first_node());
        let o = match val {
            Some(v) => o.env("TEST_CACHING", v),
            None => o,
        };
        common::get(&o.remote(s("TEST_CACHING"))).unwrap()
    };
    let (none, pid0) = run(None);
    assert_eq!(none, None);
    let (v1, pid1) = run(Some("VAL1"));
    assert_eq!(v1.as_deref(), Some("VAL1"));
    let (v2, pid2) = run(Some("VAL2"));
    assert_eq!(v2.as_deref(), Some("VAL2"));
    assert!(
        pid1 != pid2 && pid0 != pid1 && pid0 != pid2,
        "{pid0} {pid1} {pid2}"
    );
    assert_eq!(
        run(None).1,
        pid0,
        "no environment: the job's worker process"
    );
    assert_eq!(
        run(Some("VAL2")).1,
        pid2,
        "the same environment: the same process"
    );
    assert_eq!(run(Some("VAL1")).1, pid1);
    // The order the variables are given in does not make another environment.
    let both = |first: (&str, &str), second: (&str, &str)| {
        let o = get_env_and_pid::options()
            .scheduling_strategy(first_node())
            .env(first.0, first.1)
            .env(second.0, second.1);
        common::get(&o.remote(s("X"))).unwrap()
    };
    let (x, p) = both(("X", "1"), ("Y", "2"));
    assert_eq!(x.as_deref(), Some("1"));
    assert_eq!(both(("Y", "2"), ("X", "1")).1, p);
}

#[test]
fn variables_no_process_can_hold_or_lumens_own_are_refused_at_submission() {
    let _g = common::shared();
    init();
    for (name, value, why) in [
        ("", "1", "empty"),
        ("A=B", "1", "'='"),
        ("A", "x\0y", "NUL"),
        ("LUMEN_WORKER", "1", "lumen's own"),
    ] {
        let r = get_env::options().env(name, value).remote(s("A"));
        let e = common::get(&r).expect_err("refused");
        assert!(
            matches!(e, Error::InvalidArgument { .. })
                && e.to_string().contains(".env(")
                && e.to_string().contains(why),
            "{name:?}: {e}"
        );
        let a = EnvGetter::options().env(name, value).remote();
        let e = common::get(&a.get(s("A")).remote()).expect_err("refused");
        assert!(e.to_string().contains(why), "{name:?}: {e}");
    }
}

#[test]
fn variables_in_the_attribute_apply_to_every_call_and_the_call_may_override_them() {
    let _g = common::shared();
    init();
    let plain = get_attr_env::remote(s("ATTR_SETTING"));
    if !common::on_cluster() {
        assert_refused_embedded(common::get(&plain));
        return;
    }
    assert_eq!(common::get(&plain).unwrap().as_deref(), Some("attr"));
    let r = get_attr_env::options()
        .env("ATTR_SETTING", "call")
        .remote(s("ATTR_SETTING"));
    assert_eq!(common::get(&r).unwrap().as_deref(), Some("call"));
    let r = get_attr_env::options()
        .env("ATTR_SETTING", "call")
        .remote(s("OTHER"));
    assert_eq!(common::get(&r).unwrap().as_deref(), Some("o"));
}
