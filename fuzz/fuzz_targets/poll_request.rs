//! Polling requests (raw request heads, or queries built from arbitrary parts) answered by
//! `tidewire::poll::Poll` from a `ReplayLog` that grows, trims and ages while requests are
//! held.
//!
//! Invariants: no panic; every answer is one complete HTTP response whose `Content-Length`
//! is its body; a `200` body is JSON with at most `max_events` events, in consecutive
//! offsets of the log's epoch, starting right after the request's position, each carrying
//! the logged data (as JSON, or as a JSON string when it is not JSON); its `pos` (also the
//! `ETag`) is the last event's, or the request's when nothing was missed, so a cursor only
//! moves forward within an epoch; a position the log cannot serve gets `recovered: false`,
//! no events and the head; `304` only for a conditional request at the head; a request is
//! answered once, a long poll is held only while there is nothing new and until its
//! deadline, and `poll_timeout` is `None` once answered.
#![no_main]

use std::collections::HashMap;

use arbitrary::Arbitrary;
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use serde_json::value::RawValue;
use tidewire::http::{RequestParser, ResponseParser};
use tidewire::poll::{Poll, PollConfig, PollRequest};
use tidewire::replay::{Epoch, LogLimits, Position, ReplayLog};
use tidewire::time::{Duration, Instant};

#[derive(Arbitrary, Debug)]
enum PosPart {
    /// `back` offsets before the log's head, in its epoch.
    Head(u8),
    /// Past the head.
    Ahead(u8),
    /// Any position.
    Any(u64, u64),
    /// Any text.
    Text(String),
}

