//! HTTP/1.1 heads as sans-IO code: what every Tidewire transport starts with.
//!
//! A WebSocket upgrade, an SSE stream, a polling request and a publish are all HTTP/1.1
//! requests; the adapters read one head with [`RequestParser`], look at the
//! [`Request`] (route, credentials, `Accept`, `Last-Event-ID`) and hand it to the machine of
//! that transport. Responses are written with [`response`] (a complete response with a
//! body) or [`stream_head`] (a body that runs until the connection closes, as SSE needs).
//! A request's body is read with [`BodyReader`] (`Content-Length` or chunked).
//! The client side reads the answer with [`ResponseParser`].
//!
//! Both parsers are resumable and linear: they remember how far they searched for the blank
//! line that ends the head and run `httparse` once, on the complete head (`httparse` always
//! starts again from byte 0). Heads are bounded by `max_head` bytes and 64 header lines.

use bytes::{BufMut as _, BytesMut};

mod body;
mod request;
mod response;
#[cfg(test)]
mod tests;

pub use body::{BodyError, BodyReader};
pub use request::{Request, RequestParser};
pub use response::{Response, ResponseParser, reason_phrase, response, stream_head};

/// The most header lines a head may carry; more is [`HttpError::TooManyHeaders`].
pub(crate) const MAX_HEADERS: usize = 64;

/// The blank line that ends an HTTP/1.1 head.
const END_OF_HEAD: &[u8] = b"\r\n\r\n";

/// Why a head could not be read. Each knows the status a server answers it with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HttpError {
    /// No head ended within `max_head` bytes (431).
    #[error("HTTP head too large")]
    HeadTooLarge,
    /// Not valid HTTP/1.x (400).
    #[error("malformed HTTP head")]
    Malformed,
    /// More than 64 header lines (431).
    #[error("too many headers")]
    TooManyHeaders,
    /// Not HTTP/1.1 (505).
    #[error("HTTP/1.1 required")]
    HttpVersion,
}

impl HttpError {
    /// The status a server answers with.
    #[must_use]
    pub fn status(self) -> u16 {
        match self {
            Self::HeadTooLarge | Self::TooManyHeaders => 431,
            Self::Malformed => 400,
            Self::HttpVersion => 505,
        }
    }
}

/// A header name or value that cannot be written (a name that is not a token, a value with
/// CR, LF or NUL), or a status that is not allowed there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid header or status")]
pub struct InvalidHeader;

// ---------------------------------------------------------------------------------------
// Finding the end of the head
// ---------------------------------------------------------------------------------------

/// The resumable search for `\r\n\r\n` shared by the parsers.
#[derive(Clone, Debug)]
pub(crate) struct HeadScanner {
    max_head: usize,
    /// Bytes of the buffer already searched without finding the end of the head.
    pub(crate) scanned: usize,
    /// How many times `httparse` ran (the quadratic-behaviour guard of the tests).
    #[cfg(test)]
    pub(crate) parses: usize,
}

impl HeadScanner {
    pub(crate) fn new(max_head: usize) -> Self {
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
    pub(crate) fn find_end(&mut self, buf: &[u8]) -> Result<Option<usize>, HttpError> {
        let limit = buf.len().min(self.max_head);
        let start = self.scanned.min(limit).saturating_sub(END_OF_HEAD.len() - 1);
        if let Some(pos) = memchr::memmem::find(&buf[start..limit], END_OF_HEAD) {
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
            return Err(HttpError::HeadTooLarge);
        }
        self.scanned = limit;
        Ok(None)
    }
}

/// Maps an `httparse` failure. A version `httparse` does not know (e.g. `HTTP/2.0`) is
/// `HttpVersion` when the first line names one, `Malformed` otherwise.
pub(crate) fn httparse_error(err: httparse::Error, head: &[u8]) -> HttpError {
    match err {
        httparse::Error::TooManyHeaders => HttpError::TooManyHeaders,
        httparse::Error::Version => {
            let first_line = head.split(|&b| b == b'\n').next().unwrap_or_default();
            if first_line.windows(5).any(|w| w == b"HTTP/") {
                HttpError::HttpVersion
            } else {
                HttpError::Malformed
            }
        }
        _ => HttpError::Malformed,
    }
}

// ---------------------------------------------------------------------------------------
// Spans into a stored head
// ---------------------------------------------------------------------------------------

/// A byte range inside a stored head.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Span {
    pub(crate) start: usize,
    pub(crate) end: usize,
}

impl Span {
    /// The position of `part` inside `base`; `part` is a sub-slice `httparse` returned.
    pub(crate) fn of(base: &[u8], part: &[u8]) -> Self {
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
pub(crate) struct Field {
    pub(crate) name: Span,
    pub(crate) value: Span,
}

// ---------------------------------------------------------------------------------------
// Header helpers
// ---------------------------------------------------------------------------------------

/// Values of every header called `name` (case-insensitive), in order.
pub(crate) fn values_of<'a>(
    headers: &[httparse::Header<'a>],
    name: &str,
) -> impl Iterator<Item = &'a [u8]> {
    headers.iter().filter(move |h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value)
}

/// The one header called `name`: `Ok(None)` if absent, `Err(())` if repeated.
pub(crate) fn single_value<'a>(
    headers: &[httparse::Header<'a>],
    name: &str,
) -> Result<Option<&'a [u8]>, ()> {
    let mut values = values_of(headers, name);
    let first = values.next();
    if values.next().is_some() {
        return Err(());
    }
    Ok(first)
}

/// Whether a comma-separated header value holds `token` (case-insensitive), e.g.
/// `Connection: keep-alive, Upgrade`.
pub(crate) fn value_has_token(value: &[u8], token: &str) -> bool {
    value.split(|&b| b == b',').any(|item| item.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// Whether the comma-separated lists of every header called `name` hold `token`.
pub(crate) fn list_has_token(headers: &[httparse::Header<'_>], name: &str, token: &str) -> bool {
    values_of(headers, name).any(|value| value_has_token(value, token))
}

/// RFC 9110 §5.6.2 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// RFC 9110 §5.6.2 `token`: one or more `tchar`.
pub(crate) fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_tchar)
}

/// Checks a header the application wants to send: the name is a token and the value holds no
/// CR, LF or NUL, so it cannot end the line or the head early.
pub(crate) fn check_header(name: &str, value: &str) -> Result<(), InvalidHeader> {
    if is_token(name) && !value.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0)) {
        Ok(())
    } else {
        Err(InvalidHeader)
    }
}

pub(crate) fn put_header(out: &mut BytesMut, name: &str, value: &str) {
    out.put_slice(name.as_bytes());
    out.put_slice(b": ");
    out.put_slice(value.as_bytes());
    out.put_slice(b"\r\n");
}

/// Decodes `%XX` escapes and `+` (as a space) of a query component. A `%` not followed by two
/// hex digits is kept as it is.
pub(crate) fn percent_decode(s: &str) -> Vec<u8> {
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
