//! The hub and the client session end to end, on loopback with real sockets, in both
//! adapters (issue 6). Each scenario is written once against the [`e2e::Backend`]
//! interface and runs for `tidewire-std` and for `tidewire-smol`:
//!
//! - a session subscribed to 3 channels survives losing the server while the server keeps
//!   its log (every message exactly once and in order) and a server restart that loses it
//!   (`RefetchNeeded` for each channel, then exact delivery in the new epoch);
//! - WebSocket blocked by a proxy: the session falls back to SSE, then (SSE blocked too)
//!   to polling, keeps receiving every message once and in order, and moves back up to
//!   WebSocket once it is allowed again;
//! - a slow consumer under each policy (`Disconnect` closes with 4100, `DropOldest` and
//!   `Conflate` keep the connection and deliver the newest);
//! - unauthorized joins are refused (over WebSocket and over SSE) and leave no trace;
//! - presence: a member that drops and comes back within the grace period causes no leave.
//!
//! The hub lives inside the adapter's `Server` (the core `tidewire::server::Server` serves
//! its routes), so a server cannot be restarted with its log: the scenarios that need the
//! log kept cut the clients off at the [`Front`](e2e::front::Front) instead, while the
//! server and its hub go on.

#[macro_use]
mod e2e;

use std::thread;
use std::time::{Duration, Instant};

use e2e::scenario::{CHANNELS, Inbox, Publisher, Site, hub_config, joined, publish_rounds};
use e2e::{Backend, Client, settle, within};
use tidewire::client::wire::ServerFrame;
use tidewire::client::{SessionState, Transport};
use tidewire::hub::{Hub, HubConfig};
use tidewire::policy::outbox::{OutboxConfig, OutboxCounters, SlowConsumer};
use tidewire::replay::{Position, ReplayLog};

fn restart_keeps_the_log<B: Backend + 'static>() {
    within(60, || {
        let mut site = Site::<B>::start(hub_config());
        let mut c = site.ann_on_channels(|_| {});
        c.subscribe("chat:own");
        joined::<B>(&site.hub, &["chat:own"], "ann");
        let publisher = Publisher::start::<B>(&site.hub, Duration::from_millis(3));
        let mut inbox = Inbox::default();
        inbox.pump(&mut c, 10, "the first messages", |i| {
            CHANNELS.iter().all(|ch| i.count(ch) >= 20)
        });

        // The clients lose the server; the hub (and its log) lives on and keeps receiving.
        site.cut();
        inbox.pump(&mut c, 10, "reconnecting", |i| i.saw(SessionState::Reconnecting));
        // The session's own publishes wait in its offline queue.
        for i in 0..3 {
            c.publish("chat:own", &format!(r#"{{"i":{i}}}"#));
        }
        thread::sleep(Duration::from_millis(300));
        site.resume();
        inbox.pump(&mut c, 10, "the reopen", |i| i.opens() >= 2);
        thread::sleep(Duration::from_millis(100));
        let rounds = publisher.finish();
        inbox.pump(&mut c, 15, "every message", |i| {
            CHANNELS.iter().all(|ch| i.last_seq(ch) == Some(rounds - 1))
        });
        inbox.pump(&mut c, 10, "the queued publishes", |i| i.count("chat:own") >= 3);
        inbox.pump_for(&mut c, Duration::from_millis(200));

        assert!(inbox.refetch.is_empty(), "{}", inbox.summary());
        for ch in CHANNELS {
            inbox.assert_exact(ch, 0, rounds, &inbox.msgs[*ch]);
        }
        // The queued publishes went out once each, in order, after the reconnect.
        inbox.assert_exact("chat:own", 0, 3, &inbox.msgs["chat:own"]);
        let head = B::inspect(&site.hub, |h| h.log("chat:own").map(ReplayLog::head));
        assert_eq!(head.map(|p| p.offset), Some(3));
        assert_eq!(B::head(&site.hub, "chat:own"), head);
        c.close();
        site.stop();
    });
}

fn restart_with_a_new_epoch<B: Backend + 'static>() {
    within(60, || {
        let mut site = Site::<B>::start(hub_config());
        let mut c = site.ann_on_channels(|_| {});
        publish_rounds::<B>(&site.hub, 0..5);
        let mut inbox = Inbox::default();
        inbox
            .pump(&mut c, 10, "the first messages", |i| CHANNELS.iter().all(|ch| i.count(ch) == 5));

        // The server dies with its log: what was published meanwhile is gone for good. It
        // restarts on its port with a new hub.
        site.cut();
        publish_rounds::<B>(&site.hub, 5..8);
        site.restart_with_new_hub(hub_config());
        site.resume();
        inbox.pump(&mut c, 10, "a refetch per channel", |i| i.refetch.len() >= CHANNELS.len());
        joined::<B>(&site.hub, CHANNELS, "ann");
        publish_rounds::<B>(&site.hub, 100..105);
        inbox.pump(&mut c, 10, "the new epoch's messages", |i| {
            CHANNELS.iter().all(|ch| i.last_seq(ch) == Some(104))
        });
        inbox.pump_for(&mut c, Duration::from_millis(200));

        for ch in CHANNELS {
            let refetches: Vec<_> = inbox.refetch.iter().filter(|r| r.0 == *ch).collect();
            assert_eq!(refetches.len(), 1, "{ch}: {}", inbox.summary());
            let at = refetches[0].1;
            let head = B::inspect(&site.hub, |h| h.log(ch).map(ReplayLog::head));
            assert_eq!(Some(at.epoch), head.map(|p| p.epoch), "{ch}: refetch names the new epoch");
            let (old, new) = inbox.msgs[*ch].split_at(5);
            inbox.assert_exact(ch, 0, 5, old);
            inbox.assert_exact(ch, 100, 105, new);
            assert_eq!(new[0].0, Position { epoch: at.epoch, offset: at.offset + 1 });
            assert_ne!(old[0].0.epoch, at.epoch);
        }
        c.close();
        site.stop();
    });
}

