//! The Redis bus against a real `redis-server` (started here on a free 127.0.0.1 port; the
//! test fails, never skips, when it is not installed: run `scripts/redis-setup.sh`).
//!
//! Two bus-mode hubs, each with its own `RedisBus` over real TCP sockets: messages
//! published on either hub reach the members of both in the same order with gap-free
//! offsets; a repeated id is stored once across instances; a hub that follows a channel
//! later gets its history; Redis killed (publishes fail with `Unavailable`) and restarted
//! empty brings the buses down and up again, in a new epoch, and members are reset. And
//! the scripts keep a channel coherent when its stream or meta is lost on its own.

mod redis;

use std::time::Instant;

use redis::{Node, RedisServer, msg_of, redis_cmd, run_until, subscribed_of};
use tidewire::hub::{BusAction, BusToken, HubError, HubEvent};
use tidewire::redis::RedisEvent;
use tidewire::replay::{Epoch, Position};

/// The `msg` envelopes a member got: `(epoch, offset, data)`.
fn msgs(n: &Node, conn: tidewire::hub::ConnId) -> Vec<(String, u64, String)> {
    n.frames[&conn].iter().filter_map(|f| msg_of(f)).collect()
}

#[test]
fn two_hubs_share_channels_through_redis() {
    let mut server = RedisServer::start();
    let mut a = Node::new(server.port, 1);
    let mut b = Node::new(server.port, 2);
    run_until(&mut [&mut a, &mut b], 10, "both buses up", |n| n.iter().all(|n| n.hub.bus_is_up()));

    // A member on each hub joins "room": the join waits for the history.
    let (ma, mb) = (a.member(), b.member());
    let now = Instant::now();
    assert!(a.hub.subscribe(now, ma, "room", None).unwrap().pending);
    assert!(b.hub.subscribe(now, mb, "room", None).unwrap().pending);
    run_until(&mut [&mut a, &mut b], 10, "joins complete", |n| {
        n[0].frames[&ma].iter().any(|f| subscribed_of(f).is_some())
            && n[1].frames[&mb].iter().any(|f| subscribed_of(f).is_some())
    });

    // 40 publishes alternating between the hubs, each with an id.
    for i in 0..40u32 {
        let node = if i % 2 == 0 { &mut a } else { &mut b };
        let json = format!("{{\"n\":{i}}}");
        node.hub
            .submit(Instant::now(), None, "room", Some(&format!("m{i}")), json.as_bytes())
            .unwrap();
        node.step();
    }
    run_until(&mut [&mut a, &mut b], 20, "40 messages on both hubs", |n| {
        msgs(n[0], ma).len() >= 40 && msgs(n[1], mb).len() >= 40
    });
    let (got_a, got_b) = (msgs(&a, ma), msgs(&b, mb));
    assert_eq!(got_a, got_b, "same order on both hubs");
    let epoch = got_a[0].0.clone();
    for (k, (ep, off, _)) in got_a.iter().enumerate() {
        assert_eq!((ep, *off), (&epoch, k as u64 + 1), "gap-free offsets");
    }
    let mut datas: Vec<String> = got_a.iter().map(|m| m.2.clone()).collect();
    datas.sort();
    let mut want: Vec<String> = (0..40).map(|i| format!("{{\"n\":{i}}}")).collect();
    want.sort();
    assert_eq!(datas, want, "every message once");
    run_until(&mut [&mut a, &mut b], 10, "every publish answered", |n| {
        n[0].submitted.len() == 20 && n[1].submitted.len() == 20
    });
    assert!(
        a.submitted
            .iter()
            .chain(&b.submitted)
            .all(|e| matches!(e, HubEvent::Submitted { result: Ok(_), .. }))
    );

    // The same id again, from the other instance: stored once, answered with the first position.
    let token = b.hub.submit(Instant::now(), None, "room", Some("m0"), b"{\"n\":0}").unwrap();
    run_until(&mut [&mut a, &mut b], 10, "the repeat answered", |n| n[1].submitted.len() == 21);
    let first = Position { epoch: epoch.parse::<Epoch>().unwrap(), offset: 1 };
    let m0 = got_a.iter().position(|m| m.2 == "{\"n\":0}").unwrap() as u64 + 1;
    assert_eq!(
        b.submitted[20],
        HubEvent::Submitted { token, result: Ok(Position { offset: m0, ..first }) }
    );

    // A third hub follows the channel later and gets its history: a member resuming from
    // offset 30 gets 31..=40 replayed.
    let mut c = Node::new(server.port, 3);
    run_until(&mut [&mut a, &mut b, &mut c], 10, "third bus up", |n| n[2].hub.bus_is_up());
    let mc = c.member();
    let from = Position { offset: 30, ..first };
    assert!(c.hub.subscribe(Instant::now(), mc, "room", Some(from)).unwrap().pending);
    run_until(&mut [&mut a, &mut b, &mut c], 10, "replay on the third hub", |n| {
        msgs(n[2], mc).len() >= 10
    });
    assert_eq!(
        c.frames[&mc].iter().find_map(|f| subscribed_of(f)),
        Some((true, epoch.clone(), 40))
    );
    assert_eq!(msgs(&c, mc), got_a[30..].to_vec());
    assert_eq!(c.hub.log("room").unwrap().head(), Position { offset: 40, ..first });
    drop(c);

    // Redis dies: both buses go down; publishes fail with Unavailable.
    server.kill();
    run_until(&mut [&mut a, &mut b], 10, "both buses down", |n| {
        n.iter().all(|n| !n.hub.bus_is_up())
    });
    assert_eq!(a.hub.submit(Instant::now(), None, "room", None, b"1"), Err(HubError::Unavailable));
    let publish = BusAction::Publish {
        token: BusToken(999),
        ch: "room".into(),
        data: "1".into(),
        id: None,
        epoch: Epoch(7),
    };
    a.bus.execute(Instant::now(), publish);
    assert_eq!(
        a.bus.poll_event(),
        Some(RedisEvent::Published { token: BusToken(999), result: Err(HubError::Unavailable) })
    );

    // A new, empty Redis on the same port: up again, the channel is in a new epoch and the
    // members are told their position is gone.
    server.restart();
    run_until(&mut [&mut a, &mut b], 20, "both buses up again", |n| {
        n.iter().all(|n| n.hub.bus_is_up())
    });
    run_until(&mut [&mut a, &mut b], 10, "members reset", |n| {
        [(&n[0], ma), (&n[1], mb)].iter().all(|(n, m)| {
            n.frames[m]
                .iter()
                .filter_map(|f| subscribed_of(f))
                .any(|(rec, ep, _)| !rec && ep != epoch)
        })
    });
    let reset_a = a.frames[&ma].iter().filter_map(|f| subscribed_of(f)).next_back().unwrap();
    let reset_b = b.frames[&mb].iter().filter_map(|f| subscribed_of(f)).next_back().unwrap();
    assert_eq!(reset_a, reset_b, "both hubs agree on the new epoch");
    assert_eq!(reset_a.2, 0);

    // Publishing works again, from offset 1 of the new epoch, on both hubs.
    a.hub.submit(Instant::now(), None, "room", Some("after"), b"\"after\"").unwrap();
    run_until(&mut [&mut a, &mut b], 10, "the message after the restart", |n| {
        msgs(n[0], ma).len() == 41 && msgs(n[1], mb).len() == 41
    });
    let last = (reset_a.1.clone(), 1, "\"after\"".to_owned());
    assert_eq!(msgs(&a, ma)[40], last);
    assert_eq!(msgs(&b, mb)[40], last);
}

