//! The RFC 6455 §5 frame codec: a resumable, zero-copy [`FrameDecoder`] and minimal-length
//! encoders ([`encode_header`], [`encode_frame`], [`encode`]).
//!
//! Wire layout (§5.2):
//!
//! ```text
//!  byte 0: FIN RSV1 RSV2 RSV3 opcode(4)
//!  byte 1: MASK len7(7)            len7 = 0..=125: the length; 126: u16 follows; 127: u64 follows
//!  then:   extended length (0, 2 or 8 bytes, big endian), masking key (0 or 4 bytes), payload
//! ```
//!
//! The decoder checks each header field as soon as its bytes are there and reports only
//! frame-level violations; fragmentation rules (continuations, interleaved control frames)
//! belong to [`Reassembler`](super::reassemble::Reassembler).

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::error::ProtocolError;
use super::mask::{apply_mask, copy_masked};

/// The side of the connection doing the decoding or encoding.
///
/// A [`Role::Server`] decodes client frames, which MUST be masked; a [`Role::Client`] decodes
/// server frames, which MUST NOT be masked (§5.1). Likewise a client masks what it encodes
/// and a server does not.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// The connecting side.
    Client,
    /// The accepting side.
    Server,
}

/// A frame opcode (§5.2, §11.8). Reserved opcodes are not representable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum OpCode {
    /// `0x0`: continues a fragmented message.
    Continuation = 0,
    /// `0x1`: first (or only) frame of a text message.
    Text = 1,
    /// `0x2`: first (or only) frame of a binary message.
    Binary = 2,
    /// `0x8`: close (control).
    Close = 8,
    /// `0x9`: ping (control).
    Ping = 9,
    /// `0xA`: pong (control).
    Pong = 10,
}

impl OpCode {
    /// Whether this is a control opcode (close, ping, pong: high bit of the nibble set).
    #[must_use]
    pub fn is_control(self) -> bool {
        (self as u8) & 0x8 != 0
    }

    /// The opcode with this value, or `None` for a reserved (`0x3`–`0x7`, `0xB`–`0xF`) or
    /// out-of-range value.
    #[must_use]
    pub fn from_u8(value: u8) -> Option<Self> {
        match value {
            0 => Some(Self::Continuation),
            1 => Some(Self::Text),
            2 => Some(Self::Binary),
            8 => Some(Self::Close),
            9 => Some(Self::Ping),
            10 => Some(Self::Pong),
            _ => None,
        }
    }
}

/// One frame, payload unmasked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// FIN: this is the last frame of its message (always set on control frames).
    pub fin: bool,
    /// The reserved bits: `0b100` = RSV1, `0b010` = RSV2, `0b001` = RSV3.
    pub rsv: u8,
    /// The opcode.
    pub opcode: OpCode,
    /// The payload, already unmasked.
    pub payload: Bytes,
}

impl Frame {
    /// A frame with no reserved bits set.
    pub fn new(fin: bool, opcode: OpCode, payload: impl Into<Bytes>) -> Self {
        Self { fin, rsv: 0, opcode, payload: payload.into() }
    }

    /// The same frame with the reserved bits `rsv` (`0b100` = RSV1, …) set.
    #[must_use]
    pub fn with_rsv(mut self, rsv: u8) -> Self {
        self.rsv = rsv & 0b111;
        self
    }
}

/// A parsed header whose payload has not fully arrived yet.
#[derive(Clone, Copy, Debug)]
struct Header {
    fin: bool,
    rsv: u8,
    opcode: OpCode,
    mask: Option<[u8; 4]>,
    /// Bytes of the header on the wire (2–14).
    header_len: usize,
    payload_len: usize,
}

/// A resumable RFC 6455 frame decoder.
///
/// Call [`decode`](Self::decode) with the connection's read buffer whenever bytes were
/// appended to it. It consumes one whole frame per `Ok(Some)` and nothing otherwise; a header
/// is parsed once and remembered, so a payload that arrives in many reads is not re-parsed.
#[derive(Clone, Debug)]
pub struct FrameDecoder {
    role: Role,
    allowed_rsv: u8,
    /// The header of the frame being received, once all of its bytes were seen.
    header: Option<Header>,
}

impl FrameDecoder {
    /// A decoder for the given side: a `Server` requires masked frames, a `Client` rejects
    /// them. No reserved bits are allowed.
    #[must_use]
    pub fn new(role: Role) -> Self {
        Self { role, allowed_rsv: 0, header: None }
    }

    /// Allows the reserved bits in `bits` (`0b100` = RSV1, …), e.g. RSV1 once
    /// permessage-deflate was negotiated (RFC 7692). Other set bits stay an error.
    #[must_use]
    pub fn with_allowed_rsv(mut self, bits: u8) -> Self {
        self.allowed_rsv = bits & 0b111;
        self
    }

