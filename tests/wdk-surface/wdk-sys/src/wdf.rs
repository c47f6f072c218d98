//! `wdk_sys::wdf` and the WDF function table.
//!
//! wdk-sys does not declare WDF functions as `extern` symbols: each `WdfXxx` is an entry
//! of the table `WdfFunctions_01031` (KMDF 1.31; bindgen renames it `WdfFunctions`), at
//! index `_WDFFUNCENUM::WdfXxxTableIndex`, with the signature `PFN_WDFXXX` whose first
//! parameter is `PWDF_DRIVER_GLOBALS`. `call_unsafe_wdf_function_binding!(WdfXxx, args..)`
//! (wdk-macros 0.5.2) looks both up, emits an `unsafe fn` with `PFN_WDFXXX`'s parameters
//! (without the globals) and calls it with the arguments.
//!
//! Here each function of that table the glue uses gets that `unsafe fn` once, in
//! [`__functions`], declared from its `PFN_` type; the macro (`crate::macros`) expands to
//! a call of it. So, as with the real macro, an unknown function name or an argument of
//! the wrong type or number is a compile error, and a function with a result is
//! `#[must_use]`.
//!
//! The index values are KMDF 1.31's (`wdffuncenum.h` of `wdf/kmdf/1.31`), though the
//! surface is only compiled, never linked or run, and the glue never names an index.

use core::ffi::c_void;

use crate::types::*;

unsafe extern "C" {
    /// The KMDF 1.31 function table (`WdfFunctions_01031`), filled by `WdfVersionBind`.
    #[link_name = "WdfFunctions_01031"]
    pub static mut WdfFunctions: *const WDFFUNC;
    /// The driver's WDF globals, filled by `WdfVersionBind`.
    pub static mut WdfDriverGlobals: PWDF_DRIVER_GLOBALS;
}

/// Declares, for each WDF function: its `PFN_` type (at the crate root, as bindgen does),
/// its `_WDFFUNCENUM` index, and the typed `unsafe fn` the macro calls.
macro_rules! wdf_functions {
    ($(
        $name:ident = $index_name:ident $index:literal, $pfn:ident
            ($($param:ident : $ty:ty),* $(,)?) $(-> $ret:ty)?;
    )*) => {
        /// `PFN_WDFXXX`: the table entries' signatures.
        pub mod pfn {
            use super::*;
            $(
                pub type $pfn = ::core::option::Option<
                    unsafe extern "C" fn(DriverGlobals: PWDF_DRIVER_GLOBALS, $($param: $ty),*)
                        $(-> $ret)?,
                >;
            )*
        }

        /// `WDFFUNCENUM`: the table indexes.
        pub mod _WDFFUNCENUM {
            pub type Type = ::core::ffi::c_int;
            $(pub const $index_name: Type = $index;)*
        }

        /// The typed calls `call_unsafe_wdf_function_binding!` expands to.
        #[doc(hidden)]
        pub mod __functions {
            use super::*;
            $(
                wdf_functions!(@fn $name $index_name $pfn ($($param: $ty),*) $(-> $ret)?);
            )*
        }
    };
    (@fn $name:ident $index_name:ident $pfn:ident ($($param:ident : $ty:ty),*) -> $ret:ty) => {
        #[must_use]
        #[inline(always)]
        pub unsafe fn $name($($param: $ty),*) -> $ret {
            // SAFETY: the caller upholds the WDF function's contract (the macro is
            // `unsafe`); the table entry at this index has this signature.
            unsafe { (table_entry::<pfn::$pfn>(_WDFFUNCENUM::$index_name))(WdfDriverGlobals, $($param),*) }
        }
    };
    (@fn $name:ident $index_name:ident $pfn:ident ($($param:ident : $ty:ty),*)) => {
        #[inline(always)]
        pub unsafe fn $name($($param: $ty),*) {
            // SAFETY: as above.
            unsafe { (table_entry::<pfn::$pfn>(_WDFFUNCENUM::$index_name))(WdfDriverGlobals, $($param),*) }
        }
    };
}

