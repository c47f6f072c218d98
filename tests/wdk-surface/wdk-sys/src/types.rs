//! Types, in the shapes bindgen generates them for `x86_64-pc-windows-msvc` and
//! `aarch64-pc-windows-msvc` (LLP64: `long` is 32 bits; C enums are `int`).
//!
//! Enums follow `EnumVariation::ModuleConsts`: `pub mod _NAME { pub type Type = c_int;
//! pub const Variant: Type = ..; }` plus `pub use self::_NAME::Type as NAME;`. Structs the
//! glue only passes by pointer are opaque here (`_unused: [u8; 0]`, as bindgen emits an
//! incomplete type); structs whose fields the glue names carry every member, in order.
//! Structs holding a union get a zero-filling `Default`, as bindgen's `derive_default`
//! writes for them.

use core::ffi::{
    c_char, c_int, c_long, c_longlong, c_short, c_uchar, c_ulong, c_ulonglong, c_ushort, c_void,
};

/// A zero-filled `Default` (bindgen's for structs and unions it cannot derive for).
macro_rules! zeroed_default {
    ($($t:ty),* $(,)?) => {$(
        impl Default for $t {
            fn default() -> Self {
                let mut s = ::core::mem::MaybeUninit::<Self>::uninit();
                // SAFETY: every member is an integer, a raw pointer or an `Option` of a
                // function pointer, for which all-zero bytes are a valid value.
                unsafe {
                    ::core::ptr::write_bytes(s.as_mut_ptr(), 0, 1);
                    s.assume_init()
                }
            }
        }
    )*};
}

/// A struct the headers define but whose members the glue never names, kept opaque (a
/// stand-in: the real type has its members and a size).
macro_rules! opaque {
    ($($name:ident),* $(,)?) => {$(
        #[repr(C)]
        #[derive(Debug, Copy, Clone)]
        pub struct $name {
            _unused: [u8; 0],
        }
    )*};
}

/// An incomplete C struct (declared, never defined in the headers): bindgen derives only
/// `Debug` for it.
macro_rules! incomplete {
    ($($name:ident),* $(,)?) => {$(
        #[repr(C)]
        #[derive(Debug)]
        pub struct $name {
            _unused: [u8; 0],
        }
    )*};
}

/// `DECLARE_HANDLE(NAME)`: `struct NAME__ { int unused; }; typedef struct NAME__ *NAME;`.
macro_rules! wdf_handle {
    ($($name:ident / $tag:ident),* $(,)?) => {$(
        #[repr(C)]
        #[derive(Debug, Default, Copy, Clone)]
        pub struct $tag {
            pub unused: c_int,
        }
        pub type $name = *mut $tag;
    )*};
}

// ----- basic types (ntdef.h, basetsd.h) ---------------------------------------------
pub type CHAR = c_char;
pub type CCHAR = c_char;
pub type UCHAR = c_uchar;
pub type PCHAR = *mut CHAR;
pub type PCSTR = *const CHAR;
pub type LPCSTR = *const CHAR;
pub type CSHORT = c_short;
pub type USHORT = c_ushort;
pub type LONG = c_long;
pub type ULONG = c_ulong;
pub type PULONG = *mut ULONG;
pub type LONGLONG = c_longlong;
pub type ULONGLONG = c_ulonglong;
pub type LONG_PTR = c_longlong;
pub type ULONG_PTR = c_ulonglong;
pub type SIZE_T = ULONG_PTR;
pub type ULONG64 = c_ulonglong;
pub type BOOLEAN = UCHAR;
pub type wchar_t = c_ushort;
pub type WCHAR = wchar_t;
pub type PWCH = *mut WCHAR;
pub type PVOID = *mut c_void;
pub type HANDLE = *mut c_void;
pub type NTSTATUS = LONG;
pub type ACCESS_MASK = ULONG;
pub type KIRQL = UCHAR;
pub type KPROCESSOR_MODE = CCHAR;
pub type KSPIN_LOCK = ULONG_PTR;
pub type PKSPIN_LOCK = *mut KSPIN_LOCK;
pub type POOL_FLAGS = ULONG64;

#[repr(C)]
#[derive(Debug, Default, Copy, Clone)]
pub struct _GUID {
    pub Data1: c_ulong,
    pub Data2: c_ushort,
    pub Data3: c_ushort,
    pub Data4: [c_uchar; 8usize],
}
pub type GUID = _GUID;
pub type LPCGUID = *const GUID;

#[repr(C)]
#[derive(Debug, Copy, Clone)]
pub struct _UNICODE_STRING {
    pub Length: USHORT,
    pub MaximumLength: USHORT,
    pub Buffer: PWCH,
}
pub type UNICODE_STRING = _UNICODE_STRING;
pub type PUNICODE_STRING = *mut UNICODE_STRING;
pub type PCUNICODE_STRING = *const UNICODE_STRING;

#[repr(C)]
#[derive(Debug, Copy, Clone)]
pub struct _LIST_ENTRY {
    pub Flink: *mut _LIST_ENTRY,
    pub Blink: *mut _LIST_ENTRY,
}
pub type LIST_ENTRY = _LIST_ENTRY;

#[repr(C)]
#[derive(Debug, Default, Copy, Clone)]
pub struct _LARGE_INTEGER__bindgen_ty_1 {
    pub LowPart: ULONG,
    pub HighPart: LONG,
}
/// The `u` member: the same members as the anonymous struct, a type of its own.
#[repr(C)]
#[derive(Debug, Default, Copy, Clone)]
pub struct _LARGE_INTEGER__bindgen_ty_2 {
    pub LowPart: ULONG,
    pub HighPart: LONG,
}
#[repr(C)]
#[derive(Copy, Clone)]
pub union _LARGE_INTEGER {
    pub __bindgen_anon_1: _LARGE_INTEGER__bindgen_ty_1,
    pub u: _LARGE_INTEGER__bindgen_ty_2,
    pub QuadPart: LONGLONG,
}
pub type LARGE_INTEGER = _LARGE_INTEGER;
pub type PLARGE_INTEGER = *mut LARGE_INTEGER;

// ----- enums (ModuleConsts) -----------------------------------------------------------
pub mod _MODE {
    pub type Type = ::core::ffi::c_int;
    pub const KernelMode: Type = 0;
    pub const UserMode: Type = 1;
    pub const MaximumMode: Type = 2;
}
pub use self::_MODE::Type as MODE;

pub mod _EVENT_TYPE {
    pub type Type = ::core::ffi::c_int;
    pub const NotificationEvent: Type = 0;
    pub const SynchronizationEvent: Type = 1;
}
pub use self::_EVENT_TYPE::Type as EVENT_TYPE;

