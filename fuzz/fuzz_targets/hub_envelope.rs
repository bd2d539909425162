//! Arbitrary bytes as WebSocket text envelopes into `Hub::handle_envelope`, from several
//! connections with different principals under `DemoAuth` (users read `public:*` and
//! `chat:*` and write `chat:*`; anonymous clients read `public:*`), mixed with well-formed
//! and truncated envelopes, pulls, time and disconnects.
//!
//! Before each envelope the sender's queue is drained, so what it holds afterwards is the
//! answer to that envelope.
//!
//! Invariants: no panic; an envelope `ClientMessage::decode` refuses is answered with exactly
//! one `err` carrying the decoder's code and `ref`, and changes nothing else (connections,
//! memberships, logs, presence, other queues, counters, timers); so does any envelope whose
//! only answer is an `err` (a refused `sub` or `pub`) or a `pong`; every frame is a JSON
//! envelope of a known `op` (an SSE block for SSE connections); queues, channels per
//! connection, presence lists, channels and logs stay within their bounds.
#![no_main]

use std::collections::HashMap;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use serde_json::value::RawValue;
use tidewire::envelope::ClientMessage;
use tidewire::hub::{ConnId, DemoAuth, Hub, HubConfig, HubEvent, HubStats, Principal, Transport};
use tidewire::policy::{OutboxConfig, OutboxCounters, RateLimitConfig, SlowConsumer};
use tidewire::replay::{LogLimits, Position};
use tidewire::time::{Duration, Instant};

const CHANNELS: [&str; 8] = [
    "chat:a",
    "chat:b",
    "public:x",
    "admin:y",
    "",
    "chat:\u{7}",
    "public:0123456789012345678901234567890123456789",
    "d:feed",
];
const MAX_ITEMS: usize = 8;
const MAX_BYTES: usize = 2048;

#[derive(Arbitrary, Debug)]
enum Env {
    Sub { ch: u8, pos: Option<(bool, u64)>, reference: Option<u64>, id: bool },
    Unsub { ch: u8, reference: Option<u64>, pos: bool },
    Pub { ch: u8, id: Option<String>, data: u8, reference: Option<u64>, pos: bool },
    Ping { reference: Option<u64>, ch: bool },
    Unknown { op: String, reference: Option<u64> },
}

#[derive(Arbitrary, Debug)]
enum Op {
    Raw(u8, Vec<u8>),
    Envelope(u8, Env),
    /// An envelope cut after this many bytes.
    Cut(u8, Env, u8),
    Pull(u8, u8),
    Advance(u16),
    Disconnect(u8),
    Connect(u8, Option<u8>),
}

#[derive(Arbitrary, Debug)]
struct Input {
    rate_limit: Option<(u8, u8)>,
    seed: u64,
    ops: Vec<Op>,
}

