//! [`Session`]: the core [`ClientSession`] (the reconnecting, transport-falling-back
//! client) on the adapter's one owner of client machines ([`crate::outbound::Client`]):
//! behind one mutex with the application's event queue, its sockets run by the
//! outbound-socket driver and its deadline by one timer thread. The queue is bounded by
//! [`SessionOptions::max_events`]: while it is full the sockets are not read, so an
//! application that stops reading events slows the session down instead of growing memory.

use std::time::{Duration, Instant};

use tidewire::client::{
    ClientMsgId, ClientSession, PublishError, SessionConfig, SessionEvent, SessionState,
    SubscribeError,
};

use crate::outbound::{Client, Dial};

/// Settings of the adapter's side of a [`Session`]. Build with `SessionOptions::default()`
/// and change fields.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct SessionOptions {
    /// Events queued for [`Session::next_event`] at most (default 1024).
    pub max_events: usize,
    /// Bytes read from a socket and not yet handed to the session at most (default 1 MiB):
    /// a socket reads at most this much (and [`read_chunk`](Self::read_chunk)) at a time.
    pub max_inbox: usize,
    /// Bytes read from a socket at a time (default 16 KiB).
    pub read_chunk: usize,
    /// The longest a TCP connection attempt may take (default 10 s).
    pub connect_timeout: Duration,
    /// A write that makes no progress for this long fails the socket (default 10 s).
    pub write_timeout: Duration,
}

impl Default for SessionOptions {
    fn default() -> Self {
        Self {
            max_events: 1024,
            max_inbox: 1 << 20,
            read_chunk: 16 << 10,
            connect_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
        }
    }
}

/// A reconnecting client session with a Tidewire server (WebSocket, else SSE, else long
/// polling; see [`tidewire::client`]), driven by its own thread.
///
/// [`connect`](Self::connect) returns at once; the session connects in the background and
/// reports everything as [`SessionEvent`]s through [`next_event`](Self::next_event):
/// state changes, messages (once each, in order per channel), `RefetchNeeded` when the
/// server lost a channel's history, acknowledgements. Subscriptions and publishes made
/// while disconnected are kept (publishes in a bounded queue) and sent after every
/// (re)connection; a publish is delivered once thanks to its id.
///
/// Dropping the session closes it (a WebSocket gets a close frame) and stops its thread.
///
/// ```
/// use std::time::Duration;
/// use tidewire_std::tidewire::client::{SessionConfig, SessionEvent};
/// use tidewire_std::tidewire::server::Routes;
/// use tidewire_std::{Server, ServerConfig, Session};
///
/// // A hub server on a free port: the core server's routes, everyone anonymous.
/// let mut cfg = ServerConfig::default();
/// cfg.endpoint.routes = Routes::default();
/// let server = Server::bind("127.0.0.1:0", cfg)?;
/// let port = server.local_addr().port();
/// let handle = server.handle();
/// let serving = std::thread::spawn(move || server.serve(|up| drop(up.reject(404, &[], b""))));
///
/// let mut session = Session::connect(SessionConfig::new("127.0.0.1", port));
/// session.subscribe("news")?;
/// let id = session.publish("news", r#"{"title":"hello"}"#)?;
/// let (mut got_message, mut acked) = (false, false);
/// while !(got_message && acked) {
///     match session.next_event_timeout(Duration::from_secs(10)).expect("an event") {
///         SessionEvent::Message { ch, data, .. } => {
///             assert_eq!((ch.as_str(), data.as_str()), ("news", r#"{"title":"hello"}"#));
///             got_message = true;
///         }
///         SessionEvent::Acked { id: acked_id, .. } => acked = acked_id == id,
///         _ => {} // state changes
///     }
/// }
///
/// session.close();
/// handle.shutdown(Duration::from_secs(1));
/// serving.join().unwrap()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Session {
    client: Client<ClientSession>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").field("state", &self.state()).finish_non_exhaustive()
    }
}

