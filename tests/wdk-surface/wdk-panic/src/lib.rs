//! Compile-only surface of `wdk-panic` 0.5.0 (see `../../README.md`): the kernel panic
//! handler, which bugchecks with code `RPNC` as the real crate does.
#![no_std]

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    const RUST_PANIC_BUGCHECK_CODE: u32 = u32::from_be_bytes(*b"RPNC");
    // SAFETY: KeBugCheckEx does not return; any IRQL.
    unsafe { wdk_sys::ntddk::KeBugCheckEx(RUST_PANIC_BUGCHECK_CODE, 0, 0, 0, 0) }
}
