//! The Server-Sent Events client: [`connect`] an `http://` URL and read events with
//! [`SseConnection::next`]; it reconnects by itself, with `Last-Event-ID`, as the core's
//! [`SseClient`] decides (EventSource semantics: server `retry:`, backoff with jitter on
//! repeated failures, an idle watchdog, terminal statuses).
//!
//! A task on `SseOptions::executor` (default: smol's global executor) drives the core
//! machine: it opens TCP (`connect_timeout`), writes the `GET` request, reads the response
//! head, feeds the body to the machine and sleeps until the machine's next deadline. Parsed events go to a bounded
//! queue (256 events, plus at most one read's worth); while it is full the task stops
//! reading the socket, so a slow application pushes back on the server through TCP (the idle
//! watchdog is paused meanwhile: the application, not the network, is the bottleneck).
//!
//! Bodies may be close-delimited (Tidewire's servers) or `Transfer-Encoding: chunked`.
//! `https://` is not supported (no TLS in this adapter), and redirects are not followed: a
//! 3xx is a status other than 200, which fails the source.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::io::{self, Read as _, Write as _};
use std::net::TcpStream;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use event_listener::Event as Notify;
use smol::{Async, Executor, Timer, future};
use tidewire::sse::client::{SseResponseReader, sse_request};
use tidewire::sse::{SseAction, SseClient, SseClientConfig, SseClientEvent, SseState, SseTimer};
use url::Url;

use crate::ConnectError;

/// Events queued for the application before the task stops reading the socket.
const MAX_QUEUED: usize = 256;
/// One read of the body at most. Small enough that one read never holds more events than
/// the parser's `max_queued` (1024 by default; an event takes at least 6 bytes).
const READ_BUFFER: usize = 4 << 10;
/// The largest response head accepted.
const MAX_RESPONSE_HEAD: usize = 16 << 10;

/// Settings of [`connect`]. Build it with `SseOptions::default()` and change the fields you
/// need.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct SseOptions {
    /// The EventSource machine: default reconnection time, backoff, idle watchdog, parser
    /// limits, 5xx retries. An all-zero `rng_seed` (the default) is filled from OS entropy.
    pub client: SseClientConfig,
    /// Extra request headers (e.g. `Authorization`), sent on every attempt.
    pub headers: Vec<(String, String)>,
    /// Time for resolving the host, connecting TCP and writing the request of one attempt
    /// (default 10 s); past it the attempt fails as a network error.
    pub connect_timeout: Duration,
    /// The executor that runs the client's task. `None` (the default): smol's global
    /// executor.
    pub executor: Option<Arc<Executor<'static>>>,
}

impl Default for SseOptions {
    fn default() -> Self {
        Self {
            client: SseClientConfig::default(),
            headers: Vec::new(),
            connect_timeout: Duration::from_secs(10),
            executor: None,
        }
    }
}

/// A reconnecting event stream. Read it with [`next`](Self::next); dropping it closes it.
pub struct SseConnection {
    shared: Arc<Shared>,
}

struct Shared {
    inner: Mutex<Inner>,
    /// Something for the application: an event, the end.
    app: Notify,
    /// Something for the task: the queue has room again, `close`.
    task: Notify,
}

