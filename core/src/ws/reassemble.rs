//! Fragments → messages (RFC 6455 §5.4): continuation rules, interleaved control frames,
//! the message size limit, and UTF-8 validation of text as it arrives (§8.1).

use bytes::{Bytes, BytesMut};

use super::close::{CloseCode, parse_close_payload};
use super::error::ProtocolError;
use super::frame::{Frame, OpCode};
use super::message::Message;
use super::utf8::Utf8Validator;
use crate::text::Utf8Bytes;

/// What one received frame amounted to, once fragments are joined.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Incoming {
    /// A complete data message.
    Message(Message),
    /// A ping with its payload (to be answered with a pong carrying the same bytes).
    Ping(Bytes),
    /// A pong with its payload.
    Pong(Bytes),
    /// A close frame: `None` when it carried no status code (reported as 1005), else the
    /// code and the UTF-8 reason.
    Close(Option<(CloseCode, Utf8Bytes)>),
}

/// A message whose final fragment has not arrived yet.
#[derive(Debug)]
struct Partial {
    /// Text (validated as it arrives) or binary.
    text: bool,
    /// The payload of the fragments so far.
    data: BytesMut,
}

/// Joins data frames into messages and passes control frames through.
///
/// Feed every decoded frame in order to [`push`](Self::push). It returns a value when a frame
/// completes something: a message (on its final fragment) or a control frame (at once, even
/// in the middle of a fragmented message). A message that fits in one frame is handed over
/// without copying; fragments are copied into one buffer, bounded by `max_message`.
///
/// Reserved bits are not looked at: extensions that use them sit between the decoder and
/// the reassembler.
#[derive(Debug)]
pub struct Reassembler {
    max_message: usize,
    partial: Option<Partial>,
    utf8: Utf8Validator,
}

impl Reassembler {
    /// A reassembler that rejects messages over `max_message` bytes (all fragments).
    #[must_use]
    pub fn new(max_message: usize) -> Self {
        Self { max_message, partial: None, utf8: Utf8Validator::new() }
    }

    /// Whether a fragmented message has started and not yet finished.
    #[must_use]
    pub fn in_progress(&self) -> bool {
        self.partial.is_some()
    }

    /// Takes the next frame. `Ok(None)` when it was a non-final fragment.
    ///
    /// # Errors
    /// - [`ProtocolError::UnexpectedContinuation`]: a continuation with no message started;
    /// - [`ProtocolError::ExpectedContinuation`]: a text or binary frame while a fragmented
    ///   message is in progress (§5.4);
    /// - [`ProtocolError::MessageTooLarge`]: the message would exceed `max_message`, found
    ///   before the fragment is buffered;
    /// - [`ProtocolError::InvalidUtf8`]: text that is not UTF-8, found at the first fragment
    ///   that makes it invalid, or a close reason that is not UTF-8;
    /// - [`ProtocolError::InvalidClosePayload`], [`ProtocolError::InvalidCloseCode`]: a bad
    ///   close frame (§5.5.1, §7.4).
    ///
    /// After an error the partial message is dropped; the connection is to be failed.
    pub fn push(&mut self, frame: Frame) -> Result<Option<Incoming>, ProtocolError> {
        let result = self.push_inner(frame);
        if result.is_err() {
            self.partial = None;
            self.utf8.reset();
        }
        result
    }

