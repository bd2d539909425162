//! The bounded per-channel replay log: every published message gets a [`Position`]
//! `(epoch, offset)`, and a subscriber that comes back with the position of the last
//! message it saw gets exactly the ones it missed, in order — or is told the position is
//! [`Gone`], so that it refetches state. Never a silent partial replay.
//!
//! Offsets count from 1 within an epoch; `(epoch, 0)` is "before the first message". The
//! epoch changes whenever the log restarts without its history (a server restart with an
//! in-memory log), so positions from an older life are recognised as gone.
//!
//! ```
//! use tidewire::replay::{Epoch, LogLimits, Position, ReplayLog};
//! use tidewire::Instant;
//!
//! let now = Instant::now();
//! let mut log = ReplayLog::new(Epoch(0xa1), LogLimits::default());
//! let first = log.append(now, "one".into());
//! log.append(now, "two".into());
//! log.append(now, "three".into());
//! assert_eq!(first.to_string(), "a1:1");
//!
//! let missed: Vec<_> = log.since(first).unwrap().map(|(pos, data)| (pos.offset, data.clone())).collect();
//! assert_eq!(missed, [(2, "two".into()), (3, "three".into())]);
//! assert!(log.since("ff:3".parse::<Position>().unwrap()).is_err()); // another epoch: gone
//! ```

use std::collections::VecDeque;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use bytes::Bytes;

use crate::time::{Duration, Instant, Monotonic};

/// The life of a log: a new one whenever the log restarts without its history.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Epoch(pub u64);

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}", self.0)
    }
}

impl FromStr for Epoch {
    type Err = BadPosition;
    fn from_str(s: &str) -> Result<Self, BadPosition> {
        if s.is_empty() || s.len() > 16 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(BadPosition);
        }
        u64::from_str_radix(s, 16).map(Epoch).map_err(|_| BadPosition)
    }
}

/// Where a message sits in a channel: `epoch:offset` on the wire (SSE `id`, polling `pos`,
/// the envelope's `ep`/`off`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Position {
    /// The log's life.
    pub epoch: Epoch,
    /// 1 for the first message of the epoch; 0 before it.
    pub offset: u64,
}

impl Position {
    /// The position before the first message of `epoch`.
    #[must_use]
    pub fn start(epoch: Epoch) -> Self {
        Self { epoch, offset: 0 }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.epoch, self.offset)
    }
}

/// A position string that is not `HEX:DIGITS`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not a position: expected EPOCH:OFFSET (hex epoch, decimal offset)")]
pub struct BadPosition;

impl FromStr for Position {
    type Err = BadPosition;
    fn from_str(s: &str) -> Result<Self, BadPosition> {
        let (ep, off) = s.split_once(':').ok_or(BadPosition)?;
        if off.is_empty() || off.len() > 20 || !off.bytes().all(|b| b.is_ascii_digit()) {
            return Err(BadPosition);
        }
        Ok(Self { epoch: ep.parse()?, offset: off.parse().map_err(|_| BadPosition)? })
    }
}

/// The bounds of a log (DESIGN.md: 1000 messages, 1 MiB, 2 minutes per channel).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogLimits {
    /// Messages kept at most.
    pub max_count: usize,
    /// Payload bytes kept at most (the newest message is always kept).
    pub max_bytes: usize,
    /// Messages older than this are dropped.
    pub max_age: Duration,
}

impl Default for LogLimits {
    fn default() -> Self {
        Self { max_count: 1000, max_bytes: 1 << 20, max_age: Duration::from_secs(120) }
    }
}

/// The position asked for can no longer be served: another epoch, trimmed away, or ahead
/// of the log. The subscriber must refetch state and continue from [`Gone::head`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("position {asked} is gone; the log is at {head}")]
pub struct Gone {
    /// The position that was asked for.
    pub asked: Position,
    /// The newest position of the log: continue from here after refetching.
    pub head: Position,
}

#[derive(Clone, Debug)]
struct Entry {
    at: Instant,
    data: Bytes,
    /// Who published it, as the server authenticated them (`None`: anonymous, trusted or
    /// hidden).
    from: Option<Arc<str>>,
}

/// One retained message, as [`ReplayLog::since_entries`] gives it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogEntry<'a> {
    /// Its position.
    pub pos: Position,
    /// Its data.
    pub data: &'a Bytes,
    /// Its publisher's identity, when the hub recorded one.
    pub from: Option<&'a Arc<str>>,
}

/// The log of one channel. See the [module docs](self).
#[derive(Clone, Debug)]
pub struct ReplayLog {
    epoch: Epoch,
    limits: LogLimits,
    clock: Option<Monotonic>,
    entries: VecDeque<Entry>,
    /// Offset of `entries[0]`; when empty, the offset the next message gets.
    first: u64,
    bytes: usize,
}

