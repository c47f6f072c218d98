//! Constants: the NTSTATUS values as wdk-sys 0.5.2's `src/constants.rs` lists them, the
//! `WDF_NO_*` constants it defines by hand, and the header `#define`s the glue uses as
//! bindgen emits integer macros (`u32`).

use crate::types::{NTSTATUS, POOL_FLAGS, PVOID, PWDF_OBJECT_ATTRIBUTES};

pub const STATUS_SUCCESS: NTSTATUS = 0_i32;
pub const STATUS_PENDING: NTSTATUS = 259_i32;
pub const STATUS_CANCELLED: NTSTATUS = -1_073_741_536_i32;
pub const STATUS_DEVICE_NOT_READY: NTSTATUS = -1_073_741_661_i32;
pub const STATUS_INSUFFICIENT_RESOURCES: NTSTATUS = -1_073_741_670_i32;
pub const STATUS_INVALID_DEVICE_REQUEST: NTSTATUS = -1_073_741_808_i32;
pub const STATUS_INVALID_DEVICE_STATE: NTSTATUS = -1_073_741_436_i32;
pub const STATUS_INVALID_PARAMETER: NTSTATUS = -1_073_741_811_i32;
pub const STATUS_BUFFER_TOO_SMALL: NTSTATUS = -1_073_741_789_i32;
pub const STATUS_NOT_SUPPORTED: NTSTATUS = -1_073_741_637_i32;

pub const WDF_NO_OBJECT_ATTRIBUTES: PWDF_OBJECT_ATTRIBUTES = core::ptr::null_mut();
pub const WDF_NO_EVENT_CALLBACK: PVOID = core::ptr::null_mut();
pub const WDF_NO_HANDLE: PVOID = core::ptr::null_mut();
pub const WDF_NO_CONTEXT: PVOID = core::ptr::null_mut();
pub const WDF_NO_SEND_OPTIONS: PVOID = core::ptr::null_mut();

pub const POOL_FLAG_NON_PAGED: POOL_FLAGS = 0x0000_0000_0000_0040;

// wdm.h `#define`s: bindgen gives integer macros the type `u32`.
pub const PLUGPLAY_REGKEY_DEVICE: u32 = 1;
pub const PLUGPLAY_REGKEY_DRIVER: u32 = 2;
pub const PLUGPLAY_REGKEY_CURRENT_HWPROFILE: u32 = 4;
pub const IRP_MJ_CREATE: u32 = 0;
pub const IRP_MJ_CLOSE: u32 = 2;
pub const IRP_MJ_READ: u32 = 3;
pub const IRP_MJ_WRITE: u32 = 4;
pub const IRP_MJ_DEVICE_CONTROL: u32 = 14;
pub const IRP_MJ_PNP: u32 = 27;
pub const IRP_MN_QUERY_INTERFACE: u32 = 8;
pub const KEY_READ: u32 = 131_097;
pub const FILE_ALL_ACCESS: u32 = 2_032_127;
pub const APC_LEVEL: u32 = 1;
pub const DISPATCH_LEVEL: u32 = 2;
