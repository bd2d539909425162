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
use sha1::{Digest as _, Sha1};

mod client;
mod server;
#[cfg(test)]
mod tests;

pub use client::{HandshakeResponse, ResponseParser, client_request, generate_key};
pub use server::{RequestParser, UpgradeRequest, accept_response, error_response, reject_response};

/// The GUID of RFC 6455 §1.3, appended to the key before hashing.
const ACCEPT_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

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
