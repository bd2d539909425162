//! Spare zlib states, shared by the whole process, for directions without context
//! takeover.
//!
//! A message compressed or inflated without context needs a state only while it is worked
//! on; keeping one per connection would cost hundreds of KiB per idle connection. Instead a
//! state is taken here for one message and given back after it, reset. The pool keeps at
//! most [`POOL_MAX`] spares of each kind for the whole process, so its memory is bounded
//! whatever the number of threads: an adapter that runs a thread per connection (the std
//! one) would otherwise keep a spare per connection's thread, which is the per-connection
//! cost the pool exists to avoid. Taking and giving back is one uncontended lock, against
//! the 3–10 µs of the message's compression.
//!
//! This is a cache, not shared state: what a state produces after a reset does not depend on
//! its past, so the bytes on the wire are the same with or without the pool (the sans-IO
//! determinism holds). With [`DeflateMemory::PerMessage`](super::DeflateMemory) it is not
//! used at all.

use std::sync::{Mutex, PoisonError};

use flate2::{Compress, Compression, Decompress};

use super::DeflateMemory;

/// Spare states the process keeps for each kind (compressor, inflater).
pub const POOL_MAX: usize = 8;

/// The spares of one pool: compressors keyed by (window bits, level), inflaters.
struct Spares {
    deflaters: Mutex<Vec<(u8, u32, Compress)>>,
    inflaters: Mutex<Vec<Decompress>>,
}

impl Spares {
    const fn new() -> Self {
        Self { deflaters: Mutex::new(Vec::new()), inflaters: Mutex::new(Vec::new()) }
    }

    fn take_deflater(&self, level: Compression, bits: u8) -> Option<Compress> {
        let mut pool = self.deflaters.lock().unwrap_or_else(PoisonError::into_inner);
        let at = pool.iter().position(|(b, l, _)| *b == bits && *l == level.level())?;
        Some(pool.swap_remove(at).2)
    }

    fn give_deflater(&self, level: Compression, bits: u8, mut c: Compress) {
        c.reset();
        let mut pool = self.deflaters.lock().unwrap_or_else(PoisonError::into_inner);
        if pool.len() == POOL_MAX {
            // The oldest spare goes: the newest matches what is sent now.
            pool.remove(0);
        }
        pool.push((bits, level.level(), c));
    }

    fn take_inflater(&self) -> Option<Decompress> {
        self.inflaters.lock().unwrap_or_else(PoisonError::into_inner).pop()
    }

    fn give_inflater(&self, mut d: Decompress) {
        d.reset(false);
        let mut pool = self.inflaters.lock().unwrap_or_else(PoisonError::into_inner);
        if pool.len() < POOL_MAX {
            pool.push(d);
        }
    }

    #[cfg(test)]
    fn len(&self) -> (usize, usize) {
        let d = self.deflaters.lock().unwrap_or_else(PoisonError::into_inner).len();
        (d, self.inflaters.lock().unwrap_or_else(PoisonError::into_inner).len())
    }
}

/// The process's pool.
static SPARES: Spares = Spares::new();

/// A raw-DEFLATE compressor with a window of `bits` (9–15).
pub(super) fn new_deflater(level: Compression, bits: u8) -> Compress {
    Compress::new_with_window_bits(level, false, bits)
}

/// A raw-DEFLATE inflater for windows up to `bits` (8–15; zlib needs at least 9, which
/// decodes a window of 8 as well).
pub(super) fn new_inflater(bits: u8) -> Decompress {
    Decompress::new_with_window_bits(false, bits.max(9))
}

/// A compressor ready for a new stream.
pub(super) fn take_deflater(memory: DeflateMemory, level: Compression, bits: u8) -> Compress {
    let pooled = (memory == DeflateMemory::Pool).then(|| SPARES.take_deflater(level, bits));
    pooled.flatten().unwrap_or_else(|| new_deflater(level, bits))
}

/// Gives a compressor back after a message (dropped unless pooled).
pub(super) fn give_deflater(memory: DeflateMemory, level: Compression, bits: u8, c: Compress) {
    if memory == DeflateMemory::Pool {
        SPARES.give_deflater(level, bits, c);
    }
}

/// An inflater ready for a new stream, for one message. Its window is always 15 bits (it
/// decodes any window, and zlib-rs resets a 15-bit inflater without reallocating it); the
/// window's memory is only used as far as the message's output needs it.
pub(super) fn take_inflater(memory: DeflateMemory) -> Decompress {
    let pooled = (memory == DeflateMemory::Pool).then(|| SPARES.take_inflater());
    pooled.flatten().unwrap_or_else(|| new_inflater(15))
}

/// Gives an inflater back after a message (dropped unless pooled).
pub(super) fn give_inflater(memory: DeflateMemory, d: Decompress) {
    if memory == DeflateMemory::Pool {
        SPARES.give_inflater(d);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spares_are_bounded_reused_and_reset() {
        // A pool of the test's own: the process's is shared with the tests running beside.
        let pool = Spares::new();
        let level = Compression::default();
        for _ in 0..POOL_MAX + 3 {
            let mut c = new_deflater(level, 12);
            // Leave data in the stream: the pool resets it.
            let mut out = Vec::with_capacity(64);
            c.compress_vec(b"abcabcabc", &mut out, flate2::FlushCompress::None).unwrap();
            pool.give_deflater(level, 12, c);
        }
        assert_eq!(pool.len().0, POOL_MAX);
        assert!(pool.take_deflater(level, 13).is_none(), "another window is another state");
        let mut c = pool.take_deflater(level, 12).expect("a spare");
        assert_eq!((c.total_in(), c.total_out()), (0, 0), "reset before reuse");
        assert_eq!(pool.len().0, POOL_MAX - 1);
        let fresh =
            super::super::compress::deflate_message(&mut new_deflater(level, 12), b"hello hello")
                .unwrap();
        assert_eq!(super::super::compress::deflate_message(&mut c, b"hello hello").unwrap(), fresh);
        for _ in 0..POOL_MAX + 2 {
            pool.give_inflater(new_inflater(15));
        }
        assert_eq!(pool.len().1, POOL_MAX);
        assert!(pool.take_inflater().is_some());
    }
}
