//! The server: [`Server`] (accept loop), [`ServerHandle`] (connections, graceful shutdown,
//! the hub's operations), [`Upgrade`] (the application's accept/reject decision) and the
//! registry of live TCP connections.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use event_listener::Event as Notify;
use smol::net::{AsyncToSocketAddrs, TcpListener};
use smol::{Async, Executor, Timer, future};
use tidewire::http::Request;
use tidewire::hub::{
    AllowAll, Authorize, HubError, HubStats, JoinDecision, JoinId, Principal, PublishDecision,
    PublishId,
};
use tidewire::replay::Position;
use tidewire::server::{
    Authenticate, ConnHandle, Credential, Publication, Routes, ServerEvent, Verdict,
};
use tidewire::ws::{CloseCode, UpgradeRequest, WsState};

use crate::conn::{Shared, WebSocket};
use crate::http::HttpRequest;
use crate::outbound::{Host, Sockets};
use crate::pump::{Core, Handlers, run_conn, run_core_timer, spawn_on};
use crate::{Event, until};

/// Pause after an `accept` error (e.g. out of file descriptors) before the next attempt.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// Server settings. Build it with `ServerConfig::default()` and change the fields you need.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ServerConfig {
    /// The core endpoint's settings: routes, hub, limits, every WebSocket's settings
    /// (`endpoint.ws`). The default has no hub route ([`Routes::none`]): every request goes
    /// to the application's handlers. A hub server sets `endpoint.routes =
    /// Routes::default()` (`/ws`, `/events`, `/poll`, `/api/publish`) or its own.
    pub endpoint: tidewire::server::ServerConfig,
    /// Live TCP connections at most (default 10 000); a connection over it is accepted and
    /// closed at once.
    pub max_connections: usize,
    /// Bytes read from a socket at once, at most (default 64 KiB), into a buffer per
    /// executor thread that is fed to the connection at once: an idle connection holds no
    /// read buffer.
    pub read_buffer: usize,
    /// The executor of every task of the server (connections, handlers, the timer, the
    /// bus). `None` (the default): smol's global executor. Give the executor that runs the
    /// accept loop itself to keep a whole server on one thread.
    pub executor: Option<Arc<Executor<'static>>>,
    /// Share every channel with other instances through this Redis server (see
    /// [`tidewire::redis`]). `None`: an in-process hub.
    pub redis: Option<tidewire::redis::RedisConfig>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        let mut endpoint = tidewire::server::ServerConfig::default();
        endpoint.routes = Routes::none();
        Self {
            endpoint,
            max_connections: 10_000,
            read_buffer: 64 << 10,
            executor: None,
            redis: None,
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
    /// The core endpoint and what the pump keeps beside it.
    core: Mutex<Core>,
    /// The core's deadline changed: wakes the timer task.
    pub(crate) timer: Arc<Notify>,
    /// An event or a submitted publish's answer arrived.
    pub(crate) arrived: Notify,
    /// A connection ended.
    changed: Notify,
    /// Shutdown started: the accept loop stops.
    stop: Notify,
    /// Shutdown finished.
    done: Notify,
}

impl Drop for ServerShared {
    fn drop(&mut self) {
        // The timer task holds a weak reference: let it see that the server is gone.
        self.timer.notify(usize::MAX);
    }
}

#[derive(Default)]
struct Registry {
    next_id: u64,
    conns: HashMap<u64, Entry>,
    stopping: bool,
    /// An accept loop holds the listener: shutdown waits until it let go of the port.
    serving: bool,
    report: Option<ShutdownReport>,
}

struct Entry {
    stream: Arc<Async<TcpStream>>,
    /// An application WebSocket, closed with 1001 by shutdown. `None`: the core's (its
    /// shutdown reaches it) or an application HTTP request (it finishes or is cut).
    ws: Option<Weak<Shared>>,
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

    pub(crate) fn core(&self) -> MutexGuard<'_, Core> {
        self.core.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        spawn_on(self.cfg.executor.as_ref(), task);
    }
}

