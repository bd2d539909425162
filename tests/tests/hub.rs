//! Properties of the [`Hub`] under random operations: connects over WebSocket and SSE,
//! subscriptions with and without resume positions, publishes with and without client ids
//! (and trusted ones), unsubscribes, disconnects, partial drains and time jumps.
//!
//! Checked after every step: every message published while a connection is subscribed
//! reaches it exactly once and in order per channel (a connection that ended, by itself or
//! by a 4100 close, got a prefix; a live one, after a final drain, all of it), a resume
//! replays exactly what the log still holds (a channel dropped while idle continues its log
//! from its head) or says `recovered:false`, a repeated client id
//! never publishes twice, and every bound holds. Time is virtual: one `Instant::now()`.

use std::collections::{BTreeMap, HashMap, HashSet};

use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use tidewire::hub::{AllowAll, ConnId, Hub, HubConfig, HubEvent, Principal, Transport};
use tidewire::policy::OutboxConfig;
use tidewire::replay::{Epoch, LogLimits, Position};
use tidewire::time::{Duration, Instant};

fn config() -> ProptestConfig {
    ProptestConfig {
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("regressions"))),
        ..ProptestConfig::default()
    }
}

const SLOTS: usize = 4;
const CHANNELS: [&str; 3] = ["a", "b", "c"];
const MAX_ITEMS: usize = 12;
const MAX_PER_CONN: usize = 2;

fn hub_config() -> HubConfig {
    HubConfig {
        max_channels_per_conn: MAX_PER_CONN,
        max_presence: 2,
        log: LogLimits { max_count: 6, max_bytes: 1 << 20, max_age: Duration::from_secs(30) },
        outbox: OutboxConfig { max_items: MAX_ITEMS, ..OutboxConfig::default() },
        rate_limit: None,
        ..HubConfig::default()
    }
}

#[derive(Clone, Debug)]
enum Op {
    Connect { slot: usize, sse: bool },
    Sub { slot: usize, ch: usize, with_pos: bool },
    Unsub { slot: usize, ch: usize },
    Pub { slot: usize, ch: usize, id: Option<u8> },
    ServerPub { ch: usize },
    Disconnect { slot: usize },
    Drain { slot: usize, max: usize },
    Advance { ms: u64 },
}

fn op() -> impl Strategy<Value = Op> {
    let slot = 0..SLOTS;
    let ch = 0..CHANNELS.len();
    prop_oneof![
        3 => (slot.clone(), any::<bool>()).prop_map(|(slot, sse)| Op::Connect { slot, sse }),
        5 => (slot.clone(), ch.clone(), proptest::bool::weighted(0.8))
            .prop_map(|(slot, ch, with_pos)| Op::Sub { slot, ch, with_pos }),
        2 => (slot.clone(), ch.clone()).prop_map(|(slot, ch)| Op::Unsub { slot, ch }),
        5 => (slot.clone(), ch.clone(), proptest::option::of(0u8..4))
            .prop_map(|(slot, ch, id)| Op::Pub { slot, ch, id }),
        4 => ch.prop_map(|ch| Op::ServerPub { ch }),
        2 => slot.clone().prop_map(|slot| Op::Disconnect { slot }),
        5 => (slot, 0usize..20).prop_map(|(slot, max)| Op::Drain { slot, max }),
        2 => prop_oneof![4 => 0u64..3_000, 1 => 0u64..40_000].prop_map(|ms| Op::Advance { ms }),
    ]
}

/// One connection's life, as its client sees it.
#[derive(Debug, Default)]
struct Session {
    conn: Option<ConnId>,
    sse: bool,
    /// Per channel joined: the positions the client must receive, in order.
    expected: BTreeMap<String, Vec<Position>>,
    /// Per channel: what it received (kept after leaving, for the final check).
    received: BTreeMap<String, Vec<Position>>,
    /// Everything it was ever owed per channel (kept after leaving).
    owed: BTreeMap<String, Vec<Position>>,
    /// Per channel: the `recovered` flags of the `subscribed` frames still to come (WS).
    pending_subscribed: BTreeMap<String, Vec<bool>>,
    ended: bool,
}

/// A client slot: successive sessions share the client's memory of positions.
#[derive(Debug, Default)]
struct Client {
    session: Option<Session>,
    done: Vec<Session>,
    /// The last position known per channel (from messages, `subscribed` or SSE ids).
    pos: HashMap<String, Position>,
    /// Client ids already published by this client (its scope is its user).
    ids: HashSet<u8>,
}

fn user(slot: usize) -> Principal {
    // The last slot is anonymous: its ids are scoped to each connection.
    if slot == SLOTS - 1 { Principal::anonymous() } else { Principal::user(format!("u{slot}")) }
}

