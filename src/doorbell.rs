//! Doorbells: the threads on the latency path (actor hosts, task workers) poll briefly for their
//! next message before their event loop puts them to sleep.
//!
//! Waking a sleeping thread costs a context switch on each side, tens of microseconds on a
//! virtual machine: more than a small task or actor call itself. So each such thread gets a
//! [`Doorbell`]: whoever posts a message to its actor rings it (before posting, so that the
//! answer can never come first), the actor answers when it handles the message, and before the thread's event loop parks (tokio's `on_thread_park`), it polls the
//! bell for up to [`LINGER`]. A message posted meanwhile is then taken without sleeping: the
//! sender's wake-up is already pending, so the park returns at once. A bell that is never
//! answered (a message dropped with a stopped actor) only turns lingering off.

use actix::Arbiter;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long an idle thread polls its bell before it sleeps.
pub(crate) const LINGER: Duration = Duration::from_micros(50);

/// After this many polls in a row ended with nothing, a thread stops polling for a while:
/// isolated misses (a sender descheduled for a moment) do not count.
const MISSES: u32 = 3;

/// How many waits skip polling after [`MISSES`] misses in a row.
const BACKOFF: u32 = 16;

/// When polling before sleeping pays: it stops for [`BACKOFF`] waits after [`MISSES`] polls in
/// a row found nothing (replies or messages coming too slowly, say from another node, where
/// polling would only take CPU from the threads bringing them). Shared by the doorbell and by
/// blocking reads.
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

/// Counts messages posted to an actor and not handled yet.
#[derive(Debug, Default)]
pub(crate) struct Doorbell {
    pending: AtomicUsize,
    /// Whether lingering pays, given how the last ones went.
    backoff: Backoff,
}

impl Doorbell {
    pub(crate) fn new() -> Arc<Doorbell> {
        Arc::new(Doorbell::default())
    }

    /// A message was posted.
    pub(crate) fn ring(&self) {
        self.pending.fetch_add(1, Ordering::Release);
    }

    /// A posted message is being handled.
    pub(crate) fn answer(&self) {
        let _ = self
            .pending
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }

    /// Whether a posted message has not been handled yet.
    pub(crate) fn is_ringing(&self) -> bool {
        self.pending.load(Ordering::Acquire) > 0
    }

    /// Polls until the bell rings or `for_at_most` passes; whether it rang. Yields the CPU
    /// between polls, so other runnable threads are not held up by the polling. After a linger
    /// in vain, the next few return at once.
    pub(crate) fn linger(&self, for_at_most: Duration) -> bool {
        if !self.backoff.should_poll() {
            return self.is_ringing();
        }
        let start = Instant::now();
        loop {
            for _ in 0..16 {
                if self.is_ringing() {
                    self.backoff.hit();
                    return true;
                }
                std::hint::spin_loop();
            }
            if start.elapsed() >= for_at_most {
                self.backoff.miss();
                return false;
            }
            std::thread::yield_now();
        }
    }
}

/// Starts an arbiter (a thread with its own event loop) that lingers on `bell` before it sleeps.
/// Falls back to a plain arbiter if the event loop cannot be built that way.
pub(crate) fn arbiter(bell: Arc<Doorbell>) -> Arbiter {
    let started = Arbiter::try_with_tokio_rt(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .on_thread_park(move || {
                bell.linger(LINGER);
            })
            .build()
    });
    match started {
        Ok(arbiter) => arbiter,
        Err(e) => {
            tracing::warn!(error = %e, "cannot start a lingering event loop; using a plain one");
            Arbiter::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rung_bell_stops_lingering_at_once() {
        let bell = Doorbell::new();
        bell.ring();
        let start = Instant::now();
        assert!(bell.linger(Duration::from_secs(5)));
        assert!(start.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn an_answered_bell_lingers_for_the_whole_time() {
        let bell = Doorbell::new();
        bell.ring();
        bell.answer();
        assert!(!bell.is_ringing());
        let start = Instant::now();
        assert!(!bell.linger(Duration::from_millis(5)));
        assert!(start.elapsed() >= Duration::from_millis(5));
    }

    #[test]
    fn lingers_in_vain_turn_the_next_ones_off_for_a_while() {
        let bell = Doorbell::new();
        for _ in 0..MISSES {
            assert!(!bell.linger(Duration::from_millis(1)));
        }
        let start = Instant::now();
        for _ in 0..BACKOFF {
            assert!(!bell.linger(Duration::from_secs(5)));
        }
        assert!(start.elapsed() < Duration::from_secs(1));
        let start = Instant::now();
        assert!(!bell.linger(Duration::from_millis(5)));
        assert!(start.elapsed() >= Duration::from_millis(5));
    }

    #[test]
    fn answers_never_go_below_zero() {
        let bell = Doorbell::new();
        bell.answer();
        bell.ring();
        assert!(bell.is_ringing());
        bell.answer();
        bell.answer();
        assert!(!bell.is_ringing());
    }

    #[test]
    fn a_ring_from_another_thread_ends_the_linger() {
        let bell = Doorbell::new();
        let b = bell.clone();
        let t = std::thread::spawn(move || b.linger(Duration::from_secs(10)));
        std::thread::sleep(Duration::from_millis(5));
        bell.ring();
        assert!(t.join().expect("linger thread"));
    }
}
