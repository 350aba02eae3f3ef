//! `lumen`: start, stop and inspect a cluster (API.md §9).
//!
//! `lumen start` runs a node daemon in the background (the head runs the GCS too), records it
//! in the per-user session folder, and prints how to join and how to point a driver at it.
//! `lumen stop` stops every node this user runs on this machine; `lumen status` and
//! `lumen list` read the cluster's state over its authenticated endpoint.

use anyhow::{anyhow, bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use lumen::cluster::filter_rows;
use lumen::cluster::session::{self, NodeRecordFile};
use lumen::cluster::{Node, NodeOptions};
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(
    name = "lumen",
    version,
    about = "Start, stop and inspect a lumen cluster",
    allow_negative_numbers = true
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(clap::Args, Clone, Debug)]
#[command(allow_negative_numbers = true)]
struct StartArgs {
    /// Start the head node (runs the GCS).
    #[arg(long, conflicts_with = "address")]
    head: bool,
    /// The head's HOST:PORT, to join an existing cluster.
    #[arg(long, required_unless_present = "head")]
    address: Option<String>,
    /// Port to listen on (head default 6379; other nodes: any free port).
    #[arg(long)]
    port: Option<u16>,
    /// IP address to listen on (default: 127.0.0.1 for a head, else the address that reaches the head).
    #[arg(long)]
    host: Option<IpAddr>,
    /// The cluster token (default: LUMEN_TOKEN, else found locally; the head makes one).
    /// Prefer LUMEN_TOKEN: a command line is visible to every user of the machine (`ps`); the
    /// node process itself never gets the token in its arguments.
    #[arg(long)]
    token: Option<String>,
    /// Logical CPUs of this node (default: the machine's cores).
    #[arg(long)]
    num_cpus: Option<f64>,
    /// GPUs of this node (default: detected).
    #[arg(long)]
    num_gpus: Option<f64>,
    /// Bytes of the `memory` resource.
    #[arg(long)]
    memory: Option<f64>,
    /// Custom resources as JSON, e.g. '{"node0": 2}'.
    #[arg(long)]
    resources: Option<String>,
    /// Bytes of object-store memory of each process's store on this node (default: 30% of
    /// available memory); beyond it, objects spill to --spill-dir.
    #[arg(long)]
    object_store_memory: Option<f64>,
    /// Where objects spill when a store is full (default: the session folder's `spill`).
    #[arg(long)]
    spill_dir: Option<PathBuf>,
    /// Seconds of silence after which the head marks a node dead.
    #[arg(long, default_value_t = 5.0)]
    node_timeout: f64,
    /// Run in the foreground instead of as a background daemon.
    #[arg(long)]
    block: bool,
    /// Serve Prometheus metrics at http://HOST:P/metrics, HOST being the node's listen address
    /// (0: any free port). Token required: `Authorization: Bearer <token>`.
    #[arg(long)]
    metrics_port: Option<u16>,
    /// IP address the head's dashboard listens on.
    #[arg(long, default_value = "127.0.0.1")]
    dashboard_host: IpAddr,
    /// Port of the head's dashboard (0: any free port). Token required: open
    /// http://HOST:PORT/?token=<token> once in a browser.
    #[arg(long, default_value_t = 8265)]
    dashboard_port: u16,
    /// Serve no dashboard on the head.
    #[arg(long, conflicts_with_all = ["dashboard_host", "dashboard_port"])]
    no_dashboard: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Format {
    Table,
    Json,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ListWhat {
    Nodes,
    Actors,
    PlacementGroups,
    Jobs,
    Workers,
    Tasks,
    Objects,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum SummaryWhat {
    Tasks,
    Actors,
    Objects,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start a node: `--head` for a new cluster, `--address` to join one.
    Start(StartArgs),
    /// Stop every lumen node this user runs on this machine.
    Stop {
        /// Seconds to wait for a graceful stop before killing.
        #[arg(long, default_value_t = 10)]
        grace: u64,
    },
    /// Show the cluster's nodes, resource usage and pending demands.
    Status {
        /// The cluster (default: LUMEN_ADDRESS, else the head on this machine).
        #[arg(long)]
        address: Option<String>,
        /// The cluster token (default: LUMEN_TOKEN, else found locally). Prefer LUMEN_TOKEN:
        /// a command line is visible to every user of the machine while it runs.
        #[arg(long)]
        token: Option<String>,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// List the cluster's nodes, actors, placement groups, jobs, workers, tasks or objects.
    List {
        #[arg(value_enum)]
        what: ListWhat,
        /// Only rows whose field is (`key=value`) or is not (`key!=value`) a value; repeat for
        /// several. Fields are named as `--format json` names them.
        #[arg(long = "filter", value_name = "KEY=VALUE")]
        filters: Vec<lumen::Filter>,
        /// The cluster (default: LUMEN_ADDRESS, else the head on this machine).
        #[arg(long)]
        address: Option<String>,
        /// The cluster token (default: LUMEN_TOKEN, else found locally). Prefer LUMEN_TOKEN.
        #[arg(long)]
        token: Option<String>,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        /// Show every field.
        #[arg(long)]
        detail: bool,
    },
    /// Count the cluster's tasks (per function and state), actors (per type and state) or
    /// objects (per reference type and state, with their bytes).
    Summary {
        #[arg(value_enum)]
        what: SummaryWhat,
        /// The cluster (default: LUMEN_ADDRESS, else the head on this machine).
        #[arg(long)]
        address: Option<String>,
        /// The cluster token (default: LUMEN_TOKEN, else found locally). Prefer LUMEN_TOKEN.
        #[arg(long)]
        token: Option<String>,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Show the object stores of the cluster: per node, then per process (driver, worker
    /// process), the objects held, the bytes in memory against the cap, what was spilled, and
    /// the results kept for other processes.
    Memory {
        /// The cluster (default: LUMEN_ADDRESS, else the head on this machine).
        #[arg(long)]
        address: Option<String>,
        /// The cluster token (default: LUMEN_TOKEN, else found locally). Prefer LUMEN_TOKEN.
        #[arg(long)]
        token: Option<String>,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Write the cluster's task events as a Chrome trace (open it in chrome://tracing or
    /// https://ui.perfetto.dev): one bar per task attempt, a row per node and worker process.
    Timeline {
        /// Only this job's tasks (its id, or a prefix of it).
        #[arg(long)]
        job: Option<String>,
        /// Where to write it (`-`: standard output); default `lumen-timeline-<time>.json`.
        #[arg(short = 'o', long)]
        output: Option<PathBuf>,
        /// The cluster (default: LUMEN_ADDRESS, else the head on this machine).
        #[arg(long)]
        address: Option<String>,
        /// The cluster token (default: LUMEN_TOKEN, else found locally). Prefer LUMEN_TOKEN.
        #[arg(long)]
        token: Option<String>,
    },
    /// List the logs of this machine's lumen nodes and of their worker processes, or print one.
    Logs {
        /// A log as listed: `worker-<pid>.out` / `.err` (what a worker process printed),
        /// `node-<pid>.<date>.log` (a node's log), `node-<time>.out` (what a node printed).
        name: Option<String>,
        /// Only the last N lines.
        #[arg(long)]
        tail: Option<usize>,
        /// Then print what is added to it, until interrupted.
        #[arg(long)]
        follow: bool,
        /// What the worker process with this pid on this machine printed (`worker-<pid>.out`).
        #[arg(long, conflicts_with_all = ["name", "actor", "node"])]
        pid: Option<u32>,
        /// What the worker process hosting this actor (its id, or a prefix) printed, on any
        /// node.
        #[arg(long, conflicts_with_all = ["name", "node"])]
        actor: Option<String>,
        /// The node with this id (or a prefix): its log NAME, or its own newest log (a node on
        /// another machine: the list of its logs), read through the node when it is elsewhere.
        #[arg(long)]
        node: Option<String>,
        /// With --pid or --actor: the process's stderr (`.err`) instead of its stdout.
        #[arg(long)]
        err: bool,
    },
    /// (internal) run a node in this process; `lumen start` runs this in the background.
    #[command(name = "__node", hide = true)]
    Node(StartArgs),
}

fn parse_resources(json: &str) -> Result<Vec<(String, f64)>> {
    let map: BTreeMap<String, serde_json::Value> = serde_json::from_str(json).with_context(|| {
        format!("--resources must be a JSON object of name to number, like '{{\"node0\": 2}}'; got {json:?}")
    })?;
    map.into_iter()
        .map(|(k, v)| {
            let n = v.as_f64().ok_or_else(|| {
                anyhow!("--resources: the amount of {k:?} must be a number, not {v}")
            })?;
            Ok((k, n))
        })
        .collect()
}

fn node_options(args: &StartArgs) -> Result<NodeOptions> {
    let mut config = lumen::Config::default();
    if let Some(n) = args.num_cpus {
        config = config.num_cpus(n);
    }
    if let Some(n) = args.num_gpus {
        config = config.num_gpus(n);
    }
    if let Some(n) = args.memory {
        config = config.memory(n);
    }
    if let Some(n) = args.object_store_memory {
        config = config.object_store_memory(n);
    }
    config = config.spill_dir(match &args.spill_dir {
        Some(dir) => dir.clone(),
        None => session::session_subdir("spill")?,
    });
    if let Some(r) = &args.resources {
        for (k, v) in parse_resources(r)? {
            config = config.resource(k, v);
        }
    }
    if !(args.node_timeout > 0.0 && args.node_timeout.is_finite()) {
        bail!("--node-timeout must be a positive number of seconds");
    }
    let mut options = if args.head {
        let host = args.host.unwrap_or(IpAddr::from([127, 0, 0, 1]));
        NodeOptions::head(SocketAddr::new(host, args.port.unwrap_or(6379)))
    } else {
        let address = args.address.clone().ok_or_else(|| {
            anyhow!("give --head to start a cluster, or --address HOST:PORT to join one")
        })?;
        let gcs: SocketAddr = std::net::ToSocketAddrs::to_socket_addrs(&address)
            .with_context(|| format!("--address {address:?} is not HOST:PORT"))?
            .next()
            .ok_or_else(|| anyhow!("--address {address:?} resolves to nothing"))?;
        let host = args.host.unwrap_or_else(|| {
            if gcs.ip().is_loopback() {
                gcs.ip()
            } else {
                std::net::UdpSocket::bind(("0.0.0.0", 0))
                    .and_then(|s| {
                        s.connect(gcs)?;
                        s.local_addr()
                    })
                    .map_or(IpAddr::from([127, 0, 0, 1]), |a| a.ip())
            }
        });
        NodeOptions::join(SocketAddr::new(host, args.port.unwrap_or(0)), address)
    };
    options.token = args.token.clone();
    options.resources = config;
    options.node_timeout = Duration::from_secs_f64(args.node_timeout);
    options.log_dir = Some(log_dir()?);
    options.metrics_port = args.metrics_port;
    options.dashboard = (args.head && !args.no_dashboard)
        .then(|| SocketAddr::new(args.dashboard_host, args.dashboard_port));
    // Validate now, so a bad flag fails before anything starts.
    options.resources.validate()?;
    Ok(options)
}

/// How `lumen start` hands a `--token` to the node process it starts: in the environment, which
/// only the same user can read (`/proc/<pid>/environ` is 0400), never in the arguments, which
/// every user can (`ps`).
const NODE_TOKEN_ENV: &str = "LUMEN_NODE_TOKEN";

/// `args` without `--token VALUE` and `--token=VALUE`.
fn without_token(args: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut out = Vec::new();
    let mut args = args.into_iter();
    while let Some(a) = args.next() {
        if a == "--token" {
            args.next();
        } else if !a.starts_with("--token=") {
            out.push(a);
        }
    }
    out
}

/// The session's log folder (0700, checked like the session folder).
fn log_dir() -> Result<PathBuf> {
    Ok(session::session_subdir("logs")?)
}

/// Days of node log a node keeps (one file a day, older ones deleted).
const LOG_DAYS: usize = 7;

/// The name of the log a node with process id `pid` writes, before its date.
fn log_prefix(pid: u32) -> String {
    format!("node-{pid}")
}

/// Sends this process's `tracing` events to `logs/node-<pid>.<date>.log` (a new file each day,
/// [`LOG_DAYS`] kept), or to stderr for a node in the foreground; the level comes from
/// `LUMEN_LOG`, else `RUST_LOG` (default `info`). Every file this process makes is its user's only (umask 077):
/// logs name peers and refusals. The guard flushes the log when dropped.
fn install_log(foreground: bool) -> Result<Option<tracing_appender::non_blocking::WorkerGuard>> {
    // SAFETY: umask only changes this process's file-creation mask.
    unsafe {
        libc::umask(0o077);
    }
    let filter = tracing_subscriber::EnvFilter::try_from_env("LUMEN_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false);
    if foreground {
        let _ = builder.with_writer(std::io::stderr).try_init();
        return Ok(None);
    }
    let file = tracing_appender::rolling::Builder::new()
        .rotation(tracing_appender::rolling::Rotation::DAILY)
        .filename_prefix(log_prefix(std::process::id()))
        .filename_suffix("log")
        .max_log_files(LOG_DAYS)
        .build(log_dir()?)
        .context("cannot open the node's log")?;
    let (writer, guard) = tracing_appender::non_blocking(file);
    let _ = builder.with_writer(writer).try_init();
    Ok(Some(guard))
}

/// Runs a node in this process until SIGTERM or SIGINT.
fn run_node(args: &StartArgs) -> Result<()> {
    let _log = install_log(args.block)?;
    // Block the stop signals in every thread (they inherit this mask); this thread waits for them.
    // SAFETY: plain libc signal-mask calls on a zeroed, initialized sigset.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    };
    let options = node_options(args)?;
    let head = options.head;
    let node = Node::start(options)?;
    let record = NodeRecordFile {
        pid: std::process::id(),
        address: node.address().to_string(),
        head,
        gcs: node.gcs_address().to_string(),
        token: node.token(),
        node_id: node.node_id().to_string(),
        fingerprint: node.fingerprint(),
        dashboard: node.dashboard_address().map(|a| a.to_string()),
        metrics: node.metrics_address().map(|a| a.to_string()),
    };
    session::write_node(&record)?;
    println!(
        "lumen node {} listening at {}",
        record.node_id, record.address
    );
    let mut sig: libc::c_int = 0;
    // SAFETY: sigwait on the set blocked above.
    unsafe {
        libc::sigwait(&set, &mut sig);
    }
    eprintln!("lumen node {}: stopping (signal {sig})", record.node_id);
    session::remove_node(record.pid);
    node.stop();
    Ok(())
}

/// `lumen logs`: lists this machine's session logs, or prints one (`--tail`, `--follow`).
fn logs(name: Option<&str>, tail: Option<usize>, follow: bool) -> Result<()> {
    let dir = log_dir()?;
    let Some(name) = name else {
        let mut files: Vec<(String, u64)> = std::fs::read_dir(&dir)
            .with_context(|| format!("cannot read {}", dir.display()))?
            .flatten()
            .filter_map(|e| {
                let size = e.metadata().ok().filter(|m| m.is_file())?.len();
                Some((e.file_name().to_string_lossy().into_owned(), size))
            })
            .collect();
        files.sort();
        println!("{:<48} {:>12}", "LOG", "BYTES");
        for (file, size) in files {
            println!("{file:<48} {size:>12}");
        }
        return Ok(());
    };
    // A name as listed, nothing else: no path leaves the log folder.
    let path = dir.join(name);
    if name.contains('/') || name.starts_with('.') || !path.is_file() {
        bail!(
            "no log named {name:?} in {}: `lumen logs` lists them",
            dir.display()
        );
    }
    let text = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let shown = &text[tail.map_or(0, |n| tail_start(&text, n))..];
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(shown)?;
    out.flush()?;
    let mut offset = text.len() as u64;
    if !follow {
        return Ok(());
    }
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let len = std::fs::metadata(&path).map_or(offset, |m| m.len());
        if len > offset {
            use std::io::{Read, Seek, SeekFrom};
            let mut f = std::fs::File::open(&path)?;
            f.seek(SeekFrom::Start(offset))?;
            let mut added = Vec::new();
            f.take(len - offset).read_to_end(&mut added)?;
            out.write_all(&added)?;
            out.flush()?;
            offset = len;
        }
    }
}

/// The log of a worker process's stdout (or stderr) on this machine.
fn worker_log(pid: u32, err: bool) -> String {
    format!("worker-{pid}.{}", if err { "err" } else { "out" })
}

/// Which log `lumen logs` prints: one in this machine's log folder (or, with none, the list),
/// or one of another machine's node (or, with none, the list of its logs).
enum Log {
    Here(Option<String>),
    On { node: String, name: Option<String> },
}

/// Whether node `id` (its full id) runs on this machine.
fn is_local_node(id: &str) -> bool {
    session::nodes().iter().any(|n| n.node_id == id)
}

/// The log of the worker process hosting the actor `id` (or a prefix of its id), found from the
/// task events of its creation.
fn actor_log(id: &str, err: bool) -> Result<Log> {
    let id = id.to_ascii_lowercase();
    let listing = lumen::cluster::tasks_at(None, None)?;
    let created = listing.tasks.iter().rev().find(|t| {
        t.task_type == "ACTOR_CREATION_TASK"
            && t.actor_id.is_some_and(|a| a.to_string().starts_with(&id))
    });
    let Some(t) = created else {
        bail!("no actor {id}… in the cluster's task events (`lumen list actors` lists them)");
    };
    let (Some(pid), Some(node)) = (t.pid, t.node_id) else {
        bail!("actor {id}… has not started in a process yet ({})", t.state);
    };
    let (node, name) = (node.to_string(), Some(worker_log(pid, err)));
    Ok(if is_local_node(&node) {
        Log::Here(name)
    } else {
        Log::On { node, name }
    })
}

/// Log `name` of node `id` (or a prefix of its id), or, without a name, a node on this machine's
/// newest own log or another machine's node's list of logs.
fn node_log(id: &str, name: Option<String>) -> Result<Log> {
    let id = id.to_ascii_lowercase();
    let nodes = session::nodes();
    let Some(node) = nodes.iter().find(|n| n.node_id.starts_with(&id)) else {
        // Not on this machine: the cluster knows it, and its raylet reads its logs.
        let s = lumen::cluster::cluster_status(None, None)?;
        let found: Vec<&String> = s
            .nodes
            .iter()
            .map(|n| &n.node_id)
            .filter(|n| n.starts_with(&id))
            .collect();
        let [node] = found[..] else {
            bail!(
                "{} node of the cluster has an id starting with {id} (`lumen status` lists them)",
                if found.is_empty() {
                    "no"
                } else {
                    "more than one"
                }
            );
        };
        return Ok(Log::On {
            node: node.clone(),
            name,
        });
    };
    if name.is_some() {
        return Ok(Log::Here(name));
    }
    let prefix = format!("{}.", log_prefix(node.pid));
    let dir = log_dir()?;
    let mut own: Vec<(std::time::SystemTime, String)> = std::fs::read_dir(&dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let modified = e.metadata().ok()?.modified().ok()?;
            name.starts_with(&prefix).then_some((modified, name))
        })
        .collect();
    own.sort();
    let newest = own
        .pop()
        .map(|(_, name)| name)
        .ok_or_else(|| anyhow!("node {} has no log in {}", node.node_id, dir.display()))?;
    Ok(Log::Here(Some(newest)))
}

/// How often `lumen logs --follow` asks another machine's node for what was added to a log.
const FOLLOW_POLL: Duration = Duration::from_millis(500);

/// Prints a log of another machine's node (its last `tail` lines, default 1,000), or the list
/// of its logs, read through its raylet; with `follow`, then what is added to the log, by
/// polling the node, until interrupted.
fn remote_log(node: &str, name: Option<&str>, tail: Option<usize>, follow: bool) -> Result<()> {
    let lines = tail.unwrap_or(1000).min(u32::MAX as usize) as u32;
    if follow {
        let Some(name) = name else {
            bail!("--follow needs a log's name: `lumen logs --node {node}` lists them");
        };
        let (last, mut log) = lumen::cluster::follow_node_log_at(None, None, node, name, lines)?;
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        out.write_all(last.as_bytes())?;
        out.flush()?;
        loop {
            let added = log.poll()?;
            if added.restarted {
                eprintln!(
                    "lumen logs: {name} became shorter (truncated or replaced); from its start"
                );
            }
            if added.text.is_empty() {
                std::thread::sleep(FOLLOW_POLL);
                continue;
            }
            out.write_all(added.text.as_bytes())?;
            out.flush()?;
        }
    }
    let read = lumen::cluster::node_log_at(None, None, node, name, lines)?;
    match read.text {
        Some(text) => print!("{text}"),
        None => {
            println!("{:<48} {:>12}   (on node {node})", "LOG", "BYTES");
            for (file, size) in read.files {
                println!("{file:<48} {size:>12}");
            }
        }
    }
    Ok(())
}

/// Where the last `n` lines of `text` start (a last line without its end counts as a line).
fn tail_start(text: &[u8], n: usize) -> usize {
    if n == 0 {
        return text.len();
    }
    let body = text.strip_suffix(b"\n").unwrap_or(text);
    body.iter()
        .enumerate()
        .rev()
        .filter(|(_, b)| **b == b'\n')
        .nth(n - 1)
        .map_or(0, |(i, _)| i + 1)
}

/// `lumen start`: runs the node as a background daemon and waits until it is up.
fn start(args: StartArgs) -> Result<()> {
    let options = node_options(&args)?; // bad flags and JSON fail here, before any process starts
    if args.block {
        return run_node(&args);
    }
    if args.head {
        if let Some(h) = session::local_head() {
            bail!(
                "a head is already running on this machine at {h}; stop it with `lumen stop` first"
            );
        }
    }
    // What the node prints (panics, anything not logged); its log proper is `node-<pid>.*.log`.
    let log_path = log_dir()?.join(format!(
        "node-{}.out",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis())
    ));
    let log = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&log_path)
            .with_context(|| format!("cannot create {}", log_path.display()))?
    };
    let exe = std::env::current_exe().context("cannot find the lumen executable")?;
    let mut cmd = Command::new(exe);
    cmd.arg("__node")
        .args(without_token(std::env::args().skip(2)));
    match &options.token {
        Some(t) => cmd.env(NODE_TOKEN_ENV, t),
        None => cmd.env_remove(NODE_TOKEN_ENV),
    };
    cmd.stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: setsid in the child only detaches it from the terminal's session.
        unsafe {
            cmd.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
    }
    let mut child = cmd.spawn().context("cannot start the node daemon")?;
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(60);
    let record = loop {
        if let Some(r) = session::nodes().into_iter().find(|n| n.pid == pid) {
            break r;
        }
        if let Some(status) = child.try_wait()? {
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            bail!(
                "the node did not start ({status}):\n{}",
                text.lines()
                    .rev()
                    .take(20)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!(
                "the node did not start within 60 s; see {}",
                log_path.display()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    if args.head {
        println!(
            "Started the lumen head node {} at {}.",
            record.node_id, record.address
        );
        println!();
        println!("To add a node to this cluster, on another machine run:");
        println!(
            "    LUMEN_TOKEN={} lumen start --address {}",
            record.token, record.gcs
        );
        println!(
            "(on this machine the token is found automatically: lumen start --address {})",
            record.gcs
        );
        println!();
        println!("To run a program on the cluster:");
        println!(
            "    LUMEN_ADDRESS={} cargo run --example custom_resources",
            record.gcs
        );
        println!("(elsewhere also set LUMEN_TOKEN={})", record.token);
        println!();
        match (&record.dashboard, args.no_dashboard) {
            (Some(at), _) => {
                println!("Dashboard (the token is required; this link signs a browser in):");
                println!("    http://{at}/?token={}", record.token);
            }
            (None, false) => {
                println!(
                    "Dashboard: not served: {}:{} could not be listened on (its log says why); \
                     choose another with --dashboard-port",
                    args.dashboard_host, args.dashboard_port
                );
            }
            (None, true) => {}
        }
        println!();
        println!("To see it: lumen status. To stop every node on this machine: lumen stop.");
    } else {
        println!(
            "Started lumen node {} at {}, joined the cluster at {}.",
            record.node_id, record.address, record.gcs
        );
    }
    if let Some(at) = &record.metrics {
        println!("Metrics: http://{at}/metrics (send `Authorization: Bearer <token>`)");
    }
    println!(
        "Log: {} (what it printed: {})",
        log_dir()?
            .join(format!("{}.<date>.log", log_prefix(pid)))
            .display(),
        log_path.display()
    );
    Ok(())
}

/// Where this machine's nodes of the cluster at `gcs` serve their dashboard and metrics, as
/// `lumen status` shows it.
fn web_addresses(gcs: &str) {
    let nodes: Vec<_> = session::nodes()
        .into_iter()
        .filter(|n| n.gcs == gcs)
        .collect();
    if nodes
        .iter()
        .all(|n| n.dashboard.is_none() && n.metrics.is_none())
    {
        return;
    }
    println!("\nOn this machine (token required)\n{}", "-".repeat(63));
    for n in &nodes {
        if let Some(at) = &n.dashboard {
            println!(" Dashboard: http://{at}/ (sign in with /?token=<token>)");
        }
    }
    for n in &nodes {
        if let Some(at) = &n.metrics {
            println!(" Metrics of node_{}: http://{at}/metrics", n.node_id);
        }
    }
}

fn stop(grace: u64) -> Result<()> {
    let nodes = session::try_nodes()?;
    if nodes.is_empty() {
        println!("No lumen nodes are running on this machine.");
        return Ok(());
    }
    for n in &nodes {
        // Checked again right before the signal: the record's process may have gone since.
        if session::is_lumen_node(n.pid) {
            // SAFETY: kill(2) on a running lumen node (a pid in 2..=i32::MAX, see is_lumen_node).
            unsafe {
                libc::kill(n.pid as libc::pid_t, libc::SIGTERM);
            }
        }
    }
    let deadline = Instant::now() + Duration::from_secs(grace);
    let mut killed = 0;
    for n in &nodes {
        while session::is_lumen_node(n.pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if session::is_lumen_node(n.pid) {
            // SAFETY: as above.
            unsafe {
                libc::kill(n.pid as libc::pid_t, libc::SIGKILL);
            }
            killed += 1;
        }
        session::remove_node(n.pid);
    }
    println!(
        "Stopped {} lumen node(s){}.",
        nodes.len(),
        if killed > 0 {
            format!(" ({killed} killed after {grace} s)")
        } else {
            String::new()
        }
    );
    Ok(())
}

fn main() -> std::process::ExitCode {
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lumen: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    // What the session folder says is trusted below: refuse one that is not safe (another
    // user's, a link, writable by others) before anything reads it.
    if !matches!(cli.command, Cmd::Node(_)) {
        session::try_nodes()?;
    }
    match cli.command {
        Cmd::Start(args) => start(args),
        Cmd::Node(mut args) => {
            if args.token.is_none() {
                args.token = std::env::var(NODE_TOKEN_ENV).ok();
            }
            // Not passed on to anything this node starts (its workers get the token their way).
            std::env::remove_var(NODE_TOKEN_ENV);
            run_node(&args)
        }
        Cmd::Stop { grace } => stop(grace),
        Cmd::Logs {
            name,
            tail,
            follow,
            pid,
            actor,
            node,
            err,
        } => {
            let log = match (name, pid, actor, node) {
                (name, None, None, Some(node)) => node_log(&node, name)?,
                (Some(name), ..) => Log::Here(Some(name)),
                (_, Some(pid), ..) => Log::Here(Some(worker_log(pid, err))),
                (_, _, Some(actor), _) => actor_log(&actor, err)?,
                _ => Log::Here(None),
            };
            match log {
                Log::Here(name) => logs(name.as_deref(), tail, follow),
                Log::On { node, name } => remote_log(&node, name.as_deref(), tail, follow),
            }
        }
        Cmd::Status {
            address,
            token,
            format,
        } => {
            let s = lumen::cluster::cluster_status(address.as_deref(), token.as_deref())?;
            match format {
                Format::Table => {
                    print!("{s}");
                    web_addresses(&s.address);
                }
                Format::Json => println!("{}", serde_json::to_string_pretty(&s)?),
            }
            Ok(())
        }
        Cmd::List {
            what,
            filters,
            address,
            token,
            format,
            detail,
        } => list(
            what,
            &filters,
            address.as_deref(),
            token.as_deref(),
            format,
            detail,
        ),
        Cmd::Summary {
            what,
            address,
            token,
            format,
        } => summary(what, address.as_deref(), token.as_deref(), format),
        Cmd::Memory {
            address,
            token,
            format,
        } => memory(address.as_deref(), token.as_deref(), format),
        Cmd::Timeline {
            job,
            output,
            address,
            token,
        } => timeline(job.as_deref(), output, address.as_deref(), token.as_deref()),
    }
}

fn list(
    what: ListWhat,
    filters: &[lumen::Filter],
    address: Option<&str>,
    token: Option<&str>,
    format: Format,
    detail: bool,
) -> Result<()> {
    match what {
        ListWhat::Tasks => return list_tasks(filters, address, token, format, detail),
        ListWhat::Objects => return list_objects(filters, address, token, format),
        _ => {}
    }
    let mut s = lumen::cluster::cluster_status(address, token)?;
    match what {
        ListWhat::Nodes => s.nodes = filter_rows(s.nodes, filters)?,
        ListWhat::Actors => s.actors = filter_rows(s.actors, filters)?,
        ListWhat::PlacementGroups => s.placement_groups = filter_rows(s.placement_groups, filters)?,
        ListWhat::Jobs => s.jobs = filter_rows(s.jobs, filters)?,
        ListWhat::Workers => s.workers = filter_rows(s.workers, filters)?,
        ListWhat::Tasks | ListWhat::Objects => {}
    }
    match (what, format) {
        (ListWhat::Nodes, Format::Json) => {
            println!("{}", serde_json::to_string_pretty(&s.nodes)?)
        }
        (ListWhat::Actors, Format::Json) => {
            println!("{}", serde_json::to_string_pretty(&s.actors)?)
        }
        (ListWhat::PlacementGroups, Format::Json) => {
            println!("{}", serde_json::to_string_pretty(&s.placement_groups)?)
        }
        (ListWhat::Workers, Format::Json) => {
            println!("{}", serde_json::to_string_pretty(&s.workers)?)
        }
        (ListWhat::Workers, Format::Table) => {
            println!(
                "{:<7} {:<34} {:<8} {:<22} {:<6} NODE_ID",
                "TYPE", "JOB_ID", "PID", "ADDRESS", "ALIVE"
            );
            for w in &s.workers {
                println!(
                    "{:<7} {:<34} {:<8} {:<22} {:<6} {}",
                    w.worker_type,
                    w.job_id,
                    w.pid.map_or("-".to_string(), |p| p.to_string()),
                    w.address.as_deref().unwrap_or("-"),
                    w.alive,
                    w.node_id.as_deref().unwrap_or("-")
                );
            }
        }
        (ListWhat::Jobs, Format::Json) => {
            println!("{}", serde_json::to_string_pretty(&s.jobs)?)
        }
        (ListWhat::Jobs, Format::Table) => {
            println!(
                "{:<34} {:<9} {:<22} {:<24} NAMESPACE",
                "JOB_ID", "STATUS", "DRIVER", "ENTRYPOINT"
            );
            for j in &s.jobs {
                println!(
                    "{:<34} {:<9} {:<22} {:<24} {}",
                    j.job_id,
                    j.status,
                    j.driver_address,
                    j.entrypoint.as_deref().unwrap_or("-"),
                    j.namespace
                );
            }
        }
        (ListWhat::PlacementGroups, Format::Table) => {
            println!(
                "{:<34} {:<16} {:<13} {:<14} BUNDLES",
                "PLACEMENT_GROUP_ID", "NAME", "STATE", "STRATEGY"
            );
            for g in &s.placement_groups {
                let bundles: Vec<String> = g
                    .bundles
                    .iter()
                    .zip(&g.bundle_nodes)
                    .map(|(b, n)| {
                        let res: Vec<String> = b.iter().map(|(k, v)| format!("{k}={v}")).collect();
                        match (detail, n) {
                            (true, Some(n)) => format!("{{{}}}@{n}", res.join(" ")),
                            _ => format!("{{{}}}", res.join(" ")),
                        }
                    })
                    .collect();
                println!(
                    "{:<34} {:<16} {:<13} {:<14} {}{}",
                    g.id,
                    g.name.as_deref().unwrap_or("-"),
                    g.state,
                    g.strategy,
                    bundles.join(" "),
                    if detail && g.detached {
                        " (detached)"
                    } else {
                        ""
                    }
                );
            }
        }
        (ListWhat::Nodes, Format::Table) => {
            println!(
                "{:<34} {:<22} {:<6} {:<5} RESOURCES",
                "NODE_ID", "ADDRESS", "STATE", "HEAD"
            );
            for n in &s.nodes {
                let res: Vec<String> = n
                    .total
                    .iter()
                    .filter(|(k, _)| detail || !k.contains("memory"))
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                println!(
                    "{:<34} {:<22} {:<6} {:<5} {}",
                    n.node_id.to_string(),
                    n.address,
                    if n.alive { "ALIVE" } else { "DEAD" },
                    n.head,
                    res.join(" ")
                );
            }
        }
        (ListWhat::Actors, Format::Table) => {
            println!(
                "{:<34} {:<30} {:<18} {:<16} NODE_ID",
                "ACTOR_ID", "CLASS", "STATE", "NAME"
            );
            for a in &s.actors {
                println!(
                    "{:<34} {:<30} {:<18} {:<16} {}",
                    a.actor_id,
                    a.class,
                    a.state,
                    a.name.as_deref().unwrap_or("-"),
                    a.node_id.as_deref().unwrap_or("-")
                );
            }
        }
        (ListWhat::Tasks | ListWhat::Objects, _) => {}
    }
    Ok(())
}

fn list_objects(
    filters: &[lumen::Filter],
    address: Option<&str>,
    token: Option<&str>,
    format: Format,
) -> Result<()> {
    let objects = filter_rows(lumen::cluster::objects_at(address, token)?, filters)?;
    if let Format::Json = format {
        println!("{}", serde_json::to_string_pretty(&objects)?);
        return Ok(());
    }
    println!(
        "{:<34} {:>12} {:<8} {:<22} {:<8} {:<6} OWNER",
        "OBJECT_ID", "SIZE", "STATE", "REFERENCE_TYPE", "PID", "OWNED"
    );
    for o in &objects {
        println!(
            "{:<34} {:>12} {:<8} {:<22} {:<8} {:<6} {}",
            o.object_id,
            o.size.map_or("-".to_string(), |b| b.to_string()),
            o.state,
            o.reference_type,
            o.pid,
            o.owned,
            o.owner_address
        );
    }
    Ok(())
}

fn list_tasks(
    filters: &[lumen::Filter],
    address: Option<&str>,
    token: Option<&str>,
    format: Format,
    detail: bool,
) -> Result<()> {
    let listing = lumen::cluster::tasks_at(address, token)?;
    let tasks = filter_rows(listing.tasks, filters)?;
    if let Format::Json = format {
        println!("{}", serde_json::to_string_pretty(&tasks)?);
        return Ok(());
    }
    println!(
        "{:<34} {:<3} {:<40} {:<24} {:<34} {:<8} TYPE",
        "TASK_ID", "TRY", "NAME", "STATE", "NODE_ID", "PID"
    );
    for t in &tasks {
        println!(
            "{:<34} {:<3} {:<40} {:<24} {:<34} {:<8} {}",
            t.task_id,
            t.attempt,
            t.name,
            t.state,
            t.node_id.map_or("-".to_string(), |n| n.to_string()),
            t.pid.map_or("-".to_string(), |p| p.to_string()),
            t.task_type
        );
        if detail {
            let ms = |a: Option<u64>, b: Option<u64>| match (a, b) {
                (Some(a), Some(b)) => format!("{:.3} ms", b.saturating_sub(a) as f64 / 1000.0),
                _ => "-".to_string(),
            };
            println!(
                "    job {}  queued {}  ran {}{}",
                t.job_id.map_or("-".to_string(), |j| j.to_string()),
                ms(t.submitted_time_us, t.start_time_us),
                ms(t.start_time_us, t.end_time_us),
                t.error
                    .as_deref()
                    .map(|e| format!("\n    error: {e}"))
                    .unwrap_or_default()
            );
        }
    }
    if listing.dropped > 0 {
        println!(
            "({} older or unreported task events are gone: the cluster keeps the last 300,000, \
             about 100,000 attempts)",
            listing.dropped
        );
    }
    Ok(())
}

/// `lumen memory`: the object stores of the cluster, per node and per process.
fn memory(address: Option<&str>, token: Option<&str>, format: Format) -> Result<()> {
    let stores = lumen::cluster::stores_at(address, token)?;
    if let Format::Json = format {
        println!("{}", serde_json::to_string_pretty(&stores)?);
        return Ok(());
    }
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let mut nodes: BTreeMap<String, (usize, usize, u64, u64, usize, u64)> = BTreeMap::new();
    for s in &stores {
        let n = nodes.entry(s.node_id.to_string()).or_default();
        n.0 += 1;
        n.1 += s.objects;
        n.2 += s.memory_bytes;
        n.3 += s.capacity;
        n.4 += s.spilled_objects;
        n.5 += s.spilled_bytes;
    }
    println!("======== object stores per node ========");
    println!(
        "{:<34} {:>9} {:>8} {:>22} {:>8} {:>12}",
        "NODE", "PROCESSES", "OBJECTS", "IN MEMORY / CAP (MiB)", "SPILLED", "SPILLED MiB"
    );
    for (node, (procs, objects, used, cap, spilled, spilled_bytes)) in &nodes {
        println!(
            "{:<34} {:>9} {:>8} {:>22} {:>8} {:>12.1}",
            node,
            procs,
            objects,
            format!("{:.1} / {:.1}", mib(*used), mib(*cap)),
            spilled,
            mib(*spilled_bytes)
        );
    }
    println!();
    println!("======== per process ========");
    println!(
        "{:<18} {:>8} {:<18} {:>8} {:>22} {:>8} {:>12} {:>6}",
        "NODE", "PID", "JOB", "OBJECTS", "IN MEMORY / CAP (MiB)", "SPILLED", "SPILLED MiB", "KEPT"
    );
    for s in &stores {
        let node = s.node_id.to_string();
        let job = s.job_id.to_string();
        println!(
            "{:<18} {:>8} {:<18} {:>8} {:>22} {:>8} {:>12.1} {:>6}",
            &node[..node.len().min(16)],
            s.pid,
            &job[..job.len().min(16)],
            s.objects,
            format!("{:.1} / {:.1}", mib(s.memory_bytes), mib(s.capacity)),
            s.spilled_objects,
            mib(s.spilled_bytes),
            s.kept_copies
        );
    }
    Ok(())
}

fn summary(
    what: SummaryWhat,
    address: Option<&str>,
    token: Option<&str>,
    format: Format,
) -> Result<()> {
    // (name, type, counts per state) per row.
    let rows: Vec<(String, String, BTreeMap<String, usize>)> = match what {
        SummaryWhat::Tasks => {
            let listing = lumen::cluster::tasks_at(address, token)?;
            lumen::cluster::summarize_tasks(&listing.tasks)
                .into_iter()
                .map(|r| (r.name, r.task_type, r.state_counts))
                .collect()
        }
        SummaryWhat::Objects => {
            let objects = lumen::cluster::objects_at(address, token)?;
            let rows = lumen::cluster::summarize_objects(&objects);
            if let Format::Json = format {
                println!("{}", serde_json::to_string_pretty(&rows)?);
                return Ok(());
            }
            println!("======== objects summary ========");
            println!(
                "{:<22} {:<8} {:>8} {:>14}",
                "REFERENCE_TYPE", "STATE", "COUNT", "BYTES"
            );
            for r in &rows {
                println!(
                    "{:<22} {:<8} {:>8} {:>14}",
                    r.reference_type, r.state, r.count, r.bytes
                );
            }
            let (count, bytes) = rows
                .iter()
                .fold((0, 0), |(c, b), r| (c + r.count, b + r.bytes));
            println!("total: {count} objects, {bytes} bytes");
            return Ok(());
        }
        SummaryWhat::Actors => {
            let s = lumen::cluster::cluster_status(address, token)?;
            let mut by: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
            for a in s.actors {
                *by.entry(a.class).or_default().entry(a.state).or_default() += 1;
            }
            by.into_iter()
                .map(|(class, counts)| (class, "ACTOR".to_string(), counts))
                .collect()
        }
    };
    if let Format::Json = format {
        let json: Vec<serde_json::Value> = rows
            .iter()
            .map(|(name, kind, counts)| {
                serde_json::json!({ "name": name, "type": kind, "state_counts": counts })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&json)?);
        return Ok(());
    }
    let (noun, what) = match what {
        SummaryWhat::Tasks => ("FUNC_OR_METHOD", "tasks"),
        SummaryWhat::Actors | SummaryWhat::Objects => ("CLASS", "actors"),
    };
    println!("======== {what} summary ========");
    println!("{noun:<50} {:<20} STATE_COUNTS", "TYPE");
    for (name, kind, counts) in &rows {
        let counts: Vec<String> = counts.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        println!("{name:<50} {kind:<20} {}", counts.join(", "));
    }
    let total: usize = rows.iter().flat_map(|r| r.2.values()).sum();
    println!("total: {total} {what}");
    Ok(())
}

fn timeline(
    job: Option<&str>,
    output: Option<PathBuf>,
    address: Option<&str>,
    token: Option<&str>,
) -> Result<()> {
    let listing = lumen::cluster::tasks_at(address, token)?;
    let tasks: Vec<lumen::TaskInfo> = match job {
        None => listing.tasks,
        Some(j) => {
            let j = j.to_ascii_lowercase();
            listing
                .tasks
                .into_iter()
                .filter(|t| t.job_id.is_some_and(|id| id.to_string().starts_with(&j)))
                .collect()
        }
    };
    let now_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0);
    let trace = lumen::cluster::chrome_trace(&tasks, now_us);
    let text = serde_json::to_string(&trace)?;
    let path = output
        .unwrap_or_else(|| PathBuf::from(format!("lumen-timeline-{}.json", now_us / 1_000_000)));
    if path.as_os_str() == "-" {
        println!("{text}");
        return Ok(());
    }
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    eprintln!(
        "wrote {} task attempts to {}: open it in chrome://tracing or https://ui.perfetto.dev",
        tasks.iter().filter(|t| t.start_time_us.is_some()).count(),
        path.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_starts_at_the_last_lines() {
        let text = b"a\nb\nc\n";
        assert_eq!(&text[tail_start(text, 1)..], b"c\n");
        assert_eq!(&text[tail_start(text, 2)..], b"b\nc\n");
        assert_eq!(&text[tail_start(text, 9)..], b"a\nb\nc\n");
        assert_eq!(&text[tail_start(text, 0)..], b"");
        let open = b"a\nb";
        assert_eq!(&open[tail_start(open, 1)..], b"b");
        assert_eq!(tail_start(b"", 3), 0);
    }

    #[test]
    fn the_token_is_taken_out_of_the_node_arguments() {
        let args = [
            "--address",
            "a:1",
            "--token",
            "t0k",
            "--num-cpus",
            "2",
            "--token=x",
        ];
        let kept = without_token(args.iter().map(|s| s.to_string()));
        assert_eq!(kept, ["--address", "a:1", "--num-cpus", "2"]);
    }
}
