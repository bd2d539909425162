//! [`HttpRequest`]: one plain HTTP request the core server handed to the application's
//! HTTP handler.

use std::io::{self, ErrorKind, Read as _, Write as _};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tidewire::http::{BodyError, BodyReader, Request, response};
use tidewire::ws::WsConfig;

/// Bytes read from the socket at a time while a head or a body arrives.
const CHUNK: usize = 8 << 10;
/// The most bytes a lingering close reads (and discards) before it gives up on the peer.
const LINGER_BYTES: usize = 1 << 20;
/// The longest a lingering close waits for the peer's end of the connection.
const LINGER_MAX: Duration = Duration::from_secs(2);

/// Timeouts of plain HTTP requests, taken from the server's `WsConfig`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct HttpLimits {
    /// `handshake_timeout`: the time a request body has to arrive (from `read_body`).
    pub(crate) body_timeout: Duration,
    /// `send_timeout`: a write that makes no progress this long fails.
    pub(crate) send_timeout: Option<Duration>,
    /// `close_timeout` (at most 2 s): how long a closing connection waits for the peer's end.
    pub(crate) linger: Duration,
}

impl HttpLimits {
    pub(crate) fn from_ws(cfg: &WsConfig) -> Self {
        Self {
            body_timeout: cfg.handshake_timeout,
            send_timeout: cfg.send_timeout,
            linger: cfg.close_timeout.min(LINGER_MAX),
        }
    }

    /// The socket write timeout of a blocking write.
    fn write_timeout(&self) -> Duration {
        self.send_timeout.unwrap_or(Duration::from_secs(30)).max(Duration::from_millis(1))
    }
}

fn is_retry(e: &io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted)
}

fn write_all(stream: &TcpStream, bytes: &[u8], limits: &HttpLimits) -> io::Result<()> {
    stream.set_write_timeout(Some(limits.write_timeout()))?;
    (&*stream).write_all(bytes)
}

/// Closes after a response: sends FIN, then reads and discards what the peer still sends
/// until its end of file (at most `linger`, 1 MiB). Closing a socket with unread input sends
/// a reset, which can destroy the response before the peer read it.
fn linger_close(stream: &TcpStream, linger: Duration) {
    let _ = stream.shutdown(Shutdown::Write);
    let until = Instant::now() + linger;
    let mut chunk = [0u8; 1024];
    let mut discarded = 0;
    while discarded < LINGER_BYTES {
        let now = Instant::now();
        if now >= until {
            break;
        }
        if stream.set_read_timeout(Some((until - now).max(Duration::from_millis(1)))).is_err() {
            break;
        }
        match (&*stream).read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => discarded += n,
            Err(e) if is_retry(&e) => {}
            Err(_) => break,
        }
    }
    let _ = stream.shutdown(Shutdown::Both);
}

fn invalid_input(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(ErrorKind::InvalidInput, e.to_string())
}

/// One plain HTTP request for a path that is not a hub route, handed to the handler of
/// [`Server::serve_with`](crate::Server::serve_with) on the connection's own thread.
///
/// Answer it once, with [`respond`](Self::respond); authenticate before that (a `401` or
/// `403` with `respond`), exactly as for upgrades. The connection closes after the
/// response (one request per connection, `Connection: close`). Dropping the request
/// unanswered drops the connection.
pub struct HttpRequest {
    request: Request,
    /// Bytes read after the head: the start of the body.
    early: Vec<u8>,
    peer: SocketAddr,
    stream: Arc<TcpStream>,
    limits: HttpLimits,
    /// A response was written (or the connection given up): nothing more may be sent.
    answered: bool,
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
    pub(crate) fn new(
        request: Request,
        early: Vec<u8>,
        peer: SocketAddr,
        stream: Arc<TcpStream>,
        limits: HttpLimits,
    ) -> Self {
        Self { request, early, peer, stream, limits, answered: false }
    }

