//! Reconnect backoff: how long a client waits before its next connection attempt.
//!
//! The delay for attempt `n` (counting from 0 since the last reset) starts from the capped
//! exponential `d = min(cap, base · 2ⁿ)`, computed with saturating integer `Duration` math,
//! and is then spread by a [`Jitter`] mode so that clients that lost the same server at the
//! same instant do not all come back at the same instant (the thundering herd):
//!
//! | mode | delay |
//! |------|-------|
//! | [`Jitter::Full`] (default) | uniform in `[0, d]` |
//! | [`Jitter::Equal`] | `d/2` + uniform in `[0, d/2]` |
//! | [`Jitter::Decorrelated`] | `min(cap, uniform in [base, 3 · previous])`, previous starting at `base` |
//! | [`Jitter::None`] | `d` |
//!
//! Randomness comes from a seeded ChaCha generator ([`Rng`]), never a global one.
//!
//! **Reset only after health.** A successful connect does not reset the attempt counter:
//! a server that accepts and then drops every connection at once would otherwise be hammered
//! at `base` forever. The owner reports [`Backoff::on_connected`] and
//! [`Backoff::on_disconnected`]; the counter resets only when the connection stayed up for at
//! least [`BackoffConfig::healthy_after`].
//!
//! **Giving up.** [`Backoff::next_delay`] returns `None` after
//! [`max_attempts`](BackoffConfig::max_attempts) delays, or when the next attempt would start
//! more than [`max_elapsed`](BackoffConfig::max_elapsed) after the first failure since the last
//! reset. Once it returned `None` it keeps returning `None` until [`Backoff::reset`] (or a
//! healthy connection).
//!
//! **Server hints** ([`RetryHint`]: SSE `retry:`, HTTP `Retry-After`, a server that says it
//! restarts or is overloaded, e.g. WebSocket close 1012 and 1013) raise the floor of the *next* delay only: that delay is `max(floor, jittered)`. A
//! hint may exceed `cap`, but never [`max_hint`](BackoffConfig::max_hint), so a hostile or
//! broken server cannot park its clients forever.
//!
//! ```
//! use tidewire::policy::{Backoff, BackoffConfig, Jitter, RetryHint};
//! use tidewire::time::{Duration, Instant};
//!
//! let t0 = Instant::now();
//! let cfg = BackoffConfig { jitter: Jitter::None, ..BackoffConfig::default() };
//! let mut b = Backoff::new(cfg, 42);
//! assert_eq!(b.next_delay(t0), Some(Duration::from_secs(1)));
//! assert_eq!(b.next_delay(t0), Some(Duration::from_secs(2)));
//! assert_eq!(b.attempt(), 2);
//!
//! // Connected, but dropped after 3 s: not healthy (10 s by default), no reset.
//! b.on_connected(t0);
//! b.on_disconnected(t0 + Duration::from_secs(3));
//! assert_eq!(b.next_delay(t0), Some(Duration::from_secs(4)));
//!
//! // The server closes with 1013 "try again later": the next delay is at least 5 s.
//! b.on_hint(RetryHint::RetryLater);
//! assert_eq!(b.next_delay(t0), Some(Duration::from_secs(8)));
//! b.on_hint(RetryHint::RetryAfter(Duration::from_secs(60)));
//! assert_eq!(b.next_delay(t0), Some(Duration::from_secs(60)));
//!
//! // A connection that stays up for 10 s resets the counter.
//! let t1 = t0 + Duration::from_secs(100);
//! b.on_connected(t1);
//! b.on_disconnected(t1 + Duration::from_secs(10));
//! assert_eq!(b.attempt(), 0);
//! assert_eq!(b.next_deadline(t1 + Duration::from_secs(10)), Some(t1 + Duration::from_secs(11)));
//! ```

use crate::rng::Rng;
use crate::time::{Duration, Instant};

