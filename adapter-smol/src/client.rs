//! [`connect`]: a WebSocket client (`ws://` only).

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use smol::net::TcpStream;
use smol::{Async, Executor};
use tidewire::client::Target;
use tidewire::ws::app::ConnectError;
use tidewire::ws::{WsConfig, WsConnection};

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

/// Opens a WebSocket connection to a `ws://host[:port]/path[?query]` URL, within
/// `opts.connect_timeout` plus `opts.ws.handshake_timeout` ([`WsConnection::client`]).
pub async fn connect(url: &str, opts: ClientOptions) -> Result<WebSocket, ConnectError> {
    let target = Target::parse(url, &["ws"])?;
    // Resolved, then each address tried in turn.
    let addr = (target.host.as_str(), target.port);
    let connect = crate::until(crate::after(opts.connect_timeout), TcpStream::connect(addr));
    let timed_out = || io::Error::new(io::ErrorKind::TimedOut, "connect timed out");
    let tcp = connect.await.unwrap_or_else(|| Err(timed_out()))?;
    tcp.set_nodelay(true)?;
    let peer = tcp.peer_addr()?;

    let mut cfg = opts.ws;
    if cfg.rng_seed == [0; 32] {
        getrandom::fill(&mut cfg.rng_seed).map_err(|e| io::Error::other(e.to_string()))?;
    }
    let close_timeout = cfg.close_timeout;
    let conn = WsConnection::client(cfg, &target.authority, &target.path, Instant::now())
        .map_err(|e| ConnectError::Url(e.to_string()))?;
    let shared = Arc::new(WsConn::new(conn, close_timeout, peer));
    // Dropping `ws` (this future cancelled) aborts the handshake.
    let mut ws = WebSocket::new(shared.clone(), None);
    let stream = Arc::<Async<std::net::TcpStream>>::from(tcp);
    spawn_on(opts.executor.as_ref(), run_ws(stream, shared.clone(), CLIENT_READ_BUFFER));
    let opened = wait(&shared.inbound, || shared.lock().handshake());
    ws.subprotocol = opened.await?;
    Ok(ws)
}