/// The raw text of `"key":VALUE` in a hub envelope (strings unquoted).
fn field<'a>(frame: &'a str, key: &str) -> Option<&'a str> {
    let at = frame.find(&format!("\"{key}\":"))? + key.len() + 3;
    let rest = &frame[at..];
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    Some(rest[..end].trim_matches('"'))
}

fn position(ep: &str, off: &str) -> Position {
    Position { epoch: ep.parse::<Epoch>().unwrap(), offset: off.parse().unwrap() }
}

struct World {
    hub: Hub,
    now: Instant,
    clients: Vec<Client>,
    /// Which (ch, id) each anonymous connection used.
    anon_ids: HashMap<ConnId, HashSet<u8>>,
    /// The head of each channel's log the last time it existed: a channel dropped while
    /// idle continues its log from there (same epoch) when it is used again.
    ends: HashMap<String, Position>,
}

impl World {
    fn slot_of(&self, conn: ConnId) -> Option<usize> {
        self.clients.iter().position(|c| c.session.as_ref().and_then(|s| s.conn) == Some(conn))
    }

    /// Routes the hub's events into the model: publishes are owed to every member.
    fn events(&mut self) -> Vec<HubEvent> {
        let mut all = Vec::new();
        while let Some(ev) = self.hub.poll_event() {
            match &ev {
                HubEvent::Published { ch, pos } => {
                    for c in &mut self.clients {
                        if let Some(s) = &mut c.session
                            && let Some(exp) = s.expected.get_mut(&**ch)
                        {
                            exp.push(*pos);
                            s.owed.entry(ch.to_string()).or_default().push(*pos);
                        }
                    }
                }
                HubEvent::Close { conn, code, .. } => {
                    assert_eq!(code.0, 4100, "only slow consumers are closed here");
                    let slot = self.slot_of(*conn).expect("a known connection is closed");
                    self.end(slot);
                }
                _ => {}
            }
            all.push(ev);
        }
        all
    }

    fn end(&mut self, slot: usize) {
        let c = &mut self.clients[slot];
        if let Some(mut s) = c.session.take() {
            s.ended = true;
            s.expected.clear();
            c.done.push(s);
        }
    }

    /// The client reads up to `max` frames of its connection.
    fn drain(&mut self, slot: usize, max: usize) {
        let Some(conn) = self.clients[slot].session.as_ref().and_then(|s| s.conn) else { return };
        for _ in 0..max {
            let Some(frame) = self.hub.pull(conn) else { break };
            let text = String::from_utf8(frame.to_vec()).unwrap();
            let c = &mut self.clients[slot];
            let s = c.session.as_mut().unwrap();
            if s.sse {
                read_sse(&text, s, &mut c.pos);
            } else {
                read_ws(&text, s, &mut c.pos);
            }
        }
    }

    fn check_bounds(&self) {
        let cfg = self.hub.config();
        assert!(self.hub.channel_count() <= cfg.max_channels);
        for ch in CHANNELS {
            if let Some(log) = self.hub.log(ch) {
                assert!(log.len() <= cfg.log.max_count);
            }
            assert!(self.hub.presence(ch).count() <= cfg.max_presence);
        }
        for c in &self.clients {
            let Some(conn) = c.session.as_ref().and_then(|s| s.conn) else { continue };
            assert!(self.hub.channels_of(conn).count() <= cfg.max_channels_per_conn);
            let (frames, bytes) = self.hub.buffered(conn).unwrap();
            assert!(frames <= 3 * cfg.outbox.max_items && bytes <= 3 * cfg.outbox.max_bytes);
            // The model's memberships are the hub's.
            let joined: Vec<&str> = self.hub.channels_of(conn).collect();
            let model: Vec<&str> =
                c.session.as_ref().unwrap().expected.keys().map(String::as_str).collect();
            assert_eq!(joined, model);
        }
    }
}

fn record(s: &mut Session, ch: &str, pos: Position, client_pos: &mut HashMap<String, Position>) {
    s.received.entry(ch.to_owned()).or_default().push(pos);
    client_pos.insert(ch.to_owned(), pos);
}

