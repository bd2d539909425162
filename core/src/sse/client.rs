//! [`SseClient`]: the EventSource-grade Server-Sent Events client (WHATWG HTML §9.2) as a
//! sans-IO machine. An adapter owns the HTTP client and the clock; this machine decides when
//! to connect, what `Last-Event-ID` to send, whether a response opens the stream, what the
//! body means, and when and why to reconnect or give up.
//!
//! # Lifecycle
//!
//! ```text
//!            new()                       200 + text/event-stream
//!   ──────────────────▶ Connecting ─────────────────────────────────▶ Open
//!                        ▲    │ network error, idle,                   │ end of body, network error,
//!             retry due  │    │ (5xx when retry_5xx)                   │ idle timeout, parser limit
//!                        │    ▼                                        │
//!                      Reconnecting ◀──────────────────────────────────┘
//!
//!   Connecting: other status / content type (§9.2.3 "fail the connection") ──▶ Closed
//!   any state: close() ──▶ Closed          Reconnecting: backoff exhausted ──▶ Closed
//! ```
//!
//! Every change of state is a [`SseClientEvent::State`] carrying the new [`SseState`], a
//! typed [`SseReason`], the attempt number and, when reconnecting, the instant of the next
//! attempt (for a "Reconnecting in 4 s…" banner). `Closed` is terminal and reported once.
//!
//! # Reconnection delay
//!
//! The *reconnection time* starts at [`SseClientConfig::default_retry`] (3 s) and becomes the
//! server's `retry:` value as soon as its line is parsed (SSE.md 17, 22); it persists across
//! connections. It is clamped to the backoff's [`max_hint`](BackoffConfig::max_hint) (5 min by
//! default) so that a broken server cannot park its clients forever. After a failure:
//!
//! - **the first failure** since the client started or since a healthy stream ended (one that
//!   stayed open for [`healthy_after`](BackoffConfig::healthy_after), 10 s by default) waits
//!   exactly the reconnection time, as the WHATWG algorithm does;
//! - **repeated failures** (connections that fail, or streams that end before they were
//!   healthy) wait `max(reconnection time, backoff)`, where backoff is Tidewire's jittered
//!   capped exponential ([`Backoff`]) with the reconnection time as its floor;
//! - a `Retry-After` on a retried 5xx raises the floor of that one delay.
//!
//! When the backoff gives up (`max_attempts`, `max_elapsed`) the client closes with
//! [`SseReason::GaveUp`].
//!
//! # Method groups
//!
//! - constructor: [`SseClient::new`] (queues the first [`SseAction::Connect`]);
//! - getters: [`state`](SseClient::state), [`last_event_id`](SseClient::last_event_id),
//!   [`wants_read`](SseClient::wants_read),
//!   [`reconnection_time`](SseClient::reconnection_time),
//!   [`next_retry_at`](SseClient::next_retry_at), [`attempt`](SseClient::attempt),
//!   [`timeout_reason`](SseClient::timeout_reason), [`config`](SseClient::config);
//! - inputs from the adapter: [`handle_response`](SseClient::handle_response),
//!   [`handle_read`](SseClient::handle_read), [`handle_eof`](SseClient::handle_eof),
//!   [`handle_error`](SseClient::handle_error), [`handle_timeout`](SseClient::handle_timeout);
//! - command: [`close`](SseClient::close);
//! - outputs: [`poll_action`](SseClient::poll_action) (for the adapter),
//!   [`poll_event`](SseClient::poll_event) (for the application),
//!   [`poll_timeout`](SseClient::poll_timeout).
//!
//! `SseClient` does not implement [`Machine`](crate::Machine): it writes no bytes (its
//! requests are [`SseAction`]s for an HTTP client the adapter owns, so `poll_transmit` would
//! always be empty) and it has inputs the trait lacks (`handle_response`, `handle_error`).
//! The inputs and outputs it shares with the trait keep the trait's names and signatures.
//!
//! # Over plain sockets
//!
//! [`EventSource`] is this client over TCP sockets it asks for, speaking HTTP/1.1 itself
//! ([`sse_request`], [`SseResponseReader`]): it implements
//! [`Outbound`](crate::socket::Outbound), so an adapter drives it with the same
//! outbound-socket driver as a [`ClientSession`](crate::client::ClientSession).
//!
//! # Example
//!
//! An adapter's run loop, with the HTTP exchange written out by hand:
//!
//! ```
//! use tidewire::sse::{SseAction, SseClient, SseClientConfig, SseClientEvent, SseReason, SseState};
//! use tidewire::time::{Duration, Instant};
//!
//! let mut now = Instant::now();
//! let mut client = SseClient::new(SseClientConfig::default(), now);
//! // The first request: no Last-Event-ID yet.
//! assert_eq!(client.poll_action(), Some(SseAction::Connect { last_event_id: None }));
//!
//! // The response head arrives, then the body in two reads.
//! client.handle_response(now, 200, Some("text/event-stream; charset=utf-8"), None);
//! client.handle_read(now, b"retry: 1000\n: keep-alive\nid: 41\ndata: hello\n\nid: 42\n");
//! client.handle_read(now, b"event: tick\ndata: 1\n\nid: 43\ndata: cut off by the EOF\n");
//! let mut seen = Vec::new();
//! while let Some(ev) = client.poll_event() {
//!     match ev {
//!         SseClientEvent::State(s) => seen.push(format!("{:?}", s.state)),
//!         SseClientEvent::Event(e) => seen.push(format!("{} {} {}", e.event, e.id, e.data)),
//!         _ => {}
//!     }
//! }
//! assert_eq!(seen, ["Connecting", "Open", "message 41 hello", "tick 42 1"]);
//!
//! // A clean end of the body: reconnect after the server's `retry` (1 s).
//! client.handle_eof(now);
//! let Some(SseClientEvent::State(change)) = client.poll_event() else { unreachable!() };
//! assert_eq!(change.state, SseState::Reconnecting);
//! assert_eq!(change.next_retry, Some(now + Duration::from_secs(1)));
//! assert_eq!(client.poll_action(), None); // the adapter already knows the body ended
//!
//! // The adapter sleeps until poll_timeout, then reports it.
//! now = client.poll_timeout().unwrap();
//! client.handle_timeout(now);
//! assert_eq!(client.state(), SseState::Connecting);
//! // The unfinished block's `id: 43` was discarded (SSE.md 14): resume after 42.
//! assert_eq!(client.poll_action(), Some(SseAction::Connect { last_event_id: Some("42".into()) }));
//!
//! // A 404 fails the source for good.
//! client.handle_response(now, 404, Some("text/html"), None);
//! assert_eq!(client.state(), SseState::Closed);
//! assert_eq!(client.poll_action(), Some(SseAction::Disconnect)); // drop the response
//! assert_eq!(client.poll_timeout(), None);
//! ```