fn falls_back_to_sse_then_polling_and_back_up<B: Backend + 'static>() {
    within(90, || {
        let mut site = Site::<B>::start(hub_config());
        let mut c =
            site.ann_on_channels(|cfg| cfg.upgrade_every = Some(Duration::from_millis(1500)));
        let publisher = Publisher::start::<B>(&site.hub, Duration::from_millis(10));
        let mut inbox = Inbox::default();
        inbox
            .pump(&mut c, 10, "messages over WebSocket", |i| i.carried(Transport::WebSocket) >= 15);

        // A proxy starts refusing WebSocket; the connections through it are cut (the log is
        // kept).
        site.gates.block(true, false);
        site.cut();
        site.resume();
        inbox.pump(&mut c, 20, "messages over SSE", |i| i.carried(Transport::Sse) >= 15);

        // Then it refuses the event stream too.
        site.gates.block(true, true);
        site.cut();
        site.resume();
        inbox.pump(&mut c, 20, "messages over polling", |i| i.carried(Transport::Polling) >= 15);

        // Unblocked, the session moves back up by itself within its upgrade period.
        site.gates.block(false, false);
        let mark = inbox.carried(Transport::WebSocket);
        inbox.pump(&mut c, 20, "messages over WebSocket again", |i| {
            i.carried(Transport::WebSocket) >= mark + 15
        });
        let rounds = publisher.finish();
        inbox.pump(&mut c, 15, "every message", |i| {
            CHANNELS.iter().all(|ch| i.last_seq(ch) == Some(rounds - 1))
        });
        inbox.pump_for(&mut c, Duration::from_millis(200));

        assert!(inbox.refetch.is_empty(), "{}", inbox.summary());
        for ch in CHANNELS {
            inbox.assert_exact(ch, 0, rounds, &inbox.msgs[*ch]);
        }
        c.close();
        site.stop();
    });
}

fn counters<B: Backend>(hub: &B::Handle, ch: &str) -> OutboxCounters {
    B::inspect(hub, |h: &Hub| {
        let mut sum = OutboxCounters::default();
        for c in h.members(ch) {
            if let Some(k) = h.counters(c) {
                sum.queued += k.queued;
                sum.dropped += k.dropped;
                sum.conflated += k.conflated;
                sum.sent += k.sent;
            }
        }
        sum
    })
}

