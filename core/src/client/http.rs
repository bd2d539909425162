//! The session's HTTP/1.1 exchanges (SSE streams, polls, publishes): request heads and a
//! resumable reader of one response, head then body. One request per connection
//! (`Connection: close`), as Tidewire's server answers.

use bytes::{BufMut as _, Bytes, BytesMut};

use crate::http::{Response, ResponseParser, check_header, put_header};

/// Percent-encodes a query component: everything but unreserved characters and `:`.
pub(crate) fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~:".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A request head (and body) for `method path` on `host`, or `None` when a header value
/// cannot be written (CR, LF or NUL in a token, say).
pub(crate) fn request(
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<(&str, &[u8])>,
) -> Option<Bytes> {
    check_header("Host", host).ok()?;
    for (name, value) in headers {
        check_header(name, value).ok()?;
    }
    let mut out = BytesMut::with_capacity(128 + path.len() + body.map_or(0, |(_, b)| b.len()));
    out.put_slice(method.as_bytes());
    out.put_u8(b' ');
    out.put_slice(path.as_bytes());
    out.put_slice(b" HTTP/1.1\r\n");
    put_header(&mut out, "Host", host);
    put_header(&mut out, "Connection", "close");
    for (name, value) in headers {
        put_header(&mut out, name, value);
    }
    if let Some((kind, body)) = body {
        put_header(&mut out, "Content-Type", kind);
        put_header(&mut out, "Content-Length", &body.len().to_string());
    }
    out.put_slice(b"\r\n");
    if let Some((_, body)) = body {
        out.put_slice(body);
    }
    Some(out.freeze())
}

/// Why a response could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReadError {
    /// Not HTTP/1.1, a head over the limit, a chunked body (not supported), or a body over
    /// the limit.
    Malformed,
}

/// What the reader has after some bytes.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Progress {
    /// Waiting for more of the head.
    Head,
    /// The head is complete; these body bytes arrived (possibly none).
    Body(Bytes),
}

/// Reads one response: the head with [`ResponseParser`], then body bytes.
#[derive(Debug)]
pub(crate) struct ResponseReader {
    parser: ResponseParser,
    buf: BytesMut,
    head: Option<Response>,
    /// `Content-Length`, when given.
    length: Option<usize>,
    received: usize,
    max_body: usize,
}

impl ResponseReader {
    pub(crate) fn new(max_head: usize, max_body: usize) -> Self {
        Self {
            parser: ResponseParser::new(max_head),
            buf: BytesMut::new(),
            head: None,
            length: None,
            received: 0,
            max_body,
        }
    }

    pub(crate) fn head(&self) -> Option<&Response> {
        self.head.as_ref()
    }

    /// Whether all of a `Content-Length` body arrived.
    pub(crate) fn is_complete(&self) -> bool {
        self.length.is_some_and(|n| self.received >= n)
    }

    /// Feeds bytes; the body bytes past the head are handed back (bytes beyond a
    /// `Content-Length` are dropped).
    pub(crate) fn push(&mut self, data: &[u8]) -> Result<Progress, ReadError> {
        if self.head.is_none() {
            self.buf.extend_from_slice(data);
            let Some((resp, len)) =
                self.parser.parse(&self.buf).map_err(|_| ReadError::Malformed)?
            else {
                return Ok(Progress::Head);
            };
            if resp.header("transfer-encoding").is_some_and(|v| !v.eq_ignore_ascii_case("identity"))
            {
                return Err(ReadError::Malformed);
            }
            self.length = match resp.header("content-length") {
                Some(v) => Some(v.trim().parse().map_err(|_| ReadError::Malformed)?),
                None if matches!(resp.status(), 204 | 304) => Some(0),
                None => None,
            };
            self.head = Some(resp);
            let _ = self.buf.split_to(len);
            let rest = std::mem::take(&mut self.buf).freeze();
            return self.body(rest);
        }
        self.body(Bytes::copy_from_slice(data))
    }

    fn body(&mut self, mut data: Bytes) -> Result<Progress, ReadError> {
        if let Some(n) = self.length {
            data.truncate(n.saturating_sub(self.received));
        }
        self.received = self.received.saturating_add(data.len());
        if self.received > self.max_body {
            return Err(ReadError::Malformed);
        }
        Ok(Progress::Body(data))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_escapes() {
        assert_eq!(query_escape("orders:42/a b&c"), "orders:42%2Fa%20b%26c");
        let r = request("POST", "h:1", "/p?x=1", &[("A", "b")], Some(("application/json", b"[1]")));
        assert_eq!(
            &r.unwrap()[..],
            b"POST /p?x=1 HTTP/1.1\r\nHost: h:1\r\nConnection: close\r\nA: b\r\n\
              Content-Type: application/json\r\nContent-Length: 3\r\n\r\n[1]"
        );
        assert_eq!(request("GET", "h", "/", &[("A", "b\r\nX: y")], None), None);
    }

    fn read_all(input: &[u8], step: usize) -> (u16, Vec<u8>, bool) {
        let mut r = ResponseReader::new(1024, 100);
        let mut body = Vec::new();
        for chunk in input.chunks(step) {
            if let Progress::Body(b) = r.push(chunk).unwrap() {
                body.extend_from_slice(&b);
            }
        }
        (r.head().unwrap().status(), body, r.is_complete())
    }

    #[test]
    fn reads_heads_and_bodies_whole_bytewise_and_with_trailing_bytes() {
        let input = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
        let want = (200, b"hello".to_vec(), true);
        assert_eq!(read_all(input, input.len()), want);
        assert_eq!(read_all(input, 1), want);
        let mut trailing = input.to_vec();
        trailing.extend_from_slice(b"junk");
        assert_eq!(read_all(&trailing, 7), want);
        let stream = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\ndata: x\n\n";
        assert_eq!(read_all(stream, 3), (200, b"data: x\n\n".to_vec(), false));
        assert!(read_all(b"HTTP/1.1 304 Not Modified\r\n\r\n", 1).2);
    }

    #[test]
    fn refuses_chunked_and_oversized_bodies() {
        let mut r = ResponseReader::new(1024, 100);
        assert_eq!(
            r.push(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Err(ReadError::Malformed)
        );
        let mut r = ResponseReader::new(1024, 4);
        assert_eq!(r.push(b"HTTP/1.1 200 OK\r\n\r\nhello"), Err(ReadError::Malformed));
    }
}
