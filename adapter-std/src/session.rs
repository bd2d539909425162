//! [`Session`]: the core [`ClientSession`] on the adapter's outbound-socket driver
//! ([`crate::outbound::Client`]), with a bounded event queue and a timer thread.

use std::time::{Duration, Instant};

use tidewire::client::{
    ClientMsgId, ClientSession, PublishError, SessionConfig, SessionEvent, SessionState,
    SubscribeError,
};
use tidewire::replay::Position;

use crate::outbound::{Client, Dial};

/// Settings of the adapter's side of a [`Session`]; start from `SessionOptions::default()`.
/// Connections and requests are bounded in time by the core session's own deadlines
/// (`SessionConfig::ws.handshake_timeout`, `request_timeout`, heartbeats).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct SessionOptions {
    /// Events queued for [`Session::next_event`] at most (default 1024; then sockets wait).
    pub max_events: usize,
}

impl Default for SessionOptions {
    fn default() -> Self {
        Self { max_events: 1024 }
    }
}

/// A reconnecting client session with a Tidewire server (WebSocket, else SSE, else long
/// polling): the core [`ClientSession`], whose docs give the semantics, on its own threads.
/// Dropping it closes it.
///
/// See the [crate docs](crate) for an example.
pub struct Session {
    client: Client<ClientSession>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").field("state", &self.state()).finish_non_exhaustive()
    }
}

impl Session {
    /// Starts a session with default [`SessionOptions`] and returns at once; it connects in
    /// the background. An all-zero `cfg.rng_seed` is replaced by OS entropy. Panics if the
    /// driver thread cannot be spawned.
    #[must_use]
    pub fn connect(cfg: SessionConfig) -> Session {
        Self::with_options(cfg, SessionOptions::default())
    }

    /// As [`connect`](Self::connect), with adapter settings.
    #[must_use]
    #[allow(clippy::needless_pass_by_value)] // the public signature takes it by value
    pub fn with_options(mut cfg: SessionConfig, opts: SessionOptions) -> Session {
        if cfg.rng_seed == [0; 32] && getrandom::fill(&mut cfg.rng_seed).is_err() {
            cfg.rng_seed[..8].copy_from_slice(&crate::fallback_seed().to_le_bytes());
        }
        let session = ClientSession::new(cfg, Instant::now());
        let ten = Duration::from_secs(10); // backstops: the core's deadlines come first
        let dial = Dial { connect_timeout: ten, write_timeout: ten, read_chunk: 16 << 10 };
        let client = Client::start(session, dial, opts.max_events, "tidewire-session");
        Session { client: client.expect("spawn the session's driver thread") }
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

    /// Publishes `json` (one JSON value, UTF-8) to `ch` ([`ClientSession::publish`], with its
    /// errors; not UTF-8 is [`PublishError::NotJson`]).
    pub fn publish(&self, ch: &str, json: impl AsRef<[u8]>) -> Result<ClientMsgId, PublishError> {
        let json = std::str::from_utf8(json.as_ref()).map_err(|_| PublishError::NotJson)?;
        self.client.with(|s, now| s.publish(now, ch, json))
    }

    /// New credentials ([`ClientSession::set_credentials`]).
    pub fn set_credentials(&self, token: &str) {
        self.client.with(|s, now| s.set_credentials(now, token));
    }

    /// Closes the session for good ([`ClientSession::close`]); [`next_event`](Self::next_event)
    /// then returns the last events, `State(Closed)`, and `None`.
    pub fn close(&self) {
        self.client.with(ClientSession::close);
    }

    /// The current state ([`ClientSession::state`]).
    #[must_use]
    pub fn state(&self) -> SessionState {
        self.client.inspect(ClientSession::state)
    }

    /// Reads the core session, e.g. `session.inspect(|s| s.position(ch))`. Keep `f` short:
    /// the driver waits for it.
    pub fn inspect<T>(&self, f: impl FnOnce(&ClientSession) -> T) -> T {
        self.client.inspect(f)
    }

    /// The next event, waiting for it; `None` once closed and `State(Closed)` was delivered.
    pub fn next_event(&mut self) -> Option<SessionEvent> {
        self.client.next_event(None)
    }

    /// As [`next_event`](Self::next_event), waiting at most `timeout` (then `None`).
    pub fn next_event_timeout(&mut self, timeout: Duration) -> Option<SessionEvent> {
        self.client.next_event(Instant::now().checked_add(timeout))
    }

    /// The next event if one is queued, without waiting.
    pub fn try_next_event(&mut self) -> Option<SessionEvent> {
        self.client.next_event(Some(Instant::now()))
    }
}
