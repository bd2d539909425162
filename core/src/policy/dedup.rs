//! Duplicate suppression over a bounded sliding window of message ids.
//!
//! Retransmissions, resumes and at-least-once publishers deliver some messages twice. An
//! unbounded "seen" set would grow forever and a timer per id would flood the timer queue, so
//! this module keeps a fixed amount of state per publisher and forgets the oldest ids:
//!
//! - [`DedupWindow`], for increasing `u64` sequence ids (one per publisher or stream): a
//!   high-water mark plus a bitmap of the last `W` ids, stored as a ring of `u64` words (the
//!   anti-replay window of IPsec, RFC 4303 §3.4.3). O(1) per id (a forward jump clears at most
//!   `W / 64` words), `W / 8` bytes of memory. Ids more than `W` below the highest one seen
//!   are [`Verdict::TooOld`]: the window can no longer tell.
//! - [`RecentIds`], for opaque ids with no order (client message ids are strings): the last
//!   `N` ids in arrival order plus a hash set of them. O(1) amortized per id; the oldest id is
//!   forgotten when the `N + 1`-th arrives, and a forgotten id counts as fresh again.
//!
//! ```
//! use tidewire::policy::{DedupWindow, RecentIds, Verdict};
//!
//! let mut w = DedupWindow::new(128);
//! assert_eq!(w.check_and_insert(1000), Verdict::Fresh);
//! assert_eq!(w.check_and_insert(998), Verdict::Fresh); // late but inside the window
//! assert_eq!(w.check_and_insert(1000), Verdict::Duplicate);
//! assert_eq!(w.check_and_insert(800), Verdict::TooOld);
//!
//! let mut ids = RecentIds::new(2);
//! assert_eq!(ids.check_and_insert("m-1".to_string()), Verdict::Fresh);
//! assert_eq!(ids.check_and_insert("m-1".to_string()), Verdict::Duplicate);
//! ids.check_and_insert("m-2".to_string());
//! ids.check_and_insert("m-3".to_string()); // forgets m-1
//! assert!(!ids.contains("m-1"));
//! ```

use core::borrow::Borrow;
use core::hash::{BuildHasher, Hash};
use std::collections::hash_map::RandomState;
use std::collections::{HashSet, VecDeque};

/// Whether an id was seen before.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Verdict {
    /// Not seen within the window: deliver it (it is now recorded).
    Fresh,
    /// Seen within the window: drop it.
    Duplicate,
    /// Too far below the newest id for the window to know ([`DedupWindow`] only). The usual
    /// choice is to drop it: it is older than anything the window still tracks.
    TooOld,
}

/// A high-water mark and a bitmap of the last `W` sequence ids. See the [module docs](self).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DedupWindow {
    /// Bit `id % W` is set when `id` (one of the last `W` ids up to `high`) was seen.
    bits: Box<[u64]>,
    /// The highest id seen.
    high: Option<u64>,
}

impl DedupWindow {
    /// The largest window, in ids (16 Mi ids, 2 MiB of bitmap).
    pub const MAX_WINDOW: usize = 1 << 24;

    /// A window that remembers the last `window` ids below and including the highest one,
    /// rounded up to a multiple of 64 and clamped to `64..=MAX_WINDOW`.
    #[must_use]
    pub fn new(window: usize) -> Self {
        let words = window.clamp(64, Self::MAX_WINDOW).div_ceil(64);
        Self { bits: vec![0; words].into_boxed_slice(), high: None }
    }

    /// The window size in ids (a multiple of 64).
    #[must_use]
    pub fn window(&self) -> u64 {
        self.bits.len() as u64 * 64
    }

    /// The highest id seen so far.
    #[must_use]
    pub fn high_water(&self) -> Option<u64> {
        self.high
    }

    /// Forgets every id.
    pub fn reset(&mut self) {
        self.bits.fill(0);
        self.high = None;
    }

    fn position(&self, id: u64) -> (usize, u32) {
        let pos = id % self.window();
        // pos < window <= MAX_WINDOW, so both fit.
        let word = usize::try_from(pos / 64).unwrap_or(0);
        let bit = u32::try_from(pos % 64).unwrap_or(0);
        (word, bit)
    }

