//! Bounded, preallocated containers for the receive and request paths.
//!
//! C header: none (driver-internal; the kernel equivalent is a lookaside list plus a
//! `LIST_ENTRY` queue).
//!
//! Both containers allocate their full capacity once, at construction (PASSIVE_LEVEL),
//! and never again: inserting into a full container returns the item instead of
//! growing, so they are safe to use under a spin lock at DISPATCH_LEVEL.

use alloc::collections::VecDeque;
use alloc::vec::Vec;

/// A FIFO of at most `capacity` items.
///
/// # Invariants
///
/// `items.len() <= capacity` and `items.capacity() >= capacity`, so `push_back` never
/// reallocates.
#[derive(Debug)]
pub struct Fifo<T> {
    items: VecDeque<T>,
    capacity: usize,
}

impl<T> Fifo<T> {
    /// An empty FIFO with room for `capacity` items, allocated now.
    #[must_use]
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            items: VecDeque::with_capacity(capacity),
            capacity,
        }
    }

    /// Appends `item`, or gives it back when the FIFO is full.
    ///
    /// # Errors
    ///
    /// `Err(item)` when `len() == capacity()`.
    pub fn push_back(&mut self, item: T) -> Result<(), T> {
        if self.items.len() >= self.capacity {
            return Err(item);
        }
        // INVARIANT: len < capacity <= allocated capacity: no reallocation.
        self.items.push_back(item);
        Ok(())
    }

    /// Removes the oldest item.
    pub fn pop_front(&mut self) -> Option<T> {
        self.items.pop_front()
    }

    /// The oldest item.
    #[must_use]
    pub fn front(&self) -> Option<&T> {
        self.items.front()
    }

    /// Removes and returns the first item matching `pred` (keeps the others' order).
    pub fn remove_first(&mut self, pred: impl FnMut(&T) -> bool) -> Option<T> {
        let at = self.items.iter().position(pred)?;
        self.items.remove(at)
    }

    /// Items queued.
    #[must_use]
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True when nothing is queued.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The bound.
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

/// A fixed set of `capacity` slots addressed by index.
///
/// # Invariants
///
/// `slots.len() == capacity` forever; `free` holds exactly the indices of the `None`
/// slots and has capacity `capacity`, so freeing never reallocates.
#[derive(Debug)]
pub struct Slab<T> {
    slots: Vec<Option<T>>,
    free: Vec<usize>,
}

impl<T> Slab<T> {
    /// `capacity` empty slots, allocated now.
    #[must_use]
    pub fn with_capacity(capacity: usize) -> Self {
        let mut slots = Vec::with_capacity(capacity);
        slots.resize_with(capacity, || None);
        // Lowest index is handed out first.
        let free = (0..capacity).rev().collect();
        Self { slots, free }
    }

    /// Stores `item` in a free slot and returns its index, or gives it back when full.
    ///
    /// # Errors
    ///
    /// `Err(item)` when every slot is taken.
    pub fn insert(&mut self, item: T) -> Result<usize, T> {
        let Some(at) = self.free.pop() else {
            return Err(item);
        };
        self.slots[at] = Some(item);
        Ok(at)
    }

    /// Empties slot `at` and returns what it held.
    pub fn remove(&mut self, at: usize) -> Option<T> {
        let item = self.slots.get_mut(at)?.take()?;
        // INVARIANT: `at` was occupied, so it is not in `free`; free.len() < capacity.
        self.free.push(at);
        Some(item)
    }

    /// The item in slot `at`.
    #[must_use]
    pub fn get(&self, at: usize) -> Option<&T> {
        self.slots.get(at)?.as_ref()
    }

    /// The item in slot `at`, mutable.
    pub fn get_mut(&mut self, at: usize) -> Option<&mut T> {
        self.slots.get_mut(at)?.as_mut()
    }

    /// Index of the first occupied slot whose item matches `pred`.
    pub fn find(&self, mut pred: impl FnMut(&T) -> bool) -> Option<usize> {
        self.slots
            .iter()
            .position(|s| s.as_ref().is_some_and(&mut pred))
    }

    /// Occupied slots.
    #[must_use]
    pub fn len(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// True when no slot is occupied.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of slots.
    #[must_use]
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifo_refuses_item_beyond_capacity_without_growing() {
        let mut f = Fifo::with_capacity(2);
        assert_eq!(f.push_back(1), Ok(()));
        assert_eq!(f.push_back(2), Ok(()));
        assert_eq!(f.push_back(3), Err(3));
        assert_eq!(f.pop_front(), Some(1));
        assert_eq!(f.push_back(4), Ok(()));
        assert_eq!(f.remove_first(|x| *x == 4), Some(4));
        assert_eq!(f.len(), 1);
        assert_eq!(f.front(), Some(&2));
    }

    #[test]
    fn slab_reuses_freed_slots_and_refuses_when_full() {
        let mut s = Slab::with_capacity(2);
        let a = s.insert('a').expect("room");
        let b = s.insert('b').expect("room");
        assert_eq!((a, b), (0, 1));
        assert_eq!(s.insert('c'), Err('c'));
        assert_eq!(s.remove(a), Some('a'));
        assert_eq!(s.remove(a), None, "double remove returns nothing");
        assert_eq!(s.insert('d'), Ok(0));
        assert_eq!(s.find(|c| *c == 'b'), Some(1));
        assert_eq!(s.len(), 2);
        assert_eq!(s.get(7), None);
    }
}
