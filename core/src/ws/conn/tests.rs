//! Tests of `WsConnection`, named after the Autobahn|Testsuite families they mirror
//! (1 framing, 2 ping/pong, 3 reserved bits, 4 opcodes, 5 fragmentation, 6 UTF-8, 7 close
//! handling, 9 limits) plus the handshake, keepalive and backpressure. All in virtual time.

use bytes::{Bytes, BytesMut};

use super::*;
use crate::time::Duration;
use crate::ws::frame::{FrameDecoder, encode_frame};

const REQUEST: &[u8] = b"GET /chat?token=abc HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: chat, superchat\r\n\r\n";

fn cfg() -> WsConfig {
    WsConfig { keepalive: None, ..WsConfig::default() }
}

/// What a server did with some input: the frames it wrote, whether it shut down, its events.
type Outcome = (Vec<(OpCode, Vec<u8>)>, bool, Vec<WsEvent>);

fn transmits(conn: &mut WsConnection) -> (Vec<u8>, bool) {
    let mut bytes = Vec::new();
    let mut shutdown = false;
    while let Some(t) = conn.poll_transmit() {
        match t {
            Transmit::Bytes(b) => {
                assert!(!shutdown, "bytes after shutdown");
                bytes.extend_from_slice(&b);
            }
            Transmit::Shutdown => shutdown = true,
        }
    }
    (bytes, shutdown)
}

fn events(conn: &mut WsConnection) -> Vec<WsEvent> {
    std::iter::from_fn(|| conn.poll_event()).collect()
}

/// An open server connection (handshake done, 101 drained).
fn open_server(c: WsConfig, t0: Instant) -> WsConnection {
    let mut s = WsConnection::server(c, t0);
    s.handle_read(t0, REQUEST);
    assert!(matches!(s.poll_event(), Some(WsEvent::UpgradeRequested(_))));
    s.accept(t0, None, &[]).unwrap();
    let (head, _) = transmits(&mut s);
    assert!(head.starts_with(b"HTTP/1.1 101"));
    assert!(matches!(s.poll_event(), Some(WsEvent::Open { .. })));
    s
}

/// A client frame as a peer would send it (masked).
fn client_frame(fin: bool, opcode: OpCode, payload: &[u8]) -> Vec<u8> {
    let mut out = BytesMut::new();
    encode_frame(fin, opcode, payload, Some([1, 2, 3, 4]), &mut out);
    out.to_vec()
}

/// Decodes server output as a client would.
fn server_frames(bytes: &[u8]) -> Vec<(OpCode, Vec<u8>)> {
    let mut dec = FrameDecoder::new(Role::Client);
    let mut buf = BytesMut::from(bytes);
    let mut out = Vec::new();
    while let Some(f) = dec.decode(&mut buf, usize::MAX >> 1).unwrap() {
        out.push((f.opcode, f.payload.to_vec()));
    }
    assert!(buf.is_empty(), "trailing bytes in server output");
    out
}

fn closed(evs: &[WsEvent]) -> &CloseInfo {
    let mut it = evs.iter().filter_map(|e| match e {
        WsEvent::Closed(i) => Some(i),
        _ => None,
    });
    let info = it.next().expect("a Closed event");
    assert!(it.next().is_none(), "Closed emitted twice");
    info
}

/// Feeds `bytes` whole, one byte at a time, and in 7-byte chunks; the outputs must agree.
fn feed_three_ways(c: &WsConfig, bytes: &[u8]) -> Outcome {
    let t0 = crate::time::test_epoch();
    let mut results = Vec::new();
    for chunk in [bytes.len().max(1), 1, 7] {
        let mut s = open_server(c.clone(), t0);
        for piece in bytes.chunks(chunk) {
            s.handle_read(t0, piece);
        }
        let (out, shut) = transmits(&mut s);
        results.push((server_frames(&out), shut, events(&mut s)));
    }
    assert_eq!(results[0], results[1], "byte-by-byte differs from whole");
    assert_eq!(results[0], results[2], "7-byte chunks differ from whole");
    results.remove(0)
}

fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut p = code.to_be_bytes().to_vec();
    p.extend_from_slice(reason.as_bytes());
    p
}

// ----- handshake -----

