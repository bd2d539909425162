//! `tidewire-std`: the blocking `std::net` + threads adapter of the [`tidewire`] sans-IO core.
//! A [`Server`] pumps sockets through one core [`tidewire::server::Server`] (reader and writer
//! threads per connection, one timer thread) and hands requests its hub does not serve to the
//! application as an [`Upgrade`] or [`HttpRequest`]. Clients: [`connect`], [`sse::connect`],
//! [`Session`]. A [`WebSocket`] progresses while a thread receives on it; [`Sender`]s send.
//!
//! ```
//! use std::time::Duration;
//! use tidewire_std::{ClientOptions, CloseCode, Message, Server, ServerConfig, connect};
//!
//! // An echo server on a free port, in its own thread.
//! let server = Server::bind("127.0.0.1:0", ServerConfig::default())?;
//! let (addr, handle) = (server.local_addr(), server.handle());
//! let serving = std::thread::spawn(move || {
//!     server.serve(|upgrade| {
//!         let Ok(mut ws) = upgrade.accept(None, &[]) else { return };
//!         while let Ok(msg) = ws.recv() {
//!             if ws.send(msg).is_err() {
//!                 break;
//!             }
//!         }
//!     })
//! });
//!
//! // A client: one message there and back, then a clean close.
//! let mut ws = connect(&format!("ws://{addr}/echo"), ClientOptions::default())?;
//! ws.send("hello")?;
//! assert_eq!(ws.recv()?, Message::text("hello"));
//! ws.close(CloseCode::NORMAL, "done")?;
//! println!("{}", ws.recv().unwrap_err());
//!
//! assert_eq!(handle.shutdown(Duration::from_secs(1)).dropped, 0);
//! serving.join().unwrap()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! A hub server, whose handle publishes:
//!
//! ```
//! use std::time::Duration;
//! use tidewire_std::tidewire::hub::DemoAuth;
//! use tidewire_std::tidewire::server::Routes;
//! use tidewire_std::{ClientOptions, Server, ServerConfig, connect};
//!
//! let mut cfg = ServerConfig::default();
//! cfg.endpoint.routes = Routes::default();
//! let server = Server::bind_with("127.0.0.1:0", cfg, DemoAuth, DemoAuth)?;
//! let (addr, handle) = (server.local_addr(), server.handle());
//! let serving = std::thread::spawn(move || server.serve(|up| drop(up.reject(404, &[], b""))));
//!
//! let mut ws = connect(&format!("ws://{addr}/ws"), ClientOptions::default())?;
//! ws.send(r#"{"op":"sub","ch":"public:news","ref":1}"#)?;
//! let subscribed = ws.recv()?;
//! assert!(subscribed.as_text().unwrap().starts_with(r#"{"op":"subscribed""#));
//! let pos = handle.publish("public:news", br#"{"title":"hello"}"#)?;
//! let msg = ws.recv()?;
//! assert!(msg.as_text().unwrap().contains(&format!(r#""ep":"{}","off":1"#, pos.epoch)));
//!
//! handle.shutdown(Duration::from_secs(1));
//! serving.join().unwrap()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

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
