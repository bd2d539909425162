//! What a [`Hub`](super::Hub) reports: refusals, subscriptions, events and counters.

use std::sync::Arc;

use super::conn::ConnId;
use crate::replay::Position;
use crate::ws::CloseCode;

/// Why a subscribe or publish was refused; nothing changed. Over WebSocket it becomes an
/// `err` reply with [`code`](Self::code).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HubError {
    /// No such connection (never connected, or already gone).
    #[error("unknown connection")]
    UnknownConn,
    /// The channel name is empty, too long or holds a control character.
    #[error("invalid channel name")]
    BadChannel,
    /// The authorization policy refused.
    #[error("not allowed")]
    Forbidden,
    /// The connection has joined `max_channels_per_conn` channels already.
    #[error("too many channels on this connection")]
    TooManyChannels,
    /// The hub holds `max_channels` channels already.
    #[error("too many channels on this server")]
    ChannelLimit,
    /// The client message id is longer than `max_id_len`.
    #[error("message id too long")]
    BadId,
    /// The data of a server-side publish is not one JSON value.
    #[error("data is not JSON")]
    BadJson,
    /// The bus this hub publishes through is down (or, for [`Hub::submit`], there is no
    /// bus; for the local publishes, there is one): nothing was published.
    ///
    /// [`Hub::submit`]: super::Hub::submit
    #[error("the message bus is unavailable")]
    Unavailable,
    /// Too many publishes (or joins) wait for the application's decision, on this
    /// connection or in the hub ([`HubConfig::vet_publishes`](super::HubConfig::vet_publishes),
    /// [`JoinVerdict::Defer`](super::JoinVerdict::Defer)).
    #[error("too many requests waiting for a decision")]
    TooManyPending,
}

impl HubError {
    /// The `code` of the `err` reply: `unknown_conn`, `bad_channel`, `forbidden`,
    /// `too_many_channels`, `channel_limit`, `bad_message`, `bad_json`, `unavailable` or
    /// `too_many_pending`.
    #[must_use]
    pub fn code(self) -> &'static str {
        match self {
            Self::UnknownConn => "unknown_conn",
            Self::BadChannel => "bad_channel",
            Self::Forbidden => "forbidden",
            Self::TooManyChannels => "too_many_channels",
            Self::ChannelLimit => "channel_limit",
            Self::BadId => "bad_message",
            Self::BadJson => "bad_json",
            Self::Unavailable => "unavailable",
            Self::TooManyPending => "too_many_pending",
        }
    }
}

/// What a subscription started with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Subscription {
    /// The channel's head: the position the subscriber stands at once the replay is read.
    pub pos: Position,
    /// `false` when the position brought is gone: the subscriber MUST refetch the state
    /// and continue from `pos`; nothing was replayed.
    pub recovered: bool,
    /// Messages replayed (queued before any live message).
    pub replayed: usize,
    /// With a bus: the channel's log is still loading; the join completes (its
    /// `subscribed` or SSE opening, its replay) when it is, and `pos`, `recovered` and
    /// `replayed` say nothing yet. Also while the application decides the join (then
    /// `awaiting` names it).
    pub pending: bool,
    /// The join waits for the application's decision ([`HubEvent::JoinRequested`] with
    /// this id); its answer comes as [`HubEvent::JoinDecided`].
    pub awaiting: Option<super::JoinId>,
}

/// What the application and the adapter learn from the hub, pulled with
/// [`Hub::poll_event`](super::Hub::poll_event).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HubEvent {
    /// The adapter MUST close this connection: with `code` and `reason` on WebSocket
    /// (4100 "too slow", 1008 "rate limit exceeded"), by ending the response on SSE. The
    /// hub has already dropped it (its presence entries are in grace); a later
    /// [`Hub::disconnect`](super::Hub::disconnect) is a no-op.
    Close {
        /// The connection.
        conn: ConnId,
        /// The WebSocket close code.
        code: CloseCode,
        /// The close reason.
        reason: &'static str,
    },
    /// A polling client stopped polling and was dropped (its presence entries are in
    /// grace).
    Expired {
        /// The connection.
        conn: ConnId,
    },
    /// A message was appended to a channel (wake held polls; forward to other instances).
    Published {
        /// The channel.
        ch: Arc<str>,
        /// The message's position.
        pos: Position,
    },
    /// A name appeared in a channel's presence list.
    Joined {
        /// The channel.
        ch: Arc<str>,
        /// The presence name.
        member: Arc<str>,
    },
    /// A name left a channel's presence list (at once on `unsub`, after the grace period
    /// when its last connection dropped).
    Left {
        /// The channel.
        ch: Arc<str>,
        /// The presence name.
        member: Arc<str>,
    },
    /// With a bus: the answer to [`Hub::submit`](super::Hub::submit).
    Submitted {
        /// The submit's token.
        token: super::BusToken,
        /// The message's position (the first one's for a repeated id), or why it failed.
        result: Result<Position, super::HubError>,
    },
    /// With a bus: `ch`'s log is loaded; polls waiting for it can be answered.
    Synced {
        /// The channel.
        ch: Arc<str>,
    },
    /// With [`HubConfig::vet_publishes`](super::HubConfig::vet_publishes): a client
    /// publish waits for [`Hub::decide_publish`](super::Hub::decide_publish) (or its
    /// timeout), with or without a bus (with one, before anything reaches the bus). The
    /// application MUST answer it; it is never repeated.
    PublishRequested {
        /// Names it in the decision.
        id: super::PublishId,
        /// The publishing connection (`None`: without one, e.g. HTTP).
        conn: Option<ConnId>,
        /// Who publishes, as authenticated.
        principal: super::Principal,
        /// The channel.
        ch: Arc<str>,
        /// The data as sent (one JSON value, as text).
        data: bytes::Bytes,
    },
    /// The answer to a publish that came without a connection and was not answered at
    /// once ([`Hub::request_publish`](super::Hub::request_publish) returned
    /// [`PublishRequest::Pending`](super::PublishRequest::Pending): held for the
    /// application, or, with a bus, waiting for the bus's answer): its position, or why it
    /// was not logged.
    PublishDecided {
        /// The publish.
        id: super::PublishId,
        /// The position, or the refusal.
        result: Result<Position, super::PublishRefusal>,
    },
    /// A join waits for [`Hub::decide_join`](super::Hub::decide_join) (or its timeout):
    /// the policy answered [`JoinVerdict::Defer`](super::JoinVerdict::Defer). The
    /// application MUST answer it; it is never repeated.
    JoinRequested {
        /// Names it in the decision.
        id: super::JoinId,
        /// The joining connection.
        conn: ConnId,
        /// Who joins, as authenticated.
        principal: super::Principal,
        /// The channel.
        ch: Arc<str>,
    },
    /// A join that waited for the application ended: joined (what the subscription
    /// started with), or refused, timed out or cancelled (an `unsub`, or the connection
    /// left).
    JoinDecided {
        /// The join.
        id: super::JoinId,
        /// The connection.
        conn: ConnId,
        /// The channel.
        ch: Arc<str>,
        /// The subscription, or why there is none.
        result: Result<Subscription, super::JoinRefusal>,
    },
}

/// Hub-wide counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HubStats {
    /// Messages appended to logs (client and server publishes).
    pub published: u64,
    /// Client publishes recognized as duplicates by their id (acknowledged, not published).
    pub duplicates: u64,
    /// Connections closed with 4100 because a queue overflowed under `Disconnect`.
    pub too_slow: u64,
    /// Connections closed with 1008 by the inbound rate limit.
    pub rate_limited: u64,
    /// Polling clients expired.
    pub expired: u64,
}
