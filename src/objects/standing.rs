//! A `wait` loop's registrations, kept from one call to the next.
//!
//! The usual way to drain results is a loop that waits for one ref at a time and passes what is
//! left to the next call (`(ready, rest) = wait(&rest, 1, None)`). A `wait` that has to block
//! registers with every pending object of its list, so such a loop did work in proportion to
//! the whole list at every call that blocked: registering, then sweeping the registrations
//! left behind. A [`Standing`] wait registers once, for readiness only, and is reused while
//! each call's list is the previous list with refs taken out (in the same order): each call
//! then only takes the arrivals that came since the last one.

use crate::ids::ObjectId;
use crate::objects::object_ref::ObjectRef;
use crate::objects::ownership::{Lookup, RefCounts};
use crate::objects::reply::{self, Arrivals};

/// Registrations for readiness with every object of a list owned by this process.
pub(crate) struct Standing {
    /// The objects of the list it registered for, in its order (a slot is an index here).
    ids: Vec<ObjectId>,
    /// Which slots are known to be ready (present or failed).
    ready: Vec<bool>,
    /// Where the owner's table says that a registered object is ready.
    arrivals: Arrivals,
}

/// Why a standing wait can go on no longer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Gone;

impl Standing {
    /// Registers this thread for readiness with every object of `refs`; `None` when one of
    /// them is not pending or ready in this process's table (owned elsewhere, in the store, or
    /// unknown), which a standing wait cannot follow. Registrations made before that are
    /// dropped with the channel.
    pub(crate) fn register<T>(table: &RefCounts, refs: &[ObjectRef<T>]) -> Option<Standing> {
        let (tx, arrivals) = reply::readiness_for_this_thread();
        let mut ready = vec![false; refs.len()];
        for (slot, r) in refs.iter().enumerate() {
            match table.lookup_or_wait(r.id(), slot as u32, &tx, false) {
                Lookup::Ready(_) => ready[slot] = true,
                Lookup::Waiting => {}
                Lookup::Elsewhere | Lookup::Unknown => return None,
            }
        }
        Some(Standing {
            ids: refs.iter().map(ObjectRef::id).collect(),
            ready,
            arrivals,
        })
    }

    /// The slot of each of `refs` when they are this wait's list with some taken out, in the
    /// same order (each call of a wait loop passes what the last one left); `None` otherwise.
    pub(crate) fn slots_of<T>(&self, refs: &[ObjectRef<T>]) -> Option<Vec<u32>> {
        if refs.len() > self.ids.len() {
            return None;
        }
        let mut slots = Vec::with_capacity(refs.len());
        let mut next = 0;
        for r in refs {
            let id = r.id();
            let at = self.ids[next..].iter().position(|x| *x == id)?;
            slots.push((next + at) as u32);
            next += at + 1;
        }
        Some(slots)
    }

    /// Takes what has arrived; `Err` when no arrival can come any more (the table let go of
    /// every registration: the runtime shut down) while some slot is still not ready.
    pub(crate) fn take_arrivals(&mut self) -> Result<(), Gone> {
        loop {
            match self.arrivals.rx().try_recv() {
                Ok(arrival) => self.note(arrival),
                Err(flume::TryRecvError::Empty) => return Ok(()),
                Err(flume::TryRecvError::Disconnected) => {
                    return if self.ready.iter().all(|r| *r) {
                        Ok(())
                    } else {
                        Err(Gone)
                    };
                }
            }
        }
    }

    /// Takes one arrival (polled off [`arrivals`](Self::arrivals) by the caller).
    pub(crate) fn note(&mut self, (slot, _): reply::Arrival) {
        if let Some(r) = self.ready.get_mut(slot as usize) {
            *r = true;
        }
    }

    /// Whether the object in `slot` is known to be ready.
    pub(crate) fn is_ready(&self, slot: u32) -> bool {
        self.ready.get(slot as usize).copied().unwrap_or(false)
    }

    /// The channel arrivals come on (to poll it, or sleep on it).
    pub(crate) fn arrivals(&self) -> &Arrivals {
        &self.arrivals
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{NodeId, WorkerId};
    use crate::protocol::refs::{OwnerAddress, RawRef, Stored};
    use std::net::SocketAddr;

    fn here() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 1))
    }

    /// `n` refs pending in `t`.
    fn pending(t: &RefCounts, n: usize) -> Vec<ObjectRef<u8>> {
        (0..n)
            .map(|_| {
                let id = ObjectId::for_put();
                t.add_pending(id, None);
                ObjectRef::adopt(RawRef {
                    id,
                    owner: OwnerAddress {
                        worker: WorkerId(1 << 16),
                        node: NodeId(1 << 16),
                        addr: here(),
                    },
                })
            })
            .collect()
    }

    fn value() -> Stored {
        Stored::Value(bytes::Bytes::from_static(b"v"))
    }

    #[test]
    fn a_shrunk_list_maps_to_its_slots_and_others_do_not() {
        let t = RefCounts::new(here());
        let refs = pending(&t, 5);
        let s = Standing::register(&t, &refs).expect("all pending here");
        let rest = [refs[0].clone(), refs[2].clone(), refs[4].clone()];
        assert_eq!(s.slots_of(&rest), Some(vec![0, 2, 4]));
        assert_eq!(s.slots_of::<u8>(&[]), Some(vec![]));
        // Another order, a ref it never registered, a longer list: not this wait's list.
        assert_eq!(s.slots_of(&[refs[2].clone(), refs[0].clone()]), None);
        let other = pending(&t, 1);
        assert_eq!(s.slots_of(&[refs[1].clone(), other[0].clone()]), None);
        let longer: Vec<_> = refs.iter().chain(&refs).cloned().collect();
        assert_eq!(s.slots_of(&longer), None);
    }

    #[test]
    fn completions_after_registering_arrive_without_their_values() {
        let t = RefCounts::new(here());
        let refs = pending(&t, 3);
        let done = t.complete(refs[0].id(), value(), Vec::new());
        assert!(done.waiters.is_empty());
        let mut s = Standing::register(&t, &refs).expect("all here");
        assert!(s.is_ready(0), "ready before registering");
        let done = t.complete(refs[2].id(), value(), Vec::new());
        assert_eq!(done.waiters.len(), 1);
        for (slot, tx, v) in done.waiters {
            assert_eq!(v.size(), 0, "a readiness wait is handed no value");
            tx.send((slot, v)).expect("the wait is there");
        }
        s.take_arrivals().expect("registrations are live");
        assert_eq!((s.is_ready(1), s.is_ready(2)), (false, true));
    }

    #[test]
    fn a_list_with_an_object_it_cannot_follow_is_refused() {
        let t = RefCounts::new(here());
        let mut refs = pending(&t, 2);
        // Known to no table.
        refs.extend(pending(&RefCounts::new(here()), 1));
        assert!(Standing::register(&t, &refs).is_none());
    }

    #[test]
    fn a_table_that_lets_go_ends_the_wait() {
        let t = RefCounts::new(here());
        let refs = pending(&t, 2);
        let mut s = Standing::register(&t, &refs).expect("all here");
        t.drop_waiters();
        assert_eq!(s.take_arrivals(), Err(Gone));
    }
}
