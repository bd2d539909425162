//! Per-stream reordering: deliver numbered items exactly once and in order, hold a bounded
//! window of early arrivals, and give up on a gap that stays open too long.
//!
//! Items carry a sequence number (`u64`). [`Sequencer::push`] files each one in a ring
//! buffer indexed by `seq - next_expected`; [`Sequencer::pop`] yields the items from
//! `next_expected` on while there is no hole. Stale items (already delivered or given up) and
//! duplicates (already held) are reported and dropped; an item too far ahead is refused, so
//! the sequencer never holds more than [`SequencerConfig::window`] items.
//!
//! **Gaps.** When an item is held past a hole, the hole gets a deadline: the first time
//! anything was held past it, plus [`SequencerConfig::gap_timeout`].
//! [`Sequencer::poll_timeout`] returns the deadline of the oldest hole;
//! [`Sequencer::handle_timeout`] gives that hole up, returns its range so the owner can
//! resume or refetch it, and makes the items behind it poppable.
//!
//! Every operation is O(1), amortized over the sequence numbers it passes.
//!
//! ```
//! use tidewire::policy::{Accepted, Sequencer, SequencerConfig};
//! use tidewire::time::{Duration, Instant};
//!
//! let t0 = Instant::now();
//! let cfg = SequencerConfig { window: 16, gap_timeout: Duration::from_secs(2) };
//! let mut s = Sequencer::new(cfg, 1);
//! assert_eq!(s.push(t0, 1, "a"), Ok(Accepted::Ready));
//! assert_eq!(s.push(t0, 3, "c"), Ok(Accepted::Held)); // 2 is missing
//! assert_eq!(s.push(t0, 3, "c"), Ok(Accepted::Duplicate));
//! assert_eq!(s.pop(), Some((1, "a")));
//! assert_eq!(s.push(t0, 1, "a"), Ok(Accepted::Stale));
//! assert_eq!(s.pop(), None); // waiting for 2
//! assert_eq!(s.poll_timeout(), Some(t0 + Duration::from_secs(2)));
//! assert_eq!(s.handle_timeout(t0 + Duration::from_secs(1)), None);
//! assert_eq!(s.handle_timeout(t0 + Duration::from_secs(2)), Some(2..3)); // refetch 2
//! assert_eq!(s.pop(), Some((3, "c")));
//! assert_eq!(s.next_expected(), 4);
//! ```

use core::ops::Range;
use std::collections::VecDeque;

use crate::time::{Duration, Instant};

/// Sequencer settings. Defaults: a window of 1024 items and a 5 s gap timeout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SequencerConfig {
    /// How far ahead of the next expected number an item may be: numbers in
    /// `next_expected .. next_expected + window` are accepted, so at most `window` items are
    /// held. Values below 1 count as 1.
    pub window: usize,
    /// How long a hole may stay open, from the first time an item was held past it, before
    /// [`Sequencer::handle_timeout`] gives it up.
    pub gap_timeout: Duration,
}

impl Default for SequencerConfig {
    fn default() -> Self {
        Self { window: 1024, gap_timeout: Duration::from_secs(5) }
    }
}

/// What [`Sequencer::push`] did with an item.
///
/// Stale items and duplicates are normal on a network that retransmits or replays after a
/// resume, so they are reported here and not as errors; the item is dropped in both cases.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Accepted {
    /// Filed with nothing missing before it: [`Sequencer::pop`] yields it now.
    Ready,
    /// Filed behind a hole: yielded once the hole is filled or given up.
    Held,
    /// Dropped: its number is below the next expected one (already delivered or given up).
    Stale,
    /// Dropped: an item with this number is already filed and not yet popped.
    Duplicate,
}

/// Why [`Sequencer::push`] refused an item.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OrderError {
    /// The item is too far ahead: holding it would exceed the window. The item is dropped;
    /// the owner should treat everything up to it as lost (resume or refetch, then
    /// [`Sequencer::reset`]).
    #[error("sequence number {seq} is beyond the reorder window (limit {limit})")]
    BeyondWindow {
        /// The refused number.
        seq: u64,
        /// The first number that is beyond the window right now.
        limit: u64,
    },
}

