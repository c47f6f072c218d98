//! NTSTATUS values the driver returns to user mode (and the bridge core to the glue).
//!
//! C header: `ntstatus.h` (values), `kmcl_sys::status` (the KMCL subset).
//!
//! The ABI is portable and does not depend on `kmcl` or `wdk-sys`, so it carries its
//! own `#[must_use]` newtype; the glue converts it with [`NtStatus::raw`] /
//! [`NtStatus::from_raw`] (both are `i32`, the C `NTSTATUS`).

use core::fmt;

/// An `NTSTATUS` code, as returned to user mode in `IoStatus.Status`.
///
/// # Invariants
///
/// Any `i32` is representable; [`NtStatus::is_success`] follows `NT_SUCCESS`
/// (severity bits `00` or `01`).
#[must_use]
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct NtStatus(i32);

/// Reinterprets a 32-bit status pattern as the signed `NTSTATUS`.
const fn s(v: u32) -> i32 {
    i32::from_ne_bytes(v.to_ne_bytes())
}

impl NtStatus {
    /// `STATUS_SUCCESS`.
    pub const SUCCESS: Self = Self(0);
    /// `STATUS_PENDING`: the request was queued; a completion follows.
    pub const PENDING: Self = Self(s(0x0000_0103));
    /// `STATUS_BUFFER_OVERFLOW` (warning): the packet did not fit; the header says how
    /// many bytes are needed and the packet stays queued.
    pub const BUFFER_OVERFLOW: Self = Self(s(0x8000_0005));
    /// `STATUS_DEVICE_BUSY` (warning): too many sends are waiting for completions, or
    /// too many sends without a wait are still queued in KMCL (`MaxPostedSends`).
    pub const DEVICE_BUSY: Self = Self(s(0x8000_0011));
    /// `STATUS_INVALID_HANDLE`: a VMBus handle in a host-mode offer is not valid in the
    /// caller's process (from KMCL).
    pub const INVALID_HANDLE: Self = Self(s(0xC000_0008));
    /// `STATUS_INVALID_PARAMETER`: a flag or reserved field is wrong.
    pub const INVALID_PARAMETER: Self = Self(s(0xC000_000D));
    /// `STATUS_INVALID_DEVICE_REQUEST`: unknown IOCTL code; a write or send to a device in IC
    /// mode (`docs/ic.md`).
    pub const INVALID_DEVICE_REQUEST: Self = Self(s(0xC000_0010));
    /// `STATUS_BUFFER_TOO_SMALL`: a user buffer is shorter than its fixed header.
    /// For a batched read: the output cannot hold the oldest queued packet;
    /// `Information` is the output size it needs.
    pub const BUFFER_TOO_SMALL: Self = Self(s(0xC000_0023));
    /// `STATUS_REVISION_MISMATCH`: a header's `Size` or `Version` is not this ABI's.
    pub const REVISION_MISMATCH: Self = Self(s(0xC000_0059));
    /// `STATUS_INSUFFICIENT_RESOURCES`: a bounded table is full.
    pub const INSUFFICIENT_RESOURCES: Self = Self(s(0xC000_009A));
    /// `STATUS_DEVICE_NOT_CONNECTED`: the channel was closed (rescind or removal).
    pub const DEVICE_NOT_CONNECTED: Self = Self(s(0xC000_009D));
    /// `STATUS_DEVICE_NOT_READY`: the channel is not open yet, or is suspended.
    pub const DEVICE_NOT_READY: Self = Self(s(0xC000_00A3));
    /// `STATUS_INVALID_DEVICE_STATE`: a second host-mode offer on the same handle.
    pub const INVALID_DEVICE_STATE: Self = Self(s(0xC000_0184));
    /// `STATUS_CANCELLED`: the request was cancelled, or its handle closed.
    pub const CANCELLED: Self = Self(s(0xC000_0120));
    /// `STATUS_INVALID_BUFFER_SIZE`: a length inside a header does not fit the buffer
    /// or exceeds the configured maximum packet size.
    pub const INVALID_BUFFER_SIZE: Self = Self(s(0xC000_0206));
    /// `STATUS_NOT_FOUND`: no packet with this id awaits a response from this handle.
    pub const NOT_FOUND: Self = Self(s(0xC000_0225));
    /// `STATUS_DATATYPE_MISALIGNMENT_ERROR`: a header is not 8-byte aligned.
    pub const DATATYPE_MISALIGNMENT_ERROR: Self = Self(s(0xC000_02C5));

    /// Wraps a raw `NTSTATUS`.
    pub const fn from_raw(raw: i32) -> Self {
        Self(raw)
    }

    /// The raw `NTSTATUS`.
    #[must_use]
    pub const fn raw(self) -> i32 {
        self.0
    }

    /// `NT_SUCCESS(status)`: true for success and informational codes.
    #[must_use]
    pub const fn is_success(self) -> bool {
        self.0 >= 0
    }

    /// `Ok(())` for a success code, `Err(self)` otherwise.
    ///
    /// # Errors
    ///
    /// Returns `self` when `NT_SUCCESS` is false.
    pub const fn to_result(self) -> Result<(), Self> {
        if self.is_success() { Ok(()) } else { Err(self) }
    }

