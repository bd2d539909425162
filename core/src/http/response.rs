//! The response side: writers for complete and streaming responses, and [`ResponseParser`]
//! for clients.

use bytes::{BufMut as _, Bytes, BytesMut};

use super::{
    HeadScanner, HttpError, InvalidHeader, MAX_HEADERS, check_header, httparse_error, put_header,
};

/// The standard reason phrase of a status (RFC 9110 §15), `Status` for the others.
#[must_use]
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Status",
    }
}

fn check_headers(headers: &[(&str, &str)]) -> Result<(), InvalidHeader> {
    for (name, value) in headers {
        check_header(name, value)?;
        if name.eq_ignore_ascii_case("content-length")
            || name.eq_ignore_ascii_case("transfer-encoding")
            || name.eq_ignore_ascii_case("connection")
        {
            return Err(InvalidHeader);
        }
    }
    Ok(())
}

fn status_line(out: &mut BytesMut, status: u16) {
    out.put_slice(b"HTTP/1.1 ");
    out.put_slice(status.to_string().as_bytes());
    out.put_u8(b' ');
    out.put_slice(reason_phrase(status).as_bytes());
    out.put_slice(b"\r\n");
}

/// A complete response: status line, `Content-Length`, `Connection: close`, `Content-Type:
/// text/plain; charset=utf-8` unless `headers` has one, the extra headers, and the body.
/// (Tidewire serves one request per connection; a `304` gets no body and no type.)
///
/// # Errors
/// [`InvalidHeader`] for a status outside `200..=599`, a header name that is not a token, a
/// value with CR, LF or NUL, or an extra `Content-Length`, `Transfer-Encoding` or
/// `Connection` (set here).
pub fn response(
    status: u16,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Bytes, InvalidHeader> {
    if !(200..=599).contains(&status) {
        return Err(InvalidHeader);
    }
    check_headers(headers)?;
    let body = if status == 304 || status == 204 { &[][..] } else { body };
    let extra: usize = headers.iter().map(|(n, v)| n.len() + v.len() + 4).sum();
    let mut out = BytesMut::with_capacity(128 + extra + body.len());
    status_line(&mut out, status);
    let has_type = headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("content-type"));
    if !has_type && status != 304 && status != 204 {
        put_header(&mut out, "Content-Type", "text/plain; charset=utf-8");
    }
    if status != 304 && status != 204 {
        put_header(&mut out, "Content-Length", &body.len().to_string());
    }
    put_header(&mut out, "Connection", "close");
    for (name, value) in headers {
        put_header(&mut out, name, value);
    }
    out.put_slice(b"\r\n");
    out.put_slice(body);
    Ok(out.freeze())
}

/// The head of a response whose body runs until the connection closes (an SSE stream):
/// no `Content-Length`, `Connection: close`, then the given headers.
///
/// # Errors
/// As [`response`].
pub fn stream_head(status: u16, headers: &[(&str, &str)]) -> Result<Bytes, InvalidHeader> {
    if !(200..=599).contains(&status) {
        return Err(InvalidHeader);
    }
    check_headers(headers)?;
    let extra: usize = headers.iter().map(|(n, v)| n.len() + v.len() + 4).sum();
    let mut out = BytesMut::with_capacity(64 + extra);
    status_line(&mut out, status);
    put_header(&mut out, "Connection", "close");
    for (name, value) in headers {
        put_header(&mut out, name, value);
    }
    out.put_slice(b"\r\n");
    Ok(out.freeze())
}

/// A parsed response head, as a client sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    status: u16,
    headers: Vec<(String, String)>,
}

impl Response {
    /// Parses a complete head (ending in `\r\n\r\n`).
    fn parse(head: &[u8]) -> Result<Self, HttpError> {
        let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut storage);
        match resp.parse(head) {
            Ok(httparse::Status::Complete(n)) if n == head.len() => {}
            Ok(_) => return Err(HttpError::Malformed),
            Err(err) => return Err(httparse_error(err, head)),
        }
        if resp.version != Some(1) {
            return Err(HttpError::HttpVersion);
        }
        let status = resp.code.ok_or(HttpError::Malformed)?;
        let headers = resp
            .headers
            .iter()
            .map(|h| (h.name.to_owned(), String::from_utf8_lossy(h.value).into_owned()))
            .collect();
        Ok(Self { status, headers })
    }

    /// The status code.
    #[must_use]
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The first header called `name` (case-insensitive). Bytes that are not UTF-8 are
    /// replaced with U+FFFD.
    #[must_use]
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// Every header line in order of arrival.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &str)> {
        self.headers.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// The media type of `Content-Type` without parameters, lowercased (e.g.
    /// `text/event-stream` for `Text/Event-Stream; charset=utf-8`).
    #[must_use]
    pub fn media_type(&self) -> Option<String> {
        let value = self.header("content-type")?;
        let media = value.split(';').next().unwrap_or_default().trim();
        (!media.is_empty()).then(|| media.to_ascii_lowercase())
    }
}

/// Resumable parser of a response head; linear however the head is split.
///
/// ```
/// use tidewire::http::ResponseParser;
///
/// let head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n\r\ndata: x\n\n";
/// let mut parser = ResponseParser::new(16 << 10);
/// let (resp, len) = parser.parse(head).unwrap().unwrap();
/// assert_eq!(resp.status(), 200);
/// assert_eq!(resp.media_type().as_deref(), Some("text/event-stream"));
/// assert_eq!(&head[len..], b"data: x\n\n");
/// ```
#[derive(Clone, Debug)]
pub struct ResponseParser {
    scan: HeadScanner,
}

impl ResponseParser {
    /// A parser that rejects heads longer than `max_head` bytes.
    #[must_use]
    pub fn new(max_head: usize) -> Self {
        Self { scan: HeadScanner::new(max_head) }
    }

    /// Parses the response once `buf` (everything received so far) holds all of its head;
    /// returns it with the length of the head (the body follows).
    ///
    /// # Errors
    /// [`HttpError`] for a head that is too large or not HTTP/1.1.
    pub fn parse(&mut self, buf: &[u8]) -> Result<Option<(Response, usize)>, HttpError> {
        let Some(len) = self.scan.find_end(buf)? else {
            return Ok(None);
        };
        Response::parse(&buf[..len]).map(|resp| Some((resp, len)))
    }
}
