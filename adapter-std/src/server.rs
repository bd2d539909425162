//! [`Server`]: the accept loop, the registry of connections behind [`ServerHandle`], and the
//! hand-over of application connections ([`Upgrade`], [`HttpRequest`]).

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tidewire::http::Request;
use tidewire::hub::{AllowAll, Authorize, Principal};
use tidewire::redis::RedisConfig;
use tidewire::server::{
    Authenticate, ConnHandle, Credential, Routes, ServerEvent, ShutdownReport, Verdict,
};
use tidewire::ws::UpgradeRequest;

use crate::conn::{Conn, invalid_input, lock, wait_until};
use crate::http::HttpRequest;
use crate::outbound::{Dial, Host, Sockets, Table};
use crate::pump::{self, Core};
use crate::socket::WebSocket;

/// How long `shutdown` waits for connection threads after shutting their sockets down.
const REAP: Duration = Duration::from_secs(1);
/// Pause after an `accept` error that may be a lack of resources (e.g. no file descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(10);

/// Settings of a [`Server`]. Build with `ServerConfig::default()` and change fields.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ServerConfig {
    /// The core endpoint's settings ([`tidewire::server::ServerConfig`]), except that the
    /// default has no hub route ([`Routes::none`]); a hub server sets `Routes::default()`.
    pub endpoint: tidewire::server::ServerConfig,
    /// Most live TCP connections (default 10 000); one over the limit is dropped at once.
    pub max_connections: usize,
    /// Size of each connection's read buffer (default 64 KiB).
    pub read_buffer: usize,
    /// A Redis server to share channels with other instances ([`tidewire::redis`]).
    pub redis: Option<RedisConfig>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        let mut endpoint = tidewire::server::ServerConfig::default();
        endpoint.routes = Routes::none();
        Self { endpoint, max_connections: 10_000, read_buffer: 64 << 10, redis: None }
    }
}

/// One TCP connection in the registry.
struct Tracked {
    stream: Arc<TcpStream>,
    /// The application WebSocket, from the hand-over on.
    ws: Mutex<Option<Arc<Conn>>>,
}

#[derive(Default)]
struct Registry {
    conns: HashMap<u64, Arc<Tracked>>,
    next_id: u64,
    /// The report, once a shutdown finished.
    finished: Option<ShutdownReport>,
}

/// Removes a connection from the registry when the last of its threads ends.
struct Registration {
    shared: Arc<Shared>,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        lock(&self.shared.registry).conns.remove(&self.id);
        self.shared.left.notify_all();
    }
}

/// What every thread of a server shares.
pub(crate) struct Shared {
    local: SocketAddr,
    pub(crate) core: Mutex<Core>,
    /// Wakes the timer thread: a new deadline, or the end.
    pub(crate) timer_cv: Condvar,
    /// An informational event or a submit's answer arrived.
    pub(crate) event_cv: Condvar,
    /// With Redis: how the bus's sockets (in [`Core`]) are opened.
    pub(crate) bus: Sockets<Shared>,
    pub(crate) read_buffer: usize,
    /// `WsConfig::send_timeout` and `close_timeout` of application WebSockets.
    ws_timeouts: (Option<Duration>, Duration),
    /// A write without progress this long fails (`WsConfig::send_timeout`, else 30 s).
    pub(crate) write_timeout: Duration,
    max_connections: usize,
    registry: Mutex<Registry>,
    /// Notified whenever a connection leaves the registry, and once a shutdown finished.
    left: Condvar,
    stop: AtomicBool,
}

impl Shared {
    pub(crate) fn is_stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// Waits for the shutdown's report.
    fn finished(&self) -> ShutdownReport {
        let mut reg = lock(&self.registry);
        loop {
            if let Some(report) = reg.finished {
                return report;
            }
            reg = wait_until(&self.left, reg, None);
        }
    }
}

/// The core server's Redis bus, driven by the outbound-socket driver.
impl Host for Shared {
    type Machine = tidewire::server::Server;

