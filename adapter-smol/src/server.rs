//! The server: [`Server`] (accept loop), [`ServerHandle`] (connection count, graceful
//! shutdown), [`Upgrade`] (the application's accept/reject decision) and the routing of a
//! request head to the WebSocket or the plain HTTP handler.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use event_listener::Event as Notify;
use smol::net::{AsyncToSocketAddrs, TcpListener};
use smol::{Async, Executor, Timer, future};
use tidewire::http::{Request, RequestParser};
use tidewire::ws::{CloseCode, UpgradeRequest, WsConfig, WsConnection, WsEvent};
use tidewire::{Machine, Transmit};

use crate::conn::{Shared, WebSocket};
use crate::driver::{Driver, spawn_on};
use crate::http::{HttpLink, HttpRequest};

/// Read buffer of a connection while its request head arrives (the head is small; the
/// full `read_buffer` is allocated once the connection is open).
const HANDSHAKE_READ: usize = 4 << 10;
/// Pause after an `accept` error (e.g. out of file descriptors) before the next attempt.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// Server settings. Build it with `ServerConfig::default()` and change the fields you need.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ServerConfig {
    /// Per-connection WebSocket settings (keepalive on by default; the handshake deadline
    /// `handshake_timeout` also bounds how long a request head may take to arrive).
    pub ws: WsConfig,
    /// Live TCP connections at most (default 10 000); a connection over it is accepted and
    /// closed at once.
    pub max_connections: usize,
    /// Size of each open connection's read buffer at most (default 64 KiB). It starts at
    /// 4 KiB and doubles while reads fill it, so idle connections stay small.
    pub read_buffer: usize,
    /// The executor that runs every task of the server: each connection's handshake task
    /// (and so the handlers, SSE streams and polls) and each driver task. `None` (the
    /// default): smol's global executor. Give the executor that the accept loop itself runs
    /// on (e.g. `smol::block_on(ex.run(server.serve(..)))`) to keep a whole server on one
    /// thread, where no wake-up has to cross threads.
    pub executor: Option<Arc<Executor<'static>>>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            ws: WsConfig::default(),
            max_connections: 10_000,
            read_buffer: 64 << 10,
            executor: None,
        }
    }
}

/// How a graceful shutdown went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Connections that ended within the grace period.
    pub closed: usize,
    /// Connections still alive after the grace period, shut down without a close handshake.
    pub dropped: usize,
}

/// A bound listener. [`serve`](Self::serve) runs the accept loop.
pub struct Server {
    listener: TcpListener,
    shared: Arc<ServerShared>,
}

/// A handle on a running server: `Clone + Send + Sync`.
#[derive(Clone)]
pub struct ServerHandle {
    shared: Arc<ServerShared>,
}

pub(crate) struct ServerShared {
    pub(crate) cfg: ServerConfig,
    local_addr: SocketAddr,
    registry: Mutex<Registry>,
    /// A connection ended.
    changed: Notify,
    /// Shutdown started: the accept loop stops.
    stop: Notify,
    /// Shutdown finished.
    done: Notify,
}

#[derive(Default)]
struct Registry {
    next_id: u64,
    conns: HashMap<u64, Entry>,
    stopping: bool,
    report: Option<ShutdownReport>,
}

struct Entry {
    stream: Arc<Async<TcpStream>>,
    /// What shutdown tells the connection; `None` while its head is being read.
    link: Option<Link>,
}

/// How shutdown reaches a connection past its request head.
enum Link {
    /// An accepted WebSocket: closed with 1001.
    Ws(Weak<Shared>),
    /// A plain HTTP request: told to stop (SSE streams end, held polls are answered).
    Http(Weak<HttpLink>),
}

/// A live TCP connection's place in the registry; dropping it deregisters the connection.
pub(crate) struct Registration {
    pub(crate) server: Arc<ServerShared>,
    id: u64,
}