#[derive(Arbitrary, Debug)]
enum Data {
    Json(u16),
    Text(String),
    Bytes(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
enum Op {
    /// A raw request head.
    Raw(Vec<u8>),
    /// `GET /poll?ch=…&pos=…&wait=…` with an optional `If-None-Match`.
    Query {
        ch: String,
        pos: Option<PosPart>,
        etag: Option<PosPart>,
        wait: u8,
    },
    Append(Data),
    /// Re-check a held request (as after a publish).
    Check(u8),
    Advance(u16),
}

#[derive(Arbitrary, Debug)]
struct Input {
    epoch: u64,
    long_poll: u16,
    max_events: u8,
    max_count: u8,
    max_bytes: u16,
    max_age: u16,
    ops: Vec<Op>,
}

fn ms(v: u16) -> Duration {
    Duration::from_millis(u64::from(v))
}

fn pos_text(p: &PosPart, log: &ReplayLog) -> String {
    let head = log.head();
    match p {
        PosPart::Head(back) => {
            Position { epoch: head.epoch, offset: head.offset.saturating_sub(u64::from(*back)) }
                .to_string()
        }
        PosPart::Ahead(n) => {
            Position { epoch: head.epoch, offset: head.offset + 1 + u64::from(*n) }.to_string()
        }
        PosPart::Any(e, o) => Position { epoch: Epoch(*e), offset: *o }.to_string(),
        PosPart::Text(t) => t.clone(),
    }
}

/// Percent-encodes a query value.
fn escape(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b':' {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// What a log entry looks like in a poll body.
fn embedded(data: &[u8]) -> String {
    match std::str::from_utf8(data).ok().and_then(|t| RawValue::from_string(t.to_owned()).ok()) {
        Some(raw) => raw.get().to_owned(),
        None => serde_json::to_string(&String::from_utf8_lossy(data)).unwrap(),
    }
}

type Object = HashMap<String, Box<RawValue>>;

fn field<T: serde::de::DeserializeOwned>(o: &Object, name: &str) -> T {
    serde_json::from_str(o.get(name).unwrap_or_else(|| panic!("no `{name}`")).get())
        .unwrap_or_else(|e| panic!("`{name}`: {e}"))
}

struct Held {
    poll: Poll,
    arrived: Instant,
}

/// Checks one answer to `req` against the log it was answered from.
fn check_answer(answer: &Bytes, req: &PollRequest, log: &ReplayLog, max_events: usize) {
    let (resp, n) = ResponseParser::new(4096)
        .parse(answer)
        .expect("a valid response head")
        .expect("a complete response head");
    let body = &answer[n..];
    let length: usize = resp.header("content-length").map_or(0, |v| v.parse().unwrap());
    assert_eq!(length, body.len(), "Content-Length");
    let etag = resp.header("etag").expect("an ETag");
    let head = log.head();
    if resp.status() == 304 {
        assert!(req.conditional, "304 for an unconditional request");
        assert_eq!(Some(head), req.pos, "304 but the log moved");
        assert_eq!(etag, format!("\"{head}\""));
        return;
    }
    assert_eq!(resp.status(), 200);
    let o: Object = serde_json::from_slice(body).expect("a JSON object");
    assert_eq!(field::<String>(&o, "ch"), req.channel);
    let pos: Position = field::<String>(&o, "pos").parse().expect("pos is a position");
    assert_eq!(etag, format!("\"{pos}\""));
    let recovered: bool = field(&o, "recovered");
    let events: Vec<Object> = field(&o, "events");
    assert!(events.len() <= max_events, "{} events, max {max_events}", events.len());
    let Some(asked) = req.pos else {
        assert!(recovered && events.is_empty() && pos == head, "a first poll gets the head");
        return;
    };
    let Ok(missed) = log.since(asked) else {
        assert!(!recovered && events.is_empty() && pos == head, "gone: no events, the head");
        return;
    };
    assert!(recovered);
    assert_eq!(pos.epoch, asked.epoch);
    assert!(pos.offset >= asked.offset, "cursor moved back: {asked} -> {pos}");
    let want: Vec<(Position, &Bytes)> = missed.take(max_events).collect();
    assert_eq!(events.len(), want.len());
    for (e, (p, data)) in events.iter().zip(&want) {
        assert_eq!(field::<String>(e, "ep"), p.epoch.to_string());
        assert_eq!(field::<u64>(e, "off"), p.offset);
        assert_eq!(e.get("data").expect("data").get(), embedded(data));
    }
    assert_eq!(pos, want.last().map_or(asked, |(p, _)| *p));
}

fuzz_target!(|input: Input| {
    let t0 = Instant::now();
    let mut now = t0;
    let cfg = PollConfig {
        long_poll: ms(input.long_poll),
        max_events: usize::from(input.max_events % 8),
    };
    let limits = LogLimits {
        max_count: usize::from(input.max_count % 32),
        max_bytes: usize::from(input.max_bytes),
        max_age: ms(input.max_age) * 16,
    };
    let mut log = ReplayLog::new(Epoch(input.epoch), limits);
    let mut held: Vec<Held> = Vec::new();
    let mut counter: u16 = 0;

    let answer = |h: &mut Held, a: Option<Bytes>, log: &ReplayLog, now: Instant, timeout: bool| {
        let Some(a) = a else {
            // Held: only a long poll with nothing new, before its deadline.
            if h.poll.is_answered() {
                return;
            }
            let req = h.poll.request();
            assert!(req.wait, "a short poll was not answered");
            assert!(timeout || now < h.arrived + cfg.long_poll, "held past its deadline");
            let pos = req.pos.expect("a first poll is answered at once");
            assert!(log.since(pos).is_ok_and(|m| m.len() == 0), "held with news");
            assert!(h.poll.poll_timeout().is_some_and(|t| t == h.arrived + cfg.long_poll));
            return;
        };
        assert!(h.poll.is_answered());
        assert_eq!(h.poll.poll_timeout(), None);
        check_answer(&a, h.poll.request(), log, cfg.max_events);
    };

    for op in input.ops {
        let request = match op {
            Op::Raw(head) => match RequestParser::new(2048).parse(&head) {
                Ok(Some((req, _))) => Some(req),
                _ => None,
            },
            Op::Query { ch, pos, etag, wait } => {
                let mut head = format!("GET /poll?ch={}", escape(&ch));
                if let Some(p) = pos {
                    head.push_str(&format!("&pos={}", escape(&pos_text(&p, &log))));
                }
                head.push_str(["", "&wait=1", "&wait=true", "&wait=0"][usize::from(wait % 4)]);
                head.push_str(" HTTP/1.1\r\nHost: x\r\n");
                if let Some(e) = etag {
                    head.push_str(&format!("If-None-Match: \"{}\"\r\n", pos_text(&e, &log)));
                }
                head.push_str("\r\n");
                match RequestParser::new(4096).parse(head.as_bytes()) {
                    Ok(Some((req, _))) => Some(req),
                    _ => None,
                }
            }
            Op::Append(data) => {
                counter += 1;
                let data = match data {
                    Data::Json(n) => Bytes::from(format!("{{\"n\":{n},\"i\":{counter}}}")),
                    Data::Text(t) => Bytes::from(t),
                    Data::Bytes(b) => Bytes::from(b),
                };
                let before = log.head();
                let pos = log.append(now, data);
                assert_eq!(pos.epoch, before.epoch);
                assert_eq!(pos.offset, before.offset + 1, "offsets grow by one");
                for h in &mut held {
                    let a = h.poll.check(now, &log);
                    answer(h, a, &log, now, false);
                }
                None
            }
            Op::Check(i) => {
                if !held.is_empty() {
                    let i = usize::from(i) % held.len();
                    let a = held[i].poll.check(now, &log);
                    answer(&mut held[i], a, &log, now, false);
                }
                None
            }
            Op::Advance(v) => {
                now += ms(v) * 8;
                log.handle_timeout(now);
                assert!(log.len() <= limits.max_count.max(1) || log.is_empty());
                for h in &mut held {
                    let due = h.poll.poll_timeout().is_some_and(|t| t <= now);
                    let a = h.poll.handle_timeout(now, &log);
                    if !due {
                        assert!(a.is_none(), "answered by a timeout before its deadline");
                    } else {
                        assert!(a.is_some(), "a due long poll was not answered");
                        answer(h, a, &log, now, true);
                    }
                }
                None
            }
        };
        if let Some(req) = request {
            let Ok(preq) = PollRequest::from_request(&req) else { continue };
            assert!(!preq.channel.is_empty());
            if preq.conditional {
                assert!(preq.pos.is_some());
            }
            let mut h = Held { poll: Poll::new(cfg, now, preq), arrived: now };
            let a = h.poll.check(now, &log);
            answer(&mut h, a, &log, now, false);
            // Answered requests are checked once more: nothing comes twice.
            if h.poll.is_answered() {
                assert_eq!(h.poll.check(now, &log), None);
            }
            held.push(h);
        }
        held.retain(|h| !h.poll.is_answered());
        if held.len() > 16 {
            held.remove(0);
        }
    }
});
