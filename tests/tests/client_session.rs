//! `ClientSession` against a scripted in-memory server that speaks the real bytes: a
//! server-side `WsConnection` with the envelope protocol, `SseStream`s resumed from a
//! `ReplayLog`, `Poll` responses, and `POST /api/publish`. Time is virtual: one
//! `Instant::now()` per test, then jumps to the next deadline.

use std::collections::{HashMap, HashSet, VecDeque};

use bytes::Bytes;
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use tidewire::client::{
    ClientSession, PublishError, Reason, SessionAction, SessionConfig, SessionEvent, SessionState,
    SockId, StateChange, SubscribeError, Transport,
};
use tidewire::http::{Request, RequestParser, response};
use tidewire::hub::envelope::ClientMessage;
use tidewire::policy::Jitter;
use tidewire::poll::{Poll, PollConfig, PollRequest};
use tidewire::replay::{Epoch, LogLimits, Position, ReplayLog};
use tidewire::sse::{SseStream, SseStreamConfig};
use tidewire::ws::{CloseCode, Message, WsConfig, WsConnection, WsEvent};
use tidewire::{Duration, Instant, Machine, Transmit};

// ---------------------------------------------------------------------------------------
// The fake server

/// How the server answers one kind of request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Gate {
    Open,
    /// Answer with this status (e.g. a proxy's 502) and close.
    Status(u16),
}

enum Conn {
    Head(Vec<u8>),
    Ws { ws: Box<WsConnection>, subs: HashSet<String> },
    Sse { stream: Box<SseStream>, ch: String },
    Poll { poll: Poll, ch: String },
    Publish { req: Request, body: Vec<u8>, len: usize },
    Reply,
}

struct ServerConn {
    conn: Conn,
    out: VecDeque<Bytes>,
    eof: bool,
}

struct Server {
    logs: HashMap<String, ReplayLog>,
    next_epoch: u64,
    /// Client message ids already published, with their position (the hub's dedup).
    ids: HashMap<String, Position>,
    /// Every append: channel, data, client id.
    published: Vec<(String, String, Option<String>)>,
    /// Every `pub` frame's client id, as received (resends included).
    pub_ids_seen: Vec<String>,
    /// Every `sub` frame: channel and position.
    subs_seen: Vec<(String, Option<Position>)>,
    /// Request paths seen (HTTP and upgrades).
    paths: Vec<String>,
    ws_gate: Gate,
    sse_gate: Gate,
    poll_gate: Gate,
    down: bool,
    token: Option<String>,
    forbidden: HashSet<String>,
    /// Drop the WebSocket right after the next `pub` arrives, before acknowledging it.
    drop_after_pub: bool,
    conns: HashMap<SockId, ServerConn>,
}

fn ws_cfg() -> WsConfig {
    let mut c = WsConfig::default();
    c.keepalive = None;
    c
}

impl Server {
    fn new() -> Self {
        Self {
            logs: HashMap::new(),
            next_epoch: 0xa1,
            ids: HashMap::new(),
            published: Vec::new(),
            pub_ids_seen: Vec::new(),
            subs_seen: Vec::new(),
            paths: Vec::new(),
            ws_gate: Gate::Open,
            sse_gate: Gate::Open,
            poll_gate: Gate::Open,
            down: false,
            token: None,
            forbidden: HashSet::new(),
            drop_after_pub: false,
            conns: HashMap::new(),
        }
    }

    fn log(&mut self, ch: &str) -> &mut ReplayLog {
        let epoch = self.next_epoch;
        self.logs
            .entry(ch.to_owned())
            .or_insert_with(|| ReplayLog::new(Epoch(epoch), LogLimits::default()))
    }

    /// Appends (unless `id` was seen) and broadcasts; returns the position.
    fn publish(&mut self, now: Instant, ch: &str, data: &str, id: Option<String>) -> Position {
        if let Some(pos) = id.as_ref().and_then(|i| self.ids.get(i)) {
            return *pos;
        }
        let pos = self.log(ch).append(now, Bytes::from(data.to_owned()));
        if let Some(i) = &id {
            self.ids.insert(i.clone(), pos);
        }
        self.published.push((ch.into(), data.into(), id));
        let frame = msg_frame(ch, pos, data);
        let sse = SseStream::encode(pos, Some(ch), &Bytes::from(data.to_owned())).unwrap();
        let log = self.logs.get(ch).unwrap();
        for c in self.conns.values_mut() {
            match &mut c.conn {
                Conn::Ws { ws, subs } if subs.contains(ch) => {
                    ws.send(now, Message::text(frame.clone())).unwrap();
                }
                Conn::Sse { stream, ch: c2 } if c2 == ch => {
                    stream.send_event(now, pos, sse.clone(), None);
                }
                Conn::Poll { poll, ch: c2 } if c2 == ch => {
                    if let Some(resp) = poll.check(now, log) {
                        c.out.push_back(resp);
                        c.eof = true;
                    }
                }
                _ => {}
            }
        }
        pos
    }

    /// Sends a raw text frame on every WebSocket.
    fn ws_broadcast(&mut self, now: Instant, text: &str) {
        for c in self.conns.values_mut() {
            if let Conn::Ws { ws, .. } = &mut c.conn {
                ws.send(now, Message::text(text.to_owned())).unwrap();
            }
        }
    }

