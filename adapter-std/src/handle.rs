//! The hub operations of a [`ServerHandle`]: each one mutation of the core server under its
//! lock, followed by the pump's drain.

use std::time::{Duration, Instant};

use tidewire::hub::HubError;
use tidewire::replay::Position;
use tidewire::server::{Publication, Server as Endpoint, ServerEvent};

use crate::ServerHandle;
use crate::conn::wait_until;
use crate::outbound::Host as _;
use crate::pump::core;

impl ServerHandle {
    /// The trusted publish of one JSON value ([`Server::publish`](Endpoint::publish), with its
    /// errors). With [`ServerConfig::redis`](crate::ServerConfig::redis), use
    /// [`submit`](Self::submit).
    pub fn publish(&self, ch: &str, json: impl AsRef<[u8]>) -> Result<Position, HubError> {
        self.with(|s, now| s.publish(now, ch, json.as_ref()))
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

    /// Runs `f` on the core server under its lock, with the time, then sends what it set in
    /// motion: the way to call the core's commands, e.g.
    /// `handle.with(|s, now| s.decide(now, conn, verdict))` ([`decide`](Endpoint::decide)), or
    /// [`decide_join`](Endpoint::decide_join), [`restore`](Endpoint::restore). Keep `f` short:
    /// every connection waits for it.
    pub fn with<T>(&self, f: impl FnOnce(&mut Endpoint, Instant) -> T) -> T {
        self.shared.with(f)
    }

    /// Reads the core server under its lock, e.g. `handle.inspect(|s| s.presence(ch))` (see
    /// [`with`](Self::with)). Keep `f` short: every connection waits for it.
    pub fn inspect<T>(&self, f: impl FnOnce(&Endpoint) -> T) -> T {
        f(&core(&self.shared).server)
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
        let until = Instant::now().checked_add(timeout); // `None`: no end
        let mut core = core(&self.shared);
        loop {
            if let Some(ev) = core.server.poll_event() {
                return Some(ev);
            }
            if until.is_some_and(|t| Instant::now() >= t) {
                return None;
            }
            core = wait_until(&self.shared.event_cv, core, until);
        }
    }
}