/// A raw WebSocket client (the std adapter's) that subscribes to `ch` and then reads only
/// when told to: a slow consumer.
fn raw_member(addr: std::net::SocketAddr, user: &str, ch: &str) -> tidewire_std::WebSocket {
    let url = format!("ws://{addr}/ws?token=user%3A{user}");
    let mut ws = tidewire_std::connect(&url, tidewire_std::ClientOptions::default()).unwrap();
    ws.send(format!(r#"{{"op":"sub","ch":"{ch}"}}"#)).unwrap();
    loop {
        let m = ws.recv().unwrap();
        match ServerFrame::decode(m.payload()).unwrap() {
            ServerFrame::Subscribed { .. } => return ws,
            ServerFrame::Presence { .. } => {}
            other => panic!("{other:?}"),
        }
    }
}

fn slow_consumers_get_their_channel_policy<B: Backend + 'static>() {
    within(90, || {
        let mut site = Site::<B>::start(HubConfig {
            outbox: OutboxConfig { max_bytes: 64 << 10, max_items: 64, ..OutboxConfig::default() },
            slow_consumers: vec![
                ("chat:drop".into(), SlowConsumer::DropOldest),
                ("chat:conf".into(), SlowConsumer::Conflate),
            ],
            ..hub_config()
        });
        let hub = site.hub.clone();
        let pad = "x".repeat(4000);
        let msg = |i: u64| format!(r#"{{"i":{i},"pad":"{pad}"}}"#);
        for (ch, policy) in [
            ("chat:drop-1", SlowConsumer::DropOldest),
            ("chat:conf-1", SlowConsumer::Conflate),
            ("chat:cut-1", SlowConsumer::Disconnect),
        ] {
            let mut ws = raw_member(site.inst.addr, "ann", ch);
            // The member stops reading; the server publishes until its policy applies.
            let too_slow = B::stats(&hub).too_slow;
            let applied = || match policy {
                SlowConsumer::DropOldest => counters::<B>(&hub, ch).dropped > 0,
                SlowConsumer::Conflate => counters::<B>(&hub, ch).conflated > 0,
                _ => B::stats(&hub).too_slow > too_slow,
            };
            let mut n = 0;
            while !applied() {
                B::publish(&hub, ch, &msg(n));
                n += 1;
                assert!(n < 50_000, "{ch}: the policy never applied");
                if n % 16 == 0 {
                    thread::sleep(Duration::from_millis(1));
                }
            }
            // A few more after it applied, so the newest is past the overflow.
            for _ in 0..8 {
                B::publish(&hub, ch, &msg(n));
                n += 1;
            }
            if policy == SlowConsumer::Disconnect {
                let info = loop {
                    match ws.recv() {
                        Ok(_) => {}
                        Err(tidewire_std::RecvError::Closed(info)) => break info,
                        Err(e) => panic!("{e:?}"),
                    }
                };
                assert_eq!(info.code, tidewire_std::CloseCode::TOO_SLOW, "{ch}");
                assert!(settle(|| B::inspect(&hub, |h| h.members(ch).count()) == 0));
                continue;
            }
            // Reading again: the newest arrives, older ones are missing, order holds.
            let mut got = Vec::new();
            while got.last() != Some(&(n - 1)) {
                let m = ws.recv().unwrap();
                if let ServerFrame::Msg { data, .. } = ServerFrame::decode(m.payload()).unwrap() {
                    let i: u64 = data[5..data.find(',').unwrap()].parse().unwrap();
                    got.push(i);
                }
            }
            assert!(got.windows(2).all(|w| w[0] < w[1]), "{ch}: out of order");
            assert!((got.len() as u64) < n, "{ch}: nothing was dropped ({n} published)");
            // The connection is still there and live.
            B::publish(&hub, ch, &msg(n));
            let m = ws.recv().unwrap();
            assert!(matches!(ServerFrame::decode(m.payload()).unwrap(), ServerFrame::Msg { .. }));
            assert_eq!(B::inspect(&hub, |h| h.members(ch).count()), 1, "{ch}");
            if policy == SlowConsumer::Conflate {
                assert_eq!(
                    counters::<B>(&hub, ch).dropped,
                    0,
                    "{ch}: conflation drops nothing else"
                );
            }
        }
        site.stop();
    });
}

fn unauthorized_joins_are_refused<B: Backend + 'static>() {
    within(60, || {
        let mut site = Site::<B>::start(hub_config());
        let mut ann = site.session(Some("ann"), |_| {});
        ann.subscribe("secret:plans");
        ann.subscribe("chat:ok");
        let mut anon = site.session(None, |_| {});
        anon.subscribe("chat:ok");
        anon.subscribe("public:news");
        let (mut a, mut b) = (Inbox::default(), Inbox::default());
        a.pump(&mut ann, 10, "the refusal", |i| !i.failed.is_empty());
        b.pump(&mut anon, 10, "the refusal", |i| !i.failed.is_empty());
        assert_eq!(a.failed, [("secret:plans".to_owned(), "forbidden".to_owned())]);
        assert_eq!(b.failed, [("chat:ok".to_owned(), "forbidden".to_owned())]);
        joined::<B>(&site.hub, &["chat:ok"], "ann");
        assert!(settle(|| B::inspect(&site.hub, |h| h.members("public:news").count()) == 1));

        B::publish(&site.hub, "chat:ok", r#"{"i":1}"#);
        B::publish(&site.hub, "public:news", r#"{"i":2}"#);
        a.pump(&mut ann, 10, "chat:ok", |i| i.count("chat:ok") == 1);
        b.pump(&mut anon, 10, "public:news", |i| i.count("public:news") == 1);
        b.pump_for(&mut anon, Duration::from_millis(100));
        assert_eq!(b.count("chat:ok"), 0);
        // A refused join leaves nothing behind: no member, no presence, no channel.
        B::inspect(&site.hub, |h| {
            assert_eq!(h.members("secret:plans").count(), 0);
            assert_eq!(h.presence("secret:plans").count(), 0);
            assert!(h.log("secret:plans").is_none());
            assert_eq!(h.members("chat:ok").count(), 1);
        });

        // Over SSE, the stream of a forbidden channel is refused the same way (403).
        site.gates.block(true, false);
        let mut bob = site.session(Some("bob"), |cfg| cfg.transports = vec![Transport::Sse]);
        bob.subscribe("secret:plans");
        bob.subscribe("chat:ok");
        let mut c = Inbox::default();
        c.pump(&mut bob, 10, "the SSE refusal", |i| !i.failed.is_empty());
        assert_eq!(c.failed, [("secret:plans".to_owned(), "forbidden".to_owned())]);
        joined::<B>(&site.hub, &["chat:ok"], "bob");
        B::inspect(&site.hub, |h| assert_eq!(h.members("secret:plans").count(), 0));
        for s in [&ann, &anon, &bob] {
            s.close();
        }
        site.stop();
    });
}

fn a_quick_reconnect_shows_no_leave<B: Backend + 'static>() {
    within(60, || {
        let mut site = Site::<B>::start(hub_config());
        let grace = Duration::from_millis(800);
        let mut bob = site.session(Some("bob"), |_| {});
        bob.subscribe("chat:room");
        joined::<B>(&site.hub, &["chat:room"], "bob");
        let mut inbox = Inbox::default();
        let ann = raw_member(site.addr, "ann", "chat:room");
        let mentions_ann = |i: &Inbox, leaving: bool| {
            i.presence.iter().any(|(_, join, leave)| {
                (if leaving { leave } else { join }).iter().any(|n| n == "ann")
            })
        };
        inbox.pump(&mut bob, 10, "ann's join", |i| mentions_ann(i, false));

        // Ann's connection drops; she is back well within the grace period.
        drop(ann);
        thread::sleep(Duration::from_millis(100));
        let ann = raw_member(site.addr, "ann", "chat:room");
        let seen = inbox.presence.len();
        inbox.pump_for(&mut bob, grace + Duration::from_millis(700));
        assert!(!mentions_ann(&inbox, true), "a leave was shown: {:?}", inbox.presence);
        assert_eq!(inbox.presence.len(), seen, "{:?}", inbox.presence);
        B::inspect(&site.hub, |h| {
            assert_eq!(h.presence("chat:room").collect::<Vec<_>>(), ["ann", "bob"]);
        });

        // Gone for good: the leave comes once the grace period is over.
        let t = Instant::now();
        drop(ann);
        inbox.pump(&mut bob, 10, "ann's leave", |i| mentions_ann(i, true));
        let waited = t.elapsed();
        assert!(waited >= grace.mul_f32(0.8), "leave after {waited:?}, grace {grace:?}");
        bob.close();
        site.stop();
    });
}

in_both_adapters!(
    restart_keeps_the_log,
    restart_with_a_new_epoch,
    falls_back_to_sse_then_polling_and_back_up,
    slow_consumers_get_their_channel_policy,
    unauthorized_joins_are_refused,
    a_quick_reconnect_shows_no_leave,
);
