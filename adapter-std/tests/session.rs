//! `Session` end to end against hub servers (the core server's routes): delivery, restart
//! with a new hub (refetch, resubscribe, queued publish delivered once), fallback to SSE and
//! polling.

mod common;

use std::time::{Duration, Instant};

use common::{TestServer, within};
use tidewire_std::tidewire::client::{SessionConfig, SessionEvent, SessionState, Transport};
use tidewire_std::tidewire::http::Request;
use tidewire_std::tidewire::hub::{AllowAll, Principal};
use tidewire_std::tidewire::policy::BackoffConfig;
use tidewire_std::tidewire::server::{Credential, Refusal, Routes, Verdict};
use tidewire_std::tidewire::time::Duration as CoreDuration;
use tidewire_std::{HttpRequest, Server, ServerConfig, ServerHandle, Session, Upgrade};

/// A hub server on `addr` where everyone is `sam`; `/ws` answers 502 when `ws_blocked`.
fn start(addr: &str, ws_blocked: bool) -> (TestServer, ServerHandle) {
    let mut cfg = ServerConfig::default();
    cfg.endpoint.routes = Routes::default();
    let authn = move |req: &Request| {
        if ws_blocked && req.is_websocket_upgrade() {
            return Verdict::Refuse(Refusal::new(502, "no upgrades here"));
        }
        Verdict::Allow(Credential::client(Principal::user("sam")))
    };
    let server = Server::bind_with(addr, cfg, authn, AllowAll).expect("bind");
    let handle = server.handle();
    let addr = server.local_addr();
    let serving = std::thread::spawn(move || {
        server.serve_with(
            |up: Upgrade| drop(up.reject(404, &[], b"")),
            |req: HttpRequest| drop(req.respond(404, &[], b"")),
        )
    });
    (TestServer::running(handle.clone(), addr, serving), handle)
}

/// Members of `ch` in the hub.
fn members(hub: &ServerHandle, ch: &str) -> usize {
    hub.inspect(|s| s.hub().members(ch).count())
}

fn config(port: u16) -> SessionConfig {
    let mut cfg = SessionConfig::new("127.0.0.1", port);
    cfg.backoff = BackoffConfig {
        base: CoreDuration::from_millis(20),
        cap: CoreDuration::from_millis(100),
        ..BackoffConfig::default()
    };
    cfg.poll_interval = CoreDuration::from_millis(20);
    cfg
}

/// Events until `pred` matches one (at most 10 s), all of them returned.
fn until(s: &mut Session, pred: impl Fn(&SessionEvent) -> bool) -> Vec<SessionEvent> {
    let end = Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    loop {
        let left = end.saturating_duration_since(Instant::now());
        let ev = s.next_event_timeout(left).unwrap_or_else(|| panic!("no match in {seen:#?}"));
        let done = pred(&ev);
        seen.push(ev);
        if done {
            return seen;
        }
    }
}

fn is_open(ev: &SessionEvent) -> bool {
    matches!(ev, SessionEvent::State(c) if c.state == SessionState::Open)
}

fn message_of(ev: &SessionEvent) -> Option<&str> {
    match ev {
        SessionEvent::Message { data, .. } => Some(data),
        _ => None,
    }
}

