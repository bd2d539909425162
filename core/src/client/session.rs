//! [`ClientSession`]: the state machine. See the [module docs](super).

use std::collections::{BTreeMap, HashMap, VecDeque};

use bytes::Bytes;
use serde_json::value::RawValue;

use super::channels::Channels;
use super::config::{SessionConfig, TokenPlacement, Transport};
use super::http::{self, ResponseReader, query_escape};
use super::types::{
    ClientMsgId, PublishError, Reason, SessionEvent, SessionState, SessionTimer, StateChange,
    SubscribeError,
};

mod input;
use crate::envelope::{self, ClientMessage};
use crate::machine::{Machine, Transmit};
use crate::policy::{Backoff, BackoffConfig, RateLimit};
use crate::replay::Position;
use crate::rng::Rng;
use crate::socket::{SockId, SocketAction};
use crate::sse::SseParser;
use crate::time::{Duration, Instant, Monotonic, TimerKind, TimerTable};
use crate::ws::{CloseCode, Message, WsConnection, WsState};

/// The session's own deadlines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Timer {
    Reconnect,
    Upgrade,
    PublishRetry,
}

impl TimerKind for Timer {
    const ALL: &'static [Self] = &[Self::Reconnect, Self::Upgrade, Self::PublishRetry];
    fn index(self) -> usize {
        self as usize
    }
}

/// Who a socket works for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Owner {
    /// The connection (an attempt, or open) of this generation.
    Connection(u64),
    /// A WebSocket tried while open on a worse transport.
    Probe,
    /// Nobody: a WebSocket finishing its close handshake.
    Detached,
}

#[derive(Clone, Debug)]
enum Purpose {
    Sse(String),
    Poll(String),
    Publish(ClientMsgId),
}

#[derive(Debug)]
struct HttpExchange {
    purpose: Purpose,
    request: Option<Bytes>,
    reader: ResponseReader,
    body: Vec<u8>,
    sse: Option<SseParser>,
    started: Instant,
    deadline: Instant,
}

#[derive(Debug)]
enum Proto {
    Ws {
        conn: Box<WsConnection>,
        /// A copy of the response head while the handshake runs, for `Retry-After`.
        head: Option<ResponseReader>,
        retry_after: Option<Duration>,
    },
    Http(Box<HttpExchange>),
}

#[derive(Debug)]
struct Socket {
    owner: Owner,
    /// Bytes may be written.
    connected: bool,
    /// The adapter reported the connection up at some point.
    reached: bool,
    /// The adapter reported it failed: it needs no `Close`.
    gone: bool,
    proto: Proto,
}

/// The session's connection to the server for one generation: on one transport, an
/// attempt until it is `open`; its WebSocket or the socket of its publish in flight.
#[derive(Debug)]
struct Connection {
    generation: u64,
    transport: Transport,
    open: bool,
    ws: Option<SockId>,
    publish: Option<SockId>,
}

#[derive(Debug)]
struct Outgoing {
    id: ClientMsgId,
    ch: String,
    data: String,
    sent: bool,
}

#[derive(Clone, Copy, Debug)]
enum Input<'a> {
    Read(&'a [u8]),
    Eof,
    Error,
    Timeout,
}

/// How a connection ended, for what follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fail {
    /// Retry; not the transport's fault (the server is unreachable, or an open connection
    /// ended).
    Retry,
    /// Retry; the server was reached but the transport did not work (counts toward
    /// falling back when the connection never opened).
    Blocked,
    Auth,
    Terminal,
}

/// The reconnecting, transport-falling-back client. See the [module docs](super) for the
/// run loop and an example.
///
/// - Constructor: [`new`](Self::new) (the first attempt's `Connect` is queued).
/// - Getters: [`state`](Self::state), [`transport`](Self::transport),
///   [`next_retry_at`](Self::next_retry_at), [`attempt`](Self::attempt),
///   [`position`](Self::position), [`channels`](Self::channels),
///   [`queued_publishes`](Self::queued_publishes),
///   [`dropped_publishes`](Self::dropped_publishes),
///   [`dropped_duplicates`](Self::dropped_duplicates), [`timeout_reason`](Self::timeout_reason).
/// - Commands: [`subscribe`](Self::subscribe), [`subscribe_from`](Self::subscribe_from),
///   [`unsubscribe`](Self::unsubscribe), [`publish`](Self::publish),
///   [`set_credentials`](Self::set_credentials), [`close`](Self::close).
/// - Socket inputs: [`handle_connected`](Self::handle_connected),
///   [`handle_read`](Self::handle_read), [`handle_eof`](Self::handle_eof),
///   [`handle_error`](Self::handle_error); time: [`handle_timeout`](Self::handle_timeout).
/// - Outputs: [`poll_transmit`](Self::poll_transmit), [`poll_action`](Self::poll_action),
///   [`poll_event`](Self::poll_event), [`poll_timeout`](Self::poll_timeout).
#[derive(Debug)]
pub struct ClientSession {
    cfg: SessionConfig,
    clock: Monotonic,
    rng: Rng,
    backoff: Backoff,
    publish_backoff: Backoff,
    /// The pace of envelopes on a WebSocket ([`SessionConfig::send_rate`]).
    send_pace: Option<RateLimit>,
    state: SessionState,
    /// Index into `cfg.transports` of the transport in use or next tried.
    transport: usize,
    /// Failures to open the current transport in a row.
    open_failures: u32,
    next_retry: Option<Instant>,
    awaiting_credentials: bool,
    token: Option<String>,
    channels: Channels,
    /// `ref`s of `sub` messages not yet answered, with their channel.
    sub_refs: HashMap<u64, String>,
    /// Channels whose `sub` waits for a token of `send_pace`, in order.
    sub_backlog: VecDeque<String>,
    outgoing: VecDeque<Outgoing>,
    outgoing_bytes: usize,
    dropped_publishes: u64,
    next_ref: u64,
    nonce: u64,
    sockets: BTreeMap<SockId, Socket>,
    next_sock: u64,
    generation: u64,
    connection: Option<Connection>,
    probe: Option<SockId>,
    /// The last WebSocket probe failed: the next upgrade tries the better non-WebSocket
    /// transport (SSE from polling) instead, if there is one.
    probe_failed: bool,
    timers: TimerTable<Timer, 3>,
    actions: VecDeque<SocketAction>,
    events: VecDeque<SessionEvent>,
}

