//! lumen's microbenchmark, in the format of Ray's `ray microbenchmark`.
//!
//! Each metric: a warm-up, then timed rounds; the figure is mean ± std of the rounds' rates,
//! printed as `NAME per second MEAN +- STD` with Ray's metric names and the same workload
//! definitions (Ray's `ray_perf.py`), so the two outputs line up line by line. No-op tasks and
//! methods return the 2-byte value `b"ok"`.
//!
//! ```text
//! cargo run --release --example microbenchmark                  # every metric
//! cargo run --release --example microbenchmark -- --filter actor --rounds 2 --seconds 1
//! cargo run --release --example microbenchmark -- --filter lumen --drain 1000000
//! cargo run --release --example microbenchmark -- --filter 'tasks sync|1:1 actor calls sync'
//! ```
//!
//! `--filter` runs the rows whose names contain one of its `|`-separated parts, in their usual
//! order.
//!
//! After Ray's rows come lumen's own figures, prefixed `lumen: `: a 100 MiB object read by a task
//! (GB/s), as a `Vec<u8>` and as a `Buffer<u8>`; a new 100 MiB result read by the driver each
//! time (over two nodes: pulled from the worker node that keeps it); put and get of 100 MiB
//! (GB/s) and 1 MiB (per second) buffers and vectors (Ray's counterparts:
//! `bench/ray_objects.py`), time from `lumen::init()` to the first task's result, the process's resident memory
//! right after that (with `--address`, also each `lumen start` node of this machine, read
//! before the driver connects), the resident memory a held small object and a held task result
//! cost (200,000 puts and 20,000 tasks, measured before the other rows, and only when the
//! filter names them: `--filter 'lumen: resident'`, since the grown heap slows the rows after
//! it), actor creation rate (1000 actors, one call each), and with `--drain N`, N no-op tasks
//! queued at once then drained (total seconds and the process's peak resident memory), and the
//! round trip of lumen's transport alone between this process and a copy of it (one request
//! and its reply over QUIC, nothing else: the floor under every row whose calls cross
//! processes). `--smoke` shrinks the
//! large payloads 1000× (for tests that only check every metric runs; its figures mean nothing).
//!
//! Where it runs:
//!
//! ```text
//! cargo run --release --example microbenchmark                          # embedded (default)
//! cargo run --release --example microbenchmark -- --two-nodes           # 2 nodes over QUIC
//! cargo run --release --example microbenchmark -- --address HOST:PORT   # a running cluster
//! ```
//!
//! `--two-nodes` starts two nodes in this process, each with its own QUIC endpoint on 127.0.0.1:
//! a head with no CPUs (the driver's node) and a worker node with the machine's cores, so every
//! task runs in a worker process on the other node and every result crosses the network path.

use lumen::{ActorHandle, ObjectRef};
use std::time::{Duration, Instant};

/// The length of a byte array (its argument crosses to wherever the task runs).
#[lumen::remote]
fn byte_len(v: Vec<u8>) -> usize {
    v.len()
}

/// A fresh buffer of `n` bytes, made where the task runs (and kept there).
#[lumen::remote]
fn fresh_buffer(n: usize) -> lumen::Buffer<u8> {
    lumen::Buffer::from(vec![1u8; n])
}

/// The length of a buffer (passed by ref, it is read where it is stored, not copied).
#[lumen::remote]
fn buffer_len(v: lumen::Buffer<u8>) -> usize {
    v.len()
}

#[lumen::remote]
fn small_value() -> Vec<u8> {
    b"ok".to_vec()
}

/// `n` puts of a small value (one "client" of the multi-client put row).
#[lumen::remote]
fn put_small_many(n: u32) {
    for _ in 0..n {
        drop(lumen::put(0i64));
    }
}

/// `n` puts of an array of `len` zeros (one client of the multi-client gigabytes row). `put`
/// takes the vector over without copying it, so each put is given a copy, made here: the copy
/// Ray makes into its store. (`black_box` keeps the compiler from seeing that the source is all
/// zeros, which would turn the copy into a lazily zeroed allocation.)
#[lumen::remote]
fn put_large_many(n: u32, len: usize) {
    let src = std::hint::black_box(vec![0i64; len]);
    for _ in 0..n {
        drop(lumen::put(src.clone()));
    }
}

/// An object holding 10,000 refs.
#[lumen::remote]
fn object_containing_refs() -> Vec<ObjectRef<i64>> {
    (0..10_000).map(|_| lumen::put(1i64)).collect()
}

