//! Properties of the WebSocket core, checked with proptest through the public API: the frame
//! codec round-trips and is split-invariant, the fast mask equals the reference one, a server
//! connection reassembles fragmented messages around interleaved control frames, and a
//! connection fed hostile bytes behaves the same however they are chunked.
//!
//! Time is virtual: one `Instant::now()` per case and no clock advance.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::FileFailurePersistence;
use tidewire::ws::frame::{Frame, FrameDecoder, OpCode, Role, encode, encode_frame};
use tidewire::ws::mask::{apply_mask, apply_mask_at, apply_mask_scalar};
use tidewire::ws::{Message, WsConfig, WsConnection, WsEvent, WsState};
use tidewire::{Instant, Machine, Transmit};

/// The largest frame the decoders here accept: no limit in practice.
const NO_LIMIT: usize = usize::MAX >> 1;

const REQUEST: &[u8] = b"GET /chat HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\n\
    Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
    Sec-WebSocket-Version: 13\r\n\r\n";

/// `cases` cases; failing cases are saved next to this file (`ws.regressions`), since the
/// default looks for a `lib.rs` above it, which an integration test does not have.
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("regressions"))),
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------------------
// Generators

/// `len` pseudo-random bytes from `seed` (splitmix64). Large payloads are drawn this way
/// rather than byte by byte, which would make proptest keep a shrink tree per byte.
fn filled(len: usize, seed: u64) -> Bytes {
    let mut state = seed;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    Bytes::from(out)
}

/// Payload lengths around each length-encoding boundary (7-bit, 16-bit, 64-bit), and random.
fn data_len() -> impl Strategy<Value = usize> {
    prop_oneof![
        Just(0usize),
        Just(1),
        Just(125),
        Just(126),
        Just(127),
        Just(65_535),
        Just(65_536),
        Just(65_537),
        0..300usize,
        0..70_000usize,
    ]
}

fn control_len() -> impl Strategy<Value = usize> {
    prop_oneof![Just(0usize), Just(1), Just(124), Just(125), 0..=125usize]
}

fn data_frame(len: impl Strategy<Value = usize>) -> impl Strategy<Value = Frame> {
    let opcode = prop_oneof![Just(OpCode::Continuation), Just(OpCode::Text), Just(OpCode::Binary)];
    (any::<bool>(), opcode, 0u8..8, len, any::<u64>())
        .prop_map(|(fin, op, rsv, len, seed)| Frame::new(fin, op, filled(len, seed)).with_rsv(rsv))
}

/// A control frame: FIN set and at most 125 payload bytes (§5.5).
fn control_frame() -> impl Strategy<Value = Frame> {
    let opcode = prop_oneof![Just(OpCode::Close), Just(OpCode::Ping), Just(OpCode::Pong)];
    (opcode, 0u8..8, control_len(), any::<u64>())
        .prop_map(|(op, rsv, len, seed)| Frame::new(true, op, filled(len, seed)).with_rsv(rsv))
}

/// Any valid frame; `len` is the data-frame payload length.
fn any_frame(len: impl Strategy<Value = usize>) -> impl Strategy<Value = Frame> {
    prop_oneof![3 => data_frame(len), 1 => control_frame()]
}

/// Sorted cut points into `0..=len` from proptest indices.
fn cut_points(cuts: &[Index], len: usize) -> Vec<usize> {
    let mut points: Vec<usize> = cuts.iter().map(|i| i.index(len + 1)).collect();
    points.sort_unstable();
    points
}

/// `stream` split at `cuts` (sorted); empty chunks included.
fn chunks<'a>(stream: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut out = Vec::with_capacity(cuts.len() + 1);
    let mut start = 0;
    for &end in cuts.iter().chain([&stream.len()]) {
        out.push(&stream[start..end]);
        start = end;
    }
    out
}

// ---------------------------------------------------------------------------------------
// Frame codec

/// Decodes `pieces` appended one after the other; every byte must be consumed.
fn decode_pieces(role: Role, pieces: &[&[u8]]) -> Vec<Frame> {
    let mut decoder = FrameDecoder::new(role).with_allowed_rsv(0b111);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for piece in pieces {
        buf.extend_from_slice(piece);
        while let Some(frame) = decoder.decode(&mut buf, NO_LIMIT).expect("a valid stream") {
            frames.push(frame);
        }
    }
    assert!(buf.is_empty(), "{} bytes left undecoded", buf.len());
    frames
}

