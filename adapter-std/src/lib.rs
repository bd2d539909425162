//! `tidewire-std`: the blocking `std::net` + threads adapter for the Tidewire sans-IO core.
//!
//! The adapter owns the sockets, the clock and the timers; every protocol decision
//! (routing, the request head's limits, authentication, the hub and its endpoints, the
//! WebSocket handshake, keepalive, the close handshake, slow consumers) stays in
//! [`tidewire`]. A [`Server`] is a socket pump over one core
//! [`tidewire::server::Server`]:
//!
//! - Every accepted socket is fed to the core server by a **reader** thread (a blocking
//!   read without a timeout) and written by a **writer** thread that sleeps until the core
//!   names the connection ready, pulls at most 256 KiB of its transmits under the lock and
//!   writes them outside it; it pulls again only once the socket took them, so a client
//!   that stops reading backs up into its transport and then the hub's bounded outbox. One
//!   **timer** thread per server sleeps until the core's `poll_timeout`. Each thread makes
//!   one mutation under the lock, then wakes whom the core's outputs concern (see the
//!   `pump` module); the core keeps its events, hand-overs and bus answers itself.
//! - The hub's routes ([`ServerConfig::endpoint`]`.routes`: none by default, so a plain
//!   [`Server::bind`] is a plain WebSocket/HTTP server) are served entirely by the core.
//!   Any other request leaves the pump for the application, on the reader thread: a
//!   WebSocket upgrade goes to the handler of [`Server::serve`] as an [`Upgrade`], which it
//!   [`accept`](Upgrade::accept)s (→ [`WebSocket`]) or [`reject`](Upgrade::reject)s; a
//!   plain request goes to the HTTP handler of [`Server::serve_with`] as an
//!   [`HttpRequest`] (`serve` answers it `404`).
//! - A [`ServerHandle`] counts connections, shuts the server down gracefully (close code
//!   1001) and reaches the hub: [`publish`](ServerHandle::publish),
//!   [`publish_once`](ServerHandle::publish_once), [`presence`](ServerHandle::presence),
//!   [`next_event`](ServerHandle::next_event), [`decide`](ServerHandle::decide) for
//!   deferred authentication…
//! - Clients: [`connect`] (`ws://` URLs), [`sse::connect`] (a reconnecting event-stream
//!   reader) and [`Session`], which drives the core
//!   [`ClientSession`](tidewire::client::ClientSession) on its own thread (WebSocket, else
//!   SSE, else polling; resume, refetch, queued publishes).
//! - An application [`WebSocket`] is app-driven, like `tungstenite`: the connection makes
//!   progress while a thread is inside [`WebSocket::recv`] / [`WebSocket::recv_event`] (and
//!   while a `send` writes). [`Sender`]s send from other threads.
//!
//! Memory per hub connection: the read buffer ([`ServerConfig::read_buffer`]), the core's
//! bounded transport and outbox, and one write batch.
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
//!
//! A hub server: the core endpoint serves `/ws`, `/events`, `/poll` and `/api/publish`
//! itself, and the handle publishes into it:
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
pub use client::{ClientOptions, ConnectError, connect};
pub use http::HttpRequest;
pub use server::{Server, ServerConfig, ServerHandle, ShutdownReport, Upgrade};
pub use session::{Session, SessionOptions};
pub use socket::{Event, RecvError, Sender, WebSocket};
pub use tidewire;
pub use tidewire::sse::StreamEnd;
pub use tidewire::ws::{
    CloseCode, CloseInfo, Message, SendError, UpgradeRequest, Utf8Bytes, WsConfig,
};

/// A seed when the OS has no entropy to give: the clock and the process id, enough for
/// epochs to differ across restarts.
pub(crate) fn fallback_seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    #[allow(clippy::cast_possible_truncation)]
    let low = t as u64;
    low ^ u64::from(std::process::id()).rotate_left(40)
}
