//! A token bucket for inbound messages on one connection.
//!
//! The bucket holds up to [`RateLimitConfig::burst`] tokens and refills at
//! [`RateLimitConfig::rate_per_sec`] tokens per second; each message costs some tokens (1 per
//! message, or its size in some unit). Over any interval of length `t`, at most
//! `burst + rate · t` tokens are admitted.
//!
//! The level is kept in nano-tokens (10⁻⁹ token) as an integer, and a refill adds exactly
//! `elapsed_ns · rate` of them: no floats, and no drift, because the fraction of a token that
//! has accrued is never rounded away (only what overflows the full bucket is discarded).
//!
//! Over the limit, the owner SHOULD close the connection with
//! WebSocket close code `POLICY` (1008, policy violation);
//! [`OverLimit::retry_after`] says how long the message would have had to wait.
//!
//! ```
//! use tidewire::policy::{OverLimit, RateLimit, RateLimitConfig};
//! use tidewire::time::{Duration, Instant};
//!
//! let t0 = Instant::now();
//! let mut rl = RateLimit::new(RateLimitConfig { rate_per_sec: 10, burst: 2 }, t0);
//! assert_eq!(rl.check(t0, 1), Ok(()));
//! assert_eq!(rl.check(t0, 1), Ok(()));
//! assert_eq!(rl.check(t0, 1), Err(OverLimit { retry_after: Duration::from_millis(100) }));
//! assert_eq!(rl.check(t0 + Duration::from_millis(100), 1), Ok(())); // one token refilled
//! ```

use crate::time::{Duration, Instant};

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// Token bucket settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimitConfig {
    /// Tokens added per second. 0 never refills (only the initial burst is ever admitted).
    pub rate_per_sec: u32,
    /// Bucket size: the most tokens admitted at once after a quiet period.
    pub burst: u32,
}

/// A check failed: not enough tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("rate limit exceeded; retry after {retry_after:?}")]
pub struct OverLimit {
    /// How long until enough tokens accrue for the refused cost; `Duration::MAX` when they
    /// never will (the cost exceeds the burst, or the rate is 0).
    pub retry_after: Duration,
}

/// The token bucket. See the [module docs](self).
///
/// - Commands: [`check`](Self::check).
/// - Getters: [`available`](Self::available), [`config`](Self::config).
#[derive(Clone, Debug)]
pub struct RateLimit {
    cfg: RateLimitConfig,
    /// Nano-tokens in the bucket, at most `burst · 10⁹`.
    level: u128,
    /// When `level` was last brought up to date (the latest `now` seen).
    updated: Instant,
}

impl RateLimit {
    /// A full bucket at `now`.
    #[must_use]
    pub fn new(cfg: RateLimitConfig, now: Instant) -> Self {
        Self { cfg, level: u128::from(cfg.burst) * NANOS_PER_SEC, updated: now }
    }

    /// The settings.
    #[must_use]
    pub fn config(&self) -> &RateLimitConfig {
        &self.cfg
    }

    fn capacity(&self) -> u128 {
        u128::from(self.cfg.burst) * NANOS_PER_SEC
    }

    fn refill(&mut self, now: Instant) {
        if now <= self.updated {
            return; // time going back (or standing still) adds nothing
        }
        let elapsed = now.duration_since(self.updated).as_nanos();
        self.updated = now;
        let gained = elapsed.saturating_mul(u128::from(self.cfg.rate_per_sec));
        self.level = self.level.saturating_add(gained).min(self.capacity());
    }

    /// Whole tokens available at `now` (refilling first).
    pub fn available(&mut self, now: Instant) -> u32 {
        self.refill(now);
        u32::try_from(self.level / NANOS_PER_SEC).unwrap_or(u32::MAX)
    }

