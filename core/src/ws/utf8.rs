//! Incremental UTF-8 validation of text messages across fragments (RFC 6455 §8.1: fail
//! fast). The validated payload type, [`Utf8Bytes`], lives in [`crate::text`] (it is not
//! WebSocket-specific) and is re-exported here.

pub use crate::text::{NotUtf8, Utf8Bytes};

use super::error::ProtocolError;

/// Incremental UTF-8 validation of a text message that arrives in fragments (RFC 6455 §8.1).
///
/// Feed each fragment's payload in order with [`feed`](Self::feed), then call
/// [`finish`](Self::finish) after the last one. `feed` fails as soon as the bytes seen so far
/// cannot be the start of valid UTF-8, so a bad message is rejected at its first bad fragment
/// instead of after it was buffered whole. A character split across fragments is carried
/// (at most 3 bytes) to the next `feed`.
///
/// After an error every further `feed` and `finish` fails until [`reset`](Self::reset);
/// `finish` resets the validator for the next message whatever its result.
#[derive(Clone, Debug, Default)]
pub struct Utf8Validator {
    /// The start of a character that the input so far ends inside of.
    partial: [u8; 4],
    /// How many bytes of `partial` are used (0 when the input ends on a character boundary).
    partial_len: usize,
    /// An error was reported; sticky until `reset`.
    failed: bool,
}

impl Utf8Validator {
    /// A validator at the start of a message.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Validates the next `chunk` of the message.
    ///
    /// # Errors
    /// [`ProtocolError::InvalidUtf8`] when the message so far (all chunks fed since the last
    /// reset, followed by this one) is not a prefix of any valid UTF-8 text, or when an
    /// earlier call already failed.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<(), ProtocolError> {
        if self.failed {
            return Err(ProtocolError::InvalidUtf8);
        }
        let result = self.feed_inner(chunk);
        self.failed = result.is_err();
        result
    }

    /// Ends the message: fails if it stops inside a character (or an earlier `feed` failed).
    /// Either way the validator is reset for the next message.
    ///
    /// # Errors
    /// [`ProtocolError::InvalidUtf8`] for a truncated final character or an earlier failure.
    pub fn finish(&mut self) -> Result<(), ProtocolError> {
        let complete = !self.failed && self.partial_len == 0;
        self.reset();
        if complete { Ok(()) } else { Err(ProtocolError::InvalidUtf8) }
    }

    /// Forgets everything fed so far (including an error): back to the start of a message.
    pub fn reset(&mut self) {
        *self = Self::default();
    }

    fn feed_inner(&mut self, mut chunk: &[u8]) -> Result<(), ProtocolError> {
        if self.partial_len > 0 {
            // First complete the character carried over from the previous chunk.
            let have = self.partial_len;
            let want = sequence_len(self.partial[0]);
            let take = want.saturating_sub(have).min(chunk.len());
            let mut seq = self.partial;
            seq[have..have + take].copy_from_slice(&chunk[..take]);
            let seq = &seq[..have + take];
            if simdutf8::basic::from_utf8(seq).is_err() {
                // Still incomplete (the chunk ran out) or broken.
                return if seq.len() < want && is_incomplete_char(seq) {
                    self.carry(seq);
                    Ok(())
                } else {
                    Err(ProtocolError::InvalidUtf8)
                };
            }
            self.partial_len = 0;
            chunk = &chunk[take..];
        }
        match simdutf8::compat::from_utf8(chunk) {
            Ok(_) => Ok(()),
            Err(e) => {
                let tail = &chunk[e.valid_up_to()..];
                // `error_len() == None`: the input ends inside a character, which is fine
                // if that character can still be completed by the next chunk.
                if e.error_len().is_none() && is_incomplete_char(tail) {
                    self.carry(tail);
                    Ok(())
                } else {
                    Err(ProtocolError::InvalidUtf8)
                }
            }
        }
    }

    fn carry(&mut self, tail: &[u8]) {
        debug_assert!((1..=3).contains(&tail.len()));
        self.partial[..tail.len()].copy_from_slice(tail);
        self.partial_len = tail.len();
    }
}

/// The length of the UTF-8 sequence a lead byte starts, or 0 if `lead` can never start a
/// multi-byte sequence of valid UTF-8 (ASCII, continuation bytes, C0, C1, F5–FF).
fn sequence_len(lead: u8) -> usize {
    match lead {
        0xc2..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf4 => 4,
        _ => 0,
    }
}