/// The reordering machine for one stream. See the [module docs](self).
///
/// - Inputs: [`push`](Self::push), [`handle_timeout`](Self::handle_timeout),
///   [`reset`](Self::reset).
/// - Outputs: [`pop`](Self::pop), [`poll_timeout`](Self::poll_timeout).
/// - Getters: [`next_expected`](Self::next_expected), [`held`](Self::held),
///   [`config`](Self::config).
#[derive(Clone, Debug)]
pub struct Sequencer<T> {
    cfg: SequencerConfig,
    /// Slot `i` is sequence number `head + i`. Never longer than the window; its front is
    /// `None` only when there is a hole.
    slots: VecDeque<Option<T>>,
    /// The next number to deliver. `u128` so that delivering `u64::MAX` needs no special case.
    head: u128,
    held: usize,
    /// Items that raised the highest number filed so far, with their arrival time; both
    /// increase along the deque. The first entry above a hole is the first item that was held
    /// past it, which dates the hole.
    records: VecDeque<(u64, Instant)>,
    /// The latest `now` seen, to keep time moving forward.
    last_now: Option<Instant>,
}

impl<T> Sequencer<T> {
    /// A sequencer that expects `next_expected` first.
    #[must_use]
    pub fn new(cfg: SequencerConfig, next_expected: u64) -> Self {
        let cfg = SequencerConfig { window: cfg.window.max(1), ..cfg };
        Self {
            cfg,
            slots: VecDeque::new(),
            head: u128::from(next_expected),
            held: 0,
            records: VecDeque::new(),
            last_now: None,
        }
    }

    /// The settings.
    #[must_use]
    pub fn config(&self) -> &SequencerConfig {
        &self.cfg
    }

    /// The next number [`pop`](Self::pop) will deliver (`u64::MAX` once even that was
    /// delivered). Lower numbers are stale.
    #[must_use]
    pub fn next_expected(&self) -> u64 {
        u64::try_from(self.head).unwrap_or(u64::MAX)
    }

    /// How many items are filed and not yet popped.
    #[must_use]
    pub fn held(&self) -> usize {
        self.held
    }

    fn advance(&mut self, now: Instant) -> Instant {
        let now = self.last_now.map_or(now, |last| last.max(now));
        self.last_now = Some(now);
        now
    }

    fn window(&self) -> u128 {
        u128::try_from(self.cfg.window).unwrap_or(u128::MAX)
    }

    /// Files `seq`. See [`Accepted`] for what can happen to it.
    ///
    /// # Errors
    /// [`OrderError::BeyondWindow`] when `seq >= next_expected + window`; the item is dropped.
    pub fn push(&mut self, now: Instant, seq: u64, item: T) -> Result<Accepted, OrderError> {
        let now = self.advance(now);
        let Some(offset) = u128::from(seq).checked_sub(self.head) else {
            return Ok(Accepted::Stale);
        };
        if offset >= self.window() {
            let limit = self.head.saturating_add(self.window());
            return Err(OrderError::BeyondWindow {
                seq,
                limit: u64::try_from(limit).unwrap_or(u64::MAX),
            });
        }
        // offset < window <= usize::MAX.
        let Ok(i) = usize::try_from(offset) else {
            return Err(OrderError::BeyondWindow { seq, limit: seq });
        };
        if let Some(Some(_)) = self.slots.get(i) {
            return Ok(Accepted::Duplicate);
        }
        if self.slots.len() <= i {
            self.slots.resize_with(i + 1, || None);
        }
        self.slots[i] = Some(item);
        self.held += 1;
        if self.records.back().is_none_or(|&(top, _)| seq > top) {
            self.records.push_back((seq, now));
        }
        Ok(if i == 0 { Accepted::Ready } else { Accepted::Held })
    }

    /// The next item in order, exactly once; `None` while the next number is missing. May
    /// return something new after [`push`](Self::push) and
    /// [`handle_timeout`](Self::handle_timeout).
    #[must_use]
    pub fn pop(&mut self) -> Option<(u64, T)> {
        let item = self.slots.front_mut()?.take()?;
        self.slots.pop_front();
        let seq = u64::try_from(self.head).unwrap_or(u64::MAX);
        self.head += 1;
        self.held -= 1;
        self.forget_records();
        Some((seq, item))
    }

