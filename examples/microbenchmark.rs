//! lumen's microbenchmark, in the format of Ray's `ray microbenchmark`.
//!
//! Each metric: a warm-up, then timed rounds; the figure is mean ± std of the rounds' rates,
//! printed as `NAME per second MEAN +- STD` with Ray's metric names so the two outputs line up.
//! No-op tasks and methods return the 2-byte value `b"ok"`, as in Ray's `ray_perf.py`.
//!
//! ```text
//! cargo run --release --example microbenchmark                  # every metric
//! cargo run --release --example microbenchmark -- --filter actor --rounds 2 --seconds 1
//! cargo run --release --example microbenchmark -- --filter lumen --drain 1000000
//! ```
//!
//! After Ray's rows come lumen's own figures, prefixed `lumen: `: time from `lumen::init()` to the
//! first task's result, actor creation rate, and with `--drain N`, N no-op tasks queued at once
//! then drained (total seconds and the process's peak resident memory).

use std::time::{Duration, Instant};

#[lumen::remote]
fn noop() -> Vec<u8> {
    b"ok".to_vec()
}

/// A serial actor with a no-op method.
#[derive(Default)]
pub struct Sink;

#[lumen::remote]
impl Sink {
    pub fn new() -> Self {
        Sink
    }
    pub fn noop(&self) -> Vec<u8> {
        b"ok".to_vec()
    }
}

/// An async actor with a no-op method.
#[derive(Default)]
pub struct AsyncSink;

#[lumen::remote]
impl AsyncSink {
    pub fn new() -> Self {
        AsyncSink
    }
    pub async fn noop(&self) -> Vec<u8> {
        b"ok".to_vec()
    }
    pub async fn echo(&self, v: Vec<u8>) -> Vec<u8> {
        v
    }
}

struct Bench {
    filter: Option<String>,
    rounds: usize,
    seconds: f64,
    drain: Option<usize>,
}

impl Bench {
    fn wants(&self, name: &str) -> bool {
        self.filter.as_deref().is_none_or(|f| name.contains(f))
    }
}

/// Peak resident memory of this process, from /proc (0 where it is not available).
fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

impl Bench {
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

fn main() -> lumen::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut bench = Bench {
        filter: None,
        rounds: 4,
        seconds: 2.0,
        drain: None,
    };
    while let Some(a) = args.next() {
        match a.as_str() {
            "--filter" => bench.filter = args.next(),
            "--rounds" => bench.rounds = args.next().and_then(|v| v.parse().ok()).unwrap_or(4),
            "--seconds" => bench.seconds = args.next().and_then(|v| v.parse().ok()).unwrap_or(2.0),
            "--drain" => bench.drain = args.next().and_then(|v| v.parse().ok()),
            other => {
                eprintln!(
                    "unknown argument {other:?}; use --filter SUBSTRING, --rounds N, --seconds S, --drain N"
                );
                std::process::exit(2);
            }
        }
    }
    let started = Instant::now();
    lumen::init()?;
    lumen::get(&noop::remote())?;
    let first_result = started.elapsed();

    let small = lumen::put(0u64);
    bench.run("single client get calls (Plasma Store)", 1.0, || {
        lumen::get(&small).expect("get");
    });
    bench.run("single client put calls (Plasma Store)", 1.0, || {
        drop(lumen::put(0u64));
    });
    bench.run("single client tasks sync", 1.0, || {
        lumen::get(&noop::remote()).expect("task");
    });
    bench.run("single client tasks async", 1000.0, || {
        let refs: Vec<_> = (0..1000).map(|_| noop::remote()).collect();
        lumen::get_all(&refs).expect("tasks");
    });
    let sink = Sink::options().num_cpus(0.0).remote();
    lumen::get(&sink.noop().remote())?;
    bench.run("1:1 actor calls sync", 1.0, || {
        lumen::get(&sink.noop().remote()).expect("call");
    });
    bench.run("1:1 actor calls async", 1000.0, || {
        let refs: Vec<_> = (0..1000).map(|_| sink.noop().remote()).collect();
        lumen::get_all(&refs).expect("calls");
    });
    // Ray's "concurrent" row: the same calls to an actor with max_concurrency=16 (a threaded
    // actor here, as in Ray when the class has no async methods).
    let threaded = Sink::options().num_cpus(0.0).max_concurrency(16).remote();
    lumen::get(&threaded.noop().remote())?;
    bench.run("1:1 actor calls concurrent", 1000.0, || {
        let refs: Vec<_> = (0..1000).map(|_| threaded.noop().remote()).collect();
        lumen::get_all(&refs).expect("calls");
    });
    let async_sink = AsyncSink::options().num_cpus(0.0).remote();
    lumen::get(&async_sink.noop().remote())?;
    bench.run("1:1 async-actor calls sync", 1.0, || {
        lumen::get(&async_sink.noop().remote()).expect("call");
    });
    bench.run("1:1 async-actor calls async", 1000.0, || {
        let refs: Vec<_> = (0..1000).map(|_| async_sink.noop().remote()).collect();
        lumen::get_all(&refs).expect("calls");
    });
    let arg = lumen::put(b"ok".to_vec());
    bench.run("1:1 async-actor calls with args async", 1000.0, || {
        let refs: Vec<_> = (0..1000).map(|_| async_sink.echo(&arg).remote()).collect();
        lumen::get_all(&refs).expect("calls");
    });
    let t0 = Instant::now();
    let actors: Vec<_> = (0..200).map(|_| Sink::remote()).collect();
    let refs: Vec<_> = actors.iter().map(|a| a.noop().remote()).collect();
    lumen::get_all(&refs)?;
    if bench.wants("lumen: actor creation") {
        let rate = 200.0 / t0.elapsed().as_secs_f64();
        println!("lumen: actor creation with one call per second {rate:.2} +- 0.00");
    }
    drop((actors, refs));
    if bench.wants("lumen: init") {
        println!(
            "lumen: init to first task result {:.3} ms",
            first_result.as_secs_f64() * 1000.0
        );
    }
    if let Some(n) = bench.drain.filter(|_| bench.wants("lumen: drain")) {
        let t = Instant::now();
        let refs: Vec<_> = (0..n).map(|_| noop::remote()).collect();
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
    Ok(())
}