impl ReplayLog {
    /// An empty log in `epoch`. Draw the epoch at random (or from a persisted counter) each
    /// time a log starts without its history.
    #[must_use]
    pub fn new(epoch: Epoch, limits: LogLimits) -> Self {
        Self { epoch, limits, clock: None, entries: VecDeque::new(), first: 1, bytes: 0 }
    }

    /// An empty log that continues an earlier life of the same epoch after `last`: the
    /// next message gets `last.offset + 1`. A server that persisted its channel's position
    /// (not the messages) uses it after a restart, so that clients which had seen up to
    /// `last` resume exactly instead of refetching; positions before it are gone.
    #[must_use]
    pub fn continuing(last: Position, limits: LogLimits) -> Self {
        let mut log = Self::new(last.epoch, limits);
        log.first = last.offset.saturating_add(1);
        log
    }

    /// The epoch of this log.
    #[must_use]
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    /// The position of the newest message (`offset` 0 before the first).
    #[must_use]
    pub fn head(&self) -> Position {
        let next = self.first + self.entries.len() as u64;
        Position { epoch: self.epoch, offset: next - 1 }
    }

    /// Messages retained.
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no message is retained.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Payload bytes retained.
    #[must_use]
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Appends a message and returns its position; drops the oldest messages past the
    /// count, byte and age bounds.
    pub fn append(&mut self, now: Instant, data: Bytes) -> Position {
        self.append_from(now, data, None)
    }

    /// [`append`](Self::append) of a message whose publisher is `from` (kept with it, so
    /// that replays carry it; [`since_entries`](Self::since_entries) gives it back).
    pub fn append_from(&mut self, now: Instant, data: Bytes, from: Option<Arc<str>>) -> Position {
        let now = self.advance(now);
        self.bytes += data.len();
        self.entries.push_back(Entry { at: now, data, from });
        let pos = self.head();
        self.trim(now);
        pos
    }

