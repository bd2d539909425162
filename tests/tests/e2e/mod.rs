//! One blocking interface over both adapters' public API (the hub server behind
//! `Server::bind_with` and its `ServerHandle`, and the client session), so that each
//! end-to-end scenario of `hub_e2e.rs`, `redis_e2e.rs` and `conformance.rs` is written once
//! and runs against `tidewire-std` and `tidewire-smol` alike (and against each other: a std
//! client can talk to a smol server). Same scenario, both adapters: the adapters cannot
//! drift apart unseen.
//!
//! The server serves the core `tidewire::server::Server`'s default routes (`/ws`, `/events`,
//! `/poll`, `/api/publish`) with [`DemoAuth`] for authentication and authorization (the
//! [`Policy`] may leave the joins of some channels to the application). The
//! application's handlers answer the rest: an upgrade on `/app/echo` is an echo WebSocket,
//! `GET /app/hello` answers `200 app`, any other upgrade is refused with 404 (and any other
//! request gets 404 too). [`Gates`] make the authentication refuse the WebSocket upgrade or
//! the event stream with 502 (a proxy that blocks them), switched at run time, so a test can
//! push a session down the transport ladder.
//!
//! [`script`] plays one scripted scenario on either adapter and on the deterministic
//! simulation (the same core `Server` on the simulated network), for `conformance.rs`.

// Each test crate that uses this module uses part of it.
#![allow(dead_code)]

pub(crate) mod front;
pub(crate) mod http;
pub(crate) mod scenario;
pub(crate) mod script;

/// `in_both_adapters!(a, b, …)`: a `#[test]` per scenario for each adapter, in modules
/// `std_adapter` and `smol_adapter` (each scenario is `fn name<B: Backend>()`).
macro_rules! in_both_adapters {
    ($($scenario:ident),* $(,)?) => {
        mod std_adapter {
            $(#[test] fn $scenario() { super::$scenario::<super::e2e::std_adapter::Std>() })*
        }
        mod smol_adapter {
            $(#[test] fn $scenario() { super::$scenario::<super::e2e::smol_adapter::Smol>() })*
        }
    };
}

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use tidewire::client::{ClientMsgId, SessionConfig, SessionEvent, SessionState, Transport};
use tidewire::http::Request;
use tidewire::hub::{
    Authorize, DemoAuth, Hub, HubConfig, HubError, HubStats, JoinDecision, JoinId, JoinVerdict,
    Principal, PublishDecision, PublishId,
};
use tidewire::policy::BackoffConfig;
use tidewire::redis::RedisConfig;
use tidewire::replay::Position;
use tidewire::server::{Authenticate, Refusal, Routes, ServerEvent, Verdict};
use tidewire::ws::CloseCode;

/// Paths a proxy in front of the server blocks (502), switched at run time.
#[derive(Default)]
pub(crate) struct Gates {
    /// Refuse WebSocket upgrades.
    pub ws: AtomicBool,
    /// Refuse `/events`.
    pub sse: AtomicBool,
}

impl Gates {
    pub(crate) fn block(&self, ws: bool, sse: bool) {
        self.ws.store(ws, Ordering::SeqCst);
        self.sse.store(sse, Ordering::SeqCst);
    }
}

/// The test server's authentication: [`DemoAuth`] behind the [`Gates`] (502 `blocked` for
/// a WebSocket upgrade or an event stream while its gate is closed).
pub(crate) fn gated(gates: Arc<Gates>) -> impl Fn(&Request) -> Verdict + Send + 'static {
    move |req: &Request| {
        let blocked = (gates.ws.load(Ordering::SeqCst) && req.is_websocket_upgrade())
            || (gates.sse.load(Ordering::SeqCst) && req.path_only() == "/events");
        if blocked {
            return Verdict::Refuse(Refusal::new(502, "blocked"));
        }
        Authenticate::authenticate(&DemoAuth, req)
    }
}

/// The test server's authorization: [`DemoAuth`], except that every join of a channel
/// named `<defer>...` is left to the application ([`JoinVerdict::Defer`]: the hub emits
/// `HubEvent::JoinRequested` and waits for the core's `decide_join`, called through
/// `ServerHandle::with`).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Policy {
    pub defer: Option<&'static str>,
}

