//! [`HubHandle`]: a core hub served over WebSocket, SSE, polling and HTTP publish.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::io::{self, Read as _};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Instant;

use bytes::Bytes;
use event_listener::Event as Notify;
use serde_json::value::RawValue;
use smol::{Executor, Timer, future};
use tidewire::hub::{
    Authorize, BusToken, ConnId, Hub, HubConfig, HubError, HubEvent, HubStats, Principal, Transport,
};
use tidewire::poll::{Poll, PollConfig, PollRequest};
use tidewire::redis::RedisBus;
use tidewire::replay::{Epoch, Position};
use tidewire::sse::{SseStream, SseStreamConfig, SseStreamEvent, StreamEnd};
use tidewire::ws::{CloseCode, CloseInfo, Message, SendError, Utf8Bytes};
use tidewire::{Machine, Transmit};

use crate::bus::BusLink;
use crate::stream_io::{StreamIo, Woke};
use crate::{HttpRequest, RecvError, Sender, WebSocket};

/// A position no log ever has (the hub never draws epoch 0): resuming from it is "gone".
const NOWHERE: Position = Position { epoch: Epoch(0), offset: 0 };
/// Frames pulled from the hub in one go for a WebSocket.
const WS_BATCH: usize = 64;
/// Bytes an SSE response may hold (queued in its stream or being written) before the
/// adapter stops pulling from the hub.
const SSE_ROOM: usize = 64 << 10;
/// Slices in one vectored write of an SSE response.
const MAX_SLICES: usize = 64;
/// Read buffer of the end-of-file watch of a stream or a held poll.
const WATCH_READ: usize = 256;

/// Settings of a [`HubHandle`] beyond the [`HubConfig`]. Build it with
/// `HubOptions::default()` and change the fields you need.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct HubOptions {
    /// Every SSE response: keep-alive (15 s), `retry:` hint, its own outbox, send timeout.
    pub sse: SseStreamConfig,
    /// Polling: long-poll hold (25 s) and events per response (100).
    pub poll: PollConfig,
    /// Largest body of `POST /api/publish` (default 64 KiB; over it: 413).
    pub max_publish_body: usize,
    /// Hub events kept for [`HubHandle::next_event`] (default 1024; the oldest is dropped
    /// when full).
    pub max_events: usize,
    /// Polling clients kept between polls (default 4096). Past it, a poll gets a hub
    /// connection of its own for the one request.
    pub max_poll_clients: usize,
    /// Ids remembered for deduplicating trusted HTTP publishes (default 4096).
    pub trusted_dedup: usize,
    /// The executor that runs the hub's timer task (`None`: smol's global executor).
    pub executor: Option<Arc<Executor<'static>>>,
    /// Share every channel with other instances through this Redis server (see
    /// [`tidewire::redis`] and [`HubHandle`]'s "Scale-out"). `None`: an in-process hub.
    pub redis: Option<tidewire::redis::RedisConfig>,
}

impl Default for HubOptions {
    fn default() -> Self {
        Self {
            sse: SseStreamConfig::default(),
            poll: PollConfig::default(),
            max_publish_body: 64 << 10,
            max_events: 1024,
            max_poll_clients: 4096,
            trusted_dedup: 4096,
            executor: None,
            redis: None,
        }
    }
}