struct Inner {
    client: SseClient,
    queue: VecDeque<SseClientEvent>,
    /// The task stopped reading because the queue is full.
    read_paused: bool,
    /// The task ended: nothing more will be queued.
    finished: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Where and what to request.
struct Target {
    url: Url,
    port: u16,
    host_header: String,
    path: String,
    headers: Vec<(String, String)>,
    connect_timeout: Duration,
}

impl Target {
    /// `None`: an ID or header that cannot be written.
    fn request(&self, last_event_id: Option<&str>) -> Option<Vec<u8>> {
        sse_request(&self.host_header, &self.path, last_event_id, &self.headers)
    }
}

/// Opens an `http://` event stream. The first attempt starts at once on a task of
/// `opts.executor` (default: smol's global executor); its progress (and every later reconnection) arrives as
/// [`SseClientEvent::State`] changes from [`SseConnection::next`].
///
/// # Errors
/// [`ConnectError::Url`] for a malformed or non-`http` URL or an extra header that cannot
/// be written; [`ConnectError::Io`] when OS entropy for the seed is unavailable.
#[allow(clippy::unused_async)] // async like the rest of the adapter's API
pub async fn connect(url: &str, opts: SseOptions) -> Result<SseConnection, ConnectError> {
    let url = Url::parse(url).map_err(|e| ConnectError::Url(e.to_string()))?;
    if url.scheme() != "http" {
        return Err(ConnectError::Url(format!(
            "unsupported scheme {:?} (http only)",
            url.scheme()
        )));
    }
    let host = url.host_str().ok_or_else(|| ConnectError::Url("missing host".into()))?;
    let port = url.port_or_known_default().unwrap_or(80);
    let host_header = match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_owned(),
    };
    let mut path = url.path().to_owned();
    if let Some(q) = url.query() {
        path.push('?');
        path.push_str(q);
    }
    if sse_request(&host_header, &path, None, &opts.headers).is_none() {
        return Err(ConnectError::Url("invalid header".into()));
    }
    let mut cfg = opts.client;
    if cfg.rng_seed == [0; 32] {
        getrandom::fill(&mut cfg.rng_seed).map_err(|e| io::Error::other(e.to_string()))?;
    }
    let target = Arc::new(Target {
        url,
        port,
        host_header,
        path,
        headers: opts.headers,
        connect_timeout: opts.connect_timeout,
    });
    let shared = Arc::new(Shared {
        inner: Mutex::new(Inner {
            client: SseClient::new(cfg, Instant::now()),
            queue: VecDeque::new(),
            read_paused: false,
            finished: false,
        }),
        app: Notify::new(),
        task: Notify::new(),
    });
    crate::driver::spawn_on(opts.executor.as_ref(), run(shared.clone(), target));
    Ok(SseConnection { shared })
}

impl SseConnection {
    /// The next event or state change, in order. Reconnections happen by themselves (they
    /// show as `State` changes; events continue after the last one received, without gap or
    /// duplicate when the server resumes exactly). `None` once the client is `Closed` for
    /// good — a terminal status or content type, the backoff gave up, or
    /// [`close`](Self::close) — after the `Closed` state change itself.
    pub async fn next(&mut self) -> Option<SseClientEvent> {
        loop {
            let listener = {
                let mut inner = self.shared.lock();
                if let Some(ev) = inner.queue.pop_front() {
                    let resume = inner.read_paused && inner.queue.len() < MAX_QUEUED;
                    drop(inner);
                    if resume {
                        self.shared.task.notify(1);
                    }
                    return Some(ev);
                }
                if inner.finished {
                    return None;
                }
                self.shared.app.listen()
            };
            listener.await;
        }
    }

    /// Closes the stream for good: the connection is dropped, no more reconnections;
    /// [`next`](Self::next) returns what was queued, the `Closed` change, then `None`.
    pub fn close(&mut self) {
        self.shared.lock().client.close(Instant::now());
        self.shared.task.notify(1);
    }

    /// The client's state.
    #[must_use]
    pub fn state(&self) -> SseState {
        self.shared.lock().client.state()
    }

    /// The last event ID received (as of the events parsed so far; `""` for none): what the
    /// next reconnection sends as `Last-Event-ID`.
    #[must_use]
    pub fn last_event_id(&self) -> String {
        self.shared.lock().client.last_event_id().to_owned()
    }

    /// While reconnecting: when the next attempt starts.
    #[must_use]
    pub fn next_retry_at(&self) -> Option<Instant> {
        self.shared.lock().client.next_retry_at()
    }
}

impl Drop for SseConnection {
    fn drop(&mut self) {
        self.close();
    }
}

impl fmt::Debug for SseConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.shared.lock();
        f.debug_struct("SseConnection")
            .field("state", &inner.client.state())
            .field("last_event_id", &inner.client.last_event_id())
            .finish_non_exhaustive()
    }
}

type Connecting = Pin<Box<dyn Future<Output = io::Result<Async<TcpStream>>> + Send>>;

/// One attempt: TCP connect and the request, within `connect_timeout`.
fn open(target: Arc<Target>, request: Vec<u8>) -> Connecting {
    Box::pin(async move {
        let attempt = async {
            let stream = crate::client::open_tcp(&target.url, target.port).await?;
            stream.get_ref().set_nodelay(true)?;
            let mut rest = &request[..];
            while !rest.is_empty() {
                let n = stream.write_with(|s| (&mut &*s).write(rest)).await?;
                if n == 0 {
                    return Err(io::ErrorKind::WriteZero.into());
                }
                rest = &rest[n..];
            }
            Ok(stream)
        };
        future::or(attempt, async {
            Timer::after(target.connect_timeout).await;
            Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))
        })
        .await
    })
}