    /// Clears the bits of the `len` ids from `from` on (`len <= window`).
    fn clear_range(&mut self, mut from: u64, mut len: u64) {
        while len > 0 {
            let (word, bit) = self.position(from);
            let n = (64 - u64::from(bit)).min(len);
            let mask = if n == 64 { u64::MAX } else { ((1u64 << n) - 1) << bit };
            self.bits[word] &= !mask;
            from = from.wrapping_add(n);
            len -= n;
        }
    }

    /// Records `id` and says whether it was seen before.
    pub fn check_and_insert(&mut self, id: u64) -> Verdict {
        let w = self.window();
        match self.high {
            Some(high) if id <= high => {
                if high - id >= w {
                    return Verdict::TooOld;
                }
            }
            Some(high) => {
                // Moving forward: the ids that slide into the window start unseen.
                self.clear_range(high + 1, (id - high).min(w));
                self.high = Some(id);
            }
            None => {
                self.high = Some(id);
            }
        }
        let (word, bit) = self.position(id);
        let mask = 1u64 << bit;
        if self.bits[word] & mask != 0 {
            Verdict::Duplicate
        } else {
            self.bits[word] |= mask;
            Verdict::Fresh
        }
    }
}

/// The last `N` opaque ids, for duplicate suppression without an order on ids. See the
/// [module docs](self).
///
/// Works with any `K: Hash + Eq + Clone`; with `Bytes` or `Arc<str>` keys the clone kept for
/// the ring is a reference count, not a copy. The hash set is sized for `N` up front and never
/// grows past it. The default hasher is the standard library's randomly keyed SipHash, which
/// resists hash flooding by peers choosing ids.
#[derive(Clone, Debug)]
pub struct RecentIds<K, S = RandomState> {
    order: VecDeque<K>,
    set: HashSet<K, S>,
    capacity: usize,
}

impl<K: Hash + Eq + Clone> RecentIds<K> {
    /// The largest capacity, in ids.
    pub const MAX_CAPACITY: usize = 1 << 24;

    /// Remembers the last `capacity` ids (clamped to `1..=MAX_CAPACITY`).
    #[must_use]
    pub fn new(capacity: usize) -> Self {
        Self::with_hasher(capacity, RandomState::new())
    }
}

impl<K: Hash + Eq + Clone, S: BuildHasher> RecentIds<K, S> {
    /// Like [`RecentIds::new`], hashing with `hasher`.
    #[must_use]
    pub fn with_hasher(capacity: usize, hasher: S) -> Self {
        let capacity = capacity.clamp(1, RecentIds::<K>::MAX_CAPACITY);
        Self {
            order: VecDeque::with_capacity(capacity),
            set: HashSet::with_capacity_and_hasher(capacity, hasher),
            capacity,
        }
    }

    /// How many ids are remembered at most.
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// How many ids are remembered now.
    #[must_use]
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether no id is remembered.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Whether `id` is remembered, without recording it.
    #[must_use]
    pub fn contains<Q>(&self, id: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.set.contains(id)
    }

    /// Records `id` (forgetting the oldest id when full) and says whether it was remembered:
    /// [`Verdict::Fresh`] or [`Verdict::Duplicate`], never `TooOld`. A duplicate does not
    /// refresh its position: ids are forgotten in first-seen order.
    pub fn check_and_insert(&mut self, id: K) -> Verdict {
        if self.set.contains(&id) {
            return Verdict::Duplicate;
        }
        if self.order.len() >= self.capacity
            && let Some(oldest) = self.order.pop_front()
        {
            self.set.remove(&oldest);
        }
        self.set.insert(id.clone());
        self.order.push_back(id);
        Verdict::Fresh
    }

