//! Tests of `SseClient`: SSE.md rules 21–24 by name, the idle watchdog, the reconnection
//! rule, robustness. Virtual time only. Bodies are fed whole, byte by byte and in random
//! splits (proptest at the bottom) where parsing is involved.

use proptest::prelude::*;

use super::*;
use crate::policy::Jitter;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn ms(m: u64) -> Duration {
    Duration::from_millis(m)
}

fn seeded(seed: u8) -> SseClientConfig {
    SseClientConfig { rng_seed: [seed; 32], ..SseClientConfig::default() }
}

fn cfg() -> SseClientConfig {
    seeded(7)
}

fn t0() -> Instant {
    crate::time::test_epoch()
}

const SSE: Option<&str> = Some("text/event-stream");

fn all_events(c: &mut SseClient) -> Vec<SseClientEvent> {
    std::iter::from_fn(|| c.poll_event()).collect()
}

fn states(c: &mut SseClient) -> Vec<StateChange> {
    all_events(c)
        .into_iter()
        .filter_map(|e| match e {
            SseClientEvent::State(s) => Some(s),
            SseClientEvent::Event(_) => None,
        })
        .collect()
}

fn data(c: &mut SseClient) -> Vec<SseEvent> {
    all_events(c)
        .into_iter()
        .filter_map(|e| match e {
            SseClientEvent::Event(e) => Some(e),
            SseClientEvent::State(_) => None,
        })
        .collect()
}

fn actions(c: &mut SseClient) -> Vec<SseAction> {
    std::iter::from_fn(|| c.poll_action()).collect()
}

fn connect(id: Option<&str>) -> SseAction {
    SseAction::Connect { last_event_id: id.map(str::to_owned) }
}

/// A new client with its first `Connect` and `Started` drained.
fn fresh(c: SseClientConfig, now: Instant) -> SseClient {
    let mut client = SseClient::new(c, now);
    assert_eq!(actions(&mut client), [connect(None)]);
    let _ = all_events(&mut client);
    client
}

/// A client whose first connection is open; actions and events drained.
fn open(c: SseClientConfig, now: Instant) -> SseClient {
    let mut client = SseClient::new(c, now);
    assert_eq!(actions(&mut client), [connect(None)]);
    client.handle_response(now, 200, SSE, None);
    assert_eq!(client.state(), SseState::Open);
    let _ = all_events(&mut client);
    client
}

/// Fires the reconnect timer of a `Reconnecting` client and checks the `Connect` it queues.
fn retry(client: &mut SseClient, expect_id: Option<&str>) -> Instant {
    assert_eq!(client.state(), SseState::Reconnecting);
    let at = client.next_retry_at().expect("reconnect timer");
    assert_eq!(client.poll_timeout(), Some(at));
    client.handle_timeout(at);
    assert_eq!(client.state(), SseState::Connecting);
    assert_eq!(actions(client), [connect(expect_id)]);
    at
}

/// The delay between a failure at `now` and the attempt it schedules.
fn delay_after(client: &SseClient, now: Instant) -> Duration {
    client.next_retry_at().unwrap() - now
}

/// The events, last event ID and failure of one connection fed `chunks` and then EOF.
fn run_body(chunks: &[&[u8]]) -> (Vec<SseEvent>, Option<SseAction>, Duration) {
    let now = t0();
    let mut c = open(cfg(), now);
    let mut events = Vec::new();
    for chunk in chunks {
        c.handle_read(now, chunk);
        events.extend(data(&mut c));
    }
    c.handle_eof(now);
    events.extend(data(&mut c));
    let delay = delay_after(&c, now);
    c.handle_timeout(now + delay);
    (events, c.poll_action(), delay)
}

/// Feeds `body` whole, byte by byte and in chunks of 2, 3 and 7; all must agree.
fn body(input: &[u8]) -> (Vec<SseEvent>, Option<SseAction>, Duration) {
    let whole = run_body(&[input]);
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    assert_eq!(run_body(&bytes), whole, "byte by byte");
    for step in [2, 3, 7] {
        let chunks: Vec<&[u8]> = input.chunks(step).collect();
        assert_eq!(run_body(&chunks), whole, "chunks of {step}");
    }
    whole
}

