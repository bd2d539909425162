//! A client and a server `WsConnection` talking through memory, in virtual time: the
//! upgrade with token auth, messages both ways, a keepalive ping after 25 s of silence, and
//! the close handshake. Every byte on the "wire" and every event is printed.
//!
//! Run with `cargo run -p tidewire --example pair`.

// This example plays the adapter, and adapters own the clock.
#![allow(clippy::disallowed_methods)]

use std::collections::VecDeque;

use tidewire::ws::{CloseCode, Message, WsConfig, WsConnection, WsEvent};
use tidewire::{Duration, Instant, Machine, Transmit};

fn main() {
    let t0 = Instant::now();
    let mut now = t0;
    let mut server = WsConnection::server(WsConfig::default(), now);
    let mut client_cfg = WsConfig::default();
    client_cfg.rng_seed = [7; 32]; // an adapter seeds this from OS entropy
    client_cfg.headers.push(("Authorization".into(), "Bearer secret-token".into()));
    let mut client = WsConnection::client(client_cfg, "localhost:8080", "/chat", now)
        .expect("valid host and path");
    let mut to_server: VecDeque<bytes::Bytes> = VecDeque::new();
    let mut to_client: VecDeque<bytes::Bytes> = VecDeque::new();
    let mut said_hello = false;
    drain(&mut client, &mut to_server, "client"); // the upgrade request

    loop {
        let ms = now.duration_since(t0).as_millis();
        if let Some(bytes) = to_server.pop_front() {
            println!("[{ms:>6} ms] client → server  {:>4} bytes {}", bytes.len(), preview(&bytes));
            server.handle_read(now, &bytes);
        } else if let Some(bytes) = to_client.pop_front() {
            println!("[{ms:>6} ms] server → client  {:>4} bytes {}", bytes.len(), preview(&bytes));
            client.handle_read(now, &bytes);
        } else if let Some(deadline) =
            [server.poll_timeout(), client.poll_timeout()].into_iter().flatten().min()
        {
            now = now.max(deadline);
            server.handle_timeout(now);
            client.handle_timeout(now);
        } else {
            break;
        }

        drain(&mut server, &mut to_client, "server");
        drain(&mut client, &mut to_server, "client");
        while let Some(ev) = server.poll_event() {
            println!("             server event: {}", describe(&ev));
            match ev {
                WsEvent::UpgradeRequested(req) => {
                    if req.bearer_token() == Some("secret-token") {
                        server.accept(now, None, &[]).expect("pending upgrade");
                    } else {
                        server.reject(now, 401, &[], b"unauthorized\n").expect("pending upgrade");
                    }
                }
                WsEvent::Message(m) => {
                    let reply = format!("echo: {}", m.as_text().unwrap_or("<binary>"));
                    server.send(now, Message::text(reply)).expect("open");
                }
                _ => {}
            }
        }
        while let Some(ev) = client.poll_event() {
            println!("             client event: {}", describe(&ev));
            match ev {
                WsEvent::Open { .. } => client.send(now, Message::text("hello")).expect("open"),
                WsEvent::Message(_) if !said_hello => {
                    said_hello = true;
                    println!(
                        "             (both sides go quiet; virtual time jumps to the keepalive)"
                    );
                }
                WsEvent::Pong(_) => client.close(now, CloseCode::NORMAL, "done").expect("open"),
                _ => {}
            }
        }
        drain(&mut server, &mut to_client, "server");
        drain(&mut client, &mut to_server, "client");
        if now.duration_since(t0) > Duration::from_secs(120) {
            break;
        }
    }
}

fn drain(conn: &mut WsConnection, wire: &mut VecDeque<bytes::Bytes>, who: &str) {
    while let Some(t) = conn.poll_transmit() {
        match t {
            Transmit::Bytes(b) => wire.push_back(b),
            Transmit::Shutdown => println!("             {who} shuts the transport down"),
            _ => {}
        }
    }
}

fn describe(ev: &WsEvent) -> String {
    match ev {
        WsEvent::UpgradeRequested(req) => {
            format!("upgrade requested for {} (bearer token {:?})", req.path(), req.bearer_token())
        }
        WsEvent::Open { subprotocol } => format!("open (subprotocol {subprotocol:?})"),
        WsEvent::Message(m) => format!("message {:?}", m.as_text().unwrap_or("<binary>")),
        WsEvent::Pong(p) => format!("pong ({} bytes)", p.len()),
        WsEvent::Closed(info) => format!(
            "closed: code {} reason {:?}, initiated by {:?}, clean {}",
            info.code, info.reason, info.initiator, info.clean
        ),
        other => format!("{other:?}"),
    }
}

fn preview(bytes: &[u8]) -> String {
    if bytes.starts_with(b"GET ") || bytes.starts_with(b"HTTP/") {
        let line = bytes.split(|&b| b == b'\r').next().unwrap_or_default();
        format!("(HTTP) {}", String::from_utf8_lossy(line))
    } else {
        let hex: Vec<String> = bytes.iter().take(12).map(|b| format!("{b:02x}")).collect();
        format!("(frame) {}{}", hex.join(" "), if bytes.len() > 12 { " …" } else { "" })
    }
}
