//! A worker thread: an actix actor on its own thread that runs sync tasks, one at a time.
//!
//! The [`Executors`](crate::worker::pool::Executors) keep idle workers and start more when every
//! one is busy (including when a task blocks in `get` and lends its CPU to another task), as
//! Ray's worker pool does.
//!
//! A task's slot may stay leased to its owner when the task finishes
//! ([`leases`](crate::worker::leases)): the thread is then the owner's, and runs the tasks the
//! owner pushes until it returns the lease.
//!
//! A worker that finished a task while more wait at its raylet (or for its leased slot) polls
//! its [`Inbox`] for a moment before its thread sleeps: the next task usually comes within
//! microseconds, and waking a sleeping thread costs more than a small task. Polling is rationed as everywhere
//! ([`crate::spin`]).

use crate::context::{with_exec, ExecContext};
use crate::ids::NodeId;
use crate::invoke;
use crate::protocol::owner::Unstarted;
use crate::protocol::worker::Launch;
use crate::spin::{self, Backoff};
use crate::transport::net::Net;
use crate::worker::executor::{self, LeaseTable, SlotQueue};
use crate::worker::pool::Finished;
use actix::prelude::*;
use parking_lot::Mutex;
use std::cell::RefCell;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// How long a worker polls for its next task after finishing one.
const LINGER: Duration = Duration::from_micros(50);

/// The leased slot whose task runs on this thread: what a blocking read tells when it lends the
/// task's CPU.
struct CurrentSlot {
    lease: crate::ids::TaskId,
    queue: Arc<Mutex<SlotQueue>>,
    owner: SocketAddr,
    net: Arc<Net>,
}

thread_local! {
    static SLOT: RefCell<Option<CurrentSlot>> = const { RefCell::new(None) };
}

/// The task running on this thread blocked (`true`: it lends its CPU) or resumed. A task in a
/// leased slot that blocks sends the tasks pushed behind it back to their owner, and so does
/// every push while it stays blocked, so that a task waiting for a task queued behind it cannot
/// wait forever.
pub(crate) fn slot_blocked(blocked: bool) {
    SLOT.with(|slot| {
        let slot = slot.borrow();
        let Some(s) = slot.as_ref() else {
            return;
        };
        let behind: Vec<_> = {
            let mut q = s.queue.lock();
            q.blocked = blocked;
            if !blocked {
                return;
            }
            q.tasks.drain(..).map(|l| l.spec.return_id).collect()
        };
        if !behind.is_empty() {
            s.net.tell(
                s.owner,
                Unstarted {
                    lease: s.lease,
                    returns: behind,
                },
            );
        }
    });
}

/// Runs one task.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Execute(pub(crate) Launch);

/// Stops the worker and its thread.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Retire;

/// Where a polling worker takes its next task without a message to its (sleeping) event loop.
struct Inbox<T> {
    state: Mutex<InboxState<T>>,
    /// Whether polling pays (tasks come that fast).
    backoff: Backoff,
}

/// `polling`: the worker looks in the inbox; `next`: the task handed to it meanwhile.
struct InboxState<T> {
    polling: bool,
    next: Option<T>,
}

impl<T> Inbox<T> {
    fn new() -> Self {
        Inbox {
            state: Mutex::new(InboxState {
                polling: false,
                next: None,
            }),
            backoff: Backoff::new(),
        }
    }

    /// Takes `item` if the worker polls and holds nothing yet; else gives it back.
    fn offer(&self, item: T) -> Option<T> {
        let mut state = self.state.lock();
        if state.polling && state.next.is_none() {
            state.next = Some(item);
            None
        } else {
            Some(item)
        }
    }

    /// The worker looks here from now on (set before the pool can hand it anything).
    fn start_polling(&self) {
        self.state.lock().polling = true;
    }

    fn has_next(&self) -> bool {
        self.state.lock().next.is_some()
    }

    /// The worker stops looking; what was handed over meanwhile.
    fn stop_polling(&self) -> Option<T> {
        let mut state = self.state.lock();
        state.polling = false;
        state.next.take()
    }
}

/// A worker, as the pool holds it: its address and its inbox.
#[derive(Clone)]
pub(crate) struct WorkerHandle {
    addr: Addr<Worker>,
    inbox: Arc<Inbox<Launch>>,
}

impl WorkerHandle {
    /// Starts a worker on its own thread.
    pub(crate) fn start(
        node: NodeId,
        net: Arc<Net>,
        home: Recipient<Finished>,
        leases: LeaseTable<WorkerHandle>,
    ) -> WorkerHandle {
        let inbox = Arc::new(Inbox::new());
        let mine = inbox.clone();
        let addr = Worker::start_in_arbiter(&Arbiter::new().handle(), move |_| Worker {
            node,
            net,
            home,
            inbox: mine,
            leases,
        });
        WorkerHandle { addr, inbox }
    }

    /// Gives the (idle) worker a task: into its inbox while it polls, else as a message.
    pub(crate) fn run(&self, launch: Launch) {
        if let Some(launch) = self.inbox.offer(launch) {
            self.addr.do_send(Execute(launch));
        }
    }

