//! The client: [`connect`] a `ws://` URL.

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use smol::{Async, Executor};
use tidewire::ws::{CloseInfo, ConnError, HandshakeError, WsConfig, WsConnection};
use url::{Host, Url};

use crate::conn::{Shared, WebSocket};
use crate::pump::{drive, spawn_on};

/// Bytes read from a client connection's socket at once at most (into the thread's read
/// buffer, which no connection keeps while it waits).
const CLIENT_READ_BUFFER: usize = 64 << 10;

/// Client settings. Build it with `ClientOptions::default()` and change the fields you need.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ClientOptions {
    /// WebSocket settings: limits, keepalive, offered subprotocols (`protocols`), extra
    /// request headers (`headers`, e.g. `Authorization`). `handshake_timeout` bounds the
    /// opening handshake once TCP is connected.
    pub ws: WsConfig,
    /// Time for resolving the host and connecting TCP (default 10 s).
    pub connect_timeout: Duration,
    /// The executor that runs the connection's driver task. `None` (the default): smol's
    /// global executor. Give the executor that the application runs on (e.g.
    /// `smol::block_on(ex.run(..))`) to keep the connection on one thread.
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
    /// The URL is not a valid `ws://` URL (or yields an invalid request).
    #[error("invalid URL: {0}")]
    Url(String),
    /// Resolving, connecting (including `connect_timeout`, as `TimedOut`) or seeding failed.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
    /// The opening handshake failed, e.g. [`HandshakeError::Status`] when the server
    /// answered 401, or [`HandshakeError::Timeout`].
    #[error("handshake failed: {0}")]
    Handshake(HandshakeError),
    /// The connection ended during the handshake for another reason.
    #[error("connection closed during the handshake (code {})", .0.code)]
    Closed(CloseInfo),
}

/// Connects to a `ws://host[:port]/path?query` URL and completes the opening handshake.
/// The connection's driver task is spawned on `opts.executor` (default: smol's global
/// executor).
///
/// # Errors
/// [`ConnectError::Url`] for a malformed or non-`ws` URL, [`ConnectError::Io`] when TCP
/// cannot connect within `connect_timeout`, [`ConnectError::Handshake`] when the server
/// refuses the upgrade (e.g. `Status(401)`) or it does not complete within
/// `ws.handshake_timeout`.
pub async fn connect(url: &str, opts: ClientOptions) -> Result<WebSocket, ConnectError> {
    let url = Url::parse(url).map_err(|e| ConnectError::Url(e.to_string()))?;
    if url.scheme() != "ws" {
        return Err(ConnectError::Url(format!("unsupported scheme {:?} (ws only)", url.scheme())));
    }
    let host = url.host_str().ok_or_else(|| ConnectError::Url("missing host".into()))?;
    let port = url.port_or_known_default().unwrap_or(80);
    let host_header = match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_owned(),
    };
    let mut path = url.path().to_owned();
    if let Some(q) = url.query() {
        path.push('?');
        path.push_str(q);
    }

    let timed_out = || io::Error::new(io::ErrorKind::TimedOut, "connect timed out");
    let connect = crate::until(Instant::now() + opts.connect_timeout, open_tcp(&url, port));
    let tcp = connect.await.unwrap_or_else(|| Err(timed_out()))?;
    tcp.get_ref().set_nodelay(true)?;
    let peer = tcp.get_ref().peer_addr()?;

    let mut cfg = opts.ws;
    crate::seed(&mut cfg)?;
    let close_timeout = cfg.close_timeout;
    let conn = WsConnection::client(cfg, &host_header, &path, Instant::now())
        .map_err(|e| ConnectError::Url(e.to_string()))?;
    let shared = Arc::new(Shared::new(conn, close_timeout, peer));
    // Dropping `ws` (this future cancelled) aborts the handshake.
    let mut ws = WebSocket::new(shared.clone(), None);
    spawn_on(
        opts.executor.as_ref(),
        drive(Arc::new(tcp), shared.clone(), CLIENT_READ_BUFFER, None),
    );
    loop {
        let listener = {
            let sock = shared.lock();
            if let Some(subprotocol) = sock.opened() {
                ws.set_subprotocol(subprotocol.map(str::to_owned));
                return Ok(ws);
            }
            if let Some(info) = sock.close_info() {
                return Err(match info.error {
                    Some(ConnError::Handshake(e)) => ConnectError::Handshake(e),
                    _ => ConnectError::Closed(info.clone()),
                });
            }
            shared.inbound.listen()
        };
        listener.await;
    }
}

/// Resolves the URL's host and connects to the first address that answers.
pub(crate) async fn open_tcp(url: &Url, port: u16) -> io::Result<Async<TcpStream>> {
    let addrs: Vec<SocketAddr> = match url.host() {
        Some(Host::Domain(d)) => smol::net::resolve((d, port)).await?,
        Some(Host::Ipv4(ip)) => vec![(ip, port).into()],
        Some(Host::Ipv6(ip)) => vec![(ip, port).into()],
        None => return Err(io::Error::new(io::ErrorKind::InvalidInput, "missing host")),
    };
    let mut last = io::Error::new(io::ErrorKind::NotFound, "host resolved to no address");
    for addr in addrs {
        match Async::<TcpStream>::connect(addr).await {
            Ok(s) => return Ok(s),
            Err(e) => last = e,
        }
    }
    Err(last)
}