    fn with_table<T>(&self, f: impl FnOnce(&mut Self::Machine, &mut Table, Instant) -> T) -> T {
        let mut core = pump::core(self);
        let Core { server, bus_socks, .. } = &mut *core;
        let out = f(server, bus_socks, Instant::now());
        core.after(self);
        out
    }

    fn table<T>(&self, f: impl FnOnce(&Table) -> T) -> T {
        f(&pump::core(self).bus_socks)
    }
}

/// A bound listener with its core endpoint ([`tidewire::server::Server`]).
/// [`serve`](Self::serve) runs its accept loop; a [`ServerHandle`] (taken before) controls
/// it. Requests the core hands over go to the handlers on the connection's own thread.
pub struct Server {
    listener: TcpListener,
    shared: Arc<Shared>,
    timer: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").field("local", &self.shared.local).finish_non_exhaustive()
    }
}

impl Server {
    /// Binds a listener whose hub routes (if any) let everyone in, anonymous ([`AllowAll`]).
    pub fn bind(addr: impl ToSocketAddrs, cfg: ServerConfig) -> io::Result<Server> {
        let anyone = |_: &Request| Verdict::Allow(Credential::client(Principal::anonymous()));
        Self::bind_with(addr, cfg, anyone, AllowAll)
    }

    /// Binds a listener with the application's authentication and authorization
    /// ([`Server::new`](tidewire::server::Server::new)), seeded from OS entropy.
    pub fn bind_with(
        addr: impl ToSocketAddrs,
        cfg: ServerConfig,
        authn: impl Authenticate + Send + 'static,
        authz: impl Authorize + Send + 'static,
    ) -> io::Result<Server> {
        let listener = TcpListener::bind(addr)?;
        let local = listener.local_addr()?;
        let seed = getrandom::u64().unwrap_or_else(|_| crate::fallback_seed());
        let ServerConfig { endpoint: ecfg, max_connections, read_buffer, redis } = cfg;
        let ws = &ecfg.ws;
        let ws_timeouts = (ws.send_timeout, ws.close_timeout);
        let write_timeout = ws.send_timeout.unwrap_or(Duration::from_secs(30));
        let endpoint = match redis {
            None => tidewire::server::Server::new(ecfg, authn, authz, seed),
            Some(r) => {
                tidewire::server::Server::with_redis(ecfg, authn, authz, r, seed, Instant::now())
            }
        };
        let dial = Dial {
            connect_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(30),
            read_chunk: 64 << 10,
        };
        let shared = Arc::new_cyclic(|me| Shared {
            local,
            bus: Sockets { owner: me.clone(), dial },
            core: Mutex::new(Core::new(endpoint)),
            timer_cv: Condvar::new(),
            event_cv: Condvar::new(),
            read_buffer: read_buffer.max(1024),
            ws_timeouts,
            write_timeout: write_timeout.max(Duration::from_millis(1)),
            max_connections,
            registry: Mutex::new(Registry::default()),
            left: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let timer = Arc::clone(&shared);
        let timer = std::thread::Builder::new()
            .name("tidewire-timer".into())
            .spawn(move || pump::run_timer(&timer))?;
        shared.with(|_, _| ()); // the bus's first `Connect`s
        Ok(Server { listener, shared, timer: Some(timer) })
    }

    /// The address the listener is bound to.
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local
    }

    /// A handle to publish, inspect and shut the server down from any thread.
    #[must_use]
    pub fn handle(&self) -> ServerHandle {
        ServerHandle { shared: Arc::clone(&self.shared) }
    }

    /// Runs the accept loop until [`ServerHandle::shutdown`] finished, calling `handler` for
    /// every WebSocket upgrade the core hands over; other requests are answered `404`. Fails
    /// on an `accept` error that is neither transient nor a lack of resources.
    pub fn serve<F>(self, handler: F) -> io::Result<()>
    where
        F: Fn(Upgrade) + Send + Sync + 'static,
    {
        self.serve_with(handler, |req: HttpRequest| drop(req.respond(404, &[], b"not found\n")))
    }

    /// As [`serve`](Self::serve), with a handler for the plain HTTP requests the core hands over.
    pub fn serve_with<W, H>(self, ws: W, http: H) -> io::Result<()>
    where
        W: Fn(Upgrade) + Send + Sync + 'static,
        H: Fn(HttpRequest) + Send + Sync + 'static,
    {
        let (shared, handlers) = (&self.shared, Arc::new((ws, http)));
        while !shared.is_stopping() {
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
            if shared.is_stopping() {
                break;
            }
            spawn_connection(shared, stream, peer, &handlers);
        }
        shared.finished();
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        pump::core(&self.shared).stop = true;
        self.shared.timer_cv.notify_all();
        self.shared.with_table(|_, t, _| t.close_all());
        if let Some(timer) = self.timer.take() {
            let _ = timer.join();
        }
    }
}

fn is_resource_error(e: &io::Error) -> bool {
    // EMFILE, ENFILE, ENOBUFS, ENOMEM: wait for resources instead of spinning.
    matches!(e.raw_os_error(), Some(23 | 24 | 105 | 12)) || e.kind() == io::ErrorKind::OutOfMemory
}

fn spawn_connection<W, H>(
    shared: &Arc<Shared>,
    stream: TcpStream,
    peer: SocketAddr,
    handlers: &Arc<(W, H)>,
) where
    W: Fn(Upgrade) + Send + Sync + 'static,
    H: Fn(HttpRequest) + Send + Sync + 'static,
{
    let _ = stream.set_nodelay(true);
    let tracked = Arc::new(Tracked { stream: Arc::new(stream), ws: Mutex::new(None) });
    let id = {
        let mut reg = lock(&shared.registry);
        if reg.conns.len() >= shared.max_connections {
            return; // over the limit: the socket is dropped here
        }
        let id = reg.next_id;
        reg.next_id += 1;
        reg.conns.insert(id, Arc::clone(&tracked));
        id
    };
    let guard = Arc::new(Registration { shared: Arc::clone(shared), id });
    let handlers = Arc::clone(handlers);
    // On failure the closure (and with it the guard and the socket) is dropped.
    let _ = std::thread::Builder::new().name("tidewire-conn".into()).spawn(move || {
        let (shared, stream) = (&guard.shared, &tracked.stream);
        let registration: Arc<dyn Send + Sync> = guard.clone();
        let conn = ConnHandle(id);
        let on_request = |request, turn: &Arc<Mutex<()>>| {
            let (shared, stream, turn) = (Arc::clone(shared), Arc::clone(stream), Arc::clone(turn));
            (handlers.1)(HttpRequest { shared, conn, request, peer, stream, turn, done: false });
        };
        let handover = pump::serve(shared, stream, conn, Arc::clone(&registration), on_request);
        if let Some(ServerEvent::Upgrade { ws, .. }) = handover {
            let (timeouts, registration) = (shared.ws_timeouts, Some(registration));
            let (conn, request) =
                Conn::start(Arc::clone(stream), peer, *ws, timeouts, registration);
            *lock(&tracked.ws) = Some(Arc::clone(&conn));
            let ws = WebSocket::new(conn, shared.read_buffer);
            // The core server checked the request.
            let Some(request) = request else { return };
            let upgrade = Upgrade { ws, request, shared: Arc::clone(shared) };
            if shared.is_stopping() {
                let _ = upgrade.reject(503, &[("Retry-After", "1")], b"shutting down\n");
            } else {
                (handlers.0)(upgrade);
            }
        }
    });
}

/// Controls a running [`Server`] from any thread: its connections, its shutdown, its hub.
/// Cheap to clone.
#[derive(Clone)]
pub struct ServerHandle {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerHandle").field("local", &self.shared.local).finish_non_exhaustive()
    }
}