#[test]
fn handshake_auth_before_any_byte_is_written() {
    let t0 = crate::time::test_epoch();
    let mut s = WsConnection::server(cfg(), t0);
    s.handle_read(t0, REQUEST);
    let Some(WsEvent::UpgradeRequested(req)) = s.poll_event() else { panic!("no upgrade") };
    assert_eq!(req.token().as_deref(), Some("abc"));
    assert_eq!(req.protocols(), ["chat", "superchat"]);
    assert_eq!(s.state(), WsState::Connecting);
    assert_eq!(transmits(&mut s), (vec![], false), "nothing written before the decision");
    s.reject(t0, 401, &[("WWW-Authenticate", "Bearer")], b"bad token\n").unwrap();
    let (out, shut) = transmits(&mut s);
    assert!(out.starts_with(b"HTTP/1.1 401 "));
    assert!(out.ends_with(b"bad token\n"));
    assert!(shut);
    let evs = events(&mut s);
    assert_eq!(closed(&evs).error, Some(ConnError::Rejected(401)));
    assert_eq!(s.send(t0, Message::text("x")), Err(SendError::Closed));
}

#[test]
fn server_for_a_routed_request_behaves_like_server() {
    let t0 = crate::time::test_epoch();
    let head = b"GET /ws?token=t HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\
        Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
        Sec-WebSocket-Version: 13\r\n\r\n";
    let (req, _) = crate::http::RequestParser::new(1024).parse(head).unwrap().unwrap();
    let mut s = WsConnection::server_for(cfg(), t0, req);
    let evs = events(&mut s);
    let [WsEvent::UpgradeRequested(up)] = &evs[..] else { panic!("{evs:?}") };
    assert_eq!((up.path_only(), up.token().as_deref()), ("/ws", Some("t")));
    s.accept(t0, None, &[]).unwrap();
    s.handle_read(t0, &client_frame(true, OpCode::Text, b"hi"));
    let evs = events(&mut s);
    assert!(evs.contains(&WsEvent::Message(Message::text("hi"))), "{evs:?}");

    // Not an upgrade: the error response and Closed, as `server` would do.
    let (req, _) = crate::http::RequestParser::new(1024)
        .parse(b"POST /ws HTTP/1.1\r\nHost: h\r\n\r\n")
        .unwrap()
        .unwrap();
    let mut s = WsConnection::server_for(cfg(), t0, req);
    let (out, shut) = transmits(&mut s);
    assert!(out.starts_with(b"HTTP/1.1 405"), "{}", String::from_utf8_lossy(&out));
    assert!(shut);
    assert!(matches!(closed(&events(&mut s)).error, Some(ConnError::Handshake(_))));
}

#[test]
fn accept_with_subprotocol_and_trailing_frame_bytes() {
    let t0 = crate::time::test_epoch();
    let mut s = WsConnection::server(cfg(), t0);
    let mut input = REQUEST.to_vec();
    input.extend(client_frame(true, OpCode::Text, b"early"));
    s.handle_read(t0, &input);
    assert!(matches!(s.poll_event(), Some(WsEvent::UpgradeRequested(_))));
    assert_eq!(s.accept(t0, Some("nope"), &[]), Err(SendError::InvalidHeader));
    s.accept(t0, Some("superchat"), &[]).unwrap();
    assert_eq!(s.subprotocol(), Some("superchat"));
    let (out, _) = transmits(&mut s);
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
    assert!(text.contains("Sec-WebSocket-Protocol: superchat\r\n"));
    assert_eq!(
        events(&mut s),
        vec![
            WsEvent::Open { subprotocol: Some("superchat".into()) },
            WsEvent::Message(Message::text("early"))
        ]
    );
    assert_eq!(s.accept(t0, None, &[]), Err(SendError::NoPendingUpgrade));
}

#[test]
fn malformed_request_gets_a_status_and_shutdown() {
    let t0 = crate::time::test_epoch();
    let mut s = WsConnection::server(cfg(), t0);
    s.handle_read(t0, b"POST / HTTP/1.1\r\nHost: a\r\n\r\n");
    let (out, shut) = transmits(&mut s);
    assert!(out.starts_with(b"HTTP/1.1 405 "), "{}", String::from_utf8_lossy(&out));
    assert!(shut);
    let evs = events(&mut s);
    assert_eq!(closed(&evs).error, Some(ConnError::Handshake(HandshakeError::MethodNotGet)));
}

#[test]
fn oversized_head_gets_431() {
    let t0 = crate::time::test_epoch();
    let mut c = cfg();
    c.max_handshake = 256;
    let mut s = WsConnection::server(c, t0);
    s.handle_read(t0, &[b'a'; 300]);
    let (out, shut) = transmits(&mut s);
    assert!(out.starts_with(b"HTTP/1.1 431 "));
    assert!(shut);
}

