//! Misbehaving peers against the server: slowloris, oversized heads, garbage, a reader that
//! stops, a peer that never answers pings, and many connections dropped mid-handshake.

mod common;

use std::io::Write as _;
use std::net::TcpStream;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{
    TestServer, echo, raw, raw_upgraded, read_frame, read_head, read_to_end_lossy, request, within,
};
use tidewire_std::tidewire::policy::HeartbeatConfig;
use tidewire_std::tidewire::ws::ConnError;
use tidewire_std::{CloseCode, CloseInfo, ServerConfig, Upgrade};

/// The thread and fd census needs the process to itself: it takes this for writing, every
/// other test for reading.
static CENSUS: std::sync::RwLock<()> = std::sync::RwLock::new(());

fn shared() -> std::sync::RwLockReadGuard<'static, ()> {
    CENSUS.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Accepts, receives until the end, and reports how the connection ended.
fn reporting(tx: mpsc::Sender<CloseInfo>) -> impl Fn(Upgrade) + Send + Sync + 'static {
    let tx = std::sync::Mutex::new(tx);
    move |up: Upgrade| {
        let Ok(mut ws) = up.accept(None, &[]) else { return };
        let info = common::recv_until_closed(&mut ws);
        let _ = tx.lock().unwrap().send(info);
    }
}

#[test]
fn a_head_trickling_in_is_cut_off_at_the_handshake_deadline() {
    let _census = shared();
    within(10, || {
        let mut cfg = ServerConfig::default();
        cfg.endpoint.head_timeout = Duration::from_secs(1); // the core reads heads now
        let server = TestServer::start(cfg, echo);
        let mut s = raw(server.addr);
        let mut writer = s.try_clone().unwrap();
        let start = Instant::now();
        let trickle = std::thread::spawn(move || {
            // 100 bytes at one per 100 ms: the head would take 10 s.
            for b in
                request("/", "X-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n").bytes().take(100)
            {
                if writer.write_all(&[b]).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        let got = read_to_end_lossy(&mut s);
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(900) && took < Duration::from_millis(2500),
            "{took:?}"
        );
        let text = String::from_utf8_lossy(&got);
        assert!(got.is_empty() || text.starts_with("HTTP/1.1 408"), "{text}");
        trickle.join().unwrap();
    });
}

#[test]
fn an_oversized_head_gets_431() {
    let _census = shared();
    within(10, || {
        let server = TestServer::start(ServerConfig::default(), echo);
        let mut s = raw(server.addr);
        let huge = format!("X-Big: {}\r\n", "a".repeat(20 << 10));
        // The server may answer before reading it all: ignore a write failure.
        let _ = s.write_all(request("/", &huge).as_bytes());
        let head = read_head(&mut s).unwrap();
        assert!(head.starts_with("HTTP/1.1 431"), "{head}");
    });
}

#[test]
fn garbage_after_the_head_is_answered_with_close_1002() {
    let _census = shared();
    within(10, || {
        let (tx, rx) = mpsc::channel();
        let server = TestServer::start(ServerConfig::default(), reporting(tx));
        let mut s = raw(server.addr);
        let mut bytes = request("/", "").into_bytes();
        bytes.extend_from_slice(&[0xff; 16]); // FIN + all RSV bits + opcode 0xF
        s.write_all(&bytes).unwrap();
        let head = read_head(&mut s).unwrap();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        let (opcode, payload) = read_frame(&mut s).unwrap();
        assert_eq!(opcode, 0x8);
        assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), 1002);
        let info = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(info.code, CloseCode::PROTOCOL_ERROR);
        assert!(!info.clean);
    });
}

#[test]
fn a_peer_that_stops_reading_ends_by_send_timeout_with_bounded_memory() {
    let _census = shared();
    within(15, || {
        const MAX_OUTBOUND: usize = 256 << 10;
        const CHUNK: usize = 64 << 10;
        let (tx, rx) = mpsc::channel();
        let mut cfg = ServerConfig::default();
        cfg.endpoint.ws.keepalive = None; // only the outbox policy may end it
        cfg.endpoint.ws.send_timeout = Some(Duration::from_millis(500));
        cfg.endpoint.ws.max_outbound = MAX_OUTBOUND;
        let tx = std::sync::Mutex::new(tx);
        let server = TestServer::start(cfg, move |up: Upgrade| {
            let Ok(mut ws) = up.accept(None, &[]) else { return };
            let sender = ws.sender();
            let pushing = std::thread::spawn(move || {
                let payload = tidewire_std::Bytes::from(vec![0u8; CHUNK]);
                let mut max_buffered = 0;
                let mut sent = 0usize;
                let err = loop {
                    if let Err(e) = sender.send(payload.clone()) {
                        break e;
                    }
                    sent += 1;
                    max_buffered = max_buffered.max(sender.buffered_amount());
                };
                (err, sent, max_buffered)
            });
            let start = Instant::now();
            let info = common::recv_until_closed(&mut ws);
            let took = start.elapsed();
            let pushed = pushing.join().unwrap();
            let _ = tx.lock().unwrap().send((info, took, pushed));
        });
        let _peer = raw_upgraded(server.addr); // completes the upgrade, then never reads
        let (info, took, (err, sent, max_buffered)) = rx.recv().unwrap();
        assert_eq!(info.code, CloseCode::TOO_SLOW, "{info:?}");
        assert_eq!(info.error, Some(ConnError::SendStalled));
        assert!(!info.clean);
        assert_eq!(err, tidewire_std::SendError::Closed);
        assert!(max_buffered <= MAX_OUTBOUND + CHUNK, "outbox grew to {max_buffered}");
        assert!(sent > 0);
        assert!(took < Duration::from_secs(8), "{took:?}");
    });
}