/// Channel names: 1–256 bytes, no control characters.
fn valid_channel(ch: &str) -> bool {
    !ch.is_empty() && ch.len() <= 256 && !ch.chars().any(char::is_control)
}

impl ClientSession {
    /// A session in state `Connecting`: the first attempt (on the first allowed transport)
    /// is queued, with a `State(Connecting, Started)` event.
    #[must_use]
    pub fn new(mut cfg: SessionConfig, now: Instant) -> Self {
        if cfg.transports.is_empty() {
            cfg.transports.push(Transport::WebSocket);
        }
        let mut rng = Rng::from_seed(cfg.rng_seed);
        let backoff = Backoff::with_rng(cfg.backoff, rng.fork());
        let publish_backoff = Backoff::with_rng(
            BackoffConfig { max_attempts: None, max_elapsed: None, ..cfg.backoff },
            rng.fork(),
        );
        let nonce = rng.next_u64();
        let token = cfg.token.clone();
        let send_pace = cfg.send_rate.map(|r| RateLimit::new(r, now));
        let mut s = Self {
            cfg,
            clock: Monotonic::new(now),
            rng,
            backoff,
            publish_backoff,
            send_pace,
            state: SessionState::Connecting,
            transport: 0,
            open_failures: 0,
            next_retry: None,
            awaiting_credentials: false,
            token,
            channels: Channels::default(),
            sub_refs: HashMap::new(),
            sub_backlog: VecDeque::new(),
            outgoing: VecDeque::new(),
            outgoing_bytes: 0,
            dropped_publishes: 0,
            next_ref: 1,
            nonce,
            sockets: BTreeMap::new(),
            next_sock: 1,
            generation: 0,
            connection: None,
            probe: None,
            probe_failed: false,
            timers: TimerTable::new(),
            actions: VecDeque::new(),
            events: VecDeque::new(),
        };
        s.start_attempt(now, Reason::Started);
        s
    }

    // -----------------------------------------------------------------------------------
    // Getters

    /// The current state.
    #[must_use]
    pub fn state(&self) -> SessionState {
        self.state
    }

    /// The transport in use or being tried; `None` once closed.
    #[must_use]
    pub fn transport(&self) -> Option<Transport> {
        (self.state != SessionState::Closed).then(|| self.cfg.transports[self.transport])
    }

    /// While `Reconnecting`: when the next attempt starts.
    #[must_use]
    pub fn next_retry_at(&self) -> Option<Instant> {
        self.next_retry
    }

    /// Connection attempts in a row so far (see [`StateChange::attempt`]).
    #[must_use]
    pub fn attempt(&self) -> u32 {
        self.backoff.attempt()
    }

    /// The position of the last message delivered on `ch` (or where the server said the
    /// session continues from); a later session may [`subscribe_from`](Self::subscribe_from)
    /// it.
    #[must_use]
    pub fn position(&self, ch: &str) -> Option<Position> {
        self.channels.position(ch)
    }

    /// The subscribed channels, in name order.
    pub fn channels(&self) -> impl Iterator<Item = &str> {
        self.channels.names()
    }

    /// Publishes not yet acknowledged (queued or in flight).
    #[must_use]
    pub fn queued_publishes(&self) -> usize {
        self.outgoing.len()
    }

    /// Publishes dropped because the queue was full (each also reported as
    /// `PublishFailed { code: "dropped" }`).
    #[must_use]
    pub fn dropped_publishes(&self) -> u64 {
        self.dropped_publishes
    }

    /// Messages dropped as duplicates or stale (at or before the channel's position).
    #[must_use]
    pub fn dropped_duplicates(&self) -> u64 {
        self.channels.duplicates
    }

    /// Which timer [`poll_timeout`](Self::poll_timeout) stands for (for logs).
    #[must_use]
    pub fn timeout_reason(&self) -> Option<SessionTimer> {
        let mut best: Option<(Instant, SessionTimer)> = self.timers.next().map(|(t, at)| {
            let kind = match t {
                Timer::Reconnect => SessionTimer::Reconnect,
                Timer::Upgrade => SessionTimer::Upgrade,
                Timer::PublishRetry => SessionTimer::PublishRetry,
            };
            (at, kind)
        });
        let mut offer = |at: Option<Instant>, kind| {
            if let Some(at) = at
                && best.is_none_or(|(b, _)| at < b)
            {
                best = Some((at, kind));
            }
        };
        offer(self.channels.next_poll(), SessionTimer::Poll);
        offer(self.sockets_deadline(), SessionTimer::Socket);
        best.map(|(_, kind)| kind)
    }