impl Policy {
    fn deferred(&self, ch: &str) -> bool {
        self.defer.is_some_and(|prefix| ch.starts_with(prefix))
    }
}

impl Authorize for Policy {
    fn can_read(&self, p: &Principal, ch: &str) -> bool {
        self.deferred(ch) || DemoAuth.can_read(p, ch)
    }
    fn can_write(&self, p: &Principal, ch: &str) -> bool {
        DemoAuth.can_write(p, ch)
    }
    fn join_verdict(&self, p: &Principal, ch: &str) -> JoinVerdict {
        if self.deferred(ch) {
            JoinVerdict::Defer
        } else if DemoAuth.can_read(p, ch) {
            JoinVerdict::Allow
        } else {
            JoinVerdict::Refuse
        }
    }
}

/// What a test server serves.
#[derive(Clone, Default)]
pub(crate) struct Spec {
    pub hub: HubConfig,
    /// The port of a Redis server whose bus the hub joins.
    pub redis: Option<u16>,
    pub gates: Arc<Gates>,
    /// Origins allowed besides the server's own.
    pub allowed_origins: Vec<String>,
    /// Headers on every hub response (CORS).
    pub response_headers: Vec<(String, String)>,
    /// Joins of channels with this prefix wait for the application ([`Policy`]).
    pub defer_joins: Option<&'static str>,
}

impl Spec {
    pub(crate) fn new(hub: HubConfig) -> Self {
        Self { hub, ..Self::default() }
    }

    /// The core endpoint's settings: the default hub routes.
    pub(crate) fn endpoint(&self) -> tidewire::server::ServerConfig {
        let mut e = tidewire::server::ServerConfig::default();
        e.routes = Routes::default();
        e.hub = self.hub.clone();
        e.allowed_origins = self.allowed_origins.clone();
        e.response_headers = self.response_headers.clone();
        e
    }

    pub(crate) fn redis_config(&self) -> Option<RedisConfig> {
        self.redis.map(|port| RedisConfig { port, ..RedisConfig::default() })
    }

    /// The hub's authorization policy.
    pub(crate) fn policy(&self) -> Policy {
        Policy { defer: self.defer_joins }
    }
}

/// What waiting for a session event gave.
pub(crate) enum Next {
    Event(SessionEvent),
    Timeout,
    Ended,
}

/// A client session of either adapter.
pub(crate) trait Client {
    fn subscribe(&self, ch: &str);
    fn publish(&self, ch: &str, json: &str) -> ClientMsgId;
    fn next(&mut self, timeout: Duration) -> Next;
    fn transport(&self) -> Option<Transport>;
    fn close(&self);
}

/// What a graceful shutdown reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Shutdown {
    pub closed: usize,
    pub dropped: usize,
}

/// A WebSocket client of either adapter, blocking.
pub(crate) trait Ws {
    fn send_text(&mut self, text: &str);
    fn send_binary(&mut self, data: &[u8]);
    /// The next text (or binary) message, or the close code once closed.
    fn recv(&mut self, timeout: Duration) -> Result<Vec<u8>, Option<CloseCode>>;
}

/// A hub server and client session of one adapter, through its public API only.
pub(crate) trait Backend {
    /// The adapter's `ServerHandle`.
    type Handle: Clone + Send + Sync + 'static;
    /// A running server (its thread or task).
    type Server;
    type Client: Client;
    type Ws: Ws + Send + 'static;
    const NAME: &'static str;

    /// Serves `spec` on `addr` (`127.0.0.1:0`, or the address of a stopped server).
    fn serve(addr: &str, spec: &Spec) -> Self::Server;
    /// A plain server (`Server::bind`: no hub route) whose application echoes every
    /// WebSocket on any path; `serve()` without an HTTP handler.
    fn serve_plain_echo() -> Self::Server;
    fn handle(server: &Self::Server) -> Self::Handle;
    fn addr(handle: &Self::Handle) -> SocketAddr;
    /// Graceful shutdown (1001 to every WebSocket) within `grace`; returns when `serve`
    /// returned (the port is free).
    fn stop_within(server: Self::Server, grace: Duration) -> Shutdown;
    fn stop(server: Self::Server) {
        Self::stop_within(server, Duration::from_millis(500));
    }

