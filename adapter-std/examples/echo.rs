//! A blocking WebSocket echo server: one thread per connection, driving the sans-IO
//! `WsConnection` with a `std::net::TcpStream`, the clock and one read timeout.
//!
//! `cargo run --release -p tidewire-std --example echo -- --addr 127.0.0.1:9001 [--token T] [--origin O]… [--no-keepalive]`
//!
//! This is the first, minimal driver (enough to run the Autobahn|Testsuite against the core);
//! the full adapter with graceful shutdown and a sender half arrives with issue 4.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::time::Instant;

use tidewire::ws::{Message, SendError, WsConfig, WsConnection, WsEvent};
use tidewire::{Machine, Transmit};

struct Args {
    addr: String,
    token: Option<String>,
    origins: Vec<String>,
    keepalive: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args =
        Args { addr: "127.0.0.1:9001".into(), token: None, origins: Vec::new(), keepalive: true };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--addr" => args.addr = value()?,
            "--token" => args.token = Some(value()?),
            "--origin" => args.origins.push(value()?),
            "--no-keepalive" => args.keepalive = false,
            "--help" | "-h" => {
                return Err(
                    "usage: echo --addr HOST:PORT [--token T] [--origin O]... [--no-keepalive]"
                        .into(),
                );
            }
            other => return Err(format!("unknown flag {other} (try --help)")),
        }
    }
    Ok(args)
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let listener = TcpListener::bind(&args.addr).unwrap_or_else(|e| {
        eprintln!("cannot bind {}: {e}", args.addr);
        std::process::exit(1);
    });
    println!("listening on {}", listener.local_addr().map_or(args.addr.clone(), |a| a.to_string()));
    let args = std::sync::Arc::new(args);
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let args = args.clone();
        std::thread::spawn(move || {
            if let Err(e) = serve(stream, &args) {
                eprintln!("connection error: {e}");
            }
        });
    }
}

fn config(args: &Args) -> io::Result<WsConfig> {
    let mut cfg = WsConfig::default();
    getrandom::fill(&mut cfg.rng_seed).map_err(|e| io::Error::other(e.to_string()))?;
    if !args.keepalive {
        cfg.keepalive = None;
    }
    Ok(cfg)
}

/// Writes everything the connection queued; `Ok(true)` once the transport was shut down.
fn flush(conn: &mut WsConnection, stream: &mut TcpStream) -> io::Result<bool> {
    while let Some(t) = conn.poll_transmit() {
        match t {
            Transmit::Bytes(b) => stream.write_all(&b)?,
            Transmit::Shutdown => {
                let _ = stream.shutdown(Shutdown::Both);
                return Ok(true);
            }
            _ => {}
        }
    }
    Ok(false)
}

fn serve(mut stream: TcpStream, args: &Args) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut conn = WsConnection::server(config(args)?, Instant::now());
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // Drain events (the app reacts with commands), then what they queued.
        while let Some(ev) = conn.poll_event() {
            match ev {
                WsEvent::UpgradeRequested(req) => {
                    let now = Instant::now();
                    let token_ok =
                        args.token.as_ref().is_none_or(|t| req.token().as_ref() == Some(t));
                    let origin_ok = args.origins.is_empty()
                        || req.origin().is_some_and(|o| args.origins.iter().any(|a| a == o));
                    let result = if !token_ok {
                        conn.reject(
                            now,
                            401,
                            &[("WWW-Authenticate", "Bearer")],
                            b"missing or wrong token\n",
                        )
                    } else if !origin_ok {
                        conn.reject(now, 403, &[], b"origin not allowed\n")
                    } else {
                        conn.accept(now, None, &[])
                    };
                    result.map_err(io::Error::other)?;
                }
                WsEvent::Message(msg) => echo(&mut conn, &mut stream, msg)?,
                WsEvent::Closed(_) => {}
                _ => {}
            }
        }
        if flush(&mut conn, &mut stream)? {
            return Ok(());
        }
        // Wait for bytes or the deadline, whichever comes first.
        let now = Instant::now();
        match conn.poll_timeout() {
            Some(deadline) if deadline <= now => {
                conn.handle_timeout(now);
                continue;
            }
            Some(deadline) => stream.set_read_timeout(Some(deadline - now))?,
            None => stream.set_read_timeout(None)?,
        }
        match stream.read(&mut buf) {
            Ok(0) => conn.handle_eof(Instant::now()),
            Ok(n) => conn.handle_read(Instant::now(), &buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                conn.handle_timeout(Instant::now());
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => conn.handle_eof(Instant::now()),
        }
    }
}

/// Sends `msg` back, writing queued bytes out whenever the bounded outbox is full.
fn echo(conn: &mut WsConnection, stream: &mut TcpStream, mut msg: Message) -> io::Result<()> {
    loop {
        match conn.send(Instant::now(), msg) {
            Ok(()) => return Ok(()),
            Err(SendError::Backpressure(back)) => {
                msg = back;
                flush(conn, stream)?;
            }
            Err(_) => return Ok(()), // closing: nothing to echo into
        }
    }
}
