//! `KSpinLock<T>`: the core's [`Lock`] over an executive spin lock.
//!
//! C header: `wdm.h` (`KSPIN_LOCK`, `KeInitializeSpinLock`, `KeAcquireSpinLockRaiseToDpc`,
//! `KeReleaseSpinLock`).
//!
//! A `KSPIN_LOCK` (not a `WDFSPINLOCK`) because creating it cannot fail, so the core's
//! infallible `Lock::new` holds; it lives inside non-paged pool (the `Arc` of the bridge
//! or the WDF device context) and is never moved while held.

use core::cell::UnsafeCell;

use wdk_sys::{KIRQL, KSPIN_LOCK};

use crate::bridge::Lock;

/// A value protected by a `KSPIN_LOCK`; `with` runs at DISPATCH_LEVEL.
///
/// # Invariants
///
/// `value` is only accessed between `KeAcquireSpinLockRaiseToDpc(&lock)` and
/// `KeReleaseSpinLock(&lock, old)`, by one thread at a time.
pub struct KSpinLock<T> {
    lock: UnsafeCell<KSPIN_LOCK>,
    value: UnsafeCell<T>,
}

// SAFETY: rule SPINLOCK_EXCLUSIVE: `value` is only reached under the spin lock (type
// invariant), so sharing the lock between threads hands `T` to one thread at a time.
unsafe impl<T: Send> Sync for KSpinLock<T> {}
// SAFETY: rule SPINLOCK_EXCLUSIVE: moving the lock moves `T` (which is `Send`) and an
// unheld `KSPIN_LOCK` (a plain integer when not held).
unsafe impl<T: Send> Send for KSpinLock<T> {}

impl<T: Send> Lock<T> for KSpinLock<T> {
    fn new(value: T) -> Self {
        let this = Self {
            lock: UnsafeCell::new(0),
            value: UnsafeCell::new(value),
        };
        // SAFETY: rule SPINLOCK_INIT_BEFORE_USE: `KeInitializeSpinLock` (an ntoskrnl export
        // since Windows 8, generated in `wdk_sys::ntddk` for x64 and ARM64) may be called
        // at any IRQL on storage the caller owns; nobody can hold a lock that is being
        // created. The lock is initialised here, before `with` can acquire it; moving the
        // unheld lock afterwards moves a plain integer (see `Send` above).
        unsafe { wdk_sys::ntddk::KeInitializeSpinLock(this.lock.get()) };
        this
    }

    fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        // SAFETY: rule SPINLOCK_IRQL: callers run at <= DISPATCH_LEVEL (the core's entry
        // points are documented so); the lock lives in non-paged memory and is initialised.
        // `KeAcquireSpinLockRaiseToDpc` is an ntoskrnl export on x64 and ARM64
        // (`KeAcquireSpinLock` is only a macro over it).
        let old: KIRQL = unsafe { wdk_sys::ntddk::KeAcquireSpinLockRaiseToDpc(self.lock.get()) };
        // SAFETY: rule SPINLOCK_EXCLUSIVE: the lock is held, so this is the only reference
        // to `value` until the release below (`f` cannot re-enter: the core never calls
        // back into the lock from inside `with`).
        let value = unsafe { &mut *self.value.get() };
        let r = f(value);
        // SAFETY: rule SPINLOCK_IRQL: releases the lock acquired above, restoring `old`.
        unsafe { wdk_sys::ntddk::KeReleaseSpinLock(self.lock.get(), old) };
        r
    }
}
