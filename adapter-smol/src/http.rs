//! [`HttpRequest`]: a plain HTTP request the core server keeps for the application, which
//! reads its body and answers it through the core ([`Server::read_body`](tidewire::server::Server::read_body),
//! [`Server::answer`](tidewire::server::Server::answer)); the connection's task moves the bytes.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tidewire::http::Request;
use tidewire::server::ConnHandle;

use crate::outbound::wait;
use crate::server::ServerState;

/// A plain HTTP request for a path the hub does not serve, handed to the HTTP handler of
/// [`Server::serve_with`](crate::Server::serve_with). Answer it once with
/// [`respond`](Self::respond), which closes the connection; dropping it unanswered drops it.
pub struct HttpRequest {
    server: Arc<ServerState>,
    conn: ConnHandle,
    request: Request,
    peer: SocketAddr,
    /// Answered, or the body failed (and the core answered).
    done: bool,
}

impl HttpRequest {
    pub(crate) fn new(
        server: Arc<ServerState>,
        conn: ConnHandle,
        request: Request,
        peer: SocketAddr,
    ) -> Self {
        Self { server, conn, request, peer, done: false }
    }

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
    /// ([`Server::read_body`](tidewire::server::Server::read_body)). A body that cannot be read is answered by
    /// the core ([`BodyError::response`](tidewire::http::BodyError::response); `InvalidData`, `TimedOut` or `UnexpectedEof`) and
    /// the connection closed. `NotConnected` once answered.
    pub async fn read_body(&mut self, max: usize) -> io::Result<Bytes> {
        if self.done {
            return Err(io::ErrorKind::NotConnected.into());
        }
        let (server, conn) = (&self.server, self.conn);
        let read = || server.with_core(|c| c.server.read_body(Instant::now(), conn, max));
        let body = wait(&server.arrived, read).await;
        body.map_err(|e| {
            self.done = true;
            e.into()
        })
    }

    /// Answers with `status`, extra `headers` and `body` ([`tidewire::http::response`]); the
    /// connection's task writes it and closes. `InvalidInput` for a response that cannot be
    /// written, `NotConnected` once answered.
    #[allow(clippy::unused_async)] // async like the rest of the adapter's API
    pub async fn respond(
        mut self,
        status: u16,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> io::Result<()> {
        if self.done {
            return Err(io::ErrorKind::NotConnected.into());
        }
        let conn = self.conn;
        let answer = |c: &mut crate::pump::Core| {
            c.server.answer(Instant::now(), conn, status, headers, body)
        };
        // Invalid: dropped unanswered (closed) on return.
        let answered = self.server.with_core(answer);
        self.done = answered.is_ok();
        answered.map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
    }
}

impl Drop for HttpRequest {
    fn drop(&mut self) {
        if !self.done {
            let conn = self.conn;
            self.server.with_core(|c| c.server.drop_request(Instant::now(), conn));
        }
    }
}

impl fmt::Debug for HttpRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpRequest")
            .field("peer", &self.peer)
            .field("method", &self.request.method())
            .field("path", &self.request.path())
            .finish_non_exhaustive()
    }
}
