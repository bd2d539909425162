//! A fixed table of named deadlines, and the monotonic clamp.

use super::Instant;

/// Keeps time moving forward: feeds every `now` through [`Monotonic::advance`], which
/// returns `max(now, latest seen)`. Out-of-order timestamps never panic and never make a
/// machine go back in time.
#[derive(Clone, Copy, Debug)]
pub struct Monotonic {
    last: Instant,
}

impl Monotonic {
    /// Starts the clamp at `now`.
    #[must_use]
    pub fn new(now: Instant) -> Self {
        Self { last: now }
    }

    /// Returns `max(now, every earlier now)` and remembers it.
    pub fn advance(&mut self, now: Instant) -> Instant {
        if now > self.last {
            self.last = now;
        }
        self.last
    }

    /// The latest instant seen.
    #[must_use]
    pub fn now(&self) -> Instant {
        self.last
    }
}

/// A closed set of timer names, used as the index of a [`TimerTable`].
pub trait TimerKind: Copy + Eq + core::fmt::Debug + 'static {
    /// Every timer, in the order [`TimerTable::pop_expired`] fires simultaneous deadlines.
    const ALL: &'static [Self];
    /// This timer's index in [`Self::ALL`].
    fn index(self) -> usize;
}

/// One optional deadline per timer name `K`; `N` must equal `K::ALL.len()`.
///
/// `next()` is the machine's `poll_timeout`; `pop_expired(now)` drives its `handle_timeout`:
///
/// ```
/// use tidewire::time::{Duration, Instant, TimerKind, TimerTable};
/// #[derive(Clone, Copy, Debug, PartialEq, Eq)]
/// enum T { Ping, Close }
/// impl TimerKind for T {
///     const ALL: &'static [Self] = &[T::Ping, T::Close];
///     fn index(self) -> usize { self as usize }
/// }
/// let t0 = Instant::now();
/// let mut table = TimerTable::<T, 2>::new();
/// table.set(T::Close, t0 + Duration::from_secs(5));
/// table.set(T::Ping, t0 + Duration::from_secs(1));
/// assert_eq!(table.next(), Some((T::Ping, t0 + Duration::from_secs(1))));
/// assert_eq!(table.pop_expired(t0 + Duration::from_secs(2)), Some(T::Ping));
/// assert_eq!(table.pop_expired(t0 + Duration::from_secs(2)), None);
/// ```
#[derive(Clone, Debug)]
pub struct TimerTable<K: TimerKind, const N: usize> {
    slots: [Option<Instant>; N],
    _kind: core::marker::PhantomData<K>,
}

impl<K: TimerKind, const N: usize> Default for TimerTable<K, N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: TimerKind, const N: usize> TimerTable<K, N> {
    /// An empty table.
    #[must_use]
    pub fn new() -> Self {
        debug_assert_eq!(K::ALL.len(), N, "TimerTable size must match TimerKind::ALL");
        Self { slots: [None; N], _kind: core::marker::PhantomData }
    }

    /// Arms (or re-arms) `kind` for `at`.
    pub fn set(&mut self, kind: K, at: Instant) {
        self.slots[kind.index()] = Some(at);
    }

    /// Disarms `kind`.
    pub fn clear(&mut self, kind: K) {
        self.slots[kind.index()] = None;
    }

    /// Disarms every timer.
    pub fn clear_all(&mut self) {
        self.slots = [None; N];
    }

    /// When `kind` fires, if armed.
    #[must_use]
    pub fn get(&self, kind: K) -> Option<Instant> {
        self.slots[kind.index()]
    }

    /// The earliest armed timer and its deadline (the reason a `poll_timeout` was returned).
    #[must_use]
    pub fn next(&self) -> Option<(K, Instant)> {
        let mut best: Option<(K, Instant)> = None;
        for &k in K::ALL {
            if let Some(at) = self.slots[k.index()]
                && best.is_none_or(|(_, b)| at < b)
            {
                best = Some((k, at));
            }
        }
        best
    }

    /// The earliest deadline, for `poll_timeout`.
    #[must_use]
    pub fn next_deadline(&self) -> Option<Instant> {
        self.next().map(|(_, at)| at)
    }

    /// Disarms and returns one timer whose deadline is `<= now`, earliest first; `None` when
    /// no deadline has passed. Call in a loop from `handle_timeout`.
    pub fn pop_expired(&mut self, now: Instant) -> Option<K> {
        let (k, at) = self.next()?;
        if at <= now {
            self.clear(k);
            Some(k)
        } else {
            None
        }
    }
}
