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
mod tests;
