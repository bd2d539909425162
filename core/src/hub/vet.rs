//! Vetted publishes: with [`HubConfig::vet_publishes`](super::HubConfig::vet_publishes),
//! the application sees each client publish before it is logged.
//!
//! A client publish (a WebSocket `pub`, or [`Hub::request_publish`] for one that came
//! without a hub connection, e.g. `POST /api/publish` with the client's credentials) is
//! checked as always (channel name, [`Authorize::can_write`](super::Authorize::can_write),
//! id length, and a repeated id of an already logged message is acknowledged with its
//! position). Then, instead of being appended, it is held: the hub emits
//! [`HubEvent::PublishRequested`] and waits for [`Hub::decide_publish`] with a
//! [`PublishDecision`]:
//!
//! - `Accept`: appended as sent; the client gets `ack` with the position;
//! - `Replace(json)`: the application's data is appended instead (validate, enrich);
//! - `Refuse { code }`: nothing is appended; the client gets `err` with `code`.
//!
//! Bounded: at most [`max_pending_per_conn`](super::HubConfig::max_pending_per_conn)
//! pending publishes per connection and [`max_pending`](super::HubConfig::max_pending) in
//! all (past either, `err` with code `too_many_pending` at once); each waits at most
//! [`vet_timeout`](super::HubConfig::vet_timeout), then is refused with code
//! `publish_timeout`. A connection that leaves drops its pending publishes (a later
//! decision for them is ignored). A publish resent with the same id while the first is
//! pending joins it (no second [`HubEvent::PublishRequested`]): both are answered by the
//! one decision. A publish without a connection is answered with
//! [`HubEvent::PublishDecided`].
//!
//! # With a bus
//!
//! A hub on a bus ([`Hub::with_bus`]) vets the same way: the publish is held and decided
//! before anything reaches the bus, with the same checks, bounds, timeout and refusals. An
//! accepted publish (its data, or the replacement) then goes to the bus with its publisher
//! and its id (scoped by its user, or connection, as every bus publish), and stays pending
//! (counted in the bounds) until the bus answers: then every waiter gets the bus's answer
//! (`ack` with the position the bus gave it, or `err`; [`HubEvent::PublishDecided`] without
//! a connection); a connection that leaves meanwhile gets nothing. A resend with the same
//! id joins it until then, and is acknowledged at once after (this instance remembers the
//! position); a resend that reaches another instance is vetted there, and the bus, which
//! stores each id once, answers it with the first position. While the bus is down a new
//! publish is refused at once with `unavailable`, unasked; one that waits for the bus's
//! answer when it drops is refused with `unavailable` too (the bus may have stored it: the
//! client resends with the same id).

use std::sync::Arc;

use bytes::Bytes;
use serde_json::value::RawValue;

use super::conn::{ConnId, Scope};
use super::{Hub, HubError, HubEvent, Principal, Timer};
use crate::envelope::ServerMessageRef;
use crate::replay::Position;
use crate::time::Instant;

/// Names a publish held for the application's decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublishId(pub u64);

/// The application's answer to [`HubEvent::PublishRequested`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PublishDecision {
    /// Log the data as the client sent it.
    Accept,
    /// Log this data (one JSON value, as text) instead.
    Replace(Bytes),
    /// Log nothing; the client gets `err` with this code (HTTP: `403`).
    Refuse {
        /// A stable machine-readable code, e.g. `"spam"`.
        code: String,
    },
}

/// Why a held publish was not logged.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PublishRefusal {
    /// The application refused it with this code.
    Refused {
        /// The application's code.
        code: String,
    },
    /// The application did not answer within `vet_timeout` (code `publish_timeout`).
    Timeout,
    /// The append failed (a replacement that is not JSON, the channel bound...).
    Hub(HubError),
}

impl PublishRefusal {
    /// The `code` of the `err` reply.
    #[must_use]
    pub fn code(&self) -> &str {
        match self {
            Self::Refused { code } => code,
            Self::Timeout => "publish_timeout",
            Self::Hub(e) => e.code(),
        }
    }

    fn message(&self) -> String {
        match self {
            Self::Refused { .. } => "refused by the application".to_owned(),
            Self::Timeout => "the application did not decide in time".to_owned(),
            Self::Hub(e) => e.to_string(),
        }
    }
}

/// What [`Hub::request_publish`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PublishRequest {
    /// Logged at this position (vetting is off and there is no bus, or a repeated id of a
    /// logged message).
    Published(Position),
    /// Held for the application, or (with a bus) waiting for the bus's answer: the answer
    /// comes as [`HubEvent::PublishDecided`].
    Pending(PublishId),
}

