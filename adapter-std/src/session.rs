//! [`Session`]: the core [`ClientSession`] (the reconnecting, transport-falling-back
//! client) behind one mutex with the application's event queue, its sockets run by the
//! outbound-socket driver ([`crate::outbound`]) and its deadline by one timer thread. The
//! queue is bounded by [`SessionOptions::max_events`]: while it is full the sockets are not
//! read, so an application that stops reading events slows the session down instead of
//! growing memory.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tidewire::client::{
    ClientMsgId, ClientSession, PublishError, SessionConfig, SessionEvent, SessionState,
    SubscribeError,
};

use crate::conn::{lock, wait_until};
use crate::outbound::{self, Dial, Host, Sockets};

/// Settings of the adapter's side of a [`Session`]. Build with `SessionOptions::default()`
/// and change fields.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct SessionOptions {
    /// Events queued for [`Session::next_event`] at most (default 1024).
    pub max_events: usize,
    /// Bytes read from a socket and not yet handed to the session at most (default 1 MiB):
    /// a socket reads at most this much (and [`read_chunk`](Self::read_chunk)) at a time.
    pub max_inbox: usize,
    /// Bytes read from a socket at a time (default 16 KiB).
    pub read_chunk: usize,
    /// The longest a TCP connection attempt may take (default 10 s).
    pub connect_timeout: Duration,
    /// A write that makes no progress for this long fails the socket (default 10 s).
    pub write_timeout: Duration,
}

impl Default for SessionOptions {
    fn default() -> Self {
        Self {
            max_events: 1024,
            max_inbox: 1 << 20,
            read_chunk: 16 << 10,
            connect_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
        }
    }
}

/// A reconnecting client session with a Tidewire server (WebSocket, else SSE, else long
/// polling; see [`tidewire::client`]), driven by its own thread.
///
/// [`connect`](Self::connect) returns at once; the session connects in the background and
/// reports everything as [`SessionEvent`]s through [`next_event`](Self::next_event):
/// state changes, messages (once each, in order per channel), `RefetchNeeded` when the
/// server lost a channel's history, acknowledgements. Subscriptions and publishes made
/// while disconnected are kept (publishes in a bounded queue) and sent after every
/// (re)connection; a publish is delivered once thanks to its id.
///
/// Dropping the session closes it (a WebSocket gets a close frame) and stops its thread.
///
/// ```
/// use std::time::Duration;
/// use tidewire_std::tidewire::client::{SessionConfig, SessionEvent};
/// use tidewire_std::tidewire::server::Routes;
/// use tidewire_std::{Server, ServerConfig, Session};
///
/// // A hub server on a free port: the core server's routes, everyone anonymous.
/// let mut cfg = ServerConfig::default();
/// cfg.endpoint.routes = Routes::default();
/// let server = Server::bind("127.0.0.1:0", cfg)?;
/// let port = server.local_addr().port();
/// let handle = server.handle();
/// let serving = std::thread::spawn(move || server.serve(|up| drop(up.reject(404, &[], b""))));
///
/// let mut session = Session::connect(SessionConfig::new("127.0.0.1", port));
/// session.subscribe("news")?;
/// let id = session.publish("news", r#"{"title":"hello"}"#)?;
/// let (mut got_message, mut acked) = (false, false);
/// while !(got_message && acked) {
///     match session.next_event_timeout(Duration::from_secs(10)).expect("an event") {
///         SessionEvent::Message { ch, data, .. } => {
///             assert_eq!((ch.as_str(), data.as_str()), ("news", r#"{"title":"hello"}"#));
///             got_message = true;
///         }
///         SessionEvent::Acked { id: acked_id, .. } => acked = acked_id == id,
///         _ => {} // state changes
///     }
/// }
///
/// session.close();
/// handle.shutdown(Duration::from_secs(1));
/// serving.join().unwrap()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Session {
    shared: Arc<Shared>,
    driver: Option<JoinHandle<()>>,
    /// `State(Closed)` was delivered: nothing follows.
    finished: bool,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").field("state", &self.state()).finish_non_exhaustive()
    }
}

