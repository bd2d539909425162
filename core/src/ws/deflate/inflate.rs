//! Decompression of one message as its frames arrive (RFC 7692 §7.2.2), bounded by
//! `max_message`: the output grows in steps and never past `max_message + 1` bytes, so a
//! small frame that would inflate to gigabytes is stopped (1009) after at most that much.

use bytes::Bytes;
use flate2::{Decompress, FlushDecompress, Status};

use super::TAIL;
use crate::text::Utf8Bytes;
use crate::ws::error::ProtocolError;
use crate::ws::message::Message;
use crate::ws::utf8::Utf8Validator;

/// The smallest step the output buffer grows by (it doubles beyond that).
const STEP: usize = 16 * 1024;
/// The step when all input is in and the output is full: whatever is still pending.
const PROBE: usize = 256;

/// A compressed message whose final frame has not arrived.
#[derive(Debug)]
pub(super) struct Inflating {
    text: bool,
    out: Vec<u8>,
    utf8: Utf8Validator,
    /// The DEFLATE stream ended (a block with BFINAL): what follows in the message is
    /// ignored, and the inflater is reset after it (RFC 7692 §7.2.3.5 pads such a stream).
    ended: bool,
}

impl Inflating {
    /// A message that starts; `first_len` (the first frame's compressed size) sizes the
    /// first output step.
    pub(super) fn new(text: bool, first_len: usize, max_message: usize) -> Self {
        let cap = first_len.saturating_mul(4).clamp(256, STEP).min(max_message.saturating_add(1));
        Self { text, out: Vec::with_capacity(cap), utf8: Utf8Validator::new(), ended: false }
    }

    /// Whether the DEFLATE stream ended inside the message (the inflater must be reset).
    pub(super) fn stream_ended(&self) -> bool {
        self.ended
    }

    /// Inflates one frame's payload.
    pub(super) fn push(
        &mut self,
        d: &mut Decompress,
        payload: &[u8],
        max_message: usize,
    ) -> Result<(), ProtocolError> {
        let Self { text, out, utf8, ended } = self;
        inflate_into(d, payload, out, max_message, ended, |new| {
            if *text { utf8.feed(new) } else { Ok(()) }
        })
    }

    /// Ends the message after its final frame: inflates the tail `00 00 ff ff` (§7.2.2) and
    /// returns the message.
    pub(super) fn finish(
        mut self,
        d: &mut Decompress,
        max_message: usize,
    ) -> Result<Message, ProtocolError> {
        self.push(d, &TAIL, max_message)?;
        let Self { text, mut out, mut utf8, .. } = self;
        if out.capacity() > out.len() + out.len() / 8 + 64 {
            out.shrink_to_fit();
        }
        let bytes = Bytes::from(out);
        Ok(if text {
            utf8.finish()?;
            Message::Text(Utf8Bytes::from_validated(bytes))
        } else {
            Message::Binary(bytes)
        })
    }

    /// The capacity of the output so far (tests check the bound).
    #[cfg(test)]
    pub(super) fn capacity(&self) -> usize {
        self.out.capacity()
    }
}

