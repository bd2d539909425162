//! RESP2 on the wire, through the `redis-protocol` crate: commands out, [`Reply`] values in.
//!
//! [`ReplyReader`] buffers a connection's input (bounded) and takes whole replies off its
//! front. The frames are decoded by `redis_protocol::resp2::decode::decode_range`, whose
//! ranges are turned into zero-copy [`Bytes`] slices of the consumed input.
//!
//! That decoder recurses once per nested array and has no depth limit, so a hostile peer
//! could overflow the stack with a few kilobytes of `*1\r\n`. Before decoding, a cheap
//! scan of the frame headers ([`nesting_exceeds`]) refuses anything nested deeper than
//! [`MAX_DEPTH`]; the replies this machine expects nest at most two levels.

use bytes::{Bytes, BytesMut};
use redis_protocol::resp2::decode::decode_range;
use redis_protocol::resp2::encode::encode_borrowed;
use redis_protocol::resp2::types::{BorrowedFrame, RangeFrame};

/// The deepest array nesting accepted from the server.
pub(super) const MAX_DEPTH: usize = 8;

/// One reply (or pushed pub/sub message) from Redis.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Reply {
    /// `+…`
    Simple(Bytes),
    /// `-…`: an error reply.
    Error(Bytes),
    /// `:…`
    Int(i64),
    /// `$…`
    Bulk(Bytes),
    /// `*…`
    Array(Vec<Reply>),
    /// `$-1` or `*-1`.
    Nil,
}

impl Reply {
    /// The bytes of a simple or bulk string.
    pub(super) fn as_bytes(&self) -> Option<&Bytes> {
        match self {
            Self::Simple(b) | Self::Bulk(b) => Some(b),
            _ => None,
        }
    }

    /// A simple or bulk string as UTF-8.
    pub(super) fn as_str(&self) -> Option<&str> {
        self.as_bytes().and_then(|b| std::str::from_utf8(b).ok())
    }
}

/// The input could not be RESP2: the connection is unusable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ReadError {
    /// Not RESP2, or nested deeper than [`MAX_DEPTH`].
    Malformed,
    /// More than the configured bound is buffered without a whole reply.
    TooLarge,
}

/// A connection's input buffer. See the [module docs](self).
#[derive(Debug)]
pub(super) struct ReplyReader {
    buf: BytesMut,
    max: usize,
}

impl ReplyReader {
    /// An empty reader that holds at most `max` bytes.
    pub(super) fn new(max: usize) -> Self {
        Self { buf: BytesMut::new(), max }
    }

    /// Appends input.
    ///
    /// # Errors
    /// [`ReadError::TooLarge`] when the buffer would exceed its bound.
    pub(super) fn push(&mut self, data: &[u8]) -> Result<(), ReadError> {
        if self.buf.len().saturating_add(data.len()) > self.max {
            return Err(ReadError::TooLarge);
        }
        self.buf.extend_from_slice(data);
        Ok(())
    }

    /// The next whole reply, `Ok(None)` when it has not fully arrived.
    ///
    /// # Errors
    /// [`ReadError::Malformed`] for input that is not RESP2.
    pub(super) fn next_reply(&mut self) -> Result<Option<Reply>, ReadError> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        if nesting_exceeds(&self.buf, MAX_DEPTH) {
            return Err(ReadError::Malformed);
        }
        let (frame, used) = match decode_range(&self.buf) {
            Ok(Some(v)) => v,
            Ok(None) => return Ok(None),
            Err(_) => return Err(ReadError::Malformed),
        };
        if used == 0 || used > self.buf.len() {
            return Err(ReadError::Malformed);
        }
        let chunk = self.buf.split_to(used).freeze();
        convert(&chunk, &frame).map(Some).ok_or(ReadError::Malformed)
    }
}

/// Turns a decoded frame's ranges into slices of `chunk` (`None` for a range outside it).
fn convert(chunk: &Bytes, frame: &RangeFrame) -> Option<Reply> {
    let slice = |&(a, b): &(usize, usize)| (a <= b && b <= chunk.len()).then(|| chunk.slice(a..b));
    Some(match frame {
        RangeFrame::SimpleString(r) => Reply::Simple(slice(r)?),
        RangeFrame::Error(r) => Reply::Error(slice(r)?),
        RangeFrame::Integer(i) => Reply::Int(*i),
        RangeFrame::BulkString(r) => Reply::Bulk(slice(r)?),
        RangeFrame::Array(items) => {
            Reply::Array(items.iter().map(|f| convert(chunk, f)).collect::<Option<Vec<_>>>()?)
        }
        RangeFrame::Null => Reply::Nil,
    })
}

