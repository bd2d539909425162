//! Payload masking (RFC 6455 §5.3).
//!
//! Every frame a client sends is masked: payload byte `i` is XORed with byte `i % 4` of a
//! 4-byte key carried in the header, and the receiver XORs again to undo it. Because XOR is
//! its own inverse, one function both masks and unmasks.
//!
//! [`apply_mask`] and [`apply_mask_at`] are the fast path, written in safe Rust in a shape
//! the compiler turns into wide vector XORs: the key is rotated once to the starting phase,
//! repeated to a 64-byte block, and XORed block by block; the last partial block is XORed
//! against the start of the same repeated key. [`apply_mask_scalar`] is the obvious
//! byte-at-a-time loop, kept as the reference the fast path is tested and benchmarked
//! against.

/// Width of one block of the fast path. A multiple of 4, so the key phase is the same at the
/// start of every block, and wide enough for two AVX2 or four SSE2 registers per block.
const BLOCK: usize = 64;

/// XORs `buf` with the masking `key`, starting at key byte 0: masks a payload before sending
/// it, or unmasks a received one (RFC 6455 §5.3).
///
/// Equivalent to `apply_mask_at(buf, key, 0)`.
#[inline]
pub fn apply_mask(buf: &mut [u8], key: [u8; 4]) {
    apply_mask_at(buf, key, 0);
}

/// XORs `buf` with the masking `key` as if `buf` started `offset` bytes into the masked
/// payload: byte `i` of `buf` is XORed with `key[(offset + i) % 4]`.
///
/// Use it to unmask a payload that arrives in pieces, passing the number of payload bytes
/// already unmasked as `offset`.
#[inline]
pub fn apply_mask_at(buf: &mut [u8], key: [u8; 4], offset: usize) {
    // Rotate the key so that `key[0]` is the byte that applies to `buf[0]`.
    let key = rotate(key, offset);
    let repeated = [key; BLOCK / 4];
    let wide = repeated.as_flattened();
    let mut blocks = buf.chunks_exact_mut(BLOCK);
    for block in &mut blocks {
        xor_block(block, wide);
    }
    // BLOCK is a multiple of 4, so the remainder starts at phase 0 of the rotated key again.
    for (b, k) in blocks.into_remainder().iter_mut().zip(wide.iter()) {
        *b ^= *k;
    }
}

/// Writes `src` XORed with `key` (from key byte 0) into `dst`: masks a copy in one pass,
/// instead of copying and then masking in place. `dst` and `src` have the same length
/// (extra bytes of the longer one are left alone).
pub(crate) fn copy_masked(dst: &mut [u8], src: &[u8], key: [u8; 4]) {
    debug_assert_eq!(dst.len(), src.len());
    let repeated = [key; BLOCK / 4];
    let wide = repeated.as_flattened();
    let mut dst_blocks = dst.chunks_exact_mut(BLOCK);
    let mut src_blocks = src.chunks_exact(BLOCK);
    for (d, s) in (&mut dst_blocks).zip(&mut src_blocks) {
        // Both are exactly BLOCK bytes (see `xor_block`); the early exit is never taken.
        let (Ok(d), Ok(s), Ok(k)) = (
            <&mut [u8; BLOCK]>::try_from(d),
            <&[u8; BLOCK]>::try_from(s),
            <&[u8; BLOCK]>::try_from(wide),
        ) else {
            return;
        };
        for ((d, s), k) in d.iter_mut().zip(s.iter()).zip(k.iter()) {
            *d = *s ^ *k;
        }
    }
    let tail = dst_blocks.into_remainder().iter_mut().zip(src_blocks.remainder());
    for ((d, s), k) in tail.zip(wide.iter()) {
        *d = *s ^ *k;
    }
}

/// The reference implementation: XORs one byte at a time, `buf[i] ^= key[(offset + i) % 4]`.
///
/// Correct by inspection and slow; tests and benchmarks compare [`apply_mask_at`] against it.
pub fn apply_mask_scalar(buf: &mut [u8], key: [u8; 4], offset: usize) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b ^= key[(offset.wrapping_add(i)) % 4];
    }
}

