//! `put`, `get`, `get_all`, `get_timeout`, `wait`, and awaiting refs.
//!
//! Blocking reads wait on the store shards' reply channel. Inside a task, a read that has to wait
//! lends the task's CPU back to the raylet until the objects arrive (so a task waiting for its
//! children cannot starve them), and takes it back before returning. Inside async tasks and
//! methods, blocking reads are refused: `.await` the ref instead.

use crate::context::{self, refuse_blocking_in_async};
use crate::error::{Error, Result};
use crate::ids::ObjectId;
use crate::objects::codec;
use crate::objects::object_ref::ObjectRef;
use crate::objects::ownership::{Lookup, Peek};
use crate::objects::read::{self, check_known, decode};
use crate::objects::store::PRESENT_SENT;
use crate::protocol::raylet::{TaskBlocked, TaskUnblocked};
use crate::protocol::refs::{RawRef, Stored};
use crate::spin::Backoff;
use crate::worker::runtime::{self, Runtime};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a blocking read waits before lending its task's CPU.
const LEND_AFTER: Duration = Duration::from_millis(1);

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
            rt.refs.put(id, Stored::Value(bytes), &contains);
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

/// Waits until `need` of `ids` are present or `timeout` passes; returns the values by slot and
/// whether `need` was reached. With `settle`, it also waits until it has seen every object that
/// was already present when the shards answered (so `wait` can pick the first ready ones in
/// input order, not the first to arrive).
fn fetch_blocking(
    rt: &Arc<Runtime>,
    refs: &[&RawRef],
    need: usize,
    timeout: Option<Duration>,
    settle: bool,
) -> Result<(Vec<Option<Stored>>, bool)> {
    refuse_blocking_in_async("lumen::get")?;
    let ids: Vec<ObjectId> = refs.iter().map(|r| r.id).collect();
    let mut slots: Vec<Option<Stored>> = vec![None; ids.len()];
    if ids.is_empty() || need == 0 {
        return Ok((slots, true));
    }
    check_known(&rt.refs, &ids)?;
    // Owned objects are read from (or waited for in) the owner's table; the rest from the store.
    let (tx, rx) = flume::unbounded();
    let mut got = 0;
    let mut via_store = Vec::new();
    let mut remote = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        match rt.refs.lookup_or_wait(*id, i as u32, &tx) {
            Lookup::Ready(v) => {
                slots[i] = Some(v);
                got += 1;
            }
            Lookup::Waiting => {}
            Lookup::Elsewhere if rt.net.is_here(refs[i].owner.addr) => via_store.push((i, *id)),
            Lookup::Elsewhere => remote.push((i, refs[i].clone())),
        }
    }
    if !remote.is_empty() {
        read::fetch_into(&rt.refs, remote, &tx);
    }
    let mut markers = if via_store.is_empty() {
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
    let deadline = timeout.map(|t| Instant::now() + t);
    let mut lent = None;
    let mut complete = true;
    while got < need || markers > 0 {
        let now = Instant::now();
        let mut wait = deadline.map(|d| d.saturating_duration_since(now));
        if lent.is_none() {
            wait = Some(wait.map_or(LEND_AFTER, |w| w.min(LEND_AFTER)));
        }
        let next = match spin_recv(&rx) {
            Some(v) => Ok(v),
            None => match wait {
                Some(w) => rx.recv_timeout(w),
                None => rx.recv().map_err(|_| flume::RecvTimeoutError::Disconnected),
            },
        };
        match next {
            Ok((PRESENT_SENT, _)) => markers -= 1,
            Ok((slot, v)) => {
                if slots[slot as usize].is_none() {
                    got += 1;
                    slots[slot as usize] = Some(v);
                }
            }
            Err(flume::RecvTimeoutError::Timeout) => {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    complete = false;
                    break;
                }
                if lent.is_none() {
                    // About to wait for real: lend the task's CPU, if it holds one.
                    lent = Some(context::exec(|e| e.task_id.filter(|_| e.lends_cpu)));
                    if let Some(Some(task_id)) = lent {
                        rt.raylet.do_send(TaskBlocked { task_id });
                    }
                }
            }
            Err(flume::RecvTimeoutError::Disconnected) => {
                return Err(Error::shutdown("waiting for an object"));
            }
        }
    }
    // Anything else already delivered counts as ready too.
    while let Ok((slot, v)) = rx.try_recv() {
        if slot != PRESENT_SENT && slots[slot as usize].is_none() {
            slots[slot as usize] = Some(v);
        }
    }
    if let Some(Some(task_id)) = lent {
        // Back on the CPU before the task goes on.
        let _ = rt.request(&rt.raylet, TaskUnblocked { task_id });
    }
    Ok((slots, complete || got >= need))
}

