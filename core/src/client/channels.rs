//! The subscribed channels and the delivery rule: each channel keeps the position of the
//! last message delivered, and a message is delivered only if it comes after it.
//!
//! Offsets grow within an epoch, and every transport delivers one channel in order, so
//! "after" is a comparison: a message at or before the position is a duplicate or stale
//! (a replay overlapping what was already seen, a resend after a reconnect) and is dropped.
//! A new epoch is only entered through a refetch: announced (`recovered: false`, an SSE
//! `reset`, a poll body) or not (a message or cursor of another epoch), the application
//! gets one [`SessionEvent::RefetchNeeded`] for it.

use std::collections::{BTreeMap, VecDeque};

use super::types::SessionEvent;
use crate::replay::Position;
use crate::socket::SockId;
use crate::time::Instant;

#[derive(Debug, Default)]
struct Channel {
    pos: Option<Position>,
    /// The position of the last `RefetchNeeded`, so that one loss is reported once.
    refetched_at: Option<Position>,
    /// The channel's SSE stream or poll on an HTTP link.
    sock: Option<SockId>,
    /// Polling: when the next poll may start.
    next_poll: Option<Instant>,
    /// SSE: the publisher an `event: from` block named for the message at this position,
    /// which follows it.
    from: Option<(Position, String)>,
    /// HTTP transports: the server has the subscription on the current connection (its
    /// event stream's head came, or a poll was answered).
    joined: bool,
}

#[derive(Debug, Default)]
pub(crate) struct Channels {
    map: BTreeMap<String, Channel>,
    pub(crate) duplicates: u64,
}

impl Channels {
    /// Adds `ch`; `false` if it was there already.
    pub(crate) fn add(&mut self, ch: &str, pos: Option<Position>) -> bool {
        if self.map.contains_key(ch) {
            return false;
        }
        self.map.insert(ch.to_owned(), Channel { pos, ..Channel::default() });
        true
    }

    /// Removes `ch`, returning its socket (if it had one); `None` if unknown.
    pub(crate) fn remove(&mut self, ch: &str) -> Option<Option<SockId>> {
        self.map.remove(ch).map(|c| c.sock)
    }

