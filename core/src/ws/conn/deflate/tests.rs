//! permessage-deflate through `WsConnection`: negotiation between a client and a server,
//! compressed messages both ways, the limits, the failure codes, split invariance and the
//! idle cost. All in virtual time.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

use crate::machine::{Machine, Transmit};
use crate::time::{Instant, test_epoch};
use crate::ws::close::CloseCode;
use crate::ws::deflate::{DeflateConfig, DeflateParams, PreparedMessage, RSV1, compress_message};
use crate::ws::error::{ConnError, HandshakeError, ProtocolError};
use crate::ws::frame::{Frame, FrameDecoder, OpCode, Role, encode};
use crate::ws::handshake::accept_key;
use crate::ws::{Message, WsConfig, WsConnection, WsEvent, WsState};

fn cfg(deflate: Option<DeflateConfig>) -> WsConfig {
    let mut c = WsConfig { keepalive: None, ..WsConfig::default() };
    c.deflate = deflate;
    c
}

fn transmits(conn: &mut WsConnection) -> Vec<u8> {
    let mut bytes = Vec::new();
    while let Some(t) = conn.poll_transmit() {
        if let Transmit::Bytes(b) = t {
            bytes.extend_from_slice(&b);
        }
    }
    bytes
}

fn events(conn: &mut WsConnection) -> Vec<WsEvent> {
    std::iter::from_fn(|| conn.poll_event()).collect()
}

fn messages(evs: &[WsEvent]) -> Vec<Message> {
    evs.iter()
        .filter_map(|e| match e {
            WsEvent::Message(m) => Some(m.clone()),
            _ => None,
        })
        .collect()
}

fn closed(evs: &[WsEvent]) -> Option<&crate::ws::CloseInfo> {
    evs.iter().find_map(|e| match e {
        WsEvent::Closed(i) => Some(i),
        _ => None,
    })
}

/// A client and a server after the handshake (both `Open` drained).
fn pair(client: WsConfig, server: WsConfig) -> (WsConnection, WsConnection, Instant) {
    let t0 = test_epoch();
    let mut c = WsConnection::client(client, "example.com", "/", t0).unwrap();
    let mut s = WsConnection::server(server, t0);
    s.handle_read(t0, &transmits(&mut c));
    assert!(matches!(s.poll_event(), Some(WsEvent::UpgradeRequested(_))));
    s.accept(t0, None, &[]).unwrap();
    c.handle_read(t0, &transmits(&mut s));
    assert!(matches!(s.poll_event(), Some(WsEvent::Open { .. })));
    assert!(matches!(c.poll_event(), Some(WsEvent::Open { .. })), "client did not open");
    (c, s, t0)
}

/// The frames in `bytes` as the receiving side decodes them (RSV1 allowed).
fn frames(bytes: &[u8], receiver: Role) -> Vec<Frame> {
    let mut dec = FrameDecoder::new(receiver).with_allowed_rsv(RSV1);
    let mut buf = BytesMut::from(bytes);
    let mut out = Vec::new();
    while let Some(f) = dec.decode(&mut buf, usize::MAX >> 1).unwrap() {
        out.push(f);
    }
    assert!(buf.is_empty());
    out
}

/// Compressible test data: JSON-like text of `n` bytes.
fn json_like(n: usize, seed: u64) -> String {
    let mut s = String::with_capacity(n + 64);
    let mut x = seed;
    while s.len() < n {
        x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        s.push_str(&format!(
            "{{\"user\":\"u{}\",\"text\":\"hello {}\",\"ts\":{}}},",
            x % 97,
            x % 1013,
            x >> 40
        ));
    }
    s.truncate(n);
    s
}

