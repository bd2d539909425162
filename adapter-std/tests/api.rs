//! The public API end to end over loopback: round trips, senders, backpressure, auth,
//! subprotocols, graceful shutdown.

mod common;

use std::io::Write as _;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{TestServer, echo, raw, read_to_end_lossy, request, within};
use tidewire::ws::HandshakeError;
use tidewire_std::{
    ClientOptions, CloseCode, ConnectError, Event, Message, SendError, ServerConfig, Upgrade,
    connect, tidewire,
};

fn big_cfg() -> ServerConfig {
    let mut cfg = ServerConfig::default();
    cfg.endpoint.ws.max_frame = 32 << 20;
    cfg.endpoint.ws.max_message = 32 << 20;
    cfg
}

fn big_opts() -> ClientOptions {
    let mut opts = ClientOptions::default();
    opts.ws.max_frame = 32 << 20;
    opts.ws.max_message = 32 << 20;
    opts
}

#[test]
fn round_trip_text_and_binary_from_0_bytes_to_16_mib() {
    within(20, || {
        let server = TestServer::start(big_cfg(), echo);
        let mut ws = connect(&server.url("/echo"), big_opts()).unwrap();
        for size in [0, 1, 125, 126, 127, 65_535, 65_536, 65_537, 1 << 20, 16 << 20] {
            let bin: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
            ws.send(bin.clone()).unwrap();
            assert_eq!(ws.recv().unwrap(), Message::binary(bin), "binary {size}");
            let text: String = (0..size).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
            ws.send(text.clone()).unwrap();
            assert_eq!(ws.recv().unwrap(), Message::text(text), "text {size}");
        }
        ws.close(CloseCode::NORMAL, "bye").unwrap();
        let info = common::recv_until_closed(&mut ws);
        assert!(info.clean);
        assert_eq!(info.code, CloseCode::NORMAL);
        // Closed is reported again on every later call.
        assert!(matches!(ws.recv_event(), Event::Closed(again) if again == info));
        assert_eq!(ws.send("late"), Err(SendError::Closed));
        assert_eq!(server.stop(Duration::from_secs(2)).dropped, 0);
    });
}

#[test]
fn senders_work_from_other_threads_on_both_sides() {
    within(15, || {
        // Server side: a Sender thread pushes 50 messages, then closes.
        let server = TestServer::start(ServerConfig::default(), |up: Upgrade| {
            let Ok(mut ws) = up.accept(None, &[]) else { return };
            let tx = ws.sender();
            let pusher = std::thread::spawn(move || {
                for i in 0..50 {
                    tx.send(format!("push {i}")).unwrap();
                }
                tx.close(CloseCode::NORMAL, "done").unwrap();
                assert!(tx.is_closed());
            });
            while ws.recv().is_ok() {}
            pusher.join().unwrap();
        });
        let mut ws = connect(&server.url("/"), ClientOptions::default()).unwrap();
        // Client side: a Sender thread sends while this thread receives.
        let tx = ws.sender();
        let sending = std::thread::spawn(move || {
            for i in 0..20 {
                // The server may close first; late sends fail cleanly.
                if tx.send(Message::binary(vec![i; 10])).is_err() {
                    break;
                }
            }
        });
        for i in 0..50 {
            assert_eq!(ws.recv().unwrap(), Message::text(format!("push {i}")));
        }
        let info = common::recv_until_closed(&mut ws);
        assert_eq!(info.code, CloseCode::NORMAL);
        assert_eq!(info.reason.as_str(), "done");
        sending.join().unwrap();
        assert!(ws.sender().is_closed());
    });
}

#[test]
fn try_send_hands_the_message_back_when_the_peer_does_not_read() {
    within(15, || {
        let (result_tx, result_rx) = mpsc::channel();
        let mut cfg = ServerConfig::default();
        cfg.endpoint.ws.max_outbound = 64 << 10;
        cfg.endpoint.ws.keepalive = None;
        let server = TestServer::start(cfg, move |up: Upgrade| {
            let Ok(ws) = up.accept(None, &[]) else { return };
            let chunk = Message::binary(vec![7u8; 32 << 10]);
            let start = Instant::now();
            let mut sent = 0usize;
            let outcome = loop {
                match ws.try_send(chunk.clone()) {
                    Ok(()) => sent += 1,
                    Err(e) => break Some(e),
                }
                if sent > 20_000 || start.elapsed() > Duration::from_secs(8) {
                    break None;
                }
            };
            let _ = result_tx.send((outcome, sent, start.elapsed(), ws.buffered_amount()));
        });
        let _peer = common::raw_upgraded(server.addr); // never reads
        let (outcome, sent, took, buffered) = result_rx.recv().unwrap();
        match outcome {
            Some(SendError::Backpressure(back)) => {
                assert_eq!(back, Message::binary(vec![7u8; 32 << 10]));
            }
            other => panic!("expected backpressure, got {other:?} after {sent} sends"),
        }
        assert!(took < Duration::from_secs(5), "try_send blocked: {took:?}");
        assert!(buffered <= (64 << 10) + (32 << 10), "outbox over its bound: {buffered}");
    });
}

