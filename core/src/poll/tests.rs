//! Polling: first request, exact catch-up, 304, gone, long-poll hold and timeout, limits,
//! bad requests.

use super::*;
use crate::http::RequestParser;
use crate::replay::{Epoch, LogLimits};

fn request(target: &str, extra: &str) -> Result<PollRequest, PollError> {
    let head = format!("GET {target} HTTP/1.1\r\nHost: x\r\n{extra}\r\n");
    let (req, _) = RequestParser::new(8192).parse(head.as_bytes()).unwrap().unwrap();
    PollRequest::from_request(&req)
}

fn log_with(n: u64, t0: Instant) -> ReplayLog {
    let mut log = ReplayLog::new(Epoch(0xa1), LogLimits { max_count: 5, ..LogLimits::default() });
    for i in 1..=n {
        log.append(t0, Bytes::from(format!("{{\"n\":{i}}}")));
    }
    log
}

/// Status, ETag and the parsed JSON body of a response.
fn parts(resp: &Bytes) -> (u16, Option<String>, serde_json::Value) {
    let text = std::str::from_utf8(resp).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head[9..12].parse().unwrap();
    let etag =
        head.lines().find_map(|l| l.strip_prefix("ETag: ")).map(|v| v.trim_matches('"').to_owned());
    let json =
        if body.is_empty() { serde_json::Value::Null } else { serde_json::from_str(body).unwrap() };
    (status, etag, json)
}

fn offsets(json: &serde_json::Value) -> Vec<u64> {
    json["events"].as_array().unwrap().iter().map(|e| e["off"].as_u64().unwrap()).collect()
}

#[test]
fn first_request_gets_the_head_and_no_events() {
    let t0 = crate::time::test_epoch();
    let log = log_with(3, t0);
    let mut p = Poll::new(PollConfig::default(), t0, request("/poll?ch=ticks", "").unwrap());
    let (status, etag, json) = parts(&p.check(t0, &log).unwrap());
    assert_eq!((status, etag.as_deref()), (200, Some("a1:3")));
    assert_eq!(json["pos"], "a1:3");
    assert_eq!(json["recovered"], true);
    assert!(offsets(&json).is_empty());
    assert!(p.is_answered());
    assert_eq!(p.check(t0, &log), None, "one response per request");
}

#[test]
fn catch_up_returns_exactly_the_missed_messages_with_their_data() {
    let t0 = crate::time::test_epoch();
    let log = log_with(5, t0);
    let mut p =
        Poll::new(PollConfig::default(), t0, request("/poll?ch=ticks&pos=a1:2", "").unwrap());
    let (status, etag, json) = parts(&p.check(t0, &log).unwrap());
    assert_eq!((status, etag.as_deref()), (200, Some("a1:5")));
    assert_eq!(offsets(&json), [3, 4, 5]);
    assert_eq!(json["events"][0]["data"]["n"], 3);
    assert_eq!(json["events"][0]["ep"], "a1");
    assert_eq!(json["ch"], "ticks");
}

#[test]
fn max_events_pages_the_catch_up() {
    let t0 = crate::time::test_epoch();
    let log = log_with(5, t0);
    let cfg = PollConfig { max_events: 2, ..PollConfig::default() };
    let mut p = Poll::new(cfg, t0, request("/poll?ch=t&pos=a1:1", "").unwrap());
    let (_, etag, json) = parts(&p.check(t0, &log).unwrap());
    assert_eq!((offsets(&json), etag.as_deref()), (vec![2, 3], Some("a1:3")));
}

#[test]
fn if_none_match_equal_to_the_head_is_304() {
    let t0 = crate::time::test_epoch();
    let log = log_with(3, t0);
    let req = request("/poll?ch=t", "If-None-Match: \"a1:3\"\r\n").unwrap();
    assert_eq!(req.pos, Some("a1:3".parse().unwrap()));
    let (status, etag, json) =
        parts(&Poll::new(PollConfig::default(), t0, req).check(t0, &log).unwrap());
    assert_eq!((status, etag.as_deref(), json), (304, Some("a1:3"), serde_json::Value::Null));
    // An older ETag gets the news instead.
    let req = request("/poll?ch=t", "If-None-Match: \"a1:2\"\r\n").unwrap();
    let (status, _, json) =
        parts(&Poll::new(PollConfig::default(), t0, req).check(t0, &log).unwrap());
    assert_eq!((status, offsets(&json)), (200, vec![3]));
}