#[test]
fn negotiated_both_ways_with_the_same_params() {
    let (c, s, _) = pair(cfg(Some(DeflateConfig::default())), cfg(Some(DeflateConfig::default())));
    assert_eq!(c.deflate_params(), Some(DeflateParams::default()));
    assert_eq!(s.deflate_params(), Some(DeflateParams::default()));
    let (c, s, _) = pair(cfg(Some(DeflateConfig::default())), cfg(None));
    assert_eq!(
        (c.deflate_params(), s.deflate_params()),
        (None, None),
        "server without deflate declines"
    );
    let (c, s, _) = pair(cfg(None), cfg(Some(DeflateConfig::default())));
    assert_eq!((c.deflate_params(), s.deflate_params()), (None, None), "nothing offered");
}

#[test]
fn messages_round_trip_in_every_mode_and_size() {
    let configs = [
        (DeflateConfig::default(), DeflateConfig::default()),
        (DeflateConfig::no_context_takeover(), DeflateConfig::default()),
        (DeflateConfig::default(), DeflateConfig::no_context_takeover()),
        (
            DeflateConfig {
                server_max_window_bits: 9,
                client_max_window_bits: 10,
                ..DeflateConfig::default()
            },
            DeflateConfig {
                memory: crate::ws::deflate::DeflateMemory::PerMessage,
                ..DeflateConfig::no_context_takeover()
            },
        ),
        (
            DeflateConfig { level: 1, min_size: 0, ..DeflateConfig::default() },
            DeflateConfig { level: 9, min_size: 0, ..DeflateConfig::default() },
        ),
    ];
    let sizes = [0usize, 1, 100, 255, 256, 1000, 4096, 65_536, 1 << 20];
    for (i, (client_cfg, server_cfg)) in configs.into_iter().enumerate() {
        for fragment in [None, Some(1000)] {
            let mut client = cfg(Some(client_cfg.clone()));
            let mut server = cfg(Some(server_cfg.clone()));
            client.max_send_fragment = fragment;
            server.max_send_fragment = fragment;
            client.max_outbound = 16 << 20;
            server.max_outbound = 16 << 20;
            let (mut c, mut s, t) = pair(client, server);
            let sent: Vec<Message> = sizes
                .iter()
                .enumerate()
                .map(|(k, &n)| {
                    if k % 2 == 0 {
                        Message::text(json_like(n, k as u64))
                    } else {
                        Message::binary(json_like(n, k as u64).into_bytes())
                    }
                })
                .collect();
            for m in &sent {
                c.send(t, m.clone()).unwrap();
                s.send(t, m.clone()).unwrap();
            }
            let up = transmits(&mut c);
            let down = transmits(&mut s);
            let plain: usize = sizes.iter().sum();
            assert!(up.len() < plain / 2, "config {i}: client bytes {} not compressed", up.len());
            assert!(
                down.len() < plain / 2,
                "config {i}: server bytes {} not compressed",
                down.len()
            );
            s.handle_read(t, &up);
            c.handle_read(t, &down);
            assert_eq!(
                messages(&events(&mut s)),
                sent,
                "config {i} fragment {fragment:?}: client → server"
            );
            assert_eq!(
                messages(&events(&mut c)),
                sent,
                "config {i} fragment {fragment:?}: server → client"
            );
        }
    }
}

#[test]
fn rsv1_on_the_first_frame_only_and_small_messages_go_plain() {
    let mut server = cfg(Some(DeflateConfig::default()));
    server.max_send_fragment = Some(50);
    let (_, mut s, t) = pair(cfg(Some(DeflateConfig::default())), server);
    s.send(t, Message::text(json_like(100, 1))).unwrap(); // under min_size: plain
    s.send(t, Message::text(json_like(5000, 2))).unwrap();
    let f = frames(&transmits(&mut s), Role::Client);
    assert_eq!((f[0].opcode, f[0].rsv, f[0].fin), (OpCode::Text, 0, false));
    assert_eq!((f[1].opcode, f[1].rsv, f[1].fin), (OpCode::Continuation, 0, true));
    let big: Vec<&Frame> = f[2..].iter().collect();
    assert_eq!((big[0].opcode, big[0].rsv), (OpCode::Text, RSV1));
    assert!(big.len() > 2);
    assert!(big[1..].iter().all(|fr| fr.rsv == 0 && fr.opcode == OpCode::Continuation));
}

