//! [`Sim`]: the driver. It owns the network, the servers and the clients, and runs them
//! in virtual time: each step jumps to the earliest of every pending delivery and every
//! node's `poll_timeout`, and makes that one mutation.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashSet};

use bytes::Bytes;

use super::client::SimClient;
use super::net::{Delivery, LinkId, Net, NetConfig, Side};
use super::request::SimRequest;
use super::server::{ServerConfig, SimServer};
use crate::client::{ClientSession, SessionConfig};
use crate::hub::HubError;
use crate::replay::Position;
use crate::rng::Rng;
use crate::time::{Duration, Instant};

/// A node of the simulation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Node {
    /// A server, by index.
    Server(usize),
    /// A client, by index.
    Client(usize),
}

/// A node's own clock (the global one plus a skew) and the deadline the driver holds for it.
#[derive(Debug)]
struct NodeClock {
    skew: Duration,
    /// The deadline in global time that the heap holds for the node (`None`: none armed).
    armed: Option<Instant>,
}

/// Steps at one instant before the driver declares a busy loop (a machine whose deadline
/// does not move after `handle_timeout`).
const MAX_STEPS_PER_INSTANT: u64 = 5_000_000;

/// The simulation. See the [module docs](super) for the faults and the run loop.
///
/// - Setup: [`new`](Self::new), [`add_server`](Self::add_server),
///   [`add_client`](Self::add_client).
/// - Running: [`run_until`](Self::run_until), [`run_for`](Self::run_for),
///   [`step`](Self::step).
/// - The application: [`publish`](Self::publish), [`with_client`](Self::with_client),
///   [`send_request`](Self::send_request) (a raw HTTP request).
/// - Faults: [`crash_server`](Self::crash_server), [`restart_server`](Self::restart_server),
///   [`partition`](Self::partition), [`blackhole_client`](Self::blackhole_client),
///   [`reset_client`](Self::reset_client), [`pause_client`](Self::pause_client),
///   [`step_clock`](Self::step_clock), [`restart_client`](Self::restart_client),
///   [`block_websocket`](Self::block_websocket).
/// - Getters: [`now`](Self::now), [`elapsed`](Self::elapsed), [`server`](Self::server),
///   [`client`](Self::client), [`request`](Self::request), [`net`](Self::net),
///   [`rng`](Self::rng), …
#[derive(Debug)]
pub struct Sim {
    t0: Instant,
    now: Instant,
    rng: Rng,
    net: Net,
    servers: Vec<SimServer>,
    server_clocks: Vec<NodeClock>,
    up: Vec<bool>,
    clients: Vec<SimClient>,
    client_clocks: Vec<NodeClock>,
    requests: Vec<SimRequest>,
    /// The request on each link a request opened.
    request_links: BTreeMap<LinkId, usize>,
    heap: BinaryHeap<Reverse<(Instant, Node)>>,
    touched: Vec<Node>,
    steps: u64,
    at_instant: (Instant, u64),
}

impl Sim {
    /// An empty simulation; every random draw (latencies, jitter, seeds of the machines,
    /// the scenario's own draws through [`rng`](Self::rng)) comes from `seed`.
    #[must_use]
    pub fn new(seed: u64, net: NetConfig) -> Self {
        // The one clock read of the simulation: virtual time starts here and only moves by
        // jumps to the next deadline.
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        let mut rng = Rng::from_u64(seed);
        let net = Net::new(net, rng.fork(), t0);
        Self {
            t0,
            now: t0,
            rng,
            net,
            servers: Vec::new(),
            server_clocks: Vec::new(),
            up: Vec::new(),
            clients: Vec::new(),
            client_clocks: Vec::new(),
            requests: Vec::new(),
            request_links: BTreeMap::new(),
            heap: BinaryHeap::new(),
            touched: Vec::new(),
            steps: 0,
            at_instant: (t0, 0),
        }
    }

    /// Virtual time now (global: nodes whose clock was stepped see more).
    #[must_use]
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Virtual time since the start.
    #[must_use]
    pub fn elapsed(&self) -> Duration {
        self.now - self.t0
    }

