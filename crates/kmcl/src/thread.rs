//! The identity of the current thread, to tell a call made *inside* a callback from one
//! made concurrently on another thread.
//!
//! C header: `wdm.h` (`KeGetCurrentThread`: on `_AMD64_` an inline
//! `(struct _KTHREAD *)__readgsqword(0x188)`), `ntddk.h` (`PsGetCurrentThread`).
//!
//! Used by [`ServerChannel::start`](crate::server::ServerChannel::start) and
//! [`pause`](crate::server::ServerChannel::pause): KMCL forbids them inside a
//! state-change callback of the channel (they would deadlock), but allows them from any
//! other thread while such a callback runs (they then wait for it).
//!
//! Where the identity comes from, as for the IRQL ([`crate::irql`]):
//!
//! * the function installed with [`set_thread_id_source`] (tests:
//!   `kmcl_sim::current_thread_id`; an ARM64 driver: a wrapper of `PsGetCurrentThread`);
//! * otherwise on Windows x64, `KeGetCurrentThread` as `wdm.h` defines it (the KTHREAD
//!   pointer at `gs:[0x188]`);
//! * otherwise unknown ([`current`] returns `None`), and callers stay conservative.

use core::sync::atomic::{AtomicPtr, Ordering};

/// A function returning a value unique to the calling thread (never 0).
pub type ThreadIdSource = fn() -> usize;

static SOURCE: AtomicPtr<()> = AtomicPtr::new(core::ptr::null_mut());

/// Installs the thread identity source (it replaces any previous one and wins over the
/// kernel read on every target).
pub fn set_thread_id_source(source: ThreadIdSource) {
    // CAST: a fn pointer stored as a data pointer; `current` casts it back to the same type.
    SOURCE.store(source as *mut (), Ordering::Release);
}

/// The current thread's identity, if known (never `Some(0)`).
#[must_use]
pub fn current() -> Option<usize> {
    let p = SOURCE.load(Ordering::Acquire);
    if !p.is_null() {
        // SAFETY: rule FN_HOOK_ROUNDTRIP: only `set_thread_id_source` stores into SOURCE,
        // and it stores a `ThreadIdSource`.
        let f = unsafe { core::mem::transmute::<*mut (), ThreadIdSource>(p) };
        return Some(f()).filter(|t| *t != 0);
    }
    kernel_thread()
}

#[cfg(all(windows, target_arch = "x86_64"))]
fn kernel_thread() -> Option<usize> {
    let thread: usize;
    // SAFETY: rule KE_GET_CURRENT_THREAD: wdm.h (_AMD64_) defines KeGetCurrentThread as
    // `__readgsqword(0x188)`; in kernel mode GS holds the KPCR of the current processor
    // and the read has no side effect.
    unsafe {
        core::arch::asm!("mov {}, gs:[0x188]", out(reg) thread, options(nostack, readonly, preserves_flags));
    }
    Some(thread).filter(|t| *t != 0)
}

#[cfg(not(all(windows, target_arch = "x86_64")))]
const fn kernel_thread() -> Option<usize> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixed() -> usize {
        42
    }

    #[test]
    fn installed_source_gives_the_identity() {
        set_thread_id_source(fixed);
        assert_eq!(current(), Some(42));
    }
}