/// A [`Hub`] shared by every connection of a server: one mutex around the hub, the
/// wake-ups of the connections it feeds, and one timer task for the hub's deadlines.
/// Cloning is cheap (a reference count); the timer task ends with the last clone.
///
/// The hub is served over
/// WebSocket ([`serve_ws`](HubHandle::serve_ws)), Server-Sent Events
/// ([`serve_sse`](HubHandle::serve_sse)), polling ([`serve_poll`](HubHandle::serve_poll))
/// and HTTP publishes ([`serve_publish`](HubHandle::serve_publish)).
///
/// The hub sits behind one mutex. After every mutation (a connect, an envelope, a
/// subscribe, a publish, a disconnect, a timeout) the adapter runs the hub's drain under
/// that lock ("The run loop of an adapter" in [`tidewire::hub`]): `HubEvent::Close` marks
/// the connection's cell and wakes its task (which closes the WebSocket with the code or
/// ends the SSE response), `HubEvent::Published` wakes the held polls of that channel,
/// every connection named by `poll_ready` is woken, and the one timer task is re-armed
/// when `poll_timeout` changed. Each connection's own task pulls its frames (`Hub::pull`)
/// while its transport has room: a WebSocket until its outbox (`WsConfig::max_outbound`)
/// pushes back, an SSE response until 64 KiB wait for the socket. A connection that
/// stops reading therefore fills the hub's bounded outbox and gets the channel's
/// slow-consumer policy (`Disconnect`: closed with 4100, and it resumes later).
///
/// Polling clients are hub connections too ([`Transport::Poll`]): one per (principal,
/// channel, optional `sid` query parameter), kept while it polls and expired by the hub
/// after `HubConfig::poll_expiry` without a poll. Keeping it is what keeps a channel (and
/// its epoch) alive between two polls, and gives a polling user presence.
///
/// HTTP publishes of a user go through the hub's client-publish path (authorization, and
/// dedup by `id` in the same window as WebSocket publishes of that user) on a short-lived
/// hub connection; trusted ones (an admin) go to [`Hub::publish`] and are deduplicated by
/// `id` in a small window of their own.
///
/// # Example
///
/// A server that hosts a hub on `/ws`, and a raw WebSocket client that subscribes and
/// receives a server-side publish.
///
/// ```
/// use std::time::Duration;
/// use tidewire::hub::{AllowAll, HubConfig, Principal};
/// use tidewire_smol::{ClientOptions, HttpRequest, HubHandle, Message, Server, ServerConfig, Upgrade, connect};
///
/// smol::block_on(async {
///     let hub = HubHandle::new(HubConfig::default(), AllowAll);
///     let server = Server::bind("127.0.0.1:0", ServerConfig::default()).await?;
///     let handle = server.handle();
///     let served = hub.clone();
///     let serving = smol::spawn(server.serve_with(
///         move |up: Upgrade| {
///             let hub = served.clone();
///             async move {
///                 let Ok(ws) = up.accept(None, &[]).await else { return };
///                 hub.serve_ws(ws, Principal::anonymous(), None).await;
///             }
///         },
///         |req: HttpRequest| async move {
///             let _ = req.respond(404, &[], b"").await;
///         },
///     ));
///
///     let mut ws = connect(&format!("ws://{}/ws", handle.local_addr()), ClientOptions::default()).await?;
///     ws.send(Message::text(r#"{"op":"sub","ch":"news","ref":1}"#)).await?;
///     let subscribed = ws.recv().await?;
///     assert!(subscribed.as_text().unwrap().starts_with(r#"{"op":"subscribed","ch":"news""#));
///     let pos = hub.publish("news", br#"{"title":"hello"}"#)?;
///     let msg = ws.recv().await?;
///     let expected = format!(r#"{{"op":"msg","ch":"news","ep":"{}","off":1,"data":{{"title":"hello"}}}}"#, pos.epoch);
///     assert_eq!(msg.as_text(), Some(expected.as_str()));
///
///     handle.shutdown(Duration::from_secs(2)).await;
///     serving.await?;
///     Ok::<_, Box<dyn std::error::Error>>(())
/// })
/// .unwrap();
/// ```
#[derive(Clone)]
pub struct HubHandle {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    opts: HubOptions,
    state: Mutex<State>,
    timer: Arc<TimerSignal>,
    /// A hub event was queued for the application.
    events_ready: Notify,
    /// With Redis: the bus task and the sockets' writers.
    pub(crate) bus: Option<BusLink>,
    /// With Redis: a submitted publish was answered.
    submitted: Notify,
}

/// How the state reaches the timer task without keeping the hub alive.
#[derive(Default)]
struct TimerSignal {
    wake: Notify,
    stop: AtomicBool,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.timer.stop.store(true, Ordering::SeqCst);
        self.timer.wake.notify(usize::MAX);
    }
}

/// Who a kept polling connection belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct PollKey {
    principal: Principal,
    ch: Box<str>,
    sid: Option<Box<str>>,
}

pub(crate) struct State {
    pub(crate) hub: Hub,
    /// With Redis: the bus machine.
    pub(crate) redis: Option<RedisBus>,
    /// With Redis: answers of submitted publishes not yet picked up.
    submits: HashMap<BusToken, Result<Position, HubError>>,
    /// WebSocket and SSE connections, by hub id.
    cells: HashMap<ConnId, Arc<ConnCell>>,
    /// Held polls, by channel.
    waiters: HashMap<Box<str>, Arc<Notify>>,
    poll_clients: HashMap<PollKey, ConnId>,
    poll_keys: HashMap<ConnId, PollKey>,
    events: VecDeque<HubEvent>,
    trusted_ids: HashMap<Box<str>, Position>,
    trusted_order: VecDeque<Box<str>>,
    /// The deadline the timer task waits for.
    armed: Option<Instant>,
}

/// One WebSocket or SSE connection as the hub's drain sees it.
#[derive(Default)]
struct ConnCell {
    /// Frames are waiting, or the connection must close.
    wake: Notify,
    /// The hub closed the connection (`HubEvent::Close`).
    close: Mutex<Option<(CloseCode, &'static str)>>,
}

impl ConnCell {
    fn close_request(&self) -> Option<(CloseCode, &'static str)> {
        *self.close.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Leaves the hub on every exit path of a connection's task.
struct ConnGuard<'a> {
    inner: &'a Inner,
    conn: ConnId,
}

impl Drop for ConnGuard<'_> {
    fn drop(&mut self) {
        let mut st = self.inner.lock();
        st.cells.remove(&self.conn);
        st.hub.disconnect(Instant::now(), self.conn);
        self.inner.settle(&mut st);
    }
}

/// Removes a channel's held-poll wake-up when its last waiter leaves.
struct WaiterGuard<'a> {
    inner: &'a Inner,
    ch: &'a str,
    notify: Option<Arc<Notify>>,
}

