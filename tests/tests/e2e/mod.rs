//! One blocking interface over both adapters' hub server and client session, so that each
//! end-to-end scenario of `hub_e2e.rs` is written once and runs against `tidewire-std` and
//! `tidewire-smol` alike (and against each other: a std client can talk to a smol server).
//!
//! The server serves the demo's routes with [`DemoAuth`]: `/ws`, `/events`, `/poll` and
//! `/api/publish`. [`Gates`] can refuse the WebSocket upgrade or the event stream with 502
//! (a proxy that blocks them), so a test can push a session down the transport ladder.

// Each test crate that uses this module uses part of it.
#![allow(dead_code)]

pub(crate) mod scenario;

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
use tidewire::hub::{DemoAuth, Hub, HubConfig, HubError};
use tidewire::policy::BackoffConfig;
use tidewire::redis::RedisConfig;
use tidewire::replay::Position;

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

/// A hub server and client session of one adapter.
pub(crate) trait Backend {
    type Hub: Clone + Send + 'static;
    type Server;
    type Client: Client;
    fn hub(cfg: HubConfig) -> Self::Hub;
    /// A hub that shares its channels through the Redis server on `port`.
    fn hub_on_redis(cfg: HubConfig, port: u16) -> Self::Hub;
    /// Serves `hub` on `addr` (`127.0.0.1:0`, or the address of a stopped server).
    fn serve(hub: &Self::Hub, addr: &str, gates: &Arc<Gates>) -> Self::Server;
    fn addr(server: &Self::Server) -> SocketAddr;
    /// Graceful shutdown (1001 to every connection); returns when the port is free.
    fn stop(server: Self::Server);
    fn try_publish(hub: &Self::Hub, ch: &str, json: &str) -> Result<Position, HubError>;
    fn publish(hub: &Self::Hub, ch: &str, json: &str) -> Position {
        Self::try_publish(hub, ch, json).unwrap()
    }
    /// A trusted publish stored once per `id` (with Redis: across instances).
    fn publish_once(hub: &Self::Hub, ch: &str, id: &str, json: &str) -> Position;
    fn inspect<T>(hub: &Self::Hub, f: impl FnOnce(&Hub) -> T) -> T;
    fn session(cfg: SessionConfig) -> Self::Client;
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

/// The route table of the test server, shared by both adapters: which handler a request
/// goes to, or the status that refuses it.
pub(crate) enum Route {
    Sse,
    Poll,
    Publish,
    Refuse(u16),
}

pub(crate) fn route(gates: &Gates, path: &str) -> Route {
    match path {
        "/events" if gates.sse.load(Ordering::SeqCst) => Route::Refuse(502),
        "/events" => Route::Sse,
        "/poll" => Route::Poll,
        "/api/publish" => Route::Publish,
        _ => Route::Refuse(404),
    }
}

/// The std adapter: a thread per connection.
pub(crate) mod std_adapter {
    use super::*;
    use tidewire_std::{
        HttpRequest, HubHandle, HubOptions, Server, ServerConfig, ServerHandle, Session, Upgrade,
    };

    pub(crate) enum Std {}

    pub(crate) struct Running {
        handle: ServerHandle,
        thread: thread::JoinHandle<std::io::Result<()>>,
    }

    impl Client for Session {
        fn subscribe(&self, ch: &str) {
            Session::subscribe(self, ch).unwrap();
        }
        fn publish(&self, ch: &str, json: &str) -> ClientMsgId {
            Session::publish(self, ch, json).unwrap()
        }
        fn next(&mut self, timeout: Duration) -> Next {
            match self.next_event_timeout(timeout) {
                Some(ev) => Next::Event(ev),
                None if Session::state(self) == SessionState::Closed => Next::Ended,
                None => Next::Timeout,
            }
        }
        fn transport(&self) -> Option<Transport> {
            self.inspect(tidewire::client::ClientSession::transport)
        }
        fn close(&self) {
            Session::close(self);
        }
    }

    impl Backend for Std {
        type Hub = HubHandle;
        type Server = Running;
        type Client = Session;

        fn hub(cfg: HubConfig) -> HubHandle {
            HubHandle::new(cfg, DemoAuth)
        }

        fn hub_on_redis(cfg: HubConfig, port: u16) -> HubHandle {
            let mut opts = HubOptions::default();
            opts.redis = Some(RedisConfig { port, ..RedisConfig::default() });
            HubHandle::with_options(cfg, DemoAuth, opts)
        }

        fn serve(hub: &HubHandle, addr: &str, gates: &Arc<Gates>) -> Running {
            let server = Server::bind(addr, ServerConfig::default()).expect("bind");
            let handle = server.handle();
            let (h1, h2, g1, g2) = (hub.clone(), hub.clone(), gates.clone(), gates.clone());
            let thread = thread::spawn(move || {
                server.serve_with(
                    move |up: Upgrade| {
                        if g1.ws.load(Ordering::SeqCst) {
                            let _ = up.reject(502, &[], b"");
                            return;
                        }
                        let Some(p) = DemoAuth::authenticate(up.request().token().as_deref())
                        else {
                            let _ = up.reject(401, &[], b"");
                            return;
                        };
                        let Ok(ws) = up.accept(None, &[]) else { return };
                        let name = p.user.clone();
                        h1.serve_ws(ws, p, name);
                    },
                    move |req: HttpRequest| {
                        let Some(p) = DemoAuth::authenticate(req.request().token().as_deref())
                        else {
                            let _ = req.respond(401, &[], b"bad token\n");
                            return;
                        };
                        let _ = match route(&g2, req.request().path_only()) {
                            Route::Sse => h2.serve_sse(req, p),
                            Route::Poll => h2.serve_poll(req, p),
                            Route::Publish => h2.serve_publish(req, p, false),
                            Route::Refuse(status) => req.respond(status, &[], b""),
                        };
                    },
                )
            });
            Running { handle, thread }
        }

