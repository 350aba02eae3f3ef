//! `put`, `get`, `get_all`, `get_timeout`, `wait`, their async twins, and awaiting refs.
//!
//! Blocking reads wait on the store shards' reply channel. Inside a task, a read that has to wait
//! lends the task's CPU back to the raylet until the objects arrive (so a task waiting for its
//! children cannot starve them), and takes it back before returning. In async code (a lumen async
//! task or method, or any tokio runtime's thread), blocking reads are refused: the async twins
//! ([`get_async`], [`get_all_async`], [`wait_async`]) or `.await` on the ref wait there instead,
//! on the same reply channel.

use crate::context::{self, refuse_blocking};
use crate::error::{Error, Result};
use crate::ids::{ObjectId, TaskId};
use crate::objects::codec;
use crate::objects::object_ref::ObjectRef;
use crate::objects::ownership::{Lookup, Peek};
use crate::objects::read::{self, decode, unknown_ref};
use crate::objects::reply::{self, Arrivals};
use crate::objects::standing::Standing;
use crate::objects::store::PRESENT_SENT;
use crate::protocol::raylet::{TaskBlocked, TaskUnblocked};
use crate::protocol::refs::{RawRef, Stored};
use crate::spin::Backoff;
use crate::worker::runtime::{self, Runtime};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::cell::RefCell;
use std::future::{Future, IntoFuture};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// How long a blocking read waits with nothing arriving before it lends its task's CPU.
const LEND_AFTER: Duration = Duration::from_millis(1);

/// A blocking read polls for the next object before it sleeps (while polls pay, see
/// [`spin_recv`]); once it sleeps, it sleeps until all but this many of the objects still to
/// come have come, woken once rather than per object.
const POLL_WITHIN: usize = 2;

/// Stores `value` in the object store and returns a ref to it. The object is immutable.
///
/// # Examples
/// ```no_run
/// lumen::init()?;
/// let r = lumen::put(vec![1u8; 1 << 20]);
/// let v: Vec<u8> = lumen::get(&r)?;
/// assert_eq!(v.len(), 1 << 20);
/// # Ok::<(), lumen::Error>(())
/// ```
pub fn put<T: Serialize + 'static>(value: T) -> ObjectRef<T> {
    let Ok(rt) = runtime::current() else {
        return crate::api::task::detached_ref();
    };
    match codec::encode_owned(std::any::type_name::<T>(), value) {
        Ok(enc) => {
            let id = ObjectId::for_put();
            let (bytes, contains) = enc.into_parts();
            // A value the store cannot take even after spilling makes the object hold
            // `ObjectStoreFull`: a `get` of it says so.
            let _ = rt.refs.put(id, Stored::Value(bytes), &contains);
            ObjectRef::adopt(RawRef {
                id,
                owner: rt.owner(),
            })
        }
        Err(e) => crate::api::task::failed_ref(&rt, e),
    }
}

/// How long a blocking read polls its channel before sleeping on it.
const SPIN_FOR: Duration = Duration::from_micros(40);

thread_local! {
    /// Whether this thread's reads should poll first, given how its last polls went.
    static SPIN_BACKOFF: Backoff = const { Backoff::new() };
}

/// Polls `rx` for a short while: a reply that comes within microseconds (a small task or actor
/// call in this process) is taken without putting the thread to sleep and waking it, which
/// costs more than the call itself. Adaptive: when replies stop coming that fast (results
/// trickling in from another node), the thread stops polling for a while instead of taking CPU
/// from the threads that bring them.
fn spin_recv<T>(rx: &flume::Receiver<T>) -> Option<T> {
    if !SPIN_BACKOFF.with(Backoff::should_poll) {
        return rx.try_recv().ok();
    }
    // Polling is rationed across the process: without a permit, sleep at once.
    let Some(_permit) = crate::spin::permit() else {
        return rx.try_recv().ok();
    };
    let start = Instant::now();
    loop {
        for _ in 0..64 {
            match rx.try_recv() {
                Ok(v) => {
                    SPIN_BACKOFF.with(Backoff::hit);
                    return Some(v);
                }
                Err(flume::TryRecvError::Disconnected) => return None,
                Err(flume::TryRecvError::Empty) => std::hint::spin_loop(),
            }
        }
        if start.elapsed() >= SPIN_FOR {
            SPIN_BACKOFF.with(Backoff::miss);
            return None;
        }
    }
}

/// A read in progress: the values found at once, and the channel the others arrive on.
struct Fetch {
    slots: Vec<Option<Stored>>,
    got: usize,
    arrivals: Arrivals,
    /// Markers still to come from shards asked to say when they have sent what they hold.
    markers: usize,
}

