//! Unit tests of the Redis bus: virtual time, scripted Redis replies fed whole, byte by
//! byte and in random splits.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;

use super::resp::{Reply, ReplyReader};
use super::script::{HISTORY_LUA, PUBLISH_LUA, sha1_hex};
use super::*;
use crate::hub::{BusAction, BusHistory, BusToken, HubError};
use crate::policy::{BackoffConfig, Jitter};
use crate::replay::{Epoch, Position};
use crate::rng::Rng;
use crate::socket::{SockId, SocketAction};
use crate::time::{Duration, Instant};

#[derive(Clone, Copy, Debug)]
enum Split {
    Whole,
    Bytewise,
    Random(u64),
}

struct H {
    bus: RedisBus,
    now: Instant,
    split: Split,
    rng: Rng,
    cmd: SockId,
    sub: SockId,
    /// Commands written per socket, decoded.
    sent: HashMap<SockId, Vec<Vec<String>>>,
    events: Vec<RedisEvent>,
    actions: Vec<SocketAction>,
}

fn cfg() -> RedisConfig {
    RedisConfig {
        backoff: BackoffConfig {
            base: Duration::from_millis(100),
            cap: Duration::from_secs(1),
            jitter: Jitter::None,
            ..BackoffConfig::default()
        },
        log_max: 3,
        ..RedisConfig::default()
    }
}

fn decode_commands(bytes: &[u8]) -> Vec<Vec<String>> {
    let mut r = ReplyReader::new(usize::MAX);
    r.push(bytes).unwrap();
    let mut out = Vec::new();
    while let Some(Reply::Array(items)) = r.next_reply().unwrap() {
        out.push(
            items
                .iter()
                .map(|i| String::from_utf8_lossy(i.as_bytes().unwrap()).into_owned())
                .collect(),
        );
    }
    out
}

fn bulk(s: &str) -> String {
    format!("${}\r\n{s}\r\n", s.len())
}

fn arr(items: &[&str]) -> String {
    let mut s = format!("*{}\r\n", items.len());
    for i in items {
        s.push_str(&bulk(i));
    }
    s
}

impl H {
    fn new(split: Split) -> Self {
        let now = crate::time::test_epoch();
        let bus = RedisBus::new(cfg(), now);
        let mut h = Self {
            bus,
            now,
            split,
            rng: Rng::from_u64(if let Split::Random(seed) = split { seed } else { 7 }),
            cmd: SockId(u64::MAX),
            sub: SockId(u64::MAX),
            sent: HashMap::new(),
            events: Vec::new(),
            actions: Vec::new(),
        };
        h.drain();
        h
    }

    fn drain(&mut self) {
        while let Some(a) = self.bus.poll_action() {
            self.actions.push(a);
        }
        while let Some((sock, b)) = self.bus.poll_transmit() {
            self.sent.entry(sock).or_default().extend(decode_commands(&b));
        }
        while let Some(e) = self.bus.poll_event() {
            self.events.push(e);
        }
    }

    /// Takes the last two `Connect`s, connects both and answers their `PING`s.
    fn connect(&mut self) {
        let socks: Vec<SockId> = self
            .actions
            .iter()
            .filter_map(|a| match a {
                SocketAction::Connect { sock, host, port } => {
                    assert_eq!((host.as_str(), *port), ("127.0.0.1", 6379));
                    Some(*sock)
                }
                SocketAction::Close { .. } => None,
            })
            .collect();
        let [.., cmd, sub] = socks[..] else { panic!("no connects: {:?}", self.actions) };
        self.actions.clear();
        (self.cmd, self.sub) = (cmd, sub);
        self.bus.handle_connected(self.now, cmd);
        self.bus.handle_connected(self.now, sub);
        self.drain();
        for sock in [cmd, sub] {
            let mut sent = self.take(sock);
            assert_eq!(sent.remove(0), ["PING"]);
            if !sent.is_empty() {
                self.sent.insert(sock, sent);
            }
        }
        self.feed(cmd, "+PONG\r\n");
        assert!(!self.bus.is_up());
        self.feed(sub, "+PONG\r\n");
        assert!(self.bus.is_up());
    }

    fn take(&mut self, sock: SockId) -> Vec<Vec<String>> {
        self.sent.remove(&sock).unwrap_or_default()
    }