    fn try_publish(h: &Self::Handle, ch: &str, json: &str) -> Result<Position, HubError>;
    fn publish(h: &Self::Handle, ch: &str, json: &str) -> Position {
        Self::try_publish(h, ch, json).unwrap()
    }
    /// A trusted publish stored once per `id` (with Redis: across instances).
    fn publish_once(h: &Self::Handle, ch: &str, id: &str, json: &str) -> Position;
    /// `ServerHandle::publish` itself (the core's publish).
    fn handle_publish(h: &Self::Handle, ch: &str, json: &str) -> Result<Position, HubError>;
    /// `ServerHandle::submit` itself (the publish that waits for the bus, where there is one).
    fn handle_submit(h: &Self::Handle, ch: &str, json: &str) -> Result<Position, HubError>;
    fn inspect<T>(h: &Self::Handle, f: impl FnOnce(&Hub) -> T) -> T;
    fn presence(h: &Self::Handle, ch: &str) -> Vec<String>;
    fn head(h: &Self::Handle, ch: &str) -> Option<Position>;
    fn stats(h: &Self::Handle) -> HubStats;
    fn hub_connections(h: &Self::Handle) -> usize;
    fn connections(h: &Self::Handle) -> usize;
    fn bus_is_up(h: &Self::Handle) -> bool;
    fn next_event(h: &Self::Handle) -> Option<ServerEvent>;
    /// The next informational event within `timeout`.
    fn wait_event(h: &Self::Handle, timeout: Duration) -> Option<ServerEvent>;
    /// Answers a deferred join: the core's `decide_join` through `ServerHandle::with`
    /// (`false`: unknown id).
    fn decide_join(h: &Self::Handle, id: JoinId, decision: JoinDecision) -> bool;
    /// Answers a vetted publish: the core's `decide_publish` through `ServerHandle::with`
    /// (`false`: unknown id).
    fn decide_publish(h: &Self::Handle, id: PublishId, decision: PublishDecision) -> bool;

    fn session(cfg: SessionConfig) -> Self::Client;
    /// A WebSocket client of this adapter to `url`; `Err` with the refusal's status.
    fn ws(url: &str) -> Result<Self::Ws, u16>;
}

/// A session configuration with short backoff, for `token` at `port`.
pub(crate) fn session_config(port: u16, token: Option<&str>) -> SessionConfig {
    let mut cfg = SessionConfig::new("127.0.0.1", port);
    cfg.token = token.map(str::to_owned);
    cfg.backoff = BackoffConfig {
        base: Duration::from_millis(50),
        cap: Duration::from_millis(200),
        restart_floor: Duration::from_millis(100),
        ..BackoffConfig::default()
    };
    cfg.poll_interval = Duration::from_millis(20);
    cfg
}

/// Runs `f` on a thread and fails the test if it takes longer than `secs`.
pub(crate) fn within(secs: u64, f: impl FnOnce() + Send + 'static) {
    let (tx, rx) = std::sync::mpsc::channel();
    let t = thread::spawn(move || {
        f();
        let _ = tx.send(());
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(()) => t.join().unwrap(),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            if let Err(e) = t.join() {
                std::panic::resume_unwind(e);
            }
        }
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            panic!("scenario did not finish within {secs} s")
        }
    }
}

/// Polls `cond` every 5 ms for up to 10 s.
pub(crate) fn settle(mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + Duration::from_secs(10);
    while Instant::now() < end {
        if cond() {
            return true;
        }
        thread::sleep(Duration::from_millis(5));
    }
    cond()
}

/// Binds `addr`, retrying for a few seconds while a just-stopped server's port is busy.
fn bind_retry<T>(addr: &str, mut bind: impl FnMut() -> std::io::Result<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match bind() {
            Ok(s) => return s,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("bind {addr}: {e}"),
        }
    }
}

