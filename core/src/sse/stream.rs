//! [`SseStream`]: the server side of one event-stream response, resumable from a
//! [`Position`].
//!
//! The stream writes the response head (SSE.md 30), a `retry:` hint if configured, then
//! events. A client that reconnects with `Last-Event-ID: EPOCH:OFFSET` gets exactly the
//! events it missed from the channel's [`ReplayLog`], in order, once — or, when that
//! position is gone, [`resume`](SseStream::resume) says so and the application sends a
//! full-state event before live events continue: never a silent partial replay. Every
//! client learns its position at once (an id-only block, SSE.md 15), so even one that saw
//! no event yet resumes exactly.
//!
//! Live events are pushed with [`send_event`](SseStream::send_event) as one shared
//! [`Bytes`] per broadcast (encode once with [`SseStream::encode`], clone for each
//! receiver); an event already replayed is skipped. A reader that falls behind is handled
//! by the [`Outbox`] policy: by default the stream ends (the client resumes later from its
//! last id). While idle, a comment line goes out every `keepalive` (default 15 s) so that
//! proxies keep the stream open and the client's idle watchdog sees life.
//!
//! ```
//! use bytes::Bytes;
//! use tidewire::replay::{Epoch, LogLimits, Position, ReplayLog};
//! use tidewire::sse::stream::{SseStream, SseStreamConfig};
//! use tidewire::{Instant, Machine, Transmit};
//!
//! let now = Instant::now();
//! let mut log = ReplayLog::new(Epoch(0xa1), LogLimits::default());
//! for n in 1..=3 {
//!     log.append(now, Bytes::from(format!("{{\"n\":{n}}}")));
//! }
//! // The client saw offset 1 before it lost the connection.
//! let mut stream = SseStream::new(SseStreamConfig::default(), now, &[]).unwrap();
//! let last: Position = "a1:1".parse().unwrap();
//! assert_eq!(stream.resume(now, &log, Some(last), Some("ticks")), Ok(2));
//!
//! let mut body = Vec::new();
//! while let Some(Transmit::Bytes(b)) = stream.poll_transmit() {
//!     body.extend_from_slice(&b);
//! }
//! let body = String::from_utf8(body).unwrap();
//! assert!(body.starts_with("HTTP/1.1 200 OK\r\n"));
//! assert!(body.ends_with("id: a1:2\nevent: ticks\ndata: {\"n\":2}\n\nid: a1:3\nevent: ticks\ndata: {\"n\":3}\n\n"));
//! ```

use std::collections::VecDeque;

use bytes::Bytes;

use super::encode::{self, EncodeError};
use crate::http::{self, InvalidHeader};
use crate::machine::{Machine, Transmit};
use crate::policy::heartbeat::{Beat, Heartbeat, HeartbeatConfig};
use crate::policy::outbox::{Outbox, OutboxConfig, OutboxCounters, PushOutcome};
use crate::replay::{Gone, Position, ReplayLog};
use crate::text::Utf8Bytes;
use crate::time::{Duration, Instant, Monotonic};

/// Settings of a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SseStreamConfig {
    /// A comment line after this much outbound silence (default 15 s); `None` sends none.
    pub keepalive: Option<Duration>,
    /// A `retry:` hint written after the head: the client's reconnection time (default
    /// `None`: the client keeps its own, 3 s in browsers).
    pub retry: Option<Duration>,
    /// Bounds and slow-consumer policy of the queue toward this client (default 1 MiB,
    /// 4096 events, disconnect).
    pub outbox: OutboxConfig,
    /// How long queued bytes may wait without the adapter pulling any (default 30 s):
    /// past it the client is not reading and the stream ends as [`StreamEnd::TooSlow`].
    /// With keep-alives on, a reader that stopped on an idle stream is found within
    /// `keepalive + send_timeout`. `None` waits forever.
    pub send_timeout: Option<Duration>,
}

impl Default for SseStreamConfig {
    fn default() -> Self {
        Self {
            keepalive: Some(Duration::from_secs(15)),
            retry: None,
            outbox: OutboxConfig::default(),
            send_timeout: Some(Duration::from_secs(30)),
        }
    }
}

/// Why a stream ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StreamEnd {
    /// The client went away (end of file or a transport error).
    ClientGone,
    /// The client read too slowly for the outbox policy; it resumes when it reconnects.
    TooSlow,
    /// The application closed the stream.
    Closed,
}

/// What the application learns from a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SseStreamEvent {
    /// The stream ended. Emitted exactly once.
    Ended(StreamEnd),
}

/// What [`SseStream::send_event`] did with an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Sent {
    /// Queued (possibly after the outbox dropped or conflated older events, per its policy).
    Queued,
    /// Not queued: the client already has it (it was replayed) or the outbox dropped it.
    Skipped,
    /// Not queued: the stream has ended.
    Ended,
}