fn ev(event: &str, data: &str, id: &str) -> SseEvent {
    SseEvent { event: event.into(), data: data.into(), id: id.into() }
}

// ----- SSE.md 21: what opens the stream, what fails it -----

#[test]
fn r21_status_other_than_200_fails_without_reconnect() {
    for status in [201, 204, 205, 301, 304, 401, 404, 410, 429, 500, 502, 503] {
        let now = t0();
        let mut c = SseClient::new(cfg(), now);
        let _ = actions(&mut c);
        let _ = all_events(&mut c);
        c.handle_response(now, status, SSE, Some(secs(1)));
        assert_eq!(c.state(), SseState::Closed, "{status}");
        assert_eq!(
            states(&mut c),
            [StateChange {
                state: SseState::Closed,
                reason: SseReason::Failed(SseFailure::BadStatus(status)),
                attempt: 0,
                next_retry: None,
            }]
        );
        assert_eq!(actions(&mut c), [SseAction::Disconnect]);
        assert_eq!(c.poll_timeout(), None);
        c.handle_timeout(now + secs(3600));
        assert_eq!(actions(&mut c), []);
        assert!(all_events(&mut c).is_empty());
    }
}

#[test]
fn r21_wrong_or_missing_content_type_fails_without_reconnect() {
    for ct in [
        None,
        Some(""),
        Some("text/plain"),
        Some("text/html; charset=utf-8"),
        Some("application/json"),
        Some("text/event-streams"),
        Some("text/event-stream-x"),
        Some("text / event-stream"),
        Some("text/event-stream, text/plain"),
    ] {
        let now = t0();
        let mut c = SseClient::new(cfg(), now);
        let _ = actions(&mut c);
        let _ = all_events(&mut c);
        c.handle_response(now, 200, ct, None);
        assert_eq!(c.state(), SseState::Closed, "{ct:?}");
        let s = states(&mut c);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].reason, SseReason::Failed(SseFailure::BadContentType));
        assert_eq!(actions(&mut c), [SseAction::Disconnect]);
        assert_eq!(c.poll_timeout(), None);
    }
}

#[test]
fn r21_content_type_with_parameters_or_any_case_opens() {
    for ct in [
        "text/event-stream",
        "TEXT/EVENT-STREAM",
        "Text/Event-Stream",
        "text/event-stream;charset=utf-8",
        "text/event-stream; charset=ISO-8859-1",
        "text/event-stream ; foo=bar ; x",
        " \ttext/event-stream\t",
        "text/event-stream;",
    ] {
        let now = t0();
        let mut c = SseClient::new(cfg(), now);
        let _ = all_events(&mut c);
        c.handle_response(now, 200, Some(ct), None);
        assert_eq!(c.state(), SseState::Open, "{ct:?}");
        assert_eq!(states(&mut c)[0].reason, SseReason::Opened);
        // The stream is UTF-8 whatever charset says (SSE.md 4).
        c.handle_read(now, "data: é\n\n".as_bytes());
        assert_eq!(data(&mut c), [ev("message", "é", "")]);
    }
}

