//! [`Server`]: every server-side connection of one listening endpoint, sans-IO.
//!
//! The adapter accepts sockets and hands each one to the server by a [`ConnHandle`] of its
//! choosing ([`handle_accept`](Server::handle_accept)), then feeds it the socket's bytes
//! ([`handle_read`](Server::handle_read)), its end ([`handle_eof`](Server::handle_eof),
//! [`handle_lost`](Server::handle_lost)) and the clock
//! ([`handle_timeout`](Server::handle_timeout)). The server reads and bounds the request
//! head, routes it, authenticates it ([`Authenticate`], before any `101` or `200`), and
//! serves the hub's endpoints itself:
//!
//! | route (default) | what | refusals |
//! |---|---|---|
//! | `GET /ws` with `Upgrade: websocket` | the envelope protocol into the [`Hub`] | 426 without an upgrade, 401/403 |
//! | `GET /events?ch=` | one channel as SSE, resumed from `Last-Event-ID` or `pos=` | 405, 400, 401, 403, 503 |
//! | `GET /poll?ch=&pos=[&wait=1][&sid=]` | one channel by polling, `ETag`/304, long polls held | 405, 400, 401, 403, 503 |
//! | `POST /api/publish?ch=[&id=]` | one JSON value published: `{"ep":..,"off":..}` | 405, 400, 401, 403, 413, 503 |
//! | anything else | the application's: [`ServerEvent::Request`] (answered through the server) or [`ServerEvent::Upgrade`] (handed over) | 413, 408 for a body |
//!
//! Every head gets at most [`ServerConfig::max_head`] bytes (`431`) and
//! [`ServerConfig::head_timeout`] to arrive (`408`); a malformed one gets `400`. A hub
//! refusal maps to a status in one place ([`status_of`]). A request that carries a
//! `Cookie` from a foreign `Origin` is refused with `403` on every hub endpoint.
//!
//! # Method groups
//!
//! - Inputs: [`handle_accept`](Server::handle_accept), [`handle_read`](Server::handle_read),
//!   [`handle_parsed`](Server::handle_parsed) (a head a host server such as hyper parsed),
//!   [`handle_eof`](Server::handle_eof), [`handle_lost`](Server::handle_lost),
//!   [`handle_timeout`](Server::handle_timeout).
//! - Commands: [`publish`](Server::publish), [`decide`](Server::decide),
//!   [`decide_publish`](Server::decide_publish) (a vetted client publish),
//!   [`decide_join`](Server::decide_join) (a join the hub's policy deferred),
//!   [`shutdown`](Server::shutdown), [`with_hub`](Server::with_hub).
//! - Outputs: [`poll_ready`](Server::poll_ready) (a connection may have bytes to write),
//!   [`poll_transmit`](Server::poll_transmit) (per connection),
//!   [`poll_handover`](Server::poll_handover) (per connection: it left for the application),
//!   [`poll_event`](Server::poll_event) (decisions and informational events, bounded),
//!   [`take_submitted`](Server::take_submitted) (a bus answer by token),
//!   [`poll_arrived`](Server::poll_arrived) (whether to wake the application's waiters),
//!   [`poll_timeout`](Server::poll_timeout).
//! - Getters: [`hub`](Server::hub), [`stats`](Server::stats),
//!   [`connection_count`](Server::connection_count), [`is_drained`](Server::is_drained), and
//!   the hub's as one call each: [`presence`](Server::presence), [`head`](Server::head),
//!   [`hub_stats`](Server::hub_stats), [`hub_connections`](Server::hub_connections),
//!   [`bus_is_up`](Server::bus_is_up).
//! - The application's trusted publish with or without a bus:
//!   [`publish_trusted`](Server::publish_trusted), answered by
//!   [`take_submitted`](Server::take_submitted) when the bus numbers it.
//!
//! # Backpressure
//!
//! [`poll_transmit`](Server::poll_transmit) is the one place frames move from the hub into
//! a transport: a WebSocket's frames are pulled from the hub only while its machine takes
//! them (`WsConfig::max_outbound`), an SSE stream's while it holds less than
//! [`ServerConfig::sse_room`]. An adapter pulls a connection's transmits only while its
//! socket takes them, so a client that stops reading fills its socket, then its transport,
//! then its hub outbox, and meets the channel's slow-consumer policy: one chain.
//!
//! # Binary frames on the hub's WebSocket
//!
//! The envelope protocol is JSON text. A binary frame on the hub's WebSocket closes the
//! connection with `1003` (unsupported data), in every adapter and in the simulation.
//!
//! # The application's connections
//!
//! A plain request for a path that is not the hub's stays a connection of the server: it
//! emits [`ServerEvent::Request`], reads the body when the application asks
//! ([`read_body`](Server::read_body), bounded by [`ServerConfig::max_request_body`] and
//! timed by [`ServerConfig::head_timeout`], `100 Continue` included), and writes the
//! application's [`answer`](Server::answer) (or ends it: [`drop_request`](Server::drop_request)),
//! so an adapter pumps it like any other. A WebSocket upgrade for such a path leaves the
//! server: it emits [`ServerEvent::Upgrade`] (a [`WsConnection`] waiting for `accept` or
//! `reject`, with the bytes that followed already fed), forgets the handle, and the adapter
//! drives that connection on its own, off the server's lock. So per-connection work of an
//! application WebSocket (framing, unmasking, UTF-8) never queues behind the hub.
//!
//! # Shutdown
//!
//! [`shutdown`](Server::shutdown) closes every hub WebSocket with `1001`, ends every SSE
//! stream, answers held polls, and answers new heads with `503`; connections that have not
//! finished by the grace deadline are cut ([`Transmit::Shutdown`](crate::Transmit::Shutdown)).
//! [`is_drained`](Server::is_drained) says when none is left.
//!
//! # Example
//!
//! ```
//! use tidewire::hub::DemoAuth;
//! use tidewire::server::{ConnHandle, Server, ServerConfig};
//! use tidewire::{Instant, Transmit};
//!
//! let now = Instant::now();
//! let mut server = Server::new(ServerConfig::default(), DemoAuth, DemoAuth, 7);
//! let conn = ConnHandle(1);
//! server.handle_accept(now, conn);
//! server.handle_read(now, conn, b"GET /poll?ch=public:news HTTP/1.1\r\nHost: x\r\n\r\n");
//! let mut response = Vec::new();
//! while let Some(t) = server.poll_transmit(now, conn) {
//!     match t {
//!         Transmit::Bytes(b) => response.extend_from_slice(&b),
//!         _ => break, // Shutdown: close the socket
//!     }
//! }
//! assert!(response.starts_with(b"HTTP/1.1 200 OK\r\n"));
//! assert!(server.is_drained());
//! ```

