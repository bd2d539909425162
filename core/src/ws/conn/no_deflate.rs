//! The extension hooks of [`WsConnection`] without the `deflate` feature: no extension is
//! offered or accepted (see `deflate.rs` for the real ones).

use std::borrow::Cow;

use super::WsConnection;
use crate::ws::error::HandshakeError;
use crate::ws::handshake::{HandshakeResponse, UpgradeRequest};

impl WsConnection {
    /// Client: the request headers (the configured ones).
    pub(super) fn request_headers(&self) -> Cow<'_, [(String, String)]> {
        Cow::Borrowed(&self.cfg.headers)
    }

    /// Client: whether an extension is offered.
    pub(super) fn offers_extensions(&self) -> bool {
        false
    }

    /// Server: the answer to the offered extensions: none.
    pub(super) fn negotiate_extensions(&self, _req: &UpgradeRequest) -> Option<(String, ())> {
        None
    }

    /// Server: turns on what `negotiate_extensions` agreed to.
    pub(super) fn enable_extensions(&mut self, (): ()) {}

    /// Client: checks the extensions of a 101 (the parser already refused any).
    #[allow(clippy::unnecessary_wraps, clippy::unused_self)]
    pub(super) fn accept_extensions(
        &mut self,
        _resp: &HandshakeResponse,
    ) -> Result<(), HandshakeError> {
        Ok(())
    }

    /// Frees extension state at the end of the connection.
    pub(super) fn release_extensions(&mut self) {}
}
