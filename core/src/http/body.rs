//! [`BodyReader`]: the body of one request, as sans-IO code. It reads the framing from the
//! head (`Content-Length`, or `Transfer-Encoding: chunked` as RFC 9112 §7.1 decodes it),
//! bounds the body, times it out, says when to answer `100 Continue`, and knows the answer
//! to every way a body can fail ([`BodyError::response`]). The adapter only moves socket
//! bytes into it.
//!
//! - Inputs: [`handle_read`](BodyReader::handle_read), [`handle_eof`](BodyReader::handle_eof),
//!   [`handle_timeout`](BodyReader::handle_timeout).
//! - Outputs: [`poll_transmit`](BodyReader::poll_transmit) (the interim `100 Continue`),
//!   [`poll_body`](BodyReader::poll_body) (the body or why there is none),
//!   [`poll_timeout`](BodyReader::poll_timeout).
//!
//! ```
//! use tidewire::http::{BodyReader, RequestParser};
//! use tidewire::{Duration, Instant};
//!
//! let head = b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
//! let (req, _) = RequestParser::new(1 << 10).parse(head).unwrap().unwrap();
//! let mut body = BodyReader::new(Instant::now(), &req, 1 << 20, Duration::from_secs(10));
//! body.handle_read(b"5\r\nhello\r\n");
//! assert!(body.poll_body().is_none(), "more to come");
//! body.handle_read(b"0\r\n\r\n");
//! assert_eq!(body.poll_body().unwrap().unwrap(), &b"hello"[..]);
//! ```

use bytes::{Bytes, BytesMut};

use super::{Request, response};
use crate::time::{Duration, Instant};

/// The longest chunk-size line or trailer line.
const MAX_LINE: usize = 4 << 10;
/// The most bytes of trailer fields after the last chunk.
const MAX_TRAILERS: usize = 16 << 10;

/// Why a request body could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BodyError {
    /// A malformed `Content-Length` or chunk, or both `Content-Length` and
    /// `Transfer-Encoding` (400).
    #[error("malformed request body framing")]
    Malformed,
    /// A transfer coding other than `chunked` (501).
    #[error("unsupported Transfer-Encoding")]
    Unsupported,
    /// More than the limit (413).
    #[error("request body over the limit of {max} bytes")]
    TooLarge {
        /// The limit.
        max: usize,
    },
    /// The body did not arrive in time (408).
    #[error("request body timed out")]
    TimedOut,
    /// The peer closed before the end of the body (no answer: it is gone).
    #[error("connection closed before the end of the request body")]
    Truncated,
}

impl BodyError {
    /// The status a server answers with (`None`: the peer is gone, nothing to answer).
    #[must_use]
    pub fn status(self) -> Option<u16> {
        match self {
            Self::Malformed => Some(400),
            Self::Unsupported => Some(501),
            Self::TooLarge { .. } => Some(413),
            Self::TimedOut => Some(408),
            Self::Truncated => None,
        }
    }

    /// The complete response a server answers with (`Connection: close`), if any.
    #[must_use]
    pub fn response(self) -> Option<Bytes> {
        let text = format!("{self}\n");
        response(self.status()?, &[], text.as_bytes()).ok()
    }
}

impl From<BodyError> for std::io::Error {
    /// `TimedOut`, `UnexpectedEof` (truncated) or `InvalidData`, with the error inside.
    fn from(e: BodyError) -> Self {
        let kind = match e {
            BodyError::TimedOut => std::io::ErrorKind::TimedOut,
            BodyError::Truncated => std::io::ErrorKind::UnexpectedEof,
            _ => std::io::ErrorKind::InvalidData,
        };
        std::io::Error::new(kind, e)
    }
}

/// Where the body's framing is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    /// `Content-Length`: this many bytes still to come.
    Length(usize),
    /// Chunked: a chunk-size line.
    Size,
    /// Chunked: this many bytes of the current chunk still to come.
    Data(usize),
    /// Chunked: the CRLF after a chunk's data.
    DataEnd,
    /// Chunked: trailer lines, until an empty one.
    Trailers,
    /// Complete, or failed.
    Finished,
}

