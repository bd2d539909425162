//! [`Channels`]: named channels with a replay log, served as Server-Sent Events streams and
//! by polling, over the core's [`Feeds`], [`SseStream`] and [`Poll`].
//!
//! Threads and locks:
//!
//! - One mutex guards the [`Feeds`] and the table of live subscribers (SSE streams and
//!   held long polls). Subscribing, resuming from the log and registering a stream happen
//!   under it, so a stream misses no publish and gets none twice.
//! - Each stream is an [`SseStream`] under its own mutex, with a condition variable. The
//!   connection's thread (the one in [`Channels::serve_sse`]) owns the socket: it writes
//!   what the stream queues (vectored), waits on the condition variable until the next
//!   keep-alive otherwise, and every second looks (without blocking) whether the client
//!   closed the connection. A write error ends the stream too.
//! - [`Channels::publish`] appends under the feeds lock, releases it, then hands the one
//!   encoded frame to each subscriber's stream (a clone of the same `Bytes`) and wakes its
//!   thread. Publishes are serialized among themselves so that every stream receives a
//!   channel's events in log order.
//! - A held long poll waits on its own condition variable until a publish on its channel,
//!   its deadline, or the server's shutdown.

use std::collections::{HashMap, VecDeque};
use std::io::{self, ErrorKind, IoSlice, Read as _, Write as _};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use bytes::{Buf as _, Bytes};
use tidewire::Machine as _;
use tidewire::Transmit;
use tidewire::feed::{FeedError, Feeds, FeedsConfig, SubscriberId};
use tidewire::poll::{Poll, PollConfig, PollRequest};
use tidewire::replay::Position;
use tidewire::sse::{SseStream, SseStreamConfig, SseStreamEvent, StreamEnd, encode};

use crate::conn::lock;
use crate::http::HttpRequest;
use crate::server::Held;

/// How often an idle stream looks whether its client closed the connection.
const LIVENESS: Duration = Duration::from_secs(1);
/// The longest a blocked write sleeps before the stream looks at its state again.
const PATIENCE: Duration = Duration::from_millis(250);
/// How often at most the logs are swept for expired messages.
const SWEEP: Duration = Duration::from_secs(1);
/// Most chunks written by one `write_vectored` call.
const MAX_IOV: usize = 64;
/// A writer stops pulling chunks into its batch past this many bytes.
const BATCH_BYTES: usize = 256 << 10;

/// Settings of [`Channels`]. Build with `ChannelsConfig::default()` and change fields.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChannelsConfig {
    /// Channel count, subscribers per channel, name length and each replay log's bounds
    /// (default 1000 messages, 1 MiB, 2 minutes per channel).
    pub feeds: FeedsConfig,
    /// Each SSE stream: keep-alive interval (default 15 s), `retry:` hint, outbox bound and
    /// slow-reader policy (default 1 MiB, disconnect).
    pub sse: SseStreamConfig,
    /// Polling: how long a long poll is held (default 25 s), events per response.
    pub poll: PollConfig,
}

/// Channels with a replay log each, and their live SSE streams and held long polls. Cheap to
/// clone (a shared handle); use it from any thread. See the [crate docs](crate) for an
/// example.
///
/// - [`publish`](Self::publish) appends a message (JSON text) to a channel and delivers it.
/// - [`serve_sse`](Self::serve_sse) serves an [`HttpRequest`] as an event stream of a
///   channel, resumable with `Last-Event-ID`.
/// - [`serve_poll`](Self::serve_poll) serves an [`HttpRequest`] as a poll
///   (`?ch=NAME&pos=EPOCH:OFFSET`, `wait=1` for a long poll).
///
/// Both transports share the positions (`EPOCH:OFFSET`) and the "position gone" rule: a
/// client whose position left the log gets `recovered: false` (polling) or an
/// `event: reset` (SSE) and must refetch its state — never a silent partial replay.
#[derive(Clone)]
pub struct Channels {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Channels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hub = lock(&self.inner.hub);
        f.debug_struct("Channels")
            .field("channels", &hub.feeds.len())
            .field("streams", &hub.subs.len())
            .finish_non_exhaustive()
    }
}

struct Inner {
    cfg: ChannelsConfig,
    hub: Mutex<Hub>,
    /// Held across a whole publish: a channel's events reach every stream in log order.
    publishing: Mutex<()>,
    next_id: AtomicU64,
}

struct Hub {
    feeds: Feeds,
    subs: HashMap<SubscriberId, Sub>,
    next_sweep: Instant,
}