impl Fetch {
    /// Starts reading `refs` (without waiting): owned objects from (or waited for in) the
    /// owner's table, the rest from the store or from their owners. With `settle`, each shard
    /// asked also sends a marker once it has sent what it already holds.
    /// `sleeps`: this thread will block on it (else the read awaits).
    fn start(rt: &Arc<Runtime>, refs: &[&RawRef], settle: bool, sleeps: bool) -> Result<Fetch> {
        let mut slots: Vec<Option<Stored>> = vec![None; refs.len()];
        let (tx, arrivals) = if sleeps {
            reply::for_this_thread()
        } else {
            reply::for_awaiting()
        };
        let mut got = 0;
        let mut via_store = Vec::new();
        let mut remote = Vec::new();
        // One pass: a ref this process does not know fails the read (channels it registered
        // for the others close with `tx`, and the table forgets them).
        for (i, r) in refs.iter().enumerate() {
            match rt.refs.lookup_or_wait(r.id, i as u32, &tx, !settle) {
                Lookup::Ready(v) => {
                    slots[i] = Some(v);
                    got += 1;
                }
                Lookup::Waiting => {}
                Lookup::Elsewhere if rt.net.is_here(r.owner.addr) => via_store.push((i, r.id)),
                Lookup::Elsewhere => remote.push((i, (*r).clone())),
                Lookup::Unknown => return Err(unknown_ref(r.id)),
            }
        }
        if !remote.is_empty() {
            read::fetch_into(&rt.refs, remote, &tx);
        }
        let markers = if via_store.is_empty() {
            0
        } else {
            let asked = rt.refs.store().send_fetches(via_store, tx.clone(), settle);
            if settle {
                asked
            } else {
                0
            }
        };
        // Only the owner's table and the shards hold senders now: if they go, so does the wait.
        drop(tx);
        Ok(Fetch {
            slots,
            got,
            arrivals,
            markers,
        })
    }

    /// Whether it still waits: for fewer than `need` values, or for markers.
    fn waiting(&self, need: usize) -> bool {
        self.got < need || self.markers > 0
    }

    /// How many arrivals it waits for at least (values and markers).
    fn still_to_come(&self, need: usize) -> usize {
        need.saturating_sub(self.got) + self.markers
    }

    fn rx(&self) -> &flume::Receiver<(u32, Stored)> {
        self.arrivals.rx()
    }

    /// Takes one reply.
    fn take(&mut self, (slot, v): (u32, Stored)) {
        if slot == PRESENT_SENT {
            self.markers = self.markers.saturating_sub(1);
        } else if self.slots[slot as usize].is_none() {
            self.got += 1;
            self.slots[slot as usize] = Some(v);
        }
    }

    /// Takes whatever else has been delivered already (it counts as ready too).
    fn drain(&mut self) {
        while let Ok((slot, v)) = self.rx().try_recv() {
            if slot != PRESENT_SENT && self.slots[slot as usize].is_none() {
                self.slots[slot as usize] = Some(v);
            }
        }
    }
}

/// A blocking read's loan of its task's CPU: lent to the raylet after [`LEND_AFTER`] with
/// nothing arriving (so a task waiting for its children cannot starve them), taken back before
/// the read returns.
#[derive(Default)]
struct Lending {
    /// When the quiet spell ends.
    lend_at: Option<Instant>,
    /// Once lent: the task whose CPU it was (`None`: the thread runs no task that holds one).
    lent: Option<Option<TaskId>>,
}

impl Lending {
    /// About to sleep at `now`: lends the CPU if the quiet spell is over. `true`: it lent it
    /// now (look at what arrived once more before sleeping).
    fn lend_if_quiet(&mut self, rt: &Runtime, now: Instant) -> bool {
        if self.lent.is_some() {
            return false;
        }
        let at = *self.lend_at.get_or_insert(now + LEND_AFTER);
        if now < at {
            return false;
        }
        let task = context::exec(|e| e.holder.or(e.task_id).filter(|_| e.lends_cpu));
        if let Some(task_id) = task {
            crate::worker::thread::slot_blocked(true);
            rt.raylet.do_send(TaskBlocked { task_id });
        }
        self.lent = Some(task);
        true
    }

    /// How long a sleep may last: until `deadline`, or the end of the quiet spell if it comes
    /// first and the CPU is not lent yet.
    fn wake_by(&self, deadline: Option<Instant>) -> Option<Instant> {
        match (
            deadline,
            self.lent.is_none().then_some(self.lend_at).flatten(),
        ) {
            (Some(d), Some(l)) => Some(d.min(l)),
            (d, l) => d.or(l),
        }
    }

    /// Something arrived: the quiet spell starts again.
    fn arrived(&mut self) {
        if self.lent.is_none() {
            self.lend_at = Some(Instant::now() + LEND_AFTER);
        }
    }

    /// Takes the CPU back if it was lent.
    fn take_back(self, rt: &Arc<Runtime>) {
        if let Some(Some(task_id)) = self.lent {
            crate::worker::thread::slot_blocked(false);
            // Slots this process leases and leaves free would only keep the CPU from it.
            let free = rt.leases.lock().release_idle();
            rt.carry_out(free);
            let _ = rt.request(&rt.raylet, TaskUnblocked { task_id });
        }
    }
}