fn read_ws(text: &str, s: &mut Session, client_pos: &mut HashMap<String, Position>) {
    let op = field(text, "op").unwrap();
    match op {
        "msg" => {
            let ch = field(text, "ch").unwrap();
            let pos = position(field(text, "ep").unwrap(), field(text, "off").unwrap());
            record(s, ch, pos, client_pos);
        }
        "subscribed" => {
            let ch = field(text, "ch").unwrap();
            let recovered = field(text, "recovered").unwrap() == "true";
            let want =
                s.pending_subscribed.get_mut(ch).and_then(|q| (!q.is_empty()).then(|| q.remove(0)));
            assert_eq!(want, Some(recovered), "subscribed for {ch}: {text}");
            let head = position(field(text, "ep").unwrap(), field(text, "off").unwrap());
            // The head is the client's position only when nothing is replayed to it.
            if !recovered || !client_pos.contains_key(ch) {
                client_pos.insert(ch.to_owned(), head);
            }
        }
        "ack" | "err" | "presence" | "pong" => {}
        other => panic!("unexpected op {other}: {text}"),
    }
}

fn read_sse(text: &str, s: &mut Session, client_pos: &mut HashMap<String, Position>) {
    let mut id = None;
    let mut event = None;
    let mut data = None;
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("id: ") {
            id = Some(v.parse::<Position>().unwrap());
        } else if let Some(v) = line.strip_prefix("event: ") {
            event = Some(v.to_owned());
        } else if let Some(v) = line.strip_prefix("data: ") {
            data = Some(v.to_owned());
        }
    }
    match (event.as_deref(), id) {
        (Some("presence"), None) => {}
        (Some("reset"), Some(head)) => {
            let data = data.unwrap();
            let ch = field(&data, "ch").unwrap();
            assert_eq!(field(&data, "pos"), Some(head.to_string().as_str()));
            client_pos.insert(ch.to_owned(), head);
        }
        (Some(ch), Some(pos)) => record(s, ch, pos, client_pos),
        // An id-only block right after a subscription without a position. Which channel?
        // The model subscribes SSE clients to one channel at a time: the newest one.
        (None, Some(head)) => {
            if let Some(ch) = s.pending_subscribed.keys().next_back().cloned() {
                client_pos.insert(ch, head);
            }
        }
        other => panic!("unexpected SSE block {other:?}: {text:?}"),
    }
}

