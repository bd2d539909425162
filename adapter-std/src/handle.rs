//! The hub operations of a [`ServerHandle`]: each one mutation of the core server under its
//! lock, followed by the pump's drain.

use std::time::{Duration, Instant};

use tidewire::hub::{HubError, HubStats, JoinDecision, JoinId, PublishDecision, PublishId};
use tidewire::replay::Position;
use tidewire::server::{ConnHandle, Publication, Server as Endpoint, ServerEvent, Verdict};

use crate::ServerHandle;
use crate::conn::wait_until;
use crate::outbound::Host as _;
use crate::pump::core;

impl ServerHandle {
    /// The trusted server-side publish (a ticker, an admin): `json` must be one JSON
    /// value; no authorization, no dedup. Returns the message's position. With
    /// [`ServerConfig::redis`](crate::ServerConfig::redis) use [`submit`](Self::submit),
    /// which the bus numbers.
    ///
    /// # Errors
    /// [`HubError::BadJson`], [`HubError::BadChannel`], [`HubError::ChannelLimit`];
    /// [`HubError::Unavailable`] with a bus.
    pub fn publish(&self, ch: &str, json: impl AsRef<[u8]>) -> Result<Position, HubError> {
        self.shared.with(|s, now| s.publish(now, ch, json.as_ref()))
    }

    /// [`publish`](Self::publish) deduplicated by `id`: a repeated id is answered with the
    /// first one's position (the core's trusted window, `ServerConfig::trusted_dedup`; with
    /// Redis, across instances for `RedisConfig::dedup_ttl`).
    ///
    /// # Errors
    /// As [`publish`](Self::publish); [`HubError::BadId`] for an id over the hub's bound.
    pub fn publish_once(
        &self,
        ch: &str,
        id: &str,
        json: impl AsRef<[u8]>,
    ) -> Result<Position, HubError> {
        self.publish_trusted(ch, Some(id), json.as_ref())
    }

    /// Creates channel `ch` with its log continuing after `last`, a position an earlier
    /// process of this server persisted ([`tidewire::hub::Hub::restore`]): a client that
    /// was at `last` resumes exactly.
    ///
    /// # Errors
    /// As [`Hub::restore`](tidewire::hub::Hub::restore).
    pub fn restore(&self, ch: &str, last: Position) -> Result<(), HubError> {
        self.shared.with(|s, now| s.restore(now, ch, last))
    }

    /// The trusted publish that works with and without Redis: with
    /// [`ServerConfig::redis`](crate::ServerConfig::redis) it goes through the bus (which
    /// numbers it) and waits (blocking) for its position; without, it is
    /// [`publish`](Self::publish).
    ///
    /// # Errors
    /// As [`publish`](Self::publish); with Redis, [`HubError::Unavailable`] while Redis is
    /// unreachable (retry with [`publish_once`](Self::publish_once) to stay idempotent).
    pub fn submit(&self, ch: &str, json: impl AsRef<[u8]>) -> Result<Position, HubError> {
        self.publish_trusted(ch, None, json.as_ref())
    }

    /// The core's trusted publish; with a bus, waits (blocking) for its answer.
    fn publish_trusted(
        &self,
        ch: &str,
        id: Option<&str>,
        json: &[u8],
    ) -> Result<Position, HubError> {
        let mut core = core(&self.shared);
        let published = core.server.publish_trusted(Instant::now(), ch, id, json);
        core.after(&self.shared);
        let token = match published? {
            Publication::Submitted(token) => token,
            Publication::Appended(pos) => return Ok(pos),
        };
        loop {
            if let Some(r) = core.server.take_submitted(token) {
                return r;
            }
            core =
                self.shared.event_cv.wait(core).unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }

    /// Reads the core server under its lock (its hub, stats, connections). Keep `f` short:
    /// every connection waits for it.
    pub fn inspect<T>(&self, f: impl FnOnce(&Endpoint) -> T) -> T {
        f(&core(&self.shared).server)
    }

    /// The presence names on `ch`.
    #[must_use]
    pub fn presence(&self, ch: &str) -> Vec<String> {
        self.inspect(|s| s.presence(ch))
    }

    /// The position of `ch`'s last message (`None`: no such channel).
    #[must_use]
    pub fn head(&self, ch: &str) -> Option<Position> {
        self.inspect(|s| s.head(ch))
    }

    /// The hub's counters.
    #[must_use]
    pub fn stats(&self) -> HubStats {
        self.inspect(Endpoint::hub_stats)
    }

    /// Connections in the hub (WebSockets, SSE streams, polling clients).
    #[must_use]
    pub fn hub_connections(&self) -> usize {
        self.inspect(Endpoint::hub_connections)
    }

    /// Whether the hub's Redis bus is connected (`false` without Redis).
    #[must_use]
    pub fn bus_is_up(&self) -> bool {
        self.inspect(Endpoint::bus_is_up)
    }

    /// The next informational event, oldest first, without waiting: the hub's
    /// ([`ServerEvent::Hub`]: joins, leaves, bus state), refusals, publishes (with
    /// `report_published`) and deferred authentications ([`ServerEvent::Authenticate`]:
    /// answer them with [`decide`](Self::decide)). The queue keeps the last
    /// `endpoint.max_events`; hand-overs are the pump's and never appear here.
    #[must_use]
    pub fn next_event(&self) -> Option<ServerEvent> {
        core(&self.shared).server.poll_event()
    }

    /// As [`next_event`](Self::next_event), waiting up to `timeout` for one.
    #[must_use]
    pub fn wait_event(&self, timeout: Duration) -> Option<ServerEvent> {
        let until = Instant::now() + timeout;
        let mut core = core(&self.shared);
        loop {
            if let Some(ev) = core.server.poll_event() {
                return Some(ev);
            }
            let now = Instant::now();
            if now >= until {
                return None;
            }
            core = wait_until(&self.shared.event_cv, core, Some(until));
        }
    }

    /// Answers a deferred authentication ([`ServerEvent::Authenticate`]).
    pub fn decide(&self, conn: ConnHandle, verdict: Verdict) {
        self.shared.with(|s, now| s.decide(now, conn, verdict));
    }

    /// Answers a deferred join ([`HubEvent::JoinRequested`](tidewire::hub::HubEvent)
    /// from an [`Authorize`](tidewire::hub::Authorize) policy that returned
    /// `JoinVerdict::Defer`). `false`: unknown id (decided, timed out or cancelled).
    pub fn decide_join(&self, id: JoinId, decision: JoinDecision) -> bool {
        self.shared.with(|s, now| s.decide_join(now, id, decision))
    }

    /// Answers a vetted publish ([`HubEvent::PublishRequested`](tidewire::hub::HubEvent),
    /// with `HubConfig::vet_publishes`). `false`: unknown id (decided, timed out, or its
    /// connection left).
    pub fn decide_publish(&self, id: PublishId, decision: PublishDecision) -> bool {
        self.shared.with(|s, now| s.decide_publish(now, id, decision))
    }
}
