//! permessage-deflate end to end (issue 15): the client `Session` of each adapter, with
//! `SessionConfig::ws.deflate` set, against a `tidewire-std` server whose endpoint accepts
//! it, through a raw TCP relay on 127.0.0.1 that reads both directions of the WebSocket:
//! the server's `101` carries `permessage-deflate`, the session's frames (`pub`, `sub`) and
//! the server's (`msg`, acks) are compressed (RSV1 on their first frame), and every message
//! arrives intact, in order.
//!
//! Every wait is bounded; network only on 127.0.0.1.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use tidewire::client::{SessionConfig, SessionEvent, Transport};
use tidewire::server::Routes;
use tidewire::ws::deflate::DeflateConfig;

/// What the relay saw of one direction of a WebSocket connection.
#[derive(Clone, Debug, Default)]
struct Direction {
    /// The HTTP head (request or response) before the frames.
    head: String,
    /// Data frames that start a message (text or binary): (opcode, RSV1 set).
    messages: Vec<(u8, bool)>,
}

impl Direction {
    fn compressed(&self) -> usize {
        self.messages.iter().filter(|(_, rsv1)| *rsv1).count()
    }

    /// The value of `name` in the head (case-insensitive), if present.
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    }
}

/// Parses an HTTP head, then WebSocket frame headers, from the bytes of one direction.
#[derive(Default)]
struct Sniffer {
    buf: Vec<u8>,
    head_done: bool,
    seen: Direction,
}

impl Sniffer {
    fn feed(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
        if !self.head_done {
            let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") else { return };
            self.seen.head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
            self.buf.drain(..end + 4);
            self.head_done = true;
        }
        while let Some(len) = self.frame() {
            self.buf.drain(..len);
        }
    }

    /// One whole frame at the start of the buffer: records it, returns its length.
    fn frame(&mut self) -> Option<usize> {
        let b = &self.buf;
        if b.len() < 2 {
            return None;
        }
        let (rsv1, opcode) = (b[0] & 0x40 != 0, b[0] & 0x0f);
        let masked = b[1] & 0x80 != 0;
        let (len, mut at) = match b[1] & 0x7f {
            126 => (u64::from(u16::from_be_bytes(b.get(2..4)?.try_into().ok()?)), 4),
            127 => (u64::from_be_bytes(b.get(2..10)?.try_into().ok()?), 10),
            n => (u64::from(n), 2),
        };
        if masked {
            at += 4;
        }
        let total = at + usize::try_from(len).ok()?;
        if b.len() < total {
            return None;
        }
        if opcode == 1 || opcode == 2 {
            self.seen.messages.push((opcode, rsv1));
        }
        Some(total)
    }
}

/// One relayed connection's sniffers: (client to server, server to client).
type Sniffed = (Arc<Mutex<Sniffer>>, Arc<Mutex<Sniffer>>);

/// A TCP relay from 127.0.0.1:PORT to `target` that sniffs every connection, both ways.
struct Relay {
    port: u16,
    /// Per connection: (client to server, server to client).
    seen: Arc<Mutex<Vec<Sniffed>>>,
    _accept: JoinHandle<()>,
}

impl Relay {
    fn start(target: std::net::SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the relay");
        let port = listener.local_addr().expect("relay address").port();
        let seen: Arc<Mutex<Vec<_>>> = Arc::default();
        let conns = seen.clone();
        let accept = thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(server) = TcpStream::connect(target) else { return };
                let up = Arc::new(Mutex::new(Sniffer::default()));
                let down = Arc::new(Mutex::new(Sniffer::default()));
                conns.lock().unwrap().push((up.clone(), down.clone()));
                pump(client.try_clone().unwrap(), server.try_clone().unwrap(), up);
                pump(server, client, down);
            }
        });
        Self { port, seen, _accept: accept }
    }

    /// Each connection so far: (client to server, server to client).
    fn connections(&self) -> Vec<(Direction, Direction)> {
        let conns = self.seen.lock().unwrap();
        conns
            .iter()
            .map(|(up, down)| (up.lock().unwrap().seen.clone(), down.lock().unwrap().seen.clone()))
            .collect()
    }
}