/// Whether the RESP2 frame at the start of `buf` nests arrays deeper than `max`, judging
/// from what has arrived. Only the headers are looked at (type byte, length line; bulk
/// payloads are skipped by their length): decoding itself, and reporting any other error,
/// is the decoder's job.
pub(super) fn nesting_exceeds(buf: &[u8], max: usize) -> bool {
    // Elements still expected by each open array, innermost last.
    let mut open: Vec<u64> = Vec::new();
    let mut pos = 0usize;
    loop {
        let Some(&kind) = buf.get(pos) else { return false };
        let Some(rest) = buf.get(pos + 1..) else { return false };
        let Some(eol) = memchr::memmem::find(rest, b"\r\n") else { return false };
        let line = &rest[..eol];
        pos = pos + 1 + eol + 2;
        let len = std::str::from_utf8(line).ok().and_then(|s| s.parse::<i64>().ok());
        match (kind, len) {
            (b'*', Some(n)) if n > 0 => {
                if open.len() >= max {
                    return true;
                }
                open.push(n.unsigned_abs());
                continue;
            }
            (b'$', Some(n)) if n >= 0 => {
                pos =
                    pos.saturating_add(usize::try_from(n).unwrap_or(usize::MAX)).saturating_add(2);
            }
            (b'*' | b'$', None) => return false, // the decoder reports it
            _ => {}
        }
        // One element is complete: close the arrays it completes.
        loop {
            match open.last_mut() {
                None => return false, // the top-level frame is complete
                Some(left) => {
                    *left -= 1;
                    if *left > 0 {
                        break;
                    }
                    open.pop();
                }
            }
        }
    }
}

/// Appends `args` as one command (a RESP2 array of bulk strings) to `out`.
pub(super) fn encode_command(out: &mut Vec<u8>, args: &[&[u8]]) {
    let items: Vec<BorrowedFrame<'_>> = args.iter().map(|a| BorrowedFrame::BulkString(a)).collect();
    let frame = BorrowedFrame::Array(&items);
    let start = out.len();
    out.resize(start + frame.encode_len(false), 0);
    let written = encode_borrowed(&mut out[start..], &frame, false).unwrap_or(0);
    debug_assert_eq!(start + written, out.len(), "encode_len matches the encoding");
    out.truncate(start + written);
}

/// One command as `Bytes`.
pub(super) fn command(args: &[&[u8]]) -> Bytes {
    let mut out = Vec::new();
    encode_command(&mut out, args);
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(input: &[u8], chunks: &[usize]) -> Result<Vec<Reply>, ReadError> {
        let mut r = ReplyReader::new(1 << 20);
        let mut out = Vec::new();
        let mut at = 0usize;
        for &n in chunks.iter().chain(std::iter::once(&usize::MAX)) {
            let end = at.saturating_add(n).min(input.len());
            r.push(&input[at..end])?;
            at = end;
            while let Some(reply) = r.next_reply()? {
                out.push(reply);
            }
            if at == input.len() {
                break;
            }
        }
        Ok(out)
    }

    #[test]
    fn decodes_whole_bytewise_and_split() {
        let input =
            b"+OK\r\n-ERR x\r\n:42\r\n$3\r\nabc\r\n$-1\r\n*2\r\n$1\r\na\r\n*1\r\n:1\r\n*-1\r\n";
        let want = vec![
            Reply::Simple(Bytes::from_static(b"OK")),
            Reply::Error(Bytes::from_static(b"ERR x")),
            Reply::Int(42),
            Reply::Bulk(Bytes::from_static(b"abc")),
            Reply::Nil,
            Reply::Array(vec![
                Reply::Bulk(Bytes::from_static(b"a")),
                Reply::Array(vec![Reply::Int(1)]),
            ]),
            Reply::Nil,
        ];
        assert_eq!(all(input, &[]).unwrap(), want);
        assert_eq!(all(input, &vec![1; input.len()]).unwrap(), want);
        assert_eq!(all(input, &[3, 7, 2, 11, 1, 5]).unwrap(), want);
        // Trailing partial input stays buffered.
        let mut r = ReplyReader::new(100);
        r.push(b":1\r\n$5\r\nab").unwrap();
        assert_eq!(r.next_reply(), Ok(Some(Reply::Int(1))));
        assert_eq!(r.next_reply(), Ok(None));
    }

    #[test]
    fn refuses_bad_input() {
        assert_eq!(all(b"hello\r\n", &[]), Err(ReadError::Malformed));
        assert_eq!(all(b":abc\r\n", &[]), Err(ReadError::Malformed));
        assert_eq!(all(b"*-5\r\n", &[]), Err(ReadError::Malformed));
        let deep = b"*1\r\n".repeat(100_000);
        assert_eq!(all(&deep, &[]), Err(ReadError::Malformed));
        let deep_tail = b"*2\r\n:1\r\n".repeat(100_000);
        assert_eq!(all(&deep_tail, &[]), Err(ReadError::Malformed));
        // Huge announced lengths just wait, within the bound.
        assert_eq!(all(b"*9223372036854775807\r\n", &[]), Ok(vec![]));
        assert_eq!(all(b"$9223372036854775807\r\nab", &[]), Ok(vec![]));
        let mut r = ReplyReader::new(8);
        assert_eq!(r.push(b"$100\r\nabcdef"), Err(ReadError::TooLarge));
    }

    #[test]
    fn depth_scan() {
        assert!(!nesting_exceeds(b"*2\r\n*1\r\n:1\r\n*1\r\n:2\r\n", 2));
        assert!(nesting_exceeds(b"*1\r\n*1\r\n*1\r\n", 2));
        // A bulk payload that looks like arrays is skipped.
        assert!(!nesting_exceeds(b"*1\r\n$12\r\n*1\r\n*1\r\n*1\r\n\r\n", 1));
    }

    #[test]
    fn encodes_commands() {
        assert_eq!(&command(&[b"PING"])[..], b"*1\r\n$4\r\nPING\r\n");
        assert_eq!(&command(&[b"GET", b""])[..], b"*2\r\n$3\r\nGET\r\n$0\r\n\r\n");
    }
}