    pub(crate) fn contains(&self, ch: &str) -> bool {
        self.map.contains_key(ch)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub(crate) fn names(&self) -> impl Iterator<Item = &str> {
        self.map.keys().map(String::as_str)
    }

    pub(crate) fn position(&self, ch: &str) -> Option<Position> {
        self.map.get(ch).and_then(|c| c.pos)
    }

    pub(crate) fn socket(&self, ch: &str) -> Option<SockId> {
        self.map.get(ch).and_then(|c| c.sock)
    }

    pub(crate) fn set_socket(&mut self, ch: &str, sock: Option<SockId>) {
        if let Some(c) = self.map.get_mut(ch) {
            c.sock = sock;
            c.next_poll = None;
        }
    }

    pub(crate) fn clear_sockets(&mut self) {
        for c in self.map.values_mut() {
            c.sock = None;
            c.next_poll = None;
            c.joined = false;
        }
    }

    /// HTTP transports: the server answered `ch`'s poll or started its event stream, so
    /// it has the subscription.
    pub(crate) fn set_joined(&mut self, ch: &str) {
        if let Some(c) = self.map.get_mut(ch) {
            c.joined = true;
        }
    }

    /// HTTP transports: `ch` is subscribed, has no position and the server does not have
    /// its subscription yet. Its first poll or stream starts at the head as it is when the
    /// request arrives, so a publish sent meanwhile on its own connection may be logged
    /// before that and never come back.
    pub(crate) fn joining(&self, ch: &str) -> bool {
        self.map.get(ch).is_some_and(|c| c.pos.is_none() && !c.joined)
    }

    pub(crate) fn clear_polls(&mut self) {
        for c in self.map.values_mut() {
            c.next_poll = None;
        }
    }

    pub(crate) fn schedule_poll(&mut self, ch: &str, at: Instant) {
        if let Some(c) = self.map.get_mut(ch) {
            c.next_poll = Some(at);
        }
    }

    pub(crate) fn next_poll(&self) -> Option<Instant> {
        self.map.values().filter_map(|c| c.next_poll).min()
    }

    /// The channels whose next poll is due; their schedule is cleared.
    pub(crate) fn polls_due(&mut self, now: Instant) -> Vec<String> {
        let mut due = Vec::new();
        for (name, c) in &mut self.map {
            if c.next_poll.is_some_and(|at| at <= now) {
                c.next_poll = None;
                due.push(name.clone());
            }
        }
        due
    }

    /// SSE: `from` published the message of `ch` at `pos`, which comes next.
    pub(crate) fn announce_from(&mut self, ch: &str, pos: Position, from: String) {
        if let Some(c) = self.map.get_mut(ch) {
            c.from = Some((pos, from));
        }
    }

    /// SSE: the publisher announced for the message of `ch` at `pos` (forgotten either way).
    pub(crate) fn take_from(&mut self, ch: &str, pos: Position) -> Option<String> {
        let c = self.map.get_mut(ch)?;
        c.from.take().filter(|(p, _)| *p == pos).map(|(_, f)| f)
    }

    /// Delivers a message (published by `from`) unless it is a duplicate or stale.
    pub(crate) fn deliver(
        &mut self,
        events: &mut VecDeque<SessionEvent>,
        ch: &str,
        pos: Position,
        from: Option<String>,
        data: String,
    ) {
        let Some(c) = self.map.get_mut(ch) else { return };
        // Offset 0 is the start of an epoch, never a message: a server that sends one is
        // wrong, and "refetch, then what follows 0" could not be kept.
        if pos.offset == 0 {
            self.duplicates += 1;
            return;
        }
        match c.pos {
            Some(cur) if cur.epoch == pos.epoch && pos.offset <= cur.offset => {
                self.duplicates += 1;
                return;
            }
            Some(cur) if cur.epoch == pos.epoch => {}
            Some(_) => {
                // Another epoch without a word from the server: what came before this
                // message in its epoch is unknown here.
                let at = Position { epoch: pos.epoch, offset: pos.offset.saturating_sub(1) };
                Self::report(c, events, ch, at);
            }
            None => {}
        }
        c.pos = Some(pos);
        events.push_back(SessionEvent::Message { ch: ch.to_owned(), pos, from, data });
    }

    /// The server says the history is gone: refetch, then continue from `pos`.
    pub(crate) fn refetch(&mut self, events: &mut VecDeque<SessionEvent>, ch: &str, pos: Position) {
        if let Some(c) = self.map.get_mut(ch) {
            // Moving the cursor is news even to a position reported before: what was
            // delivered since then comes again, so the application must hear of it.
            if c.pos != Some(pos) {
                c.refetched_at = None;
            }
            c.pos = Some(pos);
            Self::report(c, events, ch, pos);
        }
    }

    fn report(c: &mut Channel, events: &mut VecDeque<SessionEvent>, ch: &str, pos: Position) {
        if c.refetched_at != Some(pos) {
            c.refetched_at = Some(pos);
            events.push_back(SessionEvent::RefetchNeeded { ch: ch.to_owned(), pos });
        }
    }

    /// A position the server gave without a message (a fresh subscription's head).
    pub(crate) fn adopt_if_unknown(&mut self, ch: &str, pos: Position) {
        if let Some(c) = self.map.get_mut(ch)
            && c.pos.is_none()
        {
            c.pos = Some(pos);
        }
    }

    /// A cursor move without a message (an SSE id-only block, a poll's `pos`): adopted when
    /// unknown or ahead in the same epoch; another epoch means the history is gone.
    pub(crate) fn cursor(&mut self, events: &mut VecDeque<SessionEvent>, ch: &str, pos: Position) {
        let Some(c) = self.map.get_mut(ch) else { return };
        match c.pos {
            None => c.pos = Some(pos),
            Some(cur) if cur.epoch == pos.epoch => {
                if pos.offset > cur.offset {
                    c.pos = Some(pos);
                }
            }
            Some(_) => self.refetch(events, ch, pos),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Position {
        s.parse().unwrap()
    }

    fn kinds(events: &VecDeque<SessionEvent>) -> Vec<String> {
        events
            .iter()
            .map(|e| match e {
                SessionEvent::Message { pos, .. } => format!("m{pos}"),
                SessionEvent::RefetchNeeded { pos, .. } => format!("r{pos}"),
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn drops_duplicates_and_stale_and_refetches_once_per_loss() {
        let mut c = Channels::default();
        let mut ev = VecDeque::new();
        assert!(c.add("a", None));
        assert!(!c.add("a", None));
        for s in ["a1:1", "a1:2", "a1:2", "a1:1", "a1:4"] {
            c.deliver(&mut ev, "a", p(s), None, "x".into());
        }
        assert_eq!(c.duplicates, 2);
        c.refetch(&mut ev, "a", p("b2:9"));
        c.refetch(&mut ev, "a", p("b2:9"));
        c.deliver(&mut ev, "a", p("b2:9"), None, "x".into());
        c.deliver(&mut ev, "a", p("b2:10"), None, "x".into());
        // An unannounced epoch: one refetch, then the message.
        c.deliver(&mut ev, "a", p("c3:5"), None, "x".into());
        c.cursor(&mut ev, "a", p("c3:4"));
        c.cursor(&mut ev, "a", p("c3:7"));
        assert_eq!(c.position("a"), Some(p("c3:7")));
        c.cursor(&mut ev, "a", p("d4:1"));
        c.deliver(&mut ev, "unknown", p("a1:1"), None, "x".into());
        assert_eq!(
            kinds(&ev),
            ["ma1:1", "ma1:2", "ma1:4", "rb2:9", "mb2:10", "rc3:4", "mc3:5", "rd4:1"]
        );
    }

    /// Fuzz regression (`client_session`): a second `subscribed{recovered:false}` at the
    /// position of the first moved the cursor back without a `RefetchNeeded`, so a1:5 was
    /// delivered twice as if nothing had happened.
    #[test]
    fn a_refetch_that_moves_the_cursor_back_is_reported_again() {
        let mut c = Channels::default();
        let mut ev = VecDeque::new();
        c.add("a", None);
        c.refetch(&mut ev, "a", p("a1:4"));
        c.deliver(&mut ev, "a", p("a1:5"), None, "x".into());
        c.refetch(&mut ev, "a", p("a1:4"));
        c.deliver(&mut ev, "a", p("a1:5"), None, "x".into());
        assert_eq!(kinds(&ev), ["ra1:4", "ma1:5", "ra1:4", "ma1:5"]);
    }

    /// Fuzz regression (`client_session`): a message at offset 0 of another epoch was
    /// delivered right after `RefetchNeeded` at that same position ("what follows a1:0").
    #[test]
    fn a_message_at_offset_zero_is_never_delivered() {
        let mut c = Channels::default();
        let mut ev = VecDeque::new();
        c.add("a", Some(p("b2:13")));
        c.deliver(&mut ev, "a", p("a1:0"), None, "x".into());
        assert_eq!(kinds(&ev), Vec::<String>::new());
        assert_eq!((c.duplicates, c.position("a")), (1, Some(p("b2:13"))));
        c.deliver(&mut ev, "a", p("a1:1"), None, "x".into());
        assert_eq!(kinds(&ev), ["ra1:0", "ma1:1"]);
    }
}
