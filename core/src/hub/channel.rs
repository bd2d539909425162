//! One channel: its replay log, its members and its presence list.

use std::collections::BTreeSet;

use super::bus::LiveBacklog;
use super::conn::ConnId;
use super::presence::Presence;
use super::route::Start;
use crate::policy::outbox::SlowConsumer;
use crate::replay::ReplayLog;

/// Where a channel's log comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Follow {
    /// This hub numbers the channel's messages (no bus).
    Local,
    /// A mirror of the bus's log that is loading: joins wait, live messages are held.
    Syncing,
    /// A mirror that is up to date with the live feed.
    Live,
    /// A mirror that missed offsets of the live feed: they are loading, later live
    /// messages are held.
    Filling,
}

#[derive(Debug)]
pub(crate) struct Channel {
    /// The key of its log-trim timer.
    pub(crate) id: u64,
    pub(crate) log: ReplayLog,
    pub(crate) policy: SlowConsumer,
    /// Ordered, so that fan-out (and the events it causes) is deterministic.
    pub(crate) members: BTreeSet<ConnId>,
    pub(crate) presence: Presence,
    pub(crate) follow: Follow,
    /// Live messages that arrived while the mirror loads.
    pub(crate) backlog: LiveBacklog,
    /// Joins waiting for the mirror: `(connection, where it starts)`.
    pub(crate) waiting: Vec<(ConnId, Start)>,
    /// Joins waiting for the application's decision (they keep the channel).
    pub(crate) asking: usize,
}

impl Channel {
    /// Whether the channel holds nothing worth keeping: no member, no presence (not even in
    /// grace) and no retained message.
    pub(crate) fn is_idle(&self) -> bool {
        self.members.is_empty()
            && self.presence.is_empty()
            && self.log.is_empty()
            && self.waiting.is_empty()
            && self.asking == 0
    }
}

/// Whether `name` can be a channel: non-empty, at most `max` bytes, no control character
/// (it becomes an SSE `event:` field and travels in URLs and JSON).
pub(crate) fn valid_name(name: &str, max: usize) -> bool {
    !name.is_empty() && name.len() <= max && !name.chars().any(char::is_control)
}

/// The policy of the first rule whose prefix starts `name`; `Disconnect` without one.
pub(crate) fn policy_for(rules: &[(String, SlowConsumer)], name: &str) -> SlowConsumer {
    rules
        .iter()
        .find(|(prefix, _)| name.starts_with(prefix.as_str()))
        .map(|&(_, p)| p)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_policies() {
        for bad in ["", "a\nb", "a\rb", "a\0", &"x".repeat(9)] {
            assert!(!valid_name(bad, 8), "{bad:?}");
        }
        assert!(valid_name("chat:é", 8));
        let rules = vec![
            ("dash:".to_owned(), SlowConsumer::Conflate),
            ("feed:".to_owned(), SlowConsumer::DropOldest),
        ];
        assert_eq!(policy_for(&rules, "dash:cpu"), SlowConsumer::Conflate);
        assert_eq!(policy_for(&rules, "feed:x"), SlowConsumer::DropOldest);
        assert_eq!(policy_for(&rules, "chat:x"), SlowConsumer::Disconnect);
    }
}
