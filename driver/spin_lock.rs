//! [`SpinLock`]: the host's model of the kernel's spin lock (`WDFSPINLOCK`,
//! `driver/kmdf/lock.rs`), for the simulated side of the driver: the bridge state's lock in
//! the test rig (`vmbridge-sim`) and a simulated request's completion slot
//! (`sim_request.rs`).
//!
//! C header: `wdfsync.h` (`WdfSpinLockAcquire`/`WdfSpinLockRelease`).
//!
//! The critical sections it guards are short, never block, never allocate and never call
//! out (as the bridge's [`Lock`] requires): one compare-and-swap to take the lock and one
//! release store to give it back (no poisoning, no futex word) cost a fraction of a
//! `std::sync::Mutex` round. A holder preempted on a busy host is waited for by spinning,
//! then by yielding the processor.
//!
//! **The rule (SPIN_LOCK_EXCLUSIVE)**: the value is reached only through a [`SpinGuard`]
//! (or [`Lock::with`], which holds one, or [`SpinLock::get_mut`], with the lock borrowed
//! exclusively), and a guard exists only while `locked` is `true` and was set by the
//! thread that made it (an acquire compare-and-swap from `false`); dropping the guard
//! (after the closure, or while unwinding from it) stores `false` with release ordering.
//! So every access to the value happens-after the previous holder's accesses and
//! happens-before the next holder's: no two references to it overlap.
#![allow(
    unsafe_code,
    reason = "the one host lock built on UnsafeCell; every block names its rule"
)]

use std::cell::UnsafeCell;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::bridge::Lock;

/// Spins this many times before yielding the processor to a holder that was preempted.
const SPINS_BEFORE_YIELD: u32 = 64;

/// A spin lock holding a `T` (see the module docs). A panic while it is held releases it
/// (no poisoning, as `StdLock` recovers a poisoned mutex).
pub struct SpinLock<T> {
    locked: AtomicBool,
    value: UnsafeCell<T>,
}

// SAFETY: rule SPIN_LOCK_EXCLUSIVE (module doc): the value is reached by one thread at a
// time, through a guard, so `T: Send` suffices, as for `std::sync::Mutex<T>`.
unsafe impl<T: Send> Sync for SpinLock<T> {}

impl<T> std::fmt::Debug for SpinLock<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpinLock")
            .field("locked", &self.locked.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl<T> SpinLock<T> {
    /// Wraps `value`, unlocked.
    pub const fn new(value: T) -> Self {
        Self {
            locked: AtomicBool::new(false),
            value: UnsafeCell::new(value),
        }
    }

    /// The value, through an exclusive borrow of the lock (no other thread can hold it).
    pub fn get_mut(&mut self) -> &mut T {
        self.value.get_mut()
    }

    /// Takes the lock, spinning (then yielding) while another thread holds it.
    #[inline]
    pub fn lock(&self) -> SpinGuard<'_, T> {
        if self
            .locked
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            self.lock_contended();
        }
        SpinGuard {
            lock: self,
            _value: PhantomData,
        }
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
///
/// Shared between threads only when `T: Sync`, as `std::sync::MutexGuard`: a shared
/// guard lends `&T` to every thread that has it.
pub struct SpinGuard<'a, T> {
    lock: &'a SpinLock<T>,
    /// Makes the guard `Sync` only if `T: Sync` (and `Send` only if `T: Send`): `&SpinLock`
    /// alone would be `Sync` for any `T: Send`, and `&SpinGuard` derefs to `&T`.
    _value: PhantomData<&'a mut T>,
}

impl<T: std::fmt::Debug> std::fmt::Debug for SpinGuard<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("SpinGuard").field(&**self).finish()
    }
}

impl<T> Deref for SpinGuard<'_, T> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        // SAFETY: rule SPIN_LOCK_EXCLUSIVE (module doc): this guard holds the lock while
        // the borrow of the guard lasts, so no mutable reference to the value exists.
        unsafe { &*self.lock.value.get() }
    }
}

impl<T> DerefMut for SpinGuard<'_, T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: rule SPIN_LOCK_EXCLUSIVE (module doc): as for `deref`, and the guard is
        // borrowed mutably, so this is the only reference.
        unsafe { &mut *self.lock.value.get() }
    }
}

impl<T> Drop for SpinGuard<'_, T> {
    #[inline]
    fn drop(&mut self) {
        self.lock.locked.store(false, Ordering::Release);
    }
}

impl<T: Send> Lock<T> for SpinLock<T> {
    fn new(value: T) -> Self {
        Self::new(value)
    }

    #[inline]
    fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        f(&mut self.lock())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bridge::lock::add_on_four_threads;
    use std::sync::Arc;

    #[test]
    fn threaded_spin_lock_gives_exclusive_access() {
        let l = add_on_four_threads(Arc::new(SpinLock::new(0u64)), |l| {
            l.with(|v| *v += 1);
            *l.lock() += 1;
        });
        assert_eq!(*l.lock(), 8000);
    }

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
    fn a_panic_while_held_releases_the_lock() {
        let l = SpinLock::new(1u64);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            l.with(|_| panic!("inside"));
        }));
        assert!(r.is_err());
        assert_eq!(l.with(|v| *v), 1);
    }
}