proptest! {
    #![proptest_config(config(256))]

    /// Every frame shape encodes with the shortest length form, masked as the role requires,
    /// and decodes back to itself, consuming exactly its bytes.
    #[test]
    fn frame_round_trip(
        frame in any_frame(data_len()),
        mask in proptest::option::of(any::<[u8; 4]>()),
    ) {
        let mut wire = BytesMut::new();
        encode(&frame, mask, &mut wire);

        let len = frame.payload.len();
        let ext = match len {
            0..=125 => 0,
            126..=65_535 => 2,
            _ => 8,
        };
        let header_len = 2 + ext + if mask.is_some() { 4 } else { 0 };
        prop_assert_eq!(wire.len(), header_len + len);
        prop_assert_eq!(wire[0] & 0x80 != 0, frame.fin);
        prop_assert_eq!((wire[0] >> 4) & 0b111, frame.rsv);
        prop_assert_eq!(wire[1] & 0x80 != 0, mask.is_some());

        // The payload on the wire is the reference masking of the payload.
        let mut on_wire = wire[header_len..].to_vec();
        if let Some(key) = mask {
            apply_mask_scalar(&mut on_wire, key, 0);
        }
        prop_assert!(on_wire == frame.payload, "wire payload is not the masked payload");

        if frame.rsv == 0 {
            let mut plain = BytesMut::new();
            encode_frame(frame.fin, frame.opcode, &frame.payload, mask, &mut plain);
            prop_assert!(plain == wire, "encode_frame and encode differ");
        }

        // A server decodes masked (client) frames, a client unmasked (server) ones.
        let role = if mask.is_some() { Role::Server } else { Role::Client };
        let mut decoder = FrameDecoder::new(role).with_allowed_rsv(0b111);
        let decoded = decoder.decode(&mut wire, len).expect("a valid frame at the size limit");
        prop_assert_eq!(decoded, Some(frame));
        prop_assert!(wire.is_empty());
    }
}

