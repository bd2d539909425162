//! [`Server`]: the accept loop, one thread per connection, the registry behind
//! [`ServerHandle::connections`] and [`ServerHandle::shutdown`].

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use tidewire::ws::{UpgradeRequest, WsConfig, WsConnection, WsEvent};

use crate::conn::{Conn, Flush, Reader, io_error, lock};
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
    conns: HashMap<u64, Arc<Conn>>,
    next_id: u64,
}

struct Shared {
    local: SocketAddr,
    registry: Mutex<Registry>,
    /// Notified whenever a connection leaves the registry.
    left: Condvar,
    stop: AtomicBool,
    /// `Some` once a shutdown finished.
    finished: Mutex<Option<ShutdownReport>>,
    finished_cv: Condvar,
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

/// A bound listener. [`serve`](Self::serve) runs its accept loop; a [`ServerHandle`] (taken
/// before) stops it.
///
/// Every TCP connection gets its own thread. It reads the upgrade request under the
/// handshake deadline (`WsConfig::handshake_timeout`; a peer that trickles its head is cut
/// off with 408), answers a malformed or oversized request itself (400, 431…) and calls the
/// handler with an [`Upgrade`] once a complete request is there. The handler then runs on
/// that thread for as long as the connection lives.
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
    /// # Errors
    /// An `accept` error that is neither transient nor a lack of resources.
    pub fn serve<F>(self, handler: F) -> io::Result<()>
    where
        F: Fn(Upgrade) + Send + Sync + 'static,
    {
        let handler = Arc::new(handler);
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
            self.spawn_connection(stream, peer, &handler);
        }
        drop(self.listener);
        let mut fin = lock(&shared.finished);
        while fin.is_none() {
            fin = shared.finished_cv.wait(fin).unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        Ok(())
    }

    fn spawn_connection<F>(&self, stream: TcpStream, peer: SocketAddr, handler: &Arc<F>)
    where
        F: Fn(Upgrade) + Send + Sync + 'static,
    {
        let mut cfg = self.cfg.ws.clone();
        if cfg.rng_seed == [0; 32] && getrandom::fill(&mut cfg.rng_seed).is_err() {
            return; // no entropy: refuse rather than use predictable keys
        }
        let _ = stream.set_nodelay(true);
        let timeouts = (cfg.send_timeout, cfg.close_timeout);
        let conn =
            Arc::new(Conn::new(stream, peer, WsConnection::server(cfg, Instant::now()), timeouts));
        let shared = Arc::clone(&self.shared);
        let id = {
            let mut reg = lock(&shared.registry);
            if reg.conns.len() >= self.cfg.max_connections {
                return; // over the limit: the socket is dropped here
            }
            let id = reg.next_id;
            reg.next_id += 1;
            reg.conns.insert(id, Arc::clone(&conn));
            id
        };
        let guard = Registered { shared, id };
        let reader = Reader::new(self.cfg.read_buffer);
        let handler = Arc::clone(handler);
        let spawned = std::thread::Builder::new().name("tidewire-conn".into()).spawn(move || {
            let shared = Arc::clone(&guard.shared);
            run_connection(Link { conn, reader }, shared, &*handler);
            drop(guard);
        });
        // On failure the closure (and with it the guard and the socket) is dropped.
        drop(spawned);
    }
}

fn is_resource_error(e: &io::Error) -> bool {
    // EMFILE, ENFILE, ENOBUFS, ENOMEM: wait for resources instead of spinning.
    matches!(e.raw_os_error(), Some(23 | 24 | 105 | 12)) || e.kind() == io::ErrorKind::OutOfMemory
}

/// A connection's thread: reads the upgrade request, then hands it to the handler.
fn run_connection<F: Fn(Upgrade)>(mut link: Link, shared: Arc<Shared>, handler: &F) {
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
            WsEvent::Closed(_) => return, // the core answered (400, 408, 431…) or the peer left
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

    /// Graceful shutdown: stops accepting, closes every open connection with 1001 ("server
    /// shutdown") and drops those still in their opening handshake, waits up to `grace` for
    /// the connections to finish, then shuts the rest down (and waits briefly for their
    /// threads). [`Server::serve`] returns once this is done. A second call waits for the
    /// first one and returns the same report.
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
        let first: Vec<(u64, Arc<Conn>)> =
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
fn wait_for_empty(shared: &Shared, until: Instant) -> Vec<(u64, Arc<Conn>)> {
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