impl Hub {
    /// Drops expired messages (at most once per [`SWEEP`]).
    fn sweep(&mut self, now: Instant) {
        if now >= self.next_sweep {
            self.feeds.handle_timeout(now);
            self.next_sweep = now + SWEEP;
        }
    }
}

#[derive(Clone)]
enum Sub {
    Stream(Arc<StreamCell>),
    Poll(Arc<PollCell>),
}

/// Removes a subscriber when its stream or poll ends, however it ends.
struct Subscription<'a> {
    inner: &'a Inner,
    channel: &'a str,
    id: SubscriberId,
}

impl Drop for Subscription<'_> {
    fn drop(&mut self) {
        let mut hub = lock(&self.inner.hub);
        hub.feeds.unsubscribe(self.channel, self.id);
        hub.subs.remove(&self.id);
    }
}

impl Channels {
    /// No channels yet. Epochs are drawn from OS entropy, so that a restarted server never
    /// reuses a position.
    #[must_use]
    pub fn new(cfg: ChannelsConfig) -> Channels {
        let seed = getrandom::u64().unwrap_or_else(|_| fallback_seed());
        let hub = Hub {
            feeds: Feeds::new(cfg.feeds, seed),
            subs: HashMap::new(),
            next_sweep: Instant::now() + SWEEP,
        };
        let inner = Inner {
            cfg,
            hub: Mutex::new(hub),
            publishing: Mutex::new(()),
            next_id: AtomicU64::new(1),
        };
        Channels { inner: Arc::new(inner) }
    }

    /// The settings.
    #[must_use]
    pub fn config(&self) -> &ChannelsConfig {
        &self.inner.cfg
    }

    /// Restores `channel` after a restart of the server: its log becomes empty and continues
    /// after `last`, the position of the last message the earlier process published (saved
    /// by the application), so that the next publish gets `last.offset + 1` in the same epoch
    /// and a client that resumes from `last` or later (`Last-Event-ID`, `?pos=`) gets exactly
    /// what it missed. Call it before serving the channel. See [`Feeds::restore`].
    ///
    /// # Errors
    /// [`FeedError`]: a bad channel name or too many channels.
    pub fn restore(&self, channel: &str, last: Position) -> Result<(), FeedError> {
        lock(&self.inner.hub).feeds.restore(channel, last)
    }

    /// Appends `data` (JSON text) to `channel`'s log, hands its one encoded SSE frame to
    /// every stream of the channel (a clone of the same `Bytes` each) and wakes the held
    /// long polls. Returns the message's position.
    ///
    /// # Errors
    /// [`FeedError`]: a bad channel name, too many channels, data that is not UTF-8.
    pub fn publish(&self, channel: &str, data: impl Into<Bytes>) -> Result<Position, FeedError> {
        let data = data.into();
        let _order = lock(&self.inner.publishing);
        let now = Instant::now();
        let (published, targets) = {
            let mut hub = lock(&self.inner.hub);
            hub.sweep(now);
            let published = hub.feeds.publish(now, channel, data)?;
            let targets: Vec<Sub> =
                published.subscribers.iter().filter_map(|id| hub.subs.get(id).cloned()).collect();
            (published, targets)
        };
        for target in targets {
            match target {
                Sub::Stream(cell) => {
                    let mut st = lock(&cell.state);
                    let _ = st.stream.send_event(now, published.pos, published.sse.clone(), None);
                    drop(st);
                    cell.wake.notify_one();
                }
                Sub::Poll(cell) => cell.notify(|w| w.news = true),
            }
        }
        Ok(published.pos)
    }

    /// Live SSE streams plus held long polls (for tests and leak checks).
    #[must_use]
    pub fn streams(&self) -> usize {
        lock(&self.inner.hub).subs.len()
    }

