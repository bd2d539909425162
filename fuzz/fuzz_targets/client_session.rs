//! A `ClientSession` against a scripted server: the harness is the adapter (it connects,
//! fails and ends the sockets the session asks for) and the server (raw bytes, or
//! well-formed pieces: the WebSocket 101 for the key the session sent, server envelopes in
//! text frames, close frames, HTTP heads, SSE blocks, poll and publish bodies), mixed with the
//! application's subscribes, unsubscribes, publishes, credentials and `close`, and time.
//!
//! Invariants: no panic; per channel, delivered messages move strictly forward within an
//! epoch, and a message of another epoch or at or before the cursor comes only after a
//! `RefetchNeeded` that moved the cursor there (exactly once, in order); messages only for
//! subscribed channels; every publish is answered (`Acked` / `PublishFailed`) at most once;
//! unacknowledged publishes stay within `max_queued`; `poll_timeout` never lies in the past;
//! `Closed` comes at most once and nothing follows it but the close of its sockets; bytes go
//! only to sockets reported connected and not closed; socket ids are new at each `Connect`.
#![no_main]

use std::collections::{BTreeMap, BTreeSet};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use tidewire::client::{
    ClientMsgId, ClientSession, SessionAction, SessionConfig, SessionEvent, SessionState, SockId,
    TokenPlacement, Transport,
};
use tidewire::policy::{BackoffConfig, Jitter};
use tidewire::replay::{Epoch, Position};
use tidewire::sse::ParserLimits;
use tidewire::time::{Duration, Instant};
use tidewire::ws::handshake::accept_key;

const CHANNELS: [&str; 3] = ["a", "b", "c:d"];
const EPOCHS: [u64; 3] = [0xa1, 0xb2, 0xc3];

