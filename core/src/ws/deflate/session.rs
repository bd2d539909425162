//! [`PerMessageDeflate`]: one connection's agreement and its zlib states. It sits between
//! the frame decoder and the reassembler on receive, and in front of the frame queue on send.

use bytes::Bytes;
use flate2::{Compress, Compression, Decompress};

use super::compress::deflate_message;
use super::inflate::Inflating;
use super::pool::{
    give_deflater, give_inflater, new_deflater, new_inflater, take_deflater, take_inflater,
};
use super::{DeflateConfig, DeflateMemory, DeflateParams, MIN_COMPRESS_WINDOW_BITS, RSV1};
use crate::ws::error::ProtocolError;
use crate::ws::frame::{Frame, OpCode, Role};
use crate::ws::message::Message;

/// One direction of the agreement, as this endpoint uses it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Direction {
    /// The sender resets its context after each message.
    no_context: bool,
    /// The sender's window is at most 2^bits bytes.
    bits: u8,
}

/// What a received frame amounts to once permessage-deflate has looked at it.
#[derive(Debug)]
pub(crate) enum Received {
    /// Not compressed (a control frame, or a frame of an uncompressed message): on to the
    /// reassembler as it is.
    Frame(Frame),
    /// A non-final frame of a compressed message: inflated and kept.
    Pending,
    /// The final frame of a compressed message: the whole message, inflated and checked.
    Message(Message),
}

/// The negotiated extension on one connection: the agreement, the compressor (kept only with
/// context takeover, created on the first compressed message) and the inflater (kept only
/// with context takeover; otherwise held for the duration of one message).
#[derive(Debug)]
pub(crate) struct PerMessageDeflate {
    params: DeflateParams,
    send: Direction,
    recv: Direction,
    level: Compression,
    min_size: usize,
    memory: DeflateMemory,
    compressor: Option<Compress>,
    inflater: Option<Decompress>,
    inflating: Option<Inflating>,
}

impl PerMessageDeflate {
    /// The extension for `role` after agreeing on `params`, with the local `cfg`.
    pub(crate) fn new(role: Role, params: DeflateParams, cfg: &DeflateConfig) -> Self {
        let server = Direction {
            no_context: params.server_no_context_takeover,
            bits: params.server_max_window_bits,
        };
        let client = Direction {
            no_context: params.client_no_context_takeover,
            bits: params.client_max_window_bits,
        };
        let (send, recv) = match role {
            Role::Server => (server, client),
            Role::Client => (client, server),
        };
        Self {
            params,
            send,
            recv,
            level: cfg.compression(),
            min_size: cfg.min_size,
            memory: cfg.memory,
            compressor: None,
            inflater: None,
            inflating: None,
        }
    }

    /// The agreement.
    pub(crate) fn params(&self) -> DeflateParams {
        self.params
    }

    /// Whether our sends can be compressed at all (a window of 8 cannot: they go plain).
    fn can_compress(&self) -> bool {
        self.send.bits >= MIN_COMPRESS_WINDOW_BITS
    }

    /// Whether a message compressed without context with a window of `window_bits` may be
    /// sent as is: our side resets per message and the peer accepts that window.
    pub(crate) fn takes_prepared(&self, window_bits: u8) -> bool {
        self.send.no_context && self.can_compress() && window_bits <= self.send.bits
    }

    /// Compresses an outgoing message's payload; `None` sends it uncompressed (shorter than
    /// `min_size`, a window of 8, no gain without context, or a backend error).
    pub(crate) fn compress(&mut self, payload: &[u8]) -> Option<Bytes> {
        if payload.len() < self.min_size || !self.can_compress() {
            return None;
        }
        let (level, bits) = (self.level, self.send.bits);
        if self.send.no_context {
            let mut c = take_deflater(self.memory, level, bits);
            let out = deflate_message(&mut c, payload);
            if out.is_some() {
                give_deflater(self.memory, level, bits, c);
            }
            // Without context, a message that does not shrink may as well go plain.
            return out.filter(|o| o.len() < payload.len()).map(Bytes::from);
        }
        let c = self.compressor.get_or_insert_with(|| new_deflater(level, bits));
        match deflate_message(c, payload) {
            Some(out) => Some(Bytes::from(out)),
            None => {
                // The stream is broken: start again with no context (always allowed).
                self.compressor = None;
                None
            }
        }
    }

    /// Looks at a received frame (RFC 7692 §6, §7.2.2). `plain_in_progress`: the
    /// reassembler holds an uncompressed fragmented message; `max_message` bounds the
    /// inflated size.
    ///
    /// # Errors
    /// [`ProtocolError::ReservedBits`] for RSV1 on a control or continuation frame;
    /// [`ProtocolError::ExpectedContinuation`] for a new data frame inside a compressed
    /// message (or a compressed one inside an uncompressed message);
    /// [`ProtocolError::InvalidCompressedData`], [`ProtocolError::MessageTooLarge`] and
    /// [`ProtocolError::InvalidUtf8`] while inflating. After an error the connection is to
    /// be failed.
    pub(crate) fn receive(
        &mut self,
        frame: Frame,
        plain_in_progress: bool,
        max_message: usize,
    ) -> Result<Received, ProtocolError> {
        let result = self.receive_inner(frame, plain_in_progress, max_message);
        if result.is_err() {
            self.release();
        }
        result
    }

    fn receive_inner(
        &mut self,
        frame: Frame,
        plain_in_progress: bool,
        max_message: usize,
    ) -> Result<Received, ProtocolError> {
        let compressed = frame.rsv & RSV1 != 0;
        let message = match frame.opcode {
            OpCode::Close | OpCode::Ping | OpCode::Pong => {
                return if compressed {
                    Err(ProtocolError::ReservedBits)
                } else {
                    Ok(Received::Frame(frame))
                };
            }
            OpCode::Continuation => {
                if compressed {
                    return Err(ProtocolError::ReservedBits);
                }
                match self.inflating.take() {
                    Some(m) => m,
                    None => return Ok(Received::Frame(frame)),
                }
            }
            OpCode::Text | OpCode::Binary => {
                if self.inflating.is_some() || (compressed && plain_in_progress) {
                    return Err(ProtocolError::ExpectedContinuation);
                }
                if !compressed {
                    return Ok(Received::Frame(frame));
                }
                if self.recv.no_context {
                    self.inflater = Some(take_inflater(self.memory));
                }
                Inflating::new(frame.opcode == OpCode::Text, frame.payload.len(), max_message)
            }
        };
        let mut message = message;
        let bits = self.recv.bits;
        let d = self.inflater.get_or_insert_with(|| new_inflater(bits));
        message.push(d, &frame.payload, max_message)?;
        if !frame.fin {
            self.inflating = Some(message);
            return Ok(Received::Pending);
        }
        let ended = message.stream_ended();
        let done = message.finish(d, max_message)?;
        if self.recv.no_context {
            if let Some(d) = self.inflater.take() {
                give_inflater(self.memory, d);
            }
        } else if ended {
            // The peer ended its stream (BFINAL): the next message starts a new one.
            d.reset(false);
        }
        Ok(Received::Message(done))
    }

    /// Frees the zlib states (the connection is closed or failed).
    pub(crate) fn release(&mut self) {
        self.compressor = None;
        self.inflater = None;
        self.inflating = None;
    }

    /// Whether any zlib state or partial message is held (tests of the idle cost).
    #[cfg(test)]
    pub(crate) fn holds_state(&self) -> bool {
        self.compressor.is_some() || self.inflater.is_some() || self.inflating.is_some()
    }
}
