//! Errors of the WebSocket layer, split by who caused them (STYLE.md §5).
//!
//! - [`ProtocolError`]: the peer broke RFC 6455 after the handshake. Each variant knows the
//!   close code it is answered with ([`ProtocolError::close_code`]).
//! - [`HandshakeError`]: the opening handshake failed. Each variant knows the HTTP status a
//!   server answers with ([`HandshakeError::status`]).
//! - [`SendError`]: the local application misused the connection; returned straight from
//!   the command.
//! - [`ConnError`]: why a connection ended, carried by [`CloseInfo`](super::CloseInfo).

use super::close::CloseCode;
use super::message::Message;

/// A violation of RFC 6455 by the peer, found while decoding frames or messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// RSV1–3 set without a negotiated extension (§5.2), or where the extension does not
    /// allow them (permessage-deflate: RSV1 on a control or continuation frame, RFC 7692 §6).
    #[error("reserved bits set without an extension")]
    ReservedBits,
    /// Opcode 0x3–0x7 or 0xB–0xF (§5.2).
    #[error("reserved opcode {0:#x}")]
    ReservedOpcode(u8),
    /// A control frame with a payload over 125 bytes (§5.5).
    #[error("control frame payload over 125 bytes")]
    ControlFrameTooLong,
    /// A control frame without FIN (§5.5).
    #[error("fragmented control frame")]
    FragmentedControlFrame,
    /// A server received an unmasked frame (§5.1).
    #[error("client frame is not masked")]
    UnmaskedFrame,
    /// A client received a masked frame (§5.1).
    #[error("server frame is masked")]
    MaskedFrame,
    /// A 64-bit payload length with its most significant bit set (§5.2).
    #[error("64-bit payload length has its top bit set")]
    InvalidLength,
    /// A continuation frame with no message in progress (§5.4).
    #[error("continuation frame without a message to continue")]
    UnexpectedContinuation,
    /// A new text/binary frame while a fragmented message is in progress (§5.4).
    #[error("new data frame inside a fragmented message")]
    ExpectedContinuation,
    /// A close frame whose payload is one byte long (§5.5.1).
    #[error("close frame payload of one byte")]
    InvalidClosePayload,
    /// A close frame with a code that may not be sent on the wire (§7.4).
    #[error("invalid close code {0}")]
    InvalidCloseCode(u16),
    /// A text message or close reason that is not valid UTF-8 (§8.1).
    #[error("invalid UTF-8 in text")]
    InvalidUtf8,
    /// A frame larger than the configured `max_frame`.
    #[error("frame exceeds the frame size limit")]
    FrameTooLarge,
    /// A message larger than the configured `max_message` (with permessage-deflate: once
    /// inflated).
    #[error("message exceeds the message size limit")]
    MessageTooLarge,
    /// A compressed message (RSV1, permessage-deflate) whose payload is not valid DEFLATE
    /// data (RFC 7692 §7.2.2); answered with 1007 (see `ws::deflate`, feature `deflate`).
    #[error("invalid compressed data")]
    InvalidCompressedData,
}

impl ProtocolError {
    /// The close code this violation is answered with: 1007 for bad UTF-8 or compressed data
    /// that does not inflate, 1009 for something too big, 1002 for everything else.
    #[must_use]
    pub fn close_code(self) -> CloseCode {
        match self {
            Self::InvalidUtf8 | Self::InvalidCompressedData => CloseCode::INVALID_PAYLOAD,
            Self::FrameTooLarge | Self::MessageTooLarge => CloseCode::TOO_BIG,
            _ => CloseCode::PROTOCOL_ERROR,
        }
    }
}