mod app;
mod auth;
#[cfg(feature = "deflate")]
mod broadcast;
#[cfg(feature = "redis")]
mod bus;
mod config;
mod conn;
mod door;
mod endpoints;
mod events;
mod join;
mod operations;
mod output;
mod route;
#[cfg(test)]
mod tests;
mod vet;

use std::collections::{HashMap, VecDeque};

use rustc_hash::FxHashMap;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

pub use auth::{Authenticate, Credential, Refusal, Verdict, status_of};
pub use config::ServerConfig;
pub use door::ParsedHead;
pub use operations::Publication;
pub use route::{Route, Routes};

use crate::http::Request;
use crate::hub::{Authorize, ConnId, Hub, HubError, HubEvent, Principal};
use crate::machine::Machine;
use crate::replay::Position;
use crate::rng::Rng;
use crate::time::{Duration, Instant, TimerQueue};
use crate::ws::{CloseCode, WsConnection};
use conn::{Conn, Proto};

/// How an adapter's `ServerHandle::shutdown` went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Connections that ended within the grace period.
    pub closed: usize,
    /// Connections whose sockets were shut down when the grace period ran out.
    pub dropped: usize,
}

/// A connection of the adapter's, by a number the adapter chooses (unique among the live
/// connections it handed to the server).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConnHandle(pub u64);

/// What the application must decide or may learn, pulled with
/// [`Server::poll_event`](Server::poll_event).
#[derive(Debug)]
#[non_exhaustive]
pub enum ServerEvent {
    /// An HTTP request for a path that is not the hub's. The connection stays the
    /// server's (pumped as any other): the application reads its body with
    /// [`Server::read_body`] and answers with [`Server::answer`] (or gives it up with
    /// [`Server::drop_request`]).
    Request {
        /// The connection.
        conn: ConnHandle,
        /// The head.
        request: Request,
    },
    /// A WebSocket upgrade for a path that is not the hub's. The connection left the
    /// server: the application accepts or rejects the upgrade on `ws` (the bytes that
    /// followed the head are already fed), and the adapter drives it from then on.
    Upgrade {
        /// The connection.
        conn: ConnHandle,
        /// The server side of the WebSocket, waiting in its decision step.
        ws: Box<WsConnection>,
    },
    /// An [`Authenticate`] policy answered [`Verdict::Defer`]: call
    /// [`Server::decide`] with this connection.
    Authenticate {
        /// The connection whose request waits.
        conn: ConnHandle,
        /// Its head.
        request: Request,
    },
    /// The server refused a request (any status ≥ 400 it answered itself).
    Refused {
        /// The connection.
        conn: ConnHandle,
        /// The status.
        status: u16,
    },
    /// A message was appended to a channel's log (only with
    /// [`ServerConfig::report_published`]).
    Published {
        /// The channel.
        ch: Arc<str>,
        /// Its position.
        pos: Position,
        /// Its publisher as the hub shows it (the client's user; `None` for anonymous and
        /// trusted publishes, and in channels that hide publishers).
        from: Option<Arc<str>>,
        /// Its data (JSON text).
        data: Bytes,
    },
    /// What the hub reports to the application (joins, leaves, bus state, ...).
    /// [`HubEvent::PublishRequested`] (with [`HubConfig::vet_publishes`](crate::hub::HubConfig::vet_publishes))
    /// needs an answer, [`Server::decide_publish`], and so does
    /// [`HubEvent::JoinRequested`] (a join the policy deferred), [`Server::decide_join`];
    /// both are queued with the other events that do: they are never dropped.
    Hub(HubEvent),
}

