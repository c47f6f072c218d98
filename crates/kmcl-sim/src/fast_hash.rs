//! The simulator's hash maps: std's `HashMap`/`HashSet` with a fixed, cheap hasher.
//!
//! C header: none. Every key in the simulator is a small integer it chose itself (object
//! ids, handle tokens, PFNs, GPADL and transaction ids), never a value an endpoint can pick
//! to force collisions at scale, so SipHash's flood resistance buys nothing here and cost
//! 17% of an end-to-end packet. The hasher is a multiply-xor-shift over 64-bit words; being
//! unseeded, it also makes iteration order the same in every run (determinism per seed).
//! [`IdMap`] is for the maps of a few entries looked up on every packet (channels, offers).

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

/// A map from simulator ids (`u64`) to values for the few-entry maps looked up on every
/// packet (a simulation's channels and offers): the ids kept in a list searched in order,
/// which for a handful of entries costs less than hashing the id at each look-up.
///
/// Iteration ([`iter`](Self::iter), [`values`](Self::values)) is in insertion order, except
/// that [`remove`](Self::remove) moves the last entry into the gap.
#[derive(Debug)]
pub(crate) struct IdMap<T> {
    ids: Vec<u64>,
    values: Vec<T>,
}

impl<T> Default for IdMap<T> {
    fn default() -> Self {
        Self {
            ids: Vec::new(),
            values: Vec::new(),
        }
    }
}

impl<T> IdMap<T> {
    #[inline]
    fn index(&self, id: u64) -> Option<usize> {
        self.ids.iter().position(|&k| k == id)
    }

    #[inline]
    pub(crate) fn get(&self, id: &u64) -> Option<&T> {
        let i = self.index(*id)?;
        self.values.get(i)
    }

    #[inline]
    pub(crate) fn get_mut(&mut self, id: &u64) -> Option<&mut T> {
        let i = self.index(*id)?;
        self.values.get_mut(i)
    }

    /// Adds (or replaces) the value of `id`; returns the value it replaced.
    pub(crate) fn insert(&mut self, id: u64, v: T) -> Option<T> {
        match self.index(id) {
            Some(i) => Some(std::mem::replace(&mut self.values[i], v)),
            None => {
                self.ids.push(id);
                self.values.push(v);
                None
            }
        }
    }

    pub(crate) fn remove(&mut self, id: &u64) -> Option<T> {
        let i = self.index(*id)?;
        self.ids.swap_remove(i);
        Some(self.values.swap_remove(i))
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&u64, &T)> {
        self.ids.iter().zip(&self.values)
    }

    pub(crate) fn values(&self) -> std::slice::Iter<'_, T> {
        self.values.iter()
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

    #[test]
    fn id_map_finds_replaces_and_removes_by_id() {
        let mut m = IdMap::default();
        assert_eq!(m.insert(7, 'a'), None);
        assert_eq!(m.insert(9, 'b'), None);
        assert_eq!(m.insert(7, 'c'), Some('a'));
        assert_eq!(m.get(&7), Some(&'c'));
        assert_eq!(m.remove(&7), Some('c'));
        assert_eq!(m.get(&7), None);
        if let Some(v) = m.get_mut(&9) {
            *v = 'd';
        }
        assert_eq!(m.iter().collect::<Vec<_>>(), vec![(&9, &'d')]);
        assert_eq!(m.remove(&7), None);
    }
}