impl Drop for WaiterGuard<'_> {
    fn drop(&mut self) {
        if let Some(notify) = self.notify.take() {
            let mut st = self.inner.lock();
            drop(notify);
            if st.waiters.get(self.ch).is_some_and(|n| Arc::strong_count(n) == 1) {
                st.waiters.remove(self.ch);
            }
        }
    }
}

impl Inner {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Spawns a task of the hub on its executor.
    pub(crate) fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        match &self.opts.executor {
            Some(ex) => ex.spawn(task).detach(),
            None => smol::spawn(task).detach(),
        }
    }

    /// Publishes through the bus (or locally without one) and waits for the position.
    async fn submit(
        &self,
        principal: Option<&Principal>,
        ch: &str,
        id: Option<&str>,
        json: &[u8],
    ) -> Result<Position, HubError> {
        let token = {
            let mut st = self.lock();
            let r = st.hub.submit(Instant::now(), principal, ch, id, json);
            self.settle(&mut st);
            r?
        };
        loop {
            let listener = self.submitted.listen();
            if let Some(r) = self.lock().submits.remove(&token) {
                return r;
            }
            listener.await;
        }
    }

    /// The adapter's drain after a mutation: events, ready connections, the timer.
    pub(crate) fn settle(&self, st: &mut State) {
        let mut queued = false;
        while let Some(ev) = st.hub.poll_event() {
            match &ev {
                HubEvent::Submitted { token, result } => {
                    st.submits.insert(*token, *result);
                    self.submitted.notify(usize::MAX);
                    continue;
                }
                HubEvent::Synced { ch } => {
                    if let Some(n) = st.waiters.get(&**ch) {
                        n.notify(usize::MAX);
                    }
                }
                HubEvent::Close { conn, code, reason } => {
                    if let Some(cell) = st.cells.get(conn) {
                        *cell.close.lock().unwrap_or_else(PoisonError::into_inner) =
                            Some((*code, reason));
                        cell.wake.notify(usize::MAX);
                    }
                }
                HubEvent::Published { ch, .. } => {
                    if let Some(n) = st.waiters.get(&**ch) {
                        n.notify(usize::MAX);
                    }
                }
                HubEvent::Expired { conn } => {
                    if let Some(key) = st.poll_keys.remove(conn) {
                        st.poll_clients.remove(&key);
                    }
                }
                _ => {}
            }
            if st.events.len() >= self.opts.max_events.max(1) {
                st.events.pop_front();
            }
            st.events.push_back(ev);
            queued = true;
        }
        if queued {
            self.events_ready.notify(usize::MAX);
        }
        while let Some(conn) = st.hub.poll_ready() {
            if let Some(cell) = st.cells.get(&conn) {
                cell.wake.notify(1);
            }
        }
        let next = st.hub.poll_timeout();
        if next != st.armed {
            st.armed = next;
            self.timer.wake.notify(1);
        }
        if st.hub.has_bus_actions()
            && let Some(link) = &self.bus
        {
            link.wake.notify(1);
        }
    }

    /// The kept polling connection of `key`, or a new one joined to the channel
    /// (authorization happens here). The flag says whether it is for this request only.
    fn poll_conn(
        &self,
        st: &mut State,
        now: Instant,
        key: PollKey,
    ) -> Result<(ConnId, bool), HubError> {
        if let Some(&id) = st.poll_clients.get(&key) {
            if st.hub.channels_of(id).any(|c| c == &*key.ch) {
                st.hub.touch(now, id);
                return Ok((id, false));
            }
            st.poll_clients.remove(&key);
            st.poll_keys.remove(&id);
            st.hub.disconnect(now, id);
        }
        let id = st.hub.connect(now, Transport::Poll, key.principal.clone());
        if let Err(e) = st.hub.subscribe(now, id, &key.ch, None) {
            st.hub.disconnect(now, id);
            return Err(e);
        }
        if st.poll_clients.len() < self.opts.max_poll_clients {
            st.poll_keys.insert(id, key.clone());
            st.poll_clients.insert(key, id);
            Ok((id, false))
        } else {
            Ok((id, true))
        }
    }
}

/// The HTTP status for a refused subscription or publish.
fn status_of(e: HubError) -> u16 {
    match e {
        HubError::Forbidden => 403,
        HubError::TooManyChannels | HubError::ChannelLimit | HubError::Unavailable => 503,
        HubError::UnknownConn => 500,
        _ => 400,
    }
}

/// The HTTP status for an `err` code of the hub.
fn status_of_code(code: &str) -> u16 {
    match code {
        "forbidden" => 403,
        "too_many_channels" | "channel_limit" | "unavailable" => 503,
        _ => 400,
    }
}

fn json_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

fn position_body(pos: Position) -> String {
    format!("{{\"ep\":\"{}\",\"off\":{}}}", pos.epoch, pos.offset)
}

impl HubHandle {
    /// A hub with `cfg` and the application's authorization policy, seeded from OS entropy
    /// (a restarted server starts new epochs); spawns the timer task on smol's global
    /// executor.
    #[must_use]
    pub fn new(cfg: HubConfig, auth: impl Authorize + Send + 'static) -> Self {
        Self::with_options(cfg, auth, HubOptions::default())
    }

