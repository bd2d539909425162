//! Server-Sent Events end to end over loopback: the stream's head and events, resuming with
//! `Last-Event-ID` (raw and with `sse::connect`), "position gone", reconnection after a
//! server restart, auth before the 200, the slow-reader policy, keep-alives, a client that
//! leaves, and graceful shutdown.

mod common;

use std::io::Read as _;
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use common::{Blocks, TestServer, get, settle, within};
use tidewire_std::sse::{SseOptions, connect};
use tidewire_std::tidewire::replay::Position;
use tidewire_std::tidewire::sse::{
    SseClientEvent, SseEvent, SseFailure, SseReason, SseState, StreamEnd,
};
use tidewire_std::{Channels, ChannelsConfig, HttpRequest, ServerConfig, Upgrade};

fn no_ws(up: Upgrade) {
    let _ = up.reject(404, &[], b"");
}

/// Serves `/events?ch=..` from `channels`, reporting how each stream ended.
fn sse_handler(
    channels: &Channels,
    ends: mpsc::Sender<StreamEnd>,
) -> impl Fn(HttpRequest) + Send + Sync + 'static {
    let channels = channels.clone();
    let ends = Mutex::new(ends);
    move |req: HttpRequest| {
        let ch = req.request().query_param("ch").unwrap_or_default();
        if let Ok(end) = channels.serve_sse(req, &ch, &[("Access-Control-Allow-Origin", "*")]) {
            let _ = ends.lock().unwrap().send(end);
        }
    }
}

fn start(channels: &Channels) -> (TestServer, mpsc::Receiver<StreamEnd>) {
    let (tx, rx) = mpsc::channel();
    (TestServer::start_with(ServerConfig::default(), no_ws, sse_handler(channels, tx)), rx)
}

fn tick(channels: &Channels, n: u32) -> Position {
    channels.publish("ticks", format!("{{\"n\":{n}}}")).unwrap()
}

fn block(pos: Position, n: u32) -> String {
    format!("id: {pos}\nevent: ticks\ndata: {{\"n\":{n}}}")
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
        let channels = Channels::new(ChannelsConfig::default());
        let (server, _ends) = start(&channels);
        let (head, mut blocks) =
            Blocks::open(get(server.addr, "/events?ch=ticks", "Accept: text/event-stream\r\n"));
        let lower = head.to_ascii_lowercase();
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        for h in [
            "content-type: text/event-stream",
            "cache-control: no-cache",
            "x-accel-buffering: no",
            "access-control-allow-origin: *",
        ] {
            assert!(lower.contains(h), "{h} missing in {head}");
        }
        assert!(!lower.contains("content-length"), "{head}");
        // Every client learns its position at once: an id-only block with the head.
        let first = blocks.next().unwrap();
        let start: Position = first.strip_prefix("id: ").unwrap().parse().unwrap();
        assert_eq!(start.offset, 0);
        settle(|| channels.streams() == 1);
        let p1 = tick(&channels, 1);
        let p2 = tick(&channels, 2);
        assert_eq!((p1.epoch, p1.offset, p2.offset), (start.epoch, 1, 2));
        assert_eq!(blocks.next().unwrap(), block(p1, 1));
        assert_eq!(blocks.next().unwrap(), block(p2, 2));
    });
}

#[test]
fn last_event_id_replays_exactly_the_missed_events_once() {
    within(10, || {
        let channels = Channels::new(ChannelsConfig::default());
        let (server, _ends) = start(&channels);
        let p: Vec<Position> = (1..=5).map(|n| tick(&channels, n)).collect();
        let (_, mut blocks) = Blocks::open(get(
            server.addr,
            "/events?ch=ticks",
            &format!("Last-Event-ID: {}\r\n", p[1]),
        ));
        for (i, pos) in p.iter().enumerate().skip(2) {
            assert_eq!(blocks.next().unwrap(), block(*pos, u32::try_from(i).unwrap() + 1));
        }
        settle(|| channels.streams() == 1);
        let p6 = tick(&channels, 6);
        // Live events follow, without a duplicate of the replayed ones.
        assert_eq!(blocks.next().unwrap(), block(p6, 6));
    });
}