/// Counters of a [`Server`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServerStats {
    /// Connections accepted.
    pub accepted: u64,
    /// Hub WebSockets opened (101).
    pub ws_opened: u64,
    /// SSE streams started (200).
    pub sse_started: u64,
    /// Polls answered.
    pub polls: u64,
    /// Publishes answered.
    pub publishes: u64,
    /// Requests refused with a 4xx/5xx status.
    pub refused: u64,
    /// Connections closed by the hub (4100 too slow, 1008 rate limit).
    pub closed_by_hub: u64,
    /// Requests and upgrades given to the application.
    pub handed_over: u64,
    /// Informational events dropped because the queue was full.
    pub events_dropped: u64,
}

/// The polling client a poll belongs to: (principal, channel, `sid`).
type PollKey = (Principal, Arc<str>, Option<Box<str>>);

/// Every server-side connection of one endpoint. See the [module docs](self).
pub struct Server {
    cfg: ServerConfig,
    hub: Hub,
    auth: Box<dyn Authenticate + Send>,
    rng: Rng,
    /// Every connection; where iteration order reaches the hub or the wire, the keys are
    /// sorted first, so runs replay.
    conns: FxHashMap<ConnHandle, Conn>,
    by_hub: HashMap<ConnId, ConnHandle>,
    /// Held polls per channel.
    held: HashMap<Arc<str>, Vec<ConnHandle>>,
    poll_clients: HashMap<PollKey, ConnId>,
    poll_keys: HashMap<ConnId, PollKey>,
    trusted_ids: HashMap<Box<str>, Position>,
    trusted_order: VecDeque<Box<str>>,
    timers: TimerQueue<ConnHandle>,
    ready: VecDeque<ConnHandle>,
    /// Connections whose deadline may have changed since the last `route_hub_outputs`.
    dirty: Vec<ConnHandle>,
    /// What the application pulls: decisions, hand-overs, events, bus answers.
    events: events::EventQueue,
    draining: Option<Instant>,
    /// The shutdown's grace ran out and whatever was left was cut: its deadline is spent.
    grace_over: bool,
    stats: ServerStats,
    violations: Vec<String>,
    /// Broadcast frames compressed once for every receiver that can share them.
    #[cfg(feature = "deflate")]
    compressed: broadcast::Compressed,
    /// HTTP publishes waiting for the application's decision, by the hub's id.
    vetting: HashMap<crate::hub::PublishId, Vec<ConnHandle>>,
    /// Trusted HTTP publishes waiting for the bus's answer, by its token.
    submits: HashMap<crate::hub::BusToken, ConnHandle>,
    /// SSE requests and polls waiting for the application's decision on their join.
    joining: join::Joining,
    /// The scale-out bus ([`Server::with_redis`]).
    #[cfg(feature = "redis")]
    bus: Option<crate::redis::RedisBus>,
    #[cfg(feature = "testing")]
    block_ws: bool,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("hub", &self.hub)
            .field("conns", &self.conns.len())
            .field("stats", &self.stats)
            .field("draining", &self.draining)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// A server with a new hub. `authn` answers who each request is; `authz` (the hub's
    /// policy) whether it may join or publish to a channel. Epochs, and every WebSocket's
    /// seed, are drawn from a generator seeded with `seed` (adapters draw it from OS
    /// entropy, so that a restarted server starts new epochs; tests use a fixed one).
    #[must_use]
    pub fn new(
        cfg: ServerConfig,
        authn: impl Authenticate + Send + 'static,
        authz: impl Authorize + Send + 'static,
        seed: u64,
    ) -> Self {
        let hub = Hub::new(cfg.hub.clone(), authz, seed);
        Self::build(cfg, authn, hub, seed)
    }

