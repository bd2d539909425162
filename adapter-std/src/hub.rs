//! [`HubHandle`]: the core [`Hub`] hosted on threads, serving WebSocket connections
//! ([`serve_ws`](HubHandle::serve_ws)), SSE streams ([`serve_sse`](HubHandle::serve_sse)),
//! polls ([`serve_poll`](HubHandle::serve_poll)) and HTTP publishes
//! ([`serve_publish`](HubHandle::serve_publish)) from one replay log per channel.
//!
//! Threads and locks:
//!
//! - One mutex guards the [`Hub`], the wake-up slot of every connection it feeds and the
//!   held polls. Whoever mutates the hub (a connection thread with an envelope, a publish, the
//!   timer) runs the core's run loop under that lock before releasing it: it drains
//!   `poll_event` (a `Close` is handed to that connection's slot, a `Published` wakes the
//!   held polls of the channel, every event is queued for [`HubHandle::next_event`]), marks
//!   the connections `poll_ready` names as ready in their slots (it moves no frame itself,
//!   so a slow socket never holds up a publisher), and re-arms the timer.
//! - Each connection pulls its own frames. A WebSocket connection has two threads: the
//!   connection's thread (the caller of `serve_ws`) receives, driving the socket (reads,
//!   pings, timers) and feeding envelopes to the hub; a small pusher thread waits on the
//!   connection's slot and, while the WebSocket's outbox holds less than
//!   [`HubOptions::push_buffer`] bytes, pulls frames from the hub and sends them (it writes
//!   to the socket itself, like any [`Sender`]). When the transport is full it looks again
//!   every [`ROOM_POLL`]; frames it has not pulled stay in the hub's bounded outbox, where
//!   the channel's slow-consumer policy (disconnect with 4100, drop oldest, conflate)
//!   applies. An SSE stream's thread does both jobs: it pulls hub frames into its core
//!   `SseStream` (again up to `push_buffer` bytes) and writes them.
//! - One timer thread sleeps until the hub's `poll_timeout` (presence grace, log trims) or
//!   until a mutation moves that deadline earlier. It ends when the last `HubHandle` is
//!   dropped (the drop joins it).
//!
//! Memory per connection: the hub's outbox (`HubConfig::outbox`, per lane) plus
//! `push_buffer` plus one write batch.

use std::collections::{HashMap, VecDeque};
use std::io::{self, ErrorKind};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tidewire::hub::{
    Authorize, BusToken, ConnId, Hub, HubConfig, HubError, HubEvent, HubStats, Principal, Transport,
};
use tidewire::poll::PollConfig;
use tidewire::redis::RedisBus;
use tidewire::replay::Position;
use tidewire::sse::SseStreamConfig;
use tidewire::ws::{CloseCode, Message, Utf8Bytes};

use crate::bus::BusLink;
use crate::conn::lock;
use crate::server::Held;
use crate::socket::{Event, Sender, WebSocket};

mod http;

/// How often a pusher whose transport is full looks whether it has room again.
pub const ROOM_POLL: Duration = Duration::from_millis(10);

/// Settings of a [`HubHandle`] besides the core [`HubConfig`]. Build with
/// `HubOptions::default()` and change fields.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct HubOptions {
    /// Each SSE stream: keep-alive (default 15 s), `retry:` hint, its own outbox and
    /// `send_timeout` (a client that reads nothing for that long is dropped).
    pub sse: SseStreamConfig,
    /// Polling: how long a long poll is held (default 25 s) and events per response.
    pub poll: PollConfig,
    /// Bytes a connection's transport (a WebSocket's outbox, an SSE stream's queue) may hold
    /// before its pusher stops pulling frames from the hub (default 64 KiB). Frames beyond
    /// stay in the hub's outbox under the channel's slow-consumer policy.
    pub push_buffer: usize,
    /// The largest `POST /api/publish` body (default 64 KiB; larger is answered 413).
    pub max_publish_body: usize,
    /// Hub events kept for [`HubHandle::next_event`] (default 1024); the oldest is dropped
    /// when full.
    pub max_events: usize,
    /// Share every channel with other instances through this Redis server (see
    /// [`tidewire::redis`]). `None`: an in-process hub.
    pub redis: Option<tidewire::redis::RedisConfig>,
}

impl Default for HubOptions {
    fn default() -> Self {
        Self {
            sse: SseStreamConfig::default(),
            poll: PollConfig::default(),
            push_buffer: 64 << 10,
            max_publish_body: 64 << 10,
            max_events: 1024,
            redis: None,
        }
    }
}

