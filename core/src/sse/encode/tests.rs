//! SSE.md 25–30, and the encode → parse round trip of arbitrary events.

use proptest::prelude::*;

use super::*;
use crate::sse::parse::{ParserLimits, SseEvent, SseParser};

fn text(e: &Encoded) -> String {
    String::from_utf8(e.to_bytes().to_vec()).unwrap()
}

#[test]
fn rule_25_data_is_split_on_every_line_break_and_never_omitted() {
    let e = event(None, None, "a\r\nb\nc\rd".into()).unwrap();
    assert_eq!(text(&e), "data: a\ndata: b\ndata: c\ndata: d\n\n");
    assert_eq!(text(&event(None, None, "".into()).unwrap()), "data: \n\n");
    assert_eq!(text(&event(None, None, "x\n".into()).unwrap()), "data: x\ndata: \n\n");
}

#[test]
fn rule_26_line_breaks_in_event_or_id_and_nul_in_id_are_typed_errors() {
    assert_eq!(event(Some("1\n2"), None, "".into()), Err(EncodeError::LineBreak("id")));
    assert_eq!(event(Some("1\r"), None, "".into()), Err(EncodeError::LineBreak("id")));
    assert_eq!(event(None, Some("a\rb"), "".into()), Err(EncodeError::LineBreak("event")));
    assert_eq!(event(Some("1\x002"), None, "".into()), Err(EncodeError::NulInId));
    assert_eq!(id_only("7\n"), Err(EncodeError::LineBreak("id")));
    assert_eq!(comment("a\nb"), Err(EncodeError::LineBreak("comment")));
}

#[test]
fn rule_27_a_leading_space_survives() {
    let e = event(Some(" 1"), Some(" t"), " x".into()).unwrap();
    let mut p = SseParser::new(ParserLimits::default());
    p.push(&e.to_bytes()).unwrap();
    assert_eq!(
        p.next_event().unwrap(),
        SseEvent { event: " t".into(), data: " x".into(), id: " 1".into() }
    );
}

#[test]
fn rule_28_retry_in_milliseconds() {
    assert_eq!(retry(Duration::from_millis(2500)), "retry: 2500\n");
    assert_eq!(retry(Duration::from_micros(1999)), "retry: 1\n");
    let mut p = SseParser::new(ParserLimits::default());
    p.push(&retry(Duration::from_secs(3))).unwrap();
    assert_eq!(p.retry(), Some(Duration::from_secs(3)));
}

#[test]
fn rule_29_keepalive_comment_is_ignored_by_the_parser() {
    assert_eq!(comment("").unwrap(), ":\n");
    assert_eq!(comment("keep-alive").unwrap(), ": keep-alive\n");
    let mut p = SseParser::new(ParserLimits::default());
    p.push(&comment("keep-alive").unwrap()).unwrap();
    p.push(b"\n").unwrap();
    assert_eq!(p.next_event(), None);
}

#[test]
fn rule_30_response_headers() {
    assert!(RESPONSE_HEADERS.contains(&("Content-Type", "text/event-stream")));
    assert!(RESPONSE_HEADERS.contains(&("Cache-Control", "no-cache")));
    assert!(RESPONSE_HEADERS.contains(&("X-Accel-Buffering", "no")));
}

#[test]
fn a_payload_without_line_breaks_is_shared_not_copied() {
    let payload = Utf8Bytes::from(String::from("{\"n\":1}"));
    let shared = payload.as_bytes().clone();
    let e = event(Some("1:1"), None, payload).unwrap();
    let chunks: Vec<Bytes> = e.chunks().collect();
    assert_eq!(chunks.len(), 3);
    assert_eq!(chunks[1].as_ptr(), shared.as_ptr());
    assert_eq!(e.len(), text(&e).len());
}

#[test]
fn id_only_moves_the_cursor() {
    let mut p = SseParser::new(ParserLimits::default());
    p.push(&id_only("4:2").unwrap()).unwrap();
    assert_eq!(p.next_event(), None);
    assert_eq!(p.last_event_id(), "4:2");
}

fn normalize(data: &str) -> String {
    data.replace("\r\n", "\n").replace('\r', "\n")
}

proptest! {
    #[test]
    fn encode_then_parse_gives_the_same_events(
        events in proptest::collection::vec((
            proptest::option::of("[^\r\n\0]{0,12}"),
            proptest::option::of("[^\r\n]{0,12}"),
            prop_oneof![any::<String>(), "(\r\n|\r|\n|x|\u{e9}| ){0,16}"],
        ), 0..8),
        cuts in proptest::collection::vec(any::<usize>(), 0..8),
    ) {
        let mut stream = Vec::new();
        let mut expected = Vec::new();
        let mut last_id = String::new();
        for (id, ty, data) in &events {
            let e = event(id.as_deref(), ty.as_deref(), data.clone().into()).unwrap();
            for c in e.chunks() {
                stream.extend_from_slice(&c);
            }
            if let Some(id) = id {
                last_id.clone_from(id);
            }
            let ty = ty.clone().filter(|t| !t.is_empty()).unwrap_or_else(|| "message".into());
            expected.push(SseEvent { event: ty, data: normalize(data), id: last_id.clone() });
        }
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
        cuts.sort_unstable();
        let mut p = SseParser::new(ParserLimits::default());
        let mut got = Vec::new();
        let mut at = 0;
        for c in cuts.into_iter().chain([stream.len()]) {
            p.push(&stream[at..c]).unwrap();
            at = c;
            while let Some(e) = p.next_event() {
                got.push(e);
            }
        }
        prop_assert_eq!(got, expected);
    }
}
