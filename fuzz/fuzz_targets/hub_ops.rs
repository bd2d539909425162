//! A `Hub` driven by arbitrary operations — connections over every transport, joins (from a
//! position or not), leaves, server and client publishes (client ids repeated on purpose),
//! pulls, disconnects, reconnects from the last position received, time — against a model
//! of what each connection must receive.
//!
//! The model: when a connection joins a channel it expects the messages the log holds after
//! its position (none when the position is gone or absent), then every message published to
//! the channel while it is a member, per channel in that order. Frames are pulled whenever
//! the input says, so queues overflow.
//!
//! Invariants: no panic; each channel's messages reach a connection exactly once and in
//! order, with the published data — or, on a `DropOldest` or `Conflate` channel, a
//! subsequence of them with the losses counted in the connection's counters, or, on a
//! `Disconnect` channel, the connection is closed with 4100; after a final drain nothing
//! expected is missing unless counted; a client id published again by the same user (or
//! anonymous connection) inside the dedup window is stored once and acknowledged with the
//! first position; positions of a channel grow by one within an epoch; memberships match the
//! model; queues, presence lists and logs stay within bounds.
#![no_main]

use std::collections::{BTreeMap, HashMap, VecDeque};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use serde_json::value::RawValue;
use tidewire::hub::{AllowAll, ConnId, Hub, HubConfig, HubEvent, Principal, Transport};
use tidewire::policy::{HeartbeatConfig, OutboxConfig, SlowConsumer};
use tidewire::replay::{Epoch, LogLimits, Position};
use tidewire::sse::{ParserLimits, SseParser};
use tidewire::time::{Duration, Instant};
use tidewire::ws::CloseCode;

/// `a`, `b`: reliable (`Disconnect`); `d:x`: `DropOldest`; `c:y`: `Conflate`.
const CHANNELS: [&str; 4] = ["a", "b", "d:x", "c:y"];
const DEDUP_WINDOW: usize = 6;

#[derive(Arbitrary, Debug)]
enum From {
    Head(u8),
    Other(u64, u8),
}

#[derive(Arbitrary, Debug)]
enum Op {
    Connect {
        transport: u8,
        user: Option<u8>,
    },
    Join {
        conn: u8,
        ch: u8,
        from: Option<From>,
        envelope: bool,
    },
    Leave {
        conn: u8,
        ch: u8,
        envelope: bool,
    },
    /// A trusted server-side publish.
    Publish {
        ch: u8,
    },
    /// A client publish over the WebSocket envelope of `conn`, with an optional client id.
    ClientPublish {
        conn: u8,
        ch: u8,
        id: Option<u8>,
    },
    /// A client publish without a connection (`publish_as`).
    PublishAs {
        user: Option<u8>,
        ch: u8,
        id: Option<u8>,
    },
    Pull {
        conn: u8,
        n: u8,
    },
    Disconnect(u8),
    /// Drops the connection and connects a new one that joins its channels from the last
    /// positions it received.
    Reconnect(u8),
    Touch(u8),
    Advance(u16),
}

#[derive(Arbitrary, Debug)]
struct Input {
    max_items: u8,
    max_bytes: u16,
    max_count: u8,
    max_age: u16,
    grace: u16,
    seed: u64,
    ops: Vec<Op>,
}

#[derive(Default)]
struct Client {
    id: Option<ConnId>,
    transport: Option<Transport>,
    user: Option<String>,
    alive: bool,
    /// Joined channels.
    member: BTreeMap<String, ()>,
    /// Per channel: the messages still expected, in order.
    expect: HashMap<String, VecDeque<Position>>,
    /// Per channel: the last message received.
    last: HashMap<String, Position>,
    /// Messages skipped on lossy channels.
    skipped: u64,
    sse: Option<SseParser>,
    /// `ref` of a client publish → the position its `ack` must carry (`None`: not known yet).
    acks: HashMap<u64, Option<Position>>,
}

type Object = HashMap<String, Box<RawValue>>;

fn get<T: serde::de::DeserializeOwned>(o: &Object, name: &str) -> Option<T> {
    serde_json::from_str(o.get(name)?.get()).ok()
}

fn policy(ch: &str) -> SlowConsumer {
    if ch.starts_with("d:") {
        SlowConsumer::DropOldest
    } else if ch.starts_with("c:") {
        SlowConsumer::Conflate
    } else {
        SlowConsumer::Disconnect
    }
}