proptest! {
    #![proptest_config(config(128))]

    /// A stream of valid frames decodes to the same frames whole, under random chunkings
    /// and (when short) one byte at a time, and every byte is consumed.
    #[test]
    fn frame_split_invariance(
        masked in any::<bool>(),
        frames in prop::collection::vec(
            (any_frame(prop_oneof![4 => 0..200usize, 1 => data_len()]), any::<[u8; 4]>()),
            0..12,
        ),
        cuts in prop::collection::vec(any::<Index>(), 0..24),
    ) {
        let mut stream = BytesMut::new();
        for (frame, key) in &frames {
            encode(frame, masked.then_some(*key), &mut stream);
        }
        let expected: Vec<Frame> = frames.into_iter().map(|(f, _)| f).collect();
        let role = if masked { Role::Server } else { Role::Client };

        prop_assert_eq!(&decode_pieces(role, &[&stream]), &expected);
        let cuts = cut_points(&cuts, stream.len());
        prop_assert_eq!(&decode_pieces(role, &chunks(&stream, &cuts)), &expected);
        if stream.len() <= 4096 {
            let bytes: Vec<&[u8]> = stream.chunks(1).collect();
            prop_assert_eq!(&decode_pieces(role, &bytes), &expected);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Masking

proptest! {
    #![proptest_config(config(512))]

    /// The vectorised mask equals the byte-at-a-time reference at every offset, masking
    /// twice is the identity, and masking in two pieces (the second at the right offset)
    /// equals masking at once.
    #[test]
    fn mask_matches_reference(
        buf in prop::collection::vec(any::<u8>(), 0..300),
        key in any::<[u8; 4]>(),
        offset in prop_oneof![0..8usize, any::<usize>()],
        split in any::<Index>(),
    ) {
        let mut fast = buf.clone();
        apply_mask_at(&mut fast, key, offset);
        let mut slow = buf.clone();
        apply_mask_scalar(&mut slow, key, offset);
        prop_assert_eq!(&fast, &slow);

        apply_mask_at(&mut fast, key, offset);
        prop_assert_eq!(&fast, &buf, "masking twice is not the identity");

        let at = split.index(buf.len() + 1);
        let mut pieces = buf.clone();
        let (head, tail) = pieces.split_at_mut(at);
        apply_mask_at(head, key, offset);
        apply_mask_at(tail, key, offset.wrapping_add(at));
        prop_assert_eq!(&pieces, &slow, "masking in pieces differs");

        let mut from_zero = buf.clone();
        apply_mask(&mut from_zero, key);
        let mut reference = buf;
        apply_mask_scalar(&mut reference, key, 0);
        prop_assert_eq!(from_zero, reference);
    }
}

// ---------------------------------------------------------------------------------------
// Connection

fn server_config() -> WsConfig {
    let mut cfg = WsConfig::default();
    cfg.keepalive = None;
    cfg
}

/// Everything the connection wants written, concatenated; panics on a `Shutdown`.
fn drain_bytes(conn: &mut WsConnection) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(t) = conn.poll_transmit() {
        match t {
            Transmit::Bytes(b) => out.extend_from_slice(&b),
            other => panic!("unexpected transmit {other:?}"),
        }
    }
    out
}

/// Everything written, concatenated, and whether a `Shutdown` came last.
fn drain_all(conn: &mut WsConnection) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let mut shutdown = false;
    while let Some(t) = conn.poll_transmit() {
        assert!(!shutdown, "transmit after shutdown");
        match t {
            Transmit::Bytes(b) => out.extend_from_slice(&b),
            Transmit::Shutdown => shutdown = true,
            other => panic!("unknown transmit {other:?}"),
        }
    }
    (out, shutdown)
}

fn drain_events(conn: &mut WsConnection) -> Vec<WsEvent> {
    std::iter::from_fn(|| conn.poll_event()).collect()
}

/// A server connection that got `REQUEST`, accepted it and had its 101 drained.
fn open_server(now: Instant) -> WsConnection {
    let mut conn = WsConnection::server(server_config(), now);
    conn.handle_read(now, REQUEST);
    assert!(matches!(conn.poll_event(), Some(WsEvent::UpgradeRequested(_))));
    conn.accept(now, None, &[]).expect("accept");
    assert!(drain_bytes(&mut conn).starts_with(b"HTTP/1.1 101 "));
    assert!(matches!(conn.poll_event(), Some(WsEvent::Open { .. })));
    conn
}

/// Decodes the server's output as a client would.
fn server_frames(bytes: &[u8]) -> Vec<Frame> {
    decode_pieces(Role::Client, &[bytes])
}

/// A ping or a pong from the client.
#[derive(Clone, Debug)]
struct Control {
    ping: bool,
    payload: Vec<u8>,
}

fn control() -> impl Strategy<Value = Control> {
    (any::<bool>(), prop::collection::vec(any::<u8>(), 0..=125))
        .prop_map(|(ping, payload)| Control { ping, payload })
}

/// One message as the client sends it: fragment cut points into the payload, and control
/// frames to put after a given fragment.
#[derive(Clone, Debug)]
struct Sent {
    message: Message,
    cuts: Vec<Index>,
    controls: Vec<(Index, Control)>,
}

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        any::<String>().prop_map(Message::text),
        "[a-zé€😀\u{10ffff}]{0,40}".prop_map(Message::text),
        prop::collection::vec(any::<u8>(), 0..200).prop_map(Message::binary),
    ]
}

fn sent() -> impl Strategy<Value = Sent> {
    (
        message(),
        prop::collection::vec(any::<Index>(), 0..5),
        prop::collection::vec((any::<Index>(), control()), 0..4),
    )
        .prop_map(|(message, cuts, controls)| Sent { message, cuts, controls })
}

/// What the client's byte stream must make the server do.
struct Script {
    wire: Vec<u8>,
    /// Events in order: each message, and a `Pong` for each pong sent.
    events: Vec<WsEvent>,
    /// The payload of each ping, with the stream offset where its frame ends.
    pings: Vec<(usize, Vec<u8>)>,
}