#[test]
fn r21_retry_5xx_is_opt_in_and_honours_retry_after() {
    let now = t0();
    let c5 = SseClientConfig { retry_5xx: true, ..cfg() };
    // A 503 with Retry-After: reconnect no sooner than it says.
    let mut c = fresh(c5, now);
    c.handle_response(now, 503, Some("text/html"), Some(secs(20)));
    assert_eq!(actions(&mut c), [SseAction::Disconnect]);
    assert_eq!(
        states(&mut c),
        [StateChange {
            state: SseState::Reconnecting,
            reason: SseReason::Failed(SseFailure::BadStatus(503)),
            attempt: 1,
            next_retry: Some(now + secs(20)),
        }]
    );
    let at = retry(&mut c, None);
    // A 500 without Retry-After: backoff, never below the reconnection time.
    c.handle_response(at, 500, None, None);
    assert_eq!(actions(&mut c), [SseAction::Disconnect]);
    assert!(delay_after(&c, at) >= secs(3));
    let at = retry(&mut c, None);
    // A Retry-After below the reconnection time does not shorten it.
    c.handle_response(at, 502, None, Some(ms(1)));
    assert_eq!(actions(&mut c), [SseAction::Disconnect]);
    assert!(delay_after(&c, at) >= secs(3));
    let at = retry(&mut c, None);
    // Retry-After is capped by max_hint (5 min).
    c.handle_response(at, 503, None, Some(secs(86_400)));
    assert_eq!(actions(&mut c), [SseAction::Disconnect]);
    assert_eq!(delay_after(&c, at), secs(300));
    let at = retry(&mut c, None);
    // Non-5xx statuses and bad content types stay terminal.
    c.handle_response(at, 404, None, Some(secs(1)));
    assert_eq!(c.state(), SseState::Closed);
    let mut c = SseClient::new(c5, now);
    c.handle_response(now, 200, Some("text/plain"), None);
    assert_eq!(c.state(), SseState::Closed);
    // Without the option a 503 is terminal (checked above for the whole range too).
    let mut c = SseClient::new(cfg(), now);
    c.handle_response(now, 503, None, Some(secs(1)));
    assert_eq!(c.state(), SseState::Closed);
}

// ----- SSE.md 22: reconnect after the reconnection time, backoff on repeated failures -----

#[test]
fn r22_clean_eof_reconnects_after_the_reconnection_time() {
    let now = t0();
    let mut c = open(cfg(), now);
    c.handle_read(now, b"data: a\n\n");
    c.handle_eof(now + secs(1));
    assert_eq!(actions(&mut c), [], "the adapter already knows the body ended");
    let s = states(&mut c);
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].reason, SseReason::Failed(SseFailure::EndOfStream));
    assert_eq!(s[0].next_retry, Some(now + secs(4)));
    // Not a nanosecond early.
    c.handle_timeout(now + secs(4) - Duration::from_nanos(1));
    assert_eq!(c.state(), SseState::Reconnecting);
    assert_eq!(actions(&mut c), []);
    retry(&mut c, None);
}

#[test]
fn r22_network_error_reconnects_after_the_reconnection_time() {
    let now = t0();
    let mut c = open(cfg(), now);
    c.handle_error(now + secs(2));
    assert_eq!(actions(&mut c), []);
    let s = states(&mut c);
    assert_eq!(s[0].reason, SseReason::Failed(SseFailure::NetworkError));
    assert_eq!(c.next_retry_at(), Some(now + secs(5)));
    retry(&mut c, None);
}

#[test]
fn r22_failure_before_the_response_reconnects() {
    let now = t0();
    let mut c = SseClient::new(cfg(), now);
    let _ = actions(&mut c);
    let _ = all_events(&mut c);
    c.handle_error(now);
    assert_eq!(states(&mut c)[0].reason, SseReason::Failed(SseFailure::NetworkError));
    assert_eq!(c.next_retry_at(), Some(now + secs(3)));
    let at = retry(&mut c, None);
    // A connection closed before its response head: also a network error.
    c.handle_eof(at);
    assert_eq!(states(&mut c)[1].reason, SseReason::Failed(SseFailure::NetworkError));
    assert!(delay_after(&c, at) >= secs(3));
}

#[test]
fn r22_server_retry_changes_the_reconnection_time_at_once() {
    // `retry` counts as soon as its line ends, without a dispatched event.
    let (events, action, delay) = body(b"retry: 1500\n");
    assert!(events.is_empty());
    assert_eq!(action, Some(connect(None)));
    assert_eq!(delay, ms(1500));
    // Also from an unfinished block, and the latest value wins.
    let (_, _, delay) = body(b"retry: 7000\n\ndata: x\nretry: 0250\n");
    assert_eq!(delay, ms(250));
    // Invalid values are ignored (SSE.md 17).
    let (_, _, delay) = body(b"retry: 1000x\nretry: +1000\nretry:  1000\nretry: -1\nretry\n\n");
    assert_eq!(delay, secs(3));
    // It persists across connections, and a network error uses it too.
    let now = t0();
    let mut c = open(cfg(), now);
    c.handle_read(now, b"retry: 10000\n");
    assert_eq!(c.reconnection_time(), secs(10));
    c.handle_error(now);
    assert_eq!(delay_after(&c, now), secs(10));
    let at = retry(&mut c, None);
    c.handle_response(at, 200, SSE, None);
    c.handle_eof(at);
    assert!(delay_after(&c, at) >= secs(10));
}