/// One event-stream response. See the [module docs](self).
///
/// - Commands: [`resume`](Self::resume) once after creation, then
///   [`send_event`](Self::send_event), [`send_frame`](Self::send_frame),
///   [`close`](Self::close).
/// - Inputs and outputs: the [`Machine`] trait. The client sends nothing after its request,
///   so `handle_read` only counts as life; `handle_eof` ends the stream.
/// - Getters: [`cursor`](Self::cursor), [`buffered`](Self::buffered),
///   [`counters`](Self::counters), [`is_ended`](Self::is_ended).
#[derive(Debug)]
pub struct SseStream {
    clock: Monotonic,
    send_timeout: Option<Duration>,
    /// Since when bytes have waited in `out` without a pull.
    waiting_since: Option<Instant>,
    out: Outbox<Box<str>>,
    keepalive: Option<Heartbeat>,
    cursor: Option<Position>,
    ended: bool,
    shutdown: Shutdown,
    events: VecDeque<SseStreamEvent>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shutdown {
    No,
    AfterDrain,
    Done,
}

impl SseStream {
    /// A stream whose response head (status 200, SSE.md 30 headers, then `headers`, e.g.
    /// CORS or `Set-Cookie`) and `retry` hint are queued.
    ///
    /// # Errors
    /// [`InvalidHeader`] for an extra header that cannot be written.
    pub fn new(
        cfg: SseStreamConfig,
        now: Instant,
        headers: &[(&str, &str)],
    ) -> Result<Self, InvalidHeader> {
        let mut all: Vec<(&str, &str)> = encode::RESPONSE_HEADERS.to_vec();
        all.extend_from_slice(headers);
        let head = http::stream_head(200, &all)?;
        let mut stream = Self {
            clock: Monotonic::new(now),
            send_timeout: cfg.send_timeout,
            waiting_since: None,
            out: Outbox::new(cfg.outbox),
            keepalive: cfg
                .keepalive
                .map(|every| Heartbeat::new(HeartbeatConfig::keepalive_only(every), now)),
            cursor: None,
            ended: false,
            shutdown: Shutdown::No,
            events: VecDeque::new(),
        };
        // The head and the hint must go out whatever the outbox policy: queue them first.
        stream.push(now, head, None);
        if let Some(retry) = cfg.retry {
            stream.push(now, encode::retry(retry), None);
        }
        Ok(stream)
    }

    /// The wire form of one channel event: `id: EPOCH:OFFSET`, `event:` the channel (or
    /// type), `data:` the payload. Encode once per broadcast and give every stream a clone.
    ///
    /// # Errors
    /// [`EncodeError`] when `event` contains a line break.
    pub fn encode(pos: Position, event: Option<&str>, data: &Bytes) -> Result<Bytes, EncodeError> {
        let data = Utf8Bytes::try_from_bytes(data.clone()).map_err(|_| EncodeError::NotUtf8)?;
        Ok(encode::event(Some(&pos.to_string()), event, data)?.to_bytes())
    }

    /// Replays what the client missed since `from` (its `Last-Event-ID`), naming each
    /// event `event`. Call once, right after [`new`](Self::new). Without a position, nothing
    /// is replayed: the client starts live, and an id-only block gives it the log's head
    /// position so that it resumes exactly after a disconnect.
    ///
    /// Returns how many events were replayed.
    ///
    /// # Errors
    /// [`Gone`] when `from` can no longer be served (another epoch, trimmed, or ahead). The
    /// stream then moves the client's cursor to the head (id-only block); the application
    /// MUST send a full-state event (e.g. with [`send_frame`](Self::send_frame)) so that the
    /// client refetches, and live events follow.
    pub fn resume(
        &mut self,
        now: Instant,
        log: &ReplayLog,
        from: Option<Position>,
        event: Option<&str>,
    ) -> Result<usize, Gone> {
        let now = self.clock.advance(now);
        let Some(from) = from else {
            self.move_cursor(now, log.head());
            return Ok(0);
        };
        match log.since(from) {
            Ok(missed) => {
                let mut n = 0;
                self.cursor = Some(from);
                for (pos, data) in missed {
                    // A payload that is not valid text cannot be an SSE event: skip it and
                    // let the cursor move past it.
                    if let Ok(frame) = Self::encode(pos, event, data) {
                        self.push(now, frame, None);
                        n += 1;
                    }
                    self.cursor = Some(pos);
                }
                Ok(n)
            }
            Err(gone) => {
                self.move_cursor(now, gone.head);
                Err(gone)
            }
        }
    }

    fn move_cursor(&mut self, now: Instant, to: Position) {
        if let Ok(block) = encode::id_only(&to.to_string()) {
            self.push(now, block, None);
        }
        self.cursor = Some(to);
    }

    /// Sends the live event at `pos`, already encoded with [`encode`](Self::encode). An
    /// event at or before the cursor of the same epoch was replayed already and is skipped.
    /// `conflate` is the key under [`SlowConsumer::Conflate`](crate::policy::SlowConsumer).
    pub fn send_event(
        &mut self,
        now: Instant,
        pos: Position,
        frame: Bytes,
        conflate: Option<&str>,
    ) -> Sent {
        if self.ended {
            return Sent::Ended;
        }
        if let Some(c) = self.cursor
            && c.epoch == pos.epoch
            && pos.offset <= c.offset
        {
            return Sent::Skipped;
        }
        self.cursor = Some(pos);
        self.push(now, frame, conflate.map(Box::from))
    }

