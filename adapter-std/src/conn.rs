//! One connection shared by the thread that receives and any number of threads that send.
//!
//! - `state` (a mutex) holds the [`WsConnection`] and the events it reported. Every mutation
//!   happens under it and is followed by [`Conn::after_mutation`], which drains the machine's
//!   events into the queue and marks output as possibly pending (`dirty`).
//! - `writer` (a second mutex) is held by whoever writes to the socket. Only its holder pulls
//!   `poll_transmit`, so frames leave in order. A batch it pulled and could not write yet stays
//!   in [`Writer::pending`] for the next holder. After releasing it, a holder re-checks `dirty`
//!   under the state lock and tries again, so output queued by a thread that found the writer
//!   busy is never stranded.
//! - The receiving thread never waits for the writer mutex (it only `try_lock`s it): a writer
//!   blocked on a peer that stopped reading cannot stop it from reading, firing timers, and
//!   shutting the socket down once the machine gives up.
//! - Writes carry a socket write timeout derived from the machine's deadline (at most
//!   [`PATIENCE`]), so a blocked writer wakes up to fire timers such as the send-stall timeout.

use std::collections::VecDeque;
use std::io::{self, ErrorKind, IoSlice, Read as _, Write as _};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, TryLockError};
use std::time::{Duration, Instant};

use bytes::{Buf as _, Bytes};
use tidewire::ws::{
    CloseCode, CloseInfo, ConnError, Initiator, Message, SendError, WsConnection, WsEvent, WsState,
};
use tidewire::{Machine as _, Transmit};

/// The longest a blocked write or a wait sleeps before it looks at the clock again.
const PATIENCE: Duration = Duration::from_millis(250);
/// How long a `try_send` may wait for the socket to take bytes.
const BRIEF: Duration = Duration::from_millis(1);
/// How long the receiving thread sleeps between attempts to finish a write that a
/// `try_send` left behind.
const LEFTOVER_POLL: Duration = Duration::from_millis(20);
/// Most chunks written by one `write_vectored` call.
const MAX_IOV: usize = 64;
/// A holder stops pulling chunks into its batch past this many bytes.
const BATCH_BYTES: usize = 256 << 10;

/// Locks a mutex, ignoring poisoning: every critical section leaves the state consistent.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// How a thread flushes queued output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Flush {
    /// Wait for the writer mutex, then write until the machine has nothing more (a blocking
    /// `send` making room).
    Wait,
    /// Write only if the writer mutex is free; then write until the machine has nothing
    /// more, blocking as long as its deadlines allow.
    Try,
    /// Write only if the writer mutex is free, and only what the socket takes at once
    /// (`try_send`, the server's shutdown): leftovers stay for the receiving thread.
    Brief,
}

pub(crate) struct State {
    pub(crate) ws: WsConnection,
    events: VecDeque<WsEvent>,
    close_info: Option<CloseInfo>,
    closed_delivered: bool,
    /// The machine may have queued output since a writer last found it empty.
    dirty: bool,
    /// The socket has been shut down: nothing more is read or written.
    shut: bool,
    /// After the machine closed: the last moment to finish writing before the socket is
    /// shut down regardless.
    linger_until: Option<Instant>,
}

struct Writer {
    /// Chunks pulled from the machine and not yet written, in order.
    pending: VecDeque<Bytes>,
    /// A `Transmit::Shutdown` was pulled: shut the socket down once `pending` is written.
    shutdown_queued: bool,
    /// The socket's current write timeout.
    timeout: Option<Duration>,
    /// Since when writes have made no progress.
    stalled_since: Option<Instant>,
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
    /// Shared with the server's registry, which shuts it down on `ServerHandle::shutdown`.
    stream: Arc<TcpStream>,
    peer: SocketAddr,
    state: Mutex<State>,
    /// Notified when the socket is shut down.
    shut_cv: Condvar,
    writer: Mutex<Writer>,
    /// The writer holds bytes a brief flush could not write: the receiving thread comes back
    /// to them soon instead of sleeping until its next deadline.
    leftover: AtomicBool,
    /// `WsConfig::send_timeout`: a write that makes no progress this long ends the
    /// connection, like the core's own send-stall timer (which only sees the outbox).
    send_timeout: Option<Duration>,
    /// `WsConfig::close_timeout`: after the machine closed, the time left to write the last
    /// bytes (close frame, error response) before the socket is shut down regardless.
    linger: Duration,
}