#[test]
fn a_session_survives_a_server_restart_and_delivers_queued_publishes_once() {
    within(60, || {
        let (server, hub) = start("127.0.0.1:0", false);
        let addr = server.addr;
        let mut s = Session::connect(config(addr.port()));
        s.subscribe("news").unwrap();
        until(&mut s, is_open);
        // Subscribed once the hub has the member; then a message arrives.
        assert!(common::settle(|| members(&hub, "news") == 1));
        let first = hub.publish("news", r#"{"n":1}"#).unwrap();
        let seen = until(&mut s, |e| message_of(e).is_some());
        assert!(matches!(seen.last(), Some(SessionEvent::Message { pos, .. }) if *pos == first));

        // The server goes away (with its hub): the session reconnects in the background.
        server.stop(Duration::ZERO);
        drop(hub);
        until(
            &mut s,
            |e| matches!(e, SessionEvent::State(c) if c.state == SessionState::Reconnecting),
        );
        let id = s.publish("news", r#"{"n":"offline"}"#).unwrap();

        let (server, hub) = start(&addr.to_string(), false);
        let seen = until(&mut s, |e| matches!(e, SessionEvent::Acked { id: a, .. } if *a == id));
        let refetch = seen
            .iter()
            .position(|e| matches!(e, SessionEvent::RefetchNeeded { ch, .. } if ch == "news"))
            .expect("a refetch: the new hub has a new epoch");
        let offline: Vec<usize> = seen
            .iter()
            .enumerate()
            .filter(|(_, e)| message_of(e) == Some(r#"{"n":"offline"}"#))
            .map(|(i, _)| i)
            .collect();
        // The queued publish may be acked before its echo arrives: wait for it if needed.
        let mut later = Vec::new();
        if offline.is_empty() {
            later = until(&mut s, |e| message_of(e) == Some(r#"{"n":"offline"}"#));
        }
        assert!(offline.iter().all(|&i| i > refetch));
        assert!(offline.len() <= 1);

        let live = hub.publish("news", r#"{"n":2}"#).unwrap();
        let tail = until(&mut s, |e| message_of(e) == Some(r#"{"n":2}"#));
        assert!(matches!(tail.last(), Some(SessionEvent::Message { pos, .. }) if *pos == live));
        let copies = seen
            .iter()
            .chain(&later)
            .chain(&tail)
            .filter(|e| message_of(e) == Some(r#"{"n":"offline"}"#))
            .count();
        assert_eq!(copies, 1, "the queued publish was delivered exactly once");
        assert_eq!(
            hub.inspect(|s| s
                .hub()
                .log("news")
                .map(tidewire_std::tidewire::replay::ReplayLog::len)),
            Some(2)
        );

        s.close();
        until(&mut s, |e| matches!(e, SessionEvent::State(c) if c.state == SessionState::Closed));
        assert!(s.next_event().is_none());
        server.stop(Duration::from_secs(1));
    });
}

#[test]
fn a_blocked_websocket_falls_back_to_sse_then_publishes_over_http() {
    within(60, || {
        let (server, hub) = start("127.0.0.1:0", true);
        let mut s = Session::connect(config(server.addr.port()));
        s.subscribe("feed").unwrap();
        let seen = until(&mut s, is_open);
        let SessionEvent::State(open) = seen.last().unwrap() else { unreachable!() };
        assert_eq!(open.transport, Some(Transport::Sse));
        assert!(common::settle(|| members(&hub, "feed") == 1));
        let pos = hub.publish("feed", r#"{"over":"sse"}"#).unwrap();
        let got = until(&mut s, |e| message_of(e).is_some());
        assert!(matches!(got.last(), Some(SessionEvent::Message { pos: p, .. }) if *p == pos));
        let id = s.publish("feed", r#"{"from":"client"}"#).unwrap();
        let got = until(&mut s, |e| matches!(e, SessionEvent::Acked { id: a, .. } if *a == id));
        let mut all = got;
        if !all.iter().any(|e| message_of(e) == Some(r#"{"from":"client"}"#)) {
            all.extend(until(&mut s, |e| message_of(e) == Some(r#"{"from":"client"}"#)));
        }
        let copies = all.iter().filter(|e| message_of(e) == Some(r#"{"from":"client"}"#)).count();
        assert_eq!(copies, 1);
        assert_eq!(
            s.inspect(tidewire_std::tidewire::client::ClientSession::transport),
            Some(Transport::Sse)
        );
        drop(s);
        server.stop(Duration::from_secs(1));
    });
}

#[test]
fn a_polling_session_receives_and_publishes() {
    within(60, || {
        let (server, hub) = start("127.0.0.1:0", false);
        let mut cfg = config(server.addr.port());
        cfg.transports = vec![Transport::Polling];
        let mut s = Session::connect(cfg);
        s.subscribe("slow").unwrap();
        until(&mut s, is_open);
        // The first poll learns the head; publish once the long poll is held.
        assert!(common::settle(|| members(&hub, "slow") == 1));
        let pos = hub.publish("slow", "1").unwrap();
        let got = until(&mut s, |e| message_of(e).is_some());
        assert!(matches!(got.last(), Some(SessionEvent::Message { pos: p, .. }) if *p == pos));
        let id = s.publish("slow", "2").unwrap();
        until(&mut s, |e| matches!(e, SessionEvent::Acked { id: a, .. } if *a == id));
        until(&mut s, |e| message_of(e) == Some("2"));
        drop(s);
        server.stop(Duration::from_secs(1));
    });
}

#[test]
fn a_timeout_too_long_to_add_waits_without_end() {
    within(10, || {
        let (server, hub) = start("127.0.0.1:0", false);
        let mut s = Session::connect(config(server.addr.port()));
        s.close();
        let mut last = None;
        while let Some(ev) = s.next_event_timeout(Duration::MAX) {
            last = Some(ev);
        }
        let closed =
            matches!(last, Some(SessionEvent::State(c)) if c.state == SessionState::Closed);
        assert!(closed, "the last event is the close");
        drop(hub);
    });
}