pub mod _KWAIT_REASON {
    pub type Type = ::core::ffi::c_int;
    pub const Executive: Type = 0;
    pub const FreePage: Type = 1;
    pub const PageIn: Type = 2;
    pub const PoolAllocation: Type = 3;
    pub const DelayExecution: Type = 4;
    pub const Suspended: Type = 5;
    pub const UserRequest: Type = 6;
}
pub use self::_KWAIT_REASON::Type as KWAIT_REASON;

pub mod _WDF_TRI_STATE {
    pub type Type = ::core::ffi::c_int;
    pub const WdfFalse: Type = 0;
    pub const WdfTrue: Type = 1;
    pub const WdfUseDefault: Type = 2;
}
pub use self::_WDF_TRI_STATE::Type as WDF_TRI_STATE;

pub mod _WDF_DEVICE_IO_TYPE {
    pub type Type = ::core::ffi::c_int;
    pub const WdfDeviceIoUndefined: Type = 0;
    pub const WdfDeviceIoNeither: Type = 1;
    pub const WdfDeviceIoBuffered: Type = 2;
    pub const WdfDeviceIoDirect: Type = 3;
    pub const WdfDeviceIoBufferedOrDirect: Type = 4;
    pub const WdfDeviceIoMaximum: Type = 5;
}
pub use self::_WDF_DEVICE_IO_TYPE::Type as WDF_DEVICE_IO_TYPE;

pub mod _WDF_EXECUTION_LEVEL {
    pub type Type = ::core::ffi::c_int;
    pub const WdfExecutionLevelInvalid: Type = 0;
    pub const WdfExecutionLevelInheritFromParent: Type = 1;
    pub const WdfExecutionLevelPassive: Type = 2;
    pub const WdfExecutionLevelDispatch: Type = 3;
}
pub use self::_WDF_EXECUTION_LEVEL::Type as WDF_EXECUTION_LEVEL;

pub mod _WDF_SYNCHRONIZATION_SCOPE {
    pub type Type = ::core::ffi::c_int;
    pub const WdfSynchronizationScopeInvalid: Type = 0;
    pub const WdfSynchronizationScopeInheritFromParent: Type = 1;
    pub const WdfSynchronizationScopeDevice: Type = 2;
    pub const WdfSynchronizationScopeQueue: Type = 3;
    pub const WdfSynchronizationScopeNone: Type = 4;
}
pub use self::_WDF_SYNCHRONIZATION_SCOPE::Type as WDF_SYNCHRONIZATION_SCOPE;

pub mod _WDF_FILEOBJECT_CLASS {
    pub type Type = ::core::ffi::c_int;
    pub const WdfFileObjectInvalid: Type = 0;
    pub const WdfFileObjectNotRequired: Type = 1;
    pub const WdfFileObjectWdfCanUseFsContext: Type = 2;
    pub const WdfFileObjectWdfCanUseFsContext2: Type = 3;
    pub const WdfFileObjectWdfCannotUseFsContexts: Type = 4;
}
pub use self::_WDF_FILEOBJECT_CLASS::Type as WDF_FILEOBJECT_CLASS;

pub mod _WDF_IO_QUEUE_DISPATCH_TYPE {
    pub type Type = ::core::ffi::c_int;
    pub const WdfIoQueueDispatchInvalid: Type = 0;
    pub const WdfIoQueueDispatchSequential: Type = 1;
    pub const WdfIoQueueDispatchParallel: Type = 2;
    pub const WdfIoQueueDispatchManual: Type = 3;
    pub const WdfIoQueueDispatchMax: Type = 4;
}
pub use self::_WDF_IO_QUEUE_DISPATCH_TYPE::Type as WDF_IO_QUEUE_DISPATCH_TYPE;

pub mod _WDF_REQUEST_STOP_ACTION_FLAGS {
    pub type Type = ::core::ffi::c_int;
    pub const WdfRequestStopActionInvalid: Type = 0;
    pub const WdfRequestStopActionSuspend: Type = 1;
    pub const WdfRequestStopActionPurge: Type = 2;
    pub const WdfRequestStopRequestCancelable: Type = 268_435_456;
}
pub use self::_WDF_REQUEST_STOP_ACTION_FLAGS::Type as WDF_REQUEST_STOP_ACTION_FLAGS;

/// `WDF_REQUEST_TYPE`: the values are the IRP major function codes.
pub mod _WDF_REQUEST_TYPE {
    pub type Type = ::core::ffi::c_int;
    pub const WdfRequestTypeCreate: Type = 0;
    pub const WdfRequestTypeCreateNamedPipe: Type = 1;
    pub const WdfRequestTypeClose: Type = 2;
    pub const WdfRequestTypeRead: Type = 3;
    pub const WdfRequestTypeWrite: Type = 4;
    pub const WdfRequestTypeDeviceControl: Type = 14;
    pub const WdfRequestTypeDeviceControlInternal: Type = 15;
    pub const WdfRequestTypeCleanup: Type = 18;
    pub const WdfRequestTypePnp: Type = 27;
    pub const WdfRequestTypeOther: Type = 28;
}
pub use self::_WDF_REQUEST_TYPE::Type as WDF_REQUEST_TYPE;

pub mod _WDF_POWER_DEVICE_STATE {
    pub type Type = ::core::ffi::c_int;
    pub const WdfPowerDeviceInvalid: Type = 0;
    pub const WdfPowerDeviceD0: Type = 1;
    pub const WdfPowerDeviceD1: Type = 2;
    pub const WdfPowerDeviceD2: Type = 3;
    pub const WdfPowerDeviceD3: Type = 4;
    pub const WdfPowerDeviceD3Final: Type = 5;
    pub const WdfPowerDevicePrepareForHibernation: Type = 6;
    pub const WdfPowerDeviceMaximum: Type = 7;
}
pub use self::_WDF_POWER_DEVICE_STATE::Type as WDF_POWER_DEVICE_STATE;

pub mod _WDF_SPECIAL_FILE_TYPE {
    pub type Type = ::core::ffi::c_int;
    pub const WdfSpecialFileUndefined: Type = 0;
    pub const WdfSpecialFilePaging: Type = 1;
    pub const WdfSpecialFileHibernation: Type = 2;
    pub const WdfSpecialFileDump: Type = 3;
    pub const WdfSpecialFileBoot: Type = 4;
    pub const WdfSpecialFilePostDisplay: Type = 5;
    pub const WdfSpecialFileGuestAssigned: Type = 6;
    pub const WdfSpecialFileMax: Type = 7;
}
pub use self::_WDF_SPECIAL_FILE_TYPE::Type as WDF_SPECIAL_FILE_TYPE;

