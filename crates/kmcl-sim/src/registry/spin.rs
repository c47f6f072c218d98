//! The lock of the handle registry's table: a minimal spin lock.
//!
//! Every KMCL call of a driver takes the table's lock once or twice, besides its
//! simulation's lock, for a critical section of a few dozen instructions that never
//! blocks, calls out or allocates. A lock that is one compare-and-swap to take and one
//! store to give back (no poisoning, no futex word) costs a fraction of
//! `std::sync::Mutex` there.
//!
//! **The rule (SPIN_LOCK_EXCLUSIVE)**: the value is reached only through a [`SpinGuard`],
//! and a guard exists only while `locked` is `true` and was set by the thread that made
//! it (an acquire compare-and-swap from `false`); dropping the guard stores `false` with
//! release ordering. So every access to the value happens-after the previous guard's
//! accesses and happens-before the next guard's: no two references to it overlap.
#![allow(
    unsafe_code,
    reason = "the one lock built on UnsafeCell; every block names its rule"
)]

use std::cell::UnsafeCell;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, Ordering};

/// Spins this many times before yielding the processor to a holder that was preempted.
const SPINS_BEFORE_YIELD: u32 = 64;

/// A spin lock holding a `T`. A panic while it is held releases it (no poisoning: the
/// registry's users recovered from a poisoned mutex anyway).
pub(crate) struct SpinLock<T> {
    locked: AtomicBool,
    value: UnsafeCell<T>,
}

// SAFETY: rule SPIN_LOCK_EXCLUSIVE (module doc): the value moves between threads only
// through guards that exclude each other, so `T: Send` suffices, as for `Mutex<T>`.
unsafe impl<T: Send> Sync for SpinLock<T> {}

impl<T> SpinLock<T> {
    pub(crate) const fn new(value: T) -> Self {
        Self {
            locked: AtomicBool::new(false),
            value: UnsafeCell::new(value),
        }
    }

    /// Takes the lock, spinning (then yielding) while another thread holds it.
    #[inline]
    pub(crate) fn lock(&self) -> SpinGuard<'_, T> {
        if self
            .locked
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            self.lock_contended();
        }
        SpinGuard { lock: self }
    }

    #[cold]
    #[inline(never)]
    fn lock_contended(&self) {
        let mut spins = 0u32;
        loop {
            while self.locked.load(Ordering::Relaxed) {
                if spins < SPINS_BEFORE_YIELD {
                    spins += 1;
                    std::hint::spin_loop();
                } else {
                    std::thread::yield_now();
                }
            }
            if self
                .locked
                .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                return;
            }
        }
    }
}

/// Exclusive access to the value of a [`SpinLock`] until dropped.
pub(crate) struct SpinGuard<'a, T> {
    lock: &'a SpinLock<T>,
}

impl<T> Deref for SpinGuard<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        // SAFETY: rule SPIN_LOCK_EXCLUSIVE (module doc): this guard holds the lock, so no
        // other reference to the value exists while the borrow of the guard lasts.
        unsafe { &*self.lock.value.get() }
    }
}

impl<T> DerefMut for SpinGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: rule SPIN_LOCK_EXCLUSIVE (module doc): as for `deref`, and the guard is
        // borrowed mutably, so this is the only reference.
        unsafe { &mut *self.lock.value.get() }
    }
}

impl<T> Drop for SpinGuard<'_, T> {
    fn drop(&mut self) {
        self.lock.locked.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn threaded_spin_lock_gives_exclusive_access() {
        let l = Arc::new(SpinLock::new(0u64));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let l = l.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        *l.lock() += 1;
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        assert_eq!(*l.lock(), 4000);
    }
}
