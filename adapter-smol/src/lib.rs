//! `tidewire-smol`: the [smol](https://docs.rs/smol) / `async-io` adapter of the [`tidewire`]
//! sans-IO core, the async twin of `tidewire-std`. A [`Server`] pumps every socket through one
//! core [`tidewire::server::Server`] on a task of its own and hands requests its hub does not
//! serve to the application as an [`Upgrade`] or [`HttpRequest`]. Clients: [`connect`],
//! [`sse::connect`], [`Session`]. A [`WebSocket`]'s task drives it whether or not the
//! application receives; dropping it while open aborts the connection (call `close` first).
//!
//! Tasks run on [`ServerConfig::executor`] / [`ClientOptions::executor`] (default: smol's
//! global executor). To keep a whole server on one thread, give it the accept loop's:
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
//! A full inbound queue (256 events or 4 MiB) pauses reading, so a slow application pushes
//! back on its peer; [`Sender::send`] waits for room in the core's outbox. An echo server
//! and a client:
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
//!     while handle.inspect(|s| s.hub_connections()) == 0 {
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
