//! Polling before sleeping, and the process-wide limit on it.
//!
//! Waking a sleeping thread costs a context switch on each side, tens of microseconds on a
//! virtual machine: more than a small task or actor call itself. So the threads on the latency
//! path poll briefly before they sleep: a blocking request polls its reply ([`wait_here`]), a
//! blocking read its channel, a pool thread the mailbox of the actor it just served. Polling
//! takes a core, though, so it is rationed: at most [`max_spinners`] threads poll at once (half
//! the cores by default; `LUMEN_SPIN=0` or `Config::spin(false)` turns polling off, and
//! `LUMEN_SPIN=N` allows N). A thread that gets no permit sleeps at once. And a poll only runs
//! while it pays ([`Backoff`]): after a few in a row found nothing, the next ones are skipped.
//! An idle process polls nothing: every poll follows a message and lasts microseconds.

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Threads polling now.
static SPINNING: AtomicUsize = AtomicUsize::new(0);

/// The most threads that may poll at once (`usize::MAX`: not decided yet).
static LIMIT: AtomicUsize = AtomicUsize::new(usize::MAX);

/// The default limit: half the cores, at least one.
fn default_limit() -> usize {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    match std::env::var("LUMEN_SPIN").ok().as_deref().map(str::trim) {
        Some("0") | Some("off") | Some("false") | Some("no") => 0,
        Some(n) => n.parse().unwrap_or((cores / 2).max(1)),
        None => (cores / 2).max(1),
    }
}

/// How many threads may poll at once.
pub(crate) fn max_spinners() -> usize {
    let limit = LIMIT.load(Ordering::Relaxed);
    if limit != usize::MAX {
        return limit;
    }
    let limit = default_limit();
    LIMIT.store(limit, Ordering::Relaxed);
    limit
}

/// Turns polling on (with the default limit) or off, for the whole process.
pub(crate) fn set_enabled(on: bool) {
    LIMIT.store(
        if on { default_limit().max(1) } else { 0 },
        Ordering::Relaxed,
    );
}

/// Leave to poll; returned to the pool when dropped.
#[derive(Debug)]
pub(crate) struct Permit(());

impl Drop for Permit {
    fn drop(&mut self) {
        SPINNING.fetch_sub(1, Ordering::AcqRel);
    }
}

/// How long a thread waits for a permit held by another: in a ping-pong (a caller polling for
/// a reply, then the callee polling for the next call) the permit changes hands each turn, and
/// the thread that wants it asks a moment before the other gives it back. Without this wait,
/// with one permit (two cores), neither side of a call would ever poll.
const HANDOVER: Duration = Duration::from_micros(5);

/// Leave to poll, if fewer than [`max_spinners`] threads poll now or one of them stops within
/// [`HANDOVER`].
pub(crate) fn permit() -> Option<Permit> {
    if let Some(p) = try_permit() {
        return Some(p);
    }
    if max_spinners() == 0 {
        return None;
    }
    let start = Instant::now();
    loop {
        for _ in 0..32 {
            std::hint::spin_loop();
            if let Some(p) = try_permit() {
                return Some(p);
            }
        }
        if start.elapsed() >= HANDOVER {
            return None;
        }
    }
}

/// Leave to poll, if fewer than [`max_spinners`] threads poll now.
fn try_permit() -> Option<Permit> {
    let max = max_spinners();
    let mut now = SPINNING.load(Ordering::Relaxed);
    loop {
        if now >= max {
            return None;
        }
        match SPINNING.compare_exchange_weak(now, now + 1, Ordering::AcqRel, Ordering::Relaxed) {
            Ok(_) => return Some(Permit(())),
            Err(seen) => now = seen,
        }
    }
}

/// Polls between two yields of the CPU in [`linger`]: a yield is a system call, and a poll is
/// tens of nanoseconds, so yielding after every few polls would spend the wait in the kernel.
/// This many keeps yields a few microseconds apart.
const POLLS_PER_YIELD: u32 = 128;

/// Polls `ready` for up to `for_at_most` (if a permit is free), yielding between polls so that
/// other runnable threads are not held up; whether it became ready.
pub(crate) fn linger(for_at_most: Duration, ready: impl FnMut() -> bool) -> bool {
    poll_with(permit(), for_at_most, ready)
}

/// [`linger`], only if a permit is free now (no waiting for one being handed back): for a
/// thread whose polling would compete with another's that is further along the same work.
pub(crate) fn linger_if_free(for_at_most: Duration, ready: impl FnMut() -> bool) -> bool {
    poll_with(try_permit(), for_at_most, ready)
}