#[test]
fn a_peer_that_never_answers_pings_is_declared_dead() {
    let _census = shared();
    within(10, || {
        let (tx, rx) = mpsc::channel();
        let mut cfg = ServerConfig::default();
        cfg.endpoint.ws.keepalive =
            Some(HeartbeatConfig::ping(Duration::from_millis(200), Duration::from_millis(300)));
        let server = TestServer::start(cfg, reporting(tx));
        let mut peer = raw_upgraded(server.addr);
        let start = Instant::now();
        // The peer reads (and so sees the ping) but never answers anything.
        let (opcode, _) = read_frame(&mut peer).unwrap();
        assert_eq!(opcode, 0x9);
        let info = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        let took = start.elapsed();
        assert_eq!(info.error, Some(ConnError::KeepaliveTimeout));
        assert!(took < Duration::from_secs(2), "{took:?}");
        // The server shut the socket down.
        let _ = read_to_end_lossy(&mut peer);
    });
}

#[test]
fn a_thousand_connections_dropped_mid_handshake_leave_nothing_behind() {
    let _census = CENSUS.write().unwrap_or_else(std::sync::PoisonError::into_inner);
    within(20, || {
        let server = TestServer::start(ServerConfig::default(), echo);
        // Warm up: one complete connection, so lazily created things exist before counting.
        drop(raw_upgraded(server.addr));
        settle(|| server.handle.connections() == 0);
        let (threads_before, fds_before) = (common::proc_count("task"), common::proc_count("fd"));
        let partial = &request("/", "")[..40];
        for _ in 0..10 {
            let batch: Vec<TcpStream> = (0..100)
                .map(|_| {
                    let mut s = TcpStream::connect(server.addr).unwrap();
                    let _ = s.write_all(partial.as_bytes());
                    s
                })
                .collect();
            drop(batch);
        }
        settle(|| server.handle.connections() == 0);
        assert_eq!(server.handle.connections(), 0);
        settle(|| {
            common::proc_count("task") <= threads_before + 2
                && common::proc_count("fd") <= fds_before + 2
        });
        let (threads_after, fds_after) = (common::proc_count("task"), common::proc_count("fd"));
        assert!(threads_after <= threads_before + 2, "threads {threads_before} -> {threads_after}");
        assert!(fds_after <= fds_before + 2, "fds {fds_before} -> {fds_after}");
        // Still serving.
        drop(raw_upgraded(server.addr));
    });
}

/// Waits (at most 5 s) until `done` holds.
fn settle(done: impl Fn() -> bool) {
    let start = Instant::now();
    while !done() && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_close_from_another_thread_ends_a_blocked_receiver_at_the_close_timeout() {
    let _census = shared();
    within(10, || {
        let (tx, rx) = mpsc::channel();
        let mut cfg = ServerConfig::default();
        // No keepalive: the receiving thread blocks in `read` with no deadline at all.
        cfg.endpoint.ws.keepalive = None;
        cfg.endpoint.ws.close_timeout = Duration::from_millis(300);
        let server = TestServer::start(cfg, move |up: Upgrade| {
            let Ok(mut ws) = up.accept(None, &[]) else { return };
            let sender = ws.sender();
            let closer = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(200));
                sender.close(CloseCode::NORMAL, "bye").unwrap();
            });
            let info = common::recv_until_closed(&mut ws);
            closer.join().unwrap();
            let _ = tx.send((info, Instant::now()));
        });
        // The peer reads the close frame but never answers it.
        let mut peer = raw_upgraded(server.addr);
        let (opcode, _) = read_frame(&mut peer).unwrap();
        let closed_at = Instant::now();
        assert_eq!(opcode, 0x8);
        let (info, ended) = rx.recv_timeout(Duration::from_secs(5)).expect("the receiver ended");
        assert_eq!(info.code, CloseCode::NORMAL, "{info:?}");
        assert!(!info.clean);
        let took = ended - closed_at;
        assert!(took < Duration::from_secs(2), "{took:?}");
        let _ = read_to_end_lossy(&mut peer);
    });
}