    /// As [`new`](Self::new), with the transports' settings and the executor of the timer
    /// task.
    #[must_use]
    pub fn with_options(
        cfg: HubConfig,
        auth: impl Authorize + Send + 'static,
        opts: HubOptions,
    ) -> Self {
        let mut seed = [0u8; 8];
        if getrandom::fill(&mut seed).is_err() {
            // No OS entropy: the clock still differs between two lives of a server.
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            seed = u64::try_from(t.as_nanos() & u128::from(u64::MAX))
                .unwrap_or_default()
                .to_le_bytes();
        }
        let seed = u64::from_le_bytes(seed);
        let redis = opts.redis.clone().map(|mut r| {
            if r.rng_seed == [0; 32] {
                r.rng_seed[..8].copy_from_slice(&seed.to_le_bytes());
                r.rng_seed[8..16].copy_from_slice(&(!seed).to_le_bytes());
            }
            RedisBus::new(r, Instant::now())
        });
        let hub = if redis.is_some() {
            Hub::with_bus(cfg, auth, seed)
        } else {
            Hub::new(cfg, auth, seed)
        };
        let state = State {
            hub,
            redis,
            submits: HashMap::new(),
            cells: HashMap::new(),
            waiters: HashMap::new(),
            poll_clients: HashMap::new(),
            poll_keys: HashMap::new(),
            events: VecDeque::new(),
            trusted_ids: HashMap::new(),
            trusted_order: VecDeque::new(),
            armed: None,
        };
        let with_bus = state.redis.is_some();
        let inner = Arc::new(Inner {
            opts,
            state: Mutex::new(state),
            timer: Arc::new(TimerSignal::default()),
            events_ready: Notify::new(),
            bus: with_bus.then(BusLink::default),
            submitted: Notify::new(),
        });
        inner.spawn(run_timer(Arc::downgrade(&inner), inner.timer.clone()));
        if with_bus {
            inner.spawn(crate::bus::run_bus(Arc::downgrade(&inner)));
        }
        HubHandle { inner }
    }

    /// The settings.
    #[must_use]
    pub fn options(&self) -> &HubOptions {
        &self.inner.opts
    }

    /// The trusted server-side publish (a ticker, an admin): `json` must be one JSON value;
    /// no authorization, no dedup. Returns the message's position.
    ///
    /// # Errors
    /// [`HubError::BadJson`], [`HubError::BadChannel`], [`HubError::ChannelLimit`].
    pub fn publish(&self, ch: &str, json: &[u8]) -> Result<Position, HubError> {
        let mut st = self.inner.lock();
        let r = st.hub.publish_json(Instant::now(), ch, json);
        self.inner.settle(&mut st);
        r
    }

    /// The trusted server-side publish that works with and without Redis: with
    /// [`HubOptions::redis`] it goes through the bus (which numbers it) and waits for its
    /// position; without, it is [`publish`](Self::publish).
    ///
    /// # Errors
    /// As [`publish`](Self::publish); with Redis, [`HubError::Unavailable`] while Redis is
    /// unreachable (nothing was published, or the connection broke before the answer:
    /// retry with an id to stay idempotent, see [`serve_publish`](Self::serve_publish)).
    pub async fn submit(&self, ch: &str, json: &[u8]) -> Result<Position, HubError> {
        if self.inner.bus.is_none() {
            return self.publish(ch, json);
        }
        self.inner.submit(None, ch, None, json).await
    }

    /// [`submit`](Self::submit) with an id: with Redis, every publish of the same `id`
    /// (from any instance, for a while: `RedisConfig::dedup_ttl`) is stored once and
    /// answered with the first one's position; without Redis it is
    /// [`publish`](Self::publish) (the id is not kept).
    ///
    /// # Errors
    /// As [`submit`](Self::submit); [`HubError::BadId`] for an id over the hub's bound.
    pub async fn submit_once(&self, ch: &str, id: &str, json: &[u8]) -> Result<Position, HubError> {
        if self.inner.bus.is_none() {
            return self.publish(ch, json);
        }
        self.inner.submit(None, ch, Some(id), json).await
    }

    /// Whether the hub's bus is connected (`false` without Redis).
    #[must_use]
    pub fn bus_is_up(&self) -> bool {
        self.inner.lock().hub.bus_is_up()
    }

    /// Hub-wide counters.
    #[must_use]
    pub fn stats(&self) -> HubStats {
        self.inner.lock().hub.stats()
    }

    /// Reads the hub under its lock (members, per-connection counters, logs…). Keep `f`
    /// short: every connection waits for it.
    pub fn inspect<T>(&self, f: impl FnOnce(&tidewire::hub::Hub) -> T) -> T {
        f(&self.inner.lock().hub)
    }

    /// Connections of the hub (WebSocket, SSE, kept polling clients).
    #[must_use]
    pub fn connections(&self) -> usize {
        self.inner.lock().hub.connection_count()
    }

    /// The presence list of `ch` (names in grace included), sorted.
    #[must_use]
    pub fn presence(&self, ch: &str) -> Vec<String> {
        self.inner.lock().hub.presence(ch).map(str::to_owned).collect()
    }

    /// The head of `ch`'s log, if the channel exists.
    #[must_use]
    pub fn head(&self, ch: &str) -> Option<Position> {
        self.inner.lock().hub.log(ch).map(tidewire::replay::ReplayLog::head)
    }

