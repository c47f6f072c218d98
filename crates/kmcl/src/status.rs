//! `NTSTATUS` as a typed error: [`NtStatus`], its named constants and [`Result`].
//!
//! C header: `ntstatus.h` / `ntdef.h` (`NTSTATUS`, `NT_SUCCESS`), as re-exported by
//! `kmcl_sys::status`.
//!
//! Every KMCL routine that can fail returns an `NTSTATUS`; [`to_result`] turns it into a
//! [`Result`] on the way in, and [`from_result`] turns a handler's [`Result`] back into
//! an `NTSTATUS` on the way out of a shim (`EvtVmbChannelOpened`).

use core::fmt;

use kmcl_sys::NTSTATUS;
use kmcl_sys::status as raw;

/// An `NTSTATUS` value.
///
/// Used as the error type of [`Result`]: a routine that fails returns the failure
/// status it got from KMCL, or one of the constants below for a check made by this
/// layer (each method's `# Errors` names which).
///
/// # Invariants
///
/// None beyond `NTSTATUS` itself: any 32-bit value is representable (a peer or KMCL
/// can hand back codes this crate does not name; they are kept, not rejected).
#[must_use]
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
#[repr(transparent)]
pub struct NtStatus(NTSTATUS);

/// `Result<T, NtStatus>`, the result type of every fallible call in this crate.
pub type Result<T = (), E = NtStatus> = core::result::Result<T, E>;

