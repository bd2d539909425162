//! One application WebSocket (a server's after the upgrade, or a client's): the
//! [`WsConnection`] behind a mutex, driven by the **receiving** thread of
//! [`Conn::next_event`] (reads, timers) and written by whoever holds the writer's turn.
//!
//! Every mutation happens under the state lock and is followed by [`Conn::after_mutation`]
//! (the run loop's step 3). A thread that queued output takes the writer's turn unless
//! another thread has it ([`Conn::write_turn`]): it pulls at most [`BATCH`] bytes under the
//! lock and writes them without it, and the holder pulls again until nothing is left. What
//! must not wait (`try_send`, the server's shutdown, a drop during another thread's turn)
//! goes to a **writer thread**, started on first need.

use std::collections::VecDeque;
use std::io::{self, ErrorKind, IoSlice, Read as _, Write as _};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use bytes::{Buf as _, Bytes};
use tidewire::ws::{
    CloseCode, CloseInfo, ConnError, Initiator, Message, SendError, WsConnection, WsEvent, WsState,
};
use tidewire::{Machine as _, Transmit};

/// The longest a blocked write or a wait sleeps before it looks at the clock again.
const PATIENCE: Duration = Duration::from_millis(250);
/// Most chunks written by one `write_vectored` call.
const MAX_IOV: usize = 64;
/// Bytes a writer pulls from its machine before it writes them.
const BATCH: usize = 256 << 10;

/// Locks a mutex, ignoring poisoning: every critical section leaves the state consistent.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Waits on `cv` until notified or `until` (without one, until notified), ignoring poisoning.
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

/// Writes the front of `chunks` with one vectored write, drops what it wrote and says how
/// many bytes that was.
pub(crate) fn write_chunks(stream: &TcpStream, chunks: &mut VecDeque<Bytes>) -> io::Result<usize> {
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
    let mut left = written;
    while left > 0 {
        let Some(front) = chunks.front_mut() else { break };
        if front.len() <= left {
            left -= front.len();
            chunks.pop_front();
        } else {
            front.advance(left);
            left = 0;
        }
    }
    Ok(written)
}

/// Pulls transmits into `batch` up to [`BATCH`] bytes: the bytes pulled, and whether a
/// `Transmit::Shutdown` came (nothing is pulled after it).
pub(crate) fn pull(
    batch: &mut VecDeque<Bytes>,
    mut next: impl FnMut() -> Option<Transmit>,
) -> (usize, bool) {
    let mut bytes = 0;
    while bytes < BATCH {
        match next() {
            Some(Transmit::Bytes(b)) if b.is_empty() => {}
            Some(Transmit::Bytes(b)) => {
                bytes += b.len();
                batch.push_back(b);
            }
            Some(_) => return (bytes, true),
            None => break,
        }
    }
    (bytes, false)
}

/// The machine and what the connection keeps beside it, under one mutex.
struct State {
    ws: WsConnection,
    events: VecDeque<WsEvent>,
    close_info: Option<CloseInfo>,
    closed_delivered: bool,
    /// The socket has been shut down: nothing more is read or written.
    shut: bool,
    /// The writer is writing a batch outside the lock.
    writing: bool,
    /// The application dropped its `WebSocket`: commands fail, the writer writes what is
    /// queued and then shuts the socket down.
    dropped: bool,
    /// After the machine closed (or was dropped): the last moment to finish writing before
    /// the socket is shut down regardless.
    linger_until: Option<Instant>,
    /// The writer thread was started (on first need: `try_send`, the server's shutdown, a
    /// drop while another thread writes).
    writer_started: bool,
    /// Held until the connection's last thread ends (the server's registry entry).
    keep: Option<Arc<dyn Send + Sync>>,
}

/// The read side, owned by whoever receives (the connection thread, then the `WebSocket`).
pub(crate) struct Reader {
    buf: Box<[u8]>,
    timeout: Option<Option<Duration>>,
    /// The socket's read half ended (EOF or error): never read again.
    eof: bool,
}

impl Reader {
    pub(crate) fn new(size: usize) -> Self {
        Self { buf: vec![0; size.max(1024)].into_boxed_slice(), timeout: None, eof: false }
    }
}

