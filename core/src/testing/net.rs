//! [`Net`]: simulated TCP connections between clients and servers, in virtual time.
//!
//! Each link ([`LinkId`]) is one TCP connection: two directions, each a FIFO of segments
//! (`SYN`, data, `FIN`, `RST`) with a delivery time. A link draws its one-way latency
//! when it opens and each segment adds a jitter draw, but a segment is never delivered
//! before the one sent ahead of it on the same direction: bytes of one connection stay in
//! order, while different connections interleave freely. Each direction has a window
//! (the socket buffers): bytes written and not yet read by the receiver count against
//! it, and [`space`](Net::space) says how much more the sender may write.
//!
//! The faults are applied when a segment is due, so they act on what is in flight too:
//! a partition postpones delivery until it heals (TCP retransmits), a paused receiver
//! (slow consumer) leaves segments unread (the window fills), a crashed host is
//! retransmitted to until it is back (then its new incarnation answers `RST`), and a
//! black-holed link delivers nothing ever again, in either direction, without `FIN`.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet, VecDeque};

use bytes::Bytes;

use crate::rng::Rng;
use crate::time::{Duration, Instant};

mod deliver;

/// One simulated TCP connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LinkId(pub u64);

/// An end of a link.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(usize)]
pub enum Side {
    /// The end that connected.
    Client,
    /// The end that accepted.
    Server,
}

impl Side {
    fn other(self) -> Self {
        match self {
            Self::Client => Self::Server,
            Self::Server => Self::Client,
        }
    }
}

/// Settings of the network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetConfig {
    /// The shortest one-way latency a link draws when it opens.
    pub min_latency: Duration,
    /// The longest one-way latency a link draws when it opens.
    pub max_latency: Duration,
    /// Extra delay drawn per segment, up to this much (order within a link is kept).
    pub jitter: Duration,
    /// Bytes a direction holds (sent, not yet read) before the sender must wait.
    pub window: usize,
    /// How often a segment toward a host that is down is sent again.
    pub rto: Duration,
    /// How long written bytes may stay unacknowledged (black hole, partition, dead host)
    /// before the sender's TCP gives up and reports an error (`TCP_USER_TIMEOUT`; Linux
    /// gives up after about 15 minutes of retransmissions by default).
    pub user_timeout: Duration,
}

impl Default for NetConfig {
    fn default() -> Self {
        Self {
            min_latency: Duration::from_millis(5),
            max_latency: Duration::from_millis(80),
            jitter: Duration::from_millis(20),
            window: 256 << 10,
            rto: Duration::from_secs(1),
            user_timeout: Duration::from_secs(120),
        }
    }
}

/// What a node learns from the network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NetEvent {
    /// Server: a new connection arrived (its `SYN`).
    Accepted,
    /// Client: the connection is up (the `SYN-ACK`).
    Connected,
    /// Bytes arrived.
    Data(Bytes),
    /// The peer closed its writing half (`FIN`), after all its bytes.
    Eof,
    /// The connection was reset (or refused, before `Connected`).
    Reset,
}

/// A segment due for a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// The link.
    pub link: LinkId,
    /// The end it is delivered to.
    pub to: Side,
    /// The client node of the link.
    pub client: usize,
    /// The server node of the link.
    pub server: usize,
    /// What arrived.
    pub event: NetEvent,
}

#[derive(Clone, Debug)]
enum Segment {
    Syn,
    Data(Bytes),
    Fin,
    Rst,
}

#[derive(Debug, Default)]
struct Dir {
    queue: VecDeque<(Instant, Segment)>,
    /// Bytes written and not yet read (the window's use).
    bytes: usize,
    /// The delivery time of the heap entry that stands for this direction.
    scheduled: Option<Instant>,
    /// The sender ran out of window; tell it when there is room again.
    blocked: bool,
    /// The sender closed (`FIN` or `RST` sent): it writes nothing more.
    closed: bool,
    /// Since when the oldest unacknowledged byte waits (nothing gets through).
    unacked_since: Option<Instant>,
}