pub mod _DEVICE_RELATION_TYPE {
    pub type Type = ::core::ffi::c_int;
    pub const BusRelations: Type = 0;
    pub const EjectionRelations: Type = 1;
    pub const PowerRelations: Type = 2;
    pub const RemovalRelations: Type = 3;
    pub const TargetDeviceRelation: Type = 4;
    pub const SingleBusRelations: Type = 5;
    pub const TransportRelations: Type = 6;
}
pub use self::_DEVICE_RELATION_TYPE::Type as DEVICE_RELATION_TYPE;

// ----- kernel objects the glue passes by pointer ----------------------------------------
// Complete types in the headers whose members the glue never names: kept opaque here.
opaque!(
    _DEVICE_OBJECT,
    _DRIVER_OBJECT,
    _FILE_OBJECT,
    _MDL,
    _IO_SECURITY_CONTEXT
);
// Incomplete types in the headers (bindgen derives only `Debug` for them).
incomplete!(_KTHREAD);
/// `_IORING_OBJECT` (the target of `IRP.Overlay.AsynchronousParameters.IoRing`): bindgen
/// emits it as an empty struct.
#[repr(C)]
#[derive(Debug, Default, Copy, Clone)]
pub struct _IORING_OBJECT {
    pub _address: u8,
}
pub type DEVICE_OBJECT = _DEVICE_OBJECT;
pub type PDEVICE_OBJECT = *mut _DEVICE_OBJECT;
pub type DRIVER_OBJECT = _DRIVER_OBJECT;
pub type PDRIVER_OBJECT = *mut _DRIVER_OBJECT;
pub type FILE_OBJECT = _FILE_OBJECT;
pub type PFILE_OBJECT = *mut _FILE_OBJECT;
/// wdm.h: `typedef struct _KTHREAD *PETHREAD;`.
pub type PETHREAD = *mut _KTHREAD;
pub type PMDL = *mut _MDL;
pub type PIO_SECURITY_CONTEXT = *mut _IO_SECURITY_CONTEXT;

// ----- wdm.h structures whose fields the glue names ------------------------------------
pub type PINTERFACE_REFERENCE = ::core::option::Option<unsafe extern "C" fn(Context: PVOID)>;
pub type PINTERFACE_DEREFERENCE = ::core::option::Option<unsafe extern "C" fn(Context: PVOID)>;

#[repr(C)]
#[derive(Debug, Copy, Clone)]
pub struct _INTERFACE {
    pub Size: USHORT,
    pub Version: USHORT,
    pub Context: PVOID,
    pub InterfaceReference: PINTERFACE_REFERENCE,
    pub InterfaceDereference: PINTERFACE_DEREFERENCE,
}
pub type INTERFACE = _INTERFACE;
pub type PINTERFACE = *mut _INTERFACE;

#[repr(C)]
#[derive(Copy, Clone)]
pub union _IO_STATUS_BLOCK__bindgen_ty_1 {
    pub Status: NTSTATUS,
    pub Pointer: PVOID,
}
#[repr(C)]
#[derive(Copy, Clone)]
pub struct _IO_STATUS_BLOCK {
    pub __bindgen_anon_1: _IO_STATUS_BLOCK__bindgen_ty_1,
    pub Information: ULONG_PTR,
}
pub type IO_STATUS_BLOCK = _IO_STATUS_BLOCK;
pub type PIO_STATUS_BLOCK = *mut _IO_STATUS_BLOCK;
pub type PIO_APC_ROUTINE = ::core::option::Option<
    unsafe extern "C" fn(ApcContext: PVOID, IoStatusBlock: PIO_STATUS_BLOCK, Reserved: ULONG),
>;

/// `DISPATCHER_HEADER`. Its first member is an anonymous union of seven anonymous
/// alternatives (`__bindgen_anon_1` .. `__bindgen_anon_7`, each 4 bytes); only the first,
/// `{ Lock, LockNV }`, is kept (the glue never reads a header; it only embeds one in a
/// `KEVENT`).
#[repr(C)]
#[derive(Copy, Clone)]
pub union _DISPATCHER_HEADER__bindgen_ty_1__bindgen_ty_1 {
    pub Lock: LONG,
    pub LockNV: LONG,
}
#[repr(C)]
#[derive(Copy, Clone)]
pub union _DISPATCHER_HEADER__bindgen_ty_1 {
    pub __bindgen_anon_1: _DISPATCHER_HEADER__bindgen_ty_1__bindgen_ty_1,
}
#[repr(C)]
#[derive(Copy, Clone)]
pub struct _DISPATCHER_HEADER {
    pub __bindgen_anon_1: _DISPATCHER_HEADER__bindgen_ty_1,
    pub SignalState: LONG,
    pub WaitListHead: LIST_ENTRY,
}
pub type DISPATCHER_HEADER = _DISPATCHER_HEADER;

#[repr(C)]
#[derive(Copy, Clone)]
pub struct _KEVENT {
    pub Header: DISPATCHER_HEADER,
}
pub type KEVENT = _KEVENT;
pub type PKEVENT = *mut _KEVENT;
pub type PRKEVENT = *mut _KEVENT;

#[repr(C)]
#[derive(Debug, Copy, Clone)]
pub struct _KDEVICE_QUEUE_ENTRY {
    pub DeviceListEntry: LIST_ENTRY,
    pub SortKey: ULONG,
    pub Inserted: BOOLEAN,
}
pub type KDEVICE_QUEUE_ENTRY = _KDEVICE_QUEUE_ENTRY;

#[repr(C)]
#[derive(Debug, Copy, Clone)]
pub struct _KAPC {
    pub Type: UCHAR,
    pub AllFlags: UCHAR,
    pub Size: UCHAR,
    pub SpareByte1: UCHAR,
    pub SpareLong0: ULONG,
    pub Thread: *mut _KTHREAD,
    pub ApcListEntry: LIST_ENTRY,
    pub Reserved: [PVOID; 3usize],
    pub NormalContext: PVOID,
    pub SystemArgument1: PVOID,
    pub SystemArgument2: PVOID,
    pub ApcStateIndex: CCHAR,
    pub ApcMode: KPROCESSOR_MODE,
    pub Inserted: BOOLEAN,
}
pub type KAPC = _KAPC;

pub type IO_COMPLETION_ROUTINE = ::core::option::Option<
    unsafe extern "C" fn(DeviceObject: PDEVICE_OBJECT, Irp: PIRP, Context: PVOID) -> NTSTATUS,
