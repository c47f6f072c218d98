//! IRQL as types: the zero-sized proof tokens [`Passive`] and [`Dispatch`], and [`current`].
//!
//! C header: `wdm.h` (`KeGetCurrentIrql`, `PASSIVE_LEVEL`, `DISPATCH_LEVEL`);
//! `vmbuskernelmodeclientlibapi.h` SAL (`_IRQL_requires_(PASSIVE_LEVEL)`,
//! `_IRQL_requires_max_(DISPATCH_LEVEL)`); `docs/irql.md`.
//!
//! A token is a capability in the Tock sense (`kernel/src/capabilities.rs`): only code
//! that knows the level mints one — the shims of this crate, which KMCL calls at a
//! documented level, or a driver's own trusted code through the `unsafe fn assume`
//! constructors. Everyone else can only pass one on. Routines that may block
//! (`VmbChannelDisable`, `VmbChannelSendSynchronousRequest` with a wait, GPADL creation)
//! take a [`Passive`]; [`Packet::defer`](crate::packet::Packet::defer) takes a
//! [`Dispatch`]. Tokens are `!Send` and `!Sync`: a level belongs to one processor at one
//! moment, so a token cannot be moved to another thread.
//!
//! # Checking
//!
//! In debug builds `assume` compares the claim with [`current`]. A mismatch is a driver
//! bug (the driver claimed a level it is not at), never something the other endpoint can
//! cause. Because `assume` runs inside `extern "system"` frames, where a panic aborts
//! (a bugcheck in the kernel), a mismatch is *recorded*, not panicked on: it increments
//! [`mismatches`] and calls the hook set with [`set_mismatch_hook`] (a test asserts on
//! the counter; a Windows debug build can install a hook that calls `KdBreakPoint`).
//!
//! # Where the level comes from
//!
//! * Windows x64: `KeGetCurrentIrql` as `wdm.h` defines it for `_AMD64_`: `__readcr8()`
//!   (here `mov {}, cr8`).
//! * Windows ARM64: `wdm.h` for `_ARM64_` reads `KeGetPcr()->CurrentIrql`, where
//!   `KeGetPcr()` is `__getReg(18)` (x18 holds the KPCR in kernel mode) and
//!   `CurrentIrql` is at offset `PcCurrentIrql = 0x38` (`ksarm64.h`, Windows SDK,
//!   `microsoft/win32metadata:generation/WinSDK/RecompiledIdlHeaders/shared/ksarm64.h`):
//!   here `ldrb {:w}, [x18, #0x38]`.
//! * Any host (tests, the simulator): the function installed with
//!   [`set_host_irql_source`] (`kmcl_sim::current_irql`); PASSIVE_LEVEL if none is.
//!
//! A hook, when installed, wins on every target, so a user-mode test on Windows never
//! executes the privileged kernel read.

use core::marker::PhantomData;
use core::sync::atomic::{AtomicPtr, AtomicU32, Ordering};

/// `KIRQL`.
pub type Kirql = u8;
/// `PASSIVE_LEVEL`.
pub const PASSIVE_LEVEL: Kirql = 0;
/// `APC_LEVEL`.
pub const APC_LEVEL: Kirql = 1;
/// `DISPATCH_LEVEL`.
pub const DISPATCH_LEVEL: Kirql = 2;

/// Proof that the caller runs at `PASSIVE_LEVEL`.
///
/// Required by every routine that may block. Minted by the state-change shims (KMCL
/// calls them at PASSIVE_LEVEL), by the packet shim for a packet delivered at
/// PASSIVE_LEVEL, by [`Passive::try_current`], or by trusted code with
/// [`Passive::assume`].
#[derive(Clone, Copy, Debug)]
pub struct Passive {
    _not_send: PhantomData<*mut ()>,
}

/// Proof that the caller may be running at up to `DISPATCH_LEVEL`: no blocking, no
/// pageable memory.
///
/// Minted by the packet shim for a packet delivered above PASSIVE_LEVEL, or by trusted
/// code with [`Dispatch::assume`]. Nothing that blocks accepts it.
#[derive(Clone, Copy, Debug)]
pub struct Dispatch {
    _not_send: PhantomData<*mut ()>,
}

/// The level a packet was delivered at, as a token.
#[derive(Clone, Copy, Debug)]
pub enum Level {
    /// Delivered at `PASSIVE_LEVEL` (passive processing mode, or a deferred packet).
    Passive(Passive),
    /// Delivered at up to `DISPATCH_LEVEL` (the default processing mode).
    Dispatch(Dispatch),
}