/// The core server's Redis bus, driven by the outbound-socket driver.
impl Host for ServerShared {
    type Machine = tidewire::server::Server;

    fn with<T>(&self, f: impl FnOnce(&mut Self::Machine, &mut Sockets<Self>, Instant) -> T) -> T {
        let mut core = self.core();
        let Core { server, socks, .. } = &mut *core;
        let out = f(server, socks, Instant::now());
        core.wake_waiters(self);
        out
    }

    fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        ServerShared::spawn(self, task);
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
        reg.conns.insert(id, Entry { stream: stream.clone(), ws: None });
        Some(Self { server: server.clone(), id })
    }

    /// The connection's handle in the core endpoint.
    pub(crate) fn handle(&self) -> ConnHandle {
        ConnHandle(self.id)
    }
}

impl ServerShared {
    /// Links connection `conn`'s open WebSocket, so shutdown can close it with 1001; closes
    /// it at once when the shutdown already started.
    fn attach(&self, conn: ConnHandle, shared: &Arc<Shared>) {
        let mut reg = self.registry();
        if let Some(entry) = reg.conns.get_mut(&conn.0) {
            entry.ws = Some(Arc::downgrade(shared));
        }
        if reg.stopping {
            close_going_away(shared);
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
    let _ = shared.command(|conn, now| conn.close(now, CloseCode::GOING_AWAY, "server shutdown"));
}

/// Everyone is anonymous.
fn anonymous(_: &Request) -> Verdict {
    Verdict::Allow(Credential::client(Principal::anonymous()))
}

/// A seed from OS entropy (the clock when there is none: two lives of a server differ).
fn os_seed() -> u64 {
    let mut seed = [0u8; 8];
    if getrandom::fill(&mut seed).is_err() {
        let t =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        return u64::try_from(t.as_nanos() & u128::from(u64::MAX)).unwrap_or_default();
    }
    u64::from_le_bytes(seed)
}

impl Server {
    /// Binds a listener whose requests are all anonymous and may do anything
    /// ([`AllowAll`]); see [`bind_with`](Self::bind_with).
    ///
    /// # Errors
    /// The address cannot be resolved or bound.
    pub async fn bind(addr: impl AsyncToSocketAddrs, cfg: ServerConfig) -> io::Result<Server> {
        Self::bind_with(addr, cfg, anonymous, AllowAll).await
    }

    /// Binds a listener: `authn` says who each request to a hub route is (before any `101`
    /// or `200`), `authz` what it may join and publish. Epochs are seeded from OS entropy.
    ///
    /// # Errors
    /// The address cannot be resolved or bound.
    pub async fn bind_with(
        addr: impl AsyncToSocketAddrs,
        cfg: ServerConfig,
        authn: impl Authenticate + Send + 'static,
        authz: impl Authorize + Send + 'static,
    ) -> io::Result<Server> {
        let listener = TcpListener::bind(addr).await?;
        let local_addr = listener.local_addr()?;
        let seed = os_seed();
        let now = Instant::now();
        let ecfg = cfg.endpoint.clone();
        let server = match cfg.redis.clone() {
            None => tidewire::server::Server::new(ecfg, authn, authz, seed),
            Some(r) => tidewire::server::Server::with_redis(ecfg, authn, authz, r, seed, now),
        };
        let shared = Arc::new_cyclic(|me| ServerShared {
            cfg,
            local_addr,
            registry: Mutex::new(Registry::default()),
            core: Mutex::new(Core::new(server, Sockets::new(me.clone()))),
            timer: Arc::new(Notify::new()),
            arrived: Notify::new(),
            changed: Notify::new(),
            stop: Notify::new(),
            done: Notify::new(),
        });
        shared.spawn(run_core_timer(Arc::downgrade(&shared), shared.timer.clone()));
        // The bus's first `Connect`s.
        shared.with(|_, _, _| ());
        Ok(Server { listener, shared })
    }

    /// The bound address (with the port the OS chose for port 0).
    #[must_use]
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    /// A handle to count connections, publish, and shut the server down.
    #[must_use]
    pub fn handle(&self) -> ServerHandle {
        ServerHandle { shared: self.shared.clone() }
    }

    /// Runs the accept loop until [`ServerHandle::shutdown`]. Every TCP connection gets a
    /// task on [`ServerConfig::executor`] that pumps it through the core endpoint: the core
    /// reads and bounds the head (400/408/431/505) and serves the hub's routes; an upgrade
    /// for any other path becomes an [`Upgrade`] and `handler(upgrade)` runs in a task of
    /// its own (accept or reject it there), while the connection's task drives the
    /// connection. A plain HTTP request for another path is answered `404`; use
    /// [`serve_with`](Self::serve_with) to serve it.
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
            let _ = req.respond(404, &[], b"not found\n").await;
        })
        .await
    }

    /// Like [`serve`](Self::serve), with a handler for the application's plain HTTP
    /// requests (pages, APIs): `http(request)` runs to completion on the connection's task
    /// and answers with [`HttpRequest::respond`]. One request per connection.
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
        let handlers: Handlers = Arc::new((
            Box::new(move |u| Box::pin(ws(u)) as _),
            Box::new(move |r| Box::pin(http(r)) as _),
        ));
        let shared = self.shared;
        shared.registry().serving = true;
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
                    shared.spawn(run_conn(stream, peer, registration, handlers.clone()));
                }
                Some(Err(_)) => {
                    Timer::after(ACCEPT_ERROR_PAUSE).await;
                }
            }
        }
        drop(self.listener);
        shared.registry().serving = false;
        shared.changed.notify(usize::MAX);
        ServerHandle { shared }.wait_report().await;
        Ok(())
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

    /// Live TCP connections (the core's and the application's).
    #[must_use]
    pub fn connections(&self) -> usize {
        self.shared.registry().conns.len()
    }

    /// Graceful shutdown: stops accepting; the core closes every hub WebSocket with 1001,
    /// ends every SSE stream, answers every held poll and answers `503` to heads still
    /// arriving; every application WebSocket is closed with 1001. Waits up to `grace` for
    /// every connection to end, then shuts the rest down. [`Server::serve`] returns after
    /// it. A second call waits for the first and returns the same report.
    pub async fn shutdown(&self, grace: Duration) -> ShutdownReport {
        let shared = &self.shared;
        let total = {
            let mut reg = shared.registry();
            if reg.stopping {
                None
            } else {
                reg.stopping = true;
                for link in reg.conns.values().filter_map(|e| e.ws.as_ref()?.upgrade()) {
                    close_going_away(&link);
                }
                Some(reg.conns.len())
            }
        };
        let Some(total) = total else {
            return self.wait_report().await;
        };
        self.with_core(|core| core.server.shutdown(Instant::now(), grace));
        shared.stop.notify(usize::MAX);

        let deadline = Instant::now() + grace;
        loop {
            let changed = shared.changed.listen();
            // Drained, and the port released (the accept loop dropped its listener).
            let finished = {
                let reg = shared.registry();
                reg.conns.is_empty() && !reg.serving
            };
            if finished {
                break;
            }
            if until(deadline, changed).await.is_none() || Instant::now() >= deadline {
                break;
            }
        }

        let mut reg = shared.registry();
        let dropped = reg.conns.len();
        for entry in reg.conns.values() {
            let _ = entry.stream.get_ref().shutdown(Shutdown::Both);
            if let Some(link) = entry.ws.as_ref().and_then(Weak::upgrade) {
                let mut sock = link.lock();
                sock.kill();
                link.wake_up(&mut sock);
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

    /// One mutation of the core, then its outputs dispatched.
    fn with_core<T>(&self, f: impl FnOnce(&mut Core) -> T) -> T {
        let mut core = self.shared.core();
        let r = f(&mut core);
        core.wake_waiters(&self.shared);
        r
    }

    /// The trusted server-side publish (a ticker, an admin): `json` must be one JSON
    /// value; no authorization, no dedup. Returns the message's position. With
    /// [`ServerConfig::redis`] use [`submit`](Self::submit), which the bus numbers.
    ///
    /// # Errors
    /// [`HubError::BadJson`], [`HubError::BadChannel`], [`HubError::ChannelLimit`].
    pub fn publish(&self, ch: &str, json: &[u8]) -> Result<Position, HubError> {
        self.with_core(|core| core.server.publish(Instant::now(), ch, json))
    }

    /// Creates channel `ch` with its log continuing after `last`, a position an earlier
    /// process of this server persisted ([`tidewire::hub::Hub::restore`]): a client that
    /// was at `last` resumes exactly.
    ///
    /// # Errors
    /// As [`Hub::restore`](tidewire::hub::Hub::restore).
    pub fn restore(&self, ch: &str, last: Position) -> Result<(), HubError> {
        self.with_core(|core| core.server.restore(Instant::now(), ch, last))
    }

    /// The trusted publish deduplicated by `id`: a repeat of an id answers the first one's
    /// position and appends nothing. Without Redis the window is the core's
    /// (`endpoint.trusted_dedup` ids); with Redis it goes through the bus, which
    /// deduplicates across instances (`RedisConfig::dedup_ttl`), and waits for its answer.
    ///
    /// # Errors
    /// As [`publish`](Self::publish); [`HubError::BadId`] for an id over the hub's bound;
    /// with Redis, [`HubError::Unavailable`] while Redis is unreachable.
    pub async fn publish_once(
        &self,
        ch: &str,
        id: &str,
        json: &[u8],
    ) -> Result<Position, HubError> {
        self.publish_trusted(ch, Some(id), json).await
    }

    /// The trusted publish that works with and without Redis: with
    /// [`ServerConfig::redis`] it goes through the bus (which numbers it) and waits for its
    /// position; without, it is [`publish`](Self::publish).
    ///
    /// # Errors
    /// As [`publish`](Self::publish); with Redis, [`HubError::Unavailable`] while Redis is
    /// unreachable (retry with [`publish_once`](Self::publish_once) to stay idempotent).
    pub async fn submit(&self, ch: &str, json: &[u8]) -> Result<Position, HubError> {
        self.publish_trusted(ch, None, json).await
    }

    /// The core's trusted publish; with a bus, waits for its answer.
    async fn publish_trusted(
        &self,
        ch: &str,
        id: Option<&str>,
        json: &[u8],
    ) -> Result<Position, HubError> {
        let published =
            self.with_core(|core| core.server.publish_trusted(Instant::now(), ch, id, json))?;
        let token = match published {
            Publication::Submitted(token) => token,
            Publication::Appended(pos) => return Ok(pos),
        };
        let waiting = Forget(&self.shared, token);
        loop {
            let listener = self.shared.arrived.listen();
            if let Some(r) = self.shared.core().server.take_submitted(token) {
                std::mem::forget(waiting);
                return r;
            }
            listener.await;
        }
    }

    /// Reads the core endpoint under its lock (the hub, connections, counters). Keep `f`
    /// short: every connection waits for it.
    pub fn inspect<T>(&self, f: impl FnOnce(&tidewire::server::Server) -> T) -> T {
        f(&self.shared.core().server)
    }

    /// The presence list of `ch` (names in grace included), sorted.
    #[must_use]
    pub fn presence(&self, ch: &str) -> Vec<String> {
        self.inspect(|s| s.presence(ch))
    }

    /// The head of `ch`'s log, if the channel exists.
    #[must_use]
    pub fn head(&self, ch: &str) -> Option<Position> {
        self.inspect(|s| s.head(ch))
    }

    /// Hub-wide counters.
    #[must_use]
    pub fn stats(&self) -> HubStats {
        self.inspect(tidewire::server::Server::hub_stats)
    }

    /// Connections of the hub (WebSocket, SSE, kept polling clients).
    #[must_use]
    pub fn hub_connections(&self) -> usize {
        self.inspect(tidewire::server::Server::hub_connections)
    }

    /// Whether the hub's bus is connected (`false` without Redis).
    #[must_use]
    pub fn bus_is_up(&self) -> bool {
        self.inspect(tidewire::server::Server::bus_is_up)
    }

    /// The next informational event of the core ([`ServerEvent::Hub`],
    /// [`ServerEvent::Refused`], [`ServerEvent::Published`]) or a deferred authentication
    /// ([`ServerEvent::Authenticate`], answer it with [`decide`](Self::decide)), without
    /// waiting. The queue keeps `endpoint.max_events`; the oldest is dropped when full.
    #[must_use]
    pub fn next_event(&self) -> Option<ServerEvent> {
        self.shared.core().server.poll_event()
    }

    /// The next event, as [`next_event`](Self::next_event); waits until there is one.
    pub async fn event(&self) -> ServerEvent {
        loop {
            let listener = self.shared.arrived.listen();
            if let Some(ev) = self.next_event() {
                return ev;
            }
            listener.await;
        }
    }

    /// Answers a deferred authentication ([`ServerEvent::Authenticate`]).
    pub fn decide(&self, conn: ConnHandle, verdict: Verdict) {
        self.with_core(|core| core.server.decide(Instant::now(), conn, verdict));
    }

    /// Answers a deferred join ([`HubEvent::JoinRequested`](tidewire::hub::HubEvent)
    /// from an [`Authorize`] policy that returned `JoinVerdict::Defer`). `false`: unknown
    /// id (decided, timed out or cancelled).
    pub fn decide_join(&self, id: JoinId, decision: JoinDecision) -> bool {
        self.with_core(|core| core.server.decide_join(Instant::now(), id, decision))
    }

    /// Answers a vetted publish ([`HubEvent::PublishRequested`](tidewire::hub::HubEvent),
    /// with `HubConfig::vet_publishes`). `false`: unknown id (decided, timed out, or its
    /// connection left).
    pub fn decide_publish(&self, id: PublishId, decision: PublishDecision) -> bool {
        self.with_core(|core| core.server.decide_publish(Instant::now(), id, decision))
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

/// A complete upgrade request for a path that is not the hub's, awaiting the application's
/// decision: [`accept`](Self::accept) or [`reject`](Self::reject). Dropping it closes the
/// TCP connection without a response.
pub struct Upgrade {
    /// The connection, which its task pumps once decided.
    pub(crate) shared: Arc<Shared>,
    pub(crate) request: UpgradeRequest,
    pub(crate) server: Arc<ServerShared>,
    pub(crate) conn: ConnHandle,
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
        self.shared.peer
    }

    /// Accepts the upgrade with an optional subprotocol (one the client offered) and extra
    /// response headers. The 101 response is written by the connection's task, which drives
    /// the connection from here on.
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
        self.shared
            .command(|conn, now| conn.accept(now, subprotocol, headers))
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        self.server.attach(self.conn, &self.shared);
        Ok(WebSocket::new(self.shared.clone(), subprotocol.map(str::to_owned)))
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
        self.shared
            .command(|conn, now| conn.reject(now, status, headers, body))
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        // The connection's task writes the response and shuts the socket down.
        while !matches!(self.shared.recv_event().await, Event::Closed(_)) {}
        self.shared.cut.get().map_or(Ok(()), |kind| Err((*kind).into()))
    }
}

impl Drop for Upgrade {
    fn drop(&mut self) {
        // Undecided: the connection ends without a response.
        let mut sock = self.shared.lock();
        if sock.state() == WsState::Connecting {
            sock.abort();
            self.shared.wake_up(&mut sock);
        }
    }
}

impl fmt::Debug for Upgrade {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upgrade")
            .field("peer", &self.shared.peer)
            .field("request", &self.request)
            .finish_non_exhaustive()
    }
}

/// A `submit` waiting for the bus's answer: dropped (the caller stopped waiting), it lets the
/// core discard the answer.
struct Forget<'a>(&'a ServerShared, tidewire::hub::BusToken);

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.0.core().server.forget_submitted(self.1);
    }
}