#[test]
fn slowloris_head_times_out_with_408() {
    let t0 = crate::time::test_epoch();
    let mut s = WsConnection::server(cfg(), t0);
    s.handle_read(t0, &REQUEST[..20]);
    assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(10)));
    assert_eq!(s.timeout_reason(), Some(WsTimer::Handshake));
    s.handle_timeout(t0 + Duration::from_secs(9));
    assert_eq!(transmits(&mut s), (vec![], false));
    s.handle_timeout(t0 + Duration::from_secs(10));
    let (out, shut) = transmits(&mut s);
    assert!(out.starts_with(b"HTTP/1.1 408 "));
    assert!(shut);
    let evs = events(&mut s);
    assert_eq!(closed(&evs).error, Some(ConnError::Handshake(HandshakeError::Timeout)));
}

#[test]
fn client_reports_non_101_status() {
    let t0 = crate::time::test_epoch();
    let mut c = WsConnection::client(cfg(), "example.com", "/", t0).unwrap();
    let (req, _) = transmits(&mut c);
    assert!(req.starts_with(b"GET / HTTP/1.1\r\n"));
    assert!(c.rejection().is_none());
    c.handle_read(
        t0,
        b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 7\r\nContent-Length: 0\r\n\r\n",
    );
    let (_, shut) = transmits(&mut c);
    assert!(shut);
    let evs = events(&mut c);
    assert_eq!(closed(&evs).error, Some(ConnError::Handshake(HandshakeError::Status(503))));
    // The head is kept for the reconnect policy (Retry-After) and auth (WWW-Authenticate).
    let rejection = c.rejection().unwrap();
    assert_eq!((rejection.status(), rejection.header("retry-after")), (503, Some("7")));
}

#[test]
fn client_and_server_keys_come_from_the_seed() {
    let t0 = crate::time::test_epoch();
    let mut a = cfg();
    a.rng_seed = [1; 32];
    let mut b = cfg();
    b.rng_seed = [2; 32];
    let (ra, _) = transmits(&mut WsConnection::client(a.clone(), "h", "/", t0).unwrap());
    let (ra2, _) = transmits(&mut WsConnection::client(a, "h", "/", t0).unwrap());
    let (rb, _) = transmits(&mut WsConnection::client(b, "h", "/", t0).unwrap());
    assert_eq!(ra, ra2);
    assert_ne!(ra, rb);
    assert!(matches!(
        WsConnection::client(cfg(), "h\r\nX: y", "/", t0),
        Err(SendError::InvalidHeader)
    ));
}

// ----- 1: framing -----

#[test]
fn case_1_text_and_binary_of_every_length_class() {
    for len in [0usize, 1, 125, 126, 127, 65535, 65536, 100_000] {
        let payload: Vec<u8> = (b'a'..=b'z').cycle().take(len).collect();
        let mut input = client_frame(true, OpCode::Text, &payload);
        input.extend(client_frame(true, OpCode::Binary, &payload));
        let (out, shut, evs) = feed_three_ways(&cfg(), &input);
        assert!(out.is_empty() && !shut);
        assert_eq!(
            evs,
            vec![
                WsEvent::Message(Message::Text(
                    Utf8Bytes::try_from_bytes(Bytes::from(payload.clone())).unwrap()
                )),
                WsEvent::Message(Message::Binary(Bytes::from(payload)))
            ],
            "len {len}"
        );
    }
}

#[test]
fn case_1_server_payload_is_shared_not_copied() {
    let t0 = crate::time::test_epoch();
    let mut s = open_server(cfg(), t0);
    let payload = Bytes::from(vec![7u8; 4096]);
    s.send(t0, Message::Binary(payload.clone())).unwrap();
    let chunks: Vec<Bytes> = std::iter::from_fn(|| match s.poll_transmit() {
        Some(Transmit::Bytes(b)) => Some(b),
        _ => None,
    })
    .collect();
    assert_eq!(chunks.len(), 2, "header + shared payload");
    assert_eq!(&chunks[0][..], &[0x82, 126, 0x10, 0x00]);
    assert_eq!(chunks[1].as_ptr(), payload.as_ptr(), "payload bytes are shared");
}

#[test]
fn unmasked_client_frame_is_a_protocol_error() {
    let t0 = crate::time::test_epoch();
    let mut s = open_server(cfg(), t0);
    let mut raw = BytesMut::new();
    encode_frame(true, OpCode::Text, b"hi", None, &mut raw);
    s.handle_read(t0, &raw);
    let (out, shut) = transmits(&mut s);
    assert_eq!(server_frames(&out), vec![(OpCode::Close, close_payload(1002, ""))]);
    assert!(shut);
}

