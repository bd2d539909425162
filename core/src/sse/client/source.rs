//! [`EventSource`]: an [`SseClient`] over the outbound sockets it asks its adapter for.

use std::collections::VecDeque;

use bytes::Bytes;

use super::{
    SseAction, SseClient, SseClientConfig, SseClientEvent, SseResponseReader, sse_request,
};
use crate::socket::{SockId, SocketAction};
use crate::time::{Duration, Instant, Monotonic};

/// Where an [`EventSource`] connects and what it asks for. Build it with
/// [`EventSourceConfig::new`] and change fields.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct EventSourceConfig {
    /// The client's settings (reconnection time, backoff, idle watchdog, limits, seed).
    pub client: SseClientConfig,
    /// The host to connect to: a name or an IP address (an IPv6 one without brackets).
    pub host: String,
    /// The TCP port.
    pub port: u16,
    /// The request target: the path and query, e.g. `/events?ch=ticks` (default `/`).
    pub path: String,
    /// Extra request headers sent on every attempt, e.g. `Authorization` (not
    /// `Last-Event-ID`, which the client manages).
    pub headers: Vec<(String, String)>,
    /// A socket not connected this long after its [`SocketAction::Connect`] is given up as a
    /// network error (default 10 s; `None`: the idle watchdog alone bounds it).
    pub connect_timeout: Option<Duration>,
    /// The largest response head accepted (default 16 KiB); a larger one is a network error.
    pub max_head: usize,
}

impl EventSourceConfig {
    /// `GET path` from `host:port`, with the defaults.
    #[must_use]
    pub fn new(host: impl Into<String>, port: u16, path: impl Into<String>) -> Self {
        let path = path.into();
        Self {
            client: SseClientConfig::default(),
            host: host.into(),
            port,
            path: if path.is_empty() { "/".into() } else { path },
            headers: Vec::new(),
            connect_timeout: Some(Duration::from_secs(10)),
            max_head: 16 << 10,
        }
    }
}

/// The request of an [`EventSourceConfig`] cannot be written: a header name that is not a
/// token, or CR, LF or NUL in the host, the path or a header value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid SSE request: a header name is not a token, or a value holds CR, LF or NUL")]
pub struct InvalidRequest;

/// The current attempt's socket.
#[derive(Debug)]
struct Conn {
    sock: SockId,
    last_event_id: Option<String>,
    connected: bool,
    reader: SseResponseReader,
}

/// [`EventSource`]: an [`SseClient`] over the TCP sockets it asks its adapter for, speaking
/// HTTP/1.1 itself ([`sse_request`], [`SseResponseReader`]). It has the
/// [`Outbound`](crate::socket::Outbound) shape of every machine that asks for outbound
/// sockets, so an adapter drives it with its one outbound-socket driver, as it drives a
/// [`ClientSession`](crate::client::ClientSession).
///
/// Each [`SseAction::Connect`] of the client becomes a new socket
/// ([`SocketAction::Connect`] to the configured host and port); once it is connected the
/// `GET` request (with `Last-Event-ID` when there is one) is its transmit; what it reads goes
/// through the response reader to the client (head, then body), its end to
/// [`SseClient::handle_eof`]. An [`SseAction::Disconnect`], a body that ended by its
/// framing and an end of file close the socket ([`SocketAction::Close`]). A socket that is
/// not connected within [`EventSourceConfig::connect_timeout`] is closed and reported to the
/// client as a network error. Everything else (reconnection, backoff, `Last-Event-ID`, the
/// idle watchdog, the events) is the client's: see [`SseClient`].
///
/// ```
/// use tidewire::socket::{SockId, SocketAction};
/// use tidewire::sse::{EventSource, EventSourceConfig, SseClientEvent, SseState};
/// use tidewire::time::Instant;
///
/// let now = Instant::now();
/// let cfg = EventSourceConfig::new("example.org", 8080, "/events?ch=ticks");
/// let mut es = EventSource::new(cfg, now, 0).unwrap();
/// let Some(SocketAction::Connect { sock, host, port }) = es.poll_action() else { panic!() };
/// assert_eq!((host.as_str(), port), ("example.org", 8080));
/// es.handle_connected(now, sock);
/// let (_, request) = es.poll_transmit().unwrap();
/// assert!(request.starts_with(b"GET /events?ch=ticks HTTP/1.1\r\nHost: example.org:8080\r\n"));
/// es.handle_read(now, sock, b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n");
/// es.handle_read(now, sock, b"id: 7\ndata: hello\n\n");
/// assert_eq!(es.client().state(), SseState::Open);
/// let events: Vec<_> = std::iter::from_fn(|| es.poll_event()).collect();
/// assert!(matches!(&events[2], SseClientEvent::Event(e) if e.data == "hello"));
/// // The end of the body: the socket is closed, a reconnection (with `Last-Event-ID: 7`)
/// // waits for the client's reconnection time.
/// es.handle_eof(now, sock);
/// assert_eq!(es.poll_action(), Some(SocketAction::Close { sock }));
/// assert_eq!(es.client().state(), SseState::Reconnecting);
/// ```
///
/// Inputs and outputs are those of [`Outbound`](crate::socket::Outbound) (it implements
/// it), plus [`poll_event`](Self::poll_event) (the client's events), the command
/// [`close`](Self::close), and the getters [`client`](Self::client) and
/// [`wants_read`](Self::wants_read).
#[derive(Debug)]
pub struct EventSource {
    client: SseClient,
    clock: Monotonic,
    host: String,
    port: u16,
    host_header: String,
    path: String,
    headers: Vec<(String, String)>,
    connect_timeout: Option<Duration>,
    max_head: usize,
    /// The wall clock at `start`, in seconds since the Unix epoch (dates a `Retry-After`).
    unix_start: u64,
    start: Instant,
    conn: Option<Conn>,
    connect_deadline: Option<Instant>,
    next_sock: u64,
    actions: VecDeque<SocketAction>,
    transmits: VecDeque<(SockId, Bytes)>,
}