    /// A server around an existing hub (e.g. one with a bus, [`Hub::with_bus`]).
    #[must_use]
    pub fn around(
        cfg: ServerConfig,
        authn: impl Authenticate + Send + 'static,
        hub: Hub,
        seed: u64,
    ) -> Self {
        Self::build(cfg, authn, hub, seed)
    }

    fn build(
        cfg: ServerConfig,
        authn: impl Authenticate + Send + 'static,
        hub: Hub,
        seed: u64,
    ) -> Self {
        Self {
            cfg,
            hub,
            auth: Box::new(authn),
            rng: Rng::from_u64(seed ^ 0x5e12_7e12),
            conns: FxHashMap::default(),
            by_hub: HashMap::new(),
            held: HashMap::new(),
            poll_clients: HashMap::new(),
            poll_keys: HashMap::new(),
            trusted_ids: HashMap::new(),
            trusted_order: VecDeque::new(),
            timers: TimerQueue::new(),
            ready: VecDeque::new(),
            dirty: Vec::new(),
            events: events::EventQueue::default(),
            draining: None,
            grace_over: false,
            stats: ServerStats::default(),
            violations: Vec::new(),
            #[cfg(feature = "deflate")]
            compressed: broadcast::Compressed::default(),
            vetting: HashMap::new(),
            submits: HashMap::new(),
            joining: join::Joining::default(),
            #[cfg(feature = "redis")]
            bus: None,
            #[cfg(feature = "testing")]
            block_ws: false,
        }
    }

    // -----------------------------------------------------------------------------------
    // Getters

    /// The settings.
    #[must_use]
    pub fn config(&self) -> &ServerConfig {
        &self.cfg
    }

    /// The hub (read-only; mutate it through [`with_hub`](Self::with_hub)).
    #[must_use]
    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// Counters.
    #[must_use]
    pub fn stats(&self) -> ServerStats {
        self.stats
    }

    /// Broadcast compression (feature `deflate`): frames compressed, and sends that
    /// shared a compression made for another receiver.
    #[cfg(feature = "deflate")]
    #[must_use]
    pub fn compression_counts(&self) -> (u64, u64) {
        (self.compressed.compressions, self.compressed.shared)
    }

    /// Connections the server holds (any route, handed-over ones excluded).
    #[must_use]
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// Whether `conn` is the server's (not yet ended or handed over).
    #[must_use]
    pub fn has_connection(&self, conn: ConnHandle) -> bool {
        self.conns.contains_key(&conn)
    }

    /// After [`shutdown`](Self::shutdown): whether every connection has ended.
    #[must_use]
    pub fn is_drained(&self) -> bool {
        self.conns.is_empty()
    }

    /// Whether [`shutdown`](Self::shutdown) was called.
    #[must_use]
    pub fn is_shutting_down(&self) -> bool {
        self.draining.is_some()
    }

    /// Broken internal rules found so far (a second end event, a connection left in the
    /// hub). Always empty unless there is a bug; the simulation checks it.
    #[must_use]
    pub fn violations(&self) -> &[String] {
        &self.violations
    }

    /// Bytes queued toward clients: in the hub's outboxes, and in the transports
    /// (WebSocket and SSE buffers plus unsent responses).
    #[must_use]
    pub fn buffered_bytes(&self) -> (usize, usize) {
        let hub = self.by_hub.keys().filter_map(|&id| self.hub.buffered(id)).map(|b| b.1).sum();
        let transport = self.conns.values().map(Conn::buffered).sum();
        (hub, transport)
    }

    /// Each live connection and what it is, for reports.
    #[must_use]
    pub fn describe_connections(&self) -> Vec<(ConnHandle, String)> {
        let mut v: Vec<(ConnHandle, String)> =
            self.conns.iter().map(|(&h, c)| (h, c.describe())).collect();
        v.sort_unstable_by_key(|(h, _)| *h);
        v
    }

