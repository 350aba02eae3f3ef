//! What a production runtime owes the machine it runs on: no CPU while idle, memory (not a
//! thread) per idle actor, a clear error when a system limit is reached, and no silent death of
//! a system component.
//!
//! Each test measures a whole process, so each runs in a process of its own: the test re-runs
//! this test binary with only itself selected and `HYGIENE_CHILD` set, and checks what the child
//! reports. The measured process runs nothing but the measurement.
//!
//! **Modes.** Each test names the mode it measures (an embedded runtime, a `lumen start` node,
//! a one-node local cluster for the file limit): a measurement is of one kind of process.

// `new()` without arguments is the actor constructor; a `Default` impl would add nothing.
#![allow(clippy::new_without_default)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const LUMEN: &str = env!("CARGO_BIN_EXE_lumen");

/// Whether this process is the child a test started to measure itself.
fn is_child() -> bool {
    std::env::var_os("HYGIENE_CHILD").is_some()
}

/// Runs test `name` of this binary alone, in a child process; returns its output (stdout and
/// stderr) once it has passed.
fn in_child(name: &str) -> String {
    let exe = std::env::current_exe().expect("test binary");
    let out = Command::new(exe)
        .args([name, "--exact", "--nocapture", "--test-threads", "1"])
        .env("HYGIENE_CHILD", "1")
        .env_remove("LUMEN_ADDRESS")
        .output()
        .expect("run the child test");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "child {name} failed ({}):\n{text}",
        out.status
    );
    assert!(
        text.contains("1 passed"),
        "the child ran no test named {name}:\n{text}"
    );
    // What the child measured, for the log of this run.
    for line in text.lines() {
        if let Some(i) = line.find("measured: ") {
            eprintln!("{}", &line[i..]);
        }
    }
    text
}

/// CPU time (user + system) this process has used.
fn own_cpu() -> Duration {
    // SAFETY: getrusage writes the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    assert_eq!(rc, 0, "getrusage");
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(u.ru_utime) + tv(u.ru_stime)
}

/// CPU time (user + system) of process `pid`, from `/proc/<pid>/stat`.
fn cpu_of(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read stat");
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Duration::from_millis(ticks * 1000 / hz.max(1))
}

/// A field of `/proc/self/status`, in its own units (kB for memory).
fn status_field(name: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read status");
    status
        .lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in /proc/self/status"))
}

/// The idle budget: under 2% of one core.
const IDLE_BUDGET: f64 = 0.02;
/// How long idleness is measured.
const IDLE_SPAN: Duration = Duration::from_secs(2);

pub struct Idler {
    calls: u64,
}

#[lumen::remote]
impl Idler {
    pub fn new() -> Self {
        Idler { calls: 0 }
    }
    pub fn touch(&mut self) -> u64 {
        self.calls += 1;
        self.calls
    }
}

#[lumen::remote]
fn nothing() -> u8 {
    0
}

#[test]
fn an_idle_embedded_runtime_with_a_live_actor_spends_no_cpu() {
    if !is_child() {
        in_child("an_idle_embedded_runtime_with_a_live_actor_spends_no_cpu");
        return;
    }
    lumen::init_with(lumen::Config::default().num_cpus(2.0)).unwrap();
    let actor = Idler::remote();
    assert_eq!(lumen::get(&actor.touch().remote()).unwrap(), 1);
    assert_eq!(lumen::get(&nothing::remote()).unwrap(), 0);
    // The first few milliseconds of quiet may still see pollers finish.
    std::thread::sleep(Duration::from_millis(300));
    let (cpu0, t0) = (own_cpu(), Instant::now());
    std::thread::sleep(IDLE_SPAN);
    let (cpu, wall) = (own_cpu() - cpu0, t0.elapsed());
    let share = cpu.as_secs_f64() / wall.as_secs_f64();
    println!(
        "measured: idle embedded runtime with a live actor: {:?} of CPU over {:?} ({:.2}% of a core)",
        cpu,
        wall,
        share * 100.0
    );
    assert!(
        share < IDLE_BUDGET,
        "an idle runtime used {:.2}% of a core",
        share * 100.0
    );
    // Still alive and well after the quiet.
    assert_eq!(lumen::get(&actor.touch().remote()).unwrap(), 2);
    lumen::shutdown();
}

/// A `lumen start` session in a temporary folder, stopped when dropped.
struct NodeSession {
    dir: PathBuf,
}

