#![doc = include_str!("../README.md")]

mod client;
mod conn;
mod http;
mod outbound;
mod pump;
mod server;
mod session;
pub mod sse;

use std::future::Future;
use std::time::Instant;

use smol::{Timer, future};

pub use bytes::Bytes;
pub use client::{ClientOptions, connect};
pub use conn::{Sender, WebSocket};
pub use http::HttpRequest;
pub use server::{Server, ServerConfig, ServerHandle, Upgrade};
pub use session::{Session, SessionOptions};
pub use tidewire;
pub use tidewire::server::ShutdownReport;
pub use tidewire::sse::StreamEnd;
pub use tidewire::ws::app::{ConnectError, Event, RecvError};
pub use tidewire::ws::{
    CloseCode, CloseInfo, Message, SendError, UpgradeRequest, Utf8Bytes, WsConfig,
};

/// The instant `timeout` from now; far in the future for a timeout too long to add.
fn after(timeout: std::time::Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(timeout).unwrap_or_else(|| now + std::time::Duration::from_secs(1 << 32))
}

/// `fut`'s output, or `None` once `deadline` has passed.
async fn until<T>(deadline: Instant, fut: impl Future<Output = T>) -> Option<T> {
    let timeout = async {
        Timer::at(deadline).await;
        None
    };
    future::or(async { Some(fut.await) }, timeout).await
}