// ----- 2: ping/pong -----

#[test]
fn case_2_ping_is_answered_with_the_same_payload() {
    let input = client_frame(true, OpCode::Ping, b"hello");
    let (out, shut, evs) = feed_three_ways(&cfg(), &input);
    assert_eq!(out, vec![(OpCode::Pong, b"hello".to_vec())]);
    assert!(!shut && evs.is_empty());
}

#[test]
fn case_2_10_every_ping_gets_its_pong() {
    let t0 = crate::time::test_epoch();
    let mut s = open_server(cfg(), t0);
    let input: Vec<u8> =
        (0..10u8).flat_map(|i| client_frame(true, OpCode::Ping, &[b'p', i])).collect();
    s.handle_read(t0, &input);
    let (out, _) = transmits(&mut s);
    let expected: Vec<_> = (0..10u8).map(|i| (OpCode::Pong, vec![b'p', i])).collect();
    assert_eq!(server_frames(&out), expected);
}

#[test]
fn case_2_ping_flood_is_bounded_and_latest_ping_wins() {
    let t0 = crate::time::test_epoch();
    let mut s = open_server(cfg(), t0);
    let input: Vec<u8> =
        (0..1000u16).flat_map(|i| client_frame(true, OpCode::Ping, &i.to_be_bytes())).collect();
    s.handle_read(t0, &input);
    let (out, _) = transmits(&mut s);
    let frames = server_frames(&out);
    assert_eq!(frames.len(), MAX_PENDING_PONGS);
    assert_eq!(frames[0], (OpCode::Pong, 0u16.to_be_bytes().to_vec()));
    assert_eq!(frames.last().unwrap(), &(OpCode::Pong, 999u16.to_be_bytes().to_vec()));
}

#[test]
fn case_2_pong_never_splits_a_frame() {
    let t0 = crate::time::test_epoch();
    let mut s = open_server(cfg(), t0);
    s.send(t0, Message::binary(vec![1u8; 1000])).unwrap();
    let first = s.poll_transmit().unwrap(); // the header of the big frame
    s.handle_read(t0, &client_frame(true, OpCode::Ping, b"p"));
    let mut out = match first {
        Transmit::Bytes(b) => b.to_vec(),
        Transmit::Shutdown => panic!(),
    };
    out.extend(transmits(&mut s).0);
    let frames = server_frames(&out);
    assert_eq!(frames[0], (OpCode::Binary, vec![1u8; 1000]));
    assert_eq!(frames[1], (OpCode::Pong, b"p".to_vec()));
}

#[test]
fn case_2_ping_of_126_bytes_fails_the_connection() {
    let mut raw = vec![0x89, 0xFE, 0, 126, 0, 0, 0, 0];
    raw.extend(vec![0u8; 126]);
    let (out, shut, evs) = feed_three_ways(&cfg(), &raw);
    assert_eq!(out, vec![(OpCode::Close, close_payload(1002, ""))]);
    assert!(shut);
    let info = closed(&evs);
    assert_eq!(info.error, Some(ConnError::Protocol(ProtocolError::ControlFrameTooLong)));
    assert_eq!(info.initiator, Initiator::Local);
}

#[test]
fn case_2_unsolicited_pong_is_reported() {
    let (out, _, evs) = feed_three_ways(&cfg(), &client_frame(true, OpCode::Pong, b"x"));
    assert!(out.is_empty());
    assert_eq!(evs, vec![WsEvent::Pong(Bytes::from_static(b"x"))]);
}

// ----- 3 and 4: reserved bits and opcodes -----

#[test]
fn case_3_reserved_bits_fail_after_earlier_messages() {
    let mut input = client_frame(true, OpCode::Text, b"ok");
    let mut bad = client_frame(true, OpCode::Text, b"bad");
    bad[0] |= 0x40; // RSV1
    input.extend(bad);
    input.extend(client_frame(true, OpCode::Ping, b"after"));
    let (out, shut, evs) = feed_three_ways(&cfg(), &input);
    assert_eq!(out, vec![(OpCode::Close, close_payload(1002, ""))]);
    assert!(shut);
    assert_eq!(evs[0], WsEvent::Message(Message::text("ok")));
    assert_eq!(closed(&evs).error, Some(ConnError::Protocol(ProtocolError::ReservedBits)));
}