struct World {
    hub: Hub,
    now: Instant,
    clients: Vec<Client>,
    /// Data of every message published, by position.
    data: HashMap<Position, String>,
    /// The last position published per channel.
    heads: HashMap<String, Position>,
    /// The dedup model: remembered (scope, id) → first position, oldest first.
    dedup: VecDeque<((String, u8), Position)>,
    counter: u64,
    next_ref: u64,
    cfg: HubConfig,
}

impl World {
    fn client(&mut self, i: u8) -> Option<usize> {
        (!self.clients.is_empty()).then(|| usize::from(i) % self.clients.len())
    }

    fn connect(&mut self, transport: Transport, user: Option<String>) -> usize {
        let p = user.clone().map_or(Principal::anonymous(), Principal::user);
        let id = self.hub.connect(self.now, transport, p);
        let sse = (transport == Transport::Sse).then(|| {
            SseParser::new(ParserLimits {
                max_line: 1 << 20,
                max_event: 1 << 20,
                max_queued: 1 << 20,
            })
        });
        self.clients.push(Client {
            id: Some(id),
            transport: Some(transport),
            user,
            alive: true,
            sse,
            ..Client::default()
        });
        self.clients.len() - 1
    }

    /// Joins client `i` to `ch` after `pos`; records what it must receive.
    fn join(&mut self, i: usize, ch: &str, pos: Option<Position>, envelope: bool) {
        let c = &self.clients[i];
        let Some(id) = c.id.filter(|_| c.alive) else { return };
        let transport = c.transport.unwrap_or(Transport::Poll);
        let was_member = c.member.contains_key(ch);
        let result = if envelope && transport == Transport::WebSocket {
            let pos = pos
                .map(|p| format!(",\"pos\":{{\"ep\":\"{}\",\"off\":{}}}", p.epoch, p.offset))
                .unwrap_or_default();
            let text = format!("{{\"op\":\"sub\",\"ch\":\"{ch}\"{pos}}}");
            self.hub.handle_envelope(self.now, id, text.as_bytes());
            None
        } else {
            Some(self.hub.subscribe(self.now, id, ch, pos))
        };
        if !self.hub.is_connected(id) {
            return; // too slow for its own opening frames: closed
        }
        let joined = self.hub.channels_of(id).any(|c| c == ch);
        if let Some(Err(e)) = result {
            assert!(!joined || was_member, "refused ({e}) but joined");
        }
        if !joined || was_member {
            if let Some(Ok(s)) = result {
                assert!(s.recovered && s.replayed == 0, "a second join replays nothing");
            }
            return;
        }
        let log = self.hub.log(ch).expect("a joined channel has a log");
        let missed: Vec<Position> = match pos.map(|p| log.since(p)) {
            Some(Ok(it)) => it.map(|(p, _)| p).collect(),
            _ => Vec::new(),
        };
        let recovered = !matches!(pos.map(|p| log.since(p).is_ok()), Some(false));
        if let Some(Ok(s)) = result {
            assert_eq!(s.pos, log.head());
            assert_eq!(s.recovered, recovered);
            if transport != Transport::Poll {
                assert_eq!(s.replayed, missed.len());
            }
        }
        let c = &mut self.clients[i];
        c.member.insert(ch.to_owned(), ());
        if transport != Transport::Poll {
            c.expect.entry(ch.to_owned()).or_default().extend(missed);
        }
    }

    /// A message was appended: every member expects it.
    fn published(&mut self, ch: &str, pos: Position) {
        let prev = self.heads.insert(ch.to_owned(), pos);
        match prev {
            Some(p) if p.epoch == pos.epoch => {
                assert_eq!(pos.offset, p.offset + 1, "{ch}: {p} then {pos}");
            }
            _ => {
                // A new channel, or one that was dropped when idle and made again.
                assert_eq!(pos.offset, 1, "{ch}: a new epoch starts at 1");
            }
        }
        for c in &mut self.clients {
            if c.alive && c.member.contains_key(ch) && c.transport != Some(Transport::Poll) {
                c.expect.entry(ch.to_owned()).or_default().push_back(pos);
            }
        }
    }

    /// Drains hub events into the model.
    fn events(&mut self) {
        while let Some(ev) = self.hub.poll_event() {
            match ev {
                HubEvent::Close { conn, code, .. } => {
                    assert_eq!(code, CloseCode::TOO_SLOW, "no rate limit is configured");
                    let c = self.by_id(conn).expect("closing an unknown connection");
                    assert!(c.alive, "closed twice");
                    c.alive = false;
                }
                HubEvent::Expired { conn } => {
                    let c = self.by_id(conn).expect("expiring an unknown connection");
                    assert_eq!(c.transport, Some(Transport::Poll), "only polls expire");
                    c.alive = false;
                }
                HubEvent::Published { ch, pos } => self.published(&ch, pos),
                _ => {}
            }
        }
    }