/// Waits until `need` of `ids` are present or `timeout` passes; returns the values by slot and
/// whether `need` was reached. With `settle`, it also waits until it has seen every object that
/// was already present when the shards answered (so `wait` can pick the first ready ones in
/// input order, not the first to arrive). Callers check first that this thread may block.
fn fetch_blocking(
    rt: &Arc<Runtime>,
    refs: &[&RawRef],
    need: usize,
    timeout: Option<Duration>,
    settle: bool,
) -> Result<(Vec<Option<Stored>>, bool)> {
    if refs.is_empty() || need == 0 {
        return Ok((vec![None; refs.len()], true));
    }
    let mut fetch = Fetch::start(rt, refs, settle, true)?;
    let deadline = timeout.map(|t| Instant::now() + t);
    let mut lending = Lending::default();
    let mut complete = true;
    while fetch.waiting(need) {
        match fetch.rx().try_recv() {
            Ok(reply) => {
                fetch.take(reply);
                continue;
            }
            Err(flume::TryRecvError::Disconnected) => {
                return Err(Error::shutdown("waiting for an object"));
            }
            Err(flume::TryRecvError::Empty) => {}
        }
        let still = fetch.still_to_come(need);
        if let Some(reply) = spin_recv(fetch.rx()) {
            fetch.take(reply);
            continue;
        }
        let now = Instant::now();
        if deadline.is_some_and(|d| now >= d) {
            complete = false;
            break;
        }
        if lending.lend_if_quiet(rt, now) {
            continue;
        }
        // Wake once most of what is missing is here; the last few are polled for.
        let wake_after = still.saturating_sub(POLL_WITHIN).max(1);
        {
            // On an actor pool thread: queued work may have this thread's core meanwhile.
            let _blocked = crate::actors::pooled::blocked();
            fetch
                .arrivals
                .sleep_until(wake_after, lending.wake_by(deadline));
        }
        if !fetch.rx().is_empty() {
            lending.arrived();
        }
    }
    fetch.drain();
    // Back on the CPU before the task goes on.
    lending.take_back(rt);
    let complete = complete || fetch.got >= need;
    Ok((fetch.slots, complete))
}

/// A timer on lumen's event loop that any executor can await; cancelled when dropped.
struct Deadline(tokio::task::JoinHandle<()>);

impl Deadline {
    fn after(executor: &tokio::runtime::Handle, timeout: Duration) -> Deadline {
        // The timer is made on the event loop: this thread may have no tokio context.
        Deadline(executor.spawn(async move { tokio::time::sleep(timeout).await }))
    }
}

impl Drop for Deadline {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What [`fetch_blocking`] does, awaiting instead of blocking (no CPU is lent: async code holds
/// none to lend). The timeout runs on lumen's event loop, so any executor can await this.
async fn fetch_async(
    rt: &Arc<Runtime>,
    refs: &[&RawRef],
    need: usize,
    timeout: Option<Duration>,
    settle: bool,
) -> Result<(Vec<Option<Stored>>, bool)> {
    if refs.is_empty() || need == 0 {
        return Ok((vec![None; refs.len()], true));
    }
    let mut fetch = Fetch::start(rt, refs, settle, false)?;
    let mut deadline = timeout.map(|t| Deadline::after(&rt.executor, t));
    let mut complete = true;
    while fetch.waiting(need) {
        let next = match deadline.as_mut() {
            None => fetch.rx().recv_async().await,
            Some(Deadline(timer)) => {
                let recv = std::pin::pin!(fetch.rx().recv_async());
                match futures::future::select(recv, timer).await {
                    futures::future::Either::Left((next, _)) => next,
                    futures::future::Either::Right(_) => {
                        complete = false;
                        break;
                    }
                }
            }
        };
        match next {
            Ok(reply) => fetch.take(reply),
            Err(_) => return Err(Error::shutdown("waiting for an object")),
        }
    }
    fetch.drain();
    let complete = complete || fetch.got >= need;
    Ok((fetch.slots, complete))
}

/// Waits for the object and returns its value, or the error of the task that made it.
///
/// In async code (a lumen async task or actor method, or any thread of a tokio runtime outside a
/// lumen sync task) this returns `Error::InvalidArgument` without blocking: use [`get_async`]
/// (or `.await` the ref) there instead.
///
/// # Examples
/// ```no_run
/// #[lumen::remote]
/// fn square(x: i64) -> i64 { x * x }
///
/// lumen::init()?;
/// assert_eq!(lumen::get(&square::remote(4))?, 16);
/// # Ok::<(), lumen::Error>(())
/// ```
pub fn get<T: DeserializeOwned + 'static>(r: &ObjectRef<T>) -> Result<T> {
    get_inner(r, None)
}

/// Like [`get`], but gives up after `timeout` with `Error::GetTimeout`.
///
/// In async code it returns `Error::InvalidArgument` without blocking, as [`get`] does.
///
/// # Examples
/// ```no_run
/// use std::time::Duration;
/// #[lumen::remote]
/// fn slow() -> u8 { std::thread::sleep(Duration::from_secs(10)); 1 }
///
/// lumen::init()?;
/// let e = lumen::get_timeout(&slow::remote(), Duration::from_millis(100)).unwrap_err();
/// assert!(matches!(e, lumen::Error::GetTimeout { .. }));
/// # Ok::<(), lumen::Error>(())
/// ```
pub fn get_timeout<T: DeserializeOwned + 'static>(
    r: &ObjectRef<T>,
    timeout: Duration,
) -> Result<T> {
    get_inner(r, Some(timeout))
}

