//! Unit tests of deferred joins, on virtual time.

use proptest::prelude::*;
use serde_json::Value;

use super::*;
use crate::hub::tests::{drain, envelopes, events};
use crate::hub::{Authorize, HubConfig, JoinVerdict, Principal};
use crate::time::Duration;

/// Defers every join of `later:*` (or of every channel with `all`); allows the rest.
struct Later {
    all: bool,
}

impl Authorize for Later {
    fn can_read(&self, _: &Principal, _: &str) -> bool {
        true
    }
    fn can_write(&self, _: &Principal, _: &str) -> bool {
        true
    }
    fn join_verdict(&self, _: &Principal, ch: &str) -> JoinVerdict {
        if self.all || ch.starts_with("later:") { JoinVerdict::Defer } else { JoinVerdict::Allow }
    }
}

fn hub(cfg: HubConfig) -> (Hub, Instant) {
    (Hub::new(cfg, Later { all: false }, 7), crate::time::test_epoch())
}

/// The data of the `msg` envelopes among `got`.
fn msgs(got: &[Value]) -> Vec<u64> {
    got.iter().filter(|e| e["op"] == "msg").map(|e| e["data"].as_u64().unwrap()).collect()
}

fn requested(evs: &[HubEvent]) -> Vec<JoinId> {
    evs.iter()
        .filter_map(|e| match e {
            HubEvent::JoinRequested { id, .. } => Some(*id),
            _ => None,
        })
        .collect()
}

fn decided(evs: &[HubEvent]) -> Vec<(JoinId, Result<Subscription, JoinRefusal>)> {
    evs.iter()
        .filter_map(|e| match e {
            HubEvent::JoinDecided { id, result, .. } => Some((*id, result.clone())),
            _ => None,
        })
        .collect()
}

fn ws(h: &mut Hub, now: Instant, user: &str) -> ConnId {
    h.connect(now, Transport::WebSocket, Principal::user(user))
}

fn send(h: &mut Hub, now: Instant, conn: ConnId, text: &str) {
    h.handle_envelope(now, conn, text.as_bytes());
}

fn publish(h: &mut Hub, now: Instant, ch: &str, n: u32) {
    h.publish_json(now, ch, n.to_string().as_bytes()).unwrap();
}

