//! The core server's SSE route end to end over loopback, through the socket pump: the
//! stream's head and events, resuming with `Last-Event-ID` (raw and with `sse::connect`),
//! "position gone", a restart with a new hub, auth before the 200, the slow-reader policy,
//! keep-alives, a client that leaves, and graceful shutdown.

mod common;

use std::io::Read as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Blocks, TestServer, get, settle, within};
use tidewire_std::sse::{SseOptions, connect};
use tidewire_std::tidewire::replay::Position;
use tidewire_std::tidewire::sse::{SseClientEvent, SseEvent, SseFailure, SseReason, SseState};
use tidewire_std::{ServerConfig, ServerHandle};

/// The channel every test streams (readable by anonymous clients under the demo policy).
const CH: &str = "public:ticks";

fn start(cfg: ServerConfig) -> (TestServer, ServerHandle) {
    let server = TestServer::hub(cfg);
    let hub = server.handle.clone();
    (server, hub)
}

/// SSE streams the core server holds.
fn streams(hub: &ServerHandle) -> usize {
    hub.inspect(|s| {
        s.describe_connections().iter().filter(|(_, what)| what.starts_with("sse ")).count()
    })
}

fn tick(hub: &ServerHandle, n: u32) -> Position {
    hub.publish(CH, format!("{{\"n\":{n}}}")).unwrap()
}

fn block(pos: Position, n: u32) -> String {
    format!("id: {pos}\nevent: {CH}\ndata: {{\"n\":{n}}}")
}

/// A client whose reconnection waits are short.
fn fast_client() -> SseOptions {
    let mut opts = SseOptions::default();
    opts.client.default_retry = Duration::from_millis(50);
    opts.client.backoff.base = Duration::from_millis(50);
    opts.client.backoff.cap = Duration::from_millis(200);
    opts
}