    /// Serves `req` as an event stream of `channel` on the calling thread, until it ends.
    ///
    /// The response is `200` with the SSE headers (`Content-Type: text/event-stream`,
    /// `Cache-Control: no-cache`, `X-Accel-Buffering: no`, no `Content-Length`) and
    /// `headers` (e.g. CORS). A client that sends `Last-Event-ID: EPOCH:OFFSET` gets exactly
    /// the events it missed, in order, once. When that position is gone (trimmed from the
    /// log, another epoch, or not a position at all) it gets an id-only block with the head
    /// position and then `event: reset` with `data: {"ch":CH,"pos":HEAD,"recovered":false}`,
    /// so that it refetches its state. Every new client learns the head position at once
    /// (id-only block). Live events follow as `id: EPOCH:OFFSET`, `event: CH`, `data: ..`,
    /// and a keep-alive comment after `ChannelsConfig::sse.keepalive` of silence.
    ///
    /// The stream ends when the client goes away (its end of file, seen within a second, or
    /// a write error), when it reads too slowly (the outbox policy, or a write that makes no
    /// progress for `WsConfig::send_timeout`), or when the server shuts down; returns how.
    ///
    /// The application authenticates BEFORE calling this (`401`/`403` with
    /// [`HttpRequest::respond`]), exactly as for upgrades.
    ///
    /// # Errors
    /// `InvalidInput` for a header that cannot be written (the connection is dropped);
    /// `InvalidInput` for a bad channel name (answered `400`), `Other` for too many channels
    /// or subscribers (answered `503`).
    pub fn serve_sse(
        &self,
        req: HttpRequest,
        channel: &str,
        headers: &[(&str, &str)],
    ) -> io::Result<StreamEnd> {
        let now = Instant::now();
        let stream = SseStream::new(self.inner.cfg.sse, now, headers)
            .map_err(|e| io::Error::new(ErrorKind::InvalidInput, e))?;
        // An id that is not a position cannot be resumed: the client must refetch.
        let from: Result<Option<Position>, ()> = match req.request().last_event_id() {
            None => Ok(None),
            Some(id) => id.parse().map(Some).map_err(|_| ()),
        };
        let cell = Arc::new(StreamCell {
            state: Mutex::new(StreamState { stream, aborted: false }),
            wake: Condvar::new(),
        });
        let id = self.next_id();
        {
            let mut hub = lock(&self.inner.hub);
            hub.sweep(now);
            if let Err(e) = hub.feeds.subscribe(channel, id) {
                drop(hub);
                return refuse(req, e);
            }
            let mut st = lock(&cell.state);
            if let Ok(log) = hub.feeds.log(channel) {
                let gone = match from {
                    Ok(from) => {
                        st.stream.resume(now, log, from, Some(channel)).err().map(|g| g.head)
                    }
                    Err(()) => {
                        let _ = st.stream.resume(now, log, None, Some(channel));
                        Some(log.head())
                    }
                };
                if let Some(head) = gone {
                    let _ = st.stream.send_frame(now, reset_frame(channel, head));
                }
            }
            drop(st);
            hub.subs.insert(id, Sub::Stream(Arc::clone(&cell)));
        }
        let subscription = Subscription { inner: &self.inner, channel, id };
        if req.hold(Arc::clone(&cell) as Arc<dyn Held>) {
            cell.shutdown_by_server();
        }
        let end = run_stream(&cell, req.socket(), req.limits().send_timeout);
        req.finish();
        drop(subscription);
        Ok(end)
    }

    /// Serves `req` as a poll of the channel named by `?ch=`, on the calling thread.
    ///
    /// `?pos=EPOCH:OFFSET` (or `If-None-Match`) is the last position the client has; without
    /// it the answer is the head position and no events. The answer is `200` JSON
    /// `{"ch":..,"pos":..,"recovered":true,"events":[{"ep":..,"off":..,"data":..}]}` with
    /// the new position as `ETag`, `304` when `If-None-Match` names the head, or
    /// `recovered: false` with the head position when `pos` is gone. With `wait=1` a
    /// request with nothing new is held until a publish on the channel or
    /// `ChannelsConfig::poll.long_poll` (then `304` or an empty list); a server shutdown
    /// answers held polls at once. A bad request gets `400`.
    ///
    /// Authenticate before calling this, as for [`serve_sse`](Self::serve_sse).
    ///
    /// # Errors
    /// The socket's error while answering; `InvalidInput`/`Other` as for
    /// [`serve_sse`](Self::serve_sse) for a refused channel (answered).
    pub fn serve_poll(&self, req: HttpRequest) -> io::Result<()> {
        let now = Instant::now();
        let request = match PollRequest::from_request(req.request()) {
            Ok(r) => r,
            Err(e) => return req.respond(e.status(), &[], format!("{e}\n").as_bytes()),
        };
        let channel = request.channel.clone();
        let mut poll = Poll::new(self.inner.cfg.poll, now, request);
        let id = self.next_id();
        let cell =
            Arc::new(PollCell { state: Mutex::new(PollWake::default()), wake: Condvar::new() });
        {
            let mut hub = lock(&self.inner.hub);
            hub.sweep(now);
            let log = match hub.feeds.log(&channel) {
                Ok(log) => log,
                Err(e) => {
                    drop(hub);
                    return refuse(req, e).map(drop);
                }
            };
            if let Some(response) = poll.check(now, log) {
                drop(hub);
                return req.send(&response);
            }
            // Held: listen for publishes on the channel.
            if let Err(e) = hub.feeds.subscribe(&channel, id) {
                drop(hub);
                return refuse(req, e).map(drop);
            }
            hub.subs.insert(id, Sub::Poll(Arc::clone(&cell)));
        }
        let subscription = Subscription { inner: &self.inner, channel: &channel, id };
        if req.hold(Arc::clone(&cell) as Arc<dyn Held>) {
            cell.shutdown_by_server();
        }
        let response = loop {
            let wake = std::mem::take(&mut *lock(&cell.state));
            if wake.aborted {
                break None;
            }
            let now = Instant::now();
            {
                let mut hub = lock(&self.inner.hub);
                let Ok(log) = hub.feeds.log(&channel) else { break None };
                let answer = if wake.stop {
                    // The server shuts down: answer "nothing new" (or what is new) at once.
                    let due = poll.poll_timeout().map_or(now, |d| d.max(now));
                    poll.check(due, log)
                } else {
                    poll.check(now, log)
                };
                if answer.is_some() {
                    break answer;
                }
            }
            let deadline = poll.poll_timeout().unwrap_or(now);
            let mut w = lock(&cell.state);
            while !w.news && !w.stop && !w.aborted {
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                w = cell
                    .wake
                    .wait_timeout(w, deadline - now)
                    .map_or_else(|p| p.into_inner().0, |r| r.0);
            }
            // Keep the flags for the next round (taken at its start).
        };
        drop(subscription);
        match response {
            Some(bytes) => req.send(&bytes),
            None => {
                req.finish();
                Err(ErrorKind::ConnectionAborted.into())
            }
        }
    }