impl Level {
    /// The [`Passive`] token, if delivered at PASSIVE_LEVEL.
    #[must_use]
    pub const fn passive(self) -> Option<Passive> {
        match self {
            Level::Passive(p) => Some(p),
            Level::Dispatch(_) => None,
        }
    }

    /// The [`Dispatch`] token, if delivered above PASSIVE_LEVEL.
    #[must_use]
    pub const fn dispatch(self) -> Option<Dispatch> {
        match self {
            Level::Dispatch(d) => Some(d),
            Level::Passive(_) => None,
        }
    }

    /// Reads [`current`] and mints the matching token.
    ///
    /// # Safety
    ///
    /// The caller runs in a context where the IRQL does not change before the token is
    /// dropped (true for a KMCL callback frame, which owns its IRQL).
    pub(crate) unsafe fn from_current() -> Self {
        if current() == PASSIVE_LEVEL {
            Level::Passive(Passive {
                _not_send: PhantomData,
            })
        } else {
            Level::Dispatch(Dispatch {
                _not_send: PhantomData,
            })
        }
    }
}

impl Passive {
    /// Mints a token without a check (a debug build records a mismatch, see the module docs).
    ///
    /// # Safety
    ///
    /// The caller runs at `PASSIVE_LEVEL` for as long as the token (and copies of it)
    /// lives: for example a KMDF `EvtDeviceReleaseHardware` or `EvtDriverDeviceAdd`
    /// callback, which the framework calls at PASSIVE_LEVEL.
    #[must_use]
    pub unsafe fn assume() -> Self {
        check(|l| l == PASSIVE_LEVEL, PASSIVE_LEVEL);
        Passive {
            _not_send: PhantomData,
        }
    }

    /// A token if [`current`] says PASSIVE_LEVEL now.
    ///
    /// Sound as long as the calling code does not itself raise the IRQL while holding
    /// the token (raising is `unsafe` territory: `KeRaiseIrql`, spin locks).
    #[must_use]
    pub fn try_current() -> Option<Self> {
        (current() == PASSIVE_LEVEL).then_some(Passive {
            _not_send: PhantomData,
        })
    }
}

impl Dispatch {
    /// Mints a token (a debug build records a mismatch above DISPATCH_LEVEL).
    ///
    /// # Safety
    ///
    /// The caller runs at or below `DISPATCH_LEVEL` and treats the context as
    /// DISPATCH_LEVEL (no blocking, nonpaged memory only) while the token lives.
    #[must_use]
    pub unsafe fn assume() -> Self {
        check(|l| l <= DISPATCH_LEVEL, DISPATCH_LEVEL);
        Dispatch {
            _not_send: PhantomData,
        }
    }
}

/// A function returning the current IRQL, as installed by [`set_host_irql_source`].
pub type IrqlSource = fn() -> Kirql;
/// A hook told `(claimed, actual)` when a token was minted at the wrong level.
pub type MismatchHook = fn(Kirql, Kirql);

static HOST_SOURCE: AtomicPtr<()> = AtomicPtr::new(core::ptr::null_mut());
static MISMATCH_HOOK: AtomicPtr<()> = AtomicPtr::new(core::ptr::null_mut());
static MISMATCHES: AtomicU32 = AtomicU32::new(0);

/// Installs the host's IRQL source (tests: `kmcl_sim::current_irql`). It replaces any
/// previous source and wins over the kernel read on every target.
///
/// # Safety
///
/// Rule IRQL_SOURCE_TRUTHFUL: for as long as it is installed, `source` returns, on every
/// thread, the IRQL the caller runs at (in a simulator, the IRQL it models for the
/// thread, as `kmcl_sim::current_irql`): the tokens minted from it without `unsafe`
/// ([`Passive::try_current`] and the like) are what permit KMCL calls with IRQL
/// preconditions.
pub unsafe fn set_host_irql_source(source: IrqlSource) {
    // CAST: a `fn` pointer is stored as a data pointer; `load_fn` casts it back to the same type.
    HOST_SOURCE.store(source as *mut (), Ordering::Release);
}

/// Installs a hook called on every recorded token mismatch (debug builds).
pub fn set_mismatch_hook(hook: MismatchHook) {
    // CAST: as in `set_host_irql_source`.
    MISMATCH_HOOK.store(hook as *mut (), Ordering::Release);
}

