//! Host mode: `IOCTL_VMBRIDGE_CREATE_OFFER` and its statuses.
//!
//! C header: `vmbuskernelmodeclientlibapi.h` (`VmbServerChannelInitSetTargetInterfaceId`,
//! `VMBUS_SERVER_CHANNEL_INIT_FLAG_OFFER_AS_PIPE`, `VmbConvertVmbusHandleToKernelHandle`);
//! `include/vmbridge.h` (the C twin).
//!
//! On the root partition `vmbridge` is a control device (`Root\VmBridgeHost`,
//! `inf/vmbridge_host.inx`). An administrator's program opens it and sends
//! [`crate::IOCTL_VMBRIDGE_CREATE_OFFER`] once per handle: the driver offers a VMBus
//! channel of the given interface type and instance into the VM named by the VMBus
//! handle, and from then on that handle reads, writes and uses the guest-mode IOCTLs on
//! the offer's channel. Closing the handle rescinds the offer.
//!
//! The request ([`crate::VMBRIDGE_CREATE_OFFER_REQUEST`]) is validated like every other
//! header:
//!
//! | problem | status |
//! |---|---|
//! | buffer shorter than the header | `STATUS_BUFFER_TOO_SMALL` |
//! | not 8-byte aligned | `STATUS_DATATYPE_MISALIGNMENT_ERROR` |
//! | `Size`/`Version` | `STATUS_REVISION_MISMATCH` |
//! | unknown flag, non-zero `Reserved`, all-zero `InterfaceType`, `VmbusHandle` 0 | `STATUS_INVALID_PARAMETER` |
//! | a second offer on the same handle | `STATUS_INVALID_DEVICE_STATE` |
//! | a `VmbusHandle` that is not valid in the caller's process | `STATUS_INVALID_HANDLE` (from KMCL) |
//!
//! GUIDs are 16 bytes in the Windows `GUID` memory layout (`Data1` as a little-endian
//! `u32`, `Data2`/`Data3` as little-endian `u16`, `Data4` as 8 bytes), as `memcpy` of a
//! C `GUID` gives.

use crate::status::NtStatus;

/// `STATUS_INVALID_DEVICE_STATE` (ntstatus.h): a second offer on the same handle.
pub const STATUS_INVALID_DEVICE_STATE: NtStatus = NtStatus::INVALID_DEVICE_STATE;
/// `STATUS_INVALID_HANDLE` (ntstatus.h): the VMBus handle is not the caller's.
pub const STATUS_INVALID_HANDLE: NtStatus = NtStatus::INVALID_HANDLE;