/// A [`Hub`] shared by every connection of a server: one mutex around the core hub, the
/// wake-ups of the connections it feeds and one timer thread for the hub's deadlines.
/// Cheap to clone; the timer thread ends when the last clone is dropped.
///
/// - [`serve_ws`](Self::serve_ws): an accepted WebSocket speaking the envelope protocol.
/// - [`serve_sse`](Self::serve_sse): `GET /events?ch=NAME[&pos=EP:OFF]`.
/// - [`serve_poll`](Self::serve_poll): `GET /poll?ch=NAME[&pos=EP:OFF][&wait=1]`.
/// - [`serve_publish`](Self::serve_publish): `POST /api/publish?ch=NAME[&id=ID]`.
/// - [`publish`](Self::publish): the application's trusted publish.
///
/// Every transport reads the same log per channel: a client may move between them with its
/// position. The application authenticates each request first (a bad token is its `401`)
/// and hands the [`Principal`]; the hub's [`Authorize`] policy decides every join (`403` /
/// `err forbidden`) and every client publish.
///
/// ```
/// use std::time::Duration;
/// use tidewire_std::tidewire::hub::{AllowAll, HubConfig, Principal};
/// use tidewire_std::tidewire::ws::Message;
/// use tidewire_std::{ClientOptions, HubHandle, Server, ServerConfig, connect};
///
/// let hub = HubHandle::new(HubConfig::default(), AllowAll);
/// let server = Server::bind("127.0.0.1:0", ServerConfig::default())?;
/// let addr = server.local_addr();
/// let handle = server.handle();
/// let serving = {
///     let hub = hub.clone();
///     std::thread::spawn(move || {
///         server.serve_with(
///             move |upgrade| {
///                 // Authenticate here (`upgrade.request().token()`), then:
///                 let Ok(ws) = upgrade.accept(None, &[]) else { return };
///                 hub.serve_ws(ws, Principal::anonymous(), None);
///             },
///             |req| drop(req.respond(404, &[], b"")),
///         )
///     })
/// };
///
/// let mut ws = connect(&format!("ws://{addr}/ws"), ClientOptions::default())?;
/// ws.send(r#"{"op":"sub","ch":"news","ref":1}"#)?;
/// let subscribed = ws.recv()?;
/// assert!(subscribed.as_text().unwrap().starts_with(r#"{"op":"subscribed","ch":"news""#));
///
/// let pos = hub.publish("news", br#"{"title":"hello"}"#)?;
/// let msg = ws.recv()?;
/// let expected = format!(
///     r#"{{"op":"msg","ch":"news","ep":"{}","off":1,"data":{{"title":"hello"}}}}"#,
///     pos.epoch
/// );
/// assert_eq!(msg, Message::text(expected));
///
/// handle.shutdown(Duration::from_secs(1));
/// serving.join().unwrap()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct HubHandle {
    owner: Arc<Owner>,
}

impl std::fmt::Debug for HubHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = self.owner.inner.lock();
        f.debug_struct("HubHandle")
            .field("hub", &st.hub)
            .field("slots", &st.slots.len())
            .finish_non_exhaustive()
    }
}