impl ServerShared {
    fn registry(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Registration {
    /// Registers a new connection, or `None` when over `max_connections` or shutting down.
    fn new(server: &Arc<ServerShared>, stream: &Arc<Async<TcpStream>>) -> Option<Self> {
        let mut reg = server.registry();
        if reg.stopping || reg.conns.len() >= server.cfg.max_connections {
            return None;
        }
        let id = reg.next_id;
        reg.next_id += 1;
        reg.conns.insert(id, Entry { stream: stream.clone(), link: None });
        Some(Self { server: server.clone(), id })
    }

    /// Links the open connection, so shutdown can close it with 1001; closes it at once when
    /// the shutdown already started.
    fn attach(&self, shared: &Arc<Shared>) {
        let mut reg = self.server.registry();
        if let Some(entry) = reg.conns.get_mut(&self.id) {
            entry.link = Some(Link::Ws(Arc::downgrade(shared)));
        }
        if reg.stopping {
            close_going_away(shared);
        }
    }

    /// Links a plain HTTP request, so shutdown can tell it to stop; tells it at once when
    /// the shutdown already started.
    fn attach_http(&self, link: &Arc<HttpLink>) {
        let mut reg = self.server.registry();
        if let Some(entry) = reg.conns.get_mut(&self.id) {
            entry.link = Some(Link::Http(Arc::downgrade(link)));
        }
        if reg.stopping {
            link.stop();
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.server.registry().conns.remove(&self.id);
        self.server.changed.notify(usize::MAX);
    }
}

fn close_going_away(shared: &Shared) {
    let mut inner = shared.lock();
    let _ = inner.conn.close(Instant::now(), CloseCode::GOING_AWAY, "server shutdown");
    drop(inner);
    shared.wake.notify(1);
}

impl Server {
    /// Binds a listener.
    ///
    /// # Errors
    /// The address cannot be resolved or bound.
    pub async fn bind(addr: impl AsyncToSocketAddrs, cfg: ServerConfig) -> io::Result<Server> {
        let listener = TcpListener::bind(addr).await?;
        let local_addr = listener.local_addr()?;
        let shared = Arc::new(ServerShared {
            cfg,
            local_addr,
            registry: Mutex::new(Registry::default()),
            changed: Notify::new(),
            stop: Notify::new(),
            done: Notify::new(),
        });
        Ok(Server { listener, shared })
    }

    /// The bound address (with the port the OS chose for port 0).
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    /// A handle to count connections and shut the server down.
    #[must_use]
    pub fn handle(&self) -> ServerHandle {
        ServerHandle { shared: self.shared.clone() }
    }

    /// Runs the accept loop until [`ServerHandle::shutdown`]. Every TCP connection gets its
    /// own task on [`ServerConfig::executor`] (default: smol's global executor): it reads the
    /// request head under the handshake deadline (answering malformed, oversized or late
    /// heads with 400/431/505/408), then runs `handler(upgrade)` to completion on that task. The handler decides with
    /// [`Upgrade::accept`] or [`Upgrade::reject`]; the accepted connection is driven by a
    /// task of its own, so the handler may keep the [`WebSocket`] or hand it elsewhere.
    ///
    /// A request that is not a WebSocket upgrade gets the core's handshake error response
    /// (400 "missing Upgrade: websocket", 405 for another method…); use
    /// [`serve_with`](Self::serve_with) to serve plain HTTP requests as well.
    ///
    /// Returns `Ok(())` once the shutdown has finished.
    ///
    /// # Errors
    /// None at present: `accept` errors (e.g. out of file descriptors) pause the loop
    /// briefly and it goes on.
    pub async fn serve<F, Fut>(self, handler: F) -> io::Result<()>
    where
        F: Fn(Upgrade) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.serve_with(handler, |req: HttpRequest| async move {
            let _ = req.reject_as_websocket().await;
        })
        .await
    }

    /// Like [`serve`](Self::serve), with a handler for plain HTTP requests (SSE, polling,
    /// pages, APIs): a request head without `Upgrade: websocket` becomes an
    /// [`HttpRequest`] and `http(request)` runs to completion on the connection's task.
    /// The handler answers with [`HttpRequest::respond`], or hands the request to
    /// [`Channels::serve_sse`](crate::Channels::serve_sse) /
    /// [`Channels::serve_poll`](crate::Channels::serve_poll). One request per connection:
    /// the connection closes after the response.
    ///
    /// # Errors
    /// As [`serve`](Self::serve).
    pub async fn serve_with<W, WFut, H, HFut>(self, ws: W, http: H) -> io::Result<()>
    where
        W: Fn(Upgrade) -> WFut + Send + Sync + 'static,
        WFut: Future<Output = ()> + Send + 'static,
        H: Fn(HttpRequest) -> HFut + Send + Sync + 'static,
        HFut: Future<Output = ()> + Send + 'static,
    {
        let handlers = Arc::new((ws, http));
        let shared = self.shared;
        loop {
            let stop = shared.stop.listen();
            if shared.registry().stopping {
                break;
            }
            let accepted = future::or(async { Some(self.listener.accept().await) }, async {
                stop.await;
                None
            })
            .await;
            match accepted {
                None => break,
                Some(Ok((stream, peer))) => {
                    let _ = stream.set_nodelay(true);
                    let stream: Arc<Async<TcpStream>> = stream.into();
                    // Over the limit or shutting down: dropped at once.
                    let Some(registration) = Registration::new(&shared, &stream) else {
                        continue;
                    };
                    let task = handshake(stream, peer, registration, handlers.clone());
                    spawn_on(shared.cfg.executor.as_ref(), task);
                }
                Some(Err(_)) => {
                    Timer::after(ACCEPT_ERROR_PAUSE).await;
                }
            }
        }
        drop(self.listener);
        loop {
            let done = shared.done.listen();
            if shared.registry().report.is_some() {
                return Ok(());
            }
            done.await;
        }
    }
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server").field("local_addr", &self.shared.local_addr).finish()
    }
}

impl ServerHandle {
    /// The bound address.
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    /// Live TCP connections, including those still in the opening handshake.
    #[must_use]
    pub fn connections(&self) -> usize {
        self.shared.registry().conns.len()
    }