fn get_inner<T: DeserializeOwned + 'static>(
    r: &ObjectRef<T>,
    timeout: Option<Duration>,
) -> Result<T> {
    let rt = runtime::current()?;
    let id = r.id();
    let (what, instead) = match timeout {
        None => ("lumen::get", "lumen::get_async(&r).await"),
        Some(_) => (
            "lumen::get_timeout",
            "lumen::get_timeout_async(&r, timeout).await",
        ),
    };
    refuse_blocking(what, instead)?;
    if let Some(v) = rt.refs.inline(id) {
        return decode(id, v);
    }
    let (mut slots, complete) = fetch_blocking(&rt, &[r.raw()], 1, timeout, false)?;
    if !complete {
        return Err(Error::GetTimeout {
            object: id.to_string(),
            timeout: timeout.unwrap_or_default(),
        });
    }
    match slots.pop().flatten() {
        Some(v) => decode(id, v),
        None => Err(Error::shutdown("waiting for an object")),
    }
}

/// Waits for the object without blocking a thread and returns its value, or the error of the
/// task that made it: the async twin of [`get`], the same as `.await` on a clone of the ref.
///
/// The future owns a clone of the ref (the object stays alive while it waits), so it may be
/// spawned. It works on any executor: a tokio runtime, `futures::executor::block_on`, or
/// inside lumen's async tasks and actor methods.
///
/// # Examples
/// ```no_run
/// #[lumen::remote]
/// fn square(x: i64) -> i64 { x * x }
///
/// # async fn run() -> lumen::Result<()> {
/// let r = square::remote(4);
/// assert_eq!(lumen::get_async(&r).await?, 16);
/// # Ok(())
/// # }
/// lumen::init()?;
/// futures::executor::block_on(run())?;
/// # Ok::<(), lumen::Error>(())
/// ```
pub fn get_async<T: DeserializeOwned + Send + 'static>(
    r: &ObjectRef<T>,
) -> impl Future<Output = Result<T>> + Send + 'static {
    r.clone().into_future()
}

/// Like [`get_async`], but gives up after `timeout` with `Error::GetTimeout`: the async twin of
/// [`get_timeout`]. The timeout runs on lumen's own event loop, so any executor can await it.
///
/// # Examples
/// ```no_run
/// use std::time::Duration;
/// #[lumen::remote]
/// fn slow() -> u8 { std::thread::sleep(Duration::from_secs(10)); 1 }
///
/// # async fn run() -> lumen::Result<()> {
/// let r = slow::remote();
/// let e = lumen::get_timeout_async(&r, Duration::from_millis(100)).await.unwrap_err();
/// assert!(matches!(e, lumen::Error::GetTimeout { .. }));
/// # Ok(())
/// # }
/// lumen::init()?;
/// futures::executor::block_on(run())?;
/// # Ok::<(), lumen::Error>(())
/// ```
pub fn get_timeout_async<T: DeserializeOwned + Send + 'static>(
    r: &ObjectRef<T>,
    timeout: Duration,
) -> impl Future<Output = Result<T>> + Send + 'static {
    let r = r.clone();
    async move {
        let rt = runtime::current()?;
        let id = r.id();
        if let Some(v) = rt.refs.inline(id) {
            return decode(id, v);
        }
        let (mut slots, complete) = fetch_async(&rt, &[r.raw()], 1, Some(timeout), false).await?;
        drop(r);
        if !complete {
            return Err(Error::GetTimeout {
                object: id.to_string(),
                timeout,
            });
        }
        match slots.pop().flatten() {
            Some(v) => decode(id, v),
            None => Err(Error::shutdown("waiting for an object")),
        }
    }
}

/// Waits for every object and returns their values in order; the first failed object's error
/// otherwise.
///
/// In async code it returns `Error::InvalidArgument` without blocking, as [`get`] does: use
/// [`get_all_async`] there.
///
/// # Examples
/// ```no_run
/// #[lumen::remote]
/// fn square(x: i64) -> i64 { x * x }
///
/// lumen::init()?;
/// let refs: Vec<_> = (0..4).map(square::remote).collect();
/// assert_eq!(lumen::get_all(&refs)?, vec![0, 1, 4, 9]);
/// # Ok::<(), lumen::Error>(())
/// ```
pub fn get_all<T: DeserializeOwned + 'static>(refs: &[ObjectRef<T>]) -> Result<Vec<T>> {
    let rt = runtime::current()?;
    let ids: Vec<ObjectId> = refs.iter().map(|r| r.id()).collect();
    refuse_blocking("lumen::get_all", "lumen::get_all_async(&refs).await")?;
    if let Some(values) = all_inline(&rt, &ids) {
        return decode_all(&ids, values);
    }
    let raws: Vec<&RawRef> = refs.iter().map(|r| r.raw()).collect();
    let (slots, _) = fetch_blocking(&rt, &raws, ids.len(), None, false)?;
    decode_slots(&ids, slots)
}

/// Every object's content, if each is a small one in this process's table.
fn all_inline(rt: &Runtime, ids: &[ObjectId]) -> Option<Vec<Stored>> {
    ids.iter().map(|id| rt.refs.inline(*id)).collect()
}

fn decode_all<T: DeserializeOwned + 'static>(
    ids: &[ObjectId],
    values: Vec<Stored>,
) -> Result<Vec<T>> {
    ids.iter()
        .zip(values)
        .map(|(id, v)| decode(*id, v))
        .collect()
}

