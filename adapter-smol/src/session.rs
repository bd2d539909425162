//! [`Session`]: a core `ClientSession` driven over TCP sockets.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::net::Shutdown;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use bytes::Bytes;
use event_listener::Event as Notify;
use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::net::TcpStream;
use smol::{Executor, Timer, future};
use tidewire::client::{
    ClientMsgId, ClientSession, PublishError, SessionAction, SessionConfig, SessionEvent,
    SessionState, SockId, SubscribeError, Transport,
};
use tidewire::replay::Position;

/// Events queued for the application before the sockets stop being read.
const MAX_EVENTS: usize = 1024;
/// Bytes waiting for the sockets (all of them) before the driver stops pulling.
const MAX_OUT: usize = 1 << 20;
/// Read buffer of each socket.
const READ_BUF: usize = 16 << 10;

/// A reconnecting client session: WebSocket first, then SSE, then long polling, with
/// resume, backoff, publish queue and credentials handled by the core's [`ClientSession`].
///
/// Dropping the session closes it (as [`close`](Self::close)); its driver finishes the
/// WebSocket's close handshake on its own.
///
/// The session is a core [`ClientSession`] driven over TCP sockets.
///
/// One *driver task* per session runs the core's loop ("Sockets" in
/// [`tidewire::client`]): it fires the session's one timer, moves the bytes the session
/// queued to their sockets, opens and closes sockets as the session asks
/// ([`SessionAction`]), and moves the session's events to the application's queue. Each
/// socket has a small task of its own that connects, feeds what it reads to the session
/// (`handle_read`, `handle_eof`, `handle_error`) and writes what the driver queued for
/// it. The session sits behind one mutex shared by these tasks and the [`Session`] handle,
/// never held across an `.await`.
///
/// Everything is bounded: the application's event queue (1024 events; when it is full the
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
    socks: HashMap<SockId, Slot>,
    /// Bytes in every slot's `out`.
    out_bytes: usize,
    events: VecDeque<SessionEvent>,
    driver_done: bool,
}

/// One socket as the driver sees it.
struct Slot {
    out: VecDeque<Bytes>,
    /// The session asked to close it once `out` is written.
    closing: bool,
    notify: Arc<Notify>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Core> {
        self.core.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        match &self.executor {
            Some(ex) => ex.spawn(task).detach(),
            None => smol::spawn(task).detach(),
        }
    }

