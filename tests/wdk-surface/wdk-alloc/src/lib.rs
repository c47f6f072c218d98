//! Compile-only surface of `wdk-alloc` 0.4.2 (see `../../README.md`): `WdkAllocator`, the
//! global allocator over non-paged pool (`ExAllocatePool2`/`ExFreePool`), as in the real
//! crate.
#![no_std]

use core::alloc::{GlobalAlloc, Layout};

use wdk_sys::ntddk::{ExAllocatePool2, ExFreePool};
use wdk_sys::{POOL_FLAG_NON_PAGED, SIZE_T, ULONG};

/// The kernel-mode global allocator (non-paged pool, tag `rust`).
#[derive(Debug)]
pub struct WdkAllocator;

const RUST_TAG: ULONG = u32::from_ne_bytes(*b"rust");

// SAFETY: ExAllocatePool2 returns fresh, suitably aligned (16-byte) pool memory or null;
// ExFreePool frees what it returned.
unsafe impl GlobalAlloc for WdkAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: a plain pool allocation.
        let ptr =
            unsafe { ExAllocatePool2(POOL_FLAG_NON_PAGED, layout.size() as SIZE_T, RUST_TAG) };
        ptr.cast()
    }

    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from `alloc` (GlobalAlloc contract).
        unsafe { ExFreePool(ptr.cast()) }
    }
}
