//! [`WsConnection`]: one WebSocket connection, client or server, as a sans-IO machine.
//!
//! States: `Connecting` (opening handshake; on a server also the wait for the application's
//! [`accept`](WsConnection::accept)/[`reject`](WsConnection::reject)) → `Open` → `Closing`
//! (close frame sent, waiting for the peer's) → `Closed`. [`WsEvent::Closed`] is emitted
//! exactly once, whatever ends the connection.
//!
//! Method groups:
//! - constructors: [`WsConnection::server`], [`WsConnection::client`];
//! - getters: [`state`](WsConnection::state), [`role`](WsConnection::role),
//!   [`subprotocol`](WsConnection::subprotocol), [`buffered_amount`](WsConnection::buffered_amount),
//!   [`rtt`](WsConnection::rtt), [`timeout_reason`](WsConnection::timeout_reason);
//! - inputs ([`Machine`]): `handle_read`, `handle_eof`, `handle_timeout`;
//! - commands: [`accept`](WsConnection::accept), [`reject`](WsConnection::reject),
//!   [`send`](WsConnection::send), [`ping`](WsConnection::ping), [`close`](WsConnection::close);
//! - outputs ([`Machine`]): `poll_transmit`, `poll_event`, `poll_timeout`;
//! - with feature `deflate` (permessage-deflate, see `ws::deflate`): the getters
//!   `deflate_params` and `takes_prepared`, the command `send_prepared`.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

use crate::http::{self, Request};

use super::close::CloseCode;
use super::config::WsConfig;
use super::error::{ConnError, HandshakeError, ProtocolError, SendError};
use super::frame::{FrameDecoder, OpCode, Role, encode_header};
use super::handshake::{self, RequestParser, ResponseParser, UpgradeRequest};
use super::mask::apply_mask;
use super::message::Message;
use super::reassemble::{Incoming, Reassembler};
use crate::machine::{Machine, Transmit};
use crate::policy::heartbeat::{Beat, Heartbeat};
use crate::rng::Rng;
use crate::text::Utf8Bytes;
use crate::time::{Instant, Monotonic, TimerKind, TimerTable};

/// Payloads up to this size are copied next to their header (one write, one chunk);
/// larger ones are queued as shared `Bytes` behind a separate header (zero-copy).
const INLINE_PAYLOAD: usize = 256;
/// Unanswered pings answered one by one; past this many, the latest ping wins.
const MAX_PENDING_PONGS: usize = 16;
/// Headers and small frames are written into a reusable arena of this size, so queuing a
/// frame allocates only once per arena, not once per frame.
const ARENA_CHUNK: usize = 8 * 1024;

/// The public state of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum WsState {
    /// The opening handshake is in progress (on a server: including the application's
    /// accept/reject decision).
    Connecting,
    /// Messages flow both ways.
    Open,
    /// A close frame was sent; waiting for the peer's.
    Closing,
    /// Done: `WsEvent::Closed` has been emitted. Keep draining `poll_transmit` until it
    /// returns `Transmit::Shutdown` (a client may wait up to `close_timeout` for the server to
    /// close the TCP connection first).
    Closed,
}

/// Who started the end of the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Initiator {
    /// This endpoint: the application's `close`, a protocol error found here, a timeout.
    Local,
    /// The peer: its close frame or its end of the transport.
    Remote,
}

/// How a connection ended, carried by [`WsEvent::Closed`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloseInfo {
    /// The close code of the side that initiated the close; 1005 when a close frame had no
    /// code, 1006 when the transport ended without a close handshake.
    pub code: CloseCode,
    /// The initiator's close reason (may be empty).
    pub reason: Utf8Bytes,
    /// Who initiated the close.
    pub initiator: Initiator,
    /// Whether the close handshake completed (both close frames exchanged).
    pub clean: bool,
    /// The failure, when the connection did not end by a close handshake both sides wanted.
    pub error: Option<ConnError>,
}

/// What a connection reports to the application, pulled with `poll_event`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum WsEvent {
    /// Server: a valid upgrade request arrived. Authenticate it (`token()`, `cookie()`,
    /// `origin()`…), then call [`WsConnection::accept`] or [`WsConnection::reject`]. Nothing
    /// has been written yet.
    UpgradeRequested(UpgradeRequest),
    /// The handshake completed; messages may be sent.
    Open {
        /// The negotiated subprotocol.
        subprotocol: Option<String>,
    },
    /// A complete data message.
    Message(Message),
    /// A pong arrived (pings are answered automatically).
    Pong(Bytes),
    /// The connection ended. Emitted exactly once.
    Closed(CloseInfo),
}