macro_rules! codes {
    ($($(#[$m:meta])* $name:ident = $raw:ident;)*) => {
        impl NtStatus {
            $($(#[$m])* pub const $name: NtStatus = NtStatus(raw::$raw);)*
        }

        const NAMES: &[(NTSTATUS, &str)] = &[$((raw::$raw, stringify!($raw)),)*];
    };
}

codes! {
    /// `STATUS_SUCCESS`.
    SUCCESS = STATUS_SUCCESS;
    /// `STATUS_PENDING`: `VmbChannelPacketGetExternalData` will redeliver the packet.
    PENDING = STATUS_PENDING;
    /// `STATUS_TIMEOUT` (a success code).
    TIMEOUT = STATUS_TIMEOUT;
    /// `STATUS_BUFFER_OVERFLOW`: a zero-timeout synchronous send did not fit the ring.
    BUFFER_OVERFLOW = STATUS_BUFFER_OVERFLOW;
    /// `STATUS_UNSUCCESSFUL`.
    UNSUCCESSFUL = STATUS_UNSUCCESSFUL;
    /// `STATUS_NOT_IMPLEMENTED`: the KMCL table lacks the routine.
    NOT_IMPLEMENTED = STATUS_NOT_IMPLEMENTED;
    /// `STATUS_INVALID_HANDLE`.
    INVALID_HANDLE = STATUS_INVALID_HANDLE;
    /// `STATUS_INVALID_PARAMETER`: an argument this layer rejected before calling KMCL.
    INVALID_PARAMETER = STATUS_INVALID_PARAMETER;
    /// `STATUS_INVALID_DEVICE_REQUEST`.
    INVALID_DEVICE_REQUEST = STATUS_INVALID_DEVICE_REQUEST;
    /// `STATUS_ACCESS_DENIED`: a write to read-only external data.
    ACCESS_DENIED = STATUS_ACCESS_DENIED;
    /// `STATUS_BUFFER_TOO_SMALL`.
    BUFFER_TOO_SMALL = STATUS_BUFFER_TOO_SMALL;
    /// `STATUS_INSUFFICIENT_RESOURCES`: `VmbPacketAllocate` returned NULL.
    INSUFFICIENT_RESOURCES = STATUS_INSUFFICIENT_RESOURCES;
    /// `STATUS_NOT_SUPPORTED`: the feature needs a newer KMCL interface version.
    NOT_SUPPORTED = STATUS_NOT_SUPPORTED;
    /// `STATUS_INVALID_PARAMETER_1`: an init routine called on a channel that is not Disabled.
    INVALID_PARAMETER_1 = STATUS_INVALID_PARAMETER_1;
    /// `STATUS_INVALID_PARAMETER_2`.
    INVALID_PARAMETER_2 = STATUS_INVALID_PARAMETER_2;
    /// `STATUS_INVALID_PARAMETER_3`.
    INVALID_PARAMETER_3 = STATUS_INVALID_PARAMETER_3;
    /// `STATUS_INVALID_PARAMETER_4`.
    INVALID_PARAMETER_4 = STATUS_INVALID_PARAMETER_4;
    /// `STATUS_CANCELLED`: a transaction cancelled by channel teardown.
    CANCELLED = STATUS_CANCELLED;
    /// `STATUS_INVALID_DEVICE_STATE`: the channel is not in a state that allows the call.
    INVALID_DEVICE_STATE = STATUS_INVALID_DEVICE_STATE;
    /// `STATUS_DEVICE_NOT_READY`.
    DEVICE_NOT_READY = STATUS_DEVICE_NOT_READY;
    /// `STATUS_DEVICE_REMOVED`: the other endpoint went away (rescind).
    DEVICE_REMOVED = STATUS_DEVICE_REMOVED;
    /// `STATUS_IO_TIMEOUT`.
    IO_TIMEOUT = STATUS_IO_TIMEOUT;
    /// `STATUS_DATA_ERROR`: malformed data from the other endpoint.
    DATA_ERROR = STATUS_DATA_ERROR;
    /// `STATUS_REVISION_MISMATCH`: the KMCL table's `Size`/`Version` is not one we know.
    REVISION_MISMATCH = STATUS_REVISION_MISMATCH;
    /// `STATUS_NOINTERFACE`.
    NOINTERFACE = STATUS_NOINTERFACE;
    /// `STATUS_MORE_PROCESSING_REQUIRED`.
    MORE_PROCESSING_REQUIRED = STATUS_MORE_PROCESSING_REQUIRED;
}

impl NtStatus {
    /// Wraps a raw `NTSTATUS`.
    pub const fn from_raw(raw: NTSTATUS) -> Self {
        Self(raw)
    }

    /// The raw `NTSTATUS`.
    #[must_use]
    pub const fn to_raw(self) -> NTSTATUS {
        self.0
    }

    /// `NT_SUCCESS(status)`: success and informational codes (`>= 0`).
    #[must_use]
    pub const fn is_success(self) -> bool {
        kmcl_sys::NT_SUCCESS(self.0)
    }

    /// The `ntstatus.h` name, if this crate knows it.
    #[must_use]
    pub fn name(self) -> Option<&'static str> {
        NAMES.iter().find(|(v, _)| *v == self.0).map(|(_, n)| *n)
    }
}

/// `NT_SUCCESS(raw) ? Ok(()) : Err(raw)`: a KMCL return value, inward.
///
/// # Errors
///
/// `Err(NtStatus(raw))` when `raw` is an error or warning code (`< 0`).
///
/// # Examples
///
/// ```
/// use kmcl::status::{to_result, NtStatus};
/// assert_eq!(to_result(0), Ok(()));
/// assert_eq!(to_result(NtStatus::CANCELLED.to_raw()), Err(NtStatus::CANCELLED));
/// ```
pub const fn to_result(raw: NTSTATUS) -> Result {
    if kmcl_sys::NT_SUCCESS(raw) {
        Ok(())
    } else {
        Err(NtStatus(raw))
    }
}

/// A handler's [`Result`], outward: `Ok` is `STATUS_SUCCESS`, `Err(s)` is `s`.
///
/// A handler that returns `Err` with a success code would silently report success;
/// such a value is mapped to `STATUS_UNSUCCESSFUL` so that a failure stays a failure.
#[must_use]
pub const fn from_result(result: Result) -> NTSTATUS {
    match result {
        Ok(()) => raw::STATUS_SUCCESS,
        Err(s) if kmcl_sys::NT_SUCCESS(s.0) => raw::STATUS_UNSUCCESSFUL,
        Err(s) => s.0,
    }
}

impl From<NtStatus> for NTSTATUS {
    fn from(s: NtStatus) -> NTSTATUS {
        s.0
    }
}

impl fmt::Debug for NtStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        #[expect(
            clippy::cast_sign_loss,
            reason = "NTSTATUS is printed as its unsigned hex image"
        )]
        let hex = self.0 as u32;
        match self.name() {
            Some(n) => write!(f, "{n}({hex:#010X})"),
            None => write!(f, "NtStatus({hex:#010X})"),
        }
    }
}

impl fmt::Display for NtStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::format;

    use super::*;

    #[test]
    fn to_result_maps_nt_success_to_ok() {
        assert_eq!(to_result(raw::STATUS_SUCCESS), Ok(()));
        assert_eq!(to_result(raw::STATUS_PENDING), Ok(()));
        assert_eq!(to_result(raw::STATUS_CANCELLED), Err(NtStatus::CANCELLED));
        assert_eq!(
            to_result(raw::STATUS_BUFFER_OVERFLOW),
            Err(NtStatus::BUFFER_OVERFLOW)
        );
    }

    #[test]
    fn from_result_never_turns_a_failure_into_success() {
        assert_eq!(from_result(Ok(())), raw::STATUS_SUCCESS);
        assert_eq!(
            from_result(Err(NtStatus::DEVICE_REMOVED)),
            raw::STATUS_DEVICE_REMOVED
        );
        assert_eq!(
            from_result(Err(NtStatus::SUCCESS)),
            raw::STATUS_UNSUCCESSFUL
        );
    }

    #[test]
    fn display_names_known_codes_and_keeps_unknown_ones() {
        assert_eq!(
            format!("{}", NtStatus::CANCELLED),
            "STATUS_CANCELLED(0xC0000120)"
        );
        assert_eq!(
            format!("{:?}", NtStatus::from_raw(0x1234)),
            "NtStatus(0x00001234)"
        );
    }
}