/// The next stream event, skipping state changes.
fn next_event(c: &mut tidewire_std::sse::SseConnection) -> SseEvent {
    loop {
        match c.next().expect("client closed") {
            SseClientEvent::Event(e) => return e,
            SseClientEvent::State(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[test]
fn a_stream_has_the_sse_headers_and_events_with_positions() {
    within(10, || {
        let (server, hub) = start(ServerConfig::default());
        let (head, mut blocks) = Blocks::open(get(
            server.addr,
            "/events?ch=public:ticks",
            "Accept: text/event-stream\r\n",
        ));
        let lower = head.to_ascii_lowercase();
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        for h in
            ["content-type: text/event-stream", "cache-control: no-cache", "x-accel-buffering: no"]
        {
            assert!(lower.contains(h), "{h} missing in {head}");
        }
        assert!(!lower.contains("content-length"), "{head}");
        // Every client learns its position at once: an id-only block with the head.
        let first = blocks.next().unwrap();
        let start: Position = first.strip_prefix("id: ").unwrap().parse().unwrap();
        assert_eq!(start.offset, 0);
        assert!(settle(|| streams(&hub) == 1));
        let p1 = tick(&hub, 1);
        let p2 = tick(&hub, 2);
        assert_eq!((p1.epoch, p1.offset, p2.offset), (start.epoch, 1, 2));
        assert_eq!(blocks.next().unwrap(), block(p1, 1));
        assert_eq!(blocks.next().unwrap(), block(p2, 2));
    });
}

#[test]
fn last_event_id_replays_exactly_the_missed_events_once() {
    within(10, || {
        let (server, hub) = start(ServerConfig::default());
        let p: Vec<Position> = (1..=5).map(|n| tick(&hub, n)).collect();
        let (_, mut blocks) = Blocks::open(get(
            server.addr,
            "/events?ch=public:ticks",
            &format!("Last-Event-ID: {}\r\n", p[1]),
        ));
        for (i, pos) in p.iter().enumerate().skip(2) {
            assert_eq!(blocks.next().unwrap(), block(*pos, u32::try_from(i).unwrap() + 1));
        }
        assert!(settle(|| streams(&hub) == 1));
        let p6 = tick(&hub, 6);
        // Live events follow, without a duplicate of the replayed ones.
        assert_eq!(blocks.next().unwrap(), block(p6, 6));
    });
}

#[test]
fn a_trimmed_or_foreign_position_gets_a_reset_event() {
    within(10, || {
        let mut cfg = ServerConfig::default();
        cfg.endpoint.hub.log.max_count = 2;
        let (server, hub) = start(cfg);
        let p: Vec<Position> = (1..=5).map(|n| tick(&hub, n)).collect();
        for last in [p[0].to_string(), format!("{:x}:3", p[0].epoch.0 ^ 1), "junk".into()] {
            let (_, mut blocks) = Blocks::open(get(
                server.addr,
                "/events?ch=public:ticks",
                &format!("Last-Event-ID: {last}\r\n"),
            ));
            // The cursor moves to the head and the client is told to refetch, in one block
            // (the hub's frame; `Channels` sent an id-only block first).
            assert_eq!(
                blocks.next().unwrap(),
                format!(
                    "id: {}\nevent: reset\ndata: {{\"ch\":\"{CH}\",\"pos\":\"{}\",\"recovered\":false}}",
                    p[4], p[4]
                )
            );
        }
        // A position still in the log replays exactly.
        let (_, mut blocks) = Blocks::open(get(
            server.addr,
            "/events?ch=public:ticks",
            &format!("Last-Event-ID: {}\r\n", p[3]),
        ));
        assert_eq!(blocks.next().unwrap(), block(p[4], 5));
    });
}

#[test]
fn sse_connect_resumes_after_a_reconnect_without_gap_or_duplicate() {
    // Before the core server this test restarted the server around one `Channels`; the hub
    // now lives in the server, so the client's idle watchdog (the server sends no
    // keep-alive) makes it reconnect instead, while events are published.
    within(20, || {
        let mut cfg = ServerConfig::default();
        cfg.endpoint.sse.keepalive = None;
        let (server, hub) = start(cfg);
        let mut opts = fast_client();
        opts.client.idle_timeout = Some(Duration::from_millis(300));
        let mut client = connect(&server.http_url("/events?ch=public:ticks"), opts).unwrap();
        assert_eq!(client.state(), SseState::Open, "connect returns once the stream is open");
        let p1 = tick(&hub, 1);
        let e = next_event(&mut client);
        assert_eq!(
            (e.id.as_str(), e.event.as_str(), e.data.as_str()),
            (&*p1.to_string(), CH, "{\"n\":1}")
        );

        // The stream goes quiet: the client gives up on it; three events are published
        // while it reconnects.
        loop {
            match client.next().expect("client closed") {
                SseClientEvent::State(s) if s.state == SseState::Reconnecting => break,
                SseClientEvent::Event(e) => panic!("unexpected {e:?}"),
                _ => {}
            }
        }
        let missed: Vec<Position> = (2..=4).map(|n| tick(&hub, n)).collect();

        // The client reconnects by itself with Last-Event-ID and gets each event once.
        let mut seen = Vec::new();
        let mut states = Vec::new();
        while seen.len() < 3 {
            match client.next().expect("client closed") {
                SseClientEvent::Event(e) => seen.push((e.id, e.data)),
                SseClientEvent::State(s) => states.push(s.state),
                _ => {}
            }
        }
        let want: Vec<(String, String)> = missed
            .iter()
            .zip(2..)
            .map(|(p, n)| (p.to_string(), format!("{{\"n\":{n}}}")))
            .collect();
        assert_eq!(seen, want);
        assert_eq!(states.last(), Some(&SseState::Open), "{states:?}");
        // Live again.
        let p5 = tick(&hub, 5);
        assert_eq!(next_event(&mut client).id, p5.to_string());
        assert_eq!(client.last_event_id(), p5.to_string());
        client.close();
        assert!(matches!(
            client.next(),
            Some(SseClientEvent::State(s)) if s.state == SseState::Closed && s.reason == SseReason::ClosedByApp
        ));
        assert_eq!(client.next(), None);
        assert!(settle(|| streams(&hub) == 0));
    });
}

#[test]
fn a_restart_without_history_makes_the_client_refetch() {
    within(20, || {
        let (server, old) = start(ServerConfig::default());
        let addr = server.addr;
        let mut client =
            connect(&server.http_url("/events?ch=public:ticks"), fast_client()).unwrap();
        tick(&old, 1);
        next_event(&mut client);
        server.stop(Duration::from_secs(1));
        // A new server, a new hub: new epoch, the client's position is gone.
        let server = TestServer::hub_at(&addr.to_string(), ServerConfig::default());
        let head = tick(&server.handle, 1);
        let e = next_event(&mut client);
        assert_eq!(e.event, "reset");
        assert_eq!(e.data, format!("{{\"ch\":\"{CH}\",\"pos\":\"{head}\",\"recovered\":false}}"));
        assert_eq!(client.last_event_id(), head.to_string());
    });
}

#[test]
fn auth_is_checked_before_the_200_and_no_stream_starts() {
    within(10, || {
        let (server, hub) = start(ServerConfig::default());
        let (status, head, _) =
            common::fetch(server.addr, "/events?ch=public:ticks&token=bogus", "");
        assert_eq!(status, 401, "{head}");
        assert!(head.contains("WWW-Authenticate: Bearer"), "{head}");
        assert_eq!(streams(&hub), 0);

        // EventSource semantics: a 401 fails the source for good.
        let mut opts = fast_client();
        opts.headers.push(("Authorization".into(), "Bearer bogus".into()));
        let mut client = connect(&server.http_url("/events?ch=public:ticks"), opts).unwrap();
        assert_eq!(client.state(), SseState::Closed);
        let mut last = None;
        while let Some(ev) = client.next() {
            last = Some(ev);
        }
        assert!(
            matches!(last, Some(SseClientEvent::State(s))
                if s.reason == SseReason::Failed(SseFailure::BadStatus(401))),
            "{last:?}"
        );
        assert_eq!(streams(&hub), 0);

        let mut opts = fast_client();
        opts.headers.push(("Authorization".into(), "Bearer user:ann".into()));
        let mut client = connect(&server.http_url("/events?ch=chat:room"), opts).unwrap();
        assert_eq!(client.state(), SseState::Open);
        assert_eq!(streams(&hub), 1);
        let p = hub.publish("chat:room", "7").unwrap();
        let e = loop {
            let e = next_event(&mut client);
            if e.event != "presence" {
                break e;
            }
        };
        assert_eq!(e.id, p.to_string());
    });
}

#[test]
fn a_reader_that_stops_is_ended_by_the_outbox_policy() {
    within(30, || {
        let mut cfg = ServerConfig::default();
        cfg.endpoint.hub.outbox.max_bytes = 64 << 10;
        cfg.endpoint.sse.keepalive = None;
        let (server, hub) = start(cfg);
        let (_, blocks) = Blocks::open(get(server.addr, "/events?ch=public:ticks", ""));
        assert!(settle(|| streams(&hub) == 1));
        // The client reads nothing more; the server keeps publishing 8 KiB events until
        // the hub's slow-consumer policy ends the stream.
        let payload = format!("\"{}\"", "x".repeat(8 << 10));
        let start = Instant::now();
        while hub.inspect(|s| s.hub_stats().too_slow) == 0 {
            hub.publish(CH, payload.as_str()).unwrap();
            assert!(start.elapsed() < Duration::from_secs(20), "the stream never ended");
        }
        drop(blocks);
        assert!(settle(|| streams(&hub) == 0));
        assert!(settle(|| server.handle.connections() == 0));
    });
}

#[test]
fn an_idle_stream_gets_keepalive_comments() {
    within(10, || {
        let mut cfg = ServerConfig::default();
        cfg.endpoint.sse.keepalive = Some(Duration::from_millis(200));
        let (server, _hub) = start(cfg);
        let (_, mut blocks) = Blocks::open(get(server.addr, "/events?ch=public:ticks", ""));
        assert!(blocks.next().unwrap().starts_with("id: "));
        let start = Instant::now();
        let mut got = [0u8; 2];
        blocks.s.read_exact(&mut got).unwrap();
        assert_eq!(&got, b":\n");
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(150) && took < Duration::from_secs(2), "{took:?}");
    });
}

#[test]
fn a_client_that_leaves_is_noticed_and_unsubscribed() {
    within(10, || {
        let (server, hub) = start(ServerConfig::default());
        let (_, blocks) = Blocks::open(get(server.addr, "/events?ch=public:ticks", ""));
        assert!(settle(|| streams(&hub) == 1));
        drop(blocks);
        // Seen at once (the reader reads the end of the stream), with no publish.
        assert!(settle(|| streams(&hub) == 0));
        assert!(settle(|| server.handle.connections() == 0));
    });
}

#[test]
fn graceful_shutdown_ends_streams_and_serve_with_returns() {
    within(10, || {
        let (server, hub) = start(ServerConfig::default());
        let mut clients: Vec<_> = (0..3)
            .map(|_| connect(&server.http_url("/events?ch=public:ticks"), fast_client()).unwrap())
            .collect();
        assert_eq!(streams(&hub), 3);
        let p = tick(&hub, 1);
        let report = server.stop(Duration::from_secs(2)); // joins serve_with, checks Ok
        assert_eq!((report.closed, report.dropped), (3, 0));
        assert_eq!(streams(&hub), 0);
        for client in &mut clients {
            assert_eq!(next_event(client).id, p.to_string(), "queued events are written first");
            loop {
                match client.next() {
                    Some(SseClientEvent::State(s)) if s.state == SseState::Reconnecting => {
                        assert_eq!(s.reason, SseReason::Failed(SseFailure::EndOfStream));
                        break;
                    }
                    Some(_) => {}
                    None => panic!("closed"),
                }
            }
        }
    });
}

#[test]
fn streams_run_in_parallel_and_share_one_order() {
    within(20, || {
        let (server, hub) = start(ServerConfig::default());
        let mut clients: Vec<_> = (0..4)
            .map(|_| connect(&server.http_url("/events?ch=public:ticks"), fast_client()).unwrap())
            .collect();
        // Four publishers at once: every stream sees the log's order, each event once.
        let publishers: Vec<_> = (0..4)
            .map(|t| {
                let hub = hub.clone();
                std::thread::spawn(move || {
                    for i in 0..50 {
                        hub.publish(CH, format!("{}", t * 100 + i)).unwrap();
                    }
                })
            })
            .collect();
        for p in publishers {
            p.join().unwrap();
        }
        let order = Arc::new(Mutex::new(None::<Vec<String>>));
        for client in &mut clients {
            let ids: Vec<String> = (0..200).map(|_| next_event(client).id).collect();
            let offsets: Vec<u64> =
                ids.iter().map(|id| id.parse::<Position>().unwrap().offset).collect();
            assert_eq!(offsets, (1..=200).collect::<Vec<u64>>());
            let mut order = order.lock().unwrap();
            match &*order {
                None => *order = Some(ids),
                Some(first) => assert_eq!(first, &ids),
            }
        }
    });
}