    /// Runs a command on the session and wakes the driver.
    fn command<T>(&self, f: impl FnOnce(&mut ClientSession, Instant) -> T) -> T {
        let r = f(&mut self.lock().session, Instant::now());
        self.wake.notify(1);
        r
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
        let shared = Arc::new(Shared {
            core: Mutex::new(Core {
                session,
                socks: HashMap::new(),
                out_bytes: 0,
                events: VecDeque::new(),
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
        let ev = self.shared.lock().events.pop_front()?;
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

/// Moves the session's output: bytes to the sockets, actions, events. Call with the lock.
fn pump(shared: &Arc<Shared>, core: &mut Core) {
    loop {
        let mut progress = false;
        while core.out_bytes < MAX_OUT {
            let Some((sock, bytes)) = core.session.poll_transmit() else { break };
            progress = true;
            if let Some(slot) = core.socks.get_mut(&sock) {
                core.out_bytes += bytes.len();
                slot.out.push_back(bytes);
                slot.notify.notify(1);
            }
        }
        while let Some(action) = core.session.poll_action() {
            progress = true;
            match action {
                SessionAction::Connect { sock, host, port } => {
                    let notify = Arc::new(Notify::new());
                    let slot =
                        Slot { out: VecDeque::new(), closing: false, notify: notify.clone() };
                    core.socks.insert(sock, slot);
                    shared.spawn(run_socket(shared.clone(), sock, host, port, notify));
                }
                SessionAction::Close { sock } => {
                    if let Some(slot) = core.socks.get_mut(&sock) {
                        slot.closing = true;
                        slot.notify.notify(1);
                    }
                }
                _ => {}
            }
        }
        let mut arrived = false;
        while core.events.len() < MAX_EVENTS {
            let Some(ev) = core.session.poll_event() else { break };
            core.events.push_back(ev);
            arrived = true;
        }
        if arrived {
            progress = true;
            shared.events_ready.notify(usize::MAX);
        }
        if !progress {
            return;
        }
    }
}

/// The driver task: the session's timer and output, until it is closed and every socket
/// is gone.
async fn drive(shared: Arc<Shared>) {
    let mut timer = Timer::never();
    let mut armed: Option<Instant> = None;
    loop {
        let listener = shared.wake.listen();
        let now = Instant::now();
        let deadline = {
            let mut core = shared.lock();
            if core.session.poll_timeout().is_some_and(|d| d <= now) {
                core.session.handle_timeout(now);
            }
            pump(&shared, &mut core);
            if core.session.state() == SessionState::Closed && core.socks.is_empty() {
                core.driver_done = true;
                drop(core);
                shared.events_ready.notify(usize::MAX);
                return;
            }
            core.session.poll_timeout()
        };
        if deadline.is_some_and(|d| d <= now) {
            continue;
        }
        if deadline != armed {
            match deadline {
                Some(d) => timer.set_at(d),
                None => timer = Timer::never(),
            }
            armed = deadline;
        }
        future::or(
            async {
                (&mut timer).await;
            },
            listener,
        )
        .await;
        if armed.is_some_and(|d| d <= Instant::now()) {
            armed = None;
        }
    }
}

/// Waits until the session asks to close `sock` (or forgets it).
async fn closing(shared: &Shared, sock: SockId, notify: &Notify) {
    loop {
        let listener = notify.listen();
        if shared.lock().socks.get(&sock).is_none_or(|s| s.closing) {
            return;
        }
        listener.await;
    }
}

/// One socket: connects, feeds reads to the session, writes what the driver queued,
/// closes when asked. Its slot is removed when it ends.
async fn run_socket(
    shared: Arc<Shared>,
    sock: SockId,
    host: String,
    port: u16,
    notify: Arc<Notify>,
) {
    let connected =
        future::or(async { Some(TcpStream::connect((host.as_str(), port)).await) }, async {
            closing(&shared, sock, &notify).await;
            None
        })
        .await;
    match connected {
        Some(Ok(stream)) => {
            let _ = stream.set_nodelay(true);
            shared.lock().session.handle_connected(Instant::now(), sock);
            shared.wake.notify(1);
            let reader = read_socket(&shared, sock, stream.clone());
            let writer = write_socket(&shared, sock, stream.clone(), &notify);
            future::or(reader, writer).await;
            let _ = stream.shutdown(Shutdown::Both);
        }
        Some(Err(_)) => {
            let mut core = shared.lock();
            if core.socks.get(&sock).is_some_and(|s| !s.closing) {
                core.session.handle_error(Instant::now(), sock);
            }
        }
        None => {}
    }
    let mut core = shared.lock();
    if let Some(slot) = core.socks.remove(&sock) {
        core.out_bytes -= slot.out.iter().map(Bytes::len).sum::<usize>();
    }
    drop(core);
    shared.wake.notify(1);
}

/// Feeds what `sock` reads to the session; returns on an error (after end of file it
/// waits for the session to close the socket).
async fn read_socket(shared: &Shared, sock: SockId, mut stream: TcpStream) {
    let mut buf = vec![0u8; READ_BUF];
    loop {
        // The application's queue is full: stop reading until it takes events.
        loop {
            let listener = shared.room.listen();
            if shared.lock().events.len() < MAX_EVENTS {
                break;
            }
            listener.await;
        }
        let read = stream.read(&mut buf).await;
        let done = {
            let mut core = shared.lock();
            let live = core.socks.get(&sock).is_some_and(|s| !s.closing);
            let now = Instant::now();
            match read {
                Ok(0) => {
                    if live {
                        core.session.handle_eof(now, sock);
                    }
                    Some(false)
                }
                Ok(n) => {
                    if live {
                        core.session.handle_read(now, sock, &buf[..n]);
                    }
                    None
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => None,
                Err(_) => {
                    if live {
                        core.session.handle_error(now, sock);
                    }
                    Some(true)
                }
            }
        };
        shared.wake.notify(1);
        match done {
            None => {}
            Some(true) => return,
            Some(false) => return future::pending().await,
        }
    }
}

/// Writes what the driver queued for `sock`; returns once the session closed it (and its
/// bytes are written) or a write failed.
async fn write_socket(shared: &Shared, sock: SockId, mut stream: TcpStream, notify: &Notify) {
    loop {
        let listener = notify.listen();
        let (chunks, close) = {
            let mut core = shared.lock();
            let Some(slot) = core.socks.get_mut(&sock) else { return };
            let chunks: Vec<Bytes> = slot.out.drain(..).collect();
            let close = slot.closing;
            core.out_bytes -= chunks.iter().map(Bytes::len).sum::<usize>();
            (chunks, close)
        };
        if !chunks.is_empty() {
            let mut failed = false;
            for chunk in &chunks {
                if stream.write_all(chunk).await.is_err() {
                    failed = true;
                    break;
                }
            }
            let mut core = shared.lock();
            if failed && core.socks.get(&sock).is_some_and(|s| !s.closing) {
                core.session.handle_error(Instant::now(), sock);
            }
            drop(core);
            shared.wake.notify(1);
            if failed {
                return;
            }
            continue;
        }
        if close {
            let _ = stream.flush().await;
            return;
        }
        listener.await;
    }
}
