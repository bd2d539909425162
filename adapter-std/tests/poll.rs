//! The core server's `/poll` route end to end over loopback (first request, catch-up,
//! `If-None-Match`, long polls answered by a publish or by their deadline, bad requests,
//! shutdown), plus the plain HTTP surface of `serve_with`: requests handed over to the
//! application, request bodies, and `serve`'s 404 to a request that is not an upgrade.

mod common;

use std::io::Write as _;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{TestServer, fetch, raw, read_to_end_lossy, settle, within};
use tidewire_std::tidewire::replay::Position;
use tidewire_std::{HttpRequest, Message, ServerConfig, Upgrade};

fn echo_ws(up: Upgrade) {
    common::echo(up);
}

/// A hub server; `/poll` is the core's. Returns it and a handle to publish with.
fn start(cfg: ServerConfig) -> (TestServer, tidewire_std::ServerHandle) {
    let server = TestServer::hub(cfg);
    let hub = server.handle.clone();
    (server, hub)
}

/// Polls the core server holds.
fn held(hub: &tidewire_std::ServerHandle) -> usize {
    hub.inspect(|s| {
        s.describe_connections().iter().filter(|(_, what)| what.starts_with("held poll")).count()
    })
}

/// `pos` of a polling response body.
fn pos_of(body: &str) -> Position {
    let start = body.find("\"pos\":\"").expect("pos") + 7;
    body[start..].split('"').next().unwrap().parse().unwrap()
}

#[test]
fn first_request_catch_up_and_not_modified() {
    within(10, || {
        let (server, hub) = start(ServerConfig::default());
        let first = hub.publish("public:ticks", "{\"n\":1}").unwrap();
        // A first request learns the head, and no events.
        let (status, head, body) = fetch(server.addr, "/poll?ch=public:ticks", "");
        assert_eq!(status, 200, "{head}");
        assert!(head.contains("Content-Type: application/json"), "{head}");
        assert!(head.contains(&format!("ETag: \"{first}\"")), "{head}");
        assert_eq!(
            body,
            format!(
                "{{\"ch\":\"public:ticks\",\"pos\":\"{first}\",\"recovered\":true,\"events\":[]}}"
            )
        );

        // Catch up from there.
        let p2 = hub.publish("public:ticks", "{\"n\":2}").unwrap();
        let p3 = hub.publish("public:ticks", "{\"n\":3}").unwrap();
        let (status, _, body) =
            fetch(server.addr, &format!("/poll?ch=public:ticks&pos={first}"), "");
        assert_eq!(status, 200);
        let ep = first.epoch;
        assert_eq!(
            body,
            format!(
                "{{\"ch\":\"public:ticks\",\"pos\":\"{p3}\",\"recovered\":true,\"events\":[\
                 {{\"ep\":\"{ep}\",\"off\":{},\"data\":{{\"n\":2}}}},\
                 {{\"ep\":\"{ep}\",\"off\":{},\"data\":{{\"n\":3}}}}]}}",
                p2.offset, p3.offset
            )
        );

        // Nothing new since the ETag: 304.
        let (status, head, body) =
            fetch(server.addr, "/poll?ch=public:ticks", &format!("If-None-Match: \"{p3}\"\r\n"));
        assert_eq!(status, 304, "{head}");
        assert!(body.is_empty());
        assert!(settle(|| held(&hub) == 0));
    });
}

#[test]
fn a_gone_position_is_not_recovered() {
    within(10, || {
        let mut cfg = ServerConfig::default();
        cfg.endpoint.hub.log.max_count = 2;
        let (server, hub) = start(cfg);
        let p: Vec<Position> =
            (1..=5).map(|n| hub.publish("public:ticks", format!("{n}")).unwrap()).collect();
        let (status, _, body) =
            fetch(server.addr, &format!("/poll?ch=public:ticks&pos={}", p[0]), "");
        assert_eq!(status, 200);
        assert_eq!(
            body,
            format!(
                "{{\"ch\":\"public:ticks\",\"pos\":\"{}\",\"recovered\":false,\"events\":[]}}",
                p[4]
            )
        );
    });
}