    fn close_ws(&mut self, now: Instant, code: CloseCode) {
        for c in self.conns.values_mut() {
            if let Conn::Ws { ws, .. } = &mut c.conn {
                ws.close(now, code, "").unwrap();
            }
        }
    }

    fn reply(c: &mut ServerConn, status: u16, body: &str) {
        let ty = [("Content-Type", "application/json")];
        c.out.push_back(response(status, &ty, body.as_bytes()).unwrap());
        c.eof = true;
        c.conn = Conn::Reply;
    }

    fn read(&mut self, now: Instant, sock: SockId, data: &[u8]) {
        let Some(mut c) = self.conns.remove(&sock) else { return };
        match &mut c.conn {
            Conn::Head(buf) => {
                buf.extend_from_slice(data);
                let buf = std::mem::take(buf);
                match RequestParser::new(16 << 10).parse(&buf).unwrap() {
                    None => c.conn = Conn::Head(buf),
                    Some((req, n)) => self.route(now, &mut c, req, &buf[n..]),
                }
            }
            Conn::Ws { ws, .. } => ws.handle_read(now, data),
            Conn::Publish { body, .. } => body.extend_from_slice(data),
            _ => {}
        }
        self.finish_publish(now, &mut c);
        self.ws_events(now, &mut c);
        self.conns.insert(sock, c);
    }

    fn route(&mut self, now: Instant, c: &mut ServerConn, req: Request, rest: &[u8]) {
        self.paths.push(req.path().to_owned());
        if let Some(t) = &self.token
            && req.token().as_deref() != Some(t.as_str())
        {
            return Self::reply(c, 401, "{}");
        }
        let ch = req.query_param("ch").unwrap_or_default();
        match req.path_only() {
            "/ws" => match self.ws_gate {
                Gate::Status(s) => Self::reply(c, s, "{}"),
                Gate::Open => {
                    let mut ws = WsConnection::server_for(ws_cfg(), now, req);
                    ws.handle_read(now, rest);
                    c.conn = Conn::Ws { ws: Box::new(ws), subs: HashSet::new() };
                }
            },
            "/events" => {
                if let Gate::Status(s) = self.sse_gate {
                    return Self::reply(c, s, "{}");
                }
                if self.forbidden.contains(&ch) {
                    return Self::reply(c, 403, "{}");
                }
                let last = req.last_event_id().and_then(|id| id.parse::<Position>().ok());
                let mut stream = SseStream::new(SseStreamConfig::default(), now, &[]).unwrap();
                let log = self.log(&ch);
                if let Err(gone) = stream.resume(now, log, last, Some(&ch)) {
                    let reset = format!(
                        "event: reset\ndata: {{\"ch\":\"{ch}\",\"pos\":\"{}\",\"recovered\":false}}\n\n",
                        gone.head
                    );
                    stream.send_frame(now, Bytes::from(reset));
                }
                c.conn = Conn::Sse { stream: Box::new(stream), ch };
            }
            "/poll" => {
                if let Gate::Status(s) = self.poll_gate {
                    return Self::reply(c, s, "{}");
                }
                let mut poll =
                    Poll::new(PollConfig::default(), now, PollRequest::from_request(&req).unwrap());
                let log = self.log(&ch);
                match poll.check(now, log) {
                    Some(resp) => {
                        c.out.push_back(resp);
                        c.eof = true;
                        c.conn = Conn::Reply;
                    }
                    None => c.conn = Conn::Poll { poll, ch },
                }
            }
            "/api/publish" => {
                let len = usize::try_from(req.content_length().unwrap().unwrap_or(0)).unwrap();
                c.conn = Conn::Publish { req, body: rest.to_vec(), len };
            }
            _ => Self::reply(c, 404, "{}"),
        }
    }