/// How a backoff delay is spread around the capped exponential `d = min(cap, base · 2ⁿ)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Jitter {
    /// Uniform in `[0, d]`: the widest spread, so the lowest peak load on a recovering server.
    #[default]
    Full,
    /// `d/2` plus uniform in `[0, d/2]`: never retries much sooner than `d/2`.
    Equal,
    /// `min(cap, uniform in [base, 3 · previous delay])`: each delay is drawn from the previous
    /// one rather than from the attempt number.
    Decorrelated,
    /// Exactly `d`. Every client that failed together retries together; for tests.
    None,
}

/// Backoff settings. Defaults: base 1 s, cap 30 s, full jitter, healthy after 10 s, no attempt
/// or time limit, a 5 s floor after close 1012/1013, hints capped at 5 min.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackoffConfig {
    /// The exponential's first value (attempt 0).
    pub base: Duration,
    /// The exponential's ceiling; no jittered delay exceeds it (only a server hint may).
    pub cap: Duration,
    /// How delays are spread.
    pub jitter: Jitter,
    /// A connection that stayed up at least this long resets the attempt counter when it
    /// ends; a shorter one does not.
    pub healthy_after: Duration,
    /// Give up after this many delays since the last reset; `None` never gives up on count.
    pub max_attempts: Option<u32>,
    /// Give up when the next attempt would start later than this after the first failure
    /// since the last reset; `None` never gives up on time.
    pub max_elapsed: Option<Duration>,
    /// The floor a close code 1012 (service restart) or 1013 (try again later) sets.
    pub restart_floor: Duration,
    /// The largest floor any server hint may set.
    pub max_hint: Duration,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(30),
            jitter: Jitter::Full,
            healthy_after: Duration::from_secs(10),
            max_attempts: None,
            max_elapsed: None,
            restart_floor: Duration::from_secs(5),
            max_hint: Duration::from_secs(5 * 60),
        }
    }
}

/// A server's request to wait before reconnecting. Raises the floor of the next delay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RetryHint {
    /// The SSE `retry:` field (WHATWG HTML §9.2.6, the reconnection time).
    SseRetry(Duration),
    /// An HTTP `Retry-After` header (RFC 9110 §10.2.3), already turned into a delay by
    /// [`parse_retry_after`].
    RetryAfter(Duration),
    /// The server is restarting or overloaded and asked for a later retry, without saying
    /// when: raises the floor to [`BackoffConfig::restart_floor`]. The WebSocket close codes
    /// 1012 (service restart) and 1013 (try again later) mean this; the transport maps
    /// them (the backoff knows no close codes).
    RetryLater,
}

/// The backoff machine. See the [module docs](self).
///
/// - Commands: [`next_delay`](Self::next_delay) / [`next_deadline`](Self::next_deadline)
///   (each counts an attempt), [`reset`](Self::reset).
/// - Inputs: [`on_connected`](Self::on_connected), [`on_disconnected`](Self::on_disconnected),
///   [`on_hint`](Self::on_hint).
/// - Getters: [`attempt`](Self::attempt), [`is_exhausted`](Self::is_exhausted),
///   [`pending_floor`](Self::pending_floor), [`config`](Self::config).
#[derive(Clone, Debug)]
pub struct Backoff {
    cfg: BackoffConfig,
    rng: Rng,
    attempt: u32,
    /// The previous jittered delay (before any hint floor), for [`Jitter::Decorrelated`].
    prev: Duration,
    first_failure: Option<Instant>,
    connected_since: Option<Instant>,
    floor: Option<Duration>,
    exhausted: bool,
    /// The latest `now` seen, to keep time moving forward.
    last_now: Option<Instant>,
}

impl Backoff {
    /// A backoff whose jitter is drawn from a generator seeded with `seed`.
    #[must_use]
    pub fn new(cfg: BackoffConfig, seed: u64) -> Self {
        Self::with_rng(cfg, Rng::from_u64(seed))
    }

    /// A backoff whose jitter is drawn from `rng` (for example a [`Rng::fork`] of the
    /// adapter's generator).
    #[must_use]
    pub fn with_rng(cfg: BackoffConfig, rng: Rng) -> Self {
        Self {
            cfg,
            rng,
            attempt: 0,
            prev: cfg.base,
            first_failure: None,
            connected_since: None,
            floor: None,
            exhausted: false,
            last_now: None,
        }
    }

