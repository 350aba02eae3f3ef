//! Helpers shared by the integration test binaries.
//!
//! lumen has one global runtime per process and the tests of one binary run on parallel
//! threads, so every test calls [`init`] first: the first call starts the embedded cluster with
//! that binary's config, the others wait for it and do nothing.

#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

static INIT: OnceLock<()> = OnceLock::new();

/// Starts lumen once for this test binary (the first caller's config wins).
pub fn init(config: lumen::Config) {
    INIT.get_or_init(|| {
        lumen::init_with(config).expect("lumen::init_with failed");
    });
    assert!(lumen::is_initialized());
}

static ISOLATION: RwLock<()> = RwLock::new(());

/// Held by ordinary tests: they may run alongside each other, but not alongside an
/// [`exclusive`] test.
pub fn shared() -> RwLockReadGuard<'static, ()> {
    ISOLATION.read().unwrap_or_else(|e| e.into_inner())
}

/// Held by tests that measure the whole node (concurrency limits, available resources, store
/// contents): no other test of the binary runs while it is held.
pub fn exclusive() -> RwLockWriteGuard<'static, ()> {
    ISOLATION.write().unwrap_or_else(|e| e.into_inner())
}

/// Polls `cond` every 10 ms until it holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Counts how many tasks are inside a section at once, and the most ever seen.
#[derive(Debug)]
pub struct Gauge {
    now: AtomicUsize,
    max: AtomicUsize,
    total: AtomicUsize,
}

impl Gauge {
    pub const fn new() -> Self {
        Gauge {
            now: AtomicUsize::new(0),
            max: AtomicUsize::new(0),
            total: AtomicUsize::new(0),
        }
    }

    /// Enters the section; the guard leaves it when dropped.
    pub fn enter(&self) -> GaugeGuard<'_> {
        let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.max.fetch_max(n, Ordering::SeqCst);
        self.total.fetch_add(1, Ordering::SeqCst);
        GaugeGuard(self)
    }

    /// Tasks inside now.
    pub fn current(&self) -> usize {
        self.now.load(Ordering::SeqCst)
    }

    /// The most tasks ever inside at once.
    pub fn max(&self) -> usize {
        self.max.load(Ordering::SeqCst)
    }

    /// How many times the section was entered.
    pub fn total(&self) -> usize {
        self.total.load(Ordering::SeqCst)
    }

    /// Enters, then stays until `target` tasks have been inside together (or `patience` passes),
    /// then lingers `linger` more so that any task admitted beyond the limit would be seen.
    /// Returns how many were inside when it stopped waiting.
    pub fn rendezvous(&self, target: usize, patience: Duration, linger: Duration) -> usize {
        let _g = self.enter();
        let deadline = Instant::now() + patience;
        // `max`, not `current`: once the target was reached, the first to leave must not keep
        // the others waiting.
        while self.max() < target && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        let seen = self.current();
        std::thread::sleep(linger);
        seen
    }
}

impl Default for Gauge {
    fn default() -> Self {
        Self::new()
    }
}

/// Leaves a [`Gauge`]'s section on drop.
#[derive(Debug)]
pub struct GaugeGuard<'a>(&'a Gauge);

impl Drop for GaugeGuard<'_> {
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A generous bound for anything that should finish "soon" on a loaded machine.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// `lumen::get` with a generous timeout, so that a hang fails the test instead of the run.
pub fn get<T: serde::de::DeserializeOwned + 'static>(r: &lumen::ObjectRef<T>) -> lumen::Result<T> {
    lumen::get_timeout(r, PATIENCE)
}
