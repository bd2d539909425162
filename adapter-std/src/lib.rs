//! `tidewire-std`: the blocking `std::net` + threads adapter for the Tidewire sans-IO core.
//!
//! The adapter owns the sockets, the clock and one timer per connection (a socket read or
//! write timeout set to the machine's next deadline); every protocol decision (handshake
//! validation, limits, keepalive, the close handshake, the slow-reader policy) stays in
//! [`tidewire`].
//!
//! - Server: [`Server::bind`], then [`Server::serve`] with a handler that gets an
//!   [`Upgrade`] on the connection's own thread and [`accept`](Upgrade::accept)s it (→
//!   [`WebSocket`]) or [`reject`](Upgrade::reject)s it (401, 403…). A [`ServerHandle`]
//!   counts connections and shuts the server down gracefully (close code 1001).
//! - Client: [`connect`] (`ws://` URLs).
//! - A [`WebSocket`] is app-driven, like `tungstenite`: the connection makes progress while
//!   a thread is inside [`WebSocket::recv`] / [`WebSocket::recv_event`] (and while a `send`
//!   writes). [`Sender`]s send from other threads.
//!
//! Threads: one per connection on the server (it runs the handler), none of its own on the
//! client. Memory per connection is bounded by `WsConfig::max_outbound` (plus one message
//! and one write batch) outbound and `read_buffer` plus `WsConfig::max_message` inbound.
//!
//! ```
//! use std::time::Duration;
//! use tidewire_std::{ClientOptions, CloseCode, Message, Server, ServerConfig, connect};
//!
//! // An echo server on a free port, in its own thread.
//! let server = Server::bind("127.0.0.1:0", ServerConfig::default())?;
//! let addr = server.local_addr();
//! let handle = server.handle();
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
//! let info = ws.recv().unwrap_err();
//! println!("{info}");
//!
//! let report = handle.shutdown(Duration::from_secs(1));
//! assert_eq!(report.dropped, 0);
//! serving.join().unwrap()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod client;
mod conn;
mod server;
mod socket;

pub use bytes::Bytes;
pub use client::{ClientOptions, ConnectError, connect};
pub use server::{Server, ServerConfig, ServerHandle, ShutdownReport, Upgrade};
pub use socket::{Event, RecvError, Sender, WebSocket};
pub use tidewire;
pub use tidewire::ws::{
    CloseCode, CloseInfo, Message, SendError, UpgradeRequest, Utf8Bytes, WsConfig,
};
