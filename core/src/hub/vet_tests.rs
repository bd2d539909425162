//! Unit tests of vetted publishes, on virtual time.

use serde_json::Value;

use super::*;
use crate::hub::{AllowAll, HubConfig, Transport};
use crate::time::Duration;

fn vetting(cfg: HubConfig) -> (Hub, Instant) {
    let cfg = HubConfig { vet_publishes: true, ..cfg };
    (Hub::new(cfg, AllowAll, 7), crate::time::test_epoch())
}

fn envelopes(h: &mut Hub, conn: ConnId) -> Vec<Value> {
    std::iter::from_fn(|| h.pull(conn)).map(|b| serde_json::from_slice(&b).unwrap()).collect()
}

fn requested(h: &mut Hub) -> Vec<(PublishId, Option<ConnId>, String)> {
    std::iter::from_fn(|| h.poll_event())
        .filter_map(|e| match e {
            HubEvent::PublishRequested { id, conn, data, .. } => {
                Some((id, conn, String::from_utf8(data.to_vec()).unwrap()))
            }
            _ => None,
        })
        .collect()
}

fn pub_env(h: &mut Hub, now: Instant, conn: ConnId, id: &str, data: &str, r: u64) {
    let text = format!(r#"{{"op":"pub","ch":"room","id":"{id}","data":{data},"ref":{r}}}"#);
    h.handle_envelope(now, conn, text.as_bytes());
}

#[test]
fn a_held_publish_is_accepted_replaced_or_refused_by_the_application() {
    let (mut h, t0) = vetting(HubConfig::default());
    let ann = h.connect(t0, Transport::WebSocket, Principal::user("ann"));
    let bob = h.connect(t0, Transport::WebSocket, Principal::user("bob"));
    h.subscribe(t0, bob, "room", None).unwrap();
    envelopes(&mut h, bob);
    pub_env(&mut h, t0, ann, "m1", r#"{"t":"hi"}"#, 1);
    pub_env(&mut h, t0, ann, "m2", r#"{"t":"raw"}"#, 2);
    pub_env(&mut h, t0, ann, "m3", r#"{"t":"spam"}"#, 3);
    // Nothing is logged or answered yet: the application is asked.
    assert!(h.log("room").unwrap().is_empty());
    assert!(envelopes(&mut h, ann).is_empty() && envelopes(&mut h, bob).is_empty());
    let asked = requested(&mut h);
    assert_eq!(asked.len(), 3);
    assert_eq!(asked[0].1, Some(ann));
    assert_eq!(asked[0].2, r#"{"t":"hi"}"#);
    assert_eq!(h.pending_publishes(), 3);

    assert!(h.decide_publish(t0, asked[0].0, PublishDecision::Accept));
    let fixed = bytes::Bytes::from_static(br#"{"t":"clean"}"#);
    assert!(h.decide_publish(t0, asked[1].0, PublishDecision::Replace(fixed)));
    let no = PublishDecision::Refuse { code: "spam".into() };
    assert!(h.decide_publish(t0, asked[2].0, no.clone()));
    assert!(!h.decide_publish(t0, asked[2].0, no), "decided already");

    let acks = envelopes(&mut h, ann);
    assert_eq!((acks[0]["op"].as_str(), acks[0]["ref"].as_u64()), (Some("ack"), Some(1)));
    assert_eq!((acks[0]["off"].as_u64(), acks[1]["off"].as_u64()), (Some(1), Some(2)));
    assert_eq!((acks[2]["op"].as_str(), acks[2]["code"].as_str()), (Some("err"), Some("spam")));
    assert_eq!(acks[2]["ref"], 3);
    let msgs = envelopes(&mut h, bob);
    assert_eq!(msgs.len(), 2);
    assert_eq!(
        (msgs[0]["data"]["t"].as_str(), msgs[0]["from"].as_str()),
        (Some("hi"), Some("ann"))
    );
    assert_eq!(msgs[1]["data"]["t"], "clean");
    assert_eq!(h.pending_publishes(), 0);
}

#[test]
fn a_resent_publish_joins_the_pending_one_and_dedup_holds_after() {
    let (mut h, t0) = vetting(HubConfig::default());
    let ann = h.connect(t0, Transport::WebSocket, Principal::user("ann"));
    pub_env(&mut h, t0, ann, "m1", "1", 1);
    pub_env(&mut h, t0, ann, "m1", "1", 2);
    // The same user on another connection (a reconnect) resends it too.
    let again = h.connect(t0, Transport::WebSocket, Principal::user("ann"));
    pub_env(&mut h, t0, again, "m1", "1", 7);
    let asked = requested(&mut h);
    assert_eq!(asked.len(), 1, "one pending entry");
    assert_eq!(h.pending_publishes(), 1);
    h.decide_publish(t0, asked[0].0, PublishDecision::Accept);
    let refs = |v: Vec<Value>| {
        v.iter().map(|e| (e["op"].clone(), e["ref"].clone(), e["off"].clone())).collect::<Vec<_>>()
    };
    assert_eq!(
        refs(envelopes(&mut h, ann)),
        [("ack".into(), 1.into(), 1.into()), ("ack".into(), 2.into(), 1.into())]
    );
    assert_eq!(refs(envelopes(&mut h, again)), [("ack".into(), 7.into(), 1.into())]);
    // Logged once; a later resend is acknowledged with the first position, unasked.
    pub_env(&mut h, t0, again, "m1", "1", 8);
    assert!(requested(&mut h).is_empty());
    assert_eq!(refs(envelopes(&mut h, again)), [("ack".into(), 8.into(), 1.into())]);
    assert_eq!(h.log("room").unwrap().len(), 1);
}

#[test]
fn pending_publishes_are_bounded_and_time_out() {
    let cfg = HubConfig {
        max_pending_per_conn: 2,
        max_pending: 3,
        vet_timeout: Duration::from_secs(5),
        ..HubConfig::default()
    };
    let (mut h, t0) = vetting(cfg);
    let ann = h.connect(t0, Transport::WebSocket, Principal::user("ann"));
    let bob = h.connect(t0, Transport::WebSocket, Principal::user("bob"));
    for r in 1..=3 {
        pub_env(&mut h, t0, ann, &format!("a{r}"), "1", r);
    }
    let e = envelopes(&mut h, ann);
    assert_eq!(
        (e.len(), e[0]["code"].as_str(), e[0]["ref"].as_u64()),
        (1, Some("too_many_pending"), Some(3))
    );
    pub_env(&mut h, t0, bob, "b1", "1", 1);
    pub_env(&mut h, t0, bob, "b2", "1", 2);
    let e = envelopes(&mut h, bob);
    assert_eq!((e.len(), e[0]["code"].as_str()), (1, Some("too_many_pending")), "hub-wide bound");
    let asked = requested(&mut h);
    assert_eq!(asked.len(), 3);
    // Not answered in time: refused with `publish_timeout`; a late decision is ignored.
    assert_eq!(h.poll_timeout(), Some(t0 + Duration::from_secs(5)));
    h.handle_timeout(t0 + Duration::from_secs(4));
    assert_eq!(h.pending_publishes(), 3);
    h.handle_timeout(t0 + Duration::from_secs(5));
    assert_eq!(h.pending_publishes(), 0);
    let codes: Vec<Value> = envelopes(&mut h, ann).into_iter().map(|e| e["code"].clone()).collect();
    assert_eq!(codes, ["publish_timeout", "publish_timeout"]);
    assert!(!h.decide_publish(t0, asked[0].0, PublishDecision::Accept));
    assert!(h.log("room").is_none_or(crate::replay::ReplayLog::is_empty));
}

#[test]
fn a_connection_that_leaves_drops_its_pending_publishes() {
    let (mut h, t0) = vetting(HubConfig::default());
    let ann = h.connect(t0, Transport::WebSocket, Principal::user("ann"));
    pub_env(&mut h, t0, ann, "m1", "1", 1);
    let asked = requested(&mut h);
    h.disconnect(t0, ann);
    assert_eq!(h.pending_publishes(), 0);
    assert_eq!(h.poll_timeout(), None, "its deadline went too");
    assert!(!h.decide_publish(t0, asked[0].0, PublishDecision::Accept));
}

#[test]
fn a_publish_without_a_connection_is_answered_with_an_event() {
    let (mut h, t0) = vetting(HubConfig::default());
    let ann = Principal::user("ann");
    let PublishRequest::Pending(id) =
        h.request_publish(t0, &ann, "room", Some("h1"), b"{}").unwrap()
    else {
        panic!("held")
    };
    assert_eq!(
        h.request_publish(t0, &ann, "room", Some("h1"), b"{}"),
        Ok(PublishRequest::Pending(id))
    );
    assert_eq!(requested(&mut h), [(id, None, "{}".to_owned())]);
    h.decide_publish(t0, id, PublishDecision::Accept);
    let decided: Vec<HubEvent> = std::iter::from_fn(|| h.poll_event())
        .filter(|e| matches!(e, HubEvent::PublishDecided { .. }))
        .collect();
    let pos = h.log("room").unwrap().head();
    assert_eq!(decided.len(), 1, "one event answers every request with this id");
    assert_eq!(decided[0], HubEvent::PublishDecided { id, result: Ok(pos) });
    // Refused by the policy and bad JSON: at once, nothing held.
    let deny = |_: &Principal, _: &str, a: crate::hub::Access| a == crate::hub::Access::Read;
    let mut h = Hub::new(HubConfig { vet_publishes: true, ..HubConfig::default() }, deny, 1);
    assert_eq!(h.request_publish(t0, &ann, "room", None, b"1"), Err(HubError::Forbidden));
    assert_eq!(h.pending_publishes(), 0);
    // Vetting off: logged at once.
    let (mut h, _) = (Hub::new(HubConfig::default(), AllowAll, 1), t0);
    assert!(matches!(
        h.request_publish(t0, &ann, "room", None, b"1"),
        Ok(PublishRequest::Published(_))
    ));
}