fn poll_with(
    permit: Option<Permit>,
    for_at_most: Duration,
    mut ready: impl FnMut() -> bool,
) -> bool {
    let Some(_permit) = permit else {
        return ready();
    };
    let start = Instant::now();
    loop {
        for _ in 0..POLLS_PER_YIELD {
            if ready() {
                return true;
            }
            std::hint::spin_loop();
        }
        if start.elapsed() >= for_at_most {
            return false;
        }
        std::thread::yield_now();
    }
}

/// How long [`wait_here`] polls before it parks the thread.
const POLL_FOR: Duration = Duration::from_micros(50);

/// Wakes a thread parked in [`wait_here`].
struct Unpark(std::thread::Thread);

impl std::task::Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// Runs `fut` to completion on this thread: polling it for a short while (a component in this
/// process answers within microseconds, and sleeping costs more than that), then parking until
/// it is woken.
pub(crate) fn wait_here<F: std::future::Future>(fut: F) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    let waker = std::task::Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    let mut out = None;
    linger(POLL_FOR, || match fut.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(v) => {
            out = Some(v);
            true
        }
        std::task::Poll::Pending => false,
    });
    if let Some(v) = out {
        return v;
    }
    loop {
        if let std::task::Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        // A wake that came before this park makes it return at once.
        std::thread::park();
    }
}

/// After this many polls in a row ended with nothing, a thread stops polling for a while:
/// isolated misses (a sender descheduled for a moment) do not count.
const MISSES: u32 = 3;

/// How many waits skip polling after [`MISSES`] misses in a row.
const BACKOFF: u32 = 16;

/// When polling before sleeping pays: it stops for [`BACKOFF`] waits after [`MISSES`] polls in
/// a row found nothing (replies or messages coming too slowly, say from another node, where
/// polling would only take CPU from the threads bringing them).
#[derive(Debug, Default)]
pub(crate) struct Backoff {
    /// Waits left before polling again.
    skip: AtomicU32,
    /// Polls in a row that found nothing.
    misses: AtomicU32,
}

impl Backoff {
    pub(crate) const fn new() -> Backoff {
        Backoff {
            skip: AtomicU32::new(0),
            misses: AtomicU32::new(0),
        }
    }

    /// Whether this wait should poll first (counts a skipped one).
    pub(crate) fn should_poll(&self) -> bool {
        let skip = self.skip.load(Ordering::Relaxed);
        if skip > 0 {
            self.skip.store(skip - 1, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// A poll found what it waited for.
    pub(crate) fn hit(&self) {
        self.misses.store(0, Ordering::Relaxed);
    }

    /// A poll ran out of time.
    pub(crate) fn miss(&self) {
        let misses = self.misses.load(Ordering::Relaxed) + 1;
        if misses >= MISSES {
            self.skip.store(BACKOFF, Ordering::Relaxed);
            // One more miss after the pause pauses again.
            self.misses.store(MISSES - 1, Ordering::Relaxed);
        } else {
            self.misses.store(misses, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ready_poll_ends_the_linger_at_once_and_time_bounds_it() {
        let start = Instant::now();
        assert!(linger(Duration::from_secs(5), || true));
        assert!(start.elapsed() < Duration::from_secs(1));
        let mut n = 0;
        let polled = linger(Duration::from_millis(2), || {
            n += 1;
            false
        });
        assert!(!polled);
        assert!(n >= 1);
    }

    #[test]
    fn permits_are_bounded_and_returned() {
        let max = max_spinners();
        let held: Vec<Permit> = std::iter::from_fn(permit).take(max + 5).collect();
        assert!(held.len() <= max, "{} permits, limit {max}", held.len());
        drop(held);
    }

    #[test]
    fn without_a_free_permit_a_thread_looks_once_and_does_not_wait_for_one() {
        let held: Vec<Permit> = std::iter::from_fn(try_permit).collect();
        let mut looks = 0;
        let polled = linger_if_free(Duration::from_secs(5), || {
            looks += 1;
            false
        });
        assert!(!polled);
        assert_eq!(looks, 1);
        drop(held);
    }

    #[test]
    fn misses_in_a_row_turn_polling_off_for_a_while() {
        let b = Backoff::new();
        for _ in 0..MISSES {
            assert!(b.should_poll());
            b.miss();
        }
        for _ in 0..BACKOFF {
            assert!(!b.should_poll());
        }
        assert!(b.should_poll());
        b.hit();
        assert!(b.should_poll());
    }
}
