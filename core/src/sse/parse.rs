//! The `text/event-stream` parser: the WHATWG HTML algorithm ("Server-sent events",
//! §9.2.6 interpreting an event stream), incremental, linear and bounded.
//!
//! Feed it whatever the transport delivers with [`push`](SseParser::push), in any split,
//! and pull dispatched events with [`next_event`](SseParser::next_event). The result does
//! not depend on how the input was split: a CR at the end of one chunk and an LF at the
//! start of the next are one line ending.
//!
//! ```
//! use tidewire::sse::{SseParser, ParserLimits};
//!
//! let mut p = SseParser::new(ParserLimits::default());
//! p.push(b"id: 1:7\nevent: tick\ndata: {\"n\":1}\r").unwrap();
//! assert!(p.next_event().is_none()); // the block is not finished yet
//! p.push(b"\n\r\n").unwrap();
//! let ev = p.next_event().unwrap();
//! assert_eq!((ev.event.as_str(), ev.data.as_str(), ev.id.as_str()), ("tick", "{\"n\":1}", "1:7"));
//! assert_eq!(p.last_event_id(), "1:7");
//! ```

use std::collections::VecDeque;

use crate::time::Duration;

/// Size limits of a parser (the spec sets none; DESIGN.md sets these defaults).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParserLimits {
    /// Longest line, in bytes, without its line ending (default 64 KiB). Comment lines are
    /// skipped without buffering and are not limited.
    pub max_line: usize,
    /// Largest event: the bytes of its `data` lines plus the event type (default 1 MiB).
    pub max_event: usize,
    /// Events parsed but not yet pulled with `next_event` (default 1024). Past it, `push`
    /// fails: the caller must pull events as it pushes bytes.
    pub max_queued: usize,
}

impl Default for ParserLimits {
    fn default() -> Self {
        Self { max_line: 64 << 10, max_event: 1 << 20, max_queued: 1024 }
    }
}

/// Why a stream was failed. After an error the parser accepts nothing more and every
/// `push` returns the same error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SseError {
    /// A line was longer than `max_line`.
    #[error("event-stream line longer than {0} bytes")]
    LineTooLong(usize),
    /// An event was larger than `max_event`.
    #[error("event larger than {0} bytes")]
    EventTooLarge(usize),
    /// More than `max_queued` events were waiting to be pulled.
    #[error("more than {0} parsed events not pulled")]
    TooManyQueued(usize),
}

/// A dispatched event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SseEvent {
    /// The event type: the `event` field, or `"message"` when it was absent or empty.
    pub event: String,
    /// The data lines joined with `"\n"`.
    pub data: String,
    /// The last event ID at dispatch (it persists across events until the server changes
    /// it; `""` when none was set).
    pub id: String,
}

/// Where the start of the stream is with respect to the optional byte order mark.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Bom {
    /// This many bytes of `EF BB BF` have been seen and held back (0 = nothing yet).
    Matching(u8),
    Done,
}

const BOM: [u8; 3] = [0xEF, 0xBB, 0xBF];

/// What the current, unfinished line is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Line {
    /// Bytes are buffered in `line`.
    Field,
    /// It started with `:`: skipped to its end without buffering.
    Comment,
}

/// The incremental event-stream parser. See the [module docs](self).
#[derive(Debug)]
pub struct SseParser {
    limits: ParserLimits,
    bom: Bom,
    line: Vec<u8>,
    kind: Line,
    /// The previous chunk ended with CR: an LF first in the next chunk belongs to it.
    after_cr: bool,
    data: String,
    event_type: String,
    /// The id buffer: set by `id` fields, copied to `last_event_id` at dispatch.
    id_buffer: String,
    last_event_id: String,
    retry: Option<Duration>,
    events: VecDeque<SseEvent>,
    error: Option<SseError>,
}

impl SseParser {
    /// A parser at the start of a stream.
    #[must_use]
    pub fn new(limits: ParserLimits) -> Self {
        Self::resuming(limits, String::new())
    }

    /// A parser for a reconnected stream: events carry `last_event_id` until the server
    /// sends another id (WHATWG: the last event ID survives reconnection).
    #[must_use]
    pub fn resuming(limits: ParserLimits, last_event_id: String) -> Self {
        Self {
            limits,
            bom: Bom::Matching(0),
            line: Vec::new(),
            kind: Line::Field,
            after_cr: false,
            data: String::new(),
            event_type: String::new(),
            id_buffer: last_event_id.clone(),
            last_event_id,
            retry: None,
            events: VecDeque::new(),
            error: None,
        }
    }

    /// The last event ID: set when a block with an `id` field is dispatched (by a blank
    /// line), also by id-only blocks that fire no event. Send it as `Last-Event-ID` on
    /// reconnect only when it is not empty.
    #[must_use]
    pub fn last_event_id(&self) -> &str {
        &self.last_event_id
    }

    /// The reconnection time of the latest valid `retry` field, if any. It takes effect as
    /// soon as its line ends, even if no event is dispatched.
    #[must_use]
    pub fn retry(&self) -> Option<Duration> {
        self.retry
    }

    /// The error the stream failed with, if it did.
    #[must_use]
    pub fn error(&self) -> Option<SseError> {
        self.error
    }

    /// The next dispatched event. May return something new after every `push`.
    #[must_use]
    pub fn next_event(&mut self) -> Option<SseEvent> {
        self.events.pop_front()
    }

