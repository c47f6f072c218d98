//! Kernel types the KMCL header uses, as ABI-identical local definitions.
//!
//! C header: `wdm.h`, `ntdef.h`, `guiddef.h` (as included by `vmbuskernelmodeclientlibapi.h`).
//!
//! Layouts are those of the LLP64 Windows targets (x64, ARM64). `DEVICE_OBJECT` and
//! the other objects KMCL only passes by pointer are opaque here; a driver casts
//! between these pointers and `wdk-sys`'s at its glue.

use core::ffi::c_void;

/// `NTSTATUS`: a signed 32-bit status; negative values are errors.
pub type NTSTATUS = i32;
/// `BOOLEAN`: `UCHAR`, `TRUE` = 1, `FALSE` = 0.
pub type BOOLEAN = u8;
/// `UCHAR`.
pub type UCHAR = u8;
/// `USHORT`.
pub type USHORT = u16;
/// `CSHORT`.
pub type CSHORT = i16;
/// `ULONG` (32 bits on LLP64).
pub type ULONG = u32;
/// `PULONG`.
pub type PULONG = *mut ULONG;
/// `UINT8`.
pub type UINT8 = u8;
/// `UINT16`.
pub type UINT16 = u16;
/// `PUINT16`.
pub type PUINT16 = *mut UINT16;
/// `UINT32`.
pub type UINT32 = u32;
/// `PUINT32`.
pub type PUINT32 = *mut UINT32;
/// `UINT64`.
pub type UINT64 = u64;
/// `ULONG_PTR`.
pub type ULONG_PTR = usize;
/// `PVOID`.
pub type PVOID = *mut c_void;
/// `HANDLE`.
pub type HANDLE = *mut c_void;
/// `PHANDLE`.
pub type PHANDLE = *mut HANDLE;
/// `PFN_NUMBER` (`ULONG_PTR`): a physical page frame number.
pub type PFN_NUMBER = ULONG_PTR;
/// `PPFN_NUMBER`.
pub type PPFN_NUMBER = *mut PFN_NUMBER;
/// `LARGE_INTEGER`, as its `QuadPart`: KMCL only reads `QuadPart`.
pub type LARGE_INTEGER = i64;
/// `PLARGE_INTEGER`.
pub type PLARGE_INTEGER = *mut LARGE_INTEGER;

/// `TRUE`.
pub const TRUE: BOOLEAN = 1;
/// `FALSE`.
pub const FALSE: BOOLEAN = 0;

/// `GUID` (`guiddef.h`): 16 bytes, 4-byte aligned.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GUID {
    pub Data1: u32,
    pub Data2: u16,
    pub Data3: u16,
    pub Data4: [u8; 8],
}

impl GUID {
    /// The same value `DEFINE_GUID(name, l, w1, w2, b1..b8)` produces.
    #[must_use]
    pub const fn from_fields(data1: u32, data2: u16, data3: u16, data4: [u8; 8]) -> Self {
        Self {
            Data1: data1,
            Data2: data2,
            Data3: data3,
            Data4: data4,
        }
    }

    /// `GUID_NULL`.
    #[must_use]
    pub const fn zeroed() -> Self {
        Self {
            Data1: 0,
            Data2: 0,
            Data3: 0,
            Data4: [0; 8],
        }
    }
}

/// `LPCGUID`.
pub type LPCGUID = *const GUID;
/// `LPGUID`.
pub type LPGUID = *mut GUID;

/// `UNICODE_STRING` (counted UTF-16; lengths in bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct UNICODE_STRING {
    pub Length: USHORT,
    pub MaximumLength: USHORT,
    pub Buffer: *mut u16,
}

/// `PUNICODE_STRING`.
pub type PUNICODE_STRING = *mut UNICODE_STRING;
/// `PCUNICODE_STRING`.
pub type PCUNICODE_STRING = *const UNICODE_STRING;

/// `EPROCESS` (opaque; only `MDL::Process` points to it).
#[repr(C)]
#[derive(Debug)]
pub struct EPROCESS {
    _opaque: [u8; 0],
}

/// `MDL` (`wdm.h`): the header of a memory descriptor list. The PFN array
/// (`PFN_NUMBER[]`, one per page spanned) follows it in memory.
#[repr(C)]
#[derive(Debug)]
pub struct MDL {
    pub Next: *mut MDL,
    pub Size: CSHORT,
    pub MdlFlags: CSHORT,
    pub Process: *mut EPROCESS,
    pub MappedSystemVa: PVOID,
    pub StartVa: PVOID,
    pub ByteCount: ULONG,
    pub ByteOffset: ULONG,
}

/// `PMDL`.
pub type PMDL = *mut MDL;

