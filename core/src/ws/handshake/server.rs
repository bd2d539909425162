//! The server side of the handshake: [`RequestParser`] validates the client's upgrade into an
//! [`UpgradeRequest`] (RFC 6455 §4.2.1), answered with [`accept_response`] (§4.2.2),
//! [`reject_response`] or [`error_response`].

use std::ops::Deref;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::{BufMut as _, Bytes, BytesMut};

use super::accept_key;
use crate::http::{self, Request, check_header, is_token, put_header};
use crate::ws::error::{HandshakeError, SendError};

/// Splits a comma-separated list at the commas outside quoted strings, trimming each entry
/// and skipping empty ones (RFC 9110 §5.6.1).
pub(super) fn split_quoted_list(value: &str) -> impl Iterator<Item = &str> {
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

/// A validated WebSocket upgrade request (RFC 6455 §4.2.1), as the server application sees
/// it before it decides to accept or reject.
///
/// It is an [`http::Request`] (path, query, headers, credentials: every accessor of
/// `Request` works on it through `Deref`) plus the WebSocket fields that validation
/// extracted: [`host`](Self::host), [`protocols`](Self::protocols),
/// [`extensions`](Self::extensions) and [`key`](Self::key).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpgradeRequest {
    request: Request,
    host: String,
    key: String,
    protocols: Vec<String>,
    extensions: Vec<String>,
}

impl Deref for UpgradeRequest {
    type Target = Request;
    fn deref(&self) -> &Request {
        &self.request
    }
}

/// The one value of header `name`: `Ok(None)` if absent, `Err(())` if repeated or not UTF-8.
fn single<'a>(req: &'a Request, name: &str) -> Result<Option<&'a str>, ()> {
    let mut values = req.headers().filter(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v);
    let first = values.next();
    if values.next().is_some() {
        return Err(());
    }
    first.map(|v| std::str::from_utf8(v).map_err(|_| ())).transpose()
}

impl UpgradeRequest {
    /// Validates a request as a WebSocket upgrade (RFC 6455 §4.2.1). Adapters that read the
    /// head themselves to route it (WebSocket, SSE, polling) hand it over with
    /// [`WsConnection::server_for`](crate::ws::WsConnection::server_for).
    ///
    /// # Errors
    /// `MethodNotGet`, `MissingHost`, `MissingUpgrade`, `MissingConnectionUpgrade`,
    /// `UnsupportedVersion`, `InvalidKey`, and `Malformed` for repeated or non-UTF-8 fields.
    pub fn from_request(request: Request) -> Result<Self, HandshakeError> {
        use HandshakeError as E;

        if request.method() != "GET" {
            return Err(E::MethodNotGet);
        }
        let host = single(&request, "host").map_err(|()| E::Malformed)?.ok_or(E::MissingHost)?;
        if !request.has_token("upgrade", "websocket") {
            return Err(E::MissingUpgrade);
        }
        if !request.has_token("connection", "upgrade") {
            return Err(E::MissingConnectionUpgrade);
        }
        match single(&request, "sec-websocket-version") {
            Ok(Some(v)) if v.trim() == "13" => {}
            _ => return Err(E::UnsupportedVersion),
        }
        let key = single(&request, "sec-websocket-key")
            .map_err(|()| E::Malformed)?
            .ok_or(E::InvalidKey)?
            .trim();
        match BASE64.decode(key) {
            Ok(raw) if raw.len() == 16 => {}
            _ => return Err(E::InvalidKey),
        }

        let mut protocols = Vec::new();
        let mut extensions = Vec::new();
        for (name, value) in request.headers() {
            let is_protocol = name.eq_ignore_ascii_case("sec-websocket-protocol");
            let is_extension = name.eq_ignore_ascii_case("sec-websocket-extensions");
            if !is_protocol && !is_extension {
                continue;
            }
            let value = std::str::from_utf8(value).map_err(|_| E::Malformed)?;
            if is_protocol {
                for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    if !is_token(item) {
                        return Err(E::Malformed);
                    }
                    protocols.push(item.to_owned());
                }
            } else {
                extensions.extend(split_quoted_list(value).map(str::to_owned));
            }
        }
        let (host, key) = (host.to_owned(), key.to_owned());
        Ok(Self { request, host, key, protocols, extensions })
    }

    /// The request as read, for routing and credentials.
    #[must_use]
    pub fn request(&self) -> &Request {
        &self.request
    }

    /// The `Host` header (present exactly once in a valid upgrade).
    #[must_use]
    pub fn host(&self) -> &str {
        &self.host
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
        &self.key
    }
}

/// Resumable parser of the client's upgrade request (RFC 6455 §4.2.1): an
/// [`http::RequestParser`] followed by [`UpgradeRequest::from_request`].
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
    pub(super) http: http::RequestParser,
}

impl RequestParser {
    /// A parser that rejects heads longer than `max_head` bytes (`WsConfig::max_handshake`),
    /// counting the final `\r\n\r\n`.
    #[must_use]
    pub fn new(max_head: usize) -> Self {
        Self { http: http::RequestParser::new(max_head) }
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
        let Some((request, len)) = self.http.parse(buf)? else {
            return Ok(None);
        };
        UpgradeRequest::from_request(request).map(|req| Some((req, len)))
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

/// An HTTP response that refuses the upgrade, e.g. `401` with `WWW-Authenticate`: an
/// [`http::response`] (it carries `Content-Length`, `Connection: close` and, unless
/// `headers` has one, `Content-Type: text/plain; charset=utf-8`); the transport SHOULD be
/// closed once it is written.
///
/// # Errors
///
/// [`SendError::InvalidHeader`] if `status` is not in `200..=599`, an extra header name is
/// not a token, a value holds CR, LF or NUL, or an extra header is `Content-Length`,
/// `Transfer-Encoding` or `Connection` (set here).
pub fn reject_response(
    status: u16,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Bytes, SendError> {
    Ok(http::response(status, headers, body)?)
}

/// The automatic rejection of a request that failed validation: status
/// [`err.status()`](HandshakeError::status) (400 if that is not an error status), the error's
/// message as a one-line plain-text body, `Upgrade: websocket` and `Sec-WebSocket-Version: 13`
/// with 426 (a plain request to a WebSocket endpoint, or another version: RFC 9110
/// §15.5.22, RFC 6455 §4.4) and `Allow: GET` with 405 (RFC 9110 §15.5.6).
#[must_use]
pub fn error_response(err: HandshakeError) -> Bytes {
    let status = match err.status() {
        s @ 400..=599 => s,
        _ => 400,
    };
    // RFC 9110 §15.5.22: a 426 names the protocol to upgrade to.
    let headers: &[(&str, &str)] = match status {
        426 => &[("Upgrade", "websocket"), ("Sec-WebSocket-Version", "13")],
        405 => &[("Allow", "GET")],
        _ => &[],
    };
    http::response(status, headers, format!("{err}\n").as_bytes()).unwrap_or_else(|_| {
        Bytes::from_static(
            b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )
    })
}
