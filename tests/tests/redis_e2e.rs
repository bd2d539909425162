//! Scale-out over a real Redis, end to end in both adapters (issue 9): servers with
//! `ServerConfig::redis` (the hub inside each joins the bus), on loopback, and client
//! sessions on each.
//!
//! - Two instances share every channel: sessions on each get every message, published on
//!   either, exactly once and in one order.
//! - A session moves from instance A to instance B mid-stream (A shuts down; B takes over
//!   its address, the site's front) and resumes without gap or duplicate: the shared log
//!   numbers the messages.
//! - Redis restarted empty mid-run: publishes fail clearly while it is down, the instances
//!   reconnect, and each session gets every message once in order, or `RefetchNeeded`
//!   (the new epoch) and then every later message once in order.
//!
//! `redis-server` runs on a free 127.0.0.1 port (`scripts/redis-setup.sh` installs it; the
//! test fails, never skips, without it).

#[macro_use]
mod e2e;
#[path = "redis/server.rs"]
mod redis_server;

use std::thread;
use std::time::Duration;

use e2e::scenario::{CHANNELS, Inbox, Instance, Publisher, Site, hub_config, joined};
use e2e::{Backend, Client, Spec, settle, within};
use redis_server::RedisServer;

/// Publishes `{"i":N}` on every channel, N in `seqs`, alternating between the hubs.
fn publish_alternating<B: Backend>(hubs: &[&B::Handle], seqs: std::ops::Range<u64>) {
    for i in seqs {
        for ch in CHANNELS {
            let hub = hubs[usize::try_from(i).unwrap() % hubs.len()];
            B::publish(hub, ch, &format!(r#"{{"i":{i}}}"#));
        }
    }
}

/// The test servers' settings: the demo's, on the Redis server at `port`.
fn on_redis(port: u16) -> Spec {
    Spec { redis: Some(port), ..Spec::new(hub_config()) }
}

fn two_instances_share_every_channel<B: Backend + 'static>() {
    within(60, || {
        let redis = RedisServer::start();
        let a = Site::<B>::serving(on_redis(redis.port));
        let b = Site::<B>::serving(on_redis(redis.port));
        let mut x = a.ann_on_channels(|_| {});
        let mut y = b.session(Some("bob"), |_| {});
        for ch in CHANNELS {
            y.subscribe(ch);
        }
        joined::<B>(&b.hub, CHANNELS, "bob");
        publish_alternating::<B>(&[&a.hub, &b.hub], 0..40);
        let (mut ix, mut iy) = (Inbox::default(), Inbox::default());
        let done = |i: &Inbox| CHANNELS.iter().all(|ch| i.last_seq(ch) == Some(39));
        ix.pump(&mut x, 15, "every message on A", done);
        iy.pump(&mut y, 15, "every message on B", done);
        ix.pump_for(&mut x, Duration::from_millis(200));
        iy.pump_for(&mut y, Duration::from_millis(200));
        for ch in CHANNELS {
            ix.assert_exact(ch, 0, 40, &ix.msgs[*ch]);
            iy.assert_exact(ch, 0, 40, &iy.msgs[*ch]);
            // The same positions on both instances: one owner numbered them.
            let px: Vec<_> = ix.msgs[*ch].iter().map(|m| m.0).collect();
            let py: Vec<_> = iy.msgs[*ch].iter().map(|m| m.0).collect();
            assert_eq!(px, py, "{ch}");
        }
        // A trusted publish with an id is stored once, whichever instance takes it.
        let first = B::publish_once(&a.hub, "chat:a", "once-1", r#"{"i":40}"#);
        assert_eq!(B::publish_once(&b.hub, "chat:a", "once-1", r#"{"i":40}"#), first);
        ix.pump(&mut x, 10, "the once-published message", |i| i.last_seq("chat:a") == Some(40));
        ix.pump_for(&mut x, Duration::from_millis(200));
        assert_eq!(ix.count("chat:a"), 41);
        // A client publish on B reaches A's session with its publisher, carried by the bus.
        y.publish("chat:b", r#"{"i":40}"#);
        ix.pump(&mut x, 10, "bob's message", |i| i.last_seq("chat:b") == Some(40));
        assert_eq!(ix.from["chat:b"].last(), Some(&Some("bob".to_owned())));
        assert!(ix.from["chat:b"][..40].iter().all(Option::is_none), "trusted: no publisher");
        x.close();
        y.close();
    });
}

fn a_session_moves_to_another_instance<B: Backend + 'static>() {
    within(60, || {
        let redis = RedisServer::start();
        let mut a = Site::<B>::serving(on_redis(redis.port));
        let b = Instance::<B>::start(&on_redis(redis.port), "127.0.0.1:0");
        let hub_b = b.hub.clone();
        let mut c = a.ann_on_channels(|_| {});
        // The publisher is on instance B all along.
        let publisher = Publisher::start::<B>(&hub_b, Duration::from_millis(4));
        let mut inbox = Inbox::default();
        inbox.pump(&mut c, 15, "messages via A", |i| CHANNELS.iter().all(|ch| i.count(ch) >= 15));

        // Instance A shuts down (1001 to the session); instance B takes over its address.
        a.move_to(b);
        inbox.pump(&mut c, 15, "the reopen on B", |i| i.opens() >= 2);
        thread::sleep(Duration::from_millis(100));
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
        a.stop();
    });
}

fn redis_restarts_mid_run<B: Backend + 'static>() {
    within(90, || {
        let mut redis = RedisServer::start();
        let a = Site::<B>::serving(on_redis(redis.port));
        let b = Site::<B>::serving(on_redis(redis.port));
        let mut x = a.ann_on_channels(|_| {});
        let publisher = Publisher::start::<B>(&b.hub, Duration::from_millis(4));
        let mut inbox = Inbox::default();
        inbox.pump(&mut x, 15, "messages", |i| CHANNELS.iter().all(|ch| i.count(ch) >= 10));

        redis.kill();
        assert!(settle(|| !B::bus_is_up(&b.hub)));
        // While Redis is down, publishes fail (the publisher counts them), and delivery of
        // what the instances hold goes on.
        thread::sleep(Duration::from_millis(300));
        redis.restart();
        assert!(settle(|| B::bus_is_up(&a.hub) && B::bus_is_up(&b.hub)));
        inbox.pump(&mut x, 15, "a refetch per channel", |i| i.refetch.len() >= CHANNELS.len());
        thread::sleep(Duration::from_millis(200));
        let (rounds, failed) = publisher.finish_with_failures();
        assert!(!failed.is_empty(), "no publish failed while Redis was down");
        inbox.pump(&mut x, 15, "the last messages", |i| {
            CHANNELS.iter().all(|ch| i.last_seq(ch) == Some(rounds - 1))
        });
        inbox.pump_for(&mut x, Duration::from_millis(200));

        for ch in CHANNELS {
            let msgs = &inbox.msgs[*ch];
            let refetches: Vec<_> = inbox.refetch.iter().filter(|r| r.0 == *ch).collect();
            assert_eq!(refetches.len(), 1, "{ch}: {}", inbox.summary());
            let new_epoch = refetches[0].1.epoch;
            let cut = msgs.iter().position(|m| m.0.epoch == new_epoch).expect("messages after");
            let (old, new) = msgs.split_at(cut);
            // Before: exactly what was published, once, in order, up to where it stopped.
            let last_old = old.last().unwrap().1;
            inbox.assert_exact(ch, 0, last_old + 1, old);
            // After the refetch: every publish that succeeded, once, in order.
            let first_new = new[0].1;
            let expected: Vec<u64> = (first_new..rounds)
                .filter(|i| !failed.iter().any(|(c, f)| c == ch && f == i))
                .collect();
            let got: Vec<u64> = new.iter().map(|m| m.1).collect();
            assert_eq!(got, expected, "{ch}");
            assert!(new.windows(2).all(|w| w[0].0.offset + 1 == w[1].0.offset), "{ch}");
        }
        x.close();
    });
}

in_both_adapters!(
    two_instances_share_every_channel,
    a_session_moves_to_another_instance,
    redis_restarts_mid_run,
);
