//! Deferred joins: a policy that cannot answer a join inline (it needs a database or
//! another service) answers [`JoinVerdict::Defer`](super::JoinVerdict::Defer) from
//! [`Authorize::join_verdict`](super::Authorize::join_verdict), and the application
//! decides later.
//!
//! The hub holds the join (nothing is queued for it, the connection is no member yet),
//! emits [`HubEvent::JoinRequested`] and waits for [`Hub::decide_join`] with a
//! [`JoinDecision`]:
//!
//! - `Allow`: the join is made as a synchronous allow makes it (`subscribed`, the replay,
//!   presence), from the position the client brought; a client that brought none starts
//!   at the head *as it was when it asked*, so what was published meanwhile reaches it
//!   once, after the join, by the log;
//! - `Refuse { code }`: the client gets `err` with its `sub`'s `ref` and `code` (SSE and
//!   polls through the server: `403`).
//!
//! Bounded: at most [`max_pending_joins_per_conn`](super::HubConfig::max_pending_joins_per_conn)
//! per connection and [`max_pending_joins`](super::HubConfig::max_pending_joins) in all (past
//! either, `too_many_pending` at once); a pending join counts toward the connection's
//! channels; each waits at most [`join_timeout`](super::HubConfig::join_timeout), then is
//! refused with code `join_timeout`. An `unsub` of the channel, or the connection leaving,
//! cancels it. A `sub` of a channel whose join is pending is answered by that join's
//! decision. Every pending join ends with exactly one [`HubEvent::JoinDecided`].
//!
//! With a bus, a join may also wait for the channel's log to load
//! ([`Subscription::pending`]); the two waits compose in either order. Allowed before the
//! log loaded, the join is made once it has (its [`HubEvent::JoinDecided`] carries a
//! subscription that is still `pending`); asked while the log loads and allowed after, a
//! client that brought no position starts at the head the log loaded at. A refusal, the
//! timeout, an `unsub` or the connection leaving, before or after the log loaded, leave
//! nothing behind (a channel nobody else holds is no longer followed).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::channel::Follow;
use super::conn::{ConnId, Transport};
use super::route::Start;
use super::{Hub, HubError, HubEvent, Subscription, Timer};
use crate::replay::{Epoch, Position, ReplayLog};
use crate::time::Instant;

/// Names a join waiting for the application's decision. How deferred joins work: the
/// [`JoinVerdict::Defer`](super::JoinVerdict::Defer) of
/// [`Authorize::join_verdict`](super::Authorize::join_verdict) holds the join and emits
/// [`HubEvent::JoinRequested`]; [`Hub::decide_join`] answers it, within
/// [`join_timeout`](super::HubConfig::join_timeout) (then it is refused with
/// `join_timeout`); an `unsub` or the connection leaving cancels it; each ends with one
/// [`HubEvent::JoinDecided`]. Bounded per connection and in all
/// ([`max_pending_joins_per_conn`](super::HubConfig::max_pending_joins_per_conn),
/// [`max_pending_joins`](super::HubConfig::max_pending_joins)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JoinId(pub u64);

/// The application's answer to [`HubEvent::JoinRequested`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum JoinDecision {
    /// It joins, as a synchronous allow would have let it.
    Allow,
    /// It does not join; the client gets `err` with this code (SSE and polls: `403`).
    Refuse {
        /// A stable machine-readable code, e.g. `"forbidden"`.
        code: String,
    },
}

impl JoinDecision {
    /// The refusal a synchronous policy gives: code `forbidden`.
    #[must_use]
    pub fn forbidden() -> Self {
        Self::Refuse { code: "forbidden".to_owned() }
    }
}

/// Why a join that waited for the application did not happen.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum JoinRefusal {
    /// The application refused it with this code.
    Refused {
        /// The application's code.
        code: String,
    },
    /// The application did not answer within `join_timeout` (code `join_timeout`).
    Timeout,
    /// An `unsub` of the channel, or the connection left, before the decision (code
    /// `join_cancelled`; nothing is sent).
    Cancelled,
    /// The join failed after the allow (e.g. the connection's channel bound).
    Hub(HubError),
}

impl JoinRefusal {
    /// The `code` of the `err` reply.
    #[must_use]
    pub fn code(&self) -> &str {
        match self {
            Self::Refused { code } => code,
            Self::Timeout => "join_timeout",
            Self::Cancelled => "join_cancelled",
            Self::Hub(e) => e.code(),
        }
    }

    fn message(&self) -> String {
        match self {
            Self::Refused { .. } => "refused by the application".to_owned(),
            Self::Timeout => "the application did not decide in time".to_owned(),
            Self::Cancelled => "cancelled".to_owned(),
            Self::Hub(e) => e.to_string(),
        }
    }
}