#[test]
fn a_trimmed_or_foreign_position_gets_a_reset_event() {
    within(10, || {
        let mut cfg = ChannelsConfig::default();
        cfg.feeds.log.max_count = 2;
        let channels = Channels::new(cfg);
        let (server, _ends) = start(&channels);
        let p: Vec<Position> = (1..=5).map(|n| tick(&channels, n)).collect();
        for last in [p[0].to_string(), format!("{:x}:3", p[0].epoch.0 ^ 1), "junk".into()] {
            let (_, mut blocks) = Blocks::open(get(
                server.addr,
                "/events?ch=ticks",
                &format!("Last-Event-ID: {last}\r\n"),
            ));
            // The cursor moves to the head, then the client is told to refetch.
            assert_eq!(blocks.next().unwrap(), format!("id: {}", p[4]));
            assert_eq!(
                blocks.next().unwrap(),
                format!(
                    "event: reset\ndata: {{\"ch\":\"ticks\",\"pos\":\"{}\",\"recovered\":false}}",
                    p[4]
                )
            );
        }
        // A position still in the log replays exactly.
        let (_, mut blocks) = Blocks::open(get(
            server.addr,
            "/events?ch=ticks",
            &format!("Last-Event-ID: {}\r\n", p[3]),
        ));
        assert_eq!(blocks.next().unwrap(), block(p[4], 5));
    });
}

#[test]
fn sse_connect_resumes_after_a_server_restart_without_gap_or_duplicate() {
    within(20, || {
        let channels = Channels::new(ChannelsConfig::default());
        let (server, ends) = start(&channels);
        let addr = server.addr;
        let mut client = connect(&server.http_url("/events?ch=ticks"), fast_client()).unwrap();
        assert_eq!(client.state(), SseState::Open, "connect returns once the stream is open");
        let p1 = tick(&channels, 1);
        let e = next_event(&mut client);
        assert_eq!(
            (e.id.as_str(), e.event.as_str(), e.data.as_str()),
            (&*p1.to_string(), "ticks", "{\"n\":1}")
        );

        // The server goes away; three events are published meanwhile.
        let report = server.stop(Duration::from_secs(2));
        assert_eq!((report.closed, report.dropped), (1, 0));
        assert_eq!(ends.recv_timeout(Duration::from_secs(2)).unwrap(), StreamEnd::Closed);
        let missed: Vec<Position> = (2..=4).map(|n| tick(&channels, n)).collect();
        let (tx, _ends) = mpsc::channel();
        let _server = TestServer::start_at(
            &addr.to_string(),
            ServerConfig::default(),
            no_ws,
            sse_handler(&channels, tx),
        );

        // The client reconnects by itself with Last-Event-ID and gets exactly what it missed.
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
        assert!(states.contains(&SseState::Reconnecting), "{states:?}");
        assert_eq!(states.last(), Some(&SseState::Open), "{states:?}");
        // Live again.
        settle(|| channels.streams() == 1);
        let p5 = tick(&channels, 5);
        assert_eq!(next_event(&mut client).id, p5.to_string());
        assert_eq!(client.last_event_id(), p5.to_string());
        client.close();
        assert!(matches!(
            client.next(),
            Some(SseClientEvent::State(s)) if s.state == SseState::Closed && s.reason == SseReason::ClosedByApp
        ));
        assert_eq!(client.next(), None);
        assert!(settle(|| channels.streams() == 0));
    });
}

#[test]
fn a_restart_without_history_makes_the_client_refetch() {
    within(20, || {
        let old = Channels::new(ChannelsConfig::default());
        let (server, _ends) = start(&old);
        let addr = server.addr;
        let mut client = connect(&server.http_url("/events?ch=ticks"), fast_client()).unwrap();
        tick(&old, 1);
        next_event(&mut client);
        server.stop(Duration::from_secs(1));
        // A new hub: new epoch, the client's position is gone.
        let new = Channels::new(ChannelsConfig::default());
        let head = tick(&new, 1);
        let (tx, _ends) = mpsc::channel();
        let _server = TestServer::start_at(
            &addr.to_string(),
            ServerConfig::default(),
            no_ws,
            sse_handler(&new, tx),
        );
        let e = next_event(&mut client);
        assert_eq!(e.event, "reset");
        assert_eq!(e.data, format!("{{\"ch\":\"ticks\",\"pos\":\"{head}\",\"recovered\":false}}"));
        assert_eq!(client.last_event_id(), head.to_string());
    });
}

