//! The opening handshake (RFC 6455 §4): pure parsing and encoding, no time, no IO.
//!
//! Server side:
//! - [`RequestParser`] turns the bytes received so far into an [`UpgradeRequest`] once the
//!   whole request head is there, and validates it (§4.2.1).
//! - The application looks at the request and answers with [`accept_response`] (the `101`,
//!   §4.2.2) or [`reject_response`]. A request that fails validation is answered with
//!   [`error_response`].
//!
//! Client side:
//! - [`generate_key`] and [`client_request`] encode the `GET` upgrade (§4.1).
//! - [`ResponseParser`] validates the server's answer into a [`HandshakeResponse`] (§4.1,
//!   "the client MUST validate the server's response").
//!
//! Both parsers are linear in the number of bytes fed to them: they remember how far they have
//! searched for the blank line that ends the head, and run `httparse` once, on the complete
//! head, because `httparse` always starts again from byte 0. The length they return is the
//! length of the head; the bytes after it belong to the frame decoder.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::{BufMut as _, Bytes, BytesMut};
use sha1::{Digest as _, Sha1};

use super::error::{HandshakeError, SendError};

/// The GUID of RFC 6455 §1.3, appended to the key before hashing.
const ACCEPT_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The most header lines a head may carry; more is [`HandshakeError::TooManyHeaders`].
const MAX_HEADERS: usize = 64;

/// The blank line that ends an HTTP/1.1 head.
const END_OF_HEAD: &[u8] = b"\r\n\r\n";

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key`: base64 of the SHA-1 of the key followed by
/// the GUID `258EAFA5-E914-47DA-95CA-C5AB0DC85B11` (RFC 6455 §1.3, §4.2.2).
///
/// ```
/// use tidewire::ws::handshake::accept_key;
/// assert_eq!(accept_key("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
/// ```
#[must_use]
pub fn accept_key(key: &str) -> String {
    let mut sha = Sha1::new();
    sha.update(key.as_bytes());
    sha.update(ACCEPT_GUID);
    BASE64.encode(sha.finalize())
}

/// A `Sec-WebSocket-Key` made of 16 random bytes (RFC 6455 §4.1). The caller MUST draw them
/// from the connection's seeded ChaCha generator, never from a constant.
#[must_use]
pub fn generate_key(random: [u8; 16]) -> String {
    BASE64.encode(random)
}

// ---------------------------------------------------------------------------------------
// Finding the end of the head
// ---------------------------------------------------------------------------------------

/// The resumable search for `\r\n\r\n` shared by both parsers.
#[derive(Clone, Debug)]
struct HeadScanner {
    max_head: usize,
    /// Bytes of the buffer already searched without finding the end of the head.
    scanned: usize,
    /// How many times `httparse` ran (the quadratic-behaviour guard of the tests).
    #[cfg(test)]
    parses: usize,
}

impl HeadScanner {
    fn new(max_head: usize) -> Self {
        Self {
            max_head,
            scanned: 0,
            #[cfg(test)]
            parses: 0,
        }
    }

    /// The length of the head once `buf` holds all of it, `None` while it is incomplete.
    /// Each call searches only the new bytes (plus three, for a terminator split across
    /// calls).
    fn find_end(&mut self, buf: &[u8]) -> Result<Option<usize>, HandshakeError> {
        let limit = buf.len().min(self.max_head);
        let start = self.scanned.min(limit).saturating_sub(END_OF_HEAD.len() - 1);
        let found = buf[start..limit].windows(END_OF_HEAD.len()).position(|w| w == END_OF_HEAD);
        if let Some(pos) = found {
            self.scanned = 0;
            #[cfg(test)]
            {
                self.parses += 1;
            }
            return Ok(Some(start + pos + END_OF_HEAD.len()));
        }
        if buf.len() >= self.max_head {
            // Any end of head would lie past `max_head`.
            self.scanned = 0;
            return Err(HandshakeError::HeadTooLarge);
        }
        self.scanned = limit;
        Ok(None)
    }
}

/// Maps an `httparse` failure onto the handshake errors. A version `httparse` does not know
/// (e.g. `HTTP/2.0`) is `HttpVersion` when the first line names one, `Malformed` otherwise.
fn httparse_error(err: httparse::Error, head: &[u8]) -> HandshakeError {
    match err {
        httparse::Error::TooManyHeaders => HandshakeError::TooManyHeaders,
        httparse::Error::Version => {
            let first_line = head.split(|&b| b == b'\n').next().unwrap_or_default();
            if first_line.windows(5).any(|w| w == b"HTTP/") {
                HandshakeError::HttpVersion
            } else {
                HandshakeError::Malformed
            }
        }
        _ => HandshakeError::Malformed,
    }
}

// ---------------------------------------------------------------------------------------
// Header helpers
// ---------------------------------------------------------------------------------------

/// Values of every header called `name` (case-insensitive), in order.
fn values_of<'a>(headers: &[httparse::Header<'a>], name: &str) -> impl Iterator<Item = &'a [u8]> {
    headers.iter().filter(move |h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value)
}

/// The one header called `name`: `Ok(None)` if absent, `Err(())` if repeated.
fn single_value<'a>(headers: &[httparse::Header<'a>], name: &str) -> Result<Option<&'a [u8]>, ()> {
    let mut values = values_of(headers, name);
    let first = values.next();
    if values.next().is_some() {
        return Err(());
    }
    Ok(first)
}

