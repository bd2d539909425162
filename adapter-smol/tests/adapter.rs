//! End-to-end tests of the smol adapter over loopback TCP: round trips, senders,
//! backpressure, upgrade decisions, misbehaving peers, shutdown and keepalive.
//! Every test is bounded in time by `run`.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use smol::future;
use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::net::TcpStream;
use smol::{Executor, Timer};
use tidewire::policy::heartbeat::HeartbeatConfig;
use tidewire::ws::{ConnError, HandshakeError};
use tidewire_smol::{
    ClientOptions, CloseCode, ConnectError, Event, Message, RecvError, SendError, Server,
    ServerConfig, ServerHandle, Upgrade, WebSocket, connect,
};

/// Runs `test` on a fresh `block_on`, failing it after `secs` seconds.
fn run(secs: u64, test: impl Future<Output = ()>) {
    smol::block_on(future::or(test, async {
        Timer::after(Duration::from_secs(secs)).await;
        panic!("test did not finish within {secs} s");
    }));
}

/// Starts a server whose handler is `handler`; returns its handle.
async fn start<F, Fut>(cfg: ServerConfig, handler: F) -> ServerHandle
where
    F: Fn(Upgrade) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let server = Server::bind("127.0.0.1:0", cfg).await.unwrap();
    let handle = server.handle();
    smol::spawn(server.serve(handler)).detach();
    handle
}

async fn echo_loop(mut ws: WebSocket) {
    while let Ok(msg) = ws.recv().await {
        if ws.send(msg).await.is_err() {
            break;
        }
    }
}

/// An echo server that requires `?token=secret` (or the Bearer header) and, when `origins`
/// is non-empty, one of those origins; it picks the first offered of `a`, `b`.
async fn echo_server(cfg: ServerConfig) -> ServerHandle {
    start(cfg, |up: Upgrade| async move {
        let req = up.request();
        if req.path_only() == "/auth" && req.token().as_deref() != Some("secret") {
            let _ = up.reject(401, &[("WWW-Authenticate", "Bearer")], b"no\n").await;
            return;
        }
        if req.origin().is_some_and(|o| o != "http://good.example") {
            let _ = up.reject(403, &[], b"origin\n").await;
            return;
        }
        let proto = req.protocols().iter().find(|p| *p == "a" || *p == "b").cloned();
        let Ok(ws) = up.accept(proto.as_deref(), &[]).await else { return };
        echo_loop(ws).await;
    })
    .await
}

fn url(handle: &ServerHandle, path: &str) -> String {
    format!("ws://{}{path}", handle.local_addr())
}

fn quiet() -> ServerConfig {
    let mut cfg = ServerConfig::default();
    cfg.endpoint.ws.keepalive = None;
    cfg
}

const UPGRADE: &str = "GET /raw HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n\
    Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
    Sec-WebSocket-Version: 13\r\n\r\n";

/// Reads until the end of an HTTP head; returns the head and the bytes after it.
async fn read_head(stream: &mut TcpStream) -> (String, Vec<u8>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(end + 4);
            return (String::from_utf8_lossy(&buf).into_owned(), rest);
        }
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "EOF before the end of the head: {:?}", String::from_utf8_lossy(&buf));
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Reads everything until EOF (or an error such as a reset).
async fn read_to_end(stream: &mut TcpStream) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while let Ok(n) = stream.read(&mut chunk).await {
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    buf
}