fn script(messages: &[Sent], key_seed: u32) -> Script {
    let mut wire = BytesMut::new();
    let mut events = Vec::new();
    let mut pings = Vec::new();
    let mut n = key_seed;
    let mut next_key = || {
        n = n.wrapping_mul(0x9e37_79b9).wrapping_add(0x7f4a_7c15);
        n.to_be_bytes()
    };
    for sent in messages {
        let payload = sent.message.payload();
        let cuts = cut_points(&sent.cuts, payload.len());
        let fragments = chunks(payload, &cuts);
        let opcode = if sent.message.is_text() { OpCode::Text } else { OpCode::Binary };
        for (i, fragment) in fragments.iter().enumerate() {
            let op = if i == 0 { opcode } else { OpCode::Continuation };
            let fin = i + 1 == fragments.len();
            encode_frame(fin, op, fragment, Some(next_key()), &mut wire);
            if fin {
                events.push(WsEvent::Message(sent.message.clone()));
            }
            for (at, ctl) in &sent.controls {
                if at.index(fragments.len()) != i {
                    continue;
                }
                let op = if ctl.ping { OpCode::Ping } else { OpCode::Pong };
                encode_frame(true, op, &ctl.payload, Some(next_key()), &mut wire);
                if ctl.ping {
                    pings.push((wire.len(), ctl.payload.clone()));
                } else {
                    events.push(WsEvent::Pong(Bytes::from(ctl.payload.clone())));
                }
            }
        }
    }
    Script { wire: wire.to_vec(), events, pings }
}

/// Whether `sub` is a subsequence of `of`.
fn is_subsequence<T: PartialEq>(sub: &[T], of: &[T]) -> bool {
    let mut it = of.iter();
    sub.iter().all(|x| it.any(|y| y == x))
}

proptest! {
    #![proptest_config(config(256))]

    /// Fragmented text (split anywhere, also inside a UTF-8 sequence) and binary messages
    /// with pings and pongs between fragments, fed to a server in random chunks: the server
    /// emits the same messages in order and a `Pong` event per pong, answers the last ping
    /// of every read, and neither closes nor writes anything but pongs.
    #[test]
    fn server_reassembles_messages_around_control_frames(
        messages in prop::collection::vec(sent(), 0..6),
        key_seed in any::<u32>(),
        cuts in prop::collection::vec(any::<Index>(), 0..16),
    ) {
        let script = script(&messages, key_seed);
        let now = Instant::now();
        let mut conn = open_server(now);
        let cuts = cut_points(&cuts, script.wire.len());
        let mut events = Vec::new();
        let mut pongs = Vec::new();
        let mut start = 0;
        for (read, chunk) in chunks(&script.wire, &cuts).into_iter().enumerate() {
            let end = start + chunk.len();
            conn.handle_read(now, chunk);
            events.extend(drain_events(&mut conn));
            let frames = server_frames(&drain_bytes(&mut conn));
            let mut answered = Vec::new();
            for frame in frames {
                let opcode = frame.opcode;
                prop_assert_eq!(opcode, OpCode::Pong, "read {}: server sent {:?}", read, frame);
                answered.push(frame.payload.to_vec());
            }
            // The pings whose frames were completed by this read.
            let completed: Vec<&Vec<u8>> = script
                .pings
                .iter()
                .filter(|(at, _)| *at > start && *at <= end)
                .map(|(_, p)| p)
                .collect();
            match completed.last() {
                Some(last) => prop_assert_eq!(
                    answered.last(), Some(*last),
                    "read {}: the last ping of the read is not answered", read
                ),
                None => prop_assert!(answered.is_empty(), "read {}: a pong without a ping", read),
            }
            pongs.extend(answered);
            start = end;
        }
        prop_assert_eq!(events, script.events);
        let pinged: Vec<Vec<u8>> = script.pings.into_iter().map(|(_, p)| p).collect();
        prop_assert!(is_subsequence(&pongs, &pinged), "pongs out of order or unasked");
        prop_assert_eq!(pongs.last(), pinged.last());
        prop_assert_eq!(conn.state(), WsState::Open);
    }
}