mod http;
mod source;

use std::collections::VecDeque;

pub use http::{SseResponseReader, sse_request};
pub use source::{EventSource, EventSourceConfig, InvalidRequest};

use super::parse::{ParserLimits, SseError, SseEvent, SseParser};
use crate::policy::backoff::{Backoff, BackoffConfig, RetryHint};
use crate::rng::Rng;
use crate::time::{Duration, Instant, Monotonic, TimerKind, TimerTable};

/// Client settings. Defaults: the backoff defaults (base 1 s, cap 30 s, full jitter), a 3 s
/// reconnection time, a 30 s idle watchdog, the parser's default limits, no 5xx retries and
/// an all-zero seed (adapters MUST replace it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SseClientConfig {
    /// The delay policy on repeated failures; its `max_hint` also caps the reconnection time.
    pub backoff: BackoffConfig,
    /// The reconnection time until the server sends `retry:` (WHATWG suggests a few seconds;
    /// default 3 s).
    pub default_retry: Duration,
    /// A connection that delivers no byte at all (no response head, not even a comment line)
    /// for this long is dropped as a network error and reconnected. Default 30 s: twice
    /// Tidewire's 15 s server keep-alive. `None` disables the watchdog.
    pub idle_timeout: Option<Duration>,
    /// Line, event and queue limits of the parser of each connection. `max_queued` also
    /// bounds the events this client holds that the application has not pulled: a read
    /// that arrives while `max_queued` are waiting is a network error, and one read adds at
    /// most `max_queued`, so fewer than `2 × max_queued` are ever held.
    pub limits: ParserLimits,
    /// Retry 5xx responses with backoff (honouring `Retry-After`) instead of failing the
    /// source, as the spec requires for any status other than 200. Default `false`.
    pub retry_5xx: bool,
    /// Seed of the generator behind the backoff jitter. Adapters MUST fill it from OS entropy:
    /// clients sharing a seed retry in lockstep, which is what jitter is there to prevent.
    pub rng_seed: [u8; 32],
}