/// A serial, zero-CPU actor (Ray's `Actor`).
#[derive(Default)]
pub struct Server;

#[lumen::remote]
impl Server {
    pub fn new() -> Self {
        Server
    }
    pub fn small_value(&self) -> Vec<u8> {
        b"ok".to_vec()
    }
    pub fn small_value_arg(&self, _x: i64) -> Vec<u8> {
        b"ok".to_vec()
    }
    /// Submits `n` tasks and waits for them (a "client" of the multi-client tasks row).
    pub fn small_value_batch(&self, n: usize) {
        let refs: Vec<_> = (0..n).map(|_| small_value::remote()).collect();
        lumen::get_all(&refs).expect("tasks");
    }
}

/// An async actor (Ray's `AsyncActor`).
#[derive(Default)]
pub struct AsyncServer;

#[lumen::remote]
impl AsyncServer {
    pub fn new() -> Self {
        AsyncServer
    }
    pub async fn small_value(&self) -> Vec<u8> {
        b"ok".to_vec()
    }
    pub async fn small_value_with_arg(&self, _x: i64) -> Vec<u8> {
        b"ok".to_vec()
    }
}

/// An actor that calls other actors (Ray's `Client`).
pub struct Client {
    servers: Vec<ActorHandle<Server>>,
    async_servers: Vec<ActorHandle<AsyncServer>>,
}

#[lumen::remote]
impl Client {
    pub fn new(
        servers: Vec<ActorHandle<Server>>,
        async_servers: Vec<ActorHandle<AsyncServer>>,
    ) -> Self {
        Client {
            servers,
            async_servers,
        }
    }
    /// `n` calls to each server, then waits for them all.
    pub fn small_value_batch(&self, n: usize) {
        let mut refs = Vec::with_capacity(n * (self.servers.len() + self.async_servers.len()));
        for s in &self.servers {
            refs.extend((0..n).map(|_| s.small_value().remote()));
        }
        for s in &self.async_servers {
            refs.extend((0..n).map(|_| s.small_value().remote()));
        }
        lumen::get_all(&refs).expect("calls");
    }
    /// `n` calls with a put object as the argument to each server.
    pub fn small_value_batch_arg(&self, n: usize) {
        let x = lumen::put(0i64);
        let mut refs = Vec::with_capacity(n * self.servers.len());
        for s in &self.servers {
            refs.extend((0..n).map(|_| s.small_value_arg(&x).remote()));
        }
        lumen::get_all(&refs).expect("calls");
    }
}

/// `n` calls spread over `servers` (one of the n:n rows' tasks).
#[lumen::remote]
fn call_servers(servers: Vec<ActorHandle<Server>>, n: usize) {
    let refs: Vec<_> = (0..n)
        .map(|i| servers[i % servers.len()].small_value().remote())
        .collect();
    lumen::get_all(&refs).expect("calls");
}

/// `n` calls spread over async `servers`.
#[lumen::remote]
fn call_async_servers(servers: Vec<ActorHandle<AsyncServer>>, n: usize) {
    let refs: Vec<_> = (0..n)
        .map(|i| servers[i % servers.len()].small_value().remote())
        .collect();
    lumen::get_all(&refs).expect("calls");
}

struct Bench {
    filter: Option<String>,
    rounds: usize,
    seconds: f64,
    drain: Option<usize>,
    smoke: bool,
    address: Option<String>,
    two_nodes: bool,
}

impl Bench {
    /// Whether this row runs: no filter, or the name contains one of the filter's
    /// `|`-separated parts (`--filter 'tasks sync|1:1 actor calls sync'`).
    fn wants(&self, name: &str) -> bool {
        self.filter.is_none() || self.asks_for(name)
    }

    /// Whether the filter names this row: rows that disturb the ones after them (a heap grown
    /// by hundreds of thousands of held objects slows later allocations) run only when asked for.
    fn asks_for(&self, name: &str) -> bool {
        self.filter
            .as_deref()
            .is_some_and(|f| f.split('|').any(|part| name.contains(part)))
    }

    /// A payload length, shrunk in smoke runs.
    fn len(&self, n: usize) -> usize {
        if self.smoke {
            n / 1000
        } else {
            n
        }
    }