    /// Graceful shutdown: stops accepting, closes every open WebSocket with 1001
    /// ("server shutdown"), ends every SSE stream (after what is queued), answers every held
    /// long poll, closes every connection still in its handshake at once, waits up to
    /// `grace` for them to end, then shuts the rest down. [`Server::serve`] returns after it.
    /// A second call waits for the first and returns the same report.
    pub async fn shutdown(&self, grace: Duration) -> ShutdownReport {
        let shared = &self.shared;
        let total = {
            let mut reg = shared.registry();
            if reg.stopping {
                None
            } else {
                reg.stopping = true;
                for entry in reg.conns.values() {
                    match &entry.link {
                        Some(Link::Ws(link)) => {
                            if let Some(link) = link.upgrade() {
                                close_going_away(&link);
                            }
                        }
                        Some(Link::Http(link)) => {
                            if let Some(link) = link.upgrade() {
                                link.stop();
                            }
                        }
                        None => {
                            let _ = entry.stream.get_ref().shutdown(Shutdown::Both);
                        }
                    }
                }
                Some(reg.conns.len())
            }
        };
        let Some(total) = total else {
            return self.wait_report().await;
        };
        shared.stop.notify(usize::MAX);

        let deadline = Instant::now() + grace;
        loop {
            let changed = shared.changed.listen();
            if shared.registry().conns.is_empty() {
                break;
            }
            let expired = future::or(
                async {
                    changed.await;
                    false
                },
                async {
                    Timer::at(deadline).await;
                    true
                },
            )
            .await;
            if expired || Instant::now() >= deadline {
                break;
            }
        }

        let mut reg = shared.registry();
        let dropped = reg.conns.len();
        for entry in reg.conns.values() {
            let _ = entry.stream.get_ref().shutdown(Shutdown::Both);
            if let Some(Link::Ws(link)) = &entry.link
                && let Some(link) = link.upgrade()
            {
                link.lock().killed = true;
                link.wake.notify(1);
            }
        }
        let report = ShutdownReport { closed: total.saturating_sub(dropped), dropped };
        reg.report = Some(report);
        drop(reg);
        shared.done.notify(usize::MAX);
        report
    }