>;
pub type PIO_COMPLETION_ROUTINE = IO_COMPLETION_ROUTINE;
pub type DRIVER_CANCEL =
    ::core::option::Option<unsafe extern "C" fn(DeviceObject: *mut _DEVICE_OBJECT, Irp: *mut _IRP)>;
pub type PDRIVER_CANCEL = DRIVER_CANCEL;

/// `IO_STACK_LOCATION`. `Parameters` is an anonymous union of 39 anonymous structs, which
/// bindgen numbers `_IO_STACK_LOCATION__bindgen_ty_1__bindgen_ty_1` (`Create`) to
/// `__bindgen_ty_39` (`Others`) in header order; kept are `Read` (4), `Write` (5),
/// `DeviceIoControl` (17), `QueryInterface` (26) and `Others` (39), under those numbers.
/// `POINTER_ALIGNMENT` members (`DECLSPEC_ALIGN(8)` on 64-bit) get bindgen's explicit
/// `__bindgen_padding_N` fields.
#[repr(C)]
#[derive(Copy, Clone)]
pub struct _IO_STACK_LOCATION {
    pub MajorFunction: UCHAR,
    pub MinorFunction: UCHAR,
    pub Flags: UCHAR,
    pub Control: UCHAR,
    pub Parameters: _IO_STACK_LOCATION__bindgen_ty_1,
    pub DeviceObject: PDEVICE_OBJECT,
    pub FileObject: PFILE_OBJECT,
    pub CompletionRoutine: PIO_COMPLETION_ROUTINE,
    pub Context: PVOID,
}
#[repr(C)]
#[derive(Copy, Clone)]
pub union _IO_STACK_LOCATION__bindgen_ty_1 {
    pub Read: _IO_STACK_LOCATION__bindgen_ty_1__bindgen_ty_4,
    pub Write: _IO_STACK_LOCATION__bindgen_ty_1__bindgen_ty_5,
    pub DeviceIoControl: _IO_STACK_LOCATION__bindgen_ty_1__bindgen_ty_17,
    pub QueryInterface: _IO_STACK_LOCATION__bindgen_ty_1__bindgen_ty_26,
    pub Others: _IO_STACK_LOCATION__bindgen_ty_1__bindgen_ty_39,
}
/// `Parameters.Read`: `Length`, `POINTER_ALIGNMENT Key`, `Flags` (`_WIN64` only),
/// `ByteOffset`.
#[repr(C)]
#[derive(Copy, Clone)]
pub struct _IO_STACK_LOCATION__bindgen_ty_1__bindgen_ty_4 {
    pub Length: ULONG,
    pub __bindgen_padding_0: [u8; 4usize],
    pub Key: ULONG,
    pub Flags: ULONG,
    pub ByteOffset: LARGE_INTEGER,
}
/// `Parameters.Write`: the same members as `Read`, a type of its own.
#[repr(C)]
#[derive(Copy, Clone)]
pub struct _IO_STACK_LOCATION__bindgen_ty_1__bindgen_ty_5 {
    pub Length: ULONG,
    pub __bindgen_padding_0: [u8; 4usize],
    pub Key: ULONG,
    pub Flags: ULONG,
    pub ByteOffset: LARGE_INTEGER,
}
/// `Parameters.DeviceIoControl`: `OutputBufferLength`, `POINTER_ALIGNMENT
/// InputBufferLength`, `POINTER_ALIGNMENT IoControlCode`, `Type3InputBuffer`.
#[repr(C)]
#[derive(Debug, Copy, Clone)]
pub struct _IO_STACK_LOCATION__bindgen_ty_1__bindgen_ty_17 {
    pub OutputBufferLength: ULONG,
    pub __bindgen_padding_0: [u8; 4usize],
    pub InputBufferLength: ULONG,
    pub __bindgen_padding_1: [u8; 4usize],
    pub IoControlCode: ULONG,
    pub Type3InputBuffer: PVOID,
}
#[repr(C)]
#[derive(Debug, Copy, Clone)]
pub struct _IO_STACK_LOCATION__bindgen_ty_1__bindgen_ty_26 {
    pub InterfaceType: *const GUID,
    pub Size: USHORT,
    pub Version: USHORT,
    pub Interface: PINTERFACE,
    pub InterfaceSpecificData: PVOID,
}
#[repr(C)]
#[derive(Debug, Copy, Clone)]
pub struct _IO_STACK_LOCATION__bindgen_ty_1__bindgen_ty_39 {
    pub Argument1: PVOID,
    pub Argument2: PVOID,
    pub Argument3: PVOID,
    pub Argument4: PVOID,
}
pub type IO_STACK_LOCATION = _IO_STACK_LOCATION;
pub type PIO_STACK_LOCATION = *mut _IO_STACK_LOCATION;

