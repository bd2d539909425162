//! [`Session`]: the core [`ClientSession`] (the reconnecting, transport-falling-back
//! client) driven over TCP sockets by one driver thread.
//!
//! Threads and locks:
//!
//! - The driver thread runs the session's run loop (core/src/client docs): it feeds socket
//!   input and timeouts to the session, writes its transmits (blocking, with
//!   [`SessionOptions::write_timeout`]), opens and closes sockets as its actions say, and
//!   moves its events to the application's queue. It sleeps on one condition variable until
//!   socket input, an application command, room in the event queue, or the session's next
//!   deadline.
//! - Each socket has one thread: it connects (at most
//!   [`SessionOptions::connect_timeout`]), then reads until end of file, handing what it
//!   read to the driver through a bounded inbox ([`SessionOptions::max_inbox`] bytes; a
//!   reader waits while it is full, which holds the server back through TCP). Closing a
//!   socket shuts it down, which ends its thread.
//! - The application's calls lock the session (a mutex), run the command and wake the
//!   driver; they never wait for the network (only for the driver to finish a write).
//! - Events reach the application through a queue bounded by
//!   [`SessionOptions::max_events`]. While it is full the driver reads no more socket input
//!   (timers keep running), so an application that stops reading events slows the session
//!   down instead of growing memory.

use std::collections::{HashMap, VecDeque};
use std::io::{ErrorKind, Read as _, Write as _};
use std::net::{Shutdown, TcpStream, ToSocketAddrs as _};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tidewire::client::{
    ClientMsgId, ClientSession, PublishError, SessionAction, SessionConfig, SessionEvent,
    SessionState, SockId, SubscribeError,
};

use crate::conn::lock;

/// Settings of the adapter's side of a [`Session`]. Build with `SessionOptions::default()`
/// and change fields.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct SessionOptions {
    /// Events queued for [`Session::next_event`] at most (default 1024).
    pub max_events: usize,
    /// Bytes read from sockets and not yet handed to the session at most (default 1 MiB).
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
    core: Mutex<ClientSession>,
    io: Mutex<Io>,
    /// Wakes the driver: input, a command, room for events, the end.
    driver_cv: Condvar,
    /// Wakes the application: an event, or the driver's end.
    app_cv: Condvar,
    /// Wakes readers waiting for room in the inbox.
    reader_cv: Condvar,
    opts: SessionOptions,
}

#[derive(Default)]
struct Io {
    inbox: VecDeque<Input>,
    inbox_bytes: usize,
    /// A command changed the session: run the loop.
    wake: bool,
    events: VecDeque<SessionEvent>,
    /// The driver ended: no more events.
    done: bool,
    /// The `Session` was dropped.
    stop: bool,
}

/// What a socket thread reports.
enum Input {
    Connected(SockId, TcpStream),
    Failed(SockId),
    Read(SockId, Vec<u8>),
    Eof(SockId),
    Error(SockId),
}