/// A [`WsEvent`] waiting in the connection's queue, with the rare and large upgrade request
/// boxed: the queue keeps its capacity for the connection's life, so its slots stay small.
#[derive(Debug)]
enum Queued {
    Upgrade(Box<UpgradeRequest>),
    Open(Option<String>),
    Message(Message),
    Pong(Bytes),
    Closed(CloseInfo),
}

impl From<Queued> for WsEvent {
    fn from(q: Queued) -> Self {
        match q {
            Queued::Upgrade(req) => WsEvent::UpgradeRequested(*req),
            Queued::Open(subprotocol) => WsEvent::Open { subprotocol },
            Queued::Message(m) => WsEvent::Message(m),
            Queued::Pong(p) => WsEvent::Pong(p),
            Queued::Closed(info) => WsEvent::Closed(info),
        }
    }
}

/// The timers of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum WsTimer {
    /// The opening handshake must complete by then.
    Handshake,
    /// The peer must answer our close frame (or, on a client, close TCP) by then.
    Close,
    /// Keepalive: send a ping or declare the peer dead.
    Keepalive,
    /// The outbox has been full for `send_timeout`: the peer is not reading.
    SendStall,
}

/// The deadlines kept in the connection's timer table (keepalive lives in its `Heartbeat`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Deadline {
    Handshake,
    Close,
    SendStall,
}

impl TimerKind for Deadline {
    const ALL: &'static [Self] = &[Self::Handshake, Self::Close, Self::SendStall];
    fn index(self) -> usize {
        self as usize
    }
}

impl From<Deadline> for WsTimer {
    fn from(d: Deadline) -> Self {
        match d {
            Deadline::Handshake => Self::Handshake,
            Deadline::Close => Self::Close,
            Deadline::SendStall => Self::SendStall,
        }
    }
}

#[derive(Debug)]
enum Phase {
    /// Server: reading the request head.
    ReadRequest(RequestParser),
    /// Server: the application decides.
    Decide(Box<UpgradeRequest>),
    /// Client: request queued, reading the response head.
    ReadResponse {
        parser: ResponseParser,
        key: String,
    },
    Open,
    /// Our close frame is sent; the peer's has not arrived.
    Closing,
    /// `Closed` was emitted; only transport teardown remains.
    Closed,
}

/// One WebSocket connection. See the [module docs](self) for the method groups and
/// [the crate docs](crate#the-run-loop) for the run loop.
#[derive(Debug)]
pub struct WsConnection {
    role: Role,
    /// Boxed: the connection is moved around whole (into tasks, handles).
    cfg: Box<WsConfig>,
    clock: Monotonic,
    phase: Phase,
    /// Seeded from `cfg.rng_seed` on first use (a client's key and masks; a server never
    /// draws from it).
    rng: Option<Box<Rng>>,
    inbuf: BytesMut,
    decoder: FrameDecoder,
    reassembler: Reassembler,
    arena: BytesMut,
    /// Chunks to write, each marked with whether it ends a frame.
    out: VecDeque<(Bytes, bool)>,
    /// Bytes queued in `out` (excluding a pending pong).
    out_bytes: usize,
    /// Payloads of pings not yet answered, at most `MAX_PENDING_PONGS`: every ping gets its
    /// pong; past the bound the newest payload replaces the last one (latest ping wins,
    /// RFC 6455 §5.5.3), so a ping flood cannot grow memory.
    pending_pongs: VecDeque<Bytes>,
    /// A frame's head was emitted and its payload not yet: never put a pong in between.
    mid_frame: bool,
    shutdown: ShutdownState,
    events: VecDeque<Queued>,
    timers: TimerTable<Deadline, 3>,
    heartbeat: Option<Heartbeat>,
    /// The close we sent, for `CloseInfo` when we initiated.
    sent_close: Option<(CloseCode, Utf8Bytes)>,
    subprotocol: Option<String>,
    closed_emitted: bool,
    /// Client: the server's answer when it was not a 101.
    rejection: Option<Box<http::Response>>,
    /// permessage-deflate, once negotiated.
    #[cfg(feature = "deflate")]
    deflate: Option<Box<crate::ws::deflate::PerMessageDeflate>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ShutdownState {
    No,
    Queued,
    Done,
}

impl WsConnection {
    fn new(role: Role, cfg: WsConfig, now: Instant, phase: Phase) -> Self {
        let mut timers = TimerTable::new();
        timers.set(Deadline::Handshake, now + cfg.handshake_timeout);
        Self {
            role,
            rng: None,
            decoder: FrameDecoder::new(role),
            reassembler: Reassembler::new(cfg.max_message),
            cfg: Box::new(cfg),
            clock: Monotonic::new(now),
            phase,
            inbuf: BytesMut::new(),
            arena: BytesMut::new(),
            out: VecDeque::new(),
            out_bytes: 0,
            pending_pongs: VecDeque::new(),
            mid_frame: false,
            shutdown: ShutdownState::No,
            events: VecDeque::new(),
            timers,
            heartbeat: None,
            sent_close: None,
            subprotocol: None,
            closed_emitted: false,
            rejection: None,
            #[cfg(feature = "deflate")]
            deflate: None,
        }
    }

