//! An `SseClient` (EventSource semantics) behind a scripted adapter: arbitrary response
//! bytes (a head, then an event stream, in chunks of any size), canned heads and event
//! blocks, end of body, network errors, time passing and timers firing, `close`, and an
//! application that pulls events only now and then.
//!
//! The adapter parses each response head with `tidewire::http::ResponseParser` and reports
//! the status, `Content-Type` and `Retry-After`; a malformed head is a network error. A
//! reference `SseParser` reads the same body bytes.
//!
//! Invariants: no panic; the events and the last event ID equal the reference parser's
//! (the ID changes only when a block is dispatched, survives reconnections, and is what
//! each `Connect` sends, never holding CR, LF or NUL); the reconnection time follows the
//! latest `retry:` (at most `max_hint`); a reconnection is scheduled at least the
//! reconnection time and at most `max(cap, max_hint)` ahead, never in the past;
//! `poll_timeout` never lies in the past; events are dispatched only while `Open`; unpulled
//! events stay below `2 × max_queued`; `Closed` comes once, last, and leaves no timer.
#![no_main]

use std::collections::VecDeque;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use tidewire::http::ResponseParser;
use tidewire::policy::{BackoffConfig, Jitter, parse_retry_after};
use tidewire::sse::{
    ParserLimits, SseAction, SseClient, SseClientConfig, SseClientEvent, SseEvent, SseParser,
    SseState,
};
use tidewire::time::{Duration, Instant};

#[derive(Arbitrary, Debug)]
struct Config {
    max_line: u8,
    max_event: u8,
    max_queued: u8,
    idle_timeout: Option<u16>,
    default_retry: u16,
    retry_5xx: bool,
    base: u16,
    cap: u16,
    jitter: bool,
    max_attempts: Option<u8>,
    max_hint: u16,
    healthy_after: u16,
}

#[derive(Arbitrary, Debug)]
enum Op {
    /// Raw bytes of the current response: head first, then body.
    Bytes(Vec<u8>),
    /// A well-formed head.
    Head {
        status: u8,
        content_type: u8,
        retry_after: Option<u16>,
    },
    /// A well-formed event block.
    Block {
        id: Option<String>,
        event: Option<u8>,
        data: String,
        retry: Option<u16>,
    },
    Eof,
    Error,
    Advance(u16),
    /// Jump to `poll_timeout` and fire it.
    Timeout,
    Close,
    /// The application pulls this many events.
    Pull(u8),
}

#[derive(Arbitrary, Debug)]
struct Input {
    cfg: Config,
    ops: Vec<Op>,
}

/// The adapter's side of the current request.
#[derive(Default)]
struct Request {
    /// A `Connect` was performed and the request is not over.
    live: bool,
    head: Vec<u8>,
    head_done: bool,
}

struct Harness {
    client: SseClient,
    cfg: SseClientConfig,
    now: Instant,
    req: Request,
    /// The reference parser of the open stream.
    reference: Option<SseParser>,
    last_id: String,
    reconnection: Duration,
    expected: VecDeque<SseEvent>,
    /// Events in the client not yet pulled.
    unpulled: usize,
    closed: bool,
    /// The state as seen through the pulled events.
    seen_state: SseState,
}

impl Harness {
    fn head(&mut self, status: u16, content_type: Option<&str>, retry_after: Option<Duration>) {
        let was = self.client.state();
        self.client.handle_response(self.now, status, content_type, retry_after);
        if was == SseState::Connecting && self.client.state() == SseState::Open {
            self.reference = Some(SseParser::resuming(self.cfg.limits, self.last_id.clone()));
        }
    }

    fn read(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let open = self.client.state() == SseState::Open;
        self.client.handle_read(self.now, data);
        if !open {
            return;
        }
        let Some(p) = &mut self.reference else { return };
        if self.unpulled >= self.cfg.limits.max_queued {
            self.reference = None;
            return;
        }
        let result = p.push(data);
        if let Some(r) = p.retry() {
            self.reconnection = r.min(self.cfg.backoff.max_hint);
        }
        self.last_id = p.last_event_id().to_owned();
        while let Some(e) = p.next_event() {
            self.expected.push_back(e);
            self.unpulled += 1;
        }
        if result.is_err() {
            self.reference = None;
        }
    }

    /// Raw response bytes, through the adapter's head parser.
    fn bytes(&mut self, data: &[u8]) {
        if !self.req.live {
            return;
        }
        if self.req.head_done {
            return self.read(data);
        }
        self.req.head.extend_from_slice(data);
        match ResponseParser::new(1024).parse(&self.req.head) {
            Ok(None) => {}
            Ok(Some((resp, n))) => {
                self.req.head_done = true;
                let retry_after =
                    resp.header("retry-after").and_then(|v| parse_retry_after(v, 1_000_000_000));
                self.head(resp.status(), resp.header("content-type"), retry_after);
                let rest = self.req.head.split_off(n);
                self.read(&rest);
            }
            Err(_) => {
                self.req.live = false;
                self.client.handle_error(self.now);
            }
        }
    }

    fn end(&mut self, eof: bool) {
        if !self.req.live {
            return;
        }
        self.req.live = false;
        if eof {
            self.client.handle_eof(self.now);
        } else {
            self.client.handle_error(self.now);
        }
    }

