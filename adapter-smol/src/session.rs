//! [`Session`]: the core `ClientSession` on the adapter's outbound-socket driver
//! ([`crate::outbound::Client`]), with a bounded event queue and a timer task.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use smol::Executor;
use tidewire::client::{
    ClientMsgId, ClientSession, PublishError, SessionConfig, SessionEvent, SessionState,
    SubscribeError,
};
use tidewire::replay::Position;

use crate::outbound::Client;

/// Settings of the adapter's side of a [`Session`]; start from `SessionOptions::default()`.
/// Connections and requests are bounded in time by the core session's own deadlines
/// (`SessionConfig::ws.handshake_timeout`, `request_timeout`, heartbeats).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct SessionOptions {
    /// Events queued for [`Session::next_event`] at most (default 1024; then sockets wait).
    pub max_events: usize,
    /// The executor of the session's tasks; `None` (the default): smol's global executor.
    pub executor: Option<Arc<Executor<'static>>>,
}

impl Default for SessionOptions {
    fn default() -> Self {
        Self { max_events: 1024, executor: None }
    }
}

/// A reconnecting client session (WebSocket, else SSE, else long polling): the core
/// [`ClientSession`], whose docs give the semantics, on a timer task and a task per socket.
/// Dropping it closes it.
///
/// See the [crate docs](crate) for an example.
pub struct Session {
    client: Client<ClientSession>,
}

impl Session {
    /// Starts a session with default [`SessionOptions`] and returns at once; it connects in
    /// the background. A zero `cfg.rng_seed` is filled from OS entropy.
    #[must_use]
    pub fn connect(cfg: SessionConfig) -> Session {
        Self::with_options(cfg, SessionOptions::default())
    }

    /// As [`connect`](Self::connect), with adapter settings.
    #[must_use]
    pub fn with_options(mut cfg: SessionConfig, opts: SessionOptions) -> Session {
        if cfg.rng_seed == [0; 32] && getrandom::fill(&mut cfg.rng_seed).is_err() {
            let t = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
            cfg.rng_seed[..16].copy_from_slice(&t.as_nanos().to_le_bytes());
        }
        let session = ClientSession::new(cfg, Instant::now());
        Session { client: Client::start(session, opts.max_events, opts.executor) }
    }

    /// Subscribes to `ch` ([`ClientSession::subscribe`], with its errors).
    pub fn subscribe(&self, ch: &str) -> Result<(), SubscribeError> {
        self.client.with(|s, now| s.subscribe(now, ch))
    }

    /// As [`subscribe`](Self::subscribe), resuming after `pos` ([`ClientSession::subscribe_from`]).
    pub fn subscribe_from(&self, ch: &str, pos: Option<Position>) -> Result<(), SubscribeError> {
        self.client.with(|s, now| s.subscribe_from(now, ch, pos))
    }

    /// Leaves `ch` ([`ClientSession::unsubscribe`]).
    pub fn unsubscribe(&self, ch: &str) {
        self.client.with(|s, now| s.unsubscribe(now, ch));
    }

    /// Publishes one JSON value to `ch` ([`ClientSession::publish`], with its errors; not
    /// UTF-8 is [`PublishError::NotJson`]).
    pub fn publish(&self, ch: &str, json: impl AsRef<[u8]>) -> Result<ClientMsgId, PublishError> {
        let json = std::str::from_utf8(json.as_ref()).map_err(|_| PublishError::NotJson)?;
        self.client.with(|s, now| s.publish(now, ch, json))
    }

    /// New credentials ([`ClientSession::set_credentials`]).
    pub fn set_credentials(&self, token: &str) {
        self.client.with(|s, now| s.set_credentials(now, token));
    }

    /// Closes the session for good ([`ClientSession::close`]); [`next_event`](Self::next_event)
    /// then yields the remaining events, the `Closed` state change, and `None`.
    pub fn close(&self) {
        self.client.with(ClientSession::close);
    }

    /// The session's state ([`ClientSession::state`]).
    #[must_use]
    pub fn state(&self) -> SessionState {
        self.client.inspect(ClientSession::state)
    }

    /// Reads the core session, e.g. `session.inspect(|s| s.position(ch))`. Keep `f` short:
    /// the driver waits for it.
    pub fn inspect<T>(&self, f: impl FnOnce(&ClientSession) -> T) -> T {
        self.client.inspect(f)
    }

    /// The next event, waiting for it; `None` once closed and every event was handed out.
    pub async fn next_event(&mut self) -> Option<SessionEvent> {
        self.client.next_event().await
    }

    /// As [`next_event`](Self::next_event), waiting at most `timeout` (then `None`).
    pub async fn next_event_timeout(&mut self, timeout: Duration) -> Option<SessionEvent> {
        crate::until(crate::after(timeout), self.client.next_event()).await.flatten()
    }

    /// The next event if one is queued, without waiting.
    pub fn try_next_event(&mut self) -> Option<SessionEvent> {
        self.client.try_next_event()
    }
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.client.inspect(|s| {
            f.debug_struct("Session")
                .field("state", &s.state())
                .field("transport", &s.transport())
                .finish_non_exhaustive()
        })
    }
}