    /// Times `op` (which performs `per_call` operations) and prints the rate.
    fn run(&self, name: &str, per_call: f64, mut op: impl FnMut()) {
        if !self.wants(name) {
            return;
        }
        let warm = Instant::now();
        while warm.elapsed() < Duration::from_secs_f64(self.seconds / 2.0) {
            op();
        }
        let mut rates = Vec::with_capacity(self.rounds);
        for _ in 0..self.rounds {
            let start = Instant::now();
            let mut calls = 0u64;
            while start.elapsed() < Duration::from_secs_f64(self.seconds) {
                op();
                calls += 1;
            }
            rates.push(calls as f64 * per_call / start.elapsed().as_secs_f64());
        }
        let mean = rates.iter().sum::<f64>() / rates.len() as f64;
        let var = rates.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / rates.len() as f64;
        println!("{name} per second {mean:.2} +- {:.2}", var.sqrt());
    }
}

/// Peak resident memory of this process, from /proc (0 where it is not available).
fn peak_rss_mib() -> f64 {
    status_mib("VmHWM:")
}

/// A memory line of /proc/self/status, in MiB (0 where it is not available).
/// Resident memory of the `lumen start` nodes on this machine (head first), read before this
/// driver connects, while they are idle.
fn local_nodes_rss() -> Vec<(u32, bool, f64)> {
    let mut nodes: Vec<_> = lumen::cluster::session::nodes()
        .into_iter()
        .map(|n| (n.pid, n.head, pid_status_mib(n.pid, "VmRSS:")))
        .collect();
    nodes.sort_by_key(|(_, head, _)| !*head);
    nodes
}

fn status_mib(key: &str) -> f64 {
    pid_status_mib(std::process::id(), key)
}

