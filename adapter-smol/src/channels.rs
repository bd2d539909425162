//! [`Channels`]: named channels served as Server-Sent Events streams and by polling, on top
//! of the core's [`Feeds`] (one replay log per channel) and [`SseStream`] / [`Poll`]
//! machines.
//!
//! Each live SSE stream is a core `SseStream` in a small shared cell (a mutex and a wake-up).
//! [`Channels::publish`] appends to the channel's log under the feeds lock, releases it, then
//! hands the one encoded frame to every stream of the channel (a clone of the same `Bytes`)
//! and wakes it; publishes are serialised so that every stream gets a channel's events in
//! log order. The stream's task (the one that called [`Channels::serve_sse`]) owns the
//! socket: it races a wake-up, the keep-alive timer and a read of the socket (end of file =
//! the client went away), and writes what the core queued in vectored batches. A reader that
//! falls behind fills the core's bounded outbox and is ended by its policy.
//!
//! A held long poll registers as a subscriber of its channel; a publish wakes it and it
//! re-runs `Poll::check`.

use std::collections::HashMap;
use std::fmt;
use std::io::{self, Read as _};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use bytes::Bytes;
use event_listener::Event as Notify;
use smol::{Timer, future};
use tidewire::feed::{FeedError, Feeds, FeedsConfig, SubscriberId};
use tidewire::poll::{Poll, PollConfig, PollRequest};
use tidewire::replay::{Epoch, Position, ReplayLog};
use tidewire::sse::{SseStream, SseStreamConfig, SseStreamEvent, StreamEnd, encode};
use tidewire::{Machine, Transmit};

use crate::driver::{BATCH_BYTES, MAX_SLICES};
use crate::http::HttpRequest;
use crate::stream_io::{StreamIo, Woke};

/// Settings of [`Channels`]. Build it with `ChannelsConfig::default()` and change the fields
/// you need.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChannelsConfig {
    /// Channel bounds and each channel's replay log (1000 messages, 1 MiB, 2 min).
    pub feeds: FeedsConfig,
    /// Every SSE stream: keep-alive (15 s), `retry:` hint, outbox (1 MiB, disconnect).
    pub sse: SseStreamConfig,
    /// Polling: long-poll hold (25 s) and events per response (100).
    pub poll: PollConfig,
}

/// Named channels for SSE streams and polling: a cloneable, thread-safe handle.
///
/// Each channel has a bounded replay log (`ChannelsConfig::feeds`); SSE streams and polls
/// share its positions (`EPOCH:OFFSET`), so a client resumes exactly or is told to refetch.
/// [`publish`](Self::publish) encodes an event once and hands the same `Bytes` to every
/// stream of the channel; each stream's task (the one in [`serve_sse`](Self::serve_sse))
/// owns its socket, writes keep-alives while idle and ends when the client goes away, when
/// it reads too slowly for the outbox policy (1 MiB by default), or at server shutdown.
#[derive(Clone)]
pub struct Channels {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: ChannelsConfig,
    state: Mutex<State>,
    /// Serialises publishes, so that concurrent publishers cannot hand a stream a
    /// channel's events out of log order.
    order: Mutex<()>,
}

struct State {
    feeds: Feeds,
    /// Live SSE streams and held long polls, by the id they subscribed with.
    subs: HashMap<SubscriberId, Sub>,
    next_id: u64,
    /// When the next logged message expires (then the logs are trimmed).
    next_expiry: Option<Instant>,
}

#[derive(Clone)]
enum Sub {
    Stream(Arc<StreamCell>),
    Poll(Arc<Notify>),
}

/// One live SSE stream, shared by its task and the publishers.
struct StreamCell {
    stream: Mutex<SseStream>,
    /// Something queued (or the stream ended): the task writes it.
    wake: Notify,
}

impl StreamCell {
    fn lock(&self) -> MutexGuard<'_, SseStream> {
        self.stream.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A position no log ever has (feeds never draw epoch 0): resuming from it is "gone".
const NOWHERE: Position = Position { epoch: Epoch(0), offset: 0 };

/// Read buffer of a stream's end-of-file watch (clients send nothing after the request).
const WATCH_READ: usize = 256;

impl State {
    /// Trims expired messages once one is due.
    fn maintain(&mut self, now: Instant) {
        if self.next_expiry.is_some_and(|at| at <= now) {
            self.sweep(now);
        }
    }

