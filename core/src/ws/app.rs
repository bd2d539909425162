//! [`AppSocket`]: one WebSocket connection as an application holds it through an adapter.
//!
//! An adapter gives the application a `WebSocket` handle and drives the connection's socket
//! on its own (a task, a thread). Both sides share one [`AppSocket`] behind the adapter's
//! lock: it wraps the [`WsConnection`] and adds what every adapter needs beside it, without
//! IO:
//!
//! - the bounded queue of what was received for the application (data messages and pongs;
//!   the close is reported last, once the socket is done), so a slow application stops the
//!   reads (`Pass::Run { read: false, .. }`) instead of growing a queue;
//! - the end of the socket's life: an [`abort`](AppSocket::abort) by the application (its
//!   handle dropped while open), a [`kill`](AppSocket::kill) by the server (shutdown past its
//!   grace), and the linger after the close (`WsConfig::close_timeout` to write the last
//!   bytes);
//! - whom to wake: [`poll_wakes`](AppSocket::poll_wakes) says whether receivers (something
//!   arrived), senders (the outbox has room, or the connection closed) or the driver
//!   (something to write, a paused reader may read) should be woken.
//!
//! The driver's run loop: [`poll_pass`](AppSocket::poll_pass) (timers fired, a batch of bytes
//! pulled, what to do next), write, one read ([`handle_read`](AppSocket::handle_read) /
//! [`handle_eof`](AppSocket::handle_eof)), wait; and [`finish`](AppSocket::finish) once the
//! socket is shut down. An adapter without a task per connection, pumping the socket on the
//! threads that use it, keeps a [`Driver`] instead ([`driver`]: who writes, the linger after
//! the application's drop, the writer thread, the receiver's reads).

use std::collections::VecDeque;

use bytes::Bytes;

use super::Role;
use super::close::CloseCode;
use super::conn::{CloseInfo, Initiator, WsConnection, WsEvent, WsState};
use super::error::{ConnError, HandshakeError, SendError};
use super::message::Message;
use crate::machine::{Machine, Transmit};
use crate::time::{Duration, Instant};

pub mod driver;

pub use driver::{Driver, DriverConfig, DriverWakes, ReadBuf, Turn};

/// What an adapter's `WebSocket::recv_event` returns ([`AppSocket::next_event`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A complete data message.
    Message(Message),
    /// A pong (pings from the peer are answered automatically).
    Pong(Bytes),
    /// The connection ended and its socket is shut down; returned again by every later call.
    Closed(CloseInfo),
}

/// Returned by an adapter's `WebSocket::recv` once the connection ended, on every call.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecvError {
    /// The connection ended: how and why.
    #[error("connection closed (code {})", .0.code)]
    Closed(CloseInfo),
}

/// Why an adapter's client `connect` failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The URL is invalid, or not `ws://` (`http://` for SSE): no TLS yet.
    #[error("invalid URL: {0}")]
    Url(String),
    /// Name resolution, the TCP connection (`TimedOut` past the connect timeout), the
    /// socket, or seeding from OS entropy failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The opening handshake failed (e.g. [`HandshakeError::Status`]).
    #[error("handshake failed: {0}")]
    Handshake(HandshakeError),
    /// The connection ended during the handshake for another reason.
    #[error("connection closed during the handshake (code {})", .0.code)]
    Closed(CloseInfo),
}

impl From<CloseInfo> for ConnectError {
    /// A client connection that ended before it opened: its handshake error, if that was why.
    fn from(info: CloseInfo) -> Self {
        match info.error {
            Some(ConnError::Handshake(e)) => Self::Handshake(e),
            _ => Self::Closed(info),
        }
    }
}

impl From<crate::client::UrlError> for ConnectError {
    fn from(e: crate::client::UrlError) -> Self {
        Self::Url(e.to_string())
    }
}

/// What the driver does after [`AppSocket::poll_pass`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Pass {
    /// Shut the socket down now (aborted, killed, or the linger is over).
    Stop,
    /// The connection failed: write what the socket takes without waiting, then shut it
    /// down.
    FlushAndStop,
    /// Go on: write the batch; read when `read` (the application has room, or the
    /// connection is closed: the socket is read to its end); wait at most
    /// until `deadline`. After `shutdown`, shut the socket down once the batch is written.
    Run {
        /// Whether to read the socket.
        read: bool,
        /// The next deadline (the connection's timers, the linger).
        deadline: Option<Instant>,
        /// The machine asked for `Transmit::Shutdown`.
        shutdown: bool,
    },
}