/// `IRP`, every member and union alternative in order
/// (`DECLSPEC_ALIGN(MEMORY_ALLOCATION_ALIGNMENT)`: 16 on 64-bit).
#[repr(C)]
#[repr(align(16))]
#[derive(Copy, Clone)]
pub struct _IRP {
    pub Type: CSHORT,
    pub Size: USHORT,
    pub MdlAddress: PMDL,
    pub Flags: ULONG,
    pub AssociatedIrp: _IRP__bindgen_ty_1,
    pub ThreadListEntry: LIST_ENTRY,
    pub IoStatus: IO_STATUS_BLOCK,
    pub RequestorMode: KPROCESSOR_MODE,
    pub PendingReturned: BOOLEAN,
    pub StackCount: CHAR,
    pub CurrentLocation: CHAR,
    pub Cancel: BOOLEAN,
    pub CancelIrql: KIRQL,
    pub ApcEnvironment: CCHAR,
    pub AllocationFlags: UCHAR,
    pub __bindgen_anon_1: _IRP__bindgen_ty_2,
    pub UserEvent: PKEVENT,
    pub Overlay: _IRP__bindgen_ty_3,
    pub CancelRoutine: PDRIVER_CANCEL,
    pub UserBuffer: PVOID,
    pub Tail: _IRP__bindgen_ty_4,
}
#[repr(C)]
#[derive(Copy, Clone)]
pub union _IRP__bindgen_ty_1 {
    pub MasterIrp: *mut _IRP,
    pub IrpCount: LONG,
    pub SystemBuffer: PVOID,
}
#[repr(C)]
#[derive(Copy, Clone)]
pub union _IRP__bindgen_ty_2 {
    pub UserIosb: PIO_STATUS_BLOCK,
    pub IoRingContext: PVOID,
}
#[repr(C)]
#[derive(Copy, Clone)]
pub union _IRP__bindgen_ty_3 {
    pub AsynchronousParameters: _IRP__bindgen_ty_3__bindgen_ty_1,
    pub AllocationSize: LARGE_INTEGER,
}
#[repr(C)]
#[derive(Copy, Clone)]
pub struct _IRP__bindgen_ty_3__bindgen_ty_1 {
    pub __bindgen_anon_1: _IRP__bindgen_ty_3__bindgen_ty_1__bindgen_ty_1,
    pub __bindgen_anon_2: _IRP__bindgen_ty_3__bindgen_ty_1__bindgen_ty_2,
}
#[repr(C)]
#[derive(Copy, Clone)]
pub union _IRP__bindgen_ty_3__bindgen_ty_1__bindgen_ty_1 {
    pub UserApcRoutine: PIO_APC_ROUTINE,
    pub IssuingProcess: PVOID,
}
#[repr(C)]
#[derive(Copy, Clone)]
pub union _IRP__bindgen_ty_3__bindgen_ty_1__bindgen_ty_2 {
    pub UserApcContext: PVOID,
    pub IoRing: *mut _IORING_OBJECT,
}
#[repr(C)]
#[derive(Copy, Clone)]
pub union _IRP__bindgen_ty_4 {
    pub Overlay: _IRP__bindgen_ty_4__bindgen_ty_1,
    pub Apc: KAPC,
    pub CompletionKey: PVOID,
}
#[repr(C)]
#[derive(Copy, Clone)]
pub struct _IRP__bindgen_ty_4__bindgen_ty_1 {
    pub __bindgen_anon_1: _IRP__bindgen_ty_4__bindgen_ty_1__bindgen_ty_1,
    pub Thread: PETHREAD,
    pub AuxiliaryBuffer: PCHAR,
    pub __bindgen_anon_2: _IRP__bindgen_ty_4__bindgen_ty_1__bindgen_ty_2,
    pub OriginalFileObject: PFILE_OBJECT,
}
#[repr(C)]
#[derive(Copy, Clone)]
pub union _IRP__bindgen_ty_4__bindgen_ty_1__bindgen_ty_1 {
    pub DeviceQueueEntry: KDEVICE_QUEUE_ENTRY,
    pub __bindgen_anon_1: _IRP__bindgen_ty_4__bindgen_ty_1__bindgen_ty_1__bindgen_ty_1,
}
#[repr(C)]
#[derive(Debug, Copy, Clone)]
pub struct _IRP__bindgen_ty_4__bindgen_ty_1__bindgen_ty_1__bindgen_ty_1 {
    pub DriverContext: [PVOID; 4usize],
}
#[repr(C)]
#[derive(Copy, Clone)]
pub struct _IRP__bindgen_ty_4__bindgen_ty_1__bindgen_ty_2 {
    pub ListEntry: LIST_ENTRY,
    pub __bindgen_anon_1: _IRP__bindgen_ty_4__bindgen_ty_1__bindgen_ty_2__bindgen_ty_1,
}
#[repr(C)]
#[derive(Copy, Clone)]
pub union _IRP__bindgen_ty_4__bindgen_ty_1__bindgen_ty_2__bindgen_ty_1 {
    pub CurrentStackLocation: *mut _IO_STACK_LOCATION,
    pub PacketType: ULONG,
}
pub type IRP = _IRP;
pub type PIRP = *mut _IRP;

zeroed_default!(
    _LARGE_INTEGER,
    _IO_STATUS_BLOCK,
    _IO_STATUS_BLOCK__bindgen_ty_1,
    _DISPATCHER_HEADER,
    _KEVENT,
    _IO_STACK_LOCATION,
    _IRP,
);

// ----- WDF handles (wdftypes.h) ---------------------------------------------------------
pub type WDFOBJECT = HANDLE;
pub type PWDFOBJECT = *mut WDFOBJECT;
wdf_handle!(
    WDFDRIVER / WDFDRIVER__,
    WDFDEVICE / WDFDEVICE__,
    WDFQUEUE / WDFQUEUE__,
    WDFREQUEST / WDFREQUEST__,
    WDFFILEOBJECT / WDFFILEOBJECT__,
    WDFKEY / WDFKEY__,
    WDFTIMER / WDFTIMER__,
    WDFCMRESLIST / WDFCMRESLIST__,
    WDFSPINLOCK / WDFSPINLOCK__,
    WDFSTRING / WDFSTRING__,
    WDFMEMORY / WDFMEMORY__,
);
incomplete!(WDFDEVICE_INIT);
pub type PWDFDEVICE_INIT = *mut WDFDEVICE_INIT;

#[repr(C)]
#[derive(Debug, Copy, Clone)]
pub struct _WDF_DRIVER_GLOBALS {
    pub Driver: WDFDRIVER,
    pub DriverFlags: ULONG,
    pub DriverTag: ULONG,
    pub DriverName: [CHAR; 32usize],
    pub DisplaceDriverUnload: BOOLEAN,
}
pub type WDF_DRIVER_GLOBALS = _WDF_DRIVER_GLOBALS;
pub type PWDF_DRIVER_GLOBALS = *mut _WDF_DRIVER_GLOBALS;

/// An entry of the WDF function table.
pub type WDFFUNC = ::core::option::Option<unsafe extern "C" fn()>;

// ----- WDF callbacks (EVT_WDF_*) ----------------------------------------------------------
pub type PFN_WDF_DRIVER_DEVICE_ADD = ::core::option::Option<
    unsafe extern "C" fn(Driver: WDFDRIVER, DeviceInit: PWDFDEVICE_INIT) -> NTSTATUS,
>;
pub type PFN_WDF_DRIVER_UNLOAD = ::core::option::Option<unsafe extern "C" fn(Driver: WDFDRIVER)>;
pub type PFN_WDF_OBJECT_CONTEXT_CLEANUP =
    ::core::option::Option<unsafe extern "C" fn(Object: WDFOBJECT)>;
pub type PFN_WDF_OBJECT_CONTEXT_DESTROY =
    ::core::option::Option<unsafe extern "C" fn(Object: WDFOBJECT)>;
pub type PFN_GET_UNIQUE_CONTEXT_TYPE =
    ::core::option::Option<unsafe extern "C" fn() -> PCWDF_OBJECT_CONTEXT_TYPE_INFO>;
pub type PFN_WDF_DEVICE_D0_ENTRY = ::core::option::Option<
    unsafe extern "C" fn(Device: WDFDEVICE, PreviousState: WDF_POWER_DEVICE_STATE) -> NTSTATUS,
