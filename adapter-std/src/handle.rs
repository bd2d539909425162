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
    /// The trusted publish of one JSON value ([`Server::publish`](Endpoint::publish), with its
    /// errors). With [`ServerConfig::redis`](crate::ServerConfig::redis), use
    /// [`submit`](Self::submit).
    pub fn publish(&self, ch: &str, json: impl AsRef<[u8]>) -> Result<Position, HubError> {
        self.shared.with(|s, now| s.publish(now, ch, json.as_ref()))
    }

    /// [`publish`](Self::publish) deduplicated by `id`; with a bus, waits for its answer
    /// ([`Server::publish_trusted`](Endpoint::publish_trusted), with its errors).
    pub fn publish_once(
        &self,
        ch: &str,
        id: &str,
        json: impl AsRef<[u8]>,
    ) -> Result<Position, HubError> {
        self.trusted(ch, Some(id), json.as_ref())
    }

    /// Creates `ch` with its log continuing after `last` ([`Server::restore`](Endpoint::restore),
    /// with its errors).
    pub fn restore(&self, ch: &str, last: Position) -> Result<(), HubError> {
        self.shared.with(|s, now| s.restore(now, ch, last))
    }

    /// The trusted publish with and without Redis: with a bus it waits (blocking) for its
    /// position ([`Server::publish_trusted`](Endpoint::publish_trusted), with its errors).
    pub fn submit(&self, ch: &str, json: impl AsRef<[u8]>) -> Result<Position, HubError> {
        self.trusted(ch, None, json.as_ref())
    }

    /// The core's trusted publish; with a bus, waits (blocking) for its answer.
    fn trusted(&self, ch: &str, id: Option<&str>, json: &[u8]) -> Result<Position, HubError> {
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
            core = wait_until(&self.shared.event_cv, core, None);
        }
    }

    /// Reads the core server under its lock. Keep `f` short: every connection waits for it.
    pub fn inspect<T>(&self, f: impl FnOnce(&Endpoint) -> T) -> T {
        f(&core(&self.shared).server)
    }

    /// The presence names on `ch` ([`Server::presence`](Endpoint::presence)).
    #[must_use]
    pub fn presence(&self, ch: &str) -> Vec<String> {
        self.inspect(|s| s.presence(ch))
    }

    /// The position of `ch`'s last message ([`Server::head`](Endpoint::head)).
    #[must_use]
    pub fn head(&self, ch: &str) -> Option<Position> {
        self.inspect(|s| s.head(ch))
    }

    /// The hub's counters ([`Server::hub_stats`](Endpoint::hub_stats)).
    #[must_use]
    pub fn stats(&self) -> HubStats {
        self.inspect(Endpoint::hub_stats)
    }

    /// Connections in the hub ([`Server::hub_connections`](Endpoint::hub_connections)).
    #[must_use]
    pub fn hub_connections(&self) -> usize {
        self.inspect(Endpoint::hub_connections)
    }

    /// Whether the hub's Redis bus is connected ([`Server::bus_is_up`](Endpoint::bus_is_up)).
    #[must_use]
    pub fn bus_is_up(&self) -> bool {
        self.inspect(Endpoint::bus_is_up)
    }

    /// The next informational event, without waiting
    /// ([`Server::poll_event`](Endpoint::poll_event)); hand-overs are the pump's, never here.
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
            if Instant::now() >= until {
                return None;
            }
            core = wait_until(&self.shared.event_cv, core, Some(until));
        }
    }

    /// Answers a deferred authentication ([`Server::decide`](Endpoint::decide)).
    pub fn decide(&self, conn: ConnHandle, verdict: Verdict) {
        self.shared.with(|s, now| s.decide(now, conn, verdict));
    }

    /// Answers a deferred join ([`Server::decide_join`](Endpoint::decide_join)).
    pub fn decide_join(&self, id: JoinId, decision: JoinDecision) -> bool {
        self.shared.with(|s, now| s.decide_join(now, id, decision))
    }

    /// Answers a vetted publish ([`Server::decide_publish`](Endpoint::decide_publish)).
    pub fn decide_publish(&self, id: PublishId, decision: PublishDecision) -> bool {
        self.shared.with(|s, now| s.decide_publish(now, id, decision))
    }
}