#[test]
fn round_trip_text_and_binary_0_to_16_mib() {
    run(60, async {
        let handle = echo_server(quiet()).await;
        let mut opts = ClientOptions::default();
        opts.ws.keepalive = None;
        let mut ws = connect(&url(&handle, "/echo"), opts).await.unwrap();
        for size in [0, 1, 125, 126, 65_535, 65_536, 1 << 20, 16 << 20] {
            let text = Message::text("x".repeat(size));
            ws.send(text.clone()).await.unwrap();
            assert_eq!(ws.recv().await.unwrap(), text, "text of {size} bytes");
            let binary = Message::binary(
                (0..size).map(|i| u8::try_from(i % 251).unwrap()).collect::<Vec<_>>(),
            );
            ws.send(binary.clone()).await.unwrap();
            assert_eq!(ws.recv().await.unwrap(), binary, "binary of {size} bytes");
        }
        // `impl Into<Message>` for plain strings and byte vectors.
        ws.send("plain").await.unwrap();
        assert_eq!(ws.recv().await.unwrap(), Message::text("plain"));
        ws.send(vec![1u8, 2, 3]).await.unwrap();
        assert_eq!(ws.recv().await.unwrap(), Message::binary(vec![1u8, 2, 3]));

        // A ping's pong arrives as an event; `recv` skips pongs.
        ws.ping(bytes::Bytes::from_static(b"p")).unwrap();
        assert_eq!(ws.recv_event().await, Event::Pong(bytes::Bytes::from_static(b"p")));
        ws.ping(bytes::Bytes::from_static(b"q")).unwrap();
        ws.send("after ping").await.unwrap();
        assert_eq!(ws.recv().await.unwrap(), Message::text("after ping"));

        ws.close(CloseCode::NORMAL, "done").unwrap();
        let Err(RecvError::Closed(info)) = ws.recv().await else { panic!("expected Closed") };
        assert_eq!(info.code, CloseCode::NORMAL);
        assert!(info.clean);
        // Closed keeps being reported, and sends fail.
        assert!(matches!(ws.recv_event().await, Event::Closed(i) if i == info));
        assert!(matches!(ws.recv().await, Err(RecvError::Closed(_))));
        assert_eq!(ws.send("late").await, Err(SendError::Closed));
        assert_eq!(ws.close_info(), Some(info));
        handle.shutdown(Duration::from_secs(1)).await;
    });
}

#[test]
fn sender_from_another_task_and_thread() {
    run(10, async {
        let handle = echo_server(quiet()).await;
        let mut ws = connect(&url(&handle, "/"), ClientOptions::default()).await.unwrap();
        let from_task = ws.sender();
        let task = smol::spawn(async move { from_task.send("from task").await });
        let from_thread = ws.sender();
        let thread = std::thread::spawn(move || {
            smol::block_on(from_thread.send(Message::binary(&b"from thread"[..])))
        });
        task.await.unwrap();
        thread.join().unwrap().unwrap();
        let mut got = vec![ws.recv().await.unwrap(), ws.recv().await.unwrap()];
        got.sort_by_key(Message::is_text);
        assert_eq!(got, vec![Message::binary(&b"from thread"[..]), Message::text("from task")]);

        // Dropping the WebSocket while open aborts: senders then get `Closed`.
        let sender = ws.sender();
        assert!(!sender.is_closed());
        drop(ws);
        assert!(sender.is_closed());
        assert_eq!(sender.try_send("after drop"), Err(SendError::Closed));
        handle.shutdown(Duration::from_secs(1)).await;
    });
}

#[test]
fn try_send_backpressure_then_send_resumes_when_the_peer_reads() {
    run(20, async {
        let (go_tx, go_rx) = smol::channel::bounded::<()>(1);
        let handle = start(quiet(), move |up: Upgrade| {
            let go_rx = go_rx.clone();
            async move {
                let Ok(mut ws) = up.accept(None, &[]).await else { return };
                // Do not read until told to: the inbound queue fills, then TCP pushes back.
                let _ = go_rx.recv().await;
                while ws.recv().await.is_ok() {}
            }
        })
        .await;
        let mut opts = ClientOptions::default();
        opts.ws.max_outbound = 64 << 10;
        let ws = connect(&url(&handle, "/"), opts).await.unwrap();
        let chunk = Message::binary(vec![7u8; 64 << 10]);
        // Fill until the outbox stays full: the driver's write batch and the socket buffers
        // take some first. The kernel may still grow its buffers (or open a zero window)
        // after a while, so a send that finished anyway just means "not full yet": fill on.
        let mut pending = None;
        for _round in 0..20 {
            let mut full_since: Option<Instant> = None;
            for _ in 0..8192 {
                match ws.try_send(chunk.clone()) {
                    Ok(()) => full_since = None,
                    Err(SendError::Backpressure(back)) => {
                        assert_eq!(back, chunk, "the message is handed back");
                        let since = *full_since.get_or_insert_with(Instant::now);
                        if since.elapsed() > Duration::from_millis(200) {
                            break;
                        }
                    }
                    Err(e) => panic!("unexpected {e:?}"),
                }
                Timer::after(Duration::from_millis(1)).await;
            }
            assert!(full_since.is_some(), "the outbox never filled");

            // A waiting send does not finish while the peer does not read...
            let sender = ws.sender();
            let send =
                smol::spawn(async move { sender.send(Message::binary(vec![1u8; 1024])).await });
            Timer::after(Duration::from_millis(300)).await;
            if !send.is_finished() {
                pending = Some(send);
                break;
            }
            send.await.unwrap();
        }
        let pending = pending.expect("send must wait while the outbox is full");
        // ...and finishes once it does.
        go_tx.send(()).await.unwrap();
        pending.await.unwrap();
        handle.shutdown(Duration::from_secs(1)).await;
    });
}

