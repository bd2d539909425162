//! The hub routes of the core server on a real socket pump: WebSocket envelopes, SSE,
//! polling and HTTP publishes sharing one log per channel; resume; the slow-consumer close.

mod common;

use std::io::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use common::{Blocks, TestServer, fetch, get, raw, read_to_end_lossy, settle, within};
use tidewire_std::tidewire::client::wire::{PollBody, ServerFrame};
use tidewire_std::tidewire::hub::{HubConfig, HubEvent};
use tidewire_std::tidewire::policy::outbox::OutboxConfig;
use tidewire_std::tidewire::replay::Position;
use tidewire_std::tidewire::server::ServerEvent;
use tidewire_std::tidewire::time::Duration as CoreDuration;
use tidewire_std::{ClientOptions, CloseCode, ServerConfig, WebSocket, connect};

/// The core's routes: `/ws`, `/events`, `/poll`, `/api/publish` (token `admin` is trusted).
fn start(hub: HubConfig) -> TestServer {
    let mut cfg = ServerConfig::default();
    cfg.endpoint.hub = hub;
    TestServer::hub(cfg)
}

fn ws(addr: SocketAddr, token: Option<&str>) -> WebSocket {
    let q = token.map(|t| format!("?token={}", t.replace(':', "%3A"))).unwrap_or_default();
    connect(&format!("ws://{addr}/ws{q}"), ClientOptions::default()).expect("connect")
}

fn next(ws: &mut WebSocket) -> ServerFrame {
    let m = ws.recv().expect("a message");
    ServerFrame::decode(m.payload()).unwrap_or_else(|_| panic!("bad frame {m:?}"))
}

fn msg_pos(f: &ServerFrame) -> Position {
    match f {
        ServerFrame::Msg { pos, .. } => *pos,
        other => panic!("not a msg: {other:?}"),
    }
}

fn small_grace() -> HubConfig {
    HubConfig { presence_grace: CoreDuration::from_millis(100), ..HubConfig::default() }
}

