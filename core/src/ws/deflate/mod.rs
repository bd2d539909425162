//! permessage-deflate (RFC 7692): WebSocket messages compressed with DEFLATE, negotiated in
//! the opening handshake. Feature `deflate`; off unless [`WsConfig::deflate`] is set.
//!
//! [`WsConfig::deflate`]: crate::ws::WsConfig::deflate
//!
//! ```
//! use tidewire::ws::{WsConfig, deflate::DeflateConfig};
//!
//! let mut cfg = WsConfig::default();
//! cfg.deflate = Some(DeflateConfig::default()); // offer (client) or accept (server) it
//! ```
//!
//! Layout, dependencies pointing down:
//!
//! ```text
//! negotiate   Sec-WebSocket-Extensions: offers, responses, DeflateParams (§7.1)
//! session     PerMessageDeflate: one connection's agreement, compressor and inflater (§7.2)
//! inflate     bounded, incremental decompression of one message (max_message holds)
//! compress    DEFLATE with a sync flush, the tail stripped; PreparedMessage (compress once)
//! pool        the process's spare zlib states for no-context-takeover messages
//! ```
//!
//! # Memory and ratio: the modes
//!
//! A zlib state is large, and a message can only refer back to earlier messages when both
//! ends keep their state between messages ("context takeover"). Heap per idle server
//! connection, measured by `tests/tests/deflate.rs` with the zlib-rs backend (whose hash
//! table is 128 KiB whatever the window), and ratios (compressed / raw, level 3) from
//! `benches/deflate.rs`:
//!
//! | mode (both directions) | heap kept per idle connection | ratio: 200 B chat / 2 KiB dashboard / 64 KiB text | CPU per message |
//! |---|---|---|---|
//! | context takeover, window 15 | ≈ 420 KiB (compressor and inflater, created on the first compressed message each way) | 0.28 / 0.12 / 0.30 | lowest: no reset |
//! | context takeover, window 10 | ≈ 295 KiB | a little lower on large messages | same |
//! | no context takeover, [`DeflateMemory::Pool`] | nothing but the agreement (a box of ≈ 400 B: the [`DeflateParams`] and empty slots); states borrowed per message from the process's pool of at most [`POOL_MAX`] spares per kind | 0.67 / 0.16 / 0.31: each message alone, poor under ~500 B | plus a state reset (≈ 3–10 µs) per message |
//! | no context takeover, [`DeflateMemory::PerMessage`] | nothing; states allocated for each message and freed | as above | plus an allocation per message |
//!
//! `server_no_context_takeover` governs what the server keeps for sending and the client for
//! receiving; `client_no_context_takeover` the other direction. An idle connection keeps no
//! zlib state only when *both* directions are no-context-takeover (a server sets both in its
//! [`DeflateConfig`]; it may impose both on any client, RFC 7692 §7.1.1).
//!
//! # Window bits, and the window of 8
//!
//! `*_max_window_bits` (8–15) bound the LZ77 window of one direction: a smaller window
//! lowers the inflater's memory (2^bits bytes of history) and, a little, the ratio. zlib
//! (and so zlib-rs) cannot *compress* raw DEFLATE with a window of 256 bytes (8 bits): it
//! silently uses 512, whose back-references a peer limited to 256 bytes may reject. When the
//! agreed window for our sends is 8, this implementation accepts the agreement and sends every
//! message uncompressed (RSV1 clear): RFC 7692 §6 lets any message go uncompressed, so the
//! peer's limit is honoured exactly; receiving is not affected (an inflater with a 512-byte
//! window decodes a 256-byte-window stream). A server therefore never declines a well-formed
//! offer; it declines (and takes the next) only a malformed one: an unknown, repeated or
//! invalid parameter (§7.1).
//!
//! # Errors and close codes
//!
//! - A malformed or unexpected answer to a client's offer fails the connection with 1010
//!   ([`HandshakeError::InvalidExtension`]), after a close frame.
//! - RSV1 on a control frame or a continuation frame is a protocol error, 1002
//!   ([`ProtocolError::ReservedBits`]), as is RSV1 when the extension was not negotiated.
//! - Compressed data that does not inflate is 1007 ([`ProtocolError::InvalidCompressedData`]):
//!   the payload does not match what RSV1 declares it to be (the choice of Node's `ws`; some
//!   peers use 1002; either fails the connection, which is what Autobahn checks).
//! - `max_message` bounds the *decompressed* size, checked while inflating: output grows in
//!   bounded steps and a message that would exceed it is 1009
//!   ([`ProtocolError::MessageTooLarge`]) before any more is allocated. Text is checked for
//!   UTF-8 as it inflates (1007).
//!
//! [`HandshakeError::InvalidExtension`]: crate::ws::HandshakeError::InvalidExtension
//! [`ProtocolError::ReservedBits`]: crate::ws::ProtocolError::ReservedBits
//! [`ProtocolError::InvalidCompressedData`]: crate::ws::ProtocolError::InvalidCompressedData
//! [`ProtocolError::MessageTooLarge`]: crate::ws::ProtocolError::MessageTooLarge
//!
//! # Compress once per broadcast
//!
//! A message compressed with no context depends on nothing but itself, so one compression
//! serves every receiver whose sending direction is no-context-takeover with a window at
//! least as large: [`PreparedMessage::new`] compresses once, and
//! [`WsConnection::send_prepared`](crate::ws::WsConnection::send_prepared) sends the shared
//! bytes (a server writes only a new header per connection) or, on a connection that cannot
//! take them, falls back to [`WsConnection::send`](crate::ws::WsConnection::send) (its own
//! compression, or none). [`compress_message`] is the bare function.

