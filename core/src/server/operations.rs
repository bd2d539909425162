//! The application's hub operations on a [`Server`]: what an adapter's server handle
//! offers, one call each (reads of the hub, a restored channel, the trusted publish that
//! goes through the bus when there is one).

use super::Server;
use crate::hub::{BusToken, HubError, HubStats};
use crate::replay::{Position, ReplayLog};
use crate::time::Instant;

/// Where a [`Server::publish_trusted`] went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Publication {
    /// Appended to this server's log at this position.
    Appended(Position),
    /// Sent to the bus, which numbers it: the answer comes by
    /// [`Server::take_submitted`] with this token.
    Submitted(BusToken),
}

impl Server {
    /// The presence list of `ch` (names in grace included), sorted.
    #[must_use]
    pub fn presence(&self, ch: &str) -> Vec<String> {
        self.hub.presence(ch).map(str::to_owned).collect()
    }

    /// The position of `ch`'s last message (`None`: no such channel).
    #[must_use]
    pub fn head(&self, ch: &str) -> Option<Position> {
        self.hub.log(ch).map(ReplayLog::head)
    }

    /// The hub's counters.
    #[must_use]
    pub fn hub_stats(&self) -> HubStats {
        self.hub.stats()
    }

    /// Connections in the hub (WebSockets, SSE streams, kept polling clients).
    #[must_use]
    pub fn hub_connections(&self) -> usize {
        self.hub.connection_count()
    }

    /// Whether the hub's bus is connected (`false` without one).
    #[must_use]
    pub fn bus_is_up(&self) -> bool {
        self.hub.bus_is_up()
    }

    /// Whether the server has a scale-out bus (`Server::with_redis`, feature `redis`).
    #[must_use]
    pub fn has_bus(&self) -> bool {
        #[cfg(feature = "redis")]
        return self.bus.is_some();
        #[cfg(not(feature = "redis"))]
        false
    }

    /// Creates channel `ch` with its log continuing after `last`, a position an earlier
    /// process persisted ([`Hub::restore`](crate::hub::Hub::restore)).
    ///
    /// # Errors
    /// As [`Hub::restore`](crate::hub::Hub::restore).
    pub fn restore(&mut self, now: Instant, ch: &str, last: Position) -> Result<(), HubError> {
        self.with_hub(now, |hub| hub.restore(ch, last))
    }

    /// The trusted publish that works with and without a bus: with one it is submitted
    /// (numbered by the bus, deduplicated by `id` across instances) and answered later by
    /// [`take_submitted`](Self::take_submitted); without, it is
    /// [`publish_once`](Self::publish_once) with an `id` and [`publish`](Self::publish)
    /// without, appended at once.
    ///
    /// # Errors
    /// As [`Hub::publish_json`](crate::hub::Hub::publish_json); with a bus,
    /// [`HubError::Unavailable`] while it is down, [`HubError::BadId`].
    pub fn publish_trusted(
        &mut self,
        now: Instant,
        ch: &str,
        id: Option<&str>,
        json: &[u8],
    ) -> Result<Publication, HubError> {
        #[cfg(feature = "redis")]
        if self.has_bus() {
            return self.submit(now, ch, id, json).map(Publication::Submitted);
        }
        match id {
            Some(id) => self.publish_once(now, ch, id, json),
            None => self.publish(now, ch, json),
        }
        .map(Publication::Appended)
    }
}