#[derive(Arbitrary, Debug)]
struct Config {
    transports: u8,
    fallback_after: u8,
    upgrade_every: Option<u16>,
    base: u16,
    cap: u16,
    jitter: bool,
    max_attempts: Option<u8>,
    max_queued: u8,
    max_queued_bytes: u16,
    token: Option<bool>,
    query_token: bool,
    keepalive: bool,
    seed: u8,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
struct Pos {
    epoch: u8,
    offset: u8,
}

impl Pos {
    fn get(self) -> Position {
        Position {
            epoch: Epoch(EPOCHS[usize::from(self.epoch) % EPOCHS.len()]),
            offset: u64::from(self.offset % 16),
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Envelope {
    Msg { ch: u8, pos: Pos, data: u8 },
    Subscribed { ch: u8, recovered: bool, pos: Option<Pos> },
    Ack { reference: u8, pos: Option<Pos> },
    Err { reference: Option<u8>, code: u8 },
    Presence { ch: u8 },
    Pong,
    Text(String),
}

#[derive(Arbitrary, Debug)]
enum Server {
    Raw(Vec<u8>),
    /// The 101 for the key the session sent on this socket (`ok`: with the right accept).
    Accept {
        ok: bool,
        retry_after: Option<u8>,
    },
    Refuse {
        status: u8,
        retry_after: Option<u8>,
    },
    Frame(Envelope),
    Close(u16),
    Ping,
    /// An HTTP response head.
    Head {
        status: u8,
        event_stream: bool,
        length: Option<u16>,
        retry_after: Option<u8>,
    },
    SseBlock {
        id: Option<Pos>,
        event: u8,
        data: String,
    },
    SseReset {
        ch: u8,
        pos: Pos,
    },
    /// A complete poll response.
    PollBody {
        status: u8,
        ch: u8,
        pos: Pos,
        recovered: bool,
        events: Vec<(Pos, u8)>,
    },
    /// A complete publish response.
    PublishReply {
        status: u8,
        pos: Option<Pos>,
    },
}

#[derive(Arbitrary, Debug)]
enum Op {
    Connected(u8),
    Fail(u8),
    Eof(u8),
    Send(u8, Server),
    Advance(u16),
    Timeout,
    Subscribe(u8, Option<Pos>),
    Unsubscribe(u8),
    Publish(u8, u8),
    Credentials(bool),
    Close,
}

#[derive(Arbitrary, Debug)]
struct Input {
    cfg: Config,
    ops: Vec<Op>,
}

#[derive(Default)]
struct Sock {
    connected: bool,
    closed: bool,
    written: Vec<u8>,
}

/// The application's view of one channel.
struct Channel {
    cursor: Option<Position>,
}

struct Harness {
    s: ClientSession,
    now: Instant,
    socks: BTreeMap<SockId, Sock>,
    /// Sockets in the order they were asked for (ops pick from these).
    order: Vec<SockId>,
    channels: BTreeMap<String, Channel>,
    publishes: BTreeSet<ClientMsgId>,
    answered: BTreeSet<ClientMsgId>,
    closed: bool,
    max_queued: usize,
}

fn ws_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x80 | opcode];
    match payload.len() {
        n @ 0..=125 => f.push(n as u8),
        n @ 126..=0xffff => {
            f.push(126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(payload);
    f
}

fn json(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

fn status(v: u8) -> u16 {
    [200, 200, 200, 304, 401, 403, 404, 408, 429, 500, 503, 101][usize::from(v) % 12]
}

fn envelope(e: &Envelope) -> String {
    let ch = |c: &u8| json(CHANNELS[usize::from(*c) % CHANNELS.len()]);
    let pos = |p: &Option<Pos>| {
        p.map(|p| {
            let p = p.get();
            format!(",\"ep\":\"{}\",\"off\":{}", p.epoch, p.offset)
        })
        .unwrap_or_default()
    };
    match e {
        Envelope::Msg { ch: c, pos: p, data } => {
            format!(
                "{{\"op\":\"msg\",\"ch\":{}{},\"data\":{{\"v\":{data}}}}}",
                ch(c),
                pos(&Some(*p))
            )
        }
        Envelope::Subscribed { ch: c, recovered, pos: p } => {
            format!(
                "{{\"op\":\"subscribed\",\"ch\":{},\"recovered\":{recovered}{}}}",
                ch(c),
                pos(p)
            )
        }
        Envelope::Ack { reference, pos: p } => {
            format!("{{\"op\":\"ack\",\"ref\":{}{}}}", reference % 16 + 1, pos(p))
        }
        Envelope::Err { reference, code } => {
            let r = reference.map(|r| format!(",\"ref\":{}", r % 16 + 1)).unwrap_or_default();
            let code = ["forbidden", "bad_json", "too_many_channels"][usize::from(*code) % 3];
            format!("{{\"op\":\"err\"{r},\"code\":\"{code}\",\"msg\":\"no\"}}")
        }
        Envelope::Presence { ch: c } => {
            format!("{{\"op\":\"presence\",\"ch\":{},\"join\":[\"ann\"],\"leave\":[]}}", ch(c))
        }
        Envelope::Pong => "{\"op\":\"pong\"}".to_owned(),
        Envelope::Text(t) => t.clone(),
    }
}

fn http(status: u16, headers: &str, body: &str) -> Vec<u8> {
    format!("HTTP/1.1 {status} X\r\n{headers}Content-Length: {}\r\n\r\n{body}", body.len())
        .into_bytes()
}

impl Harness {
    fn sock(&self, i: u8) -> Option<SockId> {
        let open: Vec<SockId> =
            self.order.iter().copied().filter(|s| !self.socks[s].closed).collect();
        (!open.is_empty()).then(|| open[usize::from(i) % open.len()])
    }

    /// The bytes the server sends on `sock`.
    fn server_bytes(&self, sock: SockId, msg: &Server) -> Vec<u8> {
        match msg {
            Server::Raw(b) => b.clone(),
            Server::Accept { ok, retry_after } => {
                let written = String::from_utf8_lossy(&self.socks[&sock].written).into_owned();
                let key = written
                    .lines()
                    .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
                    .unwrap_or("")
                    .trim()
                    .to_owned();
                let accept = if *ok { accept_key(&key) } else { "bad".to_owned() };
                let retry =
                    retry_after.map(|r| format!("Retry-After: {r}\r\n")).unwrap_or_default();
                format!(
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                     Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n{retry}\r\n"
                )
                .into_bytes()
            }
            Server::Refuse { status: s, retry_after } => {
                let retry =
                    retry_after.map(|r| format!("Retry-After: {r}\r\n")).unwrap_or_default();
                http(status(*s), &retry, "no")
            }
            Server::Frame(e) => ws_frame(1, envelope(e).as_bytes()),
            Server::Close(code) => {
                let mut p = code.to_be_bytes().to_vec();
                p.extend_from_slice(b"bye");
                ws_frame(8, &p)
            }
            Server::Ping => ws_frame(9, b"p"),
            Server::Head { status: s, event_stream, length, retry_after } => {
                let mut h = format!("HTTP/1.1 {} X\r\n", status(*s));
                if *event_stream {
                    h.push_str("Content-Type: text/event-stream\r\n");
                }
                if let Some(n) = length {
                    h.push_str(&format!("Content-Length: {n}\r\n"));
                }
                if let Some(r) = retry_after {
                    h.push_str(&format!("Retry-After: {r}\r\n"));
                }
                h.push_str("\r\n");
                h.into_bytes()
            }
            Server::SseBlock { id, event, data } => {
                let mut b = String::new();
                if let Some(p) = id {
                    b.push_str(&format!("id: {}\n", p.get()));
                }
                match event % 4 {
                    0 => {}
                    1 => b.push_str("event: message\n"),
                    e => b.push_str(&format!("event: {}\n", CHANNELS[usize::from(e) - 1])),
                }
                if !data.is_empty() {
                    for line in data.split('\n') {
                        b.push_str(&format!("data: {line}\n"));
                    }
                }
                b.push('\n');
                b.into_bytes()
            }
            Server::SseReset { ch, pos } => {
                let ch = CHANNELS[usize::from(*ch) % CHANNELS.len()];
                let p = pos.get();
                format!(
                    "id: {p}\nevent: reset\ndata: {{\"ch\":{},\"pos\":\"{p}\",\"recovered\":false}}\n\n",
                    json(ch)
                )
                .into_bytes()
            }
            Server::PollBody { status: s, ch, pos, recovered, events } => {
                let ch = CHANNELS[usize::from(*ch) % CHANNELS.len()];
                let events: Vec<String> = events
                    .iter()
                    .map(|(p, d)| {
                        let p = p.get();
                        format!("{{\"ep\":\"{}\",\"off\":{},\"data\":{d}}}", p.epoch, p.offset)
                    })
                    .collect();
                let body = format!(
                    "{{\"ch\":{},\"pos\":\"{}\",\"recovered\":{recovered},\"events\":[{}]}}",
                    json(ch),
                    pos.get(),
                    events.join(",")
                );
                http(status(*s), "Content-Type: application/json\r\n", &body)
            }
            Server::PublishReply { status: s, pos } => {
                let body = pos.map_or("{}".to_owned(), |p| {
                    let p = p.get();
                    format!("{{\"ep\":\"{}\",\"off\":{}}}", p.epoch, p.offset)
                });
                http(status(*s), "", &body)
            }
        }
    }

    /// Drains every output and checks it.
    fn drain(&mut self) {
        while let Some((sock, bytes)) = self.s.poll_transmit() {
            let s = self.socks.get_mut(&sock).expect("bytes for a socket never asked for");
            assert!(s.connected, "bytes for {sock:?} before it connected");
            assert!(!s.closed, "bytes for {sock:?} after its Close");
            s.written.extend_from_slice(&bytes);
        }
        while let Some(action) = self.s.poll_action() {
            match action {
                SessionAction::Connect { sock, .. } => {
                    assert!(!self.closed, "a Connect after Closed");
                    assert!(!self.socks.contains_key(&sock), "{sock:?} reused");
                    assert!(self.order.last().is_none_or(|l| *l < sock));
                    self.socks.insert(sock, Sock::default());
                    self.order.push(sock);
                }
                SessionAction::Close { sock } => {
                    let s = self.socks.get_mut(&sock).expect("closing an unknown socket");
                    assert!(!s.closed, "{sock:?} closed twice");
                    s.closed = true;
                }
                _ => {}
            }
        }
        while let Some(ev) = self.s.poll_event() {
            if self.closed {
                assert!(
                    !matches!(ev, SessionEvent::State(_) | SessionEvent::Message { .. }),
                    "after Closed: {ev:?}"
                );
            }
            match ev {
                SessionEvent::State(change) if change.state == SessionState::Closed => {
                    self.closed = true;
                    assert_eq!(change.transport, None);
                }
                SessionEvent::Message { ch, pos, .. } => {
                    let c =
                        self.channels.get_mut(&ch).expect("a message for a channel not subscribed");
                    if let Some(cur) = c.cursor {
                        assert!(
                            cur.epoch == pos.epoch && pos.offset > cur.offset,
                            "{ch}: {pos} delivered after {cur} without a refetch"
                        );
                    }
                    c.cursor = Some(pos);
                }
                SessionEvent::RefetchNeeded { ch, pos } => {
                    let c =
                        self.channels.get_mut(&ch).expect("a refetch for a channel not subscribed");
                    c.cursor = Some(pos);
                }
                SessionEvent::SubscribeFailed { ch, .. } => {
                    assert!(self.channels.remove(&ch).is_some(), "failed a channel not subscribed");
                }
                SessionEvent::Acked { id, .. } | SessionEvent::PublishFailed { id, .. } => {
                    assert!(self.publishes.contains(&id), "an answer to an unknown publish");
                    assert!(self.answered.insert(id), "{id:?} answered twice");
                }
                _ => {}
            }
        }
        assert!(
            self.s.queued_publishes() <= self.max_queued,
            "{} queued",
            self.s.queued_publishes()
        );
        if let Some(t) = self.s.poll_timeout() {
            assert!(t >= self.now, "poll_timeout {t:?} before now {:?}", self.now);
        }
        if self.closed {
            assert_eq!(self.s.state(), SessionState::Closed);
            assert_eq!(self.s.queued_publishes(), 0);
        }
        // The session's positions never run ahead of what the application was told.
        for (ch, c) in &self.channels {
            if let (Some(p), Some(cur)) = (self.s.position(ch), c.cursor)
                && p.epoch == cur.epoch
            {
                assert!(p.offset >= cur.offset, "{ch}: position {p} behind delivered {cur}");
            }
        }
    }
}

fuzz_target!(|input: Input| {
    let c = &input.cfg;
    let mut cfg = SessionConfig::new("h", 80);
    cfg.transports = match c.transports % 6 {
        0 => vec![Transport::WebSocket, Transport::Sse, Transport::Polling],
        1 => vec![Transport::WebSocket],
        2 => vec![Transport::Sse],
        3 => vec![Transport::Polling],
        4 => vec![Transport::Sse, Transport::WebSocket],
        _ => vec![Transport::Polling, Transport::Sse],
    };
    cfg.fallback_after = u32::from(c.fallback_after % 4);
    cfg.upgrade_every = c.upgrade_every.map(|v| Duration::from_millis(u64::from(v)));
    cfg.backoff = BackoffConfig {
        base: Duration::from_millis(u64::from(c.base)),
        cap: Duration::from_millis(u64::from(c.cap)),
        jitter: if c.jitter { Jitter::Full } else { Jitter::None },
        max_attempts: c.max_attempts.map(u32::from),
        ..BackoffConfig::default()
    };
    cfg.max_queued = usize::from(c.max_queued % 8);
    cfg.max_queued_bytes = usize::from(c.max_queued_bytes % 512);
    cfg.token = c.token.map(|good| if good { "user:ann".to_owned() } else { "a\nb".to_owned() });
    if c.query_token {
        cfg.token_placement = TokenPlacement::Query;
    }
    cfg.ws.max_frame = 4096;
    cfg.ws.max_message = 8192;
    if !c.keepalive {
        cfg.ws.keepalive = None;
    }
    cfg.sse_limits = ParserLimits { max_line: 256, max_event: 1024, max_queued: 16 };
    cfg.max_head = 1024;
    cfg.max_body = 4096;
    cfg.rng_seed = [c.seed; 32];
    let max_queued = cfg.max_queued.max(1);
    let now = Instant::now();
    let mut h = Harness {
        s: ClientSession::new(cfg, now),
        now,
        socks: BTreeMap::new(),
        order: Vec::new(),
        channels: BTreeMap::new(),
        publishes: BTreeSet::new(),
        answered: BTreeSet::new(),
        closed: false,
        max_queued,
    };
    h.drain();
    for op in input.ops {
        match op {
            Op::Connected(i) => {
                if let Some(sock) = h.sock(i) {
                    h.socks.get_mut(&sock).unwrap().connected = true;
                    h.s.handle_connected(h.now, sock);
                }
            }
            Op::Fail(i) => {
                if let Some(sock) = h.sock(i) {
                    // The adapter drops a failed socket: nothing more is fed or written.
                    let s = h.socks.get_mut(&sock).unwrap();
                    s.closed = true;
                    h.s.handle_error(h.now, sock);
                }
            }
            Op::Eof(i) => {
                if let Some(sock) = h.sock(i) {
                    h.s.handle_eof(h.now, sock);
                }
            }
            Op::Send(i, msg) => {
                if let Some(sock) = h.sock(i)
                    && h.socks[&sock].connected
                {
                    let bytes = h.server_bytes(sock, &msg);
                    h.s.handle_read(h.now, sock, &bytes);
                }
            }
            Op::Advance(ms) => {
                h.now += Duration::from_millis(u64::from(ms) * 4);
                h.s.handle_timeout(h.now);
            }
            Op::Timeout => {
                if let Some(t) = h.s.poll_timeout() {
                    h.now = h.now.max(t);
                }
                h.s.handle_timeout(h.now);
            }
            Op::Subscribe(ch, pos) => {
                let ch = CHANNELS[usize::from(ch) % CHANNELS.len()];
                let pos = pos.map(Pos::get);
                if h.s.subscribe_from(h.now, ch, pos).is_ok() {
                    h.channels.entry(ch.to_owned()).or_insert(Channel { cursor: pos });
                } else {
                    assert!(h.closed || h.s.state() == SessionState::Closed);
                }
            }
            Op::Unsubscribe(ch) => {
                let ch = CHANNELS[usize::from(ch) % CHANNELS.len()];
                h.s.unsubscribe(h.now, ch);
                h.channels.remove(ch);
            }
            Op::Publish(ch, data) => {
                let ch = CHANNELS[usize::from(ch) % CHANNELS.len()];
                let data = ["{\"t\":1}", "2", "\"x\"", "nope", "[1,2,3,4,5,6,7,8,9,10,11,12]"]
                    [usize::from(data) % 5];
                if let Ok(id) = h.s.publish(h.now, ch, data) {
                    assert!(h.publishes.insert(id), "publish id {id:?} reused");
                }
            }
            Op::Credentials(good) => {
                h.s.set_credentials(h.now, if good { "user:bob" } else { "x\r\ny" });
            }
            Op::Close => h.s.close(h.now),
        }
        h.drain();
    }
});