    /// The settings.
    #[must_use]
    pub fn config(&self) -> &BackoffConfig {
        &self.cfg
    }

    /// How many delays were handed out since the last reset.
    #[must_use]
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Whether [`next_delay`](Self::next_delay) gave up; stays true until a reset.
    #[must_use]
    pub fn is_exhausted(&self) -> bool {
        self.exhausted
    }

    /// The floor a server hint set for the next delay, if any.
    #[must_use]
    pub fn pending_floor(&self) -> Option<Duration> {
        self.floor
    }

    fn advance(&mut self, now: Instant) -> Instant {
        let now = self.last_now.map_or(now, |last| last.max(now));
        self.last_now = Some(now);
        now
    }

    /// `min(cap, base · 2ⁿ)` for attempt `n`, saturating.
    fn exponential(&self, n: u32) -> Duration {
        if n >= 32 {
            return self.cfg.cap;
        }
        self.cfg.base.saturating_mul(1 << n).min(self.cfg.cap)
    }

    fn jittered(&mut self) -> Duration {
        let d = self.exponential(self.attempt);
        match self.cfg.jitter {
            Jitter::Full => self.rng.duration_up_to(d),
            Jitter::Equal => {
                let half = d / 2;
                half + self.rng.duration_up_to(d - half)
            }
            Jitter::Decorrelated => {
                let hi = self.prev.saturating_mul(3);
                let v = self.rng.duration_between(self.cfg.base, hi).min(self.cfg.cap);
                self.prev = v;
                v
            }
            Jitter::None => d,
        }
    }

    /// The delay before the next connection attempt, counting that attempt; `None` means give
    /// up (see the [module docs](self)).
    ///
    /// The delay is the jittered capped exponential, raised to the floor of a pending server
    /// hint (which it consumes). Without a hint it never exceeds `cap`; with one it never
    /// exceeds `max(cap, max_hint)`. The first call after a reset marks `now` as the first
    /// failure for [`BackoffConfig::max_elapsed`].
    pub fn next_delay(&mut self, now: Instant) -> Option<Duration> {
        let now = self.advance(now);
        if self.exhausted {
            return None;
        }
        if self.cfg.max_attempts.is_some_and(|max| self.attempt >= max) {
            self.exhausted = true;
            return None;
        }
        let first = *self.first_failure.get_or_insert(now);
        let jittered = self.jittered();
        let delay = self.floor.take().map_or(jittered, |floor| jittered.max(floor));
        if let Some(max) = self.cfg.max_elapsed
            && now.saturating_duration_since(first).saturating_add(delay) > max
        {
            self.exhausted = true;
            return None;
        }
        self.attempt = self.attempt.saturating_add(1);
        Some(delay)
    }

    /// [`next_delay`](Self::next_delay) as an instant: when to attempt the next connection.
    /// `None` means give up (or, with absurd settings, that `now + delay` is not
    /// representable).
    pub fn next_deadline(&mut self, now: Instant) -> Option<Instant> {
        let now = self.advance(now);
        let delay = self.next_delay(now)?;
        now.checked_add(delay)
    }

    /// A connection attempt succeeded: starts the healthy timer. The attempt counter is left
    /// alone until [`on_disconnected`](Self::on_disconnected) shows how long it lasted.
    pub fn on_connected(&mut self, now: Instant) {
        let now = self.advance(now);
        self.connected_since = Some(now);
    }

    /// The connection ended. If it was up for at least `healthy_after`, the backoff resets
    /// (see [`reset`](Self::reset)); otherwise the attempt counter keeps growing. Without a
    /// preceding [`on_connected`](Self::on_connected), nothing happens.
    pub fn on_disconnected(&mut self, now: Instant) {
        let now = self.advance(now);
        if let Some(since) = self.connected_since.take()
            && now.saturating_duration_since(since) >= self.cfg.healthy_after
        {
            self.reset();
        }
    }

