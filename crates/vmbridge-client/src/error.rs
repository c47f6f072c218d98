//! Errors: a `std::io::Error` carrying the driver's `NTSTATUS` (and the Win32 code).
//!
//! C header: `ntstatus.h`, `winerror.h`.

use std::fmt;
use std::io;

use vmbridge_abi::{NtStatus, ioctl_name};

/// The inner error of every `io::Error` a [`crate::Device`] call returns for a request
/// the driver failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DriverError {
    /// The request (`IOCTL_VMBRIDGE_*`, `ReadFile`, `WriteFile`, or a client step).
    pub op: &'static str,
    /// The `NTSTATUS` the request completed with.
    pub status: NtStatus,
    /// The Win32 error code (`GetLastError`) on Windows.
    pub win32: Option<u32>,
}

impl fmt::Display for DriverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} ({:#010x}): {}",
            self.op,
            self.status.name(),
            self.status.raw(),
            self.status.description()
        )?;
        if let Some(w) = self.win32 {
            write!(f, " [Win32 error {w}]")?;
        }
        Ok(())
    }
}

impl std::error::Error for DriverError {}

/// The `io::ErrorKind` closest to a status.
#[must_use]
pub fn kind_of(status: NtStatus) -> io::ErrorKind {
    match status {
        NtStatus::INVALID_PARAMETER
        | NtStatus::BUFFER_TOO_SMALL
        | NtStatus::REVISION_MISMATCH
        | NtStatus::INVALID_BUFFER_SIZE
        | NtStatus::DATATYPE_MISALIGNMENT_ERROR
        | NtStatus::INVALID_HANDLE => io::ErrorKind::InvalidInput,
        NtStatus::INVALID_DEVICE_REQUEST => io::ErrorKind::Unsupported,
        NtStatus::DEVICE_BUSY | NtStatus::INSUFFICIENT_RESOURCES => io::ErrorKind::ResourceBusy,
        NtStatus::DEVICE_NOT_CONNECTED => io::ErrorKind::NotConnected,
        NtStatus::DEVICE_NOT_READY | NtStatus::INVALID_DEVICE_STATE => io::ErrorKind::WouldBlock,
        NtStatus::CANCELLED => io::ErrorKind::Interrupted,
        NtStatus::NOT_FOUND => io::ErrorKind::NotFound,
        _ => io::ErrorKind::Other,
    }
}

/// An `io::Error` for request `code` (an IOCTL code, or 0 with `op` naming it) that
/// completed with `status`.
#[must_use]
pub fn driver_error(op: &'static str, status: NtStatus, win32: Option<u32>) -> io::Error {
    io::Error::new(kind_of(status), DriverError { op, status, win32 })
}

/// The C name of an IOCTL for [`DriverError::op`].
#[must_use]
pub const fn op_name(code: u32) -> &'static str {
    ioctl_name(code)
}

/// The `NTSTATUS` a driver request failed with, if `e` is such an error.
#[must_use]
pub fn ntstatus(e: &io::Error) -> Option<NtStatus> {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<DriverError>())
        .map(|d| d.status)
}

/// An `io::Error` for bytes the driver returned that do not parse (a driver of another
/// ABI version, or a transport bug).
#[must_use]
pub fn bad_output(op: &'static str, status: NtStatus) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        DriverError {
            op,
            status,
            win32: None,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_carry_status_and_name_it() {
        let e = driver_error("IOCTL_VMBRIDGE_SEND", NtStatus::INVALID_PARAMETER, Some(87));
        assert_eq!(ntstatus(&e), Some(NtStatus::INVALID_PARAMETER));
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert_eq!(
            e.to_string(),
            "IOCTL_VMBRIDGE_SEND: STATUS_INVALID_PARAMETER (0xc000000d): a flag, reserved field or packet id is wrong [Win32 error 87]"
        );
        assert_eq!(ntstatus(&io::Error::other("x")), None);
    }
}
