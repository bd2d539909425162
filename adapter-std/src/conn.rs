//! One application WebSocket: the core's [`AppSocket`] behind a mutex, pumped by the threads
//! that use it. The receiver ([`Conn::pump_until`]) reads; whoever queued output takes the
//! writer's turn ([`Conn::drive`]); what must not wait goes to a writer thread.

use std::collections::VecDeque;
use std::io::{self, ErrorKind, IoSlice, Read as _, Write as _};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use bytes::{Buf as _, Bytes};
use tidewire::Machine as _;
use tidewire::ws::app::Pass;
use tidewire::ws::{
    AppSocket, CloseCode, Message, SendError, UpgradeRequest, WsConnection, WsEvent, WsState,
};

/// The longest a blocked write waits before looking at the clock again.
const PATIENCE: Duration = Duration::from_millis(250);
/// Most chunks written by one `write_vectored` call.
const MAX_IOV: usize = 64;
/// Bytes a writer pulls from its machine before it writes them.
const BATCH: usize = 256 << 10;
/// First size of a read buffer; it doubles (up to its maximum) while reads fill it.
const INITIAL_READ: usize = 4 << 10;
/// Received events and payload bytes queued before the receiver stops reading.
const MAX_INBOUND: (usize, usize) = (256, 4 << 20);

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
    let mut left = match (&*stream).write_vectored(&slices[..n]) {
        Ok(0) => return Err(ErrorKind::WriteZero.into()),
        Ok(written) => written,
        Err(e) if e.kind() == ErrorKind::Interrupted => 0,
        Err(e) => return Err(e),
    };
    while let Some(front) = chunks.front_mut().filter(|_| left > 0) {
        let n = front.len().min(left);
        front.advance(n);
        left -= n;
        if front.is_empty() {
            chunks.pop_front();
        }
    }
    Ok(())
}

/// The core's socket and what the pump keeps beside it, under one mutex.
struct State {
    sock: AppSocket,
    /// Kept between turns to reuse its memory.
    batch: VecDeque<Bytes>,
    /// A thread writes a batch outside the lock.
    writing: bool,
    /// The socket is shut down and the core knows it.
    shut: bool,
    /// The application dropped its `WebSocket`: what is queued is written until then.
    dropped: Option<Instant>,
    waiters: usize,
    /// The writer thread was started.
    writer: bool,
    /// Held until the connection's last thread ends (the server's registry entry).
    registration: Option<Arc<dyn Send + Sync>>,
    /// A receiver is blocked in `read` until this deadline (`None`: no timeout).
    reading: Option<Option<Instant>>,
}

/// The read side, owned by whoever receives.
pub(crate) struct ReadSide {
    /// Allocated on the first read, grown while reads fill it, up to `max`.
    buf: Vec<u8>,
    max: usize,
    /// The socket's read timeout, once set.
    timeout: Option<Option<Duration>>,
    /// The read half ended (EOF or error).
    eof: bool,
}

impl ReadSide {
    pub(crate) fn new(size: usize) -> Self {
        Self { buf: Vec::new(), max: size.max(1024), timeout: None, eof: false }
    }
}

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
    /// `WsConfig::send_timeout` (`AppSocket::handle_write_stall`).
    send_timeout: Option<Duration>,
    /// `WsConfig::close_timeout`: how long a dropped connection may write what is queued.
    linger: Duration,
}

impl Conn {
    /// Wraps `ws`, returning its upgrade request; `registration` is held until the last thread
    /// ends.
    pub(crate) fn start(
        stream: Arc<TcpStream>,
        peer: SocketAddr,
        mut ws: WsConnection,
        timeouts: (Option<Duration>, Duration),
        registration: Option<Arc<dyn Send + Sync>>,
    ) -> (Arc<Self>, Option<UpgradeRequest>) {
        let (send_timeout, linger) = timeouts;
        let mut request = None;
        while let Some(ev) = ws.poll_event() {
            if let WsEvent::UpgradeRequested(r) = ev {
                request = Some(r);
            }
        }
        let state = State {
            sock: AppSocket::new(ws, MAX_INBOUND.0, MAX_INBOUND.1, linger),
            batch: VecDeque::new(),
            writing: false,
            shut: false,
            dropped: None,
            waiters: 0,
            writer: false,
            registration,
            reading: None,
        };
        let _ = stream.set_write_timeout(Some(PATIENCE));
        let conn = Arc::new_cyclic(|me| Self {
            me: me.clone(),
            stream,
            peer,
            state: Mutex::new(state),
            cv: Condvar::new(),
            wake: Condvar::new(),
            send_timeout,
            linger,
        });
        (conn, request)
    }

