//! [`WebSocket`] (receiving, and sending as the [`Sender`] it derefs to) and [`Sender`].

use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::Arc;

use bytes::Bytes;
use tidewire::ws::app::{Driver, Event, ReadBuf, RecvError};
use tidewire::ws::{AppSocket, CloseCode, CloseInfo, Message, SendError};

use crate::conn::Conn;

/// An open WebSocket, sending as the [`Sender`] it derefs to. It makes progress (reads,
/// pongs, timeouts) only while a thread is in [`recv`](Self::recv) or a waiting `send`.
/// Dropping it ends the connection once what is queued is written (`WsConfig::close_timeout`).
pub struct WebSocket {
    tx: Sender,
    reader: ReadBuf,
    pub(crate) subprotocol: Option<String>,
}

impl std::fmt::Debug for WebSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebSocket")
            .field("peer", &self.peer_addr())
            .field("subprotocol", &self.subprotocol)
            .finish_non_exhaustive()
    }
}

impl WebSocket {
    /// Wraps `conn`, no subprotocol yet; dropping the result aborts the connection.
    pub(crate) fn new(conn: Arc<Conn>, read_buffer: usize) -> Self {
        Self { tx: Sender { conn }, reader: ReadBuf::new(read_buffer), subprotocol: None }
    }

    /// Drives the connection on this thread until `ready` gives something.
    pub(crate) fn pump_until<T>(&mut self, ready: impl FnMut(&mut AppSocket) -> Option<T>) -> T {
        self.tx.conn.pump_until(&mut self.reader, ready)
    }

    /// The next data message, skipping pongs; [`RecvError::Closed`] once the connection ended.
    pub fn recv(&mut self) -> Result<Message, RecvError> {
        self.pump_until(AppSocket::next_message)
    }

    /// The next event, driving the connection until there is one
    /// ([`AppSocket::pop_event`]); [`Event::Closed`] repeats.
    pub fn recv_event(&mut self) -> Event {
        self.pump_until(AppSocket::next_event)
    }

    /// A handle to send from other threads.
    #[must_use]
    pub fn sender(&self) -> Sender {
        self.tx.clone()
    }

    /// The negotiated subprotocol.
    #[must_use]
    pub fn subprotocol(&self) -> Option<&str> {
        self.subprotocol.as_deref()
    }

    /// The peer's address.
    #[must_use]
    pub fn peer_addr(&self) -> SocketAddr {
        self.tx.conn.peer
    }

    /// How the connection ended, as soon as the core knows ([`AppSocket::close_info`]).
    #[must_use]
    pub fn close_info(&self) -> Option<CloseInfo> {
        self.tx.conn.inspect(|drv| drv.socket().close_info().cloned())
    }
}

impl Drop for WebSocket {
    fn drop(&mut self) {
        self.tx.conn.drop_by_app();
    }
}

impl Deref for WebSocket {
    type Target = Sender;

    fn deref(&self) -> &Sender {
        &self.tx
    }
}

/// Sends on a [`WebSocket`] from any thread; cheap to clone. It never drives the reading
/// side. Once the connection ended, every command returns [`SendError::Closed`].
#[derive(Clone)]
pub struct Sender {
    pub(crate) conn: Arc<Conn>,
}

impl std::fmt::Debug for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender").field("peer", &self.conn.peer).finish_non_exhaustive()
    }
}

impl Sender {
    /// Sends a message ([`WsConnection::send`](tidewire::ws::WsConnection::send)), waiting
    /// while the outbox is full; one full for `WsConfig::send_timeout` ends the connection.
    pub fn send(&self, msg: impl Into<Message>) -> Result<(), SendError> {
        self.conn.send(msg.into())
    }

    /// As [`send`](Self::send) without waiting: [`SendError::Backpressure`] while the outbox
    /// is full.
    pub fn try_send(&self, msg: impl Into<Message>) -> Result<(), SendError> {
        self.conn.try_send(msg.into())
    }

    /// Sends a ping ([`WsConnection::ping`](tidewire::ws::WsConnection::ping)); its answer
    /// arrives as [`Event::Pong`].
    pub fn ping(&self, payload: Bytes) -> Result<(), SendError> {
        self.conn.with(|ws, now| ws.ping(now, payload))
    }

    /// Starts the close handshake ([`WsConnection::close`](tidewire::ws::WsConnection::close));
    /// keep receiving until [`Event::Closed`].
    pub fn close(&self, code: CloseCode, reason: &str) -> Result<(), SendError> {
        self.conn.with(|ws, now| ws.close(now, code, reason))
    }

    /// Whether the connection is closing or closed (nothing more can be sent).
    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.conn.inspect(Driver::is_closed)
    }

    /// Bytes queued and not yet written
    /// ([`WsConnection::buffered_amount`](tidewire::ws::WsConnection::buffered_amount)).
    #[must_use]
    pub fn buffered_amount(&self) -> usize {
        self.conn.inspect(|drv| drv.socket().conn().buffered_amount())
    }
}