    /// Trims every log and drops the channels left empty with nobody listening.
    fn sweep(&mut self, now: Instant) {
        self.feeds.handle_timeout(now);
        self.next_expiry = self.feeds.poll_timeout();
    }

    /// Runs `f`; when the channel table is full, sweeps empty channels away and runs it
    /// once more.
    fn retry_full<T>(
        &mut self,
        now: Instant,
        mut f: impl FnMut(&mut Feeds) -> Result<T, FeedError>,
    ) -> Result<T, FeedError> {
        match f(&mut self.feeds) {
            Err(FeedError::TooManyChannels) => {
                self.sweep(now);
                f(&mut self.feeds)
            }
            other => other,
        }
    }

    /// Makes sure `channel` exists, so that its log can be read.
    fn ensure(&mut self, now: Instant, channel: &str) -> Result<(), FeedError> {
        self.retry_full(now, |feeds| feeds.log(channel).map(|_| ()))
    }

    fn log(&mut self, channel: &str) -> Result<&ReplayLog, FeedError> {
        self.feeds.log(channel)
    }

    fn new_id(&mut self) -> SubscriberId {
        self.next_id += 1;
        SubscriberId(self.next_id)
    }
}

/// Unsubscribes a stream or held poll on every exit path.
struct SubGuard<'a> {
    inner: &'a Inner,
    channel: String,
    id: SubscriberId,
}