    /// A server-side connection: it waits for the upgrade request, reports it as
    /// [`WsEvent::UpgradeRequested`] and then waits for [`accept`](Self::accept) or
    /// [`reject`](Self::reject). A request that does not arrive within
    /// `cfg.handshake_timeout` is answered with 408 and dropped.
    #[must_use]
    pub fn server(cfg: WsConfig, now: Instant) -> Self {
        let parser = RequestParser::new(cfg.max_handshake);
        Self::new(Role::Server, cfg, now, Phase::ReadRequest(parser))
    }

    /// A server-side connection for a request head the adapter already read (to route
    /// it: WebSocket, SSE or polling on one port). The request is validated as an upgrade
    /// at once: valid, it is reported as [`WsEvent::UpgradeRequested`] and waits for
    /// [`accept`](Self::accept) or [`reject`](Self::reject); invalid, the error response
    /// and `Closed` are queued, as [`server`](Self::server) does. Bytes that followed the
    /// head go to [`handle_read`](Machine::handle_read).
    #[must_use]
    pub fn server_for(cfg: WsConfig, now: Instant, request: Request) -> Self {
        let mut conn = Self::server(cfg, now);
        match UpgradeRequest::from_request(request) {
            Ok(req) => {
                conn.events.push_back(Queued::Upgrade(Box::new(req.clone())));
                conn.phase = Phase::Decide(Box::new(req));
            }
            Err(e) => conn.fail_handshake(e),
        }
        conn
    }

    /// A client-side connection: the upgrade request for `host` and `path` (e.g. `/chat?x=1`)
    /// is queued at once, with a `Sec-WebSocket-Key` drawn from the seeded RNG and the
    /// subprotocols and headers of `cfg`.
    ///
    /// # Errors
    /// [`SendError::InvalidHeader`] when `host`, `path` or a configured header cannot be
    /// written into an HTTP head.
    pub fn client(cfg: WsConfig, host: &str, path: &str, now: Instant) -> Result<Self, SendError> {
        let mut conn = Self::new(Role::Client, cfg, now, Phase::Closed);
        let mut raw = [0u8; 16];
        conn.rng().fill(&mut raw);
        let key = handshake::generate_key(raw);
        let headers = conn.request_headers();
        let request = handshake::client_request(host, path, &key, &conn.cfg.protocols, &headers)?;
        conn.push_out(request);
        let mut parser = ResponseParser::new(conn.cfg.max_handshake);
        if conn.offers_extensions() {
            parser = parser.allow_extensions();
        }
        conn.phase = Phase::ReadResponse { parser, key };
        Ok(conn)
    }

    // ----- getters -----

    /// The connection's state.
    #[must_use]
    pub fn state(&self) -> WsState {
        match self.phase {
            Phase::ReadRequest(_) | Phase::Decide(_) | Phase::ReadResponse { .. } => {
                WsState::Connecting
            }
            Phase::Open => WsState::Open,
            Phase::Closing => WsState::Closing,
            Phase::Closed => WsState::Closed,
        }
    }

    /// Client: the server's response head when it refused the upgrade (any status but 101),
    /// for its `Retry-After`, `WWW-Authenticate` or `Location`. The `Closed` event carries
    /// [`HandshakeError::Status`] with the same status.
    #[must_use]
    pub fn rejection(&self) -> Option<&http::Response> {
        self.rejection.as_deref()
    }

    /// A server's upgrade request waits for the application's `accept` or `reject`.
    #[must_use]
    pub fn is_deciding(&self) -> bool {
        matches!(self.phase, Phase::Decide(_))
    }

    /// Which side this is.
    #[must_use]
    pub fn role(&self) -> Role {
        self.role
    }

    /// The negotiated subprotocol, once open.
    #[must_use]
    pub fn subprotocol(&self) -> Option<&str> {
        self.subprotocol.as_deref()
    }

    /// Bytes queued for the transport and not yet pulled by `poll_transmit`.
    #[must_use]
    pub fn buffered_amount(&self) -> usize {
        self.out_bytes
    }

    /// The round-trip time of the latest answered keepalive ping.
    #[must_use]
    pub fn rtt(&self) -> Option<crate::time::Duration> {
        self.heartbeat.as_ref().and_then(Heartbeat::rtt)
    }