/// Inflates `input` into `out` with `d`, in steps: `out` grows only when full, by at most
/// what keeps it within `max + 1` bytes, and the call fails with `MessageTooLarge` as soon as
/// it holds more than `max`. `on_output` sees each new piece of output (UTF-8 check).
/// After the stream's end (`ended`), input is ignored.
fn inflate_into(
    d: &mut Decompress,
    mut input: &[u8],
    out: &mut Vec<u8>,
    max: usize,
    ended: &mut bool,
    mut on_output: impl FnMut(&[u8]) -> Result<(), ProtocolError>,
) -> Result<(), ProtocolError> {
    while !*ended {
        if out.len() == out.capacity() {
            // Full: grow, but never past `max + 1` (one byte over the limit proves it).
            let room = max.saturating_add(1).saturating_sub(out.len());
            if room == 0 {
                return Err(ProtocolError::MessageTooLarge);
            }
            // With all input taken, little or nothing is usually pending: probe with a small
            // step rather than doubling a buffer that is likely complete.
            let step = if input.is_empty() { PROBE } else { out.capacity().max(STEP) };
            out.reserve_exact(step.min(room));
        }
        let (in_before, out_before) = (d.total_in(), out.len());
        let status = d
            .decompress_vec(input, out, FlushDecompress::None)
            .map_err(|_| ProtocolError::InvalidCompressedData)?;
        let used = usize::try_from(d.total_in() - in_before).unwrap_or(usize::MAX).min(input.len());
        input = &input[used..];
        if out.len() > max {
            return Err(ProtocolError::MessageTooLarge);
        }
        on_output(&out[out_before..])?;
        if status == Status::StreamEnd {
            *ended = true;
        }
        let spare = out.len() < out.capacity();
        // Done once the input is in and the inflater did not fill the output (no more is
        // pending); also stop if it made no progress with room to spare (nothing to do).
        if spare && (input.is_empty() || (used == 0 && out.len() == out_before)) {
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ws::deflate::compress::deflate_message;
    use crate::ws::deflate::pool::{new_deflater, new_inflater};
    use flate2::Compression;
    use proptest::prelude::*;

    fn compress(data: &[u8]) -> Vec<u8> {
        deflate_message(&mut new_deflater(Compression::default(), 15), data).unwrap()
    }

    #[test]
    fn bomb_stops_at_the_limit_without_allocating_more() {
        // 64 MiB of zeros compress to ~64 KiB; the limit is 1 MiB.
        let zeros = vec![0u8; 64 << 20];
        let wire = compress(&zeros);
        assert!(wire.len() < 100 << 10, "{}", wire.len());
        let max = 1 << 20;
        let mut d = new_inflater(15);
        let mut m = Inflating::new(false, wire.len(), max);
        assert_eq!(m.push(&mut d, &wire, max), Err(ProtocolError::MessageTooLarge));
        assert!(m.capacity() <= max + 1, "capacity {} over the limit", m.capacity());
    }

    #[test]
    fn bomb_across_frames_stops_at_the_limit() {
        let wire = compress(&vec![b'a'; 8 << 20]);
        let max = 300_000;
        let mut d = new_inflater(15);
        let mut m = Inflating::new(true, 10, max);
        let mut result = Ok(());
        for chunk in wire.chunks(100) {
            result = m.push(&mut d, chunk, max);
            assert!(m.capacity() <= max + 1);
            if result.is_err() {
                break;
            }
        }
        assert_eq!(result, Err(ProtocolError::MessageTooLarge));
    }

    #[test]
    fn exactly_at_the_limit_passes() {
        let data = vec![7u8; 100_000];
        let wire = compress(&data);
        let mut d = new_inflater(15);
        let mut m = Inflating::new(false, wire.len(), data.len());
        m.push(&mut d, &wire, data.len()).unwrap();
        let msg = m.finish(&mut d, data.len()).unwrap();
        assert_eq!(msg, Message::binary(data));
    }

    #[test]
    fn garbage_is_invalid_compressed_data() {
        let mut d = new_inflater(15);
        let mut m = Inflating::new(false, 4, 1 << 20);
        // BTYPE 11 (reserved) in the first block header.
        assert_eq!(
            m.push(&mut d, &[0xff, 0xff, 0xff], 1 << 20),
            Err(ProtocolError::InvalidCompressedData)
        );
    }

    #[test]
    fn bad_utf8_fails_while_inflating() {
        let mut data = b"ok ".repeat(1000);
        data.extend_from_slice(b"\xc0\x80");
        data.extend(b"more ".repeat(100_000));
        let wire = compress(&data);
        let mut d = new_inflater(15);
        let mut m = Inflating::new(true, wire.len(), 64 << 20);
        assert_eq!(m.push(&mut d, &wire, 64 << 20), Err(ProtocolError::InvalidUtf8));
        assert!(m.capacity() < 100_000, "failed before inflating it all: {}", m.capacity());
    }

    #[test]
    fn text_truncated_inside_a_character_fails_at_the_end() {
        let wire = compress(b"abc\xe2\x82");
        let mut d = new_inflater(15);
        let mut m = Inflating::new(true, wire.len(), 1024);
        m.push(&mut d, &wire, 1024).unwrap();
        assert_eq!(m.finish(&mut d, 1024), Err(ProtocolError::InvalidUtf8));
    }

    #[test]
    fn bfinal_stream_with_padding_rfc7692_7_2_3_5() {
        // "Hello" in a final block followed by a 0x00 byte of padding.
        let wire = [0xf3, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x00];
        let mut d = new_inflater(15);
        let mut m = Inflating::new(true, wire.len(), 1024);
        m.push(&mut d, &wire, 1024).unwrap();
        assert!(m.stream_ended());
        assert_eq!(m.finish(&mut d, 1024), Ok(Message::text("Hello")));
    }

    #[test]
    fn rfc7692_examples() {
        // §7.2.3.1: "Hello" compressed, one frame and in two fragments (§7.2.3.1).
        let hello = [0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00];
        for split in 0..=hello.len() {
            let mut d = new_inflater(15);
            let mut m = Inflating::new(true, split, 1024);
            m.push(&mut d, &hello[..split], 1024).unwrap();
            m.push(&mut d, &hello[split..], 1024).unwrap();
            assert_eq!(m.finish(&mut d, 1024), Ok(Message::text("Hello")));
        }
        // §7.2.3.2: the second "Hello" refers back into the first (context takeover).
        let mut d = new_inflater(15);
        for wire in [&hello[..], &[0xf2, 0x00, 0x11, 0x00, 0x00][..]] {
            let mut m = Inflating::new(true, wire.len(), 1024);
            m.push(&mut d, wire, 1024).unwrap();
            assert_eq!(m.finish(&mut d, 1024), Ok(Message::text("Hello")));
        }
        // §7.2.3.3: a stored (uncompressed) block.
        let stored = [0x00, 0x05, 0x00, 0xfa, 0xff, 0x48, 0x65, 0x6c, 0x6c, 0x6f, 0x00];
        let mut d = new_inflater(15);
        let mut m = Inflating::new(true, stored.len(), 1024);
        m.push(&mut d, &stored, 1024).unwrap();
        assert_eq!(m.finish(&mut d, 1024), Ok(Message::text("Hello")));
        // §7.2.3.6: an empty message is a single 0x00.
        let mut d = new_inflater(15);
        let m = Inflating::new(false, 1, 1024);
        let mut m = m;
        m.push(&mut d, &[0x00], 1024).unwrap();
        assert_eq!(m.finish(&mut d, 1024), Ok(Message::binary(Vec::new())));
        assert_eq!(compress(b""), [0x00]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Any payload, compressed, inflates back whatever the frame boundaries.
        #[test]
        fn round_trip_in_random_frames(
            data in proptest::collection::vec(prop_oneof![Just(b'a'), any::<u8>()], 0..6000),
            mut cuts in proptest::collection::vec(0usize..3000, 0..8),
        ) {
            let wire = compress(&data);
            cuts.push(0);
            cuts.push(wire.len());
            cuts.iter_mut().for_each(|c| *c = (*c).min(wire.len()));
            cuts.sort_unstable();
            let mut d = new_inflater(15);
            let mut m = Inflating::new(false, 0, 1 << 20);
            for w in cuts.windows(2) {
                m.push(&mut d, &wire[w[0]..w[1]], 1 << 20).unwrap();
            }
            prop_assert_eq!(m.finish(&mut d, 1 << 20).unwrap(), Message::binary(data));
        }
    }
}