>;
pub type PFN_WDF_DEVICE_D0_ENTRY_POST_INTERRUPTS_ENABLED = ::core::option::Option<
    unsafe extern "C" fn(Device: WDFDEVICE, PreviousState: WDF_POWER_DEVICE_STATE) -> NTSTATUS,
>;
pub type PFN_WDF_DEVICE_D0_EXIT = ::core::option::Option<
    unsafe extern "C" fn(Device: WDFDEVICE, TargetState: WDF_POWER_DEVICE_STATE) -> NTSTATUS,
>;
pub type PFN_WDF_DEVICE_D0_EXIT_PRE_INTERRUPTS_DISABLED = ::core::option::Option<
    unsafe extern "C" fn(Device: WDFDEVICE, TargetState: WDF_POWER_DEVICE_STATE) -> NTSTATUS,
>;
pub type PFN_WDF_DEVICE_PREPARE_HARDWARE = ::core::option::Option<
    unsafe extern "C" fn(
        Device: WDFDEVICE,
        ResourcesRaw: WDFCMRESLIST,
        ResourcesTranslated: WDFCMRESLIST,
    ) -> NTSTATUS,
>;
pub type PFN_WDF_DEVICE_RELEASE_HARDWARE = ::core::option::Option<
    unsafe extern "C" fn(Device: WDFDEVICE, ResourcesTranslated: WDFCMRESLIST) -> NTSTATUS,
>;
pub type PFN_WDF_DEVICE_SELF_MANAGED_IO_CLEANUP =
    ::core::option::Option<unsafe extern "C" fn(Device: WDFDEVICE)>;
pub type PFN_WDF_DEVICE_SELF_MANAGED_IO_FLUSH =
    ::core::option::Option<unsafe extern "C" fn(Device: WDFDEVICE)>;
pub type PFN_WDF_DEVICE_SELF_MANAGED_IO_INIT =
    ::core::option::Option<unsafe extern "C" fn(Device: WDFDEVICE) -> NTSTATUS>;
pub type PFN_WDF_DEVICE_SELF_MANAGED_IO_SUSPEND =
    ::core::option::Option<unsafe extern "C" fn(Device: WDFDEVICE) -> NTSTATUS>;
pub type PFN_WDF_DEVICE_SELF_MANAGED_IO_RESTART =
    ::core::option::Option<unsafe extern "C" fn(Device: WDFDEVICE) -> NTSTATUS>;
pub type PFN_WDF_DEVICE_SURPRISE_REMOVAL =
    ::core::option::Option<unsafe extern "C" fn(Device: WDFDEVICE)>;
pub type PFN_WDF_DEVICE_QUERY_REMOVE =
    ::core::option::Option<unsafe extern "C" fn(Device: WDFDEVICE) -> NTSTATUS>;
pub type PFN_WDF_DEVICE_QUERY_STOP =
    ::core::option::Option<unsafe extern "C" fn(Device: WDFDEVICE) -> NTSTATUS>;
pub type PFN_WDF_DEVICE_USAGE_NOTIFICATION = ::core::option::Option<
    unsafe extern "C" fn(
        Device: WDFDEVICE,
        NotificationType: WDF_SPECIAL_FILE_TYPE,
        IsInNotificationPath: BOOLEAN,
    ),
>;
pub type PFN_WDF_DEVICE_RELATIONS_QUERY = ::core::option::Option<
    unsafe extern "C" fn(Device: WDFDEVICE, RelationType: DEVICE_RELATION_TYPE),
>;
pub type PFN_WDF_DEVICE_USAGE_NOTIFICATION_EX = ::core::option::Option<
    unsafe extern "C" fn(
        Device: WDFDEVICE,
        NotificationType: WDF_SPECIAL_FILE_TYPE,
        IsInNotificationPath: BOOLEAN,
    ) -> NTSTATUS,
>;
pub type PFN_WDF_DEVICE_FILE_CREATE = ::core::option::Option<
    unsafe extern "C" fn(Device: WDFDEVICE, Request: WDFREQUEST, FileObject: WDFFILEOBJECT),
>;
pub type PFN_WDF_FILE_CLOSE =
    ::core::option::Option<unsafe extern "C" fn(FileObject: WDFFILEOBJECT)>;
pub type PFN_WDF_FILE_CLEANUP =
    ::core::option::Option<unsafe extern "C" fn(FileObject: WDFFILEOBJECT)>;
pub type PFN_WDF_IO_IN_CALLER_CONTEXT =
    ::core::option::Option<unsafe extern "C" fn(Device: WDFDEVICE, Request: WDFREQUEST)>;
pub type PFN_WDF_IO_QUEUE_IO_DEFAULT =
    ::core::option::Option<unsafe extern "C" fn(Queue: WDFQUEUE, Request: WDFREQUEST)>;
pub type PFN_WDF_IO_QUEUE_IO_READ = ::core::option::Option<
    unsafe extern "C" fn(Queue: WDFQUEUE, Request: WDFREQUEST, Length: usize),
>;
pub type PFN_WDF_IO_QUEUE_IO_WRITE = ::core::option::Option<
    unsafe extern "C" fn(Queue: WDFQUEUE, Request: WDFREQUEST, Length: usize),
>;
pub type PFN_WDF_IO_QUEUE_IO_DEVICE_CONTROL = ::core::option::Option<
    unsafe extern "C" fn(
        Queue: WDFQUEUE,
        Request: WDFREQUEST,
        OutputBufferLength: usize,
        InputBufferLength: usize,
        IoControlCode: ULONG,
    ),
>;
pub type PFN_WDF_IO_QUEUE_IO_INTERNAL_DEVICE_CONTROL = ::core::option::Option<
    unsafe extern "C" fn(
        Queue: WDFQUEUE,
        Request: WDFREQUEST,
        OutputBufferLength: usize,
        InputBufferLength: usize,
        IoControlCode: ULONG,
    ),
>;
pub type PFN_WDF_IO_QUEUE_IO_STOP = ::core::option::Option<
    unsafe extern "C" fn(Queue: WDFQUEUE, Request: WDFREQUEST, ActionFlags: ULONG),
>;
pub type PFN_WDF_IO_QUEUE_IO_RESUME =
    ::core::option::Option<unsafe extern "C" fn(Queue: WDFQUEUE, Request: WDFREQUEST)>;
pub type PFN_WDF_IO_QUEUE_IO_CANCELED_ON_QUEUE =
    ::core::option::Option<unsafe extern "C" fn(Queue: WDFQUEUE, Request: WDFREQUEST)>;
