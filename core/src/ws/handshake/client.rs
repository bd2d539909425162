//! The client side of the handshake: [`generate_key`] and [`client_request`] encode the
//! upgrade (RFC 6455 §4.1); [`ResponseParser`] validates the answer into a
//! [`HandshakeResponse`].

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::{BufMut as _, Bytes, BytesMut};

use super::accept_key;
use super::server::split_quoted_list;
use crate::http::{
    HeadScanner, MAX_HEADERS, check_header, httparse_error, is_token, list_has_token, put_header,
    single_value, values_of,
};
use crate::ws::error::{HandshakeError, SendError};

/// A `Sec-WebSocket-Key` made of 16 random bytes (RFC 6455 §4.1). The caller MUST draw them
/// from the connection's seeded ChaCha generator, never from a constant.
#[must_use]
pub fn generate_key(random: [u8; 16]) -> String {
    BASE64.encode(random)
}

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
    extensions: Vec<String>,
    headers: Vec<(String, String)>,
}

impl HandshakeResponse {
    /// Parses and validates a complete head (ending in `\r\n\r\n`). With
    /// `allow_extensions`, `Sec-WebSocket-Extensions` entries are kept for the caller to
    /// check against its offer; without, any entry is `UnexpectedExtension`.
    fn parse(
        head: &[u8],
        key: &str,
        offered: &[String],
        allow_extensions: bool,
    ) -> Result<Self, HandshakeError> {
        use HandshakeError as E;

        let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut storage);
        match resp.parse(head) {
            Ok(httparse::Status::Complete(n)) if n == head.len() => {}
            Ok(_) => return Err(E::Malformed),
            Err(err) => return Err(httparse_error(err, head).into()),
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
        let mut extensions = Vec::new();
        for value in values_of(headers, "sec-websocket-extensions") {
            if !allow_extensions && !value.trim_ascii().is_empty() {
                return Err(E::UnexpectedExtension);
            }
            let value = std::str::from_utf8(value).map_err(|_| E::InvalidExtension)?;
            extensions.extend(split_quoted_list(value).map(str::to_owned));
        }
        let headers = headers
            .iter()
            .map(|h| (h.name.to_owned(), String::from_utf8_lossy(h.value).into_owned()))
            .collect();
        Ok(Self { status, subprotocol, extensions, headers })
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

    /// The extensions the server accepted in `Sec-WebSocket-Extensions`, one raw entry (name
    /// and parameters) per element; empty unless the parser was made with
    /// [`ResponseParser::allow_extensions`].
    #[must_use]
    pub fn extensions(&self) -> &[String] {
        &self.extensions
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
/// [`RequestParser`](super::RequestParser) it costs linear time however the head is split.
#[derive(Clone, Debug)]
pub struct ResponseParser {
    scan: HeadScanner,
    allow_extensions: bool,
}

impl ResponseParser {
    /// A parser that rejects heads longer than `max_head` bytes (`WsConfig::max_handshake`),
    /// counting the final `\r\n\r\n`.
    #[must_use]
    pub fn new(max_head: usize) -> Self {
        Self { scan: HeadScanner::new(max_head), allow_extensions: false }
    }

    /// Lets `Sec-WebSocket-Extensions` through to [`HandshakeResponse::extensions`] instead
    /// of failing with `UnexpectedExtension`: for a client that offered an extension and
    /// checks the answer itself (e.g. permessage-deflate).
    #[must_use]
    pub fn allow_extensions(mut self) -> Self {
        self.allow_extensions = true;
        self
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
    /// `InvalidAccept`, `UnexpectedSubprotocol`, and `UnexpectedExtension` (any extension,
    /// unless [`allow_extensions`](Self::allow_extensions); `InvalidExtension` if its value
    /// is not UTF-8).
    pub fn parse(
        &mut self,
        buf: &[u8],
        key: &str,
        offered: &[String],
    ) -> Result<Option<(HandshakeResponse, usize)>, HandshakeError> {
        let Some(len) = self.scan.find_end(buf)? else {
            return Ok(None);
        };
        HandshakeResponse::parse(&buf[..len], key, offered, self.allow_extensions)
            .map(|resp| Some((resp, len)))
    }
}
