//! [`Server`]: the accept loop, the registry of connections behind [`ServerHandle`], and the
//! hand-over of application upgrades ([`Upgrade`]).

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use event_listener::Event as Notify;
use smol::net::{AsyncToSocketAddrs, TcpListener};
use smol::{Async, Executor, Timer, future};
use tidewire::http::Request;
use tidewire::hub::{AllowAll, Authorize, HubError, Principal};
use tidewire::replay::Position;
use tidewire::server::{
    Authenticate, ConnHandle, Credential, Publication, Routes, Server as Endpoint, ServerEvent,
    ShutdownReport, Verdict,
};
use tidewire::ws::{AppSocket, CloseCode, UpgradeRequest, WsState};

use crate::conn::{WebSocket, WsConn};
use crate::http::HttpRequest;
use crate::outbound::{SocketOwner, Sockets, Table, wait};
use crate::pump::{Core, Handlers, run_conn, run_core_timer, spawn_on};
use crate::{Event, until};

/// Pause after an `accept` error (e.g. out of file descriptors) before the next attempt.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// Settings of a [`Server`]. Build with `ServerConfig::default()` and change fields.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ServerConfig {
    /// The core endpoint's settings ([`tidewire::server::ServerConfig`]), except that the
    /// default has no hub route ([`Routes::none`]); a hub server sets `Routes::default()`.
    pub endpoint: tidewire::server::ServerConfig,
    /// Most live TCP connections (default 10 000); one over the limit is dropped at once.
    pub max_connections: usize,
    /// Most bytes of one read (default 64 KiB), into a buffer per executor thread.
    pub read_buffer: usize,
    /// The executor of every task of the server; `None`: smol's global executor.
    pub executor: Option<Arc<Executor<'static>>>,
    /// A Redis server to share channels with other instances ([`tidewire::redis`]).
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

/// A bound listener with its core endpoint ([`tidewire::server::Server`]).
/// [`serve`](Self::serve) runs its accept loop; a [`ServerHandle`] controls it.
pub struct Server {
    listener: TcpListener,
    shared: Arc<ServerState>,
}

/// Controls a [`Server`] from any task or thread: counts, the hub, graceful shutdown.
#[derive(Clone)]
pub struct ServerHandle {
    shared: Arc<ServerState>,
}

pub(crate) struct ServerState {
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

impl Drop for ServerState {
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
    /// An accept loop holds the listener: shutdown waits until it released the port.
    serving: bool,
    report: Option<ShutdownReport>,
}

struct Entry {
    stream: Arc<Async<TcpStream>>,
    /// An application WebSocket, closed with 1001 by shutdown.
    ws: Option<Weak<WsConn>>,
}

/// A live TCP connection's place in the registry; dropping it deregisters the connection.
pub(crate) struct Registration {
    pub(crate) server: Arc<ServerState>,
    /// The connection's handle in the core endpoint, its key in the registry.
    pub(crate) conn: ConnHandle,
}

impl ServerState {
    fn registry(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn core(&self) -> MutexGuard<'_, Core> {
        self.core.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// One mutation of the core, then its outputs dispatched.
    pub(crate) fn with_core<T>(&self, f: impl FnOnce(&mut Core) -> T) -> T {
        let mut core = self.core();
        let out = f(&mut core);
        core.wake_waiters(self);
        out
    }

    /// Links `conn`'s open WebSocket for shutdown; closes it at once when that started.
    fn attach(&self, conn: ConnHandle, shared: &Arc<WsConn>) {
        let mut reg = self.registry();
        if let Some(entry) = reg.conns.get_mut(&conn.0) {
            entry.ws = Some(Arc::downgrade(shared));
        }
        if reg.stopping {
            close_going_away(shared);
        }
    }
}

/// The core server's Redis bus, driven by the outbound-socket driver; the server's tasks.
impl SocketOwner for ServerState {
    type Machine = Endpoint;

    fn with<T>(&self, f: impl FnOnce(&mut Self::Machine, &mut Table, Instant) -> T) -> T {
        self.with_core(|core| f(&mut core.server, &mut core.bus_socks, Instant::now()))
    }

    fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        spawn_on(self.cfg.executor.as_ref(), task);
    }
}

impl Registration {
    /// Registers a new connection, or `None` when over `max_connections` or shutting down.
    fn new(server: &Arc<ServerState>, stream: &Arc<Async<TcpStream>>) -> Option<Self> {
        let mut reg = server.registry();
        if reg.stopping || reg.conns.len() >= server.cfg.max_connections {
            return None;
        }
        let id = reg.next_id;
        reg.next_id += 1;
        reg.conns.insert(id, Entry { stream: stream.clone(), ws: None });
        Some(Self { server: server.clone(), conn: ConnHandle(id) })
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.server.registry().conns.remove(&self.conn.0);
        self.server.changed.notify(usize::MAX);
    }
}

fn close_going_away(shared: &WsConn) {
    let _ = shared.command(|conn, now| conn.close(now, CloseCode::GOING_AWAY, "server shutdown"));
}

impl Server {
    /// Binds a listener whose hub routes (if any) let everyone in, anonymous ([`AllowAll`]).
    pub async fn bind(addr: impl AsyncToSocketAddrs, cfg: ServerConfig) -> io::Result<Server> {
        let anyone = |_: &Request| Verdict::Allow(Credential::client(Principal::anonymous()));
        Self::bind_with(addr, cfg, anyone, AllowAll).await
    }