pub(crate) struct Conn {
    me: Weak<Conn>,
    /// Shared with the server's registry, which shuts it down on `ServerHandle::shutdown`.
    stream: Arc<TcpStream>,
    peer: SocketAddr,
    state: Mutex<State>,
    /// Wakes senders waiting for room and a receiver waiting for the socket to shut down.
    cv: Condvar,
    /// Wakes the writer thread: output queued by a thread that does not write it, the end.
    wake: Condvar,
    /// `WsConfig::send_timeout`: a write that makes no progress this long ends the
    /// connection, like the core's own send-stall timer (which only sees the outbox).
    send_timeout: Option<Duration>,
    /// `WsConfig::close_timeout`: after the machine closed, the time left to write the last
    /// bytes (close frame, error response) before the socket is shut down regardless.
    linger: Duration,
}

impl Conn {
    /// Wraps `ws`; `keep` is held until the connection's last thread ends.
    pub(crate) fn start(
        stream: Arc<TcpStream>,
        peer: SocketAddr,
        ws: WsConnection,
        timeouts: (Option<Duration>, Duration),
        keep: Option<Arc<dyn Send + Sync>>,
    ) -> Arc<Self> {
        let (send_timeout, linger) = timeouts;
        let state = State {
            ws,
            events: VecDeque::new(),
            close_info: None,
            closed_delivered: false,
            shut: false,
            writing: false,
            dropped: false,
            linger_until: None,
            writer_started: false,
            keep,
        };
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
        let _ = conn.stream.set_write_timeout(Some(PATIENCE));
        conn.with(|_, _| Ok(())).ok();
        conn
    }

    /// Wakes the writer thread, started on first need; it holds `keep` until it ends.
    fn wake_writer(&self, st: &mut State) {
        if st.writer_started {
            self.wake.notify_one();
            return;
        }
        st.writer_started = true;
        let (Some(conn), keep) = (self.me.upgrade(), st.keep.take()) else { return };
        let spawned =
            std::thread::Builder::new().name("tidewire-ws-write".into()).spawn(move || {
                conn.write_loop();
                drop(keep);
            });
        if spawned.is_err() {
            self.abort_locked(st);
        }
    }

    pub(crate) fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    fn lock_state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Call after every mutation of the machine, still under the state lock: drains its
    /// events (step 3 of the run loop) and wakes the writer.
    fn after_mutation(&self, st: &mut State, now: Instant) {
        while let Some(ev) = st.ws.poll_event() {
            if let WsEvent::Closed(info) = &ev {
                if !info.clean && st.writing {
                    // The machine gave up on the peer while a write may be stuck: end it.
                    st.linger_until = Some(now);
                } else {
                    st.linger_until = Some(now + self.linger);
                }
                st.close_info = Some(info.clone());
            }
            st.events.push_back(ev);
        }
        if st.linger_until.is_some_and(|t| t <= now) && st.writing {
            self.abort_locked(st);
        }
    }

    /// Runs a command on the machine and writes what it queued.
    pub(crate) fn with<T>(
        &self,
        f: impl FnOnce(&mut WsConnection, Instant) -> Result<T, SendError>,
    ) -> Result<T, SendError> {
        let mut st = self.lock_state();
        if st.dropped {
            return Err(SendError::Closed);
        }
        let now = Instant::now();
        let out = f(&mut st.ws, now);
        self.after_mutation(&mut st, now);
        self.flush(st);
        out
    }

    /// Sends a message, waiting while the outbox is full.
    pub(crate) fn send(&self, mut msg: Message) -> Result<(), SendError> {
        let mut batch = VecDeque::new();
        let mut st = self.lock_state();
        loop {
            if st.dropped {
                return Err(SendError::Closed);
            }
            let now = Instant::now();
            match st.ws.send(now, msg) {
                Err(SendError::Backpressure(back)) => msg = back,
                result => {
                    self.after_mutation(&mut st, now);
                    self.flush(st);
                    return result;
                }
            }
            // Nobody may be receiving: fire the machine's timers (the send-stall one).
            let deadline = st.ws.poll_timeout();
            if deadline.is_some_and(|d| d <= now) {
                st.ws.handle_timeout(now);
                self.after_mutation(&mut st, now);
            }
            st = match self.write_turn(st, &mut batch) {
                None => self.lock_state(),
                Some(st) => {
                    let patience = now + PATIENCE;
                    wait_until(&self.cv, st, Some(deadline.map_or(patience, |d| d.min(patience))))
                }
            };
        }
    }

    /// Sends a message if the outbox has room; never waits (the writer thread writes it).
    pub(crate) fn try_send(&self, msg: Message) -> Result<(), SendError> {
        let mut st = self.lock_state();
        if st.dropped {
            return Err(SendError::Closed);
        }
        let now = Instant::now();
        let result = st.ws.send(now, msg);
        self.after_mutation(&mut st, now);
        self.wake_writer(&mut st);
        result
    }