/// Owns the timer thread: stops and joins it when the last handle goes.
struct Owner {
    inner: Arc<Inner>,
    timer: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Owner {
    fn drop(&mut self) {
        {
            let mut st = self.inner.lock();
            st.stop = true;
        }
        self.inner.timer_cv.notify_all();
        if let Some(link) = &self.inner.bus {
            link.cv.notify_all();
        }
        if let Some(t) = lock(&self.timer).take() {
            let _ = t.join();
        }
    }
}

pub(crate) struct Inner {
    state: Mutex<State>,
    /// Wakes the timer thread: a new earlier deadline, or the end.
    timer_cv: Condvar,
    opts: HubOptions,
    /// With Redis: the bus thread's wake-up and the sockets' writers.
    pub(crate) bus: Option<BusLink>,
    /// With Redis: a submitted publish was answered.
    submitted: Condvar,
}

pub(crate) struct State {
    pub(crate) hub: Hub,
    /// With Redis: the bus machine.
    pub(crate) redis: Option<RedisBus>,
    /// With Redis: answers of submitted publishes not yet picked up.
    submits: HashMap<BusToken, Result<Position, HubError>>,
    /// The wake-up slot of every connection served here (WebSocket, SSE).
    slots: HashMap<ConnId, Arc<Slot>>,
    /// Held long polls by channel.
    polls: HashMap<Arc<str>, HashMap<ConnId, Arc<Slot>>>,
    events: VecDeque<HubEvent>,
    /// The deadline the timer thread sleeps until.
    deadline: Option<Instant>,
    pub(crate) stop: bool,
}

/// The wake-up of one connection: set under the hub lock, waited on by its thread.
#[derive(Default)]
pub(crate) struct Slot {
    flags: Mutex<Flags>,
    cv: Condvar,
}

#[derive(Default)]
struct Flags {
    /// The hub named the connection in `poll_ready`: frames are waiting.
    ready: bool,
    /// The hub dropped the connection: close it with this code.
    close: Option<(CloseCode, &'static str)>,
    /// A publish on the channel of a held poll.
    news: bool,
    /// The server is shutting down: end gracefully.
    stop: bool,
    /// The server gave up on the socket.
    aborted: bool,
    /// The transport ended (WebSocket receive loop): the pusher stops.
    done: bool,
}

impl Slot {
    fn notify(&self, f: impl FnOnce(&mut Flags)) {
        f(&mut lock(&self.flags));
        self.cv.notify_all();
    }

    fn flags(&self) -> MutexGuard<'_, Flags> {
        lock(&self.flags)
    }

    /// Waits on the slot until `until` (or forever).
    fn wait<'a>(
        &'a self,
        g: MutexGuard<'a, Flags>,
        until: Option<Instant>,
    ) -> MutexGuard<'a, Flags> {
        match until {
            None => self.cv.wait(g).unwrap_or_else(std::sync::PoisonError::into_inner),
            Some(t) => {
                let d = t.saturating_duration_since(Instant::now());
                self.cv.wait_timeout(g, d).map_or_else(|p| p.into_inner().0, |r| r.0)
            }
        }
    }
}

impl Held for Slot {
    fn shutdown_by_server(&self) {
        self.notify(|f| f.stop = true);
    }

    fn abort(&self) {
        self.notify(|f| f.aborted = true);
    }
}

impl Inner {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Publishes through the bus (or locally without one) and waits for the position.
    fn submit(
        &self,
        principal: Option<&Principal>,
        ch: &str,
        id: Option<&str>,
        json: &[u8],
    ) -> Result<Position, HubError> {
        let mut st = self.lock();
        let token = st.hub.submit(Instant::now(), principal, ch, id, json);
        self.settle(&mut st);
        let token = token?;
        loop {
            if let Some(r) = st.submits.remove(&token) {
                return r;
            }
            st = self.submitted.wait(st).unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }

    /// The adapter's run loop after a mutation, under the hub lock (see the module docs).
    pub(crate) fn settle(&self, st: &mut State) {
        while let Some(ev) = st.hub.poll_event() {
            match &ev {
                HubEvent::Submitted { token, result } => {
                    st.submits.insert(*token, *result);
                    self.submitted.notify_all();
                    continue;
                }
                HubEvent::Synced { ch } => {
                    if let Some(held) = st.polls.get(ch) {
                        for slot in held.values() {
                            slot.notify(|f| f.news = true);
                        }
                    }
                }
                HubEvent::Close { conn, code, reason } => {
                    if let Some(slot) = st.slots.get(conn) {
                        let (code, reason) = (*code, *reason);
                        slot.notify(|f| f.close = Some((code, reason)));
                    }
                }
                HubEvent::Published { ch, .. } => {
                    if let Some(held) = st.polls.get(ch) {
                        for slot in held.values() {
                            slot.notify(|f| f.news = true);
                        }
                    }
                }
                _ => {}
            }
            if st.events.len() >= self.opts.max_events.max(1) {
                st.events.pop_front();
            }
            st.events.push_back(ev);
        }
        while let Some(conn) = st.hub.poll_ready() {
            if let Some(slot) = st.slots.get(&conn) {
                slot.notify(|f| f.ready = true);
            }
        }
        let next = st.hub.poll_timeout();
        if next != st.deadline {
            let earlier = match (next, st.deadline) {
                (Some(n), Some(d)) => n < d,
                (Some(_), None) => true,
                (None, _) => false,
            };
            st.deadline = next;
            if earlier {
                self.timer_cv.notify_all();
            }
        }
        if st.hub.has_bus_actions()
            && let Some(link) = &self.bus
        {
            link.cv.notify_all();
        }
    }

    /// Runs `f` on the hub under the lock, then the run loop.
    fn with<T>(&self, f: impl FnOnce(&mut State, Instant) -> T) -> T {
        let mut st = self.lock();
        let out = f(&mut st, Instant::now());
        self.settle(&mut st);
        out
    }

    /// Drops a connection served here: its slot, its held poll, its membership.
    fn forget(&self, conn: ConnId, poll_channel: Option<&str>) {
        self.with(|st, now| {
            st.slots.remove(&conn);
            if let Some(ch) = poll_channel
                && let Some(held) = st.polls.get_mut(ch)
            {
                held.remove(&conn);
                if held.is_empty() {
                    st.polls.remove(ch);
                }
            }
            st.hub.disconnect(now, conn);
        });
    }
}

/// The timer thread: sleeps until the hub's next deadline (or a nearer one, or the end).
fn run_timer(inner: &Inner) {
    let mut st = inner.lock();
    loop {
        if st.stop {
            return;
        }
        let now = Instant::now();
        match st.deadline {
            Some(d) if d <= now => {
                st.hub.handle_timeout(now);
                // Recomputed by settle; a deadline the hub did not clear is not re-fired
                // before it moves (handle_timeout fires all that are due).
                st.deadline = None;
                inner.settle(&mut st);
            }
            Some(d) => {
                st = inner
                    .timer_cv
                    .wait_timeout(st, d - now)
                    .map_or_else(|p| p.into_inner().0, |r| r.0);
            }
            None => {
                st = inner.timer_cv.wait(st).unwrap_or_else(std::sync::PoisonError::into_inner);
            }
        }
    }
}

impl HubHandle {
    /// A hub with the application's authorization policy and default [`HubOptions`]. New
    /// channel epochs are seeded from OS entropy, so a restarted server never reuses a
    /// position. Spawns the timer thread.
    ///
    /// # Panics
    /// If the timer thread cannot be spawned.
    #[must_use]
    pub fn new(cfg: HubConfig, auth: impl Authorize + Send + 'static) -> Self {
        Self::with_options(cfg, auth, HubOptions::default())
    }

