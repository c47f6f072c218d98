//! The host-mode control ABI: `IOCTL_VMBRIDGE_CREATE_OFFER` and its request header.
//!
//! C header: `winioctl.h` (`CTL_CODE`); `vmbuskernelmodeclientlibapi.h`
//! (`VmbServerChannelInitSetTargetInterfaceId`, `VMBUS_SERVER_CHANNEL_INIT_FLAG_OFFER_AS_PIPE`,
//! `VmbConvertVmbusHandleToKernelHandle`); the Rust twin of the `vmbridge.h` section a
//! host tool includes.
//!
//! On the root partition `vmbridge` is a control device (`Root\VmBridgeHost`,
//! `inf/vmbridge_host.inx`). An administrator's program opens it and sends
//! [`IOCTL_VMBRIDGE_CREATE_OFFER`] once per handle: the driver offers a VMBus channel of
//! the given interface type and instance into the VM named by the VMBus handle, and from
//! then on that handle reads, writes and uses the guest-mode IOCTLs of
//! [`super::protocol`] on the offer's channel. Closing the handle rescinds the offer.
//!
//! The request is validated like every other header (see [`super::protocol`]):
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
#![allow(non_camel_case_types, non_snake_case)]

use super::protocol::{
    AlignedBuf, CTL_CODE, FILE_DEVICE_UNKNOWN, FILE_READ_ACCESS, FILE_WRITE_ACCESS,
    HEADER_ALIGNMENT, METHOD_BUFFERED, VMBRIDGE_ABI_VERSION,
};
use super::status::NtStatus;

/// Makes this handle's VMBus offer (see the module docs). Must be handled in the
/// caller's process context (`EvtIoInCallerContext`): the VMBus handle is the caller's.
pub const IOCTL_VMBRIDGE_CREATE_OFFER: u32 = CTL_CODE(
    FILE_DEVICE_UNKNOWN,
    0x810,
    METHOD_BUFFERED,
    FILE_READ_ACCESS | FILE_WRITE_ACCESS,
);

/// Offer the channel as a pipe (`VMBUS_SERVER_CHANNEL_INIT_FLAG_OFFER_AS_PIPE`; the
/// guest's channel must then be in pipe mode too).
pub const VMBRIDGE_OFFER_FLAG_PIPE: u32 = 0x1;
const OFFER_FLAGS: u32 = VMBRIDGE_OFFER_FLAG_PIPE;

/// `STATUS_INVALID_DEVICE_STATE` (ntstatus.h).
pub const STATUS_INVALID_DEVICE_STATE: NtStatus = NtStatus::from_raw(0xC000_0184_u32 as i32);
/// `STATUS_INVALID_HANDLE` (ntstatus.h).
pub const STATUS_INVALID_HANDLE: NtStatus = NtStatus::from_raw(0xC000_0008_u32 as i32);

/// Input of [`IOCTL_VMBRIDGE_CREATE_OFFER`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VMBRIDGE_CREATE_OFFER_REQUEST {
    /// `size_of::<VMBRIDGE_CREATE_OFFER_REQUEST>()` (56).
    pub Size: u16,
    /// `VMBRIDGE_ABI_VERSION`.
    pub Version: u16,
    /// `VMBRIDGE_OFFER_FLAG_*`.
    pub Flags: u32,
    /// The offer's interface type GUID (the guest's hardware ID `VMBUS\{type}`); not zero.
    pub InterfaceType: [u8; 16],
    /// The offer's interface instance GUID.
    pub InterfaceInstance: [u8; 16],
    /// The VM's VMBus handle, valid in the calling process; not 0.
    pub VmbusHandle: u64,
    /// Zero.
    pub Reserved: u64,
}

const _: () = assert!(size_of::<VMBRIDGE_CREATE_OFFER_REQUEST>() == 56);
const _: () = assert!(align_of::<VMBRIDGE_CREATE_OFFER_REQUEST>() == 8);

/// A GUID as `(Data1, Data2, Data3, Data4)`.
pub type GuidFields = (u32, u16, u16, [u8; 8]);

/// The Windows memory layout of a GUID given as a `u128` in reading order.
#[must_use]
pub const fn guid_bytes(guid: u128) -> [u8; 16] {
    let b = guid.to_be_bytes();
    [
        b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9], b[10], b[11], b[12], b[13],
        b[14], b[15],
    ]
}

/// The fields of a GUID stored in the Windows memory layout.
#[must_use]
pub const fn guid_fields(bytes: &[u8; 16]) -> GuidFields {
    (
        u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]),
        u16::from_le_bytes([bytes[4], bytes[5]]),
        u16::from_le_bytes([bytes[6], bytes[7]]),
        [
            bytes[8], bytes[9], bytes[10], bytes[11], bytes[12], bytes[13], bytes[14], bytes[15],
        ],
    )
}

fn take<const N: usize>(buf: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    if let Some(src) = buf.get(at..at + N) {
        out.copy_from_slice(src);
    }
    out
}

impl VMBRIDGE_CREATE_OFFER_REQUEST {
    /// A version-1 request.
    #[must_use]
    pub const fn new(flags: u32, interface_type: u128, instance: u128, vmbus_handle: u64) -> Self {
        Self {
            Size: size_of::<Self>() as u16,
            Version: VMBRIDGE_ABI_VERSION,
            Flags: flags,
            InterfaceType: guid_bytes(interface_type),
            InterfaceInstance: guid_bytes(instance),
            VmbusHandle: vmbus_handle,
            Reserved: 0,
        }
    }

