//! Server-Sent Events over loopback TCP: headers, ids, exact resume (raw clients and the
//! reconnecting `sse::connect`), reset when the position is gone, auth before the stream,
//! slow readers, keep-alives and graceful shutdown. Every test is bounded in time by `run`.

use std::future::Future;
use std::time::{Duration, Instant};

use smol::Timer;
use smol::future;
use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::net::TcpStream;
use tidewire::http::Request;
use tidewire::hub::{AllowAll, Principal};
use tidewire::replay::LogLimits;
use tidewire::server::{Credential, Refusal, Route, Routes, Verdict};
use tidewire::sse::{SseClientEvent, SseEvent, SseReason, SseState};
use tidewire_smol::sse::{SseOptions, connect};
use tidewire_smol::{Server, ServerConfig, ServerHandle, Upgrade};

/// Runs `test` on a fresh `block_on`, failing it after `secs` seconds.
fn run(secs: u64, test: impl Future<Output = ()>) {
    smol::block_on(future::or(test, async {
        Timer::after(Duration::from_secs(secs)).await;
        panic!("test did not finish within {secs} s");
    }));
}

/// A server whose core serves every one-segment path as SSE (`/events`, `/private`, which
/// requires `?token=secret`), anonymous and allow-all otherwise.
fn config() -> ServerConfig {
    let mut cfg = ServerConfig::default();
    cfg.endpoint.routes = Routes::none();
    cfg.endpoint.routes.sse = Some(Route::new("/{kind}"));
    cfg
}

/// Serves `cfg` on `addr`; returns the handle and the serving task.
async fn start_at(
    addr: &str,
    cfg: ServerConfig,
) -> (ServerHandle, smol::Task<std::io::Result<()>>) {
    let authn = |r: &Request| {
        if r.path_only() == "/private" && r.token().as_deref() != Some("secret") {
            return Verdict::Refuse(Refusal::unauthorized());
        }
        Verdict::Allow(Credential::client(Principal::anonymous()))
    };
    let server = Server::bind_with(addr, cfg, authn, AllowAll).await.unwrap();
    let handle = server.handle();
    let serving = smol::spawn(server.serve(|up: Upgrade| async move { drop(up) }));
    (handle, serving)
}

async fn start(cfg: ServerConfig) -> ServerHandle {
    let (handle, serving) = start_at("127.0.0.1:0", cfg).await;
    serving.detach();
    handle
}

/// A raw event-stream client: the request, then the head, then blocks.
struct Raw {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    async fn open(handle: &ServerHandle, path: &str, last_event_id: Option<&str>) -> Raw {
        let mut stream = TcpStream::connect(handle.local_addr()).await.unwrap();
        let mut req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n");
        if let Some(id) = last_event_id {
            req.push_str(&format!("Last-Event-ID: {id}\r\n"));
        }
        req.push_str("\r\n");
        stream.write_all(req.as_bytes()).await.unwrap();
        Raw { stream, buf: Vec::new() }
    }

    /// Reads until `sep`; returns what came before it (`None` at EOF).
    async fn until(&mut self, sep: &[u8]) -> Option<String> {
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(at) = self.buf.windows(sep.len()).position(|w| w == sep) {
                let rest = self.buf.split_off(at + sep.len());
                let mut part = std::mem::replace(&mut self.buf, rest);
                part.truncate(at);
                return Some(String::from_utf8(part).unwrap());
            }
            match self.stream.read(&mut chunk).await {
                Ok(n) if n > 0 => self.buf.extend_from_slice(&chunk[..n]),
                _ => return None,
            }
        }
    }

    async fn head(&mut self) -> String {
        self.until(b"\r\n\r\n").await.expect("a response head")
    }

    /// The next block (comments included), e.g. `id: a:1\nevent: ticks\ndata: {}`.
    async fn block(&mut self) -> Option<String> {
        self.until(b"\n\n").await
    }

    /// The next block that is an event (skips id-only blocks and comments).
    async fn event(&mut self) -> Option<String> {
        loop {
            let block = self.block().await?;
            if block.lines().any(|l| l.starts_with("data:")) {
                return Some(block);
            }
        }
    }
}