impl NodeSession {
    fn new() -> NodeSession {
        let dir = std::env::temp_dir().join(format!(
            "lumen-hygiene-{}-{}",
            std::process::id(),
            Instant::now().elapsed().as_nanos()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        // A session folder others could write to is refused.
        std::fs::set_permissions(
            &dir,
            <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o700),
        )
        .expect("chmod");
        NodeSession { dir }
    }

    fn lumen(&self, args: &[&str]) -> std::process::Output {
        Command::new(LUMEN)
            .args(args)
            .env("LUMEN_SESSION_DIR", &self.dir)
            .env_remove("LUMEN_ADDRESS")
            .env_remove("LUMEN_TOKEN")
            .output()
            .expect("run lumen")
    }

    /// The pid of the node this session started.
    fn node_pid(&self) -> u32 {
        let nodes: PathBuf = self.dir.join("nodes");
        let entry = std::fs::read_dir(&nodes)
            .expect("node records")
            .flatten()
            .next()
            .expect("a node record");
        name_pid(&entry.path())
    }
}

fn name_pid(path: &Path) -> u32 {
    path.file_stem()
        .and_then(|s| s.to_str())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{} is not <pid>.json", path.display()))
}

impl Drop for NodeSession {
    fn drop(&mut self) {
        let _ = self.lumen(&["stop"]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn an_idle_node_spends_no_cpu() {
    let session = NodeSession::new();
    let out = session.lumen(&["start", "--head", "--port", "0", "--num-cpus", "2"]);
    assert!(
        out.status.success(),
        "lumen start: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pid = session.node_pid();
    std::thread::sleep(Duration::from_millis(300));
    let (cpu0, t0) = (cpu_of(pid), Instant::now());
    std::thread::sleep(IDLE_SPAN);
    let (cpu, wall) = (cpu_of(pid).saturating_sub(cpu0), t0.elapsed());
    let share = cpu.as_secs_f64() / wall.as_secs_f64();
    eprintln!(
        "measured: idle node: {:?} of CPU over {:?} ({:.2}% of a core)",
        cpu,
        wall,
        share * 100.0
    );
    assert!(
        share < IDLE_BUDGET,
        "an idle node used {:.2}% of a core",
        share * 100.0
    );
}

/// How many actors the scale test creates.
const ACTORS: usize = 20_000;

#[test]
fn twenty_thousand_actors_fit_in_one_process() {
    if !is_child() {
        in_child("twenty_thousand_actors_fit_in_one_process");
        return;
    }
    lumen::init_with(lumen::Config::default().num_cpus(2.0)).unwrap();
    // Warm up: the runtime's own threads and memory, before counting the actors'.
    let probe = Idler::remote();
    assert_eq!(lumen::get(&probe.touch().remote()).unwrap(), 1);
    let (rss0, threads0) = (status_field("VmRSS:"), status_field("Threads:"));
    let t0 = Instant::now();
    let actors: Vec<lumen::ActorHandle<Idler>> = (0..ACTORS).map(|_| Idler::remote()).collect();
    let calls: Vec<_> = actors.iter().map(|a| a.touch().remote()).collect();
    let results = lumen::get_all(&calls).expect("every actor answers");
    let elapsed = t0.elapsed();
    assert!(results.iter().all(|v| *v == 1));
    let (rss, threads) = (status_field("VmRSS:"), status_field("Threads:"));
    let per_actor = (rss.saturating_sub(rss0) * 1024) as f64 / ACTORS as f64;
    println!(
        "measured: {ACTORS} actors created and called once in {:.2} s ({:.1} µs each); {:.1} KiB of \
         memory per actor; {threads} threads ({threads0} before)",
        elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1e6 / ACTORS as f64,
        per_actor / 1024.0
    );
    assert!(threads < 100, "{threads} threads for {ACTORS} actors");
    drop(calls);
    drop(actors);
    lumen::shutdown();
}

#[test]
fn actor_creation_past_the_open_file_limit_fails_naming_the_limit() {
    if !is_child() {
        in_child("actor_creation_past_the_open_file_limit_fails_naming_the_limit");
        return;
    }
    // One node in this process whose tasks and actors run in worker processes: starting the
    // job's worker process takes file descriptors.
    let cache = std::env::temp_dir().join(format!("lumen-hygiene-cache-{}", std::process::id()));
    std::env::set_var("LUMEN_CACHE_DIR", &cache);
    lumen::init_with(lumen::Config::default().num_cpus(2.0).local_cluster(1)).unwrap();
    // No descriptor left: the limit is what is open now.
    let open = std::fs::read_dir("/proc/self/fd").unwrap().count() as u64;
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct they are given.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        let lowered = libc::rlimit {
            rlim_cur: open.saturating_sub(1),
            rlim_max: lim.rlim_max,
        };
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lowered), 0);
    }
    let actor = Idler::remote();
    let e = lumen::get_timeout(&actor.touch().remote(), Duration::from_secs(60))
        .expect_err("no worker process can start without a file descriptor");
    // SAFETY: as above.
    unsafe {
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
    let text = e.to_string();
    println!("measured: the refusal: {text}");
    assert!(text.contains("open-file limit"), "{text}");
    assert!(matches!(e, lumen::Error::ActorDied { .. }), "{e:?}");
    lumen::shutdown();
    let _ = std::fs::remove_dir_all(cache);
}
