//! The server side of the handshake: [`RequestParser`] validates the client's upgrade into an
//! [`UpgradeRequest`] (RFC 6455 §4.2.1), answered with [`accept_response`] (§4.2.2),
//! [`reject_response`] or [`error_response`].

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::{BufMut as _, Bytes, BytesMut};

use super::{
    HeadScanner, MAX_HEADERS, accept_key, check_header, httparse_error, is_token, list_has_token,
    put_header, single_value, values_of,
};
use crate::ws::error::{HandshakeError, SendError};

/// Splits a comma-separated list at the commas outside quoted strings, trimming each entry
/// and skipping empty ones (RFC 9110 §5.6.1).
fn split_quoted_list(value: &str) -> impl Iterator<Item = &str> {
    let mut rest = value;
    std::iter::from_fn(move || {
        loop {
            if rest.is_empty() {
                return None;
            }
            let mut quoted = false;
            let mut escaped = false;
            let mut cut = rest.len();
            for (i, c) in rest.char_indices() {
                match c {
                    _ if escaped => escaped = false,
                    '\\' if quoted => escaped = true,
                    '"' => quoted = !quoted,
                    ',' if !quoted => {
                        cut = i;
                        break;
                    }
                    _ => {}
                }
            }
            let entry = rest[..cut].trim();
            rest = rest.get(cut + 1..).unwrap_or("");
            if !entry.is_empty() {
                return Some(entry);
            }
        }
    })
}

/// Decodes `%XX` escapes and `+` (as a space) of a query component. A `%` not followed by two
/// hex digits is kept as it is.
fn percent_decode(s: &str) -> Vec<u8> {
    fn hex(b: u8) -> Option<u8> {
        char::from(b).to_digit(16).and_then(|d| u8::try_from(d).ok())
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let pair = bytes
                    .get(i + 1)
                    .copied()
                    .and_then(hex)
                    .zip(bytes.get(i + 2).copied().and_then(hex));
                if let Some((hi, lo)) = pair {
                    out.push(hi << 4 | lo);
                    i += 2;
                } else {
                    out.push(b'%');
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    out
}

/// A byte range inside the stored head.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Span {
    start: usize,
    end: usize,
}

impl Span {
    /// The position of `part` inside `base`; `part` is a sub-slice `httparse` returned.
    fn of(base: &[u8], part: &[u8]) -> Self {
        let start = (part.as_ptr() as usize).wrapping_sub(base.as_ptr() as usize);
        if start <= base.len() && part.len() <= base.len() - start {
            Self { start, end: start + part.len() }
        } else {
            debug_assert!(part.is_empty(), "httparse returned a slice outside the head");
            Self::default()
        }
    }
}

/// One header line: spans of its name and value in the stored head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Field {
    name: Span,
    value: Span,
}

/// A validated WebSocket upgrade request (RFC 6455 §4.2.1), as the server application sees
/// it before it decides to accept or reject.
///
/// The request keeps one copy of its head; names and values are views into it.
///
/// - Request line: [`path`](Self::path), [`path_only`](Self::path_only),
///   [`query_param`](Self::query_param).
/// - WebSocket fields: [`host`](Self::host), [`origin`](Self::origin),
///   [`protocols`](Self::protocols), [`extensions`](Self::extensions), [`key`](Self::key).
/// - Any field: [`header`](Self::header), [`headers`](Self::headers).
/// - Credentials: [`bearer_token`](Self::bearer_token), [`cookie`](Self::cookie),
///   [`token`](Self::token).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpgradeRequest {
    head: Bytes,
    path: Span,
    host: Span,
    key: Span,
    fields: Vec<Field>,
    protocols: Vec<String>,
    extensions: Vec<String>,
}