#[test]
fn auth_reject_is_401_before_any_101() {
    run(10, async {
        let handle = echo_server(quiet()).await;
        let err = connect(&url(&handle, "/auth"), ClientOptions::default()).await.unwrap_err();
        assert!(matches!(err, ConnectError::Handshake(HandshakeError::Status(401))), "got {err:?}");
        // With the token it is accepted.
        let mut ws =
            connect(&url(&handle, "/auth?token=secret"), ClientOptions::default()).await.unwrap();
        ws.send("ok").await.unwrap();
        assert_eq!(ws.recv().await.unwrap(), Message::text("ok"));
        // A Bearer header works too.
        let mut opts = ClientOptions::default();
        opts.ws.headers.push(("Authorization".into(), "Bearer secret".into()));
        connect(&url(&handle, "/auth"), opts).await.unwrap();

        // A raw peer sees the 401 and no 101.
        let mut raw = TcpStream::connect(handle.local_addr()).await.unwrap();
        raw.write_all(UPGRADE.replace("/raw", "/auth").as_bytes()).await.unwrap();
        let answer = String::from_utf8_lossy(&read_to_end(&mut raw).await).into_owned();
        assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
        assert!(answer.to_ascii_lowercase().contains("www-authenticate: bearer"), "{answer}");
        assert!(!answer.contains(" 101 "), "{answer}");
        handle.shutdown(Duration::from_secs(1)).await;
    });
}

#[test]
fn origin_403_and_subprotocol_choice() {
    run(10, async {
        let handle = echo_server(quiet()).await;
        let mut opts = ClientOptions::default();
        opts.ws.headers.push(("Origin".into(), "http://evil.example".into()));
        let err = connect(&url(&handle, "/"), opts).await.unwrap_err();
        assert!(matches!(err, ConnectError::Handshake(HandshakeError::Status(403))), "got {err:?}");

        let mut opts = ClientOptions::default();
        opts.ws.headers.push(("Origin".into(), "http://good.example".into()));
        opts.ws.protocols = vec!["c".into(), "b".into(), "a".into()];
        let ws = connect(&url(&handle, "/"), opts).await.unwrap();
        assert_eq!(ws.subprotocol(), Some("b"));

        let mut opts = ClientOptions::default();
        opts.ws.protocols = vec!["z".into()];
        let ws = connect(&url(&handle, "/"), opts).await.unwrap();
        assert_eq!(ws.subprotocol(), None);
        handle.shutdown(Duration::from_secs(1)).await;
    });
}

#[test]
fn slowloris_head_is_dropped_at_the_handshake_deadline() {
    run(10, async {
        let mut cfg = quiet();
        cfg.endpoint.head_timeout = Duration::from_secs(1);
        let handle = echo_server(cfg).await;
        let raw = TcpStream::connect(handle.local_addr()).await.unwrap();
        let start = Instant::now();
        let mut writer = raw.clone();
        let trickle = smol::spawn(async move {
            for b in UPGRADE.bytes() {
                if writer.write_all(&[b]).await.is_err() {
                    return;
                }
                Timer::after(Duration::from_millis(100)).await;
            }
        });
        let mut reader = raw;
        let answer = read_to_end(&mut reader).await;
        let elapsed = start.elapsed();
        assert!(elapsed >= Duration::from_millis(900), "closed too early: {elapsed:?}");
        assert!(elapsed < Duration::from_millis(2500), "closed too late: {elapsed:?}");
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 408"), "{answer}");
        drop(trickle);
        handle.shutdown(Duration::from_secs(1)).await;
    });
}