    // -----------------------------------------------------------------------------------
    // Commands

    /// Subscribes to `ch` from now on (or resumes it, if already subscribed: a no-op).
    ///
    /// # Errors
    /// [`SubscribeError::Closed`] once closed, [`SubscribeError::BadName`] for a name that
    /// is empty, over 256 bytes or holds a control character.
    pub fn subscribe(&mut self, now: Instant, ch: &str) -> Result<(), SubscribeError> {
        self.subscribe_from(now, ch, None)
    }

    /// Subscribes to `ch`, resuming after `pos` (the [`position`](Self::position) a
    /// previous session reached) when given: the server replays what was missed, or
    /// answers with [`SessionEvent::RefetchNeeded`].
    ///
    /// # Errors
    /// As [`subscribe`](Self::subscribe).
    pub fn subscribe_from(
        &mut self,
        now: Instant,
        ch: &str,
        pos: Option<Position>,
    ) -> Result<(), SubscribeError> {
        let now = self.clock.advance(now);
        if self.state == SessionState::Closed {
            return Err(SubscribeError::Closed);
        }
        if !valid_channel(ch) {
            return Err(SubscribeError::BadName);
        }
        if !self.channels.add(ch, pos) {
            return Ok(());
        }
        let Some(connection) = &self.connection else { return Ok(()) };
        match connection.transport {
            Transport::WebSocket => {
                if connection.open {
                    self.send_sub(now, ch);
                }
            }
            _ => self.open_channel(now, ch),
        }
        Ok(())
    }

    /// Leaves `ch`: no more messages of it are delivered. Unknown channels are ignored.
    pub fn unsubscribe(&mut self, now: Instant, ch: &str) {
        let now = self.clock.advance(now);
        let Some(sock) = self.channels.remove(ch) else { return };
        self.sub_refs.retain(|_, c| c != ch);
        self.sub_backlog.retain(|c| c != ch);
        if let Some(sock) = sock {
            self.close_socket(sock);
        }
        if let Some(connection) = &self.connection
            && connection.transport == Transport::WebSocket
            && connection.open
        {
            self.ws_send(
                now,
                &ClientMessage::Unsub { ch: ch.to_owned(), reference: None }.encode(),
            );
        }
        // A publish on `ch` waiting for its subscription (`Channels::joining`) goes now.
        self.flush_publishes(now);
    }

    /// Publishes `data` (one JSON value, as text) to `ch`. It is sent at once when open, or
    /// queued until the session is; every unacknowledged publish is sent again, in order and
    /// with the same id, after each reconnection (the hub publishes an id once). The answer
    /// is [`SessionEvent::Acked`] or [`SessionEvent::PublishFailed`]. On SSE or polling, a
    /// publish on a channel subscribed without a position waits (and those after it) until
    /// the server has that subscription (its stream's head, its first poll's answer), so
    /// that the session's own message comes back to it.
    ///
    /// The queue is bounded by [`SessionConfig::max_queued`] and
    /// [`SessionConfig::max_queued_bytes`]: past them the oldest publish is dropped, counted
    /// in [`dropped_publishes`](Self::dropped_publishes) and reported as
    /// `PublishFailed { code: "dropped" }`.
    ///
    /// # Errors
    /// [`PublishError::Closed`] once closed, [`PublishError::NotJson`] for data that is not
    /// one JSON value, [`PublishError::TooLarge`] for a message larger than the byte bound.
    pub fn publish(
        &mut self,
        now: Instant,
        ch: &str,
        data: &str,
    ) -> Result<ClientMsgId, PublishError> {
        let now = self.clock.advance(now);
        if self.state == SessionState::Closed {
            return Err(PublishError::Closed);
        }
        if !envelope::is_json(data) {
            return Err(PublishError::NotJson);
        }
        let size = ch.len() + data.len();
        if size > self.cfg.max_queued_bytes {
            return Err(PublishError::TooLarge);
        }
        let id = ClientMsgId(self.take_ref());
        self.outgoing.push_back(Outgoing { id, ch: ch.into(), data: data.into(), sent: false });
        self.outgoing_bytes += size;
        while self.outgoing.len() > self.cfg.max_queued.max(1)
            || self.outgoing_bytes > self.cfg.max_queued_bytes
        {
            let Some(old) = self.pop_outgoing_front() else { break };
            self.dropped_publishes += 1;
            self.events
                .push_back(SessionEvent::PublishFailed { id: old.id, code: "dropped".into() });
        }
        self.flush_publishes(now);
        Ok(id)
    }

    /// Gives fresh credentials (after [`SessionEvent::CredentialsNeeded`], or at any time
    /// for the next connection). A session waiting for them reconnects at once.
    pub fn set_credentials(&mut self, now: Instant, token: impl Into<String>) {
        let now = self.clock.advance(now);
        self.token = Some(token.into());
        if self.awaiting_credentials && self.state == SessionState::Reconnecting {
            self.awaiting_credentials = false;
            self.timers.clear(Timer::Reconnect);
            self.start_attempt(now, Reason::NewCredentials);
        }
    }