mod compress;
mod inflate;
mod negotiate;
mod pool;
mod session;

pub use compress::{PreparedMessage, compress_message};
pub use negotiate::{
    DeflateParams, NegotiationError, client_offer, negotiate_response, negotiate_server,
};
pub use pool::POOL_MAX;
pub(crate) use session::{PerMessageDeflate, Received};

/// The extension's name in `Sec-WebSocket-Extensions`.
pub const EXTENSION_NAME: &str = "permessage-deflate";

/// The RSV1 bit of a frame header's reserved bits (`Frame::rsv`): set on the first frame of
/// a compressed message (RFC 7692 §6).
pub const RSV1: u8 = 0b100;

/// How zlib states are allocated in a direction without context takeover.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DeflateMemory {
    /// Borrowed for one message from the process's pool of at most [`POOL_MAX`] spare
    /// states per kind and returned after it (default): no allocation per message, and
    /// the pool's memory is per process, not per connection or per thread.
    #[default]
    Pool,
    /// Allocated for each message and freed after it: nothing is kept anywhere, at the cost
    /// of an allocation (and a zeroed hash table) per message.
    PerMessage,
}

/// What a connection offers (client) or agrees to (server) for permessage-deflate.
///
/// The same fields serve both roles (RFC 7692 §7.1):
///
/// | field | client: in its offer | server: in its answer |
/// |---|---|---|
/// | `server_no_context_takeover` | asks the server to reset per message | always included |
/// | `client_no_context_takeover` | announces that it resets per message | always included |
/// | `server_max_window_bits` | asks for it when < 15 | caps the offered value; included when < 15 |
/// | `client_max_window_bits` | always offered (valueless at 15: "you may limit me") | asks for it when the offer allows and it is < 15 |
///
/// Window bits outside 8–15 are clamped into it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeflateConfig {
    /// The server resets its compressor after each message (default `false`).
    pub server_no_context_takeover: bool,
    /// The client resets its compressor after each message (default `false`).
    pub client_no_context_takeover: bool,
    /// Largest LZ77 window (log2 bytes, 8–15) the server compresses with (default 15).
    pub server_max_window_bits: u8,
    /// Largest LZ77 window (log2 bytes, 8–15) the client compresses with (default 15).
    pub client_max_window_bits: u8,
    /// Compression level 0–9 (default 3). zlib's own default, 6, costs 2–4 times the CPU
    /// of 3 for 3–15 % fewer bytes; 1 is faster still but poor on text (ratio 0.48 against
    /// 0.30 on 64 KiB of prose). Measured in `benches/deflate.rs`.
    pub level: u32,
    /// Messages shorter than this many bytes are sent uncompressed (default 256).
    pub min_size: usize,
    /// How states of no-context-takeover directions are allocated (default: the process's pool).
    pub memory: DeflateMemory,
}

impl Default for DeflateConfig {
    fn default() -> Self {
        Self {
            server_no_context_takeover: false,
            client_no_context_takeover: false,
            server_max_window_bits: 15,
            client_max_window_bits: 15,
            level: 3,
            min_size: 256,
            memory: DeflateMemory::Pool,
        }
    }
}

impl DeflateConfig {
    /// No context takeover in either direction: no zlib state is kept on an idle connection
    /// (the mode for many mostly idle connections, and the one a broadcast can share).
    #[must_use]
    pub fn no_context_takeover() -> Self {
        Self {
            server_no_context_takeover: true,
            client_no_context_takeover: true,
            ..Self::default()
        }
    }

    fn server_bits(&self) -> u8 {
        self.server_max_window_bits.clamp(MIN_WINDOW_BITS, MAX_WINDOW_BITS)
    }

    fn client_bits(&self) -> u8 {
        self.client_max_window_bits.clamp(MIN_WINDOW_BITS, MAX_WINDOW_BITS)
    }

    fn compression(&self) -> flate2::Compression {
        flate2::Compression::new(self.level.min(9))
    }
}

/// The smallest window RFC 7692 allows (256 bytes).
pub const MIN_WINDOW_BITS: u8 = 8;
/// The largest window RFC 7692 allows (32 KiB), DEFLATE's own maximum.
pub const MAX_WINDOW_BITS: u8 = 15;
/// The smallest window zlib compresses raw DEFLATE with: an agreed window of 8 for our sends
/// means they go uncompressed (see the [module docs](self#window-bits-and-the-window-of-8)).
pub const MIN_COMPRESS_WINDOW_BITS: u8 = 9;

/// The empty stored block a sync flush ends with; stripped on send, appended on receive
/// (RFC 7692 §7.2.1, §7.2.2).
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];
