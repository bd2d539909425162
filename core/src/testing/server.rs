//! [`SimServer`]: the shipped [`Server`] endpoint over simulated connections.
//!
//! This is a socket pump like the adapters', with the simulated network for sockets: a
//! link the network accepts becomes a [`ConnHandle`] (the link's number), its segments go
//! to [`Server::handle_read`], its `FIN` to [`Server::handle_eof`] and a reset to
//! [`Server::handle_lost`]. After every input the pump pulls
//! [`Server::poll_transmit`] for every connection the server names ready, while the
//! link's window has room; a link whose window is full is pulled again when the network
//! says it is writable. A client that stops reading therefore fills the window, then the
//! transport, then the hub's bounded outbox, and meets the channel's slow-consumer policy,
//! exactly as over a socket.
//!
//! The server runs [`ServerConfig`]'s routes (the defaults: `/ws`, `/events`, `/poll`,
//! `/api/publish`) with [`DemoAuth`] for authentication and authorization. Requests for
//! other paths, which an application would serve, get `404`.

use std::collections::BTreeSet;
use std::sync::Arc;

use bytes::Bytes;

use super::net::{Delivery, LinkId, Net, NetEvent, Side};
use crate::hub::{DemoAuth, Hub};
use crate::machine::Transmit;
use crate::replay::Position;
use crate::server::{ConnHandle, Server, ServerEvent};
use crate::time::Instant;

pub use crate::server::{ServerConfig, ServerStats};

/// A message the hub appended to a log, as the server saw it: the truth an oracle checks
/// deliveries against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Published {
    /// The channel.
    pub ch: Arc<str>,
    /// Its position.
    pub pos: Position,
    /// Its publisher as the hub shows it.
    pub from: Option<Arc<str>>,
    /// Its data (JSON text).
    pub data: Bytes,
}

/// A [`Server`] on the simulated network. See the [module docs](self).
///
/// - Inputs: [`handle_net`](Self::handle_net), [`handle_writable`](Self::handle_writable),
///   [`handle_timeout`](Self::handle_timeout); commands [`publish`](Self::publish),
///   [`crash`](Self::crash).
/// - Outputs: writes to the [`Net`]; [`poll_timeout`](Self::poll_timeout),
///   [`drain_published`](Self::drain_published).
/// - Getters: [`server`](Self::server), [`hub`](Self::hub), [`stats`](Self::stats),
///   [`violations`](Self::violations), [`check_bounds`](Self::check_bounds).
#[derive(Debug)]
pub struct SimServer {
    id: usize,
    cfg: ServerConfig,
    server: Server,
    /// Links whose window was full while they had more to write.
    blocked: BTreeSet<LinkId>,
    published: Vec<Published>,
}

fn handle(link: LinkId) -> ConnHandle {
    ConnHandle(link.0)
}

impl SimServer {
    /// Server node `id` with a new hub whose epochs are drawn from `seed`.
    #[must_use]
    pub fn new(id: usize, mut cfg: ServerConfig, seed: u64) -> Self {
        cfg.report_published = true;
        let server = Server::new(cfg.clone(), DemoAuth, DemoAuth, seed);
        Self { id, cfg, server, blocked: BTreeSet::new(), published: Vec::new() }
    }

    /// While `on`, WebSocket upgrades are answered with 502, as by a proxy that does not
    /// pass them (the demo's `--no-ws`); open WebSockets stay open.
    pub fn set_block_websocket(&mut self, on: bool) {
        self.server.set_block_websocket(on);
    }

    /// The node's id.
    #[must_use]
    pub fn id(&self) -> usize {
        self.id
    }

    /// The endpoint itself.
    #[must_use]
    pub fn server(&self) -> &Server {
        &self.server
    }

    /// The hub.
    #[must_use]
    pub fn hub(&self) -> &Hub {
        self.server.hub()
    }

    /// Counters.
    #[must_use]
    pub fn stats(&self) -> ServerStats {
        self.server.stats()
    }

    /// Live connections (any route).
    #[must_use]
    pub fn connection_count(&self) -> usize {
        self.server.connection_count()
    }

    /// Each live connection and what it is (for reports).
    #[must_use]
    pub fn describe_connections(&self, net: &Net) -> Vec<String> {
        self.server
            .describe_connections()
            .into_iter()
            .map(|(h, what)| format!("{h:?}: {what}; {}", net.describe(LinkId(h.0))))
            .collect()
    }

    /// Broken rules the server found (a second `Closed`, a connection left in the hub…).
    #[must_use]
    pub fn violations(&self) -> &[String] {
        self.server.violations()
    }

    /// The messages appended since the last call, in order.
    pub fn drain_published(&mut self) -> Vec<Published> {
        std::mem::take(&mut self.published)
    }