/// Why an opening handshake failed. On the server side each variant maps to the HTTP status
/// of the rejection ([`HandshakeError::status`]); on the client side it is reported in
/// [`ConnError::Handshake`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The request or response head is larger than `max_handshake` (431 on a server).
    #[error("handshake head too large")]
    HeadTooLarge,
    /// The head is not valid HTTP/1.x.
    #[error("malformed HTTP head")]
    Malformed,
    /// Too many header lines for the parser.
    #[error("too many headers")]
    TooManyHeaders,
    /// The request method is not `GET` (RFC 6455 §4.1).
    #[error("method must be GET")]
    MethodNotGet,
    /// The HTTP version is older than 1.1.
    #[error("HTTP/1.1 or later required")]
    HttpVersion,
    /// No `Host` header.
    #[error("missing Host header")]
    MissingHost,
    /// No `Upgrade: websocket`.
    #[error("missing Upgrade: websocket")]
    MissingUpgrade,
    /// No `Connection: Upgrade`.
    #[error("missing Connection: Upgrade")]
    MissingConnectionUpgrade,
    /// `Sec-WebSocket-Version` is not 13 (answered with 426 and `Sec-WebSocket-Version: 13`).
    #[error("unsupported Sec-WebSocket-Version (13 required)")]
    UnsupportedVersion,
    /// `Sec-WebSocket-Key` is missing or is not 16 bytes in base64.
    #[error("missing or invalid Sec-WebSocket-Key")]
    InvalidKey,
    /// The head did not arrive before the handshake deadline (408 on a server).
    #[error("handshake timed out")]
    Timeout,
    /// Client: the server answered with a status other than 101.
    #[error("server answered with status {0}")]
    Status(u16),
    /// Client: `Sec-WebSocket-Accept` is missing or does not match the key.
    #[error("missing or wrong Sec-WebSocket-Accept")]
    InvalidAccept,
    /// Client: the server chose a subprotocol that was not offered.
    #[error("server chose a subprotocol that was not offered")]
    UnexpectedSubprotocol,
    /// Client: the server accepted an extension that was not offered. The client fails the
    /// connection with 1010 after a close frame.
    #[error("server accepted an extension that was not offered")]
    UnexpectedExtension,
    /// Client: the server's permessage-deflate answer is malformed or does not fit the offer
    /// (RFC 7692 §7.1). The client fails the connection with 1010 after a close frame.
    #[error("invalid permessage-deflate answer")]
    InvalidExtension,
    /// The transport closed before the handshake completed.
    #[error("connection closed during the handshake")]
    Eof,
}

impl From<crate::http::HttpError> for HandshakeError {
    fn from(e: crate::http::HttpError) -> Self {
        use crate::http::HttpError as H;
        match e {
            H::HeadTooLarge => Self::HeadTooLarge,
            H::TooManyHeaders => Self::TooManyHeaders,
            H::HttpVersion => Self::HttpVersion,
            _ => Self::Malformed,
        }
    }
}

impl From<crate::http::InvalidHeader> for SendError {
    fn from(_: crate::http::InvalidHeader) -> Self {
        Self::InvalidHeader
    }
}

impl HandshakeError {
    /// The HTTP status a server rejects the request with.
    #[must_use]
    pub fn status(self) -> u16 {
        match self {
            Self::HeadTooLarge | Self::TooManyHeaders => 431,
            Self::MethodNotGet => 405,
            Self::HttpVersion => 505,
            Self::UnsupportedVersion | Self::MissingUpgrade => 426,
            Self::Timeout => 408,
            Self::Status(s) => s,
            _ => 400,
        }
    }
}

/// A local misuse of a connection, returned straight from the command that caused it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The connection is not open yet (handshake in progress).
    #[error("connection is not open yet")]
    NotOpen,
    /// The connection is closing or closed; nothing more can be sent.
    #[error("connection is closing or closed")]
    Closed,
    /// `accept`/`reject` called when no upgrade request is pending.
    #[error("no upgrade request is waiting for a decision")]
    NoPendingUpgrade,
    /// A control frame payload (ping, pong, close reason + 2) over 125 bytes.
    #[error("control frame payload over 125 bytes")]
    ControlTooLong,
    /// A close code that may not be sent (1005, 1006, 1015, unassigned).
    #[error("close code {0} may not be sent")]
    InvalidCloseCode(u16),
    /// A header name or value that would break the HTTP head (CR, LF or NUL).
    #[error("invalid header")]
    InvalidHeader,
    /// The outbound buffer is full: the message is handed back; retry after draining
    /// `poll_transmit`.
    #[error("outbound buffer full")]
    Backpressure(Message),
    /// The message is larger than the configured `max_message`.
    #[error("message larger than the message size limit")]
    TooLarge(Message),
}

/// Why a connection ended without a clean close handshake initiated by the application.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnError {
    /// The peer violated RFC 6455.
    #[error("protocol error: {0}")]
    Protocol(#[from] ProtocolError),
    /// The opening handshake failed.
    #[error("handshake failed: {0}")]
    Handshake(#[from] HandshakeError),
    /// The server application rejected the upgrade with this status.
    #[error("upgrade rejected with status {0}")]
    Rejected(u16),
    /// No inbound traffic within the keepalive timeout.
    #[error("peer unresponsive: keepalive timed out")]
    KeepaliveTimeout,
    /// The peer did not complete the close handshake in time.
    #[error("close handshake timed out")]
    CloseTimeout,
    /// The transport ended without a close frame.
    #[error("transport closed without a close frame")]
    Eof,
    /// The outbox stayed full for `send_timeout`: the peer stopped reading. Closed with
    /// 4100 (too slow) and no close frame.
    #[error("peer stopped reading: outbox full for longer than send_timeout")]
    SendStalled,
}