/// The state of one simulated TCP connection (its two directions, its faults).
#[derive(Debug)]
struct Connection {
    client: usize,
    server: usize,
    incarnation: u64,
    latency: Duration,
    to_server: Dir,
    to_client: Dir,
    /// The server accepted (its `SYN` arrived).
    accepted: bool,
    blackholed: Option<Instant>,
    created: Instant,
    /// Ends whose TCP gave up (user timeout): what reaches them is answered with `RST`.
    gone: [bool; 2],
    /// That `RST` was sent.
    rst_sent: bool,
}

impl Connection {
    fn dir(&mut self, to: Side) -> &mut Dir {
        match to {
            Side::Server => &mut self.to_server,
            Side::Client => &mut self.to_client,
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Host {
    up: bool,
    incarnation: u64,
    /// While down: answer `SYN`s with `RST` (the process died, the host is up).
    refuse: bool,
    /// When it last went down.
    down_since: Option<Instant>,
}

#[derive(Clone, Debug)]
struct Partition {
    clients: HashSet<usize>,
    server: usize,
    from: Instant,
    until: Instant,
}

/// Counters of the network.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Connections opened.
    pub links: u64,
    /// Segments delivered.
    pub segments: u64,
    /// Data bytes delivered.
    pub bytes: u64,
    /// Resets delivered (refusals included).
    pub resets: u64,
    /// Deliveries postponed by a partition, a pause or a host that is down.
    pub postponed: u64,
}

/// The simulated network. See the [module docs](self).
///
/// - Commands of the nodes: [`connect`](Self::connect), [`write`](Self::write),
///   [`close`](Self::close), [`abort`](Self::abort); getters [`space`](Self::space),
///   [`peer_dead_since`](Self::peer_dead_since).
/// - Faults: [`blackhole`](Self::blackhole), [`reset`](Self::reset),
///   [`partition`](Self::partition), [`pause`](Self::pause),
///   [`host_down`](Self::host_down), [`host_up`](Self::host_up).
/// - The driver's side: [`next_due`](Self::next_due), [`pop_due`](Self::pop_due),
///   [`pop_writable`](Self::pop_writable).
#[derive(Debug)]
pub struct Net {
    cfg: NetConfig,
    rng: Rng,
    /// The global virtual time, set by the driver (never a node's own clock).
    now: Instant,
    /// Ordered, so that iterating it (a crash) draws jitter in the same order every run.
    links: BTreeMap<LinkId, Connection>,
    next_link: u64,
    heap: BinaryHeap<Reverse<(Instant, LinkId, bool)>>,
    /// User-timeout checks: (when, link, toward the server).
    give_up: BinaryHeap<Reverse<(Instant, LinkId, bool)>>,
    hosts: Vec<Host>,
    partitions: Vec<Partition>,
    paused: HashMap<usize, Instant>,
    writable: VecDeque<(LinkId, Side, usize, usize)>,
    stats: NetStats,
}

impl Net {
    /// A network without hosts; `rng` draws every latency and jitter.
    #[must_use]
    pub fn new(cfg: NetConfig, rng: Rng, now: Instant) -> Self {
        Self {
            cfg,
            rng,
            now,
            links: BTreeMap::new(),
            next_link: 1,
            heap: BinaryHeap::new(),
            give_up: BinaryHeap::new(),
            hosts: Vec::new(),
            partitions: Vec::new(),
            paused: HashMap::new(),
            writable: VecDeque::new(),
            stats: NetStats::default(),
        }
    }

    /// Moves the network's time (global virtual time) forward to `now`. Every command
    /// acts at the network's time, whatever the calling node's clock reads.
    pub fn set_time(&mut self, now: Instant) {
        self.now = self.now.max(now);
    }

    /// The network's time.
    #[must_use]
    pub fn now(&self) -> Instant {
        self.now
    }

    /// The settings.
    #[must_use]
    pub fn config(&self) -> &NetConfig {
        &self.cfg
    }

    /// Counters.
    #[must_use]
    pub fn stats(&self) -> NetStats {
        self.stats
    }

    /// Open links.
    #[must_use]
    pub fn link_count(&self) -> usize {
        self.links.len()
    }

    /// Makes sure server host `server` exists (up).
    pub fn add_host(&mut self, server: usize) {
        while self.hosts.len() <= server {
            self.hosts.push(Host { up: true, incarnation: 0, refuse: false, down_since: None });
        }
    }

    // -----------------------------------------------------------------------------------
    // The nodes' commands

    /// Client `client` opens a connection to server `server`: the server gets
    /// [`NetEvent::Accepted`] one latency later, the client [`NetEvent::Connected`] one
    /// more latency later (or [`NetEvent::Reset`] when refused).
    pub fn connect(&mut self, client: usize, server: usize) -> LinkId {
        let now = self.now;
        self.add_host(server);
        let id = LinkId(self.next_link);
        self.next_link += 1;
        let latency = self.rng.duration_between(self.cfg.min_latency, self.cfg.max_latency);
        let link = Connection {
            client,
            server,
            incarnation: self.hosts[server].incarnation,
            latency,
            to_server: Dir::default(),
            to_client: Dir::default(),
            accepted: false,
            blackholed: None,
            created: now,
            gone: [false; 2],
            rst_sent: false,
        };
        self.links.insert(id, link);
        self.stats.links += 1;
        self.push(now, id, Side::Server, Segment::Syn);
        id
    }

    /// Bytes the `from` end may write before the window is full.
    #[must_use]
    pub fn space(&self, link: LinkId, from: Side) -> usize {
        let Some(l) = self.links.get(&link) else { return 0 };
        let d = match from.other() {
            Side::Server => &l.to_server,
            Side::Client => &l.to_client,
        };
        if d.closed { 0 } else { self.cfg.window.saturating_sub(d.bytes) }
    }

    /// Bytes written by `from` and not yet read by the other end.
    #[must_use]
    pub fn in_flight(&self, link: LinkId, from: Side) -> usize {
        self.links.get(&link).map_or(0, |l| match from.other() {
            Side::Server => l.to_server.bytes,
            Side::Client => l.to_client.bytes,
        })
    }

    /// The `from` end writes `data` (may go past the window by this one write; callers
    /// check [`space`](Self::space) first). Ignored after that end closed.
    pub fn write(&mut self, link: LinkId, from: Side, data: Bytes) {
        let now = self.now;
        if data.is_empty() {
            return;
        }
        let window = self.cfg.window;
        let Some(l) = self.links.get_mut(&link) else { return };
        let blackholed = l.blackholed.is_some();
        let d = l.dir(from.other());
        if d.closed {
            return;
        }
        d.bytes += data.len();
        if d.bytes >= window {
            d.blocked = true;
        }
        if blackholed {
            self.stall(link, from.other(), now);
        } else {
            self.push(now, link, from.other(), Segment::Data(data));
        }
    }

    /// The `from` end closes: a `FIN` follows its bytes. A client that gives up before
    /// the server accepted abandons the connection silently.
    pub fn close(&mut self, link: LinkId, from: Side) {
        let now = self.now;
        let Some(l) = self.links.get_mut(&link) else { return };
        if from == Side::Client && !l.accepted {
            self.links.remove(&link);
            return;
        }
        let d = l.dir(from.other());
        if d.closed {
            return;
        }
        d.closed = true;
        self.push(now, link, from.other(), Segment::Fin);
        self.collect(link);
    }

    /// The `from` end resets the connection (its socket is gone): the other end gets
    /// [`NetEvent::Reset`], and anything that still reaches `from` is answered with `RST`.
    pub fn abort(&mut self, link: LinkId, from: Side) {
        let now = self.now;
        let Some(l) = self.links.get_mut(&link) else { return };
        if l.gone[from as usize] {
            return;
        }
        l.gone[from as usize] = true;
        let out = l.dir(from.other());
        out.closed = true;
        out.queue.clear();
        l.dir(from).queue.clear();
        self.push(now, link, from.other(), Segment::Rst);
        self.collect(link);
    }

    /// The state of `link`, for reports.
    #[must_use]
    pub fn describe(&self, link: LinkId) -> String {
        let Some(l) = self.links.get(&link) else { return "gone".into() };
        let dir = |d: &Dir| {
            format!(
                "{} queued, {} B unread, closed {}, blocked {}, unacked since {:?}",
                d.queue.len(),
                d.bytes,
                d.closed,
                d.blocked,
                d.unacked_since.map(|t| t.saturating_duration_since(self.now)),
            )
        };
        format!(
            "client {} server {} blackholed {:?}; to server: {}; to client: {}",
            l.client,
            l.server,
            l.blackholed.is_some(),
            dir(&l.to_server),
            dir(&l.to_client)
        )
    }

    /// Since when the other end of `link` cannot be reached, if it cannot now: the link is
    /// black-holed, partitioned, or the server's host crashed (never before the link
    /// opened).
    #[must_use]
    pub fn peer_dead_since(&self, link: LinkId) -> Option<Instant> {
        let now = self.now;
        let l = self.links.get(&link)?;
        if let Some(t) = l.blackholed {
            return Some(t);
        }
        let host = self.hosts.get(l.server)?;
        if !host.up || host.incarnation != l.incarnation {
            return Some(host.down_since.unwrap_or(now).max(l.created));
        }
        self.partition_of(l.client, l.server, now).map(|p| p.from.max(l.created))
    }

    // -----------------------------------------------------------------------------------
    // Faults

    /// The link stops delivering, both ways, for good, without `FIN` (loss that TCP cannot
    /// repair: a NAT forgot it, a cable was cut). Each end finds out by its own timers.
    pub fn blackhole(&mut self, link: LinkId) {
        let now = self.now;
        let Some(l) = self.links.get_mut(&link) else { return };
        l.blackholed.get_or_insert(now);
        l.to_server.queue.clear();
        l.to_client.queue.clear();
        // Bytes in flight are never acknowledged now: each writer's user timeout runs.
        let in_flight = [(Side::Server, l.to_server.bytes), (Side::Client, l.to_client.bytes)];
        for (to, bytes) in in_flight {
            if bytes > 0 {
                self.stall(link, to, now);
            }
        }
    }

    /// A middlebox resets the link: both ends get [`NetEvent::Reset`] (a black-holed link
    /// stays silent).
    pub fn reset(&mut self, link: LinkId) {
        let now = self.now;
        let Some(l) = self.links.get_mut(&link) else { return };
        if l.blackholed.is_some() {
            // Nothing gets through a black hole, RSTs neither.
            return;
        }
        for side in [Side::Client, Side::Server] {
            let d = l.dir(side);
            d.queue.clear();
            d.closed = true;
        }
        self.push(now, link, Side::Client, Segment::Rst);
        self.push(now, link, Side::Server, Segment::Rst);
    }

    /// Clients in `clients` and server `server` cannot reach each other from now (the
    /// network's time) until `until`; segments wait (TCP retransmits) and arrive after the
    /// partition heals.
    pub fn partition(&mut self, clients: HashSet<usize>, server: usize, until: Instant) {
        let now = self.now;
        self.partitions.retain(|p| p.until > now);
        self.partitions.push(Partition { clients, server, from: now, until });
    }

    /// Client `client` stops reading until `until` (a slow consumer): what arrives for it
    /// stays unread and keeps its window full.
    pub fn pause(&mut self, client: usize, until: Instant) {
        self.paused.insert(client, until);
    }

    /// Whether client `client` is not reading now.
    #[must_use]
    pub fn is_paused(&self, client: usize) -> bool {
        self.paused.get(&client).is_some_and(|&until| until > self.now)
    }

    /// Server host `server` goes down. With `refuse`, its host stays up and answers new
    /// connections with `RST` (the process died) and its links are reset; without, the
    /// host is gone: nothing answers, nothing is reset (connections vanish without `FIN`).
    pub fn host_down(&mut self, server: usize, refuse: bool) {
        let now = self.now;
        self.add_host(server);
        self.hosts[server] =
            Host { up: false, refuse, down_since: Some(now), ..self.hosts[server] };
        let ids: Vec<LinkId> =
            self.links.iter().filter(|(_, l)| l.server == server).map(|(id, _)| *id).collect();
        for id in ids {
            let Some(l) = self.links.get_mut(&id) else { continue };
            // The server's unsent and in-flight bytes die with it.
            l.to_client.queue.clear();
            l.to_client.scheduled = None;
            l.to_client.closed = true;
            if refuse {
                self.push(now, id, Side::Client, Segment::Rst);
                if let Some(l) = self.links.get_mut(&id) {
                    l.to_server.queue.clear();
                    l.to_server.closed = true;
                }
            }
        }
    }

    /// Server host `server` is back, as a new incarnation: segments of older connections
    /// that reach it are answered with `RST`.
    pub fn host_up(&mut self, server: usize) {
        self.add_host(server);
        let h = &mut self.hosts[server];
        h.up = true;
        h.refuse = false;
        h.incarnation += 1;
    }
}