    /// As [`new`](Self::new), with transport settings.
    ///
    /// # Panics
    /// If the timer thread cannot be spawned.
    #[must_use]
    pub fn with_options(
        cfg: HubConfig,
        auth: impl Authorize + Send + 'static,
        opts: HubOptions,
    ) -> Self {
        let seed = getrandom::u64().unwrap_or_else(|_| crate::channels::fallback_seed());
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
            slots: HashMap::new(),
            polls: HashMap::new(),
            events: VecDeque::new(),
            deadline: None,
            stop: false,
        };
        let with_bus = state.redis.is_some();
        let inner = Arc::new(Inner {
            state: Mutex::new(state),
            timer_cv: Condvar::new(),
            opts,
            bus: with_bus.then(BusLink::default),
            submitted: Condvar::new(),
        });
        if with_bus {
            let weak = Arc::downgrade(&inner);
            std::thread::Builder::new()
                .name("tidewire-hub-bus".into())
                .spawn(move || crate::bus::run_bus(&weak))
                .expect("spawn the hub's bus thread");
        }
        let timer = {
            let inner = Arc::clone(&inner);
            std::thread::Builder::new()
                .name("tidewire-hub-timer".into())
                .spawn(move || run_timer(&inner))
                .expect("spawn the hub's timer thread")
        };
        HubHandle { owner: Arc::new(Owner { inner, timer: Mutex::new(Some(timer)) }) }
    }

    fn inner(&self) -> &Arc<Inner> {
        &self.owner.inner
    }

    /// The settings.
    #[must_use]
    pub fn options(&self) -> &HubOptions {
        &self.inner().opts
    }

    /// The trusted server-side publish (no authorization, no dedup): appends `json` (one
    /// JSON value; a `&str` or bytes) to `ch`'s log and delivers it on every transport.
    ///
    /// # Errors
    /// [`HubError::BadJson`], [`HubError::BadChannel`], [`HubError::ChannelLimit`].
    ///
    /// With [`HubOptions::redis`] the message goes through the bus, which numbers it: the
    /// call waits for Redis's answer, and fails with [`HubError::Unavailable`] while Redis is
    /// unreachable (nothing is silently lost).
    pub fn publish(&self, ch: &str, json: impl AsRef<[u8]>) -> Result<Position, HubError> {
        if self.inner().bus.is_some() {
            return self.inner().submit(None, ch, None, json.as_ref());
        }
        self.inner().with(|st, now| st.hub.publish_json(now, ch, json.as_ref()))
    }

