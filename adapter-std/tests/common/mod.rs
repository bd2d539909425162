//! Helpers shared by the integration tests: a bounded test runner, a server on a free
//! loopback port, and a raw TCP peer that speaks just enough WebSocket to misbehave.

#![allow(dead_code, unreachable_pub)]

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use tidewire_std::tidewire::hub::{DemoAuth, Principal};
use tidewire_std::tidewire::server::{Credential, Refusal, Routes, Verdict};
use tidewire_std::{HttpRequest, ServerConfig, ServerHandle, ShutdownReport, Upgrade};

/// Runs `f` on its own thread and fails the test if it takes longer than `secs`.
pub fn within<T: Send + 'static>(secs: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    let worker = std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(v) => {
            let _ = worker.join();
            v
        }
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("test did not finish within {secs} s"),
        Err(mpsc::RecvTimeoutError::Disconnected) => match worker.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => unreachable!("the worker sent nothing but did not panic"),
        },
    }
}

/// A server running `serve` on a thread; shut down (with no grace) when dropped.
pub struct TestServer {
    pub handle: ServerHandle,
    pub addr: SocketAddr,
    serving: Option<JoinHandle<io::Result<()>>>,
}

impl TestServer {
    /// Wraps a server already serving on `serving`.
    pub fn running(
        handle: ServerHandle,
        addr: SocketAddr,
        serving: JoinHandle<io::Result<()>>,
    ) -> Self {
        Self { handle, addr, serving: Some(serving) }
    }

    pub fn start(cfg: ServerConfig, handler: impl Fn(Upgrade) + Send + Sync + 'static) -> Self {
        let server = tidewire_std::Server::bind("127.0.0.1:0", cfg).expect("bind");
        let handle = server.handle();
        let addr = server.local_addr();
        let serving = std::thread::spawn(move || server.serve(handler));
        Self { handle, addr, serving: Some(serving) }
    }

    /// A server with an HTTP handler too (`serve_with`).
    pub fn start_with(
        cfg: ServerConfig,
        ws: impl Fn(Upgrade) + Send + Sync + 'static,
        http: impl Fn(HttpRequest) + Send + Sync + 'static,
    ) -> Self {
        Self::start_at("127.0.0.1:0", cfg, ws, http)
    }

    /// As [`start_with`](Self::start_with), on a given address (to restart on a port).
    pub fn start_at(
        addr: &str,
        cfg: ServerConfig,
        ws: impl Fn(Upgrade) + Send + Sync + 'static,
        http: impl Fn(HttpRequest) + Send + Sync + 'static,
    ) -> Self {
        let server = tidewire_std::Server::bind(addr, cfg).expect("bind");
        let handle = server.handle();
        let addr = server.local_addr();
        let serving = std::thread::spawn(move || server.serve_with(ws, http));
        Self { handle, addr, serving: Some(serving) }
    }

    /// An `http://` URL of this server.
    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }

    /// Shuts down with `grace`, checks that `serve` returned `Ok`.
    pub fn stop(mut self, grace: Duration) -> ShutdownReport {
        let report = self.handle.shutdown(grace);
        let serving = self.serving.take().expect("running");
        serving.join().expect("serve panicked").expect("serve failed");
        report
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(serving) = self.serving.take() {
            self.handle.shutdown(Duration::ZERO);
            let _ = serving.join();
        }
    }
}

/// Accepts and echoes every message until the connection ends.
pub fn echo(upgrade: Upgrade) {
    let Ok(mut ws) = upgrade.accept(None, &[]) else { return };
    while let Ok(msg) = ws.recv() {
        let _ = ws.send(msg);
    }
}

/// A plain TCP connection with a 5 s read timeout.
pub fn raw(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

/// A valid upgrade request for `path` with extra header lines (each ending in CRLF).
pub fn request(path: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
}

/// Reads an HTTP head (up to and including the blank line).
pub fn read_head(s: &mut TcpStream) -> io::Result<String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte)? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        head.push(byte[0]);
        if head.len() > 64 << 10 {
            return Err(io::Error::other("head too long"));
        }
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