#[test]
fn case_4_reserved_opcodes_fail() {
    for op in [3u8, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF] {
        let raw = vec![0x80 | op, 0x80, 0, 0, 0, 0];
        let (out, shut, evs) = feed_three_ways(&cfg(), &raw);
        assert_eq!(out, vec![(OpCode::Close, close_payload(1002, ""))], "opcode {op}");
        assert!(shut);
        assert_eq!(
            closed(&evs).error,
            Some(ConnError::Protocol(ProtocolError::ReservedOpcode(op)))
        );
    }
}

// ----- 5: fragmentation -----

#[test]
fn case_5_fragments_with_interleaved_ping() {
    let mut input = client_frame(false, OpCode::Text, b"frag");
    input.extend(client_frame(true, OpCode::Ping, b"mid"));
    input.extend(client_frame(false, OpCode::Continuation, b"men"));
    input.extend(client_frame(true, OpCode::Continuation, b"ted"));
    let (out, shut, evs) = feed_three_ways(&cfg(), &input);
    assert_eq!(out, vec![(OpCode::Pong, b"mid".to_vec())]);
    assert!(!shut);
    assert_eq!(evs, vec![WsEvent::Message(Message::text("fragmented"))]);
}

#[test]
fn case_5_continuation_without_start_fails() {
    let (out, shut, evs) = feed_three_ways(&cfg(), &client_frame(true, OpCode::Continuation, b"x"));
    assert_eq!(out, vec![(OpCode::Close, close_payload(1002, ""))]);
    assert!(shut);
    assert_eq!(
        closed(&evs).error,
        Some(ConnError::Protocol(ProtocolError::UnexpectedContinuation))
    );
}

#[test]
fn case_5_fragmented_send() {
    let t0 = crate::time::test_epoch();
    let mut c = cfg();
    c.max_send_fragment = Some(4);
    let mut s = open_server(c, t0);
    s.send(t0, Message::text("abcdefghij")).unwrap();
    let (out, _) = transmits(&mut s);
    assert_eq!(
        server_frames(&out),
        vec![
            (OpCode::Text, b"abcd".to_vec()),
            (OpCode::Continuation, b"efgh".to_vec()),
            (OpCode::Continuation, b"ij".to_vec())
        ]
    );
}

// ----- 6: UTF-8 -----

#[test]
fn case_6_invalid_utf8_closes_1007_on_the_first_bad_fragment() {
    let mut input = client_frame(false, OpCode::Text, b"ok \xce\xba\xe1\xbd\xb9\xcf");
    input.extend(client_frame(false, OpCode::Continuation, b"\x83\xce\xbc\xce\xb5\xed\xa0\x80"));
    // No final fragment: the failure must not wait for it.
    let (out, shut, evs) = feed_three_ways(&cfg(), &input);
    assert_eq!(out, vec![(OpCode::Close, close_payload(1007, ""))]);
    assert!(shut);
    assert_eq!(closed(&evs).error, Some(ConnError::Protocol(ProtocolError::InvalidUtf8)));
}

#[test]
fn case_6_multibyte_split_across_fragments_is_valid() {
    let text = "κόσμε";
    let bytes = text.as_bytes();
    let mut input = Vec::new();
    for (i, b) in bytes.iter().enumerate() {
        let op = if i == 0 { OpCode::Text } else { OpCode::Continuation };
        input.extend(client_frame(i + 1 == bytes.len(), op, &[*b]));
    }
    let (_, shut, evs) = feed_three_ways(&cfg(), &input);
    assert!(!shut);
    assert_eq!(evs, vec![WsEvent::Message(Message::text(text))]);
}

// ----- 7: close handling -----

#[test]
fn case_7_peer_close_is_echoed_and_server_shuts_down() {
    let input = client_frame(true, OpCode::Close, &close_payload(1000, "bye"));
    let (out, shut, evs) = feed_three_ways(&cfg(), &input);
    assert_eq!(out, vec![(OpCode::Close, close_payload(1000, ""))]);
    assert!(shut);
    let info = closed(&evs);
    assert_eq!((info.code, info.reason.as_str()), (CloseCode::NORMAL, "bye"));
    assert_eq!((info.initiator, info.clean, info.error), (Initiator::Remote, true, None));
}

#[test]
fn case_7_empty_close_gets_empty_close() {
    let (out, shut, evs) = feed_three_ways(&cfg(), &client_frame(true, OpCode::Close, b""));
    assert_eq!(out, vec![(OpCode::Close, vec![])]);
    assert!(shut);
    assert_eq!(closed(&evs).code, CloseCode::NO_STATUS);
}