/// The body of one HTTP/1.1 request: fed socket bytes, it decodes `Content-Length` or
/// chunked framing, bounds and times the body out, and answers `100 Continue` and every
/// failure ([`BodyError::response`]).
#[derive(Debug)]
pub struct BodyReader {
    framing: Framing,
    body: BytesMut,
    max: usize,
    /// A chunked line being read (without its CRLF).
    line: Vec<u8>,
    trailer_bytes: usize,
    /// `Expect: 100-continue`, not answered yet.
    expects_continue: bool,
    deadline: Instant,
    outcome: Option<Result<(), BodyError>>,
    /// The outcome was pulled.
    taken: bool,
}

impl BodyReader {
    /// The body of `request`, at most `max` bytes, due within `timeout` from `now`. A head
    /// whose framing is bad fails at once ([`poll_body`](Self::poll_body)).
    #[must_use]
    pub fn new(now: Instant, request: &Request, max: usize, timeout: Duration) -> Self {
        let mut reader = Self {
            framing: Framing::Finished,
            body: BytesMut::new(),
            max,
            line: Vec::new(),
            trailer_bytes: 0,
            expects_continue: request.has_token("expect", "100-continue"),
            deadline: now + timeout,
            outcome: None,
            taken: false,
        };
        match framing(request, max) {
            Ok(Framing::Length(0)) => reader.outcome = Some(Ok(())),
            Ok(f) => {
                if let Framing::Length(len) = f {
                    reader.body.reserve(len);
                }
                reader.framing = f;
            }
            Err(e) => reader.outcome = Some(Err(e)),
        }
        reader
    }

    /// Bytes from the socket. Bytes after the end of the body are ignored (one request per
    /// connection).
    pub fn handle_read(&mut self, mut data: &[u8]) {
        while !data.is_empty() && self.outcome.is_none() {
            match self.step(data) {
                Ok(used) => data = &data[used..],
                Err(e) => self.fail(e),
            }
        }
    }

    /// The peer finished sending: a body not complete yet is [`BodyError::Truncated`].
    pub fn handle_eof(&mut self) {
        if self.outcome.is_none() {
            self.fail(BodyError::Truncated);
        }
    }

