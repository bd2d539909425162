//! Raw bytes as an event stream.
//!
//! Invariants: no panic; the result (events, last event ID, retry, first error) is the same
//! whole and in chunks of any size; no event or line exceeds the limits; every event that
//! comes out re-encodes and parses back to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tidewire::sse::{ParserLimits, SseEvent, SseParser, encode};

const LIMITS: ParserLimits = ParserLimits { max_line: 256, max_event: 1024, max_queued: 4096 };

fn run(data: &[u8], chunk: usize) -> (Vec<SseEvent>, String, Option<u64>, String) {
    let mut p = SseParser::new(LIMITS);
    let mut events = Vec::new();
    let mut error = String::new();
    for part in data.chunks(chunk.max(1)) {
        let result = p.push(part);
        while let Some(e) = p.next_event() {
            assert!(e.data.len() + e.event.len() <= LIMITS.max_event + 4 * LIMITS.max_line);
            events.push(e);
        }
        if let Err(e) = result {
            error = format!("{e:?}");
            break;
        }
    }
    p.finish();
    let retry = p.retry().map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    (events, p.last_event_id().to_owned(), retry, error)
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, data)) = data.split_first() else { return };
    let whole = run(data, data.len());
    assert_eq!(whole, run(data, usize::from(selector) + 1));
    for e in &whole.0 {
        let id = (!e.id.contains(['\r', '\n', '\0'])).then_some(e.id.as_str());
        let ty = (!e.event.contains(['\r', '\n'])).then_some(e.event.as_str());
        let Ok(enc) = encode::event(id, ty, e.data.clone().into()) else { continue };
        let mut p = SseParser::new(ParserLimits::default());
        p.push(&enc.to_bytes()).unwrap();
        let back = p.next_event().expect("an encoded event parses");
        assert_eq!(back.data, e.data.replace("\r\n", "\n").replace('\r', "\n"));
        if let Some(ty) = ty {
            assert_eq!(back.event, ty);
        }
    }
});