    async fn wait_report(&self) -> ShutdownReport {
        loop {
            let done = self.shared.done.listen();
            if let Some(report) = self.shared.registry().report {
                return report;
            }
            done.await;
        }
    }
}

impl fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerHandle")
            .field("local_addr", &self.shared.local_addr)
            .field("connections", &self.connections())
            .finish()
    }
}

/// A complete upgrade request awaiting the application's decision:
/// [`accept`](Self::accept) or [`reject`](Self::reject). Dropping it closes the TCP
/// connection without a response.
pub struct Upgrade {
    conn: WsConnection,
    stream: Arc<Async<TcpStream>>,
    request: UpgradeRequest,
    peer: SocketAddr,
    registration: Registration,
    read_buffer: usize,
    close_timeout: Duration,
}

impl Upgrade {
    /// The request: path, query, headers, `token()`, `origin()`, `protocols()`…
    #[must_use]
    pub fn request(&self) -> &UpgradeRequest {
        &self.request
    }

    /// The peer's address.
    #[must_use]
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    /// Accepts the upgrade with an optional subprotocol (one the client offered) and extra
    /// response headers. The 101 response is written by the connection's driver task, which
    /// starts here.
    ///
    /// # Errors
    /// `InvalidInput` for a subprotocol the client did not offer or a header that cannot be
    /// written; the TCP connection is then closed.
    #[allow(clippy::unused_async)] // async like the rest of the adapter's API
    pub async fn accept(
        self,
        subprotocol: Option<&str>,
        headers: &[(&str, &str)],
    ) -> io::Result<WebSocket> {
        let Upgrade { mut conn, stream, peer, registration, read_buffer, close_timeout, .. } = self;
        conn.accept(Instant::now(), subprotocol, headers)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let shared = Arc::new(Shared::new(conn, peer));
        let subprotocol = {
            let mut inner = shared.lock();
            shared.absorb_events(&mut inner);
            inner.opened.clone().flatten()
        };
        registration.attach(&shared);
        let executor = registration.server.cfg.executor.clone();
        Driver {
            stream,
            shared: shared.clone(),
            read_buffer,
            close_timeout,
            registration: Some(registration),
            executor,
        }
        .spawn();
        Ok(WebSocket::new(shared, subprotocol))
    }

    /// Rejects the upgrade with an HTTP `status` (e.g. 401, 403, 429), extra headers (e.g.
    /// `WWW-Authenticate`) and a body; writes the response (for at most
    /// `WsConfig::close_timeout`) and closes the connection.
    ///
    /// # Errors
    /// `InvalidInput` for a status outside 100–599, 101, or a header that cannot be written;
    /// the write's error when the peer is gone.
    pub async fn reject(
        self,
        status: u16,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> io::Result<()> {
        let Upgrade { mut conn, stream, close_timeout, .. } = self;
        conn.reject(Instant::now(), status, headers, body)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let (out, _) = drain(&mut conn);
        let result = write_all_until(&stream, out, Instant::now() + close_timeout).await;
        let _ = stream.get_ref().shutdown(Shutdown::Both);
        result
    }
}

impl fmt::Debug for Upgrade {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upgrade")
            .field("peer", &self.peer)
            .field("request", &self.request)
            .finish_non_exhaustive()
    }
}

/// Everything the core queued, and whether it asked for `Shutdown`.
fn drain(conn: &mut WsConnection) -> (Vec<Bytes>, bool) {
    let mut out = Vec::new();
    while let Some(t) = conn.poll_transmit() {
        match t {
            Transmit::Bytes(b) => out.push(b),
            Transmit::Shutdown => return (out, true),
            _ => {}
        }
    }
    (out, false)
}

/// Writes `chunks`, giving up at `deadline`.
pub(crate) async fn write_all_until(
    stream: &Async<TcpStream>,
    chunks: Vec<Bytes>,
    deadline: Instant,
) -> io::Result<()> {
    let write = async {
        for chunk in &chunks {
            let mut rest = &chunk[..];
            while !rest.is_empty() {
                let n = stream.write_with(|s| io::Write::write(&mut &*s, rest)).await?;
                if n == 0 {
                    return Err(io::ErrorKind::WriteZero.into());
                }
                rest = &rest[n..];
            }
        }
        Ok(())
    };
    future::or(write, async {
        Timer::at(deadline).await;
        Err(io::ErrorKind::TimedOut.into())
    })
    .await
}