fn pid_status_mib(pid: u32, key: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Another process running this program as an echo (`--echo-peer TOKEN`): it prints its
/// address, echoes until its standard input closes, then exits.
struct EchoPeer {
    child: std::process::Child,
    addr: std::net::SocketAddr,
}

impl EchoPeer {
    fn start(token_hex: &str) -> EchoPeer {
        use std::io::BufRead;
        let exe = std::env::current_exe().expect("this program's path");
        let mut child = std::process::Command::new(exe)
            .args(["--echo-peer", token_hex])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("start the echo peer");
        let stdout = child.stdout.take().expect("the echo peer's output");
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .expect("the echo peer's address");
        let addr = line.trim().parse().expect("an address from the echo peer");
        EchoPeer { child, addr }
    }
}

impl Drop for EchoPeer {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

/// The far end of the transport row: echoes until standard input closes.
fn serve_echo(token_hex: &str) -> lumen::Result<()> {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get().max(2));
    let echo = lumen::__echo::Echo::start(Some(token_hex), threads)?;
    println!("{}", echo.addr());
    std::io::Read::read_to_end(&mut std::io::stdin(), &mut Vec::new()).ok();
    Ok(())
}

fn main() -> lumen::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut bench = Bench {
        filter: None,
        rounds: 4,
        seconds: 2.0,
        drain: None,
        smoke: false,
        address: None,
        two_nodes: false,
    };
    while let Some(a) = args.next() {
        match a.as_str() {
            "--filter" => bench.filter = args.next(),
            "--rounds" => bench.rounds = args.next().and_then(|v| v.parse().ok()).unwrap_or(4),
            "--seconds" => bench.seconds = args.next().and_then(|v| v.parse().ok()).unwrap_or(2.0),
            "--drain" => bench.drain = args.next().and_then(|v| v.parse().ok()),
            "--smoke" => bench.smoke = true,
            "--address" => bench.address = args.next(),
            "--two-nodes" => bench.two_nodes = true,
            "--echo-peer" => return serve_echo(&args.next().unwrap_or_default()),
            other => {
                eprintln!(
                    "unknown argument {other:?}; use --filter SUBSTRING, --rounds N, \
                     --seconds S, --drain N, --smoke, --address HOST:PORT, --two-nodes"
                );
                std::process::exit(2);
            }
        }
    }
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get()) as f64;
    let cluster = if bench.two_nodes {
        Some(lumen::testing::TestCluster::start(vec![
            lumen::Config::default().num_cpus(0.0),
            lumen::Config::default()
                .num_cpus(cores)
                .resource("custom", 100.0),
        ])?)
    } else {
        None
    };
    let idle_nodes = if bench.address.is_some() {
        local_nodes_rss()
    } else {
        Vec::new()
    };
    let started = Instant::now();
    match (&cluster, &bench.address) {
        (Some(c), _) => lumen::init_with(c.driver_config())?,
        (None, Some(a)) => lumen::init_with(lumen::Config::default().address(a.clone()))?,
        // As Ray's benchmark: a `custom` resource for the placement-group row.
        (None, None) => lumen::init_with(lumen::Config::default().resource("custom", 100.0))?,
    }
    lumen::get(&small_value::remote())?;
    let first_result = started.elapsed();
    // The whole embedded cluster (or the driver, on a cluster) idle after one task.
    let idle_rss = status_mib("VmRSS:");
    // Ray sizes some rows by half the machine's cores.
    let n_cpu = (std::thread::available_parallelism().map_or(2, |n| n.get()) / 2).max(1);
    let b = &bench;
    // What holding objects costs this process, measured first, while the heap is fresh (later
    // rows leave freed memory behind that new objects would reuse unseen); each set is held
    // until both are measured, for the same reason.
    let hold = |make: &dyn Fn() -> ObjectRef<Vec<u8>>, n: usize| {
        let before = status_mib("VmRSS:");
        let refs: Vec<_> = (0..n).map(|_| make()).collect();
        lumen::get_all(&refs).map(|_| {
            let grown = status_mib("VmRSS:") - before;
            (refs, grown * 1024.0 * 1024.0 / n as f64)
        })
    };
    let held_bytes = if b.asks_for("lumen: resident memory per") {
        let (puts, tasks) = if b.smoke {
            (1_000, 1_000)
        } else {
            (200_000, 20_000)
        };
        let (held_puts, put_bytes) = hold(&|| lumen::put(b"ok".to_vec()), puts)?;
        let (held_results, task_bytes) = hold(&small_value::remote, tasks)?;
        drop((held_puts, held_results));
        Some((put_bytes, task_bytes))
    } else {
        None
    };

    let value = lumen::put(0i64);
    b.run("single client get calls (Plasma Store)", 1.0, || {
        lumen::get(&value).expect("get");
    });
    b.run("single client put calls (Plasma Store)", 1.0, || {
        drop(lumen::put(0i64));
    });
    b.run("multi client put calls (Plasma Store)", 1000.0, || {
        let refs: Vec<_> = (0..10).map(|_| put_small_many::remote(100)).collect();
        lumen::get_all(&refs).expect("puts");
    });
    // As in Ray: one array, put again and again (put takes the vector over without copying it,
    // so the clone is the copy Ray makes into its store; `black_box` keeps the compiler from
    // turning the clone of an all-zeros vector into a lazily zeroed allocation).
    let arr = std::hint::black_box(vec![0i64; b.len(100 * 1024 * 1024)]);
    b.run("single client put gigabytes", 0.8, || {
        drop(lumen::put(arr.clone()));
    });
    drop(arr);
    b.run("single client tasks and get batch", 1.0, || {
        let refs: Vec<_> = (0..1000).map(|_| small_value::remote()).collect();
        lumen::get_all(&refs).expect("tasks");
    });
    let medium = b.len(10 * 1024 * 1024);
    b.run("multi client put gigabytes", 8.0, || {
        let refs: Vec<_> = (0..10)
            .map(|_| put_large_many::remote(10, medium))
            .collect();
        lumen::get_all(&refs).expect("puts");
    });
    let containing = object_containing_refs::remote();
    b.run("single client get object containing 10k refs", 1.0, || {
        lumen::get(&containing).expect("get");
    });
    b.run("single client wait 1k refs", 1.0, || {
        let mut not_ready: Vec<_> = (0..1000).map(|_| small_value::remote()).collect();
        while !not_ready.is_empty() {
            let (_ready, rest) = lumen::wait(&not_ready, 1, None);
            not_ready = rest;
        }
    });
    b.run("single client tasks sync", 1.0, || {
        lumen::get(&small_value::remote()).expect("task");
    });
    b.run("single client tasks async", 1000.0, || {
        let refs: Vec<_> = (0..1000).map(|_| small_value::remote()).collect();
        lumen::get_all(&refs).expect("tasks");
    });
    let clients: Vec<_> = (0..4)
        .map(|_| Server::options().num_cpus(0.0).remote())
        .collect();
    b.run("multi client tasks async", 40_000.0, || {
        let refs: Vec<_> = clients
            .iter()
            .map(|a| a.small_value_batch(10_000).remote())
            .collect();
        lumen::get_all(&refs).expect("tasks");
    });
    let a = Server::options().num_cpus(0.0).remote();
    b.run("1:1 actor calls sync", 1.0, || {
        lumen::get(&a.small_value().remote()).expect("call");
    });
    b.run("1:1 actor calls async", 1000.0, || {
        let refs: Vec<_> = (0..1000).map(|_| a.small_value().remote()).collect();
        lumen::get_all(&refs).expect("calls");
    });
    // With max_concurrency and no async methods: a threaded actor, as in Ray.
    let threaded = Server::options().num_cpus(0.0).max_concurrency(16).remote();
    b.run("1:1 actor calls concurrent", 1000.0, || {
        let refs: Vec<_> = (0..1000).map(|_| threaded.small_value().remote()).collect();
        lumen::get_all(&refs).expect("calls");
    });
    let servers: Vec<_> = (0..n_cpu)
        .map(|_| Server::options().num_cpus(0.0).remote())
        .collect();
    let client = Client::options()
        .num_cpus(0.0)
        .remote(servers.clone(), Vec::new());
    b.run("1:n actor calls async", (5000 * n_cpu) as f64, || {
        lumen::get(&client.small_value_batch(5000).remote()).expect("calls");
    });
    b.run("n:n actor calls async", 20_000.0, || {
        let refs: Vec<_> = (0..4)
            .map(|_| call_servers::remote(servers.clone(), 5000))
            .collect();
        lumen::get_all(&refs).expect("calls");
    });
    let arg_clients: Vec<_> = (0..n_cpu)
        .map(|_| {
            let s = Server::options().num_cpus(0.0).remote();
            Client::options().num_cpus(0.0).remote(vec![s], Vec::new())
        })
        .collect();
    b.run(
        "n:n actor calls with arg async",
        (1000 * n_cpu) as f64,
        || {
            let refs: Vec<_> = arg_clients
                .iter()
                .map(|c| c.small_value_batch_arg(1000).remote())
                .collect();
            lumen::get_all(&refs).expect("calls");
        },
    );
    let aa = AsyncServer::remote();
    b.run("1:1 async-actor calls sync", 1.0, || {
        lumen::get(&aa.small_value().remote()).expect("call");
    });
    b.run("1:1 async-actor calls async", 1000.0, || {
        let refs: Vec<_> = (0..1000).map(|_| aa.small_value().remote()).collect();
        lumen::get_all(&refs).expect("calls");
    });
    b.run("1:1 async-actor calls with args async", 1000.0, || {
        let refs: Vec<_> = (0..1000)
            .map(|i| aa.small_value_with_arg(i).remote())
            .collect();
        lumen::get_all(&refs).expect("calls");
    });
    let async_servers: Vec<_> = (0..n_cpu).map(|_| AsyncServer::remote()).collect();
    let async_client = Client::options()
        .num_cpus(0.0)
        .remote(Vec::new(), async_servers.clone());
    b.run("1:n async-actor calls async", (5000 * n_cpu) as f64, || {
        lumen::get(&async_client.small_value_batch(5000).remote()).expect("calls");
    });
    b.run("n:n async-actor calls async", 20_000.0, || {
        let refs: Vec<_> = (0..4)
            .map(|_| call_async_servers::remote(async_servers.clone(), 5000))
            .collect();
        lumen::get_all(&refs).expect("calls");
    });

    let big = lumen::put(vec![1u8; b.len(100 * 1024 * 1024)]);
    b.run(
        "lumen: 100 MiB object to a task gigabytes",
        0.1048576,
        || {
            lumen::get(&byte_len::remote(&big)).expect("task");
        },
    );
    drop(big);
    // The same with a `Buffer`, which the task reads in place where it is stored (Ray's numpy
    // argument, read zero-copy from its store); then put and get of buffers and vectors, large
    // and small (`bench/ray_objects.py` measures Ray's counterparts).
    let mib100 = b.len(100 * 1024 * 1024);
    let big = lumen::put(lumen::Buffer::from(vec![1u8; mib100]));
    b.run(
        "lumen: 100 MiB Buffer to a task gigabytes",
        0.1048576,
        || {
            lumen::get(&buffer_len::remote(&big)).expect("task");
        },
    );
    b.run("lumen: get 100 MiB Buffer gigabytes", 0.1048576, || {
        std::hint::black_box(lumen::get(&big).expect("get").len());
    });
    drop(big);
    // A new 100 MiB result each time, read by the driver: over two nodes it is kept on the
    // worker node and pulled across (the transfer itself, plus making the result).
    b.run(
        "lumen: 100 MiB result pulled by the driver gigabytes",
        0.1048576,
        || {
            let r = fresh_buffer::remote(mib100);
            std::hint::black_box(lumen::get(&r).expect("get").len());
        },
    );
    let arr = std::hint::black_box(vec![1u8; mib100]);
    // Copied from the caller's slice, as Ray's `put` of an array copies it into the store.
    b.run("lumen: put 100 MiB Buffer gigabytes", 0.1048576, || {
        drop(lumen::put(lumen::Buffer::from(&arr[..])));
    });
    let vec_ref = lumen::put(arr.clone());
    b.run("lumen: get 100 MiB Vec<u8> gigabytes", 0.1048576, || {
        std::hint::black_box(lumen::get(&vec_ref).expect("get").len());
    });
    drop((arr, vec_ref));
    let small = std::hint::black_box(vec![1u8; b.len(1024 * 1024)]);
    b.run("lumen: put 1 MiB Buffer", 1.0, || {
        drop(lumen::put(lumen::Buffer::from(&small[..])));
    });
    b.run("lumen: put 1 MiB Vec<u8>", 1.0, || {
        drop(lumen::put(small.clone()));
    });
    let (buf_ref, vec_ref) = (
        lumen::put(lumen::Buffer::from(small.clone())),
        lumen::put(small.clone()),
    );
    b.run("lumen: get 1 MiB Buffer", 1.0, || {
        std::hint::black_box(lumen::get(&buf_ref).expect("get").len());
    });
    b.run("lumen: get 1 MiB Vec<u8>", 1.0, || {
        std::hint::black_box(lumen::get(&vec_ref).expect("get").len());
    });
    drop((small, buf_ref, vec_ref));
    // Ray's row: 100 one-bundle groups of {custom: 0.001} created, waited for, removed.
    if lumen::cluster_resources().contains_key("custom") {
        b.run("placement group create/removal", 100.0, || {
            let groups: Vec<_> = (0..100)
                .map(|_| {
                    lumen::PlacementGroup::builder([lumen::Bundle::new().resource("custom", 0.001)])
                        .create()
                        .expect("create")
                })
                .collect();
            for pg in &groups {
                lumen::get(&pg.ready()).expect("ready");
            }
            for pg in &groups {
                lumen::remove_placement_group(pg).expect("remove");
            }
        });
    } else if b.wants("placement group") {
        eprintln!("skipping placement group create/removal: the cluster has no `custom` resource");
    }
    if b.wants("lumen: actor creation") {
        let t0 = Instant::now();
        let n = if b.smoke { 50 } else { 1000 };
        let actors: Vec<_> = (0..n).map(|_| Server::remote()).collect();
        let refs: Vec<_> = actors.iter().map(|a| a.small_value().remote()).collect();
        lumen::get_all(&refs)?;
        let rate = n as f64 / t0.elapsed().as_secs_f64();
        println!("lumen: actor creation with one call per second {rate:.2} +- 0.00");
    }
    if b.wants("lumen: transport round trip") {
        // The floor under every row whose calls cross processes: one request and its reply
        // between this process and another, over lumen's transport and nothing else.
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get().max(2));
        let near = lumen::__echo::Echo::start(None, threads)?;
        let far = EchoPeer::start(&near.token_hex());
        b.run(
            "lumen: transport round trip between two processes",
            1.0,
            || {
                near.round_trip(far.addr, b"ok").expect("echo");
            },
        );
    }
    if b.wants("lumen: idle") {
        println!("lumen: idle resident memory after init and one task {idle_rss:.1} MiB");
        for (pid, head, mib) in &idle_nodes {
            let what = if *head { "head" } else { "worker" };
            println!(
                "lumen: idle resident memory of a lumen start {what} node (pid {pid}) {mib:.1} MiB"
            );
        }
    }
    if let Some((put_bytes, task_bytes)) = held_bytes {
        println!("lumen: resident memory per small object held (put) {put_bytes:.0} bytes");
        println!("lumen: resident memory per task result held {task_bytes:.0} bytes");
    }
    if b.wants("lumen: init") {
        println!(
            "lumen: init to first task result {:.3} ms",
            first_result.as_secs_f64() * 1000.0
        );
    }
    if let Some(n) = b.drain.filter(|_| b.wants("lumen: drain")) {
        let t = Instant::now();
        let refs: Vec<_> = (0..n).map(|_| small_value::remote()).collect();
        let queued = t.elapsed();
        lumen::get_all(&refs)?;
        println!(
            "lumen: drain {n} no-op tasks queued in {:.2} s, all done in {:.2} s, peak RSS {:.0} MiB",
            queued.as_secs_f64(),
            t.elapsed().as_secs_f64(),
            peak_rss_mib()
        );
    }
    lumen::shutdown();
    drop(cluster);
    Ok(())
}
