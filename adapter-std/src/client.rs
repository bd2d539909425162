//! [`connect`]: a blocking WebSocket client (`ws://` only).

use std::io;
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::net::ToSocketAddrs as _;

use tidewire::client::Target;
use tidewire::ws::app::ConnectError;
use tidewire::ws::{WsConfig, WsConnection};

use crate::conn::Conn;
use crate::socket::WebSocket;

const READ_BUFFER: usize = 64 << 10;

/// Settings of [`connect`]. Build with `ClientOptions::default()` and change fields.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ClientOptions {
    /// The connection's settings ([`WsConfig`]); a zero `rng_seed` is replaced by OS entropy.
    pub ws: WsConfig,
    /// Time to establish the TCP connection, over all resolved addresses (default 10 s).
    pub connect_timeout: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self { ws: WsConfig::default(), connect_timeout: Duration::from_secs(10) }
    }
}

/// Opens a WebSocket connection to a `ws://host[:port]/path[?query]` URL, within
/// `opts.connect_timeout` plus `opts.ws.handshake_timeout` ([`WsConnection::client`]).
pub fn connect(url: &str, opts: ClientOptions) -> Result<WebSocket, ConnectError> {
    let target = Target::parse(url, &["ws"])?;
    let addrs: Vec<_> = (target.host.as_str(), target.port).to_socket_addrs()?.collect();
    let start = Instant::now();
    let mut last = io::Error::new(io::ErrorKind::NotFound, "the host resolved to no address");
    let stream = addrs.iter().find_map(|addr| {
        let left = opts.connect_timeout.saturating_sub(start.elapsed());
        let tried = if left.is_zero() {
            Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))
        } else {
            TcpStream::connect_timeout(addr, left)
        };
        tried.map_err(|e| last = e).ok()
    });
    let stream = stream.ok_or(last)?;
    stream.set_nodelay(true)?;
    let peer = stream.peer_addr()?;
    let mut cfg = opts.ws;
    if cfg.rng_seed == [0; 32] {
        getrandom::fill(&mut cfg.rng_seed).map_err(|e| io::Error::other(e.to_string()))?;
    }
    let timeouts = (cfg.send_timeout, cfg.close_timeout);
    let ws = WsConnection::client(cfg, &target.authority, &target.path, Instant::now())
        .map_err(|e| ConnectError::Url(e.to_string()))?;
    let (conn, _) = Conn::start(Arc::new(stream), peer, ws, timeouts, None);
    let mut ws = WebSocket::new(conn, READ_BUFFER);
    let opened = ws.pump_until(|sock| sock.handshake());
    ws.subprotocol = opened?;
    Ok(ws)
}