impl UpgradeRequest {
    /// Parses and validates a complete head (ending in `\r\n\r\n`).
    fn parse(head: Bytes) -> Result<Self, HandshakeError> {
        use HandshakeError as E;

        let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut storage);
        match req.parse(&head) {
            Ok(httparse::Status::Complete(n)) if n == head.len() => {}
            Ok(_) => return Err(E::Malformed),
            Err(err) => return Err(httparse_error(err, &head)),
        }
        if req.method != Some("GET") {
            return Err(E::MethodNotGet);
        }
        if req.version != Some(1) {
            return Err(E::HttpVersion);
        }
        let path = req.path.ok_or(E::Malformed)?;
        let headers: &[httparse::Header<'_>] = req.headers;

        let host =
            single_value(headers, "host").map_err(|()| E::Malformed)?.ok_or(E::MissingHost)?;
        if std::str::from_utf8(host).is_err() {
            return Err(E::Malformed);
        }
        if !list_has_token(headers, "upgrade", "websocket") {
            return Err(E::MissingUpgrade);
        }
        if !list_has_token(headers, "connection", "upgrade") {
            return Err(E::MissingConnectionUpgrade);
        }
        match single_value(headers, "sec-websocket-version") {
            Ok(Some(v)) if v.trim_ascii() == b"13" => {}
            _ => return Err(E::UnsupportedVersion),
        }
        let key = single_value(headers, "sec-websocket-key")
            .map_err(|()| E::Malformed)?
            .ok_or(E::InvalidKey)?
            .trim_ascii();
        match BASE64.decode(key) {
            Ok(raw) if raw.len() == 16 => {}
            _ => return Err(E::InvalidKey),
        }

        let mut protocols = Vec::new();
        for value in values_of(headers, "sec-websocket-protocol") {
            let value = std::str::from_utf8(value).map_err(|_| E::Malformed)?;
            for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                if !is_token(item) {
                    return Err(E::Malformed);
                }
                protocols.push(item.to_owned());
            }
        }
        let mut extensions = Vec::new();
        for value in values_of(headers, "sec-websocket-extensions") {
            let value = std::str::from_utf8(value).map_err(|_| E::Malformed)?;
            extensions.extend(split_quoted_list(value).map(str::to_owned));
        }

        let fields = headers
            .iter()
            .map(|h| Field {
                name: Span::of(&head, h.name.as_bytes()),
                value: Span::of(&head, h.value),
            })
            .collect();
        let path = Span::of(&head, path.as_bytes());
        let host = Span::of(&head, host);
        let key = Span::of(&head, key);
        Ok(Self { head, path, host, key, fields, protocols, extensions })
    }

    fn bytes(&self, span: Span) -> &[u8] {
        self.head.get(span.start..span.end).unwrap_or_default()
    }

    /// Text of a span validated as UTF-8 while parsing.
    fn text(&self, span: Span) -> &str {
        std::str::from_utf8(self.bytes(span)).unwrap_or_default()
    }

    /// The request target as sent, query included, e.g. `/chat?room=1`.
    #[must_use]
    pub fn path(&self) -> &str {
        self.text(self.path)
    }

    /// The request target before any `?`, e.g. `/chat`.
    #[must_use]
    pub fn path_only(&self) -> &str {
        let path = self.path();
        path.split_once('?').map_or(path, |(p, _)| p)
    }

    /// The first query parameter called `name`, percent-decoded with `+` read as a space
    /// (WHATWG `application/x-www-form-urlencoded`). `None` if there is no such parameter or
    /// its decoded value is not UTF-8.
    #[must_use]
    pub fn query_param(&self, name: &str) -> Option<String> {
        let (_, query) = self.path().split_once('?')?;
        let query = query.split_once('#').map_or(query, |(q, _)| q);
        query
            .split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
            .find(|(k, _)| percent_decode(k) == name.as_bytes())
            .and_then(|(_, v)| String::from_utf8(percent_decode(v)).ok())
    }

    /// The `Host` header (present exactly once in a valid request).
    #[must_use]
    pub fn host(&self) -> &str {
        self.text(self.host)
    }

    /// The `Origin` header, sent by browsers (RFC 6455 §4.2.1 item 7, §10.2). Servers that
    /// serve browsers SHOULD check it against the origins they trust.
    #[must_use]
    pub fn origin(&self) -> Option<&str> {
        self.header("origin")
    }

    /// Subprotocols offered in `Sec-WebSocket-Protocol`, in order of the client's preference,
    /// gathered from every such header.
    #[must_use]
    pub fn protocols(&self) -> &[String] {
        &self.protocols
    }

    /// Extensions offered in `Sec-WebSocket-Extensions`, one raw entry (name and parameters,
    /// e.g. `permessage-deflate; client_max_window_bits`) per element.
    #[must_use]
    pub fn extensions(&self) -> &[String] {
        &self.extensions
    }

    /// The `Sec-WebSocket-Key` (validated to be 16 bytes in base64).
    #[must_use]
    pub fn key(&self) -> &str {
        self.text(self.key)
    }

    /// The first header called `name` (case-insensitive). `None` if there is none or its value
    /// is not UTF-8.
    #[must_use]
    pub fn header(&self, name: &str) -> Option<&str> {
        let (_, value) = self.headers().find(|(n, _)| n.eq_ignore_ascii_case(name))?;
        std::str::from_utf8(value).ok()
    }

    /// Every header line in order of arrival, as `(name, value)`.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.fields.iter().map(|f| (self.text(f.name), self.bytes(f.value)))
    }

    /// The credentials of `Authorization: Bearer <token>` (RFC 6750 §2.1; the scheme is
    /// case-insensitive).
    #[must_use]
    pub fn bearer_token(&self) -> Option<&str> {
        let value = self.header("authorization")?.trim();
        let (scheme, token) = value.split_once([' ', '\t'])?;
        let token = token.trim();
        let valid = scheme.eq_ignore_ascii_case("bearer")
            && !token.is_empty()
            && !token.contains([' ', '\t']);
        valid.then_some(token)
    }

    /// The value of the first cookie called `name` (case-sensitive) in any `Cookie` header
    /// (RFC 6265 §5.4), without surrounding double quotes.
    #[must_use]
    pub fn cookie(&self, name: &str) -> Option<&str> {
        self.headers()
            .filter(|(n, _)| n.eq_ignore_ascii_case("cookie"))
            .filter_map(|(_, v)| std::str::from_utf8(v).ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.split_once('='))
            .find(|(n, _)| n.trim() == name)
            .map(|(_, v)| {
                let v = v.trim();
                v.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(v)
            })
    }

    /// The access token of the request: the [bearer token](Self::bearer_token) if there is
    /// one, else the `token` [query parameter](Self::query_param) (browsers cannot set headers
    /// on a WebSocket).
    #[must_use]
    pub fn token(&self) -> Option<String> {
        self.bearer_token().map(str::to_owned).or_else(|| self.query_param("token"))
    }
}