    fn feed(&mut self, sock: SockId, input: &str) {
        let b = input.as_bytes();
        match self.split {
            Split::Whole => self.bus.handle_read(self.now, sock, b),
            Split::Bytewise => b.chunks(1).for_each(|c| self.bus.handle_read(self.now, sock, c)),
            Split::Random(_) => {
                let mut at = 0;
                while at < b.len() {
                    let n = usize::try_from(self.rng.up_to(8)).unwrap() + 1;
                    let end = (at + n).min(b.len());
                    self.bus.handle_read(self.now, sock, &b[at..end]);
                    at = end;
                }
            }
        }
        self.drain();
    }

    fn exec(&mut self, a: BusAction) {
        self.bus.execute(self.now, a);
        self.drain();
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
        self.bus.handle_timeout(self.now);
        self.drain();
    }
}

fn splits() -> Vec<Split> {
    let mut v = vec![Split::Whole, Split::Bytewise];
    v.extend((1..6).map(Split::Random));
    v
}

fn publish(token: u64, ch: &str, data: &str, id: Option<&str>) -> BusAction {
    BusAction::Publish {
        token: BusToken(token),
        ch: Arc::from(ch),
        data: Bytes::copy_from_slice(data.as_bytes()),
        id: id.map(Into::into),
        epoch: Epoch(0xe1),
    }
}

fn pos(s: &str) -> Position {
    s.parse().unwrap()
}

/// Every scenario gives the same events whatever the input chunking.
fn same_for_all_splits(f: impl Fn(Split) -> Vec<RedisEvent>) -> Vec<RedisEvent> {
    let first = f(Split::Whole);
    for s in splits() {
        assert_eq!(f(s), first, "{s:?}");
    }
    first
}

#[test]
fn up_only_when_both_answer() {
    let mut h = H::new(Split::Whole);
    assert_eq!(h.bus.state(), RedisState::Connecting);
    assert_eq!(h.actions.len(), 2);
    h.connect();
    assert_eq!(h.events, [RedisEvent::Up]);
    // A PONG in subscribed form also counts (the pub/sub connection after a SUBSCRIBE).
    let mut h = H::new(Split::Whole);
    let (cmd, sub) = (SockId(0), SockId(1));
    h.bus.handle_connected(h.now, cmd);
    h.bus.handle_connected(h.now, sub);
    h.drain();
    h.feed(sub, &arr(&["pong", ""]));
    h.feed(cmd, "+PONG\r\n");
    assert_eq!(h.events, [RedisEvent::Up]);
}

#[test]
fn publish_translation_and_fifo_replies() {
    let events = same_for_all_splits(|split| {
        let mut h = H::new(split);
        h.connect();
        h.exec(publish(1, "room", "{\"a\":1}", Some("user:u:9")));
        h.exec(publish(2, "room", "2", None));
        let sent = h.take(h.cmd);
        let sha = sha1_hex(PUBLISH_LUA);
        assert_eq!(
            sent[0],
            [
                "EVALSHA",
                &sha,
                "3",
                "tw:room:meta",
                "tw:room:log",
                "tw#id:user:u:9",
                "e1",
                "{\"a\":1}",
                "3",
                "tw:room",
                "600"
            ]
        );
        assert_eq!(
            sent[1],
            ["EVALSHA", &sha, "2", "tw:room:meta", "tw:room:log", "e1", "2", "3", "tw:room", "600"]
        );
        assert_eq!(h.bus.pending_commands(), 2);
        h.feed(h.cmd, &format!("{}-ERR oops\r\n", bulk("e1:1")));
        assert_eq!(h.bus.pending_commands(), 0);
        h.events
    });
    assert_eq!(
        events[1..],
        [
            RedisEvent::Published { token: BusToken(1), result: Ok(pos("e1:1")) },
            RedisEvent::Published { token: BusToken(2), result: Err(HubError::Unavailable) },
        ]
    );
}