    /// Checks the server's bounds: hub outboxes and transport buffers. Returns what is
    /// over (with `slack` allowed beyond each configured bound).
    #[must_use]
    pub fn check_bounds(&self, slack: usize) -> Vec<String> {
        let mut over = Vec::new();
        let ob = self.cfg.hub.outbox;
        for (&hub_id, &conn) in &self.by_hub {
            if let Some((frames, bytes)) = self.hub.buffered(hub_id)
                && (frames > 3 * ob.max_items || bytes > 3 * ob.max_bytes)
            {
                over.push(format!("{conn:?} {hub_id:?}: hub outbox {frames}/{bytes}"));
            }
            let Some(c) = self.conns.get(&conn) else { continue };
            let bound = match &c.proto {
                Proto::Ws { .. } => self.cfg.ws.max_outbound + slack,
                Proto::Sse { .. } => self.cfg.sse_room + slack,
                _ => continue,
            };
            if c.buffered() > bound {
                over.push(format!("{conn:?}: transport buffer {} > {bound}", c.buffered()));
            }
        }
        over
    }

    // -----------------------------------------------------------------------------------
    // Inputs

    /// A new connection: its head must arrive within [`ServerConfig::head_timeout`]. During
    /// a shutdown it is answered `503` at once.
    pub fn handle_accept(&mut self, now: Instant, conn: ConnHandle) {
        self.stats.accepted += 1;
        let c = Conn::new(self.cfg.max_head, now + self.cfg.head_timeout);
        self.conns.insert(conn, c);
        if self.draining.is_some() {
            self.respond(conn, 503, &[("Retry-After", "5")], b"shutting down\n");
        }
        self.touch(conn);
        self.route_hub_outputs(now);
    }

    /// [`handle_accept`](Self::handle_accept) of a socket whose peer is `peer`: the
    /// [`Authenticate`] policy sees the address ([`Authenticate::authenticate_from`]).
    pub fn handle_accept_from(
        &mut self,
        now: Instant,
        conn: ConnHandle,
        peer: core::net::SocketAddr,
    ) {
        self.handle_accept(now, conn);
        if let Some(c) = self.conns.get_mut(&conn) {
            c.peer = Some(peer);
        }
    }

    /// The peer address `conn` was accepted from, if the adapter gave it.
    #[must_use]
    pub fn peer(&self, conn: ConnHandle) -> Option<core::net::SocketAddr> {
        self.conns.get(&conn).and_then(|c| c.peer)
    }

    /// Bytes from `conn`'s socket.
    pub fn handle_read(&mut self, now: Instant, conn: ConnHandle, data: &[u8]) {
        self.on_data(now, conn, data);
        self.route_hub_outputs(now);
    }

    /// `conn`'s peer finished sending (or the read failed). Keep pulling
    /// [`poll_transmit`](Self::poll_transmit) until it returns [`Transmit::Shutdown`](crate::Transmit::Shutdown).
    pub fn handle_eof(&mut self, now: Instant, conn: ConnHandle) {
        self.on_eof(now, conn);
        self.route_hub_outputs(now);
    }

    /// `conn`'s socket is gone (reset, write error): the server forgets it at once; no
    /// more transmits.
    pub fn handle_lost(&mut self, now: Instant, conn: ConnHandle) {
        if let Some(c) = self.conns.get_mut(&conn) {
            match &mut c.proto {
                Proto::Ws { ws, .. } => ws.handle_eof(now),
                Proto::Sse { sse, .. } => sse.handle_eof(now),
                _ => {}
            }
            self.conn_events(now, conn);
        }
        self.drop_conn(now, conn);
        self.events.forget(conn);
        self.route_hub_outputs(now);
    }

    /// Fires every deadline `<= now`: the hub's, the connections' (heads, keep-alives,
    /// held polls), the shutdown's grace and the Redis bus's. Spurious calls are no-ops.
    pub fn handle_timeout(&mut self, now: Instant) {
        #[cfg(feature = "redis")]
        self.bus_timeout(now);
        self.hub.handle_timeout(now);
        self.route_hub_outputs(now);
        while let Some((conn, _)) = self.timers.pop_expired(now) {
            self.conn_timeout(now, conn);
        }
        if !self.grace_over && self.draining.is_some_and(|d| now >= d) {
            self.grace_over = true;
            let all = self.handles();
            for conn in all {
                self.cut(now, conn);
            }
        }
        self.route_hub_outputs(now);
    }

    // -----------------------------------------------------------------------------------
    // Commands

    /// The trusted server-side publish: appends `json` (one JSON value) to `ch`'s log and
    /// broadcasts it.
    ///
    /// # Errors
    /// As [`Hub::publish_json`].
    pub fn publish(&mut self, now: Instant, ch: &str, json: &[u8]) -> Result<Position, HubError> {
        let r = self.hub.publish_json(now, ch, json);
        self.route_hub_outputs(now);
        r
    }

    /// Runs `f` on the hub, then what its changes set in motion (frames, closes, woken
    /// polls). The one way to mutate the hub directly.
    pub fn with_hub<T>(&mut self, now: Instant, f: impl FnOnce(&mut Hub) -> T) -> T {
        let r = f(&mut self.hub);
        self.route_hub_outputs(now);
        r
    }