#[test]
fn case_7_invalid_close_payloads() {
    for (payload, code) in [
        (vec![0x03], 1002u16),
        (close_payload(1005, ""), 1002),
        (close_payload(1006, ""), 1002),
        (close_payload(1015, ""), 1002),
        (close_payload(999, ""), 1002),
        (close_payload(2000, ""), 1002),
        (vec![0x03, 0xe8, 0xff, 0xfe], 1007),
    ] {
        let (out, shut, _) = feed_three_ways(&cfg(), &client_frame(true, OpCode::Close, &payload));
        assert_eq!(out, vec![(OpCode::Close, close_payload(code, ""))], "{payload:?}");
        assert!(shut);
    }
}

#[test]
fn case_7_data_after_close_is_ignored() {
    let mut input = client_frame(true, OpCode::Close, &close_payload(1000, ""));
    input.extend(client_frame(true, OpCode::Text, b"late"));
    input.extend(client_frame(true, OpCode::Ping, b"late"));
    let (out, _, evs) = feed_three_ways(&cfg(), &input);
    assert_eq!(out, vec![(OpCode::Close, close_payload(1000, ""))]);
    assert_eq!(evs.len(), 1);
}

#[test]
fn case_7_local_close_waits_for_the_reply_then_times_out() {
    let t0 = crate::time::test_epoch();
    let mut s = open_server(cfg(), t0);
    assert_eq!(s.close(t0, CloseCode(1005), ""), Err(SendError::InvalidCloseCode(1005)));
    assert_eq!(s.close(t0, CloseCode::NORMAL, &"x".repeat(124)), Err(SendError::ControlTooLong));
    s.close(t0, CloseCode::GOING_AWAY, "restart").unwrap();
    assert_eq!(s.state(), WsState::Closing);
    assert_eq!(s.send(t0, Message::text("x")), Err(SendError::Closed));
    assert_eq!(s.close(t0, CloseCode::NORMAL, ""), Err(SendError::Closed));
    let (out, shut) = transmits(&mut s);
    assert_eq!(server_frames(&out), vec![(OpCode::Close, close_payload(1001, "restart"))]);
    assert!(!shut);
    // Data still arrives while closing.
    s.handle_read(t0, &client_frame(true, OpCode::Text, b"still"));
    assert_eq!(events(&mut s), vec![WsEvent::Message(Message::text("still"))]);
    assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(5)));
    s.handle_timeout(t0 + Duration::from_secs(5));
    let (_, shut) = transmits(&mut s);
    assert!(shut);
    let evs = events(&mut s);
    let info = closed(&evs);
    assert_eq!((info.code, info.reason.as_str()), (CloseCode::GOING_AWAY, "restart"));
    assert_eq!((info.clean, info.error), (false, Some(ConnError::CloseTimeout)));
}

#[test]
fn case_7_local_close_completed_by_the_reply() {
    let t0 = crate::time::test_epoch();
    let mut s = open_server(cfg(), t0);
    s.close(t0, CloseCode::NORMAL, "done").unwrap();
    let _ = transmits(&mut s);
    s.handle_read(t0, &client_frame(true, OpCode::Close, &close_payload(1000, "")));
    let (out, shut) = transmits(&mut s);
    assert!(out.is_empty() && shut);
    let evs = events(&mut s);
    let info = closed(&evs);
    assert_eq!(
        (info.initiator, info.clean, info.reason.as_str()),
        (Initiator::Local, true, "done")
    );
    s.handle_eof(t0);
    assert!(events(&mut s).is_empty(), "Closed exactly once");
}

#[test]
fn case_7_client_waits_for_the_server_to_close_tcp() {
    let t0 = crate::time::test_epoch();
    let (mut c, mut s) = open_pair(t0);
    c.close(t0, CloseCode::NORMAL, "").unwrap();
    let (out, _) = transmits(&mut c);
    s.handle_read(t0, &out);
    let (reply, server_shut) = transmits(&mut s);
    assert!(server_shut);
    c.handle_read(t0, &reply);
    let (_, client_shut) = transmits(&mut c);
    assert!(!client_shut, "the client lets the server close first");
    assert!(closed(&events(&mut c)).clean);
    assert_eq!(c.state(), WsState::Closed);
    c.handle_eof(t0 + Duration::from_millis(1));
    assert_eq!(transmits(&mut c), (vec![], true));
    // Without the server's EOF the client shuts down after the close timeout.
    let (mut c, mut s) = open_pair(t0);
    c.close(t0, CloseCode::NORMAL, "").unwrap();
    s.handle_read(t0, &transmits(&mut c).0);
    c.handle_read(t0, &transmits(&mut s).0);
    assert_eq!(transmits(&mut c), (vec![], false));
    c.handle_timeout(t0 + Duration::from_secs(5));
    assert_eq!(transmits(&mut c), (vec![], true));
}

