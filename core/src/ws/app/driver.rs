//! [`Driver`]: the policy of an adapter that pumps an [`AppSocket`] on the threads that use
//! it (tidewire-std), kept beside the socket under the adapter's one lock.
//!
//! Such an adapter has no task of its own per connection: the thread that receives reads the
//! socket, a thread that queued output writes it, and a writer thread (started on first
//! need) covers what cannot wait for either. Writes happen outside the lock, so one thread
//! at a time holds the *writer's turn*: [`begin_turn`](Driver::begin_turn) hands out a batch,
//! [`end_turn`](Driver::end_turn) takes it back (its memory is reused); meanwhile the other
//! threads only fire timers. The adapter keeps the lock, its condition variables, the
//! writer thread and the system calls. After each call here it drains
//! [`poll_wakes`](Driver::poll_wakes): whom to notify, and whether to shut the socket down.
//!
//! The receiving thread owns a [`ReadBuf`]: the read buffer (grown while reads fill it) and
//! the socket's read timeout (re-armed only when it would wake too late or far too early).

use std::collections::VecDeque;

use bytes::Bytes;

use super::{AppSocket, Pass};
use crate::machine::Machine as _;
use crate::time::{Duration, Instant};
use crate::ws::{CloseCode, SendError, UpgradeRequest, WsConnection, WsEvent, WsState};

/// Sizes and timeouts of a [`Driver`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DriverConfig {
    /// Received events and payload bytes queued before the receiver stops reading.
    pub max_inbound: (usize, usize),
    /// Most bytes and chunks pulled into one write batch.
    pub batch: (usize, usize),
    /// `WsConfig::send_timeout`: how long a blocked write may take nothing.
    pub send_timeout: Option<Duration>,
    /// `WsConfig::close_timeout`: the linger after the close, and after the application's
    /// drop.
    pub close_timeout: Duration,
}

/// What a thread does after [`Driver::begin_turn`].
#[derive(Debug)]
pub enum Turn {
    /// The writer's turn is this thread's: write `batch` without the lock, then give it back
    /// to [`Driver::end_turn`]. A `patient` writer reports each blocked write to
    /// [`Driver::write_blocked`]; otherwise (the connection failed: what the socket takes is
    /// flushed, then it is shut down) the first blocked write fails the turn.
    Write {
        /// The bytes to write, in order.
        batch: VecDeque<Bytes>,
        /// Whether to wait for a blocked socket.
        patient: bool,
    },
    /// Nothing to write now (or another thread writes): read the socket when `read`, wait
    /// at most until `until`.
    Wait {
        /// Whether to read the socket.
        read: bool,
        /// The core's next deadline.
        until: Option<Instant>,
    },
    /// The socket is shut down.
    Done,
}

/// Whom the adapter wakes after calls on a [`Driver`], from [`Driver::poll_wakes`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DriverWakes {
    /// The threads waiting on the connection (senders for room, a receiver for the end).
    pub waiters: bool,
    /// The writer thread.
    pub writer: bool,
    /// Shut the socket down (both halves) now: the core already counts it as shut.
    pub shut: bool,
}

/// An [`AppSocket`] with who holds the writer's turn, the reused batch, the application's
/// drop and its linger, the writer thread and a receiver blocked in a read (module docs).
#[derive(Debug)]
pub struct Driver {
    sock: AppSocket,
    /// Kept between turns to reuse its memory.
    batch: VecDeque<Bytes>,
    cfg: DriverConfig,
    /// A thread writes a batch outside the lock.
    writing: bool,
    /// The socket is shut down and the core knows it.
    shut: bool,
    /// The application dropped its `WebSocket`: what is queued is written until then.
    dropped: Option<Instant>,
    /// Threads waiting on the adapter's condition variable.
    waiters: usize,
    /// The writer thread was started.
    writer: bool,
    /// A receiver is blocked in a read until this deadline (`None`: no timeout).
    reading: Option<Option<Instant>>,
    wakes: DriverWakes,
}

