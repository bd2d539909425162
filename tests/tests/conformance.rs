//! One conformance suite of the adapters' public API, run against `tidewire-std` and
//! `tidewire-smol` alike (the [`e2e::Backend`] interface), so that the two cannot drift:
//! every scenario looks at the bytes on the wire with one raw HTTP client and one
//! WebSocket client.
//!
//! - the refusals of the hub's routes and of the application's (one status each: 400, 401
//!   with `WWW-Authenticate: Bearer`, 403, 404, 405 with `Allow`, 413, 426, 431, 502 from
//!   an `Authenticate` policy) and the `Refused` events the handle reports;
//! - a publish over HTTP (`{"ep":..,"off":..}`), polls (`ETag`, `If-None-Match` → 304, a
//!   long poll held until the next publish, a gone position → `recovered:false`) and an
//!   event stream resumed from `Last-Event-ID`;
//! - a request that carries a cookie from a foreign `Origin` is refused with 403 on the
//!   WebSocket, SSE and publish routes, a same-origin one (or one from an allowed origin,
//!   or one without a cookie) is accepted;
//! - graceful shutdown: 1001 to the hub's and the application's WebSockets, event streams
//!   ended, held polls answered, the port released;
//! - the handle's view of the hub (presence, head, stats, connections, events), and its
//!   `publish`, `submit` and `publish_once`, which mean the same in both adapters;
//! - `response_headers` (CORS) on every hub response;
//! - joins and publishes the application decides through the handle: a WebSocket `sub` an
//!   `Authorize` policy defers (`JoinRequested`, `decide_join`) gets `subscribed` and what
//!   was published meanwhile once; a deferred event stream refused with a code gets 403
//!   with the code as body; vetted publishes (`PublishRequested`, `decide_publish`), over
//!   the WebSocket and over HTTP, refused (`err` with the code / 403) and accepted (`ack` /
//!   200 with the position, delivered to a subscriber, the refused ones never);
//! - a binary frame on the hub's WebSocket closes it with 1003;
//! - a plain server (`Server::bind`, no hub route) hands every upgrade to the application
//!   and answers other requests 404;
//! - the same scripted scenario ([`e2e::script::SCRIPT`]) gives the same deliveries,
//!   statuses, presence and head through the deterministic simulation (the core `Server` on
//!   the simulated network) and through each adapter over loopback.

#[macro_use]
mod e2e;

use std::collections::BTreeSet;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use e2e::http::{self, Answer, open_stream, read_stream, sse_data, sse_ids};
use e2e::scenario::{Instance, hub_config};
use e2e::script::{Loopback, SimStage, play};
use e2e::smol_adapter::Smol;
use e2e::std_adapter::Std;
use e2e::{Backend, Spec, Ws, settle, within};
use tidewire::client::wire::ServerFrame;
use tidewire::hub::{HubConfig, HubEvent, JoinDecision, JoinRefusal, PublishDecision, PublishId};
use tidewire::replay::Position;
use tidewire::server::ServerEvent;
use tidewire::ws::CloseCode;

const ANN: &str = "token=user%3Aann";

fn start<B: Backend>(spec: &Spec) -> Instance<B> {
    Instance::start(spec, "127.0.0.1:0")
}

/// A WebSocket upgrade head for `path` with `extra` header lines.
fn upgrade_head(addr: SocketAddr, path: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
}

/// The position in a publish's answer `{"ep":"E","off":N}`.
fn position_of(a: &Answer) -> Position {
    let t = a.text();
    let ep = t.split("\"ep\":\"").nth(1).and_then(|r| r.split('"').next()).expect("ep");
    let off = t
        .split("\"off\":")
        .nth(1)
        .and_then(|r| r.trim_end_matches(['}', '\n']).parse::<u64>().ok());
    format!("{ep}:{}", off.expect("off")).parse().expect("a position")
}

