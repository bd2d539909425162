//! One application WebSocket: the core's [`AppSocket`] in its [`Driver`] behind a mutex,
//! pumped by the threads that use it. The receiver ([`Conn::pump_until`]) reads; whoever
//! queued output takes the writer's turn ([`Conn::drive`]); what must not wait goes to a
//! writer thread. The driver decides all that; this is the lock, the condition variables,
//! the writer thread and the system calls.

use std::collections::VecDeque;
use std::io::{self, ErrorKind, IoSlice, Read as _, Write as _};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tidewire::machine::consume;
use tidewire::ws::app::{Driver, DriverConfig, ReadBuf, Turn};
use tidewire::ws::{AppSocket, Message, SendError, UpgradeRequest, WsConnection};

/// The longest a blocked write waits before looking at the clock again.
const PATIENCE: Duration = Duration::from_millis(250);
/// Most chunks written by one `write_vectored` call.
const MAX_IOV: usize = 64;
/// Bytes a writer pulls from its machine before it writes them.
const BATCH: usize = 256 << 10;
/// Received events and payload bytes queued before the receiver stops reading.
const MAX_INBOUND: (usize, usize) = (256, 4 << 20);

/// The connection's state, locked.
type Guard<'a> = MutexGuard<'a, State>;

/// Locks a mutex, ignoring poisoning: every critical section leaves the state consistent.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Waits on `cv` until notified or `until`, ignoring poisoning.
pub(crate) fn wait_until<'a, T>(
    cv: &Condvar,
    guard: MutexGuard<'a, T>,
    until: Option<Instant>,
) -> MutexGuard<'a, T> {
    let Some(until) = until else {
        return cv.wait(guard).unwrap_or_else(std::sync::PoisonError::into_inner);
    };
    let wait = until.saturating_duration_since(Instant::now());
    cv.wait_timeout(guard, wait).map_or_else(|p| p.into_inner().0, |r| r.0)
}

/// Writes the front of `chunks` with one vectored write and drops what it wrote.
pub(crate) fn write_chunks(stream: &TcpStream, chunks: &mut VecDeque<Bytes>) -> io::Result<()> {
    let mut slices = [IoSlice::new(&[]); MAX_IOV];
    let n = chunks.len().min(MAX_IOV);
    for (slot, chunk) in slices.iter_mut().zip(chunks.iter()) {
        *slot = IoSlice::new(chunk);
    }
    let written = match (&*stream).write_vectored(&slices[..n]) {
        Ok(0) => return Err(ErrorKind::WriteZero.into()),
        Ok(written) => written,
        Err(e) if e.kind() == ErrorKind::Interrupted => 0,
        Err(e) => return Err(e),
    };
    consume(chunks, written);
    Ok(())
}

/// The core's driver and the registration, under one mutex.
struct State {
    drv: Driver,
    /// Held until the connection's last thread ends (the server's registry entry).
    registration: Option<Arc<dyn Send + Sync>>,
}

/// One application WebSocket, shared by its `WebSocket`, `Sender`s and writer thread.
pub(crate) struct Conn {
    me: Weak<Conn>,
    /// Shared with the server's registry.
    stream: Arc<TcpStream>,
    pub(crate) peer: SocketAddr,
    state: Mutex<State>,
    /// Wakes senders waiting for room and a receiver waiting for the shutdown.
    cv: Condvar,
    /// Wakes the writer thread.
    wake: Condvar,
}

impl Conn {
    /// Wraps `ws`, returning its upgrade request; `registration` is held until the last thread
    /// ends.
    pub(crate) fn start(
        stream: Arc<TcpStream>,
        peer: SocketAddr,
        ws: WsConnection,
        (send_timeout, close_timeout): (Option<Duration>, Duration),
        registration: Option<Arc<dyn Send + Sync>>,
    ) -> (Arc<Self>, Option<UpgradeRequest>) {
        let batch = (BATCH, MAX_IOV);
        let cfg = DriverConfig { max_inbound: MAX_INBOUND, batch, send_timeout, close_timeout };
        let (drv, request) = Driver::new(ws, cfg);
        let _ = stream.set_write_timeout(Some(PATIENCE));
        let conn = Arc::new_cyclic(|me| Self {
            me: me.clone(),
            stream,
            peer,
            state: Mutex::new(State { drv, registration }),
            cv: Condvar::new(),
            wake: Condvar::new(),
        });
        (conn, request)
    }

