//! `Session` end to end against a hub server (the core endpoint's routes) on loopback: receive, survive a server
//! restart (new hub: refetch, then live messages), queue publishes while the server is
//! down and deliver them once, and fall back to SSE when WebSocket upgrades are refused.

use std::future::Future;
use std::time::Duration;

use smol::Timer;
use smol::future;
use tidewire::client::{ClientSession, SessionConfig, SessionEvent, SessionState, Transport};
use tidewire::http::Request;
use tidewire::hub::DemoAuth;
use tidewire::policy::BackoffConfig;
use tidewire::server::{Authenticate, Refusal, Routes, Verdict};
use tidewire_smol::{Server, ServerConfig, ServerHandle, Session, Upgrade};

fn run(secs: u64, test: impl Future<Output = ()>) {
    smol::block_on(future::or(test, async {
        Timer::after(Duration::from_secs(secs)).await;
        panic!("test did not finish within {secs} s");
    }));
}

/// A hub server (default routes, the demo's auth) on `addr`; `ws_status` refuses every
/// WebSocket upgrade with that status (as a proxy that blocks them).
async fn start(addr: &str, ws_status: Option<u16>) -> ServerHandle {
    let mut cfg = ServerConfig::default();
    cfg.endpoint.routes = Routes::default();
    let authn = move |r: &Request| match (ws_status, r.is_websocket_upgrade()) {
        (Some(status), true) => Verdict::Refuse(Refusal::new(status, "blocked")),
        _ => Authenticate::authenticate(&DemoAuth, r),
    };
    let server = Server::bind_with(addr, cfg, authn, DemoAuth).await.unwrap();
    let handle = server.handle();
    smol::spawn(server.serve(|up: Upgrade| async move { drop(up) })).detach();
    handle
}

fn config(port: u16) -> SessionConfig {
    let mut cfg = SessionConfig::new("127.0.0.1", port);
    cfg.token = Some("user:ann".into());
    cfg.backoff = BackoffConfig {
        base: Duration::from_millis(50),
        cap: Duration::from_millis(200),
        restart_floor: Duration::from_millis(100),
        ..BackoffConfig::default()
    };
    cfg
}

/// Events until `pred` matches one (which is returned); the others are kept in `seen`.
async fn until(
    s: &mut Session,
    seen: &mut Vec<SessionEvent>,
    pred: impl Fn(&SessionEvent) -> bool,
) -> SessionEvent {
    loop {
        let ev = s.next_event().await.expect("session ended");
        if pred(&ev) {
            return ev;
        }
        seen.push(ev);
    }
}

fn is_open(ev: &SessionEvent) -> bool {
    matches!(ev, SessionEvent::State(c) if c.state == SessionState::Open)
}

/// Publishes on `ch` from the server until the hub has a member there (the session's
/// subscription is in place), then once more with `data`.
async fn publish_when_joined(hub: &ServerHandle, ch: &str, data: &str) {
    for _ in 0..400 {
        if hub.inspect(|s| s.head(ch)).is_some() {
            break;
        }
        Timer::after(Duration::from_millis(5)).await;
    }
    hub.publish(ch, data.as_bytes()).unwrap();
}

