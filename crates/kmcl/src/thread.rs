//! The identity of the current thread, to tell a call made *inside* a callback from one
//! made concurrently on another thread.
//!
//! C header: `wdm.h` (`KeGetCurrentThread`: on `_AMD64_` an inline
//! `(struct _KTHREAD *)__readgsqword(0x188)`), `ntddk.h` (`PsGetCurrentThread`).
//!
//! Used by [`ServerChannel::start`](crate::server::ServerChannel::start) and
//! [`pause`](crate::server::ServerChannel::pause), and by a channel's teardown
//! ([`Channel::disable`](crate::channel::Channel::disable), `close`, drop): KMCL forbids
//! them inside a state-change callback of the channel, or inside one of its packet
//! callbacks (they would deadlock: they wait for that callback), but allows them from any
//! other thread while such a callback runs (they then wait for it). The state shims and
//! the packet shim of a PASSIVE_LEVEL delivery record the thread they run on.
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
///
/// # Safety
///
/// Rule THREAD_ID_SOURCE_UNIQUE: for as long as it is installed, `source` returns, on
/// every thread, a value that no other live thread gets (never 0), the same for every
/// call on that thread (as `PsGetCurrentThreadId`, or `kmcl_sim::current_thread_id` in
/// the simulator): a channel's teardown trusts it to tell a call inside the channel's
/// own state or PASSIVE_LEVEL packet callback (where tearing down would free what the
/// callback borrows) from one on another thread.
pub unsafe fn set_thread_id_source(source: ThreadIdSource) {
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
pub(crate) mod tests {
    extern crate std;

    use super::*;

    /// The address of a thread-local: unique among live threads, never 0.
    pub(crate) fn per_thread() -> usize {
        std::thread_local!(static MARK: u8 = const { 0 });
        MARK.with(|m| core::ptr::from_ref(m).addr())
    }

    #[test]
    fn installed_source_gives_the_identity() {
        // SAFETY: rule THREAD_ID_SOURCE_UNIQUE: `per_thread` is unique per live thread and
        // never 0.
        unsafe { set_thread_id_source(per_thread) };
        assert_eq!(current(), Some(per_thread()));
        let other = std::thread::spawn(|| (current(), per_thread()))
            .join()
            .unwrap();
        assert_eq!(other.0, Some(other.1));
        assert_ne!(other.1, per_thread());
    }
}
