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
//!
//! Layout: `server` holds the request parser and the responses, `client` the request encoder
//! and the response parser; this file holds what both sides share (the search for the end of
//! the head, [`accept_key`], the header helpers).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::{BufMut as _, BytesMut};
use sha1::{Digest as _, Sha1};

use super::error::{HandshakeError, SendError};

mod client;
mod server;
#[cfg(test)]
mod tests;

pub use client::{HandshakeResponse, ResponseParser, client_request, generate_key};
pub use server::{RequestParser, UpgradeRequest, accept_response, error_response, reject_response};

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
