//! Spare zlib states, per thread, for directions without context takeover.
//!
//! A message compressed or inflated without context needs a state only while it is worked
//! on; keeping one per connection would cost hundreds of KiB per idle connection. Instead a
//! state is taken here for one message and given back after it, reset. Each thread keeps at
//! most [`POOL_MAX`] spares of each kind, so the pool's memory is bounded per thread and
//! shared by all the connections the thread drives.
//!
//! This is a cache, not shared state: what a state produces after a reset does not depend on
//! its past, so the bytes on the wire are the same with or without the pool (the sans-IO
//! determinism holds). With [`DeflateMemory::PerMessage`](super::DeflateMemory) it is not
//! used at all.

use std::cell::RefCell;

use flate2::{Compress, Compression, Decompress};

use super::DeflateMemory;

/// Spare states kept per thread for each kind (compressor, inflater).
pub const POOL_MAX: usize = 4;

thread_local! {
    static DEFLATERS: RefCell<Vec<(u8, u32, Compress)>> = const { RefCell::new(Vec::new()) };
    static INFLATERS: RefCell<Vec<Decompress>> = const { RefCell::new(Vec::new()) };
}

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
    if memory == DeflateMemory::ThreadPool {
        let found = DEFLATERS.with(|pool| {
            let mut pool = pool.borrow_mut();
            let at = pool.iter().position(|(b, l, _)| *b == bits && *l == level.level())?;
            Some(pool.swap_remove(at).2)
        });
        if let Some(c) = found {
            return c;
        }
    }
    new_deflater(level, bits)
}

/// Gives a compressor back after a message (dropped unless pooled).
pub(super) fn give_deflater(memory: DeflateMemory, level: Compression, bits: u8, mut c: Compress) {
    if memory == DeflateMemory::ThreadPool {
        c.reset();
        DEFLATERS.with(|pool| {
            let mut pool = pool.borrow_mut();
            if pool.len() == POOL_MAX {
                pool.remove(0);
            }
            pool.push((bits, level.level(), c));
        });
    }
}

/// An inflater ready for a new stream, for one message. Its window is always 15 bits (it
/// decodes any window, and zlib-rs resets a 15-bit inflater without reallocating it); the
/// window's memory is only used as far as the message's output needs it.
pub(super) fn take_inflater(memory: DeflateMemory) -> Decompress {
    if memory == DeflateMemory::ThreadPool
        && let Some(d) = INFLATERS.with(|pool| pool.borrow_mut().pop())
    {
        return d;
    }
    new_inflater(15)
}

/// Gives an inflater back after a message (dropped unless pooled).
pub(super) fn give_inflater(memory: DeflateMemory, mut d: Decompress) {
    if memory == DeflateMemory::ThreadPool {
        d.reset(false);
        INFLATERS.with(|pool| {
            let mut pool = pool.borrow_mut();
            if pool.len() < POOL_MAX {
                pool.push(d);
            }
        });
    }
}

/// How many spare states this thread holds: (compressors, inflaters). For tests.
#[cfg(test)]
pub(super) fn spares() -> (usize, usize) {
    (DEFLATERS.with(|p| p.borrow().len()), INFLATERS.with(|p| p.borrow().len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spares_are_bounded_reused_and_reset() {
        let level = Compression::default();
        let taken: Vec<Compress> = (0..POOL_MAX + 3)
            .map(|_| take_deflater(DeflateMemory::ThreadPool, level, 12))
            .collect();
        for mut c in taken {
            // Leave data in the stream: the pool resets it.
            let mut out = Vec::with_capacity(64);
            c.compress_vec(b"abcabcabc", &mut out, flate2::FlushCompress::None).unwrap();
            give_deflater(DeflateMemory::ThreadPool, level, 12, c);
        }
        assert_eq!(spares().0, POOL_MAX);
        let mut c = take_deflater(DeflateMemory::ThreadPool, level, 12);
        assert_eq!((c.total_in(), c.total_out()), (0, 0), "reset before reuse");
        assert_eq!(spares().0, POOL_MAX - 1);
        let fresh =
            super::super::compress::deflate_message(&mut new_deflater(level, 12), b"hello hello")
                .unwrap();
        assert_eq!(super::super::compress::deflate_message(&mut c, b"hello hello").unwrap(), fresh);
        // Per-message memory never touches the pool.
        give_deflater(DeflateMemory::PerMessage, level, 12, c);
        give_inflater(DeflateMemory::PerMessage, take_inflater(DeflateMemory::PerMessage));
        assert_eq!(spares().0, POOL_MAX - 1);
        for _ in 0..POOL_MAX + 2 {
            give_inflater(DeflateMemory::ThreadPool, new_inflater(15));
        }
        assert_eq!(spares().1, POOL_MAX);
    }
}