#[test]
fn a_join_allowed_later_gets_what_was_published_meanwhile_once() {
    let (mut h, t0) = hub(HubConfig::default());
    let bob = ws(&mut h, t0, "bob");
    send(&mut h, t0, bob, r#"{"op":"sub","ch":"later:a"}"#);
    let ann = ws(&mut h, t0, "ann");
    publish(&mut h, t0, "later:a", 1);
    send(&mut h, t0, ann, r#"{"op":"sub","ch":"later:a","ref":3}"#);
    let evs = events(&mut h);
    let ids = requested(&evs);
    assert_eq!(ids.len(), 2);
    let HubEvent::JoinRequested { conn, principal, ch, .. } = &evs[evs.len() - 1] else {
        panic!("{evs:?}")
    };
    assert_eq!((*conn, principal.user.as_deref(), &**ch), (ann, Some("ann"), "later:a"));
    assert!(drain(&mut h, ann).is_empty(), "nothing before the decision");
    assert_eq!(h.pending_join(ann, "later:a"), Some(ids[1]));
    assert_eq!(h.members("later:a").count(), 0);

    publish(&mut h, t0, "later:a", 2); // between the request and the decision
    assert!(h.decide_join(t0, ids[1], JoinDecision::Allow));
    publish(&mut h, t0, "later:a", 3);
    let got = envelopes(&mut h, ann);
    let ep = h.log("later:a").unwrap().epoch().to_string();
    assert_eq!(got[0]["op"], "subscribed");
    assert_eq!((got[0]["recovered"].as_bool(), got[0]["off"].as_u64()), (Some(true), Some(1)));
    assert_eq!(got[0]["ep"], ep.as_str(), "the head as it was when it asked");
    assert_eq!(msgs(&got), [2, 3], "the message of the wait once, then live");
    assert!(!h.decide_join(t0, ids[1], JoinDecision::Allow), "decided already");
    let evs = events(&mut h);
    let d = decided(&evs);
    assert_eq!(d.len(), 1);
    assert!(matches!(d[0].1, Ok(Subscription { replayed: 1, recovered: true, .. })), "{d:?}");
    assert_eq!(h.members("later:a").collect::<Vec<_>>(), [ann]);
    assert_eq!(h.pending_joins(), 1, "bob still waits");
}

#[test]
fn a_join_allowed_later_resumes_from_the_position_brought() {
    let (mut h, t0) = hub(HubConfig::default());
    for n in 1..=3 {
        publish(&mut h, t0, "later:a", n);
    }
    let ep = h.log("later:a").unwrap().epoch();
    let ann = ws(&mut h, t0, "ann");
    let sub = format!(r#"{{"op":"sub","ch":"later:a","pos":{{"ep":"{ep}","off":1}}}}"#);
    send(&mut h, t0, ann, &sub);
    publish(&mut h, t0, "later:a", 4);
    let id = requested(&events(&mut h))[0];
    h.decide_join(t0, id, JoinDecision::Allow);
    let got = envelopes(&mut h, ann);
    assert_eq!(got[0]["off"], 4, "subscribed with the head");
    assert_eq!(msgs(&got), [2, 3, 4]);
}

#[test]
fn a_join_refused_later_gets_the_err_of_its_sub() {
    let (mut h, t0) = hub(HubConfig::default());
    let ann = ws(&mut h, t0, "ann");
    send(&mut h, t0, ann, r#"{"op":"sub","ch":"later:a","ref":7}"#);
    let id = requested(&events(&mut h))[0];
    assert_eq!(h.channel_count(), 1, "the channel is kept while the join waits");
    let refuse = JoinDecision::Refuse { code: "not_your_order".into() };
    assert!(h.decide_join(t0, id, refuse));
    let got = envelopes(&mut h, ann);
    assert_eq!(got.len(), 1);
    assert_eq!(
        (&got[0]["op"], &got[0]["ref"], &got[0]["code"]),
        (&"err".into(), &7.into(), &"not_your_order".into())
    );
    let d = decided(&events(&mut h));
    assert_eq!(d, [(id, Err(JoinRefusal::Refused { code: "not_your_order".into() }))]);
    assert_eq!((h.channel_count(), h.pending_joins()), (0, 0));
    assert_eq!(h.channels_of(ann).count(), 0);
    // The synchronous refusal's code, for the same shape.
    send(&mut h, t0, ann, r#"{"op":"sub","ch":"later:a","ref":8}"#);
    let id = requested(&events(&mut h))[0];
    h.decide_join(t0, id, JoinDecision::forbidden());
    assert_eq!(envelopes(&mut h, ann)[0]["code"], "forbidden");
}

#[test]
fn an_undecided_join_times_out() {
    let cfg = HubConfig { join_timeout: Duration::from_secs(3), ..HubConfig::default() };
    let (mut h, t0) = hub(cfg);
    let ann = ws(&mut h, t0, "ann");
    send(&mut h, t0, ann, r#"{"op":"sub","ch":"later:a","ref":1}"#);
    let id = requested(&events(&mut h))[0];
    assert_eq!(h.poll_timeout(), Some(t0 + Duration::from_secs(3)));
    h.handle_timeout(t0 + Duration::from_secs(2));
    assert_eq!(h.pending_joins(), 1);
    h.handle_timeout(t0 + Duration::from_secs(3));
    let got = envelopes(&mut h, ann);
    assert_eq!((&got[0]["code"], &got[0]["ref"]), (&"join_timeout".into(), &1.into()));
    assert_eq!(decided(&events(&mut h)), [(id, Err(JoinRefusal::Timeout))]);
    assert!(!h.decide_join(t0, id, JoinDecision::Allow), "too late");
    assert_eq!((h.channel_count(), h.poll_timeout()), (0, None));
}

#[test]
fn pending_joins_are_bounded_per_connection_and_in_all() {
    let cfg = HubConfig {
        max_pending_joins_per_conn: 2,
        max_pending_joins: 3,
        max_channels_per_conn: 3,
        ..HubConfig::default()
    };
    let (mut h, t0) = hub(cfg);
    let ann = ws(&mut h, t0, "ann");
    let bob = ws(&mut h, t0, "bob");
    for ch in ["later:1", "later:2", "later:3"] {
        send(&mut h, t0, ann, &format!(r#"{{"op":"sub","ch":"{ch}","ref":1}}"#));
    }
    let got = envelopes(&mut h, ann);
    assert_eq!((got.len(), &got[0]["code"]), (1, &"too_many_pending".into()));
    // A repeated sub of a pending channel is answered by the first one's decision.
    send(&mut h, t0, ann, r#"{"op":"sub","ch":"later:1"}"#);
    assert_eq!((requested(&events(&mut h)).len(), h.pending_joins()), (2, 2));
    assert!(envelopes(&mut h, ann).is_empty());
    // Pending joins count toward the connection's channels.
    send(&mut h, t0, ann, r#"{"op":"sub","ch":"now:1"}"#);
    send(&mut h, t0, ann, r#"{"op":"sub","ch":"now:2","ref":2}"#);
    let got = envelopes(&mut h, ann);
    assert_eq!(got.last().unwrap()["code"], "too_many_channels");
    // The hub-wide bound.
    send(&mut h, t0, bob, r#"{"op":"sub","ch":"later:1"}"#);
    send(&mut h, t0, bob, r#"{"op":"sub","ch":"later:2","ref":5}"#);
    assert_eq!(envelopes(&mut h, bob)[0]["code"], "too_many_pending");
    assert_eq!(h.pending_joins(), 3);
}

#[test]
fn a_connection_that_leaves_cancels_its_pending_joins() {
    let (mut h, t0) = hub(HubConfig::default());
    let ann = ws(&mut h, t0, "ann");
    send(&mut h, t0, ann, r#"{"op":"sub","ch":"later:a"}"#);
    send(&mut h, t0, ann, r#"{"op":"sub","ch":"later:b"}"#);
    let ids = requested(&events(&mut h));
    h.disconnect(t0, ann);
    let d = decided(&events(&mut h));
    assert_eq!(d, [(ids[0], Err(JoinRefusal::Cancelled)), (ids[1], Err(JoinRefusal::Cancelled))]);
    assert!(!h.decide_join(t0, ids[0], JoinDecision::Allow));
    assert_eq!((h.pending_joins(), h.channel_count(), h.poll_timeout()), (0, 0, None));
}

#[test]
fn an_unsub_cancels_a_pending_join() {
    let (mut h, t0) = hub(HubConfig::default());
    let ann = ws(&mut h, t0, "ann");
    send(&mut h, t0, ann, r#"{"op":"sub","ch":"later:a","ref":1}"#);
    let id = requested(&events(&mut h))[0];
    send(&mut h, t0, ann, r#"{"op":"unsub","ch":"later:a"}"#);
    assert_eq!(decided(&events(&mut h)), [(id, Err(JoinRefusal::Cancelled))]);
    assert!(envelopes(&mut h, ann).is_empty(), "an unsub has no answer");
    assert!(!h.decide_join(t0, id, JoinDecision::Allow));
    assert_eq!(h.channels_of(ann).count(), 0);
    // Asked again: a new request.
    send(&mut h, t0, ann, r#"{"op":"sub","ch":"later:a"}"#);
    assert_eq!(requested(&events(&mut h)).len(), 1);
}

#[test]
fn an_sse_join_allowed_later_opens_at_the_head_it_asked_at() {
    let (mut h, t0) = hub(HubConfig::default());
    publish(&mut h, t0, "later:a", 1);
    let head = h.log("later:a").unwrap().head();
    let s = h.connect(t0, Transport::Sse, Principal::user("ann"));
    let sub = h.subscribe(t0, s, "later:a", None).unwrap();
    let id = sub.awaiting.expect("deferred");
    assert!(sub.pending);
    publish(&mut h, t0, "later:a", 2);
    assert!(drain(&mut h, s).is_empty());
    h.decide_join(t0, id, JoinDecision::Allow);
    let got = drain(&mut h, s);
    assert_eq!(got[0], format!("id: {head}\n\n"));
    assert!(got[1].contains("\ndata: 2\n"), "{got:?}");
    assert!(got[2].starts_with("event: presence\n"), "{got:?}");
}

#[test]
fn presence_is_announced_when_the_join_is_allowed() {
    let (mut h, t0) = hub(HubConfig::default());
    let bob = ws(&mut h, t0, "bob");
    let first = h.subscribe(t0, bob, "later:a", None).unwrap().awaiting.unwrap();
    h.decide_join(t0, first, JoinDecision::Allow);
    events(&mut h);
    let ann = ws(&mut h, t0, "ann");
    send(&mut h, t0, ann, r#"{"op":"sub","ch":"later:a"}"#);
    let id = requested(&events(&mut h))[0];
    drain(&mut h, bob);
    h.decide_join(t0, id, JoinDecision::Allow);
    let to_bob = envelopes(&mut h, bob);
    assert_eq!(to_bob.len(), 1);
    assert_eq!((&to_bob[0]["op"], &to_bob[0]["join"][0]), (&"presence".into(), &"ann".into()));
    assert!(
        events(&mut h)
            .iter()
            .any(|e| matches!(e, HubEvent::Joined { member, .. } if &**member == "ann"))
    );
}

/// What a client receives of `room` when it joins after `before` messages (resuming
/// from `resume` when given), `between` messages are published before its join is allowed
/// (at once, or by the application), and `after` follow. WebSocket: the `subscribed` and
/// `msg` envelopes; SSE: every block.
fn deliveries(
    defer: bool,
    sse: bool,
    before: u32,
    resume: Option<u64>,
    between: u32,
    after: u32,
) -> Vec<String> {
    let mut h = Hub::new(HubConfig::default(), Later { all: defer }, 11);
    let t0 = crate::time::test_epoch();
    for n in 0..before {
        publish(&mut h, t0, "room", n);
    }
    let pos = resume.map(|off| {
        let head = h.log("room").unwrap().head();
        crate::replay::Position { epoch: head.epoch, offset: off.min(head.offset) }
    });
    let transport = if sse { Transport::Sse } else { Transport::WebSocket };
    let conn = h.connect(t0, transport, Principal::anonymous());
    if sse {
        h.subscribe(t0, conn, "room", pos).unwrap();
    } else {
        let pos = pos.map(|p| format!(r#","pos":{{"ep":"{}","off":{}}}"#, p.epoch, p.offset));
        let sub = format!(r#"{{"op":"sub","ch":"room"{}}}"#, pos.unwrap_or_default());
        send(&mut h, t0, conn, &sub);
    }
    for n in 0..between {
        publish(&mut h, t0, "room", 100 + n);
    }
    if defer {
        let ids = requested(&events(&mut h));
        assert_eq!(ids.len(), 1);
        assert!(h.decide_join(t0, ids[0], JoinDecision::Allow));
    }
    for n in 0..after {
        publish(&mut h, t0, "room", 200 + n);
    }
    let mut frames = drain(&mut h, conn);
    if !sse && resume.is_some() {
        // `subscribed` carries the head of the moment of the join: compare the rest.
        frames[0] = frames[0].split(r#","ep""#).next().unwrap_or_default().to_owned();
    }
    frames
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// A join allowed later delivers what a join allowed at once delivers: the same
    /// messages, once, in order (and the same frames around them).
    #[test]
    fn deferred_then_allowed_delivers_what_a_synchronous_allow_does(
        sse in any::<bool>(),
        before in 1u32..6,
        resume in proptest::option::of(0u64..8),
        between in 0u32..6,
        after in 0u32..4,
    ) {
        let now = deliveries(false, sse, before, resume, between, after);
        let later = deliveries(true, sse, before, resume, between, after);
        prop_assert_eq!(now, later);
    }
}

#[test]
fn with_a_bus_a_join_asked_while_the_log_loads_starts_where_it_loaded() {
    use crate::hub::{BusAction, BusHistory};
    use crate::replay::Epoch;
    let t0 = crate::time::test_epoch();
    let mut h = Hub::with_bus(HubConfig::default(), Later { all: false }, 7);
    h.bus_up(t0);
    let ann = ws(&mut h, t0, "ann");
    send(&mut h, t0, ann, r#"{"op":"sub","ch":"later:a"}"#);
    let id = requested(&events(&mut h))[0];
    assert!(matches!(h.poll_bus(), Some(BusAction::Follow { .. })));
    let ep = Epoch(42);
    let entries = vec![(1, bytes::Bytes::from_static(b"1")), (2, bytes::Bytes::from_static(b"2"))];
    h.bus_history(t0, "later:a", BusHistory { epoch: ep, head: 2, entries });
    h.bus_message(
        t0,
        "later:a",
        Position { epoch: ep, offset: 3 },
        bytes::Bytes::from_static(b"3"),
    );
    h.decide_join(t0, id, JoinDecision::Allow);
    let got = envelopes(&mut h, ann);
    assert_eq!((&got[0]["op"], &got[0]["off"]), (&"subscribed".into(), &2.into()));
    assert_eq!(msgs(&got), [3], "what came after the log loaded, once");
}
