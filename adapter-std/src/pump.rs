//! The socket pump of the core [`Server`](Endpoint), which sits behind one mutex: per
//! connection a reader thread ([`serve`]) and a writer thread ([`write_loop`]), per server a
//! timer thread ([`run_timer`]); each makes one mutation, then [`Core::after`] wakes whom
//! it concerns. The writer pulls again only once the socket took its batch (backpressure).

use std::collections::{HashMap, VecDeque};
use std::io::Read as _;
use std::net::{Shutdown, TcpStream};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tidewire::http::Request;
use tidewire::server::{ConnHandle, Server as Endpoint, ServerEvent};

use crate::conn::{is_retry, lock, wait_until, write_chunks};
use crate::outbound::{Host as _, Table};
use crate::server::Shared;

/// Bytes pulled from the core server for one connection before they are written.
const PULL_BOUND: usize = 256 << 10;
/// How long a closing connection waits for the peer's end after the last response.
pub(crate) const LINGER: Duration = Duration::from_secs(2);

/// The core server and what the adapter keeps beside it, under one mutex.
pub(crate) struct Core {
    pub(crate) server: Endpoint,
    /// With Redis: the bus's sockets.
    pub(crate) bus_socks: Table,
    writers: HashMap<ConnHandle, Arc<WriterWake>>,
    /// The deadline the timer thread sleeps until.
    deadline: Option<Instant>,
    /// The timer thread ends.
    pub(crate) stop: bool,
}

impl Core {
    pub(crate) fn new(server: Endpoint) -> Self {
        let bus_socks = Table::default();
        Self { server, bus_socks, writers: HashMap::new(), deadline: None, stop: false }
    }

    /// After every mutation, under the lock: the bus's sockets, the handle's waiters, ready
    /// connections, the timer's deadline.
    pub(crate) fn after(&mut self, shared: &Shared) {
        self.bus_socks.drain(&mut self.server, Instant::now(), &shared.bus);
        if self.server.poll_arrived() {
            shared.event_cv.notify_all();
        }
        while let Some(conn) = self.server.poll_ready() {
            if let Some(wake) = self.writers.get(&conn) {
                wake.update(|f| f.ready = true);
            }
        }
        let next = self.server.poll_timeout();
        if next != self.deadline {
            self.deadline = next;
            shared.timer_cv.notify_all();
        }
    }

    /// Forgets a connection whose socket failed.
    fn lost(&mut self, shared: &Shared, conn: ConnHandle) {
        self.server.handle_lost(Instant::now(), conn);
        self.writer_gone(conn);
        self.after(shared);
    }

    /// Ends `conn`'s writer: the server forgot the connection.
    fn writer_gone(&mut self, conn: ConnHandle) {
        if let Some(wake) = self.writers.remove(&conn) {
            wake.update(|f| f.gone = true);
        }
    }
}

/// The wake-up of one connection's writer.
#[derive(Default)]
struct WriterWake {
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
}

impl WriterWake {
    fn update(&self, f: impl FnOnce(&mut Flags)) {
        f(&mut lock(&self.flags));
        self.cv.notify_all();
    }
}

/// Locks the core.
pub(crate) fn core(shared: &Shared) -> MutexGuard<'_, Core> {
    lock(&shared.core)
}