/// Who waits for a held publish's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Waiter {
    Conn { conn: ConnId, reference: Option<u64> },
    App,
}

/// A held publish.
#[derive(Debug)]
pub(super) struct Pending {
    /// The connection it counts against (`None`: without a connection).
    owner: Option<ConnId>,
    principal: Principal,
    key: Option<(Scope, Box<str>)>,
    ch: Arc<str>,
    data: Bytes,
    waiters: Vec<Waiter>,
    /// With a bus: accepted and handed to the bus, waiting for its answer.
    sent: bool,
}

/// The hub's held publishes.
#[derive(Debug, Default)]
pub(super) struct Vetting {
    next: u64,
    pending: std::collections::BTreeMap<PublishId, Pending>,
    by_key: std::collections::HashMap<(Scope, Box<str>), PublishId>,
    per_conn: std::collections::HashMap<ConnId, usize>,
}

impl Vetting {
    fn count(&mut self, conn: Option<ConnId>, delta: isize) {
        let Some(c) = conn else { return };
        let n = self.per_conn.entry(c).or_default();
        *n = n.saturating_add_signed(delta);
        if *n == 0 {
            self.per_conn.remove(&c);
        }
    }

    /// A new id (also for a publish that waits for the bus unvetted).
    pub(super) fn next_id(&mut self) -> PublishId {
        let id = PublishId(self.next);
        self.next += 1;
        id
    }

    fn take(&mut self, id: PublishId) -> Option<Pending> {
        let p = self.pending.remove(&id)?;
        if let Some(k) = &p.key {
            self.by_key.remove(k);
        }
        self.count(p.owner, -1);
        Some(p)
    }
}

impl Hub {
    /// Publishes held for the application's decision (with a bus, also the accepted ones
    /// until the bus answers them).
    #[must_use]
    pub fn pending_publishes(&self) -> usize {
        self.vetting.pending.len()
    }

    /// A client publish that arrived without a hub connection (e.g. `POST /api/publish`
    /// with the client's credentials): [`publish_as`](Self::publish_as) when vetting is
    /// off (or for a repeated id of a logged message); with
    /// [`HubConfig::vet_publishes`](super::HubConfig::vet_publishes), held for the
    /// application ([`PublishRequest::Pending`]; the answer comes as
    /// [`HubEvent::PublishDecided`]). With a bus, the publish (once accepted, when vetting
    /// is on) goes to the bus, and the answer comes as [`HubEvent::PublishDecided`] when
    /// the bus answers ([`PublishRequest::Pending`]).
    ///
    /// # Errors
    /// As [`publish_as`](Self::publish_as); [`HubError::TooManyPending`] past
    /// `max_pending`; with a bus, [`HubError::Unavailable`] while it is down.
    pub fn request_publish(
        &mut self,
        now: Instant,
        principal: &Principal,
        ch: &str,
        id: Option<&str>,
        json: &[u8],
    ) -> Result<PublishRequest, HubError> {
        if !self.vets() {
            if self.bus.is_some() {
                let token = self.submit(now, Some(principal), ch, id, json)?;
                return Ok(PublishRequest::Pending(self.answer_as_request(token)));
            }
            return self.publish_as(now, principal, ch, id, json).map(PublishRequest::Published);
        }
        let now = self.advance(now);
        let data: &RawValue = serde_json::from_slice(json).map_err(|_| HubError::BadJson)?;
        let scope =
            principal.user.as_deref().map_or(Scope::Anonymous, |u| Scope::User(Arc::from(u)));
        self.hold(now, None, principal, scope, ch, id, data, Waiter::App)
    }

    /// Whether client publishes are held for the application (with or without a bus).
    pub(super) fn vets(&self) -> bool {
        self.cfg.vet_publishes
    }