impl Conn {
    pub(crate) fn new(
        stream: Arc<TcpStream>,
        peer: SocketAddr,
        ws: WsConnection,
        timeouts: (Option<Duration>, Duration),
    ) -> Self {
        let (send_timeout, linger) = timeouts;
        Self {
            stream,
            peer,
            state: Mutex::new(State {
                ws,
                events: VecDeque::new(),
                close_info: None,
                closed_delivered: false,
                dirty: true,
                shut: false,
                linger_until: None,
            }),
            shut_cv: Condvar::new(),
            writer: Mutex::new(Writer {
                pending: VecDeque::new(),
                shutdown_queued: false,
                timeout: None,
                stalled_since: None,
            }),
            leftover: AtomicBool::new(false),
            send_timeout,
            linger,
        }
    }

    pub(crate) fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    pub(crate) fn lock_state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Call after every mutation of the machine, still under the state lock: drains its
    /// events (step 3 of the run loop) and marks output as possibly pending.
    pub(crate) fn after_mutation(&self, st: &mut State, now: Instant) {
        st.dirty = true;
        while let Some(ev) = st.ws.poll_event() {
            if let WsEvent::Closed(info) = &ev {
                st.close_info = Some(info.clone());
                st.linger_until = Some(now + self.linger);
            }
            st.events.push_back(ev);
        }
    }

    /// Runs a command on the machine and flushes what it queued.
    pub(crate) fn command<T>(
        &self,
        flush: Flush,
        f: impl FnOnce(&mut WsConnection, Instant) -> Result<T, SendError>,
    ) -> Result<T, SendError> {
        let mut st = self.lock_state();
        let now = Instant::now();
        let out = f(&mut st.ws, now)?;
        self.after_mutation(&mut st, now);
        drop(st);
        self.flush(flush);
        Ok(out)
    }