    /// [`publish`](Self::publish) with an id: with Redis, every publish of the same `id`
    /// (from any instance, for a while: `RedisConfig::dedup_ttl`) is stored once and
    /// answered with the first one's position; without Redis it is
    /// [`publish`](Self::publish) (the id is not kept).
    ///
    /// # Errors
    /// As [`publish`](Self::publish); [`HubError::BadId`] for an id over the hub's bound.
    pub fn publish_once(
        &self,
        ch: &str,
        id: &str,
        json: impl AsRef<[u8]>,
    ) -> Result<Position, HubError> {
        if self.inner().bus.is_some() {
            return self.inner().submit(None, ch, Some(id), json.as_ref());
        }
        self.publish(ch, json)
    }

    /// Whether the hub's bus is connected (`false` without Redis).
    #[must_use]
    pub fn bus_is_up(&self) -> bool {
        self.inner().lock().hub.bus_is_up()
    }

    /// Hub-wide counters.
    #[must_use]
    pub fn stats(&self) -> HubStats {
        self.inner().lock().hub.stats()
    }

    /// Reads the hub under its lock (presence lists, logs, members…). Keep `f` short: every
    /// connection waits for it.
    pub fn inspect<T>(&self, f: impl FnOnce(&Hub) -> T) -> T {
        f(&self.inner().lock().hub)
    }

    /// The next hub event (joins, leaves, closes, expiries, publishes), oldest first, without
    /// waiting. The queue keeps the last [`HubOptions::max_events`].
    #[must_use]
    pub fn next_event(&self) -> Option<HubEvent> {
        self.inner().lock().events.pop_front()
    }

    /// Runs an accepted WebSocket as a hub connection on the calling thread until it ends.
    ///
    /// Text (and binary) messages are envelopes for [`Hub::handle_envelope`]; the hub's
    /// frames are sent as text messages by a pusher thread (see the module docs) while the
    /// WebSocket's outbox holds less than [`HubOptions::push_buffer`]; a
    /// [`HubEvent::Close`] (4100 too slow, 1008 rate limit) closes the WebSocket with that
    /// code; when the WebSocket ends the connection leaves the hub (its presence names stay
    /// for the grace period). `name` is the presence name (`None`: not listed).
    #[expect(clippy::needless_pass_by_value, reason = "the API shared with tidewire-smol")]
    pub fn serve_ws(&self, mut ws: WebSocket, principal: Principal, name: Option<String>) {
        let inner = Arc::clone(self.inner());
        let slot = Arc::new(Slot::default());
        let conn = inner.with(|st, now| {
            let conn = st.hub.connect(now, Transport::WebSocket, principal);
            st.hub.set_presence_name(conn, name.as_deref());
            st.slots.insert(conn, Arc::clone(&slot));
            conn
        });
        let pusher = {
            let (inner, slot, sender) = (Arc::clone(&inner), Arc::clone(&slot), ws.sender());
            std::thread::Builder::new()
                .name("tidewire-hub-push".into())
                .spawn(move || push_ws(&inner, conn, &slot, &sender))
        };
        if pusher.is_err() {
            let _ = ws.close(CloseCode::INTERNAL_ERROR, "server overloaded");
        }
        loop {
            match ws.recv_event() {
                Event::Message(m) => {
                    inner.with(|st, now| st.hub.handle_envelope(now, conn, m.payload()));
                }
                Event::Closed(_) => break,
                _ => {}
            }
        }
        slot.notify(|f| f.done = true);
        if let Ok(p) = pusher {
            let _ = p.join();
        }
        inner.forget(conn, None);
    }

    /// Serves `GET /events?ch=NAME[&pos=EP:OFF]` as the hub's SSE stream of one channel, on
    /// the calling thread, until the client leaves, the hub drops it (too slow) or the
    /// server shuts down.
    ///
    /// The position comes from `Last-Event-ID` (which wins) or `pos=`; a value that is not
    /// a position counts as gone. Refusals come before the `200`: `400` (no `ch`, bad name),
    /// `403` (the policy refuses to let `principal` read the channel), `503` (limits). Then
    /// the stream carries the hub's frames: the replay and live events (`id: EP:OFF`,
    /// `event: CH`), `event: reset` when the position is gone, an id-only block with the
    /// head for a new client, `event: presence`; and keep-alive comments.
    ///
    /// # Errors
    /// The refusal (after answering it), or `InvalidInput` for unusable settings.
    pub fn serve_sse(&self, req: crate::HttpRequest, principal: Principal) -> io::Result<()> {
        http::serve_sse(self.inner(), req, principal)
    }

