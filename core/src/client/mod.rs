//! [`ClientSession`]: one logical, reconnecting session with a Tidewire server, over the
//! best transport that works (DESIGN.md "Connection states (client)").
//!
//! **Transports.** WebSocket first (`{base}/ws`, the [envelope](crate::envelope)
//! protocol). When it fails to *open* [`fallback_after`](SessionConfig::fallback_after)
//! times in a row (2 by default: a proxy that blocks upgrades), the session falls back to
//! SSE: one `GET {base}/events?ch=NAME` stream per channel (the server's route serves one
//! channel per stream), resumed with `Last-Event-ID: EP:OFF`, and publishes as
//! `POST {base}/api/publish?ch=NAME&id=ID`, one at a time so that they stay in order. When
//! SSE fails as often, it falls back to long polling (`GET {base}/poll?ch=NAME&pos=EP:OFF&wait=1`,
//! one poll per channel at a time). After the last transport fails as often, it starts over
//! with the first (the network may have been down, not blocked). While open on a worse
//! transport, it tries a WebSocket every [`upgrade_every`](SessionConfig::upgrade_every)
//! (60 s) in the background and moves onto it once it opens, so the working transport is
//! never dropped for a probe.
//!
//! **States.** `Connecting → Open → Reconnecting → Connecting …`, and `Closed` (terminal).
//! Every change is a [`SessionEvent::State`] with the [`Reason`], the attempt number and the
//! next retry time. Between attempts the session waits for the [`Backoff`](crate::policy::Backoff)
//! delay (jittered; reset only after a healthy connection). WebSocket close codes follow
//! [`CloseCode::class`](crate::ws::CloseCode::class): terminal codes (1000, 1002, 1003,
//! 1007, 1009, 4000–4099) close the session, retryable ones back off (1012/1013 with the
//! floor raised, and `Retry-After` on a refused upgrade or stream). An auth failure (401/403
//! on the upgrade, 401 on a stream or poll, close 1008) asks once for fresh credentials
//! ([`SessionEvent::CredentialsNeeded`]); without them by the next attempt the session
//! closes with [`Reason::NoCredentials`].
//!
//! **Delivery.** On every (re)connection each channel is resubscribed with its last
//! position. Every message is delivered once and in order per channel
//! ([`SessionEvent::Message`]); duplicates and stale replays are dropped by offset. When the
//! server cannot recover a position (`recovered: false`, an SSE `reset` event, a new epoch),
//! the application gets one [`SessionEvent::RefetchNeeded`] and messages continue from the
//! server's head.
//!
//! **Publishing.** [`ClientSession::publish`] queues (bounded in count and bytes, dropping
//! the oldest and counting it) and sends when open; after each reconnection every
//! unacknowledged publish is sent again in order with the same client message id, so the
//! hub publishes it once. Answers: [`SessionEvent::Acked`], [`SessionEvent::PublishFailed`].
//!
//! ## Sockets
//!
//! The session never touches a network: it asks the adapter to open and close sockets
//! ([`SocketAction`](crate::socket::SocketAction)), names them with [`SockId`]s, and speaks HTTP/1.1 and WebSocket over
//! them itself. The adapter's loop, after every input or command:
//!
//! 1. drain [`poll_transmit`](ClientSession::poll_transmit) (write the bytes to that
//!    socket),
//! 2. drain [`poll_action`](ClientSession::poll_action) (`Connect`: open a connection and
//!    report [`handle_connected`](ClientSession::handle_connected) or
//!    [`handle_error`](ClientSession::handle_error); `Close`: close it after the bytes
//!    already written),
//! 3. drain [`poll_event`](ClientSession::poll_event) (the application's business),
//! 4. re-arm the one timer at [`poll_timeout`](ClientSession::poll_timeout) and call
//!    [`handle_timeout`](ClientSession::handle_timeout) when it passes; feed reads as
//!    [`handle_read`](ClientSession::handle_read), end of file as
//!    [`handle_eof`](ClientSession::handle_eof).
//!
//! HTTP responses must be `Content-Length`-framed or end with the connection (as Tidewire
//! serves them); a chunked response counts as a protocol failure of that transport.
//!
//! ## Example
//!
//! A session against a scripted in-memory server: the WebSocket opens, the session
//! subscribes, and a message arrives.
//!
//! ```
//! use tidewire::client::{ClientSession, SessionConfig, SessionEvent, SessionState};
//! use tidewire::envelope::ClientMessage;
//! use tidewire::socket::SocketAction;
//! use tidewire::ws::{Message, WsConfig, WsConnection, WsEvent};
//! use tidewire::{Instant, Machine, Transmit};
//!
//! let now = Instant::now();
//! let mut session = ClientSession::new(SessionConfig::new("example.com", 80), now);
//! session.subscribe(now, "orders:42").unwrap();
//!
//! // The adapter opens the socket the session asks for...
//! let Some(SocketAction::Connect { sock, .. }) = session.poll_action() else { panic!() };
//! session.handle_connected(now, sock);
//! // ...and the server on the other end is a WsConnection driven by a script.
//! let mut server = WsConnection::server(WsConfig::default(), now);
//! let mut events = Vec::new();
//! for _ in 0..10 {
//!     while let Some((_, bytes)) = session.poll_transmit() {
//!         server.handle_read(now, &bytes);
//!     }
//!     while let Some(ev) = server.poll_event() {
//!         match ev {
//!             WsEvent::UpgradeRequested(_) => server.accept(now, None, &[]).unwrap(),
//!             WsEvent::Message(m) => {
//!                 if let Ok(ClientMessage::Sub { ch, .. }) = ClientMessage::decode(m.payload()) {
//!                     let reply = format!(r#"{{"op":"subscribed","ch":"{ch}","recovered":true,"ep":"a1","off":0}}"#);
//!                     server.send(now, Message::text(reply)).unwrap();
//!                     let msg = format!(r#"{{"op":"msg","ch":"{ch}","ep":"a1","off":1,"from":"ann","data":{{"total":3}}}}"#);
//!                     server.send(now, Message::text(msg)).unwrap();
//!                 }
//!             }
//!             _ => {}
//!         }
//!     }
//!     while let Some(Transmit::Bytes(b)) = server.poll_transmit() {
//!         session.handle_read(now, sock, &b);
//!     }
//!     events.extend(std::iter::from_fn(|| session.poll_event()));
//! }
//! assert_eq!(session.state(), SessionState::Open);
//! assert!(events.iter().any(|e| matches!(e,
//!     SessionEvent::Message { ch, pos, from, data }
//!         if ch == "orders:42" && pos.to_string() == "a1:1" && data == r#"{"total":3}"#
//!             && from.as_deref() == Some("ann"))));
//! ```

mod channels;
mod config;
mod http;
mod outbound;
mod session;
mod types;
pub mod wire;

/// The outbound-socket vocabulary under its old names: [`crate::socket`] now, shared with
/// the Redis bus.
pub use crate::socket::{SockId, SocketAction as SessionAction};
pub use config::{SessionConfig, Target, TokenPlacement, Transport, UrlError};
pub use session::ClientSession;
pub use types::{
    ClientMsgId, PublishError, Reason, SessionEvent, SessionState, SessionTimer, StateChange,
    SubscribeError,
};

#[cfg(test)]
mod tests;