pub type PFN_WDF_REQUEST_CANCEL = ::core::option::Option<unsafe extern "C" fn(Request: WDFREQUEST)>;
pub type PFN_WDF_TIMER = ::core::option::Option<unsafe extern "C" fn(Timer: WDFTIMER)>;

// ----- WDF structures ---------------------------------------------------------------------
#[repr(C)]
#[derive(Debug, Copy, Clone)]
pub struct _WDF_OBJECT_CONTEXT_TYPE_INFO {
    pub Size: ULONG,
    pub ContextName: LPCSTR,
    pub ContextSize: usize,
    pub UniqueType: PCWDF_OBJECT_CONTEXT_TYPE_INFO,
    pub EvtDriverGetUniqueContextType: PFN_GET_UNIQUE_CONTEXT_TYPE,
}
pub type WDF_OBJECT_CONTEXT_TYPE_INFO = _WDF_OBJECT_CONTEXT_TYPE_INFO;
pub type PWDF_OBJECT_CONTEXT_TYPE_INFO = *mut _WDF_OBJECT_CONTEXT_TYPE_INFO;
pub type PCWDF_OBJECT_CONTEXT_TYPE_INFO = *const WDF_OBJECT_CONTEXT_TYPE_INFO;

#[repr(C)]
#[derive(Debug, Copy, Clone)]
pub struct _WDF_OBJECT_ATTRIBUTES {
    pub Size: ULONG,
    pub EvtCleanupCallback: PFN_WDF_OBJECT_CONTEXT_CLEANUP,
    pub EvtDestroyCallback: PFN_WDF_OBJECT_CONTEXT_DESTROY,
    pub ExecutionLevel: WDF_EXECUTION_LEVEL,
    pub SynchronizationScope: WDF_SYNCHRONIZATION_SCOPE,
    pub ParentObject: WDFOBJECT,
    pub ContextSizeOverride: usize,
    pub ContextTypeInfo: PCWDF_OBJECT_CONTEXT_TYPE_INFO,
}
pub type WDF_OBJECT_ATTRIBUTES = _WDF_OBJECT_ATTRIBUTES;
pub type PWDF_OBJECT_ATTRIBUTES = *mut _WDF_OBJECT_ATTRIBUTES;

#[repr(C)]
#[derive(Debug, Default, Copy, Clone)]
pub struct _WDF_DRIVER_CONFIG {
    pub Size: ULONG,
    pub EvtDriverDeviceAdd: PFN_WDF_DRIVER_DEVICE_ADD,
    pub EvtDriverUnload: PFN_WDF_DRIVER_UNLOAD,
    pub DriverInitFlags: ULONG,
    pub DriverPoolTag: ULONG,
}
pub type WDF_DRIVER_CONFIG = _WDF_DRIVER_CONFIG;
pub type PWDF_DRIVER_CONFIG = *mut _WDF_DRIVER_CONFIG;

#[repr(C)]
#[derive(Debug, Default, Copy, Clone)]
pub struct _WDF_PNPPOWER_EVENT_CALLBACKS {
    pub Size: ULONG,
    pub EvtDeviceD0Entry: PFN_WDF_DEVICE_D0_ENTRY,
    pub EvtDeviceD0EntryPostInterruptsEnabled: PFN_WDF_DEVICE_D0_ENTRY_POST_INTERRUPTS_ENABLED,
    pub EvtDeviceD0Exit: PFN_WDF_DEVICE_D0_EXIT,
    pub EvtDeviceD0ExitPreInterruptsDisabled: PFN_WDF_DEVICE_D0_EXIT_PRE_INTERRUPTS_DISABLED,
    pub EvtDevicePrepareHardware: PFN_WDF_DEVICE_PREPARE_HARDWARE,
    pub EvtDeviceReleaseHardware: PFN_WDF_DEVICE_RELEASE_HARDWARE,
    pub EvtDeviceSelfManagedIoCleanup: PFN_WDF_DEVICE_SELF_MANAGED_IO_CLEANUP,
    pub EvtDeviceSelfManagedIoFlush: PFN_WDF_DEVICE_SELF_MANAGED_IO_FLUSH,
    pub EvtDeviceSelfManagedIoInit: PFN_WDF_DEVICE_SELF_MANAGED_IO_INIT,
    pub EvtDeviceSelfManagedIoSuspend: PFN_WDF_DEVICE_SELF_MANAGED_IO_SUSPEND,
    pub EvtDeviceSelfManagedIoRestart: PFN_WDF_DEVICE_SELF_MANAGED_IO_RESTART,
    pub EvtDeviceSurpriseRemoval: PFN_WDF_DEVICE_SURPRISE_REMOVAL,
    pub EvtDeviceQueryRemove: PFN_WDF_DEVICE_QUERY_REMOVE,
    pub EvtDeviceQueryStop: PFN_WDF_DEVICE_QUERY_STOP,
    pub EvtDeviceUsageNotification: PFN_WDF_DEVICE_USAGE_NOTIFICATION,
    pub EvtDeviceRelationsQuery: PFN_WDF_DEVICE_RELATIONS_QUERY,
    pub EvtDeviceUsageNotificationEx: PFN_WDF_DEVICE_USAGE_NOTIFICATION_EX,
}
pub type WDF_PNPPOWER_EVENT_CALLBACKS = _WDF_PNPPOWER_EVENT_CALLBACKS;
pub type PWDF_PNPPOWER_EVENT_CALLBACKS = *mut _WDF_PNPPOWER_EVENT_CALLBACKS;

#[repr(C)]
#[derive(Debug, Copy, Clone)]
pub struct _WDF_FILEOBJECT_CONFIG {
    pub Size: ULONG,
    pub EvtDeviceFileCreate: PFN_WDF_DEVICE_FILE_CREATE,
    pub EvtFileClose: PFN_WDF_FILE_CLOSE,
    pub EvtFileCleanup: PFN_WDF_FILE_CLEANUP,
    pub AutoForwardCleanupClose: WDF_TRI_STATE,
    pub FileObjectClass: WDF_FILEOBJECT_CLASS,
}
pub type WDF_FILEOBJECT_CONFIG = _WDF_FILEOBJECT_CONFIG;
pub type PWDF_FILEOBJECT_CONFIG = *mut _WDF_FILEOBJECT_CONFIG;