#[test]
fn r22_huge_retry_is_capped_by_max_hint() {
    let (_, _, delay) = body(b"retry: 99999999999999999999999\n");
    assert_eq!(delay, secs(300));
    let c = SseClientConfig { default_retry: Duration::MAX, ..cfg() };
    let client = SseClient::new(c, t0());
    assert_eq!(client.reconnection_time(), secs(300));
}

#[test]
fn r22_repeated_failures_back_off_with_jitter_never_below_the_reconnection_time() {
    let b = BackoffConfig::default();
    let mut all = Vec::new();
    for seed in 0..20 {
        let mut now = t0();
        let mut c = fresh(seeded(seed), now);
        let mut delays = Vec::new();
        for _ in 0..12 {
            c.handle_error(now);
            delays.push(delay_after(&c, now));
            now = retry(&mut c, None);
        }
        // The first failure waits exactly the reconnection time (the spec's rule).
        assert_eq!(delays[0], secs(3));
        for (n, d) in delays.iter().enumerate() {
            let exp = b.base.saturating_mul(1 << n).min(b.cap);
            assert!(*d >= secs(3), "seed {seed} #{n}: {d:?} below the reconnection time");
            assert!(*d <= exp.max(secs(3)), "seed {seed} #{n}: {d:?} above max(rt, {exp:?})");
        }
        assert_eq!(c.attempt(), 12);
        all.push(delays);
    }
    // Jitter: different seeds give different schedules.
    assert!(all.iter().any(|d| d != &all[0]));
    // And the exponential shows through once it is above the reconnection time.
    assert!(all.iter().any(|d| d[11] > secs(3)));
}

#[test]
fn r22_short_streams_keep_backing_off_healthy_ones_reset() {
    let none = SseClientConfig {
        backoff: BackoffConfig { jitter: Jitter::None, ..BackoffConfig::default() },
        default_retry: ms(500),
        ..cfg()
    };
    let mut now = t0();
    let mut c = open(none, now);
    // Streams that open and end at once: the backoff grows (1 s would be the spec's
    // 0.5 s without it).
    let mut delays = Vec::new();
    for _ in 0..5 {
        c.handle_eof(now);
        delays.push(delay_after(&c, now));
        now = retry(&mut c, None);
        c.handle_response(now, 200, SSE, None);
    }
    assert_eq!(delays, [ms(500), secs(2), secs(4), secs(8), secs(16)]);
    assert_eq!(c.attempt(), 5);
    // A stream that stayed up for healthy_after (10 s) resets: exactly the reconnection time.
    now += secs(10);
    c.handle_read(now, b": ping\n");
    c.handle_eof(now);
    assert_eq!(delay_after(&c, now), ms(500));
    assert_eq!(c.attempt(), 1);
}

#[test]
fn r22_parser_limit_is_a_network_error() {
    let c = SseClientConfig {
        limits: ParserLimits { max_line: 16, ..ParserLimits::default() },
        ..cfg()
    };
    let now = t0();
    let mut client = open(c, now);
    client.handle_read(now, b"id: 1\ndata: ok\n\ndata: 0123456789abcdef\n\n");
    let got = all_events(&mut client);
    assert_eq!(got.len(), 2);
    assert_eq!(got[0], SseClientEvent::Event(ev("message", "ok", "1")));
    let SseClientEvent::State(s) = &got[1] else { panic!("{got:?}") };
    assert_eq!(s.state, SseState::Reconnecting);
    assert_eq!(s.reason, SseReason::Failed(SseFailure::StreamError(SseError::LineTooLong(16))));
    assert_eq!(actions(&mut client), [SseAction::Disconnect]);
    retry(&mut client, Some("1"));
}

