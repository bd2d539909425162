//! A timer queue that scales to many keyed deadlines (one per connection in the hub); the
//! design and costs are documented on [`TimerQueue`].

use core::cmp::{Ordering, Reverse};
use core::hash::Hash;
use std::collections::{BinaryHeap, HashMap};

use super::Instant;

/// Heaps smaller than this are never compacted: rebuilding a tiny heap costs more than
/// carrying its few stale entries.
const COMPACT_MIN: usize = 64;

/// One heap entry; ordered by `(at, generation)` only, so `K` needs no `Ord`.
#[derive(Clone, Copy, Debug)]
struct Entry<K> {
    at: Instant,
    generation: u64,
    key: K,
}

impl<K> PartialEq for Entry<K> {
    fn eq(&self, other: &Self) -> bool {
        self.at == other.at && self.generation == other.generation
    }
}

impl<K> Eq for Entry<K> {}

impl<K> PartialOrd for Entry<K> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<K> Ord for Entry<K> {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at, self.generation).cmp(&(other.at, other.generation))
    }
}

/// Keyed deadlines, at most one per key, earliest first: the timer queue of a hub with one
/// deadline per connection.
///
/// [`TimerTable`](super::TimerTable) is right for a machine with a handful of named timers;
/// a hub with 100,000 connections needs "the earliest of n deadlines" without an O(n) scan
/// on every `poll_timeout`.
///
/// # Design: binary heap with lazy deletion
///
/// Every [`TimerQueue::set`] pushes a `(deadline, generation, key)` entry on a min-heap and
/// records `key → (deadline, generation)` in a hash map. Re-arming or cancelling a key does
/// not search the heap: it only changes (or removes) the map entry, which turns the old heap
/// entry stale. Stale entries are discarded when they reach the top, and the top is kept live
/// after every mutation, so [`TimerQueue::next_deadline`] is an O(1) peek.
///
/// Memory stays bounded: when stale entries outnumber live ones two to one, the heap is
/// rebuilt from the live entries (O(n), amortized O(1) per operation that created the stale
/// entries). So the heap never holds more than about three entries per live key.
///
/// Costs: `set` and `cancel` O(log n) amortized; `next_deadline` O(1); each expired timer
/// popped by [`TimerQueue::pop_expired`] O(log n), so one `handle_timeout` that fires `k`
/// timers costs O(k · log n). Deadlines that are equal fire in the order they were set
/// (the generation breaks ties), which keeps simulations deterministic.
///
/// A hierarchical timer wheel would make `set` O(1) but rounds deadlines to its tick and
/// needs a cascade step; the heap keeps exact `Instant`s, which the rest of the crate relies
/// on ("never fire before the deadline"). Measured (`benches/timers.rs`): at 100k keys the
/// heap's pops are bound by memory latency, so firing 1% of the keys in one step costs a few
/// times more than one sequential pass over a `Vec`; the queue pays for itself in
/// `next_deadline` (O(1) against O(n), and a run loop asks on every turn) and in `set`.
///
/// ```
/// use tidewire::time::{Duration, Instant, TimerQueue};
///
/// let t0 = Instant::now();
/// let mut q = TimerQueue::new();
/// q.set("alice", t0 + Duration::from_secs(3));
/// q.set("bob", t0 + Duration::from_secs(1));
/// q.set("carol", t0 + Duration::from_secs(2));
/// q.set("bob", t0 + Duration::from_secs(5)); // re-arm: replaces bob's deadline
/// q.cancel("carol");
/// assert_eq!(q.next_deadline(), Some(t0 + Duration::from_secs(3)));
///
/// // A handle_timeout step: fire everything that is due, in deadline order.
/// let now = t0 + Duration::from_secs(10);
/// assert_eq!(q.pop_expired(now), Some(("alice", t0 + Duration::from_secs(3))));
/// assert_eq!(q.pop_expired(now), Some(("bob", t0 + Duration::from_secs(5))));
/// assert_eq!(q.pop_expired(now), None);
/// assert!(q.is_empty());
/// ```
///
/// - Commands: [`set`](Self::set), [`cancel`](Self::cancel), [`clear`](Self::clear).
/// - Getters: [`get`](Self::get), [`len`](Self::len), [`is_empty`](Self::is_empty).
/// - Outputs: [`next_deadline`](Self::next_deadline) (the owner's `poll_timeout`) and
///   [`pop_expired`](Self::pop_expired) (call in a loop from the owner's `handle_timeout`).
#[derive(Clone, Debug)]
pub struct TimerQueue<K: Copy + Eq + Hash> {
    heap: BinaryHeap<Reverse<Entry<K>>>,
    /// The live deadline and generation of every armed key.
    live: HashMap<K, (Instant, u64)>,
    next_generation: u64,
}