/// Publishes `json` on `node` and waits for the answer.
fn publish(node: &mut Node, json: &str) -> Position {
    let token = node.hub.submit(Instant::now(), None, "x", None, json.as_bytes()).unwrap();
    let n = node.submitted.len();
    run_until(&mut [&mut *node], 10, "the publish answered", |ns| ns[0].submitted.len() > n);
    match &node.submitted[n] {
        HubEvent::Submitted { token: t, result: Ok(pos) } if *t == token => *pos,
        other => panic!("unexpected answer {other:?}"),
    }
}

#[test]
fn lost_stream_or_meta_stays_coherent() {
    let server = RedisServer::start();
    let mut a = Node::new(server.port, 4);
    run_until(&mut [&mut a], 10, "bus up", |n| n[0].hub.bus_is_up());
    let m = a.member();
    assert!(a.hub.subscribe(Instant::now(), m, "x", None).unwrap().pending);
    run_until(&mut [&mut a], 10, "joined", |n| {
        n[0].frames[&m].iter().any(|f| subscribed_of(f).is_some())
    });
    let p1 = publish(&mut a, "1");
    for k in 2..=3 {
        assert_eq!(publish(&mut a, &k.to_string()), Position { offset: k, ..p1 });
    }
    assert_eq!(p1.offset, 1);

    // The stream is lost, the meta stays: offsets go on in the same epoch; a newcomer's
    // history holds only what the stream still has.
    assert_eq!(redis_cmd(server.port, &["DEL", "tw:x:log"]), ":1\r\n");
    assert_eq!(publish(&mut a, "4"), Position { offset: 4, ..p1 });
    let mut b = Node::new(server.port, 5);
    run_until(&mut [&mut a, &mut b], 10, "second bus up", |n| n[1].hub.bus_is_up());
    let mb = b.member();
    assert!(
        b.hub
            .subscribe(Instant::now(), mb, "x", Some(Position { offset: 1, ..p1 }))
            .unwrap()
            .pending
    );
    run_until(&mut [&mut a, &mut b], 10, "second join", |n| {
        n[1].frames[&mb].iter().any(|f| subscribed_of(f).is_some())
    });
    let epoch1 = p1.epoch.to_string();
    assert_eq!(
        b.frames[&mb].iter().find_map(|f| subscribed_of(f)),
        Some((false, epoch1.clone(), 4))
    );

    // The meta is lost, the stream stays: the next publish starts a new epoch on an emptied
    // stream, and the hubs' mirrors (and members) follow it.
    assert_eq!(redis_cmd(server.port, &["DEL", "tw:x:meta"]), ":1\r\n");
    let p2 = publish(&mut a, "5");
    assert_ne!(p2.epoch, p1.epoch);
    assert_eq!(p2.offset, 1);
    assert_eq!(redis_cmd(server.port, &["XLEN", "tw:x:log"]), ":1\r\n");
    run_until(&mut [&mut a, &mut b], 10, "both mirrors in the new epoch", |n| {
        n.iter().all(|n| n.hub.log("x").is_some_and(|l| l.head() == p2))
    });
    for (node, conn) in [(&a, m), (&b, mb)] {
        let last = msgs(node, conn).last().cloned();
        assert_eq!(last, Some((p2.epoch.to_string(), 1, "5".to_owned())));
    }

    // The meta's offset falls behind the stream (restored apart): a new epoch rather
    // than a failed XADD.
    assert_eq!(redis_cmd(server.port, &["HSET", "tw:x:meta", "off", "0"]), ":0\r\n");
    let p3 = publish(&mut a, "6");
    assert_ne!(p3.epoch, p2.epoch);
    assert_eq!(p3.offset, 1);
    run_until(&mut [&mut a, &mut b], 10, "both mirrors in the third epoch", |n| {
        n.iter().all(|n| n.hub.log("x").is_some_and(|l| l.head() == p3))
    });
}