#[test]
fn blocking_send_waits_for_the_reader_then_proceeds() {
    within(20, || {
        const COUNT: usize = 400; // 400 × 64 KiB = 25 MiB: more than the socket buffers hold
        let (done_tx, done_rx) = mpsc::channel();
        let mut cfg = ServerConfig::default();
        cfg.endpoint.ws.max_outbound = 128 << 10;
        let server = TestServer::start(cfg, move |up: Upgrade| {
            let Ok(mut ws) = up.accept(None, &[]) else { return };
            let payload = tidewire_std::Bytes::from(vec![1u8; 64 << 10]);
            let start = Instant::now();
            let mut max_buffered = 0;
            for _ in 0..COUNT {
                ws.send(payload.clone()).unwrap();
                max_buffered = max_buffered.max(ws.buffered_amount());
            }
            let _ = done_tx.send((start.elapsed(), max_buffered));
            ws.close(CloseCode::NORMAL, "").unwrap();
            while ws.recv().is_ok() {}
        });
        let mut ws = connect(&server.url("/"), ClientOptions::default()).unwrap();
        std::thread::sleep(Duration::from_millis(400));
        // The server must still be waiting: the client has not read anything yet.
        assert!(done_rx.try_recv().is_err(), "send did not wait for room");
        for _ in 0..COUNT {
            assert_eq!(ws.recv().unwrap().len(), 64 << 10);
        }
        let (took, max_buffered) = done_rx.recv().unwrap();
        assert!(took >= Duration::from_millis(300), "{took:?}");
        assert!(max_buffered <= (128 << 10) + (64 << 10), "{max_buffered}");
        assert!(ws.recv().is_err());
    });
}

fn auth_server() -> TestServer {
    TestServer::start(ServerConfig::default(), |up: Upgrade| {
        if up.request().token().as_deref() != Some("s3cret") {
            up.reject(401, &[("WWW-Authenticate", "Bearer")], b"no\n").unwrap();
            return;
        }
        if up.request().origin().is_some_and(|o| o != "https://good.example") {
            up.reject(403, &[], b"origin\n").unwrap();
            return;
        }
        echo(up);
    })
}

#[test]
fn auth_rejects_with_401_before_any_101() {
    within(10, || {
        let server = auth_server();
        match connect(&server.url("/"), ClientOptions::default()) {
            Err(ConnectError::Handshake(HandshakeError::Status(401))) => {}
            other => panic!("expected 401, got {other:?}"),
        }
        // A raw peer sees the 401 response and never a 101.
        let mut s = raw(server.addr);
        s.write_all(request("/", "").as_bytes()).unwrap();
        let all = String::from_utf8_lossy(&read_to_end_lossy(&mut s)).into_owned();
        assert!(all.starts_with("HTTP/1.1 401"), "{all}");
        assert!(all.contains("WWW-Authenticate: Bearer"), "{all}");
        assert!(!all.contains(" 101 "), "{all}");
        // The token in the query or the Authorization header opens the connection.
        let mut ws = connect(&server.url("/?token=s3cret"), ClientOptions::default()).unwrap();
        ws.send("hi").unwrap();
        assert_eq!(ws.recv().unwrap(), Message::text("hi"));
        let mut opts = ClientOptions::default();
        opts.ws.headers.push(("Authorization".into(), "Bearer s3cret".into()));
        assert!(connect(&server.url("/"), opts).is_ok());
    });
}

#[test]
fn a_foreign_origin_gets_403() {
    within(10, || {
        let server = auth_server();
        let mut opts = ClientOptions::default();
        opts.ws.headers.push(("Origin".into(), "https://evil.example".into()));
        match connect(&server.url("/?token=s3cret"), opts) {
            Err(ConnectError::Handshake(HandshakeError::Status(403))) => {}
            other => panic!("expected 403, got {other:?}"),
        }
        let mut opts = ClientOptions::default();
        opts.ws.headers.push(("Origin".into(), "https://good.example".into()));
        assert!(connect(&server.url("/?token=s3cret"), opts).is_ok());
    });
}

