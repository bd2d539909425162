//! # Tidewire: the sans-IO realtime core
//!
//! Every protocol and policy in this crate is a deterministic state machine. It is fed
//! bytes and an explicit `now: Instant`, and the caller pulls what it must do. There are no
//! sockets, threads, clocks, sleeps, global RNGs or `async` here; the runtime adapters
//! (`tidewire-std`, `tidewire-smol`) own those.
//!
//! | module | what |
//! |---|---|
//! | [`client`] | [`client::ClientSession`]: the reconnecting, transport-falling-back client |
//! | [`hub`] | the [`Hub`](hub::Hub): connections over any transport, channels with replay, authz, presence |
//! | [`envelope`] | the envelope protocol's codec (both directions), shared by `hub` and `client` |
//! | [`http`] | HTTP/1.1 request and response heads: routing, credentials, responses |
//! | [`ws`] | WebSocket (RFC 6455): frame codec, masking, UTF-8, handshake, close codes, [`ws::WsConnection`] |
//! | [`socket`] | the outbound-socket vocabulary (`SockId`, connect/close) of `ClientSession` and `RedisBus` |
//! | [`server`] | [`server::Server`]: every server-side connection of one endpoint (routes, auth, hub, shutdown) |
//! | [`sse`] | Server-Sent Events: the event-stream encoder and the WHATWG parser |
//! | [`text`] | [`text::Utf8Bytes`]: validated zero-copy UTF-8, the text of WebSocket messages and SSE events |
//! | [`poll`] | long and short polling by cursor, `ETag`/`If-None-Match` → 304 |
//! | [`policy`] | backoff, heartbeat, sequencer, dedup, outbox, rate limit: small pure machines |
//! | [`time`] | `Instant`/`Duration`, the monotonic clamp, timer tables and the scalable timer queue |
//! | [`replay`] | the bounded per-channel replay log and `(epoch, offset)` positions |
//! | [`rng`] | the seeded ChaCha generator behind masks, keys and jitter |
//!
//! ## The contract
//!
//! A machine changes state only when the caller feeds it something (`handle_read`,
//! `handle_eof`, a command such as `send`) or when a deadline it asked for has passed
//! (`handle_timeout`). Its outputs are pulled: `poll_transmit` (bytes to write, or
//! [`Transmit::Shutdown`]), `poll_event` (what the application should know) and
//! `poll_timeout` (when to call `handle_timeout` next). Time only moves forward: an older
//! `now` than one already seen is treated as the newest one seen.
//!
//! Peer mistakes are never `Err` and never panic: they become state (a close frame is
//! queued, the machine moves to `Closed`, and a `Closed` event says why). Local misuse
//! (sending on a closed connection, a full outbound buffer) is a `Result` from the command.
//!
//! ## The run loop
//!
//! Every adapter drives every machine the same way:
//!
//! 1. Wait for one of: the transport is readable, the deadline passed, an app command.
//! 2. Make exactly one mutation (`handle_read`, `handle_eof`, `handle_timeout`, a command).
//! 3. Drain `poll_event`, `poll_transmit` and read `poll_timeout`. A command issued while
//!    handling an event is itself a mutation: drain `poll_transmit` after it.
//! 4. Re-arm the one timer, and go back to 1.
//!
//! Here it is with an in-memory "transport" between a client and a server: the adapters do
//! the same with sockets and a clock.
//!
//! ```
//! use std::collections::VecDeque;
//! use tidewire::ws::{CloseCode, Message, WsConfig, WsConnection, WsEvent};
//! use tidewire::{Duration, Instant, Machine, Transmit};
//!
//! let mut now = Instant::now();
//! let mut server = WsConnection::server(WsConfig::default(), now);
//! let mut client = WsConnection::client(WsConfig::default(), "localhost", "/", now).unwrap();
//! let mut to_server = VecDeque::<bytes::Bytes>::new();
//! let mut to_client = VecDeque::<bytes::Bytes>::new();
//! while let Some(Transmit::Bytes(b)) = client.poll_transmit() {
//!     to_server.push_back(b); // the client's upgrade request is queued at construction
//! }
//! let mut server_got = Vec::new();
//!
//! for _step in 0..100 {
//!     // 2. one mutation per side: deliver what the other side wrote, or fire its timer.
//!     if let Some(bytes) = to_server.pop_front() {
//!         server.handle_read(now, &bytes);
//!     } else if let Some(bytes) = to_client.pop_front() {
//!         client.handle_read(now, &bytes);
//!     } else if let Some(deadline) = [server.poll_timeout(), client.poll_timeout()].into_iter().flatten().min() {
//!         now = now.max(deadline); // 1. the wait: virtual time jumps to the deadline
//!         server.handle_timeout(now);
//!         client.handle_timeout(now);
//!     } else {
//!         break;
//!     }
//!     // 3. drain events; the app reacts with commands (each one more mutation)...
//!     while let Some(ev) = server.poll_event() {
//!         match ev {
//!             WsEvent::UpgradeRequested(_req) => server.accept(now, None, &[]).unwrap(),
//!             WsEvent::Message(m) => {
//!                 server_got.push(m.clone());
//!                 server.send(now, m).unwrap(); // echo
//!             }
//!             _ => {}
//!         }
//!     }
//!     while let Some(ev) = client.poll_event() {
//!         match ev {
//!             WsEvent::Open { .. } => client.send(now, Message::text("hi")).unwrap(),
//!             WsEvent::Message(_) => client.close(now, CloseCode::NORMAL, "bye").unwrap(),
//!             WsEvent::Closed(info) => assert!(info.clean),
//!             _ => {}
//!         }
//!     }
//!     // ...then drain what the mutations queued for the transport.
//!     while let Some(t) = server.poll_transmit() {
//!         if let Transmit::Bytes(b) = t { to_client.push_back(b) }
//!     }
//!     while let Some(t) = client.poll_transmit() {
//!         if let Transmit::Bytes(b) = t { to_server.push_back(b) }
//!     }
//!     // 4. an adapter would re-arm its timer with `poll_timeout()` here.
//! }
//! assert_eq!(server_got, vec![Message::text("hi")]);
//! ```
//!
//! ## Errors
//!
//! Codec errors are small `Copy` enums that know their WebSocket close code
//! ([`ws::ProtocolError::close_code`]) or HTTP status ([`ws::HandshakeError::status`]).
//! Commands return [`ws::SendError`]; the end of a connection is a [`ws::CloseInfo`].

pub mod client;
pub mod envelope;
pub mod http;
pub mod hub;
pub mod machine;
pub mod policy;
pub mod poll;
pub mod readiness;
#[cfg(feature = "redis")]
pub mod redis;
pub mod replay;
pub mod rng;
pub mod server;
pub mod socket;
pub mod sse;
#[cfg(feature = "testing")]
pub mod testing;
pub mod text;
pub mod time;
pub mod ws;

pub use machine::{Machine, Transmit};
pub use time::{Duration, Instant};