    /// The start of virtual time.
    #[must_use]
    pub fn t0(&self) -> Instant {
        self.t0
    }

    /// Steps made (deliveries and timeouts).
    #[must_use]
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// The simulation's generator, for the scenario's own draws.
    pub fn rng(&mut self) -> &mut Rng {
        &mut self.rng
    }

    /// The network.
    #[must_use]
    pub fn net(&self) -> &Net {
        &self.net
    }

    /// Server `i`.
    #[must_use]
    pub fn server(&self, i: usize) -> &SimServer {
        &self.servers[i]
    }

    /// Whether server `i` is up.
    #[must_use]
    pub fn is_up(&self, i: usize) -> bool {
        self.up[i]
    }

    /// Client `i`.
    #[must_use]
    pub fn client(&self, i: usize) -> &SimClient {
        &self.clients[i]
    }

    /// Raw request `i` (see [`send_request`](Self::send_request)).
    #[must_use]
    pub fn request(&self, i: usize) -> &SimRequest {
        &self.requests[i]
    }

    /// Client `i`, to drain its events (commands go through
    /// [`with_client`](Self::with_client)).
    pub fn client_mut(&mut self, i: usize) -> &mut SimClient {
        &mut self.clients[i]
    }

    /// Server `i`, to drain what it published.
    pub fn server_mut(&mut self, i: usize) -> &mut SimServer {
        &mut self.servers[i]
    }

    /// Servers.
    #[must_use]
    pub fn server_count(&self) -> usize {
        self.servers.len()
    }

    /// Clients.
    #[must_use]
    pub fn client_count(&self) -> usize {
        self.clients.len()
    }

    /// What `node`'s clock reads now.
    #[must_use]
    pub fn node_now(&self, node: Node) -> Instant {
        self.now + self.clock(node).skew
    }

    fn clock(&self, node: Node) -> &NodeClock {
        match node {
            Node::Server(i) => &self.server_clocks[i],
            Node::Client(i) => &self.client_clocks[i],
        }
    }

    fn clock_mut(&mut self, node: Node) -> &mut NodeClock {
        match node {
            Node::Server(i) => &mut self.server_clocks[i],
            Node::Client(i) => &mut self.client_clocks[i],
        }
    }

    // -----------------------------------------------------------------------------------
    // Setup

    /// Adds a server with a new hub; returns its index.
    pub fn add_server(&mut self, cfg: ServerConfig) -> usize {
        let i = self.servers.len();
        let seed = self.rng.next_u64();
        self.servers.push(SimServer::new(i, cfg, seed));
        self.server_clocks.push(NodeClock { skew: Duration::ZERO, armed: None });
        self.up.push(true);
        self.net.add_host(i);
        i
    }

    /// Adds a client of server `server` whose session has `cfg` (its `rng_seed` is drawn
    /// from the simulation's seed); `setup` runs on the new session (subscriptions).
    pub fn add_client(
        &mut self,
        server: usize,
        mut cfg: SessionConfig,
        setup: impl FnOnce(&mut ClientSession, Instant),
    ) -> usize {
        let i = self.clients.len();
        self.rng.fill(&mut cfg.rng_seed);
        let mut session = ClientSession::new(cfg, self.now);
        setup(&mut session, self.now);
        self.clients.push(SimClient::new(i, server, session));
        self.client_clocks.push(NodeClock { skew: Duration::ZERO, armed: None });
        let now = self.now;
        self.clients[i].drive(now, &mut self.net);
        self.touched.push(Node::Client(i));
        self.reschedule();
        i
    }

    // -----------------------------------------------------------------------------------
    // The application

    /// A trusted server-side publish on server `server`.
    ///
    /// # Errors
    /// As [`Hub::publish_json`](crate::hub::Hub::publish_json).
    pub fn publish(&mut self, server: usize, ch: &str, json: &[u8]) -> Result<Position, HubError> {
        let now = self.node_now(Node::Server(server));
        let r = self.servers[server].publish(now, &mut self.net, ch, json);
        self.touched.push(Node::Server(server));
        self.reschedule();
        r
    }