    fn finish_publish(&mut self, now: Instant, c: &mut ServerConn) {
        let Conn::Publish { req, body, len } = &c.conn else { return };
        if body.len() < *len {
            return;
        }
        let ch = req.query_param("ch").unwrap();
        let id = req.query_param("id");
        let data = String::from_utf8(body.clone()).unwrap();
        let pos = self.publish(now, &ch, &data, id);
        Self::reply(c, 200, &format!(r#"{{"ep":"{}","off":{}}}"#, pos.epoch, pos.offset));
    }

    fn ws_events(&mut self, now: Instant, c: &mut ServerConn) {
        loop {
            let Conn::Ws { ws, .. } = &mut c.conn else { return };
            let Some(ev) = ws.poll_event() else { return };
            match ev {
                WsEvent::UpgradeRequested(_) => ws.accept(now, None, &[]).unwrap(),
                WsEvent::Message(m) => {
                    let text = m.as_text().unwrap().to_owned();
                    self.envelope(now, c, &text);
                }
                _ => {}
            }
        }
    }

    fn envelope(&mut self, now: Instant, c: &mut ServerConn, text: &str) {
        let reference = ref_of(text);
        let mut replies = Vec::new();
        match ClientMessage::decode(text.as_bytes()).unwrap() {
            ClientMessage::Sub { ch, pos, reference: sub_ref } => {
                assert_eq!(sub_ref, reference, "the decoded sub keeps its ref");
                self.subs_seen.push((ch.clone(), pos));
                if self.forbidden.contains(&ch) {
                    let r = sub_ref.unwrap();
                    replies
                        .push(format!(r#"{{"op":"err","ref":{r},"code":"forbidden","msg":"no"}}"#));
                } else {
                    let log = self.log(&ch);
                    let (recovered, at, missed) = match pos {
                        None => (true, log.head(), Vec::new()),
                        Some(p) => match log.since(p) {
                            Ok(m) => (true, p, m.map(|(p, d)| (p, d.clone())).collect()),
                            Err(gone) => (false, gone.head, Vec::new()),
                        },
                    };
                    replies.push(format!(
                        r#"{{"op":"subscribed","ch":"{ch}","recovered":{recovered},"ep":"{}","off":{}}}"#,
                        at.epoch, at.offset
                    ));
                    for (p, d) in missed {
                        replies.push(msg_frame(&ch, p, std::str::from_utf8(&d).unwrap()));
                    }
                    if let Conn::Ws { subs, .. } = &mut c.conn {
                        subs.insert(ch);
                    }
                }
            }
            ClientMessage::Unsub { ch, .. } => {
                if let Conn::Ws { subs, .. } = &mut c.conn {
                    subs.remove(&ch);
                }
            }
            ClientMessage::Pub { ch, id, data, reference } => {
                let id = id.unwrap();
                self.pub_ids_seen.push(id.clone());
                if self.drop_after_pub {
                    self.drop_after_pub = false;
                    self.publish(now, &ch, data.get(), Some(id));
                    c.conn = Conn::Reply;
                    c.eof = true;
                    return;
                }
                // Broadcast first (to other connections), then answer this one.
                let Conn::Ws { subs, .. } = &c.conn else { return };
                let own = subs.contains(&ch);
                let fresh = !self.ids.contains_key(&id);
                let pos = self.publish(now, &ch, data.get(), Some(id));
                if own && fresh {
                    replies.push(msg_frame(&ch, pos, data.get()));
                }
                replies.push(format!(
                    r#"{{"op":"ack","ref":{},"ep":"{}","off":{}}}"#,
                    reference.unwrap(),
                    pos.epoch,
                    pos.offset
                ));
            }
            ClientMessage::Ping { reference } => {
                replies.push(format!(r#"{{"op":"pong","ref":{}}}"#, reference.unwrap_or(0)));
            }
            _ => {}
        }
        if let Conn::Ws { ws, .. } = &mut c.conn {
            for r in replies {
                ws.send(now, Message::text(r)).unwrap();
            }
        }
    }

    fn timeout(&self) -> Option<Instant> {
        self.conns
            .values()
            .filter_map(|c| match &c.conn {
                Conn::Ws { ws, .. } => ws.poll_timeout(),
                Conn::Sse { stream, .. } => stream.poll_timeout(),
                Conn::Poll { poll, .. } => poll.poll_timeout(),
                _ => None,
            })
            .min()
    }

    fn handle_timeout(&mut self, now: Instant) {
        for c in self.conns.values_mut() {
            match &mut c.conn {
                Conn::Ws { ws, .. } => ws.handle_timeout(now),
                Conn::Sse { stream, .. } => stream.handle_timeout(now),
                Conn::Poll { poll, ch } => {
                    if let Some(resp) = poll.handle_timeout(now, &self.logs[ch.as_str()]) {
                        c.out.push_back(resp);
                        c.eof = true;
                    }
                }
                _ => {}
            }
        }
    }

    /// Everything the server wants to write, or `None` for end of stream.
    fn drain(&mut self) -> Vec<(SockId, Option<Bytes>)> {
        let mut out = Vec::new();
        let mut ids: Vec<SockId> = self.conns.keys().copied().collect();
        ids.sort();
        for id in ids {
            let c = self.conns.get_mut(&id).unwrap();
            let mut eof = false;
            match &mut c.conn {
                Conn::Ws { ws, .. } => loop {
                    match ws.poll_transmit() {
                        Some(Transmit::Bytes(b)) => out.push((id, Some(b))),
                        Some(_) => {
                            eof = true;
                            break;
                        }
                        None => break,
                    }
                },
                Conn::Sse { stream, .. } => loop {
                    match stream.poll_transmit() {
                        Some(Transmit::Bytes(b)) => out.push((id, Some(b))),
                        Some(_) => {
                            eof = true;
                            break;
                        }
                        None => break,
                    }
                },
                _ => {}
            }
            while let Some(b) = c.out.pop_front() {
                out.push((id, Some(b)));
            }
            if eof || c.eof {
                out.push((id, None));
                self.conns.remove(&id);
            }
        }
        out
    }
}

fn msg_frame(ch: &str, pos: Position, data: &str) -> String {
    format!(r#"{{"op":"msg","ch":"{ch}","ep":"{}","off":{},"data":{data}}}"#, pos.epoch, pos.offset)
}

/// The `ref` of a client frame (the hub's decoder does not expose the one of a `sub`).
fn ref_of(text: &str) -> Option<u64> {
    let i = text.find("\"ref\":")? + 6;
    text[i..].split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

// ---------------------------------------------------------------------------------------
// The network between them

struct Net {
    now: Instant,
    c: ClientSession,
    srv: Server,
    events: Vec<SessionEvent>,
}

fn config() -> SessionConfig {
    let mut cfg = SessionConfig::new("srv", 8080);
    cfg.rng_seed = [7; 32];
    cfg.backoff.cap = Duration::from_secs(8);
    cfg
}

impl Net {
    fn new(cfg: SessionConfig) -> Self {
        Self::with_server(cfg, Server::new())
    }

    fn with_server(cfg: SessionConfig, srv: Server) -> Self {
        let now = Instant::now();
        let c = ClientSession::new(cfg, now);
        let mut net = Self { now, c, srv, events: Vec::new() };
        net.pump();
        net
    }

    /// Moves bytes and actions until nothing moves.
    fn pump(&mut self) {
        for _ in 0..10_000 {
            let mut moved = false;
            while let Some((sock, bytes)) = self.c.poll_transmit() {
                moved = true;
                self.srv.read(self.now, sock, &bytes);
            }
            while let Some(a) = self.c.poll_action() {
                moved = true;
                match a {
                    SessionAction::Connect { sock, host, port } => {
                        assert_eq!((host.as_str(), port), ("srv", 8080));
                        if self.srv.down {
                            self.c.handle_error(self.now, sock);
                        } else {
                            self.srv.conns.insert(
                                sock,
                                ServerConn {
                                    conn: Conn::Head(Vec::new()),
                                    out: VecDeque::new(),
                                    eof: false,
                                },
                            );
                            self.c.handle_connected(self.now, sock);
                        }
                    }
                    SessionAction::Close { sock } => {
                        self.srv.conns.remove(&sock);
                    }
                    _ => {}
                }
            }
            for (sock, chunk) in self.srv.drain() {
                moved = true;
                match chunk {
                    Some(b) => self.c.handle_read(self.now, sock, &b),
                    None => self.c.handle_eof(self.now, sock),
                }
            }
            self.events.extend(std::iter::from_fn(|| self.c.poll_event()));
            if !moved {
                return;
            }
        }
        panic!("the network never settles");
    }

    /// Runs virtual time forward by `d`, firing every deadline on the way.
    fn run(&mut self, d: Duration) {
        let end = self.now + d;
        loop {
            let next = [self.c.poll_timeout(), self.srv.timeout()].into_iter().flatten().min();
            match next {
                Some(t) if t <= end => {
                    self.now = self.now.max(t);
                    self.c.handle_timeout(self.now);
                    self.srv.handle_timeout(self.now);
                    self.pump();
                }
                _ => break,
            }
        }
        self.now = end;
        self.pump();
    }

    fn secs(&mut self, s: u64) {
        self.run(Duration::from_secs(s));
    }

    fn publish_srv(&mut self, ch: &str, data: &str) -> Position {
        let p = self.srv.publish(self.now, ch, data, None);
        self.pump();
        p
    }

    /// The server drops every connection (and, without `keep`, loses its history).
    fn restart(&mut self, keep: bool) {
        let socks: Vec<SockId> = self.srv.conns.keys().copied().collect();
        self.srv.conns.clear();
        if !keep {
            self.srv.next_epoch += 1;
            let e = self.srv.next_epoch;
            for log in self.srv.logs.values_mut() {
                *log = ReplayLog::new(Epoch(e), LogLimits::default());
            }
        }
        for s in socks {
            self.c.handle_eof(self.now, s);
        }
        self.pump();
    }

    fn messages(&self, ch: &str) -> Vec<String> {
        self.events
            .iter()
            .filter_map(|e| match e {
                SessionEvent::Message { ch: c, data, .. } if c == ch => Some(data.clone()),
                _ => None,
            })
            .collect()
    }

    fn states(&self) -> Vec<StateChange> {
        self.events
            .iter()
            .filter_map(|e| match e {
                SessionEvent::State(s) => Some(s.clone()),
                _ => None,
            })
            .collect()
    }

    fn last_state(&self) -> StateChange {
        self.states().pop().unwrap()
    }

    fn count(&self, f: impl Fn(&SessionEvent) -> bool) -> usize {
        self.events.iter().filter(|e| f(e)).count()
    }
}

fn nums(n: std::ops::RangeInclusive<u32>) -> Vec<String> {
    n.map(|i| format!("{{\"n\":{i}}}")).collect()
}

// ---------------------------------------------------------------------------------------
// WebSocket

#[test]
fn websocket_subscribe_receive_publish_ack_and_presence() {
    let mut net = Net::new(config());
    net.c.subscribe(net.now, "a").unwrap();
    net.pump();
    assert_eq!(net.c.state(), SessionState::Open);
    assert_eq!(net.c.transport(), Some(Transport::WebSocket));
    net.publish_srv("a", r#"{"n":1}"#);
    net.publish_srv("a", r#"{"n":2}"#);
    let id = net.c.publish(net.now, "a", r#"{"n":3}"#).unwrap();
    net.pump();
    assert_eq!(net.messages("a"), nums(1..=3));
    let pos3: Position = format!("{:x}:3", 0xa1).parse().unwrap();
    assert!(net.events.contains(&SessionEvent::Acked { id, pos: Some(pos3) }));
    assert_eq!(net.c.position("a"), Some(pos3));
    assert_eq!(net.c.queued_publishes(), 0);
    net.srv.ws_broadcast(net.now, r#"{"op":"presence","ch":"a","join":["ann"],"leave":[]}"#);
    net.pump();
    assert!(net.events.contains(&SessionEvent::Presence {
        ch: "a".into(),
        join: vec!["ann".into()],
        leave: vec![]
    }));
    // A refused subscription and an unsubscription.
    net.srv.forbidden.insert("secret".into());
    net.c.subscribe(net.now, "secret").unwrap();
    net.pump();
    assert!(net.events.contains(&SessionEvent::SubscribeFailed {
        ch: "secret".into(),
        code: "forbidden".into()
    }));
    assert_eq!(net.c.channels().collect::<Vec<_>>(), ["a"]);
    net.c.unsubscribe(net.now, "a");
    net.pump();
    net.publish_srv("a", r#"{"n":4}"#);
    assert_eq!(net.messages("a").len(), 3);
    assert_eq!(net.c.subscribe(net.now, ""), Err(SubscribeError::BadName));
    assert_eq!(net.c.publish(net.now, "a", "{nope"), Err(PublishError::NotJson));
}

#[test]
fn duplicates_and_stale_messages_are_dropped() {
    let mut net = Net::new(config());
    net.c.subscribe(net.now, "a").unwrap();
    net.pump();
    let p1 = net.publish_srv("a", r#"{"n":1}"#);
    let p2 = net.publish_srv("a", r#"{"n":2}"#);
    net.srv.ws_broadcast(net.now, &msg_frame("a", p2, r#"{"n":2}"#));
    net.srv.ws_broadcast(net.now, &msg_frame("a", p1, r#"{"n":1}"#));
    net.pump();
    net.publish_srv("a", r#"{"n":3}"#);
    assert_eq!(net.messages("a"), nums(1..=3));
    assert_eq!(net.c.dropped_duplicates(), 2);
}

#[test]
fn server_restart_resubscribes_with_positions_without_gap_or_duplicate() {
    let mut net = Net::new(config());
    net.c.subscribe(net.now, "a").unwrap();
    net.c.subscribe(net.now, "b").unwrap();
    net.pump();
    for _ in 0..3 {
        net.publish_srv("a", r#"{"n":0}"#);
    }
    net.publish_srv("b", r#"{"n":0}"#);
    net.srv.down = true;
    net.restart(true);
    assert_eq!(net.c.state(), SessionState::Reconnecting);
    // Published while the client is away: replayed on resume.
    net.publish_srv("a", r#"{"n":4}"#);
    net.publish_srv("a", r#"{"n":5}"#);
    net.secs(3);
    net.srv.down = false;
    net.secs(30);
    assert_eq!(net.c.state(), SessionState::Open);
    net.publish_srv("a", r#"{"n":6}"#);
    let got = net.messages("a");
    assert_eq!(got.len(), 6, "{got:?}");
    assert_eq!(got[3..], nums(4..=6)[..]);
    let resumed: Vec<_> = net.srv.subs_seen.iter().skip(2).cloned().collect();
    let ep = format!("{:x}", 0xa1);
    assert_eq!(
        resumed,
        [
            ("a".into(), Some(format!("{ep}:3").parse().unwrap())),
            ("b".into(), Some(format!("{ep}:1").parse().unwrap()))
        ]
    );
    assert_eq!(net.count(|e| matches!(e, SessionEvent::RefetchNeeded { .. })), 0);
}

#[test]
fn recovered_false_asks_for_one_refetch_and_continues_from_the_head() {
    let mut net = Net::new(config());
    net.c.subscribe(net.now, "a").unwrap();
    net.pump();
    net.publish_srv("a", r#"{"n":1}"#);
    net.restart(false); // history lost: a new epoch
    net.publish_srv("a", r#"{"n":2}"#); // offset 1 of the new epoch, missed
    net.secs(30);
    assert_eq!(net.c.state(), SessionState::Open);
    let head = net.publish_srv("a", r#"{"n":3}"#);
    let refetches: Vec<_> = net
        .events
        .iter()
        .filter_map(|e| match e {
            SessionEvent::RefetchNeeded { ch, pos } => Some((ch.clone(), *pos)),
            _ => None,
        })
        .collect();
    assert_eq!(refetches, [("a".to_owned(), Position { epoch: head.epoch, offset: 1 })]);
    assert_eq!(net.messages("a"), ["{\"n\":1}", "{\"n\":3}"]);
}

#[test]
fn close_codes_terminal_and_retryable() {
    for (code, terminal) in
        [(1000, true), (1002, true), (4003, true), (1001, false), (1011, false), (4100, false)]
    {
        let mut net = Net::new(config());
        net.pump();
        net.srv.close_ws(net.now, CloseCode(code));
        net.pump();
        let st = net.last_state();
        assert_eq!(st.reason, Reason::Closed { code: CloseCode(code), reason: String::new() });
        if terminal {
            assert_eq!(st.state, SessionState::Closed, "{code}");
            net.secs(120);
            assert_eq!(net.c.state(), SessionState::Closed);
        } else {
            assert_eq!(st.state, SessionState::Reconnecting, "{code}");
            net.secs(30);
            assert_eq!(net.c.state(), SessionState::Open, "{code}");
        }
    }
    // 1013: the floor is raised to the backoff's restart floor (5 s).
    let mut net = Net::new(config());
    net.srv.close_ws(net.now, CloseCode::TRY_AGAIN_LATER);
    net.pump();
    let st = net.last_state();
    assert_eq!(st.state, SessionState::Reconnecting);
    assert!(st.next_retry.unwrap() >= net.now + Duration::from_secs(5));
}

#[test]
fn state_events_carry_reason_attempt_and_next_retry() {
    let mut cfg = config();
    cfg.backoff.jitter = Jitter::None;
    cfg.transports = vec![Transport::WebSocket];
    let mut srv = Server::new();
    srv.down = true;
    let mut net = Net::with_server(cfg, srv);
    let t0 = net.now;
    net.secs(4); // attempts at 0 s, 1 s, 3 s; the next is due at 7 s
    let s = net.states();
    let brief: Vec<_> =
        s.iter().map(|s| (s.state, s.reason.clone(), s.attempt, s.next_retry)).collect();
    let at = |n| Some(t0 + Duration::from_secs(n));
    assert_eq!(
        brief,
        [
            (SessionState::Connecting, Reason::Started, 0, None),
            (SessionState::Reconnecting, Reason::Network, 1, at(1)),
            (SessionState::Connecting, Reason::RetryDue, 1, None),
            (SessionState::Reconnecting, Reason::Network, 2, at(3)),
            (SessionState::Connecting, Reason::RetryDue, 2, None),
            (SessionState::Reconnecting, Reason::Network, 3, at(7)),
        ]
    );
    assert!(s.iter().all(|s| s.transport == Some(Transport::WebSocket)));
    assert_eq!(net.c.next_retry_at(), at(7));
    net.srv.down = false;
    net.secs(3);
    let st = net.last_state();
    assert_eq!((st.state, st.reason, st.attempt), (SessionState::Open, Reason::Connected, 3));
}

#[test]
fn attempts_exhausted_close_the_session() {
    let mut cfg = config();
    cfg.backoff.max_attempts = Some(2);
    let mut srv = Server::new();
    srv.down = true;
    let mut net = Net::with_server(cfg, srv);
    net.secs(60);
    assert_eq!(net.last_state().reason, Reason::Exhausted);
    assert_eq!(net.c.state(), SessionState::Closed);
    assert_eq!(net.c.poll_timeout(), None);
}

#[test]
fn unauthorized_asks_for_credentials_then_reconnects_with_them() {
    let mut cfg = config();
    cfg.token = Some("old".into());
    let mut srv = Server::new();
    srv.token = Some("fresh".into());
    let mut net = Net::with_server(cfg, srv);
    assert_eq!(net.c.state(), SessionState::Reconnecting);
    assert_eq!(net.last_state().reason, Reason::Status(401));
    assert_eq!(net.count(|e| *e == SessionEvent::CredentialsNeeded), 1);
    net.c.set_credentials(net.now, "fresh");
    net.pump();
    assert_eq!(net.c.state(), SessionState::Open);
    assert_eq!(net.last_state().reason, Reason::Connected);

    // Without fresh credentials, the next attempt closes the session. Close 1008 too.
    let mut net = Net::new(config());
    net.srv.close_ws(net.now, CloseCode::POLICY);
    net.pump();
    assert_eq!(net.count(|e| *e == SessionEvent::CredentialsNeeded), 1);
    net.secs(30);
    assert_eq!(net.last_state().reason, Reason::NoCredentials);
    assert_eq!(net.c.state(), SessionState::Closed);
}

#[test]
fn token_travels_in_the_query_when_asked() {
    let mut cfg = config();
    cfg.token = Some("t 1".into());
    cfg.token_placement = tidewire::client::TokenPlacement::Query;
    cfg.base_path = "/rt".into();
    let mut srv = Server::new();
    srv.token = Some("t 1".into());
    let mut net = Net::with_server(cfg, srv);
    // The server here routes on `/ws`; the base path shows in the request line.
    assert_eq!(net.srv.paths, ["/rt/ws?token=t%201"]);
    net.run(Duration::from_millis(1));
}

// ---------------------------------------------------------------------------------------
// Falling back and coming back

#[test]
fn websocket_blocked_twice_falls_back_to_sse_with_http_publish() {
    let mut srv = Server::new();
    srv.ws_gate = Gate::Status(502);
    let mut net = Net::with_server(config(), srv);
    net.c.subscribe(net.now, "a").unwrap();
    net.publish_srv("a", r#"{"n":1}"#);
    net.secs(10);
    assert_eq!(net.c.state(), SessionState::Open);
    assert_eq!(net.c.transport(), Some(Transport::Sse));
    let ws_tries = net.srv.paths.iter().filter(|p| p.starts_with("/ws")).count();
    assert_eq!(ws_tries, 2);
    net.publish_srv("a", r#"{"n":2}"#);
    let id = net.c.publish(net.now, "a", r#"{"n":3}"#).unwrap();
    net.pump();
    assert!(
        net.events
            .iter()
            .any(|e| matches!(e, SessionEvent::Acked { id: i, pos: Some(_) } if *i == id))
    );
    // A fresh subscription starts at the head: {"n":1} was before it.
    assert_eq!(net.messages("a"), nums(2..=3));
    assert!(net.srv.paths.iter().any(|p| p.starts_with("/api/publish?ch=a&id=")));
    // The stream survives its keep-alive schedule.
    net.secs(100);
    assert_eq!(net.c.transport(), Some(Transport::Sse));
}

#[test]
fn sse_resumes_with_last_event_id_and_reset_asks_for_one_refetch() {
    let mut cfg = config();
    cfg.transports = vec![Transport::Sse];
    let mut net = Net::new(cfg);
    net.c.subscribe(net.now, "a").unwrap();
    net.pump();
    net.publish_srv("a", r#"{"n":1}"#);
    net.restart(true);
    net.publish_srv("a", r#"{"n":2}"#);
    net.secs(10);
    net.publish_srv("a", r#"{"n":3}"#);
    assert_eq!(net.messages("a"), nums(1..=3));
    net.restart(false);
    net.publish_srv("a", r#"{"n":4}"#);
    net.secs(10);
    net.publish_srv("a", r#"{"n":5}"#);
    assert_eq!(net.count(|e| matches!(e, SessionEvent::RefetchNeeded { .. })), 1);
    assert_eq!(net.messages("a"), ["{\"n\":1}", "{\"n\":2}", "{\"n\":3}", "{\"n\":5}"]);
    // A stream the server refuses with 403 is a refused subscription, not an auth failure.
    net.srv.forbidden.insert("secret".into());
    net.c.subscribe(net.now, "secret").unwrap();
    net.pump();
    assert!(net.events.contains(&SessionEvent::SubscribeFailed {
        ch: "secret".into(),
        code: "forbidden".into()
    }));
    assert_eq!(net.c.state(), SessionState::Open);
}

#[test]
fn sse_failing_falls_back_to_polling() {
    let mut srv = Server::new();
    srv.ws_gate = Gate::Status(502);
    srv.sse_gate = Gate::Status(502);
    let mut net = Net::with_server(config(), srv);
    net.c.subscribe(net.now, "a").unwrap();
    net.secs(30);
    assert_eq!(net.c.transport(), Some(Transport::Polling));
    assert_eq!(net.c.state(), SessionState::Open);
    net.publish_srv("a", r#"{"n":1}"#);
    net.secs(1);
    net.publish_srv("a", r#"{"n":2}"#);
    net.publish_srv("a", r#"{"n":3}"#);
    net.secs(1);
    let id = net.c.publish(net.now, "a", r#"{"n":4}"#).unwrap();
    net.secs(2);
    assert_eq!(net.messages("a"), nums(1..=4));
    assert!(net.events.iter().any(|e| matches!(e, SessionEvent::Acked { id: i, .. } if *i == id)));
    // Long polls time out on the server and are renewed without loss.
    net.secs(120);
    net.publish_srv("a", r#"{"n":5}"#);
    net.secs(1);
    assert_eq!(net.messages("a"), nums(1..=5));
    assert!(net.srv.paths.iter().any(|p| p.contains("&wait=1")));
}

#[test]
fn an_event_stream_is_not_cut_by_the_body_limit_of_polls() {
    // max_body bounds a poll's or a publish's answer; an SSE stream outlives any such bound
    // (its parser bounds what it holds), so it is not cut and reopened.
    let mut cfg = config();
    cfg.transports = vec![Transport::Sse];
    cfg.max_body = 1024;
    let mut net = Net::new(cfg);
    net.c.subscribe(net.now, "a").unwrap();
    net.secs(2);
    let pad = "x".repeat(200);
    for n in 1..=20 {
        net.publish_srv("a", &format!(r#"{{"n":{n},"pad":"{pad}"}}"#));
        net.secs(1);
    }
    assert_eq!(net.messages("a").len(), 20);
    assert_eq!(net.c.state(), SessionState::Open);
    let streams = net.srv.paths.iter().filter(|p| p.starts_with("/events")).count();
    assert_eq!(streams, 1, "{:?}", net.srv.paths);
}

#[test]
fn a_degraded_session_upgrades_back_to_websocket() {
    let mut srv = Server::new();
    srv.ws_gate = Gate::Status(502);
    let mut net = Net::with_server(config(), srv);
    net.c.subscribe(net.now, "a").unwrap();
    net.secs(10);
    assert_eq!(net.c.transport(), Some(Transport::Sse));
    net.publish_srv("a", r#"{"n":1}"#);
    // Still blocked at the first probe: the session stays on SSE without a hiccup.
    net.secs(61);
    assert_eq!((net.c.state(), net.c.transport()), (SessionState::Open, Some(Transport::Sse)));
    net.srv.ws_gate = Gate::Open;
    net.publish_srv("a", r#"{"n":2}"#);
    net.secs(61);
    assert_eq!(net.c.transport(), Some(Transport::WebSocket));
    assert_eq!(net.last_state().reason, Reason::Upgraded);
    net.publish_srv("a", r#"{"n":3}"#);
    assert_eq!(net.messages("a"), nums(1..=3));
    assert!(!net.srv.conns.values().any(|c| matches!(c.conn, Conn::Sse { .. })));
}

#[test]
fn a_session_on_polling_moves_up_to_sse_while_websocket_stays_blocked() {
    let mut srv = Server::new();
    srv.ws_gate = Gate::Status(502);
    srv.sse_gate = Gate::Status(502);
    let mut net = Net::with_server(config(), srv);
    net.c.subscribe(net.now, "a").unwrap();
    net.secs(30);
    assert_eq!(net.c.transport(), Some(Transport::Polling));
    net.publish_srv("a", r#"{"n":1}"#);
    // The first upgrade probes WebSocket (still blocked), the next one tries SSE, which is
    // still blocked too: one failed attempt and the session is back on polling.
    net.secs(125);
    let tried: Vec<_> = net.srv.paths.iter().filter(|p| p.starts_with("/events")).collect();
    assert!(tried.len() >= 3, "two at the fall back, one upgrade attempt: {tried:?}");
    net.secs(10);
    assert_eq!((net.c.state(), net.c.transport()), (SessionState::Open, Some(Transport::Polling)));
    net.publish_srv("a", r#"{"n":2}"#);
    net.secs(2);
    assert_eq!(net.messages("a"), nums(1..=2));
    // SSE comes back: within two more periods (a WebSocket probe, then SSE) the session
    // is on SSE, with every message once and in order.
    net.srv.sse_gate = Gate::Open;
    net.publish_srv("a", r#"{"n":3}"#);
    net.secs(125);
    assert_eq!((net.c.state(), net.c.transport()), (SessionState::Open, Some(Transport::Sse)));
    net.publish_srv("a", r#"{"n":4}"#);
    net.secs(1);
    assert_eq!(net.messages("a"), nums(1..=4));
    assert!(net.srv.conns.values().any(|c| matches!(c.conn, Conn::Sse { .. })));
}

// ---------------------------------------------------------------------------------------
// The offline queue

#[test]
fn offline_publishes_are_bounded_and_replayed_in_order() {
    let mut cfg = config();
    cfg.max_queued = 3;
    let mut srv = Server::new();
    srv.down = true;
    let mut net = Net::with_server(cfg, srv);
    let ids: Vec<_> =
        (1..=5).map(|n| net.c.publish(net.now, "a", &format!("{{\"n\":{n}}}")).unwrap()).collect();
    net.pump();
    assert_eq!(net.c.dropped_publishes(), 2);
    assert_eq!(net.c.queued_publishes(), 3);
    for id in &ids[..2] {
        assert!(
            net.events.contains(&SessionEvent::PublishFailed { id: *id, code: "dropped".into() })
        );
    }
    net.srv.down = false;
    net.secs(30);
    let data: Vec<_> = net.srv.published.iter().map(|(_, d, _)| d.clone()).collect();
    assert_eq!(data, nums(3..=5));
    for id in &ids[2..] {
        assert!(
            net.events.iter().any(|e| matches!(e, SessionEvent::Acked { id: i, .. } if i == id))
        );
    }
}

#[test]
fn an_unacknowledged_publish_is_resent_with_the_same_id() {
    let mut net = Net::new(config());
    net.srv.drop_after_pub = true;
    let id = net.c.publish(net.now, "a", r#"{"n":1}"#).unwrap();
    net.pump();
    assert_eq!(net.c.state(), SessionState::Reconnecting);
    net.secs(30);
    assert_eq!(net.srv.pub_ids_seen.len(), 2);
    assert_eq!(net.srv.pub_ids_seen[0], net.srv.pub_ids_seen[1]);
    assert_eq!(net.srv.published.len(), 1, "the hub published it once");
    assert_eq!(net.count(|e| matches!(e, SessionEvent::Acked { id: i, .. } if *i == id)), 1);
}

#[test]
fn close_stops_everything() {
    let mut srv = Server::new();
    srv.down = true;
    let mut net = Net::with_server(config(), srv);
    let id = net.c.publish(net.now, "a", "1").unwrap();
    net.c.close(net.now);
    net.pump();
    assert_eq!(net.last_state().reason, Reason::App);
    assert!(net.events.contains(&SessionEvent::PublishFailed { id, code: "closed".into() }));
    assert_eq!(net.c.poll_timeout(), None);
    assert_eq!(net.c.subscribe(net.now, "a"), Err(SubscribeError::Closed));
    assert_eq!(net.c.publish(net.now, "a", "1"), Err(PublishError::Closed));

    // An open WebSocket gets a close handshake with 1000, then nothing more happens.
    let mut net = Net::new(config());
    net.c.subscribe(net.now, "a").unwrap();
    net.pump();
    net.c.close(net.now);
    net.pump();
    net.secs(10);
    assert!(net.srv.conns.is_empty());
    assert_eq!(net.c.poll_timeout(), None);
    let before = net.events.len();
    net.secs(300);
    assert_eq!(net.events.len(), before);
    assert_eq!(net.c.state(), SessionState::Closed);
}

// ---------------------------------------------------------------------------------------
// Property: exactly once, in order, whatever the duplicates and reconnects

#[derive(Clone, Debug)]
enum Op {
    Publish(u8),
    Duplicate(u8),
    Restart,
    Advance(u16),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1u8..4).prop_map(Op::Publish),
        2 => any::<u8>().prop_map(Op::Duplicate),
        1 => Just(Op::Restart),
        2 => (0u16..20_000).prop_map(Op::Advance),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 48,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("regressions"))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn every_message_is_delivered_once_and_in_order(ops in prop::collection::vec(op(), 1..40), seed in any::<u8>()) {
        let mut cfg = config();
        cfg.rng_seed = [seed; 32];
        let mut net = Net::new(cfg);
        net.c.subscribe(net.now, "a").unwrap();
        net.pump();
        let mut sent = 0u32;
        for op in ops {
            match op {
                Op::Publish(k) => for _ in 0..k {
                    sent += 1;
                    net.publish_srv("a", &format!("{{\"n\":{sent}}}"));
                },
                Op::Duplicate(i) => {
                    if sent > 0 {
                        let n = u32::from(i) % sent + 1;
                        let pos = Position { epoch: Epoch(0xa1), offset: u64::from(n) };
                        net.srv.ws_broadcast(net.now, &msg_frame("a", pos, &format!("{{\"n\":{n}}}")));
                        net.pump();
                    }
                }
                Op::Restart => net.restart(true),
                Op::Advance(ms) => net.run(Duration::from_millis(u64::from(ms))),
            }
        }
        net.secs(60);
        prop_assert_eq!(net.c.state(), SessionState::Open);
        prop_assert_eq!(net.messages("a"), nums(1..=sent));
    }
}