    /// Decodes the next frame from the front of `buf`.
    ///
    /// Returns `Ok(Some(frame))` and removes the frame's bytes from `buf`, or `Ok(None)` when
    /// `buf` does not hold a whole frame yet (nothing is removed; call again after appending
    /// more bytes). The payload is split off `buf` and unmasked in place, without a copy.
    ///
    /// Each header check runs as soon as the bytes it needs are in `buf`, before the payload
    /// arrives, so an oversized or malformed frame is rejected without being buffered.
    ///
    /// # Errors
    /// In the order the bytes arrive: [`ProtocolError::ReservedBits`],
    /// [`ProtocolError::ReservedOpcode`], [`ProtocolError::FragmentedControlFrame`] (byte 0);
    /// [`ProtocolError::UnmaskedFrame`] / [`ProtocolError::MaskedFrame`] (wrong masking for
    /// the role), [`ProtocolError::ControlFrameTooLong`] (byte 1);
    /// [`ProtocolError::InvalidLength`] (64-bit length with the top bit set) and
    /// [`ProtocolError::FrameTooLarge`] (payload over `max_frame`) once the length is known.
    /// After an error the connection is to be failed; further calls do not panic but their
    /// results are unspecified.
    pub fn decode(
        &mut self,
        buf: &mut BytesMut,
        max_frame: usize,
    ) -> Result<Option<Frame>, ProtocolError> {
        let header = match self.header {
            Some(h) => h,
            None => match self.parse_header(buf, max_frame)? {
                Some(h) => {
                    self.header = Some(h);
                    h
                }
                None => return Ok(None),
            },
        };
        if buf.len() < header.header_len || buf.len() - header.header_len < header.payload_len {
            return Ok(None);
        }
        self.header = None;
        buf.advance(header.header_len);
        let mut payload = buf.split_to(header.payload_len);
        if let Some(key) = header.mask {
            apply_mask(&mut payload, key);
        }
        Ok(Some(Frame {
            fin: header.fin,
            rsv: header.rsv,
            opcode: header.opcode,
            payload: payload.freeze(),
        }))
    }

    /// Parses and checks the header at the front of `buf` without consuming it. `Ok(None)`
    /// when more bytes are needed; each check runs as soon as its bytes are present.
    fn parse_header(&self, buf: &[u8], max_frame: usize) -> Result<Option<Header>, ProtocolError> {
        let Some(&b0) = buf.first() else {
            return Ok(None);
        };
        let fin = b0 & 0x80 != 0;
        let rsv = (b0 >> 4) & 0b111;
        if rsv & !self.allowed_rsv != 0 {
            return Err(ProtocolError::ReservedBits);
        }
        let opcode = OpCode::from_u8(b0 & 0x0f).ok_or(ProtocolError::ReservedOpcode(b0 & 0x0f))?;
        if opcode.is_control() && !fin {
            return Err(ProtocolError::FragmentedControlFrame);
        }

        let Some(&b1) = buf.get(1) else {
            return Ok(None);
        };
        let masked = b1 & 0x80 != 0;
        match (self.role, masked) {
            (Role::Server, false) => return Err(ProtocolError::UnmaskedFrame),
            (Role::Client, true) => return Err(ProtocolError::MaskedFrame),
            _ => {}
        }
        let len7 = b1 & 0x7f;
        if opcode.is_control() && len7 > 125 {
            return Err(ProtocolError::ControlFrameTooLong);
        }

        // Extended payload length (§5.2). Non-minimal encodings are accepted on read.
        let (payload_len, mut pos): (u64, usize) = match len7 {
            126 => match buf.get(2..4) {
                Some(&[a, b]) => (u64::from(u16::from_be_bytes([a, b])), 4),
                _ => return Ok(None),
            },
            127 => match buf.get(2..10).and_then(|s| <[u8; 8]>::try_from(s).ok()) {
                Some(bytes) => (u64::from_be_bytes(bytes), 10),
                None => return Ok(None),
            },
            n => (u64::from(n), 2),
        };
        if payload_len >> 63 != 0 {
            return Err(ProtocolError::InvalidLength);
        }
        let payload_len = match usize::try_from(payload_len) {
            Ok(n) if n <= max_frame => n,
            _ => return Err(ProtocolError::FrameTooLarge),
        };

        let mask = if masked {
            match buf.get(pos..pos + 4).and_then(|s| <[u8; 4]>::try_from(s).ok()) {
                Some(key) => {
                    pos += 4;
                    Some(key)
                }
                None => return Ok(None),
            }
        } else {
            None
        };
        Ok(Some(Header { fin, rsv, opcode, mask, header_len: pos, payload_len }))
    }
}