    /// Drops the records of numbers that are no longer ahead of the next expected one.
    fn forget_records(&mut self) {
        while self.records.front().is_some_and(|&(s, _)| u128::from(s) < self.head) {
            self.records.pop_front();
        }
    }

    /// The deadline of the oldest open hole; `None` when there is none, or while
    /// [`pop`](Self::pop) has items to yield (drain those first). Changes after
    /// [`push`](Self::push), [`pop`](Self::pop) and [`handle_timeout`](Self::handle_timeout).
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.held == 0 || self.slots.front().is_none_or(Option::is_some) {
            return None;
        }
        // With a hole at the front, every record is above it (records below the next
        // expected number are forgotten, and one at it would fill the hole).
        let &(_, since) = self.records.front()?;
        since.checked_add(self.cfg.gap_timeout)
    }

    /// Gives up the oldest hole if its deadline has passed: returns the missing numbers
    /// (the owner SHOULD resume or refetch them) and makes the items behind it poppable.
    /// `None` when nothing is due (a spurious wake-up). One hole per call: call in a loop
    /// (popping in between) until it returns `None`.
    pub fn handle_timeout(&mut self, now: Instant) -> Option<Range<u64>> {
        let now = self.advance(now);
        if self.poll_timeout()? > now {
            return None;
        }
        let start = self.next_expected();
        let mut skipped: u128 = 0;
        while let Some(None) = self.slots.front() {
            self.slots.pop_front();
            skipped += 1;
        }
        self.head += skipped;
        self.forget_records();
        Some(start..self.next_expected())
    }

    /// Drops everything held and expects `next_expected` next (after a resync).
    pub fn reset(&mut self, next_expected: u64) {
        self.slots.clear();
        self.records.clear();
        self.held = 0;
        self.head = u128::from(next_expected);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn cfg(window: usize) -> SequencerConfig {
        SequencerConfig { window, gap_timeout: ms(100) }
    }

    fn drain<T>(s: &mut Sequencer<T>) -> Vec<u64> {
        core::iter::from_fn(|| s.pop()).map(|(seq, _)| seq).collect()
    }

    #[test]
    fn in_order_items_flow_through() {
        let t0 = crate::time::test_epoch();
        let mut s = Sequencer::new(cfg(4), 10);
        for seq in 10..20 {
            assert_eq!(s.push(t0, seq, seq * 2), Ok(Accepted::Ready));
            assert_eq!(s.pop(), Some((seq, seq * 2)));
        }
        assert_eq!(s.pop(), None);
        assert_eq!(s.held(), 0);
        assert_eq!(s.poll_timeout(), None);
    }

    #[test]
    fn reorders_within_the_window() {
        let t0 = crate::time::test_epoch();
        let mut s = Sequencer::new(cfg(8), 0);
        for seq in [3, 1, 2] {
            assert_eq!(s.push(t0, seq, ()), Ok(Accepted::Held));
        }
        assert_eq!(s.held(), 3);
        assert_eq!(drain(&mut s), Vec::<u64>::new());
        assert_eq!(s.push(t0, 0, ()), Ok(Accepted::Ready));
        assert_eq!(drain(&mut s), [0, 1, 2, 3]);
        assert_eq!(s.next_expected(), 4);
    }

    #[test]
    fn stale_duplicate_and_beyond_window() {
        let t0 = crate::time::test_epoch();
        let mut s = Sequencer::new(cfg(4), 5);
        assert_eq!(s.push(t0, 4, 'x'), Ok(Accepted::Stale));
        assert_eq!(s.push(t0, 7, 'a'), Ok(Accepted::Held));
        assert_eq!(s.push(t0, 7, 'b'), Ok(Accepted::Duplicate));
        assert_eq!(s.push(t0, 9, 'c'), Err(OrderError::BeyondWindow { seq: 9, limit: 9 }));
        assert_eq!(
            s.push(t0, u64::MAX, 'c'),
            Err(OrderError::BeyondWindow { seq: u64::MAX, limit: 9 })
        );
        assert_eq!(s.push(t0, 5, 'd'), Ok(Accepted::Ready));
        assert_eq!(s.push(t0, 5, 'e'), Ok(Accepted::Duplicate));
        assert_eq!(s.pop(), Some((5, 'd')));
        assert_eq!(s.push(t0, 5, 'f'), Ok(Accepted::Stale));
        assert_eq!(s.held(), 1);
    }

    #[test]
    fn a_gap_is_given_up_after_its_timeout() {
        let t0 = crate::time::test_epoch();
        let mut s = Sequencer::new(cfg(16), 0);
        s.push(t0, 0, ()).unwrap();
        assert_eq!(s.poll_timeout(), None); // nothing missing, only undrained
        assert_eq!(drain(&mut s), [0]);
        s.push(t0 + ms(10), 3, ()).unwrap();
        s.push(t0 + ms(50), 6, ()).unwrap();
        s.push(t0 + ms(60), 4, ()).unwrap();
        // The hole 1..3 dates from the first item held past it (3, at 10 ms).
        assert_eq!(s.poll_timeout(), Some(t0 + ms(110)));
        assert_eq!(s.handle_timeout(t0 + ms(109)), None);
        assert_eq!(s.handle_timeout(t0 + ms(110)), Some(1..3));
        assert_eq!(s.poll_timeout(), None);
        assert_eq!(drain(&mut s), [3, 4]);
        // The hole 5..6 dates from item 6 (50 ms), not from when hole 1..3 closed.
        assert_eq!(s.poll_timeout(), Some(t0 + ms(150)));
        s.push(t0 + ms(120), 5, ()).unwrap(); // filled in time
        assert_eq!(s.poll_timeout(), None);
        assert_eq!(drain(&mut s), [5, 6]);
        assert_eq!(s.handle_timeout(t0 + ms(1000)), None);
    }

    #[test]
    fn several_due_holes_come_out_one_per_call() {
        let t0 = crate::time::test_epoch();
        let mut s = Sequencer::new(cfg(16), 0);
        s.push(t0, 2, ()).unwrap();
        s.push(t0, 5, ()).unwrap();
        let now = t0 + ms(500);
        assert_eq!(s.handle_timeout(now), Some(0..2));
        assert_eq!(s.handle_timeout(now), None); // 2 must be popped first
        assert_eq!(drain(&mut s), [2]);
        assert_eq!(s.handle_timeout(now), Some(3..5));
        assert_eq!(drain(&mut s), [5]);
        assert_eq!(s.push(now, 4, ()), Ok(Accepted::Stale));
    }

    #[test]
    fn the_end_of_the_number_space() {
        let t0 = crate::time::test_epoch();
        let mut s = Sequencer::new(cfg(4), u64::MAX - 1);
        assert_eq!(s.push(t0, u64::MAX, 1), Ok(Accepted::Held));
        assert_eq!(s.handle_timeout(t0 + ms(100)), Some(u64::MAX - 1..u64::MAX));
        assert_eq!(s.pop(), Some((u64::MAX, 1)));
        assert_eq!(s.next_expected(), u64::MAX);
        assert_eq!(s.push(t0, u64::MAX, 2), Ok(Accepted::Stale));
    }

    #[test]
    fn window_zero_means_one_and_reset_resyncs() {
        let t0 = crate::time::test_epoch();
        let mut s = Sequencer::new(cfg(0), 0);
        assert_eq!(s.push(t0, 1, ()), Err(OrderError::BeyondWindow { seq: 1, limit: 1 }));
        assert_eq!(s.push(t0, 0, ()), Ok(Accepted::Ready));
        s.reset(100);
        assert_eq!(s.held(), 0);
        assert_eq!(s.pop(), None);
        assert_eq!(s.push(t0, 100, ()), Ok(Accepted::Ready));
    }

    #[test]
    fn never_holds_more_than_the_window() {
        let t0 = crate::time::test_epoch();
        let mut s = Sequencer::new(cfg(32), 0);
        for seq in (1..1000).rev() {
            let _ = s.push(t0, seq, ());
            assert!(s.held() <= 32);
        }
        assert_eq!(s.held(), 31);
    }
}