    /// The next hub event (closes, expiries, publishes, joins, leaves) for logs and the
    /// application, without waiting. The queue keeps [`HubOptions::max_events`]; the
    /// oldest is dropped when it is full.
    #[must_use]
    pub fn next_event(&self) -> Option<HubEvent> {
        self.inner.lock().events.pop_front()
    }

    /// The next hub event; waits until there is one.
    pub async fn event(&self) -> HubEvent {
        loop {
            let listener = self.inner.events_ready.listen();
            if let Some(ev) = self.next_event() {
                return ev;
            }
            listener.await;
        }
    }

    /// Runs an accepted WebSocket as a hub connection until it ends, and returns how it
    /// ended. Text messages are envelopes (`Hub::handle_envelope`); a binary message
    /// closes the connection with 1003. The hub's frames go out as text messages, pulled
    /// while the WebSocket's outbox has room; when the hub closes the connection (4100 too
    /// slow, 1008 rate limit) it is closed with that code. `name` is the connection's
    /// presence name (e.g. the user's), `None` for no presence.
    pub async fn serve_ws(
        &self,
        mut ws: WebSocket,
        principal: Principal,
        name: Option<String>,
    ) -> CloseInfo {
        let inner = &*self.inner;
        let cell = Arc::new(ConnCell::default());
        let conn = {
            let mut st = inner.lock();
            let id = st.hub.connect(Instant::now(), Transport::WebSocket, principal);
            st.hub.set_presence_name(id, name.as_deref());
            st.cells.insert(id, cell.clone());
            id
        };
        let _guard = ConnGuard { inner, conn };
        let sender = ws.sender();
        let reader = async {
            loop {
                match ws.recv().await {
                    Ok(msg) => match msg.as_text() {
                        Some(text) => {
                            let mut st = inner.lock();
                            st.hub.handle_envelope(Instant::now(), conn, text.as_bytes());
                            inner.settle(&mut st);
                        }
                        None => {
                            let _ = ws.close(CloseCode::UNSUPPORTED_DATA, "text envelopes only");
                        }
                    },
                    Err(RecvError::Closed(info)) => return info,
                }
            }
        };
        let writer = async {
            write_ws(inner, conn, &cell, &sender).await;
            future::pending::<CloseInfo>().await
        };
        future::or(reader, writer).await
    }