#[test]
fn r22_unpulled_events_are_bounded() {
    let c = SseClientConfig {
        limits: ParserLimits { max_queued: 3, ..ParserLimits::default() },
        ..cfg()
    };
    let now = t0();
    let mut client = open(c, now);
    client.handle_read(now, b"id: 1\ndata: a\n\nid: 2\ndata: b\n\n");
    assert!(client.wants_read());
    client.handle_read(now, b"id: 3\ndata: c\n\n");
    assert_eq!(client.state(), SseState::Open);
    assert!(!client.wants_read(), "an adapter stops reading here");
    client.handle_read(now, b"id: 4\ndata: d\n\n"); // 3 already waiting: refused
    assert_eq!(client.state(), SseState::Reconnecting);
    assert_eq!(actions(&mut client), [SseAction::Disconnect]);
    let got = all_events(&mut client);
    assert_eq!(got.len(), 4);
    assert_eq!(
        got[3],
        SseClientEvent::State(StateChange {
            state: SseState::Reconnecting,
            reason: SseReason::Failed(SseFailure::StreamError(SseError::TooManyQueued(3))),
            attempt: 1,
            next_retry: Some(now + secs(3)),
        })
    );
    // Resume after the last event delivered.
    retry(&mut client, Some("3"));
}

#[test]
fn r22_backoff_gives_up_when_exhausted() {
    let c = SseClientConfig {
        backoff: BackoffConfig { max_attempts: Some(2), ..BackoffConfig::default() },
        ..cfg()
    };
    let now = t0();
    let mut client = fresh(c, now);
    client.handle_error(now);
    let at = retry(&mut client, None);
    client.handle_error(at);
    let at = retry(&mut client, None);
    let _ = all_events(&mut client);
    client.handle_eof(at);
    assert_eq!(
        states(&mut client),
        [StateChange {
            state: SseState::Closed,
            reason: SseReason::GaveUp(SseFailure::NetworkError),
            attempt: 2,
            next_retry: None,
        }]
    );
    assert_eq!(client.poll_timeout(), None);
    assert_eq!(actions(&mut client), []);
}

// ----- SSE.md 23: Last-Event-ID only when non-empty -----

#[test]
fn r23_last_event_id_is_sent_only_when_non_empty() {
    let now = t0();
    let mut c = open(cfg(), now);
    c.handle_eof(now);
    retry(&mut c, None); // nothing seen yet
    c.handle_response(now, 200, SSE, None);
    c.handle_read(now, b"id: 7\ndata: x\n\n");
    assert_eq!(data(&mut c), [ev("message", "x", "7")]);
    c.handle_eof(now);
    let now = retry(&mut c, Some("7"));
    c.handle_response(now, 200, SSE, None);
    // An empty `id:` resets it: no header any more (SSE.md 13).
    c.handle_read(now, b"id\ndata: y\n\n");
    assert_eq!(c.last_event_id(), "");
    assert_eq!(data(&mut c), [ev("message", "y", "")]);
    c.handle_error(now);
    let now = retry(&mut c, None);
    c.handle_response(now, 200, SSE, None);
    c.handle_read(now, b"id: 8\n\nid:\n\n");
    c.handle_eof(now);
    retry(&mut c, None);
}

#[test]
fn r23_id_of_an_unfinished_block_is_not_used() {
    let (events, action, _) = body(b"id: 1\ndata: a\n\nid: 2\ndata: b\n");
    assert_eq!(events, [ev("message", "a", "1")]);
    assert_eq!(action, Some(connect(Some("1"))));
    // An id with NUL is ignored; an id-only block moves the cursor without an event.
    let (events, action, _) = body(b"id: 3\n\nid: 4\0\n\n: comment\r\nid: 5\r\n");
    assert!(events.is_empty());
    assert_eq!(action, Some(connect(Some("3"))));
}

#[test]
fn r23_last_event_id_survives_reconnection() {
    let now = t0();
    let mut c = open(cfg(), now);
    c.handle_read(now, b"id: 5\ndata: a\n\n");
    assert_eq!(data(&mut c), [ev("message", "a", "5")]);
    c.handle_error(now);
    let now = retry(&mut c, Some("5"));
    c.handle_response(now, 200, SSE, None);
    // Events of the new stream carry the id until the server sends another one (SSE.md 16).
    c.handle_read(now, b"data: b\n\nid: 6\ndata: c\n\n");
    assert_eq!(data(&mut c), [ev("message", "b", "5"), ev("message", "c", "6")]);
    assert_eq!(c.last_event_id(), "6");
}

