//! [`Server`]: the accept loop, one thread per connection, the registry behind
//! [`ServerHandle::connections`] and [`ServerHandle::shutdown`].

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::{
    IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs,
};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use tidewire::Machine as _;
use tidewire::ws::{UpgradeRequest, WsConfig, WsConnection, WsEvent};

use crate::conn::{Conn, Flush, Reader, io_error, lock};
use crate::http::{self, Head, HttpLimits, HttpRequest};
use crate::socket::{Link, WebSocket};

/// How long `shutdown` waits for connection threads after shutting their sockets down.
const REAP: Duration = Duration::from_secs(1);
/// Pause after an `accept` error that may be a lack of resources (e.g. no file descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);

/// Settings of a [`Server`]. Build with `ServerConfig::default()` and change fields.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ServerConfig {
    /// Limits and timeouts of each connection (keepalive on by default). A zero
    /// `rng_seed` is replaced by OS entropy for every connection.
    pub ws: WsConfig,
    /// Most live TCP connections, those still in their opening handshake included (default
    /// 10 000). A connection over the limit is accepted and dropped at once.
    pub max_connections: usize,
    /// Size of each connection's read buffer (default 64 KiB).
    pub read_buffer: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self { ws: WsConfig::default(), max_connections: 10_000, read_buffer: 64 << 10 }
    }
}

/// How a [`ServerHandle::shutdown`] went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Connections that ended within the grace period (those still in their opening
    /// handshake are ended at once and counted here).
    pub closed: usize,
    /// Connections still alive when the grace period ran out: their sockets were shut down.
    pub dropped: usize,
}

struct Registry {
    conns: HashMap<u64, Arc<Tracked>>,
    next_id: u64,
}

pub(crate) struct Shared {
    local: SocketAddr,
    registry: Mutex<Registry>,
    /// Notified whenever a connection leaves the registry.
    left: Condvar,
    stop: AtomicBool,
    /// `Some` once a shutdown finished.
    finished: Mutex<Option<ShutdownReport>>,
    finished_cv: Condvar,
}

impl Shared {
    /// Whether a shutdown began.
    pub(crate) fn is_stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }
}

/// Removes a connection from the registry when its thread ends (however it ends).
struct Registered {
    shared: Arc<Shared>,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        lock(&self.shared.registry).conns.remove(&self.id);
        self.shared.left.notify_all();
    }
}

/// A long-lived HTTP response (an SSE stream, a held long poll) as the server's shutdown
/// sees it.
pub(crate) trait Held: Send + Sync {
    /// The server is shutting down: end gracefully (a stream is closed after what is queued,
    /// a held poll is answered with "nothing new").
    fn shutdown_by_server(&self);
    /// The grace period ran out and the socket is shut down: wake whoever waits.
    fn abort(&self);
}

/// What a registered connection carries at the moment.
#[derive(Clone)]
pub(crate) enum Role {
    /// Its request head is being read.
    Head,
    /// A plain HTTP request in the application's handler (or being answered).
    Http,
    /// A WebSocket connection, from the upgrade request on.
    Ws(Arc<Conn>),
    /// A long-lived response.
    Held(Arc<dyn Held>),
}

/// One TCP connection in the registry behind [`ServerHandle::connections`] and
/// [`ServerHandle::shutdown`], whatever protocol it turned out to speak.
pub(crate) struct Tracked {
    pub(crate) stream: Arc<TcpStream>,
    role: Mutex<Role>,
}

impl Tracked {
    pub(crate) fn set_role(&self, role: Role) {
        *lock(&self.role) = role;
    }

    fn role(&self) -> Role {
        lock(&self.role).clone()
    }

    /// Graceful: 1001 for an open WebSocket, the end of a stream, an answer to a held poll;
    /// a connection still reading its head is dropped at once.
    fn shutdown_by_server(&self) {
        match self.role() {
            Role::Head => {
                let _ = self.stream.shutdown(Shutdown::Both);
            }
            Role::Http => {}
            Role::Ws(conn) => conn.shutdown_by_server(),
            Role::Held(held) => held.shutdown_by_server(),
        }
    }

    /// Shuts the socket down at once.
    fn abort(&self) {
        match self.role() {
            Role::Ws(conn) => conn.abort(),
            Role::Held(held) => {
                let _ = self.stream.shutdown(Shutdown::Both);
                held.abort();
            }
            Role::Head | Role::Http => {
                let _ = self.stream.shutdown(Shutdown::Both);
            }
        }
    }
}