/// What the application answers to a request that is not the hub's.
pub(crate) fn app_answer(path: &str) -> (u16, &'static [u8]) {
    if path == "/app/hello" { (200, b"app\n") } else { (404, b"") }
}

/// The `ServerHandle` methods that have the same name and signature in both adapters (the
/// shared API): the same forwarding in each `Backend`.
macro_rules! same_handle_api {
    () => {
        fn inspect<T>(h: &ServerHandle, f: impl FnOnce(&Hub) -> T) -> T {
            h.inspect(|s| f(s.hub()))
        }
        fn presence(h: &ServerHandle, ch: &str) -> Vec<String> {
            h.inspect(|s| s.presence(ch))
        }
        fn head(h: &ServerHandle, ch: &str) -> Option<Position> {
            h.inspect(|s| s.head(ch))
        }
        fn stats(h: &ServerHandle) -> HubStats {
            h.inspect(tidewire::server::Server::hub_stats)
        }
        fn hub_connections(h: &ServerHandle) -> usize {
            h.inspect(tidewire::server::Server::hub_connections)
        }
        fn connections(h: &ServerHandle) -> usize {
            h.connections()
        }
        fn bus_is_up(h: &ServerHandle) -> bool {
            h.inspect(tidewire::server::Server::bus_is_up)
        }
        fn next_event(h: &ServerHandle) -> Option<ServerEvent> {
            h.next_event()
        }
        fn decide_join(h: &ServerHandle, id: JoinId, decision: JoinDecision) -> bool {
            h.with(|s, now| s.decide_join(now, id, decision))
        }
        fn decide_publish(h: &ServerHandle, id: PublishId, decision: PublishDecision) -> bool {
            h.with(|s, now| s.decide_publish(now, id, decision))
        }
        fn handle_publish(h: &ServerHandle, ch: &str, json: &str) -> Result<Position, HubError> {
            h.publish(ch, json)
        }
        fn handle(server: &Running) -> ServerHandle {
            server.handle.clone()
        }
        fn addr(h: &ServerHandle) -> SocketAddr {
            h.local_addr()
        }
        fn session(cfg: SessionConfig) -> Session {
            Session::connect(cfg)
        }
    };
}

/// The `Client` methods whose `Session` calls are the same in both adapters.
macro_rules! same_client_api {
    () => {
        fn subscribe(&self, ch: &str) {
            Session::subscribe(self, ch).unwrap();
        }
        fn publish(&self, ch: &str, json: &str) -> ClientMsgId {
            Session::publish(self, ch, json).unwrap()
        }
        fn transport(&self) -> Option<Transport> {
            self.inspect(tidewire::client::ClientSession::transport)
        }
        fn close(&self) {
            Session::close(self);
        }
    };
}

/// The std adapter: a thread per connection.
pub(crate) mod std_adapter {
    use super::*;
    use tidewire_std::{
        ClientOptions, ConnectError, HttpRequest, RecvError, Server, ServerConfig, ServerHandle,
        Session, Upgrade, WebSocket,
    };

    pub(crate) enum Std {}

    pub(crate) struct Running {
        handle: ServerHandle,
        thread: thread::JoinHandle<std::io::Result<()>>,
    }

    impl Client for Session {
        same_client_api!();
        fn next(&mut self, timeout: Duration) -> Next {
            match self.next_event_timeout(timeout) {
                Some(ev) => Next::Event(ev),
                None if Session::state(self) == SessionState::Closed => Next::Ended,
                None => Next::Timeout,
            }
        }
    }

    impl Ws for WebSocket {
        fn send_text(&mut self, text: &str) {
            self.send(text.to_owned()).unwrap();
        }
        fn send_binary(&mut self, data: &[u8]) {
            self.send(tidewire::ws::Message::binary(bytes::Bytes::copy_from_slice(data))).unwrap();
        }
        fn recv(&mut self, timeout: Duration) -> Result<Vec<u8>, Option<CloseCode>> {
            let _ = timeout; // the socket's own keep-alive bounds a dead peer
            match WebSocket::recv(self) {
                Ok(m) => Ok(m.payload().to_vec()),
                Err(RecvError::Closed(info)) => Err(Some(info.code)),
                Err(_) => Err(None),
            }
        }
    }

