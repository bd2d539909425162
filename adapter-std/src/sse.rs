//! The blocking Server-Sent Events client: [`connect`] to an `http://` event stream and
//! pull events with [`SseConnection::next`]; it reconnects by itself.
//!
//! The adapter drives the core's [`SseClient`], which decides everything EventSource
//! decides (WHATWG HTML §9.2): when to connect and reconnect (the server's `retry:`, backoff
//! with jitter on repeated failures), which `Last-Event-ID` to send, whether a response
//! opens the stream (`200` and `text/event-stream`; any other status or type fails it for
//! good), and when a silent connection is dead (the idle watchdog). The adapter opens the
//! TCP connections, writes the requests, reads the responses and sleeps until the
//! machine's next deadline (a socket read timeout).
//!
//! Response bodies may be close-delimited (what Tidewire servers send), `Content-Length`
//! delimited, or `Transfer-Encoding: chunked`. Redirects are not followed (a `3xx` fails the
//! source) and `https://` is not supported.
//!
//! ```no_run
//! use tidewire_std::sse::{SseOptions, connect};
//! use tidewire_std::tidewire::sse::SseClientEvent;
//!
//! let mut events = connect("http://127.0.0.1:8080/events?ch=ticks", SseOptions::default())?;
//! while let Some(ev) = events.next() {
//!     match ev {
//!         SseClientEvent::Event(e) => println!("{} {}: {}", e.id, e.event, e.data),
//!         SseClientEvent::State(s) => println!("now {:?} ({:?})", s.state, s.reason),
//!         _ => {}
//!     }
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::io::{self, ErrorKind, Read as _, Write as _};
use std::net::TcpStream;
use std::time::{Duration, Instant, SystemTime};

use tidewire::sse::client::{SseResponseReader, sse_request};
use tidewire::sse::{SseAction, SseClient, SseClientConfig, SseClientEvent, SseState};

use crate::ConnectError;

/// The largest response head accepted.
const MAX_HEAD: usize = 16 << 10;
/// Size of the read buffer.
const READ_BUFFER: usize = 16 << 10;
/// A wait when the machine has no deadline and no connection (cannot happen with the
/// current core; kept so that a missing deadline never spins).
const IDLE_WAIT: Duration = Duration::from_secs(1);

pub use tidewire::sse::{SseEvent, StateChange};

/// Settings of [`connect`]. Build with `SseOptions::default()` and change fields.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct SseOptions {
    /// Reconnection time, backoff, idle watchdog (30 s by default), parser limits, 5xx
    /// retries. A zero `rng_seed` is replaced by OS entropy.
    pub client: SseClientConfig,
    /// Extra request headers, e.g. `Authorization` (not `Last-Event-ID`, which the client
    /// manages).
    pub headers: Vec<(String, String)>,
    /// Time to establish each TCP connection, over all resolved addresses (default 10 s).
    pub connect_timeout: Duration,
}

impl Default for SseOptions {
    fn default() -> Self {
        Self {
            client: SseClientConfig::default(),
            headers: Vec::new(),
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// Creates an event-stream client for an `http://host[:port]/path[?query]` URL and makes
/// its first connection attempt: when this returns, the stream is open (the server has
/// subscribed it), is waiting to reconnect (the attempt failed), or was refused for good
/// (the status or type was wrong; [`SseConnection::next`] reports why). The state changes
/// are queued for [`SseConnection::next`].
///
/// # Errors
/// [`ConnectError::Url`] for an invalid URL (or one that is not `http://`) or an extra
/// header that cannot be written; [`ConnectError::Io`] when the OS has no entropy for the
/// backoff's jitter. Network failures are not errors: the client reconnects.
pub fn connect(url: &str, opts: SseOptions) -> Result<SseConnection, ConnectError> {
    let parsed = url::Url::parse(url).map_err(|e| ConnectError::Url(e.to_string()))?;
    if parsed.scheme() != "http" {
        return Err(ConnectError::Url(format!(
            "unsupported scheme `{}` (only http:// is supported)",
            parsed.scheme()
        )));
    }
    let host = parsed.host_str().ok_or_else(|| ConnectError::Url("no host".into()))?;
    let host_header = match parsed.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    };
    let path = &parsed[url::Position::BeforePath..url::Position::AfterQuery];
    let path = if path.is_empty() { "/" } else { path };
    if sse_request(&host_header, path, None, &opts.headers).is_none() {
        return Err(ConnectError::Url("invalid header".into()));
    }
    let mut cfg = opts.client;
    if cfg.rng_seed == [0; 32] {
        getrandom::fill(&mut cfg.rng_seed).map_err(|e| io::Error::other(e.to_string()))?;
    }
    let mut conn = SseConnection {
        client: SseClient::new(cfg, Instant::now()),
        url: parsed.clone(),
        host_header,
        path: path.to_owned(),
        headers: opts.headers,
        connect_timeout: opts.connect_timeout,
        pending_connect: None,
        body: None,
        buf: vec![0; READ_BUFFER].into_boxed_slice(),
    };
    // The first attempt: until the response head is handled (or the attempt failed).
    while matches!(conn.client.state(), SseState::Connecting) {
        conn.take_actions();
        if let Some(last_event_id) = conn.pending_connect.take() {
            conn.open(last_event_id.as_deref());
            continue;
        }
        if conn.body.is_none() {
            break;
        }
        conn.step();
    }
    conn.take_actions();
    Ok(conn)
}

/// A reconnecting event-stream client. See the [module docs](self).
///
/// The client makes progress only inside [`next`](Self::next), which blocks until the next
/// event or state change: keep one thread in a `next` loop.
pub struct SseConnection {
    client: SseClient,
    url: url::Url,
    host_header: String,
    path: String,
    headers: Vec<(String, String)>,
    connect_timeout: Duration,
    /// A `Connect` pulled from the machine and not yet made (with its `Last-Event-ID`).
    pending_connect: Option<Option<String>>,
    /// The current request's connection.
    body: Option<Body>,
    buf: Box<[u8]>,
}

impl std::fmt::Debug for SseConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SseConnection")
            .field("url", &self.url.as_str())
            .field("state", &self.client.state())
            .field("last_event_id", &self.client.last_event_id())
            .finish_non_exhaustive()
    }
}