/// The table entry at `index` as its typed function pointer.
///
/// # Safety
///
/// WDF is bound (`WdfFunctions` filled) and `F` is the `PFN_` type of entry `index`,
/// unwrapped from its `Option`.
#[inline(always)]
unsafe fn table_entry<F: Copy>(index: _WDFFUNCENUM::Type) -> <F as Unwrap>::Fn
where
    F: Unwrap,
{
    // SAFETY: WDF filled the table (caller's contract); `index` is below its length.
    let entry: WDFFUNC = unsafe { *WdfFunctions.add(index as usize) };
    // SAFETY: a `WDFFUNC` and every `PFN_` type are `Option<fn pointer>` of one size; the
    // entry has the signature `F` (caller's contract).
    let typed: F = unsafe { core::mem::transmute_copy::<WDFFUNC, F>(&entry) };
    typed.unwrap_fn()
}

/// `Option<fn>` to `fn` for the `PFN_` types (a missing entry is a broken binding).
pub trait Unwrap {
    /// The function pointer type.
    type Fn;
    /// The function pointer; panics on an empty entry.
    fn unwrap_fn(self) -> Self::Fn;
}

impl<T> Unwrap for Option<T> {
    type Fn = T;
    fn unwrap_fn(self) -> T {
        match self {
            Some(f) => f,
            None => unreachable!("WDF function table entry is empty"),
        }
    }
}

pub use self::pfn::*;