fn quoted(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

/// The text of a well-formed (or deliberately ill-formed) envelope.
fn encode(env: &Env, hub: &Hub) -> String {
    let ch = |i: &u8| CHANNELS[usize::from(*i) % CHANNELS.len()];
    let reference = |r: &Option<u64>| r.map(|r| format!(",\"ref\":{r}")).unwrap_or_default();
    match env {
        Env::Sub { ch: c, pos, reference: r, id } => {
            let name = ch(c);
            let pos = pos.map(|(same, off)| {
                let ep = match hub.log(name) {
                    Some(log) if same => log.epoch().to_string(),
                    _ => format!("{:x}", off >> 8),
                };
                format!(",\"pos\":{{\"ep\":\"{ep}\",\"off\":{}}}", off % 64)
            });
            let id = if *id { ",\"id\":\"x\"" } else { "" };
            format!(
                "{{\"op\":\"sub\",\"ch\":{}{}{}{id}}}",
                quoted(name),
                pos.unwrap_or_default(),
                reference(r)
            )
        }
        Env::Unsub { ch: c, reference: r, pos } => {
            let pos = if *pos { ",\"pos\":{\"ep\":\"1\",\"off\":1}" } else { "" };
            format!("{{\"op\":\"unsub\",\"ch\":{}{}{pos}}}", quoted(ch(c)), reference(r))
        }
        Env::Pub { ch: c, id, data, reference: r, pos } => {
            let data = ["{\"t\":\"hi\"}", "1", "\"s\"", "[1,{\"a\":null}]", "null", "{"]
                [usize::from(*data) % 6];
            let id = id.as_ref().map(|i| format!(",\"id\":{}", quoted(i))).unwrap_or_default();
            let pos = if *pos { ",\"pos\":{\"ep\":\"1\",\"off\":1}" } else { "" };
            format!(
                "{{\"op\":\"pub\",\"ch\":{}{id},\"data\":{data}{}{pos}}}",
                quoted(ch(c)),
                reference(r)
            )
        }
        Env::Ping { reference: r, ch } => {
            let ch = if *ch { ",\"ch\":\"chat:a\"" } else { "" };
            format!("{{\"op\":\"ping\"{}{ch}}}", reference(r))
        }
        Env::Unknown { op, reference: r } => {
            format!("{{\"op\":{}{}}}", quoted(op), reference(r))
        }
    }
}

/// A connection: connected, its channels, its queue (frames, bytes) and counters.
type ConnView = (ConnId, bool, Vec<String>, Option<(usize, usize)>, Option<OutboxCounters>);
/// A channel: its log's head and length, members, presence.
type ChannelView = (String, Option<(Position, usize)>, Vec<ConnId>, Vec<String>);

/// Everything observable, except the queue of the connection `skip`.
#[derive(Debug, PartialEq)]
struct Snapshot {
    conns: Vec<ConnView>,
    channels: Vec<ChannelView>,
    counts: (usize, usize),
    stats: HubStats,
    timeout: Option<Instant>,
}

fn snapshot(hub: &Hub, conns: &[ConnId], skip: Option<ConnId>) -> Snapshot {
    Snapshot {
        conns: conns
            .iter()
            .map(|&c| {
                let mine = Some(c) == skip;
                (
                    c,
                    hub.is_connected(c),
                    hub.channels_of(c).map(str::to_owned).collect(),
                    if mine { None } else { hub.buffered(c) },
                    if mine { None } else { hub.counters(c) },
                )
            })
            .collect(),
        channels: CHANNELS
            .iter()
            .map(|&ch| {
                (
                    ch.to_owned(),
                    hub.log(ch).map(|l| (l.head(), l.len())),
                    hub.members(ch).collect(),
                    hub.presence(ch).map(str::to_owned).collect(),
                )
            })
            .collect(),
        counts: (hub.connection_count(), hub.channel_count()),
        stats: hub.stats(),
        timeout: hub.poll_timeout(),
    }
}

type Object = HashMap<String, Box<RawValue>>;

fn text(o: &Object, name: &str) -> Option<String> {
    serde_json::from_str(o.get(name)?.get()).ok()
}

/// Pulls every frame queued for `conn` and checks its shape; returns the WebSocket ones.
fn drain(hub: &mut Hub, conn: ConnId) -> Vec<Object> {
    let ws = hub.transport(conn) == Some(Transport::WebSocket);
    let mut out = Vec::new();
    while let Some(frame) = hub.pull(conn) {
        if !ws {
            let text = std::str::from_utf8(&frame).expect("SSE blocks are UTF-8");
            assert!(text.ends_with("\n\n") || text.ends_with('\n'), "not an SSE block: {text:?}");
            continue;
        }
        let o: Object = serde_json::from_slice(&frame).expect("a JSON object");
        let op = text(&o, "op").expect("an op");
        assert!(
            ["msg", "ack", "err", "subscribed", "presence", "pong"].contains(&op.as_str()),
            "op {op}"
        );
        if op == "err" {
            let code = text(&o, "code").expect("a code");
            assert!(
                [
                    "bad_json",
                    "unknown_op",
                    "bad_message",
                    "bad_channel",
                    "forbidden",
                    "too_many_channels",
                    "channel_limit",
                    "unknown_conn",
                ]
                .contains(&code.as_str()),
                "code {code}"
            );
        }
        out.push(o);
    }
    out
}

fn check_bounds(hub: &Hub, conns: &[ConnId], cfg: &HubConfig) {
    for &c in conns {
        if let Some((items, bytes)) = hub.buffered(c) {
            assert!(items <= 3 * MAX_ITEMS && bytes <= 3 * MAX_BYTES, "{items} items, {bytes} B");
        }
        assert!(hub.channels_of(c).count() <= cfg.max_channels_per_conn);
    }
    for ch in CHANNELS {
        assert!(hub.presence(ch).count() <= cfg.max_presence);
        if let Some(log) = hub.log(ch) {
            assert!(log.len() <= cfg.log.max_count);
        }
    }
    assert!(hub.channel_count() <= cfg.max_channels);
}

fuzz_target!(|input: Input| {
    let cfg = HubConfig {
        max_channels: 3,
        max_channel_name: 32,
        max_channels_per_conn: 2,
        max_presence: 2,
        presence_grace: Duration::from_millis(500),
        log: LogLimits { max_count: 4, max_bytes: 256, max_age: Duration::from_secs(5) },
        outbox: OutboxConfig {
            max_bytes: MAX_BYTES,
            max_items: MAX_ITEMS,
            ..OutboxConfig::default()
        },
        slow_consumers: vec![("d:".to_owned(), SlowConsumer::DropOldest)],
        rate_limit: input
            .rate_limit
            .map(|(r, b)| RateLimitConfig { rate_per_sec: u32::from(r), burst: u32::from(b) }),
        dedup_window: 8,
        max_id_len: 8,
        ..HubConfig::default()
    };
    let mut now = Instant::now();
    let mut hub = Hub::new(cfg.clone(), DemoAuth, input.seed);
    let mut conns = vec![
        hub.connect(now, Transport::WebSocket, Principal::user("ann")),
        hub.connect(now, Transport::WebSocket, Principal::user("bob")),
        hub.connect(now, Transport::WebSocket, Principal::anonymous()),
        hub.connect(now, Transport::Sse, Principal::user("ann")),
        hub.connect(now, Transport::Poll, Principal::anonymous()),
    ];
    for op in input.ops {
        let envelope = match &op {
            Op::Raw(c, bytes) => Some((*c, bytes.clone())),
            Op::Envelope(c, env) => Some((*c, encode(env, &hub).into_bytes())),
            Op::Cut(c, env, at) => {
                let mut b = encode(env, &hub).into_bytes();
                b.truncate(usize::from(*at));
                Some((*c, b))
            }
            Op::Pull(c, n) => {
                let c = conns[usize::from(*c) % conns.len()];
                for _ in 0..*n {
                    if hub.pull(c).is_none() {
                        break;
                    }
                }
                None
            }
            Op::Advance(ms) => {
                now += Duration::from_millis(u64::from(*ms));
                hub.handle_timeout(now);
                None
            }
            Op::Disconnect(c) => {
                hub.disconnect(now, conns[usize::from(*c) % conns.len()]);
                None
            }
            Op::Connect(t, user) => {
                if conns.len() < 8 {
                    let transport =
                        [Transport::WebSocket, Transport::Sse, Transport::Poll][usize::from(t % 3)];
                    let p = user
                        .map_or(Principal::anonymous(), |u| Principal::user(format!("u{}", u % 3)));
                    conns.push(hub.connect(now, transport, p));
                }
                None
            }
        };
        if let Some((c, bytes)) = envelope {
            let conn = conns[usize::from(c) % conns.len()];
            drain(&mut hub, conn);
            while hub.poll_event().is_some() {}
            let before = snapshot(&hub, &conns, Some(conn));
            let decoded = ClientMessage::decode(&bytes);
            hub.handle_envelope(now, conn, &bytes);
            let mut closed = false;
            while let Some(ev) = hub.poll_event() {
                closed |= matches!(ev, HubEvent::Close { conn: c, .. } if c == conn);
            }
            let frames = drain(&mut hub, conn);
            let ws = before.conns.iter().any(|(c, up, ..)| *c == conn && *up)
                && hub.transport(conn) == Some(Transport::WebSocket);
            if ws && !closed {
                let only = match frames.as_slice() {
                    [one] => text(one, "op"),
                    _ => None,
                };
                if let Err(e) = &decoded {
                    assert_eq!(only.as_deref(), Some("err"), "garbage not answered by one err");
                    let o = &frames[0];
                    assert_eq!(text(o, "code").as_deref(), Some(e.code));
                    let r = o.get("ref").map(|r| serde_json::from_str::<u64>(r.get()).unwrap());
                    assert_eq!(r, e.reference);
                }
                if matches!(only.as_deref(), Some("err" | "pong")) {
                    let after = snapshot(&hub, &conns, Some(conn));
                    assert_eq!(before, after, "a refused envelope changed the hub");
                }
            }
            if !ws {
                assert!(frames.is_empty(), "an answer to a non-WebSocket connection");
            }
        }
        while hub.poll_event().is_some() {}
        check_bounds(&hub, &conns, &cfg);
    }
});