    /// A server asked to wait: raises the floor of the next delay to the hint (at most
    /// `max_hint`). Several hints before that delay keep the largest.
    pub fn on_hint(&mut self, hint: RetryHint) {
        let f = match hint {
            RetryHint::SseRetry(d) | RetryHint::RetryAfter(d) => d,
            RetryHint::RetryLater => self.cfg.restart_floor,
        };
        let f = f.min(self.cfg.max_hint);
        self.floor = Some(self.floor.map_or(f, |g| g.max(f)));
    }

    /// Starts over: attempt 0, no first failure, not exhausted. A pending hint floor is kept
    /// (it usually arrived with the disconnect that follows a healthy connection).
    pub fn reset(&mut self) {
        self.attempt = 0;
        self.prev = self.cfg.base;
        self.first_failure = None;
        self.exhausted = false;
    }
}

/// Parses an HTTP `Retry-After` value (RFC 9110 §10.2.3) into a delay.
///
/// Both forms are accepted: delta-seconds (`120`; huge values saturate) and an IMF-fixdate
/// (`Sun, 06 Nov 1994 08:49:37 GMT`), for which the caller supplies the current Unix time
/// because the core has no clock. A date in the past gives a zero delay. Surrounding spaces
/// and tabs are ignored. The obsolete RFC 850 and asctime date forms, and anything else,
/// give `None`. Feed the result to [`Backoff::on_hint`] as [`RetryHint::RetryAfter`].
///
/// ```
/// use tidewire::policy::parse_retry_after;
/// use tidewire::time::Duration;
///
/// assert_eq!(parse_retry_after("120", 0), Some(Duration::from_secs(120)));
/// let now = 784_111_777 - 30; // 30 s before the date below
/// assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now), Some(Duration::from_secs(30)));
/// assert_eq!(parse_retry_after("soon", now), None);
/// ```
#[must_use]
pub fn parse_retry_after(value: &str, now_unix_secs: u64) -> Option<Duration> {
    let v = value.trim_matches([' ', '\t']);
    if v.is_empty() {
        return None;
    }
    if v.bytes().all(|b| b.is_ascii_digit()) {
        let secs = v
            .bytes()
            .fold(0u64, |acc, b| acc.saturating_mul(10).saturating_add(u64::from(b - b'0')));
        return Some(Duration::from_secs(secs));
    }
    let at = parse_imf_fixdate(v.as_bytes())?;
    Some(Duration::from_secs(at.saturating_sub(now_unix_secs)))
}

const DAY_NAMES: [&[u8; 3]; 7] = [b"Mon", b"Tue", b"Wed", b"Thu", b"Fri", b"Sat", b"Sun"];
const MONTH_NAMES: [&[u8; 3]; 12] = [
    b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
];

/// Decimal digits to a number; `None` unless every byte is a digit.
fn digits(b: &[u8]) -> Option<u64> {
    b.iter().try_fold(0u64, |acc, &c| {
        c.is_ascii_digit().then(|| acc.saturating_mul(10).saturating_add(u64::from(c - b'0')))
    })
}

fn is_leap(year: u64) -> bool {
    year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400))
}

/// Leap years in `1..=year`.
fn leaps_through(year: u64) -> u64 {
    year / 4 - year / 100 + year / 400
}