    /// Stops the worker.
    pub(crate) fn retire(&self) {
        self.addr.do_send(Retire);
    }
}

impl PartialEq for WorkerHandle {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inbox, &other.inbox)
    }
}

/// A worker thread.
pub(crate) struct Worker {
    node: NodeId,
    net: Arc<Net>,
    /// Told when a task is done (and this worker free).
    home: Recipient<Finished>,
    inbox: Arc<Inbox<Launch>>,
    /// The slots of this process leased to owners (this thread is one while its lease lasts).
    leases: LeaseTable<WorkerHandle>,
}

impl Worker {
    /// Runs a task and tells the pool (unless this thread stays leased to the task's owner);
    /// returns the next task, if one came while it polled.
    fn execute(&self, launch: Launch, me: &WorkerHandle) -> Option<Launch> {
        let Launch {
            spec,
            resolved,
            grant,
            backlog,
            under,
        } = launch;
        let span =
            tracing::debug_span!("task", task = %spec.task_id, function = %spec.function.path);
        let _enter = span.enter();
        let exec = ExecContext {
            task_id: Some(spec.task_id),
            actor_id: None,
            gpu_ids: grant.gpu_ids(),
            lends_cpu: !grant.cpu_part().is_empty(),
            holder: under,
            in_async: false,
            captured: crate::context::captured_by(&spec),
        };
        executor::started(&self.net, &spec, under);
        let queue = under.and_then(|lease| {
            let queue = self.leases.get(&lease)?.queue.clone();
            SLOT.with(|s| {
                *s.borrow_mut() = Some(CurrentSlot {
                    lease,
                    queue: queue.clone(),
                    owner: spec.owner.addr,
                    net: self.net.clone(),
                })
            });
            Some(queue)
        });
        let outcome = with_exec(exec, || invoke::run_sync(&spec, resolved, self.node));
        if queue.is_some() {
            SLOT.with(|s| s.borrow_mut().take());
        }
        let lease = executor::lease_slot(
            &self.net,
            &self.leases,
            &spec,
            under,
            &grant,
            self.node,
            || me.clone(),
        );
        let leased = lease.is_some();
        // Polling before the pool (or, for a leased slot, the owner) hears this worker is free,
        // so that the next task it hands over goes to the inbox, not to the mailbox of a
        // thread busy polling the inbox.
        let poll = (backlog || leased) && self.inbox.backoff.should_poll();
        if poll {
            self.inbox.start_polling();
        }
        executor::finish(&self.net, &spec, outcome, lease);
        // The next task its owner pushed behind this one, if any.
        if let Some(queue) = queue {
            let mut q = queue.lock();
            q.blocked = false;
            match q.tasks.pop_front() {
                Some(next) => {
                    drop(q);
                    if poll {
                        // Nothing else hands this thread work while its slot is leased.
                        let _ = self.inbox.stop_polling();
                    }
                    return Some(next);
                }
                None => q.busy = false,
            }
        }
        // A leased slot stays with its owner until the owner returns it.
        if !leased {
            self.home.do_send(Finished {
                task_id: spec.task_id,
                worker: me.clone(),
            });
        }
        if poll {
            self.next_task()
        } else {
            None
        }
    }

    /// Polls the inbox (already marked as polled) for the next task; takes it, if one came.
    fn next_task(&self) -> Option<Launch> {
        let inbox = &self.inbox;
        let came = spin::linger_if_free(LINGER, || inbox.has_next());
        let next = inbox.stop_polling();
        // A task handed over between the last look and the flag counts as a hit too.
        if came || next.is_some() {
            inbox.backoff.hit();
        } else {
            inbox.backoff.miss();
        }
        next
    }
}

impl Actor for Worker {
    type Context = Context<Self>;
}

impl Handler<Execute> for Worker {
    type Result = ();
    fn handle(&mut self, msg: Execute, ctx: &mut Context<Self>) {
        let me = WorkerHandle {
            addr: ctx.address(),
            inbox: self.inbox.clone(),
        };
        let mut next = Some(msg.0);
        while let Some(launch) = next {
            next = self.execute(launch, &me);
        }
    }
}

impl Handler<Retire> for Worker {
    type Result = ();
    fn handle(&mut self, _: Retire, ctx: &mut Context<Self>) {
        ctx.stop();
        Arbiter::current().stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_goes_to_the_inbox_only_while_the_worker_polls_and_holds_none() {
        let inbox = Inbox::new();
        assert_eq!(inbox.offer(1), Some(1), "not polling: sent as a message");
        inbox.start_polling();
        assert_eq!(inbox.offer(2), None);
        assert!(inbox.has_next());
        assert_eq!(inbox.offer(3), Some(3), "one at a time");
        assert_eq!(inbox.stop_polling(), Some(2));
        assert_eq!(inbox.offer(4), Some(4), "stopped: sent as a message");
        assert_eq!(inbox.stop_polling(), None);
    }
}