    /// Which timer `poll_timeout` stands for (for logs and debugging).
    #[must_use]
    pub fn timeout_reason(&self) -> Option<WsTimer> {
        let table = self.timers.next();
        let hb = self.heartbeat.as_ref().and_then(Heartbeat::poll_timeout);
        match (table, hb) {
            (Some((k, at)), Some(h)) => Some(if at <= h { k.into() } else { WsTimer::Keepalive }),
            (Some((k, _)), None) => Some(k.into()),
            (None, Some(_)) => Some(WsTimer::Keepalive),
            (None, None) => None,
        }
    }

    // ----- commands -----

    /// Server: accepts the pending upgrade, optionally choosing one of the offered
    /// subprotocols and adding response headers (e.g. `Set-Cookie`). Queues the 101
    /// response; the connection is then open and `WsEvent::Open` follows.
    ///
    /// # Errors
    /// [`SendError::NoPendingUpgrade`] outside the decision step; [`SendError::InvalidHeader`]
    /// for a subprotocol that was not offered or a header that cannot be written (the
    /// request stays pending).
    pub fn accept(
        &mut self,
        now: Instant,
        subprotocol: Option<&str>,
        headers: &[(&str, &str)],
    ) -> Result<(), SendError> {
        let now = self.clock.advance(now);
        let Phase::Decide(req) = &self.phase else {
            return Err(self.command_error(SendError::NoPendingUpgrade));
        };
        let extensions = self.negotiate_extensions(req);
        let response = match &extensions {
            Some((answer, _)) => {
                let mut all = headers.to_vec();
                all.push(("Sec-WebSocket-Extensions", answer.as_str()));
                handshake::accept_response(req, subprotocol, &all)?
            }
            None => handshake::accept_response(req, subprotocol, headers)?,
        };
        self.push_out(response);
        if let Some((_, agreed)) = extensions {
            self.enable_extensions(agreed);
        }
        self.open(now, subprotocol.map(str::to_owned));
        self.process_input(now);
        Ok(())
    }

