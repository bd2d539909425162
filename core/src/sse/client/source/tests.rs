//! Tests of `EventSource`, the SSE client in the `Outbound` socket shape: the socket it asks
//! for, the request bytes, the response head split anywhere (whole, byte by byte, random
//! splits), reconnection with `Last-Event-ID`, refused responses, the connect timeout,
//! stale sockets, backpressure. Virtual time only.

use proptest::prelude::*;

use super::*;
use crate::socket::Outbound;
use crate::sse::{SseEvent, SseFailure, SseReason, SseState, StateChange};

fn t0() -> Instant {
    crate::time::test_epoch()
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn config() -> EventSourceConfig {
    let mut cfg = EventSourceConfig::new("example.org", 8080, "/events?ch=ticks");
    cfg.client.rng_seed = [7; 32];
    cfg
}

/// A new source, its `State(Connecting, Started)` drained.
fn source(cfg: EventSourceConfig, now: Instant) -> EventSource {
    let mut es = EventSource::new(cfg, now, 1_000_000).unwrap();
    assert_eq!(states(&mut es)[0].reason, SseReason::Started);
    es
}

fn actions(es: &mut EventSource) -> Vec<SocketAction> {
    std::iter::from_fn(|| es.poll_action()).collect()
}

fn transmits(es: &mut EventSource) -> Vec<(SockId, Bytes)> {
    std::iter::from_fn(|| es.poll_transmit()).collect()
}

fn events(es: &mut EventSource) -> Vec<SseClientEvent> {
    std::iter::from_fn(|| es.poll_event()).collect()
}

fn data(es: &mut EventSource) -> Vec<SseEvent> {
    events(es)
        .into_iter()
        .filter_map(|e| match e {
            SseClientEvent::Event(e) => Some(e),
            SseClientEvent::State(_) => None,
        })
        .collect()
}

fn states(es: &mut EventSource) -> Vec<StateChange> {
    events(es)
        .into_iter()
        .filter_map(|e| match e {
            SseClientEvent::State(s) => Some(s),
            SseClientEvent::Event(_) => None,
        })
        .collect()
}

fn connect_to(sock: u64) -> SocketAction {
    SocketAction::Connect { sock: SockId(sock), host: "example.org".into(), port: 8080 }
}

fn request(last_event_id: Option<&str>) -> String {
    let id = last_event_id.map(|id| format!("Last-Event-ID: {id}\r\n")).unwrap_or_default();
    format!(
        "GET /events?ch=ticks HTTP/1.1\r\nHost: example.org:8080\r\nAccept: text/event-stream\r\n\
         Cache-Control: no-cache\r\n{id}\r\n"
    )
}

/// Pulls the `Connect` of socket `sock`, connects it and checks its request.
fn dial(es: &mut EventSource, now: Instant, sock: u64, last_event_id: Option<&str>) {
    assert_eq!(actions(es), [connect_to(sock)]);
    assert_eq!(es.poll_transmit(), None, "nothing before the socket is connected");
    es.handle_connected(now, SockId(sock));
    let sent = transmits(es);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].0, SockId(sock));
    assert_eq!(String::from_utf8_lossy(&sent[0].1), request(last_event_id));
}

const HEAD: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\nX-A: b\r\n\r\n";

const BODY: &[u8] =
    b"retry: 2000\n: hi\nid: 1\nevent: a\ndata: x\n\nid: 2\ndata: y\n\nid: 3\ndata: cut";

fn ev(event: &str, data: &str, id: &str) -> SseEvent {
    SseEvent { event: event.into(), data: data.into(), id: id.into() }
}

/// One connection fed `HEAD` + `BODY` in `chunks`, then EOF: the events, the actions after
/// the EOF, the state and the time to the next deadline.
fn run(chunks: &[&[u8]]) -> (Vec<SseEvent>, Vec<SocketAction>, SseState, Option<Duration>) {
    let now = t0();
    let mut es = source(config(), now);
    dial(&mut es, now, 0, None);
    let mut got = Vec::new();
    for chunk in chunks {
        es.handle_read(now, SockId(0), chunk);
        assert_eq!(actions(&mut es), [], "no socket action while the stream is open");
        got.extend(data(&mut es));
    }
    es.handle_eof(now, SockId(0));
    got.extend(data(&mut es));
    (got, actions(&mut es), es.client().state(), es.poll_timeout().map(|at| at - now))
}

fn stream() -> Vec<u8> {
    [HEAD, BODY].concat()
}