    /// Takes `cost` tokens if the bucket holds them (a cost of 0 always passes).
    ///
    /// # Errors
    /// [`OverLimit`] when it does not; nothing is taken. The owner SHOULD close with 1008.
    pub fn check(&mut self, now: Instant, cost: u32) -> Result<(), OverLimit> {
        self.refill(now);
        let need = u128::from(cost) * NANOS_PER_SEC;
        if need <= self.level {
            self.level -= need;
            return Ok(());
        }
        let rate = u128::from(self.cfg.rate_per_sec);
        if need > self.capacity() || rate == 0 {
            return Err(OverLimit { retry_after: Duration::MAX });
        }
        // Round up, so that retrying after exactly this long succeeds.
        let nanos = (need - self.level).div_ceil(rate);
        let retry_after = u64::try_from(nanos).map_or(Duration::MAX, Duration::from_nanos);
        Err(OverLimit { retry_after })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn burst_then_steady_rate() {
        let t0 = crate::time::test_epoch();
        let mut rl = RateLimit::new(RateLimitConfig { rate_per_sec: 100, burst: 5 }, t0);
        for _ in 0..5 {
            assert_eq!(rl.check(t0, 1), Ok(()));
        }
        assert!(rl.check(t0, 1).is_err());
        // 10 ms per token, exactly, forever.
        let mut admitted = 0;
        for step in 1..=100_000u64 {
            if rl.check(t0 + ms(step), 1).is_ok() {
                admitted += 1;
            }
        }
        assert_eq!(admitted, 10_000);
    }

    #[test]
    fn no_drift_with_rates_that_do_not_divide_a_second() {
        let t0 = crate::time::test_epoch();
        let mut rl = RateLimit::new(RateLimitConfig { rate_per_sec: 3, burst: 2 }, t0);
        assert_eq!(rl.check(t0, 2), Ok(()));
        // A token every 333.33 ms; checking every 1 ms for 300 s admits exactly 900 (the
        // bucket never fills, so no fraction is discarded).
        let mut admitted = 0;
        for step in 1..=300_000u64 {
            if rl.check(t0 + ms(step), 1).is_ok() {
                admitted += 1;
            }
        }
        assert_eq!(admitted, 900);
    }

    #[test]
    fn retry_after_is_exact_and_sufficient() {
        let t0 = crate::time::test_epoch();
        let mut rl = RateLimit::new(RateLimitConfig { rate_per_sec: 3, burst: 4 }, t0);
        assert_eq!(rl.check(t0, 4), Ok(()));
        let Err(OverLimit { retry_after }) = rl.check(t0, 2) else { panic!() };
        assert_eq!(retry_after, Duration::from_nanos(666_666_667));
        assert!(rl.check(t0 + retry_after - Duration::from_nanos(1), 2).is_err());
        assert_eq!(rl.check(t0 + retry_after, 2), Ok(()));
    }

    #[test]
    fn impossible_costs_and_zero_rates() {
        let t0 = crate::time::test_epoch();
        let mut rl = RateLimit::new(RateLimitConfig { rate_per_sec: 10, burst: 3 }, t0);
        assert_eq!(rl.check(t0, 4), Err(OverLimit { retry_after: Duration::MAX }));
        assert_eq!(rl.check(t0, 0), Ok(()));
        assert_eq!(rl.available(t0), 3);
        let mut rl = RateLimit::new(RateLimitConfig { rate_per_sec: 0, burst: 1 }, t0);
        assert_eq!(rl.check(t0, 1), Ok(()));
        assert_eq!(rl.check(t0 + ms(1_000_000), 1), Err(OverLimit { retry_after: Duration::MAX }));
        let mut rl =
            RateLimit::new(RateLimitConfig { rate_per_sec: u32::MAX, burst: u32::MAX }, t0);
        assert_eq!(rl.check(t0, u32::MAX), Ok(()));
        assert_eq!(rl.available(t0 + Duration::from_secs(u64::from(u32::MAX))), u32::MAX);
    }

    #[test]
    fn time_going_back_adds_nothing() {
        let t0 = crate::time::test_epoch() + Duration::from_secs(100);
        let mut rl = RateLimit::new(RateLimitConfig { rate_per_sec: 1, burst: 1 }, t0);
        assert_eq!(rl.check(t0, 1), Ok(()));
        assert!(rl.check(t0 - Duration::from_secs(50), 1).is_err());
        assert!(rl.check(t0 + ms(999), 1).is_err());
        assert_eq!(rl.check(t0 + ms(1000), 1), Ok(()));
    }
}