    /// Serves `GET /events?ch=NAME[&pos=EP:OFF]` as a Server-Sent Events stream of the
    /// channel: `Last-Event-ID` (or, when absent, `pos=`) is the position to resume
    /// from; one that is not a position of the channel's current log is "gone" (an
    /// `event: reset` block). The join is authorized before the 200: 400 for a missing or
    /// bad channel, 403 when `principal` may not read it, 503 over the hub's bounds. Then
    /// the hub's frames stream until the client goes away, the hub closes the connection
    /// (too slow), the stream's send timeout passes, or the server shuts down. Returns how
    /// the stream ended.
    ///
    /// # Errors
    /// After answering a refused request: `InvalidInput` (400), `PermissionDenied` (403),
    /// `Other` (500/503).
    pub async fn serve_sse(
        &self,
        mut req: HttpRequest,
        principal: Principal,
    ) -> io::Result<StreamEnd> {
        let inner = &*self.inner;
        let Some(ch) = req.request().query_param("ch").filter(|c| !c.is_empty()) else {
            req.fail(400, "missing ch parameter").await;
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "missing ch parameter"));
        };
        let from = req
            .request()
            .last_event_id()
            .map(str::to_owned)
            .or_else(|| req.request().query_param("pos").filter(|p| !p.is_empty()))
            .map(|p| p.parse::<Position>().unwrap_or(NOWHERE));
        let cell = Arc::new(ConnCell::default());
        let joined = {
            let mut st = inner.lock();
            let now = Instant::now();
            let id = st.hub.connect(now, Transport::Sse, principal);
            let r = match st.hub.subscribe(now, id, &ch, from) {
                Ok(_) => {
                    st.cells.insert(id, cell.clone());
                    Ok(id)
                }
                Err(e) => {
                    st.hub.disconnect(now, id);
                    Err(e)
                }
            };
            inner.settle(&mut st);
            r
        };
        let conn = match joined {
            Ok(id) => id,
            Err(e) => return Err(refuse(&mut req, e).await),
        };
        let _guard = ConnGuard { inner, conn };
        Ok(run_sse(inner, &mut req, conn, &cell).await)
    }

    /// Serves a poll, `GET /poll?ch=NAME[&pos=EP:OFF][&wait=1]` (as
    /// [`tidewire::poll`]): the messages after the position from the channel's log, the
    /// new position (also the `ETag`), `304` for a conditional request with nothing new,
    /// `recovered: false` when the position is gone; with `wait=1` a request with nothing
    /// new is held until a message arrives (woken by the hub's `Published`) or the long
    /// poll passes. The join is authorized first (400, 403, 503 as for
    /// [`serve_sse`](Self::serve_sse)). The polling client is a hub connection kept per
    /// (principal, channel, `sid` query parameter if any): see [`HubHandle`].
    ///
    /// # Errors
    /// The write's error when the client is gone; after answering a refused request, as
    /// [`serve_sse`](Self::serve_sse).
    pub async fn serve_poll(&self, mut req: HttpRequest, principal: Principal) -> io::Result<()> {
        let inner = &*self.inner;
        let preq = match PollRequest::from_request(req.request()) {
            Ok(p) => p,
            Err(e) => {
                req.fail(e.status(), &e.to_string()).await;
                return Err(io::Error::new(io::ErrorKind::InvalidInput, e));
            }
        };
        let ch = preq.channel.clone();
        let sid = req.request().query_param("sid").filter(|s| !s.is_empty() && s.len() <= 128);
        let key = PollKey { principal, ch: ch.as_str().into(), sid: sid.map(Into::into) };
        let joined = {
            let mut st = inner.lock();
            let r = inner.poll_conn(&mut st, Instant::now(), key.clone());
            inner.settle(&mut st);
            r
        };
        let (mut conn, once) = match joined {
            Ok(j) => j,
            Err(e) => return Err(refuse(&mut req, e).await),
        };
        // A connection for this request only leaves with it.
        let _guard = once.then(|| ConnGuard { inner, conn });
        let mut waiter = WaiterGuard { inner, ch: &ch, notify: None };
        let mut poll = Poll::new(inner.opts.poll, Instant::now(), preq);
        let mut rbuf = [0u8; WATCH_READ];
        loop {
            let stop = req.link().listen();
            let stopping = req.link().is_stopping();
            let now = Instant::now();
            let (answer, listener) = {
                let mut st = inner.lock();
                if st.hub.is_connected(conn) {
                    st.hub.touch(now, conn);
                } else if let Ok((id, _)) = inner.poll_conn(&mut st, now, key.clone()) {
                    // Expired while held: joined again under the same key.
                    conn = id;
                }
                let at =
                    if stopping { poll.poll_timeout().map_or(now, |d| d.max(now)) } else { now };
                let notify = match &waiter.notify {
                    Some(n) => n.clone(),
                    None => {
                        let n = st.waiters.entry(ch.as_str().into()).or_default().clone();
                        waiter.notify = Some(n.clone());
                        n
                    }
                };
                let listener = notify.listen();
                // With a bus, the channel's log may still be loading: wait for it.
                let answer = if st.hub.is_synced(&ch) {
                    st.hub.log(&ch).map(|log| poll.check(at, log))
                } else {
                    Some(None)
                };
                inner.settle(&mut st);
                (answer, listener)
            };
            let Some(answer) = answer else {
                req.fail(503, "channel unavailable").await;
                return Err(io::Error::other("channel unavailable"));
            };
            if let Some(answer) = answer {
                drop(waiter);
                let r = req.send_raw(answer).await;
                let mut st = inner.lock();
                st.hub.touch(Instant::now(), conn);
                return r;
            }
            let deadline = poll.poll_timeout();
            let stream = req.stream();
            let woke = future::or(
                async {
                    future::or(listener, stop).await;
                    true
                },
                future::or(
                    async {
                        match deadline {
                            Some(d) => Timer::at(d).await,
                            None => future::pending().await,
                        };
                        true
                    },
                    async {
                        match stream.read_with(|s| (&mut &*s).read(&mut rbuf)).await {
                            Ok(n) => n > 0,
                            Err(e) => e.kind() == io::ErrorKind::Interrupted,
                        }
                    },
                ),
            )
            .await;
            if !woke {
                // The client went away while held.
                req.give_up();
                return Ok(());
            }
        }
    }

    /// Serves `POST /api/publish?ch=NAME[&id=ID]` with one JSON value as the body (at most
    /// [`HubOptions::max_publish_body`]): 200 `{"ep":"..","off":N}` with the message's
    /// position. A user publish (`trusted = false`) takes the hub's client-publish path:
    /// authorized with `can_write` (403), deduplicated by `id` in the hub's window (a
    /// repeated id of the same user — over HTTP or WebSocket — is answered with the first
    /// position and not published again; anonymous publishes are deduplicated only within
    /// one request). A trusted publish (`trusted = true`, e.g. an admin token) skips
    /// authorization; its ids are deduplicated in a window of
    /// [`HubOptions::trusted_dedup`] of their own. 400 for a missing channel, a body that
    /// is not JSON or a bad id, 405 for another method, 413 for a body too large, 503 over
    /// the hub's bounds.
    ///
    /// # Errors
    /// The body's or the write's error; `InvalidInput` / `PermissionDenied` after a
    /// refusal.
    pub async fn serve_publish(
        &self,
        mut req: HttpRequest,
        principal: Principal,
        trusted: bool,
    ) -> io::Result<()> {
        let inner = &*self.inner;
        if req.request().method() != "POST" {
            req.respond(405, &[("Allow", "POST")], b"POST only\n").await?;
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "not POST"));
        }
        let Some(ch) = req.request().query_param("ch").filter(|c| !c.is_empty()) else {
            req.fail(400, "missing ch parameter").await;
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "missing ch parameter"));
        };
        let id = req.request().query_param("id").filter(|i| !i.is_empty());
        let body = req.read_body(inner.opts.max_publish_body).await?;
        let Ok(data) = serde_json::from_slice::<&RawValue>(&body) else {
            req.fail(400, "body is not one JSON value").await;
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "body is not JSON"));
        };
        let result = if inner.bus.is_some() {
            // With Redis the bus numbers and deduplicates (across instances).
            let who = (!trusted).then_some(&principal);
            inner
                .submit(who, &ch, id.as_deref(), &body)
                .await
                .map_err(|e| (status_of(e), e.to_string()))
        } else {
            let mut st = inner.lock();
            let now = Instant::now();
            let r = if trusted {
                trusted_publish(inner, &mut st, now, &ch, id.as_deref(), data)
            } else {
                user_publish(&mut st, now, principal, &ch, id.as_deref(), data)
            };
            inner.settle(&mut st);
            r
        };
        match result {
            Ok(pos) => {
                let headers = [("Content-Type", "application/json"), ("Cache-Control", "no-store")];
                req.respond(200, &headers, position_body(pos).as_bytes()).await
            }
            Err((status, text)) => {
                req.fail(status, &text).await;
                let kind = if status == 403 {
                    io::ErrorKind::PermissionDenied
                } else {
                    io::ErrorKind::InvalidInput
                };
                Err(io::Error::new(kind, text))
            }
        }
    }
}