/// Waits for the object and returns its value, or the error of the task that made it.
///
/// Inside an async task or method this returns `Error::InvalidArgument` without blocking:
/// `.await` the ref there instead.
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
    refuse_blocking_in_async("lumen::get")?;
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

/// Waits for every object and returns their values in order; the first failed object's error
/// otherwise.
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
    refuse_blocking_in_async("lumen::get_all")?;
    let inline: Option<Vec<Stored>> = ids.iter().map(|id| rt.refs.inline(*id)).collect();
    if let Some(values) = inline {
        return ids
            .iter()
            .zip(values)
            .map(|(id, v)| decode(*id, v))
            .collect();
    }
    let raws: Vec<&RawRef> = refs.iter().map(|r| r.raw()).collect();
    let (slots, _) = fetch_blocking(&rt, &raws, ids.len(), None, false)?;
    ids.iter()
        .zip(slots)
        .map(|(id, s)| match s {
            Some(v) => decode(*id, v),
            None => Err(Error::shutdown("waiting for an object")),
        })
        .collect()
}

/// Waits until `num_returns` of `refs` are ready (or `timeout` passes) and splits them into
/// `(ready, not_ready)`, each in the order of `refs`. At most `num_returns` refs are returned as
/// ready; `num_returns` larger than `refs.len()` waits for all of them. A failed object counts as
/// ready. Before `lumen::init()` nothing is ready. Inside an async task or method it does not
/// block: it reports what is ready at that moment (`.await` the refs to wait for them there).
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
    // Fast path: the first `need` ready refs in input order are known without waiting when
    // every ref before them is known to be pending here. Typical of a wait loop, whose oldest
    // refs finish first: it costs a look at a few refs instead of a round over all of them.
    if need > 0 {
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
        if ready_at.len() == need {
            let mut ready = Vec::with_capacity(need);
            let mut rest = Vec::with_capacity(refs.len() - need);
            let mut next = ready_at.iter().peekable();
            for (i, r) in refs.iter().enumerate() {
                if next.peek() == Some(&&i) {
                    next.next();
                    ready.push(r.clone());
                } else {
                    rest.push(r.clone());
                }
            }
            return (ready, rest);
        }
    }
    let ids: Vec<ObjectId> = refs.iter().map(|r| r.id()).collect();
    let raws: Vec<&RawRef> = refs.iter().map(|r| r.raw()).collect();
    let slots = match fetch_blocking(&rt, &raws, need, timeout, true) {
        Ok((s, _)) => s,
        // Inside an async task: answer from what is present now, without blocking.
        Err(_) => fetch_ready_now(&rt, &ids),
    };
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
    let mut slots: Vec<Option<Stored>> = ids.iter().map(|id| rt.refs.inline(*id)).collect();
    let at: Vec<usize> = (0..ids.len()).filter(|i| slots[*i].is_none()).collect();
    let ask: Vec<ObjectId> = at.iter().map(|i| ids[*i]).collect();
    for (i, v) in at.into_iter().zip(fetch_from_store(rt, &ask)) {
        slots[i] = v;
    }
    slots
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
}

/// What this process references and the local object store holds; for finding leaks.
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
    let stats = futures::executor::block_on(rt.refs.store().stats());
    let (inline_objects, inline_bytes) = rt.refs.inline_stats();
    Ok(MemorySummary {
        referenced_objects: rt.refs.len(),
        stored_objects: stats.objects + inline_objects,
        stored_bytes: stats.bytes + inline_bytes,
    })
}