wdf_functions! {
    WdfDriverCreate = WdfDriverCreateTableIndex 116, PFN_WDFDRIVERCREATE(
        DriverObject: PDRIVER_OBJECT,
        RegistryPath: PCUNICODE_STRING,
        DriverAttributes: PWDF_OBJECT_ATTRIBUTES,
        DriverConfig: PWDF_DRIVER_CONFIG,
        Driver: *mut WDFDRIVER,
    ) -> NTSTATUS;
    WdfDriverOpenParametersRegistryKey = WdfDriverOpenParametersRegistryKeyTableIndex 119,
        PFN_WDFDRIVEROPENPARAMETERSREGISTRYKEY(
        Driver: WDFDRIVER,
        DesiredAccess: ACCESS_MASK,
        KeyAttributes: PWDF_OBJECT_ATTRIBUTES,
        Key: *mut WDFKEY,
    ) -> NTSTATUS;
    WdfDeviceInitSetPnpPowerEventCallbacks = WdfDeviceInitSetPnpPowerEventCallbacksTableIndex 55,
        PFN_WDFDEVICEINITSETPNPPOWEREVENTCALLBACKS(
        DeviceInit: PWDFDEVICE_INIT,
        PnpPowerEventCallbacks: PWDF_PNPPOWER_EVENT_CALLBACKS,
    );
    WdfDeviceInitSetIoType = WdfDeviceInitSetIoTypeTableIndex 61, PFN_WDFDEVICEINITSETIOTYPE(
        DeviceInit: PWDFDEVICE_INIT,
        IoType: WDF_DEVICE_IO_TYPE,
    );
    WdfDeviceInitSetFileObjectConfig = WdfDeviceInitSetFileObjectConfigTableIndex 71,
        PFN_WDFDEVICEINITSETFILEOBJECTCONFIG(
        DeviceInit: PWDFDEVICE_INIT,
        FileObjectConfig: PWDF_FILEOBJECT_CONFIG,
        FileObjectAttributes: PWDF_OBJECT_ATTRIBUTES,
    );
    WdfDeviceInitSetIoInCallerContextCallback =
        WdfDeviceInitSetIoInCallerContextCallbackTableIndex 74,
        PFN_WDFDEVICEINITSETIOINCALLERCONTEXTCALLBACK(
        DeviceInit: PWDFDEVICE_INIT,
        EvtIoInCallerContext: PFN_WDF_IO_IN_CALLER_CONTEXT,
    );
    WdfDeviceCreate = WdfDeviceCreateTableIndex 75, PFN_WDFDEVICECREATE(
        DeviceInit: *mut PWDFDEVICE_INIT,
        DeviceAttributes: PWDF_OBJECT_ATTRIBUTES,
        Device: *mut WDFDEVICE,
    ) -> NTSTATUS;
    WdfDeviceCreateDeviceInterface = WdfDeviceCreateDeviceInterfaceTableIndex 77,
        PFN_WDFDEVICECREATEDEVICEINTERFACE(
        Device: WDFDEVICE,
        InterfaceClassGUID: *const GUID,
        ReferenceString: PCUNICODE_STRING,
    ) -> NTSTATUS;
    WdfDeviceOpenRegistryKey = WdfDeviceOpenRegistryKeyTableIndex 48,
        PFN_WDFDEVICEOPENREGISTRYKEY(
        Device: WDFDEVICE,
        DeviceInstanceKeyType: ULONG,
        DesiredAccess: ACCESS_MASK,
        KeyAttributes: PWDF_OBJECT_ATTRIBUTES,
        Key: *mut WDFKEY,
    ) -> NTSTATUS;
    WdfDeviceWdmGetDeviceObject = WdfDeviceWdmGetDeviceObjectTableIndex 31,
        PFN_WDFDEVICEWDMGETDEVICEOBJECT(Device: WDFDEVICE) -> PDEVICE_OBJECT;
    WdfDeviceWdmGetPhysicalDevice = WdfDeviceWdmGetPhysicalDeviceTableIndex 33,
        PFN_WDFDEVICEWDMGETPHYSICALDEVICE(Device: WDFDEVICE) -> PDEVICE_OBJECT;
    WdfDeviceEnqueueRequest = WdfDeviceEnqueueRequestTableIndex 91,
        PFN_WDFDEVICEENQUEUEREQUEST(Device: WDFDEVICE, Request: WDFREQUEST) -> NTSTATUS;
    WdfFdoInitOpenRegistryKey = WdfFdoInitOpenRegistryKeyTableIndex 125,
        PFN_WDFFDOINITOPENREGISTRYKEY(
        DeviceInit: PWDFDEVICE_INIT,
        DeviceInstanceKeyType: ULONG,
        DesiredAccess: ACCESS_MASK,
        KeyAttributes: PWDF_OBJECT_ATTRIBUTES,
        Key: *mut WDFKEY,
    ) -> NTSTATUS;
    WdfFdoQueryForInterface = WdfFdoQueryForInterfaceTableIndex 131,
        PFN_WDFFDOQUERYFORINTERFACE(
        Fdo: WDFDEVICE,
        InterfaceType: LPCGUID,
        Interface: PINTERFACE,
        Size: USHORT,
        Version: USHORT,
        InterfaceSpecificData: PVOID,
    ) -> NTSTATUS;
    WdfFileObjectGetDevice = WdfFileObjectGetDeviceTableIndex 139,
        PFN_WDFFILEOBJECTGETDEVICE(FileObject: WDFFILEOBJECT) -> WDFDEVICE;
    WdfIoQueueCreate = WdfIoQueueCreateTableIndex 152, PFN_WDFIOQUEUECREATE(
        Device: WDFDEVICE,
        Config: PWDF_IO_QUEUE_CONFIG,
        QueueAttributes: PWDF_OBJECT_ATTRIBUTES,
        Queue: *mut WDFQUEUE,
    ) -> NTSTATUS;
    WdfIoQueueGetDevice = WdfIoQueueGetDeviceTableIndex 157,
        PFN_WDFIOQUEUEGETDEVICE(Queue: WDFQUEUE) -> WDFDEVICE;
    WdfObjectGetTypedContextWorker = WdfObjectGetTypedContextWorkerTableIndex 202,
        PFN_WDFOBJECTGETTYPEDCONTEXTWORKER(
        Handle: WDFOBJECT,
        TypeInfo: PCWDF_OBJECT_CONTEXT_TYPE_INFO,
    ) -> PVOID;
    WdfObjectDelete = WdfObjectDeleteTableIndex 208, PFN_WDFOBJECTDELETE(Object: WDFOBJECT);
    WdfRegistryQueryULong = WdfRegistryQueryULongTableIndex 240, PFN_WDFREGISTRYQUERYULONG(
        Key: WDFKEY,
        ValueName: PCUNICODE_STRING,
        Value: PULONG,
    ) -> NTSTATUS;
    WdfRegistryClose = WdfRegistryCloseTableIndex 231, PFN_WDFREGISTRYCLOSE(Key: WDFKEY);
    WdfRequestComplete = WdfRequestCompleteTableIndex 263, PFN_WDFREQUESTCOMPLETE(
        Request: WDFREQUEST,
        Status: NTSTATUS,
    );
    WdfRequestCompleteWithInformation = WdfRequestCompleteWithInformationTableIndex 265,
        PFN_WDFREQUESTCOMPLETEWITHINFORMATION(
        Request: WDFREQUEST,
        Status: NTSTATUS,
        Information: ULONG_PTR,
    );
    WdfRequestSetInformation = WdfRequestSetInformationTableIndex 275,
        PFN_WDFREQUESTSETINFORMATION(Request: WDFREQUEST, Information: ULONG_PTR);
    WdfRequestGetFileObject = WdfRequestGetFileObjectTableIndex 277,
        PFN_WDFREQUESTGETFILEOBJECT(Request: WDFREQUEST) -> WDFFILEOBJECT;
    WdfRequestGetIoQueue = WdfRequestGetIoQueueTableIndex 282,
        PFN_WDFREQUESTGETIOQUEUE(Request: WDFREQUEST) -> WDFQUEUE;
    WdfRequestGetParameters = WdfRequestGetParametersTableIndex 266,
        PFN_WDFREQUESTGETPARAMETERS(Request: WDFREQUEST, Parameters: PWDF_REQUEST_PARAMETERS);
    WdfRequestMarkCancelableEx = WdfRequestMarkCancelableExTableIndex 393,
        PFN_WDFREQUESTMARKCANCELABLEEX(
        Request: WDFREQUEST,
        EvtRequestCancel: PFN_WDF_REQUEST_CANCEL,
    ) -> NTSTATUS;
    WdfRequestUnmarkCancelable = WdfRequestUnmarkCancelableTableIndex 256,
        PFN_WDFREQUESTUNMARKCANCELABLE(Request: WDFREQUEST) -> NTSTATUS;
    WdfRequestRetrieveInputBuffer = WdfRequestRetrieveInputBufferTableIndex 269,
        PFN_WDFREQUESTRETRIEVEINPUTBUFFER(
        Request: WDFREQUEST,
        MinimumRequiredLength: usize,
        Buffer: *mut PVOID,
        Length: *mut usize,
    ) -> NTSTATUS;
    WdfRequestRetrieveOutputBuffer = WdfRequestRetrieveOutputBufferTableIndex 270,
        PFN_WDFREQUESTRETRIEVEOUTPUTBUFFER(
        Request: WDFREQUEST,
        MinimumRequiredSize: usize,
        Buffer: *mut PVOID,
        Length: *mut usize,
    ) -> NTSTATUS;
    WdfRequestStopAcknowledge = WdfRequestStopAcknowledgeTableIndex 284,
        PFN_WDFREQUESTSTOPACKNOWLEDGE(Request: WDFREQUEST, Requeue: BOOLEAN);
    WdfRequestWdmGetIrp = WdfRequestWdmGetIrpTableIndex 285,
        PFN_WDFREQUESTWDMGETIRP(Request: WDFREQUEST) -> PIRP;
    WdfSpinLockCreate = WdfSpinLockCreateTableIndex 315, PFN_WDFSPINLOCKCREATE(
        SpinLockAttributes: PWDF_OBJECT_ATTRIBUTES,
        SpinLock: *mut WDFSPINLOCK,
    ) -> NTSTATUS;
    WdfSpinLockAcquire = WdfSpinLockAcquireTableIndex 316,
        PFN_WDFSPINLOCKACQUIRE(SpinLock: WDFSPINLOCK);
    WdfSpinLockRelease = WdfSpinLockReleaseTableIndex 317,
        PFN_WDFSPINLOCKRELEASE(SpinLock: WDFSPINLOCK);
    WdfTimerCreate = WdfTimerCreateTableIndex 318, PFN_WDFTIMERCREATE(
        Config: PWDF_TIMER_CONFIG,
        Attributes: PWDF_OBJECT_ATTRIBUTES,
        Timer: *mut WDFTIMER,
    ) -> NTSTATUS;
    WdfTimerStart = WdfTimerStartTableIndex 319,
        PFN_WDFTIMERSTART(Timer: WDFTIMER, DueTime: LONGLONG) -> BOOLEAN;
    WdfTimerStop = WdfTimerStopTableIndex 320,
        PFN_WDFTIMERSTOP(Timer: WDFTIMER, Wait: BOOLEAN) -> BOOLEAN;
    WdfTimerGetParentObject = WdfTimerGetParentObjectTableIndex 321,
        PFN_WDFTIMERGETPARENTOBJECT(Timer: WDFTIMER) -> WDFOBJECT;
}

/// Keeps `c_void` in scope for signatures that spell `PVOID` out.
#[doc(hidden)]
pub type __Void = c_void;