/// A hub WebSocket of `user`, subscribed to `ch` (the `subscribed` frame read).
fn member<B: Backend>(addr: SocketAddr, user: &str, ch: &str) -> B::Ws {
    let mut ws = B::ws(&format!("ws://{addr}/ws?token=user%3A{user}")).expect("upgrade");
    ws.send_text(&format!(r#"{{"op":"sub","ch":"{ch}"}}"#));
    loop {
        let m = ws.recv(Duration::from_secs(5)).expect("subscribed");
        match ServerFrame::decode(&m).unwrap() {
            ServerFrame::Subscribed { .. } => return ws,
            ServerFrame::Presence { .. } => {}
            other => panic!("{other:?}"),
        }
    }
}

// ----------------------------------------------------------------------------------------

fn refusals_share_one_status_map<B: Backend + 'static>() {
    within(60, || {
        let spec = Spec::new(hub_config());
        let inst = start::<B>(&spec);
        let addr = inst.addr;
        while B::next_event(&inst.hub).is_some() {}
        let cases: &[(&str, &str, u16)] = &[
            ("GET", "/app/nothing", 404),
            ("GET", "/app/hello", 200),
            ("POST", "/events?ch=public:news", 405),
            ("POST", "/poll?ch=public:news", 405),
            ("GET", "/api/publish?ch=chat:x", 405),
            ("GET", "/ws", 426),
            ("GET", "/events", 400),
            ("GET", "/events?ch=chat:x&token=bad", 401),
            ("GET", "/events?ch=chat:x", 403),
            ("GET", "/events?ch=secret:x&token=user%3Aann", 403),
            ("GET", "/poll?ch=public:news&pos=garbage", 400),
            ("GET", "/poll?ch=chat:x&token=bad", 401),
            ("POST", "/api/publish?ch=public:news&token=user%3Aann", 403),
            ("POST", "/api/publish?ch=chat:x&token=bad", 401),
        ];
        for &(method, path, want) in cases {
            let a = if method == "GET" {
                http::get(addr, path, "")
            } else {
                http::post(addr, path, "", b"{}")
            };
            assert_eq!(a.status, want, "{} {method} {path}: {a:?}", B::NAME);
            match want {
                401 => assert_eq!(a.header("www-authenticate"), Some("Bearer"), "{path}"),
                405 if method == "POST" => assert_eq!(a.header("allow"), Some("GET"), "{path}"),
                405 => assert_eq!(a.header("allow"), Some("POST"), "{path}"),
                200 => assert_eq!(a.text(), "app\n"),
                _ => {}
            }
        }
        // A body that is not JSON, one over the bound, a head over the bound.
        let a = http::post(addr, &format!("/api/publish?ch=chat:x&{ANN}"), "", b"not json");
        assert_eq!(a.status, 400, "{a:?}");
        let head = format!(
            "POST /api/publish?ch=chat:x&{ANN} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 100000\r\n\r\n"
        );
        assert_eq!(http::request(addr, &head, b"").status, 413);
        let big = format!("X-Pad: {}\r\n", "p".repeat(20 << 10));
        assert_eq!(http::get(addr, "/events?ch=public:news", &big).status, 431);
        // WebSocket upgrades: a bad token, an application path the handler refuses.
        assert_eq!(B::ws(&format!("ws://{addr}/ws?token=bad")).err(), Some(401));
        assert_eq!(B::ws(&format!("ws://{addr}/elsewhere")).err(), Some(404));
        // An `Authenticate` policy refuses with its own status (a proxy's 502).
        spec.gates.block(true, true);
        assert_eq!(B::ws(&format!("ws://{addr}/ws?{ANN}")).err(), Some(502));
        let a = http::get(addr, "/events?ch=public:news", "");
        assert_eq!((a.status, a.text().as_str()), (502, "blocked\n"));
        assert_eq!(http::get(addr, "/poll?ch=public:news", "").status, 200);
        spec.gates.block(false, false);

        // The handle reported the server's own refusals (not the application's 404).
        let mut refused = BTreeSet::new();
        while let Some(ev) = B::next_event(&inst.hub) {
            if let ServerEvent::Refused { status, .. } = ev {
                refused.insert(status);
            }
        }
        let want: BTreeSet<u16> = [400, 401, 403, 405, 413, 426, 431, 502].into();
        assert_eq!(refused, want, "{}", B::NAME);
        // Nothing was left behind in the hub but the polling client of the one answered
        // poll (kept between polls until it expires).
        assert!(settle(|| B::hub_connections(&inst.hub) <= 1), "{}", B::hub_connections(&inst.hub));
        assert_eq!(B::stats(&inst.hub).published, 0);
    });
}

fn publish_poll_and_resume<B: Backend + 'static>() {
    within(60, || {
        let inst = start::<B>(&Spec::new(hub_config()));
        let addr = inst.addr;
        let ch = "chat:x";
        let a = http::post(addr, &format!("/api/publish?ch={ch}&{ANN}"), "", br#"{"i":1}"#);
        assert_eq!(a.status, 200, "{a:?}");
        assert_eq!(a.header("content-type"), Some("application/json"));
        let p1 = position_of(&a);
        assert_eq!(p1.offset, 1);
        let p2 = B::publish(&inst.hub, ch, r#"{"i":2}"#);
        let p3 = B::publish(&inst.hub, ch, r#"{"i":3}"#);
        assert_eq!((p2.epoch, p2.offset, p3.offset), (p1.epoch, 2, 3));
        assert_eq!(B::head(&inst.hub, ch), Some(p3));
        assert_eq!(B::stats(&inst.hub).published, 3);

        // A poll from p1: the two after it, the head as ETag; again with it: 304.
        let a = http::get(addr, &format!("/poll?ch={ch}&pos={p1}&{ANN}"), "");
        assert_eq!(a.status, 200, "{a:?}");
        let body = a.text();
        assert!(body.contains(r#""recovered":true"#), "{body}");
        assert!(body.contains(r#""data":{"i":2}"#) && body.contains(r#""data":{"i":3}"#), "{body}");
        assert!(!body.contains(r#"{"i":1}"#), "{body}");
        let etag = a.header("etag").expect("an ETag").to_owned();
        assert_eq!(etag, format!("\"{p3}\""));
        let a = http::get(
            addr,
            &format!("/poll?ch={ch}&pos={p3}&{ANN}"),
            &format!("If-None-Match: {etag}\r\n"),
        );
        assert_eq!(a.status, 304, "{a:?}");

        // A long poll at the head is held until the next publish.
        let path = format!("/poll?ch={ch}&pos={p3}&wait=1&{ANN}");
        let t = Instant::now();
        let held = thread::spawn(move || http::get(addr, &path, ""));
        thread::sleep(Duration::from_millis(300));
        assert!(!held.is_finished(), "the long poll was answered at once");
        let p4 = B::publish(&inst.hub, ch, r#"{"i":4}"#);
        let a = held.join().unwrap();
        assert_eq!(a.status, 200, "{a:?}");
        assert!(a.text().contains(r#""data":{"i":4}"#), "{}", a.text());
        assert!(t.elapsed() >= Duration::from_millis(250));

        // A position of another epoch is gone: recovered:false, the head, no events.
        let gone = Position { epoch: tidewire::replay::Epoch(p1.epoch.0 ^ 1), offset: 1 };
        let a = http::get(addr, &format!("/poll?ch={ch}&pos={gone}&{ANN}"), "");
        assert_eq!(a.status, 200, "{a:?}");
        assert!(a.text().contains(r#""recovered":false"#), "{}", a.text());
        assert!(a.text().contains(&format!(r#""pos":"{p4}""#)), "{}", a.text());

        // An event stream resumed from Last-Event-ID gets exactly what followed, then live.
        let (mut s, head) = open_stream(
            addr,
            &format!("/events?ch={ch}&{ANN}"),
            &format!("Last-Event-ID: {p2}\r\n"),
        );
        assert_eq!(head.status, 200, "{head:?}");
        assert_eq!(
            head.header("content-type").map(|c| c.split(';').next().unwrap_or(c).trim()),
            Some("text/event-stream")
        );
        let text = String::from_utf8_lossy(&head.body).into_owned();
        let (text, _) =
            read_stream(&mut s, text, Duration::from_secs(5), |t| sse_ids(t).len() >= 2);
        assert_eq!(sse_ids(&text), [p3.to_string(), p4.to_string()], "{text}");
        let p5 = B::publish(&inst.hub, ch, r#"{"i":5}"#);
        let (text, ended) =
            read_stream(&mut s, text, Duration::from_secs(5), |t| sse_ids(t).len() >= 3);
        assert!(!ended);
        assert_eq!(sse_ids(&text).last(), Some(&p5.to_string()));
        // (Presence frames of the stream's own member come as events without an id.)
        let data: Vec<String> =
            sse_data(&text).into_iter().filter(|d| d.starts_with(r#"{"i""#)).collect();
        assert_eq!(data, [r#"{"i":3}"#, r#"{"i":4}"#, r#"{"i":5}"#]);
    });
}

fn cross_origin_cookie_is_refused<B: Backend + 'static>() {
    within(60, || {
        let inst = start::<B>(&Spec::new(hub_config()));
        let addr = inst.addr;
        let foreign = "Origin: http://evil.example\r\nCookie: sid=1\r\n";
        let own = format!("Origin: http://{addr}\r\nCookie: sid=1\r\n");
        let no_cookie = "Origin: http://evil.example\r\n";

        // The event stream.
        let sse = "/events?ch=public:news";
        assert_eq!(http::get(addr, sse, foreign).status, 403, "{}", B::NAME);
        assert_eq!(open_stream(addr, sse, &own).1.status, 200, "{}", B::NAME);
        assert_eq!(open_stream(addr, sse, no_cookie).1.status, 200, "{}", B::NAME);

        // A publish.
        let publish = format!("/api/publish?ch=chat:x&{ANN}");
        assert_eq!(http::post(addr, &publish, foreign, b"{}").status, 403);
        assert_eq!(http::post(addr, &publish, &own, b"{}").status, 200);
        assert_eq!(B::head(&inst.hub, "chat:x").map(|p| p.offset), Some(1));

        // The hub's WebSocket.
        let ws = format!("/ws?{ANN}");
        let a = http::request(addr, &upgrade_head(addr, &ws, foreign), b"");
        assert_eq!(a.status, 403, "{a:?}");
        let a = http::request(addr, &upgrade_head(addr, &ws, &own), b"");
        assert_eq!(a.status, 101, "{a:?}");

        // An origin the server allows besides its own.
        let spec =
            Spec { allowed_origins: vec!["http://good.example".into()], ..Spec::new(hub_config()) };
        let other = start::<B>(&spec);
        let allowed = "Origin: http://good.example\r\nCookie: sid=1\r\n";
        assert_eq!(open_stream(other.addr, sse, allowed).1.status, 200);
        assert_eq!(http::get(other.addr, sse, foreign).status, 403);
    });
}

fn shutdown_closes_every_connection<B: Backend + 'static>() {
    within(60, || {
        let mut inst = start::<B>(&Spec::new(hub_config()));
        let addr = inst.addr;
        let hub_ws = member::<B>(addr, "ann", "chat:x");
        let mut app_ws = B::ws(&format!("ws://{addr}/app/echo")).expect("app upgrade");
        app_ws.send_text("ping");
        assert_eq!(app_ws.recv(Duration::from_secs(5)).unwrap(), b"ping");
        let (mut sse, head) = open_stream(addr, "/events?ch=public:news", "");
        assert_eq!(head.status, 200);
        let p = B::publish(&inst.hub, "public:news", r#"{"i":0}"#);
        let held = thread::spawn(move || {
            http::get(addr, &format!("/poll?ch=public:news&pos={p}&wait=1"), "")
        });
        assert!(settle(|| B::hub_connections(&inst.hub) >= 2));
        thread::sleep(Duration::from_millis(200));

        // Every client reads on (and answers the close handshake) while the server stops.
        let until_closed = |mut ws: B::Ws| {
            thread::spawn(move || {
                loop {
                    if let Err(code) = ws.recv(Duration::from_secs(5)) {
                        return code;
                    }
                }
            })
        };
        let (hub_ws, app_ws) = (until_closed(hub_ws), until_closed(app_ws));
        let sse = thread::spawn(move || {
            read_stream(&mut sse, String::new(), Duration::from_secs(5), |_| false).1
        });
        let server = inst.server.take().expect("running");
        let report = B::stop_within(server, Duration::from_secs(3));
        assert_eq!(report.dropped, 0, "{}: {report:?}", B::NAME);
        assert!(report.closed >= 1, "{}: {report:?}", B::NAME);

        assert_eq!(hub_ws.join().unwrap(), Some(CloseCode::GOING_AWAY), "hub WebSocket");
        assert_eq!(app_ws.join().unwrap(), Some(CloseCode::GOING_AWAY), "app WebSocket");
        assert!(sse.join().unwrap(), "the event stream was not ended");
        let a = held.join().unwrap();
        assert!(matches!(a.status, 200 | 503), "{a:?}");
        // The port is free: nothing answers any more.
        assert!(TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err());
    });
}

fn the_handle_reports_the_hub<B: Backend + 'static>() {
    within(60, || {
        let inst = start::<B>(&Spec::new(hub_config()));
        let addr = inst.addr;
        while B::next_event(&inst.hub).is_some() {}
        assert_eq!((B::hub_connections(&inst.hub), B::bus_is_up(&inst.hub)), (0, false));
        let _ann = member::<B>(addr, "ann", "chat:room");
        let _bob = member::<B>(addr, "bob", "chat:room");
        assert_eq!(B::presence(&inst.hub, "chat:room"), ["ann", "bob"]);
        assert_eq!(B::hub_connections(&inst.hub), 2);
        assert!(B::connections(&inst.hub) >= 2);
        let mut joined = Vec::new();
        let end = Instant::now() + Duration::from_secs(5);
        while joined.len() < 2 && Instant::now() < end {
            if let Some(ServerEvent::Hub(HubEvent::Joined { ch, member })) =
                B::wait_event(&inst.hub, Duration::from_millis(200))
            {
                assert_eq!(&*ch, "chat:room");
                joined.push(member.to_string());
            }
        }
        assert_eq!(joined, ["ann", "bob"], "{}", B::NAME);
        assert_eq!(B::head(&inst.hub, "chat:room").map(|p| p.offset), Some(0));
        assert_eq!(B::head(&inst.hub, "chat:nobody"), None);
        let before = B::stats(&inst.hub).published;
        B::publish(&inst.hub, "chat:room", r#"{"i":1}"#);
        assert_eq!(B::stats(&inst.hub).published, before + 1);
        // A bad publish is refused by the hub, with its error.
        assert!(B::try_publish(&inst.hub, "chat:room", "not json").is_err());
    });
}

fn a_binary_frame_on_the_hub_closes_1003<B: Backend + 'static>() {
    within(30, || {
        let inst = start::<B>(&Spec::new(hub_config()));
        let mut ws = member::<B>(inst.addr, "ann", "chat:x");
        ws.send_binary(br#"{"op":"pub","ch":"chat:x","data":{}}"#);
        let code = loop {
            match ws.recv(Duration::from_secs(5)) {
                Ok(_) => {}
                Err(code) => break code,
            }
        };
        assert_eq!(code, Some(CloseCode::UNSUPPORTED_DATA), "{}", B::NAME);
        assert!(settle(|| B::hub_connections(&inst.hub) == 0));
    });
}

fn a_plain_server_hands_everything_to_the_app<B: Backend + 'static>() {
    within(30, || {
        let server = B::serve_plain_echo();
        let h = B::handle(&server);
        let addr = B::addr(&h);
        // No hub route: `/ws` is the application's like any other path.
        for path in ["/ws", "/", "/anything?x=1"] {
            let mut ws = B::ws(&format!("ws://{addr}{path}")).expect("upgrade");
            ws.send_text("hello");
            assert_eq!(ws.recv(Duration::from_secs(5)).unwrap(), b"hello", "{path}");
        }
        // `serve()` has no HTTP handler: 404.
        assert_eq!(http::get(addr, "/events?ch=public:news", "").status, 404, "{}", B::NAME);
        assert_eq!(B::hub_connections(&h), 0);
        let report = B::stop_within(server, Duration::from_secs(2));
        assert_eq!(report.dropped, 0);
    });
}

/// `publish`, `submit` and `publish_once` of the handle mean the same in both adapters
/// without Redis: each appends (once per id) and answers the position.
fn the_handle_publishes_the_same_way<B: Backend + 'static>() {
    within(30, || {
        let inst = start::<B>(&Spec::new(hub_config()));
        let h = &inst.hub;
        let p1 = B::handle_publish(h, "chat:p", r#"{"i":1}"#);
        let p2 = B::handle_submit(h, "chat:p", r#"{"i":2}"#);
        let p3 = B::publish_once(h, "chat:p", "once", r#"{"i":3}"#);
        let again = B::publish_once(h, "chat:p", "once", r#"{"i":3}"#);
        let offsets = [&p1, &p2].map(|r| r.as_ref().ok().map(|p| p.offset));
        assert_eq!(offsets, [Some(1), Some(2)], "{}: publish {p1:?}, submit {p2:?}", B::NAME);
        assert_eq!((p3.offset, again), (3, p3), "{}", B::NAME);
        assert_eq!(B::head(h, "chat:p"), Some(p3));
        assert_eq!(
            B::handle_publish(h, "chat:p", "not json"),
            Err(tidewire::hub::HubError::BadJson)
        );
    });
}

/// `response_headers` (CORS) is on every hub response: the event stream, a poll, a publish.
fn response_headers_on_every_hub_response<B: Backend + 'static>() {
    within(30, || {
        let cors = ("Access-Control-Allow-Origin".to_owned(), "*".to_owned());
        let spec = Spec { response_headers: vec![cors], ..Spec::new(hub_config()) };
        let inst = start::<B>(&spec);
        let addr = inst.addr;
        let answers = [
            open_stream(addr, "/events?ch=public:news", "").1,
            http::get(addr, "/poll?ch=public:news", ""),
            http::post(addr, &format!("/api/publish?ch=chat:x&{ANN}"), "", b"{}"),
        ];
        for a in answers {
            assert_eq!(a.status, 200, "{a:?}");
            assert_eq!(a.header("access-control-allow-origin"), Some("*"), "{}: {a:?}", B::NAME);
        }
    });
}

// ----------------------------------------------------------------------------------------
// Joins and publishes the application decides (`decide_join`, `decide_publish`)

/// Waits (at most 5 s) for the hub event that `pick` takes, skipping every other event.
fn await_hub<B: Backend, T>(
    h: &B::Handle,
    what: &str,
    mut pick: impl FnMut(HubEvent) -> Option<T>,
) -> T {
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        let left = end.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "{}: no {what} within 5 s", B::NAME);
        if let Some(ServerEvent::Hub(ev)) = B::wait_event(h, left.min(Duration::from_millis(200)))
            && let Some(t) = pick(ev)
        {
            return t;
        }
    }
}

/// The next frame of a hub WebSocket that is not a presence frame, as text.
fn hub_frame(ws: &mut impl Ws) -> String {
    loop {
        let m = ws.recv(Duration::from_secs(5)).expect("a frame");
        let t = String::from_utf8(m).expect("a text frame");
        if !t.starts_with(r#"{"op":"presence""#) {
            return t;
        }
    }
}

/// The epoch of `p` as the wire writes it (`"ep"`).
fn ep(p: Position) -> String {
    p.to_string().rsplit_once(':').expect("E:off").0.to_owned()
}

/// A `msg` frame as the hub writes it (`from`: the publishing user, for client publishes).
fn msg_frame(ch: &str, p: Position, from: Option<&str>, data: &str) -> String {
    let from = from.map(|u| format!(r#","from":"{u}""#)).unwrap_or_default();
    format!(r#"{{"op":"msg","ch":"{ch}","ep":"{}","off":{}{from},"data":{data}}}"#, ep(p), p.offset)
}

fn deferring() -> Spec {
    Spec { defer_joins: Some("private:"), ..Spec::new(hub_config()) }
}

/// A WebSocket `sub` the policy defers: the application is asked (`JoinRequested`), the
/// connection goes on meanwhile, and once allowed the client gets `subscribed` and what was
/// published while the application decided, exactly once.
fn a_deferred_websocket_join_waits_for_the_app<B: Backend + 'static>() {
    within(10, || {
        let inst = start::<B>(&deferring());
        let h = &inst.hub;
        let mut ws = B::ws(&format!("ws://{}/ws?{ANN}", inst.addr)).expect("upgrade");
        ws.send_text(r#"{"op":"sub","ch":"private:a","ref":1}"#);
        let id = await_hub::<B, _>(h, "JoinRequested", |ev| match ev {
            HubEvent::JoinRequested { id, principal, ch, .. } => {
                assert_eq!((principal.user.as_deref(), &*ch), (Some("ann"), "private:a"));
                Some(id)
            }
            _ => None,
        });
        // Undecided: the connection goes on, and the channel sends nothing yet.
        ws.send_text(r#"{"op":"ping","ref":2}"#);
        assert_eq!(hub_frame(&mut ws), r#"{"op":"pong","ref":2}"#, "{}", B::NAME);
        assert!(B::presence(h, "private:a").is_empty());
        // Published while the application decides.
        let p1 = B::publish(h, "private:a", r#"{"i":1}"#);
        assert!(B::decide_join(h, id, JoinDecision::Allow), "{}", B::NAME);
        assert!(!B::decide_join(h, id, JoinDecision::Allow), "{}: decided twice", B::NAME);
        let sub = hub_frame(&mut ws);
        assert!(
            sub.starts_with(r#"{"op":"subscribed","ch":"private:a","recovered":true"#),
            "{}: {sub}",
            B::NAME
        );
        let decided = await_hub::<B, _>(h, "JoinDecided", |ev| match ev {
            HubEvent::JoinDecided { id: d, ch, result, .. } if d == id => {
                assert_eq!(&*ch, "private:a");
                Some(result)
            }
            _ => None,
        });
        assert!(decided.is_ok(), "{}: {decided:?}", B::NAME);
        let p2 = B::publish(h, "private:a", r#"{"i":2}"#);
        let mut msgs = Vec::new();
        while !msgs.last().is_some_and(|m: &String| m.ends_with(r#""data":{"i":2}}"#)) {
            msgs.push(hub_frame(&mut ws));
        }
        let want = [
            msg_frame("private:a", p1, None, r#"{"i":1}"#),
            msg_frame("private:a", p2, None, r#"{"i":2}"#),
        ];
        assert_eq!(msgs, want, "{}", B::NAME);
        assert_eq!((p1.offset, p2.offset), (1, 2));
        assert_eq!(B::presence(h, "private:a"), ["ann"]);
    });
}

/// A deferred event stream: no response head until the application decides; refused with a
/// code, `403` with the code as the body.
fn a_deferred_event_stream_refused_is_403_with_the_code<B: Backend + 'static>() {
    within(10, || {
        let inst = start::<B>(&deferring());
        let (h, addr) = (&inst.hub, inst.addr);
        let mut s = TcpStream::connect(addr).expect("connect");
        let head = format!(
            "GET /events?ch=private:a&{ANN} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n"
        );
        s.write_all(head.as_bytes()).unwrap();
        let id = await_hub::<B, _>(h, "JoinRequested", |ev| match ev {
            HubEvent::JoinRequested { id, principal, ch, .. } => {
                assert_eq!((principal.user.as_deref(), &*ch), (Some("ann"), "private:a"));
                Some(id)
            }
            _ => None,
        });
        // Nothing was written while the join waits.
        s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let mut byte = [0u8; 1];
        match s.read(&mut byte) {
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            other => panic!("{}: the stream answered before the decision: {other:?}", B::NAME),
        }
        let refusal = JoinDecision::Refuse { code: "not_yours".into() };
        assert!(B::decide_join(h, id, refusal), "{}", B::NAME);
        let a = http::read_answer(&mut s, Duration::from_secs(5), None);
        assert_eq!((a.status, a.text().as_str()), (403, "not_yours\n"), "{}: {a:?}", B::NAME);
        let decided = await_hub::<B, _>(h, "JoinDecided", |ev| match ev {
            HubEvent::JoinDecided { id: d, result, .. } if d == id => Some(result),
            _ => None,
        });
        assert_eq!(decided, Err(JoinRefusal::Refused { code: "not_yours".into() }), "{}", B::NAME);
        assert!(!B::decide_join(h, id, JoinDecision::Allow), "{}: decided twice", B::NAME);
        assert!(B::presence(h, "private:a").is_empty());
    });
}

/// The `PublishRequested` of a vetted publish of `user` to `ch` with `data`: its id.
fn publish_requested<B: Backend>(h: &B::Handle, user: &str, ch: &str, data: &str) -> PublishId {
    await_hub::<B, _>(h, "PublishRequested", |ev| match ev {
        HubEvent::PublishRequested { id, principal, ch: c, data: d, .. } => {
            assert_eq!(
                (principal.user.as_deref(), &*c, &d[..]),
                (Some(user), ch, data.as_bytes()),
                "{}",
                B::NAME
            );
            Some(id)
        }
        _ => None,
    })
}

/// Vetted publishes (`vet_publishes`), over the WebSocket and over HTTP: a refused one is
/// answered with the application's code and never delivered, an accepted one is
/// acknowledged with its position and delivered once.
fn vetted_publishes_wait_for_the_app<B: Backend + 'static>() {
    within(10, || {
        let inst = start::<B>(&Spec::new(HubConfig { vet_publishes: true, ..hub_config() }));
        let (h, addr) = (&inst.hub, inst.addr);
        let ch = "chat:v";
        let mut bob = member::<B>(addr, "bob", ch);
        let mut ann = B::ws(&format!("ws://{addr}/ws?{ANN}")).expect("upgrade");

        // Over the WebSocket: refused, then accepted.
        ann.send_text(r#"{"op":"pub","ch":"chat:v","data":{"i":1},"ref":1}"#);
        let refused = publish_requested::<B>(h, "ann", ch, r#"{"i":1}"#);
        assert_eq!(B::head(h, ch).map(|p| p.offset), Some(0), "{}: held, not logged", B::NAME);
        assert!(B::decide_publish(h, refused, PublishDecision::Refuse { code: "spam".into() }));
        assert_eq!(
            hub_frame(&mut ann),
            r#"{"op":"err","ref":1,"code":"spam","msg":"refused by the application"}"#,
            "{}",
            B::NAME
        );
        ann.send_text(r#"{"op":"pub","ch":"chat:v","data":{"i":2},"ref":2}"#);
        let accepted = publish_requested::<B>(h, "ann", ch, r#"{"i":2}"#);
        assert!(B::decide_publish(h, accepted, PublishDecision::Accept), "{}", B::NAME);
        assert!(!B::decide_publish(h, refused, PublishDecision::Accept), "{}", B::NAME);
        assert!(!B::decide_publish(h, accepted, PublishDecision::Accept), "{}", B::NAME);
        let p1 = B::head(h, ch).expect("a head");
        assert_eq!(p1.offset, 1, "{}", B::NAME);
        assert_eq!(
            hub_frame(&mut ann),
            format!(r#"{{"op":"ack","ref":2,"ep":"{}","off":1}}"#, ep(p1)),
            "{}",
            B::NAME
        );
        assert_eq!(
            hub_frame(&mut bob),
            msg_frame(ch, p1, Some("ann"), r#"{"i":2}"#),
            "{}",
            B::NAME
        );

        // Over HTTP: the request is held until the decision.
        let path = format!("/api/publish?ch={ch}&{ANN}");
        let post = |body: &'static [u8]| {
            let path = path.clone();
            thread::spawn(move || http::post(addr, &path, "", body))
        };
        let held = post(br#"{"i":3}"#);
        let refused = publish_requested::<B>(h, "ann", ch, r#"{"i":3}"#);
        assert!(B::decide_publish(h, refused, PublishDecision::Refuse { code: "spam".into() }));
        let a = held.join().unwrap();
        assert_eq!((a.status, a.text().as_str()), (403, "spam\n"), "{}: {a:?}", B::NAME);
        let held = post(br#"{"i":4}"#);
        let accepted = publish_requested::<B>(h, "ann", ch, r#"{"i":4}"#);
        assert!(B::decide_publish(h, accepted, PublishDecision::Accept), "{}", B::NAME);
        let a = held.join().unwrap();
        assert_eq!(a.status, 200, "{}: {a:?}", B::NAME);
        let p2 = position_of(&a);
        assert_eq!((p2.epoch, p2.offset), (p1.epoch, 2), "{}", B::NAME);
        // The subscriber gets the accepted one next: the refused ones never came.
        assert_eq!(
            hub_frame(&mut bob),
            msg_frame(ch, p2, Some("ann"), r#"{"i":4}"#),
            "{}",
            B::NAME
        );
        assert_eq!(B::head(h, ch), Some(p2));
        assert_eq!(B::stats(h).published, 2, "{}", B::NAME);
    });
}

in_both_adapters!(
    a_deferred_websocket_join_waits_for_the_app,
    a_deferred_event_stream_refused_is_403_with_the_code,
    vetted_publishes_wait_for_the_app,
    response_headers_on_every_hub_response,
    the_handle_publishes_the_same_way,
    refusals_share_one_status_map,
    publish_poll_and_resume,
    cross_origin_cookie_is_refused,
    shutdown_closes_every_connection,
    the_handle_reports_the_hub,
    a_binary_frame_on_the_hub_closes_1003,
    a_plain_server_hands_everything_to_the_app,
);

// ----------------------------------------------------------------------------------------
// The same script through the simulation and each adapter

/// The simulation's seed (a failure names it).
const SEED: u64 = 14;

#[test]
fn the_same_script_gives_the_same_deliveries_in_the_simulation_and_both_adapters() {
    within(90, || {
        let spec = Spec::new(hub_config());
        let sim = play(&mut SimStage::new(SEED, &spec));
        // Every client got every message once, in publish order, at consecutive offsets.
        let want: Vec<(u64, String)> =
            (0..12).map(|i| (i + 1, format!(r#"{{"i":{i}}}"#))).collect();
        for (t, got) in &sim.deliveries {
            assert_eq!(got, &want, "sim (seed {SEED}) {t:?}");
        }
        assert_eq!(sim.statuses, [200, 200, 200, 403, 403, 426, 405], "seed {SEED}");
        assert_eq!(sim.presence, ["ann", "bob", "cy"], "seed {SEED}");
        assert_eq!(sim.head, Some(12), "seed {SEED}");
        let std = play(&mut Loopback::<Std>::new(&spec));
        assert_eq!(std, sim, "std against the simulation (seed {SEED})");
        let smol = play(&mut Loopback::<Smol>::new(&spec));
        assert_eq!(smol, sim, "smol against the simulation (seed {SEED})");
    });
}
