//! The hub routes of the core endpoint, pumped over loopback TCP: WebSocket envelopes (sub, pub, ack, err, presence), one
//! log for WebSocket, SSE and polling, exact resume and "gone", slow consumers closed with
//! 4100, and `POST /api/publish` (authz, dedup, body). Every test is bounded by `run`.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use smol::Timer;
use smol::future;
use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::net::TcpStream;
use tidewire::http::Request;
use tidewire::hub::{DemoAuth, HubConfig};
use tidewire::policy::OutboxConfig;
use tidewire::server::{Credential, Refusal, Routes, Verdict};
use tidewire_smol::{
    ClientOptions, CloseCode, Message, Server, ServerConfig, ServerHandle, Upgrade, WebSocket,
    connect,
};

/// Runs `test` on a fresh `block_on`, failing it after `secs` seconds.
fn run(secs: u64, test: impl Future<Output = ()>) {
    smol::block_on(future::or(test, async {
        Timer::after(Duration::from_secs(secs)).await;
        panic!("test did not finish within {secs} s");
    }));
}

/// A hub server with the core's default routes and the demo's auth (admin bearer: `admin`,
/// a trusted publisher).
async fn start_with(hub: HubConfig, mut cfg: ServerConfig) -> ServerHandle {
    cfg.endpoint.routes = Routes::default();
    cfg.endpoint.hub = hub;
    let authn = |r: &Request| {
        let admin = r.bearer_token() == Some("admin");
        let token = if admin { r.query_param("token") } else { r.token() };
        match DemoAuth::authenticate(token.as_deref()) {
            Some(principal) => Verdict::Allow(Credential { principal, trusted: admin }),
            None => Verdict::Refuse(Refusal::unauthorized()),
        }
    };
    let server = Server::bind_with("127.0.0.1:0", cfg, authn, DemoAuth).await.unwrap();
    let handle = server.handle();
    smol::spawn(server.serve(|up: Upgrade| async move {
        let _ = up.reject(404, &[], b"").await;
    }))
    .detach();
    handle
}

async fn start(hub: HubConfig) -> ServerHandle {
    start_with(hub, ServerConfig::default()).await
}

async fn ws(addr: SocketAddr, token: Option<&str>) -> WebSocket {
    let q = token.map(|t| format!("?token={t}")).unwrap_or_default();
    connect(&format!("ws://{addr}/ws{q}"), ClientOptions::default()).await.unwrap()
}

async fn send(ws: &WebSocket, text: &str) {
    ws.send(Message::text(text.to_owned())).await.unwrap();
}

async fn recv(ws: &mut WebSocket) -> Value {
    let m = ws.recv().await.unwrap();
    serde_json::from_str(m.as_text().unwrap()).unwrap()
}

/// The next envelope whose `op` is `op`, skipping others.
async fn recv_op(ws: &mut WebSocket, op: &str) -> Value {
    loop {
        let v = recv(ws).await;
        if v["op"] == op {
            return v;
        }
    }
}

/// One HTTP/1.1 request; returns the status, the head and the body.
async fn http(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &str,
    body: &str,
) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "{method} {target} HTTP/1.1\r\nHost: x\r\n{headers}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, head.to_owned(), body.to_owned())
}