    /// Past the deadline, a body not complete yet is [`BodyError::TimedOut`]. Spurious
    /// calls are no-ops.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.outcome.is_none() && now >= self.deadline {
            self.fail(BodyError::TimedOut);
        }
    }

    /// The interim `100 Continue` response to write before reading on, once: when the
    /// client asked for it and the body is not complete yet. New after
    /// [`new`](Self::new) and the first [`handle_read`](Self::handle_read).
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        if !std::mem::take(&mut self.expects_continue) || self.outcome.is_some() {
            return None;
        }
        Some(Bytes::from_static(b"HTTP/1.1 100 Continue\r\n\r\n"))
    }

    /// The body once complete, or why there is none (answer it with
    /// [`BodyError::response`]); given once. `None`: more bytes are needed. New after every
    /// input.
    #[must_use]
    pub fn poll_body(&mut self) -> Option<Result<Bytes, BodyError>> {
        if self.taken {
            return None;
        }
        let outcome = self.outcome?;
        self.taken = true;
        Some(outcome.map(|()| std::mem::take(&mut self.body).freeze()))
    }

    /// When [`handle_timeout`](Self::handle_timeout) must run (`None` once finished).
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.outcome.is_none().then_some(self.deadline)
    }

    /// Lowers the limit to `max` (a body known or read to be over it fails with
    /// [`BodyError::TooLarge`]) and, while the body is not complete, gives it until
    /// `now + timeout`. For a reader started before the application said what it takes.
    pub fn limit(&mut self, now: Instant, max: usize, timeout: Duration) {
        if max < self.max {
            self.max = max;
            let announced = match self.framing {
                Framing::Length(left) => left,
                _ => 0,
            };
            if self.outcome.is_none_or(|o| o.is_ok())
                && self.body.len().saturating_add(announced) > max
            {
                self.fail(BodyError::TooLarge { max });
            }
        }
        if self.outcome.is_none() {
            self.deadline = now + timeout;
        }
    }

    fn fail(&mut self, e: BodyError) {
        self.framing = Framing::Finished;
        self.body = BytesMut::new();
        self.outcome = Some(Err(e));
    }

    fn complete(&mut self) {
        self.framing = Framing::Finished;
        self.outcome = Some(Ok(()));
    }

    /// Consumes a prefix of `data`; how many bytes.
    fn step(&mut self, data: &[u8]) -> Result<usize, BodyError> {
        match self.framing {
            Framing::Length(left) => {
                let n = left.min(data.len());
                self.body.extend_from_slice(&data[..n]);
                self.framing = Framing::Length(left - n);
                if left == n {
                    self.complete();
                }
                Ok(n)
            }
            Framing::Data(left) => {
                let n = left.min(data.len());
                self.body.extend_from_slice(&data[..n]);
                self.framing = if left == n { Framing::DataEnd } else { Framing::Data(left - n) };
                Ok(n)
            }
            Framing::Size | Framing::DataEnd | Framing::Trailers => {
                let Some(used) = self.read_line(data)? else { return Ok(data.len()) };
                let line = std::mem::take(&mut self.line);
                self.on_line(&line)?;
                Ok(used)
            }
            Framing::Finished => Ok(data.len()),
        }
    }

    /// Appends to the current line; `Some(bytes used)` once it ended with CRLF.
    fn read_line(&mut self, data: &[u8]) -> Result<Option<usize>, BodyError> {
        let (taken, ended) = match memchr::memchr(b'\n', data) {
            Some(i) => (&data[..=i], true),
            None => (data, false),
        };
        if self.line.len() + taken.len() > MAX_LINE + 2 {
            return Err(BodyError::Malformed);
        }
        if self.framing == Framing::Trailers {
            self.trailer_bytes += taken.len();
            if self.trailer_bytes > MAX_TRAILERS {
                return Err(BodyError::Malformed);
            }
        }
        self.line.extend_from_slice(taken);
        if !ended {
            return Ok(None);
        }
        // A line ends with CRLF and holds no other CR or LF.
        let Some(content) = self.line.strip_suffix(b"\r\n") else {
            return Err(BodyError::Malformed);
        };
        if content.iter().any(|&b| b == b'\r' || b == b'\n') {
            return Err(BodyError::Malformed);
        }
        self.line.truncate(content.len());
        Ok(Some(taken.len()))
    }

    fn on_line(&mut self, line: &[u8]) -> Result<(), BodyError> {
        match self.framing {
            Framing::Size => {
                let size = chunk_size(line)?;
                if size == 0 {
                    self.framing = Framing::Trailers;
                } else if size > self.max - self.body.len() {
                    return Err(BodyError::TooLarge { max: self.max });
                } else {
                    self.framing = Framing::Data(size);
                }
            }
            Framing::DataEnd if line.is_empty() => self.framing = Framing::Size,
            Framing::DataEnd => return Err(BodyError::Malformed),
            Framing::Trailers if line.is_empty() => self.complete(),
            _ => {}
        }
        Ok(())
    }
}

/// The framing the head announces, checked against `max`.
fn framing(request: &Request, max: usize) -> Result<Framing, BodyError> {
    let mut codings =
        request.headers().filter(|(n, _)| n.eq_ignore_ascii_case("transfer-encoding"));
    if let Some((_, coding)) = codings.next() {
        // Both framings, or more than one coding: a request smuggling attempt or a proxy's
        // mistake; either way not read (RFC 9112 §6.1).
        if codings.next().is_some() || request.header("content-length").is_some() {
            return Err(BodyError::Malformed);
        }
        return if coding.trim_ascii().eq_ignore_ascii_case(b"chunked") {
            Ok(Framing::Size)
        } else {
            Err(BodyError::Unsupported)
        };
    }
    match request.content_length() {
        Ok(len) => match usize::try_from(len.unwrap_or(0)) {
            Ok(len) if len <= max => Ok(Framing::Length(len)),
            _ => Err(BodyError::TooLarge { max }),
        },
        Err(_) => Err(BodyError::Malformed),
    }
}