    /// A WebSocket `pub` when vetting is on (with or without a bus): held, or answered at
    /// once.
    pub(super) fn vet_client_publish(
        &mut self,
        now: Instant,
        conn: ConnId,
        ch: &str,
        msg_id: Option<&str>,
        data: &RawValue,
        reference: Option<u64>,
    ) {
        let Some(c) = self.conns.get(&conn) else { return };
        let (principal, scope) = (c.principal.clone(), c.scope.clone());
        let waiter = Waiter::Conn { conn, reference };
        match self.hold(now, Some(conn), &principal, scope, ch, msg_id, data, waiter) {
            Ok(PublishRequest::Published(pos)) => {
                let ack = ServerMessageRef::Ack { reference, pos: Some(pos) }.encode();
                self.reply(now, conn, ack);
            }
            Ok(PublishRequest::Pending(_)) => {}
            Err(e) => self.reply_err(now, conn, reference, e.code(), &e.to_string()),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn hold(
        &mut self,
        now: Instant,
        owner: Option<ConnId>,
        principal: &Principal,
        scope: Scope,
        ch: &str,
        msg_id: Option<&str>,
        data: &RawValue,
        waiter: Waiter,
    ) -> Result<PublishRequest, HubError> {
        self.check_publish(Some(principal), ch, msg_id)?;
        let key = msg_id.map(|m| (scope, Box::<str>::from(m)));
        if let Some(k) = &key {
            if self.dedup.contains(k) {
                self.stats.duplicates += 1;
                let pos = self.dedup_pos.get(k).copied().unwrap_or_else(|| {
                    self.log(ch).map_or(
                        Position::start(crate::replay::Epoch(0)),
                        crate::replay::ReplayLog::head,
                    )
                });
                return Ok(PublishRequest::Published(pos));
            }
            if let Some(&id) = self.vetting.by_key.get(k) {
                // Resent while pending: it joins the first; one decision answers both.
                self.stats.duplicates += 1;
                if let Some(p) = self.vetting.pending.get_mut(&id)
                    && !p.waiters.contains(&waiter)
                {
                    p.waiters.push(waiter);
                }
                return Ok(PublishRequest::Pending(id));
            }
        }
        if self.bus.is_some() && !self.bus_is_up() {
            // Nothing could be logged: refused at once, unasked.
            return Err(HubError::Unavailable);
        }
        let per_conn = owner.and_then(|c| self.vetting.per_conn.get(&c)).copied().unwrap_or(0);
        if self.vetting.pending.len() >= self.cfg.max_pending
            || (owner.is_some() && per_conn >= self.cfg.max_pending_per_conn)
        {
            return Err(HubError::TooManyPending);
        }
        let id = self.vetting.next_id();
        let ch: Arc<str> = Arc::from(ch);
        let data = Bytes::copy_from_slice(data.get().as_bytes());
        if let Some(k) = &key {
            self.vetting.by_key.insert(k.clone(), id);
        }
        self.vetting.count(owner, 1);
        self.vetting.pending.insert(
            id,
            Pending {
                owner,
                principal: principal.clone(),
                key,
                ch: ch.clone(),
                data: data.clone(),
                waiters: vec![waiter],
                sent: false,
            },
        );
        self.timers.set(Timer::Vet(id.0), now + self.cfg.vet_timeout);
        self.events.push_back(HubEvent::PublishRequested {
            id,
            conn: owner,
            principal: principal.clone(),
            ch,
            data,
        });
        Ok(PublishRequest::Pending(id))
    }

    /// The application's decision on a held publish ([`HubEvent::PublishRequested`]):
    /// appends (the client's data or the replacement) and acknowledges, or refuses. Every
    /// waiter is answered: `ack`/`err` on its connection, [`HubEvent::PublishDecided`] for
    /// one without a connection. With a bus, an accepted publish goes to the bus (with its
    /// publisher and its id) and its waiters are answered when the bus answers, with the
    /// position the bus gave it; a resend with the same id joins it until then. Returns
    /// `false` for an unknown id (decided already, timed out, or its connection left).
    pub fn decide_publish(
        &mut self,
        now: Instant,
        id: PublishId,
        decision: PublishDecision,
    ) -> bool {
        let now = self.advance(now);
        if self.vetting.pending.get(&id).is_none_or(|p| p.sent) {
            return false;
        }
        self.timers.cancel(Timer::Vet(id.0));
        if self.bus.is_some() && !matches!(decision, PublishDecision::Refuse { .. }) {
            // Accepted: the bus logs it (and numbers it); answered when the bus answers.
            let replacement = match decision {
                PublishDecision::Replace(data) => Some(data),
                _ => None,
            };
            if let Err(r) = self.vetted_to_bus(id, replacement)
                && let Some(p) = self.vetting.take(id)
            {
                self.answer_vetted(now, id, &p, &Err(r));
            }
            return true;
        }
        let Some(p) = self.vetting.take(id) else { return false };
        let result = match decision {
            PublishDecision::Refuse { code } => Err(PublishRefusal::Refused { code }),
            PublishDecision::Accept => self.append_vetted(now, &p, &p.data),
            PublishDecision::Replace(data) => self.append_vetted(now, &p, &data),
        };
        self.answer_vetted(now, id, &p, &result);
        true
    }

    /// With a bus: hands an accepted held publish (its data, or `replacement`) to the bus,
    /// with its publisher and its scoped id; it stays pending (resends join it) until the
    /// bus answers ([`bus_vetted`](Self::bus_vetted)).
    fn vetted_to_bus(
        &mut self,
        id: PublishId,
        replacement: Option<Bytes>,
    ) -> Result<(), PublishRefusal> {
        let Some(p) = self.vetting.pending.get(&id) else { return Ok(()) };
        let data = replacement.unwrap_or_else(|| p.data.clone());
        let raw: &RawValue =
            serde_json::from_slice(&data).map_err(|_| PublishRefusal::Hub(HubError::BadJson))?;
        let from = self.publisher(&p.principal, &p.ch);
        let (ch, key) = (p.ch.clone(), p.key.clone());
        self.send_vetted(&ch, raw, from.as_deref(), key.as_ref(), id)
            .map_err(PublishRefusal::Hub)?;
        if let Some(p) = self.vetting.pending.get_mut(&id) {
            p.sent = true;
        }
        Ok(())
    }

    /// The bus answered a vetted publish ([`vetted_to_bus`](Self::vetted_to_bus)): every
    /// waiter gets the answer, and the position is remembered for resends. Nothing when
    /// every waiter left.
    pub(super) fn bus_vetted(
        &mut self,
        now: Instant,
        id: PublishId,
        result: Result<Position, HubError>,
    ) {
        let Some(p) = self.vetting.take(id) else { return };
        if let (Some(k), Ok(pos)) = (p.key.clone(), &result) {
            self.remember(k, *pos);
        }
        self.answer_vetted(now, id, &p, &result.map_err(PublishRefusal::Hub));
    }

    fn append_vetted(
        &mut self,
        now: Instant,
        p: &Pending,
        data: &Bytes,
    ) -> Result<Position, PublishRefusal> {
        let raw: &RawValue =
            serde_json::from_slice(data).map_err(|_| PublishRefusal::Hub(HubError::BadJson))?;
        let from = self.publisher(&p.principal, &p.ch);
        let pos = self.append(now, &p.ch, raw, from.as_ref()).map_err(PublishRefusal::Hub)?;
        if let Some(k) = p.key.clone() {
            self.remember(k, pos);
        }
        Ok(pos)
    }

    fn answer_vetted(
        &mut self,
        now: Instant,
        id: PublishId,
        p: &Pending,
        result: &Result<Position, PublishRefusal>,
    ) {
        for &w in &p.waiters {
            match (w, result) {
                (Waiter::Conn { conn, reference }, Ok(pos)) => {
                    let ack = ServerMessageRef::Ack { reference, pos: Some(*pos) }.encode();
                    if self.conns.contains_key(&conn) {
                        self.reply(now, conn, ack);
                    }
                }
                (Waiter::Conn { conn, reference }, Err(r)) => {
                    if self.conns.contains_key(&conn) {
                        self.reply_err(now, conn, reference, r.code(), &r.message());
                    }
                }
                (Waiter::App, _) => {
                    self.events.push_back(HubEvent::PublishDecided { id, result: result.clone() });
                }
            }
        }
    }

    /// A held publish's deadline passed: refused with `publish_timeout`.
    pub(super) fn vet_deadline(&mut self, now: Instant, id: u64) {
        let id = PublishId(id);
        if let Some(p) = self.vetting.take(id) {
            self.answer_vetted(now, id, &p, &Err(PublishRefusal::Timeout));
        }
    }

    /// `conn` left: its held publishes go (those it shares with a waiter elsewhere stay,
    /// counted against no connection).
    pub(super) fn drop_vetted(&mut self, conn: ConnId) {
        if self.vetting.pending.is_empty() {
            return;
        }
        let ids: Vec<PublishId> = self
            .vetting
            .pending
            .iter()
            .filter(|(_, p)| {
                p.owner == Some(conn)
                    || p.waiters
                        .iter()
                        .any(|w| matches!(w, Waiter::Conn { conn: c, .. } if *c == conn))
            })
            .map(|(&id, _)| id)
            .collect();
        for id in ids {
            let Some(p) = self.vetting.pending.get_mut(&id) else { continue };
            p.waiters.retain(|w| !matches!(w, Waiter::Conn { conn: c, .. } if *c == conn));
            if p.waiters.is_empty() {
                self.vetting.take(id);
                self.timers.cancel(Timer::Vet(id.0));
            } else if p.owner == Some(conn) {
                p.owner = None;
                self.vetting.count(Some(conn), -1);
            }
        }
    }
}

#[cfg(test)]
#[path = "vet_tests.rs"]
mod tests;