#[test]
fn oversized_head_gets_431() {
    run(10, async {
        let handle = echo_server(quiet()).await;
        let mut raw = TcpStream::connect(handle.local_addr()).await.unwrap();
        let big = format!("X-Big: {}\r\n", "a".repeat(20 << 10));
        let request = UPGRADE.replace("Host: 127.0.0.1\r\n", &format!("Host: 127.0.0.1\r\n{big}"));
        // The server may close before it has read everything: ignore write errors.
        let _ = raw.write_all(request.as_bytes()).await;
        let answer = String::from_utf8_lossy(&read_to_end(&mut raw).await).into_owned();
        assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
        handle.shutdown(Duration::from_secs(1)).await;
    });
}

#[test]
fn garbage_after_the_head_gets_close_1002() {
    run(10, async {
        let handle = echo_server(quiet()).await;
        let mut raw = TcpStream::connect(handle.local_addr()).await.unwrap();
        // The head and a frame with reserved opcode 0x3 (masked) in one write.
        let mut bytes = UPGRADE.as_bytes().to_vec();
        bytes.extend_from_slice(&[0x83, 0x80, 1, 2, 3, 4]);
        raw.write_all(&bytes).await.unwrap();
        let (head, mut rest) = read_head(&mut raw).await;
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        rest.extend(read_to_end(&mut raw).await);
        assert!(rest.len() >= 4, "no close frame: {rest:?}");
        assert_eq!(rest[0], 0x88, "a close frame: {rest:?}");
        assert_eq!(u16::from_be_bytes([rest[2], rest[3]]), 1002);
        handle.shutdown(Duration::from_secs(1)).await;
    });
}

#[test]
fn peer_that_stops_reading_is_ended_by_send_timeout() {
    run(15, async {
        let (info_tx, info_rx) = smol::channel::bounded(1);
        let mut cfg = quiet();
        cfg.endpoint.ws.send_timeout = Some(Duration::from_millis(500));
        cfg.endpoint.ws.max_outbound = 256 << 10;
        let handle = start(cfg, move |up: Upgrade| {
            let info_tx = info_tx.clone();
            async move {
                let Ok(mut ws) = up.accept(None, &[]).await else { return };
                let chunk = Message::binary(vec![0u8; 64 << 10]);
                let mut sent = 0usize;
                while ws.send(chunk.clone()).await.is_ok() {
                    sent += 1;
                    assert!(sent < 1024, "send never stalled: memory must stay bounded");
                }
                let Err(RecvError::Closed(info)) = ws.recv().await else { return };
                let _ = info_tx.send(info).await;
            }
        })
        .await;
        let mut raw = TcpStream::connect(handle.local_addr()).await.unwrap();
        raw.write_all(UPGRADE.as_bytes()).await.unwrap();
        let (head, _) = read_head(&mut raw).await;
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        // Never read again.
        let info = info_rx.recv().await.unwrap();
        assert_eq!(info.code, CloseCode::TOO_SLOW);
        assert_eq!(info.error, Some(ConnError::SendStalled));
        // The server's connection is gone.
        let deadline = Instant::now() + Duration::from_secs(3);
        while handle.connections() > 0 && Instant::now() < deadline {
            Timer::after(Duration::from_millis(20)).await;
        }
        assert_eq!(handle.connections(), 0);
        drop(raw);
        handle.shutdown(Duration::from_secs(1)).await;
    });
}