fn split_at<'a>(input: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
    cuts.sort_unstable();
    let mut out = Vec::new();
    let mut at = 0;
    for c in cuts {
        out.push(&input[at..c]);
        at = c;
    }
    out.push(&input[at..]);
    out
}

#[test]
fn the_first_action_is_a_socket_to_the_configured_host() {
    let now = t0();
    let mut es = source(config(), now);
    assert_eq!(es.client().state(), SseState::Connecting);
    assert_eq!(actions(&mut es), [connect_to(0)]);
    // The connect timeout (10 s) comes before the idle watchdog (30 s).
    assert_eq!(es.poll_timeout(), Some(now + secs(10)));
    assert_eq!(es.poll_transmit(), None);
    es.handle_connected(now, SockId(0));
    assert_eq!(es.poll_timeout(), Some(now + secs(30)), "connected: the watchdog is left");
    let sent = transmits(&mut es);
    assert_eq!(sent, [(SockId(0), Bytes::from(request(None)))]);
    // A second `connected` for the same socket sends nothing more.
    es.handle_connected(now, SockId(0));
    assert_eq!(transmits(&mut es), []);
}

#[test]
fn the_request_carries_extra_headers_and_the_host_header_for_any_port() {
    let now = t0();
    let mut cfg = EventSourceConfig::new("::1", 80, "");
    cfg.headers.push(("Authorization".into(), "Bearer t".into()));
    let mut es = source(cfg, now);
    let Some(SocketAction::Connect { sock, host, port }) = es.poll_action() else { panic!() };
    assert_eq!((host.as_str(), port), ("::1", 80), "an IPv6 host is dialled without brackets");
    es.handle_connected(now, sock);
    let (_, bytes) = es.poll_transmit().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&bytes),
        "GET / HTTP/1.1\r\nHost: [::1]\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n\
         Authorization: Bearer t\r\n\r\n"
    );
    let mut cfg = EventSourceConfig::new("h", 8080, "/");
    cfg.headers.push(("Bad Name".into(), "v".into()));
    assert_eq!(EventSource::new(cfg, now, 0).unwrap_err(), InvalidRequest);
    let cfg = EventSourceConfig::new("h", 80, "/x\r\nEvil: 1");
    assert_eq!(EventSource::new(cfg, now, 0).unwrap_err(), InvalidRequest);
}

#[test]
fn the_response_fed_whole_or_byte_by_byte_gives_the_same_events() {
    let input = stream();
    let whole = run(&[&input]);
    let (events, after_eof, state, next) = whole.clone();
    assert_eq!(events, [ev("a", "x", "1"), ev("message", "y", "2")]);
    assert_eq!(after_eof, [SocketAction::Close { sock: SockId(0) }]);
    assert_eq!(state, SseState::Reconnecting);
    // The server's `retry: 2000` is the reconnection time.
    assert_eq!(next, Some(secs(2)));
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    assert_eq!(run(&bytes), whole, "byte by byte");
    for step in [2, 3, 7, HEAD.len() - 1, HEAD.len(), HEAD.len() + 1] {
        let chunks: Vec<&[u8]> = input.chunks(step).collect();
        assert_eq!(run(&chunks), whole, "chunks of {step}");
    }
}

#[test]
fn end_of_file_reconnects_on_a_new_socket_with_last_event_id() {
    let now = t0();
    let mut es = source(config(), now);
    dial(&mut es, now, 0, None);
    es.handle_read(now, SockId(0), &stream());
    let _ = events(&mut es);
    es.handle_eof(now + secs(1), SockId(0));
    assert_eq!(actions(&mut es), [SocketAction::Close { sock: SockId(0) }]);
    let s = states(&mut es);
    assert_eq!(s[0].reason, SseReason::Failed(SseFailure::EndOfStream));
    let at = es.poll_timeout().unwrap();
    assert_eq!(at, now + secs(3), "the server's retry (2 s) after the end");
    es.handle_timeout(at - Duration::from_nanos(1));
    assert_eq!(actions(&mut es), [], "not yet");
    es.handle_timeout(at);
    assert_eq!(es.client().state(), SseState::Connecting);
    // The unfinished `id: 3` block was discarded: resume after 2.
    dial(&mut es, at, 1, Some("2"));
    // Input for the old socket is ignored.
    es.handle_read(at, SockId(0), HEAD);
    es.handle_eof(at, SockId(0));
    es.handle_error(at, SockId(0));
    assert_eq!(es.client().state(), SseState::Connecting);
    assert_eq!(actions(&mut es), []);
    es.handle_read(at, SockId(1), HEAD);
    es.handle_read(at, SockId(1), b"id: 4\ndata: z\n\n");
    assert_eq!(es.client().state(), SseState::Open);
    assert_eq!(data(&mut es), [ev("message", "z", "4")]);
    assert_eq!(es.client().last_event_id(), "4");
}