impl Driver {
    /// Wraps `conn` (a server connection right after its upgrade request, or a new client),
    /// returning the upgrade request it read.
    #[must_use]
    pub fn new(mut conn: WsConnection, cfg: DriverConfig) -> (Self, Option<UpgradeRequest>) {
        let mut request = None;
        while let Some(ev) = conn.poll_event() {
            if let WsEvent::UpgradeRequested(r) = ev {
                request = Some(r);
            }
        }
        let (events, bytes) = cfg.max_inbound;
        let driver = Self {
            sock: AppSocket::new(conn, events, bytes, cfg.close_timeout),
            batch: VecDeque::new(),
            cfg,
            writing: false,
            shut: false,
            dropped: None,
            waiters: 0,
            writer: false,
            reading: None,
            wakes: DriverWakes::default(),
        };
        (driver, request)
    }

    /// The socket, for its getters.
    #[must_use]
    pub fn socket(&self) -> &AppSocket {
        &self.sock
    }

    /// The socket, for the application's side (`next_event`, `opened`...).
    #[inline]
    pub fn socket_mut(&mut self) -> &mut AppSocket {
        &mut self.sock
    }

    /// Whether nothing more can be sent: dropped by the application, closing or closed.
    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.dropped.is_some() || self.sock.is_closed()
    }

    /// Whether the application dropped its `WebSocket`.
    #[must_use]
    pub fn is_dropped(&self) -> bool {
        self.dropped.is_some()
    }

    /// Whether a thread holds the writer's turn (a sender refused for room waits for it).
    #[must_use]
    #[inline]
    pub fn is_writing(&self) -> bool {
        self.writing
    }

    /// Runs a command on the socket ([`AppSocket::command`]).
    ///
    /// # Errors
    /// [`SendError::Closed`] once the application dropped the connection; otherwise the
    /// socket's.
    pub fn command<T>(
        &mut self,
        now: Instant,
        f: impl FnOnce(&mut WsConnection, Instant) -> Result<T, SendError>,
    ) -> Result<T, SendError> {
        if self.dropped.is_some() {
            return Err(SendError::Closed);
        }
        self.sock.command(now, f)
    }

    // ----- the writer's turn -----

    /// One pass of the socket (timers fired): while another thread writes, only that; else
    /// a batch to write if there is one (the caller then holds the writer's turn until
    /// [`end_turn`](Self::end_turn)). Shuts the socket down when the socket says so.
    #[inline]
    pub fn begin_turn(&mut self, now: Instant) -> Turn {
        if self.shut {
            return Turn::Done;
        }
        let mut batch = std::mem::take(&mut self.batch);
        let (max_bytes, max_chunks) = self.cfg.batch;
        let limit = if self.writing { 0 } else { max_bytes };
        let write = match self.sock.poll_pass(now, &mut batch, limit, max_chunks) {
            // Shut once everything before the machine's shutdown was written.
            Pass::Run { shutdown: true, .. } if batch.is_empty() && !self.writing => None,
            Pass::Run { read, deadline, .. } if batch.is_empty() => {
                self.batch = batch;
                return Turn::Wait { read, until: deadline };
            }
            Pass::Run { .. } => Some(true),
            // A failed connection: flushed by this thread unless another one writes.
            Pass::FlushAndStop if !self.writing => Some(false),
            _ => None,
        };
        match write {
            Some(patient) if !batch.is_empty() => {
                self.writing = true;
                Turn::Write { batch, patient }
            }
            _ => {
                self.shut(now);
                Turn::Done
            }
        }
    }

    /// The writer's turn is over: `batch` (its memory kept for the next turn) was written,
    /// or the write failed at `failed` (the connection is lost). After a failed
    /// connection's last flush, the next turn shuts the socket down.
    #[inline]
    pub fn end_turn(&mut self, mut batch: VecDeque<Bytes>, failed: Option<Instant>) {
        self.writing = false;
        if let Some(now) = failed {
            self.sock.handle_write_error(now);
        }
        // After a drop, the writer thread ends the connection once the turn is over.
        self.wakes.writer |= self.dropped.is_some() && self.writer;
        if !self.shut {
            batch.clear();
            self.batch = batch;
        }
    }

    /// The turn's writer found the socket blocked, taking nothing since `since`: past the
    /// send timeout the connection is lost ([`AppSocket::handle_write_stall`]), past the
    /// drop's linger the socket is shut down, and due timers fire. Whether to keep trying.
    pub fn write_blocked(&mut self, now: Instant, since: Instant) -> bool {
        debug_assert!(self.writing, "only the writer's turn writes");
        if self.cfg.send_timeout.is_some_and(|t| now >= since + t) {
            self.sock.handle_write_stall(now); // the pass below shuts it down
        }
        if self.dropped.is_some_and(|t| now >= t) {
            self.shut(now);
        }
        matches!(self.begin_turn(now), Turn::Wait { .. })
    }

    // ----- the end -----

    /// Shuts the socket down (the adapter does it on [`DriverWakes::shut`]); the socket
    /// reports `Closed` from now on. Whether it was not shut yet.
    pub fn shut(&mut self, now: Instant) -> bool {
        if self.shut {
            return false;
        }
        self.shut = true;
        self.sock.finish(now);
        self.batch = VecDeque::new();
        self.wakes = DriverWakes { waiters: true, writer: true, shut: true };
        true
    }

    /// The application let go at `now`: commands fail, and what is queued is written within
    /// the close timeout. Whether a writer (the turn's, or the writer thread) finishes the
    /// connection; otherwise the caller drives it once, then shuts it down.
    pub fn drop_by_app(&mut self, now: Instant) -> bool {
        self.dropped = Some(now + self.cfg.close_timeout);
        self.writing || self.writer
    }

    /// Whether the writer thread, after its pass, ends the connection: dropped, and no turn
    /// is being written (so everything queued before the drop was written).
    #[must_use]
    pub fn lingered(&self) -> bool {
        self.dropped.is_some() && !self.writing
    }

    /// The server shuts down: an open connection is closed with 1001 (whether the writer
    /// thread should write it), a connecting one shut down.
    pub fn shutdown_by_server(&mut self, now: Instant) -> bool {
        match self.sock.state() {
            WsState::Open => {
                let close = |ws: &mut WsConnection, now| {
                    ws.close(now, CloseCode::GOING_AWAY, "server shutdown")
                };
                self.sock.command(now, close).is_ok()
            }
            WsState::Connecting => {
                self.shut(now);
                false
            }
            _ => false,
        }
    }

    // ----- threads -----

    /// The writer thread is wanted: whether to start it (the first time); later, it is woken
    /// ([`DriverWakes::writer`]).
    pub fn start_writer(&mut self) -> bool {
        self.wakes.writer |= self.writer;
        !std::mem::replace(&mut self.writer, true)
    }

    /// Whether a receiver blocked in a read would miss the deadline `until` (set by a
    /// command, e.g. the close handshake's timeout): the writer thread then keeps the time.
    #[must_use]
    pub fn reader_misses(&self, until: Option<Instant>) -> bool {
        matches!((self.reading, until), (Some(blocked), Some(d)) if blocked.is_none_or(|b| d < b))
    }

    /// A thread starts waiting on the adapter's condition variable.
    pub fn add_waiter(&mut self) {
        self.waiters += 1;
    }

    /// A thread stopped waiting.
    pub fn remove_waiter(&mut self) {
        self.waiters -= 1;
    }

    /// Whom to wake since the last call (and clears it); the socket's wakes included.
    #[must_use]
    #[inline]
    pub fn poll_wakes(&mut self) -> DriverWakes {
        let sock = self.sock.poll_wakes();
        let mut wakes = std::mem::take(&mut self.wakes);
        wakes.waiters |= (sock.senders || sock.receivers) && self.waiters > 0;
        wakes
    }

    // ----- the receiver -----

    /// After [`Turn::Wait`]: whether the receiver reads (it is then blocked in the read until
    /// [`end_read`](Self::end_read)); otherwise it waits until `until` (nothing to read: the
    /// core's deadline, or a shutdown, ends it).
    #[inline]
    pub fn begin_read(&mut self, rd: &ReadBuf, read: bool, until: Option<Instant>) -> bool {
        if !read || rd.eof {
            return false;
        }
        self.reading = Some(until);
        true
    }

    /// The read is over: `Some(n)` bytes in `rd` (0 when it timed out or was interrupted),
    /// `None` when the read half ended (end of file or an error).
    #[inline]
    pub fn end_read(&mut self, now: Instant, rd: &mut ReadBuf, got: Option<usize>) {
        self.reading = None;
        if self.shut {
            return;
        }
        match got {
            Some(0) => {}
            Some(n) => {
                self.sock.handle_read(now, &rd.buf[..n]);
                rd.filled(n);
            }
            None => {
                rd.eof = true;
                self.sock.handle_eof(now);
            }
        }
    }
}

