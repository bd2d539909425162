//! What a [`Server`] tells the application, in three outputs pulled separately:
//!
//! - **Hand-overs** ([`ServerEvent::Upgrade`], [`ServerEvent::Request`]): an upgrade that
//!   left the server for the application, or a request the application answers through
//!   it. An adapter that serves each connection on its
//!   own thread or task pulls its connection's with [`Server::poll_handover`] right after
//!   feeding it; [`Server::poll_event`] also yields them, to whoever pulls first.
//! - **Events** ([`Server::poll_event`]): decisions first (never dropped:
//!   [`ServerEvent::Authenticate`], [`HubEvent::PublishRequested`](crate::hub::HubEvent::PublishRequested)), then hand-overs not
//!   pulled by connection, then the informational ones (refusals, hub events, publishes),
//!   of which the last [`ServerConfig::max_events`](super::ServerConfig::max_events) are kept.
//! - **Bus answers** of `Server::submit` (feature `redis`; [`HubEvent::Submitted`](crate::hub::HubEvent::Submitted)), kept by token for
//!   [`Server::take_submitted`] until taken, or discarded for a caller that stopped waiting
//!   ([`Server::forget_submitted`]); they are not events. A caller that waits for its
//!   answer always gets it: only past the bus's `max_pending` answers nobody took does the
//!   oldest go.
//!
//! [`Server::poll_arrived`] says whether anything new came for the second and third, so
//! that an adapter wakes its waiters only then.

use std::collections::VecDeque;

use super::{ConnHandle, Server, ServerEvent};
use crate::hub::{BusToken, HubError};
use crate::replay::Position;

/// A bus answer: the submit's token and the position (or the refusal).
type Submitted = (BusToken, Result<Position, HubError>);

/// The application's queues of a [`Server`].
#[derive(Default)]
pub(super) struct EventQueue {
    /// Events that need an answer: never dropped.
    decisions: VecDeque<ServerEvent>,
    /// Connections handed to the application, until pulled.
    handovers: VecDeque<ServerEvent>,
    /// Informational events: bounded by `max_events`.
    info: VecDeque<ServerEvent>,
    /// Bus answers of submits until taken: bounded by the bus's `max_pending`.
    submitted: VecDeque<Submitted>,
    /// Submits whose caller stopped waiting: their answers are discarded on arrival.
    forgotten: Vec<BusToken>,
    /// An event or bus answer was queued since the last `poll_arrived`.
    arrived: bool,
}

/// The connection a hand-over is about.
fn handover_conn(ev: &ServerEvent) -> Option<ConnHandle> {
    match ev {
        ServerEvent::Upgrade { conn, .. } | ServerEvent::Request { conn, .. } => Some(*conn),
        _ => None,
    }
}

impl EventQueue {
    pub(super) fn push_decision(&mut self, ev: ServerEvent) {
        self.arrived = true;
        self.decisions.push_back(ev);
    }

    pub(super) fn push_handover(&mut self, ev: ServerEvent) {
        debug_assert!(handover_conn(&ev).is_some());
        self.handovers.push_back(ev);
    }

    /// Queues an informational event; whether the oldest was dropped for it.
    pub(super) fn push_info(&mut self, ev: ServerEvent, max: usize) -> bool {
        self.arrived = true;
        let full = self.info.len() >= max.max(1);
        if full {
            self.info.pop_front();
        }
        self.info.push_back(ev);
        full
    }

    fn push_submitted(&mut self, answer: Submitted, max: usize) {
        if let Some(i) = self.forgotten.iter().position(|t| *t == answer.0) {
            self.forgotten.swap_remove(i);
            return;
        }
        self.arrived = true;
        if self.submitted.len() >= max.max(1) {
            self.submitted.pop_front();
        }
        self.submitted.push_back(answer);
    }

    /// Something the application waits for came (a request body).
    pub(super) fn mark_arrived(&mut self) {
        self.arrived = true;
    }

    /// Forgets a hand-over of a connection whose socket is gone.
    pub(super) fn forget(&mut self, conn: ConnHandle) {
        self.handovers.retain(|ev| handover_conn(ev) != Some(conn));
    }

