//! Tests of the frame codec: the RFC 6455 §5.7 examples, the framing families of the
//! Autobahn|Testsuite (1 lengths, 2 and 5 control frames, 3 reserved bits, 4 opcodes, 9 limits),
//! masking, encoding, and split-invariance properties.

use super::*;
use proptest::prelude::*;

const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
const NO_LIMIT: usize = usize::MAX;

/// What decoding a byte stream produced: the frames, then the error that stopped it (if
/// any), then the bytes left in the buffer (when no error).
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    frames: Vec<Frame>,
    error: Option<ProtocolError>,
    rest: Vec<u8>,
}

/// Feeds `chunks` one after the other into a fresh decoder, decoding everything possible
/// after each chunk, and stops at the first error.
fn run(decoder: &FrameDecoder, chunks: &[&[u8]], max_frame: usize) -> Outcome {
    let mut dec = decoder.clone();
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            match dec.decode(&mut buf, max_frame) {
                Ok(Some(f)) => frames.push(f),
                Ok(None) => break,
                Err(e) => return Outcome { frames, error: Some(e), rest: Vec::new() },
            }
        }
    }
    Outcome { frames, error: None, rest: buf.to_vec() }
}

/// Decodes `wire` whole, one byte at a time, with trailing bytes, and split at every
/// point of the first 16 bytes and a few in the payload; asserts all agree and returns
/// the outcome.
fn check_with(decoder: &FrameDecoder, wire: &[u8], max_frame: usize) -> Outcome {
    let whole = run(decoder, &[wire], max_frame);
    let bytes: Vec<&[u8]> = wire.chunks(1).collect();
    assert_eq!(run(decoder, &bytes, max_frame), whole, "one byte at a time");

    // A trailing partial frame header: never consumed, never an error.
    let trailer: &[u8] = &[0x82];
    let mut trailed = run(decoder, &[wire, trailer], max_frame);
    if whole.error.is_none() {
        assert_eq!(trailed.rest.pop(), Some(0x82), "trailing byte consumed");
    }
    assert_eq!(trailed, whole, "with trailing bytes");

    let mut cuts: Vec<usize> = (0..wire.len().min(16)).collect();
    cuts.extend([wire.len() / 2, wire.len().saturating_sub(1)]);
    for cut in cuts {
        let (a, b) = wire.split_at(cut.min(wire.len()));
        assert_eq!(run(decoder, &[a, b], max_frame), whole, "split at {cut}");
    }
    whole
}

fn check(role: Role, wire: &[u8], max_frame: usize) -> Outcome {
    check_with(&FrameDecoder::new(role), wire, max_frame)
}

/// `wire` must decode (every way) to exactly `frame`, leaving nothing behind.
fn assert_decodes(role: Role, wire: &[u8], frame: &Frame) {
    let out = check(role, wire, NO_LIMIT);
    assert_eq!(out, Outcome { frames: vec![frame.clone()], error: None, rest: vec![] });
}

/// `wire` must fail (every way) with `error` before producing a frame.
fn assert_fails(role: Role, wire: &[u8], max_frame: usize, error: ProtocolError) {
    let out = check(role, wire, max_frame);
    assert_eq!(out, Outcome { frames: vec![], error: Some(error), rest: vec![] });
}

/// The wire bytes of `frame` as the peer of `decoder_role` sends it (masked to a server).
fn wire_for(decoder_role: Role, frame: &Frame) -> Vec<u8> {
    let mask = (decoder_role == Role::Server).then_some(KEY);
    let mut out = BytesMut::new();
    encode(frame, mask, &mut out);
    out.to_vec()
}

fn payload(len: usize) -> Bytes {
    (0..len).map(|i| u8::try_from(i % 251).unwrap()).collect::<Vec<u8>>().into()
}