impl Drop for SubGuard<'_> {
    fn drop(&mut self) {
        let mut st = self.inner.lock();
        st.feeds.unsubscribe(&self.channel, self.id);
        st.subs.remove(&self.id);
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Channels {
    /// No channels yet; new logs draw their epochs from a generator seeded from OS entropy,
    /// so that a restarted server never reuses positions.
    #[must_use]
    pub fn new(cfg: ChannelsConfig) -> Channels {
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
        let state = State {
            feeds: Feeds::new(cfg.feeds, u64::from_le_bytes(seed)),
            subs: HashMap::new(),
            next_id: 0,
            next_expiry: None,
        };
        Channels { inner: Arc::new(Inner { cfg, state: Mutex::new(state), order: Mutex::new(()) }) }
    }

    /// The settings.
    #[must_use]
    pub fn config(&self) -> &ChannelsConfig {
        &self.inner.cfg
    }

    /// Appends `data` (JSON text) to `channel`'s log, hands the one encoded SSE frame to
    /// every stream of the channel (a clone of the same `Bytes` each) and wakes its held long
    /// polls. Returns the message's position.
    ///
    /// # Errors
    /// [`FeedError`] for a bad channel name, too many channels, or data that is not UTF-8.
    pub fn publish(&self, channel: &str, data: impl Into<Bytes>) -> Result<Position, FeedError> {
        let data = data.into();
        let _order = self.inner.order.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        let (published, targets) = {
            let mut st = self.inner.lock();
            st.maintain(now);
            let published =
                st.retry_full(now, |feeds| feeds.publish(now, channel, data.clone()))?;
            let expiry = now.checked_add(self.inner.cfg.feeds.log.max_age);
            st.next_expiry = match (st.next_expiry, expiry) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let targets: Vec<Sub> =
                published.subscribers.iter().filter_map(|id| st.subs.get(id).cloned()).collect();
            (published, targets)
        };
        for target in targets {
            match target {
                Sub::Stream(cell) => {
                    cell.lock().send_event(now, published.pos, published.sse.clone(), None);
                    cell.wake.notify(1);
                }
                Sub::Poll(notify) => {
                    notify.notify(usize::MAX);
                }
            }
        }
        Ok(published.pos)
    }

    /// Live SSE streams plus held long polls (for tests and leak checks).
    #[must_use]
    pub fn streams(&self) -> usize {
        self.inner.lock().subs.len()
    }

    /// Serves `req` as an event stream of `channel`: 200 with the SSE headers (plus
    /// `headers`, e.g. CORS), then what the client missed since its `Last-Event-ID` (exact
    /// replay), or — when that position is gone (or not a position) — an id-only block
    /// with the channel's head and an `event: reset` with
    /// `data: {"ch":CH,"pos":"HEAD","recovered":false}`, so that the client refetches its
    /// state; then live events (`id: EPOCH:OFFSET`, `event: CHANNEL`), and keep-alive
    /// comments while idle, until the client goes away, the outbox policy ends a slow
    /// reader, or the server shuts down. Returns how the stream ended.
    ///
    /// Authenticate the request *before* calling this (answer 401/403 with
    /// [`HttpRequest::respond`]), exactly as for upgrades.
    ///
    /// # Errors
    /// The request is answered here, then: `InvalidInput` with 500 for a header that
    /// cannot be written; `InvalidInput` with 400 for a bad channel name; `Other` with 503
    /// when there are too many channels or subscribers.
    pub async fn serve_sse(
        &self,
        mut req: HttpRequest,
        channel: &str,
        headers: &[(&str, &str)],
    ) -> io::Result<StreamEnd> {
        let now = Instant::now();
        let Ok(mut stream) = SseStream::new(self.inner.cfg.sse, now, headers) else {
            req.fail(500, "invalid response header").await;
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "invalid response header"));
        };
        // A Last-Event-ID that is not a position of ours cannot be resumed: gone.
        let from = req.request().last_event_id().map(|id| id.parse().unwrap_or(NOWHERE));
        let subscribed = {
            let mut st = self.inner.lock();
            st.maintain(now);
            let id = st.new_id();
            match st.retry_full(now, |feeds| feeds.subscribe(channel, id)) {
                Ok(()) => {
                    let resumed = match st.log(channel) {
                        Ok(log) => Ok(stream.resume(now, log, from, Some(channel))),
                        Err(e) => Err(e),
                    };
                    match resumed {
                        Ok(resumed) => {
                            if let Err(gone) = resumed
                                && let Ok(frame) = reset_frame(channel, gone.head)
                            {
                                stream.send_frame(now, frame);
                            }
                            let cell = Arc::new(StreamCell {
                                stream: Mutex::new(stream),
                                wake: Notify::new(),
                            });
                            st.subs.insert(id, Sub::Stream(cell.clone()));
                            Ok((cell, id))
                        }
                        Err(e) => {
                            st.feeds.unsubscribe(channel, id);
                            Err(e)
                        }
                    }
                }
                Err(e) => Err(e),
            }
        };
        let (cell, id) = match subscribed {
            Ok(s) => s,
            Err(e) => return Err(refuse(&mut req, e).await),
        };
        let _guard = SubGuard { inner: &self.inner, channel: channel.to_owned(), id };
        Ok(run_stream(&mut req, &cell).await)
    }

    /// Serves `req` as a poll of the channel named by `?ch=`: `?pos=EPOCH:OFFSET` (or
    /// `If-None-Match`) is the client's position, `wait=1` holds a request with nothing new
    /// until a message arrives or `PollConfig::long_poll` passes. Answers 200 with the JSON
    /// events and the new position (also the `ETag`), `304` when a conditional request has
    /// nothing new, `recovered: false` with the head when the position is gone, 400 for a
    /// bad request. A held poll is answered at once when the server shuts down, and dropped
    /// when the client goes away.
    ///
    /// Authenticate the request *before* calling this, as for [`serve_sse`](Self::serve_sse).
    ///
    /// # Errors
    /// The write's error when the client is gone; `InvalidInput` / `Other` (after a 400 /
    /// 503) for a bad channel name / too many channels or subscribers.
    pub async fn serve_poll(&self, mut req: HttpRequest) -> io::Result<()> {
        let preq = match PollRequest::from_request(req.request()) {
            Ok(p) => p,
            Err(e) => {
                req.fail(e.status(), &e.to_string()).await;
                return Ok(());
            }
        };
        let channel = preq.channel.clone();
        let mut poll = Poll::new(self.inner.cfg.poll, Instant::now(), preq);
        let notify = Arc::new(Notify::new());
        let mut guard: Option<SubGuard<'_>> = None;
        let mut rbuf = [0u8; WATCH_READ];
        loop {
            let stop = req.link().listen();
            let stopping = req.link().is_stopping();
            let now = Instant::now();
            let step = {
                let mut st = self.inner.lock();
                st.maintain(now);
                match st.ensure(now, &channel) {
                    Err(e) => Err(e),
                    Ok(()) => {
                        // Shutting down: answer now, as if the hold had timed out.
                        let at = if stopping {
                            poll.poll_timeout().map_or(now, |d| d.max(now))
                        } else {
                            now
                        };
                        let answer = st.log(&channel).ok().and_then(|log| poll.check(at, log));
                        match answer {
                            Some(answer) => Ok(Ok(answer)),
                            None if guard.is_some() => Ok(Err(notify.listen())),
                            None => {
                                let id = st.new_id();
                                match st.feeds.subscribe(&channel, id) {
                                    Ok(()) => {
                                        st.subs.insert(id, Sub::Poll(notify.clone()));
                                        let listener = notify.listen();
                                        drop(st);
                                        guard = Some(SubGuard {
                                            inner: &self.inner,
                                            channel: channel.clone(),
                                            id,
                                        });
                                        Ok(Err(listener))
                                    }
                                    Err(e) => Err(e),
                                }
                            }
                        }
                    }
                }
            };
            let listener = match step {
                Ok(Ok(answer)) => {
                    drop(guard);
                    return req.send_raw(answer).await;
                }
                Ok(Err(listener)) => listener,
                Err(e) => {
                    drop(guard);
                    return Err(refuse(&mut req, e).await);
                }
            };
            let deadline = poll.poll_timeout();
            let stream = req.stream();
            let woke = future::or(
                async {
                    listener.await;
                    true
                },
                future::or(
                    async {
                        stop.await;
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
                ),
            )
            .await;
            if !woke {
                // The client went away while held.
                drop(guard);
                req.give_up();
                return Ok(());
            }
        }
    }
}

