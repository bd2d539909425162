//! The presence list of one channel: who is there, by name, with a grace period.
//!
//! A name may be held by several connections (two tabs of one user): it joins with the
//! first and leaves with the last. A connection that drops (disconnect, expiry, too slow)
//! does not leave at once: its name stays in the list, in *grace*, for the hub's
//! `presence_grace`; a connection with the same name that joins meanwhile takes it back with
//! no leave/join flicker. An explicit `unsub` leaves at once. The list is bounded: past
//! `max` names (those in grace count), a new name gets no entry (its connection is still a
//! member of the channel).

use std::collections::BTreeMap;
use std::sync::Arc;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    /// Connections holding the name.
    conns: u32,
    /// The grace timer's id while no connection holds it.
    grace: Option<u64>,
}

/// What [`Presence::arrive`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Arrival {
    /// A new name: announce a join.
    Joined,
    /// The name was held already, or was in grace (cancel this timer); nothing to announce.
    Kept(Option<u64>),
    /// The list is full: no entry.
    Full,
}

/// What [`Presence::depart`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Departure {
    /// The last holder left: announce a leave.
    Left,
    /// The last holder dropped: the name is in grace under this timer id.
    Grace(u64),
    /// Another connection still holds the name (or it had no entry).
    Stays,
}

#[derive(Debug, Default)]
pub(crate) struct Presence {
    entries: BTreeMap<Arc<str>, Entry>,
}

impl Presence {
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub(crate) fn names(&self) -> impl Iterator<Item = &Arc<str>> + '_ {
        self.entries.keys()
    }

    pub(crate) fn arrive(&mut self, name: &Arc<str>, max: usize) -> Arrival {
        if let Some(e) = self.entries.get_mut(name) {
            e.conns += 1;
            return Arrival::Kept(e.grace.take());
        }
        if self.entries.len() >= max {
            return Arrival::Full;
        }
        self.entries.insert(name.clone(), Entry { conns: 1, grace: None });
        Arrival::Joined
    }

    /// A holder of `name` went away; with `grace: Some(id)` the name lingers under that timer.
    pub(crate) fn depart(&mut self, name: &str, grace: Option<u64>) -> Departure {
        let Some(e) = self.entries.get_mut(name) else { return Departure::Stays };
        e.conns = e.conns.saturating_sub(1);
        if e.conns > 0 {
            return Departure::Stays;
        }
        match grace {
            Some(id) => {
                e.grace = Some(id);
                Departure::Grace(id)
            }
            None => {
                self.entries.remove(name);
                Departure::Left
            }
        }
    }

    /// The grace timer `id` of `name` fired: whether the name left now.
    pub(crate) fn expire(&mut self, name: &str, id: u64) -> bool {
        let due = self.entries.get(name).is_some_and(|e| e.conns == 0 && e.grace == Some(id));
        if due {
            self.entries.remove(name);
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_join_once_and_linger_in_grace() {
        let mut p = Presence::default();
        let ann: Arc<str> = Arc::from("ann");
        let bob: Arc<str> = Arc::from("bob");
        assert_eq!(p.arrive(&ann, 2), Arrival::Joined);
        assert_eq!(p.arrive(&ann, 2), Arrival::Kept(None)); // a second tab
        assert_eq!(p.depart("ann", Some(1)), Departure::Stays);
        assert_eq!(p.depart("ann", Some(1)), Departure::Grace(1));
        assert_eq!(p.arrive(&ann, 2), Arrival::Kept(Some(1))); // quick reconnect
        assert!(!p.expire("ann", 1), "a stale grace timer does nothing");
        assert_eq!(p.depart("ann", Some(2)), Departure::Grace(2));
        assert_eq!(p.arrive(&bob, 2), Arrival::Joined);
        assert_eq!(p.arrive(&Arc::from("cy"), 2), Arrival::Full, "names in grace count");
        assert!(p.expire("ann", 2));
        assert_eq!(p.names().map(|n| &**n).collect::<Vec<_>>(), ["bob"]);
        assert_eq!(p.depart("bob", None), Departure::Left);
        assert_eq!(p.depart("nobody", None), Departure::Stays);
        assert!(p.is_empty());
    }
}