#[test]
fn redis_restored_from_an_older_snapshot_starts_a_new_epoch() {
    let server = RedisServer::start();
    let mut a = Node::new(server.port, 6);
    run_until(&mut [&mut a], 10, "bus up", |n| n[0].hub.bus_is_up());
    let m = a.member();
    assert!(a.hub.subscribe(Instant::now(), m, "x", None).unwrap().pending);
    run_until(&mut [&mut a], 10, "joined", |n| {
        n[0].frames[&m].iter().any(|f| subscribed_of(f).is_some())
    });
    let p1 = publish(&mut a, "1");
    for k in 2..=4 {
        assert_eq!(publish(&mut a, &k.to_string()), Position { offset: k, ..p1 });
    }
    // Redis comes back with older data in the same epoch (as from an older RDB snapshot):
    // offsets 3 and 4 would be handed out again. The hub's Follow after the reconnection
    // says it saw offset 4; the history script starts a new epoch.
    assert_eq!(redis_cmd(server.port, &["HSET", "tw:x:meta", "off", "2"]), ":0\r\n");
    assert_eq!(redis_cmd(server.port, &["XTRIM", "tw:x:log", "MAXLEN", "2"]), ":2\r\n");
    redis_cmd(server.port, &["CLIENT", "KILL", "TYPE", "pubsub"]);
    run_until(&mut [&mut a], 10, "a new epoch after the reconnection", |n| {
        n[0].hub.log("x").is_some_and(|l| l.epoch() != p1.epoch)
    });
    assert!(
        a.frames[&m].iter().filter_map(|f| subscribed_of(f)).any(|s| !s.0),
        "the member is told its position is gone"
    );
    let p2 = publish(&mut a, "5");
    assert_ne!(p2.epoch, p1.epoch);
    assert_eq!(p2.offset, 1);
}
