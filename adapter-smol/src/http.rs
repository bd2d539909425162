//! Plain HTTP requests: [`HttpRequest`], what [`Server::serve_with`](crate::Server::serve_with)
//! hands the application for every request head that is not a WebSocket upgrade.

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

/// How long a closed response waits for the client to close its side (so that unread
/// request bytes do not turn the close into a reset that destroys the response).
const LINGER: Duration = Duration::from_secs(2);

/// One plain HTTP/1.1 request (anything but a WebSocket upgrade), handed to the `http`
/// handler of [`Server::serve_with`](crate::Server::serve_with).
///
/// Answer it with [`respond`](Self::respond). Tidewire serves one request per connection:
/// the connection closes after the response. Dropping the request unanswered closes the
/// connection without a response.
pub struct HttpRequest {
    stream: Arc<Async<TcpStream>>,
    peer: SocketAddr,
    request: Request,
    /// Bytes that arrived after the head (the start of the body).
    rest: Vec<u8>,
    registration: Registration,
    /// A response was written (or the connection given up): nothing more may be written.
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

    /// The request head: method, path, query, headers, `token()`, `last_event_id()`…
    #[must_use]
    pub fn request(&self) -> &Request {
        &self.request
    }

    /// The peer's address.
    #[must_use]
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    /// Reads the body (by `Content-Length` or chunked; empty without either), at most
    /// `max` bytes, answering `100 Continue` first when the client asked for it. The whole
    /// body must arrive within `endpoint.head_timeout`.
    ///
    /// # Errors
    /// The request is answered here (the core's [`BodyError::response`]) and the
    /// connection closed, then: `InvalidData` with 400 for malformed framing (a bad
    /// `Content-Length` or chunk, or both framings), 501 for a transfer coding other than
    /// chunked, or 413 for a body over `max` bytes; `TimedOut` with 408 when it arrives too
    /// slowly; `UnexpectedEof` when the client closes first; `NotConnected` after a
    /// response.
    pub async fn read_body(&mut self, max: usize) -> io::Result<Bytes> {
        if self.done {
            return Err(io::ErrorKind::NotConnected.into());
        }
        let cfg = &self.registration.server.cfg.endpoint;
        let close_timeout = cfg.ws.close_timeout;
        let mut reader = BodyReader::new(Instant::now(), &self.request, max, cfg.head_timeout);
        reader.handle_read(&std::mem::take(&mut self.rest));
        let mut chunk = vec![0u8; 16 << 10];
        loop {
            if let Some(interim) = reader.poll_transmit() {
                write_all_until(&self.stream, vec![interim], Instant::now() + close_timeout)
                    .await?;
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

    /// Answers a body that could not be read (when the peer is still there) and closes.
    async fn body_failed(&mut self, e: BodyError) -> io::Error {
        match e.response() {
            Some(bytes) => drop(self.send_raw(bytes).await),
            None => self.give_up(),
        }
        let kind = match e {
            BodyError::TimedOut => io::ErrorKind::TimedOut,
            BodyError::Truncated => io::ErrorKind::UnexpectedEof,
            _ => io::ErrorKind::InvalidData,
        };
        io::Error::new(kind, e)
    }

    /// Writes a complete response (status 200–599, extra `headers`, `body`; the
    /// `Content-Length` and `Connection: close` are added) within `WsConfig::close_timeout`
    /// and closes the connection.
    ///
    /// # Errors
    /// `InvalidInput` for a status outside 200–599 or a header that cannot be written (the
    /// connection is then closed without a response); the write's error when the peer is
    /// gone; `NotConnected` after a response.
    pub async fn respond(
        mut self,
        status: u16,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> io::Result<()> {
        match tidewire::http::response(status, headers, body) {
            Ok(bytes) => self.send_raw(bytes).await,
            Err(e) => {
                self.give_up();
                Err(io::Error::new(io::ErrorKind::InvalidInput, e))
            }
        }
    }

    /// Writes a complete response and closes the connection (lingering briefly so that
    /// the client reads it).
    async fn send_raw(&mut self, bytes: Bytes) -> io::Result<()> {
        if self.done {
            return Err(io::ErrorKind::NotConnected.into());
        }
        self.done = true;
        let close_timeout = self.registration.server.cfg.endpoint.ws.close_timeout;
        let written =
            write_all_until(&self.stream, vec![bytes], Instant::now() + close_timeout).await;
        if written.is_ok() {
            self.linger(Instant::now() + close_timeout.min(LINGER)).await;
        }
        let _ = self.stream.get_ref().shutdown(Shutdown::Both);
        written
    }

    /// Closes our side and reads until the client closes its side (or `until`), so that
    /// unread request bytes do not reset the connection under the response.
    async fn linger(&self, until_at: Instant) {
        if self.stream.get_ref().shutdown(Shutdown::Write).is_err() {
            return;
        }
        let mut sink = [0u8; 512];
        let mut stream = &*self.stream;
        loop {
            match until(until_at, stream.read(&mut sink)).await {
                Some(Ok(n)) if n > 0 => {}
                Some(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                _ => return,
            }
        }
    }

    /// Closes the connection without (further) response.
    fn give_up(&mut self) {
        self.done = true;
        let _ = self.stream.get_ref().shutdown(Shutdown::Both);
    }
}

impl Drop for HttpRequest {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.stream.get_ref().shutdown(Shutdown::Both);
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

/// Writes `chunks`, giving up at `deadline`.
pub(crate) async fn write_all_until(
    stream: &Async<TcpStream>,
    chunks: Vec<Bytes>,
    deadline: Instant,
) -> io::Result<()> {
    let write = async {
        let mut stream = stream;
        for chunk in &chunks {
            stream.write_all(chunk).await?;
        }
        Ok(())
    };
    until(deadline, write).await.unwrap_or_else(|| Err(io::ErrorKind::TimedOut.into()))
}