/// Whom the adapter should wake after a call, from [`AppSocket::poll_wakes`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Wakes {
    /// Something arrived for the application (an event, the open, the close).
    pub receivers: bool,
    /// The outbox has room again, or the connection closed.
    pub senders: bool,
    /// The driver has work: a command queued bytes, an abort, a kill, or a paused reader
    /// may read again.
    pub driver: bool,
}

/// One WebSocket connection shared by an application's handle and the adapter's driver:
/// the [`WsConnection`], the bounded inbound queue and the socket's end (module docs).
///
/// Application side: [`command`](Self::command), [`pop_event`](Self::pop_event),
/// [`abort`](Self::abort), getters. Driver side: [`poll_pass`](Self::poll_pass),
/// [`handle_read`](Self::handle_read), [`handle_eof`](Self::handle_eof),
/// [`handle_write_error`](Self::handle_write_error), [`finish`](Self::finish). After each
/// call the adapter drains [`poll_wakes`](Self::poll_wakes).
#[derive(Debug)]
pub struct AppSocket {
    conn: WsConnection,
    inbound: VecDeque<WsEvent>,
    inbound_bytes: usize,
    max_events: usize,
    max_bytes: usize,
    close_timeout: Duration,
    opened: Option<Option<String>>,
    closed: Option<CloseInfo>,
    linger: Option<Instant>,
    wakes: Wakes,
    aborted: bool,
    killed: bool,
    write_failed: bool,
    shutdown: bool,
    read_paused: bool,
    finished: bool,
}

impl AppSocket {
    /// Wraps `conn` (an accepted server connection or a new client), with at most
    /// `max_events` events or `max_bytes` payload bytes queued for the application, and
    /// `close_timeout` to write the last bytes after the close.
    #[must_use]
    pub fn new(
        conn: WsConnection,
        max_events: usize,
        max_bytes: usize,
        close_timeout: Duration,
    ) -> Self {
        let mut sock = Self {
            conn,
            inbound: VecDeque::new(),
            inbound_bytes: 0,
            max_events,
            max_bytes,
            close_timeout,
            opened: None,
            closed: None,
            linger: None,
            wakes: Wakes::default(),
            aborted: false,
            killed: false,
            write_failed: false,
            shutdown: false,
            read_paused: false,
            finished: false,
        };
        sock.absorb();
        sock
    }

    // ----- getters -----

    /// `Some(subprotocol)` once the opening handshake completed.
    #[must_use]
    pub fn opened(&self) -> Option<Option<&str>> {
        self.opened.as_ref().map(Option::as_deref)
    }

    /// How the connection ended, once the machine said so.
    #[must_use]
    pub fn close_info(&self) -> Option<&CloseInfo> {
        self.closed.as_ref()
    }

    /// The machine's state.
    #[must_use]
    pub fn state(&self) -> WsState {
        self.conn.state()
    }

    /// The machine, for its getters (`buffered_amount`, `subprotocol`…).
    #[must_use]
    pub fn conn(&self) -> &WsConnection {
        &self.conn
    }