impl EventSource {
    /// The client, in state `Connecting`, and the [`SocketAction::Connect`] of its first
    /// attempt. `unix_now` is the wall clock at `now` in seconds since the Unix epoch (it
    /// dates a `Retry-After` given as an HTTP date; 0 when unknown).
    ///
    /// # Errors
    /// [`InvalidRequest`] when the request cannot be written.
    pub fn new(
        cfg: EventSourceConfig,
        now: Instant,
        unix_now: u64,
    ) -> Result<Self, InvalidRequest> {
        let host_header = match (cfg.host.contains(':'), cfg.port) {
            (true, 80) => format!("[{}]", cfg.host),
            (true, port) => format!("[{}]:{port}", cfg.host),
            (false, 80) => cfg.host.clone(),
            (false, port) => format!("{}:{port}", cfg.host),
        };
        sse_request(&host_header, &cfg.path, None, &cfg.headers).ok_or(InvalidRequest)?;
        let mut es = Self {
            client: SseClient::new(cfg.client, now),
            clock: Monotonic::new(now),
            host: cfg.host,
            port: cfg.port,
            host_header,
            path: cfg.path,
            headers: cfg.headers,
            connect_timeout: cfg.connect_timeout,
            max_head: cfg.max_head,
            unix_start: unix_now,
            start: now,
            conn: None,
            connect_deadline: None,
            next_sock: 0,
            actions: VecDeque::new(),
            transmits: VecDeque::new(),
        };
        es.pump(now);
        Ok(es)
    }

    // ----- getters -----

    /// The client: its state, last event ID, next retry, timer reason.
    #[must_use]
    pub fn client(&self) -> &SseClient {
        &self.client
    }

    /// Whether the adapter may read the socket: `false` while the application leaves
    /// `max_queued` events unpulled (see [`SseClient::wants_read`]).
    #[must_use]
    pub fn wants_read(&self) -> bool {
        self.client.wants_read()
    }

    // ----- inputs -----

    /// `sock` is connected: its request is queued for [`poll_transmit`](Self::poll_transmit).
    pub fn handle_connected(&mut self, now: Instant, sock: SockId) {
        let now = self.clock.advance(now);
        let Some(conn) = self.conn.as_mut().filter(|c| c.sock == sock && !c.connected) else {
            return;
        };
        conn.connected = true;
        self.connect_deadline = None;
        let last_event_id = conn.last_event_id.as_deref();
        match sse_request(&self.host_header, &self.path, last_event_id, &self.headers) {
            Some(request) => self.transmits.push_back((sock, Bytes::from(request))),
            None => {
                self.close_conn();
                self.client.handle_error(now);
            }
        }
        self.pump(now);
    }

    /// `sock` read `data`: the response head, then its body, for the client.
    pub fn handle_read(&mut self, now: Instant, sock: SockId, data: &[u8]) {
        let now = self.clock.advance(now);
        let unix_now = self.unix_start + now.saturating_duration_since(self.start).as_secs();
        let Some(conn) = self.conn.as_mut().filter(|c| c.sock == sock) else { return };
        if conn.reader.feed(now, unix_now, data, &mut self.client) {
            self.close_conn();
        }
        self.pump(now);
    }

    /// `sock`'s peer finished sending: the end of the body (or a network error before the
    /// response head); the socket is closed.
    pub fn handle_eof(&mut self, now: Instant, sock: SockId) {
        let now = self.clock.advance(now);
        if self.conn.as_ref().is_some_and(|c| c.sock == sock) {
            self.close_conn();
            self.client.handle_eof(now);
            self.pump(now);
        }
    }

    /// `sock` could not connect, or broke: a network error for the client.
    pub fn handle_error(&mut self, now: Instant, sock: SockId) {
        let now = self.clock.advance(now);
        if self.conn.as_ref().is_some_and(|c| c.sock == sock) {
            self.conn = None;
            self.connect_deadline = None;
            self.client.handle_error(now);
            self.pump(now);
        }
    }