/// Resumable parser of the client's upgrade request (RFC 6455 §4.2.1).
///
/// Call [`parse`](Self::parse) after every read with all the bytes received so far. It
/// searches only the new bytes for the end of the head and parses the head once, when it is
/// complete, so a head trickling in byte by byte costs linear time.
///
/// ```
/// use tidewire::ws::handshake::RequestParser;
///
/// let head = b"GET /chat HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\n\
///     Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
///     Sec-WebSocket-Version: 13\r\n\r\n";
/// let mut parser = RequestParser::new(16 << 10);
/// assert_eq!(parser.parse(&head[..10]), Ok(None));
/// let (req, len) = parser.parse(head).unwrap().unwrap();
/// assert_eq!((req.path(), len), ("/chat", head.len()));
/// ```
#[derive(Clone, Debug)]
pub struct RequestParser {
    /// Visible to the parent module so its tests can check how much was scanned.
    pub(super) scan: HeadScanner,
}

impl RequestParser {
    /// A parser that rejects heads longer than `max_head` bytes (`WsConfig::max_handshake`),
    /// counting the final `\r\n\r\n`.
    #[must_use]
    pub fn new(max_head: usize) -> Self {
        Self { scan: HeadScanner::new(max_head) }
    }

    /// Parses the request once `buf` holds all of its head.
    ///
    /// `buf` MUST be everything received so far, the same bytes as in the previous call plus
    /// any new ones. Returns `Ok(None)` while the head is incomplete, and the request with the
    /// length of its head once it is complete; the bytes after that length are the first
    /// frames. An `Err` is answered with [`error_response`].
    ///
    /// # Errors
    ///
    /// [`HandshakeError::HeadTooLarge`] when no head ends within `max_head` bytes, and the
    /// validation errors of RFC 6455 §4.2.1: `Malformed`, `TooManyHeaders`, `MethodNotGet`,
    /// `HttpVersion`, `MissingHost`, `MissingUpgrade`, `MissingConnectionUpgrade`,
    /// `UnsupportedVersion`, `InvalidKey`.
    pub fn parse(&mut self, buf: &[u8]) -> Result<Option<(UpgradeRequest, usize)>, HandshakeError> {
        let Some(len) = self.scan.find_end(buf)? else {
            return Ok(None);
        };
        let head = Bytes::copy_from_slice(&buf[..len]);
        UpgradeRequest::parse(head).map(|req| Some((req, len)))
    }
}