struct Shared {
    core: Mutex<Core>,
    /// Wakes the timer thread: a new deadline, the end.
    driver_cv: Condvar,
    /// Wakes the application: an event, or the end.
    app_cv: Condvar,
    /// Wakes readers waiting for room in the event queue.
    room_cv: Condvar,
    socks: Sockets<Shared>,
    opts: SessionOptions,
}

struct Core {
    session: ClientSession,
    events: VecDeque<SessionEvent>,
    /// The timer thread ended: no more events.
    done: bool,
    /// The `Session` was dropped.
    stop: bool,
}

impl Shared {
    fn core(&self) -> MutexGuard<'_, Core> {
        lock(&self.core)
    }

    /// Step 3 of the run loop, under the lock: sockets, then events while there is room.
    fn after(&self, core: &mut Core, now: Instant) {
        outbound::drain(self, &mut core.session, now);
        let mut arrived = false;
        while core.events.len() < self.opts.max_events.max(1) {
            let Some(ev) = core.session.poll_event() else { break };
            core.events.push_back(ev);
            arrived = true;
        }
        if arrived {
            self.app_cv.notify_all();
        }
        self.driver_cv.notify_all();
    }
}

impl Host for Shared {
    type Machine = ClientSession;

    fn sockets(&self) -> &Sockets<Self> {
        &self.socks
    }

    fn with<T>(&self, f: impl FnOnce(&mut ClientSession, Instant) -> T) -> T {
        let mut core = self.core();
        let now = Instant::now();
        let out = f(&mut core.session, now);
        self.after(&mut core, now);
        out
    }

    fn admit(&self) -> bool {
        let mut core = self.core();
        while core.events.len() >= self.opts.max_events.max(1) && !core.done && !core.stop {
            core = self.room_cv.wait(core).unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        !core.done && !core.stop
    }
}

impl Session {
    /// Starts a session with default [`SessionOptions`]; returns at once (the first
    /// connection is made in the background). An all-zero `cfg.rng_seed` is replaced by OS
    /// entropy.
    ///
    /// # Panics
    /// If the driver thread cannot be spawned.
    #[must_use]
    pub fn connect(cfg: SessionConfig) -> Session {
        Self::with_options(cfg, SessionOptions::default())
    }

    /// As [`connect`](Self::connect), with adapter settings.
    ///
    /// # Panics
    /// If the driver thread cannot be spawned.
    #[must_use]
    pub fn with_options(mut cfg: SessionConfig, opts: SessionOptions) -> Session {
        if cfg.rng_seed == [0; 32] && getrandom::fill(&mut cfg.rng_seed).is_err() {
            let s = crate::fallback_seed().to_le_bytes();
            cfg.rng_seed[..8].copy_from_slice(&s);
        }
        let session = ClientSession::new(cfg, Instant::now());
        let dial = Dial {
            connect_timeout: opts.connect_timeout,
            write_timeout: opts.write_timeout,
            read_chunk: opts.read_chunk.min(opts.max_inbox),
        };
        let shared = Arc::new_cyclic(|me| Shared {
            core: Mutex::new(Core { session, events: VecDeque::new(), done: false, stop: false }),
            driver_cv: Condvar::new(),
            app_cv: Condvar::new(),
            room_cv: Condvar::new(),
            socks: Sockets::new(me.clone(), dial),
            opts,
        });
        // The session queued its first `Connect`.
        shared.with(|_, _| ());
        let driver = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("tidewire-session".into())
                .spawn(move || run_timer(&shared))
                .expect("spawn the session's driver thread")
        };
        Session { shared, driver: Some(driver), finished: false }
    }

    fn command<T>(&self, f: impl FnOnce(&mut ClientSession, Instant) -> T) -> T {
        self.shared.with(f)
    }

    /// Subscribes to `ch` (resumed with its position after every reconnection).
    ///
    /// # Errors
    /// [`SubscribeError::Closed`] once closed, [`SubscribeError::BadName`].
    pub fn subscribe(&self, ch: &str) -> Result<(), SubscribeError> {
        self.command(|s, now| s.subscribe(now, ch))
    }

    /// Leaves `ch`; no more of its messages are delivered.
    pub fn unsubscribe(&self, ch: &str) {
        self.command(|s, now| s.unsubscribe(now, ch));
    }

