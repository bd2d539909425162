//! [`WebSocket`] and [`Sender`], over the core's [`AppSocket`] they share with the
//! connection's pump task.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use atomic_waker::AtomicWaker;
use bytes::Bytes;
use event_listener::Event as Notify;
use tidewire::ws::{AppSocket, CloseCode, CloseInfo, Message, SendError, WsConnection};

use crate::outbound::wait;
use crate::{Event, RecvError};

/// Received events, and their payload bytes, queued before the pump stops reading the socket.
const MAX_INBOUND_EVENTS: usize = 256;
const MAX_INBOUND_BYTES: usize = 4 << 20;

/// State shared by the connection's pump task, the [`WebSocket`] and its [`Sender`]s.
pub(crate) struct WsConn {
    sock: Mutex<AppSocket>,
    /// Something for the application: an event, the open, the close.
    pub(crate) inbound: Notify,
    /// The core's outbox has room again (or the connection closed).
    pub(crate) room: Notify,
    /// Something for the driver: bytes queued, the inbound queue drained, an abort.
    pub(crate) wake: DriverWake,
    pub(crate) peer: SocketAddr,
    /// Why the socket was shut down before all that was queued was written (for `reject`).
    pub(crate) cut: OnceLock<io::ErrorKind>,
}

impl WsConn {
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

    /// Wakes whom the last calls on `sock` concern (under the lock, so that no listener misses
    /// it). Returns whether a waiting receiver was woken.
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

    /// `f` on the socket under its lock, then [`wake_up`](Self::wake_up) (whose answer is
    /// the second).
    pub(crate) fn update<T>(&self, f: impl FnOnce(&mut AppSocket) -> T) -> (T, bool) {
        let mut sock = self.lock();
        let out = f(&mut sock);
        (out, self.wake_up(&mut sock))
    }

    /// Runs a command on the core and wakes the driver to write what it queued.
    pub(crate) fn command(
        &self,
        f: impl FnOnce(&mut WsConnection, Instant) -> Result<(), SendError>,
    ) -> Result<(), SendError> {
        self.update(|sock| sock.command(Instant::now(), f)).0
    }

    pub(crate) async fn recv_event(&self) -> Event {
        wait(&self.inbound, || self.update(AppSocket::next_event).0).await
    }
}

/// Wakes a connection's pump task, its only waiter, without allocating: a flag and the
/// task's waker, rung under the lock of what the task pumps.
#[derive(Default)]
pub(crate) struct DriverWake {
    rung: AtomicBool,
    waker: AtomicWaker,
}

impl DriverWake {
    pub(crate) fn notify(&self) {
        self.rung.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Forgets a ring: the pass about to run (under the lock) handles what it was for.
    pub(crate) fn reset(&self) {
        self.rung.store(false, Ordering::Release);
    }

    /// Whether it rang since the last `reset` or ready poll (the ring stays).
    pub(crate) fn is_rung(&self) -> bool {
        self.rung.load(Ordering::Acquire)
    }

    /// Drops the driver's waker (its task ended).
    pub(crate) fn forget(&self) {
        drop(self.waker.take());
    }

    /// Ready once rung since the last `reset` or ready poll.
    pub(crate) fn poll(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.rung.swap(false, Ordering::AcqRel) {
            return Poll::Ready(());
        }
        // Cloned only when the task's waker changed.
        self.waker.register(cx.waker());
        // A ring between the first check and the waker's registration.
        if self.rung.swap(false, Ordering::AcqRel) { Poll::Ready(()) } else { Poll::Pending }
    }
}

/// An open WebSocket, sending as the [`Sender`] it derefs to (as `tidewire-std`'s). Its own
/// task drives it whether or not the application receives; dropping it while open aborts the
/// connection, after [`Sender::close`] the close handshake still completes.
pub struct WebSocket {
    tx: Sender,
    pub(crate) subprotocol: Option<String>,
}

impl WebSocket {
    pub(crate) fn new(shared: Arc<WsConn>, subprotocol: Option<String>) -> Self {
        Self { tx: Sender { shared }, subprotocol }
    }