    /// Answers a deferred authentication ([`ServerEvent::Authenticate`]) with
    /// [`Verdict::Allow`] or [`Verdict::Refuse`]. A connection that is no longer waiting
    /// (gone, timed out) is ignored; `Defer` again keeps it waiting.
    pub fn decide(&mut self, now: Instant, conn: ConnHandle, verdict: Verdict) {
        let Some(c) = self.conns.get_mut(&conn) else { return };
        if !matches!(c.proto, Proto::Deciding { .. }) || matches!(verdict, Verdict::Defer) {
            return;
        }
        let Proto::Deciding { request, rest } = std::mem::replace(&mut c.proto, Proto::Done) else {
            return;
        };
        self.touch(conn);
        self.apply_verdict(now, conn, request, &rest, verdict);
        self.route_hub_outputs(now);
    }

    /// Starts a graceful shutdown: `1001` to every hub WebSocket, every SSE stream ended,
    /// held polls answered, `503` to requests still reading their head and to new ones.
    /// At `now + grace` whatever is left is cut.
    pub fn shutdown(&mut self, now: Instant, grace: Duration) {
        if self.draining.is_some() {
            return;
        }
        self.draining = Some(now + grace);
        // HTTP publishes waiting for the application's decision are refused in the hub (so
        // a late decision logs nothing) and answered 503 now.
        let mut waiting: Vec<_> = self.vetting.drain().collect();
        waiting.sort_unstable_by_key(|(id, _)| id.0);
        for (id, conns) in waiting {
            let refuse = crate::hub::PublishDecision::Refuse { code: "shutting_down".into() };
            self.hub.decide_publish(now, id, refuse);
            for conn in conns {
                self.respond(conn, 503, &[("Retry-After", "5")], b"shutting down\n");
            }
        }
        let all = self.handles();
        for conn in all {
            self.touch(conn);
            let Some(c) = self.conns.get_mut(&conn) else { continue };
            match &mut c.proto {
                Proto::Head(..) | Proto::Body { .. } | Proto::Deciding { .. } => {
                    self.respond(conn, 503, &[("Retry-After", "5")], b"shutting down\n");
                }
                Proto::Joining { .. } => {
                    self.end_quietly(now, conn);
                    self.respond(conn, 503, &[("Retry-After", "5")], b"shutting down\n");
                }
                Proto::Ws { .. } => {
                    // What the hub already queued goes out before the close (as far as
                    // the transport takes it; the client resumes the rest).
                    self.refill_all(now, conn);
                    if let Some(Conn { proto: Proto::Ws { ws, .. }, .. }) =
                        self.conns.get_mut(&conn)
                    {
                        let _ = ws.close(now, CloseCode::GOING_AWAY, "server shutting down");
                    }
                }
                Proto::Sse { .. } => {
                    self.refill_all(now, conn);
                    if let Some(Conn { proto: Proto::Sse { sse, .. }, .. }) =
                        self.conns.get_mut(&conn)
                    {
                        sse.close(now);
                    }
                }
                Proto::Poll { .. } => self.answer_poll_now(now, conn),
                // The application answers it (or the grace runs out).
                Proto::App(_) | Proto::Done => {}
            }
            self.conn_events(now, conn);
        }
        self.route_hub_outputs(now);
    }

    /// While `on`, hub WebSocket upgrades are answered with 502, as by a proxy that does
    /// not pass them; open WebSockets stay open. For the simulation.
    #[cfg(feature = "testing")]
    pub fn set_block_websocket(&mut self, on: bool) {
        self.block_ws = on;
    }

    /// The process dies: every connection vanishes without a word. With `keep_hub` the
    /// hub survives (its log was persisted; the dead connections leave it), otherwise a
    /// new hub starts with `hub`. For the simulation.
    #[cfg(feature = "testing")]
    pub fn crash(&mut self, now: Instant, hub: Option<Hub>) {
        match hub {
            None => {
                let mut ids: Vec<ConnId> =
                    self.by_hub.keys().chain(self.poll_keys.keys()).copied().collect();
                // In order, so that simulated runs replay.
                ids.sort_unstable();
                ids.dedup();
                for id in ids {
                    self.hub.disconnect(now, id);
                }
                while self.hub.poll_event().is_some() {}
                while self.hub.poll_ready().is_some() {}
            }
            Some(h) => self.hub = h,
        }
        self.conns.clear();
        self.by_hub.clear();
        self.held.clear();
        self.poll_clients.clear();
        self.poll_keys.clear();
        self.timers.clear();
        self.ready.clear();
        self.events.clear();
        self.joining.clear();
    }