/// An open connection: reading the response head, then the body.
struct Conn {
    stream: Async<TcpStream>,
    response: SseResponseReader,
}

impl Conn {
    fn new(stream: Async<TcpStream>) -> Self {
        Self { stream, response: SseResponseReader::new(MAX_RESPONSE_HEAD) }
    }
}

enum Wake {
    Connected(io::Result<Async<TcpStream>>),
    Read(io::Result<usize>),
    Timer,
    Notified,
}

/// The client's task: performs the machine's actions, feeds it the socket and the clock,
/// and queues its events for the application, until the machine is closed.
async fn run(shared: Arc<Shared>, target: Arc<Target>) {
    let mut conn: Option<Conn> = None;
    let mut connecting: Option<Connecting> = None;
    let mut timer = Timer::never();
    let mut armed: Option<Instant> = None;
    let mut rbuf = vec![0u8; READ_BUFFER];
    loop {
        let (listener, deadline, read_ok) = {
            let mut inner = shared.lock();
            while let Some(action) = inner.client.poll_action() {
                match action {
                    SseAction::Connect { last_event_id } => {
                        conn = None;
                        match target.request(last_event_id.as_deref()) {
                            Some(request) => connecting = Some(open(target.clone(), request)),
                            None => inner.client.handle_error(Instant::now()),
                        }
                    }
                    SseAction::Disconnect => {
                        conn = None;
                        connecting = None;
                    }
                    _ => {}
                }
            }
            let mut arrived = false;
            while let Some(ev) = inner.client.poll_event() {
                inner.queue.push_back(ev);
                arrived = true;
            }
            if inner.client.state() == SseState::Closed {
                inner.finished = true;
                drop(inner);
                shared.app.notify(usize::MAX);
                break;
            }
            if arrived {
                shared.app.notify(usize::MAX);
            }
            let paused = inner.queue.len() >= MAX_QUEUED;
            inner.read_paused = paused;
            // While the application is the bottleneck, the idle watchdog waits too.
            let deadline = if paused && inner.client.timeout_reason() == Some(SseTimer::Idle) {
                None
            } else {
                inner.client.poll_timeout()
            };
            (shared.task.listen(), deadline, !paused)
        };
        if deadline != armed {
            match deadline {
                Some(d) => timer.set_at(d),
                None => timer = Timer::never(),
            }
            armed = deadline;
        }

        let wake = {
            let connect = async {
                match &mut connecting {
                    Some(fut) => Wake::Connected(fut.as_mut().await),
                    None => future::pending().await,
                }
            };
            // Before the timer: bytes already received count before an idle verdict.
            let read = async {
                match &conn {
                    Some(c) if read_ok => {
                        Wake::Read(c.stream.read_with(|s| (&mut &*s).read(&mut rbuf)).await)
                    }
                    _ => future::pending().await,
                }
            };
            let fire = async {
                (&mut timer).await;
                Wake::Timer
            };
            let notified = async {
                listener.await;
                Wake::Notified
            };
            future::or(connect, future::or(read, future::or(fire, notified))).await
        };

        let now = Instant::now();
        let mut inner = shared.lock();
        match wake {
            Wake::Connected(Ok(stream)) => {
                connecting = None;
                conn = Some(Conn::new(stream));
            }
            Wake::Connected(Err(_)) => {
                connecting = None;
                inner.client.handle_error(now);
            }
            Wake::Read(Ok(0)) => {
                conn = None;
                inner.client.handle_eof(now);
            }
            Wake::Read(Ok(n)) => {
                let unix_now =
                    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
                if let Some(c) = &mut conn
                    && c.response.feed(now, unix_now, &rbuf[..n], &mut inner.client)
                {
                    conn = None;
                }
            }
            Wake::Read(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
            Wake::Read(Err(_)) => {
                conn = None;
                inner.client.handle_error(now);
            }
            Wake::Timer => {
                armed = None;
                if inner.client.poll_timeout().is_some_and(|d| d <= now) {
                    inner.client.handle_timeout(now);
                }
            }
            Wake::Notified => {}
        }
    }
}
