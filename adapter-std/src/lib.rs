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
//! - Plain HTTP on the same port: [`Server::serve_with`] routes a request with
//!   `Upgrade: websocket` to the WebSocket handler and any other to an HTTP handler that gets
//!   an [`HttpRequest`] (one request per connection). [`Channels`] serves such requests as
//!   Server-Sent Events streams ([`Channels::serve_sse`], resumable with `Last-Event-ID`)
//!   and polls ([`Channels::serve_poll`]), fed by [`Channels::publish`]; [`sse::connect`]
//!   is the matching reconnecting event-stream client.
//! - The hub: [`HubHandle`] hosts the core [`Hub`](tidewire::hub::Hub) (channels with a
//!   replay log, presence, authorization, slow-consumer policies) for a server, serving
//!   WebSocket envelopes ([`HubHandle::serve_ws`]), SSE ([`HubHandle::serve_sse`]), polls
//!   ([`HubHandle::serve_poll`]) and HTTP publishes ([`HubHandle::serve_publish`]) from one
//!   log per channel.
//! - The reconnecting client: [`Session`] drives the core
//!   [`ClientSession`](tidewire::client::ClientSession) on its own thread (WebSocket, else
//!   SSE, else polling; resume, refetch, queued publishes).
//! - A [`WebSocket`] is app-driven, like `tungstenite`: the connection makes progress while
//!   a thread is inside [`WebSocket::recv`] / [`WebSocket::recv_event`] (and while a `send`
//!   writes). [`Sender`]s send from other threads.
//!
//! Threads: one per connection on the server (it runs the handler, and writes an SSE stream
//! for as long as it lives), none of their own in the WebSocket and SSE clients. Memory per connection is bounded by `WsConfig::max_outbound` (plus one message
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
//!
//! Server-Sent Events on the same kind of server, with a client that receives one event:
//!
//! ```
//! use std::time::Duration;
//! use tidewire_std::tidewire::sse::SseClientEvent;
//! use tidewire_std::{Channels, ChannelsConfig, Server, ServerConfig, sse};
//!
//! let channels = Channels::new(ChannelsConfig::default());
//! let server = Server::bind("127.0.0.1:0", ServerConfig::default())?;
//! let addr = server.local_addr();
//! let handle = server.handle();
//! let serving = {
//!     let channels = channels.clone();
//!     std::thread::spawn(move || {
//!         server.serve_with(
//!             |upgrade| drop(upgrade.reject(404, &[], b"")),
//!             move |req| {
//!                 // Authenticate here first (`req.request().token()`, 401 with `respond`).
//!                 match req.request().path_only() {
//!                     "/events" => drop(channels.serve_sse(req, "ticks", &[])),
//!                     "/poll" => drop(channels.serve_poll(req)),
//!                     _ => drop(req.respond(404, &[], b"not found\n")),
//!                 }
//!             },
//!         )
//!     })
//! };
//!
//! // `connect` returns once the stream is open: what is published now reaches it.
//! let mut events = sse::connect(&format!("http://{addr}/events"), sse::SseOptions::default())?;
//! let pos = channels.publish("ticks", r#"{"n":1}"#)?;
//! let event = loop {
//!     match events.next() {
//!         Some(SseClientEvent::Event(e)) => break e,
//!         Some(_) => {}          // state changes: Connecting, Open
//!         None => unreachable!(), // closed for good
//!     }
//! };
//! assert_eq!((event.event.as_str(), event.data.as_str()), ("ticks", r#"{"n":1}"#));
//! assert_eq!(event.id, pos.to_string()); // EPOCH:OFFSET, sent back as Last-Event-ID
//!
//! events.close();
//! handle.shutdown(Duration::from_secs(1));
//! serving.join().unwrap()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod bus;
mod channels;
mod client;
mod conn;
mod http;
mod hub;
mod server;
mod session;
mod socket;
pub mod sse;

pub use bytes::Bytes;
pub use channels::{Channels, ChannelsConfig};
pub use client::{ClientOptions, ConnectError, connect};
pub use http::HttpRequest;
pub use hub::{HubHandle, HubOptions, ROOM_POLL};
pub use server::{Server, ServerConfig, ServerHandle, ShutdownReport, Upgrade};
pub use session::{Session, SessionOptions};
pub use socket::{Event, RecvError, Sender, WebSocket};
pub use tidewire;
pub use tidewire::sse::StreamEnd;
pub use tidewire::ws::{
    CloseCode, CloseInfo, Message, SendError, UpgradeRequest, Utf8Bytes, WsConfig,
};
