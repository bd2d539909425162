//! [`HttpRequest`]: a plain HTTP request the core server handed to the application.

use std::fmt;
use std::io;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use smol::Async;
use smol::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tidewire::http::{BodyError, BodyReader, Request};

use crate::server::Registration;
use crate::until;

/// The longest a lingering close waits for the peer's end.
const LINGER: Duration = Duration::from_secs(2);

/// A plain HTTP request for a path the hub does not serve, handed to the HTTP handler of
/// [`Server::serve_with`](crate::Server::serve_with). Answer it once with
/// [`respond`](Self::respond), which closes the connection; dropping it unanswered drops it.
pub struct HttpRequest {
    stream: Arc<Async<TcpStream>>,
    peer: SocketAddr,
    request: Request,
    /// Bytes read after the head: the start of the body.
    rest: Vec<u8>,
    registration: Registration,
    /// A response was written, or the connection given up.
    done: bool,
}

impl HttpRequest {
    pub(crate) fn new(
        stream: Arc<Async<TcpStream>>,
        peer: SocketAddr,
        request: Request,
        rest: Vec<u8>,
        registration: Registration,
    ) -> Self {
        Self { stream, peer, request, rest, registration, done: false }
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

    /// Reads the body ([`BodyReader`]), at most `max` bytes, within `endpoint.head_timeout`.
    /// A body that cannot be read is answered here ([`BodyError::response`]; `InvalidData`,
    /// `TimedOut` or `UnexpectedEof`) and the connection closed. `NotConnected` once answered.
    pub async fn read_body(&mut self, max: usize) -> io::Result<Bytes> {
        if self.done {
            return Err(io::ErrorKind::NotConnected.into());
        }
        let cfg = &self.registration.server.cfg.endpoint;
        let mut reader = BodyReader::new(Instant::now(), &self.request, max, cfg.head_timeout);
        reader.handle_read(&std::mem::take(&mut self.rest));
        let mut chunk = vec![0u8; 16 << 10];
        loop {
            if let Some(interim) = reader.poll_transmit() {
                self.write(&interim).await?;
            }
            match reader.poll_body() {
                Some(Ok(body)) => return Ok(body),
                Some(Err(e)) => return Err(self.body_failed(e).await),
                None => {}
            }
            let deadline = reader.poll_timeout().unwrap_or_else(Instant::now);
            let mut stream = &*self.stream;
            match until(deadline, stream.read(&mut chunk)).await {
                Some(Ok(0)) => reader.handle_eof(),
                Some(Ok(n)) => reader.handle_read(&chunk[..n]),
                Some(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                Some(Err(_)) => reader.handle_eof(),
                None => reader.handle_timeout(Instant::now()),
            }
        }
    }

    /// Answers a body that could not be read (if the peer is still there) and closes.
    async fn body_failed(&mut self, e: BodyError) -> io::Error {
        match e.response() {
            Some(bytes) => drop(self.send_raw(bytes).await),
            None => self.close(),
        }
        let kind = match e {
            BodyError::TimedOut => io::ErrorKind::TimedOut,
            BodyError::Truncated => io::ErrorKind::UnexpectedEof,
            _ => io::ErrorKind::InvalidData,
        };
        io::Error::new(kind, e)
    }

    /// Answers with `status`, extra `headers` and `body` ([`tidewire::http::response`]) within
    /// `WsConfig::close_timeout`, then closes the connection. `InvalidInput` for a response
    /// that cannot be written, `NotConnected` once answered.
    pub async fn respond(
        mut self,
        status: u16,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> io::Result<()> {
        // Invalid: dropped unanswered (closed) on return.
        let bytes = tidewire::http::response(status, headers, body)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        self.send_raw(bytes).await
    }

    /// Writes a complete response, then closes without losing it: sends FIN and discards
    /// input until the peer's end, since unread input would make the close a reset.
    async fn send_raw(&mut self, bytes: Bytes) -> io::Result<()> {
        if self.done {
            return Err(io::ErrorKind::NotConnected.into());
        }
        self.done = true;
        let close_timeout = self.registration.server.cfg.endpoint.ws.close_timeout;
        let written = self.write(&bytes).await;
        if written.is_ok() && self.stream.get_ref().shutdown(Shutdown::Write).is_ok() {
            let linger_until = Instant::now() + close_timeout.min(LINGER);
            let (mut sink, mut stream) = ([0u8; 512], &*self.stream);
            loop {
                match until(linger_until, stream.read(&mut sink)).await {
                    Some(Ok(n)) if n > 0 => {}
                    Some(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                    _ => break,
                }
            }
        }
        self.close();
        written
    }

    /// Closes the connection: no (further) response.
    fn close(&mut self) {
        self.done = true;
        let _ = self.stream.get_ref().shutdown(Shutdown::Both);
    }

    /// Writes `bytes` within `WsConfig::close_timeout`.
    async fn write(&self, bytes: &[u8]) -> io::Result<()> {
        let deadline = Instant::now() + self.registration.server.cfg.endpoint.ws.close_timeout;
        let mut stream = &*self.stream;
        let written = until(deadline, stream.write_all(bytes)).await;
        written.unwrap_or_else(|| Err(io::ErrorKind::TimedOut.into()))
    }
}

impl Drop for HttpRequest {
    fn drop(&mut self) {
        self.close();
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