/// A chunk-size line's size: hex digits, then optional whitespace and extensions.
fn chunk_size(line: &[u8]) -> Result<usize, BodyError> {
    let end = line.iter().position(|&b| b == b';').unwrap_or(line.len());
    let digits = line[..end].trim_ascii_end();
    if digits.is_empty() || digits.len() > 15 || !digits.iter().all(u8::is_ascii_hexdigit) {
        return Err(BodyError::Malformed);
    }
    let text = std::str::from_utf8(digits).map_err(|_| BodyError::Malformed)?;
    usize::from_str_radix(text, 16).map_err(|_| BodyError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::RequestParser;

    fn request(headers: &str) -> Request {
        let head = format!("POST /x HTTP/1.1\r\nHost: h\r\n{headers}\r\n");
        RequestParser::new(4096).parse(head.as_bytes()).unwrap().unwrap().0
    }

    /// Reads `input` whole, one byte at a time, and with trailing bytes; the three agree.
    fn read(headers: &str, input: &[u8], max: usize) -> Option<Result<Bytes, BodyError>> {
        let now = crate::time::test_epoch();
        let req = request(headers);
        let mut whole = BodyReader::new(now, &req, max, Duration::from_secs(1));
        whole.handle_read(input);
        let whole = whole.poll_body();
        let mut bytewise = BodyReader::new(now, &req, max, Duration::from_secs(1));
        for b in input {
            bytewise.handle_read(std::slice::from_ref(b));
        }
        assert_eq!(bytewise.poll_body(), whole, "byte by byte");
        let mut trailing = BodyReader::new(now, &req, max, Duration::from_secs(1));
        trailing.handle_read(&[input, b"GET / HTTP/1.1\r\n"].concat());
        if whole.is_some() {
            assert_eq!(trailing.poll_body(), whole, "with trailing bytes");
        }
        whole
    }

    fn ok(b: &[u8]) -> Option<Result<Bytes, BodyError>> {
        Some(Ok(Bytes::copy_from_slice(b)))
    }

    #[test]
    fn content_length_bodies() {
        assert_eq!(read("Content-Length: 5\r\n", b"hello", 10), ok(b"hello"));
        assert_eq!(read("", b"", 10), ok(b""));
        assert_eq!(read("Content-Length: 5\r\n", b"hel", 10), None);
        assert_eq!(
            read("Content-Length: 11\r\n", b"", 10),
            Some(Err(BodyError::TooLarge { max: 10 }))
        );
        assert_eq!(read("Content-Length: x\r\n", b"", 10), Some(Err(BodyError::Malformed)));
    }

    #[test]
    fn chunked_bodies() {
        let te = "Transfer-Encoding: chunked\r\n";
        assert_eq!(
            read(te, b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n", 20),
            ok(b"hello world")
        );
        assert_eq!(read(te, b"A \r\n0123456789\r\n0\r\nX-T: 1\r\n\r\n", 20), ok(b"0123456789"));
        assert_eq!(read(te, b"5\r\nhello\r\n", 20), None);
        assert_eq!(
            read(te, b"5\r\nhello\r\n6\r\n world\r\n", 10),
            Some(Err(BodyError::TooLarge { max: 10 }))
        );
        assert_eq!(read(te, b"zz\r\n", 10), Some(Err(BodyError::Malformed)));
        assert_eq!(read(te, b"5\nhello\r\n", 10), Some(Err(BodyError::Malformed)));
        assert_eq!(read(te, b"2\r\nhello\r\n", 10), Some(Err(BodyError::Malformed)));
        let huge = vec![b'1'; MAX_LINE + 8];
        assert_eq!(read(te, &huge, 10), Some(Err(BodyError::Malformed)));
    }

    #[test]
    fn framing_refusals() {
        let both = "Transfer-Encoding: chunked\r\nContent-Length: 3\r\n";
        assert_eq!(read(both, b"", 10), Some(Err(BodyError::Malformed)));
        assert_eq!(read("Transfer-Encoding: gzip\r\n", b"", 10), Some(Err(BodyError::Unsupported)));
        assert_eq!(BodyError::Unsupported.status(), Some(501));
        assert!(BodyError::TimedOut.response().unwrap().starts_with(b"HTTP/1.1 408 "));
        assert_eq!(BodyError::Truncated.response(), None);
        let io = |e: BodyError| std::io::Error::from(e).kind();
        assert_eq!(io(BodyError::TimedOut), std::io::ErrorKind::TimedOut);
        assert_eq!(io(BodyError::Truncated), std::io::ErrorKind::UnexpectedEof);
        assert_eq!(io(BodyError::TooLarge { max: 1 }), std::io::ErrorKind::InvalidData);
    }

    #[test]
    fn a_lowered_limit_and_a_new_deadline() {
        let now = crate::time::test_epoch();
        let second = Duration::from_secs(1);
        let start = |headers: &str, input: &[u8]| {
            let mut r = BodyReader::new(now, &request(headers), 100, second);
            r.handle_read(input);
            r
        };
        // Announced over the new limit, read over it, or within it.
        let mut r = start("Content-Length: 20\r\n", b"abc");
        r.limit(now, 10, second);
        assert_eq!(r.poll_body(), Some(Err(BodyError::TooLarge { max: 10 })));
        let te = "Transfer-Encoding: chunked\r\n";
        let mut r = start(te, b"c\r\n0123456789ab\r\n0\r\n\r\n");
        r.limit(now, 10, second);
        assert_eq!(r.poll_body(), Some(Err(BodyError::TooLarge { max: 10 })));
        let mut r = start(te, b"3\r\nabc\r\n");
        r.limit(now, 10, second);
        r.handle_read(b"8\r\n01234567\r\n");
        assert_eq!(r.poll_body(), Some(Err(BodyError::TooLarge { max: 10 })));
        // A later deadline for what has not arrived; a raised limit stays the old one.
        let mut r = start("Content-Length: 4\r\n", b"ab");
        r.limit(now + second, 1000, second);
        r.handle_timeout(now + second);
        assert_eq!(r.poll_body(), None, "the deadline moved");
        r.handle_read(b"cd");
        assert_eq!(r.poll_body(), Some(Ok(Bytes::from_static(b"abcd"))));
        let mut r = start("Content-Length: 200\r\n", b"");
        r.limit(now, 1000, second);
        assert_eq!(r.poll_body(), Some(Err(BodyError::TooLarge { max: 100 })));
    }

    #[test]
    fn continue_eof_and_timeout() {
        let now = crate::time::test_epoch();
        let req = request("Content-Length: 4\r\nExpect: 100-continue\r\n");
        let mut r = BodyReader::new(now, &req, 10, Duration::from_secs(1));
        r.handle_read(b"ab");
        assert!(r.poll_transmit().unwrap().starts_with(b"HTTP/1.1 100 Continue"));
        assert_eq!(r.poll_transmit(), None, "once");
        r.handle_timeout(now);
        assert_eq!(r.poll_body(), None, "not due yet");
        r.handle_timeout(now + Duration::from_secs(1));
        assert_eq!(r.poll_body(), Some(Err(BodyError::TimedOut)));
        assert_eq!(r.poll_body(), None, "given once");
        assert_eq!(r.poll_timeout(), None);

        let mut r = BodyReader::new(now, &req, 10, Duration::from_secs(1));
        r.handle_read(b"abcd");
        assert_eq!(r.poll_transmit(), None, "complete: no 100 Continue");
        let mut r = BodyReader::new(now, &req, 10, Duration::from_secs(1));
        r.handle_eof();
        assert_eq!(r.poll_body(), Some(Err(BodyError::Truncated)));
    }
}