#[test]
fn follow_subscribes_first_then_loads_history() {
    let events = same_for_all_splits(|split| {
        let mut h = H::new(split);
        h.connect();
        h.exec(BusAction::Follow { ch: Arc::from("room"), epoch: Epoch(5), known: None });
        assert_eq!(h.take(h.sub), [["SUBSCRIBE", "tw:room"]]);
        assert!(h.take(h.cmd).is_empty(), "no history before the subscription is confirmed");
        // A live message may come right after the confirmation, before the history.
        h.feed(
            h.sub,
            &format!(
                "{}{}",
                "*3\r\n$9\r\nsubscribe\r\n$7\r\ntw:room\r\n:1\r\n",
                arr(&["message", "tw:room", "ab:3 {\"x\":3}"])
            ),
        );
        let sent = h.take(h.cmd);
        assert_eq!(sent.len(), 1);
        assert_eq!(
            sent[0][..5],
            [
                "EVALSHA".to_string(),
                sha1_hex(HISTORY_LUA),
                "2".into(),
                "tw:room:meta".into(),
                "tw:room:log".into()
            ]
        );
        assert_eq!(sent[0][5], "5", "the Follow's proposal");
        assert_eq!(sent[0][6..], ["3", "", "", ""]);
        h.feed(
            h.cmd,
            &format!("*3\r\n{}{}{}", bulk("ab"), bulk("2"), arr(&["1", "\"one\"", "2", "\"two\""])),
        );
        // Fetch after 1: from 2-0.
        h.exec(BusAction::Fetch { ch: Arc::from("room"), after: pos("ab:1") });
        let sent = h.take(h.cmd);
        assert_eq!(sent[0][6..], ["3", "2-0", "1", "ab"]);
        assert_ne!(sent[0][5], "ab", "a Fetch proposes a fresh epoch, never the one it holds");
        h.feed(
            h.cmd,
            &format!(
                "*3\r\n{}{}{}",
                bulk("ab"),
                bulk("3"),
                arr(&["2", "\"two\"", "3", "{\"x\":3}"])
            ),
        );
        // Messages of other channels, or not in the form, are ignored.
        h.feed(h.sub, &arr(&["message", "tw:other", "ab:1 1"]));
        h.feed(h.sub, &arr(&["message", "tw:room", "garbage"]));
        h.exec(BusAction::Unfollow { ch: Arc::from("room") });
        assert_eq!(h.take(h.sub), [["UNSUBSCRIBE", "tw:room"]]);
        h.feed(h.sub, "*3\r\n$11\r\nunsubscribe\r\n$7\r\ntw:room\r\n:0\r\n");
        h.feed(h.sub, &arr(&["message", "tw:room", "ab:4 4"]));
        assert!(h.bus.is_up());
        assert_eq!(h.bus.timeout_reason(), None);
        h.events
    });
    let d = |s: &str| Bytes::copy_from_slice(s.as_bytes());
    assert_eq!(
        events[1..],
        [
            RedisEvent::Message { ch: "room".into(), pos: pos("ab:3"), data: d("{\"x\":3}") },
            RedisEvent::History {
                ch: "room".into(),
                history: BusHistory {
                    epoch: Epoch(0xab),
                    head: 2,
                    entries: vec![(1, d("\"one\"")), (2, d("\"two\""))]
                },
            },
            RedisEvent::History {
                ch: "room".into(),
                history: BusHistory {
                    epoch: Epoch(0xab),
                    head: 3,
                    entries: vec![(2, d("\"two\"")), (3, d("{\"x\":3}"))]
                },
            },
        ]
    );
}

#[test]
fn noscript_falls_back_to_eval() {
    same_for_all_splits(|split| {
        let mut h = H::new(split);
        h.connect();
        h.exec(publish(1, "c", "1", None));
        h.exec(publish(2, "c", "2", None));
        assert_eq!(
            h.take(h.cmd).iter().map(|c| c[0].as_str()).collect::<Vec<_>>(),
            ["EVALSHA", "EVALSHA"]
        );
        let noscript = "-NOSCRIPT No matching script. Please use EVAL.\r\n";
        h.feed(h.cmd, &format!("{noscript}{noscript}"));
        let sent = h.take(h.cmd);
        assert_eq!(sent.len(), 2, "both resent, in order");
        assert_eq!(
            (sent[0][0].as_str(), sent[0][1].as_str(), sent[0][6].as_str()),
            ("EVAL", PUBLISH_LUA, "1")
        );
        assert_eq!((sent[1][0].as_str(), sent[1][6].as_str()), ("EVAL", "2"));
        h.feed(h.cmd, &format!("{}{}", bulk("e1:1"), bulk("e1:2")));
        h.exec(publish(3, "c", "3", None));
        assert_eq!(h.take(h.cmd)[0][0], "EVALSHA", "cached again");
        // NOSCRIPT to an EVAL is not Redis: the connection is dropped.
        h.feed(h.cmd, noscript);
        h.feed(h.cmd, noscript);
        assert!(!h.bus.is_up());
        h.events
    });
}

