//! The lock the bridge state lives under: a spin lock usable at DISPATCH_LEVEL.
//!
//! C header: `wdfsync.h` (`WdfSpinLockAcquire`/`WdfSpinLockRelease`), `wdm.h`
//! (`KeAcquireSpinLock`).
//!
//! The core is written against [`Lock`]; the host provides [`StdLock`] (a
//! `std::sync::Mutex`), the KMDF glue provides a `WDFSPINLOCK`-backed lock
//! (`driver/kmdf/lock.rs`). Critical sections in the core are short, never block, never
//! allocate and never call out (requests and packets are completed after the lock is
//! released), which is what a spin lock at DISPATCH_LEVEL requires.

/// A mutual-exclusion cell holding a `T`.
///
/// Implementations must be usable at IRQL <= DISPATCH_LEVEL in the kernel (a spin lock)
/// and must not be re-entered by the closure (the core never does).
pub trait Lock<T>: Send + Sync {
    /// Wraps `value`. PASSIVE_LEVEL (may allocate a framework object in the kernel).
    fn new(value: T) -> Self;

    /// Runs `f` with exclusive access. IRQL <= DISPATCH_LEVEL; returns at the caller's
    /// IRQL.
    fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R;
}

/// The host lock: a `std::sync::Mutex`. A poisoned mutex (a panic while locked, only
/// possible in a failing test) is recovered rather than propagated.
#[cfg(not(windows))]
#[derive(Debug, Default)]
pub struct StdLock<T>(std::sync::Mutex<T>);

#[cfg(not(windows))]
impl<T: Send> Lock<T> for StdLock<T> {
    fn new(value: T) -> Self {
        Self(std::sync::Mutex::new(value))
    }

    fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        let mut guard = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut guard)
    }
}

/// Runs `add` 1,000 times on each of four threads sharing `l` (a test of a lock: the
/// count after shows whether an update was lost).
#[cfg(all(test, not(windows)))]
pub(crate) fn add_on_four_threads<L: Send + Sync + 'static>(
    l: std::sync::Arc<L>,
    add: fn(&L),
) -> std::sync::Arc<L> {
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let l = l.clone();
            std::thread::spawn(move || {
                for _ in 0..1000 {
                    add(&l);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("thread");
    }
    l
}

#[cfg(all(test, not(windows)))]
mod tests {
    use super::*;

    #[test]
    fn std_lock_gives_exclusive_access_across_threads() {
        let l = add_on_four_threads(
            std::sync::Arc::new(<StdLock<u64> as Lock<u64>>::new(0)),
            |l| l.with(|v| *v += 1),
        );
        assert_eq!(l.with(|v| *v), 4000);
    }
}