    /// Sends a message, waiting while the outbox is full.
    pub(crate) fn send(&self, mut msg: Message) -> Result<(), SendError> {
        loop {
            let mut st = self.lock_state();
            let now = Instant::now();
            match st.ws.send(now, msg) {
                Ok(()) => {
                    self.after_mutation(&mut st, now);
                    drop(st);
                    self.flush(Flush::Try);
                    return Ok(());
                }
                Err(SendError::Backpressure(back)) => {
                    // The refusal may have armed the send-stall timer.
                    self.after_mutation(&mut st, now);
                    drop(st);
                    msg = back;
                    self.flush(Flush::Wait);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Sends a message if the outbox has room; never waits for room.
    pub(crate) fn try_send(&self, msg: Message) -> Result<(), SendError> {
        let mut st = self.lock_state();
        let now = Instant::now();
        let result = st.ws.send(now, msg);
        if matches!(result, Ok(()) | Err(SendError::Backpressure(_))) {
            self.after_mutation(&mut st, now);
            drop(st);
            self.flush(Flush::Brief);
        }
        result
    }

    pub(crate) fn is_closed(&self) -> bool {
        matches!(self.lock_state().ws.state(), WsState::Closing | WsState::Closed)
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
        if st.ws.state() != WsState::Closed {
            st.ws.handle_eof(now);
            self.after_mutation(st, now);
        }
        let _ = self.stream.shutdown(Shutdown::Both);
        st.shut = true;
        self.shut_cv.notify_all();
    }

    /// Aborts the connection unless its socket is already shut down.
    pub(crate) fn abort(&self) {
        let mut st = self.lock_state();
        self.abort_locked(&mut st);
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
                }
                drop(st);
                self.flush(Flush::Brief);
            }
            WsState::Connecting => self.abort_locked(&mut st),
            _ => {}
        }
    }

    /// Writes what the machine queued (step 3 of the run loop), as `mode` says.
    pub(crate) fn flush(&self, mode: Flush) {
        let mut mode = mode;
        loop {
            let guard = if mode == Flush::Wait {
                Some(lock(&self.writer))
            } else {
                match self.writer.try_lock() {
                    Ok(g) => Some(g),
                    Err(TryLockError::Poisoned(p)) => Some(p.into_inner()),
                    Err(TryLockError::WouldBlock) => None,
                }
            };
            let Some(mut w) = guard else {
                // The holder writes what we queued when it re-checks. If the machine gave
                // up on the peer, the holder may be stuck in a write: end it now.
                let mut st = self.lock_state();
                if st.close_info.as_ref().is_some_and(|i| !i.clean) {
                    self.abort_locked(&mut st);
                }
                return;
            };
            self.write_out(&mut w, mode);
            drop(w);
            // Re-check after unlocking: output queued while we held the writer is ours.
            let st = self.lock_state();
            if !st.dirty
                || st.shut
                || (mode == Flush::Brief && self.leftover.load(Ordering::Acquire))
            {
                return;
            }
            drop(st);
            if mode == Flush::Wait {
                mode = Flush::Try;
            }
        }
    }

    /// The writer's loop: pull a batch under the state lock, write it without the lock.
    fn write_out(&self, w: &mut Writer, mode: Flush) {
        // The instant by which a blocked write must look at the clock.
        let mut limit = write_limit(&self.lock_state());
        loop {
            if w.pending.is_empty() {
                let mut st = self.lock_state();
                if st.shut {
                    w.shutdown_queued = false;
                    return;
                }
                if w.shutdown_queued {
                    // Transmit::Shutdown: everything before it is written.
                    w.shutdown_queued = false;
                    let _ = self.stream.shutdown(Shutdown::Both);
                    st.shut = true;
                    self.shut_cv.notify_all();
                    return;
                }
                let mut bytes = 0;
                while w.pending.len() < MAX_IOV && bytes < BATCH_BYTES {
                    match st.ws.poll_transmit() {
                        Some(Transmit::Bytes(b)) => {
                            bytes += b.len();
                            if !b.is_empty() {
                                w.pending.push_back(b);
                            }
                        }
                        Some(Transmit::Shutdown) => {
                            w.shutdown_queued = true;
                            break;
                        }
                        Some(_) | None => break,
                    }
                }
                if w.pending.is_empty() {
                    if !w.shutdown_queued {
                        st.dirty = false;
                        self.leftover.store(false, Ordering::Release);
                        return;
                    }
                    continue;
                }
                limit = write_limit(&st);
            }
            match self.write_some(w, mode, limit) {
                Some(l) => limit = l,
                None => return,
            }
        }
    }

    /// Writes from `w.pending` once. Returns the new write limit, or `None` when the writer
    /// must stop (brief flush gave up, or the connection ended).
    fn write_some(
        &self,
        w: &mut Writer,
        mode: Flush,
        limit: Option<Instant>,
    ) -> Option<Option<Instant>> {
        let now = Instant::now();
        let stall_at = w.stalled_since.zip(self.send_timeout).map(|(since, t)| since + t);
        let limit = match (limit, stall_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let mut timeout =
            limit.map_or(PATIENCE, |l| l.saturating_duration_since(now)).min(PATIENCE);
        if mode == Flush::Brief {
            timeout = timeout.min(BRIEF);
        }
        let timeout = timeout.max(Duration::from_millis(1));
        if w.timeout != Some(timeout) && self.stream.set_write_timeout(Some(timeout)).is_ok() {
            w.timeout = Some(timeout);
        }
        let mut slices = [IoSlice::new(&[]); MAX_IOV];
        let n = w.pending.len().min(MAX_IOV);
        for (slot, chunk) in slices.iter_mut().zip(w.pending.iter()) {
            *slot = IoSlice::new(chunk);
        }
        match (&*self.stream).write_vectored(&slices[..n]) {
            Ok(0) => {
                self.broken(w);
                None
            }
            Ok(mut written) => {
                w.stalled_since = None;
                while written > 0 {
                    let Some(front) = w.pending.front_mut() else { break };
                    if front.len() <= written {
                        written -= front.len();
                        w.pending.pop_front();
                    } else {
                        front.advance(written);
                        written = 0;
                    }
                }
                Some(limit)
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => Some(limit),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if mode == Flush::Brief {
                    self.leftover.store(true, Ordering::Release);
                    return None;
                }
                let mut st = self.lock_state();
                let now = Instant::now();
                if st.shut {
                    w.pending.clear();
                    return None;
                }
                let since = *w.stalled_since.get_or_insert(now);
                if st.ws.state() == WsState::Closed {
                    if st.linger_until.is_none_or(|t| now >= t) {
                        self.abort_locked(&mut st);
                        w.pending.clear();
                        return None;
                    }
                } else if self.send_timeout.is_some_and(|t| now >= since + t) {
                    // The peer stopped reading what was already handed to the writer.
                    self.fail_stalled_locked(&mut st, now);
                    self.abort_locked(&mut st);
                    w.pending.clear();
                    return None;
                } else if st.ws.poll_timeout().is_some_and(|d| now >= d) {
                    st.ws.handle_timeout(now);
                    self.after_mutation(&mut st, now);
                    if st.close_info.as_ref().is_some_and(|i| !i.clean) {
                        // The peer is not reading: what is left cannot arrive.
                        self.abort_locked(&mut st);
                        w.pending.clear();
                        return None;
                    }
                }
                Some(write_limit(&st))
            }
            Err(_) => {
                self.broken(w);
                None
            }
        }
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

    /// A write failed: the transport is gone.
    fn broken(&self, w: &mut Writer) {
        w.pending.clear();
        w.shutdown_queued = false;
        let mut st = self.lock_state();
        self.abort_locked(&mut st);
    }

    /// Drives the connection until the machine reports an event and returns it (steps 1–4
    /// of the run loop, on the receiving thread). `Closed` is returned only once the socket
    /// is shut down, and again on every later call.
    pub(crate) fn next_event(&self, rd: &mut Reader) -> WsEvent {
        loop {
            let mut st = self.lock_state();
            if (st.dirty || self.leftover.load(Ordering::Acquire)) && !st.shut {
                drop(st);
                self.flush(Flush::Try);
                st = self.lock_state();
            }
            let front_is_closed = matches!(st.events.front(), Some(WsEvent::Closed(_)));
            if (!front_is_closed || st.shut)
                && let Some(ev) = st.events.pop_front()
            {
                if front_is_closed {
                    st.closed_delivered = true;
                }
                return ev;
            }
            if st.closed_delivered || (st.shut && st.events.is_empty()) {
                st.closed_delivered = true;
                return WsEvent::Closed(st.close_info.clone().unwrap_or_else(abnormal));
            }
            let deadline = st.ws.poll_timeout();
            let now = Instant::now();
            if rd.eof || (st.ws.state() == WsState::Closed && deadline.is_none()) {
                // Nothing more to read: the transport ends once the writer is done.
                let until = st.linger_until.unwrap_or(now + self.linger);
                if now >= until {
                    self.abort_locked(&mut st);
                } else {
                    let wait = (until - now).min(PATIENCE);
                    let _ = self.shut_cv.wait_timeout(st, wait);
                }
                continue;
            }
            if let Some(d) = deadline
                && d <= now
            {
                st.ws.handle_timeout(now);
                self.after_mutation(&mut st, now);
                continue;
            }
            drop(st);
            let mut timeout = deadline.map(|d| d - now);
            if self.leftover.load(Ordering::Acquire) {
                timeout = Some(timeout.map_or(LEFTOVER_POLL, |t| t.min(LEFTOVER_POLL)));
            }
            // Round up: a wake-up just before the deadline would only come back at once.
            let timeout = timeout.map(|t| t.max(Duration::from_millis(1)));
            if rd.timeout != Some(timeout) && self.stream.set_read_timeout(timeout).is_ok() {
                rd.timeout = Some(timeout);
            }
            let result = (&*self.stream).read(&mut rd.buf);
            let now = Instant::now();
            let mut st = self.lock_state();
            match result {
                Ok(0) => {
                    rd.eof = true;
                    st.ws.handle_eof(now);
                }
                Ok(n) => st.ws.handle_read(now, &rd.buf[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    st.ws.handle_timeout(now);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => {
                    rd.eof = true;
                    st.ws.handle_eof(now);
                }
            }
            self.after_mutation(&mut st, now);
        }
    }
}

/// The instant by which a blocked writer must look at the clock: the machine's next deadline,
/// or the end of the linger time once it closed.
fn write_limit(st: &State) -> Option<Instant> {
    if st.ws.state() == WsState::Closed { st.linger_until } else { st.ws.poll_timeout() }
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
