//! The application's side of a connection: [`WebSocket`] and [`Sender`], over the core's
//! [`AppSocket`] they share with the connection's task, which pumps its socket (the driver
//! of the core's docs).

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use event_listener::{Event as Notify, listener};
use tidewire::ws::{AppSocket, CloseCode, CloseInfo, Message, SendError, WsConnection, WsEvent};

use crate::{Event, RecvError};

/// Received events queued for the application before the driver stops reading the socket.
const MAX_INBOUND_EVENTS: usize = 256;
/// Received payload bytes queued for the application before the driver stops reading.
const MAX_INBOUND_BYTES: usize = 4 << 20;

/// State shared by the connection's pump task, the [`WebSocket`] and its [`Sender`]s.
pub(crate) struct Shared {
    sock: Mutex<AppSocket>,
    /// Something for the application: an event, the open, the close.
    pub(crate) inbound: Notify,
    /// The core's outbox has room again (or the connection closed).
    pub(crate) room: Notify,
    /// Something for the driver: bytes queued, the inbound queue drained, an abort.
    pub(crate) wake: DriverWake,
    pub(crate) peer: SocketAddr,
    /// Why the socket was shut down before all that was queued was written (what a
    /// rejected upgrade reports).
    pub(crate) cut: OnceLock<io::ErrorKind>,
}

impl Shared {
    pub(crate) fn new(conn: WsConnection, close_timeout: Duration, peer: SocketAddr) -> Self {
        let sock = AppSocket::new(conn, MAX_INBOUND_EVENTS, MAX_INBOUND_BYTES, close_timeout);
        Self {
            sock: Mutex::new(sock),
            inbound: Notify::new(),
            room: Notify::new(),
            wake: DriverWake::default(),
            peer,
            cut: OnceLock::new(),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, AppSocket> {
        self.sock.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Wakes whom the last calls on `sock` concern (call under the lock, so that a listener
    /// registered under it cannot miss it). Returns whether a waiting receiver was woken.
    pub(crate) fn wake_up(&self, sock: &mut AppSocket) -> bool {
        let wakes = sock.poll_wakes();
        if wakes.senders {
            self.room.notify(usize::MAX);
        }
        if wakes.driver {
            self.wake.notify();
        }
        wakes.receivers && self.inbound.notify(usize::MAX) > 0
    }

    /// Runs a command on the core and wakes the driver to write what it queued.
    pub(crate) fn command(
        &self,
        f: impl FnOnce(&mut WsConnection, Instant) -> Result<(), SendError>,
    ) -> Result<(), SendError> {
        let mut sock = self.lock();
        let result = sock.command(Instant::now(), f);
        self.wake_up(&mut sock);
        result
    }

    async fn send(&self, mut msg: Message) -> Result<(), SendError> {
        loop {
            let listener = {
                let mut sock = self.lock();
                match sock.command(Instant::now(), |conn, now| conn.send(now, msg)) {
                    // Registered under the lock: the driver's notify after it drains the
                    // outbox cannot be missed.
                    Err(SendError::Backpressure(back)) => {
                        msg = back;
                        self.room.listen()
                    }
                    result => {
                        self.wake_up(&mut sock);
                        return result;
                    }
                }
            };
            listener.await;
        }
    }

    pub(crate) async fn recv_event(&self) -> Event {
        loop {
            // Registered before the check, in the future itself (no allocation per message):
            // what arrives after the check cannot be missed.
            listener!(self.inbound => arrived);
            {
                let mut sock = self.lock();
                let ev = sock.pop_event();
                self.wake_up(&mut sock);
                match ev {
                    Some(WsEvent::Message(m)) => return Event::Message(m),
                    Some(WsEvent::Pong(p)) => return Event::Pong(p),
                    Some(WsEvent::Closed(info)) => return Event::Closed(info),
                    _ => {}
                }
            }
            arrived.await;
        }
    }
}

/// Wakes a connection's pump task, its only waiter, without allocating: a flag and the
/// task's waker. Rung under the lock of what the task pumps: the [`AppSocket`]'s (by
/// [`Shared::wake_up`]) or the core endpoint's.
#[derive(Default)]
pub(crate) struct DriverWake {
    rung: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl DriverWake {
    pub(crate) fn notify(&self) {
        self.rung.store(true, Ordering::Release);
        let waker = self.waker.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Forgets a ring: the driver's pass about to run (under the lock) handles what it was
    /// for.
    pub(crate) fn reset(&self) {
        self.rung.store(false, Ordering::Release);
    }

    /// Whether it rang since the last `reset` or ready poll (the ring stays).
    pub(crate) fn is_rung(&self) -> bool {
        self.rung.load(Ordering::Acquire)
    }

    /// Drops the driver's waker (its task ended).
    pub(crate) fn forget(&self) {
        drop(self.waker.lock().unwrap_or_else(PoisonError::into_inner).take());
    }

    /// Ready once rung since the last `reset` or ready poll.
    pub(crate) fn poll(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.rung.swap(false, Ordering::AcqRel) {
            return Poll::Ready(());
        }
        {
            let mut slot = self.waker.lock().unwrap_or_else(PoisonError::into_inner);
            if !slot.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *slot = Some(cx.waker().clone());
            }
        }
        // A ring between the first check and the waker's registration.
        if self.rung.swap(false, Ordering::AcqRel) { Poll::Ready(()) } else { Poll::Pending }
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
        self.shared.command(|conn, now| conn.send(now, msg.into()))
    }

    /// Sends a ping (payload ≤ 125 bytes); its pong arrives as [`Event::Pong`].
    ///
    /// # Errors
    /// [`SendError::ControlTooLong`] over 125 bytes, [`SendError::Closed`] once closing.
    pub fn ping(&self, payload: Bytes) -> Result<(), SendError> {
        self.shared.command(|conn, now| conn.ping(now, payload))
    }

    /// Starts the close handshake; [`recv`](Self::recv) returns `Closed` when it is done
    /// (or after `WsConfig::close_timeout`).
    ///
    /// # Errors
    /// [`SendError::InvalidCloseCode`] for a code that may not be sent,
    /// [`SendError::ControlTooLong`] for a reason over 123 bytes, [`SendError::Closed`] once
    /// closing.
    pub fn close(&self, code: CloseCode, reason: &str) -> Result<(), SendError> {
        self.shared.command(|conn, now| conn.close(now, code, reason))
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
        self.shared.lock().close_info().cloned()
    }
}

impl Drop for WebSocket {
    fn drop(&mut self) {
        let mut sock = self.shared.lock();
        sock.abort();
        self.shared.wake_up(&mut sock);
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
        self.shared.command(|conn, now| conn.send(now, msg.into()))
    }

    /// As [`WebSocket::ping`].
    ///
    /// # Errors
    /// As [`WebSocket::ping`].
    pub fn ping(&self, payload: Bytes) -> Result<(), SendError> {
        self.shared.command(|conn, now| conn.ping(now, payload))
    }

    /// As [`WebSocket::close`].
    ///
    /// # Errors
    /// As [`WebSocket::close`].
    pub fn close(&self, code: CloseCode, reason: &str) -> Result<(), SendError> {
        self.shared.command(|conn, now| conn.close(now, code, reason))
    }

    /// Whether nothing more can be sent: the close handshake started, the connection ended,
    /// or the `WebSocket` was dropped.
    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.shared.lock().is_closed()
    }
}

impl fmt::Debug for Sender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender").field("peer", &self.shared.peer).finish_non_exhaustive()
    }
}
