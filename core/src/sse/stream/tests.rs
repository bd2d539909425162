//! The server stream: head, resume (exact, empty, gone), live events without duplicates,
//! keep-alive in virtual time, the slow-reader policy, and ending exactly once.

use super::*;
use crate::policy::outbox::SlowConsumer;
use crate::replay::{Epoch, LogLimits};
use crate::sse::parse::{ParserLimits, SseEvent, SseParser};

fn log_with(n: u64, limits: LogLimits, t0: Instant) -> ReplayLog {
    let mut log = ReplayLog::new(Epoch(0xa1), limits);
    for i in 1..=n {
        log.append(t0, Bytes::from(format!("{{\"n\":{i}}}")));
    }
    log
}

/// Everything written so far, and whether the transport was shut down.
fn drain(s: &mut SseStream) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let mut shut = false;
    while let Some(t) = s.poll_transmit() {
        match t {
            Transmit::Bytes(b) => out.extend_from_slice(&b),
            Transmit::Shutdown => shut = true,
        }
    }
    (out, shut)
}

/// The body after the head, parsed the way a client would.
fn client_view(bytes: &[u8], last_id: &str) -> (Vec<SseEvent>, String) {
    let body = match bytes.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(i) if bytes.starts_with(b"HTTP/1.1") => &bytes[i + 4..],
        _ => bytes,
    };
    let mut p = SseParser::resuming(ParserLimits::default(), last_id.into());
    p.push(body).unwrap();
    let mut evs = Vec::new();
    while let Some(e) = p.next_event() {
        evs.push(e);
    }
    (evs, p.last_event_id().to_owned())
}

fn pos(s: &str) -> Position {
    s.parse().unwrap()
}

#[test]
fn head_has_the_event_stream_headers_and_retry() {
    let t0 = crate::time::test_epoch();
    let cfg = SseStreamConfig { retry: Some(Duration::from_millis(2500)), ..Default::default() };
    let mut s = SseStream::new(cfg, t0, &[("Access-Control-Allow-Origin", "*")]).unwrap();
    let (out, shut) = drain(&mut s);
    let text = String::from_utf8(out).unwrap();
    assert!(!shut);
    for line in [
        "HTTP/1.1 200 OK\r\n",
        "Content-Type: text/event-stream\r\n",
        "Cache-Control: no-cache\r\n",
        "X-Accel-Buffering: no\r\n",
        "Access-Control-Allow-Origin: *\r\n",
        "\r\n\r\nretry: 2500\n",
    ] {
        assert!(text.contains(line), "{line:?} in {text:?}");
    }
    assert!(!text.to_ascii_lowercase().contains("content-length"));
    assert_eq!(SseStream::new(cfg, t0, &[("Bad Name", "x")]).err(), Some(InvalidHeader));
}

#[test]
fn a_client_that_missed_k_events_gets_exactly_those_in_order() {
    let t0 = crate::time::test_epoch();
    let log = log_with(10, LogLimits::default(), t0);
    for k in 0..=10u64 {
        let mut s = SseStream::new(SseStreamConfig::default(), t0, &[]).unwrap();
        let from = Position { epoch: Epoch(0xa1), offset: 10 - k };
        assert_eq!(s.resume(t0, &log, Some(from), None), Ok(usize::try_from(k).unwrap()));
        let (evs, last) = client_view(&drain(&mut s).0, &from.to_string());
        let got: Vec<String> = evs.iter().map(|e| e.data.clone()).collect();
        let want: Vec<String> = (11 - k..=10).map(|i| format!("{{\"n\":{i}}}")).collect();
        assert_eq!(got, want);
        assert_eq!(last, "a1:10");
        assert_eq!(s.cursor(), Some(pos("a1:10")));
    }
}

#[test]
fn a_new_client_learns_the_head_position_at_once() {
    let t0 = crate::time::test_epoch();
    let log = log_with(4, LogLimits::default(), t0);
    let mut s = SseStream::new(SseStreamConfig::default(), t0, &[]).unwrap();
    assert_eq!(s.resume(t0, &log, None, None), Ok(0));
    let (evs, last) = client_view(&drain(&mut s).0, "");
    assert!(evs.is_empty());
    assert_eq!(last, "a1:4");
}