impl<K: Copy + Eq + Hash> Default for TimerQueue<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Copy + Eq + Hash> TimerQueue<K> {
    /// An empty queue.
    #[must_use]
    pub fn new() -> Self {
        Self { heap: BinaryHeap::new(), live: HashMap::new(), next_generation: 0 }
    }

    /// An empty queue with room for `n` keys before it reallocates.
    #[must_use]
    pub fn with_capacity(n: usize) -> Self {
        Self {
            heap: BinaryHeap::with_capacity(n),
            live: HashMap::with_capacity(n),
            next_generation: 0,
        }
    }

    /// Arms `key` for `at`, replacing its previous deadline if it had one.
    pub fn set(&mut self, key: K, at: Instant) {
        let generation = self.next_generation;
        self.next_generation = self.next_generation.wrapping_add(1);
        let old = self.live.insert(key, (at, generation));
        self.heap.push(Reverse(Entry { at, generation, key }));
        // The old heap entry (if any) is now stale: its generation no longer matches.
        if let Some((_, old_generation)) = old {
            self.discard_stale(old_generation);
        }
    }

    /// Disarms `key`; returns the deadline it had.
    pub fn cancel(&mut self, key: K) -> Option<Instant> {
        let (at, generation) = self.live.remove(&key)?;
        self.discard_stale(generation);
        Some(at)
    }

    /// Disarms every key.
    pub fn clear(&mut self) {
        self.heap.clear();
        self.live.clear();
    }

    /// When `key` fires, if armed.
    #[must_use]
    pub fn get(&self, key: K) -> Option<Instant> {
        self.live.get(&key).map(|&(at, _)| at)
    }

    /// How many keys are armed.
    #[must_use]
    pub fn len(&self) -> usize {
        self.live.len()
    }