    fn next_id(&self) -> SubscriberId {
        SubscriberId(self.inner.next_id.fetch_add(1, Ordering::Relaxed))
    }
}

/// Answers a request whose channel was refused and reports it.
fn refuse(req: HttpRequest, e: FeedError) -> io::Result<StreamEnd> {
    let (status, kind) = match e {
        FeedError::BadName => (400, ErrorKind::InvalidInput),
        _ => (503, ErrorKind::Other),
    };
    req.respond(status, &[], format!("{e}\n").as_bytes())?;
    Err(io::Error::new(kind, e))
}

/// The full-state notice after a gone position: `event: reset`,
/// `data: {"ch":CH,"pos":HEAD,"recovered":false}`.
fn reset_frame(channel: &str, head: Position) -> Bytes {
    let data = format!(r#"{{"ch":{},"pos":"{head}","recovered":false}}"#, json_string(channel));
    encode::event(None, Some("reset"), data.into()).map(|e| e.to_bytes()).unwrap_or_default()
}

/// `s` as a JSON string literal.
pub(crate) fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A seed when the OS has no entropy to give: the clock and an address, enough for epochs
/// to differ across restarts.
pub(crate) fn fallback_seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    #[allow(clippy::cast_possible_truncation)]
    let low = t as u64;
    low ^ u64::from(std::process::id()).rotate_left(40)
}

// ---------------------------------------------------------------------------------------
// SSE streams
// ---------------------------------------------------------------------------------------

/// One live stream, shared by its thread, the publishers and the server's shutdown.
struct StreamCell {
    state: Mutex<StreamState>,
    /// Notified when the stream has something new to write, or must end.
    wake: Condvar,
}

struct StreamState {
    stream: SseStream,
    /// The server gave up on the connection: its socket is shut down.
    aborted: bool,
}

impl Held for StreamCell {
    fn shutdown_by_server(&self) {
        lock(&self.state).stream.close(Instant::now());
        self.wake.notify_one();
    }

    fn abort(&self) {
        lock(&self.state).aborted = true;
        self.wake.notify_one();
    }
}

