//! The caller's side of one actor, as a pure state machine: where the actor is, which calls wait
//! for it, which are in flight, and their sequence numbers.
//!
//! Per actor: `Pending` (calls queue while the actor is being created or restarted), `Alive`
//! (calls go straight to its host process), or `Dead` (calls fail at once with the reason). Calls
//! from this caller are numbered from 0 in submission order; each carries, besides its number,
//! the lowest number still awaiting an answer (`skip_to`), so that a host meeting this caller
//! for the first time (a new incarnation, after a restart) knows where its sequence starts and
//! that nothing before it will come. Events come in (a call submitted, the GCS's news of the
//! actor, a result, a lost process) and [`Step`]s go out (send this call there, fail that one,
//! ask the GCS where the actor is).

use crate::error::Error;
use crate::ids::ObjectId;
use smallvec::SmallVec;
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;

/// What the caller must do. `P` is what a call holds until it is answered (the pins of its
/// arguments), handed back when it fails.
#[derive(Debug, PartialEq)]
pub(crate) enum Step<C, P> {
    /// Send the call, numbered `seq`, to the host process `to`.
    Send {
        to: SocketAddr,
        call: C,
        seq: u64,
        skip_to: u64,
    },
    /// The call fails with this error.
    Fail(C, P, Error),
    /// A call already sent fails (its result object gets the error).
    FailSent(ObjectId, P, Error),
    /// Ask the GCS where the actor is, newer than incarnation `after`.
    Watch { after: Option<u32> },
}

/// The steps of one event: most events make at most one, kept without an allocation.
pub(crate) type Steps<C, P> = SmallVec<[Step<C, P>; 1]>;

#[derive(Debug)]
enum State<C, P> {
    Pending(VecDeque<(C, ObjectId, P)>),
    Alive(SocketAddr),
    Dead(Error),
}

/// A call sent and not answered.
#[derive(Debug)]
struct Sent<P> {
    return_id: ObjectId,
    to: SocketAddr,
    held: P,
}

/// The caller's side of one actor.
#[derive(Debug)]
pub(crate) struct ActorCaller<C, P> {
    state: State<C, P>,
    incarnation: Option<u32>,
    watching: bool,
    next_seq: u64,
    /// Calls sent, numbered from `first`: `None` once answered (or failed). The front is always
    /// a call still awaiting its answer, so `first` is the lowest such number.
    in_flight: VecDeque<Option<Sent<P>>>,
    first: u64,
}

impl<C, P> Default for ActorCaller<C, P> {
    fn default() -> Self {
        ActorCaller {
            state: State::Pending(VecDeque::new()),
            incarnation: None,
            watching: false,
            next_seq: 0,
            in_flight: VecDeque::new(),
            first: 0,
        }
    }
}

impl<C, P> ActorCaller<C, P> {
    /// Drops answered calls from the front, so that `first` is the lowest number still
    /// awaiting an answer (or the next number, when none is).
    fn trim(&mut self) {
        while let Some(None) = self.in_flight.front() {
            self.in_flight.pop_front();
            self.first += 1;
        }
        if self.in_flight.is_empty() {
            self.first = self.next_seq;
        }
    }

    /// Every call in flight, in order; none is left.
    fn take_in_flight(&mut self) -> impl Iterator<Item = Sent<P>> {
        let all = std::mem::take(&mut self.in_flight);
        self.first = self.next_seq;
        all.into_iter().flatten()
    }

    fn send(&mut self, to: SocketAddr, call: C, return_id: ObjectId, held: P) -> Step<C, P> {
        let seq = self.next_seq;
        self.next_seq += 1;
        if self.in_flight.is_empty() {
            self.first = seq;
        }
        self.in_flight.push_back(Some(Sent {
            return_id,
            to,
            held,
        }));
        Step::Send {
            to,
            call,
            seq,
            skip_to: self.first,
        }
    }

    fn watch(&mut self, out: &mut Steps<C, P>) {
        if !self.watching {
            self.watching = true;
            out.push(Step::Watch {
                after: self.incarnation,
            });
        }
    }

    /// This process created the actor: find out where it is.
    pub(crate) fn created(&mut self) -> Steps<C, P> {
        let mut out = Steps::new();
        if matches!(self.state, State::Pending(_)) {
            self.watch(&mut out);
        }
        out
    }