    /// The next data message, skipping pongs; [`RecvError::Closed`] once the connection ended
    /// and its socket is shut down.
    pub async fn recv(&mut self) -> Result<Message, RecvError> {
        let shared = &self.tx.shared;
        wait(&shared.inbound, || shared.update(AppSocket::next_message).0).await
    }

    /// The next event ([`AppSocket::pop_event`]), waiting for one; [`Event::Closed`] repeats.
    pub async fn recv_event(&mut self) -> Event {
        self.tx.shared.recv_event().await
    }

    /// A handle to send from other tasks and threads.
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
        self.tx.shared.peer
    }

    /// How the connection ended, as soon as the core knows ([`AppSocket::close_info`]).
    #[must_use]
    pub fn close_info(&self) -> Option<CloseInfo> {
        self.tx.shared.lock().close_info().cloned()
    }
}

impl Deref for WebSocket {
    type Target = Sender;

    fn deref(&self) -> &Sender {
        &self.tx
    }
}

impl Drop for WebSocket {
    fn drop(&mut self) {
        self.tx.shared.update(AppSocket::abort);
    }
}

impl fmt::Debug for WebSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebSocket")
            .field("peer", &self.tx.shared.peer)
            .field("subprotocol", &self.subprotocol)
            .finish_non_exhaustive()
    }
}

/// Sends on a [`WebSocket`] from any task or thread (without an executor, wrap `send` in
/// [`smol::block_on`]); cheap to clone. Once the connection ended, every command returns
/// [`SendError::Closed`].
#[derive(Clone)]
pub struct Sender {
    shared: Arc<WsConn>,
}

impl Sender {
    /// Sends a message ([`WsConnection::send`]), waiting while the outbox
    /// (`WsConfig::max_outbound`) is full.
    pub async fn send(&self, msg: impl Into<Message>) -> Result<(), SendError> {
        let mut msg = msg.into();
        loop {
            let listener = {
                let mut sock = self.shared.lock();
                match sock.command(Instant::now(), |conn, now| conn.send(now, msg)) {
                    // Registered under the lock: the driver's notify after it drains the
                    // outbox cannot be missed.
                    Err(SendError::Backpressure(back)) => {
                        msg = back;
                        self.shared.room.listen()
                    }
                    result => {
                        self.shared.wake_up(&mut sock);
                        return result;
                    }
                }
            };
            listener.await;
        }
    }

    /// As [`send`](Self::send) without waiting: [`SendError::Backpressure`] while the outbox
    /// is full.
    pub fn try_send(&self, msg: impl Into<Message>) -> Result<(), SendError> {
        self.shared.command(|conn, now| conn.send(now, msg.into()))
    }

    /// Sends a ping ([`WsConnection::ping`]); its answer arrives as [`Event::Pong`].
    pub fn ping(&self, payload: Bytes) -> Result<(), SendError> {
        self.shared.command(|conn, now| conn.ping(now, payload))
    }

    /// Starts the close handshake ([`WsConnection::close`]); keep receiving until
    /// [`Event::Closed`].
    pub fn close(&self, code: CloseCode, reason: &str) -> Result<(), SendError> {
        self.shared.command(|conn, now| conn.close(now, code, reason))
    }

    /// Whether the connection is closing or closed (nothing more can be sent).
    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.shared.lock().is_closed()
    }

    /// Bytes queued and not yet written ([`WsConnection::buffered_amount`]).
    #[must_use]
    pub fn buffered_amount(&self) -> usize {
        self.shared.lock().conn().buffered_amount()
    }
}

impl fmt::Debug for Sender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender").field("peer", &self.shared.peer).finish_non_exhaustive()
    }
}