#[test]
fn eof_without_close_is_abnormal() {
    let t0 = crate::time::test_epoch();
    let mut s = open_server(cfg(), t0);
    s.handle_eof(t0);
    let (_, shut) = transmits(&mut s);
    assert!(shut);
    let evs = events(&mut s);
    let info = closed(&evs);
    assert_eq!((info.code, info.error), (CloseCode::ABNORMAL, Some(ConnError::Eof)));
}

// ----- 9: limits -----

#[test]
fn case_9_frame_over_limit_fails_before_its_payload_arrives() {
    let mut c = cfg();
    c.max_frame = 1000;
    let header_only = client_frame(true, OpCode::Binary, &[0u8; 1001])[..8].to_vec();
    let (out, shut, evs) = feed_three_ways(&c, &header_only);
    assert_eq!(out, vec![(OpCode::Close, close_payload(1009, ""))]);
    assert!(shut);
    assert_eq!(closed(&evs).error, Some(ConnError::Protocol(ProtocolError::FrameTooLarge)));
}

#[test]
fn case_9_message_over_limit_across_fragments() {
    let mut c = cfg();
    c.max_message = 1000;
    let mut input = Vec::new();
    input.extend(client_frame(false, OpCode::Binary, &[0u8; 600]));
    input.extend(client_frame(true, OpCode::Continuation, &[0u8; 600]));
    let (out, shut, evs) = feed_three_ways(&c, &input);
    assert_eq!(out, vec![(OpCode::Close, close_payload(1009, ""))]);
    assert!(shut);
    assert_eq!(closed(&evs).error, Some(ConnError::Protocol(ProtocolError::MessageTooLarge)));
}

#[test]
fn outbound_backpressure_hands_the_message_back() {
    let t0 = crate::time::test_epoch();
    let mut c = cfg();
    c.max_outbound = 10_000;
    let mut s = open_server(c, t0);
    let msg = Message::binary(vec![0u8; 4000]);
    s.send(t0, msg.clone()).unwrap();
    s.send(t0, msg.clone()).unwrap();
    assert_eq!(s.send(t0, msg.clone()), Err(SendError::Backpressure(msg.clone())));
    assert!(s.buffered_amount() <= 10_000);
    let _ = transmits(&mut s);
    assert_eq!(s.buffered_amount(), 0);
    s.send(t0, msg).unwrap();
    let big = Message::binary(vec![0u8; 65 << 20]);
    assert!(matches!(s.send(t0, big), Err(SendError::TooLarge(_))));
}

#[test]
fn a_peer_that_stops_reading_ends_by_send_timeout() {
    let t0 = crate::time::test_epoch();
    let mut c = cfg();
    c.max_outbound = 10_000;
    c.send_timeout = Some(Duration::from_secs(2));
    let mut s = open_server(c, t0);
    let msg = Message::binary(vec![0u8; 6000]);
    s.send(t0, msg.clone()).unwrap();
    // Full: the stall clock starts at the first refusal and is not pushed back by retries.
    assert!(matches!(s.send(t0, msg.clone()), Err(SendError::Backpressure(_))));
    assert_eq!(s.timeout_reason(), Some(WsTimer::SendStall));
    assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(2)));
    let t1 = t0 + Duration::from_secs(1);
    assert!(matches!(s.send(t1, msg.clone()), Err(SendError::Backpressure(_))));
    assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(2)));
    s.handle_timeout(t0 + Duration::from_millis(1999));
    assert!(events(&mut s).is_empty());
    s.handle_timeout(t0 + Duration::from_secs(2));
    let evs = events(&mut s);
    let info = closed(&evs);
    assert_eq!(info.code, CloseCode::TOO_SLOW);
    assert_eq!(info.error, Some(ConnError::SendStalled));
    assert!(!info.clean);
    // What was queued is dropped at once; only the shutdown remains.
    assert_eq!(s.buffered_amount(), 0);
    assert_eq!(s.poll_transmit(), Some(Transmit::Shutdown));
    assert_eq!(s.poll_transmit(), None);
    assert!(matches!(s.send(t0 + Duration::from_secs(3), msg), Err(SendError::Closed)));
}

