//! The public vocabulary of a session: states, events and errors (its sockets and actions
//! are [`crate::socket`]'s).

use crate::replay::Position;
use crate::time::Instant;
use crate::ws::CloseCode;

use super::config::Transport;

/// The state of a session (DESIGN.md "Connection states (client)").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SessionState {
    /// A connection attempt is under way.
    Connecting,
    /// Connected: messages flow.
    Open,
    /// Waiting for the next attempt; [`ClientSession::next_retry_at`](super::ClientSession::next_retry_at)
    /// says until when.
    Reconnecting,
    /// Terminal: closed by the application, by a terminal close code, by an auth failure
    /// without fresh credentials, or because the attempts are exhausted.
    Closed,
}

/// Why the state changed, carried by every [`StateChange`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reason {
    /// The session was created (state `Connecting`).
    Started,
    /// The reconnection delay passed (state `Connecting`).
    RetryDue,
    /// The application gave fresh credentials after an auth failure (state `Connecting`).
    NewCredentials,
    /// The transport opened (state `Open`).
    Connected,
    /// A better transport opened while the session was open on a worse one (state `Open`,
    /// now on WebSocket).
    Upgraded,
    /// The WebSocket closed with this code (1006 when it ended without a close frame).
    Closed {
        /// The close code.
        code: CloseCode,
        /// The close reason.
        reason: String,
    },
    /// The server answered an upgrade, a stream or a poll with this HTTP status.
    Status(u16),
    /// The connection failed, or ended before its response.
    Network,
    /// A handshake, a response or the next sign of life did not arrive in time.
    Timeout,
    /// The server's answer was not what the protocol allows.
    Protocol,
    /// An auth failure, and no fresh credentials arrived before the next attempt (state
    /// `Closed`).
    NoCredentials,
    /// The backoff gave up ([`BackoffConfig`](crate::policy::BackoffConfig) `max_attempts`
    /// or `max_elapsed`; state `Closed`).
    Exhausted,
    /// The application called [`close`](super::ClientSession::close) (state `Closed`).
    App,
    /// The configuration cannot be written into a request (a host or token with a line
    /// break, say; state `Closed`).
    InvalidConfig,
}

/// A change of [`SessionState`], for the application and its connection banner
/// ("Reconnecting in 4 s…").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateChange {
    /// The new state.
    pub state: SessionState,
    /// Why.
    pub reason: Reason,
    /// Connection attempts in a row so far: 0 for the first, then 1, 2, … for each
    /// reconnection; `Reconnecting` carries the number of the attempt it schedules. A
    /// connection that stayed up for the backoff's `healthy_after` starts a new row.
    pub attempt: u32,
    /// With `Reconnecting`: when the next attempt starts.
    pub next_retry: Option<Instant>,
    /// The transport in use or being tried (`None` once `Closed`).
    pub transport: Option<Transport>,
}

/// A publish, named by the session. On the wire the id is prefixed with a random session
/// nonce, so that ids of different sessions never collide in the hub's dedup window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientMsgId(pub u64);

/// What the session reports to the application, pulled with
/// [`ClientSession::poll_event`](super::ClientSession::poll_event).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionEvent {
    /// The state changed.
    State(StateChange),
    /// A channel message, delivered exactly once and in order per channel.
    Message {
        /// The channel.
        ch: String,
        /// Its position.
        pos: Position,
        /// Who published it, as the server authenticated them; `None` for an anonymous
        /// client or a trusted server-side publish, or in a channel that hides publishers.
        from: Option<String>,
        /// Its data, as JSON text.
        data: String,
    },
    /// The channel's history could not be recovered (the server restarted, or the log was
    /// trimmed): refetch the channel's state; the messages after `pos` follow.
    RefetchNeeded {
        /// The channel.
        ch: String,
        /// Where the session continues from.
        pos: Position,
    },
    /// The server refused a subscription (a WebSocket `err` to the `sub`, or a 403 on the
    /// channel's stream or poll); the channel is dropped.
    SubscribeFailed {
        /// The channel.
        ch: String,
        /// The server's code (`forbidden`, …).
        code: String,
    },
    /// Members joined or left a channel (WebSocket only).
    Presence {
        /// The channel.
        ch: String,
        /// Who joined.
        join: Vec<String>,
        /// Who left.
        leave: Vec<String>,
    },
    /// A publish was accepted by the server.
    Acked {
        /// The publish.
        id: ClientMsgId,
        /// Where it was placed, if the server said.
        pos: Option<Position>,
    },
    /// A publish failed for good: `code` is the server's `err` code, `http_<status>` for an
    /// HTTP publish, `dropped` when the offline queue was full, or `closed` when the session
    /// closed before an acknowledgement.
    PublishFailed {
        /// The publish.
        id: ClientMsgId,
        /// Why.
        code: String,
    },
    /// The server refused the credentials (HTTP 401/403 on the upgrade or a stream, or
    /// close 1008): call [`set_credentials`](super::ClientSession::set_credentials) before
    /// the next attempt, or the session closes with [`Reason::NoCredentials`].
    CredentialsNeeded,
    /// An `err` from the server that answers no request of this session.
    ServerError {
        /// The code.
        code: String,
        /// The explanation.
        msg: String,
    },
}

/// Why [`ClientSession::publish`](super::ClientSession::publish) refused a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// The session is closed.
    #[error("session is closed")]
    Closed,
    /// The data is not one JSON value.
    #[error("data is not JSON")]
    NotJson,
    /// The message alone is larger than the queue's byte bound.
    #[error("message larger than the publish queue")]
    TooLarge,
}

/// Why [`ClientSession::subscribe`](super::ClientSession::subscribe) refused a channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SubscribeError {
    /// The session is closed.
    #[error("session is closed")]
    Closed,
    /// The channel name is empty, longer than 256 bytes, or holds a control character.
    #[error("invalid channel name")]
    BadName,
}

/// The session's timers, as reported by
/// [`ClientSession::timeout_reason`](super::ClientSession::timeout_reason).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionTimer {
    /// The reconnection delay ends.
    Reconnect,
    /// Time to try WebSocket again from a worse transport.
    Upgrade,
    /// An HTTP publish that failed is retried.
    PublishRetry,
    /// A channel's next poll may start.
    Poll,
    /// A socket's deadline: a WebSocket timer, a response or an idle stream.
    Socket,
}
