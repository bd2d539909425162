//! `tidewire-smol`: the [smol](https://docs.rs/smol) / `async-io` adapter for the Tidewire
//! sans-IO core.
//!
//! The adapter owns the sockets, the clock and one timer per connection; every protocol
//! decision (handshake, framing, keepalive, close handshake, limits) stays in [`tidewire`].
//!
//! - Server: [`Server::bind`] → [`Server::serve`] with an `async` handler that receives each
//!   [`Upgrade`] and [`accept`](Upgrade::accept)s or [`reject`](Upgrade::reject)s it;
//!   [`ServerHandle`] counts connections and shuts the server down gracefully.
//! - Client: [`connect`] a `ws://` URL.
//! - Both give a [`WebSocket`]: [`recv`](WebSocket::recv) / [`recv_event`](WebSocket::recv_event),
//!   [`send`](WebSocket::send) (waits while the outbox is full) /
//!   [`try_send`](WebSocket::try_send) (hands the message back), and cloneable [`Sender`]s.
//! - The hub on the same port: set `cfg.endpoint.routes = Routes::default()` and the core
//!   endpoint ([`tidewire::server::Server`]) serves `/ws` (the envelope protocol), `/events`
//!   (SSE, resumable with `Last-Event-ID`), `/poll` (`ETag`/304, long polls) and
//!   `/api/publish`, authenticated by the [`Authenticate`](tidewire::server::Authenticate)
//!   policy of [`Server::bind_with`] and authorized by its
//!   [`Authorize`](tidewire::hub::Authorize) policy. [`ServerHandle::publish`] is the
//!   trusted server-side publish.
//! - Plain HTTP for every other path: [`Server::serve_with`] hands each request to a second
//!   handler as an [`HttpRequest`] ([`respond`](HttpRequest::respond),
//!   [`read_body`](HttpRequest::read_body)).
//! - Clients: [`Session`] (the reconnecting hub client: WebSocket, SSE or polling) and
//!   [`sse::connect`] (a reconnecting SSE reader).
//!
//! # How the server is driven
//!
//! Every accepted socket gets a task that *pumps* it through the core endpoint, which sits
//! behind one mutex with one timer task for the whole server: read → one mutation under the
//! lock → pull the connection's transmits (at most 256 KiB, and only once the socket took
//! the last batch), wake whom the endpoint's outputs concern → write outside the lock. The
//! endpoint keeps its events, hand-overs and bus answers itself: the pump only moves bytes
//! and wakes tasks. A client
//! that stops reading so fills its socket, then its transport in the core, then its hub
//! outbox, and meets the channel's slow-consumer policy. A request for a path that is not
//! the hub's leaves the endpoint: an upgrade's handler runs in a task of its own and
//! decides, while the connection's task goes on pumping the socket as the application's
//! [`WebSocket`] (below), off the endpoint's lock; a plain HTTP request's handler runs on
//! the connection's task.
//!
//! # How an application WebSocket is driven
//!
//! Every connection has one task that owns its socket, a client's too. For an application
//! WebSocket it runs the same pump over the core's `AppSocket` (behind a lock of its own,
//! shared with the [`WebSocket`]); an upgrade is not driven before its handler accepted or
//! rejected it (a rejection's response then gets `WsConfig::close_timeout` to be written).
//! The pump writes what the core queued (in vectored batches) and reads the socket
//! directly, as long as the non-blocking socket takes and gives, and only then waits — for
//! readiness, for the connection's one timer (an `async_io::Timer`, re-armed only when the
//! core's deadline moves earlier and checked against `Instant::now()` on wake) or for a
//! command.
//! It runs whether or not the application is inside `recv`, so keepalive pings, pong
//! replies, close timeouts and writes make progress on their own. After a read that woke a
//! receiver it yields once, so that an application on the same thread can answer before the
//! next write; before it registers for readability it yields once more and reads again
//! (under load the next message is often there by then).
//!
//! Tasks run on the executor of [`ServerConfig::executor`] (the connections' tasks, the
//! handlers and the timer) and [`ClientOptions::executor`] (a client's connection task);
//! by default that is smol's global executor ([`smol::spawn`]; its thread count is smol's
//! `SMOL_THREADS`, default 1). To run a whole server on one thread, like tokio's
//! current-thread runtime, give it the executor that runs the accept loop:
//!
//! ```no_run
//! use std::sync::Arc;
//! use tidewire_smol::{Server, ServerConfig};
//!
//! let ex = Arc::new(smol::Executor::new());
//! let mut cfg = ServerConfig::default();
//! cfg.executor = Some(ex.clone());
//! smol::block_on(ex.run(async {
//!     let server = Server::bind("127.0.0.1:9001", cfg).await?;
//!     server.serve(|upgrade| async move { drop(upgrade.accept(None, &[]).await) }).await
//! }))
//! .unwrap();
//! ```
//!
//! Received events go to a bounded queue (256 events or 4 MiB of payload). When it is full
//! the task stops reading the socket, so a slow application pushes back on the peer
//! through TCP, while timers and writes keep running. Sends go to the core's bounded outbox
//! (`WsConfig::max_outbound`); [`WebSocket::send`] waits for room, [`WebSocket::try_send`]
//! returns [`SendError::Backpressure`] with the message.
//!
//! A write that cannot progress never keeps a connection alive past the core's deadlines:
//! the task waits for a blocked write and the timer together, and once the connection is
//! closed without a clean close handshake (or the core asks for `Transmit::Shutdown`, or
//! `WsConfig::close_timeout` has passed since it closed) it shuts the socket down in both
//! directions and ends. Only then do [`WebSocket::recv`] and [`WebSocket::recv_event`]
//! report `Closed`: a client after a clean close has seen the server end TCP first (or
//! waited `close_timeout` for it), so a new connection made after `Closed` never overlaps
//! the old one.
//!
//! Dropping a [`WebSocket`] while its connection is open *aborts* the connection: the socket
//! is shut down without a close handshake and [`Sender`]s get [`SendError::Closed`]. Call
//! [`WebSocket::close`] first for a clean close: a closing connection dropped by the app still
//! finishes its close handshake.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use tidewire_smol::{ClientOptions, Message, Server, ServerConfig, connect};
//!
//! smol::block_on(async {
//!     let server = Server::bind("127.0.0.1:0", ServerConfig::default()).await?;
//!     let handle = server.handle();
//!     let serving = smol::spawn(server.serve(|upgrade| async move {
//!         let Ok(mut ws) = upgrade.accept(None, &[]).await else { return };
//!         while let Ok(msg) = ws.recv().await {
//!             if ws.send(msg).await.is_err() {
//!                 break;
//!             }
//!         }
//!     }));
//!
//!     let url = format!("ws://{}/echo", handle.local_addr());
//!     let mut ws = connect(&url, ClientOptions::default()).await?;
//!     ws.send(Message::text("hello")).await?;
//!     assert_eq!(ws.recv().await?, Message::text("hello"));
//!
//!     let report = handle.shutdown(Duration::from_secs(2)).await;
//!     assert_eq!(report.dropped, 0);
//!     serving.await?;
//!     Ok::<_, Box<dyn std::error::Error>>(())
//! })
//! .unwrap();
//! ```
//!
//! A hub server: the core serves `/events`; the application publishes.
//!
//! ```
//! use std::time::Duration;
//! use tidewire::server::Routes;
//! use tidewire::sse::SseClientEvent;
//! use tidewire_smol::sse::{SseOptions, connect};
//! use tidewire_smol::{Server, ServerConfig};
//!
//! smol::block_on(async {
//!     let mut cfg = ServerConfig::default();
//!     cfg.endpoint.routes = Routes::default();
//!     let server = Server::bind("127.0.0.1:0", cfg).await?;
//!     let handle = server.handle();
//!     let serving = smol::spawn(server.serve(|up| async move { drop(up) }));
//!
//!     let url = format!("http://{}/events?ch=ticks", handle.local_addr());
//!     let mut events = connect(&url, SseOptions::default()).await?;
//!     while handle.hub_connections() == 0 {
//!         smol::Timer::after(Duration::from_millis(5)).await; // until it is subscribed
//!     }
//!     let pos = handle.publish("ticks", br#"{"n":1}"#)?;
//!     let event = loop {
//!         if let Some(SseClientEvent::Event(e)) = events.next().await {
//!             break e;
//!         }
//!     };
//!     assert_eq!(event.data.as_str(), r#"{"n":1}"#);
//!     assert_eq!(event.id, pos.to_string()); // `EPOCH:OFFSET`: what a reconnection resumes from
//!
//!     events.close();
//!     handle.shutdown(Duration::from_secs(2)).await;
//!     serving.await?;
//!     Ok::<_, Box<dyn std::error::Error>>(())
//! })
//! .unwrap();
//! ```