/// A join waiting for the application.
#[derive(Debug)]
struct Asked {
    conn: ConnId,
    ch: Arc<str>,
    /// The position the client brought.
    pos: Option<Position>,
    /// The channel's head when it asked (a client that brought none starts there); `None`
    /// while the channel's log was loading (set when it is).
    anchor: Option<Position>,
    /// The `sub`'s `ref`, for its answer.
    reference: Option<u64>,
}

/// The hub's pending joins.
#[derive(Debug, Default)]
pub(super) struct Joins {
    next: u64,
    pending: BTreeMap<JoinId, Asked>,
    /// Each connection's pending joins, in the order asked.
    by_conn: HashMap<ConnId, Vec<JoinId>>,
}

impl Joins {
    pub(super) fn of(&self, conn: ConnId) -> &[JoinId] {
        self.by_conn.get(&conn).map_or(&[], Vec::as_slice)
    }

    fn find(&self, conn: ConnId, ch: &str) -> Option<JoinId> {
        self.of(conn).iter().copied().find(|id| self.pending.get(id).is_some_and(|a| &*a.ch == ch))
    }

    fn take(&mut self, id: JoinId) -> Option<Asked> {
        let asked = self.pending.remove(&id)?;
        if let Some(v) = self.by_conn.get_mut(&asked.conn) {
            v.retain(|&j| j != id);
            if v.is_empty() {
                self.by_conn.remove(&asked.conn);
            }
        }
        Some(asked)
    }
}

impl Hub {
    /// Joins waiting for the application's decision.
    #[must_use]
    pub fn pending_joins(&self) -> usize {
        self.joins.pending.len()
    }

    /// The join of `ch` by `conn` that waits for the application's decision, if any.
    #[must_use]
    pub fn pending_join(&self, conn: ConnId, ch: &str) -> Option<JoinId> {
        self.joins.find(conn, ch)
    }

    /// The policy deferred a join: hold it and ask the application.
    pub(super) fn ask_join(
        &mut self,
        now: Instant,
        conn: ConnId,
        ch: &str,
        pos: Option<Position>,
        reference: Option<u64>,
    ) -> Result<Subscription, HubError> {
        let c = self.conns.get(&conn).ok_or(HubError::UnknownConn)?;
        let waiting = |id, pos| Subscription {
            pos,
            recovered: true,
            replayed: 0,
            pending: true,
            awaiting: Some(id),
        };
        if let Some(id) = self.joins.find(conn, ch) {
            // Asked again while pending: the first request's decision answers it.
            let head = self.log(ch).map_or(Position::start(Epoch(0)), ReplayLog::head);
            return Ok(waiting(id, head));
        }
        let mine = self.joins.of(conn).len();
        if c.channels.len() + mine >= self.cfg.max_channels_per_conn {
            return Err(HubError::TooManyChannels);
        }
        if mine >= self.cfg.max_pending_joins_per_conn
            || self.joins.pending.len() >= self.cfg.max_pending_joins
        {
            return Err(HubError::TooManyPending);
        }
        let principal = c.principal.clone();
        // The channel exists while the join waits: its head now is where the client starts.
        let key = self.channel_entry(ch)?;
        let Some(c) = self.channels.get_mut(&key) else { return Err(HubError::BadChannel) };
        c.asking += 1;
        let head = c.log.head();
        let anchor = (pos.is_none() && c.follow != Follow::Syncing).then_some(head);
        let id = JoinId(self.joins.next);
        self.joins.next += 1;
        let asked = Asked { conn, ch: key.clone(), pos, anchor, reference };
        self.joins.pending.insert(id, asked);
        self.joins.by_conn.entry(conn).or_default().push(id);
        self.timers.set(Timer::Join(id.0), now + self.cfg.join_timeout);
        self.events.push_back(HubEvent::JoinRequested { id, conn, principal, ch: key });
        Ok(waiting(id, head))
    }