#[test]
fn down_fails_publishes_and_reconnects_with_backoff() {
    let mut h = H::new(Split::Whole);
    h.connect();
    h.exec(BusAction::Follow { ch: Arc::from("a"), epoch: Epoch(1), known: None });
    h.feed(h.sub, "*3\r\n$9\r\nsubscribe\r\n$4\r\ntw:a\r\n:1\r\n");
    h.exec(publish(1, "a", "1", None));
    h.events.clear();
    h.bus.handle_eof(h.now, h.cmd);
    h.drain();
    assert_eq!(
        h.events,
        [
            RedisEvent::Published { token: BusToken(1), result: Err(HubError::Unavailable) },
            RedisEvent::Down
        ]
    );
    assert_eq!(h.actions, [SocketAction::Close { sock: h.sub }], "the broken one needs no Close");
    assert_eq!(h.bus.state(), RedisState::Waiting);
    assert_eq!(
        h.bus.timeout_reason(),
        Some((RedisTimer::Reconnect, h.now + Duration::from_millis(100)))
    );
    // While down: publish fails at once, follows are remembered, fetches dropped.
    h.events.clear();
    h.exec(publish(2, "a", "2", None));
    h.exec(BusAction::Follow { ch: Arc::from("b"), epoch: Epoch(1), known: None });
    h.exec(BusAction::Fetch { ch: Arc::from("a"), after: pos("1:1") });
    assert_eq!(
        h.events,
        [RedisEvent::Published { token: BusToken(2), result: Err(HubError::Unavailable) }]
    );
    assert_eq!(h.bus.followed().collect::<Vec<_>>(), ["a", "b"]);
    // Spurious timeouts are no-ops; the attempt starts when due.
    h.advance(Duration::from_millis(50));
    assert!(h.actions.len() == 1);
    h.advance(Duration::from_millis(50));
    assert_eq!(h.bus.state(), RedisState::Connecting);
    // The attempt fails to connect: no second Down, a longer delay.
    let cmd = SockId(2);
    h.events.clear();
    h.bus.handle_error(h.now, cmd);
    h.drain();
    assert!(h.events.is_empty());
    assert_eq!(h.bus.timeout_reason().map(|t| t.1), Some(h.now + Duration::from_millis(200)));
    h.advance(Duration::from_millis(200));
    h.connect();
    assert_eq!(h.events, [RedisEvent::Up]);
    // Only the pub/sub side re-subscribes; the hub asks for histories after Up.
    assert_eq!(h.take(h.sub), [["SUBSCRIBE", "tw:a", "tw:b"]]);
    h.exec(BusAction::Follow { ch: Arc::from("a"), epoch: Epoch(1), known: None });
    assert!(h.take(h.cmd).is_empty());
    h.feed(h.sub, "*3\r\n$9\r\nsubscribe\r\n$4\r\ntw:a\r\n:1\r\n");
    assert_eq!(h.take(h.cmd).len(), 1, "history once the re-subscription is confirmed");
}

#[test]
fn timeouts_break_the_connection() {
    // No reply within the command timeout.
    let mut h = H::new(Split::Whole);
    h.connect();
    h.exec(publish(1, "a", "1", None));
    assert_eq!(h.bus.timeout_reason(), Some((RedisTimer::Reply, h.now + Duration::from_secs(5))));
    h.advance(Duration::from_secs(5));
    assert_eq!(
        h.events[1..],
        [
            RedisEvent::Published { token: BusToken(1), result: Err(HubError::Unavailable) },
            RedisEvent::Down
        ]
    );
    // A subscription that is never confirmed.
    let mut h = H::new(Split::Whole);
    h.connect();
    h.exec(BusAction::Follow { ch: Arc::from("a"), epoch: Epoch(1), known: None });
    h.advance(Duration::from_secs(5));
    assert_eq!(h.events, [RedisEvent::Up, RedisEvent::Down]);
    // Never connected: no Down, another attempt.
    let mut h = H::new(Split::Whole);
    assert_eq!(h.bus.timeout_reason(), Some((RedisTimer::Connect, h.now + Duration::from_secs(5))));
    h.advance(Duration::from_secs(5));
    assert!(h.events.is_empty());
    assert_eq!(h.bus.state(), RedisState::Waiting);
    h.advance(Duration::from_millis(100));
    assert_eq!(h.actions.iter().filter(|a| matches!(a, SocketAction::Connect { .. })).count(), 4);
}