impl Session {
    /// Starts a session with default [`SessionOptions`]; returns at once (the first
    /// connection is made in the background). An all-zero `cfg.rng_seed` is replaced by OS
    /// entropy.
    ///
    /// # Panics
    /// If the driver thread cannot be spawned.
    #[must_use]
    pub fn connect(cfg: SessionConfig) -> Session {
        Self::with_options(cfg, SessionOptions::default())
    }

    /// As [`connect`](Self::connect), with adapter settings.
    ///
    /// # Panics
    /// If the driver thread cannot be spawned.
    #[must_use]
    #[allow(clippy::needless_pass_by_value)] // the public signature takes it by value
    pub fn with_options(mut cfg: SessionConfig, opts: SessionOptions) -> Session {
        if cfg.rng_seed == [0; 32] && getrandom::fill(&mut cfg.rng_seed).is_err() {
            let s = crate::fallback_seed().to_le_bytes();
            cfg.rng_seed[..8].copy_from_slice(&s);
        }
        let session = ClientSession::new(cfg, Instant::now());
        let dial = Dial {
            connect_timeout: opts.connect_timeout,
            write_timeout: opts.write_timeout,
            read_chunk: opts.read_chunk.min(opts.max_inbox),
        };
        let client = Client::start(session, dial, opts.max_events, "tidewire-session");
        Session { client: client.expect("spawn the session's driver thread") }
    }

    /// Subscribes to `ch` (resumed with its position after every reconnection).
    ///
    /// # Errors
    /// [`SubscribeError::Closed`] once closed, [`SubscribeError::BadName`].
    pub fn subscribe(&self, ch: &str) -> Result<(), SubscribeError> {
        self.client.with(|s, now| s.subscribe(now, ch))
    }

    /// Leaves `ch`; no more of its messages are delivered.
    pub fn unsubscribe(&self, ch: &str) {
        self.client.with(|s, now| s.unsubscribe(now, ch));
    }

    /// Publishes `json` (one JSON value, UTF-8: a `&str` or bytes) to `ch`: sent when open, queued (bounded) while
    /// not, resent with the same id after a reconnection until acknowledged
    /// ([`SessionEvent::Acked`] / [`SessionEvent::PublishFailed`]).
    ///
    /// # Errors
    /// [`PublishError::Closed`], [`PublishError::NotJson`], [`PublishError::TooLarge`].
    pub fn publish(&self, ch: &str, json: impl AsRef<[u8]>) -> Result<ClientMsgId, PublishError> {
        let json = std::str::from_utf8(json.as_ref()).map_err(|_| PublishError::NotJson)?;
        self.client.with(|s, now| s.publish(now, ch, json))
    }

    /// New credentials, used from the next connection (a session waiting for them after an
    /// auth failure reconnects at once).
    pub fn set_credentials(&self, token: &str) {
        self.client.with(|s, now| s.set_credentials(now, token));
    }

    /// Closes the session for good (a WebSocket gets a 1000 close frame); a
    /// `State(Closed)` event follows, then [`next_event`](Self::next_event) returns `None`.
    pub fn close(&self) {
        self.client.with(ClientSession::close);
    }

    /// The current state.
    #[must_use]
    pub fn state(&self) -> SessionState {
        self.client.inspect(ClientSession::state)
    }

    /// Reads the core session (transport, positions, queued publishes, counters…). Keep
    /// `f` short: the driver waits for it.
    pub fn inspect<T>(&self, f: impl FnOnce(&ClientSession) -> T) -> T {
        self.client.inspect(f)
    }

    /// The next event, waiting for it. `None` once the session is closed and its
    /// `State(Closed)` event was delivered.
    pub fn next_event(&mut self) -> Option<SessionEvent> {
        self.client.next_event(None)
    }

    /// As [`next_event`](Self::next_event), waiting at most `timeout` (then `None`; look at
    /// [`state`](Self::state) to tell the cases apart).
    pub fn next_event_timeout(&mut self, timeout: Duration) -> Option<SessionEvent> {
        self.client.next_event(Some(Instant::now() + timeout))
    }
}