/// Whether `bytes` is a proper prefix of one well-formed multi-byte UTF-8 sequence, i.e. a
/// character that more bytes can still complete (Unicode Table 3-7: no overlong forms, no
/// surrogates, nothing above U+10FFFF).
fn is_incomplete_char(bytes: &[u8]) -> bool {
    let Some((&lead, rest)) = bytes.split_first() else {
        return false;
    };
    if bytes.len() >= sequence_len(lead) {
        // Not a lead byte, or the sequence would already be complete.
        return false;
    }
    let second_ok = |b: u8| match lead {
        0xe0 => (0xa0..=0xbf).contains(&b),
        0xed => (0x80..=0x9f).contains(&b),
        0xf0 => (0x90..=0xbf).contains(&b),
        0xf4 => (0x80..=0x8f).contains(&b),
        _ => (0x80..=0xbf).contains(&b),
    };
    rest.iter()
        .enumerate()
        .all(|(i, &b)| if i == 0 { second_ok(b) } else { (0x80..=0xbf).contains(&b) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Feeds `chunks` in order; returns the index of the first failing `feed`, or
    /// `chunks.len()` if `finish` failed, or `None` if all succeeded.
    fn first_failure(chunks: &[&[u8]]) -> Option<usize> {
        let mut v = Utf8Validator::new();
        for (i, c) in chunks.iter().enumerate() {
            if v.feed(c).is_err() {
                return Some(i);
            }
        }
        v.finish().err().map(|_| chunks.len())
    }

    /// Whether `bytes` is a prefix of valid UTF-8, according to the standard library.
    fn std_prefix_ok(bytes: &[u8]) -> bool {
        match core::str::from_utf8(bytes) {
            Ok(_) => true,
            Err(e) => e.error_len().is_none(),
        }
    }

    /// Cuts `bytes` at the given fractions of its length.
    fn split_at_points(bytes: &[u8], points: &[prop::sample::Index]) -> Vec<Vec<u8>> {
        let mut cuts: Vec<usize> = points.iter().map(|p| p.index(bytes.len() + 1)).collect();
        cuts.sort_unstable();
        let mut out = Vec::new();
        let mut start = 0;
        for c in cuts {
            out.push(bytes[start..c].to_vec());
            start = c;
        }
        out.push(bytes[start..].to_vec());
        out
    }

    /// Checks the validator against `std` for `chunks`: each `feed` succeeds exactly when the
    /// input so far is a valid prefix, and `finish` exactly when the whole input is valid.
    fn check_against_std(chunks: &[Vec<u8>]) {
        let mut v = Utf8Validator::new();
        let mut seen = Vec::new();
        for c in chunks {
            seen.extend_from_slice(c);
            let ok = v.feed(c).is_ok();
            assert_eq!(ok, std_prefix_ok(&seen), "after {seen:x?}");
            if !ok {
                return;
            }
        }
        assert_eq!(v.finish().is_ok(), core::str::from_utf8(&seen).is_ok(), "{seen:x?}");
    }

    fn all_splits_agree(bytes: &[u8]) {
        check_against_std(&[bytes.to_vec()]);
        check_against_std(&bytes.iter().map(|b| vec![*b]).collect::<Vec<_>>());
        for cut in 0..=bytes.len() {
            check_against_std(&[bytes[..cut].to_vec(), bytes[cut..].to_vec()]);
        }
    }

    #[test]
    fn empty_message_is_valid() {
        assert_eq!(first_failure(&[]), None);
        assert_eq!(first_failure(&[b"", b""]), None);
    }

    #[test]
    fn autobahn_6_2_valid_text_split_everywhere() {
        // 6.2.x: "Hello-µ@ßöäüàá-UTF-8!!" and friends, split at every byte.
        for text in [
            "Hello-\u{b5}@\u{df}\u{f6}\u{e4}\u{fc}\u{e0}\u{e1}-UTF-8!!",
            "\u{3ba}\u{1f79}\u{3c3}\u{3bc}\u{3b5}",
            "\u{0}\u{7f}\u{80}\u{7ff}\u{800}\u{ffff}\u{10000}\u{10ffff}",
            "\u{d7ff}\u{e000}\u{fffd}\u{fffe}\u{1f600}",
        ] {
            all_splits_agree(text.as_bytes());
            let bytes = text.as_bytes();
            let one_by_one: Vec<&[u8]> = bytes.chunks(1).collect();
            assert_eq!(first_failure(&one_by_one), None, "{text}");
        }
    }

    #[test]
    fn autobahn_6_3_and_6_8_invalid_sequences() {
        let bad: &[&[u8]] = &[
            // overlong forms (6.8.x)
            b"\xc0\x80",
            b"\xc1\xbf",
            b"\xe0\x80\x80",
            b"\xe0\x9f\xbf",
            b"\xf0\x80\x80\x80",
            b"\xf0\x8f\xbf\xbf",
            b"\xf8\x88\x80\x80\x80",
            // UTF-16 surrogates (6.19.x-6.21.x)
            b"\xed\xa0\x80",
            b"\xed\xbf\xbf",
            b"\xed\xa0\x80\xed\xb0\x80",
            // above U+10FFFF (6.3.x, 6.7.x)
            b"\xf4\x90\x80\x80",
            b"\xf5\x80\x80\x80",
            b"\xf7\xbf\xbf\xbf",
            b"\xff",
            b"\xfe",
            // lone continuation bytes (6.9.x)
            b"\x80",
            b"a\xbf",
            // lead byte followed by a non-continuation (6.10.x)
            b"\xc2a",
            b"\xe2\x82a",
            b"\xf0\x9f\x98a",
        ];
        for case in bad {
            assert!(first_failure(&[case]).is_some(), "{case:x?}");
            all_splits_agree(case);
            let mut with_prefix = "\u{3ba}\u{1f79}\u{3c3}\u{3bc}\u{3b5}".as_bytes().to_vec();
            with_prefix.extend_from_slice(case);
            with_prefix.extend_from_slice(b"-edited");
            all_splits_agree(&with_prefix);
        }
    }

    #[test]
    fn autobahn_6_x_truncated_at_message_end() {
        for case in [&b"\xc2"[..], b"\xe2\x82", b"\xf0\x9f\x98", b"ok\xe0\xa0"] {
            // Every feed is fine (the text could still continue) but the end is not.
            assert_eq!(first_failure(&[case]), Some(1), "{case:x?}");
            all_splits_agree(case);
        }
    }

    #[test]
    fn autobahn_6_4_fails_fast_at_the_first_bad_fragment() {
        let kosme = "\u{3ba}\u{1f79}\u{3c3}\u{3bc}\u{3b5}".as_bytes();
        // 6.4.1: the bad code point is whole in the second fragment.
        assert_eq!(first_failure(&[kosme, b"\xf4\x90\x80\x80", b"-edited"]), Some(1));
        // 6.4.2: F4 ends the first fragment, 90 (invalid after F4) starts the second.
        let mut first = kosme.to_vec();
        first.push(0xf4);
        assert_eq!(first_failure(&[&first, b"\x90\x80\x80-edited", b"-edited"]), Some(1));
        // 6.4.3/6.4.4: the bad sequence arrives one byte at a time.
        assert_eq!(first_failure(&[kosme, b"\xf4", b"\x90", b"\x80\x80", b"-edited"]), Some(2));
        // A second feed after a failure keeps failing; finish reports it and resets.
        let mut v = Utf8Validator::new();
        assert!(v.feed(b"\xff").is_err());
        assert!(v.feed(b"a").is_err());
        assert!(v.finish().is_err());
        assert!(v.feed(b"a").is_ok());
        assert!(v.finish().is_ok());
    }

    #[test]
    fn reset_forgets_a_carried_partial_character() {
        let mut v = Utf8Validator::new();
        v.feed(b"\xe2\x82").unwrap();
        v.reset();
        v.feed(b"abc").unwrap();
        v.finish().unwrap();
    }

    fn interesting_byte() -> impl Strategy<Value = u8> {
        prop_oneof![
            0u8..0x80,
            0x80u8..0xc0,
            0xc0u8..0xe0,
            0xe0u8..0xf0,
            0xf0u8..=0xff,
            Just(0xe0u8),
            Just(0xedu8),
            Just(0xf0u8),
            Just(0xf4u8),
        ]
    }

    /// Valid text with up to two bytes changed, inserted or cut off: mostly almost-valid.
    fn damaged_text() -> impl Strategy<Value = Vec<u8>> {
        (
            any::<String>(),
            proptest::collection::vec(
                (any::<prop::sample::Index>(), interesting_byte(), 0u8..3),
                0..3,
            ),
        )
            .prop_map(|(s, edits)| {
                let mut bytes = s.into_bytes();
                for (at, byte, kind) in edits {
                    let i = at.index(bytes.len() + 1);
                    match kind {
                        0 if i < bytes.len() => bytes[i] = byte,
                        1 => bytes.insert(i, byte),
                        _ => bytes.truncate(i),
                    }
                }
                bytes
            })
    }

    proptest! {
        #[test]
        fn random_bytes_split_anywhere_agree_with_std(
            bytes in proptest::collection::vec(interesting_byte(), 0..48),
            points in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
        ) {
            check_against_std(&split_at_points(&bytes, &points));
        }

        #[test]
        fn damaged_text_split_anywhere_agrees_with_std(
            bytes in damaged_text(),
            points in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
        ) {
            check_against_std(&split_at_points(&bytes, &points));
        }

        #[test]
        fn valid_text_split_inside_characters_is_valid(
            text in any::<String>(),
            points in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
        ) {
            let chunks = split_at_points(text.as_bytes(), &points);
            let refs: Vec<&[u8]> = chunks.iter().map(Vec::as_slice).collect();
            prop_assert_eq!(first_failure(&refs), None);
        }
    }
}
