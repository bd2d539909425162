//! The request side: [`RequestParser`] reads a head into a [`Request`].

use bytes::Bytes;

use super::{
    Field, HeadScanner, HttpError, MAX_HEADERS, Span, httparse_error, percent_decode,
    value_has_token,
};

/// A parsed HTTP/1.1 request head, as a server sees it before it routes the request.
///
/// The request keeps one copy of its head; names and values are views into it.
///
/// - Request line: [`method`](Self::method), [`path`](Self::path),
///   [`path_only`](Self::path_only), [`query_param`](Self::query_param).
/// - Any field: [`header`](Self::header), [`headers`](Self::headers),
///   [`has_token`](Self::has_token), [`host`](Self::host), [`origin`](Self::origin).
/// - Credentials: [`bearer_token`](Self::bearer_token), [`cookie`](Self::cookie),
///   [`token`](Self::token).
/// - What it asks for: [`is_websocket_upgrade`](Self::is_websocket_upgrade),
///   [`accepts_event_stream`](Self::accepts_event_stream),
///   [`last_event_id`](Self::last_event_id), [`content_length`](Self::content_length).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    head: Bytes,
    method: Span,
    path: Span,
    fields: Vec<Field>,
}

impl Request {
    /// Parses a complete head (ending in `\r\n\r\n`). Every header name and the target are
    /// checked to be UTF-8 here, so the accessors cannot fail.
    pub(crate) fn parse(head: Bytes) -> Result<Self, HttpError> {
        let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut storage);
        match req.parse(&head) {
            Ok(httparse::Status::Complete(n)) if n == head.len() => {}
            Ok(_) => return Err(HttpError::Malformed),
            Err(err) => return Err(httparse_error(err, &head)),
        }
        if req.version != Some(1) {
            return Err(HttpError::HttpVersion);
        }
        let method = Span::of(&head, req.method.ok_or(HttpError::Malformed)?.as_bytes());
        let path = Span::of(&head, req.path.ok_or(HttpError::Malformed)?.as_bytes());
        let fields = req
            .headers
            .iter()
            .map(|h| Field {
                name: Span::of(&head, h.name.as_bytes()),
                value: Span::of(&head, h.value),
            })
            .collect();
        Ok(Self { head, method, path, fields })
    }

    /// The whole head as received, final blank line included.
    #[must_use]
    pub fn head(&self) -> &Bytes {
        &self.head
    }

    fn bytes(&self, span: Span) -> &[u8] {
        self.head.get(span.start..span.end).unwrap_or_default()
    }

    /// Text of a span `httparse` validated as a token or visible ASCII.
    fn text(&self, span: Span) -> &str {
        std::str::from_utf8(self.bytes(span)).unwrap_or_default()
    }

    /// The method, e.g. `GET`.
    #[must_use]
    pub fn method(&self) -> &str {
        self.text(self.method)
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

    /// Whether any header called `name` lists `token` (comma-separated, case-insensitive),
    /// e.g. `has_token("connection", "upgrade")`.
    #[must_use]
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.headers().any(|(n, v)| n.eq_ignore_ascii_case(name) && value_has_token(v, token))
    }

    /// The `Host` header, if present.
    #[must_use]
    pub fn host(&self) -> Option<&str> {
        self.header("host")
    }

    /// The `Origin` header, sent by browsers. Servers that serve browsers SHOULD check it
    /// against the origins they trust (RFC 6455 §10.2; the same holds for SSE and polling
    /// with credentials).
    #[must_use]
    pub fn origin(&self) -> Option<&str> {
        self.header("origin")
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
    /// on a WebSocket or an `EventSource`).
    #[must_use]
    pub fn token(&self) -> Option<String> {
        self.bearer_token().map(str::to_owned).or_else(|| self.query_param("token"))
    }

    /// Whether this asks to become a WebSocket (`Upgrade: websocket`). Whether the upgrade
    /// is valid is the handshake's business.
    #[must_use]
    pub fn is_websocket_upgrade(&self) -> bool {
        self.has_token("upgrade", "websocket")
    }

    /// Whether `Accept` names `text/event-stream` (what `EventSource` sends).
    #[must_use]
    pub fn accepts_event_stream(&self) -> bool {
        self.headers().filter(|(n, _)| n.eq_ignore_ascii_case("accept")).any(|(_, v)| {
            v.split(|&b| b == b',').any(|item| {
                let media = item.split(|&b| b == b';').next().unwrap_or_default();
                media.trim_ascii().eq_ignore_ascii_case(b"text/event-stream")
            })
        })
    }

    /// The `Last-Event-ID` header of a reconnecting `EventSource`, if present and not empty.
    #[must_use]
    pub fn last_event_id(&self) -> Option<&str> {
        self.header("last-event-id").map(str::trim).filter(|v| !v.is_empty())
    }

    /// The body length announced by `Content-Length`: `Ok(None)` without one.
    ///
    /// # Errors
    /// [`HttpError::Malformed`] for a value that is not digits, differing repeated values, or
    /// any `Transfer-Encoding` (Tidewire reads no chunked request bodies).
    pub fn content_length(&self) -> Result<Option<u64>, HttpError> {
        if self.headers().any(|(n, _)| n.eq_ignore_ascii_case("transfer-encoding")) {
            return Err(HttpError::Malformed);
        }
        let mut found = None;
        for (_, v) in self.headers().filter(|(n, _)| n.eq_ignore_ascii_case("content-length")) {
            let v = v.trim_ascii();
            if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
                return Err(HttpError::Malformed);
            }
            let n = v.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
            if found.is_some_and(|f| f != n) {
                return Err(HttpError::Malformed);
            }
            found = Some(n);
        }
        Ok(found)
    }
}

