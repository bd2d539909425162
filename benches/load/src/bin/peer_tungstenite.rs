//! Peer echo server for the load benchmark: tungstenite, blocking, one thread per connection.
//!
//! `peer-tungstenite --addr 127.0.0.1:PORT` echoes every text and binary message. Pings are
//! answered by tungstenite itself; it never pings on its own (like `echo --no-keepalive`).

use std::net::{TcpListener, TcpStream};

use tungstenite::protocol::WebSocketConfig;
use tungstenite::{Error, Message};

/// Messages and frames up to this size are echoed (the benchmark sends at most 16 KiB).
const MAX_SIZE: usize = 16 << 20;

fn main() {
    let addr = addr_arg();
    let listener = TcpListener::bind(&addr).unwrap_or_else(|e| {
        eprintln!("cannot bind {addr}: {e}");
        std::process::exit(1);
    });
    let local = listener.local_addr().map_or(addr, |a| a.to_string());
    println!("listening on {local}");
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        std::thread::spawn(move || {
            if let Err(e) = serve(stream) {
                eprintln!("connection error: {e}");
            }
        });
    }
}

fn serve(stream: TcpStream) -> Result<(), Error> {
    stream.set_nodelay(true)?;
    let config =
        WebSocketConfig::default().max_message_size(Some(MAX_SIZE)).max_frame_size(Some(MAX_SIZE));
    let mut ws = tungstenite::accept_with_config(stream, Some(config)).map_err(|e| match e {
        tungstenite::HandshakeError::Failure(e) => e,
        tungstenite::HandshakeError::Interrupted(_) => Error::ConnectionClosed,
    })?;
    loop {
        match ws.read() {
            Ok(msg @ (Message::Text(_) | Message::Binary(_))) => ws.send(msg)?,
            Ok(_) => {} // control frames: tungstenite queues the replies itself
            Err(Error::ConnectionClosed | Error::AlreadyClosed) => return Ok(()),
            // The load generator drops its sockets without a closing handshake.
            Err(Error::Protocol(
                tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
            )) => {
                return Ok(());
            }
            Err(e) => return Err(e),
        }
    }
}

/// `--addr HOST:PORT` (default 127.0.0.1:9002).
fn addr_arg() -> String {
    let mut addr = "127.0.0.1:9002".to_owned();
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        match (flag.as_str(), it.next()) {
            ("--addr", Some(v)) => addr = v,
            _ => {
                eprintln!("usage: peer-tungstenite --addr HOST:PORT");
                std::process::exit(2);
            }
        }
    }
    addr
}
