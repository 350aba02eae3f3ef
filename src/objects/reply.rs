//! The channel a read's objects arrive on, and when it wakes a reader that sleeps on it.
//!
//! A read of many objects (`get_all` of a thousand refs) used to take them one message at a
//! time: a sleeping reader was woken for each, or a polling one kept a core busy for the whole
//! batch, on a machine where that core was needed by the threads making the objects. Here a
//! blocking reader says how many more arrivals it needs before it is worth waking
//! ([`Arrivals::sleep_until`]); each sender counts down, and only the one that completes the
//! count (or the last sender going away) wakes it. A reader that awaits instead (async code)
//! uses the plain channel and is never counted.

use crate::protocol::refs::Stored;
use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering};
use std::sync::Arc;
use std::thread::Thread;
use std::time::Instant;

/// One arrival: the reader's slot and the object.
pub(crate) type Arrival = (u32, Stored);

/// Where a sleeping reader waits, and how many arrivals it still waits for.
#[derive(Debug)]
struct Gate {
    /// Arrivals still to come before the sleeper is woken; at or below zero: nobody to wake.
    pending: AtomicIsize,
    /// The reader's thread (none for readers that await).
    sleeper: Option<Thread>,
    /// Set when the last sender has gone.
    closed: AtomicBool,
    /// How many times a sender woke the reader (tests count spurious wakes).
    #[cfg(test)]
    wakes: std::sync::atomic::AtomicUsize,
}

impl Gate {
    /// Counts one arrival; wakes the sleeper when it was the one it waited for.
    fn arrived(&self) {
        if self.sleeper.is_some() && self.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.wake();
        }
    }

    /// The last sender has gone: wakes the reader if it sleeps on this channel now. A read that
    /// has ended is not woken: its thread may be sleeping on another read by then (the senders
    /// of a `wait` linger in the table of objects it did not take), and a stray wake there
    /// costs a turn of that read's loop.
    fn close(&self) {
        // Pairs with the reader's store of `pending` before it reads `closed`: one of the two
        // sees the other's write, so a reader about to sleep is never missed.
        self.closed.store(true, Ordering::SeqCst);
        if self.sleeper.is_some() && self.pending.load(Ordering::SeqCst) > 0 {
            self.wake();
        }
    }

    fn wake(&self) {
        if let Some(t) = &self.sleeper {
            #[cfg(test)]
            self.wakes.fetch_add(1, Ordering::Relaxed);
            t.unpark();
        }
    }
}

/// The sending side, shared by everyone who may deliver to one read (owner's table, store
/// shards, owner fetches). Cheap to clone; the channel closes when the last clone is dropped,
/// and that wakes the reader too.
#[derive(Clone, Debug)]
pub(crate) struct FetchReply(Arc<Sending>);

#[derive(Debug)]
struct Sending {
    // Dropped first (fields drop in order): the channel is closed before the reader is woken.
    tx: flume::Sender<Arrival>,
    /// Whether the reader wants the objects; else only that they are ready (see
    /// [`FetchReply::arrival`]).
    values: bool,
    _wake: WakeOnDrop,
}

#[derive(Debug)]
struct WakeOnDrop(Arc<Gate>);

impl Drop for WakeOnDrop {
    fn drop(&mut self) {
        self.0.close();
    }
}

impl FetchReply {
    /// Delivers one object; an error when the reader has gone.
    pub(crate) fn send(&self, arrival: Arrival) -> Result<(), flume::SendError<Arrival>> {
        self.0.tx.send(arrival)?;
        self.0._wake.0.arrived();
        Ok(())
    }

    /// What to deliver for `value`: the value itself, or for a reader that only waits for
    /// readiness an empty one, so that arrivals it has not taken yet keep nothing alive.
    pub(crate) fn arrival(&self, value: &Stored) -> Stored {
        if self.0.values {
            value.clone()
        } else {
            Stored::Value(bytes::Bytes::new())
        }
    }

    /// Whether the reader wants values (else only readiness).
    pub(crate) fn wants_values(&self) -> bool {
        self.0.values
    }

    /// Whether the reader has gone (its waits can be forgotten).
    pub(crate) fn is_disconnected(&self) -> bool {
        self.0.tx.is_disconnected()
    }
}

/// The reading side.
#[derive(Debug)]
pub(crate) struct Arrivals {
    rx: flume::Receiver<Arrival>,
    gate: Arc<Gate>,
}

/// A channel for a reader that awaits (or takes what is there without sleeping).
pub(crate) fn channel() -> (FetchReply, flume::Receiver<Arrival>) {
    let (tx, arrivals) = for_awaiting();
    (tx, arrivals.rx)
}

/// A channel for a reader that awaits only to hear that objects are ready (each arrival
/// carries an empty value).
pub(crate) fn readiness_channel() -> (FetchReply, flume::Receiver<Arrival>) {
    let (tx, arrivals) = make(None, false);
    (tx, arrivals.rx)
}

/// [`channel`], keeping the reading side's type (it must not [`sleep`](Arrivals::sleep_until)).
pub(crate) fn for_awaiting() -> (FetchReply, Arrivals) {
    make(None, true)
}