#[test]
fn backoff_gives_up_when_configured() {
    let mut c = cfg();
    c.backoff.max_attempts = Some(2);
    let mut now = crate::time::test_epoch();
    let mut bus = RedisBus::new(c, now);
    for _ in 0..3 {
        let socks: Vec<SockId> = std::iter::from_fn(|| bus.poll_action())
            .filter_map(|a| match a {
                SocketAction::Connect { sock, .. } => Some(sock),
                SocketAction::Close { .. } => None,
            })
            .collect();
        assert_eq!(socks.len(), 2);
        bus.handle_error(now, socks[0]);
        if let Some(t) = bus.poll_timeout() {
            now = t;
            bus.handle_timeout(now);
        }
    }
    assert_eq!(bus.state(), RedisState::Exhausted);
    assert_eq!(bus.poll_timeout(), None);
}

#[test]
fn bad_input_breaks_the_connection() {
    let bad: [&str; 6] = [
        "hello\r\n",                                  // not RESP
        "+OK\r\n+OK\r\n",                             // a reply nobody asked for (after the PONG)
        &"*1\r\n".repeat(50_000),                     // nesting bomb
        "*3\r\n$4\r\nfoo!\r\n$1\r\na\r\n$1\r\nb\r\n", // unknown push on the pub/sub side
        "-ERR no\r\n",                                // an error to the PING
        ":12\r\n",                                    // not a reply the pub/sub connection sends
    ];
    for (i, input) in bad.iter().enumerate() {
        for on_sub in [false, true] {
            let mut h = H::new(Split::Whole);
            let (cmd, sub) = (SockId(0), SockId(1));
            h.bus.handle_connected(h.now, cmd);
            h.bus.handle_connected(h.now, sub);
            h.feed(if on_sub { sub } else { cmd }, "+PONG\r\n");
            h.feed(if on_sub { cmd } else { sub }, "+PONG\r\n");
            assert!(h.bus.is_up());
            h.feed(if on_sub { sub } else { cmd }, input);
            if i == 1 && on_sub {
                continue; // +OK is a reply shape the pub/sub side refuses too, checked below
            }
            assert_eq!(h.events, [RedisEvent::Up, RedisEvent::Down], "case {i} on_sub={on_sub}");
        }
    }
    // A history reply that is not one: broken.
    let mut h = H::new(Split::Whole);
    h.connect();
    h.exec(BusAction::Follow { ch: Arc::from("a"), epoch: Epoch(1), known: None });
    h.feed(h.sub, "*3\r\n$9\r\nsubscribe\r\n$4\r\ntw:a\r\n:1\r\n");
    h.feed(h.cmd, &bulk("a1:1"));
    assert_eq!(h.events, [RedisEvent::Up, RedisEvent::Down]);
    // More than max_reply_bytes without a whole reply.
    let mut c = cfg();
    c.max_reply_bytes = 64;
    let now = crate::time::test_epoch();
    let mut bus = RedisBus::new(c, now);
    bus.handle_connected(now, SockId(0));
    bus.handle_read(now, SockId(0), b"$1000\r\n");
    bus.handle_read(now, SockId(0), &[b'x'; 100]);
    assert_eq!(bus.state(), RedisState::Waiting);
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = Rng::from_u64(99);
    for round in 0..300 {
        let mut h = H::new(Split::Random(round));
        h.connect();
        h.exec(BusAction::Follow { ch: Arc::from("a"), epoch: Epoch(1), known: None });
        h.exec(publish(1, "a", "1", Some("x")));
        let mut buf = vec![0u8; usize::try_from(rng.up_to(64)).unwrap()];
        rng.fill(&mut buf);
        // Mix in RESP-looking bytes so the decoder gets further than the first byte.
        let prefix = ["*", "$", "+", ":", "-", "*3\r\n$7\r\nmessage\r\n$4\r\ntw:a\r\n$"]
            [usize::try_from(round % 6).unwrap()];
        let mut input = prefix.as_bytes().to_vec();
        input.extend_from_slice(&buf);
        let sock = if round % 2 == 0 { h.cmd } else { h.sub };
        h.bus.handle_read(h.now, sock, &input);
        h.drain();
        h.advance(Duration::from_secs(10));
    }
}

#[test]
fn publish_queue_is_bounded() {
    let mut c = cfg();
    c.max_pending = 2;
    let now = crate::time::test_epoch();
    let mut h = H::new(Split::Whole);
    h.bus = RedisBus::new(c, now);
    h.now = now;
    h.actions.clear();
    h.drain();
    h.connect();
    for t in 1..=3 {
        h.exec(publish(t, "a", "1", None));
    }
    assert_eq!(
        h.events[1..],
        [RedisEvent::Published { token: BusToken(3), result: Err(HubError::Unavailable) }]
    );
    assert_eq!(h.bus.pending_commands(), 2);
}
