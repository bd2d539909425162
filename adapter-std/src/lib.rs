#![doc = include_str!("../README.md")]

mod client;
mod conn;
mod handle;
mod http;
mod outbound;
mod pump;
mod server;
mod session;
mod socket;
pub mod sse;

pub use bytes::Bytes;
pub use client::{ClientOptions, connect};
pub use http::HttpRequest;
pub use server::{Server, ServerConfig, ServerHandle, Upgrade};
pub use session::{Session, SessionOptions};
pub use socket::{Sender, WebSocket};
pub use tidewire;
pub use tidewire::server::ShutdownReport;
pub use tidewire::sse::StreamEnd;
pub use tidewire::ws::app::{ConnectError, Event, RecvError};
pub use tidewire::ws::{
    CloseCode, CloseInfo, Message, SendError, UpgradeRequest, Utf8Bytes, WsConfig,
};

/// A seed without OS entropy: the clock and the process id, so that epochs differ across restarts.
pub(crate) fn fallback_seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    #[allow(clippy::cast_possible_truncation)]
    let low = t as u64;
    low ^ u64::from(std::process::id()).rotate_left(40)
}