impl fmt::Debug for HubHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.inner.lock();
        f.debug_struct("HubHandle")
            .field("hub", &st.hub)
            .field("polling_clients", &st.poll_clients.len())
            .finish_non_exhaustive()
    }
}

/// A trusted publish, deduplicated by `id` in the handle's own window.
fn trusted_publish(
    inner: &Inner,
    st: &mut State,
    now: Instant,
    ch: &str,
    id: Option<&str>,
    data: &RawValue,
) -> Result<Position, (u16, String)> {
    if let Some(id) = id
        && let Some(pos) = st.trusted_ids.get(id)
    {
        return Ok(*pos);
    }
    let pos = st.hub.publish(now, ch, data).map_err(|e| (status_of(e), e.to_string()))?;
    if let Some(id) = id {
        if st.trusted_order.len() >= inner.opts.trusted_dedup.max(1)
            && let Some(old) = st.trusted_order.pop_front()
        {
            st.trusted_ids.remove(&old);
        }
        st.trusted_ids.insert(id.into(), pos);
        st.trusted_order.push_back(id.into());
    }
    Ok(pos)
}

/// A user publish through the hub's client path, on a connection for this request only.
fn user_publish(
    st: &mut State,
    now: Instant,
    principal: Principal,
    ch: &str,
    id: Option<&str>,
    data: &RawValue,
) -> Result<Position, (u16, String)> {
    let conn = st.hub.connect(now, Transport::WebSocket, principal);
    st.hub.set_presence_name(conn, None);
    let mut envelope = format!("{{\"op\":\"pub\",\"ch\":{}", json_string(ch));
    if let Some(id) = id {
        envelope.push_str(",\"id\":");
        envelope.push_str(&json_string(id));
    }
    envelope.push_str(",\"data\":");
    envelope.push_str(data.get());
    envelope.push_str(",\"ref\":1}");
    st.hub.handle_envelope(now, conn, envelope.as_bytes());
    let frames: Vec<Bytes> = std::iter::from_fn(|| st.hub.pull(conn)).collect();
    st.hub.disconnect(now, conn);
    for frame in frames {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&frame) else { continue };
        match v.get("op").and_then(serde_json::Value::as_str) {
            Some("ack") => {
                let ep =
                    v.get("ep").and_then(serde_json::Value::as_str).and_then(|e| e.parse().ok());
                let off = v.get("off").and_then(serde_json::Value::as_u64);
                if let (Some(epoch), Some(offset)) = (ep, off) {
                    return Ok(Position { epoch, offset });
                }
                return Err((500, "publish acknowledged without a position".into()));
            }
            Some("err") => {
                let code = v.get("code").and_then(serde_json::Value::as_str).unwrap_or("error");
                let msg = v.get("msg").and_then(serde_json::Value::as_str).unwrap_or(code);
                return Err((status_of_code(code), format!("{code}: {msg}")));
            }
            _ => {}
        }
    }
    Err((500, "the hub did not answer the publish".into()))
}

/// Answers a refused subscription and returns the error.
async fn refuse(req: &mut HttpRequest, e: HubError) -> io::Error {
    let status = status_of(e);
    req.fail(status, &e.to_string()).await;
    let kind = match status {
        403 => io::ErrorKind::PermissionDenied,
        400 => io::ErrorKind::InvalidInput,
        _ => io::ErrorKind::Other,
    };
    io::Error::new(kind, e)
}

