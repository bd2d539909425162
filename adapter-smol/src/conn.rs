//! The application's side of a connection: [`WebSocket`] and [`Sender`], and the state they
//! share with the connection's driver task.

use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use bytes::Bytes;
use event_listener::Event as Notify;
use tidewire::Machine;
use tidewire::ws::{CloseCode, CloseInfo, Message, SendError, WsConnection, WsEvent, WsState};

use crate::{Event, RecvError};

/// Received events queued for the application before the driver stops reading the socket.
const MAX_INBOUND_EVENTS: usize = 256;
/// Received payload bytes queued for the application before the driver stops reading.
const MAX_INBOUND_BYTES: usize = 4 << 20;

/// State shared by the driver task, the [`WebSocket`] and its [`Sender`]s.
pub(crate) struct Shared {
    inner: Mutex<Inner>,
    /// Something for the application: an event, the open, the close.
    pub(crate) inbound: Notify,
    /// The core's outbox has room again (or the connection closed).
    pub(crate) room: Notify,
    /// Something for the driver: bytes queued, the inbound queue drained, an abort.
    pub(crate) wake: Notify,
    pub(crate) peer: SocketAddr,
}

/// Guarded by `Shared::inner`; never held across an `.await`.
pub(crate) struct Inner {
    pub(crate) conn: WsConnection,
    inbound: VecDeque<Event>,
    inbound_bytes: usize,
    /// `Some(subprotocol)` once the handshake completed.
    pub(crate) opened: Option<Option<String>>,
    /// Set when the core reported `Closed`.
    pub(crate) closed: Option<CloseInfo>,
    /// The driver stopped reading because the inbound queue is full.
    pub(crate) read_paused: bool,
    /// The `WebSocket` was dropped: abort the connection if it is still open.
    pub(crate) aborted: bool,
    /// The server forces the connection down, whatever its state.
    pub(crate) killed: bool,
    /// The driver is done with the socket (shut down): only now is `Closed` reported.
    pub(crate) finished: bool,
}

impl Inner {
    /// Whether the application's queue is full (the driver then stops reading).
    pub(crate) fn inbound_full(&self) -> bool {
        self.inbound.len() >= MAX_INBOUND_EVENTS || self.inbound_bytes >= MAX_INBOUND_BYTES
    }
}