#[test]
fn graceful_shutdown_sends_1001_and_serve_returns() {
    run(10, async {
        let server = Server::bind("127.0.0.1:0", quiet()).await.unwrap();
        let handle = server.handle();
        let serving = smol::spawn(server.serve(|up: Upgrade| async move {
            if let Ok(ws) = up.accept(None, &[]).await {
                echo_loop(ws).await;
            }
        }));
        let mut clients = Vec::new();
        for _ in 0..3 {
            let mut ws = connect(&url(&handle, "/"), ClientOptions::default()).await.unwrap();
            ws.send("hi").await.unwrap();
            assert_eq!(ws.recv().await.unwrap(), Message::text("hi"));
            clients.push(ws);
        }
        assert_eq!(handle.connections(), 3);
        let waiters: Vec<_> =
            clients.into_iter().map(|mut ws| smol::spawn(async move { ws.recv().await })).collect();
        let report = handle.shutdown(Duration::from_secs(3)).await;
        assert_eq!(report, tidewire_smol::ShutdownReport { closed: 3, dropped: 0 });
        for w in waiters {
            let Err(RecvError::Closed(info)) = w.await else { panic!("expected Closed") };
            assert_eq!(info.code, CloseCode::GOING_AWAY);
            assert_eq!(info.reason.as_str(), "server shutdown");
        }
        serving.await.unwrap();
        assert_eq!(handle.connections(), 0);
        // No longer accepting.
        assert!(connect(&url(&handle, "/"), ClientOptions::default()).await.is_err());
        // A second call returns the same report.
        assert_eq!(handle.shutdown(Duration::from_secs(1)).await, report);
    });
}

#[test]
fn keepalive_declares_a_silent_peer_dead() {
    run(10, async {
        let (info_tx, info_rx) = smol::channel::bounded(1);
        let mut cfg = ServerConfig::default();
        cfg.endpoint.ws.keepalive =
            Some(HeartbeatConfig::ping(Duration::from_millis(200), Duration::from_millis(300)));
        let handle = start(cfg, move |up: Upgrade| {
            let info_tx = info_tx.clone();
            async move {
                let Ok(mut ws) = up.accept(None, &[]).await else { return };
                while ws.recv().await.is_ok() {}
                let _ = info_tx.send(ws.close_info()).await;
            }
        })
        .await;
        let mut raw = TcpStream::connect(handle.local_addr()).await.unwrap();
        raw.write_all(UPGRADE.as_bytes()).await.unwrap();
        let started = Instant::now();
        // Read (the pings arrive) but never answer them.
        let reader = smol::spawn(async move { read_to_end(&mut raw).await });
        let info = info_rx.recv().await.unwrap().expect("closed");
        assert_eq!(info.error, Some(ConnError::KeepaliveTimeout));
        assert!(started.elapsed() < Duration::from_secs(3));
        let bytes = reader.await;
        // The server's pings were on the wire after the 101 head.
        let at = bytes.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        assert_eq!(bytes.get(at), Some(&0x89), "a ping frame follows the head");
        handle.shutdown(Duration::from_secs(1)).await;
    });
}

#[test]
fn max_connections_drops_the_extra_connection() {
    run(10, async {
        let mut cfg = quiet();
        cfg.max_connections = 1;
        let handle = echo_server(cfg).await;
        let _first = connect(&url(&handle, "/"), ClientOptions::default()).await.unwrap();
        let second = connect(&url(&handle, "/"), ClientOptions::default()).await;
        assert!(second.is_err(), "the second connection must be dropped");
        assert_eq!(handle.connections(), 1);
        handle.shutdown(Duration::from_secs(1)).await;
    });
}

#[test]
fn connect_errors() {
    run(10, async {
        assert!(matches!(
            connect("http://127.0.0.1:1/", ClientOptions::default()).await,
            Err(ConnectError::Url(_))
        ));
        assert!(matches!(
            connect("not a url", ClientOptions::default()).await,
            Err(ConnectError::Url(_))
        ));
        // Nothing listens on a just-closed port.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        assert!(matches!(
            connect(&format!("ws://127.0.0.1:{port}/"), ClientOptions::default()).await,
            Err(ConnectError::Io(_))
        ));
    });
}

