//! The hub's bus on Redis, sans-IO: [`RedisBus`] turns the hub's
//! [`BusAction`](crate::hub::BusAction)s into RESP2 commands on two connections and Redis's
//! replies into [`RedisEvent`]s, one per hub input (see the hub's
//! [bus docs](crate::hub::bus) for the ordering rule it implements). Enabled by the
//! `redis` feature; RESP2 is encoded and decoded by the `redis-protocol` crate.
//!
//! # Connections
//!
//! The machine asks for two TCP connections ([`SocketAction::Connect`](crate::socket::SocketAction::Connect), named by
//! [`SockId`](crate::socket::SockId)): one for commands, pipelined (replies are matched to
//! commands in FIFO order), and one in pub/sub mode that receives live messages. Each
//! sends a `PING` first; [`RedisEvent::Up`] comes once both answered. When either breaks
//! (an error or end of the socket, input that is not RESP2, a reply buffer over
//! [`max_reply_bytes`](RedisConfig::max_reply_bytes), no reply within
//! [`command_timeout`](RedisConfig::command_timeout), no `Up` within
//! [`connect_timeout`](RedisConfig::connect_timeout), a Redis error to a history or a
//! `PING`), both are closed ([`SocketAction::Close`](crate::socket::SocketAction::Close)), publishes awaiting a reply fail with
//! [`HubError::Unavailable`](crate::hub::HubError::Unavailable),
//! [`RedisEvent::Down`] is emitted once (if `Up` was) and a new pair is opened after a
//! jittered [`Backoff`](crate::policy::Backoff) delay. On the new pub/sub connection every
//! followed channel is subscribed again; the hub, told `Up`, follows every channel again.
//!
//! # Data layout
//!
//! With `P` the [`key_prefix`](RedisConfig::key_prefix) (default `tw`) and `CH` a channel:
//!
//! | key | type | holds |
//! |---|---|---|
//! | `P:CH:log` | stream | one entry per message, ID `OFFSET-0` (offsets start at 1, so never the invalid `0-0`), field `d` = the data (JSON text); trimmed with `MAXLEN ~ log_max` |
//! | `P:CH:meta` | hash | `epoch` = the channel's epoch (hex, as in [`Position`](crate::replay::Position)), `off` = the last offset assigned |
//! | `P#id:ID` | string | `EPOCH:OFFSET` of the message first published with id `ID` (already scoped by the hub), expiring after [`dedup_ttl`](RedisConfig::dedup_ttl) |
//! | `P:CH` | pub/sub channel | each message as `EPOCH:OFFSET DATA` (the position, one space, the data) |
//!
//! Channel names are used as they are; the dedup keys (`P#id:…`) cannot meet a channel's
//! keys (`P:…`), whatever the channel is named.
//!
//! # Scripts
//!
//! Both are Lua, sent with `EVALSHA` and again with `EVAL` after a `NOSCRIPT` (a restarted
//! or flushed Redis), so each runs atomically on the server: Redis is the one owner that
//! assigns each channel's offsets, whichever instance publishes.
//!
//! - **Publish** (a [`BusAction::Publish`](crate::hub::BusAction::Publish)): with an id
//!   whose dedup key exists, returns its position and publishes nothing. Otherwise sets
//!   the meta's `epoch` if missing (`HSETNX`, the action's proposed epoch), `HINCRBY off
//!   1`, `XADD P:CH:log MAXLEN ~ log_max OFFSET-0 d DATA`, `PUBLISH P:CH "EPOCH:OFFSET
//!   DATA"`, `SET P#id:ID EPOCH:OFFSET EX ttl`, and returns the position →
//!   [`RedisEvent::Published`]. A Redis error reply is `Err(Unavailable)`, like a
//!   failure while down (the hub has no better word for "the bus refused").
//! - **History**: a `Follow` first `SUBSCRIBE`s `P:CH` and waits for its confirmation, so
//!   that nothing published after the history was read can be missed; then the script sets
//!   the epoch if missing (`HSETNX`) and returns the epoch, `off` and the newest `log_max`
//!   entries (`XREVRANGE … COUNT`, turned oldest first) → [`RedisEvent::History`]. A
//!   `Fetch { after }` returns the entries from `after + 1` (`XRANGE` from
//!   `{after+1}-0`, `COUNT log_max`), or the newest ones when more than `log_max` follow
//!   or `after` is of another epoch.
//!
//! The epoch a `Follow`'s history script proposes is the action's; a `Fetch` carries none,
//! so this machine draws a fresh random one. A proposal must never be an epoch the hub
//! already holds messages of: a Redis that lost the channel would take it over and count
//! offsets from 1 again, which the mirror would drop as duplicates.
//!
//! **Lost data stays coherent.** When Redis lost a channel (restarted empty, evicted), the
//! next script creates the meta with a new epoch, so the hub's mirrors start over and
//! clients are told their position is gone. Both scripts, when they create the meta,
//! also delete a stream left without it (an old epoch's entries). A stream that is gone
//! while its meta stays gives a history with no entries at the meta's head: the hub treats
//! the missing part as trimmed. If the stream's last ID is ahead of the meta's `off` (the
//! two restored apart), the publish script starts a new epoch on an emptied stream rather
//! than fail.
//!
//! # What the server must provide
//!
//! Redis 5 or later (streams), reachable without `AUTH` or TLS (neither is spoken here
//! yet). Run it with `maxmemory-policy noeviction` (or a `volatile-*` policy): only the
//! dedup keys expire, and an evicted meta or stream costs the channel its epoch. Without
//! persistence a restart is a lost channel (a new epoch, handled). With RDB snapshots a
//! restart can bring back an *older* `off` in the same epoch; each hub's `Follow` after
//! the reconnection carries the newest position it holds, and the history script starts a
//! new epoch when the channel is behind it. A publish that reaches the restored server
//! before any hub's history can still reuse an offset: with snapshots, prefer AOF with
//! `appendfsync always`, or no persistence.
//!
//! # Run loop
//!
//! Like every machine here (see the [crate docs](crate)), plus the socket actions:
//!
//! ```
//! use tidewire::socket::{SockId, SocketAction};
//! use tidewire::hub::Hub;
//! use tidewire::redis::RedisBus;
//! use tidewire::Instant;
//!
//! /// The adapter's sockets to Redis, by the bus's names for them.
//! trait Sockets {
//!     fn connect(&mut self, sock: SockId, host: &str, port: u16) -> bool;
//!     fn write(&mut self, sock: SockId, bytes: &[u8]);
//!     fn close(&mut self, sock: SockId);
//! }
//!
//! /// After every input (a socket connected, read or failed, the timer, a hub mutation):
//! /// hand the hub's requests to the bus, then drain the bus.
//! fn drain(hub: &mut Hub, bus: &mut RedisBus, io: &mut impl Sockets, now: Instant) {
//!     while let Some(action) = hub.poll_bus() {
//!         bus.execute(now, action);
//!     }
//!     while let Some(action) = bus.poll_action() {
//!         match action {
//!             SocketAction::Connect { sock, host, port } => {
//!                 if io.connect(sock, &host, port) {
//!                     bus.handle_connected(now, sock);
//!                 } else {
//!                     bus.handle_error(now, sock);
//!                 }
//!             }
//!             SocketAction::Close { sock } => io.close(sock),
//!             _ => {}
//!         }
//!     }
//!     while let Some((sock, bytes)) = bus.poll_transmit() {
//!         io.write(sock, &bytes);
//!     }
//!     while let Some(event) = bus.poll_event() {
//!         event.apply(hub, now);
//!     }
//!     // Then wait for the sockets (reads go to `bus.handle_read`, ends to `handle_eof`)
//!     // and for `bus.poll_timeout()` (then `bus.handle_timeout`).
//! }
//! ```

mod bus;
mod config;
mod outbound;
mod pubsub;
mod resp;
mod script;
mod types;

/// The outbound-socket action under its old name: [`crate::socket::SocketAction`], shared
/// with the client session.
pub use crate::socket::SocketAction as RedisAction;
pub use bus::RedisBus;
pub use config::{RedisConfig, UrlError};
pub use types::{RedisEvent, RedisState, RedisTimer};

#[cfg(test)]
mod tests;
