//! Peer echo server for the load benchmark: tokio-tungstenite on a current-thread runtime,
//! so every connection shares one event loop on one thread (like the smol adapter's echo).
//!
//! `peer-tokio --addr 127.0.0.1:PORT` echoes every text and binary message. Pings are
//! answered by tungstenite itself; it never pings on its own (like `echo --no-keepalive`).

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Error, Message};

/// Messages and frames up to this size are echoed (the benchmark sends at most 16 KiB).
const MAX_SIZE: usize = 16 << 20;

fn main() {
    let addr = addr_arg();
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_io().build().unwrap_or_else(|e| {
            eprintln!("cannot start the runtime: {e}");
            std::process::exit(1);
        });
    runtime.block_on(async move {
        let listener = TcpListener::bind(&addr).await.unwrap_or_else(|e| {
            eprintln!("cannot bind {addr}: {e}");
            std::process::exit(1);
        });
        let local = listener.local_addr().map_or(addr, |a| a.to_string());
        println!("listening on {local}");
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            tokio::spawn(async move {
                if let Err(e) = serve(stream).await {
                    eprintln!("connection error: {e}");
                }
            });
        }
    });
}

async fn serve(stream: TcpStream) -> Result<(), Error> {
    stream.set_nodelay(true)?;
    let config =
        WebSocketConfig::default().max_message_size(Some(MAX_SIZE)).max_frame_size(Some(MAX_SIZE));
    let mut ws = tokio_tungstenite::accept_async_with_config(stream, Some(config)).await?;
    while let Some(msg) = ws.next().await {
        match msg {
            Ok(msg @ (Message::Text(_) | Message::Binary(_))) => ws.send(msg).await?,
            Ok(_) => {} // control frames: tungstenite queues the replies itself
            // The load generator drops its sockets without a closing handshake.
            Err(Error::Protocol(
                tokio_tungstenite::tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
            )) => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// `--addr HOST:PORT` (default 127.0.0.1:9003).
fn addr_arg() -> String {
    let mut addr = "127.0.0.1:9003".to_owned();
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match (flag.as_str(), it.next()) {
            ("--addr", Some(v)) => addr = v,
            _ => {
                eprintln!("usage: peer-tokio --addr HOST:PORT");
                std::process::exit(2);
            }
        }
    }
    addr
}