    /// The request head: method, path, query parameters, headers, credentials
    /// ([`token`](Request::token)), `Last-Event-ID`…
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
    /// `max` bytes, within the server's `WsConfig::handshake_timeout` from this call. Answers
    /// `100 Continue` first when the client sent `Expect: 100-continue`.
    ///
    /// When the body cannot be read this call answers the request itself and closes the
    /// connection (the core's [`BodyError::response`]): `413` for a body over `max`, `400`
    /// for malformed framing (a bad `Content-Length` or chunk, or both framings), `501` for
    /// a transfer coding other than chunked, `408` when it does not arrive in time. A later
    /// [`respond`](Self::respond) then fails with `NotConnected`.
    ///
    /// # Errors
    /// `InvalidData` (answered 413, 400 or 501), `TimedOut` (answered 408),
    /// `UnexpectedEof` or the socket's error (the peer left); `NotConnected` if the request
    /// was answered already.
    pub fn read_body(&mut self, max: usize) -> io::Result<Bytes> {
        if self.answered {
            return Err(ErrorKind::NotConnected.into());
        }
        let mut reader =
            BodyReader::new(Instant::now(), &self.request, max, self.limits.body_timeout);
        reader.handle_read(&std::mem::take(&mut self.early));
        let mut chunk = vec![0u8; CHUNK];
        loop {
            if let Some(interim) = reader.poll_transmit()
                && let Err(e) = write_all(&self.stream, &interim, &self.limits)
            {
                self.give_up();
                return Err(e);
            }
            match reader.poll_body() {
                Some(Ok(body)) => return Ok(body),
                Some(Err(e)) => return Err(self.body_failed(e)),
                None => {}
            }
            let now = Instant::now();
            let deadline = reader.poll_timeout().unwrap_or(now);
            if now >= deadline {
                reader.handle_timeout(now);
                continue;
            }
            self.stream.set_read_timeout(Some((deadline - now).max(Duration::from_millis(1))))?;
            match (&*self.stream).read(&mut chunk) {
                Ok(0) => reader.handle_eof(),
                Ok(n) => reader.handle_read(&chunk[..n]),
                Err(e) if is_retry(&e) => {}
                Err(e) => {
                    self.give_up();
                    return Err(e);
                }
            }
        }
    }

    /// Answers a body that could not be read (when the peer is still there) and closes.
    fn body_failed(&mut self, e: BodyError) -> io::Error {
        match e.response() {
            Some(bytes) => drop(self.finish(&bytes)),
            None => self.give_up(),
        }
        let kind = match e {
            BodyError::TimedOut => ErrorKind::TimedOut,
            BodyError::Truncated => ErrorKind::UnexpectedEof,
            _ => ErrorKind::InvalidData,
        };
        io::Error::new(kind, e)
    }

    /// Answers with `status`, extra `headers` and `body`, then closes the connection.
    /// `Content-Length` and `Connection: close` are set here; `Content-Type` defaults to
    /// `text/plain; charset=utf-8`.
    ///
    /// # Errors
    /// `InvalidInput` for a status outside 200–599 or a header that cannot be written
    /// (the connection is then dropped), `NotConnected` if the request was answered
    /// already, or the socket's error.
    pub fn respond(self, status: u16, headers: &[(&str, &str)], body: &[u8]) -> io::Result<()> {
        let bytes = response(status, headers, body).map_err(invalid_input)?;
        self.send(&bytes)
    }

    /// Writes a complete response, then closes without losing it (see [`linger_close`]).
    fn send(mut self, bytes: &[u8]) -> io::Result<()> {
        if self.answered {
            return Err(ErrorKind::NotConnected.into());
        }
        self.finish(bytes)
    }

    fn finish(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.answered = true;
        let written = write_all(&self.stream, bytes, &self.limits);
        match written {
            Ok(()) => linger_close(&self.stream, self.limits.linger),
            Err(_) => drop(self.stream.shutdown(Shutdown::Both)),
        }
        written
    }

    fn give_up(&mut self) {
        self.answered = true;
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

impl Drop for HttpRequest {
    fn drop(&mut self) {
        if !self.answered {
            let _ = self.stream.shutdown(Shutdown::Both);
        }
    }
}