/// Feeds `wire` to a fresh server of `pair(client, server)` in pieces cut at `cuts`.
fn feed_cut(
    client: &WsConfig,
    server: &WsConfig,
    sent: &[Message],
    cuts: &[usize],
) -> Vec<WsEvent> {
    let (mut c, mut s, t) = pair(client.clone(), server.clone());
    for m in sent {
        c.send(t, m.clone()).unwrap();
    }
    let wire = transmits(&mut c);
    let mut at = 0;
    for &cut in cuts {
        let cut = cut % (wire.len() + 1);
        if cut > at {
            s.handle_read(t, &wire[at..cut]);
            at = cut;
        }
    }
    s.handle_read(t, &wire[at..]);
    events(&mut s)
}

fn split_setup() -> (WsConfig, WsConfig, Vec<Message>) {
    let mut client = cfg(Some(DeflateConfig { min_size: 0, ..DeflateConfig::default() }));
    client.max_send_fragment = Some(97);
    let server = cfg(Some(DeflateConfig::default()));
    let sent = vec![
        Message::text(json_like(300, 1)),
        Message::text(""),
        Message::binary(json_like(2000, 2).into_bytes()),
        Message::text(json_like(300, 1)),
        Message::text("\u{1f600} \u{3ba}\u{1f79}\u{3c3}\u{3bc}\u{3b5}".repeat(40)),
    ];
    (client, server, sent)
}

#[test]
fn split_invariance_whole_and_byte_by_byte() {
    let (client, server, sent) = split_setup();
    let whole = feed_cut(&client, &server, &sent, &[]);
    assert_eq!(messages(&whole), sent);
    let (mut c, _, t) = pair(client.clone(), server.clone());
    for m in &sent {
        c.send(t, m.clone()).unwrap();
    }
    let n = transmits(&mut c).len();
    let every: Vec<usize> = (1..n).collect();
    assert_eq!(feed_cut(&client, &server, &sent, &every), whole);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn split_invariance_random_cuts(mut cuts in proptest::collection::vec(0usize..10_000, 0..40)) {
        let (client, server, sent) = split_setup();
        cuts.sort_unstable();
        let whole = feed_cut(&client, &server, &sent, &[]);
        prop_assert_eq!(feed_cut(&client, &server, &sent, &cuts), whole);
    }
}

#[test]
fn a_bad_answer_fails_the_client_with_1010() {
    for (answer, error) in [
        ("permessage-deflate; server_max_window_bits=16", HandshakeError::InvalidExtension),
        ("permessage-deflate; client_max_window_bits", HandshakeError::InvalidExtension),
        ("permessage-deflate; x=1", HandshakeError::InvalidExtension),
        ("permessage-deflate, permessage-deflate", HandshakeError::UnexpectedExtension),
        ("x-webkit-deflate-frame", HandshakeError::UnexpectedExtension),
    ] {
        let t0 = test_epoch();
        let mut c =
            WsConnection::client(cfg(Some(DeflateConfig::default())), "h", "/", t0).unwrap();
        let request = String::from_utf8(transmits(&mut c)).unwrap();
        assert!(
            request.contains(
                "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
            )
        );
        let key = request.lines().find_map(|l| l.strip_prefix("Sec-WebSocket-Key: ")).unwrap();
        let response = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {}\r\nSec-WebSocket-Extensions: {answer}\r\n\r\n",
            accept_key(key)
        );
        c.handle_read(t0, response.as_bytes());
        let evs = events(&mut c);
        let info = closed(&evs).expect("closed");
        assert_eq!(info.code, CloseCode::MANDATORY_EXTENSION, "{answer}");
        assert_eq!(info.error, Some(ConnError::Handshake(error)), "{answer}");
        assert!(!evs.iter().any(|e| matches!(e, WsEvent::Open { .. })));
        let f = frames(&transmits(&mut c), Role::Server);
        assert_eq!(f.len(), 1);
        assert_eq!((f[0].opcode, &f[0].payload[..]), (OpCode::Close, &1010u16.to_be_bytes()[..]));
        assert_eq!(c.state(), WsState::Closed);
    }
}

