//! [`SimServer`]: a real [`Hub`] served over simulated connections, with the same glue
//! as the adapters (`adapter-smol`'s `HubHandle`), sans-IO.
//!
//! Every connection starts by reading an HTTP/1.1 head with
//! [`RequestParser`](crate::http::RequestParser) and is routed like the live demo:
//! `GET /ws` (upgrade → [`WsConnection::server_for`], the envelope protocol into
//! [`Hub::handle_envelope`]), `GET /events?ch=` ([`SseStream`], resumed from
//! `Last-Event-ID` or `pos=`), `GET /poll?ch=&pos=&wait=1` ([`Poll`], held until a publish
//! or the long-poll deadline), `POST /api/publish?ch=&id=` ([`Hub::publish_as`]); anything
//! else is 404. Credentials go through
//! [`DemoAuth::authenticate`] (a bad token is 401) and every join and publish through
//! [`DemoAuth`]'s policy.
//!
//! After every input the server runs the hub's drain ("The run loop of an adapter" in
//! [`crate::hub`]): `Close` closes that WebSocket with its code or ends that SSE stream,
//! `Published` wakes the held polls of the channel, and each ready connection pulls its
//! frames while its transport has room: a WebSocket until `send` pushes back, an SSE
//! stream until 64 KiB wait, and both only while the link's window has room. A client
//! that stops reading therefore fills the window, then the transport, then the hub's
//! bounded outbox, and meets the channel's slow-consumer policy.

mod drain;
mod route;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::net::{Delivery, LinkId, Net, NetEvent, Side};
use crate::hub::{ConnId, DemoAuth, Hub, HubConfig, Principal};
use crate::machine::Machine;
use crate::poll::{Poll, PollConfig};
use crate::replay::Position;
use crate::rng::Rng;
use crate::sse::{SseStream, SseStreamConfig, SseStreamEvent};
use crate::time::{Duration, Instant, TimerQueue};
use crate::ws::{CloseCode, Message, WsConfig, WsConnection, WsEvent};

/// Bytes an SSE response may hold in its stream before the server stops pulling from the
/// hub (as the adapters do).
pub const SSE_ROOM: usize = 64 << 10;

/// Settings of a [`SimServer`].
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// The hub's settings.
    pub hub: HubConfig,
    /// Every WebSocket's settings (its `rng_seed` is drawn per connection).
    pub ws: WsConfig,
    /// Every SSE response's settings.
    pub sse: SseStreamConfig,
    /// Polling.
    pub poll: PollConfig,
    /// The largest request head.
    pub max_head: usize,
    /// The largest body of `POST /api/publish` (over it: 413).
    pub max_publish_body: usize,
    /// Time for a request's head (and a publish's body) to arrive (default 10 s; then
    /// 408 and close).
    pub head_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            hub: HubConfig::default(),
            ws: WsConfig::default(),
            sse: SseStreamConfig::default(),
            poll: PollConfig::default(),
            max_head: 16 << 10,
            max_publish_body: 64 << 10,
            head_timeout: Duration::from_secs(10),
        }
    }
}

/// A message the hub appended to a log, as the server saw it: the truth an oracle checks
/// deliveries against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Published {
    /// The channel.
    pub ch: Arc<str>,
    /// Its position.
    pub pos: Position,
    /// Its data (JSON text).
    pub data: Bytes,
}

/// Counters of a [`SimServer`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServerStats {
    /// Connections accepted.
    pub accepted: u64,
    /// WebSockets opened (101).
    pub ws_opened: u64,
    /// SSE streams started (200).
    pub sse_started: u64,
    /// Polls answered.
    pub polls: u64,
    /// HTTP publishes answered.
    pub publishes: u64,
    /// Requests refused with a 4xx/5xx status.
    pub refused: u64,
    /// Connections closed by the hub (4100 too slow, 1008 rate limit).
    pub closed_by_hub: u64,
}

