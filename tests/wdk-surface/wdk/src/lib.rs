//! Compile-only surface of `wdk` 0.5.0 (see `../../README.md`): the items a KMDF driver
//! built on wdk-sys commonly uses. vmbridge's glue uses none of them; the crate is here
//! because the driver package depends on `wdk` on Windows, and the real crate's build
//! script needs the WDK.
#![no_std]

pub use wdk_sys::NT_SUCCESS as nt_success;

/// `DbgBreakPoint()`: breaks into the kernel debugger (wdk 0.5.0 `dbg_break`).
#[inline]
pub fn dbg_break() {
    // SAFETY: a breakpoint instruction; a kernel with no debugger attached treats it as
    // an unhandled exception, which is what `DbgBreakPoint` does too.
    #[cfg(target_arch = "aarch64")]
    unsafe {
        core::arch::asm!("brk #0xF000");
    }
    // SAFETY: as above.
    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    unsafe {
        core::arch::asm!("int 3");
    }
}
