//! The socket pump: the core [`Server`](tidewire::server::Server) behind one mutex, a reader
//! and a writer thread per connection it serves, and one timer thread. Each makes **one**
//! mutation under the lock, then [`Core::after`] drains the server's outputs: events (a
//! hand-over to the connection's slot, the rest to the queue of
//! [`ServerHandle::next_event`](crate::ServerHandle::next_event)), ready connections (their
//! writers woken) and the deadline (the timer woken).
//!
//! - The **reader** blocks in `read` and feeds the server; on a hand-over it returns it, and
//!   the same thread runs the application's handler.
//! - The **writer** waits until the server names its connection ready, pulls up to
//!   256 KiB under the lock and writes them without it; it pulls again only once the
//!   socket took them (one backpressure chain: socket, transport, hub outbox). A write
//!   stalled for `WsConfig::send_timeout` (30 s without one) loses the connection. On
//!   `Transmit::Shutdown` it half-closes and lingers for the peer's end (see [`LINGER`]).
//! - The **timer** sleeps until `poll_timeout` and fires `handle_timeout` once it is due.

use std::collections::{HashMap, VecDeque};
use std::io::{ErrorKind, Read as _};
use std::net::{Shutdown, TcpStream};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tidewire::hub::{BusToken, HubError, HubEvent};
use tidewire::replay::Position;
use tidewire::server::{ConnHandle, Server as Endpoint, ServerEvent};

use crate::conn::{lock, pull, wait_until, write_chunks};
use crate::server::Shared;

/// How long a closing connection waits for the peer's end after the last response.
const LINGER: Duration = Duration::from_secs(2);
/// A write with no progress this long loses the connection, without `WsConfig::send_timeout`.
const STALL: Duration = Duration::from_secs(30);

/// The core server and what the adapter keeps beside it, under one mutex.
pub(crate) struct Core {
    pub(crate) server: Endpoint,
    slots: HashMap<ConnHandle, Arc<Slot>>,
    events: VecDeque<ServerEvent>,
    max_events: usize,
    /// With Redis: answers of submitted publishes not yet picked up.
    submits: HashMap<BusToken, Result<Position, HubError>>,
    /// The deadline the timer thread sleeps until.
    deadline: Option<Instant>,
    next_conn: u64,
    /// The timer thread ends.
    pub(crate) stop: bool,
}

impl Core {
    pub(crate) fn new(server: Endpoint) -> Self {
        let max_events = server.config().max_events.max(1);
        Self {
            server,
            slots: HashMap::new(),
            events: VecDeque::new(),
            max_events,
            submits: HashMap::new(),
            deadline: None,
            next_conn: 0,
            stop: false,
        }
    }

    /// Step 3 of the run loop, after every mutation, under the lock: the bus's sockets
    /// (see [`crate::outbound`]), events, ready connections, the deadline.
    pub(crate) fn after(&mut self, shared: &Shared) {
        crate::outbound::drain(shared, &mut self.server, Instant::now());
        while let Some(ev) = self.server.poll_event() {
            match ev {
                ServerEvent::Upgrade { conn, .. } | ServerEvent::Request { conn, .. } => {
                    // No slot: the socket is gone, and the event (and connection) with it.
                    if let Some(slot) = self.slots.remove(&conn) {
                        slot.update(|f| {
                            f.handover = Some(ev);
                            f.gone = true;
                        });
                    }
                }
                ServerEvent::Hub(HubEvent::Submitted { token, result }) => {
                    self.submits.insert(token, result);
                    shared.event_cv.notify_all();
                }
                ev => {
                    if self.events.len() >= self.max_events {
                        self.events.pop_front();
                    }
                    self.events.push_back(ev);
                    shared.event_cv.notify_all();
                }
            }
        }
        while let Some(conn) = self.server.poll_ready() {
            if let Some(slot) = self.slots.get(&conn) {
                slot.update(|f| f.ready = true);
            }
        }
        let next = self.server.poll_timeout();
        if next != self.deadline {
            self.deadline = next;
            shared.timer_cv.notify_all();
        }
    }

    pub(crate) fn pop_event(&mut self) -> Option<ServerEvent> {
        self.events.pop_front()
    }

    pub(crate) fn take_submit(&mut self, token: BusToken) -> Option<Result<Position, HubError>> {
        self.submits.remove(&token)
    }

    /// Forgets a connection whose socket failed.
    fn lost(&mut self, shared: &Shared, conn: ConnHandle) {
        self.server.handle_lost(Instant::now(), conn);
        if let Some(slot) = self.slots.remove(&conn) {
            slot.update(|f| f.gone = true);
        }
        self.after(shared);
    }
}

/// The wake-up of one connection's writer, set under the core lock.
#[derive(Default)]
struct Slot {
    flags: Mutex<Flags>,
    cv: Condvar,
}

#[derive(Default)]
struct Flags {
    /// The server named the connection in `poll_ready`.
    ready: bool,
    /// The server forgot the connection (lost, or handed over): the writer ends.
    gone: bool,
    /// The reader stopped reading.
    read_done: bool,
    /// The connection left the server for the application.
    handover: Option<ServerEvent>,
}

impl Slot {
    fn update(&self, f: impl FnOnce(&mut Flags)) {
        f(&mut lock(&self.flags));
        self.cv.notify_all();
    }