    fn pull(&mut self, n: usize) {
        let mut events = 0;
        while events < n {
            let Some(ev) = self.client.poll_event() else { break };
            assert!(!self.closed, "event after Closed: {ev:?}");
            match ev {
                SseClientEvent::State(change) => {
                    self.seen_state = change.state;
                    if change.state == SseState::Closed {
                        self.closed = true;
                        assert_eq!(change.next_retry, None);
                    }
                }
                SseClientEvent::Event(e) => {
                    events += 1;
                    assert_eq!(self.seen_state, SseState::Open, "an event while not open");
                    let want = self.expected.pop_front().expect("an event the parser did not see");
                    assert_eq!(e, want);
                    self.unpulled -= 1;
                }
                _ => {}
            }
        }
    }

    /// After every operation.
    fn check(&mut self, state_before: SseState) {
        while let Some(action) = self.client.poll_action() {
            match action {
                SseAction::Connect { last_event_id } => {
                    assert!(!self.req.live, "a Connect while a request is live");
                    let want = (!self.last_id.is_empty()).then(|| self.last_id.clone());
                    assert_eq!(last_event_id, want);
                    if let Some(id) = &last_event_id {
                        assert!(!id.contains(['\r', '\n', '\0']), "Last-Event-ID {id:?}");
                    }
                    self.req = Request { live: true, ..Request::default() };
                }
                SseAction::Disconnect => self.req.live = false,
                _ => {}
            }
        }
        let state = self.client.state();
        if state != SseState::Open {
            self.reference = None;
        }
        assert_eq!(self.client.last_event_id(), self.last_id);
        assert_eq!(self.client.reconnection_time(), self.reconnection);
        assert!(
            self.unpulled < 2 * self.cfg.limits.max_queued.max(1),
            "{} unpulled",
            self.unpulled
        );
        if let Some(t) = self.client.poll_timeout() {
            assert!(t >= self.now, "poll_timeout {t:?} before now {:?}", self.now);
        }
        match state {
            SseState::Reconnecting => {
                let at = self.client.next_retry_at().expect("reconnecting without a retry time");
                if state_before != SseState::Reconnecting {
                    let b = &self.cfg.backoff;
                    assert!(at >= self.now + self.reconnection, "retry sooner than `retry`");
                    assert!(at <= self.now + b.cap.max(b.max_hint), "retry too late");
                }
            }
            SseState::Closed => {
                assert_eq!(self.client.poll_timeout(), None);
                assert!(!self.req.live || state_before == SseState::Closed);
            }
            _ => assert_eq!(self.client.next_retry_at(), None),
        }
    }
}

fn ms(v: u16) -> Duration {
    Duration::from_millis(u64::from(v))
}

fuzz_target!(|input: Input| {
    let c = &input.cfg;
    let cfg = SseClientConfig {
        backoff: BackoffConfig {
            base: ms(c.base),
            cap: ms(c.cap),
            jitter: if c.jitter { Jitter::Full } else { Jitter::None },
            healthy_after: ms(c.healthy_after),
            max_attempts: c.max_attempts.map(u32::from),
            max_hint: ms(c.max_hint) * 4,
            ..BackoffConfig::default()
        },
        default_retry: ms(c.default_retry),
        idle_timeout: c.idle_timeout.map(ms),
        limits: ParserLimits {
            max_line: usize::from(c.max_line),
            max_event: usize::from(c.max_event),
            max_queued: usize::from(c.max_queued % 16),
        },
        retry_5xx: c.retry_5xx,
        rng_seed: [7; 32],
    };
    let now = Instant::now();
    let mut h = Harness {
        client: SseClient::new(cfg, now),
        cfg,
        now,
        req: Request::default(),
        reference: None,
        last_id: String::new(),
        reconnection: cfg.default_retry.min(cfg.backoff.max_hint),
        expected: VecDeque::new(),
        unpulled: 0,
        closed: false,
        seen_state: SseState::Connecting,
    };
    h.check(SseState::Connecting);
    for op in input.ops {
        let before = h.client.state();
        match op {
            Op::Bytes(b) => h.bytes(&b),
            Op::Head { status, content_type, retry_after } => {
                if h.req.live && !h.req.head_done {
                    h.req.head_done = true;
                    let status = [200, 200, 200, 204, 301, 404, 500, 503][usize::from(status % 8)];
                    let ct = [
                        Some("text/event-stream"),
                        Some("Text/Event-Stream; charset=utf-8"),
                        Some(" text/event-stream ;x=y"),
                        Some("text/plain"),
                        None,
                    ][usize::from(content_type % 5)];
                    h.head(status, ct, retry_after.map(ms));
                }
            }
            Op::Block { id, event, data, retry } => {
                let mut b = String::new();
                if let Some(r) = retry {
                    b.push_str(&format!("retry: {r}\n"));
                }
                if let Some(id) = id {
                    b.push_str(&format!("id: {id}\n"));
                }
                if let Some(e) = event {
                    b.push_str(&format!("event: e{e}\n"));
                }
                for line in data.split('\n') {
                    b.push_str(&format!("data: {line}\n"));
                }
                b.push('\n');
                h.bytes(b.as_bytes());
            }
            Op::Eof => h.end(true),
            Op::Error => h.end(false),
            Op::Advance(v) => {
                // The adapter wakes up late, or for something else: it fires what is due.
                h.now += ms(v);
                h.client.handle_timeout(h.now);
            }
            Op::Timeout => {
                if let Some(t) = h.client.poll_timeout() {
                    h.now = h.now.max(t);
                }
                h.client.handle_timeout(h.now);
            }
            Op::Close => h.client.close(h.now),
            Op::Pull(n) => h.pull(usize::from(n)),
        }
        h.check(before);
    }
    h.pull(usize::MAX);
    assert!(h.expected.is_empty(), "events the client never gave: {:?}", h.expected);
});