fn id_of(block: &str) -> String {
    block.lines().find_map(|l| l.strip_prefix("id: ")).unwrap_or_default().to_owned()
}

fn data_of(block: &str) -> String {
    block.lines().find_map(|l| l.strip_prefix("data: ")).unwrap_or_default().to_owned()
}

fn tick(n: u64) -> String {
    format!("{{\"n\":{n}}}")
}

/// Waits (briefly polling) until `cond` holds.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        Timer::after(Duration::from_millis(10)).await;
    }
}

#[test]
fn headers_ids_and_live_events() {
    run(10, async {
        let handle = start(config()).await;
        let channels = handle.clone();
        let first = channels.publish("ticks", tick(0).as_bytes()).unwrap();

        let mut raw = Raw::open(&handle, "/events?ch=ticks", None).await;
        let head = raw.head().await;
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        for line in
            ["Content-Type: text/event-stream", "Cache-Control: no-cache", "X-Accel-Buffering: no"]
        {
            assert!(head.contains(line), "missing {line}: {head}");
        }
        assert!(!head.to_ascii_lowercase().contains("content-length"), "{head}");
        // The cursor first: an id-only block with the head position.
        assert_eq!(raw.block().await.unwrap(), format!("id: {first}"));
        eventually("subscribed", || channels.inspect(|s| s.hub_connections() == 1)).await;

        for n in 1..=3 {
            let pos = channels.publish("ticks", tick(n).as_bytes()).unwrap();
            assert_eq!(pos.epoch, first.epoch);
            assert_eq!(pos.offset, first.offset + n);
            let block = raw.event().await.unwrap();
            assert_eq!(block, format!("id: {pos}\nevent: ticks\ndata: {}", tick(n)));
        }
        // Another channel's events do not arrive here.
        channels.publish("other", tick(99).as_bytes()).unwrap();
        let pos = channels.publish("ticks", tick(4).as_bytes()).unwrap();
        assert_eq!(id_of(&raw.event().await.unwrap()), pos.to_string());

        drop(raw);
        eventually("the stream ends when the client goes", || {
            channels.inspect(|s| s.hub_connections() == 0)
        })
        .await;
        handle.shutdown(Duration::from_secs(1)).await;
    });
}

#[test]
fn raw_client_resumes_exactly_with_last_event_id() {
    run(10, async {
        let handle = start(config()).await;
        let channels = handle.clone();
        let mut raw = Raw::open(&handle, "/events?ch=ticks", None).await;
        raw.head().await;
        raw.block().await.unwrap();
        eventually("subscribed", || channels.inspect(|s| s.hub_connections() == 1)).await;
        for n in 1..=2 {
            channels.publish("ticks", tick(n).as_bytes()).unwrap();
        }
        raw.event().await.unwrap();
        let last = id_of(&raw.event().await.unwrap());
        drop(raw);
        eventually("gone", || channels.inspect(|s| s.hub_connections() == 0)).await;

        // k events while away.
        let k = 5;
        let missed: Vec<String> = (3..3 + k)
            .map(|n| channels.publish("ticks", tick(n).as_bytes()).unwrap().to_string())
            .collect();

        let mut raw = Raw::open(&handle, "/events?ch=ticks", Some(&last)).await;
        assert!(raw.head().await.starts_with("HTTP/1.1 200"));
        for (i, id) in missed.iter().enumerate() {
            let block = raw.event().await.unwrap();
            assert_eq!((id_of(&block), data_of(&block)), (id.clone(), tick(3 + i as u64)));
        }
        // Then live, without a duplicate.
        eventually("subscribed again", || channels.inspect(|s| s.hub_connections() == 1)).await;
        let live = channels.publish("ticks", tick(100).as_bytes()).unwrap();
        assert_eq!(id_of(&raw.event().await.unwrap()), live.to_string());
        handle.shutdown(Duration::from_secs(1)).await;
    });
}