    fn by_id(&mut self, id: ConnId) -> Option<&mut Client> {
        self.clients.iter_mut().find(|c| c.id == Some(id))
    }

    /// Client `i` received the message `pos` of `ch` with `data`.
    fn received(&mut self, i: usize, ch: &str, pos: Position, data: &str) {
        assert_eq!(self.data.get(&pos).map(String::as_str), Some(data), "data of {pos}");
        let c = &mut self.clients[i];
        let queue = c.expect.entry(ch.to_owned()).or_default();
        let lossy = policy(ch) != SlowConsumer::Disconnect;
        loop {
            let Some(next) = queue.pop_front() else {
                panic!("{ch}: {pos} was not expected (duplicate or never published)");
            };
            if next == pos {
                break;
            }
            assert!(lossy, "{ch}: expected {next}, got {pos} on a reliable channel");
            c.skipped += 1;
        }
        c.last.insert(ch.to_owned(), pos);
    }

    fn pull(&mut self, i: usize, n: usize) {
        let Some(id) = self.clients[i].id else { return };
        for _ in 0..n {
            let Some(frame) = self.hub.pull(id) else { break };
            assert!(self.clients[i].alive, "a frame for a closed connection");
            if self.clients[i].transport == Some(Transport::WebSocket) {
                let o: Object = serde_json::from_slice(&frame).expect("a JSON envelope");
                match get::<String>(&o, "op").as_deref() {
                    Some("msg") => {
                        let ch: String = get(&o, "ch").expect("ch");
                        let ep: String = get(&o, "ep").expect("ep");
                        let off: u64 = get(&o, "off").expect("off");
                        let pos = Position { epoch: ep.parse().expect("hex epoch"), offset: off };
                        let data = o.get("data").expect("data").get().to_owned();
                        self.received(i, &ch, pos, &data);
                    }
                    Some("ack") => {
                        let r: u64 = get(&o, "ref").expect("our acks carry a ref");
                        let want = self.clients[i].acks.remove(&r).expect("an ack we expect");
                        let ep: Option<String> = get(&o, "ep");
                        let pos = ep.map(|ep| Position {
                            epoch: ep.parse().expect("hex epoch"),
                            offset: get(&o, "off").expect("off"),
                        });
                        if let Some(want) = want {
                            assert_eq!(pos, Some(want), "ack position");
                        }
                    }
                    Some("err") => {
                        // The only refusal possible here: a `sub` over the per-connection limit.
                        let code: Option<String> = get(&o, "code");
                        assert_eq!(code.as_deref(), Some("too_many_channels"), "{o:?}");
                    }
                    Some("subscribed" | "presence" | "pong") => {}
                    other => panic!("unknown op {other:?}"),
                }
            } else {
                let c = &mut self.clients[i];
                let p = c.sse.as_mut().expect("an SSE connection has a parser");
                p.push(&frame).expect("SSE frames parse");
                let mut msgs = Vec::new();
                while let Some(e) = p.next_event() {
                    // `from` blocks name the next message's publisher (no id of their own).
                    if e.event != "reset" && e.event != "presence" && e.event != "from" {
                        let pos: Position = e.id.parse().expect("a message's id is its position");
                        msgs.push((e.event, pos, e.data));
                    }
                }
                for (ch, pos, data) in msgs {
                    self.received(i, &ch, pos, &data);
                }
            }
        }
    }

    fn publish_data(&mut self) -> String {
        self.counter += 1;
        format!("{{\"n\":{}}}", self.counter)
    }

    /// Remembers a fresh client id; returns the first position of a repeated one.
    fn dedup(&mut self, key: (String, u8)) -> Option<Position> {
        self.dedup.iter().find(|(k, _)| *k == key).map(|(_, p)| *p)
    }

    fn remember(&mut self, key: (String, u8), pos: Position) {
        if self.dedup.len() >= DEDUP_WINDOW {
            self.dedup.pop_front();
        }
        self.dedup.push_back((key, pos));
    }

    fn check(&mut self) {
        for c in &self.clients {
            let Some(id) = c.id else { continue };
            assert_eq!(self.hub.is_connected(id), c.alive);
            if !c.alive {
                continue;
            }
            let joined: Vec<&str> = self.hub.channels_of(id).collect();
            let model: Vec<&str> = c.member.keys().map(String::as_str).collect();
            assert_eq!(joined, model, "memberships of {id}");
            let (items, bytes) = self.hub.buffered(id).expect("connected");
            let o = self.cfg.outbox;
            assert!(items <= 3 * o.max_items && bytes <= 3 * o.max_bytes, "{items} / {bytes} B");
            let counters = self.hub.counters(id).expect("connected");
            assert!(c.skipped <= counters.dropped + counters.conflated, "unexplained loss");
        }
        for ch in CHANNELS {
            assert!(self.hub.presence(ch).count() <= self.cfg.max_presence);
            if let Some(log) = self.hub.log(ch) {
                assert!(log.len() <= self.cfg.log.max_count.max(1));
            }
        }
    }
}