/// Serves an accepted socket as `conn` through the core server, reading on this thread, with
/// a writer thread (holding `guard`) beside it. A request of the application's goes to
/// `on_request` on this thread meanwhile, with the connection's read turn (whoever reads
/// holds it, so that two threads never feed the core out of order). Returns an upgrade
/// handed over to the application, `None` when the connection ended.
pub(crate) fn serve(
    shared: &Arc<Shared>,
    stream: &Arc<TcpStream>,
    conn: ConnHandle,
    guard: Arc<dyn Send + Sync>,
    mut on_request: impl FnMut(Request, &Arc<Mutex<()>>),
) -> Option<ServerEvent> {
    let wake = Arc::new(WriterWake::default());
    {
        let mut core = core(shared);
        core.writers.insert(conn, Arc::clone(&wake));
        match stream.peer_addr() {
            Ok(peer) => core.server.handle_accept_from(Instant::now(), conn, peer),
            Err(_) => core.server.handle_accept(Instant::now(), conn),
        }
        core.after(shared);
    }
    // Here, not on the writer thread: after an upgrade the application WebSocket keeps it.
    let _ = stream.set_write_timeout(Some(shared.write_timeout));
    let writer = {
        let (shared, stream, wake) = (Arc::clone(shared), Arc::clone(stream), Arc::clone(&wake));
        std::thread::Builder::new()
            .name("tidewire-write".into())
            .spawn(move || write_loop(&shared, &stream, conn, &wake, &guard))
    };
    if writer.is_err() {
        core(shared).lost(shared, conn);
        return None;
    }
    let mut buf = vec![0u8; shared.read_buffer];
    let turn = Arc::new(Mutex::new(()));
    loop {
        let (end, handover) = {
            let _reading = lock(&turn);
            read_once(shared, stream, conn, &mut buf)
        };
        match handover {
            Some(ServerEvent::Request { request, .. }) => on_request(request, &turn),
            Some(upgrade) => return Some(upgrade),
            None => {}
        }
        if end {
            wake.update(|f| f.read_done = true);
            return None;
        }
    }
}

/// One read of `conn`'s socket into the core: whether its read half ended, and what the
/// core handed over (an upgrade's writer ends here).
pub(crate) fn read_once(
    shared: &Shared,
    stream: &TcpStream,
    conn: ConnHandle,
    buf: &mut [u8],
) -> (bool, Option<ServerEvent>) {
    let read = (&*stream).read(buf);
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
        Err(e) if is_retry(&e) => false,
        Err(_) => {
            core.lost(shared, conn);
            true
        }
    };
    core.after(shared);
    let handover = core.server.poll_handover(conn);
    if matches!(handover, Some(ServerEvent::Upgrade { .. })) {
        core.writer_gone(conn);
    }
    (end, handover)
}

/// The writer: pulls what the server has for `conn` while the socket takes it.
fn write_loop(
    shared: &Shared,
    stream: &TcpStream,
    conn: ConnHandle,
    wake: &WriterWake,
    _guard: &Arc<dyn Send + Sync>,
) {
    let mut batch = VecDeque::new();
    loop {
        {
            let mut f = lock(&wake.flags);
            while !f.ready && !f.gone {
                f = wake.cv.wait(f).unwrap_or_else(std::sync::PoisonError::into_inner);
            }
            if f.gone {
                return;
            }
            f.ready = false;
        }
        loop {
            let shutdown = shared.with(|s, now| s.poll_batch(now, conn, &mut batch, PULL_BOUND));
            let pulled = !batch.is_empty();
            if write_all(stream, &mut batch).is_err() {
                core(shared).lost(shared, conn);
                let _ = stream.shutdown(Shutdown::Both);
                return;
            }
            if shutdown {
                core(shared).writer_gone(conn);
                linger_close(stream, wake, shared.is_stopping());
                return;
            }
            if !pulled {
                break;
            }
        }
    }
}

/// Writes every chunk of `batch`.
fn write_all(stream: &TcpStream, batch: &mut VecDeque<Bytes>) -> std::io::Result<()> {
    while !batch.is_empty() {
        write_chunks(stream, batch)?;
    }
    Ok(())
}

/// Sends FIN and waits (at most [`LINGER`], not during a shutdown) for the reader to see the
/// peer's end before closing: unread input would make the close a reset.
fn linger_close(stream: &TcpStream, wake: &WriterWake, stopping: bool) {
    let _ = stream.shutdown(Shutdown::Write);
    let until = Instant::now() + if stopping { Duration::ZERO } else { LINGER };
    let mut f = lock(&wake.flags);
    while !f.read_done && Instant::now() < until {
        f = wait_until(&wake.cv, f, Some(until));
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