fn decode_slots<T: DeserializeOwned + 'static>(
    ids: &[ObjectId],
    slots: Vec<Option<Stored>>,
) -> Result<Vec<T>> {
    ids.iter()
        .zip(slots)
        .map(|(id, s)| match s {
            Some(v) => decode(*id, v),
            None => Err(Error::shutdown("waiting for an object")),
        })
        .collect()
}

/// Waits for every object without blocking a thread and returns their values in order; the
/// first failed object's error otherwise: the async twin of [`get_all`].
///
/// The future owns clones of the refs, so it may be spawned; it works on any executor.
///
/// # Examples
/// ```no_run
/// #[lumen::remote]
/// fn square(x: i64) -> i64 { x * x }
///
/// # async fn run() -> lumen::Result<()> {
/// let refs: Vec<_> = (0..4).map(square::remote).collect();
/// assert_eq!(lumen::get_all_async(&refs).await?, vec![0, 1, 4, 9]);
/// # Ok(())
/// # }
/// lumen::init()?;
/// futures::executor::block_on(run())?;
/// # Ok::<(), lumen::Error>(())
/// ```
pub fn get_all_async<T: DeserializeOwned + Send + 'static>(
    refs: &[ObjectRef<T>],
) -> impl Future<Output = Result<Vec<T>>> + Send + 'static {
    let refs = refs.to_vec();
    async move {
        let rt = runtime::current()?;
        let ids: Vec<ObjectId> = refs.iter().map(|r| r.id()).collect();
        if let Some(values) = all_inline(&rt, &ids) {
            return decode_all(&ids, values);
        }
        let raws: Vec<&RawRef> = refs.iter().map(|r| r.raw()).collect();
        let (slots, _) = fetch_async(&rt, &raws, ids.len(), None, false).await?;
        drop(refs);
        decode_slots(&ids, slots)
    }
}

/// Waits until `num_returns` of `refs` are ready (or `timeout` passes) and splits them into
/// `(ready, not_ready)`, each in the order of `refs`. At most `num_returns` refs are returned as
/// ready; `num_returns` larger than `refs.len()` waits for all of them. A failed object counts as
/// ready. Before `lumen::init()` nothing is ready. In async code (a lumen async task or actor
/// method, or any thread of a tokio runtime outside a lumen sync task) it does not block: it
/// reports what is ready at that moment (use [`wait_async`] to wait there).
///
/// # Examples
/// ```no_run
/// use std::time::Duration;
/// #[lumen::remote]
/// fn nap(ms: u64) -> u64 { std::thread::sleep(Duration::from_millis(ms)); ms }
///
/// lumen::init()?;
/// let refs = vec![nap::remote(5000), nap::remote(0)];
/// let (ready, rest) = lumen::wait(&refs, 1, Some(Duration::from_secs(4)));
/// assert_eq!((ready.len(), rest.len()), (1, 1));
/// assert_eq!(lumen::get(&ready[0])?, 0);
/// # Ok::<(), lumen::Error>(())
/// ```
pub fn wait<T>(
    refs: &[ObjectRef<T>],
    num_returns: usize,
    timeout: Option<Duration>,
) -> (Vec<ObjectRef<T>>, Vec<ObjectRef<T>>) {
    let Ok(rt) = runtime::current() else {
        return (Vec::new(), refs.to_vec());
    };
    let need = num_returns.min(refs.len());
    let may_block = || refuse_blocking("lumen::wait", "lumen::wait_async(&refs, n, timeout).await");
    // The next call of this thread's wait loop: its registrations are still there.
    if need > 0 && STANDING.with(|s| s.borrow().is_some()) && may_block().is_ok() {
        if let Some(split) = wait_standing(&rt, refs, need, timeout, false) {
            return split;
        }
    }
    if let Some(split) = known_ready_prefix(&rt, refs, need) {
        return split;
    }
    let in_async = may_block();
    if in_async.is_ok() && timeout.is_none_or(|t| t >= SPIN_FOR) {
        if let Some(split) = poll_ready_prefix(&rt, refs, need) {
            return split;
        }
    }
    if in_async.is_ok() && need > 0 {
        if let Some(split) = wait_standing(&rt, refs, need, timeout, true) {
            return split;
        }
    }
    let raws: Vec<&RawRef> = refs.iter().map(|r| r.raw()).collect();
    let slots = match in_async.and_then(|()| fetch_blocking(&rt, &raws, need, timeout, true)) {
        Ok((s, _)) => s,
        // In async code (or for a ref this process cannot read): what is present now, without
        // blocking.
        Err(_) => {
            let ids: Vec<ObjectId> = refs.iter().map(|r| r.id()).collect();
            fetch_ready_now(&rt, &ids)
        }
    };
    split_ready(refs, &slots, need)
}