    /// Server: rejects the pending upgrade with an HTTP `status` (e.g. 401, 403, 429), extra
    /// headers (e.g. `WWW-Authenticate`, `Retry-After`) and a body. Queues the response and
    /// a `Shutdown`; `WsEvent::Closed` follows with [`ConnError::Rejected`].
    ///
    /// # Errors
    /// [`SendError::NoPendingUpgrade`] outside the decision step; [`SendError::InvalidHeader`]
    /// for a status outside 100–599, 101, or a header that cannot be written.
    pub fn reject(
        &mut self,
        now: Instant,
        status: u16,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<(), SendError> {
        self.clock.advance(now);
        if !matches!(self.phase, Phase::Decide(_)) {
            return Err(self.command_error(SendError::NoPendingUpgrade));
        }
        let response = handshake::reject_response(status, headers, body)?;
        self.push_out(response);
        self.finish(
            CloseCode::ABNORMAL,
            Initiator::Local,
            false,
            Some(ConnError::Rejected(status)),
        );
        Ok(())
    }

    /// Sends a data message, fragmented if `cfg.max_send_fragment` is set. A server writes
    /// a shared payload without copying it; a client masks a copy.
    ///
    /// # Errors
    /// [`SendError::NotOpen`] during the handshake, [`SendError::Closed`] once closing,
    /// [`SendError::TooLarge`] over `max_message`, and [`SendError::Backpressure`] (with the
    /// message handed back) when `max_outbound` bytes are already queued: drain
    /// `poll_transmit` and retry.
    pub fn send(&mut self, now: Instant, msg: Message) -> Result<(), SendError> {
        let now = self.clock.advance(now);
        self.check_open()?;
        if msg.len() > self.cfg.max_message {
            return Err(SendError::TooLarge(msg));
        }
        if self.outbox_full(now, msg.len()) {
            return Err(SendError::Backpressure(msg));
        }
        if let Some(hb) = &mut self.heartbeat {
            hb.on_outbound(now);
        }
        let opcode = if msg.is_text() { OpCode::Text } else { OpCode::Binary };
        let payload = msg.into_payload();
        #[cfg(feature = "deflate")]
        if let Some(compressed) = self.deflate.as_mut().and_then(|d| d.compress(&payload)) {
            self.queue_message(opcode, crate::ws::deflate::RSV1, compressed);
            return Ok(());
        }
        self.queue_message(opcode, 0, payload);
        Ok(())
    }

    /// Queues a data message as one frame, or as fragments of `max_send_fragment`; `rsv`
    /// goes on the first frame only (RFC 7692 §6: RSV1 marks a compressed message).
    fn queue_message(&mut self, opcode: OpCode, rsv: u8, payload: Bytes) {
        match self.cfg.max_send_fragment {
            Some(max) if max > 0 && payload.len() > max => {
                let mut rest = payload;
                let (mut op, mut rsv) = (opcode, rsv);
                while rest.len() > max {
                    let chunk = rest.split_to(max);
                    self.queue_frame_rsv(false, rsv, op, chunk);
                    (op, rsv) = (OpCode::Continuation, 0);
                }
                self.queue_frame_rsv(true, rsv, op, rest);
            }
            _ => self.queue_frame_rsv(true, rsv, opcode, payload),
        }
    }

    /// Sends a ping with `payload` (≤ 125 bytes); the answer arrives as [`WsEvent::Pong`].
    ///
    /// # Errors
    /// As [`send`](Self::send), and [`SendError::ControlTooLong`] over 125 bytes.
    pub fn ping(&mut self, now: Instant, payload: Bytes) -> Result<(), SendError> {
        self.clock.advance(now);
        self.check_open()?;
        if payload.len() > 125 {
            return Err(SendError::ControlTooLong);
        }
        self.queue_frame(true, OpCode::Ping, payload);
        Ok(())
    }

    /// Starts the close handshake with `code` and `reason` (≤ 123 bytes). Data may still
    /// arrive until the peer's close frame; after `close_timeout` without it the transport
    /// is shut down. During a client's opening handshake, drops the connection at once.
    ///
    /// # Errors
    /// [`SendError::InvalidCloseCode`] for a code that may not be sent (1005, 1006, 1015,
    /// unassigned), [`SendError::ControlTooLong`] for a longer reason,
    /// [`SendError::NotOpen`] while a server waits for accept/reject (use `reject`), and
    /// [`SendError::Closed`] once closing.
    pub fn close(&mut self, now: Instant, code: CloseCode, reason: &str) -> Result<(), SendError> {
        let now = self.clock.advance(now);
        if !code.is_sendable() {
            return Err(SendError::InvalidCloseCode(code.0));
        }
        if reason.len() > 123 {
            return Err(SendError::ControlTooLong);
        }
        match self.phase {
            Phase::Open => {
                self.send_close(code, Utf8Bytes::from(reason));
                self.phase = Phase::Closing;
                self.heartbeat = None;
                self.timers.set(Deadline::Close, now + self.cfg.close_timeout);
                Ok(())
            }
            Phase::ReadResponse { .. } => {
                self.sent_close = Some((code, Utf8Bytes::from(reason)));
                self.finish(code, Initiator::Local, false, None);
                Ok(())
            }
            Phase::ReadRequest(_) | Phase::Decide(_) => Err(SendError::NotOpen),
            Phase::Closing | Phase::Closed => Err(SendError::Closed),
        }
    }

    // ----- internals -----

    /// Whether `len` more bytes would overfill a non-empty outbox; if so, arms the stall
    /// timer: a full outbox that does not drain within `send_timeout` ends the connection.
    fn outbox_full(&mut self, now: Instant, len: usize) -> bool {
        if self.out_bytes > 0 && self.out_bytes + len > self.cfg.max_outbound {
            if let Some(limit) = self.cfg.send_timeout
                && self.timers.get(Deadline::SendStall).is_none()
            {
                self.timers.set(Deadline::SendStall, now + limit);
            }
            return true;
        }
        false
    }

    fn check_open(&self) -> Result<(), SendError> {
        match self.phase {
            Phase::Open => Ok(()),
            Phase::ReadRequest(_) | Phase::Decide(_) | Phase::ReadResponse { .. } => {
                Err(SendError::NotOpen)
            }
            Phase::Closing | Phase::Closed => Err(SendError::Closed),
        }
    }

    fn command_error(&self, e: SendError) -> SendError {
        match self.phase {
            Phase::Closing | Phase::Closed => SendError::Closed,
            _ => e,
        }
    }

    fn push_out(&mut self, bytes: Bytes) {
        self.push_chunk(bytes, true);
    }

    fn push_chunk(&mut self, bytes: Bytes, ends_frame: bool) {
        self.out_bytes += bytes.len();
        self.out.push_back((bytes, ends_frame));
    }

    fn arena_reserve(&mut self, n: usize) {
        if self.arena.capacity() < n {
            self.arena.reserve(n.max(ARENA_CHUNK));
        }
    }

    /// Encodes a whole small frame (masked on a client) into one chunk from the arena.
    fn encode_small(&mut self, opcode: OpCode, payload: &[u8]) -> Bytes {
        let mask = self.next_mask();
        let header = encode_header(true, 0, opcode, payload.len(), mask);
        self.arena_reserve(header.len() + payload.len());
        self.arena.extend_from_slice(header.as_slice());
        let start = self.arena.len();
        self.arena.extend_from_slice(payload);
        if let Some(key) = mask {
            apply_mask(&mut self.arena[start..], key);
        }
        self.arena.split().freeze()
    }

    fn rng(&mut self) -> &mut Rng {
        let seed = self.cfg.rng_seed;
        self.rng.get_or_insert_with(|| Box::new(Rng::from_seed(seed)))
    }

    fn next_mask(&mut self) -> Option<[u8; 4]> {
        match self.role {
            Role::Client => Some(self.rng().next_u32().to_ne_bytes()),
            Role::Server => None,
        }
    }

    /// Queues one frame without reserved bits.
    fn queue_frame(&mut self, fin: bool, opcode: OpCode, payload: Bytes) {
        self.queue_frame_rsv(fin, 0, opcode, payload);
    }

    /// Queues one frame. Server frames: header from the arena plus the shared payload (or
    /// the payload copied inline when small). Client frames: header and masked copy.
    fn queue_frame_rsv(&mut self, fin: bool, rsv: u8, opcode: OpCode, payload: Bytes) {
        let mask = self.next_mask();
        let header = encode_header(fin, rsv, opcode, payload.len(), mask);
        if let Some(key) = mask {
            self.arena_reserve(header.len() + payload.len());
            self.arena.extend_from_slice(header.as_slice());
            let start = self.arena.len();
            self.arena.extend_from_slice(&payload);
            apply_mask(&mut self.arena[start..], key);
            let frame = self.arena.split().freeze();
            self.push_out(frame);
        } else if payload.len() <= INLINE_PAYLOAD {
            self.arena_reserve(header.len() + payload.len());
            self.arena.extend_from_slice(header.as_slice());
            self.arena.extend_from_slice(&payload);
            let frame = self.arena.split().freeze();
            self.push_out(frame);
        } else {
            self.arena_reserve(header.len());
            self.arena.extend_from_slice(header.as_slice());
            let head = self.arena.split().freeze();
            // Head and payload leave back to back: a pong may not go in between.
            self.push_chunk(head, false);
            self.push_chunk(payload, true);
        }
    }

    fn send_close(&mut self, code: CloseCode, reason: Utf8Bytes) {
        let mut payload = BytesMut::with_capacity(2 + reason.len());
        payload.extend_from_slice(&code.0.to_be_bytes());
        payload.extend_from_slice(reason.as_bytes());
        self.queue_frame(true, OpCode::Close, payload.freeze());
        self.pending_pongs.clear();
        self.sent_close = Some((code, reason));
    }

    fn open(&mut self, now: Instant, subprotocol: Option<String>) {
        self.phase = Phase::Open;
        self.timers.clear(Deadline::Handshake);
        self.heartbeat = self.cfg.keepalive.map(|hb| Heartbeat::new(hb, now));
        self.subprotocol.clone_from(&subprotocol);
        self.events.push_back(Queued::Open(subprotocol));
    }

    /// Ends the connection: emits `Closed` once, queues `Shutdown` (a client after a clean
    /// close waits for the server's EOF instead, up to `close_timeout`).
    fn finish(
        &mut self,
        code: CloseCode,
        initiator: Initiator,
        clean: bool,
        error: Option<ConnError>,
    ) {
        let reason = match (initiator, &self.sent_close) {
            (Initiator::Local, Some((c, r))) if *c == code => r.clone(),
            _ => Utf8Bytes::default(),
        };
        self.finish_with(code, reason, initiator, clean, error);
    }

    fn finish_with(
        &mut self,
        code: CloseCode,
        reason: Utf8Bytes,
        initiator: Initiator,
        clean: bool,
        error: Option<ConnError>,
    ) {
        let now = self.clock.now();
        self.phase = Phase::Closed;
        self.heartbeat = None;
        self.pending_pongs.clear();
        self.release_extensions();
        self.timers.clear_all();
        self.inbuf = BytesMut::new();
        if !self.closed_emitted {
            self.closed_emitted = true;
            self.events.push_back(Queued::Closed(CloseInfo {
                code,
                reason,
                initiator,
                clean,
                error,
            }));
        }
        if clean && self.role == Role::Client {
            // RFC 6455 §7.1.1: the server closes TCP first; the client waits a while for it.
            self.timers.set(Deadline::Close, now + self.cfg.close_timeout);
        } else {
            self.queue_shutdown();
        }
    }

    fn queue_shutdown(&mut self) {
        if self.shutdown == ShutdownState::No {
            self.shutdown = ShutdownState::Queued;
        }
    }

    /// Fails the connection after a peer violation: close frame with the error's code, then
    /// shutdown at once (RFC 6455 §7.1.7).
    fn fail(&mut self, err: ProtocolError) {
        let code = err.close_code();
        if matches!(self.phase, Phase::Open) {
            self.send_close(code, Utf8Bytes::default());
        }
        self.finish_with(code, Utf8Bytes::default(), Initiator::Local, false, Some(err.into()));
    }

    /// Ends a connection whose peer stopped reading: what is queued can never be delivered,
    /// so it is dropped (memory comes back at once) and the transport is shut down without
    /// a close frame, which could not arrive either.
    fn fail_stalled(&mut self) {
        self.out.clear();
        self.out_bytes = 0;
        self.pending_pongs.clear();
        self.mid_frame = false;
        self.finish_with(
            CloseCode::TOO_SLOW,
            Utf8Bytes::from("too slow"),
            Initiator::Local,
            false,
            Some(ConnError::SendStalled),
        );
    }

    /// Client: the server's 101 answered our extension offer badly (RFC 6455 §4.1, RFC 7692
    /// §7.1): the connection is failed with a close frame 1010.
    fn fail_extension(&mut self, err: HandshakeError) {
        self.send_close(CloseCode::MANDATORY_EXTENSION, Utf8Bytes::default());
        self.finish_with(
            CloseCode::MANDATORY_EXTENSION,
            Utf8Bytes::default(),
            Initiator::Local,
            false,
            Some(err.into()),
        );
    }

    fn fail_handshake(&mut self, err: HandshakeError) {
        if self.role == Role::Server {
            self.push_out(handshake::error_response(err));
        }
        self.finish(CloseCode::ABNORMAL, Initiator::Local, false, Some(err.into()));
    }

    fn process_input(&mut self, now: Instant) {
        loop {
            match &mut self.phase {
                Phase::ReadRequest(parser) => match parser.parse(&self.inbuf) {
                    Ok(None) => return,
                    Ok(Some((req, n))) => {
                        let _ = self.inbuf.split_to(n);
                        self.events.push_back(Queued::Upgrade(Box::new(req.clone())));
                        self.phase = Phase::Decide(Box::new(req));
                    }
                    Err(e) => return self.fail_handshake(e),
                },
                Phase::Decide(_) => {
                    // The client must wait for our answer (RFC 6455 §4.1); tolerate a little.
                    if self.inbuf.len() > self.cfg.max_handshake {
                        self.fail_handshake(HandshakeError::HeadTooLarge);
                    }
                    return;
                }
                Phase::ReadResponse { parser, key } => {
                    match parser.parse(&self.inbuf, key, &self.cfg.protocols) {
                        Ok(None) => return,
                        Ok(Some((resp, n))) => {
                            let _ = self.inbuf.split_to(n);
                            if let Err(e) = self.accept_extensions(&resp) {
                                return self.fail_extension(e);
                            }
                            self.open(now, resp.subprotocol().map(str::to_owned));
                        }
                        Err(e @ HandshakeError::UnexpectedExtension) => {
                            return self.fail_extension(e);
                        }
                        Err(e) => {
                            if let HandshakeError::Status(_) = e
                                && let Ok(Some((resp, _))) =
                                    http::ResponseParser::new(self.cfg.max_handshake)
                                        .parse(&self.inbuf)
                            {
                                self.rejection = Some(Box::new(resp));
                            }
                            return self.fail_handshake(e);
                        }
                    }
                }
                Phase::Open | Phase::Closing => {
                    let frame = match self.decoder.decode(&mut self.inbuf, self.cfg.max_frame) {
                        Ok(Some(f)) => f,
                        Ok(None) => return,
                        Err(e) => return self.fail(e),
                    };
                    #[cfg(feature = "deflate")]
                    let frame = match self.inflate_frame(frame) {
                        Ok(Some(f)) => f,
                        Ok(None) => continue,
                        Err(e) => return self.fail(e),
                    };
                    match self.reassembler.push(frame) {
                        Ok(None) => {}
                        Ok(Some(incoming)) => self.on_incoming(now, incoming),
                        Err(e) => return self.fail(e),
                    }
                }
                Phase::Closed => return,
            }
        }
    }

    fn on_incoming(&mut self, now: Instant, incoming: Incoming) {
        match incoming {
            Incoming::Message(m) => self.events.push_back(Queued::Message(m)),
            Incoming::Ping(payload) => {
                if matches!(self.phase, Phase::Open) {
                    if self.pending_pongs.len() == MAX_PENDING_PONGS {
                        self.pending_pongs.pop_back();
                    }
                    self.pending_pongs.push_back(payload);
                }
            }
            Incoming::Pong(payload) => {
                if let (Some(hb), Ok(token)) =
                    (&mut self.heartbeat, <[u8; 8]>::try_from(&payload[..]))
                {
                    hb.on_pong(now, u64::from_be_bytes(token));
                }
                self.events.push_back(Queued::Pong(payload));
            }
            Incoming::Close(close) => {
                let (code, reason) = close.unwrap_or((CloseCode::NO_STATUS, Utf8Bytes::default()));
                match self.phase {
                    Phase::Open => {
                        // Echo the code (RFC 6455 §5.5.1); an empty close gets an empty reply.
                        if code == CloseCode::NO_STATUS {
                            self.queue_frame(true, OpCode::Close, Bytes::new());
                            self.pending_pongs.clear();
                        } else {
                            self.send_close(code, Utf8Bytes::default());
                        }
                        self.finish_with(code, reason, Initiator::Remote, true, None);
                    }
                    Phase::Closing => {
                        let (code, reason) = self
                            .sent_close
                            .clone()
                            .unwrap_or((CloseCode::NO_STATUS, Utf8Bytes::default()));
                        self.finish_with(code, reason, Initiator::Local, true, None);
                    }
                    _ => {}
                }
            }
        }
    }
}

impl Machine for WsConnection {
    type Event = WsEvent;

