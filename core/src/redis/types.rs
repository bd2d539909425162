//! The public vocabulary of a [`RedisBus`](super::RedisBus): its events, deadlines and
//! states (its sockets and actions are [`crate::socket`]'s).

use bytes::Bytes;

use crate::hub::{BusHistory, BusToken, HubError};
use crate::replay::Position;

/// What the bus reports, pulled with [`RedisBus::poll_event`](super::RedisBus::poll_event).
/// Each variant is one call of the hub: see [`RedisEvent::apply`] (or the list below).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RedisEvent {
    /// Both connections are usable: [`Hub::bus_up`](crate::hub::Hub::bus_up).
    Up,
    /// A connection broke (after an `Up`): [`Hub::bus_down`](crate::hub::Hub::bus_down).
    Down,
    /// A live message: [`Hub::bus_message`](crate::hub::Hub::bus_message).
    Message {
        /// The channel.
        ch: String,
        /// Its position.
        pos: Position,
        /// Its data, one JSON value.
        data: Bytes,
    },
    /// The answer to a `Follow` or `Fetch`: [`Hub::bus_history`](crate::hub::Hub::bus_history).
    History {
        /// The channel.
        ch: String,
        /// What the bus holds.
        history: BusHistory,
    },
    /// The answer to a `Publish`: [`Hub::bus_published`](crate::hub::Hub::bus_published).
    /// Failures are [`HubError::Unavailable`]: the bus is down, the publish queue is full,
    /// or Redis answered with an error.
    Published {
        /// The publish.
        token: BusToken,
        /// Where it was placed, or why not.
        result: Result<Position, HubError>,
    },
}

impl RedisEvent {
    /// Hands the event to `hub` (the matching `bus_*` call).
    pub fn apply(self, hub: &mut crate::hub::Hub, now: crate::time::Instant) {
        match self {
            Self::Up => hub.bus_up(now),
            Self::Down => hub.bus_down(now),
            Self::Message { ch, pos, data } => hub.bus_message(now, &ch, pos, data),
            Self::History { ch, history } => hub.bus_history(now, &ch, history),
            Self::Published { token, result } => hub.bus_published(now, token, result),
        }
    }
}

/// The deadline [`RedisBus::poll_timeout`](super::RedisBus::poll_timeout) reports, as told
/// by [`RedisBus::timeout_reason`](super::RedisBus::timeout_reason).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RedisTimer {
    /// The reconnection delay ends.
    Reconnect,
    /// The connection attempt must have succeeded by then.
    Connect,
    /// The oldest command (or subscription change) must have its reply by then.
    Reply,
}

/// The state of the connection to Redis, as told by [`RedisBus::state`](super::RedisBus::state).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RedisState {
    /// Both connections are being opened.
    Connecting,
    /// Both are usable.
    Up,
    /// Waiting for the next attempt.
    Waiting,
    /// The backoff gave up (`max_attempts` or `max_elapsed`): no more attempts.
    Exhausted,
}
