//! A blocking WebSocket echo server on `tidewire-std`: one thread per connection, echoing
//! text and binary messages from the receive loop.
//!
//! ```text
//! cargo run --release -p tidewire-std --example echo -- --addr 127.0.0.1:9001 \
//!     [--token T] [--origin O]... [--protocol P]... [--no-keepalive] [--max-message BYTES] \
//!     [--no-deflate]
//! ```
//!
//! permessage-deflate (RFC 7692) is accepted when a client offers it, every message compressed
//! (`min_size` 0), unless `--no-deflate` or the build is without the `deflate` feature.
//!
//! Ctrl-C or SIGTERM closes every connection with 1001 (5 s grace) and exits 0.

use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use tidewire_std::{Server, ServerConfig, Upgrade};

const USAGE: &str = "\
usage: echo --addr HOST:PORT [options]

A WebSocket echo server (tidewire-std). Prints `listening on ADDR` once ready.

options:
  --addr HOST:PORT       address to listen on (default 127.0.0.1:9001; port 0 picks one)
  --token T              require `Authorization: Bearer T` or `?token=T`; otherwise 401
                         (with `WWW-Authenticate: Bearer`) before any 101
  --origin O             allowed Origin (repeatable); with any given, another Origin gets 403
  --protocol P           supported subprotocol (repeatable); the first one the client offers
                         that is in this list is chosen
  --no-keepalive         no keepalive pings, no dead-peer detection
  --max-message BYTES    largest message accepted (default 64 MiB)
  --no-deflate           decline permessage-deflate (accepted by default, every message
                         compressed; needs the adapter's `deflate` feature, on by default)
  -h, --help             this help

Ctrl-C or SIGTERM closes every connection with 1001 and exits 0.";

struct Args {
    addr: String,
    token: Option<String>,
    origins: Vec<String>,
    protocols: Vec<String>,
    keepalive: bool,
    max_message: Option<usize>,
    deflate: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        addr: "127.0.0.1:9001".into(),
        token: None,
        origins: Vec::new(),
        protocols: Vec::new(),
        keepalive: true,
        max_message: None,
        deflate: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--addr" => args.addr = value()?,
            "--token" => args.token = Some(value()?),
            "--origin" => args.origins.push(value()?),
            "--protocol" => args.protocols.push(value()?),
            "--no-keepalive" => args.keepalive = false,
            "--no-deflate" => args.deflate = false,
            "--max-message" => {
                let v = value()?;
                args.max_message = Some(v.parse().map_err(|_| format!("bad --max-message {v}"))?);
            }
            "--help" | "-h" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown flag {other} (try --help)")),
        }
    }
    Ok(args)
}

fn main() {
    let args = parse_args().unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(2);
    });
    let mut cfg = ServerConfig::default();
    if !args.keepalive {
        cfg.endpoint.ws.keepalive = None;
    }
    if let Some(max) = args.max_message {
        cfg.endpoint.ws.max_message = max;
    }
    if args.deflate {
        #[cfg(feature = "deflate")]
        {
            cfg.endpoint.ws.deflate = Some(deflate_config());
        }
    }
    let server = Server::bind(&args.addr, cfg).unwrap_or_else(|e| {
        eprintln!("cannot bind {}: {e}", args.addr);
        std::process::exit(1);
    });
    let handle = server.handle();
    if let Err(e) = ctrlc::set_handler(move || {
        let report = handle.shutdown(Duration::from_secs(5));
        eprintln!("shut down: {} closed, {} dropped", report.closed, report.dropped);
    }) {
        eprintln!("cannot install the signal handler: {e}");
        std::process::exit(1);
    }
    println!("listening on {}", server.local_addr());
    let _ = std::io::stdout().flush();
    let args = Arc::new(args);
    if let Err(e) = server.serve(move |upgrade| handle_connection(upgrade, &args)) {
        eprintln!("server error: {e}");
        std::process::exit(1);
    }
}

/// permessage-deflate as the Autobahn|Testsuite exercises it: every message compressed
/// (`min_size` 0), and whatever the client asks for (context takeover or not, any window).
#[cfg(feature = "deflate")]
fn deflate_config() -> tidewire::ws::deflate::DeflateConfig {
    let mut d = tidewire::ws::deflate::DeflateConfig::default();
    d.min_size = 0;
    d
}

fn handle_connection(upgrade: Upgrade, args: &Args) {
    let req = upgrade.request();
    if let Some(token) = &args.token
        && req.token().as_ref() != Some(token)
    {
        let _ = upgrade.reject(401, &[("WWW-Authenticate", "Bearer")], b"missing or wrong token\n");
        return;
    }
    if !args.origins.is_empty()
        && !req.origin().is_some_and(|o| args.origins.iter().any(|a| a == o))
    {
        let _ = upgrade.reject(403, &[], b"origin not allowed\n");
        return;
    }
    let protocol = req.protocols().iter().find(|p| args.protocols.contains(p)).cloned();
    let Ok(mut ws) = upgrade.accept(protocol.as_deref(), &[]) else { return };
    // Echo from the receive loop: `send` waits (and writes) while the outbox is full.
    while let Ok(msg) = ws.recv() {
        if ws.send(msg).is_err() {
            // Closing: keep receiving until the close handshake ends.
        }
    }
}