/// The `101 Switching Protocols` that accepts `req` (RFC 6455 §4.2.2), with the chosen
/// subprotocol and extra headers (e.g. `Set-Cookie`).
///
/// # Errors
///
/// [`SendError::InvalidHeader`] if `subprotocol` is not one of [`UpgradeRequest::protocols`],
/// or an extra header name is not a token, or a value holds CR, LF or NUL.
pub fn accept_response(
    req: &UpgradeRequest,
    subprotocol: Option<&str>,
    headers: &[(&str, &str)],
) -> Result<Bytes, SendError> {
    if let Some(chosen) = subprotocol
        && !req.protocols().iter().any(|p| p == chosen)
    {
        return Err(SendError::InvalidHeader);
    }
    for (name, value) in headers {
        check_header(name, value)?;
    }
    let extra: usize = headers.iter().map(|(n, v)| n.len() + v.len() + 4).sum();
    let mut out = BytesMut::with_capacity(160 + extra);
    out.put_slice(b"HTTP/1.1 101 Switching Protocols\r\n");
    put_header(&mut out, "Upgrade", "websocket");
    put_header(&mut out, "Connection", "Upgrade");
    put_header(&mut out, "Sec-WebSocket-Accept", &accept_key(req.key()));
    if let Some(chosen) = subprotocol {
        put_header(&mut out, "Sec-WebSocket-Protocol", chosen);
    }
    for (name, value) in headers {
        put_header(&mut out, name, value);
    }
    out.put_slice(b"\r\n");
    Ok(out.freeze())
}

/// The standard reason phrase of the statuses a handshake answers with (RFC 9110 §15),
/// `Error` for the others.
fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Error",
    }
}

/// Encodes a rejection whose status and headers are already valid.
fn encode_reject(status: u16, headers: &[(&str, &str)], body: &[u8]) -> Bytes {
    let extra: usize = headers.iter().map(|(n, v)| n.len() + v.len() + 4).sum();
    let mut out = BytesMut::with_capacity(160 + extra + body.len());
    out.put_slice(format!("HTTP/1.1 {status} {}\r\n", reason_phrase(status)).as_bytes());
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("content-type")) {
        put_header(&mut out, "Content-Type", "text/plain; charset=utf-8");
    }
    put_header(&mut out, "Content-Length", &body.len().to_string());
    put_header(&mut out, "Connection", "close");
    for (name, value) in headers {
        put_header(&mut out, name, value);
    }
    out.put_slice(b"\r\n");
    out.put_slice(body);
    out.freeze()
}

/// An HTTP response that refuses the upgrade, e.g. `401` with `WWW-Authenticate`. It carries
/// `Content-Length`, `Connection: close` and, unless `headers` has one, `Content-Type:
/// text/plain; charset=utf-8`; the transport SHOULD be closed once it is written.
///
/// # Errors
///
/// [`SendError::InvalidHeader`] if `status` is not in `100..=599` or is `101`, an extra header
/// name is not a token, a value holds CR, LF or NUL, or an extra header is `Content-Length`
/// or `Transfer-Encoding` (the body length is set here).
pub fn reject_response(
    status: u16,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Bytes, SendError> {
    if !(100..=599).contains(&status) || status == 101 {
        return Err(SendError::InvalidHeader);
    }
    for (name, value) in headers {
        check_header(name, value)?;
        if name.eq_ignore_ascii_case("content-length")
            || name.eq_ignore_ascii_case("transfer-encoding")
        {
            return Err(SendError::InvalidHeader);
        }
    }
    Ok(encode_reject(status, headers, body))
}

/// The automatic rejection of a request that failed validation: status
/// [`err.status()`](HandshakeError::status) (400 if that is not an error status), the error's
/// message as a one-line plain-text body, `Sec-WebSocket-Version: 13` with 426 (RFC 6455
/// §4.4) and `Allow: GET` with 405 (RFC 9110 §15.5.6).
#[must_use]
pub fn error_response(err: HandshakeError) -> Bytes {
    let status = match err.status() {
        s @ 400..=599 => s,
        _ => 400,
    };
    let headers: &[(&str, &str)] = match status {
        426 => &[("Sec-WebSocket-Version", "13")],
        405 => &[("Allow", "GET")],
        _ => &[],
    };
    encode_reject(status, headers, format!("{err}\n").as_bytes())
}
