//! Polling and plain HTTP over loopback TCP: first request, catch-up, 304, long polls
//! (answered by a publish, timed out, answered at shutdown), bad requests; request bodies;
//! `serve` answers the application's plain requests 404 while WebSockets share the port.
//! Every test is bounded in time by `run`.

use std::future::Future;
use std::time::{Duration, Instant};

use smol::Timer;
use smol::future;
use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::net::TcpStream;
use tidewire::poll::PollConfig;
use tidewire::server::{Route, Routes};
use tidewire_smol::{
    ClientOptions, HttpRequest, Message, Server, ServerConfig, ServerHandle, Upgrade, connect,
};

fn run(secs: u64, test: impl Future<Output = ()>) {
    smol::block_on(future::or(test, async {
        Timer::after(Duration::from_secs(secs)).await;
        panic!("test did not finish within {secs} s");
    }));
}

/// `/poll` → the core's polling (anonymous, allow-all), `/echo-body` → the request body
/// back (at most 16 bytes), upgrades → a WebSocket echo.
async fn start(poll: PollConfig) -> (ServerHandle, smol::Task<std::io::Result<()>>) {
    let mut cfg = ServerConfig::default();
    cfg.endpoint.routes = Routes::none();
    cfg.endpoint.routes.poll = Some(Route::new("/poll"));
    cfg.endpoint.poll = poll;
    let server = Server::bind("127.0.0.1:0", cfg).await.unwrap();
    let handle = server.handle();
    let serving = smol::spawn(server.serve_with(
        |up: Upgrade| async move {
            let Ok(mut ws) = up.accept(None, &[]).await else { return };
            while let Ok(m) = ws.recv().await {
                if ws.send(m).await.is_err() {
                    break;
                }
            }
        },
        |mut req: HttpRequest| async move {
            if req.request().path_only() == "/echo-body" {
                if let Ok(body) = req.read_body(16).await {
                    let _ = req.respond(200, &[], &body).await;
                }
            } else {
                let _ = req.respond(404, &[], b"not here\n").await;
            }
        },
    ));
    (handle, serving)
}

/// One request, the whole response (to EOF): status, head, body.
async fn request(handle: &ServerHandle, raw: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect(handle.local_addr()).await.unwrap();
    s.write_all(raw.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    let text = String::from_utf8(out).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, head.to_owned(), body.to_owned())
}