impl Default for SseClientConfig {
    fn default() -> Self {
        Self {
            backoff: BackoffConfig::default(),
            default_retry: Duration::from_secs(3),
            idle_timeout: Some(Duration::from_secs(30)),
            limits: ParserLimits::default(),
            retry_5xx: false,
            rng_seed: [0; 32],
        }
    }
}

/// The state of the client (DESIGN.md "Connection states (client)").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SseState {
    /// A request is on its way ([`SseAction::Connect`] was queued); waiting for the response.
    Connecting,
    /// A 200 `text/event-stream` response is being read; events flow.
    Open,
    /// Waiting for the reconnection delay; [`SseClient::next_retry_at`] says until when.
    Reconnecting,
    /// Terminal: failed for good, gave up, or closed by the application.
    Closed,
}

/// Why a connection ended or was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SseFailure {
    /// The response status was not 200 (SSE.md 21). Terminal unless the status is 5xx and
    /// [`SseClientConfig::retry_5xx`] is set.
    BadStatus(u16),
    /// A 200 response whose `Content-Type` was missing or not `text/event-stream`. Terminal.
    BadContentType,
    /// The adapter reported a network error, or the connection ended before its response.
    NetworkError,
    /// The response body ended cleanly.
    EndOfStream,
    /// No byte arrived for [`SseClientConfig::idle_timeout`].
    IdleTimeout,
    /// The body broke a [`ParserLimits`] limit (or the application left more than
    /// `max_queued` events unpulled): treated as a network error.
    StreamError(SseError),
}

/// Why the state changed, carried by every [`StateChange`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SseReason {
    /// The client was created: the first connection attempt (state `Connecting`).
    Started,
    /// The reconnection delay passed: a new attempt (state `Connecting`).
    RetryDue,
    /// A 200 `text/event-stream` response arrived (state `Open`).
    Opened,
    /// The connection failed or ended. The state says what follows: `Reconnecting`, or
    /// `Closed` for failures the spec makes terminal (a bad status or content type).
    Failed(SseFailure),
    /// The backoff is exhausted (`max_attempts` or `max_elapsed`) after this failure (state
    /// `Closed`).
    GaveUp(SseFailure),
    /// The application called [`SseClient::close`] (state `Closed`).
    ClosedByApp,
}

/// A change of [`SseState`], for the application (and its connection banner).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StateChange {
    /// The new state.
    pub state: SseState,
    /// Why.
    pub reason: SseReason,
    /// The attempt this state belongs to: 0 for the first connection, then 1, 2, … for each
    /// reconnection in a row; `Reconnecting` carries the number of the attempt it schedules.
    /// The end of a healthy stream starts a new row at 1 (see [`SseClient::attempt`]).
    pub attempt: u32,
    /// With `Reconnecting`: when the next attempt starts. `None` in other states.
    pub next_retry: Option<Instant>,
}

/// What the client reports to the application, pulled with [`SseClient::poll_event`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SseClientEvent {
    /// The state changed.
    State(StateChange),
    /// A dispatched event of the stream.
    Event(SseEvent),
}