/// `MDL_MAPPED_TO_SYSTEM_VA`.
pub const MDL_MAPPED_TO_SYSTEM_VA: CSHORT = 0x0001;
/// `MDL_PAGES_LOCKED`.
pub const MDL_PAGES_LOCKED: CSHORT = 0x0002;
/// `MDL_SOURCE_IS_NONPAGED_POOL`.
pub const MDL_SOURCE_IS_NONPAGED_POOL: CSHORT = 0x0004;
/// `MDL_PARTIAL`.
pub const MDL_PARTIAL: CSHORT = 0x0010;

/// `DEVICE_OBJECT` (opaque; KMCL only passes `PDEVICE_OBJECT`).
#[repr(C)]
#[derive(Debug)]
pub struct DEVICE_OBJECT {
    _opaque: [u8; 0],
}

/// `PDEVICE_OBJECT`.
pub type PDEVICE_OBJECT = *mut DEVICE_OBJECT;

/// `PINTERFACE_REFERENCE`: `VOID (*)(PVOID Context)`.
pub type PINTERFACE_REFERENCE = Option<unsafe extern "system" fn(Context: PVOID)>;
/// `PINTERFACE_DEREFERENCE`: `VOID (*)(PVOID Context)`.
pub type PINTERFACE_DEREFERENCE = Option<unsafe extern "system" fn(Context: PVOID)>;

/// `INTERFACE` (`wdm.h`): the standard header of a queried driver interface.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct INTERFACE {
    pub Size: USHORT,
    pub Version: USHORT,
    pub Context: PVOID,
    pub InterfaceReference: PINTERFACE_REFERENCE,
    pub InterfaceDereference: PINTERFACE_DEREFERENCE,
}

/// `PINTERFACE`.
pub type PINTERFACE = *mut INTERFACE;

/// `NT_SUCCESS(Status)`.
#[must_use]
pub const fn NT_SUCCESS(status: NTSTATUS) -> bool {
    status >= 0
}

/// `PAGE_SIZE` on x64 and ARM64.
pub const PAGE_SIZE: usize = 0x1000;
/// `PAGE_SHIFT` on x64 and ARM64.
pub const PAGE_SHIFT: u32 = 12;

/// The `NTSTATUS` values that the KMCL header and its documentation name
/// (`ntstatus.h`), for callers and implementations of the table.
pub mod status {
    use super::NTSTATUS;

    #[allow(clippy::cast_possible_wrap)]
    const fn s(v: u32) -> NTSTATUS {
        v as NTSTATUS
    }

    pub const STATUS_SUCCESS: NTSTATUS = 0;
    pub const STATUS_PENDING: NTSTATUS = s(0x0000_0103);
    pub const STATUS_MORE_PROCESSING_REQUIRED: NTSTATUS = s(0xC000_0016);
    pub const STATUS_BUFFER_OVERFLOW: NTSTATUS = s(0x8000_0005);
    pub const STATUS_UNSUCCESSFUL: NTSTATUS = s(0xC000_0001);
    pub const STATUS_NOT_IMPLEMENTED: NTSTATUS = s(0xC000_0002);
    pub const STATUS_INVALID_HANDLE: NTSTATUS = s(0xC000_0008);
    pub const STATUS_INVALID_PARAMETER: NTSTATUS = s(0xC000_000D);
    pub const STATUS_INVALID_DEVICE_REQUEST: NTSTATUS = s(0xC000_0010);
    pub const STATUS_ACCESS_DENIED: NTSTATUS = s(0xC000_0022);
    pub const STATUS_BUFFER_TOO_SMALL: NTSTATUS = s(0xC000_0023);
    pub const STATUS_INSUFFICIENT_RESOURCES: NTSTATUS = s(0xC000_009A);
    pub const STATUS_NOT_SUPPORTED: NTSTATUS = s(0xC000_00BB);
    pub const STATUS_INVALID_PARAMETER_1: NTSTATUS = s(0xC000_00EF);
    pub const STATUS_INVALID_PARAMETER_2: NTSTATUS = s(0xC000_00F0);
    pub const STATUS_INVALID_PARAMETER_3: NTSTATUS = s(0xC000_00F1);
    pub const STATUS_INVALID_PARAMETER_4: NTSTATUS = s(0xC000_00F2);
    pub const STATUS_CANCELLED: NTSTATUS = s(0xC000_0120);
    pub const STATUS_INVALID_DEVICE_STATE: NTSTATUS = s(0xC000_0184);
    pub const STATUS_DEVICE_NOT_READY: NTSTATUS = s(0xC000_00A3);
    pub const STATUS_DEVICE_REMOVED: NTSTATUS = s(0xC000_02B6);
    pub const STATUS_TIMEOUT: NTSTATUS = s(0x0000_0102);
    pub const STATUS_IO_TIMEOUT: NTSTATUS = s(0xC000_00B5);
    pub const STATUS_DATA_ERROR: NTSTATUS = s(0xC000_003E);
    pub const STATUS_REVISION_MISMATCH: NTSTATUS = s(0xC000_0059);
    pub const STATUS_NOINTERFACE: NTSTATUS = s(0xC000_02B9);
}