#[test]
fn a_long_poll_is_held_until_a_publish() {
    within(10, || {
        let (server, hub) = start(ServerConfig::default());
        let head = hub.publish("public:ticks", "0").unwrap();
        let addr = server.addr;
        let path = format!("/poll?ch=public:ticks&pos={head}&wait=1");
        let waiting = std::thread::spawn(move || {
            let start = Instant::now();
            (fetch(addr, &path, ""), start.elapsed())
        });
        assert!(settle(|| held(&hub) == 1), "the poll is held");
        std::thread::sleep(Duration::from_millis(100));
        let p = hub.publish("public:ticks", "{\"n\":1}").unwrap();
        let ((status, _, body), took) = waiting.join().unwrap();
        assert_eq!(status, 200);
        assert_eq!(pos_of(&body), p);
        assert!(body.contains("\"data\":{\"n\":1}"), "{body}");
        assert!(took >= Duration::from_millis(100), "{took:?}");
        assert!(settle(|| held(&hub) == 0));
    });
}

#[test]
fn a_long_poll_times_out_with_nothing_new() {
    within(10, || {
        let mut cfg = ServerConfig::default();
        cfg.endpoint.poll.long_poll = Duration::from_millis(300);
        let (server, hub) = start(cfg);
        let head = hub.publish("public:ticks", "0").unwrap();
        // A publish on another channel does not answer it.
        let other = hub.clone();
        let noise = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            other.publish("public:other", "1").unwrap();
        });
        let start = Instant::now();
        let (status, _, body) =
            fetch(server.addr, &format!("/poll?ch=public:ticks&pos={head}&wait=1"), "");
        let took = start.elapsed();
        noise.join().unwrap();
        assert_eq!(status, 200);
        assert_eq!(
            body,
            format!(
                "{{\"ch\":\"public:ticks\",\"pos\":\"{head}\",\"recovered\":true,\"events\":[]}}"
            )
        );
        assert!(took >= Duration::from_millis(280) && took < Duration::from_secs(2), "{took:?}");
        // Conditional: 304 at the deadline.
        let (status, _, _) = fetch(
            server.addr,
            "/poll?ch=public:ticks&wait=1",
            &format!("If-None-Match: \"{head}\"\r\n"),
        );
        assert_eq!(status, 304);
        assert!(settle(|| held(&hub) == 0));
    });
}

#[test]
fn bad_requests_get_400() {
    within(10, || {
        let (server, hub) = start(ServerConfig::default());
        for path in [
            "/poll?ch=public:ticks&pos=zzz",
            "/poll?ch=public:ticks&pos=1:x",
            "/poll?pos=a1:1",
            "/poll",
        ] {
            let (status, head, _) = fetch(server.addr, path, "");
            assert_eq!(status, 400, "{path}: {head}");
        }
        let (status, _, _) =
            fetch(server.addr, "/poll?ch=public:ticks", "If-None-Match: \"nope\"\r\n");
        assert_eq!(status, 400);
        let long = "c".repeat(1000);
        let (status, _, _) = fetch(server.addr, &format!("/poll?ch={long}"), "");
        assert_eq!(status, 400, "a channel name over HubConfig::max_channel_name");
        assert!(settle(|| held(&hub) == 0));
    });
}

#[test]
fn shutdown_answers_held_polls() {
    within(10, || {
        let (server, hub) = start(ServerConfig::default());
        let head = hub.publish("public:ticks", "0").unwrap();
        let addr = server.addr;
        let path = format!("/poll?ch=public:ticks&pos={head}&wait=1");
        let waiting = std::thread::spawn(move || fetch(addr, &path, ""));
        assert!(settle(|| held(&hub) == 1));
        let start = Instant::now();
        let report = server.stop(Duration::from_secs(2));
        assert!(start.elapsed() < Duration::from_secs(1), "{:?}", start.elapsed());
        assert_eq!((report.closed, report.dropped), (1, 0));
        let (status, _, body) = waiting.join().unwrap();
        assert_eq!(status, 200);
        assert_eq!(pos_of(&body), head);
        assert!(settle(|| held(&hub) == 0));
    });
}