/// Waits without blocking a thread until `num_returns` of `refs` are ready (or `timeout`
/// passes) and splits them into `(ready, not_ready)`, each in the order of `refs`: the async
/// twin of [`wait`], with the same semantics (at most `num_returns` ready, the first ready ones
/// in input order; failed objects count as ready; nothing is ready before `lumen::init()`).
///
/// The timeout runs on lumen's own event loop, so the future works on any executor (a tokio
/// runtime, `futures::executor::block_on`, lumen's async tasks) and may be spawned.
///
/// # Examples
/// ```no_run
/// use std::time::Duration;
/// #[lumen::remote]
/// fn nap(ms: u64) -> u64 { std::thread::sleep(Duration::from_millis(ms)); ms }
///
/// # async fn run() -> lumen::Result<()> {
/// let refs = vec![nap::remote(5000), nap::remote(0)];
/// let (ready, rest) = lumen::wait_async(&refs, 1, Some(Duration::from_secs(4))).await;
/// assert_eq!((ready.len(), rest.len()), (1, 1));
/// assert_eq!(lumen::get_async(&ready[0]).await?, 0);
/// # Ok(())
/// # }
/// lumen::init()?;
/// futures::executor::block_on(run())?;
/// # Ok::<(), lumen::Error>(())
/// ```
pub fn wait_async<T: 'static>(
    refs: &[ObjectRef<T>],
    num_returns: usize,
    timeout: Option<Duration>,
) -> impl Future<Output = (Vec<ObjectRef<T>>, Vec<ObjectRef<T>>)> + Send + 'static {
    let refs = refs.to_vec();
    async move {
        let Ok(rt) = runtime::current() else {
            return (Vec::new(), refs);
        };
        let need = num_returns.min(refs.len());
        if let Some(split) = known_ready_prefix(&rt, &refs, need) {
            return split;
        }
        let raws: Vec<&RawRef> = refs.iter().map(|r| r.raw()).collect();
        let slots = match fetch_async(&rt, &raws, need, timeout, true).await {
            Ok((s, _)) => s,
            // A ref this process cannot read (or a shutdown): what is present now.
            Err(_) => {
                let ids: Vec<ObjectId> = refs.iter().map(|r| r.id()).collect();
                fetch_ready_now_async(&rt, &ids).await
            }
        };
        split_ready(&refs, &slots, need)
    }
}

/// Refs split into `(ready, not_ready)`.
type Split<T> = (Vec<ObjectRef<T>>, Vec<ObjectRef<T>>);

/// `wait`'s fast path: the first `need` ready refs in input order are known without waiting
/// when every ref before them is known to be pending here. Typical of a wait loop, whose oldest
/// refs finish first: it costs a look at a few refs instead of a round over all of them.
fn known_ready_prefix<T>(rt: &Runtime, refs: &[ObjectRef<T>], need: usize) -> Option<Split<T>> {
    if need == 0 {
        return None;
    }
    let mut ready_at = Vec::with_capacity(need);
    for (i, r) in refs.iter().enumerate() {
        match rt.refs.peek(r.id()) {
            Peek::Ready => {
                ready_at.push(i);
                if ready_at.len() == need {
                    break;
                }
            }
            Peek::Pending => {}
            Peek::Unknown => break,
        }
    }
    if ready_at.len() != need {
        return None;
    }
    Some(split_at(refs, &ready_at))
}

/// Splits `refs` into those at the (ascending) indices `ready_at` and the rest, in order.
fn split_at<T>(refs: &[ObjectRef<T>], ready_at: &[usize]) -> Split<T> {
    let mut ready = Vec::with_capacity(ready_at.len());
    let mut rest = Vec::with_capacity(refs.len() - ready_at.len());
    let mut next = ready_at.iter().peekable();
    for (i, r) in refs.iter().enumerate() {
        if next.peek() == Some(&&i) {
            next.next();
            ready.push(r.clone());
        } else {
            rest.push(r.clone());
        }
    }
    (ready, rest)
}

thread_local! {
    /// This thread's `wait` loop: the registrations of its last blocking `wait` that had to
    /// register, with the runtime they are in (see [`Standing`]).
    static STANDING: RefCell<Option<(Weak<Runtime>, Standing)>> = const { RefCell::new(None) };
}

/// `wait` on this thread's standing registrations: reused when `refs` is the list of its last
/// one with refs taken out, or (with `register`) made anew when every ref is owned by this
/// process. Each call then only takes the arrivals since the last one, instead of registering
/// with (and later sweeping) every ref of the list. `None`: neither; the caller reads the refs
/// another way. Only where this thread may block.
fn wait_standing<T>(
    rt: &Arc<Runtime>,
    refs: &[ObjectRef<T>],
    need: usize,
    timeout: Option<Duration>,
    register: bool,
) -> Option<Split<T>> {
    let kept = STANDING.with(|s| s.borrow_mut().take());
    let matched = kept.and_then(|(owner, standing)| {
        if !std::ptr::eq(owner.as_ptr(), Arc::as_ptr(rt)) {
            return None;
        }
        match standing.slots_of(refs) {
            Some(slots) => Some(Ok((standing, slots))),
            // Another list: the old loop's registrations stay for its next call, unless this
            // one registers its own.
            None if register => None,
            None => Some(Err((owner, standing))),
        }
    });
    let (mut standing, slots) = match matched {
        Some(Ok(found)) => found,
        Some(Err(other)) => {
            STANDING.with(|s| *s.borrow_mut() = Some(other));
            return None;
        }
        None if register => {
            let standing = Standing::register(&rt.refs, refs)?;
            (standing, (0..refs.len() as u32).collect())
        }
        None => return None,
    };
    let deadline = timeout.map(|t| Instant::now() + t);
    let mut lending = Lending::default();
    let split = loop {
        if standing.take_arrivals().is_err() {
            // The runtime let go of the registrations (shutting down).
            break None;
        }
        if let Some(split) = pick_ready(rt, refs, &slots, &standing, need, false) {
            break Some(split);
        }
        let now = Instant::now();
        if deadline.is_some_and(|d| now >= d) {
            break pick_ready(rt, refs, &slots, &standing, need, true);
        }
        if let Some(arrival) = spin_recv(standing.arrivals().rx()) {
            standing.note(arrival);
            continue;
        }
        if lending.lend_if_quiet(rt, now) {
            continue;
        }
        {
            // On an actor pool thread: queued work may have this thread's core meanwhile.
            let _blocked = crate::actors::pooled::blocked();
            standing
                .arrivals()
                .sleep_until(1, lending.wake_by(deadline));
        }
        if !standing.arrivals().rx().is_empty() {
            lending.arrived();
        }
    };
    lending.take_back(rt);
    // Kept for the loop's next call (there is none once nothing is left to wait for).
    if split.as_ref().is_some_and(|(_, rest)| !rest.is_empty()) {
        STANDING.with(|s| *s.borrow_mut() = Some((Arc::downgrade(rt), standing)));
    }
    split
}

