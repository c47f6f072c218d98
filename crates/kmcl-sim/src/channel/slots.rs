//! Per-channel packet slots: the incoming packets between delivery and completion, in a
//! vector indexed by the packet key instead of a hash map.
//!
//! A key is a slot index (low 32 bits) and that slot's generation (high 32 bits). Removing
//! a packet bumps its slot's generation and frees the slot, so a stale key (a packet
//! already completed) never finds the packet that reuses its slot. Freed slots are reused
//! last-in first-out; after warm-up an insert or a removal allocates nothing and hashes
//! nothing.
//!
//! Layer: part of the channel state machine (`channel/`); uses nothing of the crate.
#![forbid(unsafe_code)]

/// The slots of one channel.
#[derive(Debug)]
pub(crate) struct Slots<T> {
    /// (generation, value) per slot.
    slots: Vec<(u32, Option<T>)>,
    /// Indices of empty slots.
    free: Vec<u32>,
    len: usize,
}

impl<T> Default for Slots<T> {
    fn default() -> Self {
        Self {
            slots: Vec::new(),
            free: Vec::new(),
            len: 0,
        }
    }
}

const fn key(index: u32, generation: u32) -> u64 {
    ((generation as u64) << 32) | index as u64
}

const fn split(key: u64) -> (usize, u32) {
    ((key & 0xFFFF_FFFF) as usize, (key >> 32) as u32)
}

impl<T> Slots<T> {
    /// The key the next [`insert`](Self::insert) takes.
    pub(crate) fn next_key(&self) -> u64 {
        match self.free.last() {
            Some(&i) => key(i, self.slots[i as usize].0),
            None => key(u32::try_from(self.slots.len()).unwrap_or(u32::MAX), 0),
        }
    }

    /// Stores `value` under `k`, which must be [`next_key`](Self::next_key).
    pub(crate) fn insert(&mut self, k: u64, value: T) {
        debug_assert_eq!(k, self.next_key(), "slot key out of order");
        let (i, generation) = split(k);
        if self.free.last() == Some(&(i as u32)) {
            self.free.pop();
            // A free slot holds `None`: the value is written in place (nothing to drop).
            let slot = &mut self.slots[i];
            slot.0 = generation;
            let _none = slot.1.replace(value);
        } else {
            self.slots.push((generation, Some(value)));
        }
        self.len += 1;
    }

    pub(crate) fn get(&self, k: u64) -> Option<&T> {
        let (i, generation) = split(k);
        match self.slots.get(i) {
            Some((g, v)) if *g == generation => v.as_ref(),
            _ => None,
        }
    }

    pub(crate) fn get_mut(&mut self, k: u64) -> Option<&mut T> {
        let (i, generation) = split(k);
        match self.slots.get_mut(i) {
            Some((g, v)) if *g == generation => v.as_mut(),
            _ => None,
        }
    }

    /// Runs `f` on the value of `k` in place, then removes it: the value is dropped where it
    /// is (never moved out), its slot gets a new generation and is free again.
    pub(crate) fn remove_with<R>(&mut self, k: u64, f: impl FnOnce(&mut T) -> R) -> Option<R> {
        let (i, generation) = split(k);
        let (g, v) = self.slots.get_mut(i)?;
        if *g != generation {
            return None;
        }
        let r = f(v.as_mut()?);
        *v = None;
        *g = g.wrapping_add(1);
        self.free.push(i as u32);
        self.len -= 1;
        Some(r)
    }

    pub(crate) const fn len(&self) -> usize {
        self.len
    }

    pub(crate) const fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub(crate) fn values(&self) -> impl Iterator<Item = &T> {
        self.slots.iter().filter_map(|(_, v)| v.as_ref())
    }

    pub(crate) fn values_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.slots.iter_mut().filter_map(|(_, v)| v.as_mut())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stale_key_never_finds_the_packet_that_reuses_its_slot() {
        let mut s = Slots::default();
        let a = s.next_key();
        s.insert(a, "a");
        let b = s.next_key();
        s.insert(b, "b");
        assert_eq!(s.remove_with(a, |v| *v), Some("a"));
        assert_eq!(s.remove_with(a, |v| *v), None);
        let c = s.next_key();
        s.insert(c, "c");
        assert_ne!(a, c);
        assert_eq!(s.get(a), None);
        assert_eq!(s.get(c), Some(&"c"));
        assert_eq!(s.get(b), Some(&"b"));
        assert_eq!(s.len(), 2);
        assert_eq!(s.values().count(), 2);
        assert_eq!(s.get(u64::MAX), None);
        assert_eq!(s.remove_with(b, |v| v.len()), Some(1));
        assert_eq!(s.remove_with(b, |v| v.len()), None);
        assert_eq!(s.len(), 1);
    }
}