/// The connection of the current request.
struct Body {
    sock: TcpStream,
    response: SseResponseReader,
    read_timeout: Option<Option<Duration>>,
}

impl SseConnection {
    /// The next event or state change, in order; reconnects by itself as the core
    /// [`SseClient`] decides. `None` once the client is closed for good (a terminal status
    /// or type, the backoff gave up, or [`close`](Self::close)), after its last
    /// `State(Closed)` change was returned.
    #[allow(clippy::should_implement_trait)] // blocking, and `None` is final: not an iterator
    pub fn next(&mut self) -> Option<SseClientEvent> {
        loop {
            self.take_actions();
            if let Some(ev) = self.client.poll_event() {
                return Some(ev);
            }
            if self.client.state() == SseState::Closed {
                self.body = None;
                self.pending_connect = None;
                return None;
            }
            if let Some(last_event_id) = self.pending_connect.take() {
                self.open(last_event_id.as_deref());
                continue;
            }
            self.step();
        }
    }

    /// Closes the client for good: the connection is dropped, no reconnection follows.
    /// [`next`](Self::next) returns the `State(Closed)` change, then `None`.
    pub fn close(&mut self) {
        self.client.close(Instant::now());
        self.take_actions();
        self.body = None;
        self.pending_connect = None;
    }

    /// The current state.
    #[must_use]
    pub fn state(&self) -> SseState {
        self.client.state()
    }

    /// The last event ID (`""` if none): what the next reconnection sends as
    /// `Last-Event-ID`.
    #[must_use]
    pub fn last_event_id(&self) -> String {
        self.client.last_event_id().to_owned()
    }

    /// While reconnecting: when the next attempt starts.
    #[must_use]
    pub fn next_retry_at(&self) -> Option<Instant> {
        self.client.next_retry_at()
    }

    /// Performs the machine's actions: `Disconnect` at once, `Connect` later (after the
    /// events queued before it were returned).
    fn take_actions(&mut self) {
        while let Some(action) = self.client.poll_action() {
            match action {
                SseAction::Connect { last_event_id } => {
                    self.body = None;
                    self.pending_connect = Some(last_event_id);
                }
                SseAction::Disconnect => {
                    self.body = None;
                    self.pending_connect = None;
                }
                _ => {}
            }
        }
    }

    /// Opens a connection and writes the request; a failure is reported to the machine.
    fn open(&mut self, last_event_id: Option<&str>) {
        match self.dial(last_event_id) {
            Ok(sock) => {
                let response = SseResponseReader::new(MAX_HEAD);
                self.body = Some(Body { sock, response, read_timeout: None });
            }
            Err(_) => {
                self.body = None;
                self.client.handle_error(Instant::now());
            }
        }
    }

    fn dial(&self, last_event_id: Option<&str>) -> io::Result<TcpStream> {
        let start = Instant::now();
        let mut last_err = io::Error::new(ErrorKind::NotFound, "the host resolved to no address");
        let mut sock = None;
        for addr in self.url.socket_addrs(|| Some(80))? {
            let left = self.connect_timeout.saturating_sub(start.elapsed());
            if left.is_zero() {
                last_err = io::Error::new(ErrorKind::TimedOut, "connect timed out");
                break;
            }
            match TcpStream::connect_timeout(&addr, left) {
                Ok(s) => {
                    sock = Some(s);
                    break;
                }
                Err(e) => last_err = e,
            }
        }
        let sock = sock.ok_or(last_err)?;
        sock.set_nodelay(true)?;
        let req = sse_request(&self.host_header, &self.path, last_event_id, &self.headers)
            .ok_or(ErrorKind::InvalidData)?;
        sock.set_write_timeout(Some(self.connect_timeout.max(Duration::from_millis(1))))?;
        (&sock).write_all(&req)?;
        Ok(sock)
    }

    /// Waits for bytes of the current connection or the machine's deadline (one mutation).
    fn step(&mut self) {
        let now = Instant::now();
        let deadline = self.client.poll_timeout();
        if deadline.is_some_and(|d| d <= now) {
            self.client.handle_timeout(now);
            return;
        }
        let timeout = deadline.map(|d| (d - now).max(Duration::from_millis(1)));
        let Some(body) = &mut self.body else {
            std::thread::sleep(timeout.unwrap_or(IDLE_WAIT));
            self.client.handle_timeout(Instant::now());
            return;
        };
        if body.read_timeout != Some(timeout) && body.sock.set_read_timeout(timeout).is_ok() {
            body.read_timeout = Some(timeout);
        }
        let result = (&body.sock).read(&mut self.buf);
        let now = Instant::now();
        match result {
            Ok(0) => {
                self.body = None;
                self.client.handle_eof(now);
            }
            Ok(n) => {
                let unix_now = SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                if body.response.feed(now, unix_now, &self.buf[..n], &mut self.client) {
                    self.body = None;
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                self.client.handle_timeout(now);
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => {
                self.body = None;
                self.client.handle_error(now);
            }
        }
    }
}