/// The first `need` ready refs of `refs` (whose slots in `standing` are `slots`), in input
/// order, once `need` are known ready; with `settle_now` (the wait is over), however many are
/// ready now. A ref not yet known ready is looked up in the table when it comes before the
/// chosen ones: it may be ready with its arrival still on the way.
fn pick_ready<T>(
    rt: &Runtime,
    refs: &[ObjectRef<T>],
    slots: &[u32],
    standing: &Standing,
    need: usize,
    settle_now: bool,
) -> Option<Split<T>> {
    let end = if settle_now {
        refs.len()
    } else {
        let mut known = 0;
        slots.iter().position(|s| {
            known += usize::from(standing.is_ready(*s));
            known == need
        })? + 1
    };
    let mut ready_at = Vec::with_capacity(need);
    for (i, (r, s)) in refs[..end].iter().zip(slots).enumerate() {
        if ready_at.len() == need {
            break;
        }
        if standing.is_ready(*s) || rt.refs.peek(r.id()) == Peek::Ready {
            ready_at.push(i);
        }
    }
    Some(split_at(refs, &ready_at))
}

/// How many refs from the front of a `wait`'s list [`poll_ready_prefix`] looks at.
const POLL_WINDOW: usize = 64;

/// Polls briefly (while polling pays, see [`spin_recv`]) for `need` of the first
/// [`POLL_WINDOW`] refs to become ready in this process's table, before a `wait` registers with
/// every ref it waits for (work in proportion to all of them, twice: to register and to clear):
/// a caller draining results one at a time waits microseconds for the next.
fn poll_ready_prefix<T>(rt: &Runtime, refs: &[ObjectRef<T>], need: usize) -> Option<Split<T>> {
    if need > POLL_WINDOW || !SPIN_BACKOFF.with(Backoff::should_poll) {
        return None;
    }
    let _permit = crate::spin::permit()?;
    let window = &refs[..refs.len().min(POLL_WINDOW)];
    // Whether `need` are ready; `None`: a ref this table does not hold (owned elsewhere), which
    // polling here cannot see become ready.
    let ready_in_window = || {
        let mut ready = 0;
        for r in window {
            match rt.refs.peek(r.id()) {
                Peek::Ready => ready += 1,
                Peek::Pending => {}
                Peek::Unknown => return None,
            }
            if ready == need {
                return Some(true);
            }
        }
        Some(false)
    };
    let start = Instant::now();
    loop {
        match ready_in_window() {
            None => return None,
            Some(true) => {
                SPIN_BACKOFF.with(Backoff::hit);
                return known_ready_prefix(rt, refs, need);
            }
            Some(false) => {}
        }
        if start.elapsed() >= SPIN_FOR {
            SPIN_BACKOFF.with(Backoff::miss);
            return None;
        }
        std::hint::spin_loop();
    }
}

/// Splits `refs` by `slots`: the first `need` present ones are ready, in input order.
fn split_ready<T>(
    refs: &[ObjectRef<T>],
    slots: &[Option<Stored>],
    need: usize,
) -> (Vec<ObjectRef<T>>, Vec<ObjectRef<T>>) {
    let mut ready = Vec::new();
    let mut rest = Vec::new();
    for (r, s) in refs.iter().zip(slots) {
        if s.is_some() && ready.len() < need {
            ready.push(r.clone());
        } else {
            rest.push(r.clone());
        }
    }
    (ready, rest)
}

/// Which of `ids` are present right now: small ones in the owner's table, the rest asked of the
/// shards (one round trip, without lending CPU).
fn fetch_ready_now(rt: &Arc<Runtime>, ids: &[ObjectId]) -> Vec<Option<Stored>> {
    let (mut slots, at) = inline_now(rt, ids);
    let ask: Vec<ObjectId> = at.iter().map(|i| ids[*i]).collect();
    for (i, v) in at.into_iter().zip(fetch_from_store(rt, &ask)) {
        slots[i] = v;
    }
    slots
}