/// A bound listener. [`serve`](Self::serve) or [`serve_with`](Self::serve_with) runs its
/// accept loop; a [`ServerHandle`] (taken before) stops it.
///
/// Every TCP connection gets its own thread. It reads the request head under the handshake
/// deadline (`WsConfig::handshake_timeout`, at most `WsConfig::max_handshake` bytes; a peer
/// that trickles its head is cut off with 408), answers a malformed or oversized head itself
/// (400, 431…), then routes the request: a WebSocket upgrade goes to the handler with an
/// [`Upgrade`], any other request to the HTTP handler of `serve_with` with an
/// [`HttpRequest`]. The handler then runs on that thread for as long as the connection
/// lives (an SSE stream included).
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    cfg: ServerConfig,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").field("local", &self.local).finish_non_exhaustive()
    }
}

impl Server {
    /// Binds a listener.
    ///
    /// # Errors
    /// Whatever `TcpListener::bind` returns.
    pub fn bind(addr: impl ToSocketAddrs, cfg: ServerConfig) -> io::Result<Server> {
        let listener = TcpListener::bind(addr)?;
        let local = listener.local_addr()?;
        let shared = Arc::new(Shared {
            local,
            registry: Mutex::new(Registry { conns: HashMap::new(), next_id: 0 }),
            left: Condvar::new(),
            stop: AtomicBool::new(false),
            finished: Mutex::new(None),
            finished_cv: Condvar::new(),
        });
        Ok(Server { listener, cfg, shared })
    }

    /// The address the listener is bound to.
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local
    }

    /// A handle to count connections and shut the server down from another thread.
    #[must_use]
    pub fn handle(&self) -> ServerHandle {
        ServerHandle { shared: Arc::clone(&self.shared) }
    }

    /// Runs the accept loop until [`ServerHandle::shutdown`], calling `handler` on each
    /// connection's own thread once its upgrade request is complete. Returns `Ok(())` after
    /// the shutdown finished.
    ///
    /// Every request goes to the WebSocket handshake: one that is not a valid upgrade is
    /// answered by it (`426` without `Upgrade: websocket`, `405` for another method…). Use
    /// [`serve_with`](Self::serve_with) to serve plain HTTP requests too.
    ///
    /// # Errors
    /// An `accept` error that is neither transient nor a lack of resources.
    pub fn serve<F>(self, handler: F) -> io::Result<()>
    where
        F: Fn(Upgrade) + Send + Sync + 'static,
    {
        self.run(&Arc::new(Handlers { ws: handler, http: None::<fn(HttpRequest)> }))
    }

    /// Like [`serve`](Self::serve), with a handler for plain HTTP requests (SSE streams,
    /// polling, pages, APIs): a request with `Upgrade: websocket` goes to `ws`, any other to
    /// `http` (on the connection's own thread, as for upgrades). The handler answers with
    /// [`HttpRequest::respond`], [`Channels::serve_sse`](crate::Channels::serve_sse) or
    /// [`Channels::serve_poll`](crate::Channels::serve_poll); the connection closes after
    /// the response.
    ///
    /// # Errors
    /// As [`serve`](Self::serve).
    pub fn serve_with<W, H>(self, ws: W, http: H) -> io::Result<()>
    where
        W: Fn(Upgrade) + Send + Sync + 'static,
        H: Fn(HttpRequest) + Send + Sync + 'static,
    {
        self.run(&Arc::new(Handlers { ws, http: Some(http) }))
    }

    fn run<W, H>(self, handlers: &Arc<Handlers<W, H>>) -> io::Result<()>
    where
        W: Fn(Upgrade) + Send + Sync + 'static,
        H: Fn(HttpRequest) + Send + Sync + 'static,
    {
        let shared = &self.shared;
        while !shared.stop.load(Ordering::Acquire) {
            let (stream, peer) = match self.listener.accept() {
                Ok(accepted) => accepted,
                Err(e) => match e.kind() {
                    io::ErrorKind::Interrupted
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::ConnectionReset
                    | io::ErrorKind::WouldBlock => continue,
                    _ if is_resource_error(&e) => {
                        std::thread::sleep(ACCEPT_BACKOFF);
                        continue;
                    }
                    _ => return Err(e),
                },
            };
            if shared.stop.load(Ordering::Acquire) {
                break;
            }
            self.spawn_connection(stream, peer, handlers);
        }
        drop(self.listener);
        let mut fin = lock(&shared.finished);
        while fin.is_none() {
            fin = shared.finished_cv.wait(fin).unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        Ok(())
    }

    fn spawn_connection<W, H>(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
        handlers: &Arc<Handlers<W, H>>,
    ) where
        W: Fn(Upgrade) + Send + Sync + 'static,
        H: Fn(HttpRequest) + Send + Sync + 'static,
    {
        let mut cfg = self.cfg.ws.clone();
        if cfg.rng_seed == [0; 32] && getrandom::fill(&mut cfg.rng_seed).is_err() {
            return; // no entropy: refuse rather than use predictable keys
        }
        let _ = stream.set_nodelay(true);
        let tracked = Arc::new(Tracked { stream: Arc::new(stream), role: Mutex::new(Role::Head) });
        let shared = Arc::clone(&self.shared);
        let id = {
            let mut reg = lock(&shared.registry);
            if reg.conns.len() >= self.cfg.max_connections {
                return; // over the limit: the socket is dropped here
            }
            let id = reg.next_id;
            reg.next_id += 1;
            reg.conns.insert(id, Arc::clone(&tracked));
            id
        };
        let guard = Registered { shared, id };
        let read_buffer = self.cfg.read_buffer;
        let handlers = Arc::clone(handlers);
        let spawned = std::thread::Builder::new().name("tidewire-conn".into()).spawn(move || {
            let shared = Arc::clone(&guard.shared);
            let accepted = Accepted { tracked, peer, cfg, read_buffer };
            run_connection(accepted, shared, &handlers);
            drop(guard);
        });
        // On failure the closure (and with it the guard and the socket) is dropped.
        drop(spawned);
    }
}

