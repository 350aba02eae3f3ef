//! The HTTP side of `lumen start` nodes: the head's dashboard, seen by a real headless browser
//! (Debian's `chromium`) and by a plain HTTP client, and each node's Prometheus endpoint; both
//! refuse anyone without the cluster token.
//!
//! The browser part needs `chromium` on `PATH`. Without it the browser checks are skipped with a
//! message, unless `LUMEN_REQUIRE_CHROMIUM` is set (as `.ci/run` does after installing it), when
//! a missing browser fails the test.

use super::{print_and_pid, run_bounded, wait_until, Driver, NodeRecord, Session, TASK_LIMIT};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// An actor that stays alive while the test looks at it.
pub struct Keeper;

#[lumen::remote]
impl Keeper {
    pub fn new() -> Self {
        Keeper
    }

    pub fn ping(&self) -> u32 {
        std::process::id()
    }
}

/// A 1 MiB result: it stays in the worker process that made it.
#[lumen::remote]
fn megabyte() -> lumen::Buffer<u8> {
    lumen::Buffer::from(vec![1u8; 1 << 20])
}

/// Holds its CPU until the file `gate` exists (or a minute passes); returns its process.
#[lumen::remote]
fn hold_cpu(gate: String) -> u32 {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !Path::new(&gate).exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::process::id()
}

/// Where node `record` serves `what` (`dashboard` or `metrics`), from its session record.
fn web_address(session: &Session, record: &NodeRecord, what: &str) -> String {
    let path = session
        .dir
        .join("nodes")
        .join(format!("{}.json", record.pid));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let json: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    json[what]
        .as_str()
        .unwrap_or_else(|| panic!("the node record has no {what} address: {text}"))
        .to_string()
}

/// What an HTTP request got back.
#[derive(Debug)]
struct Answer {
    status: u16,
    head: String,
    body: String,
}

impl Answer {
    /// The value of header `name` (case-insensitive), if any.
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// `GET path` at `addr` with `headers`, over a plain TCP connection (HTTP/1.0: the server
/// closes the connection after the answer, which is read to its end).
fn get(addr: &str, path: &str, headers: &[(&str, &str)]) -> Answer {
    let mut stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    stream
        .set_read_timeout(Some(TASK_LIMIT))
        .expect("read timeout");
    let mut request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n");
    for (k, v) in headers {
        request += &format!("{k}: {v}\r\n");
    }
    request += "\r\n";
    stream.write_all(request.as_bytes()).expect("send");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read the answer");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("not an HTTP answer: {text:?}"));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    Answer {
        status,
        head: head.to_string(),
        body: body.to_string(),
    }
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// `chromium` on `PATH`; `None` (after saying so) when it is not there and not required.
fn chromium() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("chromium"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var_os("LUMEN_REQUIRE_CHROMIUM").is_none(),
            "LUMEN_REQUIRE_CHROMIUM is set but `chromium` is not on PATH (Debian: apt-get \
             install chromium)"
        );
        eprintln!(
            "SKIPPED the browser checks of the dashboard: `chromium` is not on PATH (Debian: \
             apt-get install chromium; set LUMEN_REQUIRE_CHROMIUM=1 to make this a failure)"
        );
    }
    found
}