    /// Feeds bytes read from the transport. Ignored once closed.
    fn handle_read(&mut self, now: Instant, data: &[u8]) {
        let now = self.clock.advance(now);
        if matches!(self.phase, Phase::Closed) || data.is_empty() {
            return;
        }
        if let Some(hb) = &mut self.heartbeat {
            hb.on_inbound(now);
        }
        self.inbuf.extend_from_slice(data);
        self.process_input(now);
    }

    /// The transport's read half ended.
    fn handle_eof(&mut self, now: Instant) {
        self.clock.advance(now);
        match self.phase {
            Phase::ReadRequest(_) | Phase::Decide(_) | Phase::ReadResponse { .. } => {
                self.finish(
                    CloseCode::ABNORMAL,
                    Initiator::Remote,
                    false,
                    Some(HandshakeError::Eof.into()),
                );
            }
            Phase::Open | Phase::Closing => {
                self.finish(CloseCode::ABNORMAL, Initiator::Remote, false, Some(ConnError::Eof));
            }
            Phase::Closed => {
                self.timers.clear_all();
                self.queue_shutdown();
            }
        }
    }

    /// Fires due timers: handshake deadline (server answers 408), keepalive ping or dead
    /// peer, close timeout.
    fn handle_timeout(&mut self, now: Instant) {
        let now = self.clock.advance(now);
        while let Some(timer) = self.timers.pop_expired(now) {
            match (timer, &self.phase) {
                (Deadline::Handshake, _) => self.fail_handshake(HandshakeError::Timeout),
                (Deadline::Close, Phase::Closing) => {
                    let (code, reason) = self
                        .sent_close
                        .clone()
                        .unwrap_or((CloseCode::NO_STATUS, Utf8Bytes::default()));
                    self.finish_with(
                        code,
                        reason,
                        Initiator::Local,
                        false,
                        Some(ConnError::CloseTimeout),
                    );
                }
                (Deadline::Close, _) => self.queue_shutdown(),
                (Deadline::SendStall, Phase::Open | Phase::Closing) => self.fail_stalled(),
                (Deadline::SendStall, _) => {}
            }
        }
        let beat = self.heartbeat.as_mut().and_then(|hb| hb.handle_timeout(now));
        match beat {
            Some(Beat::SendPing(token)) => {
                self.queue_frame(true, OpCode::Ping, Bytes::copy_from_slice(&token.to_be_bytes()));
            }
            Some(Beat::Expired) => {
                self.finish(
                    CloseCode::ABNORMAL,
                    Initiator::Local,
                    false,
                    Some(ConnError::KeepaliveTimeout),
                );
            }
            _ => {}
        }
    }