impl ServerHandle {
    /// The address the listener is bound to.
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local
    }

    /// Live TCP connections, of every kind, until their threads end.
    #[must_use]
    pub fn connections(&self) -> usize {
        lock(&self.shared.registry).conns.len()
    }

    /// Graceful shutdown ([`Server::shutdown`](tidewire::server::Server::shutdown)), application
    /// WebSockets closed with 1001: waits up to `grace`, then shuts the rest down. A second
    /// call returns the first one's report.
    pub fn shutdown(&self, grace: Duration) -> ShutdownReport {
        let shared = &self.shared;
        if shared.stop.swap(true, Ordering::AcqRel) {
            return shared.finished();
        }
        wake_accept(shared.local);
        let start = Instant::now();
        let first: Vec<Arc<Tracked>> = lock(&shared.registry).conns.values().cloned().collect();
        let seen = first.len();
        {
            let mut core = pump::core(shared);
            core.server.shutdown(start, grace);
            core.after(shared);
        }
        for t in &first {
            if let Some(conn) = lock(&t.ws).clone() {
                conn.shutdown_by_server();
            }
        }
        drop(first);
        let remaining = wait_for_empty(shared, start + grace);
        for t in &remaining {
            match lock(&t.ws).clone() {
                Some(conn) => conn.abort(),
                None => drop(t.stream.shutdown(Shutdown::Both)),
            }
        }
        let dropped = remaining.len();
        let report = ShutdownReport { closed: seen.saturating_sub(dropped), dropped };
        drop(remaining);
        wait_for_empty(shared, Instant::now() + REAP);
        lock(&shared.registry).finished = Some(report);
        shared.left.notify_all();
        report
    }
}