/// The hub's timer: fires `Hub::handle_timeout` at `poll_timeout`, re-armed by `settle`.
/// Ends with the last [`HubHandle`].
async fn run_timer(weak: Weak<Inner>, signal: Arc<TimerSignal>) {
    loop {
        let listener = signal.wake.listen();
        if signal.stop.load(Ordering::SeqCst) {
            return;
        }
        let deadline = {
            let Some(inner) = weak.upgrade() else { return };
            let mut st = inner.lock();
            let now = Instant::now();
            if st.hub.poll_timeout().is_some_and(|d| d <= now) {
                st.hub.handle_timeout(now);
                inner.settle(&mut st);
            }
            st.armed = st.hub.poll_timeout();
            st.armed
        };
        match deadline {
            Some(d) => {
                future::or(
                    async {
                        Timer::at(d).await;
                    },
                    listener,
                )
                .await;
            }
            None => listener.await,
        }
    }
}

/// Waits until the hub asks to close the connection.
async fn closed_by_hub(cell: &ConnCell) {
    loop {
        let listener = cell.wake.listen();
        if cell.close_request().is_some() {
            return;
        }
        listener.await;
    }
}

/// Moves the hub's frames for `conn` into the WebSocket while its outbox has room, and
/// closes it when the hub says so. Returns when nothing more can be sent.
async fn write_ws(inner: &Inner, conn: ConnId, cell: &ConnCell, sender: &Sender) {
    let mut batch: VecDeque<Bytes> = VecDeque::new();
    loop {
        let listener = cell.wake.listen();
        if let Some((code, reason)) = cell.close_request() {
            let _ = sender.close(code, reason);
            return;
        }
        if batch.is_empty() {
            let mut st = inner.lock();
            while batch.len() < WS_BATCH {
                match st.hub.pull(conn) {
                    Some(frame) => batch.push_back(frame),
                    None => break,
                }
            }
        }
        if batch.is_empty() {
            listener.await;
            continue;
        }
        while let Some(frame) = batch.pop_front() {
            // The hub's envelopes are UTF-8; anything else is not sent.
            let Ok(text) = Utf8Bytes::try_from_bytes(frame) else { continue };
            match sender.try_send(Message::text(text)) {
                Ok(()) => {}
                Err(SendError::Backpressure(back)) => {
                    // Full: wait for room (or the hub's close), then pull on.
                    let sent = future::or(async { Some(sender.send(back).await) }, async {
                        closed_by_hub(cell).await;
                        None
                    })
                    .await;
                    match sent {
                        Some(Ok(())) => {}
                        Some(Err(_)) => return,
                        None => break,
                    }
                }
                Err(_) => return,
            }
        }
    }
}

/// The SSE response of a hub connection: writes the head, the hub's frames (pulled while
/// there is room) and keep-alives; watches the socket for the client going away, the hub
/// for a close and the server for its shutdown.
async fn run_sse(inner: &Inner, req: &mut HttpRequest, conn: ConnId, cell: &ConnCell) -> StreamEnd {
    let Ok(mut sse) = SseStream::new(inner.opts.sse, Instant::now(), &[]) else {
        req.fail(500, "invalid response header").await;
        return StreamEnd::Closed;
    };
    let mut io = StreamIo::new(req.take_stream());
    let close_timeout = req.close_timeout();
    let link = req.link().clone();
    let mut end: Option<StreamEnd> = None;
    let mut shutdown_pulled = false;
    let mut linger: Option<Instant> = None;

    loop {
        let stop = link.listen();
        let listener = cell.wake.listen();
        let now = Instant::now();
        if !sse.is_ended() {
            if link.is_stopping() {
                sse.close(now);
            } else if let Some((code, _)) = cell.close_request() {
                if code == CloseCode::TOO_SLOW {
                    sse.end(now, StreamEnd::TooSlow);
                } else {
                    sse.close(now);
                }
            }
        }
        if sse.poll_timeout().is_some_and(|d| d <= now) {
            sse.handle_timeout(now);
        }
        if !sse.is_ended() && sse.buffered() + io.queued() < SSE_ROOM {
            let mut st = inner.lock();
            while let Some(frame) = st.hub.pull(conn) {
                sse.send_frame(now, frame);
                if sse.buffered() + io.queued() >= SSE_ROOM {
                    break;
                }
            }
        }
        while let Some(ev) = sse.poll_event() {
            if let SseStreamEvent::Ended(why) = ev {
                end.get_or_insert(why);
            }
        }
        while !shutdown_pulled && io.chunks() < MAX_SLICES {
            match sse.poll_transmit() {
                Some(Transmit::Bytes(b)) => io.push(b),
                Some(Transmit::Shutdown) => shutdown_pulled = true,
                Some(_) => {}
                None => break,
            }
        }
        if end == Some(StreamEnd::TooSlow) && io.is_flushed() {
            break;
        }
        if shutdown_pulled && io.is_flushed() {
            break;
        }
        if shutdown_pulled && linger.is_none() {
            linger = Some(now + close_timeout);
        }
        if linger.is_some_and(|l| l <= now) {
            break;
        }
        let deadline = match (sse.poll_timeout(), linger) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if deadline.is_some_and(|d| d <= now) {
            continue;
        }
        match io.wait(deadline, future::or(listener, stop)).await {
            Woke::Read(bytes) => sse.handle_read(Instant::now(), bytes),
            Woke::Gone => sse.handle_eof(Instant::now()),
            Woke::Other => {}
        }
    }
    io.shutdown();
    end.unwrap_or(StreamEnd::ClientGone)
}
