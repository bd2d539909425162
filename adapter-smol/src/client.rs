//! [`connect`]: a WebSocket client (`ws://` only).

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use smol::net::TcpStream;
use smol::{Async, Executor};
use tidewire::ws::{CloseInfo, ConnError, HandshakeError, WsConfig, WsConnection};
use url::{Position, Url};

use crate::conn::{WebSocket, WsConn};
use crate::outbound::wait;
use crate::pump::{run_ws, spawn_on};

/// Most bytes of one read of a client connection (into the thread's read buffer).
const CLIENT_READ_BUFFER: usize = 64 << 10;

/// Settings of [`connect`]. Build with `ClientOptions::default()` and change fields.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ClientOptions {
    /// The connection's settings ([`WsConfig`]); a zero `rng_seed` is replaced by OS entropy.
    pub ws: WsConfig,
    /// Time for resolving the host and connecting TCP (default 10 s).
    pub connect_timeout: Duration,
    /// The executor of the connection's task; `None`: smol's global executor.
    pub executor: Option<Arc<Executor<'static>>>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self { ws: WsConfig::default(), connect_timeout: Duration::from_secs(10), executor: None }
    }
}

/// Why [`connect`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The URL is invalid or not `ws://` (no TLS).
    #[error("invalid URL: {0}")]
    Url(String),
    /// Name resolution, the TCP connection (`TimedOut` after `connect_timeout`) or seeding failed.
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
pub async fn connect(url: &str, opts: ClientOptions) -> Result<WebSocket, ConnectError> {
    let url = Url::parse(url).map_err(|e| ConnectError::Url(e.to_string()))?;
    if url.scheme() != "ws" {
        return Err(ConnectError::Url(format!("unsupported scheme {:?} (ws only)", url.scheme())));
    }
    let host = url.host_str().ok_or_else(|| ConnectError::Url("missing host".into()))?;
    let port = url.port_or_known_default().unwrap_or(80);
    let host_header = url.port().map_or_else(|| host.to_owned(), |port| format!("{host}:{port}"));
    let path = &url[Position::BeforePath..Position::AfterQuery];

    // Resolved (an IPv6 literal without its brackets), then each address tried in turn.
    let addr = (host.trim_start_matches('[').trim_end_matches(']'), port);
    let connect = crate::until(Instant::now() + opts.connect_timeout, TcpStream::connect(addr));
    let timed_out = || io::Error::new(io::ErrorKind::TimedOut, "connect timed out");
    let tcp = connect.await.unwrap_or_else(|| Err(timed_out()))?;
    tcp.set_nodelay(true)?;
    let peer = tcp.peer_addr()?;

    let mut cfg = opts.ws;
    if cfg.rng_seed == [0; 32] {
        getrandom::fill(&mut cfg.rng_seed).map_err(|e| io::Error::other(e.to_string()))?;
    }
    let close_timeout = cfg.close_timeout;
    let conn = WsConnection::client(cfg, &host_header, path, Instant::now())
        .map_err(|e| ConnectError::Url(e.to_string()))?;
    let shared = Arc::new(WsConn::new(conn, close_timeout, peer));
    // Dropping `ws` (this future cancelled) aborts the handshake.
    let mut ws = WebSocket::new(shared.clone(), None);
    let stream = Arc::<Async<std::net::TcpStream>>::from(tcp);
    spawn_on(opts.executor.as_ref(), run_ws(stream, shared.clone(), CLIENT_READ_BUFFER, None));
    let opened = wait(&shared.inbound, || {
        let sock = shared.lock();
        let closed = |info: &CloseInfo| match info.error {
            Some(ConnError::Handshake(e)) => ConnectError::Handshake(e),
            _ => ConnectError::Closed(info.clone()),
        };
        let subprotocol = sock.opened().map(|p| Ok(p.map(str::to_owned)));
        subprotocol.or_else(|| sock.close_info().map(|info| Err(closed(info))))
    });
    ws.subprotocol = opened.await?;
    Ok(ws)
}