#[test]
fn a_gone_position_says_recovered_false_and_gives_the_head() {
    let t0 = crate::time::test_epoch();
    let log = log_with(10, t0); // keeps 6..=10
    for pos in ["a1:2", "ff:9", "a1:11"] {
        let req = request(&format!("/poll?ch=t&pos={pos}"), "").unwrap();
        let (status, etag, json) =
            parts(&Poll::new(PollConfig::default(), t0, req).check(t0, &log).unwrap());
        assert_eq!((status, etag.as_deref()), (200, Some("a1:10")), "{pos}");
        assert_eq!(json["recovered"], false);
        assert!(offsets(&json).is_empty(), "never a partial replay");
    }
}

#[test]
fn long_poll_holds_until_a_message_or_the_timeout() {
    let t0 = crate::time::test_epoch();
    let mut log = log_with(2, t0);
    let mut p =
        Poll::new(PollConfig::default(), t0, request("/poll?ch=t&pos=a1:2&wait=1", "").unwrap());
    assert_eq!(p.check(t0, &log), None);
    assert_eq!(p.poll_timeout(), Some(t0 + Duration::from_secs(25)));
    assert_eq!(p.handle_timeout(t0 + Duration::from_secs(24), &log), None);
    let t5 = t0 + Duration::from_secs(5);
    log.append(t5, Bytes::from_static(b"{\"n\":3}"));
    let (status, _, json) = parts(&p.check(t5, &log).unwrap());
    assert_eq!((status, offsets(&json)), (200, vec![3]));
    assert_eq!(p.poll_timeout(), None);

    // Nothing arrives: answered at the deadline (304 when conditional).
    let req = request("/poll?ch=t&wait=1", "If-None-Match: \"a1:3\"\r\n").unwrap();
    let mut p = Poll::new(PollConfig::default(), t0, req);
    assert_eq!(p.check(t0, &log), None);
    let (status, _, _) = parts(&p.handle_timeout(t0 + Duration::from_secs(25), &log).unwrap());
    assert_eq!(status, 304);
    let mut p =
        Poll::new(PollConfig::default(), t0, request("/poll?ch=t&pos=a1:3&wait=1", "").unwrap());
    let (status, etag, json) =
        parts(&p.handle_timeout(t0 + Duration::from_secs(30), &log).unwrap());
    assert_eq!((status, etag.as_deref(), offsets(&json)), (200, Some("a1:3"), vec![]));
}

#[test]
fn data_that_is_not_json_is_carried_as_a_string() {
    let t0 = crate::time::test_epoch();
    let mut log = ReplayLog::new(Epoch(1), LogLimits::default());
    log.append(t0, Bytes::from_static(b"not json \"quoted\""));
    log.append(t0, Bytes::from_static(b"\xff"));
    let mut p =
        Poll::new(PollConfig::default(), t0, request("/poll?ch=a%22b&pos=1:0", "").unwrap());
    let (_, _, json) = parts(&p.check(t0, &log).unwrap());
    assert_eq!(json["ch"], "a\"b");
    assert_eq!(json["events"][0]["data"], "not json \"quoted\"");
    assert_eq!(json["events"][1]["data"], "\u{FFFD}");
}

#[test]
fn extra_headers_are_added_and_bad_ones_dropped() {
    let t0 = crate::time::test_epoch();
    let log = log_with(1, t0);
    let mut p = Poll::new(PollConfig::default(), t0, request("/poll?ch=t", "").unwrap())
        .with_headers(&[("Access-Control-Allow-Origin", "*"), ("Bad Name", "x")]);
    let resp = p.check(t0, &log).unwrap();
    let text = String::from_utf8_lossy(&resp);
    assert!(text.contains("\r\nAccess-Control-Allow-Origin: *\r\n"), "{text}");
    assert!(!text.contains("Bad Name"));
}

#[test]
fn bad_requests() {
    assert_eq!(request("/poll", ""), Err(PollError::MissingChannel));
    assert_eq!(request("/poll?ch=", ""), Err(PollError::MissingChannel));
    assert_eq!(request("/poll?ch=t&pos=nope", ""), Err(PollError::BadPosition));
    assert_eq!(request("/poll?ch=t", "If-None-Match: W/\"x\"\r\n"), Err(PollError::BadPosition));
    assert_eq!(request("/poll?ch=t", "If-None-Match: *\r\n").unwrap().pos, None);
    assert_eq!(PollError::BadPosition.status(), 400);
}