// ----- SSE.md 24: states as events -----

#[test]
fn r24_states_are_emitted_in_order_with_reason_attempt_and_next_retry() {
    let none = SseClientConfig {
        backoff: BackoffConfig { jitter: Jitter::None, ..BackoffConfig::default() },
        ..cfg()
    };
    let now = t0();
    let mut c = SseClient::new(none, now);
    let state = |state, reason, attempt, next_retry| {
        SseClientEvent::State(StateChange { state, reason, attempt, next_retry })
    };
    use SseState::*;
    assert_eq!(all_events(&mut c), [state(Connecting, SseReason::Started, 0, None)]);
    c.handle_response(now, 200, SSE, None);
    c.handle_read(now, b"data: hi\n\n");
    c.handle_eof(now + secs(1));
    let t1 = now + secs(4);
    assert_eq!(
        all_events(&mut c),
        [
            state(Open, SseReason::Opened, 0, None),
            SseClientEvent::Event(ev("message", "hi", "")),
            state(Reconnecting, SseReason::Failed(SseFailure::EndOfStream), 1, Some(t1)),
        ]
    );
    c.handle_timeout(t1);
    c.handle_error(t1);
    let t2 = t1 + secs(3); // max(3 s, 2 s)
    c.handle_timeout(t2);
    c.handle_response(t2, 200, SSE, None);
    c.close(t2);
    // (This adapter pulls its actions late; the client does not depend on it.)
    assert_eq!(
        all_events(&mut c),
        [
            state(Connecting, SseReason::RetryDue, 1, None),
            state(Reconnecting, SseReason::Failed(SseFailure::NetworkError), 2, Some(t2)),
            state(Connecting, SseReason::RetryDue, 2, None),
            state(Open, SseReason::Opened, 2, None),
            state(Closed, SseReason::ClosedByApp, 2, None),
        ]
    );
    assert_eq!(
        actions(&mut c),
        [connect(None), connect(None), connect(None), SseAction::Disconnect]
    );
}

#[test]
fn r24_close_stops_everything() {
    let now = t0();
    // While open: Disconnect, Closed once, nothing after.
    let mut c = open(cfg(), now);
    c.close(now);
    assert_eq!(actions(&mut c), [SseAction::Disconnect]);
    assert_eq!(states(&mut c)[0].reason, SseReason::ClosedByApp);
    assert_eq!(c.poll_timeout(), None);
    c.close(now);
    c.handle_read(now, b"data: late\n\n");
    c.handle_response(now, 200, SSE, None);
    c.handle_eof(now);
    c.handle_error(now);
    c.handle_timeout(now + secs(3600));
    assert!(all_events(&mut c).is_empty());
    assert_eq!(actions(&mut c), []);
    assert_eq!(c.state(), SseState::Closed);
    // While reconnecting: the timer is cancelled, nothing to disconnect.
    let mut c = open(cfg(), now);
    c.handle_eof(now);
    c.close(now);
    assert_eq!(actions(&mut c), []);
    assert_eq!(c.next_retry_at(), None);
    assert_eq!(c.poll_timeout(), None);
    // Before the adapter pulled the Connect: it is withdrawn.
    let mut c = SseClient::new(cfg(), now);
    c.close(now);
    assert_eq!(actions(&mut c), []);
    assert_eq!(c.state(), SseState::Closed);
    // While connecting (Connect pulled): Disconnect.
    let mut c = SseClient::new(cfg(), now);
    let _ = actions(&mut c);
    c.close(now);
    assert_eq!(actions(&mut c), [SseAction::Disconnect]);
}

// ----- the idle watchdog -----

