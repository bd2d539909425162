//! The `text/event-stream` encoder (SSE.md 25–30).
//!
//! An event is encoded once into an [`Encoded`]: a small head (`id:`, `event:`, `data: `),
//! the payload and the blank-line tail, each a shared [`Bytes`]. A payload without line
//! breaks is not copied, and a broadcast clones the `Encoded` (three reference counts) for
//! every receiver instead of encoding again.
//!
//! ```
//! use tidewire::sse::{encode, parse::{ParserLimits, SseParser}};
//!
//! let ev = encode::event(Some("1:7"), Some("tick"), "{\"n\":1}".into()).unwrap();
//! assert_eq!(ev.to_bytes(), "id: 1:7\nevent: tick\ndata: {\"n\":1}\n\n");
//!
//! let mut parser = SseParser::new(ParserLimits::default());
//! for chunk in ev.chunks() {
//!     parser.push(&chunk).unwrap();
//! }
//! assert_eq!(parser.next_event().unwrap().data, "{\"n\":1}");
//! ```

use bytes::{BufMut, Bytes, BytesMut};

use crate::text::Utf8Bytes;
use crate::time::Duration;

/// The headers of an event-stream response (SSE.md 30): no caching, and no buffering by
/// proxies in between. Compression must not be applied either.
pub const RESPONSE_HEADERS: [(&str, &str); 3] = [
    ("Content-Type", "text/event-stream"),
    ("Cache-Control", "no-cache"),
    ("X-Accel-Buffering", "no"),
];

/// A field value that cannot be written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// `event`, `id` or a comment contained CR or LF, which would end the line early.
    #[error("{0} contains a line break")]
    LineBreak(&'static str),
    /// `id` contained NUL, which makes the parser ignore the whole id.
    #[error("id contains NUL")]
    NulInId,
    /// The data is not UTF-8 (the event stream is always UTF-8).
    #[error("data is not UTF-8")]
    NotUtf8,
}

/// One encoded event, ready to write: see the [module docs](self).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Encoded {
    head: Bytes,
    body: Bytes,
    tail: Bytes,
}

impl Encoded {
    /// The encoded length in bytes.
    #[must_use]
    pub fn len(&self) -> usize {
        self.head.len() + self.body.len() + self.tail.len()
    }

    /// Always false: an encoded event has at least its blank line.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The chunks to write, in order (empty ones left out). Cloning a `Bytes` copies no
    /// payload.
    pub fn chunks(&self) -> impl Iterator<Item = Bytes> + '_ {
        [&self.head, &self.body, &self.tail].into_iter().filter(|b| !b.is_empty()).cloned()
    }

    /// The whole event as one buffer (a copy when it has more than one chunk).
    #[must_use]
    pub fn to_bytes(&self) -> Bytes {
        let mut chunks = self.chunks();
        match (chunks.next(), chunks.next()) {
            (Some(only), None) => only,
            _ => {
                let mut out = BytesMut::with_capacity(self.len());
                for c in self.chunks() {
                    out.extend_from_slice(&c);
                }
                out.freeze()
            }
        }
    }
}

fn check_line(name: &'static str, value: &str) -> Result<(), EncodeError> {
    if memchr::memchr2(b'\r', b'\n', value.as_bytes()).is_some() {
        return Err(EncodeError::LineBreak(name));
    }
    Ok(())
}

fn check_id(id: &str) -> Result<(), EncodeError> {
    check_line("id", id)?;
    if memchr::memchr(0, id.as_bytes()).is_some() {
        return Err(EncodeError::NulInId);
    }
    Ok(())
}

/// Encodes an event with an optional `id` and `event` type and its `data`. Data with line
/// breaks (CR, LF or CRLF) becomes several `data:` lines; empty data still gets its
/// `data:` line so that the event is dispatched. Values keep a leading space (every field
/// is written as `name: value`, and the parser strips exactly one space).
///
/// # Errors
/// [`EncodeError`] when `id` or `event` contains CR or LF, or `id` contains NUL.
pub fn event(
    id: Option<&str>,
    event: Option<&str>,
    data: Utf8Bytes,
) -> Result<Encoded, EncodeError> {
    if let Some(id) = id {
        check_id(id)?;
    }
    if let Some(event) = event {
        check_line("event", event)?;
    }
    let mut head = BytesMut::with_capacity(16 + id.map_or(0, str::len) + event.map_or(0, str::len));
    if let Some(id) = id {
        put_field(&mut head, "id", id);
    }
    if let Some(event) = event {
        put_field(&mut head, "event", event);
    }
    let data = data.into_bytes();
    if memchr::memchr2(b'\r', b'\n', &data).is_none() {
        head.put_slice(b"data: ");
        return Ok(Encoded { head: head.freeze(), body: data, tail: Bytes::from_static(b"\n\n") });
    }
    // Several lines: one copy, each line its own `data:` field.
    head.reserve(data.len() + 16);
    let mut rest = &data[..];
    loop {
        let end = memchr::memchr2(b'\r', b'\n', rest);
        let line = &rest[..end.unwrap_or(rest.len())];
        head.put_slice(b"data: ");
        head.put_slice(line);
        head.put_u8(b'\n');
        let Some(i) = end else { break };
        let skip = if rest[i] == b'\r' && rest.get(i + 1) == Some(&b'\n') { 2 } else { 1 };
        rest = &rest[i + skip..];
    }
    head.put_u8(b'\n');
    Ok(Encoded { head: head.freeze(), body: Bytes::new(), tail: Bytes::new() })
}

/// An id-only block: it moves the receiver's last event ID without firing an event (a
/// cursor heartbeat, SSE.md 15).
///
/// # Errors
/// [`EncodeError`] when `id` contains CR, LF or NUL.
pub fn id_only(id: &str) -> Result<Bytes, EncodeError> {
    check_id(id)?;
    let mut out = BytesMut::with_capacity(id.len() + 6);
    put_field(&mut out, "id", id);
    out.put_u8(b'\n');
    Ok(out.freeze())
}

/// A `retry:` line with the reconnection time in whole milliseconds (saturating).
#[must_use]
pub fn retry(after: Duration) -> Bytes {
    let ms = u64::try_from(after.as_millis()).unwrap_or(u64::MAX);
    Bytes::from(format!("retry: {ms}\n"))
}

/// A comment line (`: text`), e.g. the keep-alive sent while idle. Receivers ignore it, but
/// it counts as life for their idle watchdog.
///
/// # Errors
/// [`EncodeError::LineBreak`] when `text` contains CR or LF.
pub fn comment(text: &str) -> Result<Bytes, EncodeError> {
    check_line("comment", text)?;
    if text.is_empty() {
        return Ok(Bytes::from_static(b":\n"));
    }
    let mut out = BytesMut::with_capacity(text.len() + 3);
    put_field(&mut out, "", text);
    Ok(out.freeze())
}

fn put_field(out: &mut BytesMut, name: &str, value: &str) {
    out.put_slice(name.as_bytes());
    out.put_slice(b": ");
    out.put_slice(value.as_bytes());
    out.put_u8(b'\n');
}

#[cfg(test)]
mod tests;
