//! [`HttpRequest`]: a plain HTTP request the core server keeps for the application, which
//! reads its body and answers it through the core
//! ([`Server::read_body`](tidewire::server::Server::read_body),
//! [`Server::answer`](tidewire::server::Server::answer)); the connection's threads move the
//! bytes.

use std::io::{self, ErrorKind};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tidewire::http::Request;
use tidewire::server::ConnHandle;

use crate::conn::{invalid_input, wait_until};
use crate::outbound::Host as _;
use crate::pump;
use crate::server::Shared;

/// The longest one read waits while a body arrives before the core is asked again.
const PATIENCE: Duration = Duration::from_millis(250);

/// A plain HTTP request for a path the hub does not serve, handed to the HTTP handler of
/// [`Server::serve_with`](crate::Server::serve_with) on the connection's thread. Answer it
/// once with [`respond`](Self::respond), which closes the connection; dropping it
/// unanswered drops it.
pub struct HttpRequest {
    pub(crate) shared: Arc<Shared>,
    pub(crate) conn: ConnHandle,
    pub(crate) request: Request,
    pub(crate) peer: SocketAddr,
    pub(crate) stream: Arc<TcpStream>,
    /// The connection's read turn, shared with its reader ([`pump::serve`]).
    pub(crate) turn: Arc<Mutex<()>>,
    /// Answered, or the body failed (and the core answered).
    pub(crate) done: bool,
}

impl std::fmt::Debug for HttpRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpRequest")
            .field("peer", &self.peer)
            .field("method", &self.request.method())
            .field("path", &self.request.path())
            .finish_non_exhaustive()
    }
}

impl HttpRequest {
    /// The request head.
    #[must_use]
    pub fn request(&self) -> &Request {
        &self.request
    }

    /// The peer's address.
    #[must_use]
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    /// Reads the body, at most `max` bytes, within `endpoint.head_timeout`
    /// ([`Server::read_body`](tidewire::server::Server::read_body)), reading the socket on
    /// this thread. A body that cannot be read is answered by the core
    /// ([`BodyError::response`](tidewire::http::BodyError::response); `InvalidData`, `TimedOut` or `UnexpectedEof`) and the
    /// connection closed. `NotConnected` once answered.
    pub fn read_body(&mut self, max: usize) -> io::Result<Bytes> {
        if self.done {
            return Err(ErrorKind::NotConnected.into());
        }
        let (shared, conn) = (&self.shared, self.conn);
        let _ = self.stream.set_read_timeout(Some(PATIENCE));
        let mut buf = Vec::new();
        let body = loop {
            let mut core = pump::core(shared);
            let body = core.server.read_body(Instant::now(), conn, max);
            core.after(shared);
            if let Some(body) = body {
                break body;
            }
            // Read here, unless the connection's reader does (a handler that moved the
            // request to another thread): then wait for what it feeds.
            if let Ok(_reading) = self.turn.try_lock() {
                drop(core);
                buf.resize(16 << 10, 0);
                let _ = pump::read_once(shared, &self.stream, conn, &mut buf);
            } else {
                drop(wait_until(&shared.event_cv, core, Some(Instant::now() + PATIENCE)));
            }
        };
        let _ = self.stream.set_read_timeout(None);
        body.map_err(|e| {
            self.done = true;
            e.into()
        })
    }

    /// Answers with `status`, extra `headers` and `body` ([`tidewire::http::response`]); the
    /// connection's writer writes it and closes. `InvalidInput` for a response that cannot
    /// be written, `NotConnected` once answered.
    pub fn respond(mut self, status: u16, headers: &[(&str, &str)], body: &[u8]) -> io::Result<()> {
        if self.done {
            return Err(ErrorKind::NotConnected.into());
        }
        let conn = self.conn;
        // Invalid: dropped unanswered (closed) on return.
        let answered = self.shared.with(|s, now| s.answer(now, conn, status, headers, body));
        self.done = answered.is_ok();
        answered.map_err(invalid_input)
    }
}

impl Drop for HttpRequest {
    fn drop(&mut self) {
        if !self.done {
            let conn = self.conn;
            self.shared.with(|s, now| s.drop_request(now, conn));
        }
    }
}