/// How many tokens were minted at a level they do not prove (debug builds; 0 in release).
#[must_use]
pub fn mismatches() -> u32 {
    MISMATCHES.load(Ordering::Relaxed)
}

/// The current IRQL (see the module docs for the source on each target).
#[must_use]
#[inline]
pub fn current() -> Kirql {
    let p = HOST_SOURCE.load(Ordering::Acquire);
    if !p.is_null() {
        // SAFETY: rule FN_HOOK_ROUNDTRIP: only `set_host_irql_source` stores into
        // HOST_SOURCE, and it stores an `IrqlSource`; a fn pointer round-trips through
        // `*mut ()` on every target Rust supports for this crate (same size, no tag).
        let f = unsafe { core::mem::transmute::<*mut (), IrqlSource>(p) };
        return f();
    }
    kernel_irql()
}

#[cfg(all(windows, target_arch = "x86_64"))]
#[inline]
fn kernel_irql() -> Kirql {
    let cr8: u64;
    // SAFETY: rule KE_GET_CURRENT_IRQL: wdm.h (_AMD64_) defines KeGetCurrentIrql as
    // `(KIRQL)__readcr8()`; kernel-mode code (CPL 0) may read CR8, it has no side effect.
    unsafe {
        core::arch::asm!("mov {}, cr8", out(reg) cr8, options(nomem, nostack, preserves_flags));
    }
    #[expect(
        clippy::cast_possible_truncation,
        reason = "CR8 holds the 4-bit TPR = IRQL"
    )]
    let irql = cr8 as Kirql;
    irql
}

#[cfg(all(windows, target_arch = "aarch64"))]
#[inline]
fn kernel_irql() -> Kirql {
    let irql: u32;
    // SAFETY: rule KE_GET_CURRENT_IRQL: wdm.h (_ARM64_) reads KeGetPcr()->CurrentIrql;
    // in kernel mode x18 holds the KPCR of the current processor and CurrentIrql is the
    // byte at PcCurrentIrql = 0x38 (ksarm64.h). The read has no side effect.
    unsafe {
        core::arch::asm!("ldrb {:w}, [x18, #0x38]", out(reg) irql, options(readonly, nostack, preserves_flags));
    }
    #[expect(
        clippy::cast_possible_truncation,
        reason = "ldrb zero-extends one byte"
    )]
    let irql = irql as Kirql;
    irql
}

#[cfg(not(all(windows, any(target_arch = "x86_64", target_arch = "aarch64"))))]
#[inline]
fn kernel_irql() -> Kirql {
    PASSIVE_LEVEL
}

#[inline]
fn check(ok: impl Fn(Kirql) -> bool, claimed: Kirql) {
    if cfg!(debug_assertions) {
        let actual = current();
        if !ok(actual) {
            record_mismatch(claimed, actual);
        }
    }
}

#[cold]
fn record_mismatch(claimed: Kirql, actual: Kirql) {
    MISMATCHES.fetch_add(1, Ordering::Relaxed);
    let p = MISMATCH_HOOK.load(Ordering::Acquire);
    if !p.is_null() {
        // SAFETY: rule FN_HOOK_ROUNDTRIP: only `set_mismatch_hook` stores into
        // MISMATCH_HOOK, and it stores a `MismatchHook`.
        let f = unsafe { core::mem::transmute::<*mut (), MismatchHook>(p) };
        f(claimed, actual);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The source is process-wide; these tests install sources that agree with each other.
    fn dispatch() -> Kirql {
        DISPATCH_LEVEL
    }

    #[test]
    fn passive_token_is_refused_at_dispatch_level() {
        // SAFETY: rule IRQL_SOURCE_TRUTHFUL: the lib tests run no KMCL code (only
        // tokens, inspected), and every source they install says DISPATCH_LEVEL.
        unsafe { set_host_irql_source(dispatch) };
        assert!(Passive::try_current().is_none());
        // SAFETY: test: the Level is only inspected, never used to call KMCL.
        let level = unsafe { Level::from_current() };
        assert!(level.dispatch().is_some() && level.passive().is_none());
    }

    #[test]
    fn tokens_are_zero_sized() {
        assert_eq!(core::mem::size_of::<Passive>(), 0);
        assert_eq!(core::mem::size_of::<Dispatch>(), 0);
    }
}
