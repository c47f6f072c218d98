//! The three opaque KMCL handles.
//!
//! C header: `vmbuskernelmodeclientlibapi.h`, `DECLARE_HANDLE(VMBCHANNEL)` etc.
//!
//! `DECLARE_HANDLE(X)` expands to `typedef struct X__ { int unused; } *X;`: a handle
//! is a pointer to a distinct opaque struct. They are declared here exactly that way
//! (as bindgen would), so a null handle is `core::ptr::null_mut()`.

use core::ffi::c_int;

/// The struct a [`VMBCHANNEL`] points to (never dereferenced).
#[repr(C)]
#[derive(Debug)]
pub struct VMBCHANNEL__ {
    pub unused: c_int,
}

/// The struct a [`VMBPACKET`] points to (never dereferenced).
#[repr(C)]
#[derive(Debug)]
pub struct VMBPACKET__ {
    pub unused: c_int,
}

/// The struct a [`VMBPACKETCOMPLETION`] points to (never dereferenced).
#[repr(C)]
#[derive(Debug)]
pub struct VMBPACKETCOMPLETION__ {
    pub unused: c_int,
}

/// A channel object (`VmbChannelAllocate` / `VmbChannelInitialize`).
pub type VMBCHANNEL = *mut VMBCHANNEL__;

/// An outgoing packet object (`VmbPacketAllocate` / `VmbPacketInitialize`).
pub type VMBPACKET = *mut VMBPACKET__;

/// An incoming packet, from `EvtVmbChannelProcessPacket` until
/// `VmbChannelPacketComplete`. Not a [`VMBPACKET`].
pub type VMBPACKETCOMPLETION = *mut VMBPACKETCOMPLETION__;