/// What the adapter must do with its HTTP client, pulled with [`SseClient::poll_action`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SseAction {
    /// Start a request (WHATWG §9.2.2): `GET` the stream's URL with `Accept:
    /// text/event-stream` and no caching (`Cache-Control: no-cache`), plus
    /// `Last-Event-ID: <id>` when `last_event_id` is `Some` (only when the last event ID is
    /// not empty: SSE.md 23; it never holds CR, LF or NUL). Follow redirects, then report the
    /// final response with [`SseClient::handle_response`].
    Connect {
        /// The value of the `Last-Event-ID` header, if one must be sent.
        last_event_id: Option<String>,
    },
    /// Abort the current request and drop its connection, and feed nothing more of it. Only
    /// queued when the client ends a connection the adapter still reads (idle timeout, a
    /// parser limit, a refused response, [`SseClient::close`]); never after
    /// [`handle_eof`](SseClient::handle_eof) or [`handle_error`](SseClient::handle_error).
    Disconnect,
}

/// The client's timers, as reported by [`SseClient::timeout_reason`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SseTimer {
    /// The reconnection delay ends: start the next attempt.
    Reconnect,
    /// The idle watchdog: no byte for `idle_timeout`.
    Idle,
}

impl TimerKind for SseTimer {
    const ALL: &'static [Self] = &[Self::Reconnect, Self::Idle];
    fn index(self) -> usize {
        self as usize
    }
}

#[derive(Debug)]
enum Phase {
    /// `Connect` queued; waiting for `handle_response`.
    Connecting,
    /// Reading the body.
    Open(Box<SseParser>),
    /// The `Reconnect` timer is armed.
    Reconnecting,
    Closed,
}

/// The reconnecting Server-Sent Events client. See the [module docs](self) for the lifecycle,
/// the reconnection rule and an example.
///
/// The adapter's loop: perform every [`poll_action`](Self::poll_action); feed the response
/// head, body bytes, end of body or error of the *current* request (never of an older one)
/// to the `handle_*` inputs; hand [`poll_event`](Self::poll_event) to the application; call
/// [`handle_timeout`](Self::handle_timeout) at [`poll_timeout`](Self::poll_timeout). Drain
/// `poll_action` and `poll_event` after every input and command.
#[derive(Debug)]
pub struct SseClient {
    cfg: SseClientConfig,
    clock: Monotonic,
    phase: Phase,
    backoff: Backoff,
    timers: TimerTable<SseTimer, 2>,
    reconnection_time: Duration,
    last_event_id: String,
    events: VecDeque<SseClientEvent>,
    /// How many `SseClientEvent::Event`s are in `events`.
    queued: usize,
    actions: VecDeque<SseAction>,
}

impl SseClient {
    /// A client in state `Connecting`: the first [`SseAction::Connect`] (without
    /// `Last-Event-ID`) and a `State(Connecting, Started)` event are queued, and the idle
    /// watchdog starts.
    #[must_use]
    pub fn new(cfg: SseClientConfig, now: Instant) -> Self {
        let mut client = Self {
            backoff: Backoff::with_rng(cfg.backoff, Rng::from_seed(cfg.rng_seed)),
            reconnection_time: cfg.default_retry.min(cfg.backoff.max_hint),
            cfg,
            clock: Monotonic::new(now),
            phase: Phase::Connecting,
            timers: TimerTable::new(),
            last_event_id: String::new(),
            events: VecDeque::new(),
            queued: 0,
            actions: VecDeque::new(),
        };
        client.connect(now, SseReason::Started);
        client
    }

    // ----- getters -----

    /// The current state.
    #[must_use]
    pub fn state(&self) -> SseState {
        match self.phase {
            Phase::Connecting => SseState::Connecting,
            Phase::Open(_) => SseState::Open,
            Phase::Reconnecting => SseState::Reconnecting,
            Phase::Closed => SseState::Closed,
        }
    }

    /// The last event ID (`""` when none was set, or after an empty `id:`). It survives
    /// reconnections and moves only when a block is dispatched (SSE.md 13–16).
    #[must_use]
    pub fn last_event_id(&self) -> &str {
        &self.last_event_id
    }

    /// The current reconnection time: the latest server `retry:` or
    /// [`SseClientConfig::default_retry`], at most the backoff's `max_hint`.
    #[must_use]
    pub fn reconnection_time(&self) -> Duration {
        self.reconnection_time
    }