    /// Echoes every message of an application WebSocket until it closes.
    fn echo(up: Upgrade) {
        let Ok(mut ws) = up.accept(None, &[]) else { return };
        while let Ok(m) = ws.recv() {
            if ws.send(m).is_err() {
                return;
            }
        }
    }

    fn run(server: Server, app: bool) -> Running {
        let handle = server.handle();
        let thread = thread::spawn(move || {
            if app {
                server.serve_with(
                    |up: Upgrade| {
                        if up.request().request().path_only() == "/app/echo" {
                            echo(up);
                        } else {
                            let _ = up.reject(404, &[], b"");
                        }
                    },
                    |req: HttpRequest| {
                        let (status, body) = app_answer(req.request().path_only());
                        let _ = req.respond(status, &[], body);
                    },
                )
            } else {
                server.serve(echo)
            }
        });
        Running { handle, thread }
    }

    impl Backend for Std {
        type Handle = ServerHandle;
        type Server = Running;
        type Client = Session;
        type Ws = WebSocket;
        const NAME: &'static str = "std";

        fn serve(addr: &str, spec: &Spec) -> Running {
            let server = bind_retry(addr, || {
                let mut cfg = ServerConfig::default();
                cfg.endpoint = spec.endpoint();
                cfg.redis = spec.redis_config();
                Server::bind_with(addr, cfg, gated(spec.gates.clone()), spec.policy())
            });
            run(server, true)
        }

        fn serve_plain_echo() -> Running {
            run(Server::bind("127.0.0.1:0", ServerConfig::default()).expect("bind"), false)
        }

        fn stop_within(server: Running, grace: Duration) -> Shutdown {
            let r = server.handle.shutdown(grace);
            server.thread.join().unwrap().unwrap();
            Shutdown { closed: r.closed, dropped: r.dropped }
        }

        fn try_publish(h: &ServerHandle, ch: &str, json: &str) -> Result<Position, HubError> {
            h.submit(ch, json.as_bytes())
        }

        fn publish_once(h: &ServerHandle, ch: &str, id: &str, json: &str) -> Position {
            h.publish_once(ch, id, json.as_bytes()).unwrap()
        }

        fn handle_submit(h: &ServerHandle, ch: &str, json: &str) -> Result<Position, HubError> {
            h.submit(ch, json.as_bytes())
        }

        same_handle_api!();

        fn wait_event(h: &ServerHandle, timeout: Duration) -> Option<ServerEvent> {
            h.wait_event(timeout)
        }

        fn ws(url: &str) -> Result<WebSocket, u16> {
            match tidewire_std::connect(url, ClientOptions::default()) {
                Ok(ws) => Ok(ws),
                Err(ConnectError::Handshake(e)) => Err(refusal_status(&e)),
                Err(e) => panic!("connect {url}: {e:?}"),
            }
        }
    }
}

/// The status of a refused WebSocket handshake (0 when it was not a refusal).
pub(crate) fn refusal_status(e: &tidewire::ws::HandshakeError) -> u16 {
    match e {
        tidewire::ws::HandshakeError::Status(status) => *status,
        _ => 0,
    }
}

/// The smol adapter: the server and the sessions run on smol's global executor.
pub(crate) mod smol_adapter {
    use super::*;
    use smol::future;
    use tidewire_smol::{
        ClientOptions, ConnectError, HttpRequest, RecvError, Server, ServerConfig, ServerHandle,
        Session, Upgrade, WebSocket,
    };

    pub(crate) enum Smol {}

    pub(crate) struct Running {
        handle: ServerHandle,
        task: smol::Task<std::io::Result<()>>,
    }