/// Resumable parser of a request head.
///
/// Call [`parse`](Self::parse) after every read with all the bytes received so far. It
/// searches only the new bytes for the end of the head and parses the head once, when it is
/// complete, so a head trickling in byte by byte costs linear time.
///
/// ```
/// use tidewire::http::RequestParser;
///
/// let head = b"GET /events?ch=ticks HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\
///     Last-Event-ID: a1:17\r\n\r\n";
/// let mut parser = RequestParser::new(16 << 10);
/// assert_eq!(parser.parse(&head[..10]), Ok(None));
/// let (req, len) = parser.parse(head).unwrap().unwrap();
/// assert_eq!((req.path_only(), len), ("/events", head.len()));
/// assert_eq!(req.query_param("ch").as_deref(), Some("ticks"));
/// assert!(req.accepts_event_stream());
/// assert_eq!(req.last_event_id(), Some("a1:17"));
/// ```
#[derive(Clone, Debug)]
pub struct RequestParser {
    pub(crate) scan: HeadScanner,
}

impl RequestParser {
    /// A parser that rejects heads longer than `max_head` bytes, counting the final
    /// `\r\n\r\n`.
    #[must_use]
    pub fn new(max_head: usize) -> Self {
        Self { scan: HeadScanner::new(max_head) }
    }

    /// Parses the request once `buf` holds all of its head.
    ///
    /// `buf` MUST be everything received so far, the same bytes as in the previous call plus
    /// any new ones. Returns `Ok(None)` while the head is incomplete, and the request with the
    /// length of its head once it is complete; the bytes after that length are the body (or
    /// the first WebSocket frames).
    ///
    /// # Errors
    /// [`HttpError`]: answer with its [`status`](HttpError::status) and close.
    pub fn parse(&mut self, buf: &[u8]) -> Result<Option<(Request, usize)>, HttpError> {
        let Some(len) = self.scan.find_end(buf)? else {
            return Ok(None);
        };
        Request::parse(Bytes::copy_from_slice(&buf[..len])).map(|req| Some((req, len)))
    }
}