#[test]
fn a_draining_outbox_disarms_the_stall_timer() {
    let t0 = crate::time::test_epoch();
    let mut c = cfg();
    c.max_outbound = 10_000;
    c.send_timeout = Some(Duration::from_secs(2));
    let mut s = open_server(c, t0);
    let msg = Message::binary(vec![0u8; 6000]);
    s.send(t0, msg.clone()).unwrap();
    assert!(s.send(t0, msg.clone()).is_err());
    assert_eq!(s.timeout_reason(), Some(WsTimer::SendStall));
    let _ = transmits(&mut s);
    assert_eq!(s.poll_timeout(), None);
    s.handle_timeout(t0 + Duration::from_secs(5));
    assert!(events(&mut s).is_empty());
    s.send(t0 + Duration::from_secs(5), msg).unwrap();
}

// ----- keepalive -----

#[test]
fn keepalive_pings_then_declares_the_peer_dead() {
    let t0 = crate::time::test_epoch();
    let mut s = open_server(WsConfig::default(), t0);
    assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(25)));
    assert_eq!(s.timeout_reason(), Some(WsTimer::Keepalive));
    // Traffic postpones the ping.
    s.handle_read(t0 + Duration::from_secs(10), &client_frame(true, OpCode::Text, b"x"));
    let _ = events(&mut s);
    assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(35)));
    s.handle_timeout(t0 + Duration::from_secs(35));
    let (out, _) = transmits(&mut s);
    let frames = server_frames(&out);
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].0, OpCode::Ping);
    // The pong answers it and records the RTT.
    let pong = client_frame(true, OpCode::Pong, &frames[0].1);
    s.handle_read(t0 + Duration::from_millis(35_050), &pong);
    assert_eq!(s.rtt(), Some(Duration::from_millis(50)));
    // Then silence: ping at 60.05 s, dead at 80.05 s.
    let ping2 = t0 + Duration::from_millis(60_050);
    assert_eq!(s.poll_timeout(), Some(ping2));
    s.handle_timeout(ping2);
    let _ = transmits(&mut s);
    s.handle_timeout(ping2 + Duration::from_secs(20) - Duration::from_millis(1));
    assert_eq!(s.state(), WsState::Open);
    s.handle_timeout(ping2 + Duration::from_secs(20));
    let (_, shut) = transmits(&mut s);
    assert!(shut);
    let evs = events(&mut s);
    let info = closed(&evs);
    assert_eq!(info.error, Some(ConnError::KeepaliveTimeout));
    assert_eq!(info.code, CloseCode::ABNORMAL);
}

#[test]
fn time_going_backwards_is_harmless() {
    let t0 = crate::time::test_epoch() + Duration::from_secs(100);
    let mut s = open_server(WsConfig::default(), t0);
    s.handle_timeout(t0 - Duration::from_secs(50));
    s.handle_read(t0 - Duration::from_secs(60), &client_frame(true, OpCode::Text, b"x"));
    assert_eq!(events(&mut s), vec![WsEvent::Message(Message::text("x"))]);
    assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(25)));
}

/// A client and a server, handshake done, all output drained.
fn open_pair(t0: Instant) -> (WsConnection, WsConnection) {
    let mut c = WsConnection::client(cfg(), "example.com", "/", t0).unwrap();
    let mut s = WsConnection::server(cfg(), t0);
    s.handle_read(t0, &transmits(&mut c).0);
    assert!(matches!(s.poll_event(), Some(WsEvent::UpgradeRequested(_))));
    s.accept(t0, None, &[]).unwrap();
    c.handle_read(t0, &transmits(&mut s).0);
    assert!(matches!(c.poll_event(), Some(WsEvent::Open { .. })));
    assert!(matches!(s.poll_event(), Some(WsEvent::Open { .. })));
    (c, s)
}

#[test]
fn client_frames_are_masked_and_round_trip() {
    let t0 = crate::time::test_epoch();
    let (mut c, mut s) = open_pair(t0);
    c.send(t0, Message::text("over the wire")).unwrap();
    c.ping(t0, Bytes::from_static(b"p")).unwrap();
    let (out, _) = transmits(&mut c);
    assert_ne!(out[1] & 0x80, 0, "mask bit set");
    s.handle_read(t0, &out);
    assert_eq!(events(&mut s), vec![WsEvent::Message(Message::text("over the wire"))]);
    c.handle_read(t0, &transmits(&mut s).0);
    assert_eq!(events(&mut c), vec![WsEvent::Pong(Bytes::from_static(b"p"))]);
}