mod client;
mod conn;
/// The pump's helpers under the path `outbound` still names.
mod driver {
    pub(crate) use crate::pump::{run_timer, spawn_on};
}
mod http;
mod outbound;
mod pump;
mod server;
mod session;
pub mod sse;

use std::future::Future;
use std::io;
use std::time::Instant;

use bytes::Bytes;
use smol::{Timer, future};

pub use tidewire;
pub use tidewire::ws::{
    CloseCode, CloseInfo, Message, SendError, UpgradeRequest, Utf8Bytes, WsConfig,
};

pub use tidewire::server::{ConnHandle, Routes, ServerEvent, Verdict};
pub use tidewire::sse::StreamEnd;

pub use client::{ClientOptions, ConnectError, connect};
pub use conn::{Sender, WebSocket};
pub use http::HttpRequest;
pub use server::{Server, ServerConfig, ServerHandle, ShutdownReport, Upgrade};
pub use session::Session;

/// What a [`WebSocket`] receives, in order: messages and pongs, then `Closed` once (and
/// again on every later call).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// A complete data message.
    Message(Message),
    /// A pong (the answer to [`WebSocket::ping`] or to a keepalive ping).
    Pong(Bytes),
    /// The connection ended; how is in the [`CloseInfo`].
    Closed(CloseInfo),
}

/// Why [`WebSocket::recv`] returned no message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecvError {
    /// The connection is closed; every later call returns the same info.
    #[error("connection closed with code {} ({:?})", .0.code, .0.error)]
    Closed(CloseInfo),
}

/// Fills `cfg.rng_seed` from OS entropy unless the caller set a non-zero seed.
fn seed(cfg: &mut WsConfig) -> io::Result<()> {
    if cfg.rng_seed == [0; 32] {
        getrandom::fill(&mut cfg.rng_seed).map_err(|e| io::Error::other(e.to_string()))?;
    }
    Ok(())
}

/// `fut`'s output, or `None` once `deadline` has passed.
async fn until<T>(deadline: Instant, fut: impl Future<Output = T>) -> Option<T> {
    let timeout = async {
        Timer::at(deadline).await;
        None
    };
    future::or(async { Some(fut.await) }, timeout).await
}
