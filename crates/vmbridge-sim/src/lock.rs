//! [`SpinLock`]: the bridge state's lock in the rig, a spin lock as the kernel's
//! `WDFSPINLOCK` is (`driver/kmdf/lock.rs`), rather than the host's `StdLock` (a
//! `std::sync::Mutex`).
//!
//! C header: `wdfsync.h` (`WdfSpinLockAcquire`/`WdfSpinLockRelease`).
//!
//! The core's critical sections are short, never block, never allocate and never call
//! out (`vmbridge::bridge::Lock`): one compare-and-swap to take the lock and one store to
//! give it back (no poisoning, no futex word) cost a fraction of a `std::sync::Mutex`
//! round, which the bridge takes several times per packet.
//!
//! **The rule (SPIN_LOCK_EXCLUSIVE)**: the value is reached only inside [`Lock::with`],
//! while `locked` is `true` and was set by the calling thread (an acquire
//! compare-and-swap from `false`); the release store of `false` follows the closure, on
//! unwinding too. So every access to the value happens-after the previous holder's
//! accesses and happens-before the next holder's: no two references to it overlap.
#![allow(
    unsafe_code,
    reason = "a lock built on UnsafeCell; every block names its rule"
)]

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, Ordering};

use vmbridge::bridge::Lock;

/// Spins this many times before yielding the processor to a holder that was preempted.
const SPINS_BEFORE_YIELD: u32 = 64;

/// A spin lock holding a `T` (see the module docs). A panic inside [`Lock::with`]
/// releases it (no poisoning, as `StdLock` recovers a poisoned mutex).
pub struct SpinLock<T> {
    locked: AtomicBool,
    value: UnsafeCell<T>,
}

// SAFETY: rule SPIN_LOCK_EXCLUSIVE (module doc): the value is reached by one thread at a
// time, inside `with`, so `T: Send` suffices, as for `std::sync::Mutex<T>`.
unsafe impl<T: Send> Sync for SpinLock<T> {}

impl<T> std::fmt::Debug for SpinLock<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpinLock")
            .field("locked", &self.locked.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl<T> SpinLock<T> {
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

/// Gives the lock back when dropped (after the closure, or while unwinding from it).
struct Unlock<'a>(&'a AtomicBool);

impl Drop for Unlock<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

impl<T: Send> Lock<T> for SpinLock<T> {
    fn new(value: T) -> Self {
        Self {
            locked: AtomicBool::new(false),
            value: UnsafeCell::new(value),
        }
    }

    #[inline]
    fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        if self
            .locked
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            self.lock_contended();
        }
        let _unlock = Unlock(&self.locked);
        // SAFETY: rule SPIN_LOCK_EXCLUSIVE (module doc): this thread holds the lock until
        // `_unlock` drops, after `f` returned (or unwound), so this is the only reference
        // to the value meanwhile; `f` cannot keep it (the borrow ends with the call).
        f(unsafe { &mut *self.value.get() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn threaded_spin_lock_gives_exclusive_access() {
        let l = Arc::new(<SpinLock<u64> as Lock<u64>>::new(0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let l = l.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        l.with(|v| *v += 1);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        assert_eq!(l.with(|v| *v), 4000);
    }

    #[test]
    fn a_panic_inside_releases_the_lock() {
        let l = <SpinLock<u64> as Lock<u64>>::new(1);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            l.with(|_| panic!("inside"));
        }));
        assert!(r.is_err());
        assert_eq!(l.with(|v| *v), 1);
    }
}
