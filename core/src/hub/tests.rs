//! Unit tests of the hub, one group per duty (issue 6). Virtual time from `test_epoch()`.

use serde_json::Value;

use super::*;
use crate::policy::outbox::{OutboxConfig, SlowConsumer};
use crate::policy::ratelimit::RateLimitConfig;
use crate::replay::{Epoch, LogLimits};
use crate::time::Duration;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn hub(cfg: HubConfig) -> (Hub, Instant) {
    (Hub::new(cfg, AllowAll, 7), crate::time::test_epoch())
}

fn raw(s: &str) -> Box<RawValue> {
    RawValue::from_string(s.to_owned()).unwrap()
}

/// Every frame queued for `conn`, as text.
pub(super) fn drain(h: &mut Hub, conn: ConnId) -> Vec<String> {
    std::iter::from_fn(|| h.pull(conn)).map(|b| String::from_utf8(b.to_vec()).unwrap()).collect()
}

/// Every frame queued for `conn`, as JSON envelopes.
pub(super) fn envelopes(h: &mut Hub, conn: ConnId) -> Vec<Value> {
    drain(h, conn).iter().map(|s| serde_json::from_str(s).unwrap()).collect()
}

pub(super) fn events(h: &mut Hub) -> Vec<HubEvent> {
    std::iter::from_fn(|| h.poll_event()).collect()
}

fn ops(v: &[Value]) -> Vec<&str> {
    v.iter().map(|e| e["op"].as_str().unwrap()).collect()
}

fn ws(h: &mut Hub, now: Instant, user: Option<&str>) -> ConnId {
    h.connect(
        now,
        Transport::WebSocket,
        Principal { user: user.map(str::to_owned), ..Principal::default() },
    )
}

fn send(h: &mut Hub, now: Instant, conn: ConnId, text: &str) {
    h.handle_envelope(now, conn, text.as_bytes());
}

// ---------------------------------------------------------------------------------------
// Connections

#[test]
fn connect_and_disconnect_clean_up_every_membership() {
    let (mut h, t0) = hub(HubConfig::default());
    let a = ws(&mut h, t0, Some("ann"));
    let b = ws(&mut h, t0, Some("bob"));
    assert_ne!(a, b);
    for ch in ["x", "y"] {
        h.subscribe(t0, a, ch, None).unwrap();
        h.subscribe(t0, b, ch, None).unwrap();
    }
    assert_eq!(h.channels_of(a).collect::<Vec<_>>(), ["x", "y"]);
    assert_eq!(h.presence("x").collect::<Vec<_>>(), ["ann", "bob"]);
    h.disconnect(t0, a);
    assert!(!h.is_connected(a) && h.pull(a).is_none());
    assert_eq!(h.members("x").collect::<Vec<_>>(), [b]);
    // Ann's presence lingers for the grace period, then leaves.
    assert_eq!(h.presence("y").count(), 2);
    assert_eq!(h.poll_timeout(), Some(t0 + secs(5)));
    events(&mut h);
    h.handle_timeout(t0 + secs(5));
    let left = events(&mut h);
    assert_eq!(left.len(), 2);
    assert!(left.iter().all(|e| matches!(e, HubEvent::Left { member, .. } if &**member == "ann")));
    assert_eq!(h.presence("y").collect::<Vec<_>>(), ["bob"]);
    // Disconnecting twice, or an unknown id, is a no-op; empty channels are dropped.
    h.disconnect(t0, a);
    h.disconnect(t0, b);
    h.handle_timeout(t0 + secs(10));
    assert_eq!((h.connection_count(), h.channel_count()), (0, 0));
    assert_eq!(h.poll_timeout(), None);
}

// ---------------------------------------------------------------------------------------
// Authorization