    fn push_inner(&mut self, frame: Frame) -> Result<Option<Incoming>, ProtocolError> {
        let Frame { fin, opcode, payload, .. } = frame;
        match opcode {
            OpCode::Ping => Ok(Some(Incoming::Ping(payload))),
            OpCode::Pong => Ok(Some(Incoming::Pong(payload))),
            OpCode::Close => close(&payload).map(Some),
            OpCode::Text | OpCode::Binary => {
                if self.partial.is_some() {
                    return Err(ProtocolError::ExpectedContinuation);
                }
                if payload.len() > self.max_message {
                    return Err(ProtocolError::MessageTooLarge);
                }
                let text = opcode == OpCode::Text;
                if fin {
                    // Unfragmented: validate in one pass and move the payload, no copy.
                    return if text {
                        simdutf8::basic::from_utf8(&payload)
                            .map_err(|_| ProtocolError::InvalidUtf8)?;
                        Ok(Some(Incoming::Message(Message::Text(Utf8Bytes::from_validated(
                            payload,
                        )))))
                    } else {
                        Ok(Some(Incoming::Message(Message::Binary(payload))))
                    };
                }
                if text {
                    self.utf8.reset();
                    self.utf8.feed(&payload)?;
                }
                self.partial = Some(Partial { text, data: BytesMut::from(&payload[..]) });
                Ok(None)
            }
            OpCode::Continuation => {
                let Some(partial) = self.partial.as_mut() else {
                    return Err(ProtocolError::UnexpectedContinuation);
                };
                if payload.len() > self.max_message.saturating_sub(partial.data.len()) {
                    return Err(ProtocolError::MessageTooLarge);
                }
                if partial.text {
                    self.utf8.feed(&payload)?;
                    if fin {
                        self.utf8.finish()?;
                    }
                }
                partial.data.extend_from_slice(&payload);
                if !fin {
                    return Ok(None);
                }
                let Some(Partial { text, data }) = self.partial.take() else {
                    return Ok(None);
                };
                let data = data.freeze();
                Ok(Some(Incoming::Message(if text {
                    Message::Text(Utf8Bytes::from_validated(data))
                } else {
                    Message::Binary(data)
                })))
            }
        }
    }
}