    impl Client for Session {
        same_client_api!();
        fn next(&mut self, timeout: Duration) -> Next {
            smol::block_on(future::or(
                async { self.next_event().await.map_or(Next::Ended, Next::Event) },
                async {
                    smol::Timer::after(timeout).await;
                    Next::Timeout
                },
            ))
        }
    }

    impl Ws for WebSocket {
        fn send_text(&mut self, text: &str) {
            smol::block_on(self.send(text.to_owned())).unwrap();
        }
        fn send_binary(&mut self, data: &[u8]) {
            let m = tidewire::ws::Message::binary(bytes::Bytes::copy_from_slice(data));
            smol::block_on(self.send(m)).unwrap();
        }
        fn recv(&mut self, timeout: Duration) -> Result<Vec<u8>, Option<CloseCode>> {
            smol::block_on(future::or(
                async {
                    match WebSocket::recv(self).await {
                        Ok(m) => Ok(m.payload().to_vec()),
                        Err(RecvError::Closed(info)) => Err(Some(info.code)),
                        Err(_) => Err(None),
                    }
                },
                async {
                    smol::Timer::after(timeout).await;
                    Err(None)
                },
            ))
        }
    }

    async fn echo(up: Upgrade) {
        let Ok(mut ws) = up.accept(None, &[]).await else { return };
        while let Ok(m) = ws.recv().await {
            if ws.send(m).await.is_err() {
                return;
            }
        }
    }

    fn run(server: Server, app: bool) -> Running {
        let handle = server.handle();
        let task = if app {
            smol::spawn(server.serve_with(
                |up: Upgrade| async move {
                    if up.request().request().path_only() == "/app/echo" {
                        echo(up).await;
                    } else {
                        let _ = up.reject(404, &[], b"").await;
                    }
                },
                |req: HttpRequest| async move {
                    let (status, body) = app_answer(req.request().path_only());
                    let _ = req.respond(status, &[], body).await;
                },
            ))
        } else {
            smol::spawn(server.serve(echo))
        };
        Running { handle, task }
    }

    impl Backend for Smol {
        type Handle = ServerHandle;
        type Server = Running;
        type Client = Session;
        type Ws = WebSocket;
        const NAME: &'static str = "smol";

        fn serve(addr: &str, spec: &Spec) -> Running {
            let server = bind_retry(addr, || {
                let mut cfg = ServerConfig::default();
                cfg.endpoint = spec.endpoint();
                cfg.redis = spec.redis_config();
                smol::block_on(Server::bind_with(
                    addr,
                    cfg,
                    gated(spec.gates.clone()),
                    spec.policy(),
                ))
            });
            run(server, true)
        }

        fn serve_plain_echo() -> Running {
            let server = smol::block_on(Server::bind("127.0.0.1:0", ServerConfig::default()));
            run(server.expect("bind"), false)
        }

        fn stop_within(server: Running, grace: Duration) -> Shutdown {
            smol::block_on(async {
                let r = server.handle.shutdown(grace).await;
                server.task.await.unwrap();
                Shutdown { closed: r.closed, dropped: r.dropped }
            })
        }

        fn try_publish(h: &ServerHandle, ch: &str, json: &str) -> Result<Position, HubError> {
            smol::block_on(h.submit(ch, json.as_bytes()))
        }

        fn publish_once(h: &ServerHandle, ch: &str, id: &str, json: &str) -> Position {
            smol::block_on(h.publish_once(ch, id, json.as_bytes())).unwrap()
        }

        fn handle_submit(h: &ServerHandle, ch: &str, json: &str) -> Result<Position, HubError> {
            smol::block_on(h.submit(ch, json.as_bytes()))
        }

        same_handle_api!();

        fn wait_event(h: &ServerHandle, timeout: Duration) -> Option<ServerEvent> {
            smol::block_on(h.wait_event(timeout))
        }

        fn ws(url: &str) -> Result<WebSocket, u16> {
            match smol::block_on(tidewire_smol::connect(url, ClientOptions::default())) {
                Ok(ws) => Ok(ws),
                Err(ConnectError::Handshake(e)) => Err(refusal_status(&e)),
                Err(e) => panic!("connect {url}: {e:?}"),
            }
        }
    }
}
