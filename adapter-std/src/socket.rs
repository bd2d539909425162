//! [`WebSocket`] (the receiving half plus sending) and [`Sender`] (sending from any thread).

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use tidewire::ws::{CloseCode, CloseInfo, Message, SendError, WsEvent};

use crate::conn::{Conn, Reader};

/// What the application receives from [`WebSocket::recv_event`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// A complete data message.
    Message(Message),
    /// A pong arrived (pings from the peer are answered automatically).
    Pong(Bytes),
    /// The connection ended and its socket is shut down. Returned again by every later call.
    Closed(CloseInfo),
}

/// Returned by [`WebSocket::recv`] once the connection ended, on every call.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecvError {
    /// The connection ended: how and why.
    #[error("connection closed (code {})", .0.code)]
    Closed(CloseInfo),
}

/// The socket and read buffer of one connection, which abort it when dropped.
pub(crate) struct Link {
    pub(crate) conn: Arc<Conn>,
    pub(crate) reader: Reader,
}

impl Link {
    /// Drives the connection on this thread until the next event.
    fn next_event(&mut self) -> Event {
        self.conn.pump_until(&mut self.reader, |sock| match sock.pop_event()? {
            WsEvent::Message(m) => Some(Event::Message(m)),
            WsEvent::Pong(p) => Some(Event::Pong(p)),
            WsEvent::Closed(info) => Some(Event::Closed(info)),
            _ => None,
        })
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.conn.drop_by_app();
    }
}

/// An open WebSocket connection: receive with [`recv`](Self::recv) or
/// [`recv_event`](Self::recv_event), send with [`send`](Self::send) (or from other threads
/// through a [`Sender`]).
///
/// # Who drives the connection
///
/// The connection reads, answers pings, fires keepalive and close timeouts and completes
/// the close handshake **only while a thread is inside `recv` or `recv_event`** (or waits
/// in `send`). An application that stops receiving also stops noticing a dead peer; keep
/// one thread in a receive loop for every connection. Commands write on the calling thread
/// (what `try_send` queues, on a writer thread of the connection).
///
/// `send` waits while the outbox (`WsConfig::max_outbound`) is full; if it stays full for
/// `WsConfig::send_timeout` the connection ends with close code 4100
/// (`ConnError::SendStalled`). [`try_send`](Self::try_send) never waits.
///
/// Dropping the `WebSocket` aborts the connection: senders get [`SendError::Closed`], what
/// was queued before is written (within `WsConfig::close_timeout`), then the socket is
/// shut down. Close it properly with [`close`](Self::close), then receive until
/// [`Event::Closed`].
pub struct WebSocket {
    link: Link,
    subprotocol: Option<String>,
}

impl std::fmt::Debug for WebSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebSocket")
            .field("peer", &self.link.conn.peer_addr())
            .field("subprotocol", &self.subprotocol)
            .finish_non_exhaustive()
    }
}

impl WebSocket {
    pub(crate) fn new(link: Link, subprotocol: Option<String>) -> Self {
        Self { link, subprotocol }
    }

    /// Receives the next data message, skipping pongs.
    ///
    /// # Errors
    /// [`RecvError::Closed`] once the connection has ended, on this and every later call.
    pub fn recv(&mut self) -> Result<Message, RecvError> {
        loop {
            match self.recv_event() {
                Event::Message(m) => return Ok(m),
                Event::Pong(_) => {}
                Event::Closed(info) => return Err(RecvError::Closed(info)),
            }
        }
    }

    /// Receives the next event, driving the connection (reading, timers, automatic replies)
    /// until there is one. After [`Event::Closed`] it keeps returning `Closed` with the same
    /// information.
    pub fn recv_event(&mut self) -> Event {
        self.link.next_event()
    }

    /// Sends a message, waiting while the outbox is full.
    ///
    /// # Errors
    /// [`SendError::Closed`] once the connection is closing or closed (also when it ended
    /// while this call waited), [`SendError::TooLarge`] over `WsConfig::max_message`.
    pub fn send(&self, msg: impl Into<Message>) -> Result<(), SendError> {
        self.link.conn.send(msg.into())
    }