/// Parses a close frame's payload; the reason shares the frame's bytes.
fn close(payload: &Bytes) -> Result<Incoming, ProtocolError> {
    Ok(Incoming::Close(
        parse_close_payload(payload)?
            .map(|(code, _)| (code, Utf8Bytes::from_validated(payload.slice(2..)))),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn text(fin: bool, s: &[u8]) -> Frame {
        Frame::new(fin, OpCode::Text, Bytes::copy_from_slice(s))
    }
    fn binary(fin: bool, s: &[u8]) -> Frame {
        Frame::new(fin, OpCode::Binary, Bytes::copy_from_slice(s))
    }
    fn cont(fin: bool, s: &[u8]) -> Frame {
        Frame::new(fin, OpCode::Continuation, Bytes::copy_from_slice(s))
    }
    fn ping(s: &[u8]) -> Frame {
        Frame::new(true, OpCode::Ping, Bytes::copy_from_slice(s))
    }
    fn msg_text(s: &str) -> Option<Incoming> {
        Some(Incoming::Message(Message::text(s)))
    }

    /// Pushes all frames; returns everything produced, stopping at the first error.
    fn push_all(r: &mut Reassembler, frames: Vec<Frame>) -> Result<Vec<Incoming>, ProtocolError> {
        let mut out = Vec::new();
        for f in frames {
            out.extend(r.push(f)?);
        }
        Ok(out)
    }

    #[test]
    fn unfragmented_messages_are_zero_copy() {
        let mut r = Reassembler::new(1 << 20);
        let payload = Bytes::from_static(b"hello");
        let ptr = payload.as_ptr();
        let Ok(Some(Incoming::Message(Message::Text(t)))) =
            r.push(Frame::new(true, OpCode::Text, payload.clone()))
        else {
            panic!("expected a text message");
        };
        assert_eq!(t, "hello");
        assert_eq!(t.as_bytes().as_ptr(), ptr);
        let Ok(Some(Incoming::Message(Message::Binary(b)))) =
            r.push(Frame::new(true, OpCode::Binary, payload))
        else {
            panic!("expected a binary message");
        };
        assert_eq!(b.as_ptr(), ptr);
        assert!(!r.in_progress());
    }

    #[test]
    fn case_5_3_to_5_5_fragmented_text() {
        let mut r = Reassembler::new(1 << 20);
        assert_eq!(r.push(text(false, b"frag")), Ok(None));
        assert!(r.in_progress());
        assert_eq!(r.push(cont(false, b"ment")), Ok(None));
        assert_eq!(r.push(cont(true, b"ed")), Ok(msg_text("fragmented")));
        assert!(!r.in_progress());
    }

    #[test]
    fn case_5_6_to_5_8_pings_inside_fragments_come_out_at_once() {
        let mut r = Reassembler::new(1 << 20);
        assert_eq!(r.push(binary(false, b"ab")), Ok(None));
        assert_eq!(r.push(ping(b"p1")), Ok(Some(Incoming::Ping(Bytes::from_static(b"p1")))));
        let pong = Frame::new(true, OpCode::Pong, Bytes::from_static(b"p2"));
        assert_eq!(r.push(pong), Ok(Some(Incoming::Pong(Bytes::from_static(b"p2")))));
        assert!(r.in_progress());
        assert_eq!(
            r.push(cont(true, b"cd")),
            Ok(Some(Incoming::Message(Message::binary(&b"abcd"[..]))))
        );
    }

    #[test]
    fn close_inside_fragments_comes_out_at_once() {
        let mut r = Reassembler::new(1 << 20);
        r.push(text(false, b"x")).unwrap();
        let close = Frame::new(true, OpCode::Close, Bytes::from_static(b"\x03\xe8bye"));
        assert_eq!(
            r.push(close),
            Ok(Some(Incoming::Close(Some((CloseCode::NORMAL, Utf8Bytes::from_static("bye"))))))
        );
    }

    #[test]
    fn case_5_9_to_5_15_continuation_without_a_message() {
        for fin in [true, false] {
            let mut r = Reassembler::new(1 << 20);
            assert_eq!(r.push(cont(fin, b"x")), Err(ProtocolError::UnexpectedContinuation));
        }
        // After a complete message, a continuation is still unexpected (5.15).
        let mut r = Reassembler::new(1 << 20);
        let frames = vec![text(false, b"a"), cont(true, b"b"), cont(false, b"c")];
        assert_eq!(push_all(&mut r, frames), Err(ProtocolError::UnexpectedContinuation));
    }

    #[test]
    fn case_5_17_to_5_20_new_message_inside_a_fragmented_one() {
        for second in [text(true, b"b"), binary(false, b"b")] {
            let mut r = Reassembler::new(1 << 20);
            r.push(text(false, b"a")).unwrap();
            assert_eq!(r.push(second), Err(ProtocolError::ExpectedContinuation));
            assert!(!r.in_progress(), "dropped after the error");
        }
    }

    #[test]
    fn case_1_1_and_5_x_empty_frames_and_fragments() {
        let mut r = Reassembler::new(1 << 20);
        assert_eq!(r.push(text(true, b"")), Ok(msg_text("")));
        let frames = vec![text(false, b""), cont(false, b""), cont(true, b"")];
        assert_eq!(push_all(&mut r, frames), Ok(vec![Incoming::Message(Message::text(""))]));
        let frames = vec![binary(false, b""), cont(false, b"z"), cont(true, b"")];
        assert_eq!(
            push_all(&mut r, frames),
            Ok(vec![Incoming::Message(Message::binary(&b"z"[..]))])
        );
    }

    #[test]
    fn case_6_2_one_byte_fragments_of_multibyte_text() {
        let s = "Hello-\u{b5}@\u{df}\u{f6}\u{e4}\u{fc}\u{e0}\u{e1}-UTF-8!! \u{3ba}\u{1f79}\u{3c3}\u{3bc}\u{3b5} \u{1f600}";
        let bytes = s.as_bytes();
        let mut frames = vec![text(false, &bytes[..1])];
        for b in &bytes[1..] {
            frames.push(cont(false, &[*b]));
        }
        frames.push(cont(true, b""));
        let mut r = Reassembler::new(1 << 20);
        assert_eq!(push_all(&mut r, frames), Ok(vec![Incoming::Message(Message::text(s))]));
    }

    #[test]
    fn case_6_4_bad_text_fails_at_the_first_bad_fragment() {
        let kosme = "\u{3ba}\u{1f79}\u{3c3}\u{3bc}\u{3b5}".as_bytes();
        // 6.4.1: the message is not finished, but the second fragment already cannot be text.
        let mut r = Reassembler::new(1 << 20);
        assert_eq!(r.push(text(false, kosme)), Ok(None));
        assert_eq!(r.push(cont(false, b"\xf4\x90\x80\x80")), Err(ProtocolError::InvalidUtf8));
        // A bad first fragment fails on its own.
        let mut r = Reassembler::new(1 << 20);
        assert_eq!(r.push(text(false, b"ok\xc0\x80")), Err(ProtocolError::InvalidUtf8));
        // 6.4.2: a split lead byte is carried, its bad continuation fails.
        let mut r = Reassembler::new(1 << 20);
        let mut first = kosme.to_vec();
        first.push(0xf4);
        assert_eq!(r.push(text(false, &first)), Ok(None));
        assert_eq!(r.push(cont(false, b"\x90")), Err(ProtocolError::InvalidUtf8));
        // Unfragmented.
        let mut r = Reassembler::new(1 << 20);
        assert_eq!(r.push(text(true, b"\xed\xa0\x80")), Err(ProtocolError::InvalidUtf8));
    }

    #[test]
    fn case_6_x_text_truncated_at_message_end() {
        let mut r = Reassembler::new(1 << 20);
        assert_eq!(r.push(text(false, b"a\xe2\x82")), Ok(None));
        assert_eq!(r.push(cont(true, b"")), Err(ProtocolError::InvalidUtf8));
        // The next message starts clean.
        let frames = vec![text(false, b"\xe2\x82"), cont(true, b"\xac")];
        assert_eq!(
            push_all(&mut r, frames),
            Ok(vec![Incoming::Message(Message::text("\u{20ac}"))])
        );
    }

    #[test]
    fn binary_is_not_validated() {
        let mut r = Reassembler::new(1 << 20);
        let frames = vec![binary(false, b"\xff"), cont(true, b"\xc0")];
        assert_eq!(
            push_all(&mut r, frames),
            Ok(vec![Incoming::Message(Message::binary(&b"\xff\xc0"[..]))])
        );
    }

    #[test]
    fn case_9_message_size_limit_is_checked_before_buffering() {
        let mut r = Reassembler::new(10);
        assert_eq!(
            r.push(binary(true, &[0; 10])),
            Ok(Some(Incoming::Message(Message::binary(vec![0; 10]))))
        );
        assert_eq!(r.push(binary(true, &[0; 11])), Err(ProtocolError::MessageTooLarge));
        assert_eq!(r.push(text(false, &[b'a'; 11])), Err(ProtocolError::MessageTooLarge));
        let mut r = Reassembler::new(10);
        r.push(text(false, b"12345")).unwrap();
        r.push(cont(false, b"1234")).unwrap();
        assert_eq!(r.push(cont(false, b"12")), Err(ProtocolError::MessageTooLarge));
        let partial_cap = r.partial.as_ref().map_or(0, |p| p.data.capacity());
        assert_eq!(partial_cap, 0, "dropped, not grown");
        // Exactly at the limit passes.
        let frames = vec![text(false, b"12345"), cont(false, b"1234"), cont(true, b"5")];
        assert_eq!(
            push_all(&mut r, frames),
            Ok(vec![Incoming::Message(Message::text("1234512345"))])
        );
        // Control frames do not count.
        let mut r = Reassembler::new(0);
        assert_eq!(r.push(ping(b"abc")), Ok(Some(Incoming::Ping(Bytes::from_static(b"abc")))));
    }

    #[test]
    fn case_7_close_frames() {
        let mut r = Reassembler::new(1 << 20);
        let close = |p: &'static [u8]| Frame::new(true, OpCode::Close, Bytes::from_static(p));
        assert_eq!(r.push(close(b"")), Ok(Some(Incoming::Close(None))));
        assert_eq!(
            r.push(close(b"\x03\xe8")),
            Ok(Some(Incoming::Close(Some((CloseCode::NORMAL, Utf8Bytes::default())))))
        );
        assert_eq!(r.push(close(b"\x03")), Err(ProtocolError::InvalidClosePayload));
        assert_eq!(r.push(close(b"\x03\xed")), Err(ProtocolError::InvalidCloseCode(1005)));
        assert_eq!(r.push(close(b"\x03\xe8\xce\xba\xe1")), Err(ProtocolError::InvalidUtf8));
        // The reason shares the frame's bytes.
        let payload = Bytes::from_static(b"\x0f\xa0going");
        let Ok(Some(Incoming::Close(Some((code, reason))))) =
            r.push(Frame::new(true, OpCode::Close, payload.clone()))
        else {
            panic!("expected a close");
        };
        assert_eq!(code, CloseCode(4000));
        assert_eq!(reason, "going");
        assert_eq!(reason.as_bytes().as_ptr(), payload[2..].as_ptr());
    }

    /// One generated input step: a piece of a message or a control frame between pieces.
    #[derive(Clone, Debug)]
    enum Step {
        Message { text: bool, bytes: Vec<u8>, cuts: Vec<prop::sample::Index> },
        Ping(Vec<u8>),
        Pong(Vec<u8>),
    }

    fn any_step() -> impl Strategy<Value = Step> {
        let cuts = proptest::collection::vec(any::<prop::sample::Index>(), 0..6);
        prop_oneof![
            3 => (any::<String>(), cuts.clone())
                .prop_map(|(s, cuts)| Step::Message { text: true, bytes: s.into_bytes(), cuts }),
            2 => (proptest::collection::vec(any::<u8>(), 0..64), cuts)
                .prop_map(|(bytes, cuts)| Step::Message { text: false, bytes, cuts }),
            1 => proptest::collection::vec(any::<u8>(), 0..8).prop_map(Step::Ping),
            1 => proptest::collection::vec(any::<u8>(), 0..8).prop_map(Step::Pong),
        ]
    }

    proptest! {
        #[test]
        fn fragments_with_interleaved_control_frames_reassemble(
            steps in proptest::collection::vec(any_step(), 0..8),
            controls in proptest::collection::vec(
                (any::<prop::sample::Index>(), any::<bool>(), proptest::collection::vec(any::<u8>(), 0..4)),
                0..4,
            ),
        ) {
            let mut frames = Vec::new();
            let mut expected = Vec::new();
            for step in steps {
                match step {
                    Step::Ping(p) => {
                        expected.push(Incoming::Ping(p.clone().into()));
                        frames.push(Frame::new(true, OpCode::Ping, p));
                    }
                    Step::Pong(p) => {
                        expected.push(Incoming::Pong(p.clone().into()));
                        frames.push(Frame::new(true, OpCode::Pong, p));
                    }
                    Step::Message { text, bytes, cuts } => {
                        let mut at: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
                        at.sort_unstable();
                        at.push(bytes.len());
                        let mut pieces = Vec::new();
                        let mut start = 0;
                        for end in at {
                            pieces.push(bytes[start..end].to_vec());
                            start = end;
                        }
                        let n = pieces.len();
                        let mut piece_frames = Vec::new();
                        for (i, piece) in pieces.into_iter().enumerate() {
                            let op = match (i, text) {
                                (0, true) => OpCode::Text,
                                (0, false) => OpCode::Binary,
                                _ => OpCode::Continuation,
                            };
                            piece_frames.push(Frame::new(i + 1 == n, op, piece));
                        }
                        // Control frames between the fragments of this message.
                        let mut extra = Vec::new();
                        for (pos, is_ping, payload) in &controls {
                            let pos = pos.index(n);
                            if pos + 1 < n {
                                extra.push((pos, *is_ping, payload.clone()));
                            }
                        }
                        extra.sort_by_key(|e| e.0);
                        let mut extra = extra.into_iter().peekable();
                        for (i, f) in piece_frames.into_iter().enumerate() {
                            frames.push(f);
                            while let Some((_, is_ping, payload)) = extra.next_if(|e| e.0 == i) {
                                let (op, inc) = if is_ping {
                                    (OpCode::Ping, Incoming::Ping(payload.clone().into()))
                                } else {
                                    (OpCode::Pong, Incoming::Pong(payload.clone().into()))
                                };
                                frames.push(Frame::new(true, op, payload));
                                expected.push(inc);
                            }
                        }
                        expected.push(Incoming::Message(if text {
                            Message::Text(Utf8Bytes::try_from_bytes(bytes.into()).unwrap())
                        } else {
                            Message::Binary(bytes.into())
                        }));
                    }
                }
            }
            let mut r = Reassembler::new(1 << 20);
            prop_assert_eq!(push_all(&mut r, frames), Ok(expected));
            prop_assert!(!r.in_progress());
        }
    }
}