/// A masked client frame.
fn client_frame(fin: bool, rsv: u8, opcode: OpCode, payload: &[u8]) -> Vec<u8> {
    let mut out = BytesMut::new();
    encode(
        &Frame::new(fin, opcode, Bytes::copy_from_slice(payload)).with_rsv(rsv),
        Some([9, 8, 7, 6]),
        &mut out,
    );
    out.to_vec()
}

/// What an open server (deflate negotiated or not) makes of `wire`.
fn server_reads(deflate: bool, max_message: usize, wire: &[u8]) -> Vec<WsEvent> {
    let d = deflate.then(DeflateConfig::default);
    let mut server = cfg(d.clone());
    server.max_message = max_message;
    let (_, mut s, t) = pair(cfg(d), server);
    s.handle_read(t, wire);
    events(&mut s)
}

fn close_code(evs: &[WsEvent]) -> Option<(CloseCode, Option<ConnError>)> {
    closed(evs).map(|i| (i.code, i.error))
}

#[test]
fn rsv1_rules_and_close_codes() {
    let hello = compress_message(b"Hello, hello, hello", 15, 6).unwrap();
    let fail = |e: ProtocolError| Some((e.close_code(), Some(ConnError::Protocol(e))));
    // Fine: a compressed text, also fragmented with a ping in between.
    let evs = server_reads(true, 1 << 20, &client_frame(true, RSV1, OpCode::Text, &hello));
    assert_eq!(messages(&evs), [Message::text("Hello, hello, hello")]);
    let mut wire = client_frame(false, RSV1, OpCode::Text, &hello[..3]);
    wire.extend(client_frame(true, 0, OpCode::Ping, b"p"));
    wire.extend(client_frame(true, 0, OpCode::Continuation, &hello[3..]));
    let evs = server_reads(true, 1 << 20, &wire);
    assert_eq!(messages(&evs), [Message::text("Hello, hello, hello")]);
    // RSV1 without the extension: 1002 as before.
    let evs = server_reads(false, 1 << 20, &client_frame(true, RSV1, OpCode::Text, &hello));
    assert_eq!(close_code(&evs), fail(ProtocolError::ReservedBits));
    // RSV1 on a control frame or a continuation: 1002.
    let evs = server_reads(true, 1 << 20, &client_frame(true, RSV1, OpCode::Ping, b"x"));
    assert_eq!(close_code(&evs), fail(ProtocolError::ReservedBits));
    let mut wire = client_frame(false, RSV1, OpCode::Text, &hello[..3]);
    wire.extend(client_frame(true, RSV1, OpCode::Continuation, &hello[3..]));
    assert_eq!(close_code(&server_reads(true, 1 << 20, &wire)), fail(ProtocolError::ReservedBits));
    // A new message inside a compressed one, and a compressed one inside a plain one.
    let mut wire = client_frame(false, RSV1, OpCode::Text, &hello[..3]);
    wire.extend(client_frame(true, 0, OpCode::Text, b"x"));
    assert_eq!(
        close_code(&server_reads(true, 1 << 20, &wire)),
        fail(ProtocolError::ExpectedContinuation)
    );
    let mut wire = client_frame(false, 0, OpCode::Text, b"x");
    wire.extend(client_frame(true, RSV1, OpCode::Text, &hello));
    assert_eq!(
        close_code(&server_reads(true, 1 << 20, &wire)),
        fail(ProtocolError::ExpectedContinuation)
    );
    // Data that does not inflate: 1007.
    let evs =
        server_reads(true, 1 << 20, &client_frame(true, RSV1, OpCode::Binary, &[0xff, 0xff, 0xff]));
    assert_eq!(close_code(&evs), fail(ProtocolError::InvalidCompressedData));
    assert_eq!(ProtocolError::InvalidCompressedData.close_code(), CloseCode::INVALID_PAYLOAD);
    // Compressed text that is not UTF-8: 1007.
    let bad = compress_message(b"abc \xff\xfe", 15, 6).unwrap();
    let evs = server_reads(true, 1 << 20, &client_frame(true, RSV1, OpCode::Text, &bad));
    assert_eq!(close_code(&evs), fail(ProtocolError::InvalidUtf8));
}