#[test]
fn serve_with_routes_upgrades_to_ws_and_reads_bodies() {
    within(10, || {
        let server =
            TestServer::start_with(ServerConfig::default(), echo_ws, |mut req: HttpRequest| {
                // An error was answered by read_body (413, 400, 408).
                let Ok(body) = req.read_body(16) else { return };
                let mut out = format!("{} {} ", req.request().method(), req.request().path_only())
                    .into_bytes();
                out.extend_from_slice(&body);
                let peer = req.peer_addr().ip().to_string();
                let _ = req.respond(200, &[("X-Peer", &peer)], &out);
            });
        // WebSocket still works on the same port.
        let mut ws =
            tidewire_std::connect(&server.url("/ws"), tidewire_std::ClientOptions::default())
                .unwrap();
        ws.send("hi").unwrap();
        assert_eq!(ws.recv().unwrap(), Message::text("hi"));

        let post = |body: &str, extra: &str| {
            let mut s = raw(server.addr);
            write!(
                s,
                "POST /api?x=1 HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\n{extra}\r\n{body}",
                body.len()
            )
            .unwrap();
            String::from_utf8(read_to_end_lossy(&mut s)).unwrap()
        };
        let answer = post("hello", "");
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert!(answer.contains("X-Peer: 127.0.0.1\r\n"), "{answer}");
        assert!(answer.ends_with("\r\n\r\nPOST /api hello"), "{answer}");
        let answer = post("0123456789abcdefXYZ", "");
        assert!(answer.starts_with("HTTP/1.1 413 "), "{answer}");
        let answer = post("", "Transfer-Encoding: chunked\r\n");
        assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
        // 100-continue: the body follows the interim answer.
        let mut s = raw(server.addr);
        s.write_all(
            b"POST /c HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n",
        )
        .unwrap();
        let interim = common::read_head(&mut s).unwrap();
        assert!(interim.starts_with("HTTP/1.1 100 Continue"), "{interim}");
        s.write_all(b"abc").unwrap();
        let answer = String::from_utf8(read_to_end_lossy(&mut s)).unwrap();
        assert!(answer.ends_with("POST /c abc"), "{answer}");
        ws.close(tidewire_std::CloseCode::NORMAL, "").unwrap();
        common::recv_until_closed(&mut ws);
    });
}

#[test]
fn a_body_that_does_not_arrive_is_cut_off() {
    within(10, || {
        let mut cfg = ServerConfig::default();
        cfg.endpoint.head_timeout = Duration::from_millis(300);
        let (tx, rx) = mpsc::channel();
        let tx = std::sync::Mutex::new(tx);
        let server = TestServer::start_with(cfg, echo_ws, move |mut req: HttpRequest| {
            let result = req.read_body(1 << 20).map_err(|e| e.kind());
            let _ = tx.lock().unwrap().send(result);
        });
        let mut s = raw(server.addr);
        s.write_all(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nabc").unwrap();
        let answer = String::from_utf8(read_to_end_lossy(&mut s)).unwrap();
        assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
        assert_eq!(rx.recv().unwrap(), Err(std::io::ErrorKind::TimedOut));
    });
}

#[test]
fn a_request_moved_to_another_thread_reads_its_body_in_order() {
    // The handler returns at once; another thread reads the body while the connection's
    // own reader goes on: the pieces reach the core in order, through one reader at a time.
    within(10, || {
        let server = TestServer::start_with(ServerConfig::default(), echo_ws, |req| {
            std::thread::spawn(move || {
                let mut req: HttpRequest = req;
                if let Ok(body) = req.read_body(1 << 16) {
                    let _ = req.respond(200, &[], &body);
                }
            });
        });
        let body: String = (0..2000).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
        let mut s = raw(server.addr);
        write!(s, "POST /app HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\n\r\n", body.len())
            .unwrap();
        for piece in body.as_bytes().chunks(97) {
            s.write_all(piece).unwrap();
            std::thread::sleep(Duration::from_millis(2));
        }
        let answer = String::from_utf8(read_to_end_lossy(&mut s)).unwrap();
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
        assert!(answer.ends_with(&format!("\r\n\r\n{body}")), "{answer}");
    });
}

#[test]
fn serve_answers_plain_requests_404() {
    // Before the core server, `serve` sent every request to the WebSocket handshake (426,
    // 405); now a request for an application path without an HTTP handler gets 404.
    within(10, || {
        let server = TestServer::start(ServerConfig::default(), common::echo);
        let (status, head, _) = fetch(server.addr, "/events?ch=ticks", "");
        assert_eq!(status, 404, "{head}");
        let mut s = raw(server.addr);
        s.write_all(b"POST / HTTP/1.1\r\nHost: h\r\n\r\n").unwrap();
        let answer = String::from_utf8(read_to_end_lossy(&mut s)).unwrap();
        assert!(answer.starts_with("HTTP/1.1 404 "), "{answer}");
        assert!(settle(|| server.handle.connections() == 0));
    });
}