    /// Whether nothing more can be sent: closing, closed, aborted or killed.
    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.aborted || self.killed || matches!(self.state(), WsState::Closing | WsState::Closed)
    }

    /// Whether the application's queue is full (the driver then stops reading).
    fn inbound_full(&self) -> bool {
        self.inbound.len() >= self.max_events || self.inbound_bytes >= self.max_bytes
    }

    // ----- application side -----

    /// Runs a command (`send`, `ping`, `close`…) on the machine. A message refused with
    /// `Backpressure` comes back in the error: wait for [`Wakes::senders`] and try again.
    ///
    /// # Errors
    /// [`SendError::Closed`] once aborted or killed; otherwise the machine's error.
    pub fn command<T>(
        &mut self,
        now: Instant,
        f: impl FnOnce(&mut WsConnection, Instant) -> Result<T, SendError>,
    ) -> Result<T, SendError> {
        if self.aborted || self.killed {
            return Err(SendError::Closed);
        }
        let out = f(&mut self.conn, now)?;
        self.wakes.driver = true;
        Ok(out)
    }

    /// The next received event for the application: `Message` and `Pong` in order, then
    /// `Closed` (on this and every later call) once [`finish`](Self::finish) was called.
    /// `None` while there is nothing yet. When it makes room for a paused reader,
    /// [`poll_wakes`](Self::poll_wakes) says to wake the driver.
    pub fn pop_event(&mut self) -> Option<WsEvent> {
        if let Some(ev) = self.inbound.pop_front() {
            self.inbound_bytes -= match &ev {
                WsEvent::Message(m) => m.len(),
                WsEvent::Pong(p) => p.len(),
                _ => 0,
            };
            if self.read_paused && !self.inbound_full() {
                self.wakes.driver = true;
            }
            return Some(ev);
        }
        let info = self.closed.as_ref().filter(|_| self.finished)?;
        Some(WsEvent::Closed(info.clone()))
    }

    /// [`pop_event`](Self::pop_event) as the application sees it: data, pongs, the end.
    pub fn next_event(&mut self) -> Option<Event> {
        loop {
            return match self.pop_event()? {
                WsEvent::Message(m) => Some(Event::Message(m)),
                WsEvent::Pong(p) => Some(Event::Pong(p)),
                WsEvent::Closed(info) => Some(Event::Closed(info)),
                _ => continue,
            };
        }
    }

    /// [`next_event`](Self::next_event) skipping pongs: what an adapter's `WebSocket::recv`
    /// returns, [`RecvError::Closed`] on every call once the connection ended.
    pub fn next_message(&mut self) -> Option<Result<Message, RecvError>> {
        loop {
            // From `pop_event` directly: one move of the event less on this hot path.
            return match self.pop_event()? {
                WsEvent::Message(m) => Some(Ok(m)),
                WsEvent::Closed(info) => Some(Err(RecvError::Closed(info))),
                _ => continue,
            };
        }
    }

    /// A client's opening handshake, once decided: the negotiated subprotocol, or why the
    /// connection ended before it opened (what an adapter's `connect` returns).
    ///
    /// # Errors
    /// The [`ConnectError`] made of the connection's [`CloseInfo`].
    pub fn handshake(&self) -> Option<Result<Option<String>, ConnectError>> {
        match self.opened() {
            Some(subprotocol) => Some(Ok(subprotocol.map(str::to_owned))),
            None => self.closed.as_ref().map(|info| Err(ConnectError::from(info.clone()))),
        }
    }

    /// The application dropped its handle. A connection still connecting or open is
    /// aborted (no close handshake); returns whether it was. A closing one finishes its
    /// close handshake.
    pub fn abort(&mut self) -> bool {
        let open = matches!(self.state(), WsState::Connecting | WsState::Open);
        self.aborted |= open;
        self.wakes.driver |= open;
        open
    }

    /// The server forces the connection down, whatever its state.
    pub fn kill(&mut self) {
        self.killed = true;
        self.wakes.driver = true;
    }

    // ----- driver side -----

    /// Feeds bytes read from the socket.
    pub fn handle_read(&mut self, now: Instant, data: &[u8]) {
        self.conn.handle_read(now, data);
        self.absorb();
    }

    /// The socket's read half ended (end of file or an error).
    pub fn handle_eof(&mut self, now: Instant) {
        self.conn.handle_eof(now);
        self.absorb();
    }

    /// A write failed: nothing more will be written (the adapter drops its batch); the
    /// connection is lost.
    pub fn handle_write_error(&mut self, now: Instant) {
        self.write_failed = true;
        self.handle_eof(now);
    }

    /// The socket took nothing for the adapter's send timeout while bytes waited for it
    /// (bytes the machine no longer sees, so its own send-stall timer cannot): the
    /// connection is lost as that timer loses it (close code 4100,
    /// [`ConnError::SendStalled`]), and nothing more is
    /// written. A closed connection keeps how it ended.
    pub fn handle_write_stall(&mut self, now: Instant) {
        let open = self.state() != WsState::Closed;
        self.handle_write_error(now);
        if open {
            self.closed = Some(CloseInfo {
                code: CloseCode::TOO_SLOW,
                reason: super::Utf8Bytes::from("too slow"),
                initiator: Initiator::Local,
                clean: false,
                error: Some(super::ConnError::SendStalled),
            });
        }
    }

    /// One pass of the driver: fires due timers, pulls bytes into `out` while it holds
    /// fewer than `max_bytes` bytes and `max_chunks` chunks (everything when the connection
    /// failed), and says what to do next.
    pub fn poll_pass(
        &mut self,
        now: Instant,
        out: &mut VecDeque<Bytes>,
        max_bytes: usize,
        max_chunks: usize,
    ) -> Pass {
        if self.killed || (self.aborted && !self.is_closed_state()) {
            self.handle_eof(now);
            return Pass::Stop;
        }
        // A server's upgrade is not driven before the application decides.
        if self.conn.is_deciding() {
            return Pass::Run { read: false, deadline: None, shutdown: false };
        }
        if self.conn.poll_timeout().is_some_and(|d| d <= now) {
            self.conn.handle_timeout(now);
        }
        self.absorb();
        let closed = self.state() == WsState::Closed;
        // A server's upgrade closed before it opened: its HTTP answer (a rejection, a
        // handshake error) is written as a close would be, within the close timeout.
        let answering = closed && self.opened.is_none() && self.conn.role() == Role::Server;
        let unclean = closed && !answering && self.closed.as_ref().is_some_and(|c| !c.clean);
        let mut queued: usize = out.iter().map(Bytes::len).sum();
        while !self.shutdown && (unclean || (queued < max_bytes && out.len() < max_chunks)) {
            match self.conn.poll_transmit() {
                Some(Transmit::Bytes(b)) => {
                    self.wakes.senders = true;
                    if !self.write_failed && !b.is_empty() {
                        queued += b.len();
                        out.push_back(b);
                    }
                }
                Some(Transmit::Shutdown) => self.shutdown = true,
                None => break,
            }
        }
        let read = closed || !self.inbound_full();
        self.read_paused = !read;
        if unclean {
            return Pass::FlushAndStop;
        }
        if closed && self.linger.is_none() {
            self.linger = Some(now + self.close_timeout);
        }
        if self.linger.is_some_and(|l| l <= now) {
            return Pass::Stop;
        }
        let deadline = match (self.conn.poll_timeout(), self.linger) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        Pass::Run { read, deadline, shutdown: self.shutdown }
    }

    /// The socket is shut down: the machine learns it (if it did not end by itself), and
    /// [`pop_event`](Self::pop_event) reports `Closed` from now on.
    pub fn finish(&mut self, now: Instant) {
        if self.state() != WsState::Closed {
            self.handle_eof(now);
        }
        // The machine always reports `Closed` by now; never let a receiver hang on it.
        self.closed.get_or_insert_with(|| CloseInfo {
            code: CloseCode::ABNORMAL,
            reason: super::Utf8Bytes::default(),
            initiator: Initiator::Local,
            clean: false,
            error: None,
        });
        self.finished = true;
        self.wakes = Wakes { receivers: true, senders: true, driver: false };
    }

    /// Whom to wake since the last call (and clears it).
    #[must_use]
    pub fn poll_wakes(&mut self) -> Wakes {
        std::mem::take(&mut self.wakes)
    }

    fn is_closed_state(&self) -> bool {
        matches!(self.state(), WsState::Closing | WsState::Closed)
    }

    /// Moves the machine's events to the application's queue.
    fn absorb(&mut self) {
        while let Some(ev) = self.conn.poll_event() {
            match ev {
                WsEvent::Open { subprotocol } => self.opened = Some(subprotocol),
                WsEvent::Message(m) => {
                    self.inbound_bytes += m.len();
                    self.inbound.push_back(WsEvent::Message(m));
                }
                WsEvent::Pong(p) => {
                    self.inbound_bytes += p.len();
                    self.inbound.push_back(WsEvent::Pong(p));
                }
                WsEvent::Closed(info) => {
                    self.closed = Some(info);
                    self.wakes.senders = true;
                }
                // `UpgradeRequested` is answered before an `AppSocket` exists.
                _ => continue,
            }
            self.wakes.receivers = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ws::{Message, WsConfig};

    fn pull(s: &mut AppSocket, now: Instant) -> (Bytes, Pass) {
        let mut out = VecDeque::new();
        let pass = s.poll_pass(now, &mut out, usize::MAX, usize::MAX);
        (out.into_iter().flat_map(|b| b.to_vec()).collect::<Vec<u8>>().into(), pass)
    }

    /// An open client `AppSocket` and its peer server machine.
    fn pair(max_events: usize) -> (AppSocket, WsConnection, Instant) {
        let t0 = crate::time::test_epoch();
        let cfg = WsConfig { rng_seed: [7; 32], ..WsConfig::default() };
        let client = WsConnection::client(cfg.clone(), "example.com", "/", t0).unwrap();
        let mut c = AppSocket::new(client, max_events, 1 << 20, Duration::from_secs(1));
        let mut s = WsConnection::server(cfg, t0);
        s.handle_read(t0, &pull(&mut c, t0).0);
        assert!(matches!(s.poll_event(), Some(WsEvent::UpgradeRequested(_))));
        s.accept(t0, None, &[]).unwrap();
        c.handle_read(t0, &drain(&mut s));
        assert_eq!(c.opened(), Some(None));
        while s.poll_event().is_some() {}
        (c, s, t0)
    }

    pub(super) fn drain(s: &mut WsConnection) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(Transmit::Bytes(b)) = s.poll_transmit() {
            out.extend_from_slice(&b);
        }
        out
    }

    #[test]
    fn a_full_queue_pauses_reads_until_the_application_takes_an_event() {
        let (mut c, mut s, t0) = pair(2);
        for text in ["a", "b"] {
            s.send(t0, Message::text(text)).unwrap();
        }
        c.handle_read(t0, &drain(&mut s));
        assert!(c.poll_wakes().receivers);
        assert!(matches!(pull(&mut c, t0).1, Pass::Run { read: false, .. }));
        assert_eq!(c.pop_event(), Some(WsEvent::Message(Message::text("a"))));
        assert!(c.poll_wakes().driver, "the paused reader is woken");
        assert!(matches!(pull(&mut c, t0).1, Pass::Run { read: true, .. }));
    }

    #[test]
    fn next_message_skips_pongs_and_repeats_the_end() {
        let (mut c, mut s, t0) = pair(8);
        assert_eq!(c.handshake().map(Result::ok), Some(Some(None)), "opened, no subprotocol");
        s.ping(t0, Bytes::from_static(b"p")).unwrap(); // answered by the client's machine
        c.handle_read(t0, &drain(&mut s));
        s.handle_read(t0, &pull(&mut c, t0).0);
        s.send(t0, Message::text("a")).unwrap();
        c.handle_read(t0, &drain(&mut s));
        let pongs = std::iter::from_fn(|| s.poll_event()).filter(|e| matches!(e, WsEvent::Pong(_)));
        assert_eq!(pongs.count(), 1);
        c.command(t0, |conn, now| conn.ping(now, Bytes::new())).unwrap();
        s.handle_read(t0, &pull(&mut c, t0).0);
        c.handle_read(t0, &drain(&mut s)); // the pong, queued after the message
        assert_eq!(c.next_message().map(Result::ok), Some(Some(Message::text("a"))));
        assert!(c.next_message().is_none(), "the pong is skipped");
        c.finish(t0);
        assert!(matches!(c.next_message(), Some(Err(RecvError::Closed(_)))));
        assert!(matches!(c.next_message(), Some(Err(RecvError::Closed(_)))), "and again");
    }

    #[test]
    fn a_handshake_refused_by_the_server_is_a_connect_error() {
        let t0 = crate::time::test_epoch();
        let cfg = WsConfig { rng_seed: [7; 32], ..WsConfig::default() };
        let client = WsConnection::client(cfg.clone(), "example.com", "/", t0).unwrap();
        let mut c = AppSocket::new(client, 8, 1 << 20, Duration::from_secs(1));
        let mut s = WsConnection::server(cfg, t0);
        s.handle_read(t0, &pull(&mut c, t0).0);
        assert!(c.handshake().is_none(), "not decided yet");
        s.reject(t0, 403, &[], b"no").unwrap();
        c.handle_read(t0, &drain(&mut s));
        c.handle_eof(t0);
        let refused = c.handshake().and_then(Result::err);
        assert!(matches!(refused, Some(ConnectError::Handshake(HandshakeError::Status(403)))));
    }

    #[test]
    fn an_upgrade_waits_for_the_decision_and_a_rejection_is_written_within_the_close_timeout() {
        let t0 = crate::time::test_epoch();
        let cfg = WsConfig { rng_seed: [7; 32], ..WsConfig::default() };
        let mut client = WsConnection::client(cfg.clone(), "example.com", "/", t0).unwrap();
        let mut server = WsConnection::server(cfg, t0);
        server.handle_read(t0, &drain(&mut client));
        let mut s = AppSocket::new(server, 8, 1 << 20, Duration::from_secs(1));
        let undecided = Pass::Run { read: false, deadline: None, shutdown: false };
        assert_eq!(pull(&mut s, t0), (Bytes::new(), undecided), "not driven before the decision");
        s.command(t0, |ws, now| ws.reject(now, 403, &[], b"no")).unwrap();
        // Written as a close is, patiently (not one try and stop), until the close timeout.
        let (answer, pass) = pull(&mut s, t0);
        assert!(answer.starts_with(b"HTTP/1.1 403"));
        let linger = Some(t0 + Duration::from_secs(1));
        assert!(matches!(pass, Pass::Run { deadline, .. } if deadline == linger), "{pass:?}");
        assert_eq!(pull(&mut s, t0 + Duration::from_secs(1)).1, Pass::Stop);
    }

    #[test]
    fn closed_is_reported_only_once_the_socket_is_finished() {
        let (mut c, mut s, t0) = pair(8);
        c.command(t0, |conn, now| conn.close(now, CloseCode::NORMAL, "bye")).unwrap();
        assert!(c.is_closed());
        s.handle_read(t0, &pull(&mut c, t0).0);
        c.handle_read(t0, &drain(&mut s));
        assert!(c.close_info().is_some_and(|i| i.clean));
        assert_eq!(c.pop_event(), None, "not before the socket is done");
        let Pass::Run { deadline: Some(linger), .. } = pull(&mut c, t0).1 else { panic!() };
        assert_eq!(pull(&mut c, linger).1, Pass::Stop, "the linger is over");
        c.finish(linger);
        assert!(matches!(c.pop_event(), Some(WsEvent::Closed(i)) if i.code == CloseCode::NORMAL));
        assert!(matches!(c.pop_event(), Some(WsEvent::Closed(_))), "and again");
    }

    #[test]
    fn an_aborted_connection_stops_and_refuses_commands() {
        let (mut c, _s, t0) = pair(8);
        assert!(c.abort());
        let ping = |conn: &mut WsConnection, now| conn.ping(now, Bytes::new());
        assert_eq!(c.command(t0, ping), Err(SendError::Closed));
        assert_eq!(pull(&mut c, t0).1, Pass::Stop);
        c.finish(t0);
        assert!(matches!(c.pop_event(), Some(WsEvent::Closed(i)) if !i.clean));
    }

    #[test]
    fn a_write_stall_ends_the_connection_as_too_slow() {
        let (mut c, _s, t0) = pair(8);
        c.handle_write_stall(t0);
        assert_eq!(pull(&mut c, t0).1, Pass::FlushAndStop);
        let info = c.close_info().unwrap();
        assert_eq!(
            (info.code, info.error),
            (CloseCode::TOO_SLOW, Some(crate::ws::ConnError::SendStalled))
        );
        assert_eq!(c.conn().buffered_amount(), 0);
    }

    #[test]
    fn a_failed_connection_flushes_and_stops_and_a_write_error_drops_bytes() {
        let (mut c, _s, t0) = pair(8);
        c.handle_eof(t0); // the peer vanished: 1006, unclean
        assert_eq!(pull(&mut c, t0).1, Pass::FlushAndStop);
        let (mut c, _s, t0) = pair(8);
        c.handle_write_error(t0);
        c.command(t0, |conn, now| conn.send(now, Message::text("x"))).unwrap_err();
        let (bytes, _) = pull(&mut c, t0);
        assert!(bytes.is_empty());
    }
}