    /// While `Reconnecting`: when the next attempt starts.
    #[must_use]
    pub fn next_retry_at(&self) -> Option<Instant> {
        self.timers.get(SseTimer::Reconnect)
    }

    /// The number of reconnections in a row so far: 0 until the first failure. Only the end
    /// of a healthy stream (open for [`BackoffConfig::healthy_after`]) starts a new row; a
    /// connection that merely opens does not.
    #[must_use]
    pub fn attempt(&self) -> u32 {
        self.backoff.attempt()
    }

    /// Which timer [`poll_timeout`](Self::poll_timeout) stands for (for logs).
    #[must_use]
    pub fn timeout_reason(&self) -> Option<SseTimer> {
        self.timers.next().map(|(kind, _)| kind)
    }

    /// The settings.
    #[must_use]
    pub fn config(&self) -> &SseClientConfig {
        &self.cfg
    }

    /// Whether a read is welcome: `false` while the application leaves `max_queued`
    /// ([`ParserLimits`]) events unpulled, when [`handle_read`](Self::handle_read) would
    /// refuse the bytes as [`SseError::TooManyQueued`]. An adapter stops reading the body
    /// meanwhile, so that a slow application pushes back on the server through TCP.
    #[must_use]
    pub fn wants_read(&self) -> bool {
        self.queued < self.cfg.limits.max_queued
    }

    // ----- inputs -----

    /// The head of the current request's response arrived: its `status`, its `Content-Type`
    /// (if any) and its `Retry-After` (if any, already parsed with
    /// [`parse_retry_after`](crate::policy::parse_retry_after)).
    ///
    /// A 200 whose media type is `text/event-stream` (compared case-insensitively,
    /// parameters such as `charset` allowed and ignored: the stream is always UTF-8) opens
    /// the stream. Anything else fails the source for good and queues
    /// [`SseAction::Disconnect`] (WHATWG §9.2.3; SSE.md 21), except a 5xx when
    /// [`SseClientConfig::retry_5xx`] is set, which reconnects with backoff and
    /// `Retry-After` as the floor of that delay. Ignored unless `Connecting`.
    pub fn handle_response(
        &mut self,
        now: Instant,
        status: u16,
        content_type: Option<&str>,
        retry_after: Option<Duration>,
    ) {
        let now = self.clock.advance(now);
        if !matches!(self.phase, Phase::Connecting) {
            return;
        }
        if status == 200 && content_type.is_some_and(is_event_stream) {
            let parser = SseParser::resuming(self.cfg.limits, self.last_event_id.clone());
            self.phase = Phase::Open(Box::new(parser));
            self.backoff.on_connected(now);
            self.arm_idle(now);
            self.emit_state(SseReason::Opened);
            return;
        }
        let failure =
            if status == 200 { SseFailure::BadContentType } else { SseFailure::BadStatus(status) };
        self.abort_connection();
        if self.cfg.retry_5xx && (500..=599).contains(&status) {
            self.reconnect_after(now, failure, retry_after);
        } else {
            self.finish(SseReason::Failed(failure));
        }
    }

    /// Bytes of the response body. Any non-empty read restarts the idle watchdog (comments
    /// and keep-alives count). Parsed events come out of [`poll_event`](Self::poll_event); a
    /// valid `retry:` changes the reconnection time at once; a parser limit (or more than
    /// `max_queued` events left unpulled) is treated as a network error: `Disconnect` and
    /// reconnect.
    ///
    /// Ignored unless `Open`: body bytes before [`handle_response`](Self::handle_response)
    /// (an adapter bug) or of a connection that was already ended are dropped.
    pub fn handle_read(&mut self, now: Instant, data: &[u8]) {
        let now = self.clock.advance(now);
        if data.is_empty() {
            return;
        }
        let Phase::Open(parser) = &mut self.phase else { return };
        let max_queued = self.cfg.limits.max_queued;
        let result = if self.queued >= max_queued {
            Err(SseError::TooManyQueued(max_queued))
        } else {
            parser.push(data)
        };
        // What the parser settled before any error still counts.
        if let Some(retry) = parser.retry() {
            self.reconnection_time = retry.min(self.cfg.backoff.max_hint);
        }
        if parser.last_event_id() != self.last_event_id {
            self.last_event_id.clear();
            self.last_event_id.push_str(parser.last_event_id());
        }
        while let Some(event) = parser.next_event() {
            self.events.push_back(SseClientEvent::Event(event));
            self.queued += 1;
        }
        match result {
            Err(e) => {
                self.abort_connection();
                self.reconnect_after(now, SseFailure::StreamError(e), None);
            }
            Ok(()) => self.arm_idle(now),
        }
    }