/// A piece of hostile input: raw bytes, or a frame header with mostly valid, sometimes
/// arbitrary first byte (FIN, RSV, opcode) and masking bit around a payload that is text,
/// a close code, arbitrary bytes or too long for a control frame. Valid frames dominate so
/// that cases get past the first violation.
fn hostile_piece() -> impl Strategy<Value = Vec<u8>> {
    let raw = prop::collection::vec(any::<u8>(), 0..40);
    let first_byte = prop_oneof![
        6 => prop::sample::select(&[0x81u8, 0x01, 0x80, 0x00, 0x82, 0x02, 0x88, 0x89, 0x8a][..]),
        1 => any::<u8>(),
    ];
    let close_code = prop_oneof![
        3 => prop::sample::select(&[1000u16, 1001, 1003, 1005, 1006, 1007, 1011, 3000, 4999][..]),
        1 => any::<u16>(),
    ];
    let payload = prop_oneof![
        2 => "[a-z é€😀]{0,12}".prop_map(String::into_bytes),
        2 => prop::collection::vec(any::<u8>(), 0..40),
        1 => close_code.prop_map(|code| code.to_be_bytes().to_vec()),
        1 => prop::collection::vec(any::<u8>(), 120..140),
    ];
    let frame = (first_byte, prop::bool::weighted(0.97), any::<[u8; 4]>(), payload).prop_map(
        |(b0, masked, key, payload)| {
            let mut out = vec![b0];
            let mask_bit = if masked { 0x80 } else { 0 };
            match u8::try_from(payload.len()) {
                Ok(n @ 0..=125) => out.push(mask_bit | n),
                _ => {
                    out.push(mask_bit | 126);
                    let n = u16::try_from(payload.len()).unwrap_or(u16::MAX);
                    out.extend_from_slice(&n.to_be_bytes());
                }
            }
            if masked {
                out.extend_from_slice(&key);
            }
            let start = out.len();
            out.extend_from_slice(&payload);
            if masked {
                apply_mask(&mut out[start..], key);
            }
            out
        },
    );
    prop_oneof![1 => raw, 8 => frame]
}

/// Feeds `stream` to a fresh server in `pieces`, accepting the upgrade as soon as it is
/// requested (the request is either already done or at the start of the stream). Returns
/// every event and every written byte, and whether a `Shutdown` came last.
///
/// The output is drained only at the end: a server answers only the latest ping of what it
/// has read so far, so draining between reads would make pongs depend on the chunking.
fn run_hostile(with_request: bool, pieces: &[&[u8]]) -> (Vec<WsEvent>, Vec<u8>, bool) {
    let now = Instant::now();
    let mut conn =
        if with_request { WsConnection::server(server_config(), now) } else { open_server(now) };
    let mut events = Vec::new();
    for piece in pieces {
        conn.handle_read(now, piece);
        for event in drain_events(&mut conn) {
            if matches!(event, WsEvent::UpgradeRequested(_)) {
                conn.accept(now, None, &[]).expect("accept");
            }
            events.push(event);
        }
        events.extend(drain_events(&mut conn));
    }
    let (bytes, shutdown) = drain_all(&mut conn);
    (events, bytes, shutdown)
}

proptest! {
    #![proptest_config(config(384))]

    /// Hostile bytes after a valid handshake (and a few valid messages, so that the hostile
    /// part meets a connection in various states) give the same events, the same written
    /// bytes and the same shutdown whether fed whole or in random chunks (including one byte
    /// at a time), and `Closed` is emitted at most once.
    #[test]
    fn conn_split_invariance_on_hostile_input(
        with_request in any::<bool>(),
        valid in prop::collection::vec(sent(), 0..3),
        key_seed in any::<u32>(),
        pieces in prop::collection::vec(hostile_piece(), 0..12),
        cuts in prop::collection::vec(any::<Index>(), 0..24),
    ) {
        let mut stream = if with_request { REQUEST.to_vec() } else { Vec::new() };
        stream.extend(script(&valid, key_seed).wire);
        stream.extend(pieces.concat());

        let whole = run_hostile(with_request, &[&stream]);
        let cuts = cut_points(&cuts, stream.len());
        let chunked = run_hostile(with_request, &chunks(&stream, &cuts));
        prop_assert_eq!(&chunked, &whole, "random chunks differ from whole");
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        let byte_by_byte = run_hostile(with_request, &bytes);
        prop_assert_eq!(&byte_by_byte, &whole, "byte by byte differs from whole");

        let closed = whole.0.iter().filter(|e| matches!(e, WsEvent::Closed(_))).count();
        prop_assert!(closed <= 1, "Closed emitted {} times", closed);
        prop_assert_eq!(closed == 1, whole.2, "Closed without Shutdown or the reverse");
    }
}
