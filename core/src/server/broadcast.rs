//! One compression of a broadcast for every receiver that can share it (RFC 7692 with
//! `server_no_context_takeover`; feature `deflate`).
//!
//! The hub encodes a channel message once and puts the same [`Bytes`] in every receiver's
//! outbox. When a WebSocket that negotiated `permessage-deflate` with
//! `server_no_context_takeover` pulls such a frame, the server compresses it at most once
//! per window size and hands every such receiver the same compressed payload
//! ([`WsConnection::send_prepared`]): the cost of a broadcast grows with the number of
//! receivers only by a frame header each, as without compression. Receivers with context
//! takeover compress on their own (their stream depends on what they were sent before).
//!
//! The cache holds the last [`CACHE`] (frame, window) pairs. It keeps a clone of each
//! frame, so a frame's allocation cannot be reused by another frame while its entry
//! lives: identity by pointer is sound.

use std::collections::VecDeque;

use bytes::Bytes;

use crate::ws::deflate::{DeflateConfig, PreparedMessage};
use crate::ws::{Message, Utf8Bytes, WsConnection};

/// Broadcast frames whose compressed form is kept.
pub(super) const CACHE: usize = 32;

/// Compressed broadcast frames, by frame identity and window.
#[derive(Debug, Default)]
pub(super) struct Compressed {
    entries: VecDeque<(Bytes, u8, PreparedMessage)>,
    /// Frames compressed (once each per window).
    pub(super) compressions: u64,
    /// Sends that shared a compression made for another receiver.
    pub(super) shared: u64,
}

impl Compressed {
    /// What `ws` should send for hub frame `frame`: a shared compressed message when `ws`
    /// can take one, `None` when it sends the frame the usual way.
    pub(super) fn prepare(
        &mut self,
        ws: &WsConnection,
        cfg: Option<&DeflateConfig>,
        frame: &Bytes,
    ) -> Option<PreparedMessage> {
        let cfg = cfg?;
        let params = ws.deflate_params()?;
        let window = params.server_max_window_bits;
        if !params.server_no_context_takeover || frame.len() < cfg.min_size {
            return None;
        }
        let same = |(f, w, _): &&(Bytes, u8, PreparedMessage)| {
            *w == window && f.as_ptr() == frame.as_ptr() && f.len() == frame.len()
        };
        if let Some((_, _, p)) = self.entries.iter().find(same) {
            self.shared += 1;
            return Some(p.clone());
        }
        let text = Utf8Bytes::try_from_bytes(frame.clone()).ok()?;
        let mut c = cfg.clone();
        c.server_max_window_bits = window;
        let p = PreparedMessage::new(Message::text(text), &c);
        if !ws.takes_prepared(p.window_bits()) {
            return None;
        }
        self.compressions += 1;
        if self.entries.len() >= CACHE {
            self.entries.pop_front();
        }
        self.entries.push_back((frame.clone(), window, p.clone()));
        Some(p)
    }
}