#[test]
fn idle_watchdog_fires_after_idle_timeout_without_bytes() {
    let now = t0();
    let mut c = open(cfg(), now);
    assert_eq!(c.poll_timeout(), Some(now + secs(30)));
    assert_eq!(c.timeout_reason(), Some(SseTimer::Idle));
    c.handle_timeout(now + secs(30) - Duration::from_nanos(1));
    assert_eq!(c.state(), SseState::Open);
    c.handle_timeout(now + secs(30));
    assert_eq!(actions(&mut c), [SseAction::Disconnect]);
    let s = states(&mut c);
    assert_eq!(s[0].reason, SseReason::Failed(SseFailure::IdleTimeout));
    assert_eq!(s[0].next_retry, Some(now + secs(33)));
    assert_eq!(c.timeout_reason(), Some(SseTimer::Reconnect));
    retry(&mut c, None);
}

#[test]
fn idle_watchdog_is_reset_by_any_byte_even_a_comment() {
    let now = t0();
    let mut c = open(cfg(), now);
    c.handle_read(now + secs(20), b":");
    assert_eq!(c.poll_timeout(), Some(now + secs(50)));
    c.handle_timeout(now + secs(30));
    assert_eq!(c.state(), SseState::Open);
    // Half a line ending is a byte too; an empty read is not.
    c.handle_read(now + secs(40), b"\r");
    c.handle_read(now + secs(45), b"");
    assert_eq!(c.poll_timeout(), Some(now + secs(70)));
    c.handle_timeout(now + secs(70));
    assert_eq!(c.state(), SseState::Reconnecting);
    assert!(data(&mut c).is_empty());
}

#[test]
fn idle_watchdog_covers_the_wait_for_the_response() {
    let now = t0();
    let mut c = SseClient::new(cfg(), now);
    let _ = actions(&mut c);
    assert_eq!(c.poll_timeout(), Some(now + secs(30)));
    c.handle_timeout(now + secs(30));
    assert_eq!(actions(&mut c), [SseAction::Disconnect]);
    assert_eq!(c.state(), SseState::Reconnecting);
    // A response head restarts it.
    let at = retry(&mut c, None);
    c.handle_response(at + secs(29), 200, SSE, None);
    assert_eq!(c.poll_timeout(), Some(at + secs(59)));
    // Disabled: no deadline while connected.
    let mut c = SseClient::new(SseClientConfig { idle_timeout: None, ..cfg() }, now);
    assert_eq!(c.poll_timeout(), None);
    c.handle_response(now, 200, SSE, None);
    assert_eq!(c.poll_timeout(), None);
    c.handle_timeout(now + secs(86_400));
    assert_eq!(c.state(), SseState::Open);
}

// ----- robustness -----

#[test]
fn inputs_out_of_order_are_ignored_without_panicking() {
    let now = t0();
    let mut c = SseClient::new(cfg(), now);
    let _ = all_events(&mut c);
    // Body bytes before the response head are dropped.
    c.handle_read(now, b"data: early\n\n");
    c.handle_timeout(now); // spurious
    assert!(all_events(&mut c).is_empty());
    c.handle_response(now, 200, SSE, None);
    // A second response head is ignored.
    c.handle_response(now, 404, None, None);
    assert_eq!(c.state(), SseState::Open);
    c.handle_error(now);
    // While reconnecting, stale inputs of the old connection are ignored.
    c.handle_read(now, b"data: stale\n\n");
    c.handle_response(now, 200, SSE, None);
    c.handle_eof(now);
    c.handle_error(now);
    assert_eq!(c.state(), SseState::Reconnecting);
    assert_eq!(states(&mut c).len(), 2);
}

#[test]
fn time_going_backwards_is_clamped() {
    let now = t0() + secs(100);
    let mut c = open(cfg(), now);
    c.handle_read(now + secs(10), b": x\n");
    // An older `now` counts as the newest seen: no deadline in the past.
    c.handle_eof(now - secs(100));
    assert_eq!(c.next_retry_at(), Some(now + secs(13)));
    c.handle_timeout(now); // before the deadline
    assert_eq!(c.state(), SseState::Reconnecting);
}