/// The DOM of `url` after the page ran for 5 s of virtual time, in a fresh browser profile
/// (so no cookie of an earlier run carries over).
fn dump_dom(browser: &Path, session: &Session, url: &str) -> String {
    static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let profile = session.dir.join(format!(
        "chromium-{}",
        RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let mut cmd = Command::new(browser);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--virtual-time-budget=5000",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .args(["--dump-dom", url]);
    let run = run_bounded(cmd, Duration::from_secs(120));
    assert!(run.ok(), "chromium --dump-dom {url}: {run}");
    run.stdout
}

/// The issue's check of the dashboard: a head and a joined node started with `lumen start`, a
/// named actor alive on the second node and a task that printed a line; the page, loaded by a
/// headless browser through `/?token=` (a session cookie and a redirect), shows both nodes,
/// the actor and the printed line, and without the token the browser gets the 401 text. An HTTP
/// client gets the JSON with `Authorization: Bearer` and 401 with a wrong token.
#[test]
fn the_dashboard_shows_the_cluster_to_holders_of_the_token_only() {
    let session = Session::new("dashboard");
    let head = session.start_head(&[
        "--num-cpus",
        "1",
        "--resources",
        r#"{"node0": 2}"#,
        "--dashboard-port",
        "0",
    ]);
    let node = session.join(
        &head.gcs,
        &["--num-cpus", "1", "--resources", r#"{"node1": 2}"#],
    );
    let dashboard = web_address(&session, &head, "dashboard");
    let _driver = Driver::connect(&session, &head.gcs, &head.token);
    let keeper = Keeper::options()
        .name("dashboard-keeper")
        .resource("node1", 1.0)
        .remote();
    lumen::get_timeout(&keeper.ping().remote(), TASK_LIMIT).expect("the actor answers");
    let line = format!("hello from the dashboard test {}", std::process::id());
    let pid = lumen::get_timeout(&print_and_pid::remote(line.clone()), TASK_LIMIT)
        .expect("the printing task");
    let kept = session.dir.join("logs").join(format!("worker-{pid}.out"));
    assert!(
        wait_until(TASK_LIMIT, || std::fs::read_to_string(&kept)
            .is_ok_and(|t| t.contains(&line))),
        "the line is not in {}:\n{}",
        kept.display(),
        session.logs()
    );

    // An HTTP client.
    let status = get(
        &dashboard,
        "/api/status",
        &[("Authorization", &bearer(&head.token))],
    );
    assert_eq!(status.status, 200, "{status:?}");
    let json: serde_json::Value = serde_json::from_str(&status.body).expect("JSON");
    let ids: Vec<&str> = json["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .filter_map(|n| n["node_id"].as_str())
        .collect();
    assert!(
        ids.contains(&head.node_id.as_str()) && ids.contains(&node.node_id.as_str()),
        "{json:#}"
    );
    assert!(
        json["actors"].as_array().expect("actors").iter().any(|a| {
            a["name"] == "dashboard-keeper"
                && a["state"] == "ALIVE"
                && a["node_id"] == node.node_id.as_str()
        }),
        "{json:#}"
    );
    // One endpoint per table of the page, each a JSON list.
    for table in [
        "nodes",
        "actors",
        "placement_groups",
        "jobs",
        "workers",
        "logs",
    ] {
        let answer = get(
            &dashboard,
            &format!("/api/{table}"),
            &[("Authorization", &bearer(&head.token))],
        );
        let list: serde_json::Value = serde_json::from_str(&answer.body)
            .unwrap_or_else(|e| panic!("/api/{table}: {e}: {answer:?}"));
        assert!(
            answer.status == 200 && list.is_array(),
            "/api/{table}: {answer:?}"
        );
    }
    // The tasks: the printing task, finished, among the newest attempts.
    let mut tasks = String::new();
    assert!(
        wait_until(TASK_LIMIT, || {
            let answer = get(
                &dashboard,
                "/api/tasks",
                &[("Authorization", &bearer(&head.token))],
            );
            tasks = answer.body;
            serde_json::from_str::<serde_json::Value>(&tasks).is_ok_and(|t| {
                t["recent"].as_array().is_some_and(|rows| {
                    rows.iter().any(|r| {
                        r["name"]
                            .as_str()
                            .is_some_and(|n| n.ends_with("::print_and_pid"))
                            && r["state"] == "FINISHED"
                    })
                })
            })
        }),
        "/api/tasks: {tasks}"
    );
    let actors = get(
        &dashboard,
        "/api/actors",
        &[("Authorization", &bearer(&head.token))],
    );
    assert!(
        actors.status == 200 && actors.body.contains("dashboard-keeper"),
        "{actors:?}"
    );
    let logs = get(
        &dashboard,
        "/api/logs",
        &[("Authorization", &bearer(&head.token))],
    );
    let file = format!("worker-{pid}.out");
    assert!(logs.status == 200 && logs.body.contains(&file), "{logs:?}");
    let tail = get(
        &dashboard,
        &format!("/api/logs/{file}?lines=5"),
        &[("Authorization", &bearer(&head.token))],
    );
    assert!(tail.status == 200 && tail.body.contains(&line), "{tail:?}");
    let outside = get(
        &dashboard,
        "/api/logs/..%2Fnodes",
        &[("Authorization", &bearer(&head.token))],
    );
    assert_eq!(outside.status, 404, "{outside:?}");
    // Another node's logs, read through that node (here on the same machine, so the same files).
    let other = &node.node_id[..12];
    let theirs = get(
        &dashboard,
        &format!("/api/logs?node={other}"),
        &[("Authorization", &bearer(&head.token))],
    );
    assert!(
        theirs.status == 200 && theirs.body.contains(&file),
        "{theirs:?}"
    );
    let their_tail = get(
        &dashboard,
        &format!("/api/logs/{file}?node={other}&lines=5"),
        &[("Authorization", &bearer(&head.token))],
    );
    assert!(
        their_tail.status == 200 && their_tail.body.contains(&line),
        "{their_tail:?}"
    );
    for (path, status) in [
        (format!("/api/logs/..%2Fnodes?node={other}"), 404),
        ("/api/logs?node=ffffffffffff".to_string(), 404),
    ] {
        let refused = get(
            &dashboard,
            &path,
            &[("Authorization", &bearer(&head.token))],
        );
        assert_eq!(refused.status, status, "{path}: {refused:?}");
    }
    let wrong = super::wrong_token(&head.token);
    for headers in [
        vec![("Authorization", bearer(&wrong))],
        vec![("Authorization", format!("Basic {}", head.token))],
        vec![],
    ] {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        for path in ["/", "/api/status", "/api/logs"] {
            let refused = get(&dashboard, path, &headers);
            assert_eq!(refused.status, 401, "{path} with {headers:?}: {refused:?}");
            assert!(
                refused.body.contains("token is required")
                    && refused.body.contains("Authorization: Bearer <token>"),
                "{refused:?}"
            );
        }
    }
    // The browser's way, by hand: the token in the URL gives a session cookie and a redirect.
    let signed = get(&dashboard, &format!("/?token={}", head.token), &[]);
    assert_eq!(signed.status, 303, "{signed:?}");
    assert_eq!(signed.header("location"), Some("/"), "{signed:?}");
    let cookie = signed.header("set-cookie").expect("a session cookie");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert!(
        !cookie.contains(&head.token),
        "the cookie is not the token: {cookie}"
    );
    let pair = cookie.split(';').next().expect("name=value");
    let page = get(&dashboard, "/", &[("Cookie", pair)]);
    assert!(
        page.status == 200 && page.body.contains("<title>lumen dashboard</title>"),
        "{page:?}"
    );
    let bad = get(&dashboard, &format!("/?token={wrong}"), &[]);
    assert_eq!(bad.status, 401, "{bad:?}");

    let status = session.lumen(&["status"]);
    assert!(
        status.ok()
            && status
                .stdout
                .contains(&format!("Dashboard: http://{dashboard}/")),
        "lumen status says where the dashboard is: {status}"
    );

    // A real browser.
    let Some(browser) = chromium() else {
        lumen::kill(&keeper);
        return;
    };
    let url = format!("http://{dashboard}/?token={}", head.token);
    let wanted = [
        head.node_id.as_str(),
        node.node_id.as_str(),
        "dashboard-keeper",
        "ALIVE",
        line.as_str(),
        "print_and_pid",
        "FINISHED",
    ];
    let mut dom = String::new();
    let shown = wait_until(TASK_LIMIT, || {
        dom = dump_dom(&browser, &session, &url);
        wanted.iter().all(|w| dom.contains(w))
    });
    assert!(
        shown,
        "the page does not show all of {wanted:?}:\n{dom}\n{}",
        session.logs()
    );
    let refused = dump_dom(&browser, &session, &format!("http://{dashboard}/"));
    assert!(
        refused.contains("401 Unauthorized") && refused.contains("token is required"),
        "without the token: {refused}"
    );
    assert!(!refused.contains(&node.node_id), "{refused}");
    lumen::kill(&keeper);
}

/// The value of the sample `series` (name and labels, as written) in Prometheus `text`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let value = l.strip_prefix(series)?.strip_prefix(' ')?;
        value.split_whitespace().next()?.parse().ok()
    })
}

/// Each node's `/metrics` (`lumen start --metrics-port`): the node's resources total and
/// available, its worker processes, and on the head the cluster's actors by state; the
/// available CPUs of a node drop while a task holds one and come back after. Without the token
/// (or with a wrong one) a scrape is refused.
#[test]
fn metrics_follow_resources_and_actors_for_holders_of_the_token_only() {
    let session = Session::new("metrics");
    let head = session.start_head(&["--num-cpus", "1", "--metrics-port", "0", "--no-dashboard"]);
    let node = session.join(
        &head.gcs,
        &[
            "--num-cpus",
            "2",
            "--resources",
            r#"{"node1": 2}"#,
            "--metrics-port",
            "0",
        ],
    );
    let (head_metrics, node_metrics) = (
        web_address(&session, &head, "metrics"),
        web_address(&session, &node, "metrics"),
    );
    assert!(
        std::fs::read_to_string(session.dir.join("nodes").join(format!("{}.json", head.pid)))
            .is_ok_and(|t| !t.contains("\"dashboard\"")),
        "--no-dashboard: no dashboard"
    );
    let auth = bearer(&head.token);
    let scrape = |at: &str| {
        let a = get(at, "/metrics", &[("Authorization", &auth)]);
        assert_eq!(a.status, 200, "{a:?}");
        assert!(
            a.header("content-type")
                .is_some_and(|c| c.contains("openmetrics-text")),
            "{a:?}"
        );
        a.body
    };
    let cpu = |kind: &str| {
        format!(
            "lumen_node_resource_{kind}{{node=\"{}\",resource=\"CPU\"}}",
            node.node_id
        )
    };
    let text = scrape(&node_metrics);
    assert_eq!(sample(&text, &cpu("total")), Some(2.0), "{text}");
    assert_eq!(
        sample(
            &text,
            &format!(
                "lumen_node_resource_total{{node=\"{}\",resource=\"node1\"}}",
                node.node_id
            )
        ),
        Some(2.0),
        "{text}"
    );
    assert!(
        !text.contains("lumen_actors"),
        "cluster series on the head only: {text}"
    );

    let _driver = Driver::connect(&session, &head.gcs, &head.token);
    let keeper = Keeper::options()
        .name("metrics-keeper")
        .resource("node1", 1.0)
        .remote();
    lumen::get_timeout(&keeper.ping().remote(), TASK_LIMIT).expect("the actor answers");
    let alive = |text: &str| sample(text, "lumen_actors{state=\"ALIVE\"}").unwrap_or(0.0);
    let mut text = String::new();
    assert!(
        wait_until(TASK_LIMIT, || {
            text = scrape(&head_metrics);
            alive(&text) >= 1.0
        }),
        "{text}"
    );
    assert!(
        sample(&text, "lumen_nodes{state=\"alive\"}") == Some(2.0),
        "{text}"
    );

    // A task holds one of the node's CPUs until its gate opens.
    // The actor, placed with a CPU, runs holding none (only its `node1`): all are free again.
    let available = |text: &str| sample(text, &cpu("available"));
    let before = 2.0;
    assert!(
        wait_until(TASK_LIMIT, || {
            text = scrape(&node_metrics);
            available(&text) == Some(before)
        }),
        "the node's CPUs are not all free: {text}"
    );
    let gate = session.dir.join("metrics-gate");
    let held = hold_cpu::options()
        .resource("node1", 1.0)
        .remote(gate.display().to_string());
    assert!(
        wait_until(TASK_LIMIT, || {
            text = scrape(&node_metrics);
            available(&text) == Some(before - 1.0)
        }),
        "the held CPU does not show (free before: {before}): {text}"
    );
    assert!(
        sample(
            &text,
            &format!(
                "lumen_node_workers{{node=\"{}\",state=\"alive\"}}",
                node.node_id
            )
        )
        .is_some_and(|n| n >= 1.0),
        "{text}"
    );
    // The node's own QUIC traffic: connections to the head and the driver, bytes both ways.
    let traffic = |text: &str, series: &str| {
        sample(text, &format!("{series}{{node=\"{}\"}}", node.node_id)).unwrap_or(0.0)
    };
    assert!(
        traffic(&text, "lumen_node_transport_connections") >= 1.0
            && traffic(&text, "lumen_node_transport_sent_bytes_total") > 0.0
            && traffic(&text, "lumen_node_transport_received_bytes_total") > 0.0,
        "{text}"
    );
    // The object store series: a 1 MiB result made on the node stays there, in memory.
    let store = |text: &str, state: &str| {
        sample(
            text,
            &format!(
                "lumen_object_store_bytes{{node=\"{}\",state=\"{state}\"}}",
                node.node_id
            ),
        )
        .unwrap_or(0.0)
    };
    let stored_before = store(&text, "memory");
    let kept = megabyte::options().resource("node1", 1.0).remote();
    assert!(
        wait_until(TASK_LIMIT, || {
            text = scrape(&node_metrics);
            store(&text, "memory") >= stored_before + (1 << 20) as f64
        }),
        "the kept result does not show in the node's store (before: {stored_before}): {text}"
    );
    assert!(
        sample(
            &text,
            &format!(
                "lumen_object_store_capacity_bytes{{node=\"{}\"}}",
                node.node_id
            )
        )
        .is_some_and(|n| n > 0.0),
        "{text}"
    );
    drop(kept);
    // The task series (on the head, from the task events): the held task runs.
    let finished_before = sample(&scrape(&head_metrics), "lumen_tasks_finished_total");
    assert!(
        wait_until(TASK_LIMIT, || {
            text = scrape(&head_metrics);
            sample(&text, "lumen_tasks{state=\"RUNNING\"}").is_some_and(|n| n >= 1.0)
        }),
        "the running task does not show: {text}"
    );
    std::fs::write(&gate, b"").expect("open the gate");
    lumen::get_timeout(&held, TASK_LIMIT).expect("the task ends");
    assert!(
        wait_until(TASK_LIMIT, || {
            text = scrape(&head_metrics);
            sample(&text, "lumen_tasks_finished_total") > finished_before
        }),
        "the finished task is not counted (before: {finished_before:?}): {text}"
    );
    assert!(
        sample(&text, "lumen_task_queue_seconds_count").is_some_and(|n| n >= 1.0),
        "{text}"
    );
    assert!(
        wait_until(TASK_LIMIT, || {
            text = scrape(&node_metrics);
            available(&text) == Some(before)
        }),
        "the CPU does not come back: {text}"
    );

    // Refused without the token.
    let wrong = bearer(&super::wrong_token(&head.token));
    for at in [&head_metrics, &node_metrics] {
        for headers in [vec![], vec![("Authorization", wrong.as_str())]] {
            let refused = get(at, "/metrics", &headers);
            assert_eq!(refused.status, 401, "{refused:?}");
            assert!(refused.body.contains("token is required"), "{refused:?}");
            assert!(!refused.body.contains("lumen_node"), "{refused:?}");
        }
    }
    lumen::kill(&keeper);
}