    pub(crate) fn is_closed(&self) -> bool {
        let st = self.lock_state();
        st.dropped || matches!(st.ws.state(), WsState::Closing | WsState::Closed)
    }

    pub(crate) fn close_info(&self) -> Option<CloseInfo> {
        self.lock_state().close_info.clone()
    }

    pub(crate) fn buffered_amount(&self) -> usize {
        self.lock_state().ws.buffered_amount()
    }

    /// Shuts the socket down at once (under the state lock); the machine is closed first if it
    /// was not, so every later command fails with `SendError::Closed`.
    fn abort_locked(&self, st: &mut State) {
        if st.shut {
            return;
        }
        let now = Instant::now();
        st.shut = true;
        if st.ws.state() != WsState::Closed {
            st.ws.handle_eof(now);
            self.after_mutation(st, now);
        }
        let _ = self.stream.shutdown(Shutdown::Both);
        self.cv.notify_all();
        self.wake.notify_all();
    }

    /// Aborts the connection unless its socket is already shut down.
    pub(crate) fn abort(&self) {
        let mut st = self.lock_state();
        self.abort_locked(&mut st);
    }

    /// The application let go of the connection: commands fail from now on, what is queued
    /// is written (within the close timeout), then the socket is shut down.
    pub(crate) fn drop_by_app(&self) {
        let mut st = self.lock_state();
        st.dropped = true;
        let until = Instant::now() + self.linger;
        st.linger_until = Some(st.linger_until.map_or(until, |t| t.min(until)));
        if st.writing || st.writer_started {
            // The writer thread ends the connection once the current turn is over.
            self.wake_writer(&mut st);
            return;
        }
        self.flush(st);
        let mut st = self.lock_state();
        self.abort_locked(&mut st);
        let keep = st.keep.take();
        drop(st);
        drop(keep);
    }

    /// The server is shutting down: an open connection gets a 1001 close frame, one still in
    /// its opening handshake is dropped at once.
    pub(crate) fn shutdown_by_server(&self) {
        let mut st = self.lock_state();
        match st.ws.state() {
            WsState::Open => {
                let now = Instant::now();
                if st.ws.close(now, CloseCode::GOING_AWAY, "server shutdown").is_ok() {
                    self.after_mutation(&mut st, now);
                    self.wake_writer(&mut st);
                }
            }
            WsState::Connecting => self.abort_locked(&mut st),
            _ => {}
        }
    }