#[test]
fn the_server_picks_the_first_offered_subprotocol_it_supports() {
    within(10, || {
        let (tx, rx) = mpsc::channel();
        let server = TestServer::start(ServerConfig::default(), move |up: Upgrade| {
            let supported = ["chat.v2", "chat.v1"];
            let chosen =
                up.request().protocols().iter().find(|p| supported.contains(&p.as_str())).cloned();
            let Ok(mut ws) = up.accept(chosen.as_deref(), &[]) else { return };
            let _ = tx.send(ws.subprotocol().map(str::to_owned));
            while ws.recv().is_ok() {}
        });
        let mut opts = ClientOptions::default();
        opts.ws.protocols = vec!["chat.v0".into(), "chat.v1".into(), "chat.v2".into()];
        let ws = connect(&server.url("/"), opts).unwrap();
        assert_eq!(ws.subprotocol(), Some("chat.v1"));
        assert_eq!(rx.recv().unwrap().as_deref(), Some("chat.v1"));
        let ws2 = connect(&server.url("/"), ClientOptions::default()).unwrap();
        assert_eq!(ws2.subprotocol(), None);
        drop((ws, ws2));
    });
}

#[test]
fn graceful_shutdown_closes_every_connection_with_1001() {
    within(15, || {
        let server = TestServer::start(ServerConfig::default(), echo);
        let clients: Vec<_> = (0..3)
            .map(|_| {
                let mut ws = connect(&server.url("/"), ClientOptions::default()).unwrap();
                std::thread::spawn(move || common::recv_until_closed(&mut ws))
            })
            .collect();
        let start = Instant::now();
        while server.handle.connections() < 3 {
            assert!(start.elapsed() < Duration::from_secs(5));
            std::thread::sleep(Duration::from_millis(5));
        }
        let handle = server.handle.clone();
        let report = server.stop(Duration::from_secs(5));
        assert_eq!(report, tidewire_std::ShutdownReport { closed: 3, dropped: 0 });
        assert_eq!(handle.connections(), 0);
        for c in clients {
            let info = c.join().unwrap();
            assert_eq!(info.code, CloseCode::GOING_AWAY);
            assert_eq!(info.reason.as_str(), "server shutdown");
            assert!(info.clean);
        }
        // The listener is gone.
        assert!(
            connect(&format!("ws://{}/", handle.local_addr()), ClientOptions::default()).is_err()
        );
    });
}

#[test]
fn shutdown_drops_connections_that_do_not_finish_in_time() {
    within(15, || {
        // A handler that never receives: its connection cannot complete the close handshake.
        let (hold_tx, hold_rx) = mpsc::channel::<()>();
        let hold_rx = std::sync::Mutex::new(hold_rx);
        let server = TestServer::start(ServerConfig::default(), move |up: Upgrade| {
            let _ws = up.accept(None, &[]).unwrap();
            let _ = hold_rx.lock().unwrap().recv_timeout(Duration::from_millis(1500));
        });
        let mut ws = connect(&server.url("/"), ClientOptions::default()).unwrap();
        let reader = std::thread::spawn(move || common::recv_until_closed(&mut ws));
        let start = Instant::now();
        let report = server.stop(Duration::from_millis(300));
        assert_eq!(report, tidewire_std::ShutdownReport { closed: 0, dropped: 1 });
        assert!(start.elapsed() < Duration::from_secs(3));
        let info = reader.join().unwrap();
        // The client got the 1001 close frame, but the server never finished the handshake.
        assert_eq!(info.code, CloseCode::GOING_AWAY);
        drop(hold_tx);
    });
}

#[test]
fn connect_reports_bad_urls_and_refused_connections() {
    within(10, || {
        assert!(matches!(
            connect("wss://example.com/", ClientOptions::default()),
            Err(ConnectError::Url(_))
        ));
        assert!(matches!(
            connect("not a url", ClientOptions::default()),
            Err(ConnectError::Url(_))
        ));
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        assert!(matches!(
            connect(&format!("ws://127.0.0.1:{port}/"), ClientOptions::default()),
            Err(ConnectError::Io(_))
        ));
    });
}

#[test]
fn connections_over_max_connections_are_dropped_at_once() {
    within(10, || {
        let mut cfg = ServerConfig::default();
        cfg.max_connections = 2;
        let server = TestServer::start(cfg, echo);
        let a = connect(&server.url("/"), ClientOptions::default()).unwrap();
        let b = connect(&server.url("/"), ClientOptions::default()).unwrap();
        assert_eq!(server.handle.connections(), 2);
        assert!(connect(&server.url("/"), ClientOptions::default()).is_err());
        drop((a, b));
        let start = Instant::now();
        while server.handle.connections() > 0 {
            assert!(start.elapsed() < Duration::from_secs(5));
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(connect(&server.url("/"), ClientOptions::default()).is_ok());
    });
}

#[test]
fn ping_gets_a_pong_event() {
    within(10, || {
        let server = TestServer::start(ServerConfig::default(), echo);
        let mut ws = connect(&server.url("/"), ClientOptions::default()).unwrap();
        ws.ping(tidewire_std::Bytes::from_static(b"are you there")).unwrap();
        assert_eq!(
            ws.recv_event(),
            Event::Pong(tidewire_std::Bytes::from_static(b"are you there"))
        );
        assert!(ws.close_info().is_none());
    });
}