fuzz_target!(|input: Input| {
    let cfg = HubConfig {
        max_channels: 8,
        max_channels_per_conn: 3,
        max_presence: 3,
        presence_grace: Duration::from_millis(u64::from(input.grace)),
        poll_expiry: HeartbeatConfig::expiry(Duration::from_secs(2)),
        log: LogLimits {
            max_count: usize::from(input.max_count % 16),
            max_bytes: 1 << 20,
            max_age: Duration::from_millis(u64::from(input.max_age) * 4),
        },
        outbox: OutboxConfig {
            max_items: usize::from(input.max_items % 12) + 1,
            max_bytes: usize::from(input.max_bytes % 4096) + 128,
            ..OutboxConfig::default()
        },
        slow_consumers: vec![
            ("d:".to_owned(), SlowConsumer::DropOldest),
            ("c:".to_owned(), SlowConsumer::Conflate),
        ],
        rate_limit: None,
        dedup_window: DEDUP_WINDOW,
        ..HubConfig::default()
    };
    let mut w = World {
        hub: Hub::new(cfg.clone(), AllowAll, input.seed),
        now: Instant::now(),
        clients: Vec::new(),
        data: HashMap::new(),
        heads: HashMap::new(),
        dedup: VecDeque::new(),
        counter: 0,
        next_ref: 1,
        cfg,
    };
    let ch_of = |i: u8| CHANNELS[usize::from(i) % CHANNELS.len()];
    for op in input.ops {
        match op {
            Op::Connect { transport, user } => {
                if w.clients.len() < 12 {
                    let t = [Transport::WebSocket, Transport::Sse, Transport::Poll]
                        [usize::from(transport % 3)];
                    w.connect(t, user.map(|u| format!("u{}", u % 3)));
                }
            }
            Op::Join { conn, ch, from, envelope } => {
                let Some(i) = w.client(conn) else { continue };
                let ch = ch_of(ch);
                let pos = from.map(|f| match f {
                    From::Head(back) => {
                        let head = w.hub.log(ch).map_or(Position::start(Epoch(1)), |l| l.head());
                        Position {
                            epoch: head.epoch,
                            offset: head.offset.saturating_sub(u64::from(back)),
                        }
                    }
                    From::Other(e, off) => Position { epoch: Epoch(e), offset: u64::from(off) },
                });
                w.join(i, ch, pos, envelope);
            }
            Op::Leave { conn, ch, envelope } => {
                let Some(i) = w.client(conn) else { continue };
                let ch = ch_of(ch);
                let c = &w.clients[i];
                let (Some(id), true) = (c.id, c.alive) else { continue };
                if envelope && c.transport == Some(Transport::WebSocket) {
                    let text = format!("{{\"op\":\"unsub\",\"ch\":\"{ch}\"}}");
                    w.hub.handle_envelope(w.now, id, text.as_bytes());
                } else {
                    let was = w.hub.unsubscribe(w.now, id, ch);
                    assert_eq!(was, c.member.contains_key(ch));
                }
                w.clients[i].member.remove(ch);
            }
            Op::Publish { ch } => {
                let ch = ch_of(ch);
                let data = w.publish_data();
                let raw = RawValue::from_string(data.clone()).unwrap();
                let before = w.heads.get(ch).copied();
                match w.hub.publish(w.now, ch, &raw) {
                    Ok(pos) => {
                        w.data.insert(pos, data);
                        w.events();
                        assert_eq!(w.heads.get(ch), Some(&pos), "a publish without its event");
                        assert_ne!(before, Some(pos));
                    }
                    Err(e) => panic!("publish refused: {e}"),
                }
            }
            Op::ClientPublish { conn, ch, id } => {
                let Some(i) = w.client(conn) else { continue };
                let c = &w.clients[i];
                let (Some(cid), true, Some(Transport::WebSocket)) = (c.id, c.alive, c.transport)
                else {
                    continue;
                };
                let ch = ch_of(ch);
                let scope =
                    c.user.clone().map_or(format!("conn{}", cid.0), |u| format!("user {u}"));
                let data = w.publish_data();
                let reference = w.next_ref;
                w.next_ref += 1;
                let id_field = id.map(|v| format!(",\"id\":\"m{v}\"")).unwrap_or_default();
                let text = format!(
                    "{{\"op\":\"pub\",\"ch\":\"{ch}\"{id_field},\"data\":{data},\"ref\":{reference}}}"
                );
                let first = id.and_then(|v| w.dedup((scope.clone(), v)));
                let published_before = w.hub.stats().published;
                let head_before = w.heads.get(ch).copied();
                w.hub.handle_envelope(w.now, cid, text.as_bytes());
                let published = w.hub.stats().published - published_before;
                // The position, from the `Published` event (the channel may be gone by now).
                w.events();
                let new_pos = w.heads.get(ch).copied().filter(|_| published > 0);
                assert!(published == 0 || new_pos != head_before);
                if first.is_some() {
                    assert_eq!(published, 0, "a repeated id was published again");
                } else {
                    assert_eq!(published, 1);
                    let pos = new_pos.expect("published");
                    w.data.insert(pos, data);
                    if let Some(v) = id {
                        w.remember((scope, v), pos);
                    }
                }
                let want = if first.is_some() { first } else { new_pos };
                w.clients[i].acks.insert(reference, want);
                w.events();
            }
            Op::PublishAs { user, ch, id } => {
                let ch = ch_of(ch);
                let user = user.map(|u| format!("u{}", u % 3));
                let scope = user.clone().map_or("anonymous".to_owned(), |u| format!("user {u}"));
                let p = user.map_or(Principal::anonymous(), Principal::user);
                let data = w.publish_data();
                let first = id.and_then(|v| w.dedup((scope.clone(), v)));
                let id_text = id.map(|v| format!("m{v}"));
                let before = w.hub.stats().published;
                let pos = w
                    .hub
                    .publish_as(w.now, &p, ch, id_text.as_deref(), data.as_bytes())
                    .expect("AllowAll accepts");
                let published = w.hub.stats().published - before;
                match first {
                    Some(f) => {
                        assert_eq!(published, 0, "a repeated id was published again");
                        assert_eq!(pos, f, "a repeat answers the first position");
                    }
                    None => {
                        assert_eq!(published, 1);
                        w.data.insert(pos, data);
                        if let Some(v) = id {
                            w.remember((scope, v), pos);
                        }
                    }
                }
                w.events();
            }
            Op::Pull { conn, n } => {
                let Some(i) = w.client(conn) else { continue };
                w.pull(i, usize::from(n));
            }
            Op::Disconnect(conn) => {
                let Some(i) = w.client(conn) else { continue };
                if let Some(id) = w.clients[i].id {
                    w.hub.disconnect(w.now, id);
                }
                w.clients[i].alive = false;
            }
            Op::Reconnect(conn) => {
                let Some(i) = w.client(conn) else { continue };
                let Some(id) = w.clients[i].id else { continue };
                w.hub.disconnect(w.now, id);
                w.clients[i].alive = false;
                let c = &w.clients[i];
                let (transport, user) =
                    (c.transport.unwrap_or(Transport::WebSocket), c.user.clone());
                let resume: Vec<(String, Option<Position>)> =
                    c.member.keys().map(|ch| (ch.clone(), c.last.get(ch).copied())).collect();
                w.events();
                let j = w.connect(transport, user);
                for (ch, pos) in resume {
                    w.join(j, &ch, pos, false);
                }
            }
            Op::Touch(conn) => {
                let Some(i) = w.client(conn) else { continue };
                if let Some(id) = w.clients[i].id {
                    w.hub.touch(w.now, id);
                }
            }
            Op::Advance(ms) => {
                w.now += Duration::from_millis(u64::from(ms));
                w.hub.handle_timeout(w.now);
            }
        }
        w.events();
        w.check();
    }
    // A final drain: whatever is missing was counted as lost.
    for i in 0..w.clients.len() {
        if w.clients[i].alive {
            w.pull(i, usize::MAX);
        }
    }
    w.events();
    w.check();
    for c in &w.clients {
        if !c.alive {
            continue;
        }
        let Some(counters) = c.id.and_then(|id| w.hub.counters(id)) else { continue };
        for (ch, queue) in &c.expect {
            if !queue.is_empty() {
                assert!(policy(ch) != SlowConsumer::Disconnect, "{ch}: {queue:?} never arrived");
                assert!(counters.dropped + counters.conflated > 0, "{ch}: lost without a count");
            }
        }
        assert!(c.acks.is_empty(), "acks never arrived: {:?}", c.acks);
    }
});
