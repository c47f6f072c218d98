//! The simulator's hash maps: std's `HashMap`/`HashSet` with a fixed, cheap hasher.
//!
//! C header: none. Every key in the simulator is a small integer it chose itself (object
//! ids, handle tokens, PFNs, GPADL and transaction ids), never a value an endpoint can pick
//! to force collisions at scale, so SipHash's flood resistance buys nothing here and cost
//! 17% of an end-to-end packet. The hasher is a multiply-xor-shift over 64-bit words; being
//! unseeded, it also makes iteration order the same in every run (determinism per seed).

use std::hash::{BuildHasherDefault, Hasher};

/// `std::collections::HashMap` with [`FastHasher`].
pub(crate) type HashMap<K, V> = std::collections::HashMap<K, V, BuildHasherDefault<FastHasher>>;
/// `std::collections::HashSet` with [`FastHasher`].
pub(crate) type HashSet<K> = std::collections::HashSet<K, BuildHasherDefault<FastHasher>>;

/// Multiply-xor-shift hasher for integer keys (bytes are taken 8 at a time).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct FastHasher(u64);

/// An odd 64-bit constant with well-spread bits (from the golden ratio).
const K: u64 = 0x9e37_79b9_7f4a_7c15;

impl Hasher for FastHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(b));
        }
    }

    #[inline]
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(23) ^ v).wrapping_mul(K);
    }

    #[inline]
    fn write_u32(&mut self, v: u32) {
        self.write_u64(u64::from(v));
    }

    #[inline]
    fn write_u16(&mut self, v: u16) {
        self.write_u64(u64::from(v));
    }

    #[inline]
    fn write_u8(&mut self, v: u8) {
        self.write_u64(u64::from(v));
    }

    #[inline]
    fn write_usize(&mut self, v: usize) {
        // CAST: usize is at most 64 bits on every supported target.
        self.write_u64(v as u64);
    }

    /// The high half of the product folded into the low bits: the table index (low bits)
    /// depends on every key bit, so 16-aligned tokens do not share buckets.
    #[inline]
    fn finish(&self) -> u64 {
        self.0 ^ (self.0 >> 29)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    #[test]
    fn aligned_tokens_spread_over_the_low_bits() {
        let b = BuildHasherDefault::<FastHasher>::default();
        let buckets: HashSet<u64> = (0..1024u64)
            .map(|i| b.hash_one(0x7e00_0000_0000usize + i as usize * 16) & 1023)
            .collect();
        assert!(buckets.len() > 600, "{} distinct buckets", buckets.len());
    }
}
