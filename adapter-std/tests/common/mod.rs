//! Helpers shared by the integration tests: a bounded test runner, a server on a free
//! loopback port, and a raw TCP peer that speaks just enough WebSocket to misbehave.

#![allow(dead_code, unreachable_pub)]

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use tidewire_std::{ServerConfig, ServerHandle, ShutdownReport, Upgrade};

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
    pub fn start(cfg: ServerConfig, handler: impl Fn(Upgrade) + Send + Sync + 'static) -> Self {
        let server = tidewire_std::Server::bind("127.0.0.1:0", cfg).expect("bind");
        let handle = server.handle();
        let addr = server.local_addr();
        let serving = std::thread::spawn(move || server.serve(handler));
        Self { handle, addr, serving: Some(serving) }
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
