//! Session-level unit tests with hand-written server bytes. The full scripted server (real
//! `WsConnection`, `SseStream`, `Poll`) is in `tests/tests/client_session.rs`.

use super::*;
use crate::machine::{Machine, Transmit};
use crate::replay::Position;
use crate::socket::SocketAction;
use crate::time::{Duration, Instant, test_epoch};
use crate::ws::{CloseCode, Message, WsConfig, WsConnection, WsEvent};

fn cfg() -> SessionConfig {
    let mut c = SessionConfig::new("h", 80);
    c.rng_seed = [3; 32];
    c.backoff.jitter = crate::policy::Jitter::None;
    c
}

fn connect(s: &mut ClientSession, now: Instant) -> SockId {
    let mut action = s.poll_action();
    while let Some(SocketAction::Close { .. }) = action {
        action = s.poll_action();
    }
    match action {
        Some(SocketAction::Connect { sock, host, port }) => {
            assert_eq!((host.as_str(), port), ("h", 80));
            s.handle_connected(now, sock);
            sock
        }
        other => panic!("expected Connect, got {other:?}"),
    }
}

fn written(s: &mut ClientSession) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some((_, b)) = s.poll_transmit() {
        out.extend_from_slice(&b);
    }
    out
}

fn events(s: &mut ClientSession) -> Vec<SessionEvent> {
    std::iter::from_fn(|| s.poll_event()).collect()
}

fn states(evs: &[SessionEvent]) -> Vec<(SessionState, Reason)> {
    evs.iter()
        .filter_map(|e| match e {
            SessionEvent::State(s) => Some((s.state, s.reason.clone())),
            _ => None,
        })
        .collect()
}

/// Opens the session's WebSocket against a server connection; returns both.
fn open_ws(s: &mut ClientSession, now: Instant) -> (SockId, WsConnection, Vec<String>) {
    let sock = connect(s, now);
    let mut server = WsConnection::server(WsConfig::default(), now);
    server.handle_read(now, &written(s));
    assert!(matches!(server.poll_event(), Some(WsEvent::UpgradeRequested(_))));
    server.accept(now, None, &[]).unwrap();
    let frames = pump(s, sock, &mut server, now);
    (sock, server, frames)
}

/// Moves bytes both ways until quiet; returns the text frames the server received.
fn pump(
    s: &mut ClientSession,
    sock: SockId,
    server: &mut WsConnection,
    now: Instant,
) -> Vec<String> {
    let mut got = Vec::new();
    loop {
        let mut moved = false;
        while let Some(Transmit::Bytes(b)) = server.poll_transmit() {
            moved = true;
            s.handle_read(now, sock, &b);
        }
        let out = written(s);
        if !out.is_empty() {
            moved = true;
            server.handle_read(now, &out);
        }
        while let Some(ev) = server.poll_event() {
            if let WsEvent::Message(m) = ev {
                got.push(m.as_text().unwrap().to_owned());
            }
        }
        if !moved {
            return got;
        }
    }
}

