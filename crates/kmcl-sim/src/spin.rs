//! The simulator's spin lock: the lock of the handle registry's table ([`SpinLock`]) and,
//! in deterministic mode, of a simulation's state ([`RawSpin`] inside `StateLock`).
//!
//! Every KMCL call of a driver takes those locks for critical sections of a few dozen
//! instructions that never block, call out or allocate. A lock that is one
//! compare-and-swap to take and one release store to give back (no poisoning, no futex
//! word) costs a fraction of `std::sync::Mutex` there. A holder preempted on a busy host is
//! waited for by spinning, then by yielding the processor.
//!
//! **The rule (SPIN_LOCK_EXCLUSIVE)**: a [`RawSpin`] is held from a successful
//! [`RawSpin::lock`] (an acquire compare-and-swap from `false`) to the matching
//! [`RawSpin::unlock`] (a release store of `false`), by one thread at a time. The value of
//! a [`SpinLock`] is reached only through a [`SpinGuard`], which exists only while its
//! thread holds the lock and unlocks when dropped (on unwinding too). So every access to
//! the value happens-after the previous guard's accesses and happens-before the next
//! guard's: no two references to it overlap.
#![allow(
    unsafe_code,
    reason = "the one lock built on UnsafeCell; every block names its rule"
)]

use std::cell::UnsafeCell;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, Ordering};

/// Spins this many times before yielding the processor to a holder that was preempted.
const SPINS_BEFORE_YIELD: u32 = 64;

/// The lock itself: a flag taken with an acquire compare-and-swap and given back with a
/// release store (rule SPIN_LOCK_EXCLUSIVE, module doc).
#[derive(Debug, Default)]
pub(crate) struct RawSpin {
    locked: AtomicBool,
}

impl RawSpin {
    pub(crate) const fn new() -> Self {
        Self {
            locked: AtomicBool::new(false),
        }
    }

    /// Takes the lock, spinning (then yielding) while another thread holds it.
    #[inline]
    pub(crate) fn lock(&self) {
        if self
            .locked
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            self.lock_contended();
        }
    }

    /// Gives the lock back; only its holder calls this.
    #[inline]
    pub(crate) fn unlock(&self) {
        self.locked.store(false, Ordering::Release);
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

/// A spin lock holding a `T`. A panic while it is held releases it (no poisoning: the
/// registry's users recovered from a poisoned mutex anyway).
pub(crate) struct SpinLock<T> {
    raw: RawSpin,
    value: UnsafeCell<T>,
}

// SAFETY: rule SPIN_LOCK_EXCLUSIVE (module doc): the value moves between threads only
// through guards that exclude each other, so `T: Send` suffices, as for `Mutex<T>`.
unsafe impl<T: Send> Sync for SpinLock<T> {}

impl<T> SpinLock<T> {
    pub(crate) const fn new(value: T) -> Self {
        Self {
            raw: RawSpin::new(),
            value: UnsafeCell::new(value),
        }
    }

    /// Takes the lock, spinning (then yielding) while another thread holds it.
    #[inline]
    pub(crate) fn lock(&self) -> SpinGuard<'_, T> {
        self.raw.lock();
        SpinGuard {
            lock: self,
            _value: PhantomData,
        }
    }
}

/// Exclusive access to the value of a [`SpinLock`] until dropped. Shared between threads
/// only when `T: Sync`, as `std::sync::MutexGuard`: a shared guard lends `&T` to every
/// thread that has it.
pub(crate) struct SpinGuard<'a, T> {
    lock: &'a SpinLock<T>,
    /// Makes the guard `Sync` only if `T: Sync`: `&SpinLock` alone would be `Sync` for any
    /// `T: Send`, and `&SpinGuard` derefs to `&T`.
    _value: PhantomData<&'a mut T>,
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
        self.lock.raw.unlock();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// `SpinGuard<T>` is `Sync` only for `T: Sync` (compiled, not run: the `<_>` below is
    /// ambiguous, and the test fails to build, exactly when the guard is `Sync`).
    #[test]
    fn a_guard_is_shared_between_threads_only_when_its_value_is_sync() {
        trait AmbiguousIfSync<A> {
            fn check() {}
        }
        impl<T: ?Sized> AmbiguousIfSync<()> for T {}
        impl<T: ?Sized + Sync> AmbiguousIfSync<u8> for T {}
        <SpinGuard<'static, std::cell::Cell<u64>> as AmbiguousIfSync<_>>::check();

        fn is_send_sync<T: Send + Sync>() {}
        is_send_sync::<SpinGuard<'static, u64>>();
        is_send_sync::<SpinLock<std::cell::Cell<u64>>>();
    }

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
