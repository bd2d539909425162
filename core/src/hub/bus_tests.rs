//! Bus mode on virtual time: several hubs over an in-memory bus that behaves like the Redis
//! implementation (one owner numbers each channel, a live feed, a bounded shared log,
//! dedup by id, and a restart that loses everything).

use std::collections::{BTreeMap, HashMap, HashSet};

use serde_json::Value;

use super::*;
use crate::hub::{
    AllowAll, ConnId, HubConfig, PublishId, PublishRefusal, PublishRequest, Subscription, Transport,
};
use crate::replay::LogLimits;

/// The shared log of one channel on the bus.
#[derive(Default)]
struct Shared {
    epoch: Option<Epoch>,
    head: u64,
    entries: Vec<(u64, Bytes)>,
}

/// An in-memory bus between hubs (indexes into `hubs`).
#[derive(Default)]
struct Bus {
    chans: BTreeMap<String, Shared>,
    ids: HashMap<String, Position>,
    followers: HashMap<String, HashSet<usize>>,
    keep: usize,
    /// Live messages not delivered to hub `.0` (to make gaps).
    drop_next_for: Option<usize>,
}

impl Bus {
    fn history(&mut self, ch: &str, proposed: Epoch, after: Option<u64>) -> BusHistory {
        let s = self.chans.entry(ch.to_owned()).or_default();
        let epoch = *s.epoch.get_or_insert(proposed);
        let entries = s.entries.iter().filter(|e| after.is_none_or(|a| e.0 > a)).cloned().collect();
        BusHistory { epoch, head: s.head, entries }
    }

    /// Runs every action of every hub until all are quiet.
    fn run(&mut self, hubs: &mut [Hub], now: Instant) {
        loop {
            let mut busy = false;
            for i in 0..hubs.len() {
                while let Some(a) = hubs[i].poll_bus() {
                    busy = true;
                    self.act(hubs, i, a, now);
                }
            }
            if !busy {
                return;
            }
        }
    }

    fn act(&mut self, hubs: &mut [Hub], i: usize, a: BusAction, now: Instant) {
        match a {
            BusAction::Follow { ch, epoch, known } => {
                self.followers.entry(ch.to_string()).or_default().insert(i);
                // A bus behind what the hub saw (an older snapshot) starts a new epoch.
                let s = self.chans.entry(ch.to_string()).or_default();
                if let Some(k) = known
                    && s.epoch == Some(k.epoch)
                    && s.head < k.offset
                {
                    *s = Shared::default();
                }
                let h = self.history(&ch, epoch, None);
                hubs[i].bus_history(now, &ch, h);
            }
            BusAction::Unfollow { ch } => {
                self.followers.entry(ch.to_string()).or_default().remove(&i);
            }
            BusAction::Fetch { ch, after } => {
                let h = self.history(&ch, after.epoch, Some(after.offset));
                hubs[i].bus_history(now, &ch, h);
            }
            BusAction::Publish { token, ch, data, id, epoch } => {
                if let Some(pos) = id.as_deref().and_then(|id| self.ids.get(id)) {
                    hubs[i].bus_published(now, token, Ok(*pos));
                    return;
                }
                let keep = self.keep;
                let s = self.chans.entry(ch.to_string()).or_default();
                let epoch = *s.epoch.get_or_insert(epoch);
                s.head += 1;
                s.entries.push((s.head, data.clone()));
                if s.entries.len() > keep {
                    s.entries.remove(0);
                }
                let pos = Position { epoch, offset: s.head };
                if let Some(id) = id {
                    self.ids.insert(id.to_string(), pos);
                }
                let mut to: Vec<usize> =
                    self.followers.get(&*ch).into_iter().flatten().copied().collect();
                to.sort_unstable();
                for f in to {
                    if self.drop_next_for == Some(f) {
                        self.drop_next_for = None;
                        continue;
                    }
                    hubs[f].bus_message(now, &ch, pos, data.clone());
                }
                hubs[i].bus_published(now, token, Ok(pos));
            }
        }
    }
}

fn cfg() -> HubConfig {
    HubConfig { log: LogLimits { max_count: 50, ..LogLimits::default() }, ..HubConfig::default() }
}

fn up(n: usize) -> (Vec<Hub>, Bus, Instant) {
    up_with(n, &cfg(), &AllowAll)
}

fn ws(h: &mut Hub, now: Instant, user: &str) -> ConnId {
    h.connect(now, Transport::WebSocket, Principal::user(user))
}

fn envelopes(h: &mut Hub, conn: ConnId) -> Vec<Value> {
    std::iter::from_fn(|| h.pull(conn)).map(|b| serde_json::from_slice(&b).unwrap()).collect()
}

/// `(offset, data["n"])` of every `msg` in `env`.
fn msgs(env: &[Value]) -> Vec<(u64, u64)> {
    env.iter()
        .filter(|e| e["op"] == "msg")
        .map(|e| (e["off"].as_u64().unwrap(), e["data"]["n"].as_u64().unwrap()))
        .collect()
}