/// The receiving thread's read buffer and the socket's read timeout.
#[derive(Debug)]
pub struct ReadBuf {
    /// Allocated on the first read, grown while reads fill it, up to `max`.
    buf: Vec<u8>,
    max: usize,
    /// The socket's read timeout, once set.
    timeout: Option<Option<Duration>>,
    /// The read half ended (end of file or an error).
    eof: bool,
}

impl ReadBuf {
    /// First size of the buffer; it doubles (up to its maximum) while reads fill it.
    pub const INITIAL: usize = 4 << 10;

    /// A buffer of at most `max` bytes (at least 1 KiB), allocated on first use.
    #[must_use]
    pub fn new(max: usize) -> Self {
        Self { buf: Vec::new(), max: max.max(1024), timeout: None, eof: false }
    }

    /// The buffer to read into.
    #[inline]
    pub fn buf(&mut self) -> &mut [u8] {
        if self.buf.is_empty() {
            self.buf = vec![0; Self::INITIAL.min(self.max)];
        }
        &mut self.buf
    }

    /// A read of `n` bytes: one that filled the buffer doubles it.
    #[inline]
    fn filled(&mut self, n: usize) {
        if n == self.buf.len() && n < self.max {
            self.buf = vec![0; (n * 2).min(self.max)];
        }
    }