impl Shared {
    pub(crate) fn new(conn: WsConnection, peer: SocketAddr) -> Self {
        Self {
            inner: Mutex::new(Inner {
                conn,
                inbound: VecDeque::new(),
                inbound_bytes: 0,
                opened: None,
                closed: None,
                read_paused: false,
                aborted: false,
                killed: false,
                finished: false,
            }),
            inbound: Notify::new(),
            room: Notify::new(),
            wake: Notify::new(),
            peer,
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Moves the core's events to the application's queue and wakes whoever waits for them.
    /// Returns whether that woke a waiting receiver.
    pub(crate) fn absorb_events(&self, inner: &mut Inner) -> bool {
        let mut arrived = false;
        let mut closed = false;
        while let Some(ev) = inner.conn.poll_event() {
            match ev {
                WsEvent::Open { subprotocol } => inner.opened = Some(subprotocol),
                WsEvent::Message(m) => {
                    inner.inbound_bytes += m.len();
                    inner.inbound.push_back(Event::Message(m));
                }
                WsEvent::Pong(p) => {
                    inner.inbound_bytes += p.len();
                    inner.inbound.push_back(Event::Pong(p));
                }
                WsEvent::Closed(info) => {
                    inner.closed = Some(info);
                    closed = true;
                }
                // `UpgradeRequested` is handled before a `Shared` exists.
                _ => {}
            }
            arrived = true;
        }
        let woke = arrived && self.inbound.notify(usize::MAX) > 0;
        if closed {
            self.room.notify(usize::MAX);
        }
        woke
    }

    /// Runs a command on the core and wakes the driver to write what it queued.
    fn command(
        &self,
        f: impl FnOnce(&mut WsConnection, Instant) -> Result<(), SendError>,
    ) -> Result<(), SendError> {
        let mut inner = self.lock();
        if inner.aborted || inner.killed {
            return Err(SendError::Closed);
        }
        f(&mut inner.conn, Instant::now())?;
        drop(inner);
        self.wake.notify(1);
        Ok(())
    }

    async fn send(&self, msg: Message) -> Result<(), SendError> {
        let mut msg = msg;
        loop {
            let listener = {
                let mut inner = self.lock();
                if inner.aborted || inner.killed {
                    return Err(SendError::Closed);
                }
                match inner.conn.send(Instant::now(), msg) {
                    Ok(()) => {
                        drop(inner);
                        self.wake.notify(1);
                        return Ok(());
                    }
                    Err(SendError::Backpressure(back)) => {
                        msg = back;
                        // Registered under the lock: the driver's notify after it drains the
                        // outbox cannot be missed.
                        self.room.listen()
                    }
                    Err(e) => return Err(e),
                }
            };
            listener.await;
        }
    }

    fn try_send(&self, msg: Message) -> Result<(), SendError> {
        self.command(|conn, now| conn.send(now, msg))
    }

    fn ping(&self, payload: Bytes) -> Result<(), SendError> {
        self.command(|conn, now| conn.ping(now, payload))
    }

    fn close(&self, code: CloseCode, reason: &str) -> Result<(), SendError> {
        self.command(|conn, now| conn.close(now, code, reason))
    }

    fn is_closed(&self) -> bool {
        let inner = self.lock();
        inner.aborted
            || inner.killed
            || matches!(inner.conn.state(), WsState::Closing | WsState::Closed)
    }

    async fn recv_event(&self) -> Event {
        loop {
            let listener = {
                let mut inner = self.lock();
                if let Some(ev) = inner.inbound.pop_front() {
                    if let Event::Message(m) = &ev {
                        inner.inbound_bytes -= m.len();
                    } else if let Event::Pong(p) = &ev {
                        inner.inbound_bytes -= p.len();
                    }
                    let resume = inner.read_paused && !inner.inbound_full();
                    drop(inner);
                    if resume {
                        self.wake.notify(1);
                    }
                    return ev;
                }
                // `Closed` once the driver is done with the socket: a client has then seen the
                // server's end of TCP (or waited `close_timeout` for it).
                if inner.finished
                    && let Some(info) = &inner.closed
                {
                    return Event::Closed(info.clone());
                }
                self.inbound.listen()
            };
            listener.await;
        }
    }
}

/// An open WebSocket connection: receive with [`recv`](Self::recv) /
/// [`recv_event`](Self::recv_event), send with [`send`](Self::send) /
/// [`try_send`](Self::try_send), hand out [`Sender`]s for other tasks and threads.
///
/// The connection is driven by its own task, whether or not the application is receiving.
/// Dropping the `WebSocket` while the connection is open aborts it (the socket is shut down
/// without a close handshake; senders get [`SendError::Closed`]); after
/// [`close`](Self::close) the dropped connection still completes its close handshake.
pub struct WebSocket {
    shared: Arc<Shared>,
    subprotocol: Option<String>,
}

impl WebSocket {
    pub(crate) fn new(shared: Arc<Shared>, subprotocol: Option<String>) -> Self {
        Self { shared, subprotocol }
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    pub(crate) fn set_subprotocol(&mut self, subprotocol: Option<String>) {
        self.subprotocol = subprotocol;
    }

    /// The next data message, skipping pongs. Waits until one arrives.
    ///
    /// # Errors
    /// [`RecvError::Closed`] once the connection has ended and its socket is shut down (a
    /// client after a clean close waits for the server to end TCP first, at most
    /// `WsConfig::close_timeout`), on this and every later call.
    pub async fn recv(&mut self) -> Result<Message, RecvError> {
        loop {
            match self.shared.recv_event().await {
                Event::Message(m) => return Ok(m),
                Event::Closed(info) => return Err(RecvError::Closed(info)),
                _ => {}
            }
        }
    }

    /// The next event: a message, a pong, or the close (once the socket is shut down, as
    /// for [`recv`](Self::recv)). After `Closed` it returns `Closed` with the same info on
    /// every call.
    pub async fn recv_event(&mut self) -> Event {
        self.shared.recv_event().await
    }

    /// Sends a message, waiting while the outbox (`WsConfig::max_outbound`) is full.
    ///
    /// # Errors
    /// [`SendError::Closed`] once the connection is closing or closed,
    /// [`SendError::TooLarge`] over `max_message`.
    pub async fn send(&self, msg: impl Into<Message>) -> Result<(), SendError> {
        self.shared.send(msg.into()).await
    }

    /// Sends a message if the outbox has room.
    ///
    /// # Errors
    /// [`SendError::Backpressure`] with the message handed back when the outbox is full;
    /// otherwise as [`send`](Self::send).
    pub fn try_send(&self, msg: impl Into<Message>) -> Result<(), SendError> {
        self.shared.try_send(msg.into())
    }

    /// Sends a ping (payload ≤ 125 bytes); its pong arrives as [`Event::Pong`].
    ///
    /// # Errors
    /// [`SendError::ControlTooLong`] over 125 bytes, [`SendError::Closed`] once closing.
    pub fn ping(&self, payload: Bytes) -> Result<(), SendError> {
        self.shared.ping(payload)
    }

    /// Starts the close handshake; [`recv`](Self::recv) returns `Closed` when it is done
    /// (or after `WsConfig::close_timeout`).
    ///
    /// # Errors
    /// [`SendError::InvalidCloseCode`] for a code that may not be sent,
    /// [`SendError::ControlTooLong`] for a reason over 123 bytes, [`SendError::Closed`] once
    /// closing.
    pub fn close(&self, code: CloseCode, reason: &str) -> Result<(), SendError> {
        self.shared.close(code, reason)
    }

    /// A cloneable sending half for other tasks or threads.
    #[must_use]
    pub fn sender(&self) -> Sender {
        Sender { shared: self.shared.clone() }
    }

    /// The negotiated subprotocol.
    #[must_use]
    pub fn subprotocol(&self) -> Option<&str> {
        self.subprotocol.as_deref()
    }

    /// The peer's address.
    #[must_use]
    pub fn peer_addr(&self) -> SocketAddr {
        self.shared.peer
    }

    /// How the connection ended, once it has (even before `recv` reported it).
    #[must_use]
    pub fn close_info(&self) -> Option<CloseInfo> {
        self.shared.lock().closed.clone()
    }
}

impl Drop for WebSocket {
    fn drop(&mut self) {
        let mut inner = self.shared.lock();
        if matches!(inner.conn.state(), WsState::Connecting | WsState::Open) {
            inner.aborted = true;
            drop(inner);
            self.shared.wake.notify(1);
        }
    }
}

impl fmt::Debug for WebSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebSocket")
            .field("peer", &self.shared.peer)
            .field("subprotocol", &self.subprotocol)
            .finish_non_exhaustive()
    }
}

/// The sending half of a [`WebSocket`]: `Clone + Send + Sync`, usable from any task or
/// thread (from a thread without an executor, wrap the `async` calls in
/// [`smol::block_on`]).
#[derive(Clone)]
pub struct Sender {
    shared: Arc<Shared>,
}

impl Sender {
    /// As [`WebSocket::send`]: waits while the outbox is full.
    ///
    /// # Errors
    /// As [`WebSocket::send`].
    pub async fn send(&self, msg: impl Into<Message>) -> Result<(), SendError> {
        self.shared.send(msg.into()).await
    }

    /// As [`WebSocket::try_send`].
    ///
    /// # Errors
    /// As [`WebSocket::try_send`].
    pub fn try_send(&self, msg: impl Into<Message>) -> Result<(), SendError> {
        self.shared.try_send(msg.into())
    }

    /// As [`WebSocket::ping`].
    ///
    /// # Errors
    /// As [`WebSocket::ping`].
    pub fn ping(&self, payload: Bytes) -> Result<(), SendError> {
        self.shared.ping(payload)
    }

    /// As [`WebSocket::close`].
    ///
    /// # Errors
    /// As [`WebSocket::close`].
    pub fn close(&self, code: CloseCode, reason: &str) -> Result<(), SendError> {
        self.shared.close(code, reason)
    }

    /// Whether nothing more can be sent: the close handshake started, the connection ended,
    /// or the `WebSocket` was dropped.
    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.shared.is_closed()
    }
}

impl fmt::Debug for Sender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender").field("peer", &self.shared.peer).finish_non_exhaustive()
    }
}