/// Reads until EOF (or a reset), returning what arrived.
pub fn read_to_end_lossy(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// Reads one unmasked (server) frame: `(opcode, payload)`.
pub fn read_frame(s: &mut TcpStream) -> io::Result<(u8, Vec<u8>)> {
    let mut h = [0u8; 2];
    s.read_exact(&mut h)?;
    let len = match h[1] & 0x7f {
        126 => {
            let mut b = [0u8; 2];
            s.read_exact(&mut b)?;
            u64::from(u16::from_be_bytes(b))
        }
        127 => {
            let mut b = [0u8; 8];
            s.read_exact(&mut b)?;
            u64::from_be_bytes(b)
        }
        n => u64::from(n),
    };
    let mut payload = vec![0u8; usize::try_from(len).unwrap()];
    s.read_exact(&mut payload)?;
    Ok((h[0] & 0x0f, payload))
}

/// Opens a raw connection and completes the upgrade; returns the stream after the 101.
pub fn raw_upgraded(addr: SocketAddr) -> TcpStream {
    let mut s = raw(addr);
    s.write_all(request("/", "").as_bytes()).unwrap();
    let head = read_head(&mut s).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    s
}

/// Counts entries of a /proc/self directory (threads or file descriptors).
pub fn proc_count(dir: &str) -> usize {
    std::fs::read_dir(format!("/proc/self/{dir}")).map(Iterator::count).unwrap_or(0)
}

/// Receives until the connection ends and returns how it ended.
pub fn recv_until_closed(ws: &mut tidewire_std::WebSocket) -> tidewire_std::CloseInfo {
    loop {
        match ws.recv() {
            Ok(_) => {}
            Err(tidewire_std::RecvError::Closed(info)) => return info,
            Err(e) => panic!("unexpected receive error {e:?}"),
        }
    }
}

/// Sends a plain HTTP GET with extra header lines (each ending in CRLF).
pub fn get(addr: SocketAddr, path: &str, extra: &str) -> TcpStream {
    let mut s = raw(addr);
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\n{extra}\r\n").unwrap();
    s
}

/// A complete response (read to the end): `(status, head, body)`.
pub fn fetch(addr: SocketAddr, path: &str, extra: &str) -> (u16, String, String) {
    let mut s = get(addr, path, extra);
    let all = String::from_utf8(read_to_end_lossy(&mut s)).unwrap();
    let (head, body) = all.split_once("\r\n\r\n").unwrap_or((&all, ""));
    let status = head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, head.to_owned(), body.to_owned())
}

/// Reads `text/event-stream` blocks (each up to its blank line) from a raw socket.
pub struct Blocks {
    pub s: TcpStream,
    buf: Vec<u8>,
}

impl Blocks {
    /// Reads the response head and returns it.
    pub fn open(mut s: TcpStream) -> (String, Self) {
        let head = read_head(&mut s).unwrap();
        (head, Self { s, buf: Vec::new() })
    }

    /// The next block, without its blank line.
    pub fn next(&mut self) -> io::Result<String> {
        loop {
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let block = String::from_utf8(self.buf[..end].to_vec()).unwrap();
                self.buf.drain(..end + 2);
                return Ok(block);
            }
            let mut chunk = [0u8; 4096];
            match self.s.read(&mut chunk)? {
                0 => return Err(io::ErrorKind::UnexpectedEof.into()),
                n => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// The next block that is an event (has a `data:` line), skipping id-only blocks and
    /// comments.
    pub fn next_event(&mut self) -> io::Result<String> {
        loop {
            let block = self.next()?;
            if block.lines().any(|l| l.starts_with("data:")) {
                return Ok(block);
            }
        }
    }
}

/// Waits (at most 5 s) until `done` holds; returns whether it does.
pub fn settle(done: impl Fn() -> bool) -> bool {
    let start = std::time::Instant::now();
    while !done() {
        if start.elapsed() > Duration::from_secs(5) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

/// The demo's authentication with one trusted token: `admin` publishes as the server does.
pub fn demo_authn(req: &tidewire_std::tidewire::http::Request) -> Verdict {
    match req.token().as_deref() {
        Some("admin") => {
            Verdict::Allow(Credential { principal: Principal::anonymous(), trusted: true })
        }
        token => match DemoAuth::authenticate(token) {
            Some(p) => Verdict::Allow(Credential::client(p)),
            None => Verdict::Refuse(Refusal::unauthorized()),
        },
    }
}

impl TestServer {
    /// A hub server: the core's default routes (`/ws`, `/events`, `/poll`, `/api/publish`)
    /// with [`demo_authn`] and the demo's policy; other paths get 404.
    pub fn hub(cfg: ServerConfig) -> Self {
        Self::hub_at("127.0.0.1:0", cfg)
    }

    /// As [`hub`](Self::hub), on a given address (to restart on a port).
    pub fn hub_at(addr: &str, mut cfg: ServerConfig) -> Self {
        cfg.endpoint.routes = Routes::default();
        let server =
            tidewire_std::Server::bind_with(addr, cfg, demo_authn, DemoAuth).expect("bind");
        let handle = server.handle();
        let addr = server.local_addr();
        let serving = std::thread::spawn(move || {
            server.serve_with(
                |up: Upgrade| drop(up.reject(404, &[], b"")),
                |req: HttpRequest| drop(req.respond(404, &[], b"not found\n")),
            )
        });
        Self { handle, addr, serving: Some(serving) }
    }
}