    /// Before a read at `now` that must end by `until`: `set` sets the socket's read timeout
    /// (returning whether it took), called only when the one set would wake too late or far
    /// too early.
    #[inline]
    pub fn rearm(
        &mut self,
        now: Instant,
        until: Option<Instant>,
        set: impl FnOnce(Option<Duration>) -> bool,
    ) {
        // Round up: a wake-up just before the deadline would only come back at once.
        let want = until.map(|d| d.saturating_duration_since(now).max(Duration::from_millis(1)));
        let stale = match (self.timeout, want) {
            (Some(Some(cur)), Some(want)) => cur > want || cur < want / 2,
            (Some(cur), want) => cur != want,
            (None, _) => true,
        };
        if stale && set(want) {
            self.timeout = Some(want);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::drain;
    use super::*;
    use crate::ws::{CloseInfo, ConnError, Message, WsConfig};

    const CFG: DriverConfig = DriverConfig {
        max_inbound: (8, 1 << 20),
        batch: (1 << 10, 4),
        send_timeout: Some(Duration::from_secs(5)),
        close_timeout: Duration::from_secs(1),
    };

    /// An open client `Driver` (its receiver's `ReadBuf`) and its peer server machine.
    fn open() -> (Driver, ReadBuf, WsConnection, Instant) {
        let t0 = crate::time::test_epoch();
        let cfg = WsConfig { rng_seed: [7; 32], ..WsConfig::default() };
        let client = WsConnection::client(cfg.clone(), "example.com", "/", t0).unwrap();
        let (mut d, request) = Driver::new(client, CFG);
        assert!(request.is_none());
        let mut rd = ReadBuf::new(64 << 10);
        let mut s = WsConnection::server(cfg, t0);
        s.handle_read(t0, &write(&mut d, t0));
        assert!(matches!(s.poll_event(), Some(WsEvent::UpgradeRequested(_))));
        s.accept(t0, None, &[]).unwrap();
        read(&mut d, &mut rd, t0, &drain(&mut s));
        assert_eq!(d.socket().opened(), Some(None));
        while s.poll_event().is_some() {}
        (d, rd, s, t0)
    }

    /// Takes the writer's turn, writes it all, and ends it.
    fn write(d: &mut Driver, now: Instant) -> Vec<u8> {
        let Turn::Write { batch, patient: true } = d.begin_turn(now) else { panic!("no write") };
        let bytes = batch.iter().flat_map(|b| b.to_vec()).collect();
        d.end_turn(batch, None);
        bytes
    }

    /// One read of `bytes` by the receiver.
    fn read(d: &mut Driver, rd: &mut ReadBuf, now: Instant, bytes: &[u8]) {
        assert!(d.begin_read(rd, true, None));
        rd.buf()[..bytes.len()].copy_from_slice(bytes);
        d.end_read(now, rd, Some(bytes.len()));
    }

    fn send(d: &mut Driver, now: Instant, text: &str) -> Result<(), SendError> {
        d.command(now, |ws, now| ws.send(now, Message::text(text)))
    }

    #[test]
    fn one_thread_at_a_time_has_the_writers_turn_and_its_batch_is_reused() {
        let (mut d, _rd, mut s, t0) = open();
        send(&mut d, t0, "a").unwrap();
        let Turn::Write { batch, patient: true } = d.begin_turn(t0) else { panic!() };
        assert!(d.is_writing());
        send(&mut d, t0, "b").unwrap();
        assert!(matches!(d.begin_turn(t0), Turn::Wait { read: true, .. }), "only timers");
        let capacity = batch.capacity();
        batch.iter().for_each(|b| s.handle_read(t0, b));
        d.end_turn(batch, None);
        assert_eq!(d.batch.capacity(), capacity, "kept for the next turn");
        s.handle_read(t0, &write(&mut d, t0));
        let texts: Vec<_> = std::iter::from_fn(|| s.poll_event()).collect();
        assert_eq!(
            texts,
            [WsEvent::Message(Message::text("a")), WsEvent::Message(Message::text("b"))]
        );
        assert!(matches!(d.begin_turn(t0), Turn::Wait { .. }));
    }

    #[test]
    fn a_batch_holds_at_most_the_configured_bytes() {
        let (mut d, _rd, _s, t0) = open();
        for _ in 0..4 {
            send(&mut d, t0, &"x".repeat(600)).unwrap();
        }
        let Turn::Write { batch, .. } = d.begin_turn(t0) else { panic!() };
        assert_eq!(batch.len(), 2, "1 KiB reached after the second frame");
        d.end_turn(batch, None);
        assert_eq!(write(&mut d, t0).len(), 2 * 608, "masked frames of 600 bytes");
    }

    #[test]
    fn a_failed_write_shuts_the_socket_down_and_wakes_everyone() {
        let (mut d, _rd, _s, t0) = open();
        send(&mut d, t0, "a").unwrap();
        let Turn::Write { batch, .. } = d.begin_turn(t0) else { panic!() };
        d.end_turn(batch, Some(t0));
        assert!(matches!(d.begin_turn(t0), Turn::Done));
        assert_eq!(d.poll_wakes(), DriverWakes { waiters: true, writer: true, shut: true });
        let closed = d.socket_mut().next_event();
        assert!(matches!(
            closed,
            Some(crate::ws::app::Event::Closed(CloseInfo { clean: false, .. }))
        ));
        assert!(!d.shut(t0), "once");
    }

    #[test]
    fn a_failed_connection_flushes_its_last_bytes_without_waiting_then_shuts_down() {
        let (mut d, mut rd, _s, t0) = open();
        read(&mut d, &mut rd, t0, &[0x8f, 0x00]); // a fragmented ping: a protocol error
        let Turn::Write { batch, patient: false } = d.begin_turn(t0) else { panic!() };
        assert!(!batch.is_empty(), "the close frame (1002)");
        assert!(matches!(d.begin_turn(t0), Turn::Done), "another thread shuts it down at once");
        d.end_turn(batch, None);
        assert!(d.poll_wakes().shut);
        let (mut d, mut rd, _s, t0) = open();
        read(&mut d, &mut rd, t0, &[0x8f, 0x00]);
        let Turn::Write { batch, patient: false } = d.begin_turn(t0) else { panic!() };
        d.end_turn(batch, None);
        assert!(matches!(d.begin_turn(t0), Turn::Done), "the next turn shuts it down");
        assert!(d.poll_wakes().shut);
    }

    #[test]
    fn a_write_blocked_past_the_send_timeout_loses_the_connection_as_too_slow() {
        let (mut d, _rd, _s, t0) = open();
        send(&mut d, t0, "a").unwrap();
        let Turn::Write { batch, .. } = d.begin_turn(t0) else { panic!() };
        assert!(d.write_blocked(t0 + Duration::from_secs(1), t0));
        assert!(!d.write_blocked(t0 + Duration::from_secs(5), t0));
        assert!(d.poll_wakes().shut);
        let info = d.socket().close_info().unwrap();
        assert_eq!((info.code, info.error), (CloseCode::TOO_SLOW, Some(ConnError::SendStalled)));
        d.end_turn(batch, Some(t0));
        assert!(matches!(d.begin_turn(t0), Turn::Done));
    }

    #[test]
    fn after_the_drop_queued_bytes_are_written_within_the_close_timeout() {
        let (mut d, _rd, _s, t0) = open();
        send(&mut d, t0, "a").unwrap();
        let Turn::Write { batch, .. } = d.begin_turn(t0) else { panic!() };
        assert!(d.drop_by_app(t0), "the turn's writer finishes it");
        assert!(d.is_closed());
        assert_eq!(send(&mut d, t0, "b"), Err(SendError::Closed));
        assert!(d.start_writer(), "started once");
        assert!(!d.lingered(), "the turn is not over");
        assert!(d.write_blocked(t0 + Duration::from_millis(500), t0));
        assert!(!d.write_blocked(t0 + Duration::from_secs(1), t0), "the linger is over");
        assert!(d.poll_wakes().shut);
        d.end_turn(batch, Some(t0));
    }

    #[test]
    fn the_writer_thread_ends_a_dropped_connection_once_the_turn_is_over() {
        let (mut d, _rd, _s, t0) = open();
        assert!(d.start_writer());
        assert!(!d.start_writer(), "only woken later");
        assert!(d.poll_wakes().writer);
        send(&mut d, t0, "a").unwrap();
        let Turn::Write { batch, .. } = d.begin_turn(t0) else { panic!() };
        assert!(d.drop_by_app(t0));
        d.end_turn(batch, None);
        assert!(d.poll_wakes().writer);
        assert!(d.lingered());
    }

    #[test]
    fn a_drop_without_a_writer_leaves_the_end_to_the_caller() {
        let (mut d, _rd, _s, t0) = open();
        assert!(!d.drop_by_app(t0));
        assert!(matches!(d.begin_turn(t0), Turn::Wait { .. }));
        assert!(d.shut(t0));
    }

    #[test]
    fn a_server_shutdown_closes_an_open_connection_with_1001() {
        let (mut d, _rd, mut s, t0) = open();
        assert!(d.shutdown_by_server(t0));
        s.handle_read(t0, &write(&mut d, t0));
        let closed = std::iter::from_fn(|| s.poll_event()).find_map(|ev| match ev {
            WsEvent::Closed(info) => Some(info.code),
            _ => None,
        });
        assert_eq!(closed, Some(CloseCode::GOING_AWAY));
        let t0 = crate::time::test_epoch();
        let cfg = WsConfig { rng_seed: [7; 32], ..WsConfig::default() };
        let client = WsConnection::client(cfg, "example.com", "/", t0).unwrap();
        let (mut d, _) = Driver::new(client, CFG);
        assert!(!d.shutdown_by_server(t0), "a connecting one is shut down");
        assert!(d.poll_wakes().shut);
    }

    #[test]
    fn a_blocked_reader_gets_a_writer_thread_for_an_earlier_deadline() {
        let (mut d, mut rd, _s, t0) = open();
        let later = Some(t0 + Duration::from_secs(2));
        assert!(!d.reader_misses(later), "nobody reads");
        assert!(d.begin_read(&rd, true, Some(t0 + Duration::from_secs(1))));
        assert!(!d.reader_misses(later));
        assert!(d.reader_misses(Some(t0)));
        d.end_read(t0, &mut rd, Some(0));
        assert!(d.begin_read(&rd, true, None));
        assert!(d.reader_misses(later), "a read without timeout misses every deadline");
        assert!(!d.reader_misses(None));
        d.end_read(t0, &mut rd, None);
        assert!(!d.begin_read(&rd, true, None), "the read half ended");
        assert!(!d.begin_read(&ReadBuf::new(1), false, None), "the application's queue is full");
    }

    #[test]
    fn the_waiters_are_woken_only_when_there_are_some() {
        let (mut d, mut rd, mut s, t0) = open();
        s.send(t0, Message::text("a")).unwrap();
        let bytes = drain(&mut s);
        read(&mut d, &mut rd, t0, &bytes);
        assert!(!d.poll_wakes().waiters);
        d.add_waiter();
        s.send(t0, Message::text("b")).unwrap();
        read(&mut d, &mut rd, t0, &drain(&mut s));
        assert!(d.poll_wakes().waiters);
        d.remove_waiter();
    }

    #[test]
    fn the_read_buffer_doubles_while_reads_fill_it() {
        let mut rd = ReadBuf::new(10_000);
        assert_eq!(rd.buf().len(), ReadBuf::INITIAL);
        rd.filled(100);
        assert_eq!(rd.buf().len(), ReadBuf::INITIAL);
        rd.filled(ReadBuf::INITIAL);
        assert_eq!(rd.buf().len(), 2 * ReadBuf::INITIAL);
        rd.filled(2 * ReadBuf::INITIAL);
        assert_eq!(rd.buf().len(), 10_000, "up to its maximum");
        rd.filled(10_000);
        assert_eq!(rd.buf().len(), 10_000);
        assert_eq!(ReadBuf::new(10).buf().len(), 1024, "at least 1 KiB");
    }

    #[test]
    fn the_read_timeout_is_rearmed_only_when_too_late_or_far_too_early() {
        let t0 = crate::time::test_epoch();
        let mut rd = ReadBuf::new(1024);
        let mut set = Vec::new();
        let mut arm = |rd: &mut ReadBuf, ms: Option<u64>| {
            let until = ms.map(|ms| t0 + Duration::from_millis(ms));
            rd.rearm(t0, until, |t| {
                set.push(t.map(|t| t.as_millis()));
                true
            });
        };
        arm(&mut rd, Some(1000)); // first: set
        arm(&mut rd, Some(1500)); // 1 s wakes early, not far too early: kept
        arm(&mut rd, Some(900)); // 1 s would wake too late
        arm(&mut rd, Some(2000)); // 0.9 s is under half of 2 s
        arm(&mut rd, None); // no deadline
        arm(&mut rd, None);
        arm(&mut rd, Some(0)); // rounded up to 1 ms
        assert_eq!(set, [Some(1000), Some(900), Some(2000), None, Some(1)]);
    }
}