/// `key` rotated left by `offset % 4` positions.
#[inline]
fn rotate(key: [u8; 4], offset: usize) -> [u8; 4] {
    let mut out = key;
    out.rotate_left(offset % 4);
    out
}

/// XORs one full block with the repeated key. Fixed-size arrays make the loop bounds constant,
/// so the loop is fully unrolled into vector instructions without bounds checks.
#[inline(always)]
fn xor_block(block: &mut [u8], wide: &[u8]) {
    // `chunks_exact_mut(BLOCK)` only yields blocks of exactly BLOCK bytes, and `wide` is
    // BLOCK bytes long, so neither conversion fails; the early return is never taken.
    let (Ok(block), Ok(wide)) =
        (<&mut [u8; BLOCK]>::try_from(block), <&[u8; BLOCK]>::try_from(wide))
    else {
        return;
    };
    for (b, k) in block.iter_mut().zip(wide.iter()) {
        *b ^= *k;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i.wrapping_mul(31) ^ (i >> 3)).to_le_bytes()[0]).collect()
    }

    #[test]
    fn rfc_6455_example_hello() {
        // RFC 6455 §5.7: a masked "Hello" with key 37 fa 21 3d.
        let mut buf = *b"Hello";
        apply_mask(&mut buf, KEY);
        assert_eq!(buf, [0x7f, 0x9f, 0x4d, 0x51, 0x58]);
        apply_mask(&mut buf, KEY);
        assert_eq!(&buf, b"Hello");
    }

    #[test]
    fn fast_matches_scalar_for_every_length_and_offset() {
        for len in 0..300 {
            for offset in 0..4 {
                let mut fast = pattern(len);
                let mut slow = fast.clone();
                apply_mask_at(&mut fast, KEY, offset);
                apply_mask_scalar(&mut slow, KEY, offset);
                assert_eq!(fast, slow, "len {len} offset {offset}");
            }
        }
    }

    #[test]
    fn offset_wraps_modulo_4() {
        let mut a = pattern(100);
        let mut b = a.clone();
        apply_mask_at(&mut a, KEY, 4 * 1_000_001 + 3);
        apply_mask_at(&mut b, KEY, 3);
        assert_eq!(a, b);
        let mut c = pattern(10);
        let mut d = c.clone();
        apply_mask_scalar(&mut c, KEY, usize::MAX);
        apply_mask_at(&mut d, KEY, usize::MAX);
        assert_eq!(c, d);
    }

    #[test]
    fn unmasking_in_pieces_equals_unmasking_whole() {
        let whole = pattern(1000);
        let mut once = whole.clone();
        apply_mask(&mut once, KEY);
        let mut pieces = whole.clone();
        let mut done = 0;
        for step in [1, 3, 64, 7, 200, 5, 720] {
            apply_mask_at(&mut pieces[done..done + step], KEY, done);
            done += step;
        }
        assert_eq!(done, 1000);
        assert_eq!(once, pieces);
    }

    #[test]
    fn copy_masked_matches_scalar_for_every_length() {
        for len in 0..300 {
            let src = pattern(len);
            let mut expected = src.clone();
            apply_mask_scalar(&mut expected, KEY, 0);
            let mut dst = vec![0xaa; len];
            copy_masked(&mut dst, &src, KEY);
            assert_eq!(dst, expected, "len {len}");
        }
    }

    proptest! {
        #[test]
        fn fast_matches_scalar(
            data in proptest::collection::vec(any::<u8>(), 0..2048),
            key in any::<[u8; 4]>(),
            offset in any::<usize>(),
        ) {
            let mut fast = data.clone();
            let mut slow = data.clone();
            apply_mask_at(&mut fast, key, offset);
            apply_mask_scalar(&mut slow, key, offset);
            prop_assert_eq!(&fast, &slow);
            // Masking twice restores the input.
            apply_mask_at(&mut fast, key, offset);
            prop_assert_eq!(fast, data);
        }
    }
}