    /// The next chunk to write. May return something new after every input and command.
    /// After `Transmit::Shutdown` it returns `None` forever.
    fn poll_transmit(&mut self) -> Option<Transmit> {
        if !self.mid_frame
            && let Some(payload) = self.pending_pongs.pop_front()
        {
            let frame = self.encode_small(OpCode::Pong, &payload);
            return Some(Transmit::Bytes(frame));
        }
        if let Some((chunk, ends_frame)) = self.out.pop_front() {
            self.out_bytes -= chunk.len();
            self.mid_frame = !ends_frame;
            if self.out_bytes <= self.cfg.max_outbound / 2 {
                self.timers.clear(Deadline::SendStall);
            }
            return Some(Transmit::Bytes(chunk));
        }
        if self.shutdown == ShutdownState::Queued {
            self.shutdown = ShutdownState::Done;
            return Some(Transmit::Shutdown);
        }
        None
    }

    fn poll_event(&mut self) -> Option<WsEvent> {
        self.events.pop_front().map(WsEvent::from)
    }

    /// The earliest deadline: handshake, keepalive or close. Changes after every input and
    /// command.
    fn poll_timeout(&self) -> Option<Instant> {
        let hb = self.heartbeat.as_ref().and_then(Heartbeat::poll_timeout);
        match (self.timers.next_deadline(), hb) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

#[cfg(feature = "deflate")]
mod deflate;
#[cfg(not(feature = "deflate"))]
mod no_deflate;
#[cfg(test)]
mod tests;