#[test]
fn a_status_other_than_200_fails_the_source_and_closes_the_socket() {
    let now = t0();
    let mut es = source(config(), now);
    dial(&mut es, now, 0, None);
    es.handle_read(
        now,
        SockId(0),
        b"HTTP/1.1 404 Not Found\r\nContent-Type: text/event-stream\r\n",
    );
    assert_eq!(actions(&mut es), [], "the head is not complete yet");
    es.handle_read(now, SockId(0), b"Content-Length: 3\r\n\r\nno!");
    assert_eq!(actions(&mut es), [SocketAction::Close { sock: SockId(0) }]);
    assert_eq!(es.client().state(), SseState::Closed);
    let s = states(&mut es);
    assert_eq!(s.last().unwrap().reason, SseReason::Failed(SseFailure::BadStatus(404)));
    assert_eq!(es.poll_timeout(), None);
    // Later input and timeouts change nothing.
    es.handle_eof(now, SockId(0));
    es.handle_timeout(now + secs(3600));
    assert_eq!(actions(&mut es), []);
    assert_eq!(events(&mut es), []);
}

#[test]
fn a_wrong_content_type_fails_the_source() {
    let now = t0();
    let mut es = source(config(), now);
    dial(&mut es, now, 0, None);
    es.handle_read(now, SockId(0), b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n<html>");
    assert_eq!(actions(&mut es), [SocketAction::Close { sock: SockId(0) }]);
    assert_eq!(es.client().state(), SseState::Closed);
    let s = states(&mut es);
    assert_eq!(s.last().unwrap().reason, SseReason::Failed(SseFailure::BadContentType));
}

#[test]
fn a_retried_503_honours_retry_after_as_an_http_date() {
    let now = t0();
    let mut cfg = config();
    cfg.client.retry_5xx = true;
    // The wall clock at `now` is 1994-11-06 08:49:07; Retry-After is 30 s later, read 10 s
    // after `now`: 20 s from then.
    let mut es = EventSource::new(cfg, now, 784_111_747).unwrap();
    let _ = events(&mut es);
    dial(&mut es, now, 0, None);
    let at = now + secs(10);
    es.handle_read(
        at,
        SockId(0),
        b"HTTP/1.1 503 Busy\r\nRetry-After: Sun, 06 Nov 1994 08:49:37 GMT\r\n\r\n",
    );
    assert_eq!(actions(&mut es), [SocketAction::Close { sock: SockId(0) }]);
    assert_eq!(es.client().state(), SseState::Reconnecting);
    assert_eq!(es.client().next_retry_at(), Some(at + secs(20)));
    es.handle_timeout(at + secs(20));
    dial(&mut es, at + secs(20), 1, None);
}

#[test]
fn a_body_with_content_length_ends_by_its_framing() {
    let now = t0();
    let mut es = source(config(), now);
    dial(&mut es, now, 0, None);
    let body = b"id: 1\ndata: a\n\n";
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    es.handle_read(now, SockId(0), head.as_bytes());
    es.handle_read(now, SockId(0), &[&body[..], b"junk after the body"].concat());
    assert_eq!(data(&mut es), [ev("message", "a", "1")]);
    assert_eq!(actions(&mut es), [SocketAction::Close { sock: SockId(0) }]);
    assert_eq!(es.client().state(), SseState::Reconnecting);
    // The socket's own end comes after: ignored.
    es.handle_eof(now, SockId(0));
    assert_eq!(actions(&mut es), []);
    assert_eq!(events(&mut es), []);
}

#[test]
fn a_network_error_reconnects_without_closing_the_failed_socket() {
    let now = t0();
    let mut es = source(config(), now);
    assert_eq!(actions(&mut es), [connect_to(0)]);
    es.handle_error(now, SockId(0));
    assert_eq!(actions(&mut es), [], "the driver already dropped it");
    let s = states(&mut es);
    assert_eq!(s[0].reason, SseReason::Failed(SseFailure::NetworkError));
    let at = es.poll_timeout().unwrap();
    assert_eq!(at, now + secs(3));
    es.handle_timeout(at);
    dial(&mut es, at, 1, None);
}

#[test]
fn a_socket_not_connected_in_time_is_closed_and_retried() {
    let now = t0();
    let mut es = source(config(), now);
    assert_eq!(actions(&mut es), [connect_to(0)]);
    es.handle_timeout(now + secs(10));
    assert_eq!(actions(&mut es), [SocketAction::Close { sock: SockId(0) }]);
    assert_eq!(states(&mut es)[0].reason, SseReason::Failed(SseFailure::NetworkError));
    // A late `connected` for it is ignored.
    es.handle_connected(now + secs(11), SockId(0));
    assert_eq!(transmits(&mut es), []);
    let at = es.poll_timeout().unwrap();
    assert_eq!(at, now + secs(13));
    es.handle_timeout(at);
    assert_eq!(actions(&mut es), [connect_to(1)]);
    // Without a connect timeout only the idle watchdog bounds the wait.
    let mut cfg = config();
    cfg.connect_timeout = None;
    let es = source(cfg, now);
    assert_eq!(es.poll_timeout(), Some(now + secs(30)));
}

#[test]
fn close_closes_the_socket_and_ends_everything() {
    let now = t0();
    let mut es = source(config(), now);
    dial(&mut es, now, 0, None);
    es.handle_read(now, SockId(0), HEAD);
    let _ = events(&mut es);
    es.close(now);
    assert_eq!(actions(&mut es), [SocketAction::Close { sock: SockId(0) }]);
    assert_eq!(states(&mut es)[0].reason, SseReason::ClosedByApp);
    assert_eq!(es.poll_timeout(), None);
    es.close(now);
    assert_eq!(actions(&mut es), []);
    // Closed before the `Connect` was pulled: it is withdrawn.
    let mut es = source(config(), now);
    es.close(now);
    assert_eq!(actions(&mut es), []);
    // Closed while connected, before the request was pulled: it is dropped too.
    let mut es = source(config(), now);
    assert_eq!(actions(&mut es), [connect_to(0)]);
    es.handle_connected(now, SockId(0));
    es.close(now);
    assert_eq!(transmits(&mut es), []);
    assert_eq!(actions(&mut es), [SocketAction::Close { sock: SockId(0) }]);
}

#[test]
fn reading_waits_while_the_application_lags() {
    let now = t0();
    let mut cfg = config();
    cfg.client.limits.max_queued = 2;
    let mut es = source(cfg, now);
    dial(&mut es, now, 0, None);
    es.handle_read(now, SockId(0), HEAD);
    let _ = events(&mut es);
    assert!(es.wants_read());
    es.handle_read(now, SockId(0), b"data: 1\n\ndata: 2\n\n");
    assert!(!es.wants_read(), "two events unpulled");
    let _ = es.poll_event();
    assert!(es.wants_read());
}

#[test]
fn the_outbound_trait_is_the_inherent_socket_half() {
    fn drive(m: &mut impl Outbound, now: Instant) -> Vec<SocketAction> {
        m.handle_timeout(now);
        std::iter::from_fn(|| m.poll_action()).collect()
    }
    let now = t0();
    let mut es = source(config(), now);
    assert_eq!(drive(&mut es, now), [connect_to(0)]);
    Outbound::handle_connected(&mut es, now, SockId(0));
    assert!(Outbound::poll_transmit(&mut es).is_some());
    assert_eq!(Outbound::poll_timeout(&es), Some(now + secs(30)));
}

proptest! {
    #[test]
    fn any_split_of_head_and_body_gives_the_same_result(
        cuts in proptest::collection::vec(any::<usize>(), 0..12),
    ) {
        let input = stream();
        prop_assert_eq!(run(&split_at(&input, &cuts)), run(&[&input]));
    }

    #[test]
    fn a_chunked_response_split_anywhere_gives_the_same_events(
        cuts in proptest::collection::vec(any::<usize>(), 0..12),
    ) {
        let input = [
            &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/event-stream\r\n\r\n"[..],
            b"a\r\nid: 1\ndata\r\n5;x=y\r\n: a\n\n\r\n0\r\n\r\n",
        ]
        .concat();
        let now = t0();
        let mut es = source(config(), now);
        dial(&mut es, now, 0, None);
        let mut got = Vec::new();
        let mut closed = Vec::new();
        for chunk in split_at(&input, &cuts) {
            es.handle_read(now, SockId(0), chunk);
            got.extend(data(&mut es));
            closed.extend(actions(&mut es));
        }
        prop_assert_eq!(got, [ev("message", "a", "1")]);
        prop_assert_eq!(closed, [SocketAction::Close { sock: SockId(0) }]);
        prop_assert_eq!(es.client().state(), SseState::Reconnecting);
    }
}