#[test]
fn a_trimmed_or_foreign_position_gets_a_reset_event() {
    run(10, async {
        let mut cfg = config();
        cfg.endpoint.hub.log = LogLimits { max_count: 3, ..LogLimits::default() };
        let handle = start(cfg).await;
        let channels = handle.clone();
        let old = channels.publish("ticks", tick(1).as_bytes()).unwrap();
        let mut head = old;
        for n in 2..=10 {
            head = channels.publish("ticks", tick(n).as_bytes()).unwrap();
        }
        for last in [old.to_string(), "ff:3".to_owned(), "not-a-position".to_owned()] {
            let mut raw = Raw::open(&handle, "/events?ch=ticks", Some(&last)).await;
            raw.head().await;
            // One block: the cursor moves to the head and the reset tells the client to
            // refetch (the core hub's format).
            let reset = raw.block().await.unwrap();
            assert_eq!(
                reset,
                format!(
                    "id: {head}\nevent: reset\ndata: {{\"ch\":\"ticks\",\"pos\":\"{head}\",\"recovered\":false}}"
                ),
                "{last}"
            );
            // Live events continue.
            eventually("subscribed", || channels.inspect(|s| s.hub_connections() == 1)).await;
            head = channels.publish("ticks", tick(11).as_bytes()).unwrap();
            assert_eq!(id_of(&raw.event().await.unwrap()), head.to_string());
            drop(raw);
            eventually("gone", || channels.inspect(|s| s.hub_connections() == 0)).await;
        }
        handle.shutdown(Duration::from_secs(1)).await;
    });
}

/// The next `Event` from the client, skipping state changes.
async fn next_event(conn: &mut tidewire_smol::sse::SseConnection) -> SseEvent {
    loop {
        match conn.next().await.expect("the client is not closed") {
            SseClientEvent::Event(e) => return e,
            SseClientEvent::State(_) => {}
            _ => {}
        }
    }
}

fn fast_reconnect() -> SseOptions {
    let mut opts = SseOptions::default();
    opts.client.default_retry = Duration::from_millis(100);
    opts.client.backoff.base = Duration::from_millis(100);
    opts.client.backoff.cap = Duration::from_millis(300);
    opts
}

#[test]
fn sse_connect_reconnects_after_a_server_restart_and_gets_a_reset() {
    run(20, async {
        let (handle, serving) = start_at("127.0.0.1:0", config()).await;
        let channels = handle.clone();
        let addr = handle.local_addr();
        let url = format!("http://{addr}/events?ch=ticks");
        let mut conn = connect(&url, fast_reconnect()).await.unwrap();
        let Some(SseClientEvent::State(s)) = conn.next().await else { panic!("state first") };
        assert_eq!((s.state, s.reason), (SseState::Connecting, SseReason::Started));
        let Some(SseClientEvent::State(s)) = conn.next().await else { panic!("then open") };
        assert_eq!(s.state, SseState::Open);
        eventually("subscribed", || channels.inspect(|s| s.hub_connections() == 1)).await;

        let mut expected = Vec::new();
        for n in 1..=3 {
            expected.push((
                channels.publish("ticks", tick(n).as_bytes()).unwrap().to_string(),
                tick(n),
            ));
        }
        for (id, data) in &expected {
            let e = next_event(&mut conn).await;
            assert_eq!((&e.id, &e.data, e.event.as_str()), (id, data, "ticks"));
        }
        assert_eq!(conn.last_event_id(), expected[2].0);

        // A server restarted *without* its history (a new hub, a new epoch): reset. (The
        // hub lives in the server now, so a restart always loses the history; exact resume
        // is `raw_client_resumes_exactly_with_last_event_id`.)
        let report = handle.shutdown(Duration::from_secs(2)).await;
        assert_eq!(report.dropped, 0);
        serving.await.unwrap();
        let (handle, _serving) = start_at(&addr.to_string(), config()).await;
        let fresh = handle.clone();
        let head = fresh.publish("ticks", tick(1).as_bytes()).unwrap();
        let e = next_event(&mut conn).await;
        assert_eq!(e.event, "reset");
        assert_eq!(e.data, format!("{{\"ch\":\"ticks\",\"pos\":\"{head}\",\"recovered\":false}}"));
        assert_eq!(e.id, head.to_string(), "the cursor moved to the new head");

        conn.close();
        let mut rest = Vec::new();
        while let Some(ev) = conn.next().await {
            rest.push(ev);
        }
        let Some(SseClientEvent::State(last)) = rest.last() else { panic!("{rest:?}") };
        assert_eq!((last.state, last.reason), (SseState::Closed, SseReason::ClosedByApp));
        assert!(conn.next().await.is_none());
        eventually("the server saw the client go", || fresh.inspect(|s| s.hub_connections() == 0))
            .await;
        handle.shutdown(Duration::from_secs(1)).await;
    });
}

