//! [`connect`]: a blocking WebSocket client (`ws://` only).

use std::io;
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tidewire::ws::{CloseInfo, ConnError, HandshakeError, WsConfig, WsConnection};

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

/// Why [`connect`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The URL is invalid or not `ws://` (no TLS).
    #[error("invalid URL: {0}")]
    Url(String),
    /// Name resolution, the TCP connection or the socket failed.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
    /// The opening handshake failed (e.g. [`HandshakeError::Status`]).
    #[error("handshake failed: {0}")]
    Handshake(HandshakeError),
    /// The connection ended during the handshake for another reason.
    #[error("connection closed during the handshake (code {})", .0.code)]
    Closed(CloseInfo),
}

/// Opens a WebSocket connection to a `ws://host[:port]/path[?query]` URL, within
/// `opts.connect_timeout` plus `opts.ws.handshake_timeout` ([`WsConnection::client`]).
pub fn connect(url: &str, opts: ClientOptions) -> Result<WebSocket, ConnectError> {
    let url = url::Url::parse(url).map_err(|e| ConnectError::Url(e.to_string()))?;
    if url.scheme() != "ws" {
        return Err(ConnectError::Url(format!(
            "unsupported scheme `{}` (only ws:// is supported)",
            url.scheme()
        )));
    }
    let host = url.host_str().ok_or_else(|| ConnectError::Url("no host".into()))?;
    let host_header = url.port().map_or_else(|| host.to_owned(), |port| format!("{host}:{port}"));
    let path = &url[url::Position::BeforePath..url::Position::AfterQuery];
    let path = if path.is_empty() { "/" } else { path };
    let addrs = url.socket_addrs(|| Some(80))?;
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
    let ws = WsConnection::client(cfg, &host_header, path, Instant::now())
        .map_err(|e| ConnectError::Url(e.to_string()))?;
    let (conn, _) = Conn::start(Arc::new(stream), peer, ws, timeouts, None);
    let mut ws = WebSocket::new(conn, READ_BUFFER);
    let opened = ws.pump_until(|sock| match sock.opened() {
        Some(subprotocol) => Some(Ok(subprotocol.map(str::to_owned))),
        None => sock.close_info().map(|info| Err(info.clone())),
    });
    match opened {
        Ok(subprotocol) => {
            ws.subprotocol = subprotocol;
            Ok(ws)
        }
        Err(info) => Err(match info.error {
            Some(ConnError::Handshake(e)) => ConnectError::Handshake(e),
            _ => ConnectError::Closed(info),
        }),
    }
}