    /// Client `client`'s host sends `request` (a whole HTTP/1.1 request: head and body) to
    /// the client's server on a new connection, beside the session's own; returns its index
    /// for [`request`](Self::request), which shows the answer as it arrives.
    pub fn send_request(&mut self, client: usize, request: impl Into<Bytes>) -> usize {
        let i = self.requests.len();
        let server = self.clients[client].server();
        let r = SimRequest::open(&mut self.net, client, server, request.into());
        self.request_links.insert(r.link(), i);
        self.requests.push(r);
        self.reschedule();
        i
    }

    /// Runs `f` on client `i`'s session with the client's time, then drains it.
    pub fn with_client<R>(
        &mut self,
        i: usize,
        f: impl FnOnce(&mut ClientSession, Instant) -> R,
    ) -> R {
        let now = self.node_now(Node::Client(i));
        let r = f(self.clients[i].session_mut(), now);
        self.clients[i].drive(now, &mut self.net);
        self.touched.push(Node::Client(i));
        self.reschedule();
        r
    }

    // -----------------------------------------------------------------------------------
    // Faults

    /// Server `i` crashes. `refuse`: the host stays up, so its connections are reset and
    /// new ones refused (a process crash); otherwise the host vanishes and its connections
    /// go silent without `FIN` (a host crash or a network cut). Restart it with
    /// [`restart_server`](Self::restart_server); `keep_log` decides then whether the hub
    /// (and its epochs) survives.
    pub fn crash_server(&mut self, i: usize, refuse: bool) {
        self.net.host_down(i, refuse);
        self.up[i] = false;
        self.server_clocks[i].armed = None;
    }

    /// Server `i` is back: with `keep_log`, the same hub (its log was persisted; its
    /// connections are gone); otherwise a new hub with new epochs.
    pub fn restart_server(&mut self, i: usize, keep_log: bool) {
        let now = self.node_now(Node::Server(i));
        let seed = self.rng.next_u64();
        self.servers[i].crash(now, keep_log, seed);
        self.net.host_up(i);
        self.up[i] = true;
        self.touched.push(Node::Server(i));
        self.reschedule();
    }

    /// While `on`, server `i`'s WebSocket upgrades get 502 (a proxy that does not pass
    /// them); see [`SimServer::set_block_websocket`].
    pub fn block_websocket(&mut self, i: usize, on: bool) {
        self.servers[i].set_block_websocket(on);
    }

    /// The clients in `clients` and server `server` cannot reach each other for `heal`.
    pub fn partition(&mut self, clients: HashSet<usize>, server: usize, heal: Duration) {
        let now = self.now;
        self.net.partition(clients, server, now + heal);
    }

    /// Every link of client `i` goes silent for good, without `FIN`.
    pub fn blackhole_client(&mut self, i: usize) {
        let links: Vec<LinkId> = self.clients[i].links().collect();
        for l in links {
            self.net.blackhole(l);
        }
    }

    /// Every link of client `i` is reset by a middlebox.
    pub fn reset_client(&mut self, i: usize) {
        let links: Vec<LinkId> = self.clients[i].links().collect();
        for l in links {
            self.net.reset(l);
        }
    }

    /// Client `i` stops reading for `d` (a slow consumer).
    pub fn pause_client(&mut self, i: usize, d: Duration) {
        let until = self.now + d;
        self.net.pause(i, until);
    }

    /// `node`'s clock jumps forward by `d` (time never goes backwards).
    pub fn step_clock(&mut self, node: Node, d: Duration) {
        self.clock_mut(node).skew += d;
        self.clock_mut(node).armed = None;
        self.touched.push(node);
        self.reschedule();
    }

    /// Client `i`'s application restarts with a new `session` (its old links are reset).
    pub fn restart_client(&mut self, i: usize, session: impl FnOnce(Instant) -> ClientSession) {
        let now = self.node_now(Node::Client(i));
        let s = session(now);
        self.clients[i].replace_session(now, &mut self.net, s);
        self.touched.push(Node::Client(i));
        self.reschedule();
    }

    /// Every queue bound of every server that is up (see [`SimServer::check_bounds`]).
    #[must_use]
    pub fn check_bounds(&self) -> Vec<String> {
        let mut over = Vec::new();
        for (i, s) in self.servers.iter().enumerate() {
            if self.up[i] {
                over.extend(s.check_bounds(&self.net));
            }
        }
        over
    }