async fn get(handle: &ServerHandle, target: &str, extra: &str) -> (u16, String, String) {
    request(handle, &format!("GET {target} HTTP/1.1\r\nHost: x\r\n{extra}\r\n")).await
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

fn offsets(v: &serde_json::Value) -> Vec<u64> {
    v["events"].as_array().unwrap().iter().map(|e| e["off"].as_u64().unwrap()).collect()
}

/// Connections the core endpoint holds (held polls, once their head is in).
fn in_core(handle: &ServerHandle) -> usize {
    handle.inspect(tidewire::server::Server::connection_count)
}

fn etag(head: &str) -> String {
    head.lines().find_map(|l| l.strip_prefix("ETag: ")).unwrap().trim_matches('"').to_owned()
}

#[test]
fn first_request_catch_up_304_and_bad_requests() {
    run(10, async {
        let (handle, _serving) = start(PollConfig::default()).await;
        let p1 = handle.publish("ticks", "{\"n\":1}".as_bytes()).unwrap();

        // First request: the head position, no events.
        let (status, head, body) = get(&handle, "/poll?ch=ticks", "").await;
        assert_eq!(status, 200, "{head}");
        assert!(head.contains("Content-Type: application/json"), "{head}");
        let v = json(&body);
        assert_eq!(
            (v["pos"].as_str(), v["recovered"].as_bool()),
            (Some(&*p1.to_string()), Some(true))
        );
        assert!(offsets(&v).is_empty());
        assert_eq!(etag(&head), p1.to_string());

        // Catch-up: exactly what was missed, with the data embedded.
        for n in 2..=4 {
            handle.publish("ticks", format!("{{\"n\":{n}}}").as_bytes()).unwrap();
        }
        let (status, head, body) = get(&handle, &format!("/poll?ch=ticks&pos={p1}"), "").await;
        let v = json(&body);
        assert_eq!((status, offsets(&v)), (200, vec![2, 3, 4]));
        assert_eq!(v["events"][2]["data"]["n"], 4);
        let now = etag(&head);
        assert_eq!(v["pos"], now.as_str());

        // Nothing new for a conditional request: 304.
        let (status, head, body) =
            get(&handle, "/poll?ch=ticks", &format!("If-None-Match: \"{now}\"\r\n")).await;
        assert_eq!((status, body.as_str()), (304, ""), "{head}");
        assert_eq!(etag(&head), now);

        // A gone position: recovered false and the head, never a partial replay.
        let (status, _, body) = get(&handle, "/poll?ch=ticks&pos=ff:1", "").await;
        let v = json(&body);
        assert_eq!(
            (status, v["recovered"].as_bool(), v["pos"].as_str()),
            (200, Some(false), Some(&*now))
        );

        // Bad requests: 400.
        for target in ["/poll?ch=ticks&pos=zz", "/poll?pos=1:1", "/poll?ch=ticks&pos=1:x"] {
            assert_eq!(get(&handle, target, "").await.0, 400, "{target}");
        }
        assert_eq!(get(&handle, "/poll?ch=ticks", "If-None-Match: \"nope\"\r\n").await.0, 400);
        assert_eq!(in_core(&handle), 0);
        handle.shutdown(Duration::from_secs(1)).await;
    });
}

#[test]
fn long_poll_is_held_until_a_publish_or_its_timeout() {
    run(10, async {
        let poll = PollConfig { long_poll: Duration::from_millis(400), ..PollConfig::default() };
        let (handle, _serving) = start(poll).await;
        let p1 = handle.publish("ticks", "{\"n\":1}".as_bytes()).unwrap();

        // Held, then answered by a publish.
        let target = format!("/poll?ch=ticks&pos={p1}&wait=1");
        let held = {
            let handle = handle.clone();
            let target = target.clone();
            smol::spawn(async move { get(&handle, &target, "").await })
        };
        let deadline = Instant::now() + Duration::from_secs(2);
        while in_core(&handle) == 0 {
            assert!(Instant::now() < deadline, "the poll was not held");
            Timer::after(Duration::from_millis(5)).await;
        }
        let started = Instant::now();
        let p2 = handle.publish("ticks", "{\"n\":2}".as_bytes()).unwrap();
        let (status, head, body) = held.await;
        assert!(started.elapsed() < Duration::from_millis(300), "answered at the publish");
        assert_eq!((status, offsets(&json(&body))), (200, vec![2]));
        assert_eq!(etag(&head), p2.to_string());
        assert_eq!(in_core(&handle), 0);

        // Nothing new: answered empty after the hold (304 when conditional).
        let started = Instant::now();
        let (status, _, body) = get(&handle, &format!("/poll?ch=ticks&pos={p2}&wait=1"), "").await;
        let took = started.elapsed();
        assert_eq!((status, offsets(&json(&body))), (200, vec![]));
        assert!(took >= Duration::from_millis(350) && took < Duration::from_secs(2), "{took:?}");
        let (status, _, _) =
            get(&handle, "/poll?ch=ticks&wait=1", &format!("If-None-Match: \"{p2}\"\r\n")).await;
        assert_eq!(status, 304);

        // A held poll whose client goes away is dropped.
        let mut s = TcpStream::connect(handle.local_addr()).await.unwrap();
        let req = format!("GET /poll?ch=ticks&pos={p2}&wait=1 HTTP/1.1\r\nHost: x\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(2);
        while in_core(&handle) == 0 {
            assert!(Instant::now() < deadline, "the poll was not held");
            Timer::after(Duration::from_millis(5)).await;
        }
        drop(s);
        while in_core(&handle) > 0 {
            assert!(Instant::now() < deadline, "the gone poll was not dropped");
            Timer::after(Duration::from_millis(5)).await;
        }
        handle.shutdown(Duration::from_secs(1)).await;
    });
}

#[test]
fn shutdown_answers_held_polls_and_serve_with_returns() {
    run(10, async {
        let (handle, serving) = start(PollConfig::default()).await; // 25 s hold
        let p1 = handle.publish("ticks", "{\"n\":1}".as_bytes()).unwrap();
        let held = {
            let handle = handle.clone();
            smol::spawn(async move {
                get(&handle, &format!("/poll?ch=ticks&pos={p1}&wait=1"), "").await
            })
        };
        let deadline = Instant::now() + Duration::from_secs(2);
        while in_core(&handle) == 0 {
            assert!(Instant::now() < deadline, "the poll was not held");
            Timer::after(Duration::from_millis(5)).await;
        }
        let report = handle.shutdown(Duration::from_secs(3)).await;
        assert_eq!(report.dropped, 0);
        serving.await.unwrap();
        let (status, _, body) = held.await;
        assert_eq!((status, offsets(&json(&body))), (200, vec![]));
        assert_eq!(in_core(&handle), 0);
    });
}

#[test]
fn bodies_routing_and_websockets_on_one_port() {
    run(10, async {
        let (handle, _serving) = start(PollConfig::default()).await;
        let post = |body: &str, extra: &str| {
            format!(
                "POST /echo-body HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n{extra}\r\n{body}",
                body.len()
            )
        };
        let (status, _, body) = request(&handle, &post("hello", "")).await;
        assert_eq!((status, body.as_str()), (200, "hello"));
        // The body in a second write, after `100 Continue`.
        let mut s = TcpStream::connect(handle.local_addr()).await.unwrap();
        s.write_all(
            post("", "Expect: 100-continue\r\n").replace("Length: 0", "Length: 4").as_bytes(),
        )
        .await
        .unwrap();
        let mut cont = [0u8; 25];
        s.read_exact(&mut cont).await.unwrap();
        assert_eq!(&cont, b"HTTP/1.1 100 Continue\r\n\r\n");
        s.write_all(b"abcd").await.unwrap();
        let mut rest = String::new();
        s.read_to_string(&mut rest).await.unwrap();
        assert!(rest.starts_with("HTTP/1.1 200") && rest.ends_with("\r\n\r\nabcd"), "{rest}");
        // Too large, bad framing.
        assert_eq!(request(&handle, &post(&"x".repeat(17), "")).await.0, 413);
        let chunked = "POST /echo-body HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
            3\r\nabc\r\n0\r\n\r\n";
        let (status, _, body) = request(&handle, chunked).await;
        assert_eq!((status, body.as_str()), (200, "abc"), "a chunked body is decoded");
        let both = chunked.replace("Host: x", "Host: x\r\nContent-Length: 3");
        assert_eq!(request(&handle, &both).await.0, 400);
        // Other paths, bad heads.
        assert_eq!(get(&handle, "/nothing", "").await.0, 404);
        assert_eq!(request(&handle, "GARBAGE\r\n\r\n").await.0, 400);
        assert_eq!(request(&handle, "GET / HTTP/1.0\r\n\r\n").await.0, 505);

        // A WebSocket on the same port.
        let mut ws = connect(&format!("ws://{}/ws", handle.local_addr()), ClientOptions::default())
            .await
            .unwrap();
        ws.send("hi").await.unwrap();
        assert_eq!(ws.recv().await.unwrap(), Message::text("hi"));
        drop(ws);
        handle.shutdown(Duration::from_secs(1)).await;
    });
}

#[test]
fn serve_answers_non_upgrade_requests_with_404() {
    run(10, async {
        let server = Server::bind("127.0.0.1:0", ServerConfig::default()).await.unwrap();
        let handle = server.handle();
        let serving = smol::spawn(server.serve(|up: Upgrade| async move {
            let _ = up.accept(None, &[]).await;
        }));
        // Without an HTTP handler, the application's plain requests get 404.
        let (status, _, body) = get(&handle, "/", "").await;
        assert_eq!((status, body.as_str()), (404, "not found\n"));
        assert_eq!(request(&handle, "POST / HTTP/1.1\r\nHost: x\r\n\r\n").await.0, 404);
        handle.shutdown(Duration::from_secs(1)).await;
        serving.await.unwrap();
    });
}