    /// Writes what the machine queued on the calling thread, unless another thread has the
    /// writer's turn (which then writes it).
    fn flush<'a>(&'a self, mut st: MutexGuard<'a, State>) {
        let mut batch = VecDeque::new();
        while self.write_turn(st, &mut batch).is_none() {
            st = self.lock_state();
        }
    }

    /// Takes the writer's turn unless another thread has it: pulls a batch under the lock
    /// and writes it without (shutting the socket down after `Transmit::Shutdown` or a
    /// failure). `None` after a turn; the guard back when there was nothing to do.
    fn write_turn<'a>(
        &'a self,
        mut st: MutexGuard<'a, State>,
        batch: &mut VecDeque<Bytes>,
    ) -> Option<MutexGuard<'a, State>> {
        if st.writing || st.shut {
            return Some(st);
        }
        let (bytes, shutdown) = pull(batch, || st.ws.poll_transmit());
        if bytes == 0 && !shutdown {
            return Some(st);
        }
        st.writing = true;
        self.cv.notify_all(); // room in the outbox
        drop(st);
        let ended = self.write_batch(batch);
        let mut st = self.lock_state();
        st.writing = false;
        if ended || shutdown {
            self.abort_locked(&mut st);
        } else if st.dropped {
            self.wake.notify_all(); // the writer thread ends the connection
        }
        None
    }

    /// The writer thread: writes what the receiving thread, `try_send` and the server's
    /// shutdown queue, until the socket is shut down.
    fn write_loop(&self) {
        let mut batch = VecDeque::new();
        let mut st = self.lock_state();
        loop {
            st = match self.write_turn(st, &mut batch) {
                None => self.lock_state(),
                Some(mut st) if st.shut || (st.dropped && !st.writing) => {
                    // After a drop: everything queued before it is written.
                    self.abort_locked(&mut st);
                    return;
                }
                Some(st) => wait_until(&self.wake, st, None),
            };
        }
    }

    /// Writes `batch`; `true` when the connection ended (failed, stalled, lingered out).
    fn write_batch(&self, batch: &mut VecDeque<Bytes>) -> bool {
        let mut stalled_since = None;
        while !batch.is_empty() {
            match write_chunks(&self.stream, batch) {
                Ok(0) => {}
                Ok(_) => stalled_since = None,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    let now = Instant::now();
                    let since = *stalled_since.get_or_insert(now);
                    let mut st = self.lock_state();
                    if st.shut || st.linger_until.is_some_and(|t| now >= t) {
                        self.abort_locked(&mut st);
                        return true;
                    }
                    if st.linger_until.is_none()
                        && self.send_timeout.is_some_and(|t| now >= since + t)
                    {
                        // The peer stopped reading what was already handed to the writer.
                        self.fail_stalled_locked(&mut st, now);
                        self.abort_locked(&mut st);
                        return true;
                    }
                }
                Err(_) => {
                    self.abort();
                    return true;
                }
            }
        }
        false
    }

    /// Ends the machine as the core's send-stall timer does (4100, `ConnError::SendStalled`):
    /// the core cannot see bytes the writer already pulled, so the adapter reports it.
    fn fail_stalled_locked(&self, st: &mut State, now: Instant) {
        if st.ws.state() == WsState::Closed {
            return;
        }
        st.ws.handle_eof(now);
        self.after_mutation(st, now);
        let stalled = CloseInfo {
            code: CloseCode::TOO_SLOW,
            reason: "too slow".into(),
            initiator: Initiator::Local,
            clean: false,
            error: Some(ConnError::SendStalled),
        };
        for ev in &mut st.events {
            if let WsEvent::Closed(info) = ev {
                *info = stalled.clone();
            }
        }
        st.close_info = Some(stalled);
    }

    /// Drives the connection until the machine reports an event and returns it (steps 1–4
    /// of the run loop, on the receiving thread). `Closed` is returned only once the socket
    /// is shut down, and again on every later call.
    pub(crate) fn next_event(&self, rd: &mut Reader) -> WsEvent {
        loop {
            let mut st = self.lock_state();
            let front_is_closed = matches!(st.events.front(), Some(WsEvent::Closed(_)));
            if (!front_is_closed || st.shut)
                && let Some(ev) = st.events.pop_front()
            {
                st.closed_delivered |= front_is_closed;
                return ev;
            }
            if st.closed_delivered || st.shut {
                st.closed_delivered = true;
                return WsEvent::Closed(st.close_info.clone().unwrap_or_else(abnormal));
            }
            let deadline = st.ws.poll_timeout();
            let now = Instant::now();
            if rd.eof || (st.ws.state() == WsState::Closed && deadline.is_none()) {
                // Nothing more to read: the transport ends once the writer is done.
                let until = *st.linger_until.get_or_insert(now + self.linger);
                if now >= until {
                    self.abort_locked(&mut st);
                } else {
                    drop(wait_until(&self.cv, st, Some(until.min(now + PATIENCE))));
                }
                continue;
            }
            if deadline.is_some_and(|d| d <= now) {
                st.ws.handle_timeout(now);
                self.after_mutation(&mut st, now);
                self.flush(st);
                continue;
            }
            drop(st);
            // Round up: a wake-up just before the deadline would only come back at once.
            let timeout = deadline.map(|d| (d - now).max(Duration::from_millis(1)));
            if rd.timeout != Some(timeout) && self.stream.set_read_timeout(timeout).is_ok() {
                rd.timeout = Some(timeout);
            }
            let result = (&*self.stream).read(&mut rd.buf);
            let now = Instant::now();
            let mut st = self.lock_state();
            match result {
                Ok(n) if n > 0 => st.ws.handle_read(now, &rd.buf[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    st.ws.handle_timeout(now);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                _ => {
                    rd.eof = true;
                    st.ws.handle_eof(now);
                }
            }
            self.after_mutation(&mut st, now);
            self.flush(st);
        }
    }
}

/// What a connection reports when it ended without the machine saying why (cannot happen
/// with the current core; kept so a missing `Closed` never hangs a receiver).
fn abnormal() -> CloseInfo {
    CloseInfo {
        code: CloseCode::ABNORMAL,
        reason: Default::default(),
        initiator: Initiator::Local,
        clean: false,
        error: None,
    }
}

/// Maps a core error to `io::Error` (`InvalidInput` for local misuse).
pub(crate) fn io_error(e: &SendError) -> io::Error {
    io::Error::new(ErrorKind::InvalidInput, e.to_string())
}
