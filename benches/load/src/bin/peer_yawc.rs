//! Peer echo server for the compression benchmark (`../../deflate.sh`): yawc, a WebSocket
//! library that implements permessage-deflate (RFC 7692) server-side, upgraded through
//! hyper's HTTP/1 server on a tokio current-thread runtime (one event loop on one thread, like
//! the smol adapter's echo).
//!
//! `peer-yawc --addr 127.0.0.1:PORT [--no-deflate]` echoes every text and binary message.
//! Compression is set up like Tidewire's `echo` example so CPU per message compares like with
//! like: permessage-deflate accepted whenever a client offers it, with whatever context
//! takeover the client asks for; level 3 (Tidewire's default); every message compressed
//! (threshold 0, Tidewire's `min_size` 0); flate2 on zlib-rs (yawc's `zlib` feature, the backend
//! Tidewire uses); a shared pool of zlib states for directions without context takeover (like
//! Tidewire's per-thread pool); text checked for UTF-8, which Tidewire always does. Pings are
//! answered by yawc itself; it never pings on its own (like `echo --no-keepalive`).

use std::convert::Infallible;

use futures_util::{SinkExt, StreamExt};
use http_body_util::Empty;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use yawc::{CompressionLevel, DeflatePool, OpCode, Options, WebSocket};

/// Messages up to this size are echoed (the benchmark sends at most 16 KiB).
const MAX_SIZE: usize = 16 << 20;

fn main() {
    let (addr, deflate) = parse_args();
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_io().build().unwrap_or_else(|e| {
            eprintln!("cannot start the runtime: {e}");
            std::process::exit(1);
        });
    let mut options = Options::default().with_limits(MAX_SIZE, 2 * MAX_SIZE).with_utf8();
    if deflate {
        options = options
            .with_compression_level(CompressionLevel::new(3))
            .with_compression_threshold(0)
            // One thread compresses one message at a time: a few spare states suffice.
            .with_deflate_pool(DeflatePool::new(4));
    }
    runtime.block_on(async move {
        let listener = TcpListener::bind(&addr).await.unwrap_or_else(|e| {
            eprintln!("cannot bind {addr}: {e}");
            std::process::exit(1);
        });
        let local = listener.local_addr().map_or(addr, |a| a.to_string());
        println!("listening on {local}");
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let options = options.clone();
            tokio::spawn(async move {
                if let Err(e) = serve(stream, options).await {
                    eprintln!("connection error: {e}");
                }
            });
        }
    });
}

async fn serve(stream: TcpStream, options: Options) -> hyper::Result<()> {
    let _ = stream.set_nodelay(true);
    let service = service_fn(move |req| upgrade(req, options.clone()));
    http1::Builder::new().serve_connection(TokioIo::new(stream), service).with_upgrades().await
}

/// Answers the upgrade request, then echoes on the upgraded connection in a task of its own.
async fn upgrade(
    mut req: Request<Incoming>,
    options: Options,
) -> Result<Response<Empty<Bytes>>, Infallible> {
    match WebSocket::upgrade_with_options(&mut req, options) {
        Ok((response, fut)) => {
            tokio::spawn(async move {
                let mut ws = match fut.await {
                    Ok(ws) => ws,
                    Err(e) => return eprintln!("upgrade failed: {e}"),
                };
                while let Some(frame) = ws.next().await {
                    // Control frames: yawc answers pings and closes itself.
                    if matches!(frame.opcode(), OpCode::Text | OpCode::Binary)
                        && let Err(e) = ws.send(frame).await
                    {
                        return eprintln!("send failed: {e}");
                    }
                }
            });
            Ok(response)
        }
        Err(e) => {
            eprintln!("not a WebSocket upgrade: {e}");
            let mut bad = Response::new(Empty::new());
            *bad.status_mut() = StatusCode::BAD_REQUEST;
            Ok(bad)
        }
    }
}

/// `--addr HOST:PORT` (default 127.0.0.1:9005) and `--no-deflate`.
fn parse_args() -> (String, bool) {
    let mut addr = "127.0.0.1:9005".to_owned();
    let mut deflate = true;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--no-deflate" => deflate = false,
            "--addr" => match it.next() {
                Some(v) => addr = v,
                None => usage(),
            },
            _ => usage(),
        }
    }
    (addr, deflate)
}

fn usage() -> ! {
    eprintln!("usage: peer-yawc --addr HOST:PORT [--no-deflate]");
    std::process::exit(2);
}