/// `Sun, 06 Nov 1994 08:49:37 GMT` → seconds since the Unix epoch (0 for earlier dates).
/// The day name must be a valid one but is not checked against the date.
fn parse_imf_fixdate(b: &[u8]) -> Option<u64> {
    let [
        d0,
        d1,
        d2,
        b',',
        b' ',
        e0,
        e1,
        b' ',
        m0,
        m1,
        m2,
        b' ',
        y0,
        y1,
        y2,
        y3,
        b' ',
        h0,
        h1,
        b':',
        n0,
        n1,
        b':',
        s0,
        s1,
        b' ',
        b'G',
        b'M',
        b'T',
    ] = b
    else {
        return None;
    };
    if !DAY_NAMES.contains(&&[*d0, *d1, *d2]) {
        return None;
    }
    let day = digits(&[*e0, *e1])?;
    let month = MONTH_NAMES.iter().position(|m| **m == [*m0, *m1, *m2])?;
    let year = digits(&[*y0, *y1, *y2, *y3])?;
    let hour = digits(&[*h0, *h1])?;
    let minute = digits(&[*n0, *n1])?;
    let second = digits(&[*s0, *s1])?;
    const CUMULATIVE: [u64; 12] = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    const LENGTHS: [u64; 12] = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    let leap_day = u64::from(month == 1 && is_leap(year));
    if day == 0 || day > LENGTHS[month] + leap_day || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    if year < 1970 {
        return Some(0);
    }
    let after_feb = u64::from(month > 1 && is_leap(year));
    let days = 365 * (year - 1970) + leaps_through(year - 1) - leaps_through(1969)
        + CUMULATIVE[month]
        + after_feb
        + (day - 1);
    Some(days * 86_400 + hour * 3600 + minute * 60 + second)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn cfg(jitter: Jitter) -> BackoffConfig {
        BackoffConfig { jitter, ..BackoffConfig::default() }
    }

    #[test]
    fn no_jitter_doubles_up_to_the_cap() {
        let t0 = crate::time::test_epoch();
        let mut b = Backoff::new(cfg(Jitter::None), 1);
        let got: Vec<u64> = (0..40).map(|_| b.next_delay(t0).unwrap().as_secs()).collect();
        assert_eq!(&got[..7], &[1, 2, 4, 8, 16, 30, 30]);
        assert!(got[7..].iter().all(|&s| s == 30));
        assert_eq!(b.attempt(), 40);
    }

    #[test]
    fn jittered_delays_stay_in_their_bounds() {
        let t0 = crate::time::test_epoch();
        for jitter in [Jitter::Full, Jitter::Equal, Jitter::Decorrelated] {
            for seed in 0..50 {
                let c = cfg(jitter);
                let mut b = Backoff::new(c, seed);
                let mut prev = c.base;
                for n in 0..20u32 {
                    let d = b.next_delay(t0).unwrap();
                    let exp = c.base.saturating_mul(1 << n).min(c.cap);
                    assert!(d <= c.cap, "{jitter:?} {d:?}");
                    match jitter {
                        Jitter::Full => assert!(d <= exp),
                        Jitter::Equal => assert!(d >= exp / 2 && d <= exp),
                        _ => {
                            assert!(d >= c.base.min(c.cap) && d <= (prev * 3).min(c.cap));
                            prev = d;
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn same_seed_same_delays() {
        let t0 = crate::time::test_epoch();
        let mut a = Backoff::new(BackoffConfig::default(), 9);
        let mut b = Backoff::new(BackoffConfig::default(), 9);
        let mut c = Backoff::new(BackoffConfig::default(), 10);
        let da: Vec<_> = (0..10).map(|_| a.next_delay(t0)).collect();
        let db: Vec<_> = (0..10).map(|_| b.next_delay(t0)).collect();
        let dc: Vec<_> = (0..10).map(|_| c.next_delay(t0)).collect();
        assert_eq!(da, db);
        assert_ne!(da, dc);
    }

    #[test]
    fn healthy_connections_reset_short_ones_do_not() {
        let t0 = crate::time::test_epoch();
        let mut b = Backoff::new(cfg(Jitter::None), 1);
        b.next_delay(t0);
        b.next_delay(t0);
        b.on_connected(t0 + secs(3));
        b.on_disconnected(t0 + secs(13) - Duration::from_nanos(1));
        assert_eq!(b.attempt(), 2);
        assert_eq!(b.next_delay(t0 + secs(13)), Some(secs(4)));
        b.on_connected(t0 + secs(20));
        b.on_disconnected(t0 + secs(30));
        assert_eq!(b.attempt(), 0);
        assert_eq!(b.next_delay(t0 + secs(30)), Some(secs(1)));
        // A disconnect without a connect, or a second disconnect, changes nothing.
        b.on_disconnected(t0 + secs(100));
        assert_eq!(b.attempt(), 1);
    }

    #[test]
    fn max_attempts_gives_up_and_stays_given_up() {
        let t0 = crate::time::test_epoch();
        let mut b = Backoff::new(BackoffConfig { max_attempts: Some(3), ..cfg(Jitter::None) }, 1);
        assert!(b.next_delay(t0).is_some());
        assert!(b.next_delay(t0).is_some());
        assert!(b.next_delay(t0).is_some());
        assert_eq!(b.next_delay(t0), None);
        assert!(b.is_exhausted());
        assert_eq!(b.next_deadline(t0), None);
        b.reset();
        assert_eq!(b.next_delay(t0), Some(secs(1)));
    }

    #[test]
    fn max_elapsed_counts_from_the_first_failure() {
        let t0 = crate::time::test_epoch();
        let c = BackoffConfig { max_elapsed: Some(secs(10)), ..cfg(Jitter::None) };
        let mut b = Backoff::new(c, 1);
        assert_eq!(b.next_delay(t0 + secs(100)), Some(secs(1))); // first failure at 100 s
        assert_eq!(b.next_delay(t0 + secs(101)), Some(secs(2)));
        assert_eq!(b.next_delay(t0 + secs(103)), Some(secs(4))); // attempt at 107 s
        assert_eq!(b.next_delay(t0 + secs(107)), None); // would attempt at 115 s > 110 s
        assert!(b.is_exhausted());
        // A healthy connection starts a new budget.
        b.on_connected(t0 + secs(200));
        b.on_disconnected(t0 + secs(300));
        assert_eq!(b.next_delay(t0 + secs(300)), Some(secs(1)));
    }

    #[test]
    fn hints_raise_only_the_next_delay_and_are_bounded() {
        let t0 = crate::time::test_epoch();
        let c = BackoffConfig { max_hint: secs(60), ..cfg(Jitter::None) };
        let mut b = Backoff::new(c, 1);
        b.on_hint(RetryHint::SseRetry(secs(3)));
        assert_eq!(b.pending_floor(), Some(secs(3)));
        assert_eq!(b.next_delay(t0), Some(secs(3)));
        assert_eq!(b.next_delay(t0), Some(secs(2)));
        // Lower than the jittered delay: no effect.
        b.on_hint(RetryHint::RetryAfter(Duration::from_millis(10)));
        assert_eq!(b.next_delay(t0), Some(secs(4)));
        // Above the cap is allowed, up to max_hint.
        b.on_hint(RetryHint::RetryAfter(secs(3600)));
        assert_eq!(b.next_delay(t0), Some(secs(60)));
        // Several hints: the largest wins.
        b.on_hint(RetryHint::RetryLater);
        b.on_hint(RetryHint::SseRetry(secs(2)));
        assert_eq!(b.pending_floor(), Some(secs(5)));
        // A fresh backoff has no floor; "retry later" sets `restart_floor`.
        let mut b = Backoff::new(c, 1);
        assert_eq!(b.pending_floor(), None);
        b.on_hint(RetryHint::RetryLater);
        assert_eq!(b.next_delay(t0), Some(secs(5)));
    }

    #[test]
    fn a_hint_survives_the_reset_of_a_healthy_disconnect() {
        let t0 = crate::time::test_epoch();
        let mut b = Backoff::new(cfg(Jitter::Full), 3);
        b.on_connected(t0);
        b.on_hint(RetryHint::RetryLater);
        b.on_disconnected(t0 + secs(60));
        let d = b.next_delay(t0 + secs(60)).unwrap();
        assert_eq!(d, secs(5)); // full jitter at attempt 0 is at most 1 s
    }

    #[test]
    fn odd_settings_do_not_panic() {
        let t0 = crate::time::test_epoch();
        for jitter in [Jitter::Full, Jitter::Equal, Jitter::Decorrelated, Jitter::None] {
            let c = BackoffConfig {
                base: Duration::MAX,
                cap: Duration::MAX,
                jitter,
                max_hint: Duration::MAX,
                max_elapsed: Some(Duration::MAX),
                ..BackoffConfig::default()
            };
            let mut b = Backoff::new(c, 1);
            for _ in 0..70 {
                let _ = b.next_deadline(t0);
                b.on_hint(RetryHint::RetryAfter(Duration::MAX));
            }
            let c =
                BackoffConfig { base: secs(10), cap: secs(1), jitter, ..BackoffConfig::default() };
            let mut b = Backoff::new(c, 1);
            for _ in 0..10 {
                assert!(b.next_delay(t0).unwrap() <= secs(1));
            }
            let c = BackoffConfig { base: Duration::ZERO, jitter, ..BackoffConfig::default() };
            let mut b = Backoff::new(c, 1);
            assert_eq!(b.next_delay(t0), Some(Duration::ZERO));
        }
    }

    #[test]
    fn time_going_back_is_clamped() {
        let t0 = crate::time::test_epoch() + secs(100);
        let c = BackoffConfig { max_elapsed: Some(secs(5)), ..cfg(Jitter::None) };
        let mut b = Backoff::new(c, 1);
        assert_eq!(b.next_deadline(t0), Some(t0 + secs(1)));
        assert_eq!(b.next_deadline(t0 - secs(50)), Some(t0 + secs(2)));
        assert_eq!(b.next_delay(t0 - secs(99)), Some(secs(4))); // 0 s elapsed + 4 s fits
        assert_eq!(b.next_delay(t0 - secs(99)), None); // 8 s does not
    }

    #[test]
    fn retry_after_delta_seconds() {
        assert_eq!(parse_retry_after("0", 5), Some(Duration::ZERO));
        assert_eq!(parse_retry_after(" 120\t", 5), Some(secs(120)));
        assert_eq!(parse_retry_after("99999999999999999999999", 0), Some(secs(u64::MAX)));
        for bad in ["", " ", "-1", "+5", "1.5", "12a", "1 2", "0x10", "１２"] {
            assert_eq!(parse_retry_after(bad, 0), None, "{bad:?}");
        }
    }

    #[test]
    fn retry_after_dates() {
        let date = "Sun, 06 Nov 1994 08:49:37 GMT";
        assert_eq!(parse_retry_after(date, 784_111_777 - 90), Some(secs(90)));
        assert_eq!(parse_retry_after(date, 784_111_777), Some(Duration::ZERO));
        assert_eq!(parse_retry_after(date, 2_000_000_000), Some(Duration::ZERO));
        assert_eq!(parse_imf_fixdate(b"Tue, 29 Feb 2000 00:00:00 GMT"), Some(951_782_400));
        assert_eq!(parse_imf_fixdate(b"Mon, 01 Mar 2100 00:00:00 GMT"), Some(4_107_542_400));
        assert_eq!(parse_imf_fixdate(b"Fri, 31 Dec 9999 23:59:59 GMT"), Some(253_402_300_799));
        assert_eq!(parse_imf_fixdate(b"Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(parse_imf_fixdate(b"Mon, 01 Jan 1900 00:00:00 GMT"), Some(0));
        for bad in [
            "Sun, 06 Nov 1994 08:49:37 UTC",
            "Sun, 6 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
            "Xyz, 06 Nov 1994 08:49:37 GMT",
            "Sun, 06 Foo 1994 08:49:37 GMT",
            "Sun, 00 Nov 1994 08:49:37 GMT",
            "Sun, 31 Nov 1994 08:49:37 GMT",
            "Thu, 29 Feb 2100 00:00:00 GMT",
            "Sun, 06 Nov 1994 24:00:00 GMT",
            "Sun, 06 Nov 1994 08:60:00 GMT",
            "Sun, 06 Nov 1994 08:49:61 GMT",
            "Sun, 06 Nov 19a4 08:49:37 GMT",
            "Sun, 06 Nov 1994 08:49:37 GMTx",
            "Sun, 06 Nov 1994 08-49-37 GMT",
        ] {
            assert_eq!(parse_retry_after(bad, 0), None, "{bad:?}");
        }
        // A leap second is a valid time of day.
        assert!(parse_retry_after("Sat, 31 Dec 2016 23:59:60 GMT", 0).is_some());
    }
}