#[test]
fn zero_durations_do_not_loop() {
    let c = SseClientConfig {
        idle_timeout: Some(Duration::ZERO),
        default_retry: Duration::ZERO,
        backoff: BackoffConfig { base: Duration::ZERO, ..BackoffConfig::default() },
        ..cfg()
    };
    let now = t0();
    let mut client = SseClient::new(c, now);
    for _ in 0..10 {
        assert_eq!(client.poll_timeout(), Some(now));
        client.handle_timeout(now);
    }
    let _ = actions(&mut client);
    let _ = all_events(&mut client);
}

// ----- random splits and random input sequences -----

const BODY: &[u8] =
    b"\xEF\xBB\xBFretry: 2000\r\n: comment\r\nid: 1\r\nevent: a\r\ndata: x\r\ndata:  y\r\r\
id: 2\ndata\n\n:\n\nid\x00: no\nid: 3\0\ndata: \xFF\n\nid: 4\n\nid: 5\ndata: unfinished\n";

#[test]
fn the_reference_body_fed_three_ways() {
    let (events, action, delay) = body(BODY);
    assert_eq!(
        events,
        [ev("a", "x\n y", "1"), ev("message", "", "2"), ev("message", "\u{FFFD}", "2")]
    );
    assert_eq!(action, Some(connect(Some("4"))));
    assert_eq!(delay, secs(2));
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

#[derive(Clone, Debug)]
enum Op {
    Response(u16, bool),
    Read(Vec<u8>),
    Eof,
    Error,
    Advance(u64),
    Timeout,
    Close,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (prop_oneof![Just(200u16), Just(204), Just(404), Just(503)], any::<bool>())
            .prop_map(|(s, ok)| Op::Response(s, ok)),
        proptest::collection::vec(
            prop_oneof![Just(b'\n'), Just(b'\r'), Just(b':'), Just(b' '), Just(b'a'), Just(b'0')],
            0..12
        )
        .prop_map(Op::Read),
        prop_oneof![
            Just(&b"id: 9\n"[..]),
            Just(&b"data: d\n\n"[..]),
            Just(&b"retry: 100\n"[..]),
            Just(&b"id\n\n"[..]),
        ]
        .prop_map(|b| Op::Read(b.to_vec())),
        Just(Op::Eof),
        Just(Op::Error),
        (0u64..40_000).prop_map(Op::Advance),
        Just(Op::Timeout),
        Just(Op::Close),
    ]
}

proptest! {
    #[test]
    fn any_split_gives_the_same_events_and_resume_point(
        cuts in proptest::collection::vec(any::<usize>(), 0..12),
    ) {
        let whole = run_body(&[BODY]);
        prop_assert_eq!(run_body(&split_at(BODY, &cuts)), whole);
    }

    #[test]
    fn any_input_sequence_keeps_the_invariants(
        ops in proptest::collection::vec(op(), 0..60),
        retry_5xx in any::<bool>(),
        seed in any::<u8>(),
    ) {
        let mut now = t0();
        let mut c = SseClient::new(SseClientConfig { retry_5xx, ..seeded(seed) }, now);
        let mut closed_events = 0;
        for op in ops {
            match op {
                Op::Response(s, ok) => c.handle_response(now, s, ok.then_some("text/event-stream"), None),
                Op::Read(b) => c.handle_read(now, &b),
                Op::Eof => c.handle_eof(now),
                Op::Error => c.handle_error(now),
                Op::Advance(m) => now += ms(m),
                Op::Timeout => c.handle_timeout(now),
                Op::Close => c.close(now),
            }
            let _ = actions(&mut c);
            for s in states(&mut c) {
                prop_assert_eq!(s.next_retry.is_some(), s.state == SseState::Reconnecting);
                // Never sooner than the reconnection time.
                if let Some(at) = s.next_retry {
                    prop_assert!(at - now >= c.reconnection_time());
                }
                closed_events += usize::from(s.state == SseState::Closed);
            }
            prop_assert_eq!(c.next_retry_at().is_some(), c.state() == SseState::Reconnecting);
            if c.state() == SseState::Closed {
                prop_assert_eq!(c.poll_timeout(), None);
            } else {
                prop_assert!(c.poll_timeout().is_some());
            }
        }
        prop_assert!(closed_events <= 1);
    }
}