/// Reads a request head under `deadline`; answers a bad or late head (400/431/505/408)
/// and returns `None`. Returns the request and the bytes that followed its head.
async fn read_head(
    stream: &Async<TcpStream>,
    max_head: usize,
    deadline: Instant,
    close_timeout: Duration,
) -> Option<(Request, Vec<u8>)> {
    let mut parser = RequestParser::new(max_head);
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; HANDSHAKE_READ];
    let failure = loop {
        let read = future::or(
            async { Some(stream.read_with(|s| io::Read::read(&mut &*s, &mut chunk)).await) },
            async {
                Timer::at(deadline).await;
                None
            },
        )
        .await;
        match read {
            None => break Some((408, "request head timed out".to_owned())),
            Some(Ok(0)) => break None,
            Some(Ok(n)) => {
                buf.extend_from_slice(&chunk[..n]);
                match parser.parse(&buf) {
                    Ok(Some((req, len))) => return Some((req, buf.split_off(len))),
                    Ok(None) => {}
                    Err(e) => break Some((e.status(), e.to_string())),
                }
            }
            Some(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
            Some(Err(_)) => break None,
        }
    };
    if let Some((status, text)) = failure
        && let Ok(answer) = tidewire::http::response(status, &[], format!("{text}\n").as_bytes())
    {
        let _ = write_all_until(stream, vec![answer], Instant::now() + close_timeout).await;
    }
    None
}

/// One TCP connection until the application's handler returns: reads the request head
/// under the handshake deadline, then routes it: a WebSocket upgrade to the `ws` handler
/// as an [`Upgrade`], anything else to the `http` handler as an [`HttpRequest`].
async fn handshake<W, WFut, H, HFut>(
    stream: Arc<Async<TcpStream>>,
    peer: SocketAddr,
    registration: Registration,
    handlers: Arc<(W, H)>,
) where
    W: Fn(Upgrade) -> WFut + Send + Sync + 'static,
    WFut: Future<Output = ()> + Send + 'static,
    H: Fn(HttpRequest) -> HFut + Send + Sync + 'static,
    HFut: Future<Output = ()> + Send + 'static,
{
    let cfg = &registration.server.cfg;
    let close_timeout = cfg.ws.close_timeout;
    let read_buffer = cfg.read_buffer;
    let deadline = Instant::now() + cfg.ws.handshake_timeout;
    let Some((request, rest)) =
        read_head(&stream, cfg.ws.max_handshake, deadline, close_timeout).await
    else {
        let _ = stream.get_ref().shutdown(Shutdown::Both);
        return;
    };

    if !request.is_websocket_upgrade() {
        let link = Arc::new(HttpLink::default());
        registration.attach_http(&link);
        let req = HttpRequest::new(stream, peer, request, rest, registration, link);
        (handlers.1)(req).await;
        return;
    }

    let mut ws_cfg = cfg.ws.clone();
    if crate::seed(&mut ws_cfg).is_err() {
        let _ = stream.get_ref().shutdown(Shutdown::Both);
        return;
    }
    let now = Instant::now();
    let mut conn = WsConnection::server_for(ws_cfg, now, request);
    if !rest.is_empty() {
        conn.handle_read(now, &rest);
    }
    drop(rest);
    let mut request = None;
    while let Some(ev) = conn.poll_event() {
        if let WsEvent::UpgradeRequested(req) = ev {
            request = Some(req);
        }
    }
    // Only the core's error responses (400, 426…) are written here.
    let (out, shutdown) = drain(&mut conn);
    let written = out.is_empty()
        || write_all_until(&stream, out, Instant::now() + close_timeout).await.is_ok();
    let Some(request) = request.filter(|_| written && !shutdown) else {
        let _ = stream.get_ref().shutdown(Shutdown::Both);
        return;
    };
    let upgrade = Upgrade { conn, stream, request, peer, registration, read_buffer, close_timeout };
    (handlers.0)(upgrade).await;
}