    /// Closes the session for good: the WebSocket is closed with 1000, other sockets are
    /// dropped, unacknowledged publishes are reported as `PublishFailed { code: "closed" }`,
    /// and a `State(Closed, App)` event follows. Keep draining `poll_transmit` and
    /// `poll_action` until the WebSocket's close handshake ends.
    pub fn close(&mut self, now: Instant) {
        let now = self.clock.advance(now);
        self.enter_closed(now, Reason::App);
    }

    // -----------------------------------------------------------------------------------
    // Socket inputs

    /// The adapter's connection for `sock` is up: its bytes may now be pulled.
    pub fn handle_connected(&mut self, now: Instant, sock: SockId) {
        self.clock.advance(now);
        if let Some(s) = self.sockets.get_mut(&sock) {
            s.connected = true;
            s.reached = true;
        }
    }

    /// Bytes arrived on `sock`. Input for a socket the session closed is ignored.
    pub fn handle_read(&mut self, now: Instant, sock: SockId, data: &[u8]) {
        let now = self.clock.advance(now);
        self.socket_input(now, sock, Input::Read(data));
    }

    /// `sock` reached end of file.
    pub fn handle_eof(&mut self, now: Instant, sock: SockId) {
        let now = self.clock.advance(now);
        self.socket_input(now, sock, Input::Eof);
    }

    /// `sock` failed (connect refused, reset, TLS error…); the adapter drops it.
    pub fn handle_error(&mut self, now: Instant, sock: SockId) {
        let now = self.clock.advance(now);
        if let Some(s) = self.sockets.get_mut(&sock) {
            s.gone = true;
            s.connected = false;
        }
        self.socket_input(now, sock, Input::Error);
        self.sockets.remove(&sock);
    }