#[test]
fn one_thread_executor_runs_every_task_of_server_and_client() {
    let ex = Arc::new(Executor::new());
    let test_thread = std::thread::current().id();
    let mut cfg = quiet();
    cfg.executor = Some(ex.clone());
    let mut opts = ClientOptions::default();
    opts.executor = Some(ex.clone());
    let (mut ws, handle, serving) = smol::block_on(ex.run(async {
        let server = Server::bind("127.0.0.1:0", cfg).await.unwrap();
        let handle = server.handle();
        let serving = ex.spawn(server.serve(move |up: Upgrade| async move {
            // The handshake task (and so the handler) runs on the test's executor.
            assert_eq!(std::thread::current().id(), test_thread);
            let Ok(ws) = up.accept(None, &[]).await else { return };
            echo_loop(ws).await;
        }));
        let mut ws = connect(&url(&handle, "/"), opts).await.unwrap();
        ws.send(Message::text("one")).await.unwrap();
        assert_eq!(ws.recv().await.unwrap(), Message::text("one"));
        (ws, handle, serving)
    }));
    // While nobody runs the executor, the drivers (on it) cannot move the message.
    smol::block_on(async {
        ws.send(Message::text("two")).await.unwrap();
        let early = future::or(async { Some(ws.recv().await) }, async {
            Timer::after(Duration::from_millis(200)).await;
            None
        })
        .await;
        assert!(early.is_none(), "answered without the executor: {early:?}");
    });
    smol::block_on(ex.run(async {
        assert_eq!(ws.recv().await.unwrap(), Message::text("two"));
        ws.close(CloseCode::NORMAL, "").unwrap();
        assert!(matches!(ws.recv().await, Err(RecvError::Closed(info)) if info.clean));
        let report = handle.shutdown(Duration::from_secs(2)).await;
        assert_eq!(report.dropped, 0);
        serving.await.unwrap();
    }));
}

/// A server made of the bare core on a blocking socket, which keeps TCP open for `hold`
/// after its close handshake (or for good when `hold` is `None`).
fn lingering_server(hold: Option<Duration>) -> std::net::SocketAddr {
    use std::io::{Read, Write};
    use tidewire::ws::{WsConfig, WsConnection, WsEvent};
    use tidewire::{Machine, Transmit};

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let (mut sock, _) = listener.accept().unwrap();
        let mut cfg = WsConfig::default();
        cfg.keepalive = None;
        let mut conn = WsConnection::server(cfg, Instant::now());
        let mut buf = [0u8; 4096];
        loop {
            while let Some(ev) = conn.poll_event() {
                if let WsEvent::UpgradeRequested(_) = ev {
                    conn.accept(Instant::now(), None, &[]).unwrap();
                }
            }
            while let Some(t) = conn.poll_transmit() {
                match t {
                    Transmit::Bytes(b) => sock.write_all(&b).unwrap(),
                    Transmit::Shutdown => {
                        match hold {
                            Some(hold) => std::thread::sleep(hold),
                            None => std::thread::sleep(Duration::from_secs(30)),
                        }
                        let _ = sock.shutdown(std::net::Shutdown::Both);
                        return;
                    }
                    _ => {}
                }
            }
            match sock.read(&mut buf) {
                Ok(0) | Err(_) => conn.handle_eof(Instant::now()),
                Ok(n) => conn.handle_read(Instant::now(), &buf[..n]),
            }
        }
    });
    addr
}

#[test]
fn client_reports_closed_only_after_the_server_ends_tcp() {
    run(10, async {
        let addr = lingering_server(Some(Duration::from_millis(300)));
        let mut ws = connect(&format!("ws://{addr}/"), ClientOptions::default()).await.unwrap();
        ws.close(CloseCode::NORMAL, "bye").unwrap();
        let start = Instant::now();
        let Err(RecvError::Closed(info)) = ws.recv().await else { panic!("not closed") };
        let waited = start.elapsed();
        assert!(info.clean, "{info:?}");
        assert!(waited >= Duration::from_millis(250), "Closed before the server's EOF: {waited:?}");
        assert!(ws.close_info().is_some());
    });
}

#[test]
fn client_waits_for_the_server_at_most_close_timeout() {
    run(10, async {
        let addr = lingering_server(None);
        let mut opts = ClientOptions::default();
        opts.ws.close_timeout = Duration::from_millis(300);
        let mut ws = connect(&format!("ws://{addr}/"), opts).await.unwrap();
        ws.close(CloseCode::NORMAL, "").unwrap();
        let start = Instant::now();
        assert!(matches!(ws.recv_event().await, Event::Closed(info) if info.clean));
        let waited = start.elapsed();
        assert!(waited >= Duration::from_millis(250), "{waited:?}");
        assert!(waited < Duration::from_secs(3), "{waited:?}");
        // And again on every later call.
        assert!(matches!(ws.recv().await, Err(RecvError::Closed(_))));
    });
}
