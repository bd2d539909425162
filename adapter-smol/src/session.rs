//! [`Session`]: a core `ClientSession` driven over TCP sockets opened by the adapter's
//! outbound-socket driver, on its one owner of client machines ([`crate::outbound::Client`]).

use std::fmt;
use std::sync::Arc;

use smol::Executor;
use tidewire::client::{
    ClientMsgId, ClientSession, PublishError, SessionConfig, SessionEvent, SessionState,
    SubscribeError, Transport,
};
use tidewire::replay::Position;

use crate::outbound::Client;

/// Events queued for the application before the sockets stop being read.
const MAX_EVENTS: usize = 1024;

/// A reconnecting client session: WebSocket first, then SSE, then long polling, with
/// resume, backoff, publish queue and credentials handled by the core's [`ClientSession`].
///
/// Dropping the session closes it (as [`close`](Self::close)); its driver finishes the
/// WebSocket's close handshake on its own.
///
/// One task per session fires the session's timer; one task per socket connects, reads and
/// writes. Everything is bounded: the application's event queue (1024 events; when it is full the
/// socket tasks stop reading, so the server is pushed back through TCP), and the bytes
/// waiting for the sockets (1 MiB over all sockets; past it the driver stops pulling from
/// the session, whose own WebSocket outbox then applies backpressure).
///
/// # Example
///
/// A session against a hub server: subscribe, then receive a server-side publish.
///
/// ```
/// use std::time::Duration;
/// use tidewire::client::{SessionConfig, SessionEvent};
/// use tidewire_smol::{Routes, Server, ServerConfig, Session};
///
/// smol::block_on(async {
///     let mut cfg = ServerConfig::default();
///     cfg.endpoint.routes = Routes::default(); // the hub at /ws, /events, /poll, /api/publish
///     let server = Server::bind("127.0.0.1:0", cfg).await?;
///     let hub = server.handle();
///     let handle = hub.clone();
///     let serving = smol::spawn(server.serve(|up| async move { drop(up) }));
///
///     let addr = handle.local_addr();
///     let mut session = Session::connect(SessionConfig::new(addr.ip().to_string(), addr.port()));
///     session.subscribe("news")?;
///     // Publish once the subscription is in place, then read the message.
///     while hub.head("news").is_none() {
///         smol::Timer::after(Duration::from_millis(5)).await;
///     }
///     hub.publish("news", br#"{"title":"hello"}"#)?;
///     loop {
///         match session.next_event().await {
///             Some(SessionEvent::Message { ch, data, .. }) => {
///                 assert_eq!((ch.as_str(), data.as_str()), ("news", r#"{"title":"hello"}"#));
///                 break;
///             }
///             Some(_) => {}
///             None => panic!("session closed"),
///         }
///     }
///
///     session.close();
///     while session.next_event().await.is_some() {}
///     handle.shutdown(Duration::from_secs(2)).await;
///     serving.await?;
///     Ok::<_, Box<dyn std::error::Error>>(())
/// })
/// .unwrap();
/// ```
pub struct Session {
    client: Client<ClientSession>,
}

impl Session {
    /// Starts a session and returns at once; it connects in the background on smol's
    /// global executor. A zero `cfg.rng_seed` is filled from OS entropy.
    #[must_use]
    pub fn connect(cfg: SessionConfig) -> Session {
        Self::start(cfg, None)
    }

    /// As [`connect`](Self::connect), with the driver and socket tasks on `executor`.
    #[must_use]
    pub fn connect_on(cfg: SessionConfig, executor: Arc<Executor<'static>>) -> Session {
        Self::start(cfg, Some(executor))
    }

    fn start(mut cfg: SessionConfig, executor: Option<Arc<Executor<'static>>>) -> Session {
        if cfg.rng_seed == [0; 32] && getrandom::fill(&mut cfg.rng_seed).is_err() {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            cfg.rng_seed[..16].copy_from_slice(&t.as_nanos().to_le_bytes());
        }
        let session = ClientSession::new(cfg, std::time::Instant::now());
        Session { client: Client::start(session, MAX_EVENTS, executor) }
    }

    /// Subscribes to `ch` (a no-op if subscribed already); its messages arrive as
    /// [`SessionEvent::Message`], resumed across reconnections.
    ///
    /// # Errors
    /// [`SubscribeError`]: closed, or a bad channel name.
    pub fn subscribe(&self, ch: &str) -> Result<(), SubscribeError> {
        self.client.with(|s, now| s.subscribe(now, ch))
    }

    /// As [`subscribe`](Self::subscribe), resuming after `pos` (a position a previous
    /// session reached).
    ///
    /// # Errors
    /// As [`subscribe`](Self::subscribe).
    pub fn subscribe_from(&self, ch: &str, pos: Option<Position>) -> Result<(), SubscribeError> {
        self.client.with(|s, now| s.subscribe_from(now, ch, pos))
    }

    /// Leaves `ch`.
    pub fn unsubscribe(&self, ch: &str) {
        self.client.with(|s, now| s.unsubscribe(now, ch));
    }

    /// Publishes one JSON value to `ch`: sent when open, queued (bounded) while not, sent
    /// again with the same id after a reconnection until acknowledged
    /// ([`SessionEvent::Acked`]).
    ///
    /// # Errors
    /// [`PublishError`]: closed, not JSON (or not UTF-8), too large.
    pub fn publish(&self, ch: &str, json: &[u8]) -> Result<ClientMsgId, PublishError> {
        let data = std::str::from_utf8(json).map_err(|_| PublishError::NotJson)?;
        self.client.with(|s, now| s.publish(now, ch, data))
    }

    /// New credentials for the next connection (after
    /// [`SessionEvent::CredentialsNeeded`], a waiting session reconnects at once).
    pub fn set_credentials(&self, token: &str) {
        self.client.with(|s, now| s.set_credentials(now, token));
    }

    /// Closes the session for good (WebSocket close 1000); [`next_event`](Self::next_event)
    /// then yields the remaining events, the `Closed` state change, and `None`.
    pub fn close(&self) {
        self.client.with(ClientSession::close);
    }

    /// The next event; waits for one. `None` once the session is closed and every event
    /// was handed out.
    pub async fn next_event(&mut self) -> Option<SessionEvent> {
        self.client.next_event().await
    }

    /// The next event if one is queued, without waiting.
    pub fn try_next_event(&mut self) -> Option<SessionEvent> {
        self.client.try_next_event()
    }

    /// The session's state.
    #[must_use]
    pub fn state(&self) -> SessionState {
        self.client.inspect(ClientSession::state)
    }

    /// The transport in use or being tried (`None` once closed).
    #[must_use]
    pub fn transport(&self) -> Option<Transport> {
        self.client.inspect(ClientSession::transport)
    }

    /// The position of the last message delivered on `ch`.
    #[must_use]
    pub fn position(&self, ch: &str) -> Option<Position> {
        self.client.inspect(|s| s.position(ch))
    }

    /// Publishes not yet acknowledged.
    #[must_use]
    pub fn queued_publishes(&self) -> usize {
        self.client.inspect(ClientSession::queued_publishes)
    }

    /// Messages dropped as duplicates or stale.
    #[must_use]
    pub fn dropped_duplicates(&self) -> u64 {
        self.client.inspect(ClientSession::dropped_duplicates)
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