/// A channel for a reader on this thread that may sleep with [`Arrivals::sleep_until`].
pub(crate) fn for_this_thread() -> (FetchReply, Arrivals) {
    make(Some(std::thread::current()), true)
}

/// [`for_this_thread`] for a reader that only waits to hear which objects are ready (a `wait`):
/// each arrival carries an empty value instead of the object.
pub(crate) fn readiness_for_this_thread() -> (FetchReply, Arrivals) {
    make(Some(std::thread::current()), false)
}

fn make(sleeper: Option<Thread>, values: bool) -> (FetchReply, Arrivals) {
    let (tx, rx) = flume::unbounded();
    let gate = Arc::new(Gate {
        pending: AtomicIsize::new(0),
        sleeper,
        closed: AtomicBool::new(false),
        #[cfg(test)]
        wakes: Default::default(),
    });
    let sending = Sending {
        tx,
        values,
        _wake: WakeOnDrop(gate.clone()),
    };
    (FetchReply(Arc::new(sending)), Arrivals { rx, gate })
}

impl Arrivals {
    /// The channel itself (to take what has arrived, or to poll it).
    pub(crate) fn rx(&self) -> &flume::Receiver<Arrival> {
        &self.rx
    }

    /// Sleeps until at least `count` arrivals are queued (counting those already queued), every
    /// sender has gone, or `until` passes. It may return earlier (a spurious wake): callers look
    /// at what arrived and decide again. Only the thread that made the channel may call this.
    pub(crate) fn sleep_until(&self, count: usize, until: Option<Instant>) {
        debug_assert!(self
            .gate
            .sleeper
            .as_ref()
            .is_some_and(|t| t.id() == std::thread::current().id()));
        let want = count.min(isize::MAX as usize) as isize;
        self.gate.pending.store(want, Ordering::SeqCst);
        // Arrivals already queued count as well. One that came after the store was counted by
        // its sender too: the wake comes early then, never late.
        let queued = self.rx.len().min(isize::MAX as usize) as isize;
        let left = self.gate.pending.fetch_sub(queued, Ordering::SeqCst) - queued;
        if left <= 0 || self.gate.closed.load(Ordering::SeqCst) {
            self.gate.pending.store(0, Ordering::SeqCst);
            return;
        }
        match until {
            Some(at) => {
                let now = Instant::now();
                if at > now {
                    std::thread::park_timeout(at - now);
                }
            }
            None => std::thread::park(),
        }
        // Whatever woke it, stop counting: senders after this wake no one.
        self.gate.pending.store(0, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn value() -> Stored {
        Stored::Value(bytes::Bytes::new())
    }

    #[test]
    fn a_sleeper_wakes_once_the_count_has_arrived() {
        let (tx, arrivals) = for_this_thread();
        let sender = std::thread::spawn(move || {
            for i in 0..100 {
                tx.send((i, value())).expect("reader is there");
            }
            tx
        });
        let mut got = 0;
        while got < 100 {
            arrivals.sleep_until(100 - got, None);
            while arrivals.rx().try_recv().is_ok() {
                got += 1;
            }
        }
        assert_eq!(got, 100);
        drop(sender.join().expect("sender"));
    }

    #[test]
    fn arrivals_queued_before_the_sleep_count() {
        let (tx, arrivals) = for_this_thread();
        for i in 0..3 {
            tx.send((i, value())).expect("reader is there");
        }
        // Three are queued: asking for three returns at once, though nothing would wake it.
        arrivals.sleep_until(3, None);
        assert_eq!(arrivals.rx().len(), 3);
    }

    #[test]
    fn the_last_sender_going_wakes_the_sleeper() {
        let (tx, arrivals) = for_this_thread();
        let extra = tx.clone();
        let sender = std::thread::spawn(move || {
            drop(extra);
            drop(tx);
        });
        while !arrivals.rx().is_disconnected() {
            arrivals.sleep_until(5, None);
        }
        sender.join().expect("sender");
        assert!(arrivals.rx().is_empty());
    }

    #[test]
    fn senders_that_outlive_a_finished_read_wake_no_one() {
        let (tx, arrivals) = for_this_thread();
        let waiting_elsewhere = tx.clone();
        tx.send((0, value())).expect("reader is there");
        arrivals.sleep_until(1, None);
        assert_eq!(arrivals.rx().try_recv().map(|(slot, _)| slot), Ok(0));
        let gate = arrivals.gate.clone();
        drop(arrivals);
        // The read is over; the clone left in a table goes later and must not wake the thread.
        drop(tx);
        drop(waiting_elsewhere);
        assert_eq!(gate.wakes.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_deadline_ends_the_sleep() {
        let (_tx, arrivals) = for_this_thread();
        let until = Instant::now() + Duration::from_millis(5);
        while Instant::now() < until {
            arrivals.sleep_until(1, Some(until));
        }
        assert!(arrivals.rx().is_empty());
    }

    #[test]
    fn senders_see_a_reader_that_went() {
        let (tx, rx) = channel();
        drop(rx);
        assert!(tx.is_disconnected());
        assert!(tx.send((0, value())).is_err());
    }
}