#[test]
fn a_trimmed_or_foreign_position_is_gone_never_a_partial_replay() {
    let t0 = crate::time::test_epoch();
    let limits = LogLimits { max_count: 3, ..LogLimits::default() };
    let log = log_with(10, limits, t0);
    for asked in ["a1:2", "b2:9", "a1:11"] {
        let mut s = SseStream::new(SseStreamConfig::default(), t0, &[]).unwrap();
        let err = s.resume(t0, &log, Some(pos(asked)), None).unwrap_err();
        assert_eq!((err.asked, err.head), (pos(asked), pos("a1:10")));
        // The app sends its full state; the client's cursor is at the head.
        s.send_frame(t0, Bytes::from_static(b"event: refetch\ndata: {}\n\n"));
        let (evs, last) = client_view(&drain(&mut s).0, asked);
        assert_eq!(evs.len(), 1, "only the full-state event, no partial replay");
        assert_eq!(evs[0].event, "refetch");
        assert_eq!(last, "a1:10");
    }
}

#[test]
fn live_events_already_replayed_are_skipped() {
    let t0 = crate::time::test_epoch();
    let mut log = log_with(3, LogLimits::default(), t0);
    let mut s = SseStream::new(SseStreamConfig::default(), t0, &[]).unwrap();
    s.resume(t0, &log, Some(pos("a1:1")), Some("ticks")).unwrap();
    // The hub's broadcast of offset 3 races with the replay: it must not arrive twice.
    let data3 = Bytes::from_static(b"{\"n\":3}");
    let f3 = SseStream::encode(pos("a1:3"), Some("ticks"), &data3).unwrap();
    assert_eq!(s.send_event(t0, pos("a1:3"), f3, None), Sent::Skipped);
    let p4 = log.append(t0, Bytes::from_static(b"{\"n\":4}"));
    let f4 = SseStream::encode(p4, Some("ticks"), &Bytes::from_static(b"{\"n\":4}")).unwrap();
    assert_eq!(s.send_event(t0, p4, f4.clone(), None), Sent::Queued);
    let (evs, last) = client_view(&drain(&mut s).0, "a1:1");
    let ids: Vec<&str> = evs.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, ["a1:2", "a1:3", "a1:4"]);
    assert!(evs.iter().all(|e| e.event == "ticks"));
    assert_eq!(last, "a1:4");
    // A new epoch (the log restarted) is not mistaken for old offsets.
    let p = Position { epoch: Epoch(0xb2), offset: 1 };
    assert_eq!(s.send_event(t0, p, f4, None), Sent::Queued);
}

#[test]
fn the_broadcast_frame_is_shared_not_copied() {
    let t0 = crate::time::test_epoch();
    let log = log_with(0, LogLimits::default(), t0);
    let frame = SseStream::encode(pos("a1:1"), None, &Bytes::from_static(b"{}")).unwrap();
    let mut streams: Vec<SseStream> =
        (0..3).map(|_| SseStream::new(SseStreamConfig::default(), t0, &[]).unwrap()).collect();
    for s in &mut streams {
        s.resume(t0, &log, None, None).unwrap();
        while s.poll_transmit().is_some() {}
        s.send_event(t0, pos("a1:1"), frame.clone(), None);
        let Some(Transmit::Bytes(b)) = s.poll_transmit() else { panic!() };
        assert_eq!(b.as_ptr(), frame.as_ptr());
    }
}

#[test]
fn keepalive_comment_after_quiet_time_only() {
    let t0 = crate::time::test_epoch();
    let log = log_with(0, LogLimits::default(), t0);
    let mut s = SseStream::new(SseStreamConfig::default(), t0, &[]).unwrap();
    s.resume(t0, &log, None, None).unwrap();
    drain(&mut s);
    assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(15)));
    s.handle_timeout(t0 + Duration::from_secs(14));
    assert!(drain(&mut s).0.is_empty(), "never before the interval");
    // An event postpones the keep-alive.
    let t14 = t0 + Duration::from_secs(14);
    s.send_frame(t14, Bytes::from_static(b"data: x\n\n"));
    drain(&mut s);
    assert_eq!(s.poll_timeout(), Some(t14 + Duration::from_secs(15)));
    s.handle_timeout(t14 + Duration::from_secs(15));
    assert_eq!(drain(&mut s).0, b":\n");
    assert_eq!(s.poll_timeout(), Some(t14 + Duration::from_secs(30)));
}