/// Whether the comma-separated lists of every header called `name` hold `token`
/// (case-insensitive), e.g. `Connection: keep-alive, Upgrade`.
fn list_has_token(headers: &[httparse::Header<'_>], name: &str, token: &str) -> bool {
    values_of(headers, name).any(|value| {
        value
            .split(|&b| b == b',')
            .any(|item| item.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    })
}

/// RFC 9110 §5.6.2 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// RFC 9110 §5.6.2 `token`: one or more `tchar`.
fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_tchar)
}

/// Checks a header the application wants to send: the name is a token and the value holds no
/// CR, LF or NUL, so it cannot end the line or the head early.
fn check_header(name: &str, value: &str) -> Result<(), SendError> {
    if is_token(name) && !value.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0)) {
        Ok(())
    } else {
        Err(SendError::InvalidHeader)
    }
}

fn put_header(out: &mut BytesMut, name: &str, value: &str) {
    out.put_slice(name.as_bytes());
    out.put_slice(b": ");
    out.put_slice(value.as_bytes());
    out.put_slice(b"\r\n");
}

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

// ---------------------------------------------------------------------------------------
// Server side
// ---------------------------------------------------------------------------------------

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
    scan: HeadScanner,
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

// ---------------------------------------------------------------------------------------
// Client side
// ---------------------------------------------------------------------------------------

/// The client's `GET` upgrade request (RFC 6455 §4.1) for `path` (origin-form, query
/// included) on `host`, with the key from [`generate_key`], the offered subprotocols (most
/// preferred first) and extra headers (e.g. `Origin`, `Authorization`, `Cookie`).
///
/// # Errors
///
/// [`SendError::InvalidHeader`] if `path` does not start with `/` or holds anything but
/// visible ASCII (percent-encode the rest) or a `#`; if `host` is empty; if `key` is not 16
/// bytes in base64; if a subprotocol is not a token; or if an extra header name is not a
/// token, or `host` or a value holds CR, LF or NUL.
pub fn client_request(
    host: &str,
    path: &str,
    key: &str,
    protocols: &[String],
    headers: &[(String, String)],
) -> Result<Bytes, SendError> {
    let path_ok = path.starts_with('/') && path.bytes().all(|b| b.is_ascii_graphic() && b != b'#');
    let key_ok = BASE64.decode(key).is_ok_and(|raw| raw.len() == 16);
    if !path_ok || !key_ok || host.is_empty() || !protocols.iter().all(|p| is_token(p)) {
        return Err(SendError::InvalidHeader);
    }
    check_header("Host", host)?;
    for (name, value) in headers {
        check_header(name, value)?;
    }
    let extra: usize = headers.iter().map(|(n, v)| n.len() + v.len() + 4).sum::<usize>()
        + protocols.iter().map(|p| p.len() + 2).sum::<usize>();
    let mut out = BytesMut::with_capacity(160 + host.len() + path.len() + extra);
    out.put_slice(b"GET ");
    out.put_slice(path.as_bytes());
    out.put_slice(b" HTTP/1.1\r\n");
    put_header(&mut out, "Host", host);
    put_header(&mut out, "Upgrade", "websocket");
    put_header(&mut out, "Connection", "Upgrade");
    put_header(&mut out, "Sec-WebSocket-Key", key);
    put_header(&mut out, "Sec-WebSocket-Version", "13");
    if !protocols.is_empty() {
        put_header(&mut out, "Sec-WebSocket-Protocol", &protocols.join(", "));
    }
    for (name, value) in headers {
        put_header(&mut out, name, value);
    }
    out.put_slice(b"\r\n");
    Ok(out.freeze())
}

/// The server's validated `101` answer, as the client sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HandshakeResponse {
    status: u16,
    subprotocol: Option<String>,
    headers: Vec<(String, String)>,
}

impl HandshakeResponse {
    /// Parses and validates a complete head (ending in `\r\n\r\n`).
    fn parse(head: &[u8], key: &str, offered: &[String]) -> Result<Self, HandshakeError> {
        use HandshakeError as E;

        let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut storage);
        match resp.parse(head) {
            Ok(httparse::Status::Complete(n)) if n == head.len() => {}
            Ok(_) => return Err(E::Malformed),
            Err(err) => return Err(httparse_error(err, head)),
        }
        let status = resp.code.ok_or(E::Malformed)?;
        if status != 101 {
            return Err(E::Status(status));
        }
        if resp.version != Some(1) {
            return Err(E::HttpVersion);
        }
        let headers: &[httparse::Header<'_>] = resp.headers;
        if !list_has_token(headers, "upgrade", "websocket") {
            return Err(E::MissingUpgrade);
        }
        if !list_has_token(headers, "connection", "upgrade") {
            return Err(E::MissingConnectionUpgrade);
        }
        match single_value(headers, "sec-websocket-accept") {
            Ok(Some(accept)) if accept.trim_ascii() == accept_key(key).as_bytes() => {}
            _ => return Err(E::InvalidAccept),
        }
        let subprotocol = match single_value(headers, "sec-websocket-protocol") {
            Ok(None) => None,
            Ok(Some(value)) => {
                let value = std::str::from_utf8(value.trim_ascii())
                    .map_err(|_| E::UnexpectedSubprotocol)?;
                if !offered.iter().any(|p| p == value) {
                    return Err(E::UnexpectedSubprotocol);
                }
                Some(value.to_owned())
            }
            Err(()) => return Err(E::UnexpectedSubprotocol),
        };
        if values_of(headers, "sec-websocket-extensions").any(|v| !v.trim_ascii().is_empty()) {
            return Err(E::UnexpectedExtension);
        }
        let headers = headers
            .iter()
            .map(|h| (h.name.to_owned(), String::from_utf8_lossy(h.value).into_owned()))
            .collect();
        Ok(Self { status, subprotocol, headers })
    }

