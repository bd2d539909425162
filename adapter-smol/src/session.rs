//! [`Session`]: the core `ClientSession` on the adapter's outbound-socket driver
//! ([`crate::outbound::Client`]), with a bounded event queue and a timer task.

use std::fmt;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use smol::Executor;
use tidewire::client::{
    ClientMsgId, ClientSession, PublishError, SessionConfig, SessionEvent, SessionState,
    SubscribeError, Transport,
};
use tidewire::replay::Position;

use crate::outbound::Client;

/// Events queued for the application before the sockets stop being read.
const MAX_EVENTS: usize = 1024;

/// A reconnecting client session (WebSocket, else SSE, else long polling): the core
/// [`ClientSession`], whose docs give the semantics, on a timer task and a task per socket.
/// At most 1024 events wait for the application (then the sockets wait); dropping it closes it.
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
    /// Starts a session on smol's global executor and returns at once; it connects in the
    /// background. A zero `cfg.rng_seed` is filled from OS entropy.
    #[must_use]
    pub fn connect(cfg: SessionConfig) -> Session {
        Self::start(cfg, None)
    }

    /// As [`connect`](Self::connect), with the session's tasks on `executor`.
    #[must_use]
    pub fn connect_on(cfg: SessionConfig, executor: Arc<Executor<'static>>) -> Session {
        Self::start(cfg, Some(executor))
    }

    fn start(mut cfg: SessionConfig, executor: Option<Arc<Executor<'static>>>) -> Session {
        if cfg.rng_seed == [0; 32] && getrandom::fill(&mut cfg.rng_seed).is_err() {
            let t = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
            cfg.rng_seed[..16].copy_from_slice(&t.as_nanos().to_le_bytes());
        }
        let session = ClientSession::new(cfg, Instant::now());
        Session { client: Client::start(session, MAX_EVENTS, executor) }
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
    pub fn publish(&self, ch: &str, json: &[u8]) -> Result<ClientMsgId, PublishError> {
        let data = std::str::from_utf8(json).map_err(|_| PublishError::NotJson)?;
        self.client.with(|s, now| s.publish(now, ch, data))
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

    /// The next event, waiting for it; `None` once closed and every event was handed out.
    pub async fn next_event(&mut self) -> Option<SessionEvent> {
        self.client.next_event().await
    }

    /// The next event if one is queued, without waiting.
    pub fn try_next_event(&mut self) -> Option<SessionEvent> {
        self.client.try_next_event()
    }

    /// The session's state ([`ClientSession::state`]).
    #[must_use]
    pub fn state(&self) -> SessionState {
        self.client.inspect(ClientSession::state)
    }

    /// The transport in use or being tried ([`ClientSession::transport`]).
    #[must_use]
    pub fn transport(&self) -> Option<Transport> {
        self.client.inspect(ClientSession::transport)
    }

    /// The position of the last message delivered on `ch` ([`ClientSession::position`]).
    #[must_use]
    pub fn position(&self, ch: &str) -> Option<Position> {
        self.client.inspect(|s| s.position(ch))
    }

    /// Publishes not yet acknowledged ([`ClientSession::queued_publishes`]).
    #[must_use]
    pub fn queued_publishes(&self) -> usize {
        self.client.inspect(ClientSession::queued_publishes)
    }

    /// Messages dropped as duplicates ([`ClientSession::dropped_duplicates`]).
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