#[test]
fn session_survives_a_restart_refetches_and_delivers_queued_publishes_once() {
    run(30, async {
        let server = start("127.0.0.1:0", None).await;
        let hub = server.clone();
        let addr = server.local_addr();
        let mut s = Session::connect(config(addr.port()));
        s.subscribe("chat:room").unwrap();
        let mut seen = Vec::new();
        until(&mut s, &mut seen, is_open).await;
        assert_eq!(s.inspect(ClientSession::transport), Some(Transport::WebSocket));
        publish_when_joined(&hub, "chat:room", r#"{"n":1}"#).await;
        let ev = until(&mut s, &mut seen, |e| matches!(e, SessionEvent::Message { .. })).await;
        let SessionEvent::Message { data, pos, .. } = ev else { unreachable!() };
        assert_eq!((data.as_str(), pos.offset), (r#"{"n":1}"#, 1));

        // The server goes away; a publish made meanwhile waits in the queue.
        server.shutdown(Duration::from_secs(2)).await;
        drop(hub);
        until(
            &mut s,
            &mut seen,
            |e| matches!(e, SessionEvent::State(c) if c.state == SessionState::Reconnecting),
        )
        .await;
        let id = s.publish("chat:room", br#"{"queued":true}"#).unwrap();
        assert_eq!(s.inspect(ClientSession::queued_publishes), 1);

        // A new server (new hub, new epoch) on the same port.
        let server = start(&addr.to_string(), None).await;
        let hub = server.clone();
        let mut refetched = false;
        let mut acked = false;
        let mut delivered = 0;
        let mut events = Vec::new();
        while !(refetched && acked && delivered == 1) {
            let ev = s.next_event().await.expect("session ended");
            match &ev {
                SessionEvent::RefetchNeeded { ch, .. } if ch == "chat:room" => refetched = true,
                SessionEvent::Acked { id: got, pos } if *got == id => {
                    acked = true;
                    assert!(pos.is_some());
                }
                SessionEvent::Message { data, .. } if data == r#"{"queued":true}"# => {
                    delivered += 1;
                }
                _ => {}
            }
            events.push(ev);
        }
        // Live messages follow in the new epoch.
        hub.publish("chat:room", br#"{"n":"live"}"#).unwrap();
        let ev = until(&mut s, &mut events, |e| matches!(e, SessionEvent::Message { .. })).await;
        let SessionEvent::Message { data, pos, .. } = ev else { unreachable!() };
        assert_eq!(data, r#"{"n":"live"}"#);
        assert_eq!(Some(pos), hub.inspect(|s| s.head("chat:room")));
        // The queued publish was published once.
        assert_eq!(hub.inspect(|s| s.hub_stats().published), 2);
        let copies = events
            .iter()
            .filter(
                |e| matches!(e, SessionEvent::Message { data, .. } if data == r#"{"queued":true}"#),
            )
            .count();
        assert_eq!(copies, 1);
        s.close();
        while s.next_event().await.is_some() {}
        assert_eq!(s.state(), SessionState::Closed);
        server.shutdown(Duration::from_secs(2)).await;
    });
}

#[test]
fn session_falls_back_to_sse_when_websocket_is_refused() {
    run(30, async {
        let server = start("127.0.0.1:0", Some(502)).await;
        let hub = server.clone();
        let addr = server.local_addr();
        let mut cfg = config(addr.port());
        cfg.token = None;
        let mut s = Session::connect(cfg);
        s.subscribe("public:ticks").unwrap();
        let mut seen = Vec::new();
        until(&mut s, &mut seen, is_open).await;
        assert_eq!(s.inspect(ClientSession::transport), Some(Transport::Sse));
        publish_when_joined(&hub, "public:ticks", r#"{"n":1}"#).await;
        let ev = until(&mut s, &mut seen, |e| matches!(e, SessionEvent::Message { .. })).await;
        let SessionEvent::Message { ch, data, .. } = ev else { unreachable!() };
        assert_eq!((ch.as_str(), data.as_str()), ("public:ticks", r#"{"n":1}"#));
        hub.publish("public:ticks", br#"{"n":2}"#).unwrap();
        let ev = until(&mut s, &mut seen, |e| matches!(e, SessionEvent::Message { .. })).await;
        let SessionEvent::Message { data, .. } = ev else { unreachable!() };
        assert_eq!(data, r#"{"n":2}"#);
        s.close();
        while s.next_event().await.is_some() {}
        server.shutdown(Duration::from_secs(2)).await;
    });
}

#[test]
fn session_publishes_over_http_when_on_polling() {
    run(30, async {
        let server = start("127.0.0.1:0", Some(502)).await;
        let hub = server.clone();
        let addr = server.local_addr();
        let mut cfg = config(addr.port());
        cfg.transports = vec![Transport::Polling];
        cfg.poll_interval = Duration::from_millis(20);
        let mut s = Session::connect(cfg);
        s.subscribe("chat:p").unwrap();
        let mut seen = Vec::new();
        until(&mut s, &mut seen, is_open).await;
        let id = s.publish("chat:p", br#"{"hello":1}"#).unwrap();
        let mut acked = false;
        let mut got = 0;
        while !(acked && got == 1) {
            match s.next_event().await.expect("session ended") {
                SessionEvent::Acked { id: a, .. } if a == id => acked = true,
                SessionEvent::Message { data, .. } if data == r#"{"hello":1}"# => got += 1,
                _ => {}
            }
        }
        assert_eq!(hub.inspect(|s| s.hub_stats().published), 1);
        // The polling client is a hub member with presence.
        assert_eq!(hub.inspect(|s| s.presence("chat:p")), ["ann"]);
        s.close();
        while s.next_event().await.is_some() {}
        server.shutdown(Duration::from_secs(2)).await;
    });
}

#[test]
fn a_timeout_too_long_to_add_waits_without_end() {
    run(10, async {
        let hub = start("127.0.0.1:0", None).await;
        let mut s = Session::connect(config(hub.local_addr().port()));
        s.close();
        let mut last = None;
        while let Some(ev) = s.next_event_timeout(Duration::MAX).await {
            last = Some(ev);
        }
        let closed =
            matches!(last, Some(SessionEvent::State(c)) if c.state == SessionState::Closed);
        assert!(closed, "the last event is the close");
    });
}