    /// Waits on `cv` until `until` (at most [`PATIENCE`]), counted so that nobody notifies
    /// an empty room.
    fn wait<'a>(&'a self, mut st: Guard<'a>, until: Option<Instant>) -> Guard<'a> {
        let patience = Instant::now() + PATIENCE;
        st.drv.add_waiter();
        let mut st = wait_until(&self.cv, st, Some(until.map_or(patience, |d| d.min(patience))));
        st.drv.remove_waiter();
        st
    }

    /// Hands out the core's wakes (and shuts the socket down), after every call on it.
    fn notify(&self, st: &mut State) {
        let wakes = st.drv.poll_wakes();
        if wakes.shut {
            let _ = self.stream.shutdown(Shutdown::Both);
        }
        if wakes.waiters {
            self.cv.notify_all();
        }
        if wakes.writer {
            self.wake.notify_all();
        }
    }

    /// Shuts the socket down; the core learns it and reports `Closed` from now on.
    fn shut(&self, st: &mut State) {
        st.drv.shut(Instant::now());
        self.notify(st);
    }

    /// Runs turns of the core (timers, a batch written outside the lock) until nothing is
    /// left or another thread has the writer's turn: `Wait` or `Done`.
    fn drive<'a>(&'a self, mut st: Guard<'a>) -> (Guard<'a>, Turn) {
        loop {
            let turn = st.drv.begin_turn(Instant::now());
            self.notify(&mut st);
            let Turn::Write { mut batch, patient } = turn else { return (st, turn) };
            drop(st);
            let written = self.write_batch(&mut batch, patient);
            st = lock(&self.state);
            st.drv.end_turn(batch, (!written).then(Instant::now)); // notified after the next turn
        }
    }

    /// Writes `batch` without the lock; `false` when it failed, stalled past `send_timeout`
    /// or the connection ended. Unless `patient`, the first blocked write fails it.
    fn write_batch(&self, batch: &mut VecDeque<Bytes>, patient: bool) -> bool {
        let mut stalled_since = None;
        while !batch.is_empty() {
            match write_chunks(&self.stream, batch) {
                Ok(()) => stalled_since = None,
                Err(e) if patient && is_retry(&e) => {
                    let now = Instant::now();
                    let since = *stalled_since.get_or_insert(now);
                    let mut st = lock(&self.state);
                    let go_on = st.drv.write_blocked(now, since);
                    self.notify(&mut st);
                    if !go_on {
                        return false;
                    }
                }
                Err(_) => return false,
            }
        }
        true
    }

    /// Runs a command on the core and writes what it queued.
    pub(crate) fn with<T>(
        &self,
        f: impl FnOnce(&mut WsConnection, Instant) -> Result<T, SendError>,
    ) -> Result<T, SendError> {
        let mut st = lock(&self.state);
        let out = st.drv.command(Instant::now(), f);
        let (mut st, next) = self.drive(st);
        // A receiver blocked in `read` would miss a deadline the command set (the close
        // handshake's timeout): the writer thread keeps the time for it.
        if let Turn::Wait { until, .. } = next
            && st.drv.reader_misses(until)
        {
            self.wake_writer(&mut st);
        }
        out
    }

    /// Sends a message, waiting while the outbox is full (firing the core's timers meanwhile).
    pub(crate) fn send(&self, mut msg: Message) -> Result<(), SendError> {
        let mut st = lock(&self.state);
        loop {
            match st.drv.command(Instant::now(), |ws, now| ws.send(now, msg)) {
                Err(SendError::Backpressure(back)) => msg = back,
                result => {
                    drop(self.drive(st));
                    return result;
                }
            }
            st = match self.drive(st) {
                (guard, Turn::Wait { until, .. }) if guard.drv.is_writing() => {
                    self.wait(guard, until)
                }
                (guard, _) => guard,
            };
        }
    }

    /// Sends a message if the outbox has room; the writer thread writes it.
    pub(crate) fn try_send(&self, msg: Message) -> Result<(), SendError> {
        let mut st = lock(&self.state);
        let result = st.drv.command(Instant::now(), |ws, now| ws.send(now, msg));
        if !st.drv.is_dropped() {
            self.wake_writer(&mut st);
        }
        result
    }

    /// `f` on the core's driver, for its getters.
    pub(crate) fn inspect<T>(&self, f: impl FnOnce(&Driver) -> T) -> T {
        f(&lock(&self.state).drv)
    }

    /// Shuts the socket down at once.
    pub(crate) fn abort(&self) {
        self.shut(&mut lock(&self.state));
    }

    /// The application let go: commands fail, what is queued is written (within the linger),
    /// then the socket is shut down.
    pub(crate) fn drop_by_app(&self) {
        let mut st = lock(&self.state);
        if st.drv.drop_by_app(Instant::now()) {
            // The writer thread ends the connection once the current turn is over.
            return self.wake_writer(&mut st);
        }
        let (mut st, _) = self.drive(st);
        self.shut(&mut st);
        let registration = st.registration.take();
        drop(st);
        drop(registration);
    }

    /// The server shuts down: an open connection is closed with 1001, a connecting one dropped.
    pub(crate) fn shutdown_by_server(&self) {
        let mut st = lock(&self.state);
        if st.drv.shutdown_by_server(Instant::now()) {
            self.wake_writer(&mut st);
        }
        self.notify(&mut st);
    }

    /// Wakes the writer thread, started on first need; it holds the registration until it ends.
    fn wake_writer(&self, st: &mut State) {
        if !st.drv.start_writer() {
            return self.notify(st);
        }
        let (Some(conn), reg) = (self.me.upgrade(), st.registration.take()) else { return };
        let spawned =
            std::thread::Builder::new().name("tidewire-ws-write".into()).spawn(move || {
                conn.write_loop();
                drop(reg);
            });
        if spawned.is_err() {
            self.shut(st);
        }
    }

    /// The writer thread: writes what others queued, until the socket is shut down.
    fn write_loop(&self) {
        let mut st = lock(&self.state);
        loop {
            let (mut guard, Turn::Wait { until, .. }) = self.drive(st) else { return };
            if guard.drv.lingered() {
                // After a drop: everything queued before it is written.
                return self.shut(&mut guard);
            }
            // Until the core's next deadline: a receiver blocked in `read` may not see it.
            st = wait_until(&self.wake, guard, until);
        }
    }

    /// Drives the connection on the receiving thread until `ready` gives something: turns
    /// of the core, then one read timed out at the core's next deadline.
    pub(crate) fn pump_until<T>(
        &self,
        rd: &mut ReadBuf,
        mut ready: impl FnMut(&mut AppSocket) -> Option<T>,
    ) -> T {
        let mut st = lock(&self.state);
        loop {
            if let Some(v) = ready(st.drv.socket_mut()) {
                self.notify(&mut st);
                return v;
            }
            let (guard, next) = self.drive(st);
            st = guard;
            let Turn::Wait { read, until } = next else { continue }; // `ready` reports the end
            if !st.drv.begin_read(rd, read, until) {
                st = self.wait(st, until);
                continue;
            }
            drop(st);
            rd.rearm(Instant::now(), until, |t| self.stream.set_read_timeout(t).is_ok());
            let got = match (&*self.stream).read(rd.buf()) {
                Ok(n) if n > 0 => Some(n),
                Err(e) if is_retry(&e) => Some(0),
                _ => None,
            };
            st = lock(&self.state);
            st.drv.end_read(Instant::now(), rd, got);
        }
    }
}

/// An `InvalidInput` error: the application's misuse.
pub(crate) fn invalid_input(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(ErrorKind::InvalidInput, e.to_string())
}

/// A read or write that may succeed when tried again.
pub(crate) fn is_retry(e: &io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted)
}