    // -----------------------------------------------------------------------------------
    // Outputs

    /// A connection that may have bytes to write: pull them with
    /// [`poll_transmit`](Self::poll_transmit). New after every input and command.
    #[must_use]
    pub fn poll_ready(&mut self) -> Option<ConnHandle> {
        while let Some(conn) = self.ready.pop_front() {
            if let Some(c) = self.conns.get_mut(&conn) {
                c.queued = false;
                return Some(conn);
            }
        }
        None
    }

    /// When [`handle_timeout`](Self::handle_timeout) must run next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        #[cfg(feature = "redis")]
        let bus = self.bus_deadline();
        #[cfg(not(feature = "redis"))]
        let bus = None;
        let grace = self.draining.filter(|_| !self.grace_over);
        [self.hub.poll_timeout(), self.timers.next_deadline(), grace, bus]
            .into_iter()
            .flatten()
            .min()
    }

    // -----------------------------------------------------------------------------------
    // Inputs of one connection

    fn on_data(&mut self, now: Instant, conn: ConnHandle, data: &[u8]) {
        if !self.conns.contains_key(&conn) {
            return;
        }
        self.touch(conn);
        let Some(c) = self.conns.get_mut(&conn) else { return };
        match &mut c.proto {
            Proto::Head(buf, parser) => {
                buf.extend_from_slice(data);
                match parser.parse(buf) {
                    Ok(None) => {}
                    Ok(Some((req, len))) => {
                        let rest = buf.split_off(len).freeze();
                        self.route(now, conn, req, &rest);
                    }
                    Err(e) => {
                        let text = format!("{e}\n");
                        self.respond(conn, e.status(), &[], text.as_bytes());
                    }
                }
            }
            Proto::Deciding { rest, .. } => {
                if rest.len() + data.len() > self.cfg.max_head {
                    self.respond(conn, 413, &[], b"too much data before the answer\n");
                } else {
                    rest.extend_from_slice(data);
                }
            }
            Proto::Ws { ws, .. } => {
                ws.handle_read(now, data);
                self.conn_events(now, conn);
            }
            Proto::Sse { sse, .. } => sse.handle_read(now, data),
            Proto::Body { .. } => self.body(now, conn, data),
            Proto::App(_) => self.app_input(now, conn, Some(data)),
            Proto::Poll { .. } | Proto::Joining { .. } | Proto::Done => {}
        }
    }

    fn on_eof(&mut self, now: Instant, conn: ConnHandle) {
        let Some(c) = self.conns.get_mut(&conn) else { return };
        match &mut c.proto {
            Proto::Ws { ws, .. } => ws.handle_eof(now),
            Proto::Sse { sse, .. } => sse.handle_eof(now),
            Proto::App(_) => self.app_input(now, conn, None),
            Proto::Done => {}
            _ => {
                // A held poll whose client went away, or a request cut short.
                self.end_quietly(now, conn);
            }
        }
        self.conn_events(now, conn);
        self.touch(conn);
    }

    fn conn_timeout(&mut self, now: Instant, conn: ConnHandle) {
        if !self.conns.contains_key(&conn) {
            return;
        }
        self.touch(conn);
        let Some(c) = self.conns.get_mut(&conn) else { return };
        let late = now >= c.deadline;
        match &mut c.proto {
            Proto::Ws { ws, .. } => ws.handle_timeout(now),
            Proto::Sse { sse, .. } => sse.handle_timeout(now),
            Proto::Poll { poll, .. } => {
                let ch = poll.request().channel.clone();
                let answer = self.hub.log(&ch).and_then(|log| poll.handle_timeout(now, log));
                if let Some(bytes) = answer {
                    self.poll_answered(now, conn, bytes);
                }
            }
            Proto::Head(..) | Proto::Body { .. } if late => {
                self.respond(conn, 408, &[], b"request timeout\n");
            }
            Proto::Deciding { .. } if late => {
                self.respond(conn, 503, &[], b"authentication timed out\n");
            }
            Proto::App(_) => self.app_input(now, conn, Some(&[])),
            _ => {}
        }
        self.conn_events(now, conn);
    }

    /// The grace is over: `conn` ends now, whatever it still had to say.
    fn cut(&mut self, now: Instant, conn: ConnHandle) {
        self.end_quietly(now, conn);
        if let Some(c) = self.conns.get_mut(&conn) {
            c.out.clear();
        }
        self.touch(conn);
    }

    /// Leaves the hub and ends the connection with the next transmit (whatever response
    /// it already queued is still written).
    fn end_quietly(&mut self, now: Instant, conn: ConnHandle) {
        let Some(c) = self.conns.get_mut(&conn) else { return };
        let proto = std::mem::replace(&mut c.proto, Proto::Done);
        c.shutdown = true;
        if let Some(id) = proto.hub_conn() {
            self.leave_hub(now, id);
        }
        if let Proto::Poll { poll, .. } = &proto {
            self.unhold(&poll.request().channel, conn);
        }
        let ended = matches!(proto, Proto::Ws { .. } | Proto::Sse { .. });
        if ended && let Some(c) = self.conns.get_mut(&conn) {
            c.ends += 1;
        }
    }

    fn unhold(&mut self, ch: &str, conn: ConnHandle) {
        if let Some(v) = self.held.get_mut(ch) {
            v.retain(|&h| h != conn);
            if v.is_empty() {
                self.held.remove(ch);
            }
        }
    }

    /// Disconnects a hub connection (a poll client's stays: it expires in the hub).
    fn leave_hub(&mut self, now: Instant, id: ConnId) {
        self.by_hub.remove(&id);
        if !self.poll_keys.contains_key(&id) {
            self.hub.disconnect(now, id);
            if self.hub.is_connected(id) {
                self.violations.push(format!("{id:?}: still in the hub"));
            }
        }
    }

    /// Forgets a connection whose transport is gone; checks that it ended exactly once.
    fn drop_conn(&mut self, now: Instant, conn: ConnHandle) {
        self.timers.cancel(conn);
        let Some(c) = self.conns.remove(&conn) else { return };
        let ended_once = match &c.proto {
            Proto::Ws { .. } | Proto::Sse { .. } => c.ends == 1,
            _ => c.ends <= 1,
        };
        if !ended_once {
            self.violations.push(format!("{conn:?}: {} end events", c.ends));
        }
        if let Some(id) = c.proto.hub_conn() {
            self.leave_hub(now, id);
        }
        if let Proto::Poll { poll, .. } = &c.proto {
            self.unhold(&poll.request().channel.clone(), conn);
        }
    }

    /// Every connection's handle, in order.
    fn handles(&self) -> Vec<ConnHandle> {
        let mut all: Vec<ConnHandle> = self.conns.keys().copied().collect();
        all.sort_unstable();
        all
    }

    /// Marks `conn` for the ready queue and the next `route_hub_outputs`.
    fn touch(&mut self, conn: ConnHandle) {
        if let Some(c) = self.conns.get_mut(&conn) {
            self.dirty.push(conn);
            if !c.queued {
                c.queued = true;
                self.ready.push_back(conn);
            }
        }
    }

    /// Queues a complete response; the connection ends after it.
    fn respond(&mut self, conn: ConnHandle, status: u16, headers: &[(&str, &str)], body: &[u8]) {
        if status >= 400 {
            self.stats.refused += 1;
            self.push_event(ServerEvent::Refused { conn, status });
        }
        let bytes = crate::http::response(status, headers, body).unwrap_or_default();
        self.send_and_end(conn, bytes);
    }

    fn send_and_end(&mut self, conn: ConnHandle, bytes: Bytes) {
        self.touch(conn);
        if let Some(c) = self.conns.get_mut(&conn) {
            c.proto = Proto::Done;
            c.out.push_back(bytes);
            c.shutdown = true;
        }
    }

    /// Removes `conn` from the server: the application has it now.
    fn hand_over(&mut self, conn: ConnHandle) {
        self.timers.cancel(conn);
        self.conns.remove(&conn);
        self.stats.handed_over += 1;
    }

    fn new_ws_config(&mut self) -> crate::ws::WsConfig {
        let mut cfg = self.cfg.ws.clone();
        self.rng.fill(&mut cfg.rng_seed);
        cfg
    }
}

/// `rest` as a `BytesMut` for a connection that waits.
fn pending(rest: &[u8]) -> BytesMut {
    BytesMut::from(rest)
}

impl Server {
    /// The trusted server-side publish deduplicated by `id`: the first publish of an `id`
    /// appends `json` to `ch`'s log; a repeat (while the id is among the last
    /// [`ServerConfig::trusted_dedup`] ones) appends nothing and answers the first one's
    /// position. The window is the one of trusted `POST /api/publish?id=` requests.
    ///
    /// # Errors
    /// As [`Hub::publish_json`].
    pub fn publish_once(
        &mut self,
        now: Instant,
        ch: &str,
        id: &str,
        json: &[u8],
    ) -> Result<Position, HubError> {
        let r = self.trusted_publish(now, ch, Some(id), json);
        self.route_hub_outputs(now);
        r
    }
}