    /// Waits on `cv`, counted so that nobody notifies an empty room.
    fn wait<'a>(&'a self, mut st: MutexGuard<'a, State>, until: Instant) -> MutexGuard<'a, State> {
        st.waiters += 1;
        let mut st = wait_until(&self.cv, st, Some(until));
        st.waiters -= 1;
        st
    }

    /// Hands out the core's wakes, after every call on the socket.
    fn notify(&self, st: &mut State) {
        let wakes = st.sock.poll_wakes();
        if (wakes.senders || wakes.receivers) && st.waiters > 0 {
            self.cv.notify_all();
        }
    }

    /// Shuts the socket down; the core learns it and reports `Closed` from now on.
    fn shut(&self, st: &mut State) {
        if st.shut {
            return;
        }
        st.shut = true;
        let _ = self.stream.shutdown(Shutdown::Both);
        st.sock.finish(Instant::now());
        st.batch = VecDeque::new();
        self.notify(st);
        self.cv.notify_all();
        self.wake.notify_all();
    }

    /// Runs passes of the core (timers, a batch written outside the lock) until nothing is left
    /// or another thread has the writer's turn; then, unless shut, whether to read and when.
    fn drive<'a>(
        &'a self,
        mut st: MutexGuard<'a, State>,
    ) -> (MutexGuard<'a, State>, Option<(bool, Option<Instant>)>) {
        loop {
            if st.shut {
                return (st, None);
            }
            let now = Instant::now();
            let mut batch = std::mem::take(&mut st.batch);
            let limit = if st.writing { 0 } else { BATCH };
            let pass = st.sock.poll_pass(now, &mut batch, limit, MAX_IOV);
            self.notify(&mut st);
            let (flush, next) = match pass {
                Pass::Run { shutdown: true, .. } if batch.is_empty() && !st.writing => {
                    (false, None)
                }
                Pass::Run { read, deadline, .. } if batch.is_empty() => {
                    st.batch = batch;
                    return (st, Some((read, deadline)));
                }
                Pass::Run { .. } => (true, Some(())),
                Pass::FlushAndStop => (!st.writing, None),
                _ => (false, None),
            };
            if flush && !batch.is_empty() {
                st.writing = true;
                drop(st);
                let written = self.write_batch(&mut batch, next.is_some());
                st = lock(&self.state);
                st.writing = false;
                if !written {
                    st.sock.handle_write_error(Instant::now());
                }
                if st.dropped.is_some() && st.writer {
                    self.wake.notify_all(); // the writer thread ends the connection
                }
            }
            batch.clear();
            st.batch = batch;
            if next.is_none() {
                self.shut(&mut st);
            }
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
                    if self.send_timeout.is_some_and(|t| now >= since + t) {
                        st.sock.handle_write_stall(now); // the next pass shuts it down
                    }
                    if st.dropped.is_some_and(|t| now >= t) {
                        self.shut(&mut st);
                    }
                    // Fires the core's timers; a failed or lingered-out connection is shut.
                    if self.drive(st).1.is_none() {
                        return false;
                    }
                }
                Err(_) => return false,
            }
        }
        true
    }

    /// Runs a command on the core unless the application dropped the connection.
    fn command<T>(
        &self,
        st: &mut State,
        f: impl FnOnce(&mut WsConnection, Instant) -> Result<T, SendError>,
    ) -> Result<T, SendError> {
        if st.dropped.is_some() {
            return Err(SendError::Closed);
        }
        st.sock.command(Instant::now(), f)
    }

    /// Runs a command on the core and writes what it queued.
    pub(crate) fn with<T>(
        &self,
        f: impl FnOnce(&mut WsConnection, Instant) -> Result<T, SendError>,
    ) -> Result<T, SendError> {
        let mut st = lock(&self.state);
        let out = self.command(&mut st, f);
        let (mut st, next) = self.drive(st);
        // A receiver blocked in `read` would miss a deadline the command set (the close
        // handshake's timeout): the writer thread keeps the time for it.
        if let (Some(blocked), Some((_, Some(deadline)))) = (st.reading, next)
            && blocked.is_none_or(|b| deadline < b)
        {
            self.wake_writer(&mut st);
        }
        out
    }

    /// Sends a message, waiting while the outbox is full (firing the core's timers meanwhile).
    pub(crate) fn send(&self, mut msg: Message) -> Result<(), SendError> {
        let mut st = lock(&self.state);
        loop {
            match self.command(&mut st, |ws, now| ws.send(now, msg)) {
                Err(SendError::Backpressure(back)) => msg = back,
                result => {
                    drop(self.drive(st));
                    return result;
                }
            }
            let (guard, next) = self.drive(st);
            st = match next {
                Some((_, deadline)) if guard.writing => {
                    let patience = Instant::now() + PATIENCE;
                    self.wait(guard, deadline.map_or(patience, |d| d.min(patience)))
                }
                _ => guard,
            };
        }
    }

    /// Sends a message if the outbox has room; the writer thread writes it.
    pub(crate) fn try_send(&self, msg: Message) -> Result<(), SendError> {
        let mut st = lock(&self.state);
        let result = self.command(&mut st, |ws, now| ws.send(now, msg));
        if st.dropped.is_none() {
            self.wake_writer(&mut st);
        }
        result
    }

    pub(crate) fn is_closed(&self) -> bool {
        let st = lock(&self.state);
        st.dropped.is_some() || st.sock.is_closed()
    }

    pub(crate) fn close_info(&self) -> Option<tidewire::ws::CloseInfo> {
        lock(&self.state).sock.close_info().cloned()
    }

    pub(crate) fn buffered_amount(&self) -> usize {
        lock(&self.state).sock.conn().buffered_amount()
    }

    /// Shuts the socket down at once.
    pub(crate) fn abort(&self) {
        self.shut(&mut lock(&self.state));
    }

    /// The application let go: commands fail, what is queued is written (within the linger),
    /// then the socket is shut down.
    pub(crate) fn drop_by_app(&self) {
        let mut st = lock(&self.state);
        st.dropped = Some(Instant::now() + self.linger);
        if st.writing || st.writer {
            // The writer thread ends the connection once the current turn is over.
            self.wake_writer(&mut st);
            return;
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
        match st.sock.state() {
            WsState::Open => {
                let close = |ws: &mut WsConnection, now| {
                    ws.close(now, CloseCode::GOING_AWAY, "server shutdown")
                };
                if st.sock.command(Instant::now(), close).is_ok() {
                    self.wake_writer(&mut st);
                }
            }
            WsState::Connecting => self.shut(&mut st),
            _ => {}
        }
    }

    /// Wakes the writer thread, started on first need; it holds the registration until it ends.
    fn wake_writer(&self, st: &mut State) {
        if st.writer {
            self.wake.notify_one();
            return;
        }
        st.writer = true;
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
            let (mut guard, next) = self.drive(st);
            if next.is_none() {
                return;
            }
            if guard.dropped.is_some() && !guard.writing {
                // After a drop: everything queued before it is written.
                self.shut(&mut guard);
                return;
            }
            // Until the core's next deadline: a receiver blocked in `read` may not see it.
            st = wait_until(&self.wake, guard, next.and_then(|(_, deadline)| deadline));
        }
    }

    /// Drives the connection on the receiving thread until `ready` gives something: passes
    /// of the core, then one read timed out at the core's next deadline.
    pub(crate) fn pump_until<T>(
        &self,
        rd: &mut ReadSide,
        mut ready: impl FnMut(&mut AppSocket) -> Option<T>,
    ) -> T {
        let mut st = lock(&self.state);
        loop {
            if let Some(v) = ready(&mut st.sock) {
                self.notify(&mut st);
                return v;
            }
            let (guard, next) = self.drive(st);
            st = guard;
            let Some((read, deadline)) = next else { continue }; // `ready` reports the end
            let now = Instant::now();
            if !read || rd.eof {
                // Nothing to read: the core's deadline (the linger) or a shutdown ends it.
                st = self.wait(st, deadline.unwrap_or(now + PATIENCE));
                continue;
            }
            st.reading = Some(deadline);
            drop(st);
            // Round up: a wake-up just before the deadline would only come back at once.
            let want = deadline.map(|d| (d - now).max(Duration::from_millis(1)));
            // Re-armed only when it would wake too late or far too early.
            let stale = match (rd.timeout, want) {
                (Some(Some(cur)), Some(want)) => cur > want || cur < want / 2,
                (Some(cur), want) => cur != want,
                (None, _) => true,
            };
            if stale && self.stream.set_read_timeout(want).is_ok() {
                rd.timeout = Some(want);
            }
            if rd.buf.is_empty() {
                rd.buf = vec![0; INITIAL_READ.min(rd.max)];
            }
            let result = (&*self.stream).read(&mut rd.buf);
            st = lock(&self.state);
            st.reading = None;
            match result {
                _ if st.shut => {}
                Ok(n) if n > 0 => {
                    st.sock.handle_read(Instant::now(), &rd.buf[..n]);
                    if n == rd.buf.len() && n < rd.max {
                        rd.buf = vec![0; (n * 2).min(rd.max)];
                    }
                }
                Err(e) if is_retry(&e) => {}
                _ => {
                    rd.eof = true;
                    st.sock.handle_eof(Instant::now());
                }
            }
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