#[test]
fn a_compression_bomb_gets_1009() {
    // 32 MiB of zeros in ~32 KiB on the wire, against a 1 MiB limit.
    let bomb = compress_message(&vec![0u8; 32 << 20], 15, 9).unwrap();
    assert!(bomb.len() < 64 << 10);
    let evs = server_reads(true, 1 << 20, &client_frame(true, RSV1, OpCode::Binary, &bomb));
    assert_eq!(
        close_code(&evs),
        Some((CloseCode::TOO_BIG, Some(ConnError::Protocol(ProtocolError::MessageTooLarge))))
    );
    assert!(messages(&evs).is_empty());
    // Fragmented, too.
    let mut wire = client_frame(false, RSV1, OpCode::Binary, &bomb[..bomb.len() / 2]);
    wire.extend(client_frame(true, 0, OpCode::Continuation, &bomb[bomb.len() / 2..]));
    let evs = server_reads(true, 1 << 20, &wire);
    assert_eq!(close_code(&evs).map(|c| c.0), Some(CloseCode::TOO_BIG));
}

#[test]
fn an_agreed_window_of_8_sends_plain_and_still_receives() {
    let client_cfg = DeflateConfig {
        server_max_window_bits: 8,
        client_max_window_bits: 8,
        ..DeflateConfig::default()
    };
    let (mut c, mut s, t) = pair(cfg(Some(client_cfg)), cfg(Some(DeflateConfig::default())));
    assert_eq!(
        s.deflate_params().map(|p| (p.server_max_window_bits, p.client_max_window_bits)),
        Some((8, 8))
    );
    let m = Message::text(json_like(4000, 3));
    s.send(t, m.clone()).unwrap();
    c.send(t, m.clone()).unwrap();
    let down = transmits(&mut s);
    let up = transmits(&mut c);
    assert!(frames(&down, Role::Client).iter().all(|f| f.rsv == 0), "window 8: server sends plain");
    assert!(frames(&up, Role::Server).iter().all(|f| f.rsv == 0), "window 8: client sends plain");
    c.handle_read(t, &down);
    s.handle_read(t, &up);
    assert_eq!(messages(&events(&mut c)), std::slice::from_ref(&m));
    assert_eq!(messages(&events(&mut s)), [m]);
    // A peer that compresses with a window of 8 anyway (zlib's 9 within 256-byte distances).
    let small = compress_message(json_like(200, 1).as_bytes(), 9, 6).unwrap();
    s.handle_read(t, &client_frame(true, RSV1, OpCode::Text, &small));
    assert_eq!(messages(&events(&mut s)), [Message::text(json_like(200, 1))]);
}