    /// Forgets every id.
    pub fn clear(&mut self) {
        self.order.clear();
        self.set.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn window_in_order_and_late() {
        let mut w = DedupWindow::new(64);
        assert_eq!(w.window(), 64);
        for id in 0..1000 {
            assert_eq!(w.check_and_insert(id), Verdict::Fresh);
        }
        assert_eq!(w.check_and_insert(999), Verdict::Duplicate);
        assert_eq!(w.check_and_insert(936), Verdict::Duplicate); // 999 - 63
        assert_eq!(w.check_and_insert(935), Verdict::TooOld);
        assert_eq!(w.high_water(), Some(999));
    }

    #[test]
    fn window_holes_are_fresh_once() {
        let mut w = DedupWindow::new(128);
        for id in (0..100).step_by(2) {
            assert_eq!(w.check_and_insert(id), Verdict::Fresh);
        }
        for id in (1..100).step_by(2) {
            assert_eq!(w.check_and_insert(id), Verdict::Fresh);
            assert_eq!(w.check_and_insert(id), Verdict::Duplicate);
        }
    }

    #[test]
    fn window_jumps_clear_what_slides_in() {
        let mut w = DedupWindow::new(256);
        for id in 0..256 {
            w.check_and_insert(id);
        }
        // A jump shorter than the window: ids 256..300 were never seen (their bits held
        // ids 0..44).
        assert_eq!(w.check_and_insert(300), Verdict::Fresh);
        for id in 256..300 {
            assert_eq!(w.check_and_insert(id), Verdict::Fresh, "{id}");
        }
        assert_eq!(w.check_and_insert(100), Verdict::Duplicate);
        // A jump far beyond the window clears everything.
        assert_eq!(w.check_and_insert(10_000), Verdict::Fresh);
        assert_eq!(w.check_and_insert(9_800), Verdict::Fresh);
        assert_eq!(w.check_and_insert(300), Verdict::TooOld);
        assert_eq!(w.check_and_insert(u64::MAX), Verdict::Fresh);
        assert_eq!(w.check_and_insert(u64::MAX - 1), Verdict::Fresh);
        assert_eq!(w.check_and_insert(u64::MAX), Verdict::Duplicate);
        assert_eq!(w.check_and_insert(0), Verdict::TooOld);
        w.reset();
        assert_eq!(w.check_and_insert(0), Verdict::Fresh);
    }

    #[test]
    fn window_sizes_round_and_clamp() {
        assert_eq!(DedupWindow::new(0).window(), 64);
        assert_eq!(DedupWindow::new(65).window(), 128);
        assert_eq!(DedupWindow::new(usize::MAX).window(), DedupWindow::MAX_WINDOW as u64);
    }

    #[test]
    fn recent_ids_forget_the_oldest() {
        let mut r = RecentIds::new(3);
        for id in [1u64, 2, 3] {
            assert_eq!(r.check_and_insert(id), Verdict::Fresh);
        }
        assert_eq!(r.check_and_insert(1), Verdict::Duplicate);
        assert_eq!(r.check_and_insert(4), Verdict::Fresh); // forgets 1
        assert_eq!(r.len(), 3);
        assert!(!r.contains(&1));
        assert_eq!(r.check_and_insert(2), Verdict::Duplicate);
        assert_eq!(r.check_and_insert(1), Verdict::Fresh); // forgets 2
        assert!(!r.contains(&2));
        r.clear();
        assert!(r.is_empty());
    }

    #[test]
    fn recent_ids_with_bytes_and_strings() {
        let mut r: RecentIds<Bytes> = RecentIds::new(100);
        assert_eq!(r.check_and_insert(Bytes::from_static(b"abc")), Verdict::Fresh);
        assert_eq!(r.check_and_insert(Bytes::copy_from_slice(b"abc")), Verdict::Duplicate);
        assert!(r.contains(&b"abc"[..]));
        let mut s: RecentIds<String> = RecentIds::new(0);
        assert_eq!(s.capacity(), 1);
        assert_eq!(s.check_and_insert("a".into()), Verdict::Fresh);
        assert_eq!(s.check_and_insert("b".into()), Verdict::Fresh);
        assert!(s.contains("b") && !s.contains("a"));
    }
}
