//! The seeded random number generator behind mask keys, handshake keys and jitter.
//!
//! RFC 6455 §5.3 requires client mask keys that a peer cannot predict, so this is a
//! ChaCha12 stream cipher generator ([`rand_chacha`]), never a global or OS RNG: adapters
//! seed it from OS entropy, tests and simulations from a fixed seed.

use rand_chacha::ChaCha12Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};

use crate::time::Duration;

/// A deterministic, seedable, cryptographically strong generator.
#[derive(Clone, Debug)]
pub struct Rng(ChaCha12Rng);

impl Rng {
    /// A generator from a 32-byte seed (adapters: OS entropy; tests: a constant).
    #[must_use]
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self(ChaCha12Rng::from_seed(seed))
    }

    /// A generator from a small seed, for tests and simulations.
    #[must_use]
    pub fn from_u64(seed: u64) -> Self {
        Self(ChaCha12Rng::seed_from_u64(seed))
    }

    /// A new independent generator whose seed is drawn from this one.
    #[must_use]
    pub fn fork(&mut self) -> Self {
        let mut seed = [0; 32];
        self.fill(&mut seed);
        Self::from_seed(seed)
    }

    /// 32 random bits.
    pub fn next_u32(&mut self) -> u32 {
        self.0.next_u32()
    }

    /// 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Fills `out` with random bytes.
    pub fn fill(&mut self, out: &mut [u8]) {
        self.0.fill_bytes(out);
    }

    /// A uniform integer in `0..=max`, without modulo bias (Lemire's widening multiply with
    /// rejection).
    pub fn up_to(&mut self, max: u64) -> u64 {
        if max == u64::MAX {
            return self.next_u64();
        }
        let range = max + 1;
        let threshold = range.wrapping_neg() % range;
        loop {
            let wide = u128::from(self.next_u64()) * u128::from(range);
            // The low half decides rejection; the high half is the sample.
            #[allow(clippy::cast_possible_truncation)]
            let low = wide as u64;
            if low >= threshold {
                #[allow(clippy::cast_possible_truncation)]
                return (wide >> 64) as u64;
            }
        }
    }

    /// A uniform duration in `0..=max`, at nanosecond resolution (saturating at ~584 years).
    pub fn duration_up_to(&mut self, max: Duration) -> Duration {
        let nanos = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(self.up_to(nanos))
    }

    /// A uniform duration in `lo..=hi` (`lo` when `hi <= lo`).
    pub fn duration_between(&mut self, lo: Duration, hi: Duration) -> Duration {
        lo + self.duration_up_to(hi.saturating_sub(lo))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream() {
        let mut a = Rng::from_u64(7);
        let mut b = Rng::from_u64(7);
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        assert_ne!(Rng::from_u64(7).next_u64(), Rng::from_u64(8).next_u64());
    }

    #[test]
    fn up_to_stays_in_range_and_covers_it() {
        let mut r = Rng::from_u64(1);
        let mut seen = [false; 7];
        for _ in 0..10_000 {
            let v = r.up_to(6);
            assert!(v <= 6);
            seen[usize::try_from(v).unwrap()] = true;
        }
        assert!(seen.iter().all(|&s| s));
        assert_eq!(r.up_to(0), 0);
        let _ = r.up_to(u64::MAX);
    }

    #[test]
    fn durations_in_bounds() {
        let mut r = Rng::from_u64(2);
        for _ in 0..1000 {
            let d = r.duration_between(Duration::from_millis(10), Duration::from_millis(20));
            assert!(d >= Duration::from_millis(10) && d <= Duration::from_millis(20));
        }
        assert_eq!(
            r.duration_between(Duration::from_secs(2), Duration::from_secs(1)),
            Duration::from_secs(2)
        );
    }
}
