//! Actors that cost memory, not a thread: an actix context ([`PooledContext`]) whose actors
//! share one pool of threads ([`ThreadPool`]).
//!
//! An actor started with [`start`] has an actix mailbox and [`Addr`] like any other, but no
//! thread or event loop of its own. When a message arrives for an idle actor, the actor is
//! queued on the pool; a pool thread takes it, handles its messages one at a time in mailbox
//! order (so each actor's handlers never overlap and `&mut self` is exclusive), lingers a moment
//! for the next one (a caller waiting for a reply sends its next call within microseconds), and
//! moves on. A handler that runs long (a sync actor method) keeps its thread only while it runs.
//!
//! The pool starts with a thread per core. At most one thread per core runs work at a time:
//! work beyond that waits for a running thread to finish, since more threads than cores would
//! only take turns. A thread that blocks in lumen (a `get` inside an actor method, see
//! [`blocked`]) stops counting as running while it waits, and hands queued work to an idle
//! thread. Calls that block elsewhere, or long ones, are caught by a watchdog: queued work that
//! waited for [`STALL`] while no thread finished anything gets an idle thread, or a new one up
//! to [`MAX_THREADS`]. New work goes to the thread that went idle last, so that when fewer
//! threads are needed the others stay idle: threads beyond one per core end after
//! [`IDLE_KEEP`] idle. A thread the system refuses to create is reported with the limit that
//! refused it; the threads already there go on serving.
//!
//! Besides actors, the pool runs one-off jobs ([`ThreadPool::spawn`]): the calls of a threaded
//! actor's concurrency groups.
//!
//! An actor whose handlers only start futures (an async concurrency group) is better served on
//! the event loop those futures run on: [`start_on`] gives it a home there instead, so that the
//! futures it starts are spawned from inside the loop, without waking another thread.

use crate::spin::{self, Backoff};
use actix::dev::channel::{channel, AddressReceiver};
use actix::dev::{Envelope, EnvelopeProxy, MessageResponse, OneshotSender, ToEnvelope};
use actix::prelude::*;
use futures::Stream;
use parking_lot::{Condvar, Mutex};
use std::cell::Cell as StdCell;
use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Poll, Wake, Waker};
use std::time::{Duration, Instant};

/// Queued work that waited this long while every thread was busy gets a new thread.
pub(crate) const STALL: Duration = Duration::from_millis(2);
/// The most threads the pool starts.
pub(crate) const MAX_THREADS: usize = 1024;
/// A thread idle this long ends (the first few stay).
pub(crate) const IDLE_KEEP: Duration = Duration::from_secs(10);
/// How many messages an actor handles before it lets others have the thread.
const BATCH: usize = 64;
/// How long a thread lingers on an actor's mailbox after it emptied.
const LINGER: Duration = Duration::from_micros(50);

/// The context of a pooled actor.
pub(crate) struct PooledContext<A: Actor<Context = Self>> {
    state: ActorState,
    actor: std::marker::PhantomData<fn() -> A>,
}

impl<A: Actor<Context = Self>> ActorContext for PooledContext<A> {
    fn stop(&mut self) {
        if self.state == ActorState::Running {
            self.state = ActorState::Stopping;
        }
    }

    fn terminate(&mut self) {
        self.state = ActorState::Stopped;
    }

    fn state(&self) -> ActorState {
        self.state
    }
}

/// Packs a message for a pooled actor.
struct PooledEnvelope<M: Message> {
    msg: Option<M>,
    tx: Option<OneshotSender<M::Result>>,
}

impl<A, M> EnvelopeProxy<A> for PooledEnvelope<M>
where
    M: Message + Send + 'static,
    M::Result: Send,
    A: Actor<Context = PooledContext<A>> + Handler<M>,
{
    fn handle(&mut self, act: &mut A, ctx: &mut PooledContext<A>) {
        let tx = self.tx.take();
        if tx.as_ref().is_some_and(|t| t.is_closed()) {
            return;
        }
        if let Some(msg) = self.msg.take() {
            <A as Handler<M>>::handle(act, msg, ctx).handle(ctx, tx)
        }
    }
}