/// Copies `from` to `to` on a thread of its own, through `sniffer`.
fn pump(mut from: TcpStream, mut to: TcpStream, sniffer: Arc<Mutex<Sniffer>>) {
    thread::spawn(move || {
        let mut buf = vec![0; 64 << 10];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    sniffer.lock().unwrap().feed(&buf[..n]);
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}

/// Compress every message (`min_size` 0), context takeover: the offer of the sessions.
fn deflate_all() -> DeflateConfig {
    let mut d = DeflateConfig::default();
    d.min_size = 0;
    d
}

/// A std server with the hub's default routes, anyone allowed, permessage-deflate accepted
/// per `deflate`.
fn server(deflate: DeflateConfig) -> (tidewire_std::ServerHandle, JoinHandle<()>) {
    let mut cfg = tidewire_std::ServerConfig::default();
    cfg.endpoint.routes = Routes::default();
    cfg.endpoint.ws.deflate = Some(deflate);
    let server = tidewire_std::Server::bind("127.0.0.1:0", cfg).expect("bind");
    let handle = server.handle();
    let thread = thread::spawn(move || {
        server.serve(|up| drop(up.reject(404, &[], b""))).expect("serve");
    });
    (handle, thread)
}

fn session_config(port: u16) -> SessionConfig {
    let mut cfg = SessionConfig::new("127.0.0.1", port);
    cfg.transports = vec![Transport::WebSocket];
    cfg.ws.deflate = Some(deflate_all());
    cfg
}

/// The messages the scenario publishes: from the session, and from the server.
fn payload(i: usize) -> String {
    // JSON of about 300 bytes that compresses well, and a short one now and then.
    if i % 3 == 2 {
        format!("{{\"n\":{i}}}")
    } else {
        format!("{{\"n\":{i},\"text\":\"{}\"}}", "the quick brown fox ".repeat(15))
    }
}

/// What a session of either adapter offers the scenario.
trait Client {
    fn subscribe(&mut self, ch: &str);
    fn publish(&mut self, ch: &str, json: &str);
    fn next(&mut self, timeout: Duration) -> Option<SessionEvent>;
    fn close(&mut self);
}

impl Client for tidewire_std::Session {
    fn subscribe(&mut self, ch: &str) {
        tidewire_std::Session::subscribe(self, ch).expect("subscribe");
    }
    fn publish(&mut self, ch: &str, json: &str) {
        tidewire_std::Session::publish(self, ch, json.as_bytes()).expect("publish");
    }
    fn next(&mut self, timeout: Duration) -> Option<SessionEvent> {
        self.next_event_timeout(timeout)
    }
    fn close(&mut self) {
        tidewire_std::Session::close(self);
    }
}

impl Client for tidewire_smol::Session {
    fn subscribe(&mut self, ch: &str) {
        tidewire_smol::Session::subscribe(self, ch).expect("subscribe");
    }
    fn publish(&mut self, ch: &str, json: &str) {
        tidewire_smol::Session::publish(self, ch, json.as_bytes()).expect("publish");
    }
    fn next(&mut self, timeout: Duration) -> Option<SessionEvent> {
        smol::block_on(smol::future::or(self.next_event(), async {
            smol::Timer::after(timeout).await;
            None
        }))
    }
    fn close(&mut self) {
        tidewire_smol::Session::close(self);
    }
}

/// The session subscribes, publishes 6 messages and receives them with 6 the server
/// publishes, in order, over one compressed WebSocket.
/// `every`: every message is compressed (context takeover both ways); otherwise those that
/// do not shrink (the short ones) may go plain, and the long ones (4 of every 6) do not.
fn scenario(
    client: &mut dyn Client,
    handle: &tidewire_std::ServerHandle,
    relay: &Relay,
    every: bool,
) {
    const N: usize = 6;
    let ch = "room:deflate";
    client.subscribe(ch);
    let mut expected: Vec<String> = Vec::new();
    let mut got: Vec<String> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut published = false;
    while got.len() < 2 * N {
        assert!(Instant::now() < deadline, "received {got:?} of {expected:?}");
        let Some(ev) = client.next(Duration::from_millis(200)) else { continue };
        match ev {
            SessionEvent::State(s)
                if !published && s.state == tidewire::client::SessionState::Open =>
            {
                // Subscribed once open: the session's `sub` went first on this link.
                for i in 0..N {
                    expected.push(payload(i));
                    client.publish(ch, &payload(i));
                }
                for i in N..2 * N {
                    // The server's own publishes, after the session's (the hub orders them).
                    thread::sleep(Duration::from_millis(20));
                    expected.push(payload(i));
                    handle.publish(ch, payload(i).as_bytes()).expect("server publish");
                }
                published = true;
            }
            SessionEvent::Message { ch: c, data, .. } if c == ch => got.push(data),
            _ => {}
        }
    }
    let mut want = expected.clone();
    let mut have = got.clone();
    want.sort();
    have.sort();
    assert_eq!(have, want, "every message once");
    client.close();

    let conns = relay.connections();
    assert_eq!(conns.len(), 1, "one WebSocket connection: {conns:?}");
    let (up, down) = &conns[0];
    let offer = up.header("Sec-WebSocket-Extensions").unwrap_or_default();
    assert!(offer.starts_with("permessage-deflate"), "the session's offer: {:?}", up.head);
    let answer = down.header("Sec-WebSocket-Extensions").unwrap_or_default();
    assert!(answer.starts_with("permessage-deflate"), "the server's answer: {:?}", down.head);
    if every {
        assert!(!answer.contains("no_context_takeover"), "{answer}");
    } else {
        assert!(answer.contains("server_no_context_takeover"), "{answer}");
        assert!(answer.contains("client_no_context_takeover"), "{answer}");
    }
    // `sub` and the 6 `pub`s; compressed (`min_size` 0) when they shrink, or always with
    // context takeover.
    assert!(up.messages.len() > N, "client frames: {:?}", up.messages);
    // 12 `msg`s, acks and the `sub` answer.
    assert!(down.messages.len() >= 2 * N, "server frames: {:?}", down.messages);
    if every {
        assert_eq!(up.compressed(), up.messages.len(), "client frames: {:?}", up.messages);
        assert_eq!(down.compressed(), down.messages.len(), "server frames: {:?}", down.messages);
    } else {
        assert!(up.compressed() >= N * 2 / 3, "client frames: {:?}", up.messages);
        assert!(down.compressed() >= 2 * N * 2 / 3, "server frames: {:?}", down.messages);
    }
    eprintln!(
        "offer {offer:?}, answer {answer:?}; compressed: {} of {} client messages, {} of {} server messages",
        up.compressed(),
        up.messages.len(),
        down.compressed(),
        down.messages.len()
    );
}

fn within(secs: u64, f: impl FnOnce() + Send + 'static) {
    let t = thread::spawn(f);
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !t.is_finished() {
        assert!(Instant::now() < deadline, "the test took more than {secs} s");
        thread::sleep(Duration::from_millis(20));
    }
    if let Err(e) = t.join() {
        std::panic::resume_unwind(e);
    }
}

#[test]
fn std_session_negotiates_deflate_and_delivers() {
    within(60, || {
        let (handle, thread) = server(deflate_all());
        let relay = Relay::start(handle.local_addr());
        let mut session = tidewire_std::Session::connect(session_config(relay.port));
        scenario(&mut session, &handle, &relay, true);
        drop(session);
        handle.shutdown(Duration::from_secs(2));
        thread.join().expect("serve thread");
    });
}

#[test]
fn smol_session_negotiates_deflate_and_delivers() {
    within(60, || {
        // The server imposes no context takeover either way on the session's offer.
        let mut d = DeflateConfig::no_context_takeover();
        d.min_size = 0;
        let (handle, thread) = server(d);
        let relay = Relay::start(handle.local_addr());
        let mut session = tidewire_smol::Session::connect(session_config(relay.port));
        scenario(&mut session, &handle, &relay, false);
        drop(session);
        handle.shutdown(Duration::from_secs(2));
        thread.join().expect("serve thread");
    });
}