    /// The trusted server-side publish (as `POST /api/publish` with the admin token).
    ///
    /// # Errors
    /// As [`Hub::publish_json`].
    pub fn publish(
        &mut self,
        now: Instant,
        net: &mut Net,
        ch: &str,
        json: &[u8],
    ) -> Result<Position, crate::hub::HubError> {
        let r = self.server.publish(now, ch, json);
        self.pump(now, net);
        r
    }

    /// The process dies with its host: every connection vanishes without a word (the
    /// network decides what the peers see). With `keep_log` the hub survives (its log was
    /// persisted; the dead connections leave it, their presence names in grace), otherwise
    /// a new hub starts with new epochs drawn from `seed`.
    pub fn crash(&mut self, now: Instant, keep_log: bool, seed: u64) {
        let hub = (!keep_log).then(|| Hub::new(self.cfg.hub.clone(), DemoAuth, seed));
        self.server.crash(now, hub);
        self.blocked.clear();
        self.take_events(now, None);
    }

    /// When [`handle_timeout`](Self::handle_timeout) must run next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.server.poll_timeout()
    }

    /// Fires the server's deadlines `<= now`.
    pub fn handle_timeout(&mut self, now: Instant, net: &mut Net) {
        self.server.handle_timeout(now);
        self.pump(now, net);
    }

    /// A segment for this server arrived.
    pub fn handle_net(&mut self, now: Instant, net: &mut Net, d: Delivery) {
        let conn = handle(d.link);
        match d.event {
            NetEvent::Accepted => self.server.handle_accept(now, conn),
            NetEvent::Data(b) => self.server.handle_read(now, conn, &b),
            NetEvent::Eof => self.server.handle_eof(now, conn),
            NetEvent::Reset => self.server.handle_lost(now, conn),
            NetEvent::Connected => {}
        }
        self.pump(now, net);
    }

    /// The link's window has room again: write on.
    pub fn handle_writable(&mut self, now: Instant, net: &mut Net, link: LinkId) {
        if self.blocked.remove(&link) {
            self.write(now, net, link);
        }
        self.pump(now, net);
    }

    /// Bytes queued toward clients: in the hub's outboxes, and in the transports.
    #[must_use]
    pub fn buffered_bytes(&self) -> (usize, usize) {
        self.server.buffered_bytes()
    }

    /// Checks every bound: hub outboxes (per lane), WebSocket and SSE buffers, and what
    /// is in flight on each link. Returns what is over.
    #[must_use]
    pub fn check_bounds(&self, net: &Net) -> Vec<String> {
        let slack = 64 << 10;
        let mut over: Vec<String> = self
            .server
            .check_bounds(slack)
            .into_iter()
            .map(|o| format!("server {} {o}", self.id))
            .collect();
        for (h, _) in self.server.describe_connections() {
            let flight = net.in_flight(LinkId(h.0), Side::Server);
            if flight > net.config().window + self.cfg.ws.max_outbound + slack {
                over.push(format!("server {} {h:?}: in flight {flight}", self.id));
            }
        }
        over
    }

    /// After every input: the application's events, then every ready connection writes
    /// while its window has room.
    fn pump(&mut self, now: Instant, net: &mut Net) {
        loop {
            self.take_events(now, Some(net));
            let Some(conn) = self.server.poll_ready() else { break };
            let link = LinkId(conn.0);
            if !self.blocked.contains(&link) {
                self.write(now, net, link);
            }
        }
        self.take_events(now, Some(net));
    }

    /// Pulls `link`'s transmits into the network while its window has room.
    fn write(&mut self, now: Instant, net: &mut Net, link: LinkId) {
        loop {
            if net.space(link, Side::Server) == 0 {
                self.blocked.insert(link);
                return;
            }
            match self.server.poll_transmit(now, handle(link)) {
                Some(Transmit::Bytes(b)) => net.write(link, Side::Server, b),
                Some(_) => {
                    net.close(link, Side::Server);
                    return;
                }
                None => return,
            }
        }
    }

    /// Keeps what the oracle needs; answers the application's routes with 404 (the
    /// simulated application serves none).
    fn take_events(&mut self, now: Instant, mut net: Option<&mut Net>) {
        while let Some(ev) = self.server.poll_event() {
            match ev {
                ServerEvent::Published { ch, pos, from, data } => {
                    self.published.push(Published { ch, pos, from, data });
                }
                ServerEvent::Request { conn, .. } => {
                    // The server writes the answer (pumped with its other connections).
                    let _ = self.server.answer(now, conn, 404, &[], b"not found\n");
                }
                ServerEvent::Upgrade { conn, .. } => {
                    if let Some(net) = net.as_deref_mut() {
                        let link = LinkId(conn.0);
                        let r = crate::http::response(404, &[], b"not found\n");
                        net.write(link, Side::Server, r.unwrap_or_default());
                        net.close(link, Side::Server);
                    }
                }
                _ => {}
            }
        }
    }
}
