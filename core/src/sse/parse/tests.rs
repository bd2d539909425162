//! Every parser rule of SSE.md (1–20) as a named test. Each input is fed whole, one byte
//! at a time, and in random splits (proptest at the bottom), and must give the same result.

use proptest::prelude::*;

use super::*;

#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    events: Vec<SseEvent>,
    last_id: String,
    retry: Option<Duration>,
    error: Option<SseError>,
}

fn run(limits: ParserLimits, chunks: &[&[u8]], finish: bool) -> Outcome {
    let mut p = SseParser::new(limits);
    let mut events = Vec::new();
    for c in chunks {
        let result = p.push(c);
        while let Some(e) = p.next_event() {
            events.push(e);
        }
        if result.is_err() {
            break;
        }
    }
    if finish {
        p.finish();
    }
    Outcome { events, last_id: p.last_event_id().to_owned(), retry: p.retry(), error: p.error() }
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

/// Feeds `input` whole, byte by byte, and split at fixed awkward points; all must agree.
fn parse_with(limits: ParserLimits, input: &[u8]) -> Outcome {
    let whole = run(limits, &[input], true);
    let bytes: Vec<&[u8]> = input.chunks(1).collect();
    assert_eq!(run(limits, &bytes, true), whole, "byte by byte");
    for step in [2, 3, 7] {
        let chunks: Vec<&[u8]> = input.chunks(step).collect();
        assert_eq!(run(limits, &chunks, true), whole, "chunks of {step}");
    }
    whole
}

fn parse(input: &str) -> Outcome {
    parse_with(ParserLimits::default(), input.as_bytes())
}

fn ev(event: &str, data: &str, id: &str) -> SseEvent {
    SseEvent { event: event.into(), data: data.into(), id: id.into() }
}

fn data_of(o: &Outcome) -> Vec<&str> {
    o.events.iter().map(|e| e.data.as_str()).collect()
}

#[test]
fn rule_01_crlf_lf_and_cr_line_endings_mix() {
    let o = parse("data: a\r\n\r\ndata: b\n\ndata: c\r\rdata: d\r\n\n");
    assert_eq!(data_of(&o), ["a", "b", "c", "d"]);
}

#[test]
fn rule_02_cr_and_lf_across_chunks_are_one_line_ending() {
    let limits = ParserLimits::default();
    let o = run(limits, &[b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n"], true);
    assert_eq!(data_of(&o), ["a\nb"]);
    // Had the split CRLF counted twice, "a" would have been dispatched alone.
    assert_eq!(o, parse("data: a\r\ndata: b\r\n\r\n"));
}

#[test]
fn rule_03_only_one_bom_and_only_at_the_start() {
    assert_eq!(data_of(&parse("\u{FEFF}data: x\n\n")), ["x"]);
    // A second BOM makes the field name "\u{FEFF}data": unknown, ignored.
    assert!(parse("\u{FEFF}\u{FEFF}data: x\n\n").events.is_empty());
    // A BOM later in the stream is not stripped either.
    assert_eq!(data_of(&parse("data: a\n\n\u{FEFF}data: b\n\ndata: c\n\n")), ["a", "c"]);
    // A partial BOM followed by other bytes is data, not dropped.
    let o = parse_with(ParserLimits::default(), b"\xEF\xBBdata: x\n\n");
    assert!(o.events.is_empty()); // the name is "\u{FFFD}data" after lossy decoding
    let o = parse_with(ParserLimits::default(), b"data: \xEF\xBB\xBF\n\n");
    assert_eq!(data_of(&o), ["\u{FEFF}"]);
}

#[test]
fn rule_04_invalid_utf8_becomes_replacement_characters() {
    let o = parse_with(ParserLimits::default(), b"data: a\xFFb\xC3\n\n");
    assert_eq!(data_of(&o), ["a\u{FFFD}b\u{FFFD}"]);
    let o = parse_with(ParserLimits::default(), "data: \u{e9}\u{1F600}\n\n".as_bytes());
    assert_eq!(data_of(&o), ["\u{e9}\u{1F600}"]);
}

#[test]
fn rule_05_comments_may_be_long_and_hold_nul() {
    let mut input = String::from(": ");
    input.push_str(&"x".repeat(200_000)); // longer than max_line: comments are not buffered
    input.push_str("\0\r\ndata: after\n\n:tail\n");
    let o = parse(&input);
    assert_eq!(data_of(&o), ["after"]);
    assert_eq!(o.error, None);
}

#[test]
fn rule_06_a_line_without_colon_is_a_field_with_empty_value() {
    assert_eq!(data_of(&parse("data\ndata\ndata: x\n\n")), ["\n\nx"]);
    assert_eq!(data_of(&parse("data\n\n")), [""]);
}

#[test]
fn rule_07_strip_only_one_leading_space() {
    assert_eq!(data_of(&parse("data:  2\n\ndata:3\n\ndata:   \n\n")), [" 2", "3", "  "]);
}

#[test]
fn rule_08_field_names_are_case_sensitive_and_unknown_ignored() {
    let o = parse("Data: no\nDATA: no\nfoo: bar\ndata: yes\nEvent: x\n\n");
    assert_eq!(o.events, [ev("message", "yes", "")]);
}

#[test]
fn rule_09_empty_data_dispatches_a_block_without_data_does_not() {
    let o = parse("data:\n\nevent: x\n\n");
    assert_eq!(o.events, [ev("message", "", "")]);
}

#[test]
fn rule_10_data_lines_join_with_lf_and_one_trailing_lf_is_removed() {
    assert_eq!(data_of(&parse("data: a\ndata: b\ndata:\n\n")), ["a\nb\n"]);
}

#[test]
fn rule_11_empty_event_means_message() {
    let o = parse("event:\ndata: a\n\nevent: tick\ndata: b\n\ndata: c\n\n");
    assert_eq!(o.events, [ev("message", "a", ""), ev("tick", "b", ""), ev("message", "c", "")]);
}

#[test]
fn rule_12_id_with_nul_is_ignored_nul_in_data_is_fine() {
    let o = parse("id: 1\ndata: a\n\nid: 2\x003\ndata: b\0c\n\n");
    assert_eq!(o.events, [ev("message", "a", "1"), ev("message", "b\0c", "1")]);
}

#[test]
fn rule_13_empty_id_resets_the_last_event_id() {
    let o = parse("id: 5\ndata: a\n\nid\ndata: b\n\n");
    assert_eq!(o.events, [ev("message", "a", "5"), ev("message", "b", "")]);
    assert_eq!(o.last_id, "");
    let o = parse("id: 5\ndata: a\n\nid:\n\n");
    assert_eq!(o.last_id, "");
}

#[test]
fn rule_14_id_takes_effect_at_dispatch_not_in_an_unterminated_block() {
    let o = parse("id: 1\ndata: a\n\nid: 2\ndata: b\n");
    assert_eq!(o.events, [ev("message", "a", "1")]);
    assert_eq!(o.last_id, "1");
    // Without `finish`, the pending id is still not the last event ID.
    let o = run(ParserLimits::default(), &[b"id: 1\ndata: a\n\nid: 2\n"], false);
    assert_eq!(o.last_id, "1");
}

#[test]
fn rule_15_id_only_block_moves_the_cursor_without_an_event() {
    let o = parse("id: 1:5\n\n");
    assert!(o.events.is_empty());
    assert_eq!(o.last_id, "1:5");
}

#[test]
fn rule_16_last_event_id_persists_across_events() {
    let o = parse("id: 7\ndata: a\n\ndata: b\n\nid: 8\ndata: c\n\n");
    assert_eq!(
        o.events,
        [ev("message", "a", "7"), ev("message", "b", "7"), ev("message", "c", "8")]
    );
}

#[test]
fn rule_17_retry_digits_only_and_at_once() {
    assert_eq!(parse("retry: 02000\n").retry, Some(Duration::from_millis(2000)));
    for bad in ["1000x", "+1000", "-1", "1e3", "", " 1000", "10 00"] {
        let o = parse(&format!("retry: {bad}\n\n"));
        assert_eq!(o.retry, None, "retry {bad:?}");
    }
    // No event needed; a later valid value replaces an earlier one; overflow saturates.
    assert_eq!(parse("retry: 5\nretry: x\n").retry, Some(Duration::from_millis(5)));
    let o = parse("retry: 99999999999999999999999999\n");
    assert_eq!(o.retry, Some(Duration::from_millis(u64::MAX)));
}

#[test]
fn rule_18_an_unfinished_event_is_discarded_at_end_of_stream() {
    let o = parse("data: a\n\ndata: b");
    assert_eq!(data_of(&o), ["a"]);
    let o = parse("data: a\n\ndata: b\n");
    assert_eq!(data_of(&o), ["a"]);
}

#[test]
fn rule_19_limits_fail_the_stream_with_a_typed_error() {
    let limits = ParserLimits { max_line: 16, max_event: 40, max_queued: 2 };
    let o = parse_with(limits, b"data: 0123456789abcdef\n\n");
    assert_eq!(o.error, Some(SseError::LineTooLong(16)));
    assert!(o.events.is_empty());
    let o = parse_with(
        limits,
        b"data: 0123456789\ndata: 0123456789\ndata: 0123456789\ndata: 0123456789\n\n",
    );
    assert_eq!(o.error, Some(SseError::EventTooLarge(40)));
    // A caller that never pulls events cannot grow the queue either.
    let mut p = SseParser::new(limits);
    assert_eq!(p.push(b"data: a\n\ndata: b\n\ndata: c\n\n"), Err(SseError::TooManyQueued(2)));
    assert_eq!(p.push(b"data: d\n\n"), Err(SseError::TooManyQueued(2)));
}

#[test]
fn rule_20_parsing_is_linear() {
    // One huge line fed in tiny chunks: quadratic rescanning would take minutes here.
    let limits = ParserLimits { max_line: 8 << 20, max_event: 16 << 20, max_queued: 8 };
    let mut p = SseParser::new(limits);
    p.push(b"data: ").unwrap();
    let chunk = [b'x'; 7];
    for _ in 0..(4 << 20) / 7 {
        p.push(&chunk).unwrap();
    }
    p.push(b"\n\n").unwrap();
    assert_eq!(p.next_event().unwrap().data.len(), (4 << 20) / 7 * 7);
}

#[test]
fn resuming_keeps_the_last_event_id() {
    let mut p = SseParser::resuming(ParserLimits::default(), "3:9".into());
    p.push(b"data: a\n\n").unwrap();
    assert_eq!(p.next_event().unwrap().id, "3:9");
    p.push(b"id: 3:10\ndata: b\n").unwrap();
    p.finish();
    assert_eq!(p.last_event_id(), "3:9");
}

const CASES: &[&str] = &[
    "data: a\r\n\r\ndata: b\n\ndata: c\r\rdata: d\r\n\n",
    "\u{FEFF}data: x\n\n\u{FEFF}data: y\n\n",
    ": c\0omment\r\nid: 1\nevent: e\ndata:  x\ndata\n\nretry: 15\nid\0: z\n\n",
    "id: 1\ndata: a\n\nid: 2\x003\ndata: b\0c\n\nid:\n\nid: 9\n\ndata: tail",
    "\r\n\r\ndata\rdata\r\r\n\n\r",
];

proptest! {
    #[test]
    fn any_split_gives_the_same_result(case in 0..CASES.len(), cuts in proptest::collection::vec(any::<usize>(), 0..12)) {
        let input = CASES[case].as_bytes();
        let whole = run(ParserLimits::default(), &[input], true);
        prop_assert_eq!(run(ParserLimits::default(), &split_at(input, &cuts), true), whole);
    }

    #[test]
    fn arbitrary_bytes_split_anywhere_agree(input in proptest::collection::vec(prop_oneof![
        Just(b'\r'), Just(b'\n'), Just(b':'), Just(b' '), Just(0xEF), Just(0xBB), Just(0xBF),
        Just(b'd'), Just(b'a'), Just(b't'), Just(b'i'), any::<u8>()], 0..200),
        cuts in proptest::collection::vec(any::<usize>(), 0..12)) {
        let limits = ParserLimits { max_line: 64, max_event: 128, max_queued: 1024 };
        let whole = run(limits, &[&input], true);
        prop_assert_eq!(run(limits, &split_at(&input, &cuts), true), whole);
    }
}