impl<A, M> ToEnvelope<A, M> for PooledContext<A>
where
    A: Actor<Context = PooledContext<A>> + Handler<M>,
    M: Message + Send + 'static,
    M::Result: Send,
{
    fn pack(msg: M, tx: Option<OneshotSender<M::Result>>) -> Envelope<A> {
        Envelope::with_proxy(Box::new(PooledEnvelope { msg: Some(msg), tx }))
    }
}

/// Work the pool runs: an actor with messages, or a one-off job.
trait Runnable: Send + Sync {
    fn run(self: Arc<Self>, pool: &'static ThreadPool);
}

/// A one-off job.
struct Job(Mutex<Option<Box<dyn FnOnce() + Send>>>);

impl Runnable for Job {
    fn run(self: Arc<Self>, _: &'static ThreadPool) {
        if let Some(f) = self.0.lock().take() {
            f();
        }
    }
}

/// An actor, its context and its mailbox.
struct Live<A: Actor<Context = PooledContext<A>> + Send> {
    act: A,
    ctx: PooledContext<A>,
    rx: AddressReceiver<A>,
    started: bool,
}

/// Where a pooled actor's messages are handled.
enum Home {
    /// On the shared thread pool.
    Pool(&'static ThreadPool),
    /// On a tokio event loop, as a task per batch of messages.
    Loop(tokio::runtime::Handle),
}

/// A pooled actor: queued on its home when a message arrives while it is idle.
struct Cell<A: Actor<Context = PooledContext<A>> + Send> {
    live: Mutex<Option<Live<A>>>,
    /// Queued on its home, or being run: a message arriving then needs no new queueing.
    scheduled: AtomicBool,
    home: Home,
    /// Whether lingering on the mailbox pays: calls that come from another process or node come
    /// too late for it, and a lingering thread takes a core from the threads bringing them.
    linger: Backoff,
}

impl<A: Actor<Context = PooledContext<A>> + Send> Cell<A> {
    /// Queues the actor on its home.
    fn schedule(self: Arc<Self>) {
        match &self.home {
            Home::Pool(pool) => pool.push(self.clone()),
            Home::Loop(handle) => {
                let me = self.clone();
                handle.spawn(async move { me.run_batch(false) });
            }
        }
    }
}

impl<A: Actor<Context = PooledContext<A>> + Send> Wake for Cell<A> {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref()
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !self.scheduled.swap(true, Ordering::AcqRel) {
            self.clone().schedule();
        }
    }
}

impl<A: Actor<Context = PooledContext<A>> + Send> Cell<A> {
    /// Handles what waits in the mailbox; `false` once the actor has stopped.
    fn drain(live: &mut Live<A>, cx: &mut std::task::Context<'_>, budget: &mut usize) -> Drained {
        if !live.started {
            live.started = true;
            live.ctx.state = ActorState::Running;
            A::started(&mut live.act, &mut live.ctx);
        }
        loop {
            if live.ctx.state != ActorState::Running {
                return Drained::Stopped;
            }
            if *budget == 0 {
                return Drained::Yield;
            }
            match Pin::new(&mut live.rx).poll_next(cx) {
                Poll::Ready(Some(mut env)) => {
                    *budget -= 1;
                    env.handle(&mut live.act, &mut live.ctx);
                }
                Poll::Ready(None) => return Drained::Stopped,
                Poll::Pending => return Drained::Empty,
            }
        }
    }
}

enum Drained {
    Empty,
    Yield,
    Stopped,
}

impl<A: Actor<Context = PooledContext<A>> + Send> Runnable for Cell<A> {
    fn run(self: Arc<Self>, _: &'static ThreadPool) {
        self.run_batch(true)
    }
}

impl<A: Actor<Context = PooledContext<A>> + Send> Cell<A> {
    /// Handles a batch of messages; `linger`: poll the mailbox a moment once it empties (a pool
    /// thread does; an event loop's thread has other tasks to run).
    fn run_batch(self: Arc<Self>, linger: bool) {
        let waker = Waker::from(self.clone());
        let mut cx = std::task::Context::from_waker(&waker);
        let mut guard = self.live.lock();
        let Some(live) = guard.as_mut() else {
            return;
        };
        let mut budget = BATCH;
        loop {
            match Cell::drain(live, &mut cx, &mut budget) {
                Drained::Stopped => {
                    let mut live = guard.take().expect("the actor is live");
                    live.ctx.state = ActorState::Stopping;
                    A::stopping(&mut live.act, &mut live.ctx);
                    live.ctx.state = ActorState::Stopped;
                    A::stopped(&mut live.act, &mut live.ctx);
                    // Whatever is left in the mailbox is dropped with the actor: each message's
                    // own guard answers it (a call's result says the actor stopped).
                    return;
                }
                Drained::Yield => {
                    // Others wait for a thread: go to the back of the queue.
                    drop(guard);
                    self.schedule();
                    return;
                }
                Drained::Empty => {}
            }
            // Linger: a caller answered a moment ago usually sends its next call at once.
            let mut next = None;
            let mut poll = || match Pin::new(&mut live.rx).poll_next(&mut cx) {
                Poll::Ready(n) => {
                    next = Some(n);
                    true
                }
                Poll::Pending => false,
            };
            if linger && self.linger.should_poll() {
                if spin::linger(LINGER, poll) {
                    self.linger.hit();
                } else {
                    self.linger.miss();
                }
            } else {
                poll();
            }
            match next {
                Some(Some(mut env)) => {
                    env.handle(&mut live.act, &mut live.ctx);
                    continue;
                }
                Some(None) => {
                    live.ctx.state = ActorState::Stopping;
                    continue;
                }
                None => {}
            }
            self.scheduled.store(false, Ordering::Release);
            // A message that came between the last look and the flag: take it, unless a
            // thread was already queued for it (it will find the mailbox empty).
            match Pin::new(&mut live.rx).poll_next(&mut cx) {
                Poll::Ready(Some(mut env)) => {
                    self.scheduled.store(true, Ordering::Release);
                    env.handle(&mut live.act, &mut live.ctx);
                    budget = BATCH;
                }
                Poll::Ready(None) => {
                    self.scheduled.store(true, Ordering::Release);
                    live.ctx.state = ActorState::Stopping;
                }
                Poll::Pending => return,
            }
        }
    }
}

/// Starts `act` on the shared pool and returns its address.
pub(crate) fn start<A: Actor<Context = PooledContext<A>> + Send>(act: A) -> Addr<A> {
    start_at(act, Home::Pool(ThreadPool::shared()))
}

/// Starts `act` with its messages handled on the event loop `handle` and returns its address.
pub(crate) fn start_on<A: Actor<Context = PooledContext<A>> + Send>(
    act: A,
    handle: tokio::runtime::Handle,
) -> Addr<A> {
    start_at(act, Home::Loop(handle))
}

fn start_at<A: Actor<Context = PooledContext<A>> + Send>(act: A, home: Home) -> Addr<A> {
    let (tx, rx) = channel::<A>(0);
    let addr = Addr::new(tx);
    let ctx = PooledContext {
        state: ActorState::Started,
        actor: std::marker::PhantomData,
    };
    let cell = Arc::new(Cell {
        live: Mutex::new(Some(Live {
            act,
            ctx,
            rx,
            started: false,
        })),
        scheduled: AtomicBool::new(true),
        home,
        linger: Backoff::new(),
    });
    // Run `started` (and whatever was sent meanwhile) at home.
    cell.schedule();
    addr
}

/// An idle pool thread, waiting to be handed work.
struct Sleeper {
    /// Set (under the pool's lock) by the one who takes it off the idle stack.
    woken: AtomicBool,
    thread: std::thread::Thread,
}

/// What the pool's lock guards.
struct Shared {
    /// Work waiting for a thread, with when it was queued (microseconds since `epoch`).
    queue: VecDeque<(u64, Arc<dyn Runnable>)>,
    /// Idle threads, the most recently idle last: new work goes to the thread that went idle
    /// last (its caches are warm, and the ones below it stay idle long enough to end).
    idle: Vec<Arc<Sleeper>>,
    /// Threads neither idle nor blocked in lumen (see [`blocked`]): at most one per core, but
    /// for threads the watchdog woke for work that was stuck.
    running: usize,
}

impl Shared {
    /// Takes the most recently idle thread off the stack and counts it running; the caller
    /// unparks it once the lock is released.
    fn wake_one(&mut self) -> Option<Arc<Sleeper>> {
        let sleeper = self.idle.pop()?;
        sleeper.woken.store(true, Ordering::Release);
        self.running += 1;
        Some(sleeper)
    }
}

thread_local! {
    /// The pool the current thread serves, if it is a pool thread.
    static POOL_THREAD: StdCell<Option<&'static ThreadPool>> = const { StdCell::new(None) };
}

/// While alive, the current pool thread does not count as running (see [`blocked`]).
pub(crate) struct Blocked(&'static ThreadPool);

/// Marks the current thread as blocked until the returned guard is dropped, when it is a pool
/// thread (else `None`, at the cost of a thread-local read): lumen calls that wait (reading
/// objects) call this before they sleep, so that work queued behind a blocked actor method
/// goes to an idle thread at once instead of waiting for the watchdog.
pub(crate) fn blocked() -> Option<Blocked> {
    let pool = POOL_THREAD.with(StdCell::get)?;
    let sleeper = {
        let mut shared = pool.shared.lock();
        shared.running = shared.running.saturating_sub(1);
        if !shared.queue.is_empty() && shared.running < pool.cores {
            shared.wake_one()
        } else {
            None
        }
    };
    if let Some(s) = sleeper {
        s.thread.unpark();
    }
    Some(Blocked(pool))
}

impl Drop for Blocked {
    fn drop(&mut self) {
        self.0.shared.lock().running += 1;
    }
}

/// The threads pooled actors and jobs run on.
pub(crate) struct ThreadPool {
    shared: Mutex<Shared>,
    threads: AtomicUsize,
    /// Threads that run work at once (one per core).
    cores: usize,
    /// How long a thread beyond the ones kept stays idle before it ends.
    idle_keep: Duration,
    /// Work items finished, by all threads (the watchdog's sign of progress).
    finished: AtomicUsize,
    epoch: Instant,
    /// Wakes the watchdog when work is queued.
    watch: Condvar,
    watch_lock: Mutex<()>,
}

/// Threads the pool keeps even when idle.
fn min_threads() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

impl ThreadPool {
    /// The process's pool.
    pub(crate) fn shared() -> &'static ThreadPool {
        static POOL: OnceLock<&'static ThreadPool> = OnceLock::new();
        POOL.get_or_init(|| ThreadPool::start(IDLE_KEEP, true))
    }

    /// Starts a pool (it lives as long as the process) whose extra threads end after
    /// `idle_keep` idle; `watch`: with its watchdog (tests go without, to see the rest alone).
    fn start(idle_keep: Duration, watch: bool) -> &'static ThreadPool {
        let pool: &'static ThreadPool = Box::leak(Box::new(ThreadPool {
            shared: Mutex::new(Shared {
                queue: VecDeque::new(),
                idle: Vec::new(),
                running: 0,
            }),
            threads: AtomicUsize::new(0),
            cores: min_threads(),
            idle_keep,
            finished: AtomicUsize::new(0),
            epoch: Instant::now(),
            watch: Condvar::new(),
            watch_lock: Mutex::new(()),
        }));
        for _ in 0..min_threads() {
            pool.add_thread();
        }
        if !watch {
            return pool;
        }
        let spawned = std::thread::Builder::new()
            .name("lumen-pool-watch".into())
            .spawn(move || pool.watchdog());
        if let Err(e) = spawned {
            tracing::error!(error = %crate::error::describe_io(&e),
                "cannot start the actor pool's watchdog: the pool will not grow");
        }
        pool
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }

    /// Threads of the pool now.
    pub(crate) fn threads(&self) -> usize {
        self.threads.load(Ordering::Relaxed)
    }

    fn push(&'static self, work: Arc<dyn Runnable>) {
        let now = self.now();
        let (was_empty, sleeper) = {
            let mut shared = self.shared.lock();
            shared.queue.push_back((now, work));
            // With a thread running per core, the work waits for one of them.
            let sleeper = if shared.running < self.cores {
                shared.wake_one()
            } else {
                None
            };
            (shared.queue.len() == 1, sleeper)
        };
        if let Some(s) = sleeper {
            s.thread.unpark();
        }
        if was_empty {
            self.watch.notify_one();
        }
    }

    /// Counts one piece of work finished inside a long job (a job that serves a queue of calls),
    /// so that the watchdog sees the thread is not stuck.
    pub(crate) fn progressed(&self) {
        self.finished.fetch_add(1, Ordering::Relaxed);
    }

    /// Runs `f` on a pool thread.
    pub(crate) fn spawn(&'static self, f: impl FnOnce() + Send + 'static) {
        self.push(Arc::new(Job(Mutex::new(Some(Box::new(f))))));
    }

    /// Starts a thread; false (with the reason logged) if the system refuses.
    fn add_thread(&'static self) -> bool {
        let n = self.threads.fetch_add(1, Ordering::AcqRel);
        // Running until it finds nothing to do.
        self.shared.lock().running += 1;
        let spawned = std::thread::Builder::new()
            .name(format!("lumen-pool-{n}"))
            .spawn(move || self.serve());
        match spawned {
            Ok(_) => true,
            Err(e) => {
                self.threads.fetch_sub(1, Ordering::AcqRel);
                self.shared.lock().running -= 1;
                tracing::error!(threads = n, error = %crate::error::describe_io(&e),
                    "the actor pool cannot start another thread; the ones it has go on serving");
                false
            }
        }
    }

    fn serve(&'static self) {
        POOL_THREAD.with(|p| p.set(Some(self)));
        let me = Arc::new(Sleeper {
            woken: AtomicBool::new(false),
            thread: std::thread::current(),
        });
        loop {
            let Some(work) = self.next(&me) else {
                return;
            };
            work.run(self);
            self.finished.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The next work for the thread `me`, sleeping on the idle stack while there is none;
    /// `None`: the thread has been idle for `idle_keep` and the pool has more than it keeps,
    /// so the thread ends (counted out under the lock, so that threads ending together never
    /// take the pool below what it keeps).
    fn next(&self, me: &Arc<Sleeper>) -> Option<Arc<dyn Runnable>> {
        loop {
            let deadline = {
                let mut shared = self.shared.lock();
                if let Some((_, work)) = shared.queue.pop_front() {
                    return Some(work);
                }
                me.woken.store(false, Ordering::Relaxed);
                shared.idle.push(me.clone());
                shared.running = shared.running.saturating_sub(1);
                Instant::now() + self.idle_keep
            };
            loop {
                if me.woken.load(Ordering::Acquire) {
                    break;
                }
                let now = Instant::now();
                if now >= deadline {
                    let mut shared = self.shared.lock();
                    if me.woken.load(Ordering::Acquire) {
                        break;
                    }
                    shared.idle.retain(|s| !Arc::ptr_eq(s, me));
                    if shared.queue.is_empty() && self.threads() > min_threads() {
                        self.threads.fetch_sub(1, Ordering::AcqRel);
                        return None;
                    }
                    // Off the stack on its own: running again, to look for work.
                    shared.running += 1;
                    break;
                }
                std::thread::park_timeout(deadline - now);
            }
        }
    }

    /// Wakes an idle thread, or adds one if none is idle, when the oldest queued work has waited
    /// for [`STALL`] with no thread finishing anything meanwhile: every running thread is
    /// blocked (outside lumen's waits, which [`blocked`] sees at once), or busy with one long
    /// item. Work that merely queues because the cores are busy (threads finishing item after
    /// item) gets no thread: more threads than cores would only take turns. Sleeps while the
    /// queue is empty.
    fn watchdog(&'static self) {
        let mut guard = self.watch_lock.lock();
        loop {
            let queued = !self.shared.lock().queue.is_empty();
            if !queued {
                self.watch.wait_for(&mut guard, Duration::from_secs(1));
                continue;
            }
            drop(guard);
            let finished = self.finished.load(Ordering::Relaxed);
            std::thread::sleep(STALL);
            guard = self.watch_lock.lock();
            let stuck = self.finished.load(Ordering::Relaxed) == finished;
            let woken = {
                let mut shared = self.shared.lock();
                let oldest = shared.queue.front().map(|(at, _)| *at);
                let stalled = oldest
                    .is_some_and(|at| self.now().saturating_sub(at) >= STALL.as_micros() as u64);
                if !(stalled && stuck) {
                    continue;
                }
                shared.wake_one()
            };
            match woken {
                Some(s) => s.thread.unpark(),
                None if self.threads() < MAX_THREADS => {
                    self.add_thread();
                }
                None => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    struct Counter {
        seen: Vec<u32>,
        started: Arc<AtomicU32>,
    }

    impl Actor for Counter {
        type Context = PooledContext<Self>;
        fn started(&mut self, _: &mut Self::Context) {
            self.started.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[derive(Message)]
    #[rtype(result = "Vec<u32>")]
    struct Add(u32);

    impl Handler<Add> for Counter {
        type Result = MessageResult<Add>;
        fn handle(&mut self, m: Add, _: &mut Self::Context) -> Self::Result {
            self.seen.push(m.0);
            MessageResult(self.seen.clone())
        }
    }

    #[derive(Message)]
    #[rtype(result = "()")]
    struct Stop;

    impl Handler<Stop> for Counter {
        type Result = ();
        fn handle(&mut self, _: Stop, ctx: &mut Self::Context) {
            ctx.stop();
        }
    }

    #[test]
    fn messages_are_handled_in_order_and_replies_come_back() {
        let started = Arc::new(AtomicU32::new(0));
        let addr = start(Counter {
            seen: Vec::new(),
            started: started.clone(),
        });
        for i in 0..100 {
            addr.do_send(Add(i));
        }
        let all = futures::executor::block_on(addr.send(Add(100))).unwrap();
        assert_eq!(all, (0..=100).collect::<Vec<_>>());
        assert_eq!(started.load(Ordering::SeqCst), 1);
        addr.do_send(Stop);
        let e = futures::executor::block_on(addr.send(Add(1)));
        assert!(
            e.is_err() || !addr.connected(),
            "a stopped actor takes no more"
        );
    }

    #[test]
    fn an_actor_at_home_on_an_event_loop_handles_its_messages_in_order_there() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("test-loop")
            .build()
            .unwrap();
        let started = Arc::new(AtomicU32::new(0));
        let addr = start_on(
            Counter {
                seen: Vec::new(),
                started: started.clone(),
            },
            rt.handle().clone(),
        );
        for i in 0..200 {
            addr.do_send(Add(i));
        }
        let all = futures::executor::block_on(addr.send(Add(200))).unwrap();
        assert_eq!(all, (0..=200).collect::<Vec<_>>());
        assert_eq!(started.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn thousands_of_idle_actors_use_a_handful_of_threads() {
        let started = Arc::new(AtomicU32::new(0));
        let addrs: Vec<_> = (0..5000)
            .map(|_| {
                start(Counter {
                    seen: Vec::new(),
                    started: started.clone(),
                })
            })
            .collect();
        for a in &addrs {
            assert_eq!(
                futures::executor::block_on(a.send(Add(7))).unwrap(),
                vec![7]
            );
        }
        assert_eq!(started.load(Ordering::SeqCst), 5000);
        assert!(
            ThreadPool::shared().threads() < 64,
            "{} threads",
            ThreadPool::shared().threads()
        );
    }

    #[test]
    fn calls_that_block_get_more_threads() {
        block_together(ThreadPool::shared(), 2 * min_threads() + 3);
    }

    /// Runs `n` jobs on `pool` that each wait until all are running: only a pool grown to `n`
    /// threads gets them done.
    fn block_together(pool: &'static ThreadPool, n: usize) {
        let arrived = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = flume::unbounded();
        for _ in 0..n {
            let (arrived, tx) = (arrived.clone(), tx.clone());
            pool.spawn(move || {
                arrived.fetch_add(1, Ordering::SeqCst);
                let deadline = Instant::now() + Duration::from_secs(30);
                while arrived.load(Ordering::SeqCst) < n && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(1));
                }
                let _ = tx.send(arrived.load(Ordering::SeqCst));
            });
        }
        for _ in 0..n {
            assert_eq!(rx.recv_timeout(Duration::from_secs(60)).unwrap(), n);
        }
    }

    /// A pool without a watchdog, with `extra` idle threads beyond one per core.
    fn pool_with_idle_threads(extra: usize) -> &'static ThreadPool {
        let pool = ThreadPool::start(IDLE_KEEP, false);
        for _ in 0..extra {
            assert!(pool.add_thread());
        }
        // Threads count as running until they find nothing to do.
        let deadline = Instant::now() + Duration::from_secs(60);
        while pool.shared.lock().idle.len() < pool.threads() && Instant::now() < deadline {
            std::thread::yield_now();
        }
        assert_eq!(pool.shared.lock().running, 0);
        pool
    }

    #[test]
    fn a_burst_of_work_runs_on_one_thread_per_core_though_more_are_idle() {
        let pool = pool_with_idle_threads(6);
        let (now, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (tx, rx) = flume::unbounded();
        let jobs = 200;
        for _ in 0..jobs {
            let (now, most, tx) = (now.clone(), most.clone(), tx.clone());
            pool.spawn(move || {
                let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(n, Ordering::SeqCst);
                // Long enough for other threads to overlap it if they were running.
                let until = Instant::now() + Duration::from_micros(200);
                while Instant::now() < until {
                    std::hint::spin_loop();
                }
                now.fetch_sub(1, Ordering::SeqCst);
                let _ = tx.send(());
            });
        }
        for _ in 0..jobs {
            rx.recv_timeout(Duration::from_secs(60)).unwrap();
        }
        let most = most.load(Ordering::SeqCst);
        assert!(
            most <= min_threads(),
            "{most} jobs ran at once on {} cores",
            min_threads()
        );
    }

    #[test]
    fn a_thread_blocked_in_lumen_hands_queued_work_to_an_idle_thread() {
        let pool = pool_with_idle_threads(2);
        // Every running slot blocks until a later job has run: only a thread that says it is
        // blocked lets that job have a core (there is no watchdog here to notice the stall).
        let (done_tx, done_rx) = flume::unbounded::<()>();
        let (out_tx, out_rx) = flume::unbounded();
        for _ in 0..min_threads() {
            let (done_rx, out_tx) = (done_rx.clone(), out_tx.clone());
            pool.spawn(move || {
                let _blocked = blocked().expect("a pool thread");
                let _ = out_tx.send(done_rx.recv_timeout(Duration::from_secs(60)).is_ok());
            });
        }
        pool.spawn(move || {
            for _ in 0..min_threads() {
                let _ = done_tx.send(());
            }
        });
        for _ in 0..min_threads() {
            assert!(out_rx.recv_timeout(Duration::from_secs(90)).unwrap());
        }
        assert!(blocked().is_none(), "the test's thread is no pool thread");
    }

    #[test]
    fn threads_grown_for_blocking_calls_end_while_work_comes_one_at_a_time() {
        let pool = ThreadPool::start(Duration::from_millis(100), true);
        let n = 2 * min_threads() + 3;
        block_together(pool, n);
        assert!(
            pool.threads() >= n,
            "{} threads for {n} jobs",
            pool.threads()
        );
        // Work that needs one thread at a time keeps going to the same thread: the others stay
        // idle and end, though the work never pauses as long as they may stay idle.
        let (tx, rx) = flume::unbounded();
        let deadline = Instant::now() + Duration::from_secs(60);
        while pool.threads() > min_threads() && Instant::now() < deadline {
            let tx = tx.clone();
            pool.spawn(move || {
                let _ = tx.send(());
            });
            rx.recv_timeout(Duration::from_secs(60)).unwrap();
        }
        assert_eq!(pool.threads(), min_threads());
    }
}