#[test]
fn forbidden_joins_and_publishes_change_nothing() {
    let t0 = crate::time::test_epoch();
    let mut h = Hub::new(HubConfig::default(), DemoAuth, 1);
    let anon = ws(&mut h, t0, None);
    let ann = ws(&mut h, t0, Some("ann"));
    send(&mut h, t0, anon, r#"{"op":"sub","ch":"chat:lobby","ref":3}"#);
    let got = envelopes(&mut h, anon);
    assert_eq!((got[0]["op"].as_str(), got[0]["code"].as_str()), (Some("err"), Some("forbidden")));
    assert_eq!(got[0]["ref"], 3);
    assert_eq!(h.channels_of(anon).count(), 0);
    assert_eq!(h.channel_count(), 0, "a refused join creates no channel");
    assert_eq!(h.subscribe(t0, anon, "chat:lobby", None), Err(HubError::Forbidden));
    send(&mut h, t0, anon, r#"{"op":"pub","ch":"public:x","data":1,"ref":4}"#);
    let got = envelopes(&mut h, anon);
    assert_eq!((got[0]["code"].as_str(), got[0]["ref"].as_u64()), (Some("forbidden"), Some(4)));
    assert!(h.log("public:x").is_none() && h.stats().published == 0);
    // What the demo allows.
    h.subscribe(t0, anon, "public:ticks", None).unwrap();
    send(&mut h, t0, ann, r#"{"op":"sub","ch":"chat:lobby"}"#);
    send(&mut h, t0, ann, r#"{"op":"pub","ch":"chat:lobby","data":"hi","ref":5}"#);
    // The broadcast (to ann too, a member) is queued before the ack.
    assert_eq!(ops(&envelopes(&mut h, ann)), ["subscribed", "presence", "msg", "ack"]);
    // The trusted publish is not checked.
    assert!(h.publish(t0, "admin:x", &raw("1")).is_ok());
}

#[test]
fn publishes_without_a_connection_are_checked_and_deduplicated() {
    let t0 = crate::time::test_epoch();
    let mut h = Hub::new(HubConfig::default(), DemoAuth, 1);
    let ann = Principal::user("ann");
    let anon = Principal::anonymous();
    assert!(h.authorize(&anon, "public:ticks", Access::Read));
    assert!(!h.authorize(&anon, "chat:lobby", Access::Read));
    assert!(h.authorize(&ann, "chat:lobby", Access::Write));
    assert!(!h.authorize(&ann, "public:ticks", Access::Write));
    assert_eq!(h.publish_as(t0, &anon, "chat:lobby", None, b"1"), Err(HubError::Forbidden));
    assert_eq!(h.publish_as(t0, &ann, "chat:lobby", None, b"{oops"), Err(HubError::BadJson));
    let first = h.publish_as(t0, &ann, "chat:lobby", Some("m-1"), b"\"hi\"").unwrap();
    // A retry over HTTP, then the same id over WebSocket: acked with the same position.
    assert_eq!(h.publish_as(t0, &ann, "chat:lobby", Some("m-1"), b"\"hi\""), Ok(first));
    let c = ws(&mut h, t0, Some("ann"));
    send(&mut h, t0, c, r#"{"op":"pub","ch":"chat:lobby","id":"m-1","data":"hi","ref":9}"#);
    let ack = &envelopes(&mut h, c)[0];
    assert_eq!((ack["op"].as_str(), ack["off"].as_u64()), (Some("ack"), Some(first.offset)));
    assert_eq!(h.log("chat:lobby").unwrap().len(), 1, "published once");
    // Another user's id is another message.
    let bob = Principal::user("bob");
    assert_ne!(h.publish_as(t0, &bob, "chat:lobby", Some("m-1"), b"2").unwrap(), first);
}

// ---------------------------------------------------------------------------------------
// Replay

#[test]
fn a_position_brings_exactly_the_missed_messages_after_subscribed() {
    let (mut h, t0) = hub(HubConfig::default());
    let p1 = h.publish(t0, "c", &raw(r#"{"n":1}"#)).unwrap();
    for n in 2..=4 {
        h.publish(t0, "c", &raw(&format!(r#"{{"n":{n}}}"#))).unwrap();
    }
    let a = ws(&mut h, t0, None);
    let sub = format!(r#"{{"op":"sub","ch":"c","pos":{{"ep":"{}","off":2}}}}"#, p1.epoch);
    send(&mut h, t0, a, &sub);
    let got = envelopes(&mut h, a);
    assert_eq!(ops(&got), ["subscribed", "msg", "msg"]);
    assert_eq!(got[0]["recovered"], true);
    assert_eq!(got[0]["off"], 4, "subscribed carries the head");
    assert_eq!(got[0]["ep"], p1.epoch.to_string());
    assert_eq!((got[1]["off"].as_u64(), got[2]["off"].as_u64()), (Some(3), Some(4)));
    assert_eq!(got[2]["data"]["n"], 4);
    // Live messages follow.
    h.publish(t0, "c", &raw("5")).unwrap();
    assert_eq!(envelopes(&mut h, a)[0]["off"], 5);
    // Without a position: the head, nothing replayed.
    let b = ws(&mut h, t0, None);
    let s = h.subscribe(t0, b, "c", None).unwrap();
    assert_eq!(
        s,
        Subscription {
            pos: Position { epoch: p1.epoch, offset: 5 },
            recovered: true,
            replayed: 0,
            pending: false,
            awaiting: None,
        }
    );
    assert_eq!(ops(&envelopes(&mut h, b)), ["subscribed"]);
}

#[test]
fn a_gone_position_is_told_never_partially_replayed() {
    let cfg = HubConfig {
        log: LogLimits { max_count: 2, ..LogLimits::default() },
        ..HubConfig::default()
    };
    let (mut h, t0) = hub(cfg);
    let p1 = h.publish(t0, "c", &raw("1")).unwrap();
    for n in 2..=5 {
        h.publish(t0, "c", &raw(&n.to_string())).unwrap();
    }
    let head = Position { epoch: p1.epoch, offset: 5 };
    let cases = [
        Position { epoch: p1.epoch, offset: 1 },     // trimmed
        Position { epoch: Epoch(12345), offset: 4 }, // another epoch
        Position { epoch: p1.epoch, offset: 9 },     // ahead
    ];
    for pos in cases {
        let a = ws(&mut h, t0, None);
        let s = h.subscribe(t0, a, "c", Some(pos)).unwrap();
        assert_eq!(
            s,
            Subscription {
                pos: head,
                recovered: false,
                replayed: 0,
                pending: false,
                awaiting: None
            },
            "{pos}"
        );
        let got = envelopes(&mut h, a);
        assert_eq!(ops(&got), ["subscribed"]);
        assert_eq!((got[0]["recovered"].as_bool(), got[0]["off"].as_u64()), (Some(false), Some(5)));
    }
    // Offset 3 is still served: 4 and 5 are retained.
    let a = ws(&mut h, t0, None);
    let s = h.subscribe(t0, a, "c", Some(Position { epoch: p1.epoch, offset: 3 })).unwrap();
    assert_eq!((s.recovered, s.replayed), (true, 2));
}

#[test]
fn sse_subscriptions_replay_reset_or_learn_the_head() {
    let (mut h, t0) = hub(HubConfig::default());
    let p1 = h.publish(t0, "ticks", &raw(r#"{"n":1}"#)).unwrap();
    h.publish(t0, "ticks", &raw(r#"{"n":2}"#)).unwrap();
    let ep = p1.epoch;
    let s = h.connect(t0, Transport::Sse, Principal::anonymous());
    assert_eq!(h.subscribe(t0, s, "ticks", Some(p1)).unwrap().replayed, 1);
    assert_eq!(drain(&mut h, s), [format!("id: {ep}:2\nevent: ticks\ndata: {{\"n\":2}}\n\n")]);
    h.publish(t0, "ticks", &raw("3")).unwrap();
    assert_eq!(drain(&mut h, s), [format!("id: {ep}:3\nevent: ticks\ndata: 3\n\n")]);

    let gone = h.connect(t0, Transport::Sse, Principal::anonymous());
    let old = Position { epoch: Epoch(99), offset: 1 };
    assert!(!h.subscribe(t0, gone, "ticks", Some(old)).unwrap().recovered);
    let want = format!(
        "id: {ep}:3\nevent: reset\ndata: {{\"ch\":\"ticks\",\"pos\":\"{ep}:3\",\"recovered\":false}}\n\n"
    );
    assert_eq!(drain(&mut h, gone), [want]);

    let fresh = h.connect(t0, Transport::Sse, Principal::anonymous());
    h.subscribe(t0, fresh, "ticks", None).unwrap();
    assert_eq!(drain(&mut h, fresh), [format!("id: {ep}:3\n\n")]);
}

#[test]
fn polling_reads_the_log_and_queues_nothing() {
    let (mut h, t0) = hub(HubConfig::default());
    let p = h.connect(t0, Transport::Poll, Principal::user("ann"));
    let s = h.subscribe(t0, p, "c", None).unwrap();
    let pos = h.publish(t0, "c", &raw("1")).unwrap();
    assert_eq!(h.poll_ready(), None);
    assert!(h.pull(p).is_none());
    let missed: Vec<_> = h.log("c").unwrap().since(s.pos).unwrap().map(|(p, _)| p).collect();
    assert_eq!(missed, [pos]);
    assert!(events(&mut h).contains(&HubEvent::Published { ch: Arc::from("c"), pos }));
    assert_eq!(h.presence("c").collect::<Vec<_>>(), ["ann"]);
}

// ---------------------------------------------------------------------------------------
// Publishing

#[test]
fn client_ids_make_publishes_idempotent() {
    let (mut h, t0) = hub(HubConfig::default());
    let a = ws(&mut h, t0, Some("ann"));
    let pub1 = r#"{"op":"pub","ch":"c","id":"m1","data":1,"ref":1}"#;
    send(&mut h, t0, a, pub1);
    send(&mut h, t0, a, pub1);
    let acks = envelopes(&mut h, a);
    assert_eq!(ops(&acks), ["ack", "ack"]);
    assert_eq!(acks[0], acks[1], "a duplicate is acked again at the same position");
    assert_eq!(h.log("c").unwrap().len(), 1);
    assert_eq!(h.stats().duplicates, 1);
    // The same user on a new connection: still a duplicate (a retry after a reconnect).
    h.disconnect(t0, a);
    let a2 = ws(&mut h, t0, Some("ann"));
    send(&mut h, t0, a2, pub1);
    assert_eq!(envelopes(&mut h, a2)[0], acks[0]);
    // Another principal's id is another message; anonymous ids are per connection.
    let b = ws(&mut h, t0, Some("bob"));
    send(&mut h, t0, b, pub1);
    let x = ws(&mut h, t0, None);
    let y = ws(&mut h, t0, None);
    send(&mut h, t0, x, pub1);
    send(&mut h, t0, x, pub1);
    send(&mut h, t0, y, pub1);
    assert_eq!(h.log("c").unwrap().len(), 4);
    // No id: every publish counts.
    send(&mut h, t0, b, r#"{"op":"pub","ch":"c","data":1}"#);
    send(&mut h, t0, b, r#"{"op":"pub","ch":"c","data":1}"#);
    assert_eq!(h.log("c").unwrap().len(), 6);
    // Ids are bounded in length.
    let long = format!(r#"{{"op":"pub","ch":"c","id":"{}","data":1,"ref":9}}"#, "x".repeat(129));
    send(&mut h, t0, b, &long);
    let got = envelopes(&mut h, b);
    assert_eq!(got.last().unwrap()["code"], "bad_message");
}

#[test]
fn the_dedup_window_is_bounded() {
    let cfg = HubConfig { dedup_window: 4, ..HubConfig::default() };
    let (mut h, t0) = hub(cfg);
    let a = ws(&mut h, t0, Some("ann"));
    for i in 0..50 {
        send(&mut h, t0, a, &format!(r#"{{"op":"pub","ch":"c","id":"m{i}","data":1}}"#));
    }
    assert!(h.dedup.len() <= 4 && h.dedup_pos.len() <= 8);
    // The oldest id is forgotten: it publishes again; a recent one does not.
    send(&mut h, t0, a, r#"{"op":"pub","ch":"c","id":"m0","data":1}"#);
    send(&mut h, t0, a, r#"{"op":"pub","ch":"c","id":"m49","data":1}"#);
    assert_eq!(h.log("c").unwrap().head().offset, 51);
}

#[test]
fn broadcast_encodes_once_per_format_and_shares_the_bytes() {
    let (mut h, t0) = hub(HubConfig::default());
    let w1 = ws(&mut h, t0, None);
    let w2 = ws(&mut h, t0, None);
    let s1 = h.connect(t0, Transport::Sse, Principal::anonymous());
    let s2 = h.connect(t0, Transport::Sse, Principal::anonymous());
    for c in [w1, w2, s1, s2] {
        h.subscribe(t0, c, "c", None).unwrap();
        drain(&mut h, c);
    }
    h.publish(t0, "c", &raw(r#"{"big":"payload"}"#)).unwrap();
    let (a, b) = (h.pull(w1).unwrap(), h.pull(w2).unwrap());
    let (c, d) = (h.pull(s1).unwrap(), h.pull(s2).unwrap());
    assert_eq!(a.as_ptr(), b.as_ptr(), "one WebSocket encoding");
    assert_eq!(c.as_ptr(), d.as_ptr(), "one SSE encoding");
    assert!(a.starts_with(br#"{"op":"msg""#) && c.starts_with(b"id: "));
}

#[test]
fn trusted_publish_checks_names_and_the_channel_bound() {
    let cfg = HubConfig { max_channels: 2, max_channel_name: 8, ..HubConfig::default() };
    let (mut h, t0) = hub(cfg);
    for bad in ["", "a\nb", "toolong:x"] {
        assert_eq!(h.publish(t0, bad, &raw("1")), Err(HubError::BadChannel), "{bad:?}");
    }
    h.publish(t0, "a", &raw("1")).unwrap();
    assert_eq!(h.publish_json(t0, "b", b"{\"x\":"), Err(HubError::BadJson));
    assert_eq!(h.publish_json(t0, "b", b" [1, 2] ").map(|p| p.offset), Ok(1));
    assert_eq!(h.publish(t0, "c", &raw("1")), Err(HubError::ChannelLimit));
    let w = ws(&mut h, t0, None);
    send(&mut h, t0, w, r#"{"op":"sub","ch":"c","ref":2}"#);
    assert_eq!(envelopes(&mut h, w)[0]["code"], "channel_limit");
    // Messages age out of the log; the idle channels go, freeing room.
    assert_eq!(h.poll_timeout(), Some(t0 + secs(120)));
    h.handle_timeout(t0 + secs(120));
    assert_eq!(h.channel_count(), 0);
    h.publish(t0 + secs(120), "c", &raw("1")).unwrap();
}

// ---------------------------------------------------------------------------------------
// Outbox policies and rate limit

fn small_outbox(rules: Vec<(String, SlowConsumer)>) -> HubConfig {
    HubConfig {
        outbox: OutboxConfig { max_bytes: 1 << 20, max_items: 3, ..OutboxConfig::default() },
        slow_consumers: rules,
        ..HubConfig::default()
    }
}

#[test]
fn a_slow_consumer_is_closed_with_4100_by_default() {
    let (mut h, t0) = hub(small_outbox(vec![]));
    let slow = ws(&mut h, t0, None);
    let fast = ws(&mut h, t0, None);
    h.subscribe(t0, slow, "c", None).unwrap(); // `subscribed` queued: 1 of 3
    h.subscribe(t0, fast, "c", None).unwrap();
    for n in 0..3 {
        h.publish(t0, "c", &raw(&n.to_string())).unwrap();
        drain(&mut h, fast);
    }
    let evs = events(&mut h);
    assert!(evs.contains(&HubEvent::Close {
        conn: slow,
        code: CloseCode::TOO_SLOW,
        reason: "too slow"
    }));
    assert!(!h.is_connected(slow) && h.pull(slow).is_none());
    assert_eq!(h.members("c").collect::<Vec<_>>(), [fast]);
    assert_eq!(h.stats().too_slow, 1);
}

#[test]
fn drop_oldest_and_conflate_keep_the_connection() {
    let rules =
        vec![("feed:".into(), SlowConsumer::DropOldest), ("dash:".into(), SlowConsumer::Conflate)];
    let (mut h, t0) = hub(small_outbox(rules));
    let a = ws(&mut h, t0, None);
    h.subscribe(t0, a, "feed:x", None).unwrap();
    h.subscribe(t0, a, "dash:cpu", None).unwrap();
    h.subscribe(t0, a, "dash:mem", None).unwrap();
    drain(&mut h, a);
    for n in 1..=5 {
        h.publish(t0, "feed:x", &raw(&n.to_string())).unwrap();
        h.publish(t0, "dash:cpu", &raw(&n.to_string())).unwrap();
    }
    h.publish(t0, "dash:mem", &raw("40")).unwrap();
    assert!(h.is_connected(a));
    let got = envelopes(&mut h, a);
    let of = |ch: &str| -> Vec<u64> {
        got.iter().filter(|e| e["ch"] == ch).map(|e| e["data"].as_u64().unwrap()).collect()
    };
    assert_eq!(of("feed:x"), [3, 4, 5], "the oldest were dropped");
    assert_eq!(of("dash:cpu"), [5], "the latest value wins");
    assert_eq!(of("dash:mem"), [40]);
    let c = h.counters(a).unwrap();
    assert_eq!((c.dropped, c.conflated), (2, 4));
}

#[test]
fn inbound_rate_limit_closes_with_1008() {
    let cfg = HubConfig {
        rate_limit: Some(RateLimitConfig { rate_per_sec: 1, burst: 3 }),
        ..HubConfig::default()
    };
    let (mut h, t0) = hub(cfg);
    let a = ws(&mut h, t0, None);
    for _ in 0..3 {
        send(&mut h, t0, a, r#"{"op":"ping"}"#);
    }
    assert!(h.is_connected(a));
    send(&mut h, t0 + secs(1), a, r#"{"op":"ping"}"#); // one token refilled
    send(&mut h, t0 + secs(1), a, r#"{"op":"ping"}"#);
    let evs = events(&mut h);
    assert_eq!(
        evs,
        [HubEvent::Close { conn: a, code: CloseCode::POLICY, reason: "rate limit exceeded" }]
    );
    assert!(!h.is_connected(a));
    assert_eq!(h.stats().rate_limited, 1);
}

// ---------------------------------------------------------------------------------------
// Presence

#[test]
fn presence_announces_joins_and_leaves() {
    let (mut h, t0) = hub(HubConfig::default());
    let a = ws(&mut h, t0, Some("ann"));
    let b = ws(&mut h, t0, Some("bob"));
    h.subscribe(t0, a, "r", None).unwrap();
    assert_eq!(events(&mut h), [HubEvent::Joined { ch: Arc::from("r"), member: Arc::from("ann") }]);
    drain(&mut h, a);
    h.subscribe(t0, b, "r", None).unwrap();
    let to_b = envelopes(&mut h, b);
    assert_eq!(
        to_b[1],
        serde_json::json!({"op":"presence","ch":"r","join":["ann","bob"],"leave":[]})
    );
    let to_a = envelopes(&mut h, a);
    assert_eq!(to_a, [serde_json::json!({"op":"presence","ch":"r","join":["bob"],"leave":[]})]);
    // An explicit unsub leaves at once.
    events(&mut h);
    assert!(h.unsubscribe(t0, b, "r"));
    assert!(!h.unsubscribe(t0, b, "r"));
    assert_eq!(events(&mut h), [HubEvent::Left { ch: Arc::from("r"), member: Arc::from("bob") }]);
    assert_eq!(envelopes(&mut h, a)[0]["leave"], serde_json::json!(["bob"]));
    // Anonymous members have no presence; a named one can be set.
    let x = ws(&mut h, t0, None);
    h.subscribe(t0, x, "r", None).unwrap();
    assert_eq!(h.presence("r").collect::<Vec<_>>(), ["ann"]);
    assert!(h.set_presence_name(x, Some("guest-1")));
    h.subscribe(t0, x, "r2", None).unwrap();
    assert_eq!(h.presence("r2").collect::<Vec<_>>(), ["guest-1"]);
}

#[test]
fn a_quick_reconnect_shows_no_flicker() {
    let (mut h, t0) = hub(HubConfig::default());
    let watcher = ws(&mut h, t0, Some("wes"));
    let a = ws(&mut h, t0, Some("ann"));
    h.subscribe(t0, watcher, "r", None).unwrap();
    h.subscribe(t0, a, "r", None).unwrap();
    drain(&mut h, watcher);
    events(&mut h);
    h.disconnect(t0 + secs(1), a);
    let a2 = ws(&mut h, t0 + secs(3), Some("ann"));
    h.subscribe(t0 + secs(3), a2, "r", None).unwrap();
    h.handle_timeout(t0 + secs(10));
    assert_eq!(events(&mut h), [], "no leave, no join");
    assert!(drain(&mut h, watcher).is_empty());
    // Two tabs: ann leaves only when the last one has been gone for the grace period.
    let a3 = ws(&mut h, t0 + secs(10), Some("ann"));
    h.subscribe(t0 + secs(10), a3, "r", None).unwrap();
    h.disconnect(t0 + secs(10), a2);
    h.handle_timeout(t0 + secs(20));
    assert_eq!(events(&mut h), []);
    h.disconnect(t0 + secs(20), a3);
    h.handle_timeout(t0 + secs(24));
    assert_eq!(events(&mut h), []);
    h.handle_timeout(t0 + secs(25));
    assert_eq!(events(&mut h), [HubEvent::Left { ch: Arc::from("r"), member: Arc::from("ann") }]);
}

#[test]
fn channels_per_connection_and_presence_lists_are_bounded() {
    let cfg = HubConfig { max_channels_per_conn: 2, max_presence: 1, ..HubConfig::default() };
    let (mut h, t0) = hub(cfg);
    let a = ws(&mut h, t0, Some("ann"));
    send(&mut h, t0, a, r#"{"op":"sub","ch":"x"}"#);
    send(&mut h, t0, a, r#"{"op":"sub","ch":"y"}"#);
    send(&mut h, t0, a, r#"{"op":"sub","ch":"z","ref":1}"#);
    let last = envelopes(&mut h, a).pop().unwrap();
    assert_eq!((last["code"].as_str(), last["ref"].as_u64()), (Some("too_many_channels"), Some(1)));
    assert_eq!(h.channels_of(a).count(), 2);
    // A repeated sub is answered and changes nothing.
    send(&mut h, t0, a, r#"{"op":"sub","ch":"x"}"#);
    assert_eq!(ops(&envelopes(&mut h, a)), ["subscribed"]);
    // The presence list of x is full: bob is a member without an entry.
    let b = ws(&mut h, t0, Some("bob"));
    h.subscribe(t0, b, "x", None).unwrap();
    assert_eq!(h.members("x").count(), 2);
    assert_eq!(h.presence("x").collect::<Vec<_>>(), ["ann"]);
    // When bob leaves, ann (who holds the only entry) stays.
    h.disconnect(t0, b);
    h.handle_timeout(t0 + secs(60));
    assert_eq!(h.presence("x").collect::<Vec<_>>(), ["ann"]);
}

// ---------------------------------------------------------------------------------------
// Heartbeats: polling clients expire

#[test]
fn polling_clients_expire_when_they_stop_polling() {
    let (mut h, t0) = hub(HubConfig::default());
    let p = h.connect(t0, Transport::Poll, Principal::user("ann"));
    h.subscribe(t0, p, "r", None).unwrap();
    assert_eq!(h.poll_timeout(), Some(t0 + secs(60)));
    h.touch(t0 + secs(50), p);
    h.handle_timeout(t0 + secs(60)); // spurious: it polled at 50
    assert!(h.is_connected(p));
    events(&mut h);
    h.handle_timeout(t0 + secs(110));
    assert_eq!(events(&mut h), [HubEvent::Expired { conn: p }]);
    assert!(!h.is_connected(p));
    assert_eq!(h.presence("r").count(), 1, "in grace");
    h.handle_timeout(t0 + secs(115));
    assert_eq!(events(&mut h), [HubEvent::Left { ch: Arc::from("r"), member: Arc::from("ann") }]);
    assert_eq!(h.stats().expired, 1);
}

// ---------------------------------------------------------------------------------------
// Envelopes

#[test]
fn malformed_envelopes_get_an_err_and_change_nothing() {
    let (mut h, t0) = hub(HubConfig::default());
    let a = ws(&mut h, t0, None);
    let cases = [
        ("not json", "bad_json", None),
        (r#"{"op":"dance","ref":4}"#, "unknown_op", Some(4)),
        (r#"{"op":"sub","ref":6}"#, "bad_message", Some(6)),
        (r#"{"op":"pub","ch":"a","ref":8}"#, "bad_message", Some(8)),
        (r#"{"op":"sub","ch":"","ref":9}"#, "bad_channel", Some(9)),
        (r#"{"op":"pub","ch":"a\nb","data":1,"ref":10}"#, "bad_channel", Some(10)),
    ];
    for (input, code, reference) in cases {
        send(&mut h, t0, a, input);
        let got = envelopes(&mut h, a);
        assert_eq!(got.len(), 1, "{input}");
        assert_eq!(got[0]["op"], "err");
        assert_eq!(got[0]["code"], code, "{input}");
        assert_eq!(got[0]["ref"].as_u64(), reference, "{input}");
        assert!(!got[0]["msg"].as_str().unwrap().is_empty());
    }
    assert_eq!((h.channel_count(), h.channels_of(a).count(), h.stats().published), (0, 0, 0));
    send(&mut h, t0, a, r#"{"op":"ping","ref":2}"#);
    assert_eq!(envelopes(&mut h, a), [serde_json::json!({"op":"pong","ref":2})]);
    // Envelopes on another transport, or for an unknown connection, are ignored.
    let s = h.connect(t0, Transport::Sse, Principal::anonymous());
    send(&mut h, t0, s, r#"{"op":"sub","ch":"a"}"#);
    send(&mut h, t0, ConnId(999), r#"{"op":"sub","ch":"a"}"#);
    assert_eq!(h.channel_count(), 0);
    assert_eq!(h.subscribe(t0, ConnId(999), "a", None), Err(HubError::UnknownConn));
}

#[test]
fn unsub_leaves_without_an_answer() {
    let (mut h, t0) = hub(HubConfig::default());
    let a = ws(&mut h, t0, None);
    send(&mut h, t0, a, r#"{"op":"sub","ch":"c"}"#);
    send(&mut h, t0, a, r#"{"op":"unsub","ch":"c"}"#);
    assert_eq!(ops(&envelopes(&mut h, a)), ["subscribed"]);
    h.publish(t0, "c", &raw("1")).unwrap();
    assert!(h.pull(a).is_none());
}

// ---------------------------------------------------------------------------------------
// Outputs and time

#[test]
fn poll_ready_names_a_connection_once_per_new_frames() {
    let (mut h, t0) = hub(HubConfig::default());
    let a = ws(&mut h, t0, None);
    let b = ws(&mut h, t0, None);
    assert_eq!(h.poll_ready(), None);
    h.subscribe(t0, a, "c", None).unwrap();
    h.subscribe(t0, b, "c", None).unwrap();
    h.publish(t0, "c", &raw("1")).unwrap();
    assert_eq!((h.poll_ready(), h.poll_ready(), h.poll_ready()), (Some(a), Some(b), None));
    assert_eq!(h.buffered(a).map(|(n, _)| n), Some(2));
    let _ = h.pull(a); // the adapter's transport filled up after one frame
    h.publish(t0, "c", &raw("2")).unwrap();
    assert_eq!((h.poll_ready(), h.poll_ready(), h.poll_ready()), (Some(a), Some(b), None));
    assert_eq!(drain(&mut h, a).len(), 2);
    // A connection that went away is skipped.
    h.publish(t0, "c", &raw("3")).unwrap();
    h.disconnect(t0, a);
    assert_eq!((h.poll_ready(), h.poll_ready()), (Some(b), None));
}

#[test]
fn time_going_backwards_is_clamped() {
    let (mut h, t0) = hub(HubConfig::default());
    let p = h.connect(t0 + secs(100), Transport::Poll, Principal::anonymous());
    h.touch(t0, p); // older than what was seen: counts as t0 + 100
    assert_eq!(h.poll_timeout(), Some(t0 + secs(160)));
    h.handle_timeout(t0);
    h.publish(t0, "c", &raw("1")).unwrap();
    assert!(h.is_connected(p));
}

#[test]
fn a_hub_is_send_so_adapters_can_share_it() {
    fn send<T: Send>() {}
    send::<Hub>();
}

#[test]
fn ten_thousand_connections_share_one_encoding() {
    let (mut h, t0) = hub(HubConfig::default());
    let conns: Vec<ConnId> = (0..10_000)
        .map(|i| {
            let t = if i % 2 == 0 { Transport::WebSocket } else { Transport::Sse };
            let c = h.connect(t0, t, Principal::anonymous());
            h.subscribe(t0, c, "public:ticks", None).unwrap();
            drain(&mut h, c);
            c
        })
        .collect();
    h.publish(t0, "public:ticks", &raw(r#"{"n":1}"#)).unwrap();
    let mut ready = 0;
    while h.poll_ready().is_some() {
        ready += 1;
    }
    assert_eq!(ready, 10_000);
    let frames: Vec<Bytes> = conns.iter().map(|&c| h.pull(c).unwrap()).collect();
    assert!(frames.iter().step_by(2).all(|f| f.as_ptr() == frames[0].as_ptr()));
    assert!(frames.iter().skip(1).step_by(2).all(|f| f.as_ptr() == frames[1].as_ptr()));
    for &c in &conns {
        h.disconnect(t0, c);
    }
    assert_eq!(h.connection_count(), 0);
    assert_eq!(h.members("public:ticks").count(), 0);
}

#[test]
fn a_channel_dropped_while_idle_keeps_its_epoch_when_used_again() {
    let mut cfg = HubConfig::default();
    cfg.log.max_age = secs(60);
    let (mut h, now) = hub(cfg);
    let a = ws(&mut h, now, Some("ann"));
    // Never published: subscribe, leave, come back.
    let first = h.subscribe(now, a, "quiet", None).unwrap();
    let _ = first;
    let e1 = h.log("quiet").unwrap().epoch();
    assert!(h.unsubscribe(now, a, "quiet"));
    assert!(h.log("quiet").is_none(), "dropped while idle");
    let start = Position::start(e1);
    let sub = h.subscribe(now, a, "quiet", Some(start)).unwrap();
    assert!(sub.recovered, "a client at EPOCH:0 is not sent to refetch");
    assert_eq!(h.log("quiet").unwrap().epoch(), e1);

    // Published, trimmed by age, dropped: it goes on at its head in the same epoch.
    let p = h.publish(now, "quiet", &raw("1")).unwrap();
    assert!(h.unsubscribe(now, a, "quiet"));
    let later = now + secs(61);
    h.handle_timeout(later);
    assert!(h.log("quiet").is_none());
    let sub = h.subscribe(later, a, "quiet", Some(p)).unwrap();
    assert!(sub.recovered, "up to date before the drop, up to date after");
    let next = h.publish(later, "quiet", &raw("2")).unwrap();
    assert_eq!((next.epoch, next.offset), (p.epoch, p.offset + 1));
    // A client that had missed the trimmed message must refetch.
    assert!(h.unsubscribe(later, a, "quiet"));
    let b = ws(&mut h, later, Some("bob"));
    let sub = h.subscribe(later, b, "quiet", Some(start)).unwrap();
    assert!(!sub.recovered);
}

// ---------------------------------------------------------------------------------------
// Who said it

#[test]
fn messages_carry_their_publisher_on_every_transport_and_in_replays() {
    let (mut h, t0) = hub(HubConfig::default());
    let ann = ws(&mut h, t0, Some("ann"));
    let w1 = ws(&mut h, t0, Some("bob"));
    let w2 = ws(&mut h, t0, None);
    let s1 = h.connect(t0, Transport::Sse, Principal::anonymous());
    let s2 = h.connect(t0, Transport::Sse, Principal::anonymous());
    for c in [w1, w2, s1, s2] {
        h.subscribe(t0, c, "room", None).unwrap();
        drain(&mut h, c);
    }
    send(&mut h, t0, ann, r#"{"op":"pub","ch":"room","data":{"t":"hi"}}"#);
    let ep = h.log("room").unwrap().epoch();
    let (a, b) = (h.pull(w1).unwrap(), h.pull(w2).unwrap());
    assert_eq!(a.as_ptr(), b.as_ptr(), "still one WebSocket encoding");
    let want = format!(
        r#"{{"op":"msg","ch":"room","ep":"{ep}","off":1,"from":"ann","data":{{"t":"hi"}}}}"#
    );
    assert_eq!(a, want.as_bytes());
    let (c, d) = (h.pull(s1).unwrap(), h.pull(s2).unwrap());
    assert_eq!(c.as_ptr(), d.as_ptr(), "still one SSE encoding");
    let sse = format!(
        "event: from\ndata: {{\"ch\":\"room\",\"pos\":\"{ep}:1\",\"from\":\"ann\"}}\n\n\
         id: {ep}:1\nevent: room\ndata: {{\"t\":\"hi\"}}\n\n"
    );
    assert_eq!(c, sse.as_bytes());

    // An anonymous client and the trusted publish show no one: the frames are unchanged.
    send(&mut h, t0, w2, r#"{"op":"pub","ch":"room","data":2}"#);
    h.publish(t0, "room", &raw("3")).unwrap();
    let plain = drain(&mut h, w1);
    assert_eq!(plain[0], format!(r#"{{"op":"msg","ch":"room","ep":"{ep}","off":2,"data":2}}"#));
    assert_eq!(plain[1], format!(r#"{{"op":"msg","ch":"room","ep":"{ep}","off":3,"data":3}}"#));
    assert_eq!(drain(&mut h, s1)[1], format!("id: {ep}:3\nevent: room\ndata: 3\n\n"));

    // The log keeps it: a resume (WebSocket and SSE) and a poll carry it too.
    let start = Position::start(ep);
    let froms: Vec<Option<String>> = h
        .log("room")
        .unwrap()
        .since_entries(start)
        .unwrap()
        .map(|e| e.from.map(ToString::to_string))
        .collect();
    assert_eq!(froms, [Some("ann".to_owned()), None, None]);
    let late = ws(&mut h, t0, None);
    h.subscribe(t0, late, "room", Some(start)).unwrap();
    let replay = envelopes(&mut h, late);
    assert_eq!(replay[1]["from"], "ann");
    assert!(replay[2].get("from").is_none());
    let late_sse = h.connect(t0, Transport::Sse, Principal::anonymous());
    h.subscribe(t0, late_sse, "room", Some(start)).unwrap();
    assert_eq!(drain(&mut h, late_sse)[0], sse);

    // A publish without a connection (HTTP, the client's credentials) shows its user.
    h.publish_as(t0, &Principal::user("cy"), "room", None, b"4").unwrap();
    assert_eq!(envelopes(&mut h, w1)[0]["from"], "cy");
}

#[test]
fn a_channel_may_hide_its_publishers() {
    let cfg = HubConfig { hide_publisher: vec!["secret:".into()], ..HubConfig::default() };
    let (mut h, t0) = hub(cfg);
    let ann = ws(&mut h, t0, Some("ann"));
    let bob = ws(&mut h, t0, Some("bob"));
    for ch in ["secret:x", "open:x"] {
        h.subscribe(t0, bob, ch, None).unwrap();
        send(&mut h, t0, ann, &format!(r#"{{"op":"pub","ch":"{ch}","data":1}}"#));
    }
    let got = envelopes(&mut h, bob);
    let msgs: Vec<&Value> = got.iter().filter(|e| e["op"] == "msg").collect();
    assert!(msgs[0].get("from").is_none(), "{:?}", msgs[0]);
    assert_eq!(msgs[1]["from"], "ann");
    let hidden = h.log("secret:x").unwrap().since_entries(Position::start(Epoch(0)));
    assert!(hidden.is_err() || hidden.unwrap().all(|e| e.from.is_none()));
}

#[test]
fn sse_of_a_channel_named_from_has_no_from_block() {
    let (mut h, t0) = hub(HubConfig::default());
    let ann = ws(&mut h, t0, Some("ann"));
    let s = h.connect(t0, Transport::Sse, Principal::anonymous());
    h.subscribe(t0, s, "from", None).unwrap();
    drain(&mut h, s);
    send(&mut h, t0, ann, r#"{"op":"pub","ch":"from","data":1}"#);
    let ep = h.log("from").unwrap().epoch();
    assert_eq!(drain(&mut h, s), [format!("id: {ep}:1\nevent: from\ndata: 1\n\n")]);
}
