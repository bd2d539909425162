//! Helpers of the real-Redis test: a `redis-server` child process on a free loopback port
//! (killed on drop), and a blocking driver that runs a [`RedisBus`] over real TCP sockets
//! together with a bus-mode [`Hub`].

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use tidewire::client::SockId;
use tidewire::hub::{AllowAll, ConnId, Hub, HubConfig, HubEvent, Principal, Transport};
use tidewire::policy::{BackoffConfig, Jitter};
use tidewire::redis::{RedisAction, RedisBus, RedisConfig};

pub(crate) use server::RedisServer;

#[path = "server.rs"]
mod server;

/// One instance: a hub on the bus, its `RedisBus`, their sockets and one WebSocket member
/// per channel whose frames are collected.
pub(crate) struct Node {
    pub(crate) hub: Hub,
    pub(crate) bus: RedisBus,
    socks: HashMap<SockId, TcpStream>,
    /// Frames each member received (JSON envelopes), in order.
    pub(crate) frames: HashMap<ConnId, Vec<String>>,
    /// Answers to `Hub::submit`, in order.
    pub(crate) submitted: Vec<HubEvent>,
}

impl Node {
    pub(crate) fn new(port: u16, seed: u8) -> Self {
        let now = Instant::now();
        let cfg = RedisConfig {
            port,
            backoff: BackoffConfig {
                base: Duration::from_millis(20),
                cap: Duration::from_millis(200),
                jitter: Jitter::Equal,
                ..BackoffConfig::default()
            },
            rng_seed: [seed; 32],
            ..RedisConfig::from_url(&format!("redis://127.0.0.1:{port}")).unwrap()
        };
        Self {
            hub: Hub::with_bus(HubConfig::default(), AllowAll, u64::from(seed)),
            bus: RedisBus::new(cfg, now),
            socks: HashMap::new(),
            frames: HashMap::new(),
            submitted: Vec::new(),
        }
    }

    /// A WebSocket member.
    pub(crate) fn member(&mut self) -> ConnId {
        let c = self.hub.connect(Instant::now(), Transport::WebSocket, Principal::anonymous());
        self.frames.insert(c, Vec::new());
        c
    }

    /// One pass of the run loop: hub requests, socket actions, writes, reads, timers,
    /// events. Never blocks for long.
    pub(crate) fn step(&mut self) {
        let now = Instant::now();
        while let Some(a) = self.hub.poll_bus() {
            self.bus.execute(now, a);
        }
        while let Some(a) = self.bus.poll_action() {
            match a {
                RedisAction::Connect { sock, host, port } => {
                    let addr: SocketAddr = format!("{host}:{port}").parse().unwrap();
                    match TcpStream::connect_timeout(&addr, Duration::from_millis(500)) {
                        Ok(s) => {
                            s.set_nonblocking(true).unwrap();
                            s.set_nodelay(true).unwrap();
                            self.socks.insert(sock, s);
                            self.bus.handle_connected(now, sock);
                        }
                        Err(_) => self.bus.handle_error(now, sock),
                    }
                }
                RedisAction::Close { sock } => {
                    self.socks.remove(&sock);
                }
                _ => {}
            }
        }
        while let Some((sock, bytes)) = self.bus.poll_transmit() {
            let Some(s) = self.socks.get_mut(&sock) else { continue };
            if write_all(s, &bytes).is_err() {
                self.socks.remove(&sock);
                self.bus.handle_error(now, sock);
            }
        }
        let mut buf = [0u8; 16 * 1024];
        let ids: Vec<SockId> = self.socks.keys().copied().collect();
        for sock in ids {
            while let Some(s) = self.socks.get_mut(&sock) {
                match s.read(&mut buf) {
                    Ok(0) => {
                        self.socks.remove(&sock);
                        self.bus.handle_eof(now, sock);
                        break;
                    }
                    Ok(n) => self.bus.handle_read(now, sock, &buf[..n]),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(_) => {
                        self.socks.remove(&sock);
                        self.bus.handle_error(now, sock);
                        break;
                    }
                }
            }
        }
        if self.bus.poll_timeout().is_some_and(|t| t <= now) {
            self.bus.handle_timeout(now);
        }
        if self.hub.poll_timeout().is_some_and(|t| t <= now) {
            self.hub.handle_timeout(now);
        }
        while let Some(ev) = self.bus.poll_event() {
            ev.apply(&mut self.hub, now);
        }
        while let Some(ev) = self.hub.poll_event() {
            if matches!(ev, HubEvent::Submitted { .. }) {
                self.submitted.push(ev);
            }
        }
        while let Some(conn) = self.hub.poll_ready() {
            while let Some(frame) = self.hub.pull(conn) {
                let text = String::from_utf8(frame.to_vec()).unwrap();
                self.frames.entry(conn).or_default().push(text);
            }
        }
    }
}

fn write_all(s: &mut TcpStream, mut bytes: &[u8]) -> std::io::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !bytes.is_empty() {
        match s.write(bytes) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Steps every node until `done` holds; panics after `secs` seconds with `what`.
pub(crate) fn run_until(
    nodes: &mut [&mut Node],
    secs: u64,
    what: &str,
    mut done: impl FnMut(&[&mut Node]) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        for n in nodes.iter_mut() {
            n.step();
        }
        if done(nodes) {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// A `msg` envelope's `(epoch, offset, data)`.
pub(crate) fn msg_of(frame: &str) -> Option<(String, u64, String)> {
    if !frame.starts_with(r#"{"op":"msg""#) {
        return None;
    }
    let ep = field(frame, "\"ep\":\"")?.split('"').next()?.to_owned();
    let off = field(frame, "\"off\":")?.split([',', '}']).next()?.parse().ok()?;
    let data = field(frame, "\"data\":")?.strip_suffix('}')?.to_owned();
    Some((ep, off, data))
}

/// A `subscribed` envelope's `(recovered, epoch, offset)`.
pub(crate) fn subscribed_of(frame: &str) -> Option<(bool, String, u64)> {
    if !frame.starts_with(r#"{"op":"subscribed""#) {
        return None;
    }
    let recovered = field(frame, "\"recovered\":")?.starts_with("true");
    let ep = field(frame, "\"ep\":\"")?.split('"').next()?.to_owned();
    let off = field(frame, "\"off\":")?.split([',', '}']).next()?.parse().ok()?;
    Some((recovered, ep, off))
}

fn field<'a>(frame: &'a str, key: &str) -> Option<&'a str> {
    frame.find(key).map(|i| &frame[i + key.len()..])
}

/// Runs one command on the server over a fresh connection and returns the raw reply
/// (for tests that damage the data behind the bus's back).
pub(crate) fn redis_cmd(port: u16, args: &[&str]) -> String {
    let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, port)).unwrap();
    let mut req = format!("*{}\r\n", args.len());
    for a in args {
        req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    s.write_all(req.as_bytes()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 4096];
    let n = s.read(&mut buf).unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}
