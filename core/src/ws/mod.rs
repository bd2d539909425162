//! WebSocket (RFC 6455) as sans-IO code: the frame codec, masking, UTF-8, the opening
//! handshake, close codes, and [`WsConnection`], the machine that ties them together.
//!
//! Layering inside this module (dependencies point down only):
//!
//! ```text
//! conn        WsConnection: handshake → open → closing → closed, keepalive, limits
//! deflate     permessage-deflate (RFC 7692, feature `deflate`): negotiation, compression
//! reassemble  fragments → messages, continuation rules, incremental UTF-8
//! frame       header codec (decode resumable, encode minimal), role-based masking rules
//! handshake   HTTP/1.1 upgrade request/response, accept key, subprotocols
//! mask, utf8, close, message, error
//! ```

pub mod app;
pub mod close;
mod config;
pub mod conn;
#[cfg(feature = "deflate")]
pub mod deflate;
pub mod error;
pub mod frame;
pub mod handshake;
pub mod mask;
pub mod message;
pub mod reassemble;
pub mod utf8;

pub use app::AppSocket;
pub use close::{CloseClass, CloseCode};
pub use config::WsConfig;
pub use conn::{CloseInfo, Initiator, WsConnection, WsEvent, WsState, WsTimer};
pub use error::{ConnError, HandshakeError, ProtocolError, SendError};
pub use frame::{Frame, OpCode, Role};
pub use handshake::UpgradeRequest;
pub use message::Message;
pub use utf8::Utf8Bytes;