    fn flags(&self) -> MutexGuard<'_, Flags> {
        lock(&self.flags)
    }
}

/// Locks the core.
pub(crate) fn core(shared: &Shared) -> MutexGuard<'_, Core> {
    lock(&shared.core)
}

/// Serves an accepted socket through the core server on the calling thread (the reader),
/// with a writer thread beside it. Returns the hand-over when the server gives the
/// connection to the application, `None` when it ended.
pub(crate) fn run(
    shared: &Arc<Shared>,
    stream: &Arc<TcpStream>,
    guard: Arc<dyn Send + Sync>,
) -> Option<ServerEvent> {
    let slot = Arc::new(Slot::default());
    let conn = {
        let mut core = core(shared);
        let conn = ConnHandle(core.next_conn);
        core.next_conn += 1;
        core.slots.insert(conn, Arc::clone(&slot));
        match stream.peer_addr() {
            Ok(peer) => core.server.handle_accept_from(Instant::now(), conn, peer),
            Err(_) => core.server.handle_accept(Instant::now(), conn),
        }
        core.after(shared);
        conn
    };
    // Set here, not on the writer thread: after a hand-over the application's driver owns
    // the socket's timeouts, and a late writer thread must not overwrite them.
    let stall = shared.stall.unwrap_or(STALL).max(Duration::from_millis(1));
    let _ = stream.set_write_timeout(Some(stall));
    let writer = {
        let (shared, stream, slot) = (Arc::clone(shared), Arc::clone(stream), Arc::clone(&slot));
        std::thread::Builder::new()
            .name("tidewire-write".into())
            .spawn(move || write_loop(&shared, &stream, conn, &slot, &guard))
    };
    if writer.is_err() {
        core(shared).lost(shared, conn);
        return None;
    }
    let mut buf = vec![0u8; shared.read_buffer];
    loop {
        let read = (&**stream).read(&mut buf);
        let now = Instant::now();
        let mut core = core(shared);
        let end = match read {
            Ok(0) => {
                core.server.handle_eof(now, conn);
                true
            }
            Ok(n) => {
                core.server.handle_read(now, conn, &buf[..n]);
                false
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => {
                core.lost(shared, conn);
                true
            }
        };
        core.after(shared);
        drop(core);
        let mut f = slot.flags();
        if let Some(ev) = f.handover.take() {
            return Some(ev);
        }
        if end {
            f.read_done = true;
            drop(f);
            slot.cv.notify_all();
            return None;
        }
    }
}

/// The writer: pulls what the server has for `conn` while the socket takes it.
fn write_loop(
    shared: &Shared,
    stream: &TcpStream,
    conn: ConnHandle,
    slot: &Slot,
    _guard: &Arc<dyn Send + Sync>,
) {
    let mut batch = VecDeque::new();
    loop {
        {
            let mut f = slot.flags();
            while !f.ready && !f.gone {
                f = slot.cv.wait(f).unwrap_or_else(std::sync::PoisonError::into_inner);
            }
            if f.gone {
                return;
            }
            f.ready = false;
        }
        loop {
            let (bytes, shutdown) = {
                let mut core = core(shared);
                let now = Instant::now();
                let pulled = pull(&mut batch, || core.server.poll_transmit(now, conn));
                core.after(shared);
                pulled
            };
            if write_all(stream, &mut batch).is_err() {
                core(shared).lost(shared, conn);
                let _ = stream.shutdown(Shutdown::Both);
                return;
            }
            if shutdown {
                if let Some(slot) = core(shared).slots.remove(&conn) {
                    slot.update(|f| f.gone = true);
                }
                linger_close(stream, slot, shared.is_stopping());
                return;
            }
            if bytes == 0 {
                break;
            }
        }
    }
}

/// Writes every chunk of `batch`; an error (a stalled write included) loses the socket.
fn write_all(stream: &TcpStream, batch: &mut VecDeque<Bytes>) -> std::io::Result<()> {
    while !batch.is_empty() {
        write_chunks(stream, batch)?;
    }
    Ok(())
}

/// Sends FIN, waits (at most [`LINGER`], not at all during a shutdown) for the reader to
/// see the peer's end, then closes: closing with unread input sends a reset, which can
/// destroy the response unread.
fn linger_close(stream: &TcpStream, slot: &Slot, stopping: bool) {
    let _ = stream.shutdown(Shutdown::Write);
    let until = Instant::now() + if stopping { Duration::ZERO } else { LINGER };
    let mut f = slot.flags();
    while !f.read_done {
        let now = Instant::now();
        if now >= until {
            break;
        }
        f = wait_until(&slot.cv, f, Some(until));
    }
    drop(f);
    let _ = stream.shutdown(Shutdown::Both);
}

/// The timer thread: sleeps until the server's deadline, then fires it.
pub(crate) fn run_timer(shared: &Shared) {
    let mut core = core(shared);
    loop {
        if core.stop {
            return;
        }
        let now = Instant::now();
        if core.deadline.is_some_and(|d| d <= now) {
            core.server.handle_timeout(now);
            core.after(shared);
        }
        // A deadline the call did not move: look again in a moment rather than spin.
        let until = core.deadline.map(|d| d.max(now + Duration::from_millis(1)));
        core = wait_until(&shared.timer_cv, core, until);
    }
}