#[test]
fn sse_connect_gets_terminal_statuses_and_bad_urls() {
    run(10, async {
        let handle = start(config()).await;
        let channels = handle.clone();
        // 401 before any stream: the source fails for good, no stream starts.
        let url = format!("http://{}/private?ch=ticks", handle.local_addr());
        let mut conn = connect(&url, fast_reconnect()).await.unwrap();
        let mut states = Vec::new();
        while let Some(ev) = conn.next().await {
            if let SseClientEvent::State(s) = ev {
                states.push((s.state, s.reason));
            }
        }
        assert_eq!(
            states.last(),
            Some(&(SseState::Closed, SseReason::Failed(tidewire::sse::SseFailure::BadStatus(401))))
        );
        assert!(channels.inspect(|s| s.hub_connections() == 0));

        // With the token, it streams.
        let url = format!("http://{}/private?ch=ticks&token=secret", handle.local_addr());
        let mut conn = connect(&url, fast_reconnect()).await.unwrap();
        eventually("subscribed", || channels.inspect(|s| s.hub_connections() == 1)).await;
        let pos = channels.publish("ticks", tick(1).as_bytes()).unwrap();
        assert_eq!(next_event(&mut conn).await.id, pos.to_string());
        drop(conn);
        eventually("dropping the connection closes it", || {
            channels.inspect(|s| s.hub_connections() == 0)
        })
        .await;

        for bad in ["ws://127.0.0.1:1/", "https://127.0.0.1:1/", "nope"] {
            assert!(
                matches!(
                    connect(bad, SseOptions::default()).await,
                    Err(tidewire_smol::ConnectError::Url(_))
                ),
                "{bad}"
            );
        }
        let mut opts = SseOptions::default();
        opts.headers.push(("X-Bad".into(), "a\r\nb".into()));
        assert!(connect("http://127.0.0.1:1/", opts).await.is_err());
        handle.shutdown(Duration::from_secs(1)).await;
    });
}

#[test]
fn auth_is_decided_before_the_200() {
    run(10, async {
        let handle = start(config()).await;
        let channels = handle.clone();
        let mut raw = Raw::open(&handle, "/private?ch=ticks", None).await;
        let head = raw.head().await;
        assert!(head.starts_with("HTTP/1.1 401"), "{head}");
        assert!(head.contains("WWW-Authenticate: Bearer"), "{head}");
        assert!(!head.contains("text/event-stream"), "{head}");
        assert_eq!(raw.block().await, None, "nothing but the 401 body, then EOF");
        assert!(channels.inspect(|s| s.hub_connections() == 0));
        handle.shutdown(Duration::from_secs(1)).await;
    });
}