    /// The C name of the codes this crate uses, for logs and test messages.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::SUCCESS => "STATUS_SUCCESS",
            Self::PENDING => "STATUS_PENDING",
            Self::BUFFER_OVERFLOW => "STATUS_BUFFER_OVERFLOW",
            Self::DEVICE_BUSY => "STATUS_DEVICE_BUSY",
            Self::INVALID_HANDLE => "STATUS_INVALID_HANDLE",
            Self::INVALID_PARAMETER => "STATUS_INVALID_PARAMETER",
            Self::INVALID_DEVICE_REQUEST => "STATUS_INVALID_DEVICE_REQUEST",
            Self::BUFFER_TOO_SMALL => "STATUS_BUFFER_TOO_SMALL",
            Self::REVISION_MISMATCH => "STATUS_REVISION_MISMATCH",
            Self::INSUFFICIENT_RESOURCES => "STATUS_INSUFFICIENT_RESOURCES",
            Self::DEVICE_NOT_CONNECTED => "STATUS_DEVICE_NOT_CONNECTED",
            Self::DEVICE_NOT_READY => "STATUS_DEVICE_NOT_READY",
            Self::INVALID_DEVICE_STATE => "STATUS_INVALID_DEVICE_STATE",
            Self::CANCELLED => "STATUS_CANCELLED",
            Self::INVALID_BUFFER_SIZE => "STATUS_INVALID_BUFFER_SIZE",
            Self::NOT_FOUND => "STATUS_NOT_FOUND",
            Self::DATATYPE_MISALIGNMENT_ERROR => "STATUS_DATATYPE_MISALIGNMENT_ERROR",
            _ => "NTSTATUS",
        }
    }
}

impl NtStatus {
    /// Every code the ABI documents (for mapping a Win32 error back to its status).
    pub const ALL: [Self; 17] = [
        Self::SUCCESS,
        Self::PENDING,
        Self::BUFFER_OVERFLOW,
        Self::DEVICE_BUSY,
        Self::INVALID_HANDLE,
        Self::INVALID_PARAMETER,
        Self::INVALID_DEVICE_REQUEST,
        Self::BUFFER_TOO_SMALL,
        Self::REVISION_MISMATCH,
        Self::INSUFFICIENT_RESOURCES,
        Self::DEVICE_NOT_CONNECTED,
        Self::DEVICE_NOT_READY,
        Self::INVALID_DEVICE_STATE,
        Self::CANCELLED,
        Self::INVALID_BUFFER_SIZE,
        Self::NOT_FOUND,
        Self::DATATYPE_MISALIGNMENT_ERROR,
    ];

    /// What the code means for a `vmbridge` caller, in a few words (for messages).
    #[must_use]
    pub const fn description(self) -> &'static str {
        match self {
            Self::SUCCESS => "success",
            Self::PENDING => "the request is pending",
            Self::BUFFER_OVERFLOW => "the output buffer is too short for the packet or response",
            Self::DEVICE_BUSY => "too many sends are waiting for completions",
            Self::INVALID_HANDLE => "the VMBus handle is not valid in this process",
            Self::INVALID_PARAMETER => "a flag, reserved field or packet id is wrong",
            Self::INVALID_DEVICE_REQUEST => {
                "the device does not take this request (an unknown IOCTL, or a send in IC mode)"
            }
            Self::BUFFER_TOO_SMALL => "a buffer is shorter than its header or the packet",
            Self::REVISION_MISMATCH => "a header's Size or Version is not this ABI's",
            Self::INSUFFICIENT_RESOURCES => "a bounded table of the driver is full",
            Self::DEVICE_NOT_CONNECTED => "the channel is closed",
            Self::DEVICE_NOT_READY => "the channel is not open",
            Self::INVALID_DEVICE_STATE => "this handle already made an offer",
            Self::CANCELLED => "the request was cancelled",
            Self::INVALID_BUFFER_SIZE => "a length runs past the buffer or above MaxPacketSize",
            Self::NOT_FOUND => "no held packet with this id on this handle",
            Self::DATATYPE_MISALIGNMENT_ERROR => "a header is not 8-byte aligned",
            _ => "unknown status",
        }
    }
}

impl fmt::Debug for NtStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}({:#010x})", self.name(), self.0)
    }
}

impl fmt::Display for NtStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

#[cfg(all(test, feature = "alloc"))]
mod tests {
    extern crate alloc;
    use super::*;
    use alloc::format;

    #[test]
    fn nt_success_follows_severity_bits() {
        assert!(NtStatus::SUCCESS.is_success());
        assert!(NtStatus::PENDING.is_success());
        assert!(!NtStatus::BUFFER_OVERFLOW.is_success());
        assert!(!NtStatus::CANCELLED.is_success());
        assert_eq!(NtStatus::CANCELLED.raw(), -1_073_741_536);
        assert_eq!(NtStatus::CANCELLED.to_result(), Err(NtStatus::CANCELLED));
        assert_eq!(
            format!("{:?}", NtStatus::NOT_FOUND),
            "STATUS_NOT_FOUND(0xc0000225)"
        );
    }
}