    /// A call is submitted (`return_id` names its result; `held` is kept until it is
    /// answered).
    pub(crate) fn submit(&mut self, call: C, return_id: ObjectId, held: P) -> Steps<C, P> {
        let mut out = Steps::new();
        match &mut self.state {
            State::Alive(to) => {
                let to = *to;
                out.push(self.send(to, call, return_id, held));
            }
            State::Dead(e) => out.push(Step::Fail(call, held, e.clone())),
            State::Pending(q) => {
                q.push_back((call, return_id, held));
                self.watch(&mut out);
            }
        }
        out
    }

    /// The GCS says the actor is alive in the process `at` (incarnation `incarnation`): queued
    /// calls go there, in order.
    pub(crate) fn alive(&mut self, at: SocketAddr, incarnation: u32) -> Steps<C, P> {
        self.watching = false;
        let mut out = Steps::new();
        if matches!(self.state, State::Dead(_)) {
            return out;
        }
        let queued = match std::mem::replace(&mut self.state, State::Alive(at)) {
            State::Pending(q) => q,
            _ => VecDeque::new(),
        };
        self.incarnation = Some(incarnation);
        for (call, id, held) in queued {
            out.push(self.send(at, call, id, held));
        }
        out
    }

    /// The actor is dead for good: queued and sent calls fail, and so will later ones.
    pub(crate) fn dead(&mut self, error: Error) -> Steps<C, P> {
        self.watching = false;
        let mut out = Steps::new();
        if let State::Pending(q) = std::mem::replace(&mut self.state, State::Dead(error.clone())) {
            out.extend(
                q.into_iter()
                    .map(|(c, _, held)| Step::Fail(c, held, error.clone())),
            );
        }
        out.extend(
            self.take_in_flight()
                .map(|s| Step::FailSent(s.return_id, s.held, error.clone())),
        );
        out
    }

    /// The actor's process died and it is being restarted: calls sent to it fail; new calls
    /// wait for the next incarnation.
    pub(crate) fn restarting(&mut self, error: Error) -> Steps<C, P> {
        if matches!(self.state, State::Alive(_)) {
            self.state = State::Pending(VecDeque::new());
        }
        self.take_in_flight()
            .map(|s| Step::FailSent(s.return_id, s.held, error.clone()))
            .collect()
    }

    /// The connection to the process `host` was lost: calls sent there fail, and the actor, if
    /// it lived there, is looked up again at the next call.
    pub(crate) fn host_lost(&mut self, host: SocketAddr, error: &Error) -> Steps<C, P> {
        if matches!(self.state, State::Alive(at) if at == host) {
            self.state = State::Pending(VecDeque::new());
        }
        let mut out = Steps::new();
        for slot in self.in_flight.iter_mut() {
            if slot.as_ref().is_some_and(|s| s.to == host) {
                if let Some(s) = slot.take() {
                    out.push(Step::FailSent(s.return_id, s.held, error.clone()));
                }
            }
        }
        self.trim();
        out
    }

    /// A call's result arrived: what it held, or `None` if it was not in flight (already
    /// failed, or not a call of this caller's).
    pub(crate) fn answered(&mut self, return_id: ObjectId) -> Option<P> {
        // Answers come mostly in order: the oldest call in flight first.
        let slot = self
            .in_flight
            .iter_mut()
            .find(|s| s.as_ref().is_some_and(|s| s.return_id == return_id))?;
        let held = slot.take().map(|s| s.held);
        self.trim();
        held
    }

    /// Whether the actor is known dead.
    pub(crate) fn is_dead(&self) -> bool {
        matches!(self.state, State::Dead(_))
    }

    /// Whether nothing waits or is in flight (the entry can be forgotten if the actor is dead).
    pub(crate) fn is_idle(&self) -> bool {
        self.in_flight.is_empty() && !matches!(&self.state, State::Pending(q) if !q.is_empty())
    }
}

/// The host's side: the calls of each caller of one actor incarnation, delivered in their
/// callers' order.
#[derive(Debug)]
pub(crate) struct Ordering<C> {
    callers: std::collections::HashMap<SocketAddr, CallerQueue<C>>,
}

#[derive(Debug)]
struct CallerQueue<C> {
    expected: u64,
    early: BTreeMap<u64, C>,
}

impl<C> Default for Ordering<C> {
    fn default() -> Self {
        Ordering {
            callers: std::collections::HashMap::new(),
        }
    }
}