/// The application's handlers.
struct Handlers<W, H> {
    ws: W,
    /// `None`: every request goes to the WebSocket handshake (`serve`).
    http: Option<H>,
}

/// A connection fresh from `accept`, registered.
struct Accepted {
    tracked: Arc<Tracked>,
    peer: SocketAddr,
    cfg: WsConfig,
    read_buffer: usize,
}

fn is_resource_error(e: &io::Error) -> bool {
    // EMFILE, ENFILE, ENOBUFS, ENOMEM: wait for resources instead of spinning.
    matches!(e.raw_os_error(), Some(23 | 24 | 105 | 12)) || e.kind() == io::ErrorKind::OutOfMemory
}

/// A connection's thread: reads the request head under the handshake deadline, then routes
/// it: an upgrade (or any request, without an HTTP handler) to the WebSocket handshake and
/// `ws`, anything else to `http`.
fn run_connection<W, H>(acc: Accepted, shared: Arc<Shared>, handlers: &Handlers<W, H>)
where
    W: Fn(Upgrade),
    H: Fn(HttpRequest),
{
    let Accepted { tracked, peer, cfg, read_buffer } = acc;
    let limits = HttpLimits::from_ws(&cfg);
    let deadline = Instant::now() + cfg.handshake_timeout;
    let (request, early) = match http::read_head(&tracked.stream, cfg.max_handshake, deadline) {
        Head::Request(request, early) => (request, early),
        Head::Answer(response) => {
            tracked.set_role(Role::Http);
            http::answer_and_close(&tracked.stream, &response, &limits);
            return;
        }
        Head::Gone => return,
    };
    match &handlers.http {
        Some(http_handler) if !request.is_websocket_upgrade() => {
            tracked.set_role(Role::Http);
            let req = HttpRequest::new(request, early, peer, Arc::clone(&tracked), &shared, limits);
            if shared.is_stopping() {
                let _ = req.respond(503, &[("Retry-After", "1")], b"server shutting down\n");
            } else {
                http_handler(req);
            }
        }
        _ => {
            let timeouts = (cfg.send_timeout, cfg.close_timeout);
            let now = Instant::now();
            let mut machine = WsConnection::server_for(cfg, now, request);
            if !early.is_empty() {
                machine.handle_read(now, &early);
            }
            let conn = Arc::new(Conn::new(Arc::clone(&tracked.stream), peer, machine, timeouts));
            {
                let mut st = conn.lock_state();
                conn.after_mutation(&mut st, now);
            }
            tracked.set_role(Role::Ws(Arc::clone(&conn)));
            let link = Link { conn, reader: Reader::new(read_buffer) };
            run_upgrade(link, shared, &handlers.ws);
        }
    }
}

/// The WebSocket path: waits for the machine's verdict on the request, then hands a valid
/// upgrade to the handler.
fn run_upgrade<F: Fn(Upgrade)>(mut link: Link, shared: Arc<Shared>, handler: &F) {
    loop {
        match link.next_event() {
            WsEvent::UpgradeRequested(request) => {
                let stopping = shared.stop.load(Ordering::Acquire);
                let upgrade = Upgrade { link, request, shared };
                if stopping {
                    let _ = upgrade.reject(503, &[("Retry-After", "1")], b"server shutting down\n");
                } else {
                    handler(upgrade);
                }
                return;
            }
            WsEvent::Closed(_) => return, // the core answered (400, 405, 426…) or the peer left
            _ => {}
        }
    }
}

/// Controls a running [`Server`] from any thread.
#[derive(Clone, Debug)]
pub struct ServerHandle {
    shared: Arc<Shared>,
}

