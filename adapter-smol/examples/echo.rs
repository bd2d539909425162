//! A WebSocket echo server on smol, on one thread: one `smol::Executor` runs the accept loop,
//! every connection's tasks (handshake, handler, driver) and the reactor, like tokio's
//! current-thread runtime.
//!
//! `cargo run --release -p tidewire-smol --example echo -- --addr 127.0.0.1:9001 [--token T]
//! [--origin O]… [--protocol P]… [--no-keepalive] [--max-message BYTES] [--no-deflate]`
//!
//! permessage-deflate (RFC 7692) is accepted when a client offers it, every message compressed
//! (`min_size` 0), unless `--no-deflate` or the build is without the `deflate` feature.
//!
//! Ctrl-C or SIGTERM closes every connection with 1001 (5 s grace) and exits 0.

use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use async_signal::{Signal, Signals};
use smol::Executor;
use smol::stream::StreamExt;
use tidewire_smol::{Server, ServerConfig, Upgrade};

const USAGE: &str = "\
usage: echo --addr HOST:PORT [options]

A WebSocket echo server (text and binary) on the tidewire-smol adapter.

options:
  --addr HOST:PORT       address to listen on (default 127.0.0.1:9001; port 0 picks one)
  --token T              require `Authorization: Bearer T` or `?token=T`, else 401
  --origin O             allow this Origin (repeatable); another Origin gets 403
  --protocol P           supported subprotocol (repeatable); the first one the client offers
                         that is in this list is chosen
  --no-keepalive         turn keepalive pings off (e.g. for the Autobahn testsuite)
  --max-message BYTES    largest message accepted (default 64 MiB)
  --no-deflate           decline permessage-deflate (accepted by default, every message
                         compressed; needs the adapter's `deflate` feature, on by default)
  -h, --help             this text

Prints `listening on ADDR` once ready. Ctrl-C or SIGTERM closes every connection with
1001 (5 s grace) and exits 0.";

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
                args.max_message =
                    Some(v.parse().map_err(|_| format!("--max-message: not a number: {v}"))?);
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

async fn echo(upgrade: Upgrade, args: &Args) {
    let req = upgrade.request();
    let token_ok = args.token.as_ref().is_none_or(|t| req.token().as_ref() == Some(t));
    let origin_ok = args.origins.is_empty()
        || req.origin().is_some_and(|o| args.origins.iter().any(|a| a == o));
    if !token_ok {
        let _ = upgrade
            .reject(401, &[("WWW-Authenticate", "Bearer")], b"missing or wrong token\n")
            .await;
        return;
    }
    if !origin_ok {
        let _ = upgrade.reject(403, &[], b"origin not allowed\n").await;
        return;
    }
    let protocol =
        req.protocols().iter().find(|p| args.protocols.iter().any(|ours| ours == *p)).cloned();
    let Ok(mut ws) = upgrade.accept(protocol.as_deref(), &[]).await else { return };
    while let Ok(msg) = ws.recv().await {
        if ws.send(msg).await.is_err() {
            break;
        }
    }
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    // One thread: `block_on` drives the reactor while the executor runs every task. `run`
    // is a task too, so that it is polled only when it was woken.
    let ex = Arc::new(Executor::new());
    let code = smol::block_on(ex.run(ex.spawn(run(args, ex.clone()))));
    std::process::exit(code);
}

/// permessage-deflate as the Autobahn|Testsuite exercises it: every message compressed
/// (`min_size` 0), and whatever the client asks for (context takeover or not, any window).
#[cfg(feature = "deflate")]
fn deflate_config() -> tidewire::ws::deflate::DeflateConfig {
    let mut d = tidewire::ws::deflate::DeflateConfig::default();
    d.min_size = 0;
    d
}

async fn run(args: Args, ex: Arc<Executor<'static>>) -> i32 {
    let mut signals = match Signals::new([Signal::Int, Signal::Term]) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cannot install signal handlers: {e}");
            return 1;
        }
    };
    let mut cfg = ServerConfig::default();
    cfg.executor = Some(ex.clone());
    if !args.keepalive {
        cfg.endpoint.ws.keepalive = None;
    }
    if let Some(max) = args.max_message {
        cfg.endpoint.ws.max_message = max;
        cfg.endpoint.ws.max_frame = cfg.endpoint.ws.max_frame.min(max);
    }
    if args.deflate {
        #[cfg(feature = "deflate")]
        {
            cfg.endpoint.ws.deflate = Some(deflate_config());
        }
    }
    let server = match Server::bind(args.addr.as_str(), cfg).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cannot bind {}: {e}", args.addr);
            return 1;
        }
    };
    let handle = server.handle();
    println!("listening on {}", server.local_addr());
    let _ = std::io::stdout().flush();

    let args = Arc::new(args);
    let serving = ex.spawn(server.serve(move |upgrade| {
        let args = args.clone();
        async move { echo(upgrade, &args).await }
    }));
    let _ = signals.next().await;
    let report = handle.shutdown(Duration::from_secs(5)).await;
    eprintln!("shut down: {} closed, {} dropped", report.closed, report.dropped);
    match serving.await {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("serve: {e}");
            1
        }
    }
}