    #[cfg(feature = "testing")]
    pub(super) fn clear(&mut self) {
        *self = Self::default();
    }
}

impl Server {
    /// The next event for the application: those that need an answer
    /// ([`ServerEvent::Authenticate`], [`HubEvent::PublishRequested`](crate::hub::HubEvent::PublishRequested)) first, then
    /// hand-overs not pulled with [`poll_handover`](Self::poll_handover), then the
    /// informational ones, oldest first (the last
    /// [`ServerConfig::max_events`](super::ServerConfig::max_events); older ones are dropped
    /// and counted in [`ServerStats::events_dropped`](super::ServerStats)). Bus answers of
    /// `submit` are not events: see [`take_submitted`](Self::take_submitted).
    ///
    /// New after every input and command.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<ServerEvent> {
        let q = &mut self.events;
        q.decisions.pop_front().or_else(|| q.handovers.pop_front()).or_else(|| q.info.pop_front())
    }

    /// `conn`'s hand-over, if the server gave it to the application
    /// ([`ServerEvent::Upgrade`] or [`ServerEvent::Request`]; never another event). Each
    /// hand-over is given once, here or by [`poll_event`](Self::poll_event).
    ///
    /// New after [`handle_read`](Self::handle_read) and
    /// [`handle_parsed`](Self::handle_parsed) of `conn`. [`handle_lost`](Self::handle_lost)
    /// forgets one not pulled.
    #[must_use]
    pub fn poll_handover(&mut self, conn: ConnHandle) -> Option<ServerEvent> {
        let q = &mut self.events.handovers;
        let i = q.iter().position(|ev| handover_conn(ev) == Some(conn))?;
        q.remove(i)
    }

    /// The bus's answer to the `submit` (feature `redis`) that returned `token`, once it
    /// came: the message's position, or why it was refused (the bus answers every submit,
    /// `Unavailable` at the latest when its request times out). Given once; kept until
    /// taken (only past the bus's `max_pending` untaken answers does the oldest go), so a
    /// caller that stops waiting says so with [`forget_submitted`](Self::forget_submitted).
    ///
    /// New after the bus's inputs and [`handle_timeout`](Self::handle_timeout).
    #[must_use]
    pub fn take_submitted(&mut self, token: BusToken) -> Option<Result<Position, HubError>> {
        let q = &mut self.events.submitted;
        let i = q.iter().position(|(t, _)| *t == token)?;
        q.remove(i).map(|(_, r)| r)
    }

    /// The caller of the `submit` that returned `token` stopped waiting: its answer (come
    /// or to come) is discarded.
    pub fn forget_submitted(&mut self, token: BusToken) {
        let bound = self.pending_bound();
        let q = &mut self.events;
        match q.submitted.iter().position(|(t, _)| *t == token) {
            Some(i) => drop(q.submitted.remove(i)),
            None if q.forgotten.len() < bound => q.forgotten.push(token),
            None => {}
        }
    }

    /// The most bus answers kept for callers: the bus's `max_pending` (its submits in flight).
    fn pending_bound(&self) -> usize {
        #[cfg(feature = "redis")]
        if let Some(bus) = &self.bus {
            return bus.config().max_pending.max(self.cfg.max_events);
        }
        self.cfg.max_events
    }

    /// Whether an event ([`poll_event`](Self::poll_event), hand-overs aside) or a bus answer
    /// ([`take_submitted`](Self::take_submitted)) was queued since the last call: an adapter
    /// wakes whoever waits for them when this is `true`, after every input and command.
    #[must_use]
    pub fn poll_arrived(&mut self) -> bool {
        std::mem::take(&mut self.events.arrived)
    }

    /// Queues an informational event (the oldest goes when the queue is full).
    pub(super) fn push_event(&mut self, ev: ServerEvent) {
        if self.events.push_info(ev, self.cfg.max_events) {
            self.stats.events_dropped += 1;
        }
    }

    /// Keeps a bus answer for [`take_submitted`](Self::take_submitted).
    pub(super) fn push_submitted(&mut self, token: BusToken, result: Result<Position, HubError>) {
        let max = self.pending_bound();
        self.events.push_submitted((token, result), max);
    }
}