impl fmt::Debug for Channels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.inner.lock();
        f.debug_struct("Channels")
            .field("channels", &st.feeds.len())
            .field("streams", &st.subs.len())
            .finish_non_exhaustive()
    }
}

/// The event that tells a client whose position is gone to refetch its state.
fn reset_frame(channel: &str, head: Position) -> Result<Bytes, encode::EncodeError> {
    let mut data = String::from("{\"ch\":");
    push_json_string(&mut data, channel);
    data.push_str(",\"pos\":\"");
    data.push_str(&head.to_string());
    data.push_str("\",\"recovered\":false}");
    Ok(encode::event(None, Some("reset"), data.into())?.to_bytes())
}

/// Appends `s` as a JSON string literal.
fn push_json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Answers a refused subscription (400 for a bad name, 503 when full) and returns the error.
async fn refuse(req: &mut HttpRequest, e: FeedError) -> io::Error {
    match e {
        FeedError::BadName | FeedError::NotText => {
            req.fail(400, &e.to_string()).await;
            io::Error::new(io::ErrorKind::InvalidInput, e)
        }
        _ => {
            req.fail(503, &e.to_string()).await;
            io::Error::other(e)
        }
    }
}

/// The stream's task: writes what the core queues, fires keep-alives, watches the socket
/// for the client going away and the server for its shutdown. Returns how it ended.
async fn run_stream(req: &mut HttpRequest, cell: &StreamCell) -> StreamEnd {
    let mut io = StreamIo::new(req.take_stream());
    let close_timeout = req.close_timeout();
    let link = req.link().clone();
    let mut end: Option<StreamEnd> = None;
    let mut shutdown_pulled = false;
    // Once the stream ended: how long its last bytes may take to go out.
    let mut linger: Option<Instant> = None;

    loop {
        let stop = link.listen();
        let now = Instant::now();
        let (listener, deadline) = {
            let mut s = cell.lock();
            if link.is_stopping() && !s.is_ended() {
                s.close(now);
            }
            if s.poll_timeout().is_some_and(|d| d <= now) {
                s.handle_timeout(now);
            }
            while let Some(ev) = s.poll_event() {
                if let SseStreamEvent::Ended(why) = ev {
                    end.get_or_insert(why);
                }
            }
            while !shutdown_pulled && io.queued() < BATCH_BYTES && io.chunks() < MAX_SLICES {
                match s.poll_transmit() {
                    Some(Transmit::Bytes(b)) => io.push(b),
                    Some(Transmit::Shutdown) => shutdown_pulled = true,
                    Some(_) => {}
                    None => break,
                }
            }
            // Registered under the lock: a publish after it cannot be missed.
            (cell.wake.listen(), s.poll_timeout())
        };

        if end == Some(StreamEnd::TooSlow) {
            // The reader is too slow: whatever the socket takes now, then down.
            io.flush_now();
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
        let deadline = match (deadline, linger) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if deadline.is_some_and(|d| d <= now) {
            continue;
        }
        match io.wait(deadline, future::or(listener, stop)).await {
            Woke::Read(bytes) => cell.lock().handle_read(Instant::now(), bytes),
            Woke::Gone => cell.lock().handle_eof(Instant::now()),
            Woke::Other => {}
        }
    }
    io.shutdown();
    end.unwrap_or(StreamEnd::ClientGone)
}