impl<C> Ordering<C> {
    /// A call from `caller` numbered `seq` arrives (`skip_to`: nothing below it will come);
    /// returns the calls now deliverable, in order. A number already delivered is refused (given
    /// back as `Err`): the host fails it rather than run it twice.
    pub(crate) fn arrive(
        &mut self,
        caller: SocketAddr,
        seq: u64,
        skip_to: u64,
        call: C,
    ) -> Result<Vec<C>, C> {
        let q = self.callers.entry(caller).or_insert(CallerQueue {
            expected: skip_to,
            early: BTreeMap::new(),
        });
        if skip_to > q.expected {
            // Calls before skip_to were answered (failed) without reaching this host.
            q.expected = skip_to;
        }
        if seq < q.expected || q.early.contains_key(&seq) {
            return Err(call);
        }
        if seq == q.expected && q.early.is_empty() {
            // In order, nothing waiting: the common case, without touching the map.
            q.expected += 1;
            return Ok(vec![call]);
        }
        q.early.insert(seq, call);
        let mut out = Vec::new();
        while let Some(c) = q.early.remove(&q.expected) {
            out.push(c);
            q.expected += 1;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn rid(i: u64) -> ObjectId {
        ObjectId((i as u128) << 16)
    }

    fn sends(steps: &[Step<u64, ()>]) -> Vec<(u64, u64, u64)> {
        steps
            .iter()
            .filter_map(|s| match s {
                Step::Send {
                    call, seq, skip_to, ..
                } => Some((*call, *seq, *skip_to)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn calls_queue_while_pending_and_leave_in_order_once_alive() {
        let mut c: ActorCaller<u64, ()> = ActorCaller::default();
        assert_eq!(c.created().as_slice(), [Step::Watch { after: None }]);
        assert!(c.submit(1, rid(1), ()).is_empty(), "already watching");
        assert!(c.submit(2, rid(2), ()).is_empty());
        let out = c.alive(addr(5), 0);
        assert_eq!(sends(&out), vec![(1, 0, 0), (2, 1, 0)]);
        assert_eq!(sends(&c.submit(3, rid(3), ())), vec![(3, 2, 0)]);
        c.answered(rid(1));
        c.answered(rid(2));
        assert_eq!(sends(&c.submit(4, rid(4), ())), vec![(4, 3, 2)]);
    }

    #[test]
    fn a_restart_fails_calls_in_flight_and_renumbers_from_what_is_answered() {
        let mut c: ActorCaller<u64, ()> = ActorCaller::default();
        c.created();
        c.alive(addr(5), 0);
        c.submit(1, rid(1), ());
        c.submit(2, rid(2), ());
        let died = Error::invalid("process died");
        let out = c.restarting(died.clone());
        assert_eq!(
            out.into_vec(),
            vec![
                Step::FailSent(rid(1), (), died.clone()),
                Step::FailSent(rid(2), (), died)
            ]
        );
        assert_eq!(
            c.submit(3, rid(3), ()).as_slice(),
            [Step::Watch { after: Some(0) }]
        );
        let out = c.alive(addr(6), 1);
        // Numbering goes on; the new host learns nothing below 2 will come.
        assert_eq!(sends(&out), vec![(3, 2, 2)]);
        let mut host: Ordering<u64> = Ordering::default();
        assert_eq!(host.arrive(addr(1), 2, 2, 3), Ok(vec![3]));
    }

    #[test]
    fn answers_out_of_order_give_back_what_each_call_held() {
        let mut c: ActorCaller<u64, &str> = ActorCaller::default();
        c.created();
        c.alive(addr(5), 0);
        for (i, held) in ["p0", "p1", "p2"].into_iter().enumerate() {
            c.submit(i as u64, rid(i as u64), held);
        }
        assert_eq!(c.answered(rid(1)), Some("p1"));
        assert_eq!(c.answered(rid(1)), None, "answered once");
        assert_eq!(c.answered(rid(9)), None, "not a call of this caller's");
        let skip = |s: &Steps<u64, &str>| match &s[0] {
            Step::Send { skip_to, .. } => *skip_to,
            _ => panic!("not sent"),
        };
        assert_eq!(skip(&c.submit(3, rid(3), "p3")), 0, "call 0 still awaits");
        assert_eq!(c.answered(rid(0)), Some("p0"));
        assert_eq!(skip(&c.submit(4, rid(4), "p4")), 2, "0 and 1 are answered");
        let e = Error::invalid("gone");
        let failed: Vec<_> = c.dead(e.clone()).into_iter().collect();
        assert_eq!(
            failed,
            vec![
                Step::FailSent(rid(2), "p2", e.clone()),
                Step::FailSent(rid(3), "p3", e.clone()),
                Step::FailSent(rid(4), "p4", e),
            ]
        );
        assert!(c.is_idle());
    }

    #[test]
    fn death_fails_everything_now_and_later() {
        let mut c: ActorCaller<u64, ()> = ActorCaller::default();
        c.created();
        c.submit(1, rid(1), ());
        let e = Error::invalid("killed");
        assert_eq!(c.dead(e.clone()).as_slice(), [Step::Fail(1, (), e.clone())]);
        assert_eq!(
            c.submit(2, rid(2), ()).as_slice(),
            [Step::Fail(2, (), e.clone())]
        );
        assert!(c.alive(addr(5), 0).is_empty(), "the dead stay dead");
        assert!(c.is_dead() && c.is_idle());
    }

    #[test]
    fn a_lost_host_fails_only_the_calls_sent_there() {
        let mut c: ActorCaller<u64, ()> = ActorCaller::default();
        c.created();
        c.alive(addr(5), 0);
        c.submit(1, rid(1), ());
        let e = Error::invalid("gone");
        assert!(c.host_lost(addr(9), &e).is_empty());
        assert_eq!(
            c.host_lost(addr(5), &e).as_slice(),
            [Step::FailSent(rid(1), (), e)]
        );
        assert_eq!(
            c.submit(2, rid(2), ()).as_slice(),
            [Step::Watch { after: Some(0) }]
        );
    }

    #[test]
    fn the_host_delivers_each_callers_calls_in_order_once() {
        let mut o: Ordering<&str> = Ordering::default();
        assert_eq!(o.arrive(addr(1), 0, 0, "a0"), Ok(vec!["a0"]));
        assert_eq!(o.arrive(addr(1), 2, 1, "a2"), Ok(vec![]), "waits for 1");
        assert_eq!(
            o.arrive(addr(2), 5, 5, "b5"),
            Ok(vec!["b5"]),
            "another caller"
        );
        assert_eq!(o.arrive(addr(1), 1, 1, "a1"), Ok(vec!["a1", "a2"]));
        assert_eq!(
            o.arrive(addr(1), 1, 1, "dup"),
            Err("dup"),
            "a duplicate is refused"
        );
        // Calls 3 and 4 failed at the caller: skip_to says so, and 5 goes at once.
        assert_eq!(o.arrive(addr(1), 5, 5, "a5"), Ok(vec!["a5"]));
    }

    /// A caller and two host incarnations wired by hand, with the directory's news: calls
    /// before, during and after a restart arrive in order, exactly once or failed.
    #[test]
    fn simulated_restart_keeps_order_and_loses_nothing_silently() {
        let mut caller: ActorCaller<u64, ()> = ActorCaller::default();
        let mut hosts: Vec<(SocketAddr, Ordering<u64>, Vec<u64>)> = vec![
            (addr(10), Ordering::default(), Vec::new()),
            (addr(11), Ordering::default(), Vec::new()),
        ];
        let mut failed = Vec::new();
        let me = addr(1);
        let run = |steps: Steps<u64, ()>,
                   hosts: &mut Vec<(SocketAddr, Ordering<u64>, Vec<u64>)>,
                   failed: &mut Vec<ObjectId>| {
            for s in steps {
                match s {
                    Step::Send {
                        to,
                        call,
                        seq,
                        skip_to,
                    } => {
                        let h = hosts.iter_mut().find(|h| h.0 == to).unwrap();
                        let ready = h.1.arrive(me, seq, skip_to, call).expect("in order");
                        h.2.extend(ready);
                    }
                    Step::FailSent(id, _, _) => failed.push(id),
                    Step::Fail(c, _, _) => failed.push(rid(c)),
                    Step::Watch { .. } => {}
                }
            }
        };
        run(caller.created(), &mut hosts, &mut failed);
        for i in 0..3 {
            let s = caller.submit(i, rid(i), ());
            run(s, &mut hosts, &mut failed);
        }
        let s = caller.alive(addr(10), 0);
        run(s, &mut hosts, &mut failed);
        caller.answered(rid(0));
        // Calls 1 and 2 are in flight when the host dies.
        let s = caller.restarting(Error::invalid("died"));
        run(s, &mut hosts, &mut failed);
        for i in 3..6 {
            let s = caller.submit(i, rid(i), ());
            run(s, &mut hosts, &mut failed);
        }
        let s = caller.alive(addr(11), 1);
        run(s, &mut hosts, &mut failed);
        assert_eq!(hosts[0].2, vec![0, 1, 2]);
        assert_eq!(
            hosts[1].2,
            vec![3, 4, 5],
            "the new incarnation starts where it should"
        );
        assert_eq!(failed, vec![rid(1), rid(2)]);
    }
}
