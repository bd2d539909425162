//! A `WsConnection` driven by an arbitrary list of operations: bytes from the peer, time
//! passing, application commands, end of file.
//!
//! Invariants: no panic; `Closed` at most once, and nothing but teardown after it; nothing
//! after `Transmit::Shutdown`; the outbound queue stays within its limit; `poll_timeout`
//! never lies in the past after `handle_timeout`.
#![no_main]

use arbitrary::Arbitrary;
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use tidewire::ws::{CloseCode, Message, WsConfig, WsConnection, WsEvent};
use tidewire::{Duration, Instant, Machine, Transmit};

#[derive(Arbitrary, Debug)]
enum Op {
    Read(Vec<u8>),
    Advance(u16),
    SendText(String),
    SendBinary(Vec<u8>),
    Ping(Vec<u8>),
    Close(u16, String),
    Accept(bool),
    Reject(u16),
    Eof,
}

#[derive(Arbitrary, Debug)]
struct Input {
    client: bool,
    keepalive: bool,
    /// A valid prefix (request or response head) so the fuzzer reaches the open state.
    valid_head: bool,
    ops: Vec<Op>,
}

const SERVER_HEAD: &[u8] = b"GET /x HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

fuzz_target!(|input: Input| {
    let t0 = Instant::now();
    let mut now = t0;
    let mut cfg = WsConfig::default();
    cfg.max_frame = 1024;
    cfg.max_message = 4096;
    cfg.max_handshake = 1024;
    cfg.max_outbound = 8192;
    if !input.keepalive {
        cfg.keepalive = None;
    }
    let max_outbound = cfg.max_outbound;
    let max_message = cfg.max_message;
    let mut conn = if input.client {
        match WsConnection::client(cfg, "h", "/", now) {
            Ok(c) => c,
            Err(_) => return,
        }
    } else {
        WsConnection::server(cfg, now)
    };
    if input.valid_head && !input.client {
        conn.handle_read(now, SERVER_HEAD);
    }
    let mut closed = 0;
    let mut shut = false;
    for op in input.ops {
        match op {
            Op::Read(b) => conn.handle_read(now, &b),
            Op::Advance(ms) => {
                now += Duration::from_millis(u64::from(ms) * 10);
                conn.handle_timeout(now);
                if let Some(t) = conn.poll_timeout() {
                    assert!(t > now, "deadline {t:?} not after handle_timeout({now:?})");
                }
            }
            Op::SendText(s) => drop(conn.send(now, Message::text(s))),
            Op::SendBinary(b) => drop(conn.send(now, Message::binary(b))),
            Op::Ping(b) => drop(conn.ping(now, Bytes::from(b))),
            Op::Close(code, reason) => drop(conn.close(now, CloseCode(code), &reason)),
            Op::Accept(proto) => drop(conn.accept(now, proto.then_some("chat"), &[])),
            Op::Reject(status) => drop(conn.reject(now, status, &[], b"no")),
            Op::Eof => conn.handle_eof(now),
        }
        assert!(conn.buffered_amount() <= max_outbound + max_message + 4096);
        while let Some(t) = conn.poll_transmit() {
            assert!(!shut, "transmit after shutdown");
            if t == Transmit::Shutdown {
                shut = true;
            }
        }
        while let Some(ev) = conn.poll_event() {
            if matches!(ev, WsEvent::Closed(_)) {
                closed += 1;
                assert_eq!(closed, 1, "Closed emitted twice");
            }
        }
    }
});