/// Waits until no connection is registered or `until`; returns those still registered.
fn wait_for_empty(shared: &Shared, until: Instant) -> Vec<Arc<Tracked>> {
    let mut reg = lock(&shared.registry);
    while !reg.conns.is_empty() && Instant::now() < until {
        reg = wait_until(&shared.left, reg, Some(until));
    }
    reg.conns.values().cloned().collect()
}

/// Wakes a thread blocked in `accept` by connecting to the listener once.
fn wake_accept(mut addr: SocketAddr) {
    if addr.ip().is_unspecified() {
        let v4 = addr.is_ipv4();
        addr.set_ip(if v4 { Ipv4Addr::LOCALHOST.into() } else { Ipv6Addr::LOCALHOST.into() });
    }
    let _ = TcpStream::connect_timeout(&addr, Duration::from_secs(1));
}

/// An upgrade request for a path the hub does not serve: [`accept`](Self::accept) or
/// [`reject`](Self::reject) it (dropping it drops the connection).
pub struct Upgrade {
    /// Without a subprotocol until accepted.
    ws: WebSocket,
    request: UpgradeRequest,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Upgrade {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upgrade")
            .field("peer", &self.ws.conn.peer)
            .field("request", &self.request)
            .finish_non_exhaustive()
    }
}

impl Upgrade {
    /// The request.
    #[must_use]
    pub fn request(&self) -> &UpgradeRequest {
        &self.request
    }

    /// The peer's address.
    #[must_use]
    pub fn peer_addr(&self) -> SocketAddr {
        self.ws.conn.peer
    }

    /// Accepts the upgrade ([`WsConnection::accept`](tidewire::ws::WsConnection::accept));
    /// `InvalidInput` (and the connection dropped) for what cannot be written.
    pub fn accept(
        self,
        subprotocol: Option<&str>,
        headers: &[(&str, &str)],
    ) -> io::Result<WebSocket> {
        self.ws.conn.with(|ws, now| ws.accept(now, subprotocol, headers)).map_err(invalid_input)?;
        let mut ws = self.ws;
        ws.subprotocol = subprotocol.map(str::to_owned);
        if self.shared.is_stopping() {
            // A shutdown began while the handler decided: say goodbye at once.
            let _ = ws.close(tidewire::ws::CloseCode::GOING_AWAY, "server shutdown");
        }
        Ok(ws)
    }

    /// Rejects the upgrade ([`WsConnection::reject`](tidewire::ws::WsConnection::reject));
    /// `InvalidInput` (and the connection dropped) for what cannot be written.
    pub fn reject(self, status: u16, headers: &[(&str, &str)], body: &[u8]) -> io::Result<()> {
        self.ws.conn.with(|ws, now| ws.reject(now, status, headers, body)).map_err(invalid_input)
    }
}
