//! Compile-time parity of the two adapters' public API: one body names every public item,
//! compiled once against `tidewire-std` and once against `tidewire-smol` (where the calls that
//! wait are `async`). An item missing from one adapter, or with other argument or return
//! types, fails the build. Nothing here runs.

#![allow(dead_code)]

/// `parity!(module, crate, [fn qualifiers], [what follows a call that waits])`.
macro_rules! parity {
    ($module:ident, $krate:ident, [$($kw:tt)*], [$($wait:tt)*]) => {
        mod $module {
            use std::net::SocketAddr;
            use std::time::{Duration, Instant};

            use tidewire::client::{ClientMsgId, SessionConfig, SessionEvent, SessionState};
            use tidewire::hub::{AllowAll, HubError};
            use tidewire::replay::Position;
            use tidewire::server::{Server as Core, ServerEvent};
            use tidewire::sse::{SseClientEvent, SseState};
            use $krate::sse::{SseConnection, SseOptions};
            use $krate::{
                Bytes, ClientOptions, CloseCode, CloseInfo, ConnectError, Event, HttpRequest,
                Message, RecvError, SendError, Sender, Server, ServerConfig, ServerHandle,
                Session, SessionOptions, ShutdownReport, StreamEnd, Upgrade, UpgradeRequest,
                Utf8Bytes, WebSocket, WsConfig, connect,
            };
            #[allow(unused_imports)]
            use $krate::tidewire as _;

            type Res<T> = Result<T, Box<dyn std::error::Error>>;

            $($kw)* fn server(addr: &str, h: &ServerHandle) -> Res<()> {
                let server: Server = Server::bind(addr, ServerConfig::default()) $($wait)* ?;
                let auth = |_: &tidewire::http::Request| tidewire::server::Verdict::Defer;
                let other = Server::bind_with(addr, ServerConfig::default(), auth, AllowAll);
                let _: Server = other $($wait)* ?;
                let _: (SocketAddr, ServerHandle) = (server.local_addr(), server.handle());
                let _: SocketAddr = h.local_addr();
                let _: usize = h.connections();
                let _: ShutdownReport = h.shutdown(Duration::ZERO) $($wait)*;
                let _: Result<Position, HubError> = h.publish("ch", b"{}");
                let _: Result<Position, HubError> = h.publish_once("ch", "id", "{}") $($wait)*;
                let _: Result<Position, HubError> = h.submit("ch", Vec::new()) $($wait)*;
                let _: Option<ServerEvent> = h.next_event();
                let _: Option<ServerEvent> = h.wait_event(Duration::ZERO) $($wait)*;
                let _: bool = h.with(|s: &mut Core, _: Instant| s.bus_is_up());
                let _: usize = h.inspect(Core::hub_connections);
                Ok(())
            }

            $($kw)* fn session(cfg: SessionConfig, pos: Option<Position>) -> Res<()> {
                let _: Session = Session::connect(cfg.clone());
                let opts = SessionOptions::default();
                let _: usize = opts.max_events;
                let mut s: Session = Session::with_options(cfg, opts);
                s.subscribe("ch")?;
                s.subscribe_from("ch", pos)?;
                s.unsubscribe("ch");
                let _: ClientMsgId = s.publish("ch", b"{}")?;
                s.set_credentials("token");
                s.close();
                let _: SessionState = s.state();
                let _: usize = s.inspect(tidewire::client::ClientSession::queued_publishes);
                let _: Option<SessionEvent> = s.next_event() $($wait)*;
                let _: Option<SessionEvent> = s.next_event_timeout(Duration::ZERO) $($wait)*;
                let _: Option<SessionEvent> = s.try_next_event();
                Ok(())
            }

            $($kw)* fn ws(url: &str, up: Upgrade, no: Upgrade, mut req: HttpRequest) -> Res<()> {
                let _: &UpgradeRequest = up.request();
                let _: SocketAddr = up.peer_addr();
                let _: WebSocket = up.accept(Some("chat"), &[("X", "y")]) $($wait)* ?;
                no.reject(404, &[], b"") $($wait)* ?;
                let connected: Result<WebSocket, ConnectError> =
                    connect(url, ClientOptions::default()) $($wait)*;
                let mut ws = connected?;
                let _: Result<Message, RecvError> = ws.recv() $($wait)*;
                let _: Event = ws.recv_event() $($wait)*;
                let _: (Option<&str>, SocketAddr) = (ws.subprotocol(), ws.peer_addr());
                let _: Option<CloseInfo> = ws.close_info();
                let tx: Sender = ws.sender();
                let _: Result<(), SendError> = tx.send(Message::text("a")) $($wait)*;
                let _: Result<(), SendError> = ws.send("b") $($wait)*;
                tx.try_send(Message::text("c"))?;
                tx.ping(Bytes::new())?;
                tx.close(CloseCode::NORMAL, "bye")?;
                let _: (bool, usize) = (tx.is_closed(), tx.buffered_amount());
                let _: WsConfig = ClientOptions::default().ws;
                let _: (Option<StreamEnd>, Option<Utf8Bytes>) = (None, None);
                let _: &tidewire::http::Request = req.request();
                let _: SocketAddr = req.peer_addr();
                let _: Bytes = req.read_body(1024) $($wait)* ?;
                req.respond(200, &[], b"") $($wait)* ?;
                Ok(())
            }

            $($kw)* fn sse(url: &str) -> Res<()> {
                let opened = $krate::sse::connect(url, SseOptions::default()) $($wait)*;
                let mut events: SseConnection = opened?;
                let _: Option<SseClientEvent> = events.next() $($wait)*;
                events.close();
                let _: SseState = events.state();
                let _: String = events.last_event_id();
                let _: Option<Instant> = events.next_retry_at();
                Ok(())
            }
        }
    };
}

parity!(std_api, tidewire_std, [], []);
parity!(smol_api, tidewire_smol, [async], [.await]);