#[repr(C)]
#[derive(Copy, Clone)]
pub struct _WDF_IO_QUEUE_CONFIG {
    pub Size: ULONG,
    pub DispatchType: WDF_IO_QUEUE_DISPATCH_TYPE,
    pub PowerManaged: WDF_TRI_STATE,
    pub AllowZeroLengthRequests: BOOLEAN,
    pub DefaultQueue: BOOLEAN,
    pub EvtIoDefault: PFN_WDF_IO_QUEUE_IO_DEFAULT,
    pub EvtIoRead: PFN_WDF_IO_QUEUE_IO_READ,
    pub EvtIoWrite: PFN_WDF_IO_QUEUE_IO_WRITE,
    pub EvtIoDeviceControl: PFN_WDF_IO_QUEUE_IO_DEVICE_CONTROL,
    pub EvtIoInternalDeviceControl: PFN_WDF_IO_QUEUE_IO_INTERNAL_DEVICE_CONTROL,
    pub EvtIoStop: PFN_WDF_IO_QUEUE_IO_STOP,
    pub EvtIoResume: PFN_WDF_IO_QUEUE_IO_RESUME,
    pub EvtIoCanceledOnQueue: PFN_WDF_IO_QUEUE_IO_CANCELED_ON_QUEUE,
    pub Settings: _WDF_IO_QUEUE_CONFIG__bindgen_ty_1,
    pub Driver: WDFDRIVER,
}
#[repr(C)]
#[derive(Copy, Clone)]
pub union _WDF_IO_QUEUE_CONFIG__bindgen_ty_1 {
    pub Parallel: _WDF_IO_QUEUE_CONFIG__bindgen_ty_1__bindgen_ty_1,
}
#[repr(C)]
#[derive(Debug, Default, Copy, Clone)]
pub struct _WDF_IO_QUEUE_CONFIG__bindgen_ty_1__bindgen_ty_1 {
    pub NumberOfPresentedRequests: ULONG,
}
pub type WDF_IO_QUEUE_CONFIG = _WDF_IO_QUEUE_CONFIG;
pub type PWDF_IO_QUEUE_CONFIG = *mut _WDF_IO_QUEUE_CONFIG;

#[repr(C)]
#[derive(Debug, Default, Copy, Clone)]
pub struct _WDF_TIMER_CONFIG {
    pub Size: ULONG,
    pub EvtTimerFunc: PFN_WDF_TIMER,
    pub Period: ULONG,
    pub AutomaticSerialization: BOOLEAN,
    pub TolerableDelay: ULONG,
    /// `UseHighResolutionTimer` is `DECLSPEC_ALIGN(8)` in wdftimer.h: bindgen pads up to
    /// it explicitly (the struct is 40 bytes on 64-bit targets, not 32).
    pub __bindgen_padding_0: [u8; 4usize],
    pub UseHighResolutionTimer: BOOLEAN,
}
pub type WDF_TIMER_CONFIG = _WDF_TIMER_CONFIG;
pub type PWDF_TIMER_CONFIG = *mut _WDF_TIMER_CONFIG;

/// `WDF_REQUEST_PARAMETERS`, every member and union alternative in order: bindgen
/// numbers the anonymous structs of `Parameters` 1 (`Create`) to 5 (`Others`).
/// `POINTER_ALIGNMENT` members (`DECLSPEC_ALIGN(8)` on 64-bit) that would not fall on 8
/// get explicit `__bindgen_padding_N` fields.
#[repr(C)]
#[derive(Copy, Clone)]
pub struct _WDF_REQUEST_PARAMETERS {
    pub Size: USHORT,
    pub MinorFunction: UCHAR,
    pub Type: WDF_REQUEST_TYPE,
    pub Parameters: _WDF_REQUEST_PARAMETERS__bindgen_ty_1,
}
#[repr(C)]
#[derive(Copy, Clone)]
pub union _WDF_REQUEST_PARAMETERS__bindgen_ty_1 {
    pub Create: _WDF_REQUEST_PARAMETERS__bindgen_ty_1__bindgen_ty_1,
    pub Read: _WDF_REQUEST_PARAMETERS__bindgen_ty_1__bindgen_ty_2,
    pub Write: _WDF_REQUEST_PARAMETERS__bindgen_ty_1__bindgen_ty_3,
    pub DeviceIoControl: _WDF_REQUEST_PARAMETERS__bindgen_ty_1__bindgen_ty_4,
    pub Others: _WDF_REQUEST_PARAMETERS__bindgen_ty_1__bindgen_ty_5,
}
#[repr(C)]
#[derive(Debug, Copy, Clone)]
pub struct _WDF_REQUEST_PARAMETERS__bindgen_ty_1__bindgen_ty_1 {
    pub SecurityContext: PIO_SECURITY_CONTEXT,
    pub Options: ULONG,
    pub __bindgen_padding_0: [u8; 4usize],
    pub FileAttributes: USHORT,
    pub ShareAccess: USHORT,
    pub __bindgen_padding_1: [u8; 4usize],
    pub EaLength: ULONG,
}
#[repr(C)]
#[derive(Debug, Default, Copy, Clone)]
pub struct _WDF_REQUEST_PARAMETERS__bindgen_ty_1__bindgen_ty_2 {
    pub Length: usize,
    pub Key: ULONG,
    pub DeviceOffset: LONGLONG,
}
#[repr(C)]
#[derive(Debug, Default, Copy, Clone)]
pub struct _WDF_REQUEST_PARAMETERS__bindgen_ty_1__bindgen_ty_3 {
    pub Length: usize,
    pub Key: ULONG,
    pub DeviceOffset: LONGLONG,
}
#[repr(C)]
#[derive(Debug, Copy, Clone)]
pub struct _WDF_REQUEST_PARAMETERS__bindgen_ty_1__bindgen_ty_4 {
    pub OutputBufferLength: usize,
    pub InputBufferLength: usize,
    pub IoControlCode: ULONG,
    pub Type3InputBuffer: PVOID,
}
#[repr(C)]
#[derive(Debug, Copy, Clone)]
pub struct _WDF_REQUEST_PARAMETERS__bindgen_ty_1__bindgen_ty_5 {
    pub Arg1: PVOID,
    pub Arg2: PVOID,
    pub IoControlCode: ULONG,
    pub Arg4: PVOID,
}
pub type WDF_REQUEST_PARAMETERS = _WDF_REQUEST_PARAMETERS;
pub type PWDF_REQUEST_PARAMETERS = *mut _WDF_REQUEST_PARAMETERS;

zeroed_default!(
    _WDF_OBJECT_CONTEXT_TYPE_INFO,
    _WDF_OBJECT_ATTRIBUTES,
    _WDF_FILEOBJECT_CONFIG,
    _WDF_IO_QUEUE_CONFIG,
    _WDF_REQUEST_PARAMETERS,
    _UNICODE_STRING,
    _INTERFACE,
);