/// An encoded frame header (2–14 bytes) on the stack.
///
/// A server writes one in front of a shared payload [`Bytes`] per connection, so a broadcast
/// copies only the header.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct HeaderBuf {
    bytes: [u8; Self::MAX_LEN],
    len: u8,
}

impl HeaderBuf {
    /// The longest header: 2 bytes, a 64-bit length and a masking key.
    pub const MAX_LEN: usize = 14;

    /// The header bytes.
    #[must_use]
    pub fn as_slice(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// The header length in bytes (2–14).
    #[must_use]
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// Always `false`: a header has at least 2 bytes.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl AsRef<[u8]> for HeaderBuf {
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl core::fmt::Debug for HeaderBuf {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "HeaderBuf({:02x?})", self.as_slice())
    }
}

/// Encodes a frame header with the shortest length form (§5.2).
///
/// `rsv` holds the reserved bits (`0b100` = RSV1, …; higher bits are ignored) and `mask` the
/// masking key, which a client MUST give and a server MUST NOT (§5.1). The caller MUST keep a
/// control frame's `payload_len` at 125 or less and set `fin` on it (§5.5); the encoder does
/// not check, as the connection rejects such sends with a `SendError` first.
#[must_use]
pub fn encode_header(
    fin: bool,
    rsv: u8,
    opcode: OpCode,
    payload_len: usize,
    mask: Option<[u8; 4]>,
) -> HeaderBuf {
    debug_assert!(!opcode.is_control() || (fin && payload_len <= 125), "invalid control frame");
    let mut bytes = [0u8; HeaderBuf::MAX_LEN];
    bytes[0] = (u8::from(fin) << 7) | ((rsv & 0b111) << 4) | opcode as u8;
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    // The conversions below cannot fail: each arm's range fits the target type.
    let mut len: u8 = if let Ok(short @ 0..=125) = u8::try_from(payload_len) {
        bytes[1] = mask_bit | short;
        2
    } else if let Ok(medium) = u16::try_from(payload_len) {
        bytes[1] = mask_bit | 126;
        bytes[2..4].copy_from_slice(&medium.to_be_bytes());
        4
    } else {
        bytes[1] = mask_bit | 127;
        bytes[2..10].copy_from_slice(&u64::try_from(payload_len).unwrap_or(u64::MAX).to_be_bytes());
        10
    };
    if let Some(key) = mask {
        let at = usize::from(len);
        bytes[at..at + 4].copy_from_slice(&key);
        len += 4;
    }
    HeaderBuf { bytes, len }
}

/// Appends a whole frame (no reserved bits) to `out`: the header, then the payload, masked
/// with `mask` when given (a client MUST mask, a server MUST NOT; §5.1).
///
/// The payload is copied. A server sending a shared payload can avoid the copy by writing
/// [`encode_header`] and the payload `Bytes` as separate chunks.
pub fn encode_frame(
    fin: bool,
    opcode: OpCode,
    payload: &[u8],
    mask: Option<[u8; 4]>,
    out: &mut BytesMut,
) {
    encode_parts(fin, 0, opcode, payload, mask, out);
}

/// Appends `frame` (with its reserved bits) to `out`, masked with `mask` when given; see
/// [`encode_frame`].
pub fn encode(frame: &Frame, mask: Option<[u8; 4]>, out: &mut BytesMut) {
    encode_parts(frame.fin, frame.rsv, frame.opcode, &frame.payload, mask, out);
}

fn encode_parts(
    fin: bool,
    rsv: u8,
    opcode: OpCode,
    payload: &[u8],
    mask: Option<[u8; 4]>,
    out: &mut BytesMut,
) {
    let header = encode_header(fin, rsv, opcode, payload.len(), mask);
    out.reserve(header.len() + payload.len());
    out.put_slice(header.as_slice());
    match mask {
        None => out.put_slice(payload),
        Some(key) => {
            // Zero-fill then mask-copy in one pass: faster than copying, then masking in
            // place (and than some libc memcpy paths at 16–64 KiB).
            let start = out.len();
            out.resize(start + payload.len(), 0);
            copy_masked(&mut out[start..], payload, key);
        }
    }
}

#[cfg(test)]
mod tests {
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
        assert_decodes(
            Role::Client,
            b"\x89\x05Hello",
            &Frame::new(true, OpCode::Ping, &b"Hello"[..]),
        );
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
                    assert_fails(
                        role,
                        &raw(role, b0, 0, &KEY),
                        NO_LIMIT,
                        ProtocolError::ReservedBits,
                    );
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
}