fn publish(h: &mut Hub, now: Instant, conn: ConnId, ch: &str, n: u64, id: Option<&str>) {
    let id = id.map(|i| format!(r#","id":"{i}""#)).unwrap_or_default();
    let text = format!(r#"{{"op":"pub","ch":"{ch}","data":{{"n":{n}}},"ref":{n}{id}}}"#);
    h.handle_envelope(now, conn, text.as_bytes());
}

#[test]
fn publishes_on_two_instances_reach_everyone_in_one_order() {
    let (mut hubs, mut bus, t0) = up(2);
    let a = ws(&mut hubs[0], t0, "ann");
    let b = ws(&mut hubs[1], t0, "bob");
    hubs[0].handle_envelope(t0, a, br#"{"op":"sub","ch":"room"}"#);
    hubs[1].handle_envelope(t0, b, br#"{"op":"sub","ch":"room"}"#);
    // The joins wait for the channel's log.
    assert!(envelopes(&mut hubs[0], a).is_empty());
    assert!(!hubs[0].is_synced("room"));
    bus.run(&mut hubs, t0);
    assert!(hubs[0].is_synced("room") && hubs[1].is_synced("room"));
    let first = envelopes(&mut hubs[0], a);
    assert_eq!(first[0]["op"], "subscribed");
    let epoch = first[0]["pos"]["ep"].clone();
    assert_eq!(envelopes(&mut hubs[1], b)[0]["pos"]["ep"], epoch, "one epoch for both");

    for n in 1..=10 {
        let (h, c) = if n % 2 == 0 { (0, a) } else { (1, b) };
        publish(&mut hubs[h], t0, c, "room", n, None);
    }
    bus.run(&mut hubs, t0);
    let (ea, eb) = (envelopes(&mut hubs[0], a), envelopes(&mut hubs[1], b));
    // The bus's order, the same on both instances, gap-free.
    let (ma, mb) = (msgs(&ea), msgs(&eb));
    assert_eq!(ma, mb);
    assert_eq!(ma.iter().map(|m| m.0).collect::<Vec<_>>(), (1..=10).collect::<Vec<_>>());
    let mut ns: Vec<u64> = ma.iter().map(|m| m.1).collect();
    ns.sort_unstable();
    assert_eq!(ns, (1..=10).collect::<Vec<_>>());
    // Each publisher got its acks, with the bus's positions.
    let acks: Vec<u64> =
        ea.iter().filter(|e| e["op"] == "ack").map(|e| e["off"].as_u64().unwrap()).collect();
    let mine: Vec<u64> = ma.iter().filter(|m| m.1 % 2 == 0).map(|m| m.0).collect();
    assert_eq!(acks, mine);
    assert_eq!(hubs[0].log("room").unwrap().head(), hubs[1].log("room").unwrap().head());
}

#[test]
fn a_client_moving_to_another_instance_resumes_exactly() {
    let (mut hubs, mut bus, t0) = up(2);
    let a = ws(&mut hubs[0], t0, "ann");
    hubs[0].handle_envelope(t0, a, br#"{"op":"sub","ch":"feed"}"#);
    bus.run(&mut hubs, t0);
    for n in 1..=5 {
        publish(&mut hubs[0], t0, a, "feed", n, None);
    }
    bus.run(&mut hubs, t0);
    let seen = msgs(&envelopes(&mut hubs[0], a));
    assert_eq!(seen.len(), 5);
    let epoch = hubs[0].log("feed").unwrap().epoch();
    // Gone after offset 3; meanwhile 6..8 are published on instance A.
    hubs[0].disconnect(t0, a);
    let p = ws(&mut hubs[0], t0, "pat");
    hubs[0].handle_envelope(t0, p, br#"{"op":"sub","ch":"feed"}"#);
    for n in 6..=8 {
        publish(&mut hubs[0], t0, p, "feed", n, None);
    }
    bus.run(&mut hubs, t0);
    // Instance B never had the channel: it loads it, then replays 4..8.
    let b = ws(&mut hubs[1], t0, "ann");
    let sub = format!(r#"{{"op":"sub","ch":"feed","pos":{{"ep":"{epoch}","off":3}}}}"#);
    hubs[1].handle_envelope(t0, b, sub.as_bytes());
    bus.run(&mut hubs, t0);
    let got = envelopes(&mut hubs[1], b);
    assert_eq!(got[0]["op"], "subscribed");
    assert_eq!(got[0]["recovered"], true);
    assert_eq!(msgs(&got), (4..=8).map(|n| (n, n)).collect::<Vec<_>>());
}

#[test]
fn a_gap_in_the_live_feed_is_filled_from_the_log() {
    let (mut hubs, mut bus, t0) = up(2);
    let a = ws(&mut hubs[0], t0, "ann");
    let b = ws(&mut hubs[1], t0, "bob");
    hubs[0].handle_envelope(t0, a, br#"{"op":"sub","ch":"g"}"#);
    hubs[1].handle_envelope(t0, b, br#"{"op":"sub","ch":"g"}"#);
    bus.run(&mut hubs, t0);
    publish(&mut hubs[0], t0, a, "g", 1, None);
    bus.drop_next_for = Some(1);
    publish(&mut hubs[0], t0, a, "g", 2, None);
    publish(&mut hubs[0], t0, a, "g", 3, None);
    bus.run(&mut hubs, t0);
    assert_eq!(msgs(&envelopes(&mut hubs[1], b)), [(1, 1), (2, 2), (3, 3)]);
    assert!(hubs[1].is_synced("g"));
}

#[test]
fn repeated_ids_are_published_once_across_instances() {
    let (mut hubs, mut bus, t0) = up(2);
    let a = ws(&mut hubs[0], t0, "ann");
    hubs[0].handle_envelope(t0, a, br#"{"op":"sub","ch":"d"}"#);
    bus.run(&mut hubs, t0);
    publish(&mut hubs[0], t0, a, "d", 1, Some("m1"));
    bus.run(&mut hubs, t0);
    // Ann's connection dropped before the ack; her retry goes to the other instance.
    let a2 = ws(&mut hubs[1], t0, "ann");
    publish(&mut hubs[1], t0, a2, "d", 1, Some("m1"));
    bus.run(&mut hubs, t0);
    let ack = envelopes(&mut hubs[1], a2);
    assert_eq!(ack.len(), 1, "{ack:?}");
    assert_eq!((ack[0]["op"].as_str(), ack[0]["off"].as_u64()), (Some("ack"), Some(1)));
    assert_eq!(hubs[0].log("d").unwrap().head().offset, 1);
}

#[test]
fn bus_down_refuses_publishes_clearly_and_up_catches_up() {
    let (mut hubs, mut bus, t0) = up(2);
    let a = ws(&mut hubs[0], t0, "ann");
    let b = ws(&mut hubs[1], t0, "bob");
    hubs[0].handle_envelope(t0, a, br#"{"op":"sub","ch":"c"}"#);
    hubs[1].handle_envelope(t0, b, br#"{"op":"sub","ch":"c"}"#);
    bus.run(&mut hubs, t0);
    envelopes(&mut hubs[1], b);
    // A publish in flight when the bus drops fails, and so does one made while down.
    publish(&mut hubs[1], t0, b, "c", 1, Some("x"));
    hubs[1].bus_down(t0);
    publish(&mut hubs[1], t0, b, "c", 2, None);
    let errs = envelopes(&mut hubs[1], b);
    assert_eq!(errs.len(), 2);
    assert!(errs.iter().all(|e| e["op"] == "err" && e["code"] == "unavailable"), "{errs:?}");
    assert_eq!(hubs[1].submit(t0, None, "c", None, b"{}"), Err(HubError::Unavailable));
    let _ = hubs[1].poll_bus(); // the dropped publish never reached the bus
    // Meanwhile instance A publishes; B's members get it once B is back.
    publish(&mut hubs[0], t0, a, "c", 3, None);
    bus.followers.get_mut("c").unwrap().remove(&1);
    bus.run(&mut hubs, t0);
    hubs[1].bus_up(t0);
    bus.run(&mut hubs, t0);
    assert_eq!(msgs(&envelopes(&mut hubs[1], b)), [(1, 3)]);
}

#[test]
fn a_bus_that_lost_its_data_starts_a_new_epoch_and_members_are_reset() {
    let (mut hubs, mut bus, t0) = up(1);
    let a = ws(&mut hubs[0], t0, "ann");
    hubs[0].handle_envelope(t0, a, br#"{"op":"sub","ch":"r"}"#);
    bus.run(&mut hubs, t0);
    publish(&mut hubs[0], t0, a, "r", 1, None);
    bus.run(&mut hubs, t0);
    let old = hubs[0].log("r").unwrap().epoch();
    envelopes(&mut hubs[0], a);
    // Redis restarts empty.
    hubs[0].bus_down(t0);
    bus = Bus { keep: 50, ..Bus::default() };
    hubs[0].bus_up(t0);
    bus.run(&mut hubs, t0);
    let new = hubs[0].log("r").unwrap().epoch();
    assert_ne!(old, new);
    let got = envelopes(&mut hubs[0], a);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(
        (got[0]["op"].as_str(), got[0]["recovered"].as_bool()),
        (Some("subscribed"), Some(false))
    );
    // Live messages continue in the new epoch.
    publish(&mut hubs[0], t0, a, "r", 2, None);
    bus.run(&mut hubs, t0);
    let got = envelopes(&mut hubs[0], a);
    assert_eq!(msgs(&got), [(1, 2)]);
    assert_eq!(got.iter().find(|e| e["op"] == "msg").unwrap()["ep"], new.to_string());
}

#[test]
fn trusted_submits_are_answered_by_event_and_local_publish_is_refused() {
    let (mut hubs, mut bus, t0) = up(1);
    let d = b"{\"n\":1}";
    assert_eq!(hubs[0].publish_json(t0, "x", d), Err(HubError::Unavailable));
    let token = hubs[0].submit(t0, None, "x", Some("t1"), d).unwrap();
    assert_eq!(
        hubs[0].submit(t0, Some(&Principal::anonymous()), "x\n", None, d),
        Err(HubError::BadChannel)
    );
    bus.run(&mut hubs, t0);
    let evs: Vec<HubEvent> = std::iter::from_fn(|| hubs[0].poll_event()).collect();
    assert!(evs.iter().any(|e| matches!(e, HubEvent::Submitted { token: t, result: Ok(p) } if *t == token && p.offset == 1)), "{evs:?}");
    // The hub never followed "x" (nobody joined), so it holds no mirror of it.
    assert!(hubs[0].log("x").is_none());
}

#[test]
fn sse_joins_wait_for_the_log_then_replay() {
    let (mut hubs, mut bus, t0) = up(1);
    let a = ws(&mut hubs[0], t0, "ann");
    hubs[0].handle_envelope(t0, a, br#"{"op":"sub","ch":"s"}"#);
    bus.run(&mut hubs, t0);
    for n in 1..=3 {
        publish(&mut hubs[0], t0, a, "s", n, None);
    }
    bus.run(&mut hubs, t0);
    let epoch = hubs[0].log("s").unwrap().epoch();
    let s = hubs[0].connect(t0, Transport::Sse, Principal::anonymous());
    let sub = hubs[0].subscribe(t0, s, "s", Some(Position { epoch, offset: 1 })).unwrap();
    assert!(!sub.pending, "a loaded channel answers at once");
    assert_eq!(sub.replayed, 2);
    let frames: Vec<String> = std::iter::from_fn(|| hubs[0].pull(s))
        .map(|b| String::from_utf8(b.to_vec()).unwrap())
        .collect();
    // Each message comes after an `event: from` block: ann published them.
    let from =
        format!("event: from\ndata: {{\"ch\":\"s\",\"pos\":\"{epoch}:2\",\"from\":\"ann\"}}\n\n");
    assert!(frames[0].starts_with(&format!("{from}id: {epoch}:2\n")), "{frames:?}");
}

#[test]
fn a_bus_restored_from_an_older_snapshot_starts_a_new_epoch() {
    let (mut hubs, mut bus, t0) = up(1);
    let a = ws(&mut hubs[0], t0, "ann");
    hubs[0].handle_envelope(t0, a, br#"{"op":"sub","ch":"s"}"#);
    bus.run(&mut hubs, t0);
    for n in 1..=5 {
        publish(&mut hubs[0], t0, a, "s", n, None);
    }
    bus.run(&mut hubs, t0);
    let old = hubs[0].log("s").unwrap().epoch();
    envelopes(&mut hubs[0], a);
    // The bus comes back with only the first two messages of the same epoch: offsets 3..5
    // would be handed out again. The hub's Follow says what it saw; the bus starts over.
    hubs[0].bus_down(t0);
    let s = bus.chans.get_mut("s").unwrap();
    s.head = 2;
    s.entries.truncate(2);
    hubs[0].bus_up(t0);
    bus.run(&mut hubs, t0);
    let new = hubs[0].log("s").unwrap().epoch();
    assert_ne!(old, new);
    let got = envelopes(&mut hubs[0], a);
    assert_eq!(
        (got[0]["op"].as_str(), got[0]["recovered"].as_bool()),
        (Some("subscribed"), Some(false))
    );
    publish(&mut hubs[0], t0, a, "s", 6, None);
    bus.run(&mut hubs, t0);
    let got = envelopes(&mut hubs[0], a);
    assert_eq!(msgs(&got), [(1, 6)]);
}

#[test]
fn the_publisher_travels_through_the_bus_to_every_instance_and_into_replays() {
    let (mut hubs, mut bus, t0, a, b) = ann_and_bob_in_room(&cfg());
    publish(&mut hubs[0], t0, a, "room", 1, None);
    hubs[1].submit(t0, None, "room", None, br#"{"n":2}"#).unwrap();
    bus.run(&mut hubs, t0);
    let froms = |env: &[Value]| -> Vec<(u64, Value)> {
        env.iter()
            .filter(|e| e["op"] == "msg")
            .map(|e| (e["off"].as_u64().unwrap(), e["from"].clone()))
            .collect()
    };
    let want = vec![(1, Value::from("ann")), (2, Value::Null)];
    assert_eq!(froms(&envelopes(&mut hubs[1], b)), want, "the other instance shows ann");
    assert_eq!(froms(&envelopes(&mut hubs[0], a)), want);
    // A client joining later on a third instance replays the log from the bus: the same.
    hubs.push(Hub::with_bus(cfg(), AllowAll, 200));
    hubs[2].bus_up(t0);
    let c = ws(&mut hubs[2], t0, "cy");
    let from_start = format!(
        r#"{{"op":"sub","ch":"room","pos":{{"ep":"{}","off":0}}}}"#,
        hubs[0].log("room").unwrap().head().epoch
    );
    hubs[2].handle_envelope(t0, c, from_start.as_bytes());
    bus.run(&mut hubs, t0);
    assert_eq!(froms(&envelopes(&mut hubs[2], c)), want, "replayed with its publisher");
    // The data the bus stores is the JSON behind the tag, never the tag itself.
    let logged = hubs[2].log("room").unwrap().head();
    assert_eq!(logged.offset, 2);
}

#[test]
fn a_tag_round_trips_and_untagged_or_broken_data_has_no_publisher() {
    for (from, json) in [
        (Some("ann"), &br#"{"a":1}"#[..]),
        (Some(""), b"1"),
        (Some("x:y\0z"), b"[]"),
        (None, b"{}"),
    ] {
        let (f, d) = untag(&tag(from, json));
        assert_eq!((f.as_deref(), &d[..]), (from, json));
    }
    for broken in [&b"\0"[..], b"\x003:ab", b"\x00x:ann{}", b"\x009999999999999999999999:a"] {
        let data = Bytes::copy_from_slice(broken);
        assert_eq!(untag(&data), (None, data.clone()));
    }
}

// ---------------------------------------------------------------------------------------
// Vetted publishes and deferred joins with a bus

/// Defers every join of `later:*`; allows the rest, and every read and write.
#[derive(Clone, Copy)]
struct Later;

impl crate::hub::Authorize for Later {
    fn can_read(&self, _: &Principal, _: &str) -> bool {
        true
    }
    fn can_write(&self, _: &Principal, _: &str) -> bool {
        true
    }
    fn join_verdict(&self, _: &Principal, ch: &str) -> crate::hub::JoinVerdict {
        if ch.starts_with("later:") {
            crate::hub::JoinVerdict::Defer
        } else {
            crate::hub::JoinVerdict::Allow
        }
    }
}

/// `n` hubs on one bus with `cfg` and the policy `auth`.
fn up_with<A>(n: usize, cfg: &HubConfig, auth: &A) -> (Vec<Hub>, Bus, Instant)
where
    A: crate::hub::Authorize + Clone + Send + 'static,
{
    let t0 = crate::time::test_epoch();
    let mut hubs: Vec<Hub> =
        (0..n).map(|i| Hub::with_bus(cfg.clone(), auth.clone(), 100 + i as u64)).collect();
    for h in &mut hubs {
        h.bus_up(t0);
    }
    (hubs, Bus { keep: 50, ..Bus::default() }, t0)
}

/// Two instances with `cfg`: ann on the first and bob on the second are in `room`.
fn ann_and_bob_in_room(cfg: &HubConfig) -> (Vec<Hub>, Bus, Instant, ConnId, ConnId) {
    let (mut hubs, mut bus, t0) = up_with(2, cfg, &AllowAll);
    let a = ws(&mut hubs[0], t0, "ann");
    let b = ws(&mut hubs[1], t0, "bob");
    for (h, c) in [(0, a), (1, b)] {
        hubs[h].handle_envelope(t0, c, br#"{"op":"sub","ch":"room"}"#);
    }
    bus.run(&mut hubs, t0);
    let _ = (envelopes(&mut hubs[0], a), envelopes(&mut hubs[1], b));
    (hubs, bus, t0, a, b)
}

fn vetting() -> HubConfig {
    HubConfig { vet_publishes: true, ..cfg() }
}

fn send(h: &mut Hub, now: Instant, conn: ConnId, text: &str) {
    h.handle_envelope(now, conn, text.as_bytes());
}

fn all_events(h: &mut Hub) -> Vec<HubEvent> {
    std::iter::from_fn(|| h.poll_event()).collect()
}

/// The publishes the application is asked to decide: `(id, connection, data)`.
fn publish_requests(h: &mut Hub) -> Vec<(PublishId, Option<ConnId>, String)> {
    all_events(h)
        .into_iter()
        .filter_map(|e| match e {
            HubEvent::PublishRequested { id, conn, data, .. } => {
                Some((id, conn, String::from_utf8(data.to_vec()).unwrap()))
            }
            _ => None,
        })
        .collect()
}

/// The answers among `env` (`ack` and `err`), by `ref`: `(ref, op, offset or code)`.
fn answers(env: &[Value]) -> Vec<(u64, String, Value)> {
    let mut v: Vec<(u64, String, Value)> = env
        .iter()
        .filter(|e| e["op"] == "ack" || e["op"] == "err")
        .map(|e| {
            let what = if e["op"] == "ack" { e["off"].clone() } else { e["code"].clone() };
            (e["ref"].as_u64().unwrap(), e["op"].as_str().unwrap().to_owned(), what)
        })
        .collect();
    v.sort_by_key(|a| a.0);
    v
}

fn ack(r: u64, off: u64) -> (u64, String, Value) {
    (r, "ack".to_owned(), Value::from(off))
}

fn err(r: u64, code: &str) -> (u64, String, Value) {
    (r, "err".to_owned(), Value::from(code))
}

#[test]
fn a_vetted_publish_with_a_bus_is_held_then_reaches_every_instance_as_decided() {
    use crate::hub::PublishDecision;
    let (mut hubs, mut bus, t0, a, b) = ann_and_bob_in_room(&vetting());
    let _ = (all_events(&mut hubs[0]), all_events(&mut hubs[1]));
    for n in 1..=3 {
        publish(&mut hubs[0], t0, a, "room", n, Some(&format!("m{n}")));
    }
    // Held: nothing goes to the bus, nothing is answered; the application is asked.
    assert!(!hubs[0].has_bus_actions(), "nothing for the bus before the decision");
    assert!(envelopes(&mut hubs[0], a).is_empty());
    let asked = publish_requests(&mut hubs[0]);
    let shown: Vec<(Option<ConnId>, &str)> = asked.iter().map(|r| (r.1, r.2.as_str())).collect();
    assert_eq!(shown, [(Some(a), r#"{"n":1}"#), (Some(a), r#"{"n":2}"#), (Some(a), r#"{"n":3}"#)]);
    assert_eq!(hubs[0].pending_publishes(), 3);

    assert!(hubs[0].decide_publish(t0, asked[0].0, PublishDecision::Accept));
    let fixed = Bytes::from_static(br#"{"n":20}"#);
    assert!(hubs[0].decide_publish(t0, asked[1].0, PublishDecision::Replace(fixed)));
    let spam = PublishDecision::Refuse { code: "spam".into() };
    assert!(hubs[0].decide_publish(t0, asked[2].0, spam));
    bus.run(&mut hubs, t0);

    // Both instances log what was decided, in the bus's order, with its publisher.
    let (ea, eb) = (envelopes(&mut hubs[0], a), envelopes(&mut hubs[1], b));
    assert_eq!(msgs(&eb), [(1, 1), (2, 20)]);
    assert_eq!(msgs(&ea), [(1, 1), (2, 20)]);
    assert!(eb.iter().filter(|e| e["op"] == "msg").all(|e| e["from"] == "ann"), "{eb:?}");
    // The publisher's answers: the bus's positions, and the refusal's code.
    assert_eq!(answers(&ea), [ack(1, 1), ack(2, 2), err(3, "spam")]);
    assert_eq!(bus.chans["room"].entries.len(), 2, "the refused one never reached the bus");
    assert_eq!(hubs[0].log("room").unwrap().head(), hubs[1].log("room").unwrap().head());
    assert_eq!(hubs[0].pending_publishes(), 0);
}

#[test]
fn a_vetted_publish_with_a_bus_is_bounded_times_out_and_goes_with_its_connection() {
    use crate::hub::PublishDecision;
    use crate::time::Duration;
    let cfg =
        HubConfig { max_pending_per_conn: 1, vet_timeout: Duration::from_secs(5), ..vetting() };
    let (mut hubs, mut bus, t0) = up_with(1, &cfg, &AllowAll);
    let a = ws(&mut hubs[0], t0, "ann");
    publish(&mut hubs[0], t0, a, "room", 1, Some("m1"));
    publish(&mut hubs[0], t0, a, "room", 2, Some("m2"));
    assert_eq!(answers(&envelopes(&mut hubs[0], a)), [err(2, "too_many_pending")]);
    let asked = publish_requests(&mut hubs[0]);
    assert_eq!(asked.len(), 1);
    // Not decided in time: refused with `publish_timeout`; a late decision is ignored.
    let late = t0 + Duration::from_secs(5);
    assert_eq!(hubs[0].poll_timeout(), Some(late));
    hubs[0].handle_timeout(late);
    assert_eq!(answers(&envelopes(&mut hubs[0], a)), [err(1, "publish_timeout")]);
    assert!(!hubs[0].decide_publish(late, asked[0].0, PublishDecision::Accept));
    // A connection that leaves drops its pending publish.
    publish(&mut hubs[0], late, a, "room", 3, Some("m3"));
    let asked = publish_requests(&mut hubs[0]);
    hubs[0].disconnect(late, a);
    assert_eq!((hubs[0].pending_publishes(), hubs[0].poll_timeout()), (0, None));
    assert!(!hubs[0].decide_publish(late, asked[0].0, PublishDecision::Accept));
    bus.run(&mut hubs, late);
    assert!(bus.chans.is_empty(), "nothing reached the bus");
}

#[test]
fn a_vetted_publish_resent_while_pending_joins_the_first_until_the_bus_answers() {
    use crate::hub::PublishDecision;
    let (mut hubs, mut bus, t0) = up_with(2, &vetting(), &AllowAll);
    let a = ws(&mut hubs[0], t0, "ann");
    let again = ws(&mut hubs[0], t0, "ann"); // the same user reconnected
    let resend =
        |r: u64| format!(r#"{{"op":"pub","ch":"d","id":"m1","data":{{"n":1}},"ref":{r}}}"#);
    send(&mut hubs[0], t0, a, &resend(1));
    send(&mut hubs[0], t0, a, &resend(2));
    send(&mut hubs[0], t0, again, &resend(7));
    let asked = publish_requests(&mut hubs[0]);
    assert_eq!(asked.len(), 1, "one pending publish");
    assert!(hubs[0].decide_publish(t0, asked[0].0, PublishDecision::Accept));
    // Decided, not yet answered by the bus: a resend still joins it.
    send(&mut hubs[0], t0, a, &resend(3));
    assert!(publish_requests(&mut hubs[0]).is_empty());
    assert!(!hubs[0].decide_publish(t0, asked[0].0, PublishDecision::Accept), "decided already");
    bus.run(&mut hubs, t0);
    assert_eq!(answers(&envelopes(&mut hubs[0], a)), [ack(1, 1), ack(2, 1), ack(3, 1)]);
    assert_eq!(answers(&envelopes(&mut hubs[0], again)), [ack(7, 1)]);
    assert_eq!(bus.chans["d"].entries.len(), 1);
    // Answered: a later resend on this instance is acknowledged at once, unasked.
    send(&mut hubs[0], t0, again, &resend(8));
    assert!(publish_requests(&mut hubs[0]).is_empty() && !hubs[0].has_bus_actions());
    assert_eq!(answers(&envelopes(&mut hubs[0], again)), [ack(8, 1)]);
    // On another instance it is vetted there; the bus answers with the first position.
    let b = ws(&mut hubs[1], t0, "ann");
    send(&mut hubs[1], t0, b, &resend(9));
    let asked = publish_requests(&mut hubs[1]);
    assert_eq!(asked.len(), 1);
    hubs[1].decide_publish(t0, asked[0].0, PublishDecision::Accept);
    bus.run(&mut hubs, t0);
    assert_eq!(answers(&envelopes(&mut hubs[1], b)), [ack(9, 1)]);
    assert_eq!(bus.chans["d"].entries.len(), 1, "stored once");
}

/// A publish of ann's to `room` without a connection that waits (for the application or
/// for the bus).
fn ann_requests(h: &mut Hub, now: Instant, id: Option<&str>, json: &[u8]) -> PublishId {
    match h.request_publish(now, &Principal::user("ann"), "room", id, json) {
        Ok(PublishRequest::Pending(id)) => id,
        other => panic!("not pending: {other:?}"),
    }
}

/// The answers of publishes without a connection.
fn decided(h: &mut Hub) -> Vec<(PublishId, Result<Position, PublishRefusal>)> {
    all_events(h)
        .into_iter()
        .filter_map(|e| match e {
            HubEvent::PublishDecided { id, result } => Some((id, result)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_publish_without_a_connection_is_vetted_then_answered_when_the_bus_answers() {
    use crate::hub::PublishDecision;
    use crate::time::Duration;
    let (mut hubs, mut bus, t0) = up_with(1, &vetting(), &AllowAll);
    let ann = Principal::user("ann");
    let id = ann_requests(&mut hubs[0], t0, Some("h1"), br#"{"n":1}"#);
    assert_eq!(ann_requests(&mut hubs[0], t0, Some("h1"), br#"{"n":1}"#), id, "a resend joins it");
    assert_eq!(publish_requests(&mut hubs[0]), [(id, None, r#"{"n":1}"#.to_owned())]);
    let fixed = Bytes::from_static(br#"{"n":2}"#);
    assert!(hubs[0].decide_publish(t0, id, PublishDecision::Replace(fixed)));
    assert!(decided(&mut hubs[0]).is_empty(), "answered when the bus answers");
    bus.run(&mut hubs, t0);
    let epoch = bus.chans["room"].epoch.unwrap();
    let first = Position { epoch, offset: 1 };
    assert_eq!(decided(&mut hubs[0]), [(id, Ok(first))]);
    assert_eq!(bus.chans["room"].entries[0].1, tag(Some("ann"), br#"{"n":2}"#));
    // Answered: a resend gets the first position at once.
    assert_eq!(
        hubs[0].request_publish(t0, &ann, "room", Some("h1"), b"1"),
        Ok(PublishRequest::Published(first))
    );
    // Refused, and not decided in time.
    let no = ann_requests(&mut hubs[0], t0, None, b"3");
    hubs[0].decide_publish(t0, no, PublishDecision::Refuse { code: "spam".into() });
    assert_eq!(decided(&mut hubs[0]), [(no, Err(PublishRefusal::Refused { code: "spam".into() }))]);
    let late = ann_requests(&mut hubs[0], t0, None, b"4");
    hubs[0].handle_timeout(t0 + Duration::from_secs(5));
    assert_eq!(decided(&mut hubs[0]), [(late, Err(PublishRefusal::Timeout))]);
    bus.run(&mut hubs, t0);
    assert_eq!(bus.chans["room"].entries.len(), 1);
    // The bus drops while a decided publish waits for it: unavailable. While it is down,
    // a publish is refused at once, unasked.
    let lost = ann_requests(&mut hubs[0], t0, None, b"5");
    let _ = publish_requests(&mut hubs[0]);
    hubs[0].decide_publish(t0, lost, PublishDecision::Accept);
    hubs[0].bus_down(t0);
    assert_eq!(decided(&mut hubs[0]), [(lost, Err(PublishRefusal::Hub(HubError::Unavailable)))]);
    assert_eq!(hubs[0].request_publish(t0, &ann, "room", None, b"6"), Err(HubError::Unavailable));
    assert_eq!(hubs[0].pending_publishes(), 0);
}

#[test]
fn a_publish_without_a_connection_goes_through_the_bus_without_vetting_too() {
    let (mut hubs, mut bus, t0) = up_with(1, &cfg(), &AllowAll);
    let id = ann_requests(&mut hubs[0], t0, Some("h1"), br#"{"n":1}"#);
    bus.run(&mut hubs, t0);
    let pos = Position { epoch: bus.chans["room"].epoch.unwrap(), offset: 1 };
    assert_eq!(decided(&mut hubs[0]), [(id, Ok(pos))]);
    assert_eq!(bus.chans["room"].entries[0].1, tag(Some("ann"), br#"{"n":1}"#));
    let ann = Principal::user("ann");
    assert_eq!(hubs[0].request_publish(t0, &ann, "room\n", None, b"1"), Err(HubError::BadChannel));
    hubs[0].bus_down(t0);
    assert_eq!(hubs[0].request_publish(t0, &ann, "room", None, b"1"), Err(HubError::Unavailable));
}

/// The joins the application is asked to decide, and the decided ones.
fn join_events(
    h: &mut Hub,
) -> (Vec<crate::hub::JoinId>, Vec<Result<Subscription, crate::hub::JoinRefusal>>) {
    let (mut asked, mut decided) = (Vec::new(), Vec::new());
    for e in all_events(h) {
        match e {
            HubEvent::JoinRequested { id, .. } => asked.push(id),
            HubEvent::JoinDecided { result, .. } => decided.push(result),
            _ => {}
        }
    }
    (asked, decided)
}

fn submit_n(h: &mut Hub, now: Instant, ch: &str, n: u64) {
    h.submit(now, None, ch, None, format!(r#"{{"n":{n}}}"#).as_bytes()).unwrap();
}

/// Two instances; the bus holds two messages of `later:a`; ann on instance A asks to join
/// it (a join the policy defers), and A's log of it is loading.
fn ann_asks_for_a_channel_of_two_messages() -> (Vec<Hub>, Bus, Instant, ConnId) {
    let (mut hubs, mut bus, t0) = up_with(2, &cfg(), &Later);
    for n in 1..=2 {
        submit_n(&mut hubs[1], t0, "later:a", n);
    }
    bus.run(&mut hubs, t0);
    let a = ws(&mut hubs[0], t0, "ann");
    send(&mut hubs[0], t0, a, r#"{"op":"sub","ch":"later:a","ref":1}"#);
    (hubs, bus, t0, a)
}

#[test]
fn a_join_allowed_while_the_log_loads_is_made_once_it_has_loaded() {
    use crate::hub::JoinDecision;
    let (mut hubs, mut bus, t0, a) = ann_asks_for_a_channel_of_two_messages();
    let (asked, _) = join_events(&mut hubs[0]);
    assert!(!hubs[0].is_synced("later:a"), "the log is loading");
    // Allowed first: the join now waits for the log.
    assert!(hubs[0].decide_join(t0, asked[0], JoinDecision::Allow));
    let (_, decided) = join_events(&mut hubs[0]);
    assert!(matches!(decided[..], [Ok(Subscription { pending: true, .. })]), "{decided:?}");
    assert!(envelopes(&mut hubs[0], a).is_empty(), "nothing before the log");
    assert_eq!(hubs[0].pending_joins(), 0);
    bus.run(&mut hubs, t0);
    submit_n(&mut hubs[1], t0, "later:a", 3);
    bus.run(&mut hubs, t0);
    let got = envelopes(&mut hubs[0], a);
    assert_eq!(got.iter().filter(|e| e["op"] == "subscribed").count(), 1, "{got:?}");
    assert_eq!(
        (&got[0]["op"], &got[0]["recovered"], &got[0]["off"]),
        (&"subscribed".into(), &true.into(), &2.into())
    );
    assert_eq!(msgs(&got), [(3, 3)]);
    assert_eq!(hubs[0].members("later:a").collect::<Vec<_>>(), [a]);
}

#[test]
fn a_sub_repeated_while_the_log_loads_is_answered_once_by_the_first() {
    let (mut hubs, mut bus, t0) = up_with(2, &cfg(), &AllowAll);
    for n in 1..=2 {
        submit_n(&mut hubs[1], t0, "feed", n);
    }
    bus.run(&mut hubs, t0);
    let a = ws(&mut hubs[0], t0, "ann");
    send(&mut hubs[0], t0, a, r#"{"op":"sub","ch":"feed","ref":1}"#);
    assert!(!hubs[0].is_synced("feed"), "the log is loading");
    send(&mut hubs[0], t0, a, r#"{"op":"sub","ch":"feed","ref":2}"#);
    assert!(envelopes(&mut hubs[0], a).is_empty(), "nothing before the log");
    bus.run(&mut hubs, t0);
    submit_n(&mut hubs[1], t0, "feed", 3);
    bus.run(&mut hubs, t0);
    let got = envelopes(&mut hubs[0], a);
    assert_eq!(got.iter().filter(|e| e["op"] == "subscribed").count(), 1, "{got:?}");
    assert_eq!((&got[0]["op"], &got[0]["off"]), (&"subscribed".into(), &2.into()));
    assert_eq!(msgs(&got), [(3, 3)]);
}

#[test]
fn a_join_decided_after_the_log_loaded_starts_where_it_asked() {
    use crate::hub::JoinDecision;
    let (mut hubs, mut bus, t0, a) = ann_asks_for_a_channel_of_two_messages();
    let s = hubs[0].connect(t0, Transport::Sse, Principal::user("sue"));
    let sub = hubs[0].subscribe(t0, s, "later:a", None).unwrap();
    assert!(sub.pending && sub.awaiting.is_some());
    let (asked, _) = join_events(&mut hubs[0]);
    bus.run(&mut hubs, t0);
    assert!(hubs[0].is_synced("later:a"));
    // Published after the log loaded, before the decision: delivered once, after the join.
    submit_n(&mut hubs[1], t0, "later:a", 3);
    bus.run(&mut hubs, t0);
    assert!(envelopes(&mut hubs[0], a).is_empty() && hubs[0].pull(s).is_none());
    for id in &asked {
        assert!(hubs[0].decide_join(t0, *id, JoinDecision::Allow));
    }
    submit_n(&mut hubs[1], t0, "later:a", 4);
    bus.run(&mut hubs, t0);
    let got = envelopes(&mut hubs[0], a);
    assert_eq!((&got[0]["op"], &got[0]["off"]), (&"subscribed".into(), &2.into()));
    assert_eq!(msgs(&got), [(3, 3), (4, 4)]);
    let frames: Vec<String> = std::iter::from_fn(|| hubs[0].pull(s))
        .map(|b| String::from_utf8(b.to_vec()).unwrap())
        .collect();
    let epoch = hubs[0].log("later:a").unwrap().epoch();
    assert_eq!(frames[0], format!("id: {epoch}:2\n\n"), "the head it asked at");
    let ids: Vec<&String> = frames.iter().filter(|f| f.contains("\nevent: later:a\n")).collect();
    assert_eq!(ids.len(), 2, "{frames:?}");
    assert!(
        ids[0].contains(&format!("id: {epoch}:3\n"))
            && ids[1].contains(&format!("id: {epoch}:4\n"))
    );
}

#[test]
fn a_join_refused_or_timed_out_while_the_log_loads_leaves_nothing() {
    use crate::hub::{JoinDecision, JoinRefusal};
    use crate::time::Duration;
    let cfg = HubConfig { join_timeout: Duration::from_secs(3), ..cfg() };
    let (mut hubs, mut bus, t0) = up_with(1, &cfg, &Later);
    let a = ws(&mut hubs[0], t0, "ann");
    send(&mut hubs[0], t0, a, r#"{"op":"sub","ch":"later:a","ref":1}"#);
    send(&mut hubs[0], t0, a, r#"{"op":"sub","ch":"later:b","ref":2}"#);
    let (asked, _) = join_events(&mut hubs[0]);
    assert_eq!(asked.len(), 2);
    assert!(hubs[0].decide_join(t0, asked[0], JoinDecision::Refuse { code: "no".into() }));
    let late = t0 + Duration::from_secs(3);
    hubs[0].handle_timeout(late);
    assert_eq!(answers(&envelopes(&mut hubs[0], a)), [err(1, "no"), err(2, "join_timeout")]);
    let (_, decided) = join_events(&mut hubs[0]);
    assert_eq!(
        decided,
        [Err(JoinRefusal::Refused { code: "no".into() }), Err(JoinRefusal::Timeout)]
    );
    bus.run(&mut hubs, late);
    assert_eq!(hubs[0].channel_count(), 0);
    assert!(bus.followers.values().all(HashSet::is_empty), "neither channel is followed");
    assert!(envelopes(&mut hubs[0], a).is_empty(), "no subscribed after the log loaded");
    // Asked while the log loads, then its log loaded, then refused: the same.
    send(&mut hubs[0], late, a, r#"{"op":"sub","ch":"later:c","ref":3}"#);
    let (asked, _) = join_events(&mut hubs[0]);
    bus.run(&mut hubs, late);
    hubs[0].decide_join(late, asked[0], JoinDecision::forbidden());
    bus.run(&mut hubs, late);
    assert_eq!(answers(&envelopes(&mut hubs[0], a)), [err(3, "forbidden")]);
    assert_eq!(hubs[0].channel_count(), 0);
    assert!(bus.followers["later:c"].is_empty());
}

#[test]
fn a_connection_that_leaves_while_its_join_waits_for_the_log_keeps_nothing() {
    use crate::hub::{JoinDecision, JoinRefusal};
    let (mut hubs, mut bus, t0) = up_with(1, &cfg(), &Later);
    // Waiting for the decision while the log loads: cancelled.
    let a = ws(&mut hubs[0], t0, "ann");
    send(&mut hubs[0], t0, a, r#"{"op":"sub","ch":"later:a","ref":1}"#);
    hubs[0].disconnect(t0, a);
    let (_, decided) = join_events(&mut hubs[0]);
    assert_eq!(decided, [Err(JoinRefusal::Cancelled)]);
    // Allowed, waiting for the log: the connection leaves, or unsubscribes; and a join
    // that was allowed at once, whose connection leaves before the log loaded.
    let b = ws(&mut hubs[0], t0, "bob");
    let c = ws(&mut hubs[0], t0, "cy");
    send(&mut hubs[0], t0, b, r#"{"op":"sub","ch":"later:b","ref":1}"#);
    send(&mut hubs[0], t0, c, r#"{"op":"sub","ch":"later:c","ref":1}"#);
    let (asked, _) = join_events(&mut hubs[0]);
    for id in asked {
        hubs[0].decide_join(t0, id, JoinDecision::Allow);
    }
    let d = ws(&mut hubs[0], t0, "dee");
    send(&mut hubs[0], t0, d, r#"{"op":"sub","ch":"now:d"}"#);
    hubs[0].disconnect(t0, b);
    send(&mut hubs[0], t0, c, r#"{"op":"unsub","ch":"later:c"}"#);
    hubs[0].disconnect(t0, d);
    bus.run(&mut hubs, t0);
    assert!(envelopes(&mut hubs[0], c).is_empty(), "unsubscribed: no subscribed");
    assert_eq!(hubs[0].channels_of(c).count(), 0);
    assert_eq!(hubs[0].channel_count(), 0, "no member, nothing logged: not kept");
    assert!(bus.followers.values().all(HashSet::is_empty), "{:?}", bus.followers);
}
