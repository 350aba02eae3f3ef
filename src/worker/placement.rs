//! The placement groups this process created, with the state the GCS last reported for each
//! ([`GroupState`](crate::protocol::owner::GroupState) messages, sent on every change): a
//! `ready()` of a group known to be created completes here, without a round trip to the GCS.
//!
//! What it holds is never ahead of the GCS, only behind it (the reports come in order, after
//! the change): a group it calls created was created, and may have changed since, just as if
//! the GCS's answer to a question had been on its way. A group it does not know, or does not
//! know to be created, is asked about as before. Entries go when the group is removed (by this
//! process, or reported removed), so the table holds this process's live groups only.

use crate::error::Error;
use crate::ids::PlacementGroupId;
use crate::objects::codec;
use crate::placement::group::PlacementGroupState;
use crate::protocol::refs::Stored;
use dashmap::DashMap;

/// The placement groups this process created and has not seen removed.
#[derive(Debug, Default)]
pub(crate) struct CreatedGroups {
    states: DashMap<PlacementGroupId, PlacementGroupState>,
}

impl CreatedGroups {
    /// This process is creating `id` (before the request is sent, so no report can come first).
    pub(crate) fn created(&self, id: PlacementGroupId) {
        self.states.insert(id, PlacementGroupState::Pending);
    }

    /// The GCS reported a state change. A report for a group this process no longer tracks
    /// (removed here while the report was on its way) is ignored: it must not bring it back.
    pub(crate) fn reported(&self, id: PlacementGroupId, state: PlacementGroupState) {
        if state == PlacementGroupState::Removed {
            self.states.remove(&id);
        } else if let Some(mut known) = self.states.get_mut(&id) {
            *known = state;
        }
    }

    /// This process removes `id` (or failed to create it): it is not tracked any more.
    pub(crate) fn forget(&self, id: PlacementGroupId) {
        self.states.remove(&id);
    }

    /// Whether `id` is known to be created.
    pub(crate) fn is_created(&self, id: PlacementGroupId) -> bool {
        self.states
            .get(&id)
            .is_some_and(|s| *s == PlacementGroupState::Created)
    }

    /// How many groups are tracked.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.states.len()
    }
}

/// The value of a group's `ready()` object: `()` once created, or why it never will be.
pub(crate) fn ready_value(outcome: Result<(), Error>) -> Stored {
    match outcome.and_then(|()| codec::encode("()", &())) {
        Ok(enc) => Stored::Value(enc.into_parts().0),
        Err(e) => Stored::Error(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_reports_for_tracked_groups_count_and_removal_forgets() {
        let groups = CreatedGroups::default();
        let (a, b) = (PlacementGroupId::fresh(), PlacementGroupId::fresh());
        groups.created(a);
        assert!(!groups.is_created(a));
        groups.reported(a, PlacementGroupState::Created);
        assert!(groups.is_created(a));
        groups.reported(a, PlacementGroupState::Rescheduling);
        assert!(!groups.is_created(a));
        groups.reported(a, PlacementGroupState::Created);
        // Removed here while a report was on its way: the late report changes nothing.
        groups.forget(a);
        groups.reported(a, PlacementGroupState::Created);
        assert!(!groups.is_created(a));
        // A group this process did not create is never tracked.
        groups.reported(b, PlacementGroupState::Created);
        assert!(!groups.is_created(b));
        groups.created(b);
        groups.reported(b, PlacementGroupState::Created);
        groups.reported(b, PlacementGroupState::Removed);
        assert!(!groups.is_created(b));
        assert_eq!(groups.len(), 0);
    }
}