/// Reads an SSE response until `blocks` blank-line-separated blocks arrived.
async fn sse_blocks(
    addr: SocketAddr,
    target: &str,
    headers: &str,
    blocks: usize,
) -> (String, Vec<String>) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req =
        format!("GET {target} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n{headers}\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let found: Vec<String> = body
                .split("\n\n")
                .filter(|b| !b.is_empty() && !b.starts_with(':'))
                .map(str::to_owned)
                .collect();
            let complete = body.ends_with("\n\n");
            if (found.len() >= blocks && complete) || !head.starts_with("HTTP/1.1 200") {
                return (head.to_owned(), found);
            }
        }
        let n = s.read(&mut chunk).await.unwrap();
        if n == 0 {
            let text = String::from_utf8_lossy(&buf).into_owned();
            let (head, _) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
            return (head.to_owned(), Vec::new());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[test]
fn websocket_clients_subscribe_publish_ack_and_see_presence() {
    run(20, async {
        let server = start(HubConfig::default()).await;
        let hub = server.clone();
        let addr = server.local_addr();
        let mut ann = ws(addr, Some("user:ann")).await;
        let mut bob = ws(addr, Some("user:bob")).await;

        send(&bob, r#"{"op":"sub","ch":"chat:lobby","ref":1}"#).await;
        let sub = recv(&mut bob).await;
        assert_eq!(
            (sub["op"].as_str(), sub["recovered"].as_bool()),
            (Some("subscribed"), Some(true))
        );
        // Bob is alone: his list is himself.
        let p = recv(&mut bob).await;
        assert_eq!(p["op"], "presence");
        assert_eq!(p["join"], serde_json::json!(["bob"]));

        send(&ann, r#"{"op":"sub","ch":"chat:lobby","ref":1}"#).await;
        assert_eq!(recv(&mut ann).await["op"], "subscribed");
        let list = recv(&mut ann).await;
        assert_eq!(list["join"], serde_json::json!(["ann", "bob"]));
        let joined = recv(&mut bob).await;
        assert_eq!(
            (joined["op"].as_str(), &joined["join"]),
            (Some("presence"), &serde_json::json!(["ann"]))
        );

        // A publish: both get the msg exactly once, ann gets the ack; a repeat is acked again.
        send(&ann, r#"{"op":"pub","ch":"chat:lobby","id":"m1","data":{"t":"hi"},"ref":7}"#).await;
        send(&ann, r#"{"op":"pub","ch":"chat:lobby","id":"m1","data":{"t":"hi"},"ref":8}"#).await;
        let msg = recv(&mut ann).await;
        assert_eq!((msg["op"].as_str(), msg["off"].as_u64()), (Some("msg"), Some(1)));
        assert_eq!(msg["data"], serde_json::json!({"t": "hi"}));
        let ack = recv(&mut ann).await;
        assert_eq!(
            (ack["op"].as_str(), ack["ref"].as_u64(), ack["off"].as_u64()),
            (Some("ack"), Some(7), Some(1))
        );
        let ack2 = recv(&mut ann).await;
        assert_eq!(
            (ack2["op"].as_str(), ack2["ref"].as_u64(), ack2["off"].as_u64()),
            (Some("ack"), Some(8), Some(1))
        );
        let got = recv(&mut bob).await;
        assert_eq!((got["op"].as_str(), got["off"].as_u64()), (Some("msg"), Some(1)));

        // Forbidden join → err with the ref, and nothing else.
        send(&bob, r#"{"op":"sub","ch":"admin:x","ref":9}"#).await;
        let err = recv(&mut bob).await;
        assert_eq!(
            (err["op"].as_str(), err["code"].as_str(), err["ref"].as_u64()),
            (Some("err"), Some("forbidden"), Some(9))
        );
        send(&bob, r#"{"op":"ping","ref":10}"#).await;
        assert_eq!(recv(&mut bob).await["op"], "pong");

        // Ann leaves on purpose: bob sees the leave at once.
        send(&ann, r#"{"op":"unsub","ch":"chat:lobby"}"#).await;
        let left = recv_op(&mut bob, "presence").await;
        assert_eq!(left["leave"], serde_json::json!(["ann"]));
        assert_eq!(hub.inspect(|s| s.hub_stats().published), 1);
        assert_eq!(hub.inspect(|s| s.hub_stats().duplicates), 1);
        server.shutdown(Duration::from_secs(2)).await;
    });
}

#[test]
fn sse_and_polling_share_the_websocket_log_and_resume_exactly() {
    run(20, async {
        let server = start(HubConfig::default()).await;
        let hub = server.clone();
        let addr = server.local_addr();
        let mut w = ws(addr, None).await;
        send(&w, r#"{"op":"sub","ch":"public:t","ref":1}"#).await;
        assert_eq!(recv(&mut w).await["op"], "subscribed");
        let mut positions = Vec::new();
        for n in 1..=3 {
            positions.push(hub.publish("public:t", format!("{{\"n\":{n}}}").as_bytes()).unwrap());
        }
        let ep = positions[0].epoch.to_string();
        for n in 1..=3u64 {
            let m = recv(&mut w).await;
            assert_eq!((m["ep"].as_str(), m["off"].as_u64()), (Some(ep.as_str()), Some(n)));
        }

        // SSE resumes after 1 (pos=, as EventSource cannot set headers): exactly 2 and 3.
        let (head, blocks) =
            sse_blocks(addr, &format!("/events?ch=public:t&pos={ep}:1"), "", 2).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(head.contains("text/event-stream"));
        assert_eq!(blocks[0], format!("id: {ep}:2\nevent: public:t\ndata: {{\"n\":2}}"));
        assert_eq!(blocks[1], format!("id: {ep}:3\nevent: public:t\ndata: {{\"n\":3}}"));
        // Last-Event-ID wins over pos=.
        let (_, blocks) = sse_blocks(
            addr,
            &format!("/events?ch=public:t&pos={ep}:0"),
            &format!("Last-Event-ID: {ep}:2\r\n"),
            1,
        )
        .await;
        assert_eq!(blocks[0], format!("id: {ep}:3\nevent: public:t\ndata: {{\"n\":3}}"));
        // A position of another epoch is gone: reset with the head.
        let (_, blocks) = sse_blocks(addr, "/events?ch=public:t&pos=abc:1", "", 1).await;
        assert_eq!(
            blocks[0],
            format!(
                "id: {ep}:3\nevent: reset\ndata: {{\"ch\":\"public:t\",\"pos\":\"{ep}:3\",\"recovered\":false}}"
            )
        );
        // Refusals before the 200.
        let (head, _) = sse_blocks(addr, "/events?ch=chat:x", "", 1).await;
        assert!(head.starts_with("HTTP/1.1 403"), "{head}");
        let (head, _) = sse_blocks(addr, "/events?ch=public:t&token=nope", "", 1).await;
        assert!(head.starts_with("HTTP/1.1 401"), "{head}");

        // Polling: the same positions; 304 at the head; gone → recovered:false.
        let (status, head, body) =
            http(addr, "GET", &format!("/poll?ch=public:t&pos={ep}:1"), "", "").await;
        assert_eq!(status, 200);
        assert!(head.contains(&format!("ETag: \"{ep}:3\"")));
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["pos"], format!("{ep}:3"));
        let offs: Vec<u64> =
            v["events"].as_array().unwrap().iter().map(|e| e["off"].as_u64().unwrap()).collect();
        assert_eq!(offs, [2, 3]);
        assert_eq!(v["events"][0]["ep"], ep.as_str());
        let inm = format!("If-None-Match: \"{ep}:3\"\r\n");
        let (status, _, _) = http(addr, "GET", "/poll?ch=public:t", &inm, "").await;
        assert_eq!(status, 304);
        let (_, _, body) = http(addr, "GET", "/poll?ch=public:t&pos=abc:1", "", "").await;
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            (v["recovered"].as_bool(), v["pos"].as_str()),
            (Some(false), Some(format!("{ep}:3").as_str()))
        );
        let (status, _, _) = http(addr, "GET", "/poll?ch=chat:x", "", "").await;
        assert_eq!(status, 403);

        // A long poll is woken by the next publish.
        let held = smol::spawn(async move {
            http(addr, "GET", &format!("/poll?ch=public:t&pos={ep}:3&wait=1"), "", "").await
        });
        Timer::after(Duration::from_millis(200)).await;
        let pos = hub.publish("public:t", br#"{"n":4}"#).unwrap();
        let (status, _, body) = held.await;
        assert_eq!(status, 200);
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["pos"], pos.to_string());
        assert_eq!(v["events"][0]["data"], serde_json::json!({"n": 4}));
        server.shutdown(Duration::from_secs(2)).await;
    });
}

#[test]
fn websocket_resume_replays_exactly_the_missed_messages_or_says_gone() {
    run(20, async {
        let server = start(HubConfig::default()).await;
        let hub = server.clone();
        let addr = server.local_addr();
        let mut first = ws(addr, None).await;
        send(&first, r#"{"op":"sub","ch":"public:r"}"#).await;
        assert_eq!(recv(&mut first).await["op"], "subscribed");
        let p1 = hub.publish("public:r", br#"{"n":1}"#).unwrap();
        assert_eq!(recv(&mut first).await["off"], 1);
        first.close(CloseCode::NORMAL, "").unwrap();
        drop(first);
        hub.publish("public:r", br#"{"n":2}"#).unwrap();
        hub.publish("public:r", br#"{"n":3}"#).unwrap();

        let mut again = ws(addr, None).await;
        let sub =
            format!(r#"{{"op":"sub","ch":"public:r","pos":{{"ep":"{}","off":1}}}}"#, p1.epoch);
        send(&again, &sub).await;
        let s = recv(&mut again).await;
        assert_eq!((s["op"].as_str(), s["recovered"].as_bool()), (Some("subscribed"), Some(true)));
        assert_eq!(recv(&mut again).await["data"], serde_json::json!({"n": 2}));
        assert_eq!(recv(&mut again).await["data"], serde_json::json!({"n": 3}));
        hub.publish("public:r", br#"{"n":4}"#).unwrap();
        assert_eq!(recv(&mut again).await["off"], 4);

        let mut lost = ws(addr, None).await;
        send(&lost, r#"{"op":"sub","ch":"public:r","pos":{"ep":"feed","off":9}}"#).await;
        let s = recv(&mut lost).await;
        assert_eq!((s["op"].as_str(), s["recovered"].as_bool()), (Some("subscribed"), Some(false)));
        assert_eq!(s["off"].as_u64(), Some(4));
        hub.publish("public:r", br#"{"n":5}"#).unwrap();
        assert_eq!(recv(&mut lost).await["off"], 5);
        server.shutdown(Duration::from_secs(2)).await;
    });
}

#[test]
fn a_slow_websocket_consumer_is_closed_with_4100() {
    run(30, async {
        let cfg = HubConfig {
            outbox: OutboxConfig { max_bytes: 64 << 10, max_items: 64, ..OutboxConfig::default() },
            ..HubConfig::default()
        };
        let mut scfg = ServerConfig::default();
        scfg.endpoint.ws.max_outbound = 64 << 10;
        let server = start_with(cfg, scfg).await;
        let hub = server.clone();
        let addr = server.local_addr();
        let mut slow = ws(addr, None).await;
        send(&slow, r#"{"op":"sub","ch":"public:big"}"#).await;
        assert_eq!(recv(&mut slow).await["op"], "subscribed");
        // The client stops reading; the server publishes until the hub gives up on it.
        let data = format!("{{\"pad\":\"{}\"}}", "x".repeat(16 << 10));
        let mut sent = 0;
        while hub.inspect(|s| s.hub_stats().too_slow) == 0 {
            hub.publish("public:big", data.as_bytes()).unwrap();
            sent += 1;
            assert!(sent < 20_000, "never closed");
            if sent % 16 == 0 {
                Timer::after(Duration::from_millis(1)).await;
            }
        }
        // Reading again, the client gets what was sent, then the close with 4100.
        let info = loop {
            match slow.recv().await {
                Ok(_) => {}
                Err(tidewire_smol::RecvError::Closed(info)) => break info,
                Err(e) => panic!("{e}"),
            }
        };
        assert_eq!(info.code, CloseCode::TOO_SLOW);
        server.shutdown(Duration::from_secs(2)).await;
    });
}

#[test]
fn http_publish_authorizes_dedups_and_answers_the_position() {
    run(20, async {
        let server = start(HubConfig::default()).await;
        let hub = server.clone();
        let addr = server.local_addr();
        let json = "Content-Type: application/json\r\n";
        let (status, _, _) =
            http(addr, "POST", "/api/publish?ch=chat:a&id=1&token=nope", json, "{}").await;
        assert_eq!(status, 401);
        let (status, _, _) = http(addr, "POST", "/api/publish?ch=chat:a&id=1", json, "{}").await;
        assert_eq!(status, 403, "anonymous may not write");
        let (status, _, _) =
            http(addr, "POST", "/api/publish?ch=public:a&id=1&token=user:ann", json, "{}").await;
        assert_eq!(status, 403);
        let (status, _, _) =
            http(addr, "POST", "/api/publish?ch=chat:a&id=1&token=user:ann", json, "nope").await;
        assert_eq!(status, 400);
        let (status, _, _) = http(addr, "GET", "/api/publish?ch=chat:a", "", "").await;
        assert_eq!(status, 405);

        // The same id twice: one message, the same position both times.
        let (status, head, first) =
            http(addr, "POST", "/api/publish?ch=chat:a&id=m1&token=user:ann", json, r#"{"t":1}"#)
                .await;
        assert_eq!(status, 200, "{head}");
        assert!(head.contains("application/json"));
        let (_, _, second) =
            http(addr, "POST", "/api/publish?ch=chat:a&id=m1&token=user:ann", json, r#"{"t":1}"#)
                .await;
        assert_eq!(first, second);
        let v: Value = serde_json::from_str(&first).unwrap();
        assert_eq!(v["off"], 1);
        assert_eq!(
            v["ep"].as_str().map(str::to_owned),
            hub.inspect(|s| s.head("chat:a")).map(|p| p.epoch.to_string())
        );
        assert_eq!(hub.inspect(|s| s.hub_stats().published), 1);

        // The dedup window is the WebSocket's: a retry of m1 over WebSocket is acked with it.
        let mut w = ws(addr, Some("user:ann")).await;
        send(&w, r#"{"op":"pub","ch":"chat:a","id":"m1","data":{"t":1},"ref":3}"#).await;
        let ack = recv(&mut w).await;
        assert_eq!((ack["op"].as_str(), ack["off"].as_u64()), (Some("ack"), Some(1)));
        assert_eq!(hub.inspect(|s| s.hub_stats().published), 1);

        // Trusted (admin bearer): any channel, no authz; its ids are deduplicated too.
        let admin = "Authorization: Bearer admin\r\n";
        let (status, _, a) = http(addr, "POST", "/api/publish?ch=ops:x&id=z", admin, "[1]").await;
        assert_eq!(status, 200);
        let (_, _, b) = http(addr, "POST", "/api/publish?ch=ops:x&id=z", admin, "[1]").await;
        assert_eq!(a, b);
        assert_eq!(hub.inspect(|s| s.hub_stats().published), 2);
        server.shutdown(Duration::from_secs(2)).await;
    });
}