    /// Serializes the request into the first 56 bytes of `out` (which must hold them).
    pub fn write_to(&self, out: &mut [u8]) {
        let mut bytes = [0u8; 56];
        bytes[0..2].copy_from_slice(&self.Size.to_le_bytes());
        bytes[2..4].copy_from_slice(&self.Version.to_le_bytes());
        bytes[4..8].copy_from_slice(&self.Flags.to_le_bytes());
        bytes[8..24].copy_from_slice(&self.InterfaceType);
        bytes[24..40].copy_from_slice(&self.InterfaceInstance);
        bytes[40..48].copy_from_slice(&self.VmbusHandle.to_le_bytes());
        bytes[48..56].copy_from_slice(&self.Reserved.to_le_bytes());
        if let Some(dst) = out.get_mut(..56) {
            dst.copy_from_slice(&bytes);
        }
    }

    /// Parses and validates the input of [`IOCTL_VMBRIDGE_CREATE_OFFER`].
    ///
    /// # Errors
    ///
    /// See the module's validation table.
    pub fn parse(buf: &[u8]) -> Result<Self, NtStatus> {
        if buf.len() < size_of::<Self>() {
            return Err(NtStatus::BUFFER_TOO_SMALL);
        }
        if buf.as_ptr().align_offset(HEADER_ALIGNMENT) != 0 {
            return Err(NtStatus::DATATYPE_MISALIGNMENT_ERROR);
        }
        let r = Self {
            Size: u16::from_le_bytes(take(buf, 0)),
            Version: u16::from_le_bytes(take(buf, 2)),
            Flags: u32::from_le_bytes(take(buf, 4)),
            InterfaceType: take(buf, 8),
            InterfaceInstance: take(buf, 24),
            VmbusHandle: u64::from_le_bytes(take(buf, 40)),
            Reserved: u64::from_le_bytes(take(buf, 48)),
        };
        if usize::from(r.Size) != size_of::<Self>() || r.Version != VMBRIDGE_ABI_VERSION {
            return Err(NtStatus::REVISION_MISMATCH);
        }
        if r.Flags & !OFFER_FLAGS != 0
            || r.Reserved != 0
            || r.InterfaceType == [0; 16]
            || r.VmbusHandle == 0
        {
            return Err(NtStatus::INVALID_PARAMETER);
        }
        Ok(r)
    }

    /// Whether [`VMBRIDGE_OFFER_FLAG_PIPE`] is set.
    #[must_use]
    pub const fn pipe(&self) -> bool {
        self.Flags & VMBRIDGE_OFFER_FLAG_PIPE != 0
    }
}

/// An aligned [`IOCTL_VMBRIDGE_CREATE_OFFER`] input (user-mode side, tests).
#[must_use]
pub fn build_create_offer(request: &VMBRIDGE_CREATE_OFFER_REQUEST) -> AlignedBuf {
    let mut b = AlignedBuf::zeroed(size_of::<VMBRIDGE_CREATE_OFFER_REQUEST>());
    request.write_to(b.as_mut_slice());
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    const TY: u128 = 0x2942_a8b6_8b33_4dd5_8dbb_6dba_460a_ea7b;

    #[test]
    fn create_offer_request_round_trips() {
        let r = VMBRIDGE_CREATE_OFFER_REQUEST::new(VMBRIDGE_OFFER_FLAG_PIPE, TY, 7, 0x1234);
        let b = build_create_offer(&r);
        assert_eq!(VMBRIDGE_CREATE_OFFER_REQUEST::parse(b.as_slice()), Ok(r));
        assert!(r.pipe());
        assert_eq!(guid_fields(&r.InterfaceType).0, 0x2942_a8b6);
        assert_eq!(guid_fields(&r.InterfaceType).1, 0x8b33);
        assert_eq!(guid_fields(&r.InterfaceType).3[0], 0x8d);
    }

    #[test]
    fn create_offer_request_rejects_every_bad_field() {
        let good = VMBRIDGE_CREATE_OFFER_REQUEST::new(0, TY, 1, 5);
        let with = |f: &dyn Fn(&mut VMBRIDGE_CREATE_OFFER_REQUEST)| {
            let mut r = good;
            f(&mut r);
            VMBRIDGE_CREATE_OFFER_REQUEST::parse(build_create_offer(&r).as_slice()).err()
        };
        assert_eq!(with(&|r| r.Size = 48), Some(NtStatus::REVISION_MISMATCH));
        assert_eq!(with(&|r| r.Version = 2), Some(NtStatus::REVISION_MISMATCH));
        assert_eq!(with(&|r| r.Flags = 2), Some(NtStatus::INVALID_PARAMETER));
        assert_eq!(with(&|r| r.Reserved = 1), Some(NtStatus::INVALID_PARAMETER));
        assert_eq!(
            with(&|r| r.InterfaceType = [0; 16]),
            Some(NtStatus::INVALID_PARAMETER)
        );
        assert_eq!(
            with(&|r| r.VmbusHandle = 0),
            Some(NtStatus::INVALID_PARAMETER)
        );
        let b = build_create_offer(&good);
        assert_eq!(
            VMBRIDGE_CREATE_OFFER_REQUEST::parse(&b.as_slice()[..55]),
            Err(NtStatus::BUFFER_TOO_SMALL)
        );
        let mut mis = AlignedBuf::zeroed_misaligned(56);
        good.write_to(mis.as_mut_slice());
        assert_eq!(
            VMBRIDGE_CREATE_OFFER_REQUEST::parse(mis.as_slice()),
            Err(NtStatus::DATATYPE_MISALIGNMENT_ERROR)
        );
    }
}
