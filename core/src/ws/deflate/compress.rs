//! Compression of one message (RFC 7692 §7.2.1): DEFLATE ended by a sync flush, whose
//! trailing empty stored block (`00 00 ff ff`) is stripped. [`PreparedMessage`] compresses a
//! message once for many connections.

use bytes::Bytes;
use flate2::{Compress, Compression, FlushCompress};

use super::pool::{give_deflater, take_deflater};
use super::{DeflateConfig, DeflateMemory, MAX_WINDOW_BITS, MIN_COMPRESS_WINDOW_BITS, TAIL};
use crate::ws::message::Message;

/// Compresses `input` as one message with `c` (a fresh stream, or one that carries the
/// context of earlier messages) and returns the payload to send: the output of a sync flush
/// without its last 4 bytes. `None` if the backend reports an error (the stream is then
/// unusable and must be reset).
pub(super) fn deflate_message(c: &mut Compress, input: &[u8]) -> Option<Vec<u8>> {
    if input.is_empty() {
        // An empty stored block (RFC 7692 §7.2.3.6). zlib emits nothing for a second flush
        // without new input, which with context takeover would leave the receiver reading
        // the appended tail as the start of a block; the block leaves both states unchanged.
        return Some(vec![0x00]);
    }
    // A guess that fits most compressible messages; grown when it does not.
    let mut out = Vec::with_capacity(input.len() / 2 + 64);
    let mut rest = input;
    loop {
        let before = c.total_in();
        c.compress_vec(rest, &mut out, FlushCompress::Sync).ok()?;
        let used = usize::try_from(c.total_in() - before).ok()?;
        rest = &rest[used..];
        // The flush is complete once all input is in and the output was not filled (zlib:
        // avail_out != 0 after a flush).
        if rest.is_empty() && out.len() < out.capacity() {
            break;
        }
        out.reserve(out.capacity().max(64));
    }
    if !out.ends_with(&TAIL) {
        debug_assert!(false, "a sync flush ends with an empty stored block");
        return None;
    }
    out.truncate(out.len() - TAIL.len());
    if out.capacity() > out.len() + out.len() / 8 + 64 {
        out.shrink_to_fit();
    }
    Some(out)
}

/// Compresses a whole message payload into its permessage-deflate wire form for receivers
/// that take it without context (the sender's side resets per message), with an LZ77
/// window of `window_bits` (9–15) and compression `level` (0–9): the frame payload to send
/// with RSV1 set on the first frame.
///
/// The result can go to any connection whose agreement lets the sender's side use a window
/// of at least `window_bits` without context takeover; see
/// [`WsConnection::send_prepared`](crate::ws::WsConnection::send_prepared). `None` for a
/// window below 9, which zlib cannot compress with (see the
/// [module docs](super#window-bits-and-the-window-of-8)).
#[must_use]
pub fn compress_message(payload: &[u8], window_bits: u8, level: u32) -> Option<Bytes> {
    if !(MIN_COMPRESS_WINDOW_BITS..=MAX_WINDOW_BITS).contains(&window_bits) {
        return None;
    }
    let level = Compression::new(level.min(9));
    let mut c = take_deflater(DeflateMemory::Pool, level, window_bits);
    let out = deflate_message(&mut c, payload);
    if out.is_some() {
        give_deflater(DeflateMemory::Pool, level, window_bits, c);
    }
    out.map(Bytes::from)
}

/// A data message compressed once, to be sent on many connections with
/// [`WsConnection::send_prepared`](crate::ws::WsConnection::send_prepared): a hub compresses
/// a channel message once and every receiver that can take it shares the compressed bytes
/// (a server writes only a frame header per connection), as it shares an uncompressed
/// [`Message`] today. Receivers that cannot (no deflate, context takeover on the server's
/// side, a smaller window) get `message` the usual way.
///
/// Cloning is cheap (shared bytes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PreparedMessage {
    message: Message,
    compressed: Option<Bytes>,
    window_bits: u8,
}

impl PreparedMessage {
    /// Compresses `message` once with `cfg`'s level and server window
    /// (`cfg.server_max_window_bits`, the window a server agrees to at most). Below
    /// `cfg.min_size`, with a window of 8, or when compression does not make it smaller, it
    /// stays uncompressed and is sent as is everywhere.
    #[must_use]
    pub fn new(message: Message, cfg: &DeflateConfig) -> Self {
        let window_bits = cfg.server_bits();
        let compressed = if message.len() < cfg.min_size {
            None
        } else {
            compress_message(message.payload(), window_bits, cfg.level)
                .filter(|c| c.len() < message.len())
        };
        Self { message, compressed, window_bits }
    }

    /// The message as the application gave it.
    #[must_use]
    pub fn message(&self) -> &Message {
        &self.message
    }

    /// The compressed payload (RFC 7692 wire form), when compression was worth it.
    #[must_use]
    pub fn compressed(&self) -> Option<&Bytes> {
        self.compressed.as_ref()
    }

    /// The LZ77 window (log2 bytes) it was compressed with: a receiver must accept at least
    /// this window from the sender.
    #[must_use]
    pub fn window_bits(&self) -> u8 {
        self.window_bits
    }
}