    /// Feeds bytes of the stream. Time is linear in `data.len()`: nothing already parsed is
    /// scanned again.
    ///
    /// # Errors
    /// A limit of [`ParserLimits`] was passed; the stream is failed and every later call
    /// returns the same error.
    pub fn push(&mut self, mut data: &[u8]) -> Result<(), SseError> {
        if let Some(e) = self.error {
            return Err(e);
        }
        data = self.strip_bom(data);
        while !data.is_empty() {
            if self.after_cr {
                self.after_cr = false;
                if data[0] == b'\n' {
                    data = &data[1..];
                    continue;
                }
            }
            match memchr::memchr2(b'\r', b'\n', data) {
                None => {
                    self.extend_line(data)?;
                    break;
                }
                Some(i) => {
                    self.extend_line(&data[..i])?;
                    self.after_cr = data[i] == b'\r';
                    data = &data[i + 1..];
                    self.end_line()?;
                }
            }
        }
        Ok(())
    }

    /// The end of the stream: an unfinished block is discarded (its `id` is not used).
    pub fn finish(&mut self) {
        self.line.clear();
        self.kind = Line::Field;
        self.after_cr = false;
        self.data.clear();
        self.event_type.clear();
        self.id_buffer.clone_from(&self.last_event_id);
    }

    /// Holds back a possible byte order mark at the very start of the stream and drops it
    /// once complete; a partial match that fails is fed back as ordinary bytes.
    fn strip_bom<'a>(&mut self, data: &'a [u8]) -> &'a [u8] {
        let Bom::Matching(seen) = self.bom else { return data };
        let mut seen = usize::from(seen);
        let mut rest = data;
        while seen < BOM.len() {
            match rest.first() {
                None => {
                    self.bom = Bom::Matching(u8::try_from(seen).unwrap_or(0));
                    return rest;
                }
                Some(&b) if b == BOM[seen] => {
                    seen += 1;
                    rest = &rest[1..];
                }
                Some(_) => {
                    // Not a BOM: what was held back is ordinary data (it holds no CR/LF).
                    self.bom = Bom::Done;
                    self.line.extend_from_slice(&BOM[..seen]);
                    return rest;
                }
            }
        }
        self.bom = Bom::Done;
        rest
    }

    fn extend_line(&mut self, bytes: &[u8]) -> Result<(), SseError> {
        if bytes.is_empty() || self.kind == Line::Comment {
            return Ok(());
        }
        if self.line.is_empty() && bytes[0] == b':' {
            self.kind = Line::Comment;
            return Ok(());
        }
        if self.line.len() + bytes.len() > self.limits.max_line {
            return Err(self.fail(SseError::LineTooLong(self.limits.max_line)));
        }
        self.line.extend_from_slice(bytes);
        Ok(())
    }

    fn fail(&mut self, e: SseError) -> SseError {
        self.error = Some(e);
        self.line = Vec::new();
        self.data = String::new();
        e
    }

    fn end_line(&mut self) -> Result<(), SseError> {
        // Any line ending settles the BOM question (an empty first line has none).
        self.bom = Bom::Done;
        if self.kind == Line::Comment {
            self.kind = Line::Field;
            return Ok(());
        }
        if self.line.is_empty() {
            return self.dispatch();
        }
        let line = std::mem::take(&mut self.line);
        let result = self.field(&line);
        self.line = line;
        self.line.clear();
        result
    }

    /// Processes one field line (WHATWG "process the field").
    fn field(&mut self, line: &[u8]) -> Result<(), SseError> {
        let (name, value) = match memchr::memchr(b':', line) {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &[][..]),
        };
        match name {
            b"data" => {
                let value = String::from_utf8_lossy(value);
                if self.data.len() + value.len() + 1 + self.event_type.len() > self.limits.max_event
                {
                    return Err(self.fail(SseError::EventTooLarge(self.limits.max_event)));
                }
                self.data.push_str(&value);
                self.data.push('\n');
            }
            b"event" => {
                let value = String::from_utf8_lossy(value);
                if self.data.len() + value.len() > self.limits.max_event {
                    return Err(self.fail(SseError::EventTooLarge(self.limits.max_event)));
                }
                self.event_type.clear();
                self.event_type.push_str(&value);
            }
            // An id holding NUL is ignored as a whole.
            b"id" if memchr::memchr(0, value).is_none() => {
                self.id_buffer.clear();
                self.id_buffer.push_str(&String::from_utf8_lossy(value));
            }
            b"retry" => {
                if let Some(ms) = parse_digits(value) {
                    self.retry = Some(Duration::from_millis(ms));
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// A blank line: WHATWG "dispatch the event".
    fn dispatch(&mut self) -> Result<(), SseError> {
        self.last_event_id.clone_from(&self.id_buffer);
        if self.data.is_empty() {
            self.event_type.clear();
            return Ok(());
        }
        if self.events.len() >= self.limits.max_queued {
            return Err(self.fail(SseError::TooManyQueued(self.limits.max_queued)));
        }
        self.data.pop(); // the one trailing "\n"
        let event = if self.event_type.is_empty() {
            "message".to_owned()
        } else {
            std::mem::take(&mut self.event_type)
        };
        self.events.push_back(SseEvent {
            event,
            data: std::mem::take(&mut self.data),
            id: self.last_event_id.clone(),
        });
        Ok(())
    }
}

/// A `retry` value: ASCII digits only (no sign, space or exponent), saturating on overflow.
fn parse_digits(value: &[u8]) -> Option<u64> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(value.iter().fold(0u64, |n, d| n.saturating_mul(10).saturating_add(u64::from(d - b'0'))))
}

#[cfg(test)]
mod tests;