    // -----------------------------------------------------------------------------------
    // Running

    /// Runs every step due up to `t`, then sets the time to `t`.
    pub fn run_until(&mut self, t: Instant) {
        while self.step(t) {}
        self.now = self.now.max(t);
        self.net.set_time(self.now);
    }

    /// Runs for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        let t = self.now + d;
        self.run_until(t);
    }

    /// The earliest pending delivery or deadline.
    fn next_at(&mut self) -> Option<Instant> {
        while let Some(Reverse((at, node))) = self.heap.peek().copied() {
            if self.clock(node).armed == Some(at) {
                break;
            }
            self.heap.pop();
        }
        let timer = self.heap.peek().map(|Reverse((at, _))| *at);
        match (timer, self.net.next_due()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Makes the next step if it is due by `limit`: every delivery due at that instant,
    /// or one node's timeout. Returns whether it made one.
    pub fn step(&mut self, limit: Instant) -> bool {
        let Some(at) = self.next_at() else { return false };
        if at > limit {
            return false;
        }
        self.now = self.now.max(at);
        self.net.set_time(self.now);
        self.steps += 1;
        if self.at_instant.0 == self.now {
            self.at_instant.1 += 1;
            assert!(
                self.at_instant.1 < MAX_STEPS_PER_INSTANT,
                "busy loop at {:?} (a deadline that does not move)",
                self.elapsed()
            );
        } else {
            self.at_instant = (self.now, 0);
        }
        if self.net.next_due().is_some_and(|d| d <= self.now) {
            while let Some(d) = self.net.pop_due() {
                self.dispatch(d);
            }
        } else if let Some(Reverse((_, node))) = self.heap.pop() {
            self.clock_mut(node).armed = None;
            let now = self.node_now(node);
            match node {
                Node::Server(i) if self.up[i] => self.servers[i].handle_timeout(now, &mut self.net),
                Node::Server(_) => {}
                Node::Client(i) => self.clients[i].handle_timeout(now, &mut self.net),
            }
            self.touched.push(node);
        }
        self.reschedule();
        true
    }

    fn dispatch(&mut self, d: Delivery) {
        match d.to {
            Side::Server => {
                let i = d.server;
                if self.up[i] {
                    let now = self.node_now(Node::Server(i));
                    self.servers[i].handle_net(now, &mut self.net, d);
                    self.touched.push(Node::Server(i));
                }
            }
            Side::Client => {
                if let Some(&r) = self.request_links.get(&d.link) {
                    self.requests[r].handle_net(&mut self.net, d);
                    return;
                }
                let i = d.client;
                let now = self.node_now(Node::Client(i));
                self.clients[i].handle_net(now, &mut self.net, d);
                self.touched.push(Node::Client(i));
            }
        }
    }

    /// Lets writers whose window opened write on, then re-arms every touched node.
    fn reschedule(&mut self) {
        while let Some((link, side, client, server)) = self.net.pop_writable() {
            match side {
                Side::Server if self.up[server] => {
                    let now = self.node_now(Node::Server(server));
                    self.servers[server].handle_writable(now, &mut self.net, link);
                    self.touched.push(Node::Server(server));
                }
                Side::Server => {}
                Side::Client => self.touched.push(Node::Client(client)),
            }
        }
        let mut touched = std::mem::take(&mut self.touched);
        touched.sort_unstable();
        touched.dedup();
        for node in touched.drain(..) {
            let deadline = match node {
                Node::Server(i) if self.up[i] => self.servers[i].poll_timeout(),
                Node::Server(_) => None,
                Node::Client(i) => self.clients[i].poll_timeout(),
            };
            let now = self.now;
            let clock = self.clock_mut(node);
            let global = deadline.map(|d| d.checked_sub(clock.skew).unwrap_or(now).max(now));
            if global != clock.armed {
                clock.armed = global;
                if let Some(at) = global {
                    self.heap.push(Reverse((at, node)));
                }
            }
        }
        self.touched = touched;
    }
}