    /// Sends a message if the outbox has room, without waiting (the connection's writer
    /// thread writes it).
    ///
    /// # Errors
    /// [`SendError::Backpressure`] with the message handed back when the outbox is full;
    /// otherwise as [`send`](Self::send).
    pub fn try_send(&self, msg: impl Into<Message>) -> Result<(), SendError> {
        self.link.conn.try_send(msg.into())
    }

    /// Sends a ping (payload ≤ 125 bytes); its answer arrives as [`Event::Pong`].
    ///
    /// # Errors
    /// [`SendError::ControlTooLong`] over 125 bytes, [`SendError::Closed`] once closing.
    pub fn ping(&self, payload: Bytes) -> Result<(), SendError> {
        self.link.conn.with(|ws, now| ws.ping(now, payload))
    }

    /// Starts the close handshake. Keep receiving until [`Event::Closed`]: the peer's close
    /// frame (or `WsConfig::close_timeout`) ends the connection.
    ///
    /// # Errors
    /// [`SendError::InvalidCloseCode`] for a code that may not be sent,
    /// [`SendError::ControlTooLong`] for a reason over 123 bytes, [`SendError::Closed`] once
    /// closing.
    pub fn close(&self, code: CloseCode, reason: &str) -> Result<(), SendError> {
        self.link.conn.with(|ws, now| ws.close(now, code, reason))
    }

    /// A handle to send from other threads.
    #[must_use]
    pub fn sender(&self) -> Sender {
        Sender { conn: Arc::clone(&self.link.conn) }
    }

    /// The negotiated subprotocol.
    #[must_use]
    pub fn subprotocol(&self) -> Option<&str> {
        self.subprotocol.as_deref()
    }

    /// The peer's address.
    #[must_use]
    pub fn peer_addr(&self) -> SocketAddr {
        self.link.conn.peer_addr()
    }

    /// How the connection ended, as soon as the core reports it (possibly before
    /// `recv_event` returned [`Event::Closed`]).
    #[must_use]
    pub fn close_info(&self) -> Option<CloseInfo> {
        self.link.conn.close_info()
    }

    /// Bytes queued in the outbox and not yet handed to the socket (bounded by
    /// `WsConfig::max_outbound` plus one message).
    #[must_use]
    pub fn buffered_amount(&self) -> usize {
        self.link.conn.buffered_amount()
    }
}

/// Sends on a connection from any thread. Cheap to clone.
///
/// A `Sender` never drives the reading side: the [`WebSocket`]'s owner must keep receiving.
/// Once the connection ended, every command returns [`SendError::Closed`].
#[derive(Clone)]
pub struct Sender {
    conn: Arc<Conn>,
}

impl std::fmt::Debug for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender").field("peer", &self.conn.peer_addr()).finish_non_exhaustive()
    }
}

impl Sender {
    /// As [`WebSocket::send`].
    ///
    /// # Errors
    /// As [`WebSocket::send`].
    pub fn send(&self, msg: impl Into<Message>) -> Result<(), SendError> {
        self.conn.send(msg.into())
    }

    /// As [`WebSocket::try_send`].
    ///
    /// # Errors
    /// As [`WebSocket::try_send`].
    pub fn try_send(&self, msg: impl Into<Message>) -> Result<(), SendError> {
        self.conn.try_send(msg.into())
    }

    /// As [`WebSocket::ping`].
    ///
    /// # Errors
    /// As [`WebSocket::ping`].
    pub fn ping(&self, payload: Bytes) -> Result<(), SendError> {
        self.conn.with(|ws, now| ws.ping(now, payload))
    }

    /// As [`WebSocket::close`].
    ///
    /// # Errors
    /// As [`WebSocket::close`].
    pub fn close(&self, code: CloseCode, reason: &str) -> Result<(), SendError> {
        self.conn.with(|ws, now| ws.close(now, code, reason))
    }

    /// Whether the connection is closing or closed (nothing more can be sent).
    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.conn.is_closed()
    }

    /// As [`WebSocket::buffered_amount`].
    #[must_use]
    pub fn buffered_amount(&self) -> usize {
        self.conn.buffered_amount()
    }
}
