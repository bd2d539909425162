//! A `WsConnection` driven by an arbitrary list of operations: bytes from the peer (raw, or
//! as well-formed frame headers around arbitrary payloads), time passing, application
//! commands, end of file.
//!
//! Invariants: no panic; `Closed` at most once, and after it no other event and no new bytes
//! to write (only the `Shutdown`); nothing after `Transmit::Shutdown`; the outbound queue
//! stays within its limit; `poll_timeout` never lies in the past; what is written after the
//! head (a request, or a 101) is whole frames the peer decodes and reassembles without error,
//! and nothing follows a close frame.
#![no_main]

use arbitrary::Arbitrary;
use bytes::{Buf, Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use tidewire::ws::frame::{FrameDecoder, OpCode, Role};
use tidewire::ws::handshake::accept_key;
use tidewire::ws::reassemble::Reassembler;
use tidewire::ws::{CloseCode, Message, WsConfig, WsConnection, WsEvent};
use tidewire::{Duration, Instant, Machine, Transmit};

#[derive(Arbitrary, Debug)]
enum Op {
    /// Raw bytes from the peer.
    Read(Vec<u8>),
    /// One frame from the peer with a valid length encoding, masked as the peer's role
    /// requires; the first byte (FIN, RSV, opcode) is arbitrary.
    Frame {
        b0: u8,
        key: [u8; 4],
        payload: Vec<u8>,
    },
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
    /// Start with a valid head (a request to a server, the matching 101 to a client) so the
    /// fuzzer reaches the open state.
    valid_head: bool,
    ops: Vec<Op>,
}

const SERVER_HEAD: &[u8] = b"GET /x HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\
    Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
    Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: chat\r\n\r\n";

/// The peer's frame: header with the shortest length form, payload masked when `masked`.
fn frame(b0: u8, key: [u8; 4], payload: &[u8], masked: bool) -> Vec<u8> {
    let mut out = vec![b0];
    let mask_bit = if masked { 0x80 } else { 0 };
    match payload.len() {
        n @ 0..=125 => out.push(mask_bit | n as u8),
        n @ 126..=0xffff => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    if masked {
        out.extend_from_slice(&key);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    } else {
        out.extend_from_slice(payload);
    }
    out
}

/// The 101 answering the client's request in `request` (found by its key).
fn response_to(request: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(request).ok()?;
    let key = text.lines().find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))?.trim();
    Some(
        format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {}\r\n\r\n",
            accept_key(key)
        )
        .into_bytes(),
    )
}

/// The peer's view of the bytes written: the head, then (after a request or a 101) frames.
struct Wire {
    /// The role of the connection under test.
    role: Role,
    buf: BytesMut,
    /// `None` until the head is complete; then whether frames follow it.
    frames_follow: Option<bool>,
    decoder: FrameDecoder,
    reassembler: Reassembler,
    close_seen: bool,
}

impl Wire {
    fn new(role: Role) -> Self {
        let peer = match role {
            Role::Client => Role::Server,
            Role::Server => Role::Client,
        };
        Self {
            role,
            buf: BytesMut::new(),
            frames_follow: None,
            decoder: FrameDecoder::new(peer),
            reassembler: Reassembler::new(usize::MAX),
            close_seen: false,
        }
    }

    /// Takes everything drained after one input; it must end on a frame boundary.
    fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
        if self.frames_follow.is_none() {
            let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                return;
            };
            let follow = match self.role {
                Role::Client => true,
                Role::Server => self.buf.starts_with(b"HTTP/1.1 101 "),
            };
            self.buf.advance(end + 4);
            self.frames_follow = Some(follow);
        }
        if self.frames_follow != Some(true) {
            self.buf.clear();
            return;
        }
        while let Some(frame) =
            self.decoder.decode(&mut self.buf, usize::MAX >> 1).expect("written frames decode")
        {
            assert!(!self.close_seen, "frame after a close frame: {frame:?}");
            self.close_seen = frame.opcode == OpCode::Close;
            self.reassembler.push(frame).expect("written frames reassemble");
        }
        assert!(self.buf.is_empty(), "a partial frame is left after draining: {:?}", self.buf);
    }
}

struct Checker {
    wire: Wire,
    closed: bool,
    shut: bool,
    /// `Closed` was seen and everything queued until then was drained.
    drained_after_close: bool,
}

impl Checker {
    /// Drains both queues, checking the invariants; returns the bytes written.
    fn drain(&mut self, conn: &mut WsConnection) -> Vec<u8> {
        let mut written = Vec::new();
        while let Some(t) = conn.poll_transmit() {
            assert!(!self.shut, "transmit after shutdown: {t:?}");
            match t {
                Transmit::Bytes(b) => {
                    assert!(!self.drained_after_close, "new bytes after Closed: {b:?}");
                    written.extend_from_slice(&b);
                }
                Transmit::Shutdown => self.shut = true,
                _ => {}
            }
        }
        self.wire.feed(&written);
        while let Some(ev) = conn.poll_event() {
            assert!(!self.closed, "event after Closed: {ev:?}");
            if matches!(ev, WsEvent::Closed(_)) {
                self.closed = true;
            }
        }
        // Bytes queued by the input that emitted `Closed` (e.g. the close frame) are fine;
        // from the next input on, nothing new may be written.
        if self.closed {
            self.drained_after_close = true;
        }
        written
    }
}

fuzz_target!(|input: Input| {
    let t0 = Instant::now();
    let mut now = t0;
    let mut cfg = WsConfig::default();
    cfg.max_frame = 1024;
    cfg.max_message = 4096;
    cfg.max_handshake = 1024;
    cfg.max_outbound = 8192;
    cfg.protocols = vec!["chat".to_owned()];
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
    let mut check = Checker {
        wire: Wire::new(conn.role()),
        closed: false,
        shut: false,
        drained_after_close: false,
    };
    let written = check.drain(&mut conn);
    if input.valid_head {
        if input.client {
            let response = response_to(&written).expect("the client's request has a key");
            conn.handle_read(now, &response);
        } else {
            conn.handle_read(now, SERVER_HEAD);
        }
        check.drain(&mut conn);
    }
    for op in input.ops {
        match op {
            Op::Read(b) => conn.handle_read(now, &b),
            Op::Frame { b0, key, payload } => {
                conn.handle_read(now, &frame(b0, key, &payload, !input.client));
            }
            Op::Advance(ms) => {
                now += Duration::from_millis(u64::from(ms) * 10);
                conn.handle_timeout(now);
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
        if let Some(t) = conn.poll_timeout() {
            assert!(t > now, "deadline {t:?} not after now ({now:?})");
        }
        check.drain(&mut conn);
    }
});