fn step(w: &mut World, op: &Op) {
    match *op {
        Op::Connect { slot, sse } => {
            if w.clients[slot].session.is_some() {
                return;
            }
            let transport = if sse { Transport::Sse } else { Transport::WebSocket };
            let conn = w.hub.connect(w.now, transport, user(slot));
            w.clients[slot].session = Some(Session { conn: Some(conn), sse, ..Session::default() });
        }
        Op::Sub { slot, ch, with_pos } => {
            let ch = CHANNELS[ch];
            let c = &mut w.clients[slot];
            let Some(s) = &mut c.session else { return };
            let conn = s.conn.unwrap();
            let pos = if with_pos { c.pos.get(ch).copied() } else { None };
            let member = s.expected.contains_key(ch);
            // What the model predicts, from the log as it is now.
            let replay: Option<Vec<Position>> = match (pos, w.hub.log(ch)) {
                (None, _) => Some(Vec::new()),
                (Some(p), Some(log)) => log.since(p).ok().map(|it| it.map(|(q, _)| q).collect()),
                // Dropped while idle: it goes on from where it ended; only a client that was
                // up to date then is still up to date.
                (Some(p), None) => (w.ends.get(ch) == Some(&p)).then(Vec::new),
            };
            let allowed = member || s.expected.len() < MAX_PER_CONN;
            if s.sse {
                let got = w.hub.subscribe(w.now, conn, ch, pos);
                if !allowed {
                    assert!(got.is_err());
                    return;
                }
                let got = got.unwrap();
                if member {
                    assert!(got.recovered && got.replayed == 0);
                    return;
                }
                assert_eq!(got.recovered, replay.is_some(), "{ch} from {pos:?}");
                assert_eq!(got.replayed, replay.as_ref().map_or(0, Vec::len));
                // SSE clients keep to one channel, so that an id-only block is unambiguous.
                s.pending_subscribed.clear();
                s.pending_subscribed.insert(ch.to_owned(), Vec::new());
            } else {
                let text = match pos {
                    Some(p) => format!(
                        r#"{{"op":"sub","ch":"{ch}","pos":{{"ep":"{}","off":{}}}}}"#,
                        p.epoch, p.offset
                    ),
                    None => format!(r#"{{"op":"sub","ch":"{ch}"}}"#),
                };
                w.hub.handle_envelope(w.now, conn, text.as_bytes());
                if !allowed {
                    return;
                }
                let recovered = member || replay.is_some();
                s.pending_subscribed.entry(ch.to_owned()).or_default().push(recovered);
                if member {
                    return;
                }
            }
            let replay = replay.unwrap_or_default();
            s.owed.entry(ch.to_owned()).or_default().extend(&replay);
            s.expected.insert(ch.to_owned(), replay);
        }
        Op::Unsub { slot, ch } => {
            let ch = CHANNELS[ch];
            let Some(s) = &mut w.clients[slot].session else { return };
            let conn = s.conn.unwrap();
            if s.sse {
                assert_eq!(w.hub.unsubscribe(w.now, conn, ch), s.expected.contains_key(ch));
            } else {
                let text = format!(r#"{{"op":"unsub","ch":"{ch}"}}"#);
                w.hub.handle_envelope(w.now, conn, text.as_bytes());
            }
            // Frames already queued for it may still arrive: the channel's owed list stays.
            s.expected.remove(ch);
        }
        Op::Pub { slot, ch, id } => {
            let ch = CHANNELS[ch];
            let Some(s) = &w.clients[slot].session else { return };
            let conn = s.conn.unwrap();
            if s.sse {
                return; // SSE clients do not publish
            }
            let n = w.hub.stats().published;
            let text = match id {
                Some(id) => format!(r#"{{"op":"pub","ch":"{ch}","id":"m{id}","data":{n}}}"#),
                None => format!(r#"{{"op":"pub","ch":"{ch}","data":{n}}}"#),
            };
            w.hub.handle_envelope(w.now, conn, text.as_bytes());
            let published = w.hub.stats().published > n;
            if let Some(id) = id {
                let seen = if slot == SLOTS - 1 {
                    !w.anon_ids.entry(conn).or_default().insert(id)
                } else {
                    !w.clients[slot].ids.insert(id)
                };
                assert_eq!(published, !seen, "a repeated id never publishes twice");
            } else {
                assert!(published);
            }
        }
        Op::ServerPub { ch } => {
            let n = w.hub.stats().published;
            w.hub.publish_json(w.now, CHANNELS[ch], n.to_string().as_bytes()).unwrap();
        }
        Op::Disconnect { slot } => {
            if let Some(conn) = w.clients[slot].session.as_ref().and_then(|s| s.conn) {
                w.hub.disconnect(w.now, conn);
                w.end(slot);
            }
        }
        Op::Drain { slot, max } => w.drain(slot, max),
        Op::Advance { ms } => {
            w.now += Duration::from_millis(ms);
            if let Some(at) = w.hub.poll_timeout()
                && at <= w.now
            {
                w.hub.handle_timeout(w.now);
            }
        }
    }
}

/// Every session got, per channel, a prefix of what it was owed (all of it if it is
/// still connected and drained), so: exactly once, in order.
fn check_delivery(c: &Client, live: bool) {
    let sessions = c.done.iter().chain(c.session.iter());
    for s in sessions {
        for (ch, got) in &s.received {
            let owed = s.owed.get(ch).map_or(&[][..], Vec::as_slice);
            assert!(
                got.len() <= owed.len() && owed[..got.len()] == got[..],
                "{ch}: received {got:?}, owed {owed:?}"
            );
        }
        if live && !s.ended {
            for (ch, owed) in &s.owed {
                let got = s.received.get(ch).map_or(&[][..], Vec::as_slice);
                assert_eq!(got, &owed[..], "{ch}: a live, drained connection got everything");
            }
        }
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn every_message_is_delivered_once_in_order(
        ops in proptest::collection::vec(op(), 1..250),
        seed in any::<u64>(),
    ) {
        let mut w = World {
            hub: Hub::new(hub_config(), AllowAll, seed),
            now: Instant::now(),
            clients: (0..SLOTS).map(|_| Client::default()).collect(),
            anon_ids: HashMap::new(),
            ends: HashMap::new(),
        };
        for op in &ops {
            step(&mut w, op);
            w.events();
            for ch in CHANNELS {
                if let Some(log) = w.hub.log(ch) {
                    w.ends.insert(ch.to_owned(), log.head());
                }
            }
            w.check_bounds();
            for c in &w.clients {
                check_delivery(c, false);
            }
        }
        // The end: every live client reads everything.
        for slot in 0..SLOTS {
            w.drain(slot, usize::MAX);
        }
        w.events();
        for c in &w.clients {
            check_delivery(c, true);
        }
        // Nothing is left behind once everyone has gone and time has passed.
        for slot in 0..SLOTS {
            step(&mut w, &Op::Disconnect { slot });
        }
        w.now += Duration::from_secs(3600);
        w.hub.handle_timeout(w.now);
        w.events();
        prop_assert_eq!(w.hub.connection_count(), 0);
        prop_assert_eq!(w.hub.channel_count(), 0);
        prop_assert_eq!(w.hub.poll_timeout(), None);
    }
}