    /// The response body ended cleanly: reconnect after the reconnection time (SSE.md 22).
    /// An unfinished last block is discarded, its `id` included (SSE.md 14, 18). Before a
    /// response, the same as [`handle_error`](Self::handle_error). Ignored when neither
    /// `Connecting` nor `Open`.
    pub fn handle_eof(&mut self, now: Instant) {
        let now = self.clock.advance(now);
        match &mut self.phase {
            Phase::Connecting => self.reconnect_after(now, SseFailure::NetworkError, None),
            Phase::Open(parser) => {
                parser.finish();
                self.reconnect_after(now, SseFailure::EndOfStream, None);
            }
            Phase::Reconnecting | Phase::Closed => {}
        }
    }

    /// The current request failed (connection refused or reset, DNS, TLS, a broken body…):
    /// reconnect after the reconnection time, with backoff when failures repeat (SSE.md 22).
    /// Ignored when neither `Connecting` nor `Open`.
    pub fn handle_error(&mut self, now: Instant) {
        let now = self.clock.advance(now);
        if matches!(self.phase, Phase::Connecting | Phase::Open(_)) {
            self.reconnect_after(now, SseFailure::NetworkError, None);
        }
    }

    /// Fires the timers due at `now`: the reconnection delay (→ `Connecting` and a new
    /// [`SseAction::Connect`]) and the idle watchdog (→ [`SseAction::Disconnect`] and
    /// `Reconnecting` with [`SseFailure::IdleTimeout`]). A timer armed by this call fires at
    /// a later call, even if already due. Spurious calls are no-ops.
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.clock.advance(now);
        let due = |t: &TimerTable<SseTimer, 2>, k| t.get(k).is_some_and(|at| at <= now);
        let reconnect = due(&self.timers, SseTimer::Reconnect);
        let idle = due(&self.timers, SseTimer::Idle);
        if reconnect {
            self.timers.clear(SseTimer::Reconnect);
            if matches!(self.phase, Phase::Reconnecting) {
                self.connect(now, SseReason::RetryDue);
            }
        }
        if idle {
            self.timers.clear(SseTimer::Idle);
            if matches!(self.phase, Phase::Connecting | Phase::Open(_)) {
                self.abort_connection();
                self.reconnect_after(now, SseFailure::IdleTimeout, None);
            }
        }
    }

    // ----- command -----

    /// Closes the source for good: `Closed` with [`SseReason::ClosedByApp`], no more events,
    /// timers or reconnections. Queues [`SseAction::Disconnect`] when a request is in flight
    /// (or withdraws a `Connect` the adapter has not pulled yet). Idempotent.
    pub fn close(&mut self, now: Instant) {
        self.clock.advance(now);
        match self.phase {
            Phase::Connecting | Phase::Open(_) => self.abort_connection(),
            Phase::Reconnecting => {}
            Phase::Closed => return,
        }
        self.finish(SseReason::ClosedByApp);
    }

    // ----- outputs -----

    /// The next thing the adapter must do. May return something new after [`new`](Self::new),
    /// every `handle_*` call and [`close`](Self::close).
    #[must_use]
    pub fn poll_action(&mut self) -> Option<SseAction> {
        self.actions.pop_front()
    }

    /// The next state change or stream event, in the order they happened. May return
    /// something new after [`new`](Self::new), every `handle_*` call and
    /// [`close`](Self::close).
    #[must_use]
    pub fn poll_event(&mut self) -> Option<SseClientEvent> {
        let event = self.events.pop_front()?;
        if matches!(event, SseClientEvent::Event(_)) {
            self.queued -= 1;
        }
        Some(event)
    }

    /// When [`handle_timeout`](Self::handle_timeout) must be called next: the reconnection
    /// deadline or the idle watchdog. `None` when `Closed` (or with no watchdog while a
    /// connection is up). Changes after every input and command.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next_deadline()
    }

    // ----- internals -----

    /// Starts an attempt: `Connecting`, a `Connect` action, the idle watchdog.
    fn connect(&mut self, now: Instant, reason: SseReason) {
        self.phase = Phase::Connecting;
        self.timers.clear(SseTimer::Reconnect);
        let last_event_id = (!self.last_event_id.is_empty()).then(|| self.last_event_id.clone());
        self.actions.push_back(SseAction::Connect { last_event_id });
        self.arm_idle(now);
        self.emit_state(reason);
    }

    /// The application reads again after holding reads back: a watchdog that is armed
    /// starts over from `now`, since the silence was the application's, not the server's.
    pub fn handle_resume(&mut self, now: Instant) {
        if self.timers.get(SseTimer::Idle).is_some() {
            self.arm_idle(now);
        }
    }

    fn arm_idle(&mut self, now: Instant) {
        match self.cfg.idle_timeout.and_then(|t| now.checked_add(t)) {
            Some(at) => self.timers.set(SseTimer::Idle, at),
            None => self.timers.clear(SseTimer::Idle),
        }
    }

    /// Ends a connection the adapter still holds: withdraws the `Connect` of the current
    /// attempt if the adapter has not pulled it yet, or queues a `Disconnect`.
    fn abort_connection(&mut self) {
        if matches!(self.phase, Phase::Connecting)
            && matches!(self.actions.back(), Some(SseAction::Connect { .. }))
        {
            self.actions.pop_back();
        } else {
            self.actions.push_back(SseAction::Disconnect);
        }
    }

    /// The connection failed: schedule the next attempt (see the module docs for the rule),
    /// or give up.
    fn reconnect_after(
        &mut self,
        now: Instant,
        failure: SseFailure,
        retry_after: Option<Duration>,
    ) {
        if matches!(self.phase, Phase::Open(_)) {
            self.backoff.on_disconnected(now);
        }
        self.phase = Phase::Reconnecting;
        self.timers.clear(SseTimer::Idle);
        let first = self.backoff.attempt() == 0;
        let floor = retry_after
            .map_or(self.reconnection_time, |ra| ra.max(self.reconnection_time))
            .min(self.cfg.backoff.max_hint);
        self.backoff.on_hint(RetryHint::SseRetry(self.reconnection_time));
        if let Some(ra) = retry_after {
            self.backoff.on_hint(RetryHint::RetryAfter(ra));
        }
        let delay = self.backoff.next_delay(now).map(|d| if first { floor } else { d });
        match delay.and_then(|d| now.checked_add(d)) {
            Some(at) => {
                self.timers.set(SseTimer::Reconnect, at);
                self.emit_state(SseReason::Failed(failure));
            }
            None => self.finish(SseReason::GaveUp(failure)),
        }
    }

    /// Enters `Closed` (terminal) with `reason`.
    fn finish(&mut self, reason: SseReason) {
        self.phase = Phase::Closed;
        self.timers.clear_all();
        self.emit_state(reason);
    }

    fn emit_state(&mut self, reason: SseReason) {
        self.events.push_back(SseClientEvent::State(StateChange {
            state: self.state(),
            reason,
            attempt: self.backoff.attempt(),
            next_retry: self.timers.get(SseTimer::Reconnect),
        }));
    }
}

/// Whether a `Content-Type` value's media type is `text/event-stream` (ASCII
/// case-insensitive, parameters ignored, optional whitespace around it).
fn is_event_stream(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or_default();
    essence.trim_matches([' ', '\t']).eq_ignore_ascii_case("text/event-stream")
}

#[cfg(test)]
mod tests;