    /// Drops messages older than `max_age`. `append` and `since` do it too; call it at
    /// [`poll_timeout`](Self::poll_timeout) to free memory of an idle channel.
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.advance(now);
        self.trim(now);
    }

    /// When the oldest message expires.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.entries.front().map(|e| e.at + self.limits.max_age)
    }

    /// The messages after `pos`, oldest first, each with its position.
    ///
    /// # Errors
    /// [`Gone`] when `pos` is from another epoch, when a message after it was trimmed, or
    /// when it is ahead of the log.
    pub fn since(
        &self,
        pos: Position,
    ) -> Result<impl ExactSizeIterator<Item = (Position, &Bytes)> + '_, Gone> {
        let (skip, first) = self.skip_after(pos)?;
        let epoch = self.epoch;
        Ok(self
            .entries
            .iter()
            .enumerate()
            .skip(skip)
            .map(move |(i, e)| (Position { epoch, offset: first + i as u64 }, &e.data)))
    }

    /// [`since`](Self::since) with each message's publisher: the messages after `pos`,
    /// oldest first.
    ///
    /// # Errors
    /// As [`since`](Self::since).
    pub fn since_entries(
        &self,
        pos: Position,
    ) -> Result<impl ExactSizeIterator<Item = LogEntry<'_>> + '_, Gone> {
        let (skip, first) = self.skip_after(pos)?;
        let epoch = self.epoch;
        Ok(self.entries.iter().enumerate().skip(skip).map(move |(i, e)| LogEntry {
            pos: Position { epoch, offset: first + i as u64 },
            data: &e.data,
            from: e.from.as_ref(),
        }))
    }

    /// How many retained entries precede the first one after `pos`, and the offset of
    /// `entries[0]`.
    fn skip_after(&self, pos: Position) -> Result<(usize, u64), Gone> {
        let head = self.head();
        let gone = Gone { asked: pos, head };
        if pos.epoch != self.epoch || pos.offset > head.offset || pos.offset + 1 < self.first {
            return Err(gone);
        }
        let skip = usize::try_from(pos.offset + 1 - self.first).map_err(|_| gone)?;
        Ok((skip, self.first))
    }

    fn advance(&mut self, now: Instant) -> Instant {
        match &mut self.clock {
            Some(c) => c.advance(now),
            None => {
                self.clock = Some(Monotonic::new(now));
                now
            }
        }
    }

    fn trim(&mut self, now: Instant) {
        while let Some(front) = self.entries.front() {
            let over = self.entries.len() > self.limits.max_count
                || (self.bytes > self.limits.max_bytes && self.entries.len() > 1)
                || now.saturating_duration_since(front.at) >= self.limits.max_age;
            if !over {
                break;
            }
            self.bytes -= front.data.len();
            self.entries.pop_front();
            self.first += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(limits: LogLimits) -> (ReplayLog, Instant) {
        (ReplayLog::new(Epoch(7), limits), crate::time::test_epoch())
    }

    fn offsets(log: &ReplayLog, pos: Position) -> Result<Vec<u64>, Gone> {
        log.since(pos).map(|it| it.map(|(p, _)| p.offset).collect())
    }

    #[test]
    fn replays_exactly_what_was_missed() {
        let (mut log, t0) = log(LogLimits::default());
        assert_eq!(log.head(), Position::start(Epoch(7)));
        assert_eq!(offsets(&log, Position::start(Epoch(7))), Ok(vec![]));
        for i in 0..5u8 {
            log.append(t0, Bytes::from(vec![i]));
        }
        assert_eq!(offsets(&log, Position::start(Epoch(7))), Ok(vec![1, 2, 3, 4, 5]));
        assert_eq!(offsets(&log, Position { epoch: Epoch(7), offset: 3 }), Ok(vec![4, 5]));
        assert_eq!(offsets(&log, log.head()), Ok(vec![]));
        let data: Vec<u8> = log
            .since(Position { epoch: Epoch(7), offset: 2 })
            .unwrap()
            .map(|(_, d)| d[0])
            .collect();
        assert_eq!(data, [2, 3, 4]);
    }

    #[test]
    fn other_epoch_trimmed_or_future_positions_are_gone() {
        let limits = LogLimits { max_count: 3, ..LogLimits::default() };
        let (mut log, t0) = log(limits);
        for _ in 0..5 {
            log.append(t0, Bytes::from_static(b"x"));
        }
        let head = log.head();
        assert_eq!(head.offset, 5);
        // Retained: 3, 4, 5. Position 2 still works (the next one, 3, is there).
        assert_eq!(offsets(&log, Position { epoch: Epoch(7), offset: 2 }), Ok(vec![3, 4, 5]));
        let p1 = Position { epoch: Epoch(7), offset: 1 };
        assert_eq!(offsets(&log, p1), Err(Gone { asked: p1, head }));
        let other = Position { epoch: Epoch(8), offset: 4 };
        assert_eq!(offsets(&log, other), Err(Gone { asked: other, head }));
        let ahead = Position { epoch: Epoch(7), offset: 6 };
        assert_eq!(offsets(&log, ahead), Err(Gone { asked: ahead, head }));
    }

    #[test]
    fn bytes_and_age_bound_the_log() {
        let limits = LogLimits { max_count: 100, max_bytes: 10, max_age: Duration::from_secs(60) };
        let (mut log, t0) = log(limits);
        for _ in 0..4 {
            log.append(t0, Bytes::from_static(b"abcd"));
        }
        assert_eq!((log.len(), log.bytes()), (2, 8));
        // A message larger than the byte bound is still kept, alone.
        log.append(t0, Bytes::from(vec![0; 50]));
        assert_eq!((log.len(), log.bytes()), (1, 50));
        assert_eq!(log.poll_timeout(), Some(t0 + Duration::from_secs(60)));
        log.append(t0 + Duration::from_secs(30), Bytes::from_static(b"a"));
        log.handle_timeout(t0 + Duration::from_secs(60));
        assert_eq!(log.len(), 1);
        log.handle_timeout(t0 + Duration::from_secs(90));
        assert!(log.is_empty());
        // Offsets keep counting through trimming.
        assert_eq!(log.head().offset, 6);
        assert_eq!(log.append(t0, Bytes::new()).offset, 7);
    }

    #[test]
    fn a_continuing_log_serves_clients_of_its_earlier_life() {
        let t0 = crate::time::test_epoch();
        let last = Position { epoch: Epoch(7), offset: 41 };
        let mut log = ReplayLog::continuing(last, LogLimits::default());
        assert_eq!(log.head(), last);
        assert_eq!(log.append(t0, Bytes::from_static(b"x")).offset, 42);
        assert_eq!(offsets(&log, last), Ok(vec![42]));
        let older = Position { epoch: Epoch(7), offset: 40 };
        assert!(log.since(older).is_err(), "41 is not in this life's log");
    }

    #[test]
    fn entries_keep_their_publisher() {
        let (mut log, t0) = log(LogLimits::default());
        log.append_from(t0, Bytes::from_static(b"1"), Some(Arc::from("ann")));
        log.append(t0, Bytes::from_static(b"2"));
        let got: Vec<(u64, Option<String>)> = log
            .since_entries(Position::start(Epoch(7)))
            .unwrap()
            .map(|e| (e.pos.offset, e.from.map(ToString::to_string)))
            .collect();
        assert_eq!(got, [(1, Some("ann".to_owned())), (2, None)]);
        assert_eq!(log.since_entries(log.head()).unwrap().len(), 0);
        assert!(log.since_entries(Position::start(Epoch(8))).is_err());
    }

    #[test]
    fn positions_print_and_parse() {
        let p = Position { epoch: Epoch(0xa1), offset: 17 };
        assert_eq!(p.to_string(), "a1:17");
        assert_eq!("a1:17".parse(), Ok(p));
        for bad in ["", "a1", ":1", "a1:", "g1:1", "a1:-1", "a1:+1", "a1:1x", "a1:1:2", " a1:1"] {
            assert_eq!(bad.parse::<Position>(), Err(BadPosition), "{bad:?}");
        }
    }
}