#[test]
fn a_reader_that_stops_reading_is_ended_by_the_outbox_policy() {
    run(30, async {
        let (handle, serving) = start_at("127.0.0.1:0", config()).await;
        let channels = handle.clone();
        serving.detach();
        let mut raw = Raw::open(&handle, "/events?ch=big", None).await;
        raw.head().await;
        eventually("subscribed", || channels.inspect(|s| s.hub_connections() == 1)).await;
        // Never read again. Publish 64 KiB events until the stream is dropped (the kernel
        // buffers take some megabytes first); the log stays at its 1 MiB bound.
        let payload = format!("\"{}\"", "x".repeat(64 << 10));
        let mut published = 0usize;
        while channels.inspect(|s| s.hub_connections() > 0) {
            channels.publish("big", payload.clone().as_bytes()).unwrap();
            published += 1;
            assert!(published < 4000, "a stuck reader was never ended");
            if published.is_multiple_of(16) {
                Timer::after(Duration::from_millis(1)).await;
            }
        }
        assert_eq!(
            handle.inspect(|s| s.hub_stats().too_slow),
            1,
            "ended by the slow-consumer policy"
        );
        // The client sees the end once it reads what was buffered.
        let mut sink = vec![0u8; 1 << 20];
        while let Ok(n) = raw.stream.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
        // Other streams are unaffected.
        let mut fresh = Raw::open(&handle, "/events?ch=big", None).await;
        assert!(fresh.head().await.starts_with("HTTP/1.1 200"));
        fresh.block().await.unwrap();
        eventually("subscribed", || channels.inspect(|s| s.hub_connections() == 1)).await;
        let pos = channels.publish("big", "1".as_bytes()).unwrap();
        assert_eq!(id_of(&fresh.event().await.unwrap()), pos.to_string());
        drop(fresh);
        eventually("all streams gone", || channels.inspect(|s| s.hub_connections() == 0)).await;
        handle.shutdown(Duration::from_secs(1)).await;
    });
}

#[test]
fn an_idle_stream_gets_keepalive_comments() {
    run(10, async {
        let mut cfg = config();
        cfg.endpoint.sse.keepalive = Some(Duration::from_millis(200));
        let handle = start(cfg).await;
        let mut raw = Raw::open(&handle, "/events?ch=quiet", None).await;
        raw.head().await;
        let started = Instant::now();
        raw.block().await.unwrap(); // the cursor
        // A comment line: ":" then a line feed. Two in a row form a block separator.
        let mut comments = 0;
        while comments < 2 {
            let line = raw.until(b"\n").await.unwrap();
            if line.starts_with(':') {
                comments += 1;
            }
        }
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(350), "too early: {took:?}");
        assert!(took < Duration::from_secs(3), "too late: {took:?}");
        handle.shutdown(Duration::from_secs(1)).await;
    });
}

#[test]
fn graceful_shutdown_ends_streams_and_serve_with_returns() {
    run(10, async {
        let (handle, serving) = start_at("127.0.0.1:0", config()).await;
        let channels = handle.clone();
        let mut a = Raw::open(&handle, "/events?ch=ticks", None).await;
        let mut b = Raw::open(&handle, "/events?ch=other", None).await;
        a.head().await;
        b.head().await;
        eventually("subscribed", || channels.inspect(|s| s.hub_connections() == 2)).await;
        assert_eq!(handle.connections(), 2);
        let report = handle.shutdown(Duration::from_secs(3)).await;
        assert_eq!(report, tidewire_smol::ShutdownReport { closed: 2, dropped: 0 });
        serving.await.unwrap();
        for raw in [&mut a, &mut b] {
            // The id-only block, then the end of the body.
            assert!(raw.block().await.unwrap().starts_with("id: "));
            assert_eq!(raw.block().await, None);
        }
        assert!(channels.inspect(|s| s.hub_connections() == 0));
        assert_eq!(handle.connections(), 0);
    });
}