    /// Serves `GET /poll?ch=NAME[&pos=EP:OFF][&wait=1]` from the channel's log with the core
    /// `Poll` (ETag / `If-None-Match` → `304`; a long poll is held until a publish on the
    /// channel or `HubOptions::poll.long_poll`). Refusals: `400`, `403`, `503` as for
    /// [`serve_sse`](Self::serve_sse).
    ///
    /// Each request is its own short-lived hub connection ([`Transport::Poll`]) for as long
    /// as it is served: the browser sends no session id, so a polling client is not tracked
    /// across requests. Its presence name (the principal's user) stays listed between polls
    /// thanks to the presence grace period.
    ///
    /// # Errors
    /// The socket's error, or the refusal after answering it.
    pub fn serve_poll(&self, req: crate::HttpRequest, principal: Principal) -> io::Result<()> {
        http::serve_poll(self.inner(), req, principal)
    }

    /// Serves `POST /api/publish?ch=NAME[&id=ID]` with a JSON body (at most
    /// [`HubOptions::max_publish_body`] bytes): a client publish, authorized by the policy
    /// (`403`) and deduplicated by `id` in the same window as WebSocket publishes of the same
    /// user (a retry gets the first position again). Answers `200 {"ep":"..","off":N}`;
    /// `400` for a missing channel, a bad name or id, or a body that is not one JSON value;
    /// `405` for another method; `413`/`408` for a body too large or too slow.
    ///
    /// With `trusted` (e.g. an admin token) the policy is not asked and no dedup is done (the
    /// server-side [`publish`](Self::publish)).
    ///
    /// # Errors
    /// The socket's error, or the refusal after answering it.
    #[expect(
        clippy::needless_pass_by_value,
        reason = "the same shape as serve_ws/serve_sse/serve_poll, which keep the principal"
    )]
    pub fn serve_publish(
        &self,
        req: crate::HttpRequest,
        principal: Principal,
        trusted: bool,
    ) -> io::Result<()> {
        http::serve_publish(self.inner(), req, &principal, trusted)
    }
}

/// A WebSocket connection's pusher: moves the hub's frames into the WebSocket while it has
/// room; closes it when the hub says so.
fn push_ws(inner: &Inner, conn: ConnId, slot: &Slot, sender: &Sender) {
    let bound = inner.opts.push_buffer.max(1);
    loop {
        let mut f = slot.flags();
        loop {
            if f.done || f.aborted {
                return;
            }
            if let Some((code, reason)) = f.close.take() {
                drop(f);
                let _ = sender.close(code, reason);
                return;
            }
            if f.ready {
                if sender.buffered_amount() < bound {
                    f.ready = false;
                    break;
                }
                // The transport is full: look again soon.
                f = slot.wait(f, Some(Instant::now() + ROOM_POLL));
            } else {
                f = slot.wait(f, None);
            }
        }
        drop(f);
        let room = bound.saturating_sub(sender.buffered_amount()).max(1);
        let frames = {
            let mut st = inner.lock();
            let mut frames = Vec::new();
            let mut taken = 0;
            while taken < room {
                let Some(frame) = st.hub.pull(conn) else { break };
                taken += frame.len();
                frames.push(frame);
            }
            if st.hub.buffered(conn).is_some_and(|(n, _)| n > 0) {
                slot.flags().ready = true;
            }
            frames
        };
        for frame in frames {
            let Ok(text) = Utf8Bytes::try_from_bytes(frame) else { continue };
            if sender.send(Message::text(text)).is_err() {
                return;
            }
        }
    }
}

/// Answers a refused subscription and reports it.
fn refuse(req: crate::HttpRequest, e: HubError) -> io::Result<()> {
    let (status, kind) = match e {
        HubError::Forbidden => (403, ErrorKind::PermissionDenied),
        HubError::BadChannel | HubError::BadId | HubError::BadJson => {
            (400, ErrorKind::InvalidInput)
        }
        _ => (503, ErrorKind::Other),
    };
    req.respond(
        status,
        &[("Content-Type", "text/plain; charset=utf-8")],
        format!("{e}\n").as_bytes(),
    )?;
    Err(io::Error::new(kind, e))
}