/// A raw header: byte 0, then byte 1 (with the mask bit for `role`'s peer), then `rest`.
fn raw(role: Role, b0: u8, len7: u8, rest: &[u8]) -> Vec<u8> {
    let mask_bit = if role == Role::Server { 0x80 } else { 0 };
    let mut v = vec![b0, mask_bit | len7];
    v.extend_from_slice(rest);
    v
}

// ---- RFC 6455 §5.7 examples -------------------------------------------------------

#[test]
fn rfc_5_7_examples() {
    let hello = Frame::new(true, OpCode::Text, &b"Hello"[..]);
    assert_decodes(Role::Client, b"\x81\x05Hello", &hello);
    assert_decodes(Role::Server, b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58", &hello);
    let out = check(Role::Client, b"\x01\x03Hel\x80\x02lo", NO_LIMIT);
    assert_eq!(
        out.frames,
        [
            Frame::new(false, OpCode::Text, &b"Hel"[..]),
            Frame::new(true, OpCode::Continuation, &b"lo"[..]),
        ]
    );
    assert_decodes(Role::Client, b"\x89\x05Hello", &Frame::new(true, OpCode::Ping, &b"Hello"[..]));
    assert_decodes(
        Role::Server,
        b"\x8a\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58",
        &Frame::new(true, OpCode::Pong, &b"Hello"[..]),
    );
    let mut wire = b"\x82\x7e\x01\x00".to_vec();
    wire.extend_from_slice(&payload(256));
    assert_decodes(Role::Client, &wire, &Frame::new(true, OpCode::Binary, payload(256)));
    let mut wire = b"\x82\x7f\x00\x00\x00\x00\x00\x01\x00\x00".to_vec();
    wire.extend_from_slice(&payload(65536));
    assert_decodes(Role::Client, &wire, &Frame::new(true, OpCode::Binary, payload(65536)));
}

// ---- Autobahn 1.x: framing lengths -------------------------------------------------

fn lengths_roundtrip(opcode: OpCode) {
    for len in [0, 1, 125, 126, 127, 128, 65535, 65536] {
        let frame = Frame::new(true, opcode, payload(len));
        for role in [Role::Client, Role::Server] {
            let wire = wire_for(role, &frame);
            let ext = match len {
                0..=125 => 0,
                126..=65535 => 2,
                _ => 8,
            };
            let key = if role == Role::Server { 4 } else { 0 };
            assert_eq!(wire.len(), 2 + ext + key + len, "minimal header for {len}");
            assert_decodes(role, &wire, &frame);
        }
    }
}

#[test]
fn case_1_1_text_lengths_0_125_126_127_65535_65536() {
    lengths_roundtrip(OpCode::Text);
}

#[test]
fn case_1_2_binary_lengths_0_125_126_127_65535_65536() {
    lengths_roundtrip(OpCode::Binary);
}

#[test]
fn case_1_x_non_minimal_lengths_are_accepted() {
    for role in [Role::Client, Role::Server] {
        let key: &[u8] = if role == Role::Server { &KEY } else { &[] };
        let mut body = b"abcde".to_vec();
        if role == Role::Server {
            apply_mask(&mut body, KEY);
        }
        let frame = Frame::new(true, OpCode::Binary, &b"abcde"[..]);
        let mut wire16 = raw(role, 0x82, 126, &[0, 5]);
        wire16.extend_from_slice(key);
        wire16.extend_from_slice(&body);
        assert_decodes(role, &wire16, &frame);
        let mut wire64 = raw(role, 0x82, 127, &[0, 0, 0, 0, 0, 0, 0, 5]);
        wire64.extend_from_slice(key);
        wire64.extend_from_slice(&body);
        assert_decodes(role, &wire64, &frame);
    }
}

#[test]
fn several_frames_in_one_buffer() {
    let frames = [
        Frame::new(false, OpCode::Text, &b"frag"[..]),
        Frame::new(true, OpCode::Ping, &b""[..]),
        Frame::new(true, OpCode::Continuation, payload(300)),
        Frame::new(true, OpCode::Close, &b"\x03\xe8"[..]),
    ];
    for role in [Role::Client, Role::Server] {
        let wire: Vec<u8> = frames.iter().flat_map(|f| wire_for(role, f)).collect();
        let out = check(role, &wire, NO_LIMIT);
        assert_eq!(out, Outcome { frames: frames.to_vec(), error: None, rest: vec![] });
    }
}

// ---- Autobahn 2.x / 5.x: control frames ----------------------------------------------

#[test]
fn case_2_4_ping_with_125_byte_payload() {
    for role in [Role::Client, Role::Server] {
        let ping = Frame::new(true, OpCode::Ping, payload(125));
        assert_decodes(role, &wire_for(role, &ping), &ping);
    }
}

#[test]
fn case_2_5_ping_over_125_bytes_fails_at_byte_1() {
    for role in [Role::Client, Role::Server] {
        // Only the first two bytes: the frame is rejected before its length or payload.
        assert_fails(
            role,
            &raw(role, 0x89, 126, &[]),
            NO_LIMIT,
            ProtocolError::ControlFrameTooLong,
        );
        let mut wire = raw(role, 0x89, 126, &[0, 126]);
        wire.extend_from_slice(&[0; 4 + 126]);
        assert_fails(role, &wire, NO_LIMIT, ProtocolError::ControlFrameTooLong);
        // Even a 5-byte payload in the 16-bit form is a control frame over 125 by form.
        assert_fails(
            role,
            &raw(role, 0x8a, 126, &[0, 5]),
            NO_LIMIT,
            ProtocolError::ControlFrameTooLong,
        );
        assert_fails(
            role,
            &raw(role, 0x88, 127, &[]),
            NO_LIMIT,
            ProtocolError::ControlFrameTooLong,
        );
    }
}

#[test]
fn case_5_1_and_5_2_fragmented_control_frames_fail_at_byte_0() {
    for role in [Role::Client, Role::Server] {
        for b0 in [0x08, 0x09, 0x0a] {
            assert_fails(role, &[b0], NO_LIMIT, ProtocolError::FragmentedControlFrame);
            assert_fails(
                role,
                &raw(role, b0, 2, b"\0\0\0\0ab"),
                NO_LIMIT,
                ProtocolError::FragmentedControlFrame,
            );
        }
    }
}

// ---- Autobahn 3.x: reserved bits ------------------------------------------------------

#[test]
fn case_3_1_to_3_7_reserved_bits_fail_at_byte_0() {
    for role in [Role::Client, Role::Server] {
        for rsv in 1u8..=7 {
            for op in [0x1, 0x2, 0x9] {
                let b0 = 0x80 | (rsv << 4) | op;
                assert_fails(role, &[b0], NO_LIMIT, ProtocolError::ReservedBits);
                assert_fails(role, &raw(role, b0, 0, &KEY), NO_LIMIT, ProtocolError::ReservedBits);
            }
        }
    }
}

#[test]
fn allowed_rsv1_is_reported_and_others_still_fail() {
    for role in [Role::Client, Role::Server] {
        let dec = FrameDecoder::new(role).with_allowed_rsv(0b100);
        let frame = Frame::new(true, OpCode::Text, &b"zz"[..]).with_rsv(0b100);
        let out = check_with(&dec, &wire_for(role, &frame), NO_LIMIT);
        assert_eq!(out.frames, [frame]);
        for rsv in [0b010, 0b001, 0b110] {
            let bad = Frame::new(true, OpCode::Text, &b"zz"[..]).with_rsv(rsv);
            let out = check_with(&dec, &wire_for(role, &bad), NO_LIMIT);
            assert_eq!(out.error, Some(ProtocolError::ReservedBits));
        }
    }
}

// ---- Autobahn 4.x: reserved opcodes ---------------------------------------------------

#[test]
fn case_4_1_reserved_data_opcodes() {
    for role in [Role::Client, Role::Server] {
        for op in 3u8..=7 {
            assert_fails(role, &[0x80 | op], NO_LIMIT, ProtocolError::ReservedOpcode(op));
            assert_fails(
                role,
                &raw(role, 0x80 | op, 0, &KEY),
                NO_LIMIT,
                ProtocolError::ReservedOpcode(op),
            );
        }
    }
}

#[test]
fn case_4_2_reserved_control_opcodes() {
    for role in [Role::Client, Role::Server] {
        for op in 0xbu8..=0xf {
            assert_fails(role, &[0x80 | op], NO_LIMIT, ProtocolError::ReservedOpcode(op));
            assert_fails(
                role,
                &raw(role, 0x80 | op, 3, &KEY),
                NO_LIMIT,
                ProtocolError::ReservedOpcode(op),
            );
        }
    }
}

#[test]
fn case_4_x_error_after_a_valid_frame_keeps_the_valid_frame() {
    let ok = Frame::new(true, OpCode::Text, &b"ok"[..]);
    for role in [Role::Client, Role::Server] {
        let mut wire = wire_for(role, &ok);
        wire.extend_from_slice(&raw(role, 0x85, 0, &KEY));
        let out = check(role, &wire, NO_LIMIT);
        assert_eq!(out.frames, core::slice::from_ref(&ok));
        assert_eq!(out.error, Some(ProtocolError::ReservedOpcode(5)));
    }
}

// ---- masking (§5.1) -------------------------------------------------------------------

#[test]
fn server_rejects_unmasked_and_client_rejects_masked_at_byte_1() {
    assert_fails(Role::Server, b"\x81\x05", NO_LIMIT, ProtocolError::UnmaskedFrame);
    assert_fails(Role::Server, b"\x81\x05Hello", NO_LIMIT, ProtocolError::UnmaskedFrame);
    assert_fails(Role::Client, b"\x81\x85", NO_LIMIT, ProtocolError::MaskedFrame);
    assert_fails(
        Role::Client,
        b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58",
        NO_LIMIT,
        ProtocolError::MaskedFrame,
    );
}

// ---- Autobahn 9.x: size limits; 64-bit lengths ----------------------------------------

#[test]
fn case_9_frame_at_the_limit_passes_and_one_more_byte_fails() {
    for role in [Role::Client, Role::Server] {
        for (len, limit) in [(0, 0), (100, 100), (1000, 1000), (65536, 65536)] {
            let frame = Frame::new(true, OpCode::Binary, payload(len));
            let wire = wire_for(role, &frame);
            assert_eq!(check(role, &wire, limit).frames, core::slice::from_ref(&frame));
            let out = check(role, &wire, limit.wrapping_sub(1));
            if limit > 0 {
                assert_eq!(out.error, Some(ProtocolError::FrameTooLarge), "{len}");
            }
        }
    }
}

#[test]
fn case_9_oversized_frame_fails_from_its_header_alone() {
    for role in [Role::Client, Role::Server] {
        // 16 MiB announced, only the 10 header bytes present.
        let wire = raw(role, 0x82, 127, &(16u64 << 20).to_be_bytes());
        assert_fails(role, &wire, 1 << 20, ProtocolError::FrameTooLarge);
        // 2^62: larger than any limit, no payload needed to know it.
        let wire = raw(role, 0x82, 127, &(1u64 << 62).to_be_bytes());
        assert_fails(role, &wire, 1 << 40, ProtocolError::FrameTooLarge);
        let wire = raw(role, 0x82, 126, &[0xff, 0xff]);
        assert_fails(role, &wire, 1000, ProtocolError::FrameTooLarge);
        assert_fails(role, &raw(role, 0x82, 125, &[]), 124, ProtocolError::FrameTooLarge);
    }
}

#[test]
fn length_with_top_bit_set_is_invalid() {
    for role in [Role::Client, Role::Server] {
        for len in [1u64 << 63, u64::MAX] {
            let wire = raw(role, 0x82, 127, &len.to_be_bytes());
            assert_fails(role, &wire, NO_LIMIT, ProtocolError::InvalidLength);
        }
    }
}

#[test]
fn partial_payload_keeps_the_parsed_header() {
    let frame = Frame::new(true, OpCode::Binary, payload(1000));
    let wire = wire_for(Role::Server, &frame);
    let mut dec = FrameDecoder::new(Role::Server);
    let mut buf = BytesMut::from(&wire[..20]);
    assert_eq!(dec.decode(&mut buf, NO_LIMIT), Ok(None));
    assert!(dec.header.is_some(), "header remembered");
    assert_eq!(buf.len(), 20, "nothing consumed");
    // Once the header is stored, the header bytes are not looked at again.
    buf[1] = 0;
    buf.extend_from_slice(&wire[20..]);
    assert_eq!(dec.decode(&mut buf, NO_LIMIT), Ok(Some(frame)));
    assert!(dec.header.is_none());
    assert!(buf.is_empty());
}

#[test]
fn a_different_buffer_after_a_stored_header_does_not_panic() {
    let wire = wire_for(Role::Server, &Frame::new(true, OpCode::Binary, payload(100)));
    let mut dec = FrameDecoder::new(Role::Server);
    let mut buf = BytesMut::from(&wire[..8]);
    assert_eq!(dec.decode(&mut buf, NO_LIMIT), Ok(None));
    for len in [0, 3, 6] {
        let mut other = BytesMut::from(&wire[..len]);
        assert_eq!(dec.decode(&mut other, NO_LIMIT), Ok(None));
    }
}

#[test]
fn empty_buffer_needs_more() {
    for role in [Role::Client, Role::Server] {
        let out = check(role, &[], NO_LIMIT);
        assert_eq!(out, Outcome { frames: vec![], error: None, rest: vec![] });
    }
}

// ---- encoding ----------------------------------------------------------------------------

#[test]
fn header_encoding_is_minimal() {
    let h = encode_header(true, 0, OpCode::Text, 5, None);
    assert_eq!(h.as_slice(), b"\x81\x05");
    let h = encode_header(false, 0b100, OpCode::Binary, 126, Some(KEY));
    assert_eq!(h.as_slice(), b"\x42\xfe\x00\x7e\x37\xfa\x21\x3d");
    let h = encode_header(true, 0, OpCode::Binary, 65535, None);
    assert_eq!(h.as_slice(), b"\x82\x7e\xff\xff");
    let h = encode_header(true, 0, OpCode::Binary, 65536, None);
    assert_eq!(h.as_slice(), b"\x82\x7f\0\0\0\0\0\x01\0\0");
    let h = encode_header(true, 0, OpCode::Binary, 65536, Some(KEY));
    assert_eq!(h.len(), HeaderBuf::MAX_LEN);
    assert!(!h.is_empty());
    assert_eq!(h.as_ref(), h.as_slice());
    let h = encode_header(true, 0, OpCode::Close, 0, None);
    assert_eq!(h.as_slice(), b"\x88\x00");
}

#[test]
fn encode_frame_masks_a_copy_and_appends() {
    let mut out = BytesMut::from(&b"xy"[..]);
    encode_frame(true, OpCode::Text, b"Hello", Some(KEY), &mut out);
    assert_eq!(&out[..], b"xy\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58");
    encode_frame(true, OpCode::Text, b"Hello", None, &mut out);
    assert_eq!(&out[13..], b"\x81\x05Hello");
}

#[test]
fn opcodes() {
    for v in 0u8..=255 {
        match OpCode::from_u8(v) {
            Some(op) => {
                assert_eq!(op as u8, v);
                assert_eq!(op.is_control(), v >= 8);
            }
            None => assert!(matches!(v, 3..=7 | 11..), "{v}"),
        }
    }
}

// ---- properties ------------------------------------------------------------------------

fn any_frame() -> impl Strategy<Value = Frame> {
    let data = (
        any::<bool>(),
        0u8..8,
        prop_oneof![Just(OpCode::Continuation), Just(OpCode::Text), Just(OpCode::Binary)],
        prop_oneof![0usize..130, 120usize..300, 65530usize..65540],
    );
    let control = (
        Just(true),
        0u8..8,
        prop_oneof![Just(OpCode::Close), Just(OpCode::Ping), Just(OpCode::Pong)],
        0usize..=125,
    );
    prop_oneof![data, control].prop_map(|(fin, rsv, opcode, len)| Frame {
        fin,
        rsv,
        opcode,
        payload: payload(len),
    })
}

fn any_role() -> impl Strategy<Value = Role> {
    prop_oneof![Just(Role::Client), Just(Role::Server)]
}

/// Cuts `wire` at the given points.
fn chunks<'a>(wire: &'a [u8], points: &[prop::sample::Index]) -> Vec<&'a [u8]> {
    let mut cuts: Vec<usize> = points.iter().map(|p| p.index(wire.len() + 1)).collect();
    cuts.sort_unstable();
    let mut out = Vec::new();
    let mut start = 0;
    for c in cuts {
        out.push(&wire[start..c]);
        start = c;
    }
    out.push(&wire[start..]);
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn encode_decode_round_trip_in_random_splits(
        frames in proptest::collection::vec(any_frame(), 1..4),
        role in any_role(),
        key in any::<[u8; 4]>(),
        points in proptest::collection::vec(any::<prop::sample::Index>(), 0..12),
    ) {
        let mask = (role == Role::Server).then_some(key);
        let mut wire = BytesMut::new();
        for f in &frames {
            encode(f, mask, &mut wire);
        }
        let dec = FrameDecoder::new(role).with_allowed_rsv(0b111);
        let out = run(&dec, &chunks(&wire, &points), NO_LIMIT);
        prop_assert_eq!(out, Outcome { frames, error: None, rest: vec![] });
    }

    #[test]
    fn random_bytes_in_random_splits_match_whole(
        wire in proptest::collection::vec(any::<u8>(), 0..64),
        role in any_role(),
        allowed in 0u8..8,
        max_frame in prop_oneof![Just(NO_LIMIT), 0usize..40],
        points in proptest::collection::vec(any::<prop::sample::Index>(), 0..12),
    ) {
        let dec = FrameDecoder::new(role).with_allowed_rsv(allowed);
        let whole = run(&dec, &[&wire], max_frame);
        prop_assert_eq!(run(&dec, &chunks(&wire, &points), max_frame), whole);
    }

    #[test]
    fn every_test_wire_in_random_splits_matches_whole(
        which in 0usize..12,
        role in any_role(),
        points in proptest::collection::vec(any::<prop::sample::Index>(), 0..12),
    ) {
        let frame = match which {
            0 => Frame::new(true, OpCode::Text, payload(0)),
            1 => Frame::new(true, OpCode::Text, payload(125)),
            2 => Frame::new(true, OpCode::Binary, payload(126)),
            3 => Frame::new(true, OpCode::Binary, payload(127)),
            4 => Frame::new(true, OpCode::Binary, payload(65535)),
            5 => Frame::new(true, OpCode::Binary, payload(65536)),
            6 => Frame::new(true, OpCode::Ping, payload(125)),
            7 => Frame::new(false, OpCode::Text, payload(7)),
            8 => Frame::new(true, OpCode::Continuation, payload(300)),
            9 => Frame::new(true, OpCode::Text, payload(3)).with_rsv(0b010),
            10 => Frame::new(true, OpCode::Close, &b"\x03\xe8bye"[..]),
            _ => Frame::new(true, OpCode::Pong, payload(0)),
        };
        let wire = wire_for(role, &frame);
        let dec = FrameDecoder::new(role);
        let whole = run(&dec, &[&wire], 65535);
        prop_assert_eq!(run(&dec, &chunks(&wire, &points), 65535), whole);
    }
}