/// The stream's thread: writes what the stream queues until it ends. See the module docs.
fn run_stream(cell: &StreamCell, sock: &TcpStream, stall: Option<Duration>) -> StreamEnd {
    let mut batch: VecDeque<Bytes> = VecDeque::new();
    let mut shutdown = false;
    let mut ended = None;
    let mut next_check = Instant::now() + LIVENESS;
    let mut stalled_since: Option<Instant> = None;
    let _ = sock.set_write_timeout(Some(PATIENCE));
    loop {
        // Pull the next batch, or wait for one (or for the next liveness check).
        {
            let mut st = lock(&cell.state);
            loop {
                while let Some(ev) = st.stream.poll_event() {
                    if let SseStreamEvent::Ended(why) = ev {
                        ended.get_or_insert(why);
                    }
                }
                if st.aborted {
                    return ended.unwrap_or(StreamEnd::ClientGone);
                }
                if ended == Some(StreamEnd::TooSlow) {
                    // Nothing more can reach this client in order; it resumes later.
                    return StreamEnd::TooSlow;
                }
                if batch.is_empty() && !shutdown {
                    pull(&mut st.stream, &mut batch, &mut shutdown);
                }
                if !batch.is_empty() || shutdown {
                    break;
                }
                let now = Instant::now();
                let deadline = st.stream.poll_timeout();
                if deadline.is_some_and(|d| d <= now) {
                    st.stream.handle_timeout(now);
                    continue;
                }
                if now >= next_check {
                    break;
                }
                let until = deadline.map_or(next_check, |d| d.min(next_check));
                st = cell
                    .wake
                    .wait_timeout(st, until - now)
                    .map_or_else(|p| p.into_inner().0, |r| r.0);
            }
        }
        let now = Instant::now();
        if batch.is_empty() {
            if shutdown {
                return ended.unwrap_or(StreamEnd::Closed);
            }
            next_check = now + LIVENESS;
            if peer_closed(sock) {
                lock(&cell.state).stream.handle_eof(now);
                return StreamEnd::ClientGone;
            }
            continue;
        }
        match write_batch(sock, &mut batch) {
            Ok(()) => stalled_since = None,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                let since = *stalled_since.get_or_insert(now);
                if stall.is_some_and(|t| now >= since + t) {
                    // The client stopped reading: end as the outbox policy would.
                    lock(&cell.state).stream.handle_eof(now);
                    return StreamEnd::TooSlow;
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => {
                lock(&cell.state).stream.handle_eof(now);
                return ended.unwrap_or(StreamEnd::ClientGone);
            }
        }
    }
}

/// Moves queued chunks of the stream into `batch` (bounded), noting a `Shutdown`.
pub(crate) fn pull(stream: &mut SseStream, batch: &mut VecDeque<Bytes>, shutdown: &mut bool) {
    let mut bytes = 0;
    while batch.len() < MAX_IOV && bytes < BATCH_BYTES {
        match stream.poll_transmit() {
            Some(Transmit::Bytes(b)) => {
                bytes += b.len();
                if !b.is_empty() {
                    batch.push_back(b);
                }
            }
            Some(Transmit::Shutdown) => {
                *shutdown = true;
                break;
            }
            Some(_) | None => break,
        }
    }
}

/// Writes from `batch` once (vectored), dropping what was written.
pub(crate) fn write_batch(sock: &TcpStream, batch: &mut VecDeque<Bytes>) -> io::Result<()> {
    let mut slices = [IoSlice::new(&[]); MAX_IOV];
    let n = batch.len().min(MAX_IOV);
    for (slot, chunk) in slices.iter_mut().zip(batch.iter()) {
        *slot = IoSlice::new(chunk);
    }
    let mut written = (&*sock)
        .write_vectored(&slices[..n])
        .and_then(|w| if w == 0 { Err(ErrorKind::WriteZero.into()) } else { Ok(w) })?;
    while written > 0 {
        let Some(front) = batch.front_mut() else { break };
        if front.len() <= written {
            written -= front.len();
            batch.pop_front();
        } else {
            front.advance(written);
            written = 0;
        }
    }
    Ok(())
}

/// Whether the client closed its end (or the connection broke), without blocking. A client
/// sends nothing after its request; anything it does send is read and discarded.
pub(crate) fn peer_closed(sock: &TcpStream) -> bool {
    if sock.set_nonblocking(true).is_err() {
        return false;
    }
    let mut buf = [0u8; 512];
    let mut closed = false;
    for _ in 0..8 {
        match (&*sock).read(&mut buf) {
            Ok(0) => {
                closed = true;
                break;
            }
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                closed = e.kind() != ErrorKind::WouldBlock;
                break;
            }
        }
    }
    let _ = sock.set_nonblocking(false);
    closed
}

// ---------------------------------------------------------------------------------------
// Held long polls
// ---------------------------------------------------------------------------------------

/// A held long poll, woken by publishes and the server's shutdown.
struct PollCell {
    state: Mutex<PollWake>,
    wake: Condvar,
}

#[derive(Default)]
struct PollWake {
    /// A publish on the channel since the poll last looked.
    news: bool,
    /// The server is shutting down: answer now.
    stop: bool,
    /// The server gave up on the connection.
    aborted: bool,
}

impl PollCell {
    fn notify(&self, f: impl FnOnce(&mut PollWake)) {
        f(&mut lock(&self.state));
        self.wake.notify_one();
    }
}

impl Held for PollCell {
    fn shutdown_by_server(&self) {
        self.notify(|w| w.stop = true);
    }

    fn abort(&self) {
        self.notify(|w| w.aborted = true);
    }
}
