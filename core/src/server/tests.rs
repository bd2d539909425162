//! Routing, limits, refusals, the hub's endpoints and shutdown, on virtual time.

use bytes::Bytes;

use super::*;
use crate::http::BodyError;
use crate::hub::DemoAuth;
use crate::machine::Transmit;
use crate::ws::{Message, WsConfig, WsEvent};

fn server() -> Server {
    Server::new(ServerConfig::default(), DemoAuth, DemoAuth, 7)
}

/// Everything `conn` writes now, and whether it ended.
fn drain(s: &mut Server, now: Instant, conn: ConnHandle) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    while let Some(t) = s.poll_transmit(now, conn) {
        match t {
            Transmit::Bytes(b) => out.extend_from_slice(&b),
            _ => return (out, true),
        }
    }
    (out, false)
}

fn request(s: &mut Server, now: Instant, conn: u64, head: &str) -> (String, bool) {
    let conn = ConnHandle(conn);
    s.handle_accept(now, conn);
    s.handle_read(now, conn, head.as_bytes());
    let (out, ended) = drain(s, now, conn);
    (String::from_utf8_lossy(&out).into_owned(), ended)
}

fn status(resp: &str) -> u16 {
    resp.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0)
}

#[test]
fn refusals_have_their_status() {
    let now = crate::time::test_epoch();
    let mut s = server();
    let cases = [
        ("GET /ws HTTP/1.1\r\nHost: x\r\n\r\n", 426),
        ("POST /events?ch=public:a HTTP/1.1\r\nHost: x\r\n\r\n", 405),
        ("DELETE /poll?ch=public:a HTTP/1.1\r\nHost: x\r\n\r\n", 405),
        ("GET /api/publish?ch=chat:a HTTP/1.1\r\nHost: x\r\n\r\n", 405),
        ("GET /events HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        ("GET /events?ch=public:a&token=nope HTTP/1.1\r\nHost: x\r\n\r\n", 401),
        ("GET /events?ch=secret:a HTTP/1.1\r\nHost: x\r\n\r\n", 403),
        ("GET /poll?ch=secret:a HTTP/1.1\r\nHost: x\r\n\r\n", 403),
        ("POST /api/publish?ch=chat:a HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}", 403),
        (
            "POST /api/publish?ch=chat:a&token=user:ann HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n",
            413,
        ),
        (
            "POST /api/publish?ch=chat:a&token=user:ann HTTP/1.1\r\nContent-Length: 3\r\n\r\nnot",
            400,
        ),
        ("GARBAGE\r\n\r\n", 400),
        ("GET /events?ch=public:a HTTP/1.0\r\n\r\n", 505),
    ];
    for (i, (head, want)) in cases.into_iter().enumerate() {
        let (resp, ended) = request(&mut s, now, i as u64 + 1, head);
        assert_eq!(status(&resp), want, "{head:?} -> {resp}");
        assert!(ended, "{head:?} must end the connection");
    }
    assert!(s.is_drained());
    assert_eq!(s.stats().refused, 13);
    assert!(s.violations().is_empty());
}

#[test]
fn a_head_too_large_is_431_and_a_slow_one_408() {
    let now = crate::time::test_epoch();
    let mut s = server();
    let big = format!("GET /poll?ch=public:a HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(20 << 10));
    let (resp, ended) = request(&mut s, now, 1, &big);
    assert_eq!((status(&resp), ended), (431, true));

    let conn = ConnHandle(2);
    s.handle_accept(now, conn);
    s.handle_read(now, conn, b"GET /poll?ch=public:a HTT");
    assert_eq!(drain(&mut s, now, conn), (Vec::new(), false));
    let at = s.poll_timeout().unwrap();
    assert_eq!(at, now + Duration::from_secs(10));
    s.handle_timeout(at - Duration::from_millis(1));
    assert_eq!(drain(&mut s, at, conn), (Vec::new(), false));
    s.handle_timeout(at);
    let (out, ended) = drain(&mut s, at, conn);
    assert_eq!((status(&String::from_utf8_lossy(&out)), ended), (408, true));
}

#[test]
fn other_paths_go_to_the_application() {
    let now = crate::time::test_epoch();
    let mut s = server();
    let conn = ConnHandle(9);
    s.handle_accept(now, conn);
    s.handle_read(now, conn, b"POST /things HTTP/1.1\r\nContent-Length: 3\r\n\r\nab");
    match s.poll_event() {
        Some(ServerEvent::Request { conn: c, request }) => {
            assert_eq!((c, request.path()), (conn, "/things"));
        }
        other => panic!("{other:?}"),
    }
    // The server keeps the connection: the body, then the application's answer.
    assert!(s.has_connection(conn));
    assert_eq!(s.read_body(now, conn, 16), None, "more to come");
    assert!(!s.poll_arrived());
    s.handle_read(now, conn, b"c");
    assert!(s.poll_arrived());
    assert_eq!(s.read_body(now, conn, 16), Some(Ok(Bytes::from_static(b"abc"))));
    assert_eq!(s.read_body(now, conn, 16), Some(Err(BodyError::Truncated)), "given once");
    s.answer(now, conn, 201, &[("X-A", "1")], b"made").unwrap();
    assert!(s.answer(now, conn, 200, &[("X\r\n", "1")], b"").is_err(), "checked");
    let (out, ended) = drain(&mut s, now, conn);
    let out = String::from_utf8_lossy(&out);
    assert!(out.starts_with("HTTP/1.1 201 ") && out.ends_with("\r\n\r\nmade"), "{out}");
    assert!(ended);
    s.handle_lost(now, conn);
    assert!(!s.has_connection(conn));

    let up = "GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    s.handle_accept(now, ConnHandle(10));
    s.handle_read(now, ConnHandle(10), up.as_bytes());
    let Some(ServerEvent::Upgrade { conn, mut ws }) = s.poll_event() else { panic!() };
    assert_eq!(conn, ConnHandle(10));
    assert!(matches!(ws.poll_event(), Some(WsEvent::UpgradeRequested(r)) if r.path() == "/echo"));
    assert!(s.is_drained());
}

#[test]
fn the_application_reads_bodies_through_the_server() {
    let t0 = crate::time::test_epoch();
    let cfg = ServerConfig { head_timeout: Duration::from_secs(2), ..Default::default() };
    let mut s = Server::new(cfg, DemoAuth, DemoAuth, 7);
    let open = |s: &mut Server, conn: u64, head: &str| {
        let conn = ConnHandle(conn);
        s.handle_accept(t0, conn);
        s.handle_read(t0, conn, head.as_bytes());
        assert!(matches!(s.poll_handover(conn), Some(ServerEvent::Request { .. })));
        conn
    };
    // Over what the application takes: 413, answered by the server.
    let c = open(&mut s, 1, "POST /a HTTP/1.1\r\nContent-Length: 20\r\n\r\n");
    assert_eq!(s.read_body(t0, c, 10), Some(Err(BodyError::TooLarge { max: 10 })));
    let (out, ended) = drain(&mut s, t0, c);
    assert_eq!((status(&String::from_utf8_lossy(&out)), ended), (413, true));
    // 100-continue once the application asks; the body's time starts then.
    let head = "POST /b HTTP/1.1\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n";
    let c = open(&mut s, 2, head);
    assert_eq!(drain(&mut s, t0, c), (vec![], false), "nothing before the application asks");
    s.handle_timeout(t0 + Duration::from_secs(5));
    let t1 = t0 + Duration::from_secs(5);
    assert_eq!(s.read_body(t1, c, 10), None);
    let (out, _) = drain(&mut s, t1, c);
    assert!(out.starts_with(b"HTTP/1.1 100 Continue\r\n"));
    assert_eq!(s.poll_timeout(), Some(t1 + Duration::from_secs(2)));
    s.handle_timeout(t1 + Duration::from_secs(2));
    assert!(s.poll_arrived());
    let t2 = t1 + Duration::from_secs(2);
    assert_eq!(s.read_body(t2, c, 10), Some(Err(BodyError::TimedOut)));
    let (out, ended) = drain(&mut s, t2, c);
    assert_eq!((status(&String::from_utf8_lossy(&out)), ended), (408, true));
    // Cut short: no answer; given up: no answer either.
    let c = open(&mut s, 3, "POST /c HTTP/1.1\r\nContent-Length: 5\r\n\r\nab");
    s.handle_eof(t0, c);
    assert_eq!(s.read_body(t0, c, 10), Some(Err(BodyError::Truncated)));
    assert_eq!(drain(&mut s, t0, c), (vec![], true));
    let c = open(&mut s, 4, "GET /d HTTP/1.1\r\n\r\n");
    s.drop_request(t0, c);
    assert_eq!(drain(&mut s, t0, c), (vec![], true));
    s.answer(t0, c, 200, &[], b"late").unwrap();
    assert_eq!(drain(&mut s, t0, c), (vec![], false), "nothing more: it was dropped");
    // A shutdown leaves the application's requests to it until the grace ends.
    let c = open(&mut s, 5, "GET /e HTTP/1.1\r\n\r\n");
    s.shutdown(t0, Duration::from_secs(1));
    assert_eq!(drain(&mut s, t0, c), (vec![], false));
    s.answer(t0, c, 204, &[], b"").unwrap();
    let (out, ended) = drain(&mut s, t0, c);
    assert_eq!((status(&String::from_utf8_lossy(&out)), ended), (204, true));
}

#[test]
fn a_publish_body_may_be_chunked_or_wait_for_100_continue() {
    let now = crate::time::test_epoch();
    let mut s = server();
    let chunked = "POST /api/publish?ch=chat:a&token=user:ann HTTP/1.1\r\n\
                   Transfer-Encoding: chunked\r\n\r\n3\r\n{\"n\r\n4\r\n\":1}\r\n0\r\n\r\n";
    let (resp, ended) = request(&mut s, now, 1, chunked);
    assert_eq!((status(&resp), ended), (200, true), "{resp}");
    let conn = ConnHandle(2);
    let head = "POST /api/publish?ch=chat:a&token=user:ann HTTP/1.1\r\nContent-Length: 7\r\n\
                Expect: 100-continue\r\n\r\n";
    let (interim, ended) = request(&mut s, now, 2, head);
    assert!(interim.starts_with("HTTP/1.1 100 Continue\r\n\r\n") && !ended, "{interim}");
    s.handle_read(now, conn, br#"{"n":2}"#);
    let (out, ended) = drain(&mut s, now, conn);
    assert_eq!((status(&String::from_utf8_lossy(&out)), ended), (200, true));
    assert_eq!(s.head("chat:a").map(|p| p.offset), Some(2), "both logged");
}

#[test]
fn custom_routes_take_the_channel_from_the_path() {
    let now = crate::time::test_epoch();
    let mut cfg = ServerConfig::default();
    cfg.routes.poll = Some(Route::with_channel("/orders/{id}/poll", "public:orders:{id}"));
    let mut s = Server::new(cfg, DemoAuth, DemoAuth, 1);
    let pos = s.publish(now, "public:orders:42", br#"{"state":"packed"}"#).unwrap();
    let head = format!("GET /orders/42/poll?pos={}:0 HTTP/1.1\r\n\r\n", pos.epoch);
    let (resp, _) = request(&mut s, now, 1, &head);
    assert_eq!(status(&resp), 200, "{resp}");
    assert!(resp.contains(r#"{"state":"packed"}"#), "{resp}");
    // The old path is the application's now.
    s.handle_accept(now, ConnHandle(2));
    s.handle_read(now, ConnHandle(2), b"GET /poll?ch=public:a HTTP/1.1\r\n\r\n");
    assert!(matches!(s.poll_event(), Some(ServerEvent::Request { .. })));
}

#[test]
fn a_foreign_origin_with_cookies_is_refused() {
    let now = crate::time::test_epoch();
    let cfg = ServerConfig {
        allowed_origins: vec!["https://app.example".into()],
        ..ServerConfig::default()
    };
    let mut s = Server::new(cfg, DemoAuth, DemoAuth, 1);
    let head = |origin: &str, cookie: bool| {
        let c = if cookie { "Cookie: sid=1\r\n" } else { "" };
        format!(
            "GET /events?ch=public:a HTTP/1.1\r\nHost: demo.test\r\nOrigin: {origin}\r\n{c}\r\n"
        )
    };
    let (resp, _) = request(&mut s, now, 1, &head("https://evil.example", true));
    assert_eq!(status(&resp), 403);
    let (resp, _) = request(&mut s, now, 2, &head("http://demo.test", true));
    assert_eq!(status(&resp), 200);
    let (resp, _) = request(&mut s, now, 3, &head("https://app.example", true));
    assert_eq!(status(&resp), 200);
    let (resp, _) = request(&mut s, now, 4, &head("https://evil.example", false));
    assert_eq!(status(&resp), 200, "no ambient credential, no check");
}

#[test]
fn deferred_authentication_waits_for_the_decision() {
    let now = crate::time::test_epoch();
    let mut s = Server::new(ServerConfig::default(), |_: &Request| Verdict::Defer, DemoAuth, 1);
    let conn = ConnHandle(1);
    s.handle_accept(now, conn);
    s.handle_read(now, conn, b"GET /poll?ch=public:a HTTP/1.1\r\n\r\n");
    let Some(ServerEvent::Authenticate { conn: c, request }) = s.poll_event() else { panic!() };
    assert_eq!((c, request.path_only()), (conn, "/poll"));
    assert_eq!(drain(&mut s, now, conn), (Vec::new(), false));
    s.decide(now, conn, Verdict::Allow(Credential::client(Principal::user("ann"))));
    let (out, ended) = drain(&mut s, now, conn);
    assert_eq!((status(&String::from_utf8_lossy(&out)), ended), (200, true));

    // Refused later, and timed out.
    s.handle_accept(now, ConnHandle(2));
    s.handle_read(now, ConnHandle(2), b"GET /poll?ch=public:a HTTP/1.1\r\n\r\n");
    s.decide(now, ConnHandle(2), Verdict::Refuse(Refusal::new(429, "slow down")));
    let (out, _) = drain(&mut s, now, ConnHandle(2));
    assert_eq!(status(&String::from_utf8_lossy(&out)), 429);
    s.handle_accept(now, ConnHandle(3));
    s.handle_read(now, ConnHandle(3), b"GET /poll?ch=public:a HTTP/1.1\r\n\r\n");
    let later = now + Duration::from_secs(10);
    s.handle_timeout(later);
    let (out, _) = drain(&mut s, later, ConnHandle(3));
    assert_eq!(status(&String::from_utf8_lossy(&out)), 503);
}

/// A client WebSocket talking to the server's hub route.
struct WsPeer {
    ws: WsConnection,
    conn: ConnHandle,
    got: Vec<Message>,
    closed: Option<u16>,
}

impl WsPeer {
    fn open(s: &mut Server, now: Instant, conn: u64, token: &str) -> Self {
        Self::open_with(s, now, conn, token, WsConfig::default())
    }

    fn open_with(s: &mut Server, now: Instant, conn: u64, token: &str, cfg: WsConfig) -> Self {
        let conn = ConnHandle(conn);
        let path = format!("/ws?token={token}");
        let ws = WsConnection::client(cfg, "x", &path, now).unwrap();
        let mut p = Self { ws, conn, got: Vec::new(), closed: None };
        s.handle_accept(now, conn);
        p.pump(s, now);
        p
    }

    fn pump(&mut self, s: &mut Server, now: Instant) {
        for _ in 0..100 {
            let mut moved = false;
            while let Some(Transmit::Bytes(b)) = self.ws.poll_transmit() {
                s.handle_read(now, self.conn, &b);
                moved = true;
            }
            while let Some(t) = s.poll_transmit(now, self.conn) {
                moved = true;
                match t {
                    Transmit::Bytes(b) => self.ws.handle_read(now, &b),
                    _ => self.ws.handle_eof(now),
                }
            }
            while let Some(ev) = self.ws.poll_event() {
                match ev {
                    WsEvent::Message(m) => self.got.push(m),
                    WsEvent::Closed(info) => self.closed = Some(info.code.0),
                    _ => {}
                }
            }
            if !moved {
                break;
            }
        }
    }

    fn send(&mut self, s: &mut Server, now: Instant, text: &str) {
        self.ws.send(now, Message::text(text.to_owned())).unwrap();
        self.pump(s, now);
    }

    fn texts(&mut self) -> Vec<String> {
        self.got.drain(..).filter_map(|m| m.as_text().map(str::to_owned)).collect()
    }
}

#[test]
fn the_hub_websocket_carries_envelopes_and_refuses_binary() {
    let now = crate::time::test_epoch();
    let mut s = server();
    let mut ann = WsPeer::open(&mut s, now, 1, "user:ann");
    ann.send(&mut s, now, r#"{"op":"sub","ch":"chat:lobby","ref":1}"#);
    assert!(ann.texts()[0].starts_with(r#"{"op":"subscribed","ch":"chat:lobby""#));
    ann.send(&mut s, now, r#"{"op":"pub","ch":"chat:lobby","data":{"t":"hi"},"ref":2}"#);
    let got = ann.texts();
    assert!(got.iter().any(|t| t.contains(r#""data":{"t":"hi"}"#)), "{got:?}");
    assert!(got.iter().any(|t| t.starts_with(r#"{"op":"ack","ref":2"#)), "{got:?}");

    ann.ws.send(now, Message::binary(Bytes::from_static(b"{}"))).unwrap();
    ann.pump(&mut s, now);
    assert_eq!(ann.closed, Some(1003));
    assert!(s.is_drained());
    assert_eq!(s.hub().connection_count(), 0);
    assert!(s.violations().is_empty(), "{:?}", s.violations());
}

#[test]
fn a_bad_token_gets_401_before_any_101() {
    let now = crate::time::test_epoch();
    let mut s = server();
    let ws = WsPeer::open(&mut s, now, 1, "nope");
    assert_eq!(ws.ws.rejection().map(crate::http::Response::status), Some(401));
    assert_eq!(s.stats().ws_opened, 0);
    assert_eq!(s.hub().connection_count(), 0);
}

#[test]
fn a_reader_that_stops_pulling_meets_the_slow_consumer_policy() {
    let now = crate::time::test_epoch();
    let mut cfg = ServerConfig::default();
    cfg.ws.max_outbound = 4 << 10;
    cfg.hub.outbox.max_items = 8;
    let mut s = Server::new(cfg, DemoAuth, DemoAuth, 1);
    let conn = ConnHandle(1);
    s.handle_accept(now, conn);
    s.handle_read(now, conn, b"GET /events?ch=public:feed HTTP/1.1\r\n\r\n");
    let (head, _) = drain(&mut s, now, conn);
    assert!(head.starts_with(b"HTTP/1.1 200 OK"));
    // The client reads nothing more: the adapter stops pulling.
    let data = format!("{{\"pad\":\"{}\"}}", "x".repeat(1000));
    for _ in 0..200 {
        let _ = s.publish(now, "public:feed", data.as_bytes());
    }
    let (hub, transport) = s.buffered_bytes();
    assert_eq!(transport, 0, "nothing moves into a transport that is not pulled");
    assert!(hub <= 16 << 10, "bounded hub outbox: {hub}");
    assert_eq!(s.stats().closed_by_hub, 1, "the default policy disconnects a slow reader");
    let (out, ended) = drain(&mut s, now, conn);
    assert!(ended && out.len() < 64 << 10);
}

#[test]
fn polls_are_held_until_a_publish_and_keep_one_client_per_sid() {
    let now = crate::time::test_epoch();
    let mut s = server();
    let pos = s.publish(now, "public:a", b"1").unwrap();
    let conn = ConnHandle(1);
    s.handle_accept(now, conn);
    let head = format!("GET /poll?ch=public:a&pos={pos}&wait=1&sid=tab1 HTTP/1.1\r\n\r\n");
    s.handle_read(now, conn, head.as_bytes());
    assert_eq!(drain(&mut s, now, conn), (Vec::new(), false), "held");
    assert_eq!(s.hub().connection_count(), 1);
    let later = now + Duration::from_secs(1);
    s.publish(later, "public:a", b"2").unwrap();
    assert_eq!(s.poll_ready(), Some(conn));
    let (out, ended) = drain(&mut s, later, conn);
    let text = String::from_utf8_lossy(&out);
    assert!(ended && text.contains(r#""data":2"#), "{text}");
    // The same sid keeps its client; another sid gets its own.
    let _ = request(&mut s, later, 2, "GET /poll?ch=public:a&sid=tab1 HTTP/1.1\r\n\r\n");
    assert_eq!(s.hub().connection_count(), 1);
    let _ = request(&mut s, later, 3, "GET /poll?ch=public:a&sid=tab2 HTTP/1.1\r\n\r\n");
    assert_eq!(s.hub().connection_count(), 2);
    // A long poll with nothing new is answered at its deadline.
    s.handle_accept(later, ConnHandle(4));
    let head = "GET /poll?ch=public:b&wait=1 HTTP/1.1\r\n\r\n";
    s.handle_read(later, ConnHandle(4), head.as_bytes());
    let (first, _) = drain(&mut s, later, ConnHandle(4));
    assert_eq!(status(&String::from_utf8_lossy(&first)), 200, "no position: answered at once");
}

#[test]
fn poll_clients_are_bounded() {
    let now = crate::time::test_epoch();
    let cfg = ServerConfig { max_poll_clients: 2, ..ServerConfig::default() };
    let mut s = Server::new(cfg, DemoAuth, DemoAuth, 1);
    for i in 0..5 {
        let head = format!("GET /poll?ch=public:a&sid=s{i} HTTP/1.1\r\n\r\n");
        let (resp, _) = request(&mut s, now, i, &head);
        assert_eq!(status(&resp), 200);
    }
    assert_eq!(s.hub().connection_count(), 2, "past the bound, a poll's connection is its own");
}

#[test]
fn publish_over_http_names_the_position_and_dedups_trusted_ids() {
    let now = crate::time::test_epoch();
    let admin = |req: &Request| match req.bearer_token() {
        Some("admin") => {
            Verdict::Allow(Credential { principal: Principal::anonymous(), trusted: true })
        }
        _ => Authenticate::authenticate(&DemoAuth, req),
    };
    let mut s = Server::new(ServerConfig::default(), admin, DemoAuth, 1);
    let head = "POST /api/publish?ch=secret:x&id=a1 HTTP/1.1\r\nAuthorization: Bearer admin\r\n\
                Content-Length: 7\r\n\r\n{\"n\":1}";
    let (first, _) = request(&mut s, now, 1, head);
    let (again, _) = request(&mut s, now, 2, head);
    assert_eq!(status(&first), 200, "{first}");
    let body = |r: &str| r.rsplit("\r\n\r\n").next().unwrap().to_owned();
    assert_eq!(body(&first), body(&again));
    assert!(body(&first).ends_with(r#""off":1}"#));
    assert_eq!(s.hub().log("secret:x").unwrap().head().offset, 1);
    // A user publish goes through the policy, in pieces.
    let conn = ConnHandle(3);
    s.handle_accept(now, conn);
    s.handle_read(now, conn, b"POST /api/publish?ch=chat:a&token=user:ann HTTP/1.1\r\nContent-Le");
    s.handle_read(now, conn, b"ngth: 5\r\n\r\n[1,2");
    assert_eq!(drain(&mut s, now, conn), (Vec::new(), false));
    s.handle_read(now, conn, b"]");
    let (out, _) = drain(&mut s, now, conn);
    assert_eq!(status(&String::from_utf8_lossy(&out)), 200);
}

#[test]
fn shutdown_closes_ends_answers_and_refuses() {
    let now = crate::time::test_epoch();
    let mut s = server();
    let mut ann = WsPeer::open(&mut s, now, 1, "user:ann");
    ann.send(&mut s, now, r#"{"op":"sub","ch":"chat:lobby"}"#);
    let sse = ConnHandle(2);
    s.handle_accept(now, sse);
    s.handle_read(now, sse, b"GET /events?ch=public:a HTTP/1.1\r\n\r\n");
    let _ = drain(&mut s, now, sse);
    let poll = ConnHandle(3);
    s.handle_accept(now, poll);
    let pos = s.hub().log("public:a").unwrap().head();
    let head = format!("GET /poll?ch=public:a&pos={pos}&wait=1 HTTP/1.1\r\n\r\n");
    s.handle_read(now, poll, head.as_bytes());
    let slow = ConnHandle(4);
    s.handle_accept(now, slow);
    s.handle_read(now, slow, b"GET /ev");

    s.shutdown(now, Duration::from_secs(5));
    ann.pump(&mut s, now);
    assert_eq!(ann.closed, Some(1001));
    assert!(drain(&mut s, now, sse).1, "the stream ended");
    let (out, ended) = drain(&mut s, now, poll);
    assert!(ended && status(&String::from_utf8_lossy(&out)) == 200);
    let (out, _) = drain(&mut s, now, slow);
    assert_eq!(status(&String::from_utf8_lossy(&out)), 503);
    let (resp, _) = request(&mut s, now, 5, "GET /poll?ch=public:a HTTP/1.1\r\n\r\n");
    assert_eq!(status(&resp), 503);
    assert!(s.is_drained(), "{:?}", s.describe_connections());
    assert!(s.violations().is_empty(), "{:?}", s.violations());
}

#[test]
fn the_grace_deadline_cuts_what_is_left() {
    let now = crate::time::test_epoch();
    let mut s = server();
    let mut ann = WsPeer::open(&mut s, now, 1, "user:ann");
    ann.send(&mut s, now, r#"{"op":"sub","ch":"chat:lobby"}"#);
    s.shutdown(now, Duration::from_secs(2));
    // The client never answers the close.
    let (_, ended) = drain(&mut s, now, ConnHandle(1));
    assert!(!ended);
    assert_eq!(s.poll_timeout(), Some(now + Duration::from_secs(2)));
    s.handle_timeout(now + Duration::from_secs(2));
    assert!(drain(&mut s, now + Duration::from_secs(2), ConnHandle(1)).1);
    assert!(s.is_drained());
    assert_eq!(s.hub().connection_count(), 0);
    // The spent grace deadline is not asked for again (an adapter's timer would spin on it).
    let later = now + Duration::from_secs(2);
    assert!(s.poll_timeout().is_none_or(|d| d > later), "{:?}", s.poll_timeout());
    // Still shutting down: a late connection gets 503.
    let (resp, _) = request(&mut s, later, 9, "GET /poll?ch=public:a HTTP/1.1\r\n\r\n");
    assert_eq!(status(&resp), 503);
}

/// The answers to a sequence of requests, each fed in the given pieces.
fn answers(requests: &[(String, Vec<usize>)]) -> Vec<(Vec<u8>, bool)> {
    let now = crate::time::test_epoch();
    let mut s = server();
    let _ = s.publish(now, "public:a", b"{\"n\":1}");
    let mut out = Vec::new();
    for (i, (req, cuts)) in requests.iter().enumerate() {
        let conn = ConnHandle(i as u64);
        s.handle_accept(now, conn);
        let mut at = 0;
        // The application's request: its body asked for after every piece, echoed.
        let (mut app, mut answered) = (false, false);
        for &cut in cuts.iter().chain(std::iter::once(&req.len())) {
            let cut = cut.clamp(at, req.len());
            s.handle_read(now, conn, &req.as_bytes()[at..cut]);
            at = cut;
            app |= matches!(s.poll_handover(conn), Some(ServerEvent::Request { .. }));
            if app
                && !answered
                && let Some(body) = s.read_body(now, conn, 64)
            {
                answered = true;
                if let Ok(body) = body {
                    s.answer(now, conn, 200, &[], &body).unwrap();
                }
            }
        }
        if app && !answered {
            s.answer(now, conn, 500, &[], b"incomplete").unwrap();
        }
        out.push(drain(&mut s, now, conn));
    }
    out
}

proptest::proptest! {
    #[test]
    fn any_split_gives_the_same_answers(
        picks in proptest::collection::vec((0usize..12, proptest::collection::vec(0usize..200, 0..6)), 1..6),
        junk in "[ -~]{0,40}",
    ) {
        let heads = [
            "GET /poll?ch=public:a HTTP/1.1\r\nHost: x\r\n\r\n".to_owned(),
            "GET /events?ch=public:a&token=bad HTTP/1.1\r\n\r\n".to_owned(),
            "POST /api/publish?ch=chat:a&token=user:ann HTTP/1.1\r\nContent-Length: 7\r\n\r\n{\"n\":2}".to_owned(),
            "GET /ws HTTP/1.1\r\n\r\n".to_owned(),
            format!("GET /{junk} HTTP/1.1\r\n\r\n"),
            format!("{junk}\r\n\r\n"),
            "POST /poll HTTP/1.1\r\n\r\n".to_owned(),
            format!("GET /poll?ch={junk} HTTP/1.1\r\n\r\n"),
            "POST /api/publish?ch=chat:a&token=user:ann HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n\
             3\r\n{\"n\r\n4\r\n\":3}\r\n0\r\n\r\n".to_owned(),
            format!("POST /things HTTP/1.1\r\nContent-Length: {}\r\n\r\n{junk}", junk.len()),
            "PUT /things HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n".to_owned(),
            format!("POST /things HTTP/1.1\r\nContent-Length: 3\r\n\r\n{junk}"),
        ];
        let whole: Vec<(String, Vec<usize>)> =
            picks.iter().map(|(h, _)| (heads[*h].clone(), Vec::new())).collect();
        let split: Vec<(String, Vec<usize>)> = picks
            .iter()
            .map(|(h, cuts)| {
                let mut cuts = cuts.clone();
                cuts.sort_unstable();
                (heads[*h].clone(), cuts)
            })
            .collect();
        let bytewise: Vec<(String, Vec<usize>)> =
            picks.iter().map(|(h, _)| (heads[*h].clone(), (0..heads[*h].len()).collect())).collect();
        let a = answers(&whole);
        proptest::prop_assert_eq!(&a, &answers(&split));
        proptest::prop_assert_eq!(&a, &answers(&bytewise));
    }
}

#[test]
fn publish_once_appends_an_id_once() {
    let now = crate::time::test_epoch();
    let mut s = server();
    let first = s.publish_once(now, "public:a", "x1", b"{\"n\":1}").unwrap();
    assert_eq!(s.publish_once(now, "public:a", "x1", b"{\"n\":1}"), Ok(first));
    let second = s.publish_once(now, "public:a", "x2", b"{\"n\":2}").unwrap();
    assert_eq!(second.offset, first.offset + 1);
    assert_eq!(s.publish_once(now, "public:a", "x3", b"nope"), Err(HubError::BadJson));
}

#[test]
fn response_headers_go_on_every_hub_response() {
    let now = crate::time::test_epoch();
    let cfg = ServerConfig {
        response_headers: vec![("Access-Control-Allow-Origin".into(), "*".into())],
        ..ServerConfig::default()
    };
    let mut s = Server::new(cfg, DemoAuth, DemoAuth, 1);
    for (i, head) in [
        "GET /events?ch=public:a HTTP/1.1\r\n\r\n",
        "GET /poll?ch=public:a HTTP/1.1\r\n\r\n",
        "POST /api/publish?ch=chat:a&token=user:ann HTTP/1.1\r\nContent-Length: 1\r\n\r\n1",
    ]
    .into_iter()
    .enumerate()
    {
        let (resp, _) = request(&mut s, now, i as u64, head);
        assert!(resp.contains("Access-Control-Allow-Origin: *\r\n"), "{resp}");
    }
}

#[test]
fn the_policy_sees_the_peer_address() {
    struct Loopback;
    impl Authenticate for Loopback {
        fn authenticate(&self, _: &Request) -> Verdict {
            Verdict::Refuse(Refusal::unauthorized())
        }
        fn authenticate_from(&self, req: &Request, peer: Option<core::net::SocketAddr>) -> Verdict {
            match peer {
                Some(p) if p.ip().is_loopback() => {
                    Verdict::Allow(Credential { principal: Principal::anonymous(), trusted: true })
                }
                _ => self.authenticate(req),
            }
        }
    }
    let now = crate::time::test_epoch();
    let mut s = Server::new(ServerConfig::default(), Loopback, DemoAuth, 1);
    let head = b"POST /api/publish?ch=secret:a HTTP/1.1\r\nContent-Length: 1\r\n\r\n1";
    for (conn, peer, want) in [(1, "127.0.0.1:9", 200), (2, "192.0.2.1:9", 401)] {
        s.handle_accept_from(now, ConnHandle(conn), peer.parse().unwrap());
        assert_eq!(s.peer(ConnHandle(conn)), Some(peer.parse().unwrap()));
        s.handle_read(now, ConnHandle(conn), head);
        let (out, _) = drain(&mut s, now, ConnHandle(conn));
        assert_eq!(status(&String::from_utf8_lossy(&out)), want);
    }
}

#[cfg(feature = "deflate")]
#[test]
fn a_broadcast_is_compressed_once_for_every_receiver_that_can_share_it() {
    use crate::ws::deflate::DeflateConfig;
    let now = crate::time::test_epoch();
    let data = format!("{{\"rows\":\"{}\"}}", "dashboard ".repeat(200));
    for (server_resets, want_compressions) in [(true, 1), (false, 0)] {
        // Presence frames (under min_size) stay plain.
        let d = DeflateConfig {
            server_no_context_takeover: server_resets,
            min_size: 256,
            ..DeflateConfig::default()
        };
        let ws = WsConfig { deflate: Some(d), ..WsConfig::default() };
        let cfg = ServerConfig { ws, ..ServerConfig::default() };
        let mut s = Server::new(cfg, DemoAuth, DemoAuth, 1);
        let client = WsConfig { deflate: Some(DeflateConfig::default()), ..WsConfig::default() };
        let mut peers: Vec<WsPeer> = (1..=3)
            .map(|i| WsPeer::open_with(&mut s, now, i, &format!("user:u{i}"), client.clone()))
            .collect();
        for p in &mut peers {
            p.send(&mut s, now, r#"{"op":"sub","ch":"chat:x"}"#);
            assert!(p.ws.deflate_params().is_some(), "negotiated");
            p.texts();
        }
        for p in &mut peers {
            p.pump(&mut s, now);
            p.texts();
        }
        s.publish(now, "chat:x", data.as_bytes()).unwrap();
        for p in &mut peers {
            p.pump(&mut s, now);
            let got: Vec<String> =
                p.texts().into_iter().filter(|t| t.starts_with(r#"{"op":"msg""#)).collect();
            assert_eq!(got.len(), 1, "{got:?}");
            assert!(got[0].contains(&data), "delivered whole");
        }
        let (compressions, shared) = s.compression_counts();
        assert_eq!(compressions, want_compressions, "server_no_context_takeover {server_resets}");
        assert_eq!(shared, 2 * want_compressions);
    }
}

#[test]
fn shutdown_answers_publishes_waiting_for_the_application() {
    let now = crate::time::test_epoch();
    let mut cfg = ServerConfig::default();
    cfg.hub.vet_publishes = true;
    let mut s = Server::new(cfg, DemoAuth, DemoAuth, 1);
    let conn = ConnHandle(1);
    s.handle_accept(now, conn);
    s.handle_read(
        now,
        conn,
        b"POST /api/publish?ch=chat:a&token=user:ann HTTP/1.1\r\nContent-Length: 1\r\n\r\n1",
    );
    let id = loop {
        match s.poll_event() {
            Some(ServerEvent::Hub(crate::hub::HubEvent::PublishRequested { id, .. })) => break id,
            Some(_) => {}
            None => panic!("no publish request"),
        }
    };
    s.shutdown(now, Duration::from_secs(5));
    let (out, ended) = drain(&mut s, now, conn);
    assert_eq!((status(&String::from_utf8_lossy(&out)), ended), (503, true));
    assert!(!s.decide_publish(now, id, crate::hub::PublishDecision::Accept), "already refused");
    assert!(s.hub().log("chat:a").is_none_or(|l| l.head().offset == 0), "nothing logged");
}

#[test]
fn shutdown_writes_what_the_hub_queued_before_ending_a_stream() {
    let now = crate::time::test_epoch();
    let mut s = server();
    let conn = ConnHandle(1);
    s.handle_accept(now, conn);
    s.handle_read(now, conn, b"GET /events?ch=public:a HTTP/1.1\r\n\r\n");
    let _ = drain(&mut s, now, conn);
    // Published and then at once shut down, before the stream was pulled again.
    let pos = s.publish(now, "public:a", b"{\"last\":true}").unwrap();
    s.shutdown(now, Duration::from_secs(5));
    let (out, ended) = drain(&mut s, now, conn);
    let text = String::from_utf8_lossy(&out);
    assert!(ended && text.contains(&format!("id: {pos}")), "{text}");
}

/// The demo's policy, but joins of `private:*` are looked up later (issue 14).
pub(super) struct LookUp;

impl crate::hub::Authorize for LookUp {
    fn can_read(&self, p: &Principal, ch: &str) -> bool {
        ch.starts_with("private:") || DemoAuth.can_read(p, ch)
    }
    fn can_write(&self, p: &Principal, ch: &str) -> bool {
        DemoAuth.can_write(p, ch)
    }
    fn join_verdict(&self, p: &Principal, ch: &str) -> crate::hub::JoinVerdict {
        if ch.starts_with("private:") {
            crate::hub::JoinVerdict::Defer
        } else if self.can_read(p, ch) {
            crate::hub::JoinVerdict::Allow
        } else {
            crate::hub::JoinVerdict::Refuse
        }
    }
}

fn deferring() -> Server {
    Server::new(ServerConfig::default(), DemoAuth, LookUp, 7)
}

/// The joins the application is asked to decide, and the decided ones.
fn join_events(
    s: &mut Server,
) -> (Vec<crate::hub::JoinId>, Vec<Result<crate::hub::Subscription, crate::hub::JoinRefusal>>) {
    let (mut asked, mut decided) = (Vec::new(), Vec::new());
    while let Some(ev) = s.poll_event() {
        match ev {
            ServerEvent::Hub(HubEvent::JoinRequested { id, .. }) => asked.push(id),
            ServerEvent::Hub(HubEvent::JoinDecided { result, .. }) => decided.push(result),
            _ => {}
        }
    }
    (asked, decided)
}

fn open(s: &mut Server, now: Instant, conn: u64, head: &str) {
    s.handle_accept(now, ConnHandle(conn));
    s.handle_read(now, ConnHandle(conn), head.as_bytes());
}

fn text(s: &mut Server, now: Instant, conn: u64) -> (String, bool) {
    let (out, ended) = drain(s, now, ConnHandle(conn));
    (String::from_utf8_lossy(&out).into_owned(), ended)
}

#[test]
fn an_sse_request_holds_its_head_until_the_join_is_decided() {
    use crate::hub::{JoinDecision, JoinRefusal};
    let now = crate::time::test_epoch();
    let mut s = deferring();
    let sse = "GET /events?ch=private:a&token=user:ann HTTP/1.1\r\n\r\n";
    open(&mut s, now, 1, sse);
    assert_eq!(text(&mut s, now, 1), (String::new(), false), "no head yet");
    let (asked, _) = join_events(&mut s);
    assert_eq!(asked.len(), 1);
    let head = s.hub().log("private:a").unwrap().head();
    s.publish(now, "private:a", b"1").unwrap(); // published while the application decides
    assert_eq!(text(&mut s, now, 1), (String::new(), false));
    assert!(s.decide_join(now, asked[0], JoinDecision::Allow));
    let (out, ended) = text(&mut s, now, 1);
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n") && !ended, "{out}");
    let body = out.split("\r\n\r\n").nth(1).unwrap();
    assert!(body.starts_with(&format!("id: {head}\n\n")), "{body:?}");
    assert!(body.contains("event: private:a\ndata: 1\n"), "{body:?}");
    assert_eq!(s.stats().sse_started, 1);
    let (_, decided) = join_events(&mut s);
    assert!(matches!(decided[..], [Ok(_)]), "{decided:?}");

    // Refused later: the refusal's status, with the application's code.
    open(&mut s, now, 2, sse);
    let (asked, _) = join_events(&mut s);
    s.decide_join(now, asked[0], JoinDecision::Refuse { code: "not_yours".into() });
    let (out, ended) = text(&mut s, now, 2);
    assert_eq!((status(&out), ended), (403, true), "{out}");
    assert!(out.ends_with("\r\n\r\nnot_yours\n"), "{out}");
    // Undecided: refused at the timeout.
    open(&mut s, now, 3, sse);
    let (asked, _) = join_events(&mut s);
    let late = now + s.hub().config().join_timeout;
    assert_eq!(s.poll_timeout(), Some(late));
    s.handle_timeout(late);
    let (out, ended) = text(&mut s, late, 3);
    assert_eq!((status(&out), ended), (503, true), "{out}");
    assert!(out.ends_with("join_timeout\n"), "{out}");
    assert!(!s.decide_join(late, asked[0], JoinDecision::Allow));
    // The client goes away while the application decides: the join is cancelled.
    open(&mut s, late, 4, sse);
    let (asked, _) = join_events(&mut s);
    s.handle_lost(late, ConnHandle(4));
    let (_, decided) = join_events(&mut s);
    assert_eq!(decided, [Err(JoinRefusal::Cancelled)]);
    assert!(!s.decide_join(late, asked[0], JoinDecision::Allow));
    assert_eq!((s.hub().pending_joins(), s.hub().connection_count()), (0, 1));
    assert!(s.violations().is_empty(), "{:?}", s.violations());
}

#[test]
fn a_poll_for_a_pending_join_waits_for_the_decision() {
    use crate::hub::JoinDecision;
    let now = crate::time::test_epoch();
    let mut s = deferring();
    let pos = s.publish(now, "private:a", b"1").unwrap();
    let poll = format!("GET /poll?ch=private:a&pos={pos}&sid=t&token=user:ann HTTP/1.1\r\n\r\n");
    open(&mut s, now, 1, &poll);
    open(&mut s, now, 2, &poll); // the same client polls again: the same decision
    let (asked, _) = join_events(&mut s);
    assert_eq!(asked.len(), 1);
    assert_eq!(s.hub().connection_count(), 1);
    // Its own deadline does not answer it (from a log it may not read).
    let later = now + Duration::from_secs(1);
    s.publish(later, "private:a", b"2").unwrap();
    s.handle_timeout(later);
    assert_eq!(text(&mut s, later, 1), (String::new(), false));
    s.decide_join(later, asked[0], JoinDecision::Allow);
    for conn in [1, 2] {
        let (out, ended) = text(&mut s, later, conn);
        assert!(ended && status(&out) == 200 && out.contains(r#""data":2"#), "{out}");
    }
    assert_eq!(s.hub().channels_of(s.hub().members("private:a").next().unwrap()).count(), 1);

    // Refused: like a synchronous refusal; the polling client leaves the hub.
    let poll = "GET /poll?ch=private:b&token=user:ann HTTP/1.1\r\n\r\n";
    open(&mut s, later, 3, poll);
    let (asked, _) = join_events(&mut s);
    s.decide_join(later, asked[0], JoinDecision::forbidden());
    let (out, ended) = text(&mut s, later, 3);
    assert_eq!((status(&out), ended), (403, true), "{out}");
    assert_eq!(s.hub().connection_count(), 1);
    assert!(s.violations().is_empty(), "{:?}", s.violations());
}

#[test]
fn a_websocket_sub_waits_for_the_decision_and_can_be_withdrawn() {
    use crate::hub::{JoinDecision, JoinRefusal};
    let now = crate::time::test_epoch();
    let mut s = deferring();
    let mut ann = WsPeer::open(&mut s, now, 1, "user:ann");
    ann.send(&mut s, now, r#"{"op":"sub","ch":"private:a","ref":1}"#);
    ann.send(&mut s, now, r#"{"op":"ping","ref":2}"#);
    assert_eq!(ann.texts(), [r#"{"op":"pong","ref":2}"#], "the connection goes on");
    let (asked, _) = join_events(&mut s);
    s.publish(now, "private:a", b"1").unwrap();
    s.decide_join(now, asked[0], JoinDecision::Allow);
    ann.pump(&mut s, now);
    let got = ann.texts();
    assert!(got[0].starts_with(r#"{"op":"subscribed","ch":"private:a","recovered":true"#));
    assert!(got[1].contains(r#""off":1"#) && got[1].ends_with(r#""data":1}"#), "{got:?}");
    let (_, decided) = join_events(&mut s);
    assert!(matches!(decided[..], [Ok(_)]), "{decided:?}");
    // Withdrawn before the decision.
    ann.send(&mut s, now, r#"{"op":"sub","ch":"private:b","ref":3}"#);
    ann.send(&mut s, now, r#"{"op":"unsub","ch":"private:b"}"#);
    let (asked, decided) = join_events(&mut s);
    assert_eq!(decided, [Err(JoinRefusal::Cancelled)]);
    assert!(!s.decide_join(now, asked[0], JoinDecision::Allow));
    // Refused, and a connection that closes while the application decides.
    ann.send(&mut s, now, r#"{"op":"sub","ch":"private:c","ref":4}"#);
    let (asked, _) = join_events(&mut s);
    s.decide_join(now, asked[0], JoinDecision::forbidden());
    ann.pump(&mut s, now);
    assert!(ann.texts()[0].starts_with(r#"{"op":"err","ref":4,"code":"forbidden""#));
    ann.send(&mut s, now, r#"{"op":"sub","ch":"private:d"}"#);
    ann.ws.close(now, crate::ws::CloseCode::NORMAL, "").unwrap();
    ann.pump(&mut s, now);
    assert_eq!(s.hub().pending_joins(), 0);
    assert!(s.is_drained());
    assert!(s.violations().is_empty(), "{:?}", s.violations());
}

#[test]
fn shutdown_refuses_requests_whose_join_waits() {
    let now = crate::time::test_epoch();
    let mut s = deferring();
    open(&mut s, now, 1, "GET /events?ch=private:a&token=user:ann HTTP/1.1\r\n\r\n");
    open(&mut s, now, 2, "GET /poll?ch=private:a&token=user:ann HTTP/1.1\r\n\r\n");
    s.shutdown(now, Duration::from_secs(1));
    for conn in [1, 2] {
        let (out, ended) = text(&mut s, now, conn);
        assert_eq!((status(&out), ended), (503, true), "{out}");
    }
    assert!(s.is_drained());
    assert!(s.violations().is_empty(), "{:?}", s.violations());
}

#[test]
fn a_batch_is_bounded_and_says_when_the_connection_ended() {
    let now = crate::time::test_epoch();
    let mut s = server();
    let conn = ConnHandle(1);
    s.handle_accept(now, conn);
    s.handle_read(now, conn, b"GET /events?ch=public:a HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut out = std::collections::VecDeque::new();
    assert!(!s.poll_batch(now, conn, &mut out, usize::MAX));
    let head: Vec<u8> = out.drain(..).flat_map(|b| b.to_vec()).collect();
    assert_eq!(status(&String::from_utf8_lossy(&head)), 200);
    for n in 0..3 {
        s.publish(now, "public:a", format!("{{\"n\":{n}}}").as_bytes()).unwrap();
    }
    // A bound of one byte takes one chunk; the rest waits for the next batch.
    assert!(!s.poll_batch(now, conn, &mut out, 1));
    assert_eq!(out.len(), 1);
    assert!(!s.poll_batch(now, conn, &mut out, usize::MAX));
    let events: Vec<u8> = out.drain(..).flat_map(|b| b.to_vec()).collect();
    assert_eq!(String::from_utf8_lossy(&events).matches("data: {\"n\":").count(), 3);
    // The end: what was said last, then `true`.
    s.shutdown(now, Duration::from_secs(1));
    let mut ended = false;
    for _ in 0..4 {
        ended |= s.poll_batch(now, conn, &mut out, usize::MAX);
    }
    assert!(ended);
    assert!(!s.has_connection(conn));
}