#[test]
fn websocket_clients_subscribe_publish_ack_refuse_and_see_presence() {
    within(30, || {
        let server = start(small_grace());
        let hub = server.handle.clone();
        let mut ann = ws(server.addr, Some("user:ann"));
        let mut bob = ws(server.addr, Some("user:bob"));

        ann.send(r#"{"op":"sub","ch":"chat:lobby","ref":1}"#).unwrap();
        assert!(matches!(next(&mut ann), ServerFrame::Subscribed { recovered: true, .. }));
        let ServerFrame::Presence { join, .. } = next(&mut ann) else { panic!() };
        assert_eq!(join, ["ann"]);

        bob.send(r#"{"op":"sub","ch":"chat:lobby","ref":1}"#).unwrap();
        assert!(matches!(next(&mut bob), ServerFrame::Subscribed { .. }));
        let ServerFrame::Presence { join, .. } = next(&mut bob) else { panic!() };
        assert_eq!(join, ["ann", "bob"]);
        let ServerFrame::Presence { join, leave, .. } = next(&mut ann) else { panic!() };
        assert_eq!((join, leave), (vec!["bob".to_owned()], vec![]));

        // A publish: msg to both (once), ack to the publisher; a retry is acked only.
        let publish = r#"{"op":"pub","ch":"chat:lobby","id":"m1","data":{"t":"hi"},"ref":2}"#;
        ann.send(publish).unwrap();
        let first = next(&mut ann);
        let pos = msg_pos(&first);
        assert!(
            matches!(next(&mut ann), ServerFrame::Ack { reference: Some(2), pos: Some(p) } if p == pos)
        );
        assert_eq!(msg_pos(&next(&mut bob)), pos);
        ann.send(publish).unwrap();
        assert!(
            matches!(next(&mut ann), ServerFrame::Ack { reference: Some(2), pos: Some(p) } if p == pos)
        );

        // Refused: reading an admin channel, and bob publishing nothing new arrives twice.
        ann.send(r#"{"op":"sub","ch":"admin:x","ref":3}"#).unwrap();
        let ServerFrame::Err { reference, code, .. } = next(&mut ann) else { panic!() };
        assert_eq!((reference, code.as_str()), (Some(3), "forbidden"));
        bob.send(r#"{"op":"pub","ch":"chat:lobby","id":"b1","data":2,"ref":9}"#).unwrap();
        let second = msg_pos(&next(&mut bob));
        assert_eq!((second.epoch, second.offset), (pos.epoch, pos.offset + 1));
        assert!(matches!(next(&mut bob), ServerFrame::Ack { reference: Some(9), .. }));
        assert_eq!(msg_pos(&next(&mut ann)), second, "the retry was not published again");

        // Bob leaves: after the grace period ann sees him go.
        bob.close(CloseCode::NORMAL, "bye").unwrap();
        common::recv_until_closed(&mut bob);
        let ServerFrame::Presence { join, leave, .. } = next(&mut ann) else { panic!() };
        assert_eq!((join, leave), (vec![], vec!["bob".to_owned()]));
        assert!(settle(|| {
            std::iter::from_fn(|| hub.next_event()).any(|e| {
                matches!(e, ServerEvent::Hub(HubEvent::Left { member, .. }) if &*member == "bob")
            })
        }));
        assert_eq!(hub.inspect(|s| s.hub_stats().duplicates), 1);
        drop(ann);
        server.stop(Duration::from_secs(1));
    });
}

/// Reads the `id:` and `data:` lines of an SSE block.
fn sse_fields(block: &str) -> (String, String, String) {
    let field = |name: &str| {
        block
            .lines()
            .find_map(|l| l.strip_prefix(name).map(|v| v.trim_start().to_owned()))
            .unwrap_or_default()
    };
    (field("id:"), field("event:"), field("data:"))
}

#[test]
fn sse_and_polling_read_the_same_log_as_websocket() {
    within(30, || {
        let server = start(HubConfig::default());
        let hub = server.handle.clone();
        let mut ws1 = ws(server.addr, None);
        ws1.send(r#"{"op":"sub","ch":"public:ticks"}"#).unwrap();
        assert!(matches!(next(&mut ws1), ServerFrame::Subscribed { .. }));

        // A live SSE stream, opened before the publishes.
        let (head, mut live) = Blocks::open(get(server.addr, "/events?ch=public:ticks", ""));
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        let first_id = live.next().unwrap();
        assert!(first_id.starts_with("id:"), "the head position: {first_id}");

        let positions: Vec<Position> = (1..=3)
            .map(|n| hub.publish("public:ticks", format!(r#"{{"n":{n}}}"#)).unwrap())
            .collect();
        let over_ws: Vec<Position> = (0..3).map(|_| msg_pos(&next(&mut ws1))).collect();
        assert_eq!(over_ws, positions);
        for (n, pos) in positions.iter().enumerate() {
            let (id, event, data) = sse_fields(&live.next_event().unwrap());
            assert_eq!((id, event.as_str()), (pos.to_string(), "public:ticks"));
            assert_eq!(data, format!(r#"{{"n":{}}}"#, n + 1));
        }

        // Resuming SSE (pos= and Last-Event-ID, which wins) and a poll from the first.
        let from = positions[0];
        for (path, extra) in [
            (format!("/events?ch=public:ticks&pos={from}"), String::new()),
            ("/events?ch=public:ticks&pos=0:0".to_owned(), format!("Last-Event-ID: {from}\r\n")),
        ] {
            let (_, mut resumed) = Blocks::open(get(server.addr, &path, &extra));
            let ids: Vec<String> =
                (0..2).map(|_| sse_fields(&resumed.next_event().unwrap()).0).collect();
            assert_eq!(ids, [positions[1].to_string(), positions[2].to_string()]);
        }
        let (status, head, body) =
            fetch(server.addr, &format!("/poll?ch=public:ticks&pos={from}"), "");
        assert_eq!(status, 200, "{head}");
        let poll = PollBody::decode(body.as_bytes()).unwrap();
        assert!(poll.recovered);
        let polled: Vec<Position> = poll.events.iter().map(|e| e.pos).collect();
        assert_eq!(polled, positions[1..]);
        assert!(head.contains(&format!("ETag: \"{}\"", positions[2])), "{head}");
        let (status, _, _) = fetch(
            server.addr,
            "/poll?ch=public:ticks",
            &format!("If-None-Match: \"{}\"\r\n", positions[2]),
        );
        assert_eq!(status, 304);

        // A long poll is answered by the next publish, on any transport.
        let waiting =
            get(server.addr, &format!("/poll?ch=public:ticks&pos={}&wait=1", positions[2]), "");
        assert!(settle(|| hub.inspect(|s| s.hub().members("public:ticks").count()) >= 3));
        let fourth = hub.publish("public:ticks", "4").unwrap();
        let mut waiting = waiting;
        let all = String::from_utf8(read_to_end_lossy(&mut waiting)).unwrap();
        let body = all.split_once("\r\n\r\n").unwrap().1;
        let poll = PollBody::decode(body.as_bytes()).unwrap();
        assert_eq!(poll.events.iter().map(|e| e.pos).collect::<Vec<_>>(), [fourth]);

        // Refusals before any 200.
        assert_eq!(fetch(server.addr, "/events?ch=chat:lobby", "").0, 403);
        assert_eq!(fetch(server.addr, "/poll?ch=chat:lobby", "").0, 403);
        assert_eq!(fetch(server.addr, "/events?ch=chat:lobby&token=bogus", "").0, 401);
        assert_eq!(fetch(server.addr, "/events", "").0, 400);
        drop(live);
        drop(ws1);
        server.stop(Duration::from_secs(1));
    });
}

#[test]
fn resume_gets_exactly_the_missed_messages_or_a_reset() {
    within(30, || {
        let server = start(HubConfig::default());
        let hub = server.handle.clone();
        let mut a = ws(server.addr, None);
        a.send(r#"{"op":"sub","ch":"public:r"}"#).unwrap();
        assert!(matches!(next(&mut a), ServerFrame::Subscribed { .. }));
        let p: Vec<Position> =
            (1..=5).map(|n| hub.publish("public:r", n.to_string()).unwrap()).collect();
        let seen = msg_pos(&next(&mut a));
        assert_eq!(seen, p[0]);
        drop(a); // gone after one message

        let mut b = ws(server.addr, None);
        let sub = format!(
            r#"{{"op":"sub","ch":"public:r","pos":{{"ep":"{}","off":{}}}}}"#,
            seen.epoch, seen.offset
        );
        b.send(sub.as_str()).unwrap();
        assert!(matches!(next(&mut b), ServerFrame::Subscribed { recovered: true, .. }));
        let replayed: Vec<Position> = (0..4).map(|_| msg_pos(&next(&mut b))).collect();
        assert_eq!(replayed, p[1..]);
        let live = hub.publish("public:r", "6").unwrap();
        assert_eq!(msg_pos(&next(&mut b)), live, "nothing replayed twice");

        // A position of another epoch is gone: no replay, a refetch.
        let mut c = ws(server.addr, None);
        c.send(r#"{"op":"sub","ch":"public:r","pos":{"ep":"abc","off":3}}"#).unwrap();
        let ServerFrame::Subscribed { recovered, pos, .. } = next(&mut c) else { panic!() };
        assert!(!recovered);
        assert_eq!(pos, Some(live));
        let (_, mut sse) =
            Blocks::open(get(server.addr, "/events?ch=public:r", "Last-Event-ID: abc:3\r\n"));
        let (id, event, data) = sse_fields(&sse.next_event().unwrap());
        assert_eq!((id, event.as_str()), (live.to_string(), "reset"));
        assert!(data.contains(r#""recovered":false"#), "{data}");
        let (_, _, body) = fetch(server.addr, "/poll?ch=public:r&pos=abc:3", "");
        let poll = PollBody::decode(body.as_bytes()).unwrap();
        assert!(!poll.recovered && poll.events.is_empty());
        drop((b, c, sse));
        server.stop(Duration::from_secs(1));
    });
}

#[test]
fn a_slow_websocket_consumer_is_closed_with_4100() {
    within(60, || {
        let cfg = HubConfig {
            outbox: OutboxConfig { max_bytes: 16 << 10, max_items: 64, ..OutboxConfig::default() },
            ..HubConfig::default()
        };
        let mut server_cfg = ServerConfig::default();
        server_cfg.endpoint.hub = cfg;
        server_cfg.endpoint.ws.max_outbound = 4 << 10;
        let server = TestServer::hub(server_cfg);
        let hub = server.handle.clone();
        let mut slow = ws(server.addr, None);
        slow.send(r#"{"op":"sub","ch":"public:flood"}"#).unwrap();
        assert!(matches!(next(&mut slow), ServerFrame::Subscribed { .. }));
        // The client stops reading; the server publishes far more than its buffers hold.
        let data = format!(r#""{}""#, "x".repeat(1000));
        let mut n = 0;
        while hub.inspect(|s| s.hub_stats().too_slow) == 0 && n < 100_000 {
            hub.publish("public:flood", data.as_str()).unwrap();
            n += 1;
        }
        assert_eq!(hub.inspect(|s| s.hub_stats().too_slow), 1, "after {n} publishes");
        // The core server took the hub's close (it is not an application event any more).
        assert_eq!(hub.inspect(|s| s.stats().closed_by_hub), 1);
        // Reading again, it gets what was in flight and then the close frame.
        let info = common::recv_until_closed(&mut slow);
        assert_eq!(info.code, CloseCode::TOO_SLOW, "{info:?}");
        assert!(settle(|| hub.inspect(|s| s.hub_connections() == 0)));
        server.stop(Duration::from_secs(1));
    });
}

/// `POST path` with a JSON body: `(status, body)`.
fn post(addr: SocketAddr, path: &str, body: &str) -> (u16, String) {
    let mut s = raw(addr);
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let all = String::from_utf8(read_to_end_lossy(&mut s)).unwrap();
    let (head, body) = all.split_once("\r\n\r\n").unwrap_or((&all, ""));
    (head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0), body.to_owned())
}

#[test]
fn http_publish_authorizes_dedups_and_answers_the_position() {
    within(30, || {
        let server = start(HubConfig::default());
        let hub = server.handle.clone();
        let mut watcher = ws(server.addr, Some("user:zed"));
        watcher.send(r#"{"op":"sub","ch":"chat:x"}"#).unwrap();
        assert!(matches!(next(&mut watcher), ServerFrame::Subscribed { .. }));
        assert!(matches!(next(&mut watcher), ServerFrame::Presence { .. }));

        let ann = "/api/publish?ch=chat:x&id=p1&token=user%3Aann";
        assert_eq!(post(server.addr, "/api/publish?ch=chat:x&token=bogus", "1").0, 401);
        assert_eq!(post(server.addr, "/api/publish?ch=chat:x&id=a", "1").0, 403, "anonymous");
        assert_eq!(post(server.addr, "/api/publish?ch=public:x&token=user%3Aann", "1").0, 403);
        assert_eq!(post(server.addr, ann, "{not json").0, 400);
        assert_eq!(post(server.addr, "/api/publish?token=user%3Aann", "1").0, 400);
        assert_eq!(fetch(server.addr, ann, "").0, 405);

        let (status, body) = post(server.addr, ann, r#"{"t":"hi"}"#);
        assert_eq!(status, 200, "{body}");
        let reply = tidewire_std::tidewire::client::wire::decode_publish_reply(body.as_bytes());
        let pos = reply.expect("a position");
        assert_eq!(pos.offset, 1);
        assert_eq!(post(server.addr, ann, r#"{"t":"hi"}"#), (200, body.clone()), "a retry");
        // The same id over WebSocket (same user, same window) is a duplicate too.
        let mut ws_ann = ws(server.addr, Some("user:ann"));
        ws_ann.send(r#"{"op":"pub","ch":"chat:x","id":"p1","data":{"t":"hi"},"ref":5}"#).unwrap();
        assert!(matches!(next(&mut ws_ann), ServerFrame::Ack { pos: Some(p), .. } if p == pos));
        // Another user's id is another message; the trusted publish skips the policy.
        let (status, other) =
            post(server.addr, "/api/publish?ch=chat:x&id=p1&token=user%3Abob", "2");
        assert_eq!(status, 200);
        assert!(other.contains(r#""off":2"#), "{other}");
        let (status, admin) = post(server.addr, "/api/publish?ch=admin:log&token=admin", "3");
        assert_eq!(status, 200, "{admin}");

        assert_eq!(msg_pos(&next(&mut watcher)), pos);
        let ServerFrame::Msg { pos: p2, data, .. } = next(&mut watcher) else { panic!() };
        assert_eq!((p2.offset, data.as_str()), (2, "2"), "the duplicate was never published");
        assert_eq!(hub.inspect(|s| s.hub_stats().duplicates), 2);
        drop((watcher, ws_ann));
        server.stop(Duration::from_secs(1));
    });
}