#[test]
fn websocket_request_carries_the_token_and_subscriptions_follow_the_open() {
    let now = test_epoch();
    let mut c = cfg();
    c.token = Some("tok".into());
    let mut s = ClientSession::new(c, now);
    s.subscribe_from(now, "a", Some("a1:5".parse().unwrap())).unwrap();
    let sock = connect(&mut s, now);
    let head = String::from_utf8(written(&mut s)).unwrap();
    assert!(head.starts_with("GET /ws HTTP/1.1\r\nHost: h\r\n"), "{head}");
    assert!(head.contains("Authorization: Bearer tok\r\n"));
    let mut server = WsConnection::server(WsConfig::default(), now);
    server.handle_read(now, head.as_bytes());
    let _ = server.poll_event();
    server.accept(now, None, &[]).unwrap();
    let frames = pump(&mut s, sock, &mut server, now);
    assert_eq!(frames, [r#"{"op":"sub","ch":"a","pos":{"ep":"a1","off":5},"ref":1}"#]);
    assert_eq!(states(&events(&mut s)).last(), Some(&(SessionState::Open, Reason::Connected)));
}

#[test]
fn unreachable_server_keeps_the_transport_but_a_refused_upgrade_falls_back() {
    let now = test_epoch();
    let mut s = ClientSession::new(cfg(), now);
    s.subscribe(now, "a").unwrap();
    let mut t = now;
    for _ in 0..4 {
        let Some(SocketAction::Connect { sock, .. }) = s.poll_action() else { panic!() };
        s.handle_error(t, sock);
        t = s.next_retry_at().unwrap();
        s.handle_timeout(t);
    }
    assert_eq!(s.transport(), Some(Transport::WebSocket));
    for _ in 0..2 {
        let sock = connect(&mut s, t);
        let _ = written(&mut s);
        s.handle_read(t, sock, b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n");
        t = s.next_retry_at().unwrap();
        s.handle_timeout(t);
    }
    assert_eq!(s.transport(), Some(Transport::Sse));
    let sock = connect(&mut s, t);
    let req = String::from_utf8(written(&mut s)).unwrap();
    assert!(req.starts_with("GET /events?ch=a HTTP/1.1\r\n"), "{req}");
    assert!(req.contains("Accept: text/event-stream\r\n"));
    assert!(!req.contains("Last-Event-ID"));
    let _ = sock;
}

#[test]
fn retry_after_on_a_refused_upgrade_raises_the_floor() {
    let now = test_epoch();
    let mut s = ClientSession::new(cfg(), now);
    let sock = connect(&mut s, now);
    let _ = written(&mut s);
    s.handle_read(now, sock, b"HTTP/1.1 503 Busy\r\nRetry-After: 20\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(s.state(), SessionState::Reconnecting);
    assert_eq!(s.next_retry_at(), Some(now + Duration::from_secs(20)));
}

/// The SSE events one stream body yields, fed in chunks of `step` bytes.
fn sse_run(body: &[u8], step: usize) -> (Vec<SessionEvent>, Option<Position>) {
    let now = test_epoch();
    let mut c = cfg();
    c.transports = vec![Transport::Sse];
    let mut s = ClientSession::new(c, now);
    s.subscribe_from(now, "a", Some("a1:1".parse().unwrap())).unwrap();
    let sock = connect(&mut s, now);
    let req = String::from_utf8(written(&mut s)).unwrap();
    assert!(req.contains("Last-Event-ID: a1:1\r\n"));
    let _ = events(&mut s);
    for chunk in body.chunks(step) {
        s.handle_read(now, sock, chunk);
    }
    let evs = events(&mut s).into_iter().filter(|e| !matches!(e, SessionEvent::State(_))).collect();
    (evs, s.position("a"))
}

#[test]
fn sse_streams_give_the_same_events_however_split() {
    let body = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n\
        id: a1:1\nevent: a\ndata: 1\n\n\
        id: a1:2\nevent: a\ndata: 2\n\n\
        : keep-alive\n\
        id: b2:7\n\n\
        event: reset\ndata: {\"ch\":\"a\",\"pos\":\"b2:7\",\"recovered\":false}\n\n\
        id: b2:8\nevent: a\ndata: {\"x\":8}\n\n\
        id: b2:9\n\n";
    let whole = sse_run(body, body.len());
    let p = |s: &str| s.parse::<Position>().unwrap();
    assert_eq!(
        whole.0,
        [
            SessionEvent::Message { ch: "a".into(), pos: p("a1:2"), from: None, data: "2".into() },
            SessionEvent::RefetchNeeded { ch: "a".into(), pos: p("b2:7") },
            SessionEvent::Message {
                ch: "a".into(),
                pos: p("b2:8"),
                from: None,
                data: "{\"x\":8}".into()
            },
        ]
    );
    assert_eq!(whole.1, Some(p("b2:9")));
    assert_eq!(sse_run(body, 1), whole);
    assert_eq!(sse_run(body, 7), whole);
}

#[test]
fn sse_from_blocks_name_the_publisher_of_the_next_message() {
    let body = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n\
        event: from\ndata: {\"ch\":\"a\",\"pos\":\"a1:2\",\"from\":\"ann\"}\n\n\
        id: a1:2\nevent: a\ndata: 2\n\n\
        id: a1:3\nevent: a\ndata: 3\n\n\
        event: from\ndata: {\"ch\":\"a\",\"pos\":\"a1:9\",\"from\":\"eve\"}\n\n\
        id: a1:4\nevent: a\ndata: 4\n\n";
    let whole = sse_run(body, body.len());
    let from: Vec<Option<&str>> = whole
        .0
        .iter()
        .map(|e| match e {
            SessionEvent::Message { from, .. } => from.as_deref(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(from, [Some("ann"), None, None]);
    assert_eq!(whole.1, Some("a1:4".parse().unwrap()));
    assert_eq!(sse_run(body, 1), whole);
}

#[test]
fn a_chunked_stream_is_a_protocol_failure() {
    let (evs, _) = sse_run(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", 100);
    assert!(evs.is_empty());
    let now = test_epoch();
    let mut c = cfg();
    c.transports = vec![Transport::Sse];
    let mut s = ClientSession::new(c, now);
    s.subscribe(now, "a").unwrap();
    let sock = connect(&mut s, now);
    s.handle_read(now, sock, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
    assert_eq!(
        states(&events(&mut s)).last(),
        Some(&(SessionState::Reconnecting, Reason::Protocol))
    );
}

#[test]
fn polls_carry_the_position_and_recovered_false_refetches() {
    let now = test_epoch();
    let mut c = cfg();
    c.transports = vec![Transport::Polling];
    let mut s = ClientSession::new(c, now);
    s.subscribe_from(now, "a", Some("a1:3".parse().unwrap())).unwrap();
    let sock = connect(&mut s, now);
    let req = String::from_utf8(written(&mut s)).unwrap();
    assert!(req.starts_with("GET /poll?ch=a&pos=a1:3&wait=1 HTTP/1.1\r\n"), "{req}");
    let body = r#"{"ch":"a","pos":"b2:4","recovered":false,"events":[]}"#;
    let resp = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len());
    s.handle_read(now, sock, resp.as_bytes());
    let evs = events(&mut s);
    assert!(
        evs.contains(&SessionEvent::RefetchNeeded { ch: "a".into(), pos: "b2:4".parse().unwrap() })
    );
    assert_eq!(s.state(), SessionState::Open);
    // The next poll waits for the poll interval, then asks from the new position.
    assert!(matches!(s.poll_action(), Some(SocketAction::Close { .. })));
    assert_eq!(s.poll_timeout(), Some(now + Duration::from_millis(500)));
    s.handle_timeout(now + Duration::from_millis(500));
    let _ = connect(&mut s, now + Duration::from_millis(500));
    let req = String::from_utf8(written(&mut s)).unwrap();
    assert!(req.starts_with("GET /poll?ch=a&pos=b2:4&wait=1 "), "{req}");
}

#[test]
fn time_going_backwards_and_unknown_sockets_are_harmless() {
    let now = test_epoch() + Duration::from_secs(100);
    let mut s = ClientSession::new(cfg(), now);
    let (sock, mut server, _) = open_ws(&mut s, now);
    s.handle_timeout(now - Duration::from_secs(50));
    s.handle_read(now - Duration::from_secs(60), SockId(999), b"garbage");
    s.handle_eof(now, SockId(998));
    assert_eq!(s.state(), SessionState::Open);
    // Garbage JSON in a text frame is ignored; a binary frame too.
    server.send(now, Message::text("not json")).unwrap();
    server.send(now, Message::binary(&b"\x00"[..])).unwrap();
    pump(&mut s, sock, &mut server, now);
    assert_eq!(s.state(), SessionState::Open);
    server.close(now, CloseCode::GOING_AWAY, "bye").unwrap();
    pump(&mut s, sock, &mut server, now);
    let evs = events(&mut s);
    let reason = Reason::Closed { code: CloseCode::GOING_AWAY, reason: "bye".into() };
    assert_eq!(states(&evs).last(), Some(&(SessionState::Reconnecting, reason)));
    assert_eq!(s.timeout_reason(), Some(SessionTimer::Reconnect));
}

#[test]
fn publish_over_websocket_uses_the_session_nonce_and_the_same_id_on_resend() {
    let now = test_epoch();
    let mut s = ClientSession::new(cfg(), now);
    let id = s.publish(now, "a", r#"{"n":1}"#).unwrap();
    let (sock, _server, first) = open_ws(&mut s, now);
    assert_eq!(first.len(), 1);
    assert!(first[0].starts_with(r#"{"op":"pub","ch":"a","id":""#), "{first:?}");
    // No ack: after a reconnection the same frame (same id and ref) is sent again.
    s.handle_eof(now, sock);
    let t = s.next_retry_at().unwrap();
    s.handle_timeout(t);
    let (sock2, mut server2, again) = open_ws(&mut s, t);
    assert_eq!(again, first);
    assert_eq!(s.queued_publishes(), 1);
    server2
        .send(t, Message::text(format!(r#"{{"op":"ack","ref":{},"ep":"a1","off":1}}"#, id.0)))
        .unwrap();
    pump(&mut s, sock2, &mut server2, t);
    assert!(
        events(&mut s).contains(&SessionEvent::Acked { id, pos: Some("a1:1".parse().unwrap()) })
    );
    assert_eq!(s.queued_publishes(), 0);
}

/// Fuzz regression (`client_session`): a probe that cannot be written (a token with a line
/// break) re-armed a zero `upgrade_every` at `now` inside `handle_timeout`, which then
/// fired it again forever. That session listed SSE before WebSocket: the list is in order
/// of preference, so on SSE there is nothing better to try and no upgrade timer at all;
/// `handle_timeout` also takes the due timers before running them.
#[test]
fn a_timer_rearmed_at_now_fires_at_the_next_call_not_in_a_loop() {
    let now = test_epoch();
    let mut c = cfg();
    c.transports = vec![Transport::Sse, Transport::WebSocket];
    c.upgrade_every = Some(Duration::ZERO);
    c.token = Some("a\nb".into());
    let mut s = ClientSession::new(c, now);
    assert_eq!(s.state(), SessionState::Open); // no channel: the SSE link needs no request
    assert_eq!(s.poll_timeout(), None, "SSE is the preferred transport: no upgrade");
    s.handle_timeout(now);
    assert_eq!(s.state(), SessionState::Open);
}

/// Simulation regression (`tests/sim`, `chaos::offline_queue_is_paced`): publishes queued
/// while offline were all sent at once after the reconnection; past the hub's inbound
/// limit (burst 100) the hub closed the connection with 1008, which the session took for
/// an auth failure and closed for good (`NoCredentials`). They are paced now.
#[test]
fn publishes_queued_offline_are_paced_under_the_hub_limit() {
    let now = test_epoch();
    let mut s = ClientSession::new(cfg(), now);
    s.subscribe(now, "a").unwrap();
    for n in 0..150 {
        s.publish(now, "a", &format!(r#"{{"n":{n}}}"#)).unwrap();
    }
    let (sock, mut server, first) = open_ws(&mut s, now);
    let pubs = |frames: &[String]| frames.iter().filter(|f| f.contains(r#""op":"pub""#)).count();
    // 80 tokens: the sub takes one, 79 publishes go now.
    assert_eq!((first.len(), pubs(&first)), (80, 79));
    assert_eq!(s.timeout_reason(), Some(SessionTimer::PublishRetry));
    // 40 per second after that: the rest within two more seconds, never a burst.
    let mut t = now;
    let mut sent = pubs(&first);
    while sent < 150 {
        t = s.poll_timeout().unwrap();
        s.handle_timeout(t);
        let more = pubs(&pump(&mut s, sock, &mut server, t));
        assert!(more <= 2, "{more} at once");
        sent += more;
    }
    assert!(
        t - now >= Duration::from_millis(1700) && t - now <= Duration::from_secs(2),
        "{:?}",
        t - now
    );
}

/// Simulation regression (`tests/sim`, `chaos::many_channels_are_paced`): a session may
/// hold 128 channels (the hub's default per connection), but their 128 `sub`s, sent at once
/// on every (re)connection, tripped the hub's inbound limit (burst 100): closed with 1008,
/// then for good. They are paced like publishes, and before them.
#[test]
fn many_subscriptions_are_paced_and_go_before_publishes() {
    let now = test_epoch();
    let mut s = ClientSession::new(cfg(), now);
    for k in 0..120 {
        s.subscribe(now, &format!("c{k}")).unwrap();
    }
    s.publish(now, "c0", "1").unwrap();
    let (sock, mut server, first) = open_ws(&mut s, now);
    assert_eq!(first.len(), 80);
    assert!(first.iter().all(|f| f.starts_with(r#"{"op":"sub""#)));
    // A waiting `sub` of a channel left meanwhile is never sent (names go in order: c99
    // is among the last 40).
    s.unsubscribe(now, "c99");
    let mut rest = Vec::new();
    while s.queued_publishes() > 0 && rest.len() < 100 {
        let t = s.poll_timeout().unwrap();
        s.handle_timeout(t);
        rest.extend(pump(&mut s, sock, &mut server, t));
        if let Some(p) = rest.iter().find(|f| f.contains(r#""op":"pub""#)) {
            assert_eq!(rest.last(), Some(p), "the publish goes after every sub");
            break;
        }
    }
    // 39 more subs (c99 was dropped), then the publish.
    let subs = rest.iter().filter(|f| f.starts_with(r#"{"op":"sub""#)).count();
    assert_eq!(subs, 39, "{rest:?}");
    assert!(!rest.iter().any(|f| f.starts_with(r#"{"op":"sub","ch":"c99""#)));
}

/// `tidewire-smol` flake (`session_publishes_over_http_when_on_polling`): a session on
/// polling with no channel is open at once; a channel subscribed then has no position, so
/// its first poll starts at the head as it is when the request arrives. A publish made
/// right after went at once on its own connection: when it reached the server first, the
/// first poll's head was past it and the session never saw its own message. The publish
/// now waits until the server has the subscription (the first poll answered).
#[test]
fn a_publish_waits_for_the_first_poll_of_its_fresh_channel() {
    let now = test_epoch();
    let mut c = cfg();
    c.transports = vec![Transport::Polling];
    let mut s = ClientSession::new(c, now);
    assert_eq!(s.state(), SessionState::Open, "no channel: nothing to ask");
    s.subscribe(now, "a").unwrap();
    let id = s.publish(now, "a", r#"{"n":1}"#).unwrap();
    let poll = connect(&mut s, now);
    let req = String::from_utf8(written(&mut s)).unwrap();
    assert!(req.starts_with("GET /poll?ch=a&wait=1 "), "{req}");
    assert_eq!(s.poll_action(), None, "no publish before the subscription is in place");
    // The first poll is answered (the head as the server saw it): the publish goes.
    let t = now + Duration::from_millis(3);
    let body = r#"{"ch":"a","pos":"a1:4","recovered":true,"events":[]}"#;
    let resp = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len());
    s.handle_read(t, poll, resp.as_bytes());
    assert_eq!(s.position("a"), Some("a1:4".parse().unwrap()));
    assert!(matches!(s.poll_action(), Some(SocketAction::Close { sock }) if sock == poll));
    let publish = connect(&mut s, t);
    let req = String::from_utf8(written(&mut s)).unwrap();
    assert!(req.starts_with("POST /api/publish?ch=a&id="), "{req}");
    let reply = r#"{"ep":"a1","off":5}"#;
    let resp = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{reply}", reply.len());
    s.handle_read(t, publish, resp.as_bytes());
    assert!(
        events(&mut s).contains(&SessionEvent::Acked { id, pos: Some("a1:5".parse().unwrap()) })
    );
    // The next poll asks from the head the first one gave: the publish comes back.
    let t = s.poll_timeout().unwrap();
    s.handle_timeout(t);
    let _ = connect(&mut s, t);
    let req = String::from_utf8(written(&mut s)).unwrap();
    assert!(req.starts_with("GET /poll?ch=a&pos=a1:4&wait=1 "), "{req}");
}

/// As above on SSE: a fresh channel's publish waits for its stream's head; a channel that
/// resumes from a position needs no wait (its stream replays from there).
#[test]
fn a_publish_waits_for_the_event_stream_of_its_fresh_channel_only() {
    let now = test_epoch();
    let mut c = cfg();
    c.transports = vec![Transport::Sse];
    let mut s = ClientSession::new(c, now);
    s.subscribe_from(now, "old", Some("a1:2".parse().unwrap())).unwrap();
    let old = connect(&mut s, now);
    let _ = written(&mut s);
    let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n";
    s.handle_read(now, old, head.as_bytes());
    assert_eq!(s.state(), SessionState::Open);
    let ok = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}";
    // Subscribed again from its position: the publish goes before the new stream's head.
    s.unsubscribe(now, "old");
    let _ = s.poll_action();
    s.subscribe_from(now, "old", Some("a1:2".parse().unwrap())).unwrap();
    let old = connect(&mut s, now);
    let _ = written(&mut s);
    s.publish(now, "old", "1").unwrap();
    let publish = connect(&mut s, now);
    let req = String::from_utf8(written(&mut s)).unwrap();
    assert!(req.starts_with("POST /api/publish?ch=old&id="), "{req}");
    s.handle_read(now, publish, ok.as_bytes());
    s.handle_read(now, old, head.as_bytes());
    assert!(matches!(s.poll_action(), Some(SocketAction::Close { sock }) if sock == publish));
    s.subscribe(now, "new").unwrap();
    let stream = connect(&mut s, now);
    let _ = written(&mut s);
    s.publish(now, "new", "2").unwrap();
    assert_eq!(s.poll_action(), None, "no publish before the stream is in place");
    s.handle_read(now, stream, head.as_bytes());
    let _ = connect(&mut s, now);
    let req = String::from_utf8(written(&mut s)).unwrap();
    assert!(req.starts_with("POST /api/publish?ch=new&id="), "{req}");
}