        fn addr(server: &Running) -> SocketAddr {
            server.handle.local_addr()
        }

        fn stop(server: Running) {
            server.handle.shutdown(Duration::from_millis(500));
            server.thread.join().unwrap().unwrap();
        }

        fn try_publish(hub: &HubHandle, ch: &str, json: &str) -> Result<Position, HubError> {
            hub.publish(ch, json)
        }

        fn publish_once(hub: &HubHandle, ch: &str, id: &str, json: &str) -> Position {
            hub.publish_once(ch, id, json).unwrap()
        }

        fn inspect<T>(hub: &HubHandle, f: impl FnOnce(&Hub) -> T) -> T {
            hub.inspect(f)
        }

        fn session(cfg: SessionConfig) -> Session {
            Session::connect(cfg)
        }
    }
}

/// The smol adapter: the server and the sessions run on smol's global executor.
pub(crate) mod smol_adapter {
    use super::*;
    use smol::future;
    use tidewire_smol::{
        HttpRequest, HubHandle, HubOptions, Server, ServerConfig, ServerHandle, Session, Upgrade,
    };

    pub(crate) enum Smol {}

    pub(crate) struct Running {
        handle: ServerHandle,
        task: smol::Task<std::io::Result<()>>,
    }

    impl Client for Session {
        fn subscribe(&self, ch: &str) {
            Session::subscribe(self, ch).unwrap();
        }
        fn publish(&self, ch: &str, json: &str) -> ClientMsgId {
            Session::publish(self, ch, json.as_bytes()).unwrap()
        }
        fn next(&mut self, timeout: Duration) -> Next {
            smol::block_on(future::or(
                async { self.next_event().await.map_or(Next::Ended, Next::Event) },
                async {
                    smol::Timer::after(timeout).await;
                    Next::Timeout
                },
            ))
        }
        fn transport(&self) -> Option<Transport> {
            Session::transport(self)
        }
        fn close(&self) {
            Session::close(self);
        }
    }

    impl Backend for Smol {
        type Hub = HubHandle;
        type Server = Running;
        type Client = Session;

        fn hub(cfg: HubConfig) -> HubHandle {
            HubHandle::new(cfg, DemoAuth)
        }

        fn hub_on_redis(cfg: HubConfig, port: u16) -> HubHandle {
            let mut opts = HubOptions::default();
            opts.redis = Some(RedisConfig { port, ..RedisConfig::default() });
            HubHandle::with_options(cfg, DemoAuth, opts)
        }

        fn serve(hub: &HubHandle, addr: &str, gates: &Arc<Gates>) -> Running {
            let server = smol::block_on(Server::bind(addr, ServerConfig::default())).expect("bind");
            let handle = server.handle();
            let (h1, h2, g1, g2) = (hub.clone(), hub.clone(), gates.clone(), gates.clone());
            let task = smol::spawn(server.serve_with(
                move |up: Upgrade| {
                    let (hub, gates) = (h1.clone(), g1.clone());
                    async move {
                        if gates.ws.load(Ordering::SeqCst) {
                            let _ = up.reject(502, &[], b"").await;
                            return;
                        }
                        let token = up.request().request().token();
                        let Some(p) = DemoAuth::authenticate(token.as_deref()) else {
                            let _ = up.reject(401, &[], b"").await;
                            return;
                        };
                        let Ok(ws) = up.accept(None, &[]).await else { return };
                        let name = p.user.clone();
                        hub.serve_ws(ws, p, name).await;
                    }
                },
                move |req: HttpRequest| {
                    let (hub, gates) = (h2.clone(), g2.clone());
                    async move {
                        let Some(p) = DemoAuth::authenticate(req.request().token().as_deref())
                        else {
                            let _ = req.respond(401, &[], b"bad token\n").await;
                            return;
                        };
                        let _ = match route(&gates, req.request().path_only()) {
                            Route::Sse => hub.serve_sse(req, p).await.map(drop),
                            Route::Poll => hub.serve_poll(req, p).await,
                            Route::Publish => hub.serve_publish(req, p, false).await,
                            Route::Refuse(status) => req.respond(status, &[], b"").await,
                        };
                    }
                },
            ));
            Running { handle, task }
        }

        fn addr(server: &Running) -> SocketAddr {
            server.handle.local_addr()
        }

        fn stop(server: Running) {
            smol::block_on(async {
                server.handle.shutdown(Duration::from_millis(500)).await;
                server.task.await.unwrap();
            });
        }

        fn try_publish(hub: &HubHandle, ch: &str, json: &str) -> Result<Position, HubError> {
            smol::block_on(hub.submit(ch, json.as_bytes()))
        }

        fn publish_once(hub: &HubHandle, ch: &str, id: &str, json: &str) -> Position {
            smol::block_on(hub.submit_once(ch, id, json.as_bytes())).unwrap()
        }

        fn inspect<T>(hub: &HubHandle, f: impl FnOnce(&Hub) -> T) -> T {
            hub.inspect(f)
        }

        fn session(cfg: SessionConfig) -> Session {
            Session::connect(cfg)
        }
    }
}