impl ServerHandle {
    /// The address the listener is bound to.
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local
    }

    /// Live TCP connections, those still in their opening handshake included. A connection
    /// leaves the count when its thread (the handler) returns.
    #[must_use]
    pub fn connections(&self) -> usize {
        lock(&self.shared.registry).conns.len()
    }

    /// Graceful shutdown: stops accepting, closes every open WebSocket with 1001 ("server
    /// shutdown"), ends every SSE stream (after what is queued; clients reconnect), answers
    /// every held long poll ("nothing new") and drops the connections still reading their
    /// request head; waits up to `grace` for the connections to finish (plain HTTP handlers
    /// included), then shuts the rest down (and waits briefly for their threads).
    /// [`Server::serve`] returns once this is done. A second call waits for the first one and
    /// returns the same report.
    pub fn shutdown(&self, grace: Duration) -> ShutdownReport {
        let shared = &self.shared;
        if shared.stop.swap(true, Ordering::AcqRel) {
            let mut fin = lock(&shared.finished);
            loop {
                if let Some(report) = *fin {
                    return report;
                }
                fin =
                    shared.finished_cv.wait(fin).unwrap_or_else(std::sync::PoisonError::into_inner);
            }
        }
        wake_accept(shared.local);
        let start = Instant::now();
        let first: Vec<(u64, Arc<Tracked>)> =
            lock(&shared.registry).conns.iter().map(|(id, c)| (*id, Arc::clone(c))).collect();
        let mut seen: HashSet<u64> = first.iter().map(|(id, _)| *id).collect();
        for (_, conn) in &first {
            conn.shutdown_by_server();
        }
        drop(first);
        let remaining = wait_for_empty(shared, start + grace);
        seen.extend(remaining.iter().map(|(id, _)| *id));
        for (_, conn) in &remaining {
            conn.abort();
        }
        let report =
            ShutdownReport { closed: seen.len() - remaining.len(), dropped: remaining.len() };
        drop(remaining);
        wait_for_empty(shared, Instant::now() + REAP);
        *lock(&shared.finished) = Some(report);
        shared.finished_cv.notify_all();
        report
    }
}

/// Waits until no connection is registered or `until`; returns those still registered.
fn wait_for_empty(shared: &Shared, until: Instant) -> Vec<(u64, Arc<Tracked>)> {
    let mut reg = lock(&shared.registry);
    loop {
        let now = Instant::now();
        if reg.conns.is_empty() || now >= until {
            return reg.conns.iter().map(|(id, c)| (*id, Arc::clone(c))).collect();
        }
        reg = shared
            .left
            .wait_timeout(reg, until - now)
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .0;
    }
}

/// Wakes a thread blocked in `accept` by connecting to the listener once.
fn wake_accept(local: SocketAddr) {
    let mut addr = local;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        });
    }
    let _ = TcpStream::connect_timeout(&addr, Duration::from_secs(1));
}

/// A complete upgrade request awaiting the application's decision: [`accept`](Self::accept)
/// or [`reject`](Self::reject) it. Dropping it undecided drops the connection.
pub struct Upgrade {
    link: Link,
    request: UpgradeRequest,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Upgrade {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upgrade")
            .field("peer", &self.link.conn.peer_addr())
            .field("request", &self.request)
            .finish_non_exhaustive()
    }
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
        self.link.conn.peer_addr()
    }

    /// Accepts the upgrade with an optional subprotocol (one the client offered) and extra
    /// response headers, writes the `101` response and returns the open connection.
    ///
    /// # Errors
    /// `InvalidInput` for a subprotocol that was not offered or a header that cannot be
    /// written; the connection is then dropped.
    pub fn accept(
        self,
        subprotocol: Option<&str>,
        headers: &[(&str, &str)],
    ) -> io::Result<WebSocket> {
        self.link
            .conn
            .command(Flush::Try, |ws, now| ws.accept(now, subprotocol, headers))
            .map_err(|e| io_error(&e))?;
        let ws = WebSocket::new(self.link, subprotocol.map(str::to_owned));
        if self.shared.stop.load(Ordering::Acquire) {
            // A shutdown began while the handler decided: say goodbye at once.
            let _ = ws.close(tidewire::ws::CloseCode::GOING_AWAY, "server shutdown");
        }
        Ok(ws)
    }

    /// Rejects the upgrade with an HTTP `status` (e.g. 401 with `WWW-Authenticate`, 403,
    /// 429 with `Retry-After`), extra headers and a body; writes the response and closes.
    ///
    /// # Errors
    /// `InvalidInput` for a status outside 100–599, 101, or a header that cannot be written;
    /// the connection is then dropped.
    pub fn reject(self, status: u16, headers: &[(&str, &str)], body: &[u8]) -> io::Result<()> {
        self.link
            .conn
            .command(Flush::Wait, |ws, now| ws.reject(now, status, headers, body))
            .map_err(|e| io_error(&e))?;
        Ok(())
    }
}
