//! [`HttpRequest`]: a plain HTTP request the core server handed to the application.

use std::io::{self, ErrorKind, Read as _, Write as _};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tidewire::http::{BodyError, BodyReader, Request, response};
use tidewire::ws::WsConfig;

use crate::conn::{invalid_input, is_retry};
use crate::pump::LINGER;

/// Bytes read at a time while a body arrives.
const CHUNK: usize = 8 << 10;
/// The most bytes a lingering close reads (and discards).
const LINGER_BYTES: usize = 1 << 20;

/// Timeouts of the server's sockets, from its `WsConfig`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct HttpLimits {
    /// `handshake_timeout`: the time a request body has to arrive.
    body_timeout: Duration,
    /// `send_timeout` (30 s without one): a write without progress this long fails.
    pub(crate) write_timeout: Duration,
    /// `close_timeout`, at most [`LINGER`]: a lingering close's wait.
    linger: Duration,
}

impl HttpLimits {
    pub(crate) fn from_ws(cfg: &WsConfig) -> Self {
        let write_timeout = cfg.send_timeout.unwrap_or(Duration::from_secs(30));
        Self {
            body_timeout: cfg.handshake_timeout,
            write_timeout: write_timeout.max(Duration::from_millis(1)),
            linger: cfg.close_timeout.min(LINGER),
        }
    }
}

/// Sends FIN, then discards what the peer still sends until its end (at most `linger` and
/// [`LINGER_BYTES`]): unread input would make the close a reset that destroys the response.
fn linger_close(stream: &TcpStream, linger: Duration) {
    let _ = stream.shutdown(Shutdown::Write);
    let until = Instant::now() + linger;
    let mut chunk = [0u8; 1024];
    let mut discarded = 0;
    while discarded < LINGER_BYTES {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() || stream.set_read_timeout(Some(left)).is_err() {
            break;
        }
        match (&*stream).read(&mut chunk) {
            Ok(n @ 1..) => discarded += n,
            Err(e) if is_retry(&e) => {}
            _ => break,
        }
    }
    let _ = stream.shutdown(Shutdown::Both);
}

/// A plain HTTP request for a path the hub does not serve, handed to the HTTP handler of
/// [`Server::serve_with`](crate::Server::serve_with). Answer it once with
/// [`respond`](Self::respond), which closes the connection; dropping it unanswered drops it.
pub struct HttpRequest {
    pub(crate) request: Request,
    /// Bytes read after the head: the start of the body.
    pub(crate) early: Vec<u8>,
    pub(crate) peer: SocketAddr,
    pub(crate) stream: Arc<TcpStream>,
    pub(crate) limits: HttpLimits,
    /// A response was written, or the connection given up.
    pub(crate) answered: bool,
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

    /// Reads the body ([`BodyReader`]), at most `max` bytes, within `WsConfig::handshake_timeout`.
    /// A body that cannot be read is answered here ([`BodyError::response`]; `InvalidData` or
    /// `TimedOut`) and the connection closed. `NotConnected` once answered.
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
                && let Err(e) = (&*self.stream).write_all(&interim)
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

    /// Answers a body that could not be read (if the peer is still there) and closes.
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

    /// Answers with `status`, extra `headers` and `body` ([`response`]), then closes the
    /// connection. `InvalidInput` for a response that cannot be written, `NotConnected` once
    /// answered.
    pub fn respond(mut self, status: u16, headers: &[(&str, &str)], body: &[u8]) -> io::Result<()> {
        let bytes = response(status, headers, body).map_err(invalid_input)?;
        if self.answered {
            return Err(ErrorKind::NotConnected.into());
        }
        self.finish(&bytes)
    }

    /// Writes a complete response, then closes without losing it ([`linger_close`]).
    fn finish(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.answered = true;
        let written = (&*self.stream).write_all(bytes);
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
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}