    /// Binds a listener with the application's authentication and authorization
    /// ([`Server::new`](tidewire::server::Server::new)), seeded from OS entropy.
    pub async fn bind_with(
        addr: impl AsyncToSocketAddrs,
        cfg: ServerConfig,
        authn: impl Authenticate + Send + 'static,
        authz: impl Authorize + Send + 'static,
    ) -> io::Result<Server> {
        let listener = TcpListener::bind(addr).await?;
        let local_addr = listener.local_addr()?;
        // Without entropy, the clock: two lives of a server differ.
        let seed = getrandom::u64().unwrap_or_else(|_| {
            let t = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
            u64::try_from(t.as_nanos() & u128::from(u64::MAX)).unwrap_or_default()
        });
        let ecfg = cfg.endpoint.clone();
        let server = match cfg.redis.clone() {
            None => Endpoint::new(ecfg, authn, authz, seed),
            Some(r) => Endpoint::with_redis(ecfg, authn, authz, r, seed, Instant::now()),
        };
        let shared = Arc::new_cyclic(|me| ServerState {
            cfg,
            local_addr,
            registry: Mutex::new(Registry::default()),
            core: Mutex::new(Core::new(server, Sockets(me.clone()))),
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

    /// A handle to control the server.
    #[must_use]
    pub fn handle(&self) -> ServerHandle {
        ServerHandle { shared: self.shared.clone() }
    }

    /// Runs the accept loop until [`ServerHandle::shutdown`] finished: each upgrade the core
    /// hands over goes to `handler` in a task of its own; plain HTTP requests get `404`.
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

    /// As [`serve`](Self::serve), with `http` for plain HTTP requests (one per connection),
    /// run on the connection's task.
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
            // Checked first: nothing more is accepted once shutdown started.
            let stop = wait(&shared.stop, || shared.registry().stopping.then_some(None));
            match future::or(stop, async { Some(self.listener.accept().await) }).await {
                None => break,
                Some(Ok((stream, peer))) => {
                    let _ = stream.set_nodelay(true);
                    let stream: Arc<Async<TcpStream>> = stream.into();
                    // Over the limit or shutting down: dropped at once.
                    if let Some(registration) = Registration::new(&shared, &stream) {
                        shared.spawn(run_conn(stream, peer, registration, handlers.clone()));
                    }
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

    /// Live TCP connections, the hub's and the application's.
    #[must_use]
    pub fn connections(&self) -> usize {
        self.shared.registry().conns.len()
    }

    /// Stops accepting, shuts the core down ([`Server::shutdown`](Endpoint::shutdown)), closes
    /// application WebSockets with 1001, waits up to `grace`, then drops what is left. A
    /// second call waits for the first's report.
    pub async fn shutdown(&self, grace: Duration) -> ShutdownReport {
        let shared = &self.shared;
        let total = {
            let mut reg = shared.registry();
            (!std::mem::replace(&mut reg.stopping, true)).then(|| {
                for link in reg.conns.values().filter_map(|e| e.ws.as_ref()?.upgrade()) {
                    close_going_away(&link);
                }
                reg.conns.len()
            })
        };
        let Some(total) = total else {
            return self.wait_report().await;
        };
        self.with(|s, now| s.shutdown(now, grace));
        shared.stop.notify(usize::MAX);

        let deadline = Instant::now() + grace;
        loop {
            let changed = shared.changed.listen();
            // Drained, and the port released (the accept loop dropped its listener).
            let finished = {
                let reg = shared.registry();
                reg.conns.is_empty() && !reg.serving
            };
            if finished || until(deadline, changed).await.is_none() || Instant::now() >= deadline {
                break;
            }
        }

        let mut reg = shared.registry();
        let dropped = reg.conns.len();
        for entry in reg.conns.values() {
            let _ = entry.stream.get_ref().shutdown(Shutdown::Both);
            if let Some(link) = entry.ws.as_ref().and_then(Weak::upgrade) {
                link.update(AppSocket::kill);
            }
        }
        let report = ShutdownReport { closed: total.saturating_sub(dropped), dropped };
        reg.report = Some(report);
        drop(reg);
        shared.done.notify(usize::MAX);
        report
    }

    async fn wait_report(&self) -> ShutdownReport {
        wait(&self.shared.done, || self.shared.registry().report).await
    }

    /// The trusted publish of one JSON value ([`Server::publish`](Endpoint::publish), with its
    /// errors). With [`ServerConfig::redis`], use [`submit`](Self::submit).
    pub fn publish(&self, ch: &str, json: impl AsRef<[u8]>) -> Result<Position, HubError> {
        self.with(|s, now| s.publish(now, ch, json.as_ref()))
    }

    /// [`publish`](Self::publish) deduplicated by `id`; with a bus, waits for its answer
    /// ([`Server::publish_trusted`](Endpoint::publish_trusted), with its errors).
    pub async fn publish_once(
        &self,
        ch: &str,
        id: &str,
        json: impl AsRef<[u8]>,
    ) -> Result<Position, HubError> {
        self.trusted(ch, Some(id), json.as_ref()).await
    }

    /// The trusted publish with and without Redis: with a bus it waits for its position
    /// ([`Server::publish_trusted`](Endpoint::publish_trusted), with its errors).
    pub async fn submit(&self, ch: &str, json: impl AsRef<[u8]>) -> Result<Position, HubError> {
        self.trusted(ch, None, json.as_ref()).await
    }

    /// The core's trusted publish; with a bus, waits for its answer.
    async fn trusted(&self, ch: &str, id: Option<&str>, json: &[u8]) -> Result<Position, HubError> {
        let token = match self.with(|s, now| s.publish_trusted(now, ch, id, json))? {
            Publication::Submitted(token) => token,
            Publication::Appended(pos) => return Ok(pos),
        };
        let waiting = Forget(&self.shared, token);
        let r = wait(&self.shared.arrived, || self.shared.core().server.take_submitted(token));
        let r = r.await;
        std::mem::forget(waiting);
        r
    }

    /// Runs `f` on the core server under its lock, with the time, then wakes what it set in
    /// motion: the way to call the core's commands, e.g.
    /// `handle.with(|s, now| s.decide(now, conn, verdict))` ([`decide`](Endpoint::decide)), or
    /// [`decide_join`](Endpoint::decide_join), [`restore`](Endpoint::restore). Keep `f` short:
    /// every connection waits for it.
    pub fn with<T>(&self, f: impl FnOnce(&mut Endpoint, Instant) -> T) -> T {
        self.shared.with_core(|core| f(&mut core.server, Instant::now()))
    }

    /// Reads the core server under its lock, e.g. `handle.inspect(|s| s.presence(ch))` (see
    /// [`with`](Self::with)). Keep `f` short: every connection waits for it.
    pub fn inspect<T>(&self, f: impl FnOnce(&Endpoint) -> T) -> T {
        f(&self.shared.core().server)
    }

    /// The next informational event, without waiting
    /// ([`Server::poll_event`](Endpoint::poll_event)); hand-overs are the pump's, never here.
    #[must_use]
    pub fn next_event(&self) -> Option<ServerEvent> {
        self.shared.core().server.poll_event()
    }

    /// As [`next_event`](Self::next_event), waiting up to `timeout` for one.
    pub async fn wait_event(&self, timeout: Duration) -> Option<ServerEvent> {
        until(crate::after(timeout), wait(&self.shared.arrived, || self.next_event())).await
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

/// An upgrade request for a path the hub does not serve, awaiting [`accept`](Self::accept)
/// or [`reject`](Self::reject); dropping it closes the connection without a response.
pub struct Upgrade {
    /// The connection, which its task pumps once decided.
    pub(crate) shared: Arc<WsConn>,
    pub(crate) request: UpgradeRequest,
    pub(crate) server: Arc<ServerState>,
    pub(crate) conn: ConnHandle,
}

impl Upgrade {
    /// The request head.
    #[must_use]
    pub fn request(&self) -> &UpgradeRequest {
        &self.request
    }

    /// The peer's address.
    #[must_use]
    pub fn peer_addr(&self) -> SocketAddr {
        self.shared.peer
    }

    /// Accepts ([`WsConnection::accept`](tidewire::ws::WsConnection::accept)) with an offered
    /// subprotocol and extra headers; `InvalidInput` (the connection then closed) if invalid.
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

    /// Rejects ([`WsConnection::reject`](tidewire::ws::WsConnection::reject)) and waits until
    /// the response is written (at most `WsConfig::close_timeout`) or the write failed.
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

/// A `submit` waiting for the bus's answer: dropped, it lets the core discard the answer.
struct Forget<'a>(&'a ServerState, tidewire::hub::BusToken);

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.0.core().server.forget_submitted(self.1);
    }
}