    /// Publishes `json` (one JSON value, UTF-8: a `&str` or bytes) to `ch`: sent when open, queued (bounded) while
    /// not, resent with the same id after a reconnection until acknowledged
    /// ([`SessionEvent::Acked`] / [`SessionEvent::PublishFailed`]).
    ///
    /// # Errors
    /// [`PublishError::Closed`], [`PublishError::NotJson`], [`PublishError::TooLarge`].
    pub fn publish(&self, ch: &str, json: impl AsRef<[u8]>) -> Result<ClientMsgId, PublishError> {
        let json = std::str::from_utf8(json.as_ref()).map_err(|_| PublishError::NotJson)?;
        self.command(|s, now| s.publish(now, ch, json))
    }

    /// New credentials, used from the next connection (a session waiting for them after an
    /// auth failure reconnects at once).
    pub fn set_credentials(&self, token: &str) {
        self.command(|s, now| s.set_credentials(now, token));
    }

    /// Closes the session for good (a WebSocket gets a 1000 close frame); a
    /// `State(Closed)` event follows, then [`next_event`](Self::next_event) returns `None`.
    pub fn close(&self) {
        self.command(ClientSession::close);
    }

    /// The current state.
    #[must_use]
    pub fn state(&self) -> SessionState {
        self.shared.core().session.state()
    }

    /// Reads the core session (transport, positions, queued publishes, counters…). Keep
    /// `f` short: the driver waits for it.
    pub fn inspect<T>(&self, f: impl FnOnce(&ClientSession) -> T) -> T {
        f(&self.shared.core().session)
    }

    /// The next event, waiting for it. `None` once the session is closed and its
    /// `State(Closed)` event was delivered.
    pub fn next_event(&mut self) -> Option<SessionEvent> {
        self.next_event_until(None)
    }

    /// As [`next_event`](Self::next_event), waiting at most `timeout` (then `None`; look at
    /// [`state`](Self::state) to tell the cases apart).
    pub fn next_event_timeout(&mut self, timeout: Duration) -> Option<SessionEvent> {
        self.next_event_until(Some(Instant::now() + timeout))
    }

    fn next_event_until(&mut self, until: Option<Instant>) -> Option<SessionEvent> {
        if self.finished {
            return None;
        }
        let shared = &self.shared;
        let mut io = shared.core();
        loop {
            if let Some(ev) = io.events.pop_front() {
                // Room: the session's next events, and its sockets may be read again.
                shared.after(&mut io, Instant::now());
                drop(io);
                shared.room_cv.notify_all();
                if let SessionEvent::State(change) = &ev
                    && change.state == SessionState::Closed
                {
                    self.finished = true;
                }
                return Some(ev);
            }
            if io.done {
                self.finished = true;
                return None;
            }
            if until.is_some_and(|t| Instant::now() >= t) {
                return None;
            }
            io = wait_until(&shared.app_cv, io, until);
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.shared.core().stop = true;
        self.shared.driver_cv.notify_all();
        self.shared.room_cv.notify_all();
        if let Some(d) = self.driver.take() {
            let _ = d.join();
        }
    }
}

/// The timer thread: fires the session's deadline; after a close (or the `Session`'s
/// drop), ends once the session closed its sockets.
fn run_timer(shared: &Shared) {
    let mut core = shared.core();
    loop {
        let now = Instant::now();
        if core.stop && core.session.state() != SessionState::Closed {
            core.session.close(now);
            shared.after(&mut core, now);
        }
        if core.session.poll_timeout().is_some_and(|d| d <= now) {
            core.session.handle_timeout(now);
            shared.after(&mut core, now);
        }
        let closed = core.session.state() == SessionState::Closed;
        if (closed && shared.socks.is_empty()) || core.stop {
            break;
        }
        match core.session.poll_timeout() {
            Some(d) if d <= now => {}
            until => core = wait_until(&shared.driver_cv, core, until),
        }
    }
    core.done = true;
    drop(core);
    shared.socks.close_all();
    shared.app_cv.notify_all();
    shared.room_cv.notify_all();
}