    /// Sends an already-encoded event or block that has no log position (a full-state
    /// event after [`Gone`], a notice).
    pub fn send_frame(&mut self, now: Instant, frame: Bytes) -> Sent {
        if self.ended {
            return Sent::Ended;
        }
        self.push(now, frame, None)
    }

    /// Ends the stream at once for a reason the adapter found (e.g. a write that cannot
    /// progress: [`StreamEnd::TooSlow`]); what is queued is dropped and `Shutdown` follows.
    pub fn end(&mut self, now: Instant, why: StreamEnd) {
        self.clock.advance(now);
        self.abort(why);
    }

    fn abort(&mut self, why: StreamEnd) {
        while self.out.pop().is_some() {}
        self.waiting_since = None;
        self.finish(why);
        if self.shutdown == Shutdown::No {
            self.shutdown = Shutdown::AfterDrain;
        }
    }

    /// Ends the stream after what is queued has been written.
    pub fn close(&mut self, now: Instant) {
        self.clock.advance(now);
        if !self.ended {
            self.finish(StreamEnd::Closed);
            self.shutdown = Shutdown::AfterDrain;
        }
    }

    /// The position of the newest event the client has or will have once the queue is
    /// written.
    #[must_use]
    pub fn cursor(&self) -> Option<Position> {
        self.cursor
    }

    /// Bytes queued and not yet pulled.
    #[must_use]
    pub fn buffered(&self) -> usize {
        self.out.bytes()
    }

    /// What the outbox did so far (queued, dropped, conflated, sent).
    #[must_use]
    pub fn counters(&self) -> OutboxCounters {
        self.out.counters()
    }

    /// Whether the stream has ended.
    #[must_use]
    pub fn is_ended(&self) -> bool {
        self.ended
    }

    fn push(&mut self, now: Instant, frame: Bytes, key: Option<Box<str>>) -> Sent {
        let now = self.clock.advance(now);
        if let Some(hb) = &mut self.keepalive {
            hb.on_outbound(now);
        }
        if self.out.is_empty() {
            self.waiting_since = Some(now);
        }
        match self.out.push(frame, key) {
            PushOutcome::Dropped => Sent::Skipped,
            PushOutcome::Disconnect => {
                // Nothing more can reach this client in order: end now, without draining.
                self.finish(StreamEnd::TooSlow);
                self.shutdown = Shutdown::AfterDrain;
                Sent::Ended
            }
            _ => Sent::Queued,
        }
    }

    fn finish(&mut self, why: StreamEnd) {
        if !self.ended {
            self.ended = true;
            self.keepalive = None;
            self.events.push_back(SseStreamEvent::Ended(why));
        }
    }
}

impl Machine for SseStream {
    type Event = SseStreamEvent;

    /// A client sends nothing after its request; bytes are ignored.
    fn handle_read(&mut self, now: Instant, _data: &[u8]) {
        self.clock.advance(now);
    }

    /// The client went away: the stream ends and the transport is shut down.
    fn handle_eof(&mut self, now: Instant) {
        self.clock.advance(now);
        self.finish(StreamEnd::ClientGone);
        if self.shutdown == Shutdown::No {
            self.shutdown = Shutdown::AfterDrain;
        }
    }

    /// Sends the keep-alive comment when the stream has been quiet for `keepalive`.
    fn handle_timeout(&mut self, now: Instant) {
        let now = self.clock.advance(now);
        if let (Some(since), Some(limit)) = (self.waiting_since, self.send_timeout)
            && self.shutdown != Shutdown::Done
            && now >= since + limit
        {
            return self.abort(StreamEnd::TooSlow);
        }
        let beat = self.keepalive.as_mut().and_then(|hb| hb.handle_timeout(now));
        if let Some(Beat::SendPing(_)) = beat {
            self.push(now, Bytes::from_static(b":\n"), None);
        }
    }

    /// The next chunk to write; `Shutdown` once the stream ended and its queue drained.
    /// May return something new after every command and `handle_*` call.
    fn poll_transmit(&mut self) -> Option<Transmit> {
        if let Some(frame) = self.out.pop() {
            // Progress: whatever is still queued waits from now on.
            self.waiting_since = (!self.out.is_empty()).then(|| self.clock.now());
            return Some(Transmit::Bytes(frame));
        }
        if self.shutdown == Shutdown::AfterDrain {
            self.shutdown = Shutdown::Done;
            return Some(Transmit::Shutdown);
        }
        None
    }

    fn poll_event(&mut self) -> Option<SseStreamEvent> {
        self.events.pop_front()
    }

    /// The next keep-alive, or the moment queued bytes have waited `send_timeout`.
    fn poll_timeout(&self) -> Option<Instant> {
        let keepalive = self.keepalive.as_ref().and_then(Heartbeat::poll_timeout);
        let stall = match (self.waiting_since, self.send_timeout) {
            (Some(since), Some(limit)) if self.shutdown != Shutdown::Done => Some(since + limit),
            _ => None,
        };
        match (keepalive, stall) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

#[cfg(test)]
mod tests;