    /// The status code (always 101 once validated).
    #[must_use]
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The subprotocol the server chose, one of those offered.
    #[must_use]
    pub fn subprotocol(&self) -> Option<&str> {
        self.subprotocol.as_deref()
    }

    /// The first header called `name` (case-insensitive). Bytes that are not UTF-8 are
    /// replaced with U+FFFD.
    #[must_use]
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// Resumable parser of the server's answer to [`client_request`] (RFC 6455 §4.1).
///
/// Call [`parse`](Self::parse) after every read with all the bytes received so far; like
/// [`RequestParser`] it costs linear time however the head is split.
#[derive(Clone, Debug)]
pub struct ResponseParser {
    scan: HeadScanner,
}

impl ResponseParser {
    /// A parser that rejects heads longer than `max_head` bytes (`WsConfig::max_handshake`),
    /// counting the final `\r\n\r\n`.
    #[must_use]
    pub fn new(max_head: usize) -> Self {
        Self { scan: HeadScanner::new(max_head) }
    }

    /// Parses and validates the response once `buf` holds all of its head, against the `key`
    /// and the subprotocols `offered` in the request.
    ///
    /// `buf` MUST be everything received so far. Returns `Ok(None)` while the head is
    /// incomplete, and the response with the length of its head once it is complete; the
    /// bytes after that length are the first frames.
    ///
    /// # Errors
    ///
    /// [`HandshakeError::Status`] for any status but 101, `HeadTooLarge`, `Malformed`,
    /// `TooManyHeaders`, `HttpVersion`, `MissingUpgrade`, `MissingConnectionUpgrade`,
    /// `InvalidAccept`, `UnexpectedSubprotocol`, and `UnexpectedExtension` (no extension is
    /// offered).
    pub fn parse(
        &mut self,
        buf: &[u8],
        key: &str,
        offered: &[String],
    ) -> Result<Option<(HandshakeResponse, usize)>, HandshakeError> {
        let Some(len) = self.scan.find_end(buf)? else {
            return Ok(None);
        };
        HandshakeResponse::parse(&buf[..len], key, offered).map(|resp| Some((resp, len)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    type ReqResult = Result<Option<(UpgradeRequest, usize)>, HandshakeError>;
    type RespResult = Result<Option<(HandshakeResponse, usize)>, HandshakeError>;

    const MAX: usize = 16 << 10;
    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
    const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
    /// A frame after the head: masked text "Hi".
    const TRAILER: &[u8] = b"\x81\x82\x01\x02\x03\x04\x49\x6b";

    /// Feeds growing prefixes of `input`, ending at each cut and then at its full length;
    /// returns the first answer that is not `Ok(None)`.
    fn feed<T>(
        mut parse: impl FnMut(&[u8]) -> Result<Option<(T, usize)>, HandshakeError>,
        input: &[u8],
        cuts: &[usize],
    ) -> Result<Option<(T, usize)>, HandshakeError> {
        for &cut in cuts.iter().chain(std::iter::once(&input.len())) {
            match parse(&input[..cut.min(input.len())]) {
                Ok(None) => {}
                other => return other,
            }
        }
        Ok(None)
    }

    fn feed_req(input: &[u8], max: usize, cuts: &[usize]) -> ReqResult {
        let mut p = RequestParser::new(max);
        feed(|b| p.parse(b), input, cuts)
    }

    fn feed_resp(input: &[u8], offered: &[String], cuts: &[usize]) -> RespResult {
        let mut p = ResponseParser::new(MAX);
        feed(|b| p.parse(b, KEY, offered), input, cuts)
    }

    /// Feeds `input` whole, one byte at a time, and followed by a frame; all three must agree
    /// and a returned length must point exactly at the frame.
    fn three_ways<T: PartialEq + std::fmt::Debug>(
        run: impl Fn(&[u8], &[usize]) -> Result<Option<(T, usize)>, HandshakeError>,
        input: &[u8],
    ) -> Result<Option<(T, usize)>, HandshakeError> {
        let whole = run(input, &[]);
        let bytewise: Vec<usize> = (1..input.len()).collect();
        assert_eq!(run(input, &bytewise), whole, "byte at a time");
        let mut trailing = input.to_vec();
        trailing.extend_from_slice(TRAILER);
        let with_trailer = run(&trailing, &[]);
        assert_eq!(with_trailer, whole, "with trailing frame bytes");
        if let Ok(Some((_, len))) = &with_trailer {
            assert_eq!(&trailing[*len..], TRAILER);
        }
        whole
    }

    fn req(input: &[u8]) -> ReqResult {
        three_ways(|i, c| feed_req(i, MAX, c), input)
    }

    fn req_ok(input: &[u8]) -> UpgradeRequest {
        let (r, len) = req(input).expect("valid request").expect("complete");
        assert_eq!(len, input.len());
        r
    }

    fn resp(input: &[u8], offered: &[String]) -> RespResult {
        three_ways(|i, c| feed_resp(i, offered, c), input)
    }

    /// A valid request with `extra` header lines (each ending in CRLF) appended.
    fn request_with(extra: &str) -> Vec<u8> {
        format!(
            "GET /chat?room=1 HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\
             {extra}\r\n"
        )
        .into_bytes()
    }

    /// A request built from exactly these header lines.
    fn request_lines(request_line: &str, lines: &[&str]) -> Vec<u8> {
        let mut s = format!("{request_line}\r\n");
        for line in lines {
            s.push_str(line);
            s.push_str("\r\n");
        }
        s.push_str("\r\n");
        s.into_bytes()
    }

    const GOOD: [&str; 5] = [
        "Host: h",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version: 13",
    ];

    /// `GOOD` with line `i` replaced (or dropped if `line` is empty).
    fn good_but(i: usize, line: &str) -> Vec<u8> {
        let mut lines = GOOD.to_vec();
        if line.is_empty() {
            lines.remove(i);
        } else {
            lines[i] = line;
        }
        request_lines("GET / HTTP/1.1", &lines)
    }

    fn response_with(extra: &str) -> Vec<u8> {
        format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {ACCEPT}\r\n{extra}\r\n"
        )
        .into_bytes()
    }

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    // --- keys ---------------------------------------------------------------------------

    #[test]
    fn accept_key_matches_rfc_example() {
        assert_eq!(accept_key(KEY), ACCEPT);
    }

    #[test]
    fn generated_key_is_16_bytes_in_base64() {
        let key = generate_key(*b"the sample nonce");
        assert_eq!(key, KEY);
        assert_eq!(BASE64.decode(&key).unwrap().len(), 16);
    }

    // --- request: success and accessors ------------------------------------------------

    #[test]
    fn parses_rfc_example_request() {
        let input = request_with(
            "Origin: http://example.com\r\nSec-WebSocket-Protocol: chat, superchat\r\n\
             Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits, x-foo\r\n",
        );
        let r = req_ok(&input);
        assert_eq!(r.path(), "/chat?room=1");
        assert_eq!(r.path_only(), "/chat");
        assert_eq!(r.query_param("room").as_deref(), Some("1"));
        assert_eq!(r.query_param("nope"), None);
        assert_eq!(r.host(), "server.example.com");
        assert_eq!(r.origin(), Some("http://example.com"));
        assert_eq!(r.protocols(), ["chat", "superchat"]);
        assert_eq!(r.extensions(), ["permessage-deflate; client_max_window_bits", "x-foo"]);
        assert_eq!(r.key(), KEY);
        assert_eq!(r.header("SEC-WEBSOCKET-VERSION"), Some("13"));
        assert_eq!(r.header("x-missing"), None);
        let names: Vec<&str> = r.headers().map(|(n, _)| n).collect();
        assert_eq!(names[0], "Host");
        assert_eq!(names.len(), 8);
        assert_eq!(r.bearer_token(), None);
        assert_eq!(r.token(), None);
    }

    #[test]
    fn connection_and_upgrade_are_token_lists() {
        for connection in [
            "Connection: keep-alive, Upgrade",
            "Connection: upgrade",
            "Connection: UPGRADE",
            "Connection:keep-alive,upgrade ",
        ] {
            assert!(req(&good_but(2, connection)).is_ok(), "{connection}");
        }
        for upgrade in ["Upgrade: WebSocket", "Upgrade: h2c, websocket", "Upgrade: WEBSOCKET"] {
            assert!(req(&good_but(1, upgrade)).is_ok(), "{upgrade}");
        }
        // Two Connection headers combine into one list.
        let mut lines = GOOD.to_vec();
        lines[2] = "Connection: keep-alive";
        lines.push("Connection: Upgrade");
        assert!(req(&request_lines("GET / HTTP/1.1", &lines)).is_ok());
    }

    #[test]
    fn several_protocol_headers_are_gathered() {
        let input = request_with(
            "Sec-WebSocket-Protocol: a, b\r\nX-Other: 1\r\nsec-websocket-protocol:  c ,, d\r\n",
        );
        assert_eq!(req_ok(&input).protocols(), ["a", "b", "c", "d"]);
    }

    #[test]
    fn query_token_is_percent_decoded() {
        let input = format!(
            "GET /ws?x=1&to%6Ben=ab%2Bc+d%3D%zz&token=second HTTP/1.1\r\n{}\r\n\r\n",
            GOOD[1..].join("\r\n") + "\r\nHost: h"
        );
        let r = req_ok(input.as_bytes());
        assert_eq!(r.path_only(), "/ws");
        assert_eq!(r.query_param("token").as_deref(), Some("ab+c d=%zz"));
        assert_eq!(r.token().as_deref(), Some("ab+c d=%zz"));
        assert_eq!(r.query_param("x").as_deref(), Some("1"));
    }

    #[test]
    fn query_param_with_invalid_utf8_is_none() {
        let input = format!("GET /?token=%FF HTTP/1.1\r\n{}\r\n\r\n", GOOD.join("\r\n"));
        assert_eq!(req_ok(input.as_bytes()).query_param("token"), None);
    }

    #[test]
    fn cookies_from_several_headers() {
        let input =
            request_with("Cookie: a=1; session=\"abc\"\r\nCookie: b=2;c=3\r\nCookie: a=9\r\n");
        let r = req_ok(&input);
        assert_eq!(r.cookie("a"), Some("1"));
        assert_eq!(r.cookie("session"), Some("abc"));
        assert_eq!(r.cookie("b"), Some("2"));
        assert_eq!(r.cookie("c"), Some("3"));
        assert_eq!(r.cookie("A"), None);
        assert_eq!(r.cookie("missing"), None);
    }

    #[test]
    fn bearer_token_and_token_precedence() {
        let input = format!(
            "GET /?token=fromquery HTTP/1.1\r\n{}\r\nAuthorization: bEaReR  t0k.en~\r\n\r\n",
            GOOD.join("\r\n")
        );
        let r = req_ok(input.as_bytes());
        assert_eq!(r.bearer_token(), Some("t0k.en~"));
        assert_eq!(r.token().as_deref(), Some("t0k.en~"));

        for auth in ["Basic dXNlcjpwYXNz", "Bearer", "Bearer a b", "Bearer "] {
            let input = format!(
                "GET /?token=q HTTP/1.1\r\n{}\r\nAuthorization: {auth}\r\n\r\n",
                GOOD.join("\r\n")
            );
            let r = req_ok(input.as_bytes());
            assert_eq!(r.bearer_token(), None, "{auth}");
            assert_eq!(r.token().as_deref(), Some("q"), "{auth}");
        }
    }

    #[test]
    fn non_utf8_header_value_is_none_but_listed() {
        let mut input = request_with("");
        input.truncate(input.len() - 2);
        input.extend_from_slice(b"X-Bin: caf\xe9\r\n\r\n");
        let r = req_ok(&input);
        assert_eq!(r.header("x-bin"), None);
        assert!(r.headers().any(|(n, v)| n == "X-Bin" && v == b"caf\xe9"));
    }

    // --- request: errors ---------------------------------------------------------------

    #[test]
    fn request_errors() {
        use HandshakeError as E;
        let cases: Vec<(Vec<u8>, E)> = vec![
            (b"GET / HTTP/1.1\r\nBad Header\r\n\r\n".to_vec(), E::Malformed),
            (b"\x01\x02\r\n\r\n".to_vec(), E::Malformed),
            (request_lines("GET / HTTP/1.1", &[&GOOD[..], &["Host: h"]].concat()), E::Malformed),
            (
                request_lines(
                    "GET / HTTP/1.1",
                    &[&GOOD[..], &["Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="]].concat(),
                ),
                E::Malformed,
            ),
            (good_but(0, "Host: caf\u{e9}").replace_latin1(), E::Malformed),
            (
                request_lines(
                    "GET / HTTP/1.1",
                    &[&GOOD[..], &["Sec-WebSocket-Protocol: a b"]].concat(),
                ),
                E::Malformed,
            ),
            (request_lines("POST / HTTP/1.1", &GOOD), E::MethodNotGet),
            (request_lines("get / HTTP/1.1", &GOOD), E::MethodNotGet),
            (request_lines("GET / HTTP/1.0", &GOOD), E::HttpVersion),
            (request_lines("GET / HTTP/2.0", &GOOD), E::HttpVersion),
            (request_lines("GET / FTP/1.1", &GOOD), E::Malformed),
            (good_but(0, ""), E::MissingHost),
            (good_but(1, ""), E::MissingUpgrade),
            (good_but(1, "Upgrade: websocket2"), E::MissingUpgrade),
            (good_but(2, ""), E::MissingConnectionUpgrade),
            (good_but(2, "Connection: keep-alive, upgraded"), E::MissingConnectionUpgrade),
            (good_but(4, ""), E::UnsupportedVersion),
            (good_but(4, "Sec-WebSocket-Version: 8"), E::UnsupportedVersion),
            (good_but(4, "Sec-WebSocket-Version: 13, 8"), E::UnsupportedVersion),
            (good_but(3, ""), E::InvalidKey),
            (good_but(3, "Sec-WebSocket-Key: c2hvcnQ="), E::InvalidKey),
            (good_but(3, "Sec-WebSocket-Key: not base64 at all!!!!!"), E::InvalidKey),
            (good_but(3, "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ"), E::InvalidKey),
        ];
        for (input, expected) in cases {
            assert_eq!(
                req(&input).map(|_| ()),
                Err(expected),
                "{}",
                String::from_utf8_lossy(&input)
            );
        }
    }

    /// Turns the UTF-8 `é` of a test input into a lone Latin-1 byte.
    trait ReplaceLatin1 {
        fn replace_latin1(self) -> Vec<u8>;
    }

    impl ReplaceLatin1 for Vec<u8> {
        fn replace_latin1(self) -> Vec<u8> {
            let mut out = Vec::with_capacity(self.len());
            let mut i = 0;
            while i < self.len() {
                if self[i..].starts_with("\u{e9}".as_bytes()) {
                    out.push(0xe9);
                    i += 2;
                } else {
                    out.push(self[i]);
                    i += 1;
                }
            }
            out
        }
    }

    #[test]
    fn too_many_headers() {
        let filler: Vec<String> = (0..MAX_HEADERS).map(|i| format!("X-{i}: v")).collect();
        let mut lines = GOOD.to_vec();
        lines.extend(filler.iter().map(String::as_str));
        assert_eq!(
            req(&request_lines("GET / HTTP/1.1", &lines)),
            Err(HandshakeError::TooManyHeaders)
        );
        // Exactly MAX_HEADERS lines is fine.
        lines.truncate(MAX_HEADERS);
        assert!(req(&request_lines("GET / HTTP/1.1", &lines)).is_ok());
    }

    #[test]
    fn head_of_exactly_max_head_and_one_more() {
        let input = request_with("");
        let n = input.len();
        let run = |max: usize| three_ways(|i, c| feed_req(i, max, c), &input);
        assert_eq!(run(n).unwrap().unwrap().1, n);
        assert_eq!(run(n - 1), Err(HandshakeError::HeadTooLarge));
        // A head without an end is refused as soon as max_head bytes are in.
        let mut p = RequestParser::new(8);
        assert_eq!(p.parse(b"GET / HT"), Err(HandshakeError::HeadTooLarge));
        let mut p = RequestParser::new(8);
        assert_eq!(p.parse(b"GET / H"), Ok(None));
    }

    #[test]
    fn trickled_head_is_parsed_once() {
        let padding = "x".repeat(MAX - request_with("X-Pad: \r\n").len());
        let input = request_with(&format!("X-Pad: {padding}\r\n"));
        assert_eq!(input.len(), MAX);
        let mut p = RequestParser::new(MAX);
        for end in 1..input.len() {
            assert_eq!(p.parse(&input[..end]), Ok(None));
            // Only the last three bytes are ever searched twice.
            assert_eq!(p.scan.scanned, end);
        }
        assert_eq!(p.scan.parses, 0);
        let (r, len) = p.parse(&input).unwrap().unwrap();
        assert_eq!((len, p.scan.parses), (MAX, 1));
        assert_eq!(r.header("x-pad").map(str::len), Some(padding.len()));
    }

    // --- server responses --------------------------------------------------------------

    #[test]
    fn accept_response_bytes() {
        let r = req_ok(&request_with("Sec-WebSocket-Protocol: chat, superchat\r\n"));
        let out = accept_response(&r, Some("chat"), &[("Set-Cookie", "id=1")]).unwrap();
        assert_eq!(
            &out[..],
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\
              Sec-WebSocket-Protocol: chat\r\nSet-Cookie: id=1\r\n\r\n"
        );
        let plain = accept_response(&r, None, &[]).unwrap();
        assert!(!plain.windows(22).any(|w| w == b"Sec-WebSocket-Protocol"));
    }

    #[test]
    fn accept_response_rejects_bad_input() {
        let r = req_ok(&request_with("Sec-WebSocket-Protocol: chat\r\n"));
        let bad = Err(SendError::InvalidHeader);
        assert_eq!(accept_response(&r, Some("superchat"), &[]), bad);
        assert_eq!(accept_response(&r, Some("Chat"), &[]), bad);
        for header in [
            ("X-A", "a\r\nX-Evil: 1"),
            ("X-A", "a\nb"),
            ("X-A", "a\0"),
            ("", "v"),
            ("X A", "v"),
            ("X:A", "v"),
            ("X-\u{e9}", "v"),
        ] {
            assert_eq!(accept_response(&r, None, &[header]), bad, "{header:?}");
        }
    }

    #[test]
    fn reject_response_bytes() {
        let out = reject_response(401, &[("WWW-Authenticate", "Bearer")], b"no").unwrap();
        assert_eq!(
            &out[..],
            b"HTTP/1.1 401 Unauthorized\r\nContent-Type: text/plain; charset=utf-8\r\n\
              Content-Length: 2\r\nConnection: close\r\nWWW-Authenticate: Bearer\r\n\r\nno"
        );
        let out = reject_response(418, &[("content-type", "application/json")], b"{}").unwrap();
        assert_eq!(
            &out[..],
            b"HTTP/1.1 418 Error\r\nContent-Length: 2\r\nConnection: close\r\n\
              content-type: application/json\r\n\r\n{}"
        );
        for (status, reason) in
            [(403, "Forbidden"), (429, "Too Many Requests"), (503, "Service Unavailable")]
        {
            let out = reject_response(status, &[], b"").unwrap();
            assert!(out.starts_with(format!("HTTP/1.1 {status} {reason}\r\n").as_bytes()));
        }
    }

    #[test]
    fn reject_response_rejects_bad_input() {
        let bad = Err(SendError::InvalidHeader);
        for status in [0, 99, 101, 600, 1000] {
            assert_eq!(reject_response(status, &[], b""), bad, "{status}");
        }
        assert_eq!(reject_response(400, &[("X", "a\r\n")], b""), bad);
        assert_eq!(reject_response(400, &[("Content-Length", "5")], b""), bad);
        assert_eq!(reject_response(400, &[("transfer-encoding", "chunked")], b""), bad);
    }

    #[test]
    fn error_responses() {
        let out = error_response(HandshakeError::UnsupportedVersion);
        let text = String::from_utf8(out.to_vec()).unwrap();
        assert!(text.starts_with("HTTP/1.1 426 Upgrade Required\r\n"));
        assert!(text.contains("\r\nSec-WebSocket-Version: 13\r\n"));
        let body = format!("{}\n", HandshakeError::UnsupportedVersion);
        assert!(text.ends_with(&format!(
            "Content-Length: {}\r\nConnection: close\r\nSec-WebSocket-Version: 13\r\n\r\n{body}",
            body.len()
        )));

        let text =
            String::from_utf8(error_response(HandshakeError::MethodNotGet).to_vec()).unwrap();
        assert!(text.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"));
        assert!(text.contains("\r\nAllow: GET\r\n"));

        for (err, line) in [
            (HandshakeError::HeadTooLarge, "HTTP/1.1 431 Request Header Fields Too Large\r\n"),
            (HandshakeError::HttpVersion, "HTTP/1.1 505 HTTP Version Not Supported\r\n"),
            (HandshakeError::InvalidKey, "HTTP/1.1 400 Bad Request\r\n"),
            (HandshakeError::Timeout, "HTTP/1.1 408 Request Timeout\r\n"),
            (HandshakeError::Status(101), "HTTP/1.1 400 Bad Request\r\n"),
            (HandshakeError::Status(0), "HTTP/1.1 400 Bad Request\r\n"),
            (HandshakeError::Status(503), "HTTP/1.1 503 Service Unavailable\r\n"),
        ] {
            let out = error_response(err);
            assert!(out.starts_with(line.as_bytes()), "{err:?}");
            assert!(out.ends_with(format!("\r\n\r\n{err}\n").as_bytes()), "{err:?}");
        }
    }

    // --- client request ----------------------------------------------------------------

    #[test]
    fn client_request_bytes() {
        let out = client_request(
            "server.example.com",
            "/chat?x=1",
            KEY,
            &strings(&["chat", "superchat"]),
            &[("Origin".to_owned(), "http://example.com".to_owned())],
        )
        .unwrap();
        assert_eq!(
            &out[..],
            b"GET /chat?x=1 HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\n\
              Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
              Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: chat, superchat\r\n\
              Origin: http://example.com\r\n\r\n"
        );
        let plain = client_request("h", "/", KEY, &[], &[]).unwrap();
        assert!(!plain.windows(22).any(|w| w == b"Sec-WebSocket-Protocol"));
    }

    #[test]
    fn client_request_rejects_bad_input() {
        let bad = Err(SendError::InvalidHeader);
        let ok_proto = strings(&["chat"]);
        let hdr = |n: &str, v: &str| vec![(n.to_owned(), v.to_owned())];
        assert_eq!(client_request("h", "chat", KEY, &[], &[]), bad);
        assert_eq!(client_request("h", "", KEY, &[], &[]), bad);
        assert_eq!(client_request("h", "/a b", KEY, &[], &[]), bad);
        assert_eq!(client_request("h", "/a\r\nX: 1", KEY, &[], &[]), bad);
        assert_eq!(client_request("h", "/a#frag", KEY, &[], &[]), bad);
        assert_eq!(client_request("h", "/caf\u{e9}", KEY, &[], &[]), bad);
        assert_eq!(client_request("", "/", KEY, &[], &[]), bad);
        assert_eq!(client_request("h\r\nX: 1", "/", KEY, &[], &[]), bad);
        assert_eq!(client_request("h", "/", "short", &[], &[]), bad);
        assert_eq!(client_request("h", "/", KEY, &strings(&["a b"]), &[]), bad);
        assert_eq!(client_request("h", "/", KEY, &strings(&[""]), &[]), bad);
        assert_eq!(client_request("h", "/", KEY, &ok_proto, &hdr("X", "a\nb")), bad);
        assert_eq!(client_request("h", "/", KEY, &ok_proto, &hdr("X Y", "v")), bad);
        assert!(client_request("h", "/", KEY, &ok_proto, &hdr("X", "v")).is_ok());
    }

    #[test]
    fn client_and_server_agree() {
        let key = generate_key([7; 16]);
        let offered = strings(&["v2.proto", "v1.proto"]);
        let request = client_request(
            "example.com:8080",
            "/live?token=abc",
            &key,
            &offered,
            &[("Cookie".to_owned(), "sid=42".to_owned())],
        )
        .unwrap();
        let r = req_ok(&request);
        assert_eq!(r.key(), key);
        assert_eq!(r.protocols(), offered);
        assert_eq!((r.host(), r.cookie("sid")), ("example.com:8080", Some("42")));
        assert_eq!(r.token().as_deref(), Some("abc"));

        let response = accept_response(&r, Some("v1.proto"), &[]).unwrap();
        let mut p = ResponseParser::new(MAX);
        let (resp, len) = p.parse(&response, &key, &offered).unwrap().unwrap();
        assert_eq!(len, response.len());
        assert_eq!((resp.status(), resp.subprotocol()), (101, Some("v1.proto")));
        assert_eq!(resp.header("sec-websocket-accept"), Some(accept_key(&key).as_str()));
    }

    // --- client response ---------------------------------------------------------------

    #[test]
    fn parses_rfc_example_response() {
        let input = response_with("Sec-WebSocket-Protocol: chat\r\nX-Server: t\r\n");
        let (r, len) = resp(&input, &strings(&["superchat", "chat"])).unwrap().unwrap();
        assert_eq!(len, input.len());
        assert_eq!(r.status(), 101);
        assert_eq!(r.subprotocol(), Some("chat"));
        assert_eq!(r.header("x-server"), Some("t"));
        assert_eq!(r.header("missing"), None);

        let (r, _) = resp(&response_with(""), &strings(&["chat"])).unwrap().unwrap();
        assert_eq!(r.subprotocol(), None);
    }

    #[test]
    fn response_token_lists() {
        let input = b"HTTP/1.1 101 OK\r\nupgrade: WebSocket\r\nconnection: keep-alive, UPGRADE\r\n\
                      sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
        assert!(resp(input, &[]).is_ok());
    }

    #[test]
    fn response_errors() {
        use HandshakeError as E;
        let offered = strings(&["chat"]);
        let line = |s: &str| format!("HTTP/1.1 101 Switching Protocols\r\n{s}\r\n").into_bytes();
        let cases: Vec<(Vec<u8>, E)> = vec![
            (b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_vec(), E::Status(404)),
            (b"HTTP/1.1 200 OK\r\n\r\n".to_vec(), E::Status(200)),
            (b"HTTP/1.0 101 Switching Protocols\r\n\r\n".to_vec(), E::HttpVersion),
            (b"HTTP/1.1 abc\r\n\r\n".to_vec(), E::Malformed),
            (b"garbage\r\n\r\n".to_vec(), E::Malformed),
            (b"HTTP/2 101 Switching Protocols\r\n\r\n".to_vec(), E::HttpVersion),
            (line("Connection: Upgrade\r\n"), E::MissingUpgrade),
            (line("Upgrade: websocket\r\n"), E::MissingConnectionUpgrade),
            (line("Upgrade: websocket\r\nConnection: Upgrade\r\n"), E::InvalidAccept),
            (
                line("Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: AAAA\r\n"),
                E::InvalidAccept,
            ),
            (response_with(&format!("Sec-WebSocket-Accept: {ACCEPT}\r\n")), E::InvalidAccept),
            (response_with("Sec-WebSocket-Protocol: superchat\r\n"), E::UnexpectedSubprotocol),
            (response_with("Sec-WebSocket-Protocol: chat, chat\r\n"), E::UnexpectedSubprotocol),
            (
                response_with("Sec-WebSocket-Protocol: chat\r\nSec-WebSocket-Protocol: chat\r\n"),
                E::UnexpectedSubprotocol,
            ),
            (
                response_with("Sec-WebSocket-Extensions: permessage-deflate\r\n"),
                E::UnexpectedExtension,
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(
                resp(&input, &offered).map(|_| ()),
                Err(expected),
                "{}",
                String::from_utf8_lossy(&input)
            );
        }
        let filler: String = (0..MAX_HEADERS).map(|i| format!("X-{i}: v\r\n")).collect();
        assert_eq!(resp(&response_with(&filler), &offered).map(|_| ()), Err(E::TooManyHeaders));
        let input = response_with("");
        let mut p = ResponseParser::new(input.len() - 1);
        assert_eq!(p.parse(&input, KEY, &offered).map(|_| ()), Err(E::HeadTooLarge));
        let mut p = ResponseParser::new(input.len());
        assert!(p.parse(&input, KEY, &offered).is_ok());
    }

    // --- split invariance --------------------------------------------------------------

    fn sorted_cuts(mut cuts: Vec<usize>) -> Vec<usize> {
        cuts.sort_unstable();
        cuts
    }

    proptest! {
        #[test]
        fn request_split_invariance(cuts in proptest::collection::vec(0usize..400, 0..12),
                                    tail in proptest::collection::vec(any::<u8>(), 0..16)) {
            let head = request_with("Sec-WebSocket-Protocol: a, b\r\nCookie: a=1\r\n");
            let mut input = head.clone();
            input.extend_from_slice(&tail);
            let whole = feed_req(&input, MAX, &[]);
            prop_assert_eq!(feed_req(&input, MAX, &sorted_cuts(cuts)), whole.clone());
            prop_assert_eq!(whole.map(|r| r.map(|(_, len)| len)), Ok(Some(head.len())));
        }

        #[test]
        fn response_split_invariance(cuts in proptest::collection::vec(0usize..300, 0..12)) {
            let input = response_with("Sec-WebSocket-Protocol: chat\r\n");
            let offered = strings(&["chat"]);
            let whole = feed_resp(&input, &offered, &[]);
            prop_assert!(whole.is_ok());
            prop_assert_eq!(feed_resp(&input, &offered, &sorted_cuts(cuts)), whole);
        }

        #[test]
        fn arbitrary_bytes_split_invariance(input in proptest::collection::vec(
                                                prop_oneof![any::<u8>(), Just(b'\r'), Just(b'\n')], 0..200),
                                            cuts in proptest::collection::vec(0usize..200, 0..8)) {
            let cuts = sorted_cuts(cuts);
            prop_assert_eq!(feed_req(&input, 128, &cuts), feed_req(&input, 128, &[]));
            prop_assert_eq!(feed_resp(&input, &[], &cuts), feed_resp(&input, &[], &[]));
        }
    }
}
