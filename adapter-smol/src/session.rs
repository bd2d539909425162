//! [`Session`]: a core `ClientSession` driven over TCP sockets opened by the adapter's
//! outbound-socket driver ([`crate::outbound`]).

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use event_listener::Event as Notify;
use smol::Executor;
use tidewire::client::{
    ClientMsgId, ClientSession, PublishError, SessionConfig, SessionEvent, SessionState,
    SubscribeError, Transport,
};
use tidewire::replay::Position;

use crate::outbound::{self, Host, Sockets};

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
    shared: Arc<Shared>,
    /// The `Closed` state change was handed out.
    closed_seen: bool,
}

struct Shared {
    core: Mutex<Core>,
    /// Something for the driver: a command, input, a socket's end, room.
    wake: Notify,
    /// An event was queued for the application (or the driver ended).
    events_ready: Notify,
    /// The application took events: sockets may be read again.
    room: Notify,
    executor: Option<Arc<Executor<'static>>>,
}

struct Core {
    session: ClientSession,
    socks: Sockets<Shared>,
    events: VecDeque<SessionEvent>,
    /// The deadline the driver task waits for.
    deadline: Option<Instant>,
    driver_done: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Core> {
        self.core.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        crate::driver::spawn_on(self.executor.as_ref(), task);
    }

    /// Runs a command on the session, then its output.
    fn command<T>(&self, f: impl FnOnce(&mut ClientSession, Instant) -> T) -> T {
        self.with(|session, _, now| f(session, now))
    }

    /// Step 3 of the run loop, under the lock: sockets, then events while there is room.
    fn after(&self, core: &mut Core) {
        let Core { session, socks, events, deadline, .. } = core;
        outbound::drain(self, session, socks);
        let ended = session.state() == SessionState::Closed && socks.len() == 0;
        if ended || session.poll_timeout() != *deadline {
            self.wake.notify(1);
        }
        let mut arrived = false;
        while events.len() < MAX_EVENTS {
            let Some(ev) = session.poll_event() else { break };
            events.push_back(ev);
            arrived = true;
        }
        if arrived {
            self.events_ready.notify(usize::MAX);
        }
    }
}

impl Host for Shared {
    type Machine = ClientSession;

    fn with<T>(&self, f: impl FnOnce(&mut ClientSession, &mut Sockets<Self>, Instant) -> T) -> T {
        let mut core = self.lock();
        let Core { session, socks, .. } = &mut *core;
        let out = f(session, socks, Instant::now());
        self.after(&mut core);
        out
    }

    fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        Shared::spawn(self, task);
    }

    async fn room(&self) {
        loop {
            let listener = self.room.listen();
            let full = {
                let core = self.lock();
                core.events.len() >= MAX_EVENTS && !core.driver_done
            };
            if !full {
                return;
            }
            listener.await;
        }
    }
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
        let session = ClientSession::new(cfg, Instant::now());
        let shared = Arc::new_cyclic(|me| Shared {
            core: Mutex::new(Core {
                session,
                socks: Sockets::new(me.clone()),
                events: VecDeque::new(),
                deadline: None,
                driver_done: false,
            }),
            wake: Notify::new(),
            events_ready: Notify::new(),
            room: Notify::new(),
            executor,
        });
        shared.spawn(drive(shared.clone()));
        Session { shared, closed_seen: false }
    }

    /// Subscribes to `ch` (a no-op if subscribed already); its messages arrive as
    /// [`SessionEvent::Message`], resumed across reconnections.
    ///
    /// # Errors
    /// [`SubscribeError`]: closed, or a bad channel name.
    pub fn subscribe(&self, ch: &str) -> Result<(), SubscribeError> {
        self.shared.command(|s, now| s.subscribe(now, ch))
    }

    /// As [`subscribe`](Self::subscribe), resuming after `pos` (a position a previous
    /// session reached).
    ///
    /// # Errors
    /// As [`subscribe`](Self::subscribe).
    pub fn subscribe_from(&self, ch: &str, pos: Option<Position>) -> Result<(), SubscribeError> {
        self.shared.command(|s, now| s.subscribe_from(now, ch, pos))
    }

    /// Leaves `ch`.
    pub fn unsubscribe(&self, ch: &str) {
        self.shared.command(|s, now| s.unsubscribe(now, ch));
    }

    /// Publishes one JSON value to `ch`: sent when open, queued (bounded) while not, sent
    /// again with the same id after a reconnection until acknowledged
    /// ([`SessionEvent::Acked`]).
    ///
    /// # Errors
    /// [`PublishError`]: closed, not JSON (or not UTF-8), too large.
    pub fn publish(&self, ch: &str, json: &[u8]) -> Result<ClientMsgId, PublishError> {
        let data = std::str::from_utf8(json).map_err(|_| PublishError::NotJson)?;
        self.shared.command(|s, now| s.publish(now, ch, data))
    }

    /// New credentials for the next connection (after
    /// [`SessionEvent::CredentialsNeeded`], a waiting session reconnects at once).
    pub fn set_credentials(&self, token: &str) {
        self.shared.command(|s, now| s.set_credentials(now, token));
    }

    /// Closes the session for good (WebSocket close 1000); [`next_event`](Self::next_event)
    /// then yields the remaining events, the `Closed` state change, and `None`.
    pub fn close(&self) {
        self.shared.command(ClientSession::close);
    }

    /// The next event; waits for one. `None` once the session is closed and every event
    /// was handed out.
    pub async fn next_event(&mut self) -> Option<SessionEvent> {
        loop {
            let listener = self.shared.events_ready.listen();
            if let Some(ev) = self.try_next_event() {
                return Some(ev);
            }
            if self.closed_seen || self.shared.lock().driver_done {
                return None;
            }
            listener.await;
        }
    }

    /// The next event if one is queued, without waiting.
    pub fn try_next_event(&mut self) -> Option<SessionEvent> {
        let mut core = self.shared.lock();
        let ev = core.events.pop_front()?;
        self.shared.after(&mut core);
        drop(core);
        if matches!(&ev, SessionEvent::State(c) if c.state == SessionState::Closed) {
            self.closed_seen = true;
        }
        self.shared.room.notify(usize::MAX);
        self.shared.wake.notify(1);
        Some(ev)
    }

    /// The session's state.
    #[must_use]
    pub fn state(&self) -> SessionState {
        self.shared.lock().session.state()
    }

    /// The transport in use or being tried (`None` once closed).
    #[must_use]
    pub fn transport(&self) -> Option<Transport> {
        self.shared.lock().session.transport()
    }

    /// The position of the last message delivered on `ch`.
    #[must_use]
    pub fn position(&self, ch: &str) -> Option<Position> {
        self.shared.lock().session.position(ch)
    }

    /// Publishes not yet acknowledged.
    #[must_use]
    pub fn queued_publishes(&self) -> usize {
        self.shared.lock().session.queued_publishes()
    }

    /// Messages dropped as duplicates or stale.
    #[must_use]
    pub fn dropped_duplicates(&self) -> u64 {
        self.shared.lock().session.dropped_duplicates()
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let mut core = self.shared.lock();
        if core.session.state() != SessionState::Closed {
            core.session.close(Instant::now());
        }
        drop(core);
        self.shared.wake.notify(1);
    }
}

impl fmt::Debug for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let core = self.shared.lock();
        f.debug_struct("Session")
            .field("state", &core.session.state())
            .field("transport", &core.session.transport())
            .field("sockets", &core.socks.len())
            .field("events", &core.events.len())
            .finish_non_exhaustive()
    }
}

/// The driver task: the session's timer, until it is closed and every socket is gone.
async fn drive(shared: Arc<Shared>) {
    crate::driver::run_timer(&shared.wake, |now| {
        let mut core = shared.lock();
        if core.session.poll_timeout().is_some_and(|d| d <= now) {
            core.session.handle_timeout(now);
        }
        shared.after(&mut core);
        if core.session.state() == SessionState::Closed && core.socks.len() == 0 {
            core.driver_done = true;
            drop(core);
            shared.events_ready.notify(usize::MAX);
            shared.room.notify(usize::MAX);
            return None;
        }
        core.deadline = core.session.poll_timeout();
        Some(core.deadline)
    })
    .await;
}