/// [`fetch_ready_now`], awaiting the shards' answer instead of blocking for it.
async fn fetch_ready_now_async(rt: &Arc<Runtime>, ids: &[ObjectId]) -> Vec<Option<Stored>> {
    let (mut slots, at) = inline_now(rt, ids);
    let ask: Vec<ObjectId> = at.iter().map(|i| ids[*i]).collect();
    let from_store = rt.refs.store().present(&ask).await;
    for (i, v) in at.into_iter().zip(from_store) {
        slots[i] = v;
    }
    slots
}

/// The small objects among `ids` in the owner's table, and the slots of the others.
fn inline_now(rt: &Runtime, ids: &[ObjectId]) -> (Vec<Option<Stored>>, Vec<usize>) {
    let slots: Vec<Option<Stored>> = ids.iter().map(|id| rt.refs.inline_unread(*id)).collect();
    let at = (0..ids.len()).filter(|i| slots[*i].is_none()).collect();
    (slots, at)
}

/// Which of `ids` the local store holds right now.
fn fetch_from_store(rt: &Arc<Runtime>, ids: &[ObjectId]) -> Vec<Option<Stored>> {
    let mut slots = vec![None; ids.len()];
    if ids.is_empty() {
        return slots;
    }
    let (rx, mut markers) = rt.refs.store().fetch_marked(ids);
    while markers > 0 {
        match rx.recv() {
            Ok((PRESENT_SENT, _)) => markers -= 1,
            Ok((slot, v)) => slots[slot as usize] = Some(v),
            Err(_) => break,
        }
    }
    slots
}

/// Counts of what this process references and what the local store holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct MemorySummary {
    /// Objects this process holds references to (owned or borrowed).
    pub referenced_objects: usize,
    /// Objects held by this node: in the local object store, and small ones kept in this
    /// process's owner table (Ray's in-process memory store).
    pub stored_objects: usize,
    /// Bytes of those objects.
    pub stored_bytes: usize,
    /// The local store's capacity: `object_store_memory`.
    pub store_capacity: u64,
    /// Bytes of the local store's objects in memory now (the rest are spilled).
    pub store_memory_bytes: u64,
    /// Objects of the local store spilled to disk, and their bytes (a spilled object read
    /// since may also be in memory again).
    pub spilled_objects: usize,
    /// Bytes of the spilled objects.
    pub spilled_bytes: u64,
    /// Secondary copies (of objects kept elsewhere, read here) the local store dropped to make
    /// room since it began, and their bytes: they are read from their keeper again if needed.
    pub evicted_objects: u64,
    /// Bytes of the evicted copies.
    pub evicted_bytes: u64,
    /// Bytes of object values the local store sent to readers in other processes since it
    /// began (values mapped from shared memory by processes of this node are not sent).
    pub sent_bytes: u64,
}

/// What this process references and the local object store holds; for finding leaks.
///
/// In async code it returns `Error::InvalidArgument` without blocking: use
/// [`memory_summary_async`] there.
///
/// # Examples
/// ```no_run
/// lumen::init()?;
/// let before = lumen::memory_summary()?.stored_objects;
/// let r = lumen::put(vec![0u8; 1024]);
/// # let _ = lumen::get(&r)?;
/// drop(r);                                        // the last ref: the object is freed
/// # std::thread::sleep(std::time::Duration::from_millis(50));
/// assert_eq!(lumen::memory_summary()?.stored_objects, before);
/// # Ok::<(), lumen::Error>(())
/// ```
pub fn memory_summary() -> Result<MemorySummary> {
    let rt = runtime::current()?;
    refuse_blocking(
        "lumen::memory_summary",
        "lumen::memory_summary_async().await",
    )?;
    Ok(futures::executor::block_on(summarize(rt)))
}

/// What this process references and the local object store holds, without blocking a thread:
/// the async twin of [`memory_summary`]. Works on any executor.
///
/// # Examples
/// ```no_run
/// # async fn run() -> lumen::Result<()> {
/// let summary = lumen::memory_summary_async().await?;
/// println!("{} objects referenced", summary.referenced_objects);
/// # Ok(())
/// # }
/// lumen::init()?;
/// futures::executor::block_on(run())?;
/// # Ok::<(), lumen::Error>(())
/// ```
pub async fn memory_summary_async() -> Result<MemorySummary> {
    Ok(summarize(runtime::current()?).await)
}

async fn summarize(rt: Arc<Runtime>) -> MemorySummary {
    let store = rt.refs.store().clone();
    let stats = store.stats().await;
    let (inline_objects, inline_bytes) = rt.refs.inline_stats();
    let memory = store.memory();
    MemorySummary {
        referenced_objects: rt.refs.len(),
        stored_objects: stats.objects + inline_objects,
        stored_bytes: stats.bytes + inline_bytes,
        store_capacity: memory.capacity,
        store_memory_bytes: memory.used,
        spilled_objects: memory.spilled_objects,
        spilled_bytes: memory.spilled_bytes,
        evicted_objects: memory.evicted_objects,
        evicted_bytes: memory.evicted_bytes,
        sent_bytes: memory.sent_bytes,
    }
}
