//! permessage-deflate in [`WsConnection`] (feature `deflate`): the offer and the answer in
//! the handshake, and the public commands and getters that come with it.

use std::borrow::Cow;

use super::{Incoming, WsConnection};
use crate::time::Instant;
use crate::ws::deflate::{self, DeflateParams, PerMessageDeflate, PreparedMessage, RSV1, Received};
use crate::ws::error::{HandshakeError, ProtocolError, SendError};
use crate::ws::frame::{Frame, FrameDecoder, OpCode};
use crate::ws::handshake::{HandshakeResponse, UpgradeRequest};

impl WsConnection {
    // ----- public: getters and commands -----

    /// The permessage-deflate agreement, once negotiated (feature `deflate`). `None` when
    /// not configured or declined.
    #[must_use]
    pub fn deflate_params(&self) -> Option<DeflateParams> {
        self.deflate.as_ref().map(|d| d.params())
    }

    /// Whether [`send_prepared`](Self::send_prepared) of a message compressed with a window
    /// of `window_bits` would share its compressed bytes here: deflate was negotiated, our
    /// side resets its context per message, and the peer accepts that window from us. A hub
    /// groups receivers by it.
    #[must_use]
    pub fn takes_prepared(&self, window_bits: u8) -> bool {
        self.deflate.as_ref().is_some_and(|d| d.takes_prepared(window_bits))
    }

    /// Sends a message compressed once for many connections ([`PreparedMessage`], feature
    /// `deflate`): its compressed payload, shared without a copy on a server, when
    /// [`takes_prepared`](Self::takes_prepared) says so; otherwise the plain message through
    /// [`send`](Self::send) (compressed with this connection's own context, or not at all).
    ///
    /// # Errors
    /// As [`send`](Self::send); `Backpressure` and `TooLarge` hand back a clone of the
    /// message (shared bytes).
    pub fn send_prepared(&mut self, now: Instant, msg: &PreparedMessage) -> Result<(), SendError> {
        let compressed = match msg.compressed() {
            Some(c) if self.takes_prepared(msg.window_bits()) => c.clone(),
            _ => return self.send(now, msg.message().clone()),
        };
        let now = self.clock.advance(now);
        self.check_open()?;
        if msg.message().len() > self.cfg.max_message {
            return Err(SendError::TooLarge(msg.message().clone()));
        }
        if self.outbox_full(now, compressed.len()) {
            return Err(SendError::Backpressure(msg.message().clone()));
        }
        if let Some(hb) = &mut self.heartbeat {
            hb.on_outbound(now);
        }
        let opcode = if msg.message().is_text() { OpCode::Text } else { OpCode::Binary };
        self.queue_message(opcode, RSV1, compressed);
        Ok(())
    }

    // ----- hooks called by the connection -----

    /// Client: the configured request headers, plus the offer when deflate is configured.
    pub(super) fn request_headers(&self) -> Cow<'_, [(String, String)]> {
        match &self.cfg.deflate {
            Some(cfg) => {
                let mut headers = self.cfg.headers.clone();
                headers.push(("Sec-WebSocket-Extensions".to_owned(), deflate::client_offer(cfg)));
                Cow::Owned(headers)
            }
            None => Cow::Borrowed(&self.cfg.headers),
        }
    }

    /// Client: whether an extension is offered (the answer is then checked here).
    pub(super) fn offers_extensions(&self) -> bool {
        self.cfg.deflate.is_some()
    }

    /// Server: the answer to the client's offers and the agreement, if deflate is
    /// configured and an offer is acceptable.
    pub(super) fn negotiate_extensions(
        &self,
        req: &UpgradeRequest,
    ) -> Option<(String, DeflateParams)> {
        deflate::negotiate_server(self.cfg.deflate.as_ref()?, req.extensions())
    }

    /// Turns on the agreed extension: RSV1 becomes legal on received frames.
    pub(super) fn enable_extensions(&mut self, params: DeflateParams) {
        if let Some(cfg) = &self.cfg.deflate {
            self.deflate = Some(Box::new(PerMessageDeflate::new(self.role, params, cfg)));
            self.decoder = FrameDecoder::new(self.role).with_allowed_rsv(RSV1);
        }
    }

    /// Client: checks the server's answer to the offer.
    pub(super) fn accept_extensions(
        &mut self,
        resp: &HandshakeResponse,
    ) -> Result<(), HandshakeError> {
        let Some(cfg) = &self.cfg.deflate else {
            return if resp.extensions().is_empty() {
                Ok(())
            } else {
                Err(HandshakeError::UnexpectedExtension)
            };
        };
        match deflate::negotiate_response(cfg, resp.extensions()) {
            Ok(Some(params)) => {
                self.enable_extensions(params);
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(deflate::NegotiationError::UnexpectedExtension) => {
                Err(HandshakeError::UnexpectedExtension)
            }
            Err(_) => Err(HandshakeError::InvalidExtension),
        }
    }

    /// Passes a received frame through the extension: `Ok(Some)` goes on to the
    /// reassembler, `Ok(None)` was consumed (a compressed fragment, or a whole compressed
    /// message, already reported).
    pub(super) fn inflate_frame(&mut self, frame: Frame) -> Result<Option<Frame>, ProtocolError> {
        let Some(d) = self.deflate.as_mut() else {
            return Ok(Some(frame));
        };
        match d.receive(frame, self.reassembler.in_progress(), self.cfg.max_message)? {
            Received::Frame(f) => Ok(Some(f)),
            Received::Pending => Ok(None),
            Received::Message(m) => {
                let now = self.clock.now();
                self.on_incoming(now, Incoming::Message(m));
                Ok(None)
            }
        }
    }

    /// Frees the zlib states at the end of the connection (the agreement stays readable).
    pub(super) fn release_extensions(&mut self) {
        if let Some(d) = &mut self.deflate {
            d.release();
        }
    }
}

#[cfg(test)]
mod tests;