impl Shared {
    fn io(&self) -> MutexGuard<'_, Io> {
        lock(&self.io)
    }

    fn wake(&self) {
        self.io().wake = true;
        self.driver_cv.notify_all();
    }

    /// Hands input to the driver, waiting while the inbox is full. `false` once the session
    /// is gone.
    fn push(&self, input: Input) -> bool {
        let len = match &input {
            Input::Read(_, data) => data.len(),
            _ => 0,
        };
        let mut io = self.io();
        while len > 0 && io.inbox_bytes >= self.opts.max_inbox && !io.stop && !io.done {
            io = self.reader_cv.wait(io).unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        if io.stop || io.done {
            return false;
        }
        io.inbox_bytes += len;
        io.inbox.push_back(input);
        drop(io);
        self.driver_cv.notify_all();
        true
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
        let core = ClientSession::new(cfg, Instant::now());
        let shared = Arc::new(Shared {
            core: Mutex::new(core),
            io: Mutex::new(Io::default()),
            driver_cv: Condvar::new(),
            app_cv: Condvar::new(),
            reader_cv: Condvar::new(),
            opts,
        });
        let driver = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("tidewire-session".into())
                .spawn(move || Driver::new(shared).run())
                .expect("spawn the session's driver thread")
        };
        Session { shared, driver: Some(driver), finished: false }
    }

    fn command<T>(&self, f: impl FnOnce(&mut ClientSession, Instant) -> T) -> T {
        let out = f(&mut lock(&self.shared.core), Instant::now());
        self.shared.wake();
        out
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
        lock(&self.shared.core).state()
    }

    /// Reads the core session (transport, positions, queued publishes, counters…). Keep
    /// `f` short: the driver waits for it.
    pub fn inspect<T>(&self, f: impl FnOnce(&ClientSession) -> T) -> T {
        f(&lock(&self.shared.core))
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
        let mut io = shared.io();
        loop {
            if let Some(ev) = io.events.pop_front() {
                drop(io);
                shared.driver_cv.notify_all();
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
            io = match until {
                None => shared.app_cv.wait(io).unwrap_or_else(std::sync::PoisonError::into_inner),
                Some(t) => {
                    let now = Instant::now();
                    if now >= t {
                        return None;
                    }
                    shared
                        .app_cv
                        .wait_timeout(io, t - now)
                        .map_or_else(|p| p.into_inner().0, |r| r.0)
                }
            };
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.shared.io().stop = true;
        self.shared.driver_cv.notify_all();
        self.shared.reader_cv.notify_all();
        if let Some(d) = self.driver.take() {
            let _ = d.join();
        }
    }
}

/// A socket as the driver sees it.
struct Sock {
    /// `None` while its thread connects.
    stream: Option<TcpStream>,
}

struct Driver {
    shared: Arc<Shared>,
    socks: HashMap<SockId, Sock>,
    /// An event taken from the session while the application's queue was full.
    held: Option<SessionEvent>,
    deadline: Option<Instant>,
}

impl Driver {
    fn new(shared: Arc<Shared>) -> Self {
        Self { shared, socks: HashMap::new(), held: None, deadline: None }
    }

    fn run(mut self) {
        let shared = Arc::clone(&self.shared);
        let max_events = shared.opts.max_events.max(1);
        // The first step runs at once: the session queued its first `Connect`.
        let mut first = true;
        loop {
            let (inputs, stop) = {
                let mut io = shared.io();
                loop {
                    if io.stop || first {
                        break;
                    }
                    let room = io.events.len() < max_events;
                    if io.wake || (room && (!io.inbox.is_empty() || self.held.is_some())) {
                        break;
                    }
                    let now = Instant::now();
                    io = match self.deadline {
                        Some(d) if d <= now => break,
                        Some(d) => shared
                            .driver_cv
                            .wait_timeout(io, d - now)
                            .map_or_else(|p| p.into_inner().0, |r| r.0),
                        None => shared
                            .driver_cv
                            .wait(io)
                            .unwrap_or_else(std::sync::PoisonError::into_inner),
                    };
                }
                first = false;
                io.wake = false;
                let inputs: Vec<Input> = if io.events.len() < max_events {
                    io.inbox_bytes = 0;
                    io.inbox.drain(..).collect()
                } else {
                    Vec::new()
                };
                if !inputs.is_empty() {
                    shared.reader_cv.notify_all();
                }
                (inputs, io.stop)
            };
            let mut core = lock(&shared.core);
            let now = Instant::now();
            if stop {
                core.close(now);
                self.drain(&mut core, now);
                break;
            }
            for input in inputs {
                self.feed(&mut core, now, input);
            }
            if core.poll_timeout().is_some_and(|d| d <= now) {
                core.handle_timeout(now);
            }
            self.drain(&mut core, now);
            self.deadline = core.poll_timeout();
            let closed = core.state() == SessionState::Closed;
            {
                let mut io = shared.io();
                while io.events.len() < max_events {
                    let Some(ev) = self.held.take().or_else(|| core.poll_event()) else { break };
                    io.events.push_back(ev);
                }
                if self.held.is_none() && io.events.len() >= max_events {
                    self.held = core.poll_event();
                }
            }
            shared.app_cv.notify_all();
            drop(core);
            if closed && self.socks.is_empty() && self.held.is_none() {
                break;
            }
        }
        for (_, s) in self.socks.drain() {
            if let Some(stream) = s.stream {
                let _ = stream.shutdown(Shutdown::Both);
            }
        }
        shared.io().done = true;
        shared.app_cv.notify_all();
        shared.reader_cv.notify_all();
    }

    fn feed(&mut self, core: &mut ClientSession, now: Instant, input: Input) {
        match input {
            Input::Connected(sock, stream) => {
                let Some(s) = self.socks.get_mut(&sock) else {
                    let _ = stream.shutdown(Shutdown::Both);
                    return;
                };
                let _ = stream.set_nodelay(true);
                let _ = stream.set_write_timeout(Some(self.shared.opts.write_timeout));
                s.stream = Some(stream);
                core.handle_connected(now, sock);
            }
            Input::Failed(sock) => {
                if self.socks.remove(&sock).is_some() {
                    core.handle_error(now, sock);
                }
            }
            Input::Read(sock, data) => {
                if self.socks.contains_key(&sock) {
                    core.handle_read(now, sock, &data);
                }
            }
            Input::Eof(sock) => {
                if self.socks.contains_key(&sock) {
                    core.handle_eof(now, sock);
                }
            }
            Input::Error(sock) => self.fail(core, now, sock),
        }
    }

    fn fail(&mut self, core: &mut ClientSession, now: Instant, sock: SockId) {
        if let Some(s) = self.socks.remove(&sock) {
            if let Some(stream) = s.stream {
                let _ = stream.shutdown(Shutdown::Both);
            }
            core.handle_error(now, sock);
        }
    }

    /// Steps 1–2 of the run loop: writes, then socket actions, until neither has more.
    fn drain(&mut self, core: &mut ClientSession, now: Instant) {
        loop {
            let mut progress = false;
            while let Some((sock, bytes)) = core.poll_transmit() {
                progress = true;
                let written = match self.socks.get(&sock).and_then(|s| s.stream.as_ref()) {
                    Some(mut stream) => stream.write_all(&bytes).is_ok(),
                    None => true, // closed meanwhile: nothing to write to
                };
                if !written {
                    self.fail(core, now, sock);
                }
            }
            while let Some(action) = core.poll_action() {
                progress = true;
                match action {
                    SessionAction::Connect { sock, host, port } => {
                        self.socks.insert(sock, Sock { stream: None });
                        let shared = Arc::clone(&self.shared);
                        let spawned = std::thread::Builder::new()
                            .name("tidewire-session-sock".into())
                            .spawn(move || socket_thread(&shared, sock, &host, port));
                        if spawned.is_err() {
                            self.socks.remove(&sock);
                            core.handle_error(now, sock);
                        }
                    }
                    SessionAction::Close { sock } => {
                        if let Some(Sock { stream: Some(stream) }) = self.socks.remove(&sock) {
                            let _ = stream.shutdown(Shutdown::Both);
                        }
                    }
                    _ => {}
                }
            }
            if !progress {
                return;
            }
        }
    }
}

/// One socket's thread: connect, then read until the end.
fn socket_thread(shared: &Shared, sock: SockId, host: &str, port: u16) {
    let Some(stream) = open(host, port, shared.opts.connect_timeout) else {
        shared.push(Input::Failed(sock));
        return;
    };
    let Ok(reader) = stream.try_clone() else {
        shared.push(Input::Failed(sock));
        return;
    };
    if !shared.push(Input::Connected(sock, stream)) {
        let _ = reader.shutdown(Shutdown::Both);
        return;
    }
    let mut buf = vec![0u8; shared.opts.read_chunk.max(512)];
    loop {
        match (&reader).read(&mut buf) {
            Ok(0) => {
                shared.push(Input::Eof(sock));
                return;
            }
            Ok(n) => {
                if !shared.push(Input::Read(sock, buf[..n].to_vec())) {
                    let _ = reader.shutdown(Shutdown::Both);
                    return;
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => {
                shared.push(Input::Error(sock));
                return;
            }
        }
    }
}

/// A TCP connection to the first address of `host` that answers.
fn open(host: &str, port: u16, timeout: Duration) -> Option<TcpStream> {
    let addrs = (host, port).to_socket_addrs().ok()?;
    addrs.into_iter().find_map(|a| TcpStream::connect_timeout(&a, timeout).ok())
}