    /// Whether no key is armed.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    /// The earliest deadline, for `poll_timeout`. O(1). Changes after `set`, `cancel`,
    /// `clear` and `pop_expired`.
    #[must_use]
    pub fn next_deadline(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse(e)| e.at)
    }

    /// Disarms and returns one key whose deadline is `<= now`, with that deadline, earliest
    /// first (ties in the order they were set); `None` when nothing is due. Call in a loop
    /// from `handle_timeout`.
    pub fn pop_expired(&mut self, now: Instant) -> Option<(K, Instant)> {
        let Reverse(top) = *self.heap.peek()?;
        if top.at > now {
            return None;
        }
        self.heap.pop();
        self.live.remove(&top.key);
        // The new top may be an entry that went stale while buried.
        if self.heap.len() > self.live.len() {
            self.drop_stale_top();
        }
        self.compact_if_sparse();
        Some((top.key, top.at))
    }

    fn is_live(&self, e: &Entry<K>) -> bool {
        self.live.get(&e.key).is_some_and(|&(_, g)| g == e.generation)
    }

    /// Discards the heap entry of `generation`, which just went stale, as far as the
    /// invariants need: the heap top is live, and stale entries are at most twice the live
    /// ones (beyond a small heap). Only a stale top costs hash lookups.
    fn discard_stale(&mut self, generation: u64) {
        if self.heap.peek().is_some_and(|Reverse(top)| top.generation == generation) {
            self.drop_stale_top();
        }
        self.compact_if_sparse();
    }

    /// Pops stale entries off the top until a live one (or nothing) is there.
    fn drop_stale_top(&mut self) {
        while let Some(Reverse(top)) = self.heap.peek() {
            if self.is_live(top) {
                break;
            }
            self.heap.pop();
        }
    }

    /// Rebuilds the heap from its live entries when stale ones are more than twice as many.
    fn compact_if_sparse(&mut self) {
        // Every live key has exactly one live heap entry; the rest are stale.
        let live = self.live.len();
        let stale = self.heap.len().saturating_sub(live);
        if self.heap.len() > COMPACT_MIN && stale > 2 * live {
            let live_map = &self.live;
            self.heap
                .retain(|Reverse(e)| live_map.get(&e.key).is_some_and(|&(_, g)| g == e.generation));
        }
    }

    /// How many entries the heap holds, live and stale (for tests of the memory bound).
    #[cfg(test)]
    fn heap_len(&self) -> usize {
        self.heap.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::Duration;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn pops_in_deadline_order_then_set_order() {
        let t0 = crate::time::test_epoch();
        let mut q = TimerQueue::new();
        q.set(1, t0 + ms(5));
        q.set(2, t0 + ms(1));
        q.set(3, t0 + ms(5));
        q.set(4, t0 + ms(3));
        let now = t0 + ms(5);
        let got: Vec<_> = core::iter::from_fn(|| q.pop_expired(now)).map(|(k, _)| k).collect();
        assert_eq!(got, [2, 4, 1, 3]);
        assert_eq!(q.next_deadline(), None);
    }

    #[test]
    fn never_pops_before_the_deadline() {
        let t0 = crate::time::test_epoch();
        let mut q = TimerQueue::new();
        q.set('a', t0 + ms(10));
        assert_eq!(q.pop_expired(t0 + ms(10) - Duration::from_nanos(1)), None);
        assert_eq!(q.pop_expired(t0 + ms(10)), Some(('a', t0 + ms(10))));
    }

    #[test]
    fn rearm_and_cancel_are_respected() {
        let t0 = crate::time::test_epoch();
        let mut q = TimerQueue::new();
        q.set(1, t0 + ms(1));
        q.set(2, t0 + ms(2));
        q.set(1, t0 + ms(9));
        assert_eq!(q.len(), 2);
        assert_eq!(q.next_deadline(), Some(t0 + ms(2)));
        assert_eq!(q.cancel(2), Some(t0 + ms(2)));
        assert_eq!(q.cancel(2), None);
        assert_eq!(q.next_deadline(), Some(t0 + ms(9)));
        assert_eq!(q.get(1), Some(t0 + ms(9)));
        assert_eq!(q.pop_expired(t0 + ms(100)), Some((1, t0 + ms(9))));
        assert!(q.is_empty());
        // Re-arming earlier than before also works.
        q.set(5, t0 + ms(50));
        q.set(5, t0 + ms(20));
        assert_eq!(q.pop_expired(t0 + ms(30)), Some((5, t0 + ms(20))));
        assert_eq!(q.pop_expired(t0 + ms(60)), None);
    }

    #[test]
    fn stale_entries_stay_bounded() {
        let t0 = crate::time::test_epoch();
        let mut q = TimerQueue::new();
        for k in 0..100u32 {
            q.set(k, t0 + ms(1000));
        }
        // Re-arm the same keys many times, always later, so stale entries never reach the top.
        for round in 0..1000u64 {
            for k in 0..100u32 {
                q.set(k, t0 + ms(2000 + round));
            }
            assert!(q.heap_len() <= 3 * q.len() + 1, "heap {} for {} keys", q.heap_len(), q.len());
        }
        // Cancel almost everything: the heap shrinks with it.
        for k in 1..100u32 {
            q.cancel(k);
        }
        assert!(q.heap_len() <= COMPACT_MIN + 1);
        assert_eq!(q.len(), 1);
        q.clear();
        assert_eq!(q.next_deadline(), None);
    }
}