#[test]
fn auth_is_checked_before_the_200_and_no_stream_starts() {
    within(10, || {
        let channels = Channels::new(ChannelsConfig::default());
        let ch = channels.clone();
        let server =
            TestServer::start_with(ServerConfig::default(), no_ws, move |req: HttpRequest| {
                if req.request().token().as_deref() != Some("secret") {
                    let _ =
                        req.respond(401, &[("WWW-Authenticate", "Bearer")], b"token required\n");
                    return;
                }
                let _ = ch.serve_sse(req, "ticks", &[]);
            });
        let (status, head, _) = common::fetch(server.addr, "/events?ch=ticks", "");
        assert_eq!(status, 401, "{head}");
        assert!(head.contains("WWW-Authenticate: Bearer"), "{head}");
        assert_eq!(channels.streams(), 0);

        // EventSource semantics: a 401 fails the source for good.
        let mut client = connect(&server.http_url("/events"), fast_client()).unwrap();
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
        assert_eq!(channels.streams(), 0);

        let mut opts = fast_client();
        opts.headers.push(("Authorization".into(), "Bearer secret".into()));
        let mut client = connect(&server.http_url("/events"), opts).unwrap();
        assert_eq!(client.state(), SseState::Open);
        assert_eq!(channels.streams(), 1);
        let p = tick(&channels, 7);
        assert_eq!(next_event(&mut client).id, p.to_string());
    });
}

#[test]
fn a_reader_that_stops_is_ended_by_the_outbox_policy() {
    within(30, || {
        let mut cfg = ChannelsConfig::default();
        cfg.sse.outbox.max_bytes = 64 << 10;
        cfg.sse.keepalive = None;
        let channels = Channels::new(cfg);
        let (server, ends) = start(&channels);
        let (_, blocks) = Blocks::open(get(server.addr, "/events?ch=ticks", ""));
        settle(|| channels.streams() == 1);
        // The client reads nothing more; the server keeps publishing 8 KiB events.
        let payload = format!("\"{}\"", "x".repeat(8 << 10));
        let start = Instant::now();
        let end = loop {
            channels.publish("ticks", payload.clone()).unwrap();
            if let Ok(end) = ends.try_recv() {
                break end;
            }
            assert!(start.elapsed() < Duration::from_secs(20), "the stream never ended");
        };
        assert_eq!(end, StreamEnd::TooSlow);
        assert!(settle(|| channels.streams() == 0));
        assert!(settle(|| server.handle.connections() == 0));
        drop(blocks);
    });
}

#[test]
fn an_idle_stream_gets_keepalive_comments() {
    within(10, || {
        let mut cfg = ChannelsConfig::default();
        cfg.sse.keepalive = Some(Duration::from_millis(200));
        let channels = Channels::new(cfg);
        let (server, _ends) = start(&channels);
        let (_, mut blocks) = Blocks::open(get(server.addr, "/events?ch=ticks", ""));
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
        let channels = Channels::new(ChannelsConfig::default());
        let (server, ends) = start(&channels);
        let (_, blocks) = Blocks::open(get(server.addr, "/events?ch=ticks", ""));
        assert!(settle(|| channels.streams() == 1));
        drop(blocks);
        // Seen within about a second, with no publish and no keep-alive due.
        assert_eq!(ends.recv_timeout(Duration::from_secs(3)).unwrap(), StreamEnd::ClientGone);
        assert!(settle(|| channels.streams() == 0));
        assert!(settle(|| server.handle.connections() == 0));
    });
}

#[test]
fn graceful_shutdown_ends_streams_and_serve_with_returns() {
    within(10, || {
        let channels = Channels::new(ChannelsConfig::default());
        let (server, ends) = start(&channels);
        let mut clients: Vec<_> = (0..3)
            .map(|_| connect(&server.http_url("/events?ch=ticks"), fast_client()).unwrap())
            .collect();
        assert_eq!(channels.streams(), 3);
        let p = tick(&channels, 1);
        let report = server.stop(Duration::from_secs(2)); // joins serve_with, checks Ok
        assert_eq!((report.closed, report.dropped), (3, 0));
        for _ in 0..3 {
            assert_eq!(ends.recv_timeout(Duration::from_secs(1)).unwrap(), StreamEnd::Closed);
        }
        assert_eq!(channels.streams(), 0);
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
        let channels = Channels::new(ChannelsConfig::default());
        let (server, _ends) = start(&channels);
        let mut clients: Vec<_> = (0..4)
            .map(|_| connect(&server.http_url("/events?ch=ticks"), fast_client()).unwrap())
            .collect();
        // Four publishers at once: every stream sees the log's order, each event once.
        let publishers: Vec<_> = (0..4)
            .map(|t| {
                let channels = channels.clone();
                std::thread::spawn(move || {
                    for i in 0..50 {
                        channels.publish("ticks", format!("{}", t * 100 + i)).unwrap();
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