#[test]
fn an_idle_no_context_connection_keeps_no_zlib_state() {
    let no_ctx = DeflateConfig::no_context_takeover();
    let (mut c, mut s, t) = pair(cfg(Some(DeflateConfig::default())), cfg(Some(no_ctx)));
    assert_eq!(
        s.deflate_params(),
        Some(DeflateParams {
            server_no_context_takeover: true,
            client_no_context_takeover: true,
            ..DeflateParams::default()
        })
    );
    for n in [300, 5000, 70_000] {
        c.send(t, Message::text(json_like(n, 1))).unwrap();
        s.send(t, Message::text(json_like(n, 2))).unwrap();
    }
    s.handle_read(t, &transmits(&mut c));
    c.handle_read(t, &transmits(&mut s));
    assert_eq!(messages(&events(&mut s)).len(), 3);
    assert_eq!(messages(&events(&mut c)).len(), 3);
    let pmd = s.deflate.as_ref().unwrap();
    assert!(!pmd.holds_state(), "server keeps state while idle");
    assert!(!c.deflate.as_ref().unwrap().holds_state(), "client keeps state while idle");
    let size = std::mem::size_of_val(&**pmd);
    eprintln!("PerMessageDeflate: {size} bytes");
    assert!(size < 1024, "the agreement takes {size} bytes");
    // With context takeover the states stay (allocated on first use).
    let (mut c, mut s, t) =
        pair(cfg(Some(DeflateConfig::default())), cfg(Some(DeflateConfig::default())));
    assert!(!s.deflate.as_ref().unwrap().holds_state(), "nothing before the first message");
    c.send(t, Message::text(json_like(300, 1))).unwrap();
    s.handle_read(t, &transmits(&mut c));
    assert!(s.deflate.as_ref().unwrap().holds_state());
    // Closing frees them.
    s.close(t, CloseCode::NORMAL, "").unwrap();
    c.handle_read(t, &transmits(&mut s));
    s.handle_read(t, &transmits(&mut c));
    assert_eq!(s.state(), WsState::Closed);
    assert!(!s.deflate.as_ref().unwrap().holds_state());
}

#[test]
fn a_prepared_message_is_shared_where_it_can_be() {
    let text = json_like(10_000, 7);
    let prepared = PreparedMessage::new(Message::text(text.clone()), &DeflateConfig::default());
    let shared = prepared.compressed().unwrap().clone();
    assert_eq!(prepared.window_bits(), 15);
    assert!(shared.len() < text.len() / 2);
    // A no-context receiver gets the very same bytes (no copy) behind its own header.
    let (mut c, mut s, t) =
        pair(cfg(Some(DeflateConfig::default())), cfg(Some(DeflateConfig::no_context_takeover())));
    assert!(s.takes_prepared(15));
    assert!(!s.takes_prepared(16));
    s.send_prepared(t, &prepared).unwrap();
    let chunks: Vec<Bytes> = std::iter::from_fn(|| match s.poll_transmit() {
        Some(Transmit::Bytes(b)) => Some(b),
        _ => None,
    })
    .collect();
    assert!(chunks.iter().any(|b| b.as_ptr() == shared.as_ptr() && b.len() == shared.len()));
    c.handle_read(t, &chunks.concat());
    assert_eq!(messages(&events(&mut c)), [Message::text(text.clone())]);
    // A context-takeover receiver and one without deflate get their own.
    for server in [cfg(Some(DeflateConfig::default())), cfg(None)] {
        let (mut c, mut s, t) = pair(cfg(Some(DeflateConfig::default())), server);
        assert!(!s.takes_prepared(15));
        s.send_prepared(t, &prepared).unwrap();
        s.send_prepared(t, &prepared).unwrap();
        c.handle_read(t, &transmits(&mut s));
        assert_eq!(
            messages(&events(&mut c)),
            [Message::text(text.clone()), Message::text(text.clone())]
        );
    }
    // Small messages stay plain.
    let small = PreparedMessage::new(Message::text("hi"), &DeflateConfig::default());
    assert!(small.compressed().is_none());
}

#[test]
fn send_limits_hold_for_prepared_messages() {
    let mut server = cfg(Some(DeflateConfig::no_context_takeover()));
    server.max_message = 1000;
    let (_, mut s, t) = pair(cfg(Some(DeflateConfig::default())), server);
    let prepared =
        PreparedMessage::new(Message::text(json_like(5000, 1)), &DeflateConfig::default());
    assert!(matches!(s.send_prepared(t, &prepared), Err(crate::ws::SendError::TooLarge(_))));
}