enum Proto {
    Head(BytesMut, crate::http::RequestParser),
    Ws {
        ws: Box<WsConnection>,
        hub: Option<ConnId>,
        principal: Option<Principal>,
        stash: Option<Message>,
    },
    Sse {
        sse: Box<SseStream>,
        hub: Option<ConnId>,
    },
    Poll {
        poll: Box<Poll>,
        hub: ConnId,
    },
    Body {
        principal: Principal,
        ch: String,
        id: Option<String>,
        body: Vec<u8>,
        need: usize,
    },
    /// A response is queued; the connection ends after it.
    Done,
}

struct Conn {
    proto: Proto,
    /// Bytes pulled from the machine and not yet written (the socket's send buffer).
    out: VecDeque<Bytes>,
    /// Close after `out` is written.
    shutdown: bool,
    /// `Closed` / `Ended` events seen.
    ends: u32,
    /// When the head (or a publish's body) must have arrived.
    head_deadline: Instant,
}

/// The hub behind the simulated routes. See the [module docs](self).
///
/// - Inputs: [`handle_net`](Self::handle_net), [`handle_writable`](Self::handle_writable),
///   [`handle_timeout`](Self::handle_timeout); commands [`publish`](Self::publish),
///   [`crash`](Self::crash).
/// - Outputs: writes to the [`Net`]; [`poll_timeout`](Self::poll_timeout),
///   [`drain_published`](Self::drain_published), [`violations`](Self::violations).
/// - Getters: [`hub`](Self::hub), [`stats`](Self::stats), [`check_bounds`](Self::check_bounds).
pub struct SimServer {
    id: usize,
    cfg: ServerConfig,
    hub: Hub,
    rng: Rng,
    // Ordered maps where iteration order reaches the hub or the network: runs replay.
    conns: BTreeMap<LinkId, Conn>,
    by_hub: BTreeMap<ConnId, LinkId>,
    held: HashMap<String, Vec<LinkId>>,
    poll_clients: HashMap<(Principal, String), ConnId>,
    poll_keys: BTreeMap<ConnId, (Principal, String)>,
    timers: TimerQueue<LinkId>,
    touched: Vec<LinkId>,
    published: Vec<Published>,
    violations: Vec<String>,
    stats: ServerStats,
    block_ws: bool,
}