    /// Fires the connect timeout and the client's timers due at `now`. Spurious calls are
    /// no-ops.
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.clock.advance(now);
        if self.connect_deadline.is_some_and(|at| at <= now) {
            self.close_conn();
            self.client.handle_error(now);
        }
        self.client.handle_timeout(now);
        self.pump(now);
    }

    // ----- command -----

    /// Closes the source for good ([`SseClient::close`]); its socket is closed.
    pub fn close(&mut self, now: Instant) {
        let now = self.clock.advance(now);
        self.client.close(now);
        self.pump(now);
    }

    // ----- outputs -----

    /// The next socket to open or close.
    #[must_use]
    pub fn poll_action(&mut self) -> Option<SocketAction> {
        self.actions.pop_front()
    }

    /// The next bytes to write: the request of a socket that connected.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<(SockId, Bytes)> {
        self.transmits.pop_front()
    }

    /// The client's next state change or stream event ([`SseClient::poll_event`]).
    #[must_use]
    pub fn poll_event(&mut self) -> Option<SseClientEvent> {
        self.client.poll_event()
    }

    /// When [`handle_timeout`](Self::handle_timeout) must run next: the connect timeout or
    /// the client's deadline.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        match (self.connect_deadline, self.client.poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    // ----- internals -----

    /// Turns the client's actions into socket actions.
    fn pump(&mut self, now: Instant) {
        while let Some(action) = self.client.poll_action() {
            match action {
                SseAction::Connect { last_event_id } => {
                    self.close_conn();
                    let sock = SockId(self.next_sock);
                    self.next_sock += 1;
                    let reader = SseResponseReader::new(self.max_head);
                    self.conn = Some(Conn { sock, last_event_id, connected: false, reader });
                    self.connect_deadline = self.connect_timeout.and_then(|t| now.checked_add(t));
                    let (host, port) = (self.host.clone(), self.port);
                    self.actions.push_back(SocketAction::Connect { sock, host, port });
                }
                SseAction::Disconnect => self.close_conn(),
            }
        }
    }

    /// Closes the current socket, if any: withdraws its `Connect` if the adapter has not
    /// pulled it yet, else drops its unpulled bytes and queues a `Close`.
    fn close_conn(&mut self) {
        self.connect_deadline = None;
        let Some(Conn { sock, .. }) = self.conn.take() else { return };
        if matches!(self.actions.back(), Some(SocketAction::Connect { sock: s, .. }) if *s == sock)
        {
            self.actions.pop_back();
        } else {
            self.transmits.retain(|(s, _)| *s != sock);
            self.actions.push_back(SocketAction::Close { sock });
        }
    }
}

crate::socket::outbound_by_inherent!(EventSource);

#[cfg(test)]
mod tests;

/// The source as an application's [`OutboundClient`](crate::socket::OutboundClient): the
/// client's events, its read gate; while reads are held back the idle watchdog waits (the
/// silence is the application's doing, not the server's).
impl crate::socket::OutboundClient for EventSource {
    type Event = SseClientEvent;
    fn poll_event(&mut self) -> Option<SseClientEvent> {
        EventSource::poll_event(self)
    }
    fn close(&mut self, now: Instant) {
        EventSource::close(self, now);
    }
    fn is_closed(&self) -> bool {
        self.client.state() == super::SseState::Closed
    }
    fn wants_read(&self) -> bool {
        EventSource::wants_read(self)
    }
    fn handle_resume(&mut self, now: Instant) {
        self.client.handle_resume(now);
    }
    fn poll_deadline(&self, held: bool) -> Option<Instant> {
        match self.client.timeout_reason() {
            Some(super::SseTimer::Idle) if held => self.connect_deadline,
            _ => EventSource::poll_timeout(self),
        }
    }
}

#[cfg(test)]
mod owner_tests {
    use super::*;
    use crate::socket::OutboundClient;

    /// While its owner holds reads back, an open source's idle watchdog waits; its close
    /// ends it for the owner, after a last `State(Closed)`.
    #[test]
    fn a_held_source_pauses_its_idle_watchdog_and_closes_for_its_owner() {
        let now = crate::time::test_epoch();
        let cfg = EventSourceConfig::new("example.org", 80, "/");
        let mut es = EventSource::new(cfg, now, 0).unwrap();
        let Some(SocketAction::Connect { sock, .. }) = es.poll_action() else { panic!() };
        es.handle_connected(now, sock);
        es.handle_read(now, sock, b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n");
        assert_eq!(es.client().timeout_reason(), Some(super::super::SseTimer::Idle));
        assert!(es.poll_timeout().is_some());
        assert_eq!(es.poll_deadline(false), es.poll_timeout());
        assert_eq!(es.poll_deadline(true), None);
        assert!(!es.is_closed());
        OutboundClient::close(&mut es, now);
        assert!(es.is_closed());
        let last = std::iter::from_fn(|| OutboundClient::poll_event(&mut es)).last();
        assert!(
            matches!(last, Some(SseClientEvent::State(s)) if s.state == super::super::SseState::Closed)
        );
    }
}