#[test]
fn a_slow_reader_ends_the_stream_by_the_outbox_policy() {
    let t0 = crate::time::test_epoch();
    let log = log_with(0, LogLimits::default(), t0);
    let outbox = OutboxConfig { max_bytes: 4096, max_items: 100, policy: SlowConsumer::Disconnect };
    let cfg = SseStreamConfig { outbox, ..Default::default() };
    let mut s = SseStream::new(cfg, t0, &[]).unwrap();
    s.resume(t0, &log, None, None).unwrap();
    let frame = Bytes::from(vec![b'x'; 1000]);
    let mut sent = Vec::new();
    for off in 1..=10 {
        let p = Position { epoch: Epoch(0xa1), offset: off };
        sent.push(s.send_event(t0, p, frame.clone(), None));
        assert!(s.buffered() <= 4096, "memory stays bounded");
    }
    assert_eq!(sent.iter().filter(|r| **r == Sent::Queued).count(), 3);
    assert_eq!(s.poll_event(), Some(SseStreamEvent::Ended(StreamEnd::TooSlow)));
    assert_eq!(s.poll_event(), None);
    assert_eq!(drain(&mut s), (vec![], true));
    assert!(s.is_ended());
}

#[test]
fn eof_and_close_end_exactly_once() {
    let t0 = crate::time::test_epoch();
    let mut s = SseStream::new(SseStreamConfig::default(), t0, &[]).unwrap();
    s.send_frame(t0, Bytes::from_static(b"data: bye\n\n"));
    s.close(t0);
    s.handle_eof(t0);
    assert_eq!(s.poll_event(), Some(SseStreamEvent::Ended(StreamEnd::Closed)));
    assert_eq!(s.poll_event(), None);
    let (out, shut) = drain(&mut s);
    assert!(out.ends_with(b"data: bye\n\n") && shut, "queued data drains before the shutdown");
    assert_eq!(s.send_frame(t0, Bytes::from_static(b"x")), Sent::Ended);
    assert_eq!(s.poll_timeout(), None);

    let mut s = SseStream::new(SseStreamConfig::default(), t0, &[]).unwrap();
    s.handle_eof(t0 + Duration::from_secs(1));
    s.handle_eof(t0);
    assert_eq!(s.poll_event(), Some(SseStreamEvent::Ended(StreamEnd::ClientGone)));
    assert_eq!(s.poll_event(), None);
}

#[test]
fn a_reader_that_stopped_on_an_idle_stream_is_ended_by_send_timeout() {
    let t0 = crate::time::test_epoch();
    let log = log_with(0, LogLimits::default(), t0);
    let cfg = SseStreamConfig { send_timeout: Some(Duration::from_secs(30)), ..Default::default() };
    let mut s = SseStream::new(cfg, t0, &[]).unwrap();
    s.resume(t0, &log, None, None).unwrap();
    drain(&mut s); // the head and the cursor went out
    assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(15)), "only the keep-alive");
    // The keep-alive is queued but the adapter cannot write it: nobody pulls.
    s.handle_timeout(t0 + Duration::from_secs(15));
    assert_eq!(s.buffered(), 2);
    assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(30)), "the next keep-alive");
    s.handle_timeout(t0 + Duration::from_secs(30));
    assert_eq!(s.buffered(), 4);
    assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(45)), "waiting since 15 s");
    s.handle_timeout(t0 + Duration::from_secs(44));
    assert_eq!(s.poll_event(), None);
    s.handle_timeout(t0 + Duration::from_secs(45));
    assert_eq!(s.poll_event(), Some(SseStreamEvent::Ended(StreamEnd::TooSlow)));
    assert_eq!(drain(&mut s), (vec![], true), "queued bytes dropped, then shutdown");
    assert_eq!(s.poll_timeout(), None);
}

#[test]
fn pulling_resets_the_send_timeout_and_end_aborts() {
    let t0 = crate::time::test_epoch();
    let cfg = SseStreamConfig {
        keepalive: None,
        send_timeout: Some(Duration::from_secs(5)),
        ..Default::default()
    };
    let mut s = SseStream::new(cfg, t0, &[]).unwrap();
    s.send_frame(t0, Bytes::from_static(b"data: a\n\n"));
    assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(5)));
    let t3 = t0 + Duration::from_secs(3);
    s.handle_timeout(t3); // advances the clock; nothing due
    let _ = s.poll_transmit(); // the head: progress at t3, one frame still waits
    assert_eq!(s.poll_timeout(), Some(t3 + Duration::from_secs(5)));
    let _ = s.poll_transmit();
    assert_eq!(s.poll_timeout(), None, "nothing queued, nothing to time");
    s.send_frame(t3, Bytes::from_static(b"data: b\n\n"));
    s.end(t3, StreamEnd::TooSlow);
    assert_eq!(s.poll_event(), Some(SseStreamEvent::Ended(StreamEnd::TooSlow)));
    assert_eq!(drain(&mut s), (vec![], true));
}