    /// The application's decision on a join that waits ([`HubEvent::JoinRequested`]):
    /// `Allow` makes the join as a synchronous allow would (`subscribed`, the replay from
    /// the position the client brought, or from the head as it was when it asked, then
    /// presence); `Refuse` answers the `sub` with `err` and the code. Either way
    /// [`HubEvent::JoinDecided`] follows. Returns `false` for an unknown id (decided
    /// already, timed out, cancelled).
    ///
    /// ```
    /// use tidewire::hub::{
    ///     Authorize, Hub, HubConfig, HubEvent, JoinDecision, JoinVerdict, Principal, Transport,
    /// };
    /// use tidewire::Instant;
    ///
    /// /// Reads of `private:*` are looked up in a database: decided later.
    /// struct Lookup;
    /// impl Authorize for Lookup {
    ///     fn can_read(&self, _: &Principal, _: &str) -> bool { true }
    ///     fn can_write(&self, _: &Principal, _: &str) -> bool { false }
    ///     fn join_verdict(&self, _: &Principal, ch: &str) -> JoinVerdict {
    ///         if ch.starts_with("private:") { JoinVerdict::Defer } else { JoinVerdict::Allow }
    ///     }
    /// }
    ///
    /// let now = Instant::now();
    /// let mut hub = Hub::new(HubConfig::default(), Lookup, 1);
    /// let ann = hub.connect(now, Transport::WebSocket, Principal::user("ann"));
    /// hub.handle_envelope(now, ann, br#"{"op":"sub","ch":"private:ann","ref":1}"#);
    /// let Some(HubEvent::JoinRequested { id, .. }) = hub.poll_event() else { panic!() };
    /// assert!(hub.pull(ann).is_none(), "nothing until the decision");
    ///
    /// // Published while the application looks it up: delivered after the join.
    /// hub.publish_json(now, "private:ann", br#""hello""#).unwrap();
    /// assert!(hub.decide_join(now, id, JoinDecision::Allow));
    /// let frames: Vec<String> = std::iter::from_fn(|| hub.pull(ann))
    ///     .map(|b| String::from_utf8(b.to_vec()).unwrap())
    ///     .collect();
    /// assert!(frames[0].starts_with(r#"{"op":"subscribed","ch":"private:ann","recovered":true"#));
    /// assert!(frames[1].contains(r#""off":1"#) && frames[1].ends_with(r#""data":"hello"}"#));
    /// ```
    pub fn decide_join(&mut self, now: Instant, id: JoinId, decision: JoinDecision) -> bool {
        let now = self.advance(now);
        let Some(asked) = self.take_join(id) else { return false };
        let result = match decision {
            JoinDecision::Allow => {
                let start = match (asked.pos, asked.anchor) {
                    (None, Some(at)) => Start::AskedAt(at),
                    (pos, _) => Start::Brought(pos),
                };
                self.join_authorized(now, asked.conn, &asked.ch, start).map_err(JoinRefusal::Hub)
            }
            JoinDecision::Refuse { code } => Err(JoinRefusal::Refused { code }),
        };
        self.end_join(now, id, &asked, result);
        true
    }

    /// Removes a pending join (its timer, its hold on the channel).
    fn take_join(&mut self, id: JoinId) -> Option<Asked> {
        let asked = self.joins.take(id)?;
        self.timers.cancel(Timer::Join(id.0));
        if let Some(c) = self.channels.get_mut(&asked.ch) {
            c.asking = c.asking.saturating_sub(1);
        }
        Some(asked)
    }

    /// Answers a join that waited: `err` on its WebSocket when refused, then
    /// [`HubEvent::JoinDecided`].
    fn end_join(
        &mut self,
        now: Instant,
        id: JoinId,
        asked: &Asked,
        result: Result<Subscription, JoinRefusal>,
    ) {
        if let Err(r) = &result {
            let ws =
                self.conns.get(&asked.conn).is_some_and(|c| c.transport == Transport::WebSocket);
            if ws && *r != JoinRefusal::Cancelled {
                self.reply_err(now, asked.conn, asked.reference, r.code(), &r.message());
            }
            self.collect(&asked.ch);
        }
        let (conn, ch) = (asked.conn, asked.ch.clone());
        self.events.push_back(HubEvent::JoinDecided { id, conn, ch, result });
    }

    /// A pending join's deadline passed: refused with `join_timeout`.
    pub(super) fn join_deadline(&mut self, now: Instant, id: u64) {
        let id = JoinId(id);
        if let Some(asked) = self.take_join(id) {
            self.end_join(now, id, &asked, Err(JoinRefusal::Timeout));
        }
    }

    /// `conn` left `ch` before its join was decided: cancelled. Whether one was pending.
    pub(super) fn cancel_join(&mut self, now: Instant, conn: ConnId, ch: &str) -> bool {
        let Some(id) = self.joins.find(conn, ch) else { return false };
        if let Some(asked) = self.take_join(id) {
            self.end_join(now, id, &asked, Err(JoinRefusal::Cancelled));
        }
        true
    }

    /// `conn` left: its pending joins are cancelled, in the order asked.
    pub(super) fn drop_joins(&mut self, now: Instant, conn: ConnId) {
        let ids = self.joins.of(conn).to_vec();
        for id in ids {
            if let Some(asked) = self.take_join(id) {
                self.end_join(now, id, &asked, Err(JoinRefusal::Cancelled));
            }
        }
    }

    /// `key`'s log finished loading at `head`: pending joins of clients that brought no
    /// position start there.
    pub(super) fn anchor_joins(&mut self, key: &str, head: Position) {
        for a in self.joins.pending.values_mut() {
            if &*a.ch == key && a.pos.is_none() && a.anchor.is_none() {
                a.anchor = Some(head);
            }
        }
    }
}

#[cfg(test)]
#[path = "join_tests.rs"]
mod tests;