impl std::fmt::Debug for SimServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimServer")
            .field("id", &self.id)
            .field("hub", &self.hub)
            .field("conns", &self.conns.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl SimServer {
    /// Server node `id` with a new hub whose epochs are drawn from `seed`.
    #[must_use]
    pub fn new(id: usize, cfg: ServerConfig, seed: u64) -> Self {
        let hub = Hub::new(cfg.hub.clone(), DemoAuth, seed);
        Self {
            id,
            cfg,
            hub,
            rng: Rng::from_u64(seed ^ 0x5e12_7e12),
            conns: BTreeMap::new(),
            by_hub: BTreeMap::new(),
            held: HashMap::new(),
            poll_clients: HashMap::new(),
            poll_keys: BTreeMap::new(),
            timers: TimerQueue::new(),
            touched: Vec::new(),
            published: Vec::new(),
            violations: Vec::new(),
            stats: ServerStats::default(),
            block_ws: false,
        }
    }

    /// While `on`, WebSocket upgrades are answered with 502, as by a proxy that does not
    /// pass them (the demo's `--no-ws`); open WebSockets stay open.
    pub fn set_block_websocket(&mut self, on: bool) {
        self.block_ws = on;
    }

    /// The node's id.
    #[must_use]
    pub fn id(&self) -> usize {
        self.id
    }

    /// The hub.
    #[must_use]
    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    /// Counters.
    #[must_use]
    pub fn stats(&self) -> ServerStats {
        self.stats
    }

    /// Live connections (any route).
    #[must_use]
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// Each live connection and what it is (for reports): route, state, bytes queued.
    #[must_use]
    pub fn describe_connections(&self, net: &Net) -> Vec<String> {
        let mut v: Vec<String> = self
            .conns
            .iter()
            .map(|(link, c)| {
                let what = match &c.proto {
                    Proto::Head(..) => "reading head".to_owned(),
                    Proto::Ws { ws, hub, .. } => format!("ws {:?} hub {hub:?}", ws.state()),
                    Proto::Sse { sse, hub } => format!("sse ended {} hub {hub:?}", sse.is_ended()),
                    Proto::Poll { hub, .. } => format!("held poll {hub:?}"),
                    Proto::Body { .. } => "reading body".to_owned(),
                    Proto::Done => "answered".to_owned(),
                };
                let (n, shut) = (c.out.len(), c.shutdown);
                format!(
                    "{link:?}: {what}, {n} chunks unsent, shutdown {shut}; {}",
                    net.describe(*link)
                )
            })
            .collect();
        v.sort();
        v
    }

    /// Broken rules found so far (a second `Closed`, a connection left in the hub…).
    #[must_use]
    pub fn violations(&self) -> &[String] {
        &self.violations
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
        let r = self.hub.publish_json(now, ch, json);
        self.settle(now, net);
        r
    }

    /// The process dies with its host: every connection vanishes without a word (the
    /// network decides what the peers see). With `keep_log` the hub survives (its log was
    /// persisted; the dead connections leave it, their presence names in grace), otherwise
    /// a new hub starts with new epochs drawn from `seed`.
    pub fn crash(&mut self, now: Instant, keep_log: bool, seed: u64) {
        if keep_log {
            let ids: Vec<ConnId> = self.by_hub.keys().copied().collect();
            for id in ids.into_iter().chain(self.poll_keys.keys().copied().collect::<Vec<_>>()) {
                self.hub.disconnect(now, id);
            }
            while self.hub.poll_event().is_some() {}
            while self.hub.poll_ready().is_some() {}
        } else {
            self.hub = Hub::new(self.cfg.hub.clone(), DemoAuth, seed);
        }
        self.conns.clear();
        self.by_hub.clear();
        self.held.clear();
        self.poll_clients.clear();
        self.poll_keys.clear();
        self.timers.clear();
        self.touched.clear();
    }

    /// When [`handle_timeout`](Self::handle_timeout) must run next.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        match (self.hub.poll_timeout(), self.timers.next_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Fires the hub's and the connections' deadlines `<= now`.
    pub fn handle_timeout(&mut self, now: Instant, net: &mut Net) {
        self.hub.handle_timeout(now);
        self.settle(now, net);
        while let Some((link, _)) = self.timers.pop_expired(now) {
            self.machine_timeout(now, net, link);
        }
        self.settle(now, net);
    }

    /// A segment for this server arrived.
    pub fn handle_net(&mut self, now: Instant, net: &mut Net, d: Delivery) {
        let link = d.link;
        match d.event {
            NetEvent::Accepted => {
                self.stats.accepted += 1;
                let parser = crate::http::RequestParser::new(self.cfg.max_head);
                let conn = Conn {
                    proto: Proto::Head(BytesMut::new(), parser),
                    out: VecDeque::new(),
                    shutdown: false,
                    ends: 0,
                    head_deadline: now + self.cfg.head_timeout,
                };
                self.conns.insert(link, conn);
                self.touched.push(link);
            }
            NetEvent::Data(b) => self.on_data(now, net, link, &b),
            NetEvent::Eof => self.on_eof(now, net, link, false),
            NetEvent::Reset => self.on_eof(now, net, link, true),
            NetEvent::Connected => {}
        }
        self.settle(now, net);
    }

    /// The link's window has room again: write on.
    pub fn handle_writable(&mut self, now: Instant, net: &mut Net, link: LinkId) {
        self.touched.push(link);
        self.settle(now, net);
    }

    /// Bytes queued toward clients: in the hub's outboxes, and in the transports (WebSocket
    /// and SSE buffers plus the send buffers).
    #[must_use]
    pub fn buffered_bytes(&self) -> (usize, usize) {
        let hub = self.by_hub.keys().filter_map(|&id| self.hub.buffered(id)).map(|b| b.1).sum();
        let transport = self
            .conns
            .values()
            .map(|c| {
                let machine = match &c.proto {
                    Proto::Ws { ws, .. } => ws.buffered_amount(),
                    Proto::Sse { sse, .. } => sse.buffered(),
                    _ => 0,
                };
                machine + c.out.iter().map(Bytes::len).sum::<usize>()
            })
            .sum();
        (hub, transport)
    }

    /// Checks every bound: hub outboxes (per lane), WebSocket and SSE buffers, and the
    /// send buffers. Returns what is over.
    #[must_use]
    pub fn check_bounds(&self, net: &Net) -> Vec<String> {
        let mut over = Vec::new();
        let ob = self.cfg.hub.outbox;
        for (&hub_id, &link) in &self.by_hub {
            if let Some((frames, bytes)) = self.hub.buffered(hub_id)
                && (frames > 3 * ob.max_items || bytes > 3 * ob.max_bytes)
            {
                over.push(format!("server {} {hub_id:?}: hub outbox {frames}/{bytes}", self.id));
            }
            let Some(c) = self.conns.get(&link) else { continue };
            let slack = 64 << 10;
            let (name, buffered, bound) = match &c.proto {
                Proto::Ws { ws, .. } => {
                    ("ws", ws.buffered_amount(), self.cfg.ws.max_outbound + slack)
                }
                Proto::Sse { sse, .. } => ("sse", sse.buffered(), SSE_ROOM + slack),
                _ => continue,
            };
            if buffered > bound {
                over.push(format!(
                    "server {} {link:?}: {name} buffer {buffered} > {bound}",
                    self.id
                ));
            }
            let out: usize = c.out.iter().map(Bytes::len).sum();
            let flight = net.in_flight(link, Side::Server);
            if out > bound || flight > net.config().window + bound {
                over.push(format!(
                    "server {} {link:?}: send buffer {out}, in flight {flight}",
                    self.id
                ));
            }
        }
        over
    }

    // -----------------------------------------------------------------------------------
    // Inputs of one connection

    fn on_data(&mut self, now: Instant, net: &mut Net, link: LinkId, data: &[u8]) {
        let Some(c) = self.conns.get_mut(&link) else { return };
        self.touched.push(link);
        match &mut c.proto {
            Proto::Head(buf, parser) => {
                buf.extend_from_slice(data);
                match parser.parse(buf) {
                    Ok(None) => {}
                    Ok(Some((req, len))) => {
                        let rest = buf.split_off(len);
                        self.route(now, net, link, req, &rest);
                    }
                    Err(e) => self.respond(link, e.status(), e.to_string().as_bytes()),
                }
            }
            Proto::Ws { ws, .. } => {
                ws.handle_read(now, data);
                self.ws_events(now, link);
            }
            Proto::Sse { sse, .. } => sse.handle_read(now, data),
            Proto::Body { .. } => self.body(now, link, data),
            Proto::Poll { .. } | Proto::Done => {}
        }
    }

    fn on_eof(&mut self, now: Instant, net: &mut Net, link: LinkId, reset: bool) {
        let Some(c) = self.conns.get_mut(&link) else { return };
        match &mut c.proto {
            Proto::Ws { ws, .. } => {
                ws.handle_eof(now);
                self.ws_events(now, link);
            }
            Proto::Sse { sse, .. } => {
                sse.handle_eof(now);
                self.sse_events(now, link);
            }
            Proto::Poll { .. } | Proto::Head(..) | Proto::Body { .. } => {
                // A held poll whose client went away, or a request cut short.
                self.drop_conn(now, link);
                net.close(link, Side::Server);
                return;
            }
            Proto::Done => {}
        }
        if reset {
            self.drop_conn(now, link);
        } else {
            self.touched.push(link);
        }
    }

    fn machine_timeout(&mut self, now: Instant, net: &mut Net, link: LinkId) {
        let Some(c) = self.conns.get_mut(&link) else { return };
        self.touched.push(link);
        match &mut c.proto {
            Proto::Ws { ws, .. } => {
                ws.handle_timeout(now);
                self.ws_events(now, link);
            }
            Proto::Sse { sse, .. } => {
                sse.handle_timeout(now);
                self.sse_events(now, link);
            }
            Proto::Poll { poll, hub } => {
                let hub = *hub;
                let ch = poll.request().channel.clone();
                let answer = self.hub.log(&ch).and_then(|log| poll.handle_timeout(now, log));
                self.answer_poll(now, net, link, hub, answer);
            }
            Proto::Head(..) | Proto::Body { .. } if now >= c.head_deadline => {
                self.respond(link, 408, b"request timeout\n");
            }
            _ => {}
        }
    }

    fn ws_events(&mut self, now: Instant, link: LinkId) {
        let Some(c) = self.conns.get_mut(&link) else { return };
        let Proto::Ws { ws, hub, principal, .. } = &mut c.proto else { return };
        while let Some(ev) = ws.poll_event() {
            match ev {
                WsEvent::UpgradeRequested(_) => match principal.clone() {
                    None => {
                        let h = [("WWW-Authenticate", "Bearer")];
                        let _ = ws.reject(now, 401, &h, b"bad token\n");
                        self.stats.refused += 1;
                    }
                    Some(p) => {
                        if ws.accept(now, None, &[]).is_ok() {
                            self.stats.ws_opened += 1;
                            let id = self.hub.connect(now, crate::hub::Transport::WebSocket, p);
                            *hub = Some(id);
                            self.by_hub.insert(id, link);
                        }
                    }
                },
                WsEvent::Message(m) => match (m.as_text(), *hub) {
                    (Some(text), Some(id)) => self.hub.handle_envelope(now, id, text.as_bytes()),
                    _ => {
                        let _ = ws.close(now, CloseCode::UNSUPPORTED_DATA, "text envelopes only");
                    }
                },
                WsEvent::Closed(_) => {
                    c.ends += 1;
                    if c.ends > 1 {
                        self.violations.push(format!("server {} {link:?}: second Closed", self.id));
                    }
                    if let Some(id) = hub.take() {
                        self.hub.disconnect(now, id);
                        self.by_hub.remove(&id);
                        if self.hub.is_connected(id) {
                            let v = format!("server {} {id:?}: still in the hub", self.id);
                            self.violations.push(v);
                        }
                    }
                }
                _ => {}
            }
        }
    }

    fn sse_events(&mut self, now: Instant, link: LinkId) {
        let Some(c) = self.conns.get_mut(&link) else { return };
        let Proto::Sse { sse, hub } = &mut c.proto else { return };
        while let Some(SseStreamEvent::Ended(_)) = sse.poll_event() {
            c.ends += 1;
            if c.ends > 1 {
                self.violations.push(format!("server {} {link:?}: second Ended", self.id));
            }
            if let Some(id) = hub.take() {
                self.hub.disconnect(now, id);
                self.by_hub.remove(&id);
            }
        }
    }

    /// Forgets a connection whose transport is gone; checks that it ended exactly once.
    fn drop_conn(&mut self, now: Instant, link: LinkId) {
        self.timers.cancel(link);
        let Some(c) = self.conns.remove(&link) else { return };
        let (hub, ended_once) = match c.proto {
            Proto::Ws { hub, .. } | Proto::Sse { hub, .. } => (hub, c.ends == 1),
            _ => (None, true),
        };
        if !ended_once {
            self.violations.push(format!("server {} {link:?}: {} end events", self.id, c.ends));
        }
        if let Some(id) = hub {
            self.hub.disconnect(now, id);
            self.by_hub.remove(&id);
        }
    }
}