    /// Fires every deadline `<= now`: reconnection, upgrade, publish retry, polls, and the
    /// sockets' own timers. Spurious calls are no-ops.
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.clock.advance(now);
        // Take what is due first: a timer re-armed by this call (at `now` when its interval
        // is zero) fires at a later call, not again in this loop.
        let mut due = Vec::new();
        while let Some(t) = self.timers.pop_expired(now) {
            due.push(t);
        }
        for t in due {
            match t {
                Timer::Reconnect => self.retry_due(now),
                Timer::Upgrade => self.start_probe(now),
                Timer::PublishRetry => self.flush_publishes(now),
            }
        }
        for ch in self.channels.polls_due(now) {
            self.open_channel(now, &ch);
        }
        let due: Vec<SockId> = self
            .sockets
            .iter()
            .filter(|(_, s)| socket_deadline(s).is_some_and(|d| d <= now))
            .map(|(id, _)| *id)
            .collect();
        for sock in due {
            self.socket_input(now, sock, Input::Timeout);
        }
    }

    // -----------------------------------------------------------------------------------
    // Outputs

    /// The next bytes to write to a socket, in order per socket. Only sockets reported
    /// connected have bytes. New bytes may appear after every input and command.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<(SockId, Bytes)> {
        let mut finished = None;
        let mut found = None;
        for (&id, s) in &mut self.sockets {
            if !s.connected {
                continue;
            }
            match &mut s.proto {
                Proto::Http(h) => {
                    if let Some(b) = h.request.take() {
                        found = Some((id, b));
                        break;
                    }
                }
                Proto::Ws { conn, .. } => match conn.poll_transmit() {
                    Some(Transmit::Bytes(b)) => {
                        found = Some((id, b));
                        break;
                    }
                    Some(_) => {
                        finished = Some(id);
                        break;
                    }
                    None => {}
                },
            }
        }
        if let Some(id) = finished {
            self.close_socket(id);
            return self.poll_transmit();
        }
        if found.is_none() {
            // The WebSocket's buffer drained: publishes held back by backpressure may go.
            let now = self.clock.now();
            if self.outgoing.iter().any(|o| !o.sent) && self.ws_open() {
                self.flush_publishes(now);
                if self.outgoing.iter().any(|o| o.sent) {
                    return self.poll_transmit_once();
                }
            }
        }
        found
    }

    fn poll_transmit_once(&mut self) -> Option<(SockId, Bytes)> {
        let sock = self.connection.as_ref()?.ws?;
        match &mut self.sockets.get_mut(&sock)?.proto {
            Proto::Ws { conn, .. } => match conn.poll_transmit()? {
                Transmit::Bytes(b) => Some((sock, b)),
                _ => None,
            },
            Proto::Http(_) => None,
        }
    }

    /// The next thing the adapter must do with its sockets. New actions may appear after
    /// every input, command and `poll_transmit`.
    #[must_use]
    pub fn poll_action(&mut self) -> Option<SocketAction> {
        self.actions.pop_front()
    }

    /// The next application event. New events may appear after every input and command.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<SessionEvent> {
        self.events.pop_front()
    }

    /// The earliest instant at which [`handle_timeout`](Self::handle_timeout) must be
    /// called. Changes after every input and command.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        [self.timers.next_deadline(), self.channels.next_poll(), self.sockets_deadline()]
            .into_iter()
            .flatten()
            .min()
    }

    // -----------------------------------------------------------------------------------
    // Connection attempts and the connection

    fn current(&self) -> Transport {
        self.cfg.transports[self.transport]
    }

    fn take_ref(&mut self) -> u64 {
        let r = self.next_ref;
        self.next_ref += 1;
        r
    }

    fn host_header(&self) -> String {
        if self.cfg.port == 80 {
            self.cfg.host.clone()
        } else {
            format!("{}:{}", self.cfg.host, self.cfg.port)
        }
    }

    /// `{base}{endpoint}` with the query parameters and, with `Query` placement, the token.
    fn path(&self, endpoint: &str, params: &[(&str, &str)]) -> String {
        let mut path = format!("{}{endpoint}", self.cfg.base_path.trim_end_matches('/'));
        let token = match (self.cfg.token_placement, &self.token) {
            (TokenPlacement::Query, Some(t)) => Some(t.as_str()),
            _ => None,
        };
        for (i, (k, v)) in params.iter().chain(token.map(|t| ("token", t)).iter()).enumerate() {
            path.push(if i == 0 { '?' } else { '&' });
            path.push_str(k);
            path.push('=');
            path.push_str(&query_escape(v));
        }
        path
    }

    fn auth_header(&self) -> Option<String> {
        match (self.cfg.token_placement, &self.token) {
            (TokenPlacement::Bearer, Some(t)) => Some(format!("Bearer {t}")),
            _ => None,
        }
    }

    fn new_socket(&mut self, owner: Owner, proto: Proto) -> SockId {
        let sock = SockId(self.next_sock);
        self.next_sock += 1;
        self.sockets
            .insert(sock, Socket { owner, connected: false, reached: false, gone: false, proto });
        self.actions.push_back(SocketAction::Connect {
            sock,
            host: self.cfg.host.clone(),
            port: self.cfg.port,
        });
        sock
    }

    fn close_socket(&mut self, sock: SockId) {
        if self.sockets.remove(&sock).is_some_and(|s| !s.gone) {
            self.actions.push_back(SocketAction::Close { sock });
        }
    }

    fn set_state(&mut self, state: SessionState, reason: Reason) {
        self.state = state;
        self.next_retry = if state == SessionState::Reconnecting { self.next_retry } else { None };
        let transport = (state != SessionState::Closed).then(|| self.current());
        self.events.push_back(SessionEvent::State(StateChange {
            state,
            reason,
            attempt: self.backoff.attempt(),
            next_retry: self.next_retry,
            transport,
        }));
    }

    fn start_attempt(&mut self, now: Instant, reason: Reason) {
        self.generation += 1;
        let generation = self.generation;
        let transport = self.current();
        self.connection =
            Some(Connection { generation, transport, open: false, ws: None, publish: None });
        self.next_retry = None;
        self.set_state(SessionState::Connecting, reason);
        match transport {
            Transport::WebSocket => match self.open_ws(now, Owner::Connection(generation)) {
                Some(sock) => {
                    if let Some(connection) = &mut self.connection {
                        connection.ws = Some(sock);
                    }
                }
                None => self.enter_closed(now, Reason::InvalidConfig),
            },
            _ => {
                let names: Vec<String> = self.channels.names().map(str::to_owned).collect();
                if names.is_empty() {
                    self.connection_opened(now, Reason::Connected);
                }
                for ch in names {
                    self.open_channel(now, &ch);
                }
            }
        }
    }

    fn open_ws(&mut self, now: Instant, owner: Owner) -> Option<SockId> {
        let mut ws = self.cfg.ws.clone();
        self.rng.fill(&mut ws.rng_seed);
        if let Some(auth) = self.auth_header() {
            ws.headers.push(("Authorization".into(), auth));
        }
        let path = self.path("/ws", &[]);
        let conn = WsConnection::client(ws, &self.host_header(), &path, now).ok()?;
        let head = Some(ResponseReader::new(self.cfg.max_head, 0));
        let proto = Proto::Ws { conn: Box::new(conn), head, retry_after: None };
        Some(self.new_socket(owner, proto))
    }

    fn open_http(&mut self, now: Instant, purpose: Purpose, request: Bytes, wait: Duration) {
        let generation = self.generation;
        // An event stream's body never ends: its parser bounds what it holds (`sse_limits`);
        // `max_body` is the bound of a poll's or a publish's answer.
        let max_body = match purpose {
            Purpose::Sse(_) => usize::MAX,
            _ => self.cfg.max_body,
        };
        let reader = ResponseReader::new(self.cfg.max_head, max_body);
        let ex = HttpExchange {
            purpose,
            request: Some(request),
            reader,
            body: Vec::new(),
            sse: None,
            started: now,
            deadline: now + wait,
        };
        let is_publish = matches!(ex.purpose, Purpose::Publish(_));
        let ch = match &ex.purpose {
            Purpose::Sse(ch) | Purpose::Poll(ch) => Some(ch.clone()),
            Purpose::Publish(_) => None,
        };
        let sock = self.new_socket(Owner::Connection(generation), Proto::Http(Box::new(ex)));
        if let Some(ch) = ch {
            self.channels.set_socket(&ch, Some(sock));
        }
        if is_publish && let Some(connection) = &mut self.connection {
            connection.publish = Some(sock);
        }
    }

    /// Opens `ch`'s SSE stream or its next poll on the current (HTTP) connection.
    fn open_channel(&mut self, now: Instant, ch: &str) {
        let Some(connection) = &self.connection else { return };
        let transport = connection.transport;
        let pos = self.channels.position(ch);
        let pos_text = pos.map(|p| p.to_string());
        let auth = self.auth_header();
        let mut headers: Vec<(&str, &str)> = Vec::new();
        if let Some(a) = &auth {
            headers.push(("Authorization", a));
        }
        let (purpose, path, wait) = match transport {
            Transport::Sse => {
                headers.push(("Accept", "text/event-stream"));
                headers.push(("Cache-Control", "no-cache"));
                if let Some(p) = &pos_text {
                    headers.push(("Last-Event-ID", p));
                }
                let path = self.path("/events", &[("ch", ch)]);
                (Purpose::Sse(ch.into()), path, self.cfg.request_timeout)
            }
            Transport::Polling => {
                let mut params = vec![("ch", ch)];
                if let Some(p) = &pos_text {
                    params.push(("pos", p));
                }
                params.push(("wait", "1"));
                let path = self.path("/poll", &params);
                (Purpose::Poll(ch.into()), path, self.cfg.poll_timeout)
            }
            Transport::WebSocket => return,
        };
        let Some(req) = http::request("GET", &self.host_header(), &path, &headers, None) else {
            return self.enter_closed(now, Reason::InvalidConfig);
        };
        if let Some(old) = self.channels.socket(ch) {
            self.close_socket(old);
        }
        self.open_http(now, purpose, req, wait);
    }

    fn connection_opened(&mut self, now: Instant, reason: Reason) {
        let Some(connection) = &mut self.connection else { return };
        if connection.open {
            return;
        }
        connection.open = true;
        let transport = connection.transport;
        self.open_failures = 0;
        self.awaiting_credentials = false;
        self.backoff.on_connected(now);
        self.set_state(SessionState::Open, reason);
        if transport == Transport::WebSocket {
            let names: Vec<String> = self.channels.names().map(str::to_owned).collect();
            for ch in names {
                self.send_sub(now, &ch);
            }
        }
        self.arm_upgrade(now);
        self.flush_publishes(now);
    }

    fn arm_upgrade(&mut self, now: Instant) {
        // The list is in order of preference: anything before the current one is better.
        let better = self.transport > 0;
        match self.cfg.upgrade_every {
            Some(every) if better => self.timers.set(Timer::Upgrade, now + every),
            _ => self.timers.clear(Timer::Upgrade),
        }
    }

    /// Drops every socket of the connection (a WebSocket is closed gracefully when it can be).
    fn teardown_connection(&mut self) -> Option<Connection> {
        let connection = self.connection.take()?;
        let ids: Vec<SockId> = self
            .sockets
            .iter()
            .filter(|(_, s)| s.owner == Owner::Connection(connection.generation))
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.retire_socket(id);
        }
        self.channels.clear_sockets();
        for o in &mut self.outgoing {
            o.sent = false;
        }
        self.sub_refs.clear();
        self.sub_backlog.clear();
        self.timers.clear(Timer::Upgrade);
        self.timers.clear(Timer::PublishRetry);
        Some(connection)
    }

    /// A WebSocket is asked to close with 1000 and left to finish; anything else is dropped.
    fn retire_socket(&mut self, id: SockId) {
        let now = self.clock.now();
        if let Some(s) = self.sockets.get_mut(&id)
            && let Proto::Ws { conn, .. } = &mut s.proto
        {
            s.owner = Owner::Detached;
            if !matches!(conn.state(), WsState::Closed) {
                let _ = conn.close(now, CloseCode::NORMAL, "");
            }
            while conn.poll_event().is_some() {}
            if s.connected || !matches!(conn.state(), WsState::Closed) {
                return;
            }
        }
        self.close_socket(id);
    }

    fn connection_down(&mut self, now: Instant, reason: Reason, fail: Fail) {
        let Some(connection) = self.teardown_connection() else { return };
        if let Some(p) = self.probe.take() {
            self.retire_socket(p);
        }
        if connection.open {
            self.backoff.on_disconnected(now);
        } else if fail == Fail::Blocked {
            self.open_failures += 1;
            if self.open_failures >= self.cfg.fallback_after.max(1) {
                self.open_failures = 0;
                self.transport = (self.transport + 1) % self.cfg.transports.len();
            }
        }
        match fail {
            Fail::Terminal => self.enter_closed(now, reason),
            Fail::Auth => {
                self.events.push_back(SessionEvent::CredentialsNeeded);
                self.awaiting_credentials = true;
                self.schedule_retry(now, reason);
            }
            Fail::Retry | Fail::Blocked => self.schedule_retry(now, reason),
        }
    }

    fn schedule_retry(&mut self, now: Instant, reason: Reason) {
        let Some(at) = self.backoff.next_deadline(now) else {
            return self.enter_closed(now, Reason::Exhausted);
        };
        self.next_retry = Some(at);
        self.timers.set(Timer::Reconnect, at);
        self.set_state(SessionState::Reconnecting, reason);
    }

    fn retry_due(&mut self, now: Instant) {
        if self.state != SessionState::Reconnecting {
            return;
        }
        if self.awaiting_credentials {
            return self.enter_closed(now, Reason::NoCredentials);
        }
        self.start_attempt(now, Reason::RetryDue);
    }

    fn enter_closed(&mut self, _now: Instant, reason: Reason) {
        if self.state == SessionState::Closed {
            return;
        }
        self.teardown_connection();
        if let Some(p) = self.probe.take() {
            self.retire_socket(p);
        }
        self.timers.clear_all();
        self.channels.clear_polls();
        self.awaiting_credentials = false;
        while let Some(o) = self.pop_outgoing_front() {
            self.events.push_back(SessionEvent::PublishFailed { id: o.id, code: "closed".into() });
        }
        self.next_retry = None;
        self.set_state(SessionState::Closed, reason);
    }

    // -----------------------------------------------------------------------------------
    // Upgrading back to WebSocket

    /// The upgrade timer: try a better transport than the current one. WebSocket is
    /// probed beside the open connection (the session moves when it opens); another transport
    /// (SSE, from polling) is tried when WebSocket is not better or its last probe failed:
    /// the connection is re-opened on it, resuming every channel from its position, and a
    /// failure falls back again at once (nothing is lost, delivery pauses for the attempt).
    fn start_probe(&mut self, now: Instant) {
        let open = self.connection.as_ref().is_some_and(|l| l.open);
        if self.probe.is_some() || !open || self.transport == 0 {
            return;
        }
        let better = &self.cfg.transports[..self.transport];
        let ws_better = better.contains(&Transport::WebSocket);
        let other = better.iter().position(|t| *t != Transport::WebSocket);
        match other {
            Some(i) if !ws_better || self.probe_failed => {
                self.probe_failed = false;
                self.teardown_connection();
                self.transport = i;
                // One failed attempt is enough to fall back to where the session was.
                self.open_failures = self.cfg.fallback_after.max(1) - 1;
                self.start_attempt(now, Reason::Upgraded);
            }
            _ => {
                self.probe_failed = false;
                self.probe = self.open_ws(now, Owner::Probe);
                if self.probe.is_none() {
                    self.arm_upgrade(now);
                }
            }
        }
    }

    /// The probe WebSocket opened: the session moves onto it.
    fn promote(&mut self, now: Instant, sock: SockId) {
        self.probe = None;
        if let Some(old) = self.teardown_connection() {
            self.backoff.on_connected(now);
            let _ = old;
        }
        self.generation += 1;
        let generation = self.generation;
        if let Some(s) = self.sockets.get_mut(&sock) {
            s.owner = Owner::Connection(generation);
        }
        self.transport = self
            .cfg
            .transports
            .iter()
            .position(|t| *t == Transport::WebSocket)
            .unwrap_or(self.transport);
        self.open_failures = 0;
        self.channels.clear_polls();
        self.connection = Some(Connection {
            generation,
            transport: Transport::WebSocket,
            open: true,
            ws: Some(sock),
            publish: None,
        });
        self.set_state(SessionState::Open, Reason::Upgraded);
        let names: Vec<String> = self.channels.names().map(str::to_owned).collect();
        for ch in names {
            self.send_sub(now, &ch);
        }
        self.flush_publishes(now);
    }

    // -----------------------------------------------------------------------------------
    // Publishing

    fn pop_outgoing_front(&mut self) -> Option<Outgoing> {
        let o = self.outgoing.pop_front()?;
        self.outgoing_bytes -= o.ch.len() + o.data.len();
        Some(o)
    }

    fn remove_outgoing(&mut self, id: ClientMsgId) -> bool {
        let Some(i) = self.outgoing.iter().position(|o| o.id == id) else { return false };
        if let Some(o) = self.outgoing.remove(i) {
            self.outgoing_bytes -= o.ch.len() + o.data.len();
        }
        true
    }

    fn wire_id(&self, id: ClientMsgId) -> String {
        format!("{:016x}-{}", self.nonce, id.0)
    }

    fn ws_open(&self) -> bool {
        self.connection.as_ref().is_some_and(|l| l.open && l.transport == Transport::WebSocket)
    }

    fn ws_conn(&mut self) -> Option<&mut WsConnection> {
        let sock = self.connection.as_ref()?.ws?;
        match &mut self.sockets.get_mut(&sock)?.proto {
            Proto::Ws { conn, .. } => Some(conn),
            Proto::Http(_) => None,
        }
    }

    fn ws_send(&mut self, now: Instant, text: &str) -> bool {
        self.ws_conn().is_some_and(|c| c.send(now, Message::text(text)).is_ok())
    }

    /// Takes a token of `send_pace` (if pacing); when there is none, arms the timer that
    /// sends on and returns `false`.
    fn take_token(&mut self, now: Instant) -> bool {
        let Some(pace) = &mut self.send_pace else { return true };
        match pace.check(now, 1) {
            Ok(()) => true,
            Err(over) => {
                if let Some(at) = now.checked_add(over.retry_after) {
                    self.timers.set(Timer::PublishRetry, at);
                }
                false
            }
        }
    }

    /// Sends `ch`'s `sub` when a token is free (and no earlier `sub` waits), else queues it.
    fn send_sub(&mut self, now: Instant, ch: &str) {
        if !self.sub_backlog.is_empty() || !self.take_token(now) {
            if !self.sub_backlog.iter().any(|c| c == ch) {
                self.sub_backlog.push_back(ch.to_owned());
            }
            return;
        }
        self.write_sub(now, ch);
    }

    fn write_sub(&mut self, now: Instant, ch: &str) {
        let reference = self.take_ref();
        self.sub_refs.insert(reference, ch.to_owned());
        let pos = self.channels.position(ch);
        let sub = ClientMessage::Sub { ch: ch.to_owned(), pos, reference: Some(reference) };
        self.ws_send(now, &sub.encode());
    }

    /// Sends the waiting `sub`s while tokens last; `true` when none waits any more.
    fn flush_subs(&mut self, now: Instant) -> bool {
        while let Some(ch) = self.sub_backlog.front().cloned() {
            if !self.take_token(now) {
                return false;
            }
            self.sub_backlog.pop_front();
            if self.channels.contains(&ch) {
                self.write_sub(now, &ch);
            }
        }
        true
    }

    fn flush_publishes(&mut self, now: Instant) {
        let Some(connection) = &self.connection else { return };
        if !connection.open {
            return;
        }
        if connection.transport == Transport::WebSocket {
            // Paced under the hub's inbound limit (`sub`s first): the rest goes when tokens
            // accrue.
            if !self.flush_subs(now) {
                return;
            }
            for i in 0..self.outgoing.len() {
                if self.outgoing[i].sent {
                    continue;
                }
                if !self.take_token(now) {
                    break;
                }
                let o = &self.outgoing[i];
                let id = self.wire_id(o.id);
                // Checked by `publish`: the data is one JSON value.
                let Ok(data) = RawValue::from_string(o.data.clone()) else { continue };
                let frame = ClientMessage::Pub {
                    ch: o.ch.clone(),
                    id: Some(id),
                    data,
                    reference: Some(o.id.0),
                }
                .encode();
                if !self.ws_send(now, &frame) {
                    break;
                }
                self.outgoing[i].sent = true;
            }
            return;
        }
        if connection.publish.is_some() || self.timers.get(Timer::PublishRetry).is_some() {
            return;
        }
        let Some(o) = self.outgoing.front() else { return };
        // A publish on a channel whose first poll or event stream has not reached the server
        // waits for it (publishes stay in order): sent at once on its own connection, it
        // could be logged before the subscription starts at the head, past it, and the
        // session would never see its own message.
        if self.channels.joining(&o.ch) {
            return;
        }
        let (id, ch, data) = (o.id, o.ch.clone(), o.data.clone());
        let path = self.path("/api/publish", &[("ch", &ch), ("id", &self.wire_id(id))]);
        let auth = self.auth_header();
        let headers: Vec<(&str, &str)> =
            auth.as_deref().map(|a| ("Authorization", a)).into_iter().collect();
        let body = Some(("application/json", data.as_bytes()));
        let Some(req) = http::request("POST", &self.host_header(), &path, &headers, body) else {
            return self.enter_closed(now, Reason::InvalidConfig);
        };
        if let Some(o) = self.outgoing.front_mut() {
            o.sent = true;
        }
        self.open_http(now, Purpose::Publish(id), req, self.cfg.request_timeout);
    }

    /// An HTTP publish ended: `None` means it may be retried (network error, 5xx, 408,
    /// 429), `Some(status)` is the server's final word.
    fn publish_done(&mut self, now: Instant, id: ClientMsgId, status: Option<u16>, body: &[u8]) {
        if let Some(connection) = &mut self.connection {
            connection.publish = None;
        }
        match status {
            Some(200..=299) => {
                self.publish_backoff.reset();
                if self.remove_outgoing(id) {
                    let pos = envelope::decode_publish_reply(body);
                    self.events.push_back(SessionEvent::Acked { id, pos });
                }
            }
            Some(s) if !matches!(s, 408 | 429 | 500..=599) => {
                self.publish_backoff.reset();
                if self.remove_outgoing(id) {
                    self.events
                        .push_back(SessionEvent::PublishFailed { id, code: format!("http_{s}") });
                }
            }
            _ => {
                if let Some(o) = self.outgoing.iter_mut().find(|o| o.id == id) {
                    o.sent = false;
                }
                if let Some(at) = self.publish_backoff.next_deadline(now) {
                    self.timers.set(Timer::PublishRetry, at);
                }
            }
        }
        self.flush_publishes(now);
    }
}

fn socket_deadline(s: &Socket) -> Option<Instant> {
    match &s.proto {
        Proto::Ws { conn, .. } => conn.poll_timeout(),
        Proto::Http(h) => Some(h.deadline),
    }
}

/// The session as an application's [`OutboundClient`](crate::socket::OutboundClient): its
/// [`SessionEvent`]s, closed once in [`SessionState::Closed`].
impl crate::socket::OutboundClient for ClientSession {
    type Event = SessionEvent;
    fn poll_event(&mut self) -> Option<SessionEvent> {
        ClientSession::poll_event(self)
    }
    fn close(&mut self, now: Instant) {
        ClientSession::close(self, now);
    }
    fn is_closed(&self) -> bool {
        self.state == SessionState::Closed
    }
}
