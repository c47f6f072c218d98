//! The device context (`WDF_DECLARE_CONTEXT_TYPE_WITH_NAME` by hand) and WDF struct sizes.
//!
//! C header: `wdfobject.h` (`WDF_OBJECT_CONTEXT_TYPE_INFO`,
//! `WdfObjectGetTypedContextWorker`), `wdfdriver.h`/`wdfio.h`/... (`WDF_*_CONFIG` sizes).
//!
//! `wdk-sys` has no binding for the context-type macros (windows-drivers-rs #330) nor
//! for `WDF_STRUCTURE_SIZE` (#242), so they are written out as the echo sample does.

use alloc::sync::Arc;
use core::ffi::{CStr, c_void};
use core::ptr;
use core::sync::atomic::{AtomicPtr, AtomicU64};

use kmcl_sys::KMCL_CLIENT_INTERFACE_V5;
use wdk_sys::{
    PCWDF_OBJECT_CONTEXT_TYPE_INFO, ULONG, WDF_DRIVER_CONFIG, WDF_FILEOBJECT_CONFIG,
    WDF_IO_QUEUE_CONFIG, WDF_OBJECT_ATTRIBUTES, WDF_OBJECT_CONTEXT_TYPE_INFO,
    WDF_PNPPOWER_EVENT_CALLBACKS, WDFOBJECT, call_unsafe_wdf_function_binding,
};

use super::lock::KSpinLock;
use super::request::Request;
use crate::bridge::config::IcConfig;
use crate::bridge::{Config, State};
use crate::vmbus::{DeviceBridge, Held, VmbusDevice};

/// `sizeof(T)` as the `ULONG` WDF's `Size` fields take, checked at compile time.
const fn wdf_size<T>() -> ULONG {
    let s = size_of::<T>();
    assert!(
        s <= ULONG::MAX as usize,
        "WDF structure size must fit in ULONG"
    );
    #[expect(
        clippy::cast_possible_truncation,
        reason = "checked by the assert above"
    )]
    let s = s as ULONG;
    s
}

/// `WDF_DRIVER_CONFIG_SIZE`.
pub(super) const WDF_DRIVER_CONFIG_SIZE: ULONG = wdf_size::<WDF_DRIVER_CONFIG>();
/// `WDF_OBJECT_ATTRIBUTES_SIZE`.
pub(super) const WDF_OBJECT_ATTRIBUTES_SIZE: ULONG = wdf_size::<WDF_OBJECT_ATTRIBUTES>();
/// `WDF_IO_QUEUE_CONFIG_SIZE`.
pub(super) const WDF_IO_QUEUE_CONFIG_SIZE: ULONG = wdf_size::<WDF_IO_QUEUE_CONFIG>();
/// `WDF_PNPPOWER_EVENT_CALLBACKS_SIZE`.
pub(super) const WDF_PNPPOWER_EVENT_CALLBACKS_SIZE: ULONG =
    wdf_size::<WDF_PNPPOWER_EVENT_CALLBACKS>();
/// `WDF_FILEOBJECT_CONFIG_SIZE`.
pub(super) const WDF_FILEOBJECT_CONFIG_SIZE: ULONG = wdf_size::<WDF_FILEOBJECT_CONFIG>();
/// `WDF_OBJECT_CONTEXT_TYPE_INFO_SIZE`.
pub(super) const WDF_OBJECT_CONTEXT_TYPE_INFO_SIZE: ULONG =
    wdf_size::<WDF_OBJECT_CONTEXT_TYPE_INFO>();

/// The bound device as the I/O callbacks share it.
pub(super) type Device = VmbusDevice<Request, KSpinLock<State<Held, Request>>>;

/// The bound device's bridge, as the cancel paths reach it.
pub(super) type GuestBridge = DeviceBridge<Request, KSpinLock<State<Held, Request>>>;

/// `DEVICE_CONTEXT`: lives in the `WDFDEVICE`'s context memory.
///
/// # Invariants
///
/// Written with `ptr::write` in `EvtDriverDeviceAdd` right after `WdfDeviceCreate`, before
/// any other callback of the device can run; dropped in place by the device's
/// `EvtCleanupCallback`. `interface` is never moved while a channel exists (WDF context
/// memory does not move).
pub(super) struct DeviceContext {
    /// The KMCL table `WdfFdoQueryForInterface` filled (V5, or V1 on older hosts).
    pub(super) interface: KMCL_CLIENT_INTERFACE_V5,
    /// Whether `interface` holds a reference to release with `InterfaceDereference`.
    pub(super) interface_referenced: bool,
    /// Registry configuration, read once in `EvtDriverDeviceAdd`.
    pub(super) config: Config,
    /// IC mode (`IcService`, `IcTimeoutMs`), read with `config`.
    pub(super) ic: IcConfig,
    /// IC mode's periodic timer (a `WDFTIMER`, null until PrepareHardware creates it;
    /// `ic_timer.rs`).
    pub(super) ic_timer: AtomicPtr<c_void>,
    /// IC mode: the unbiased interrupt time (100 ns units) when the timer was last started,
    /// right after the channel (and its IC clock, at 0) was set up: the timer's ticks count
    /// from it (`ic_timer.rs`).
    pub(super) ic_clock_base: AtomicU64,
    /// The bound device between PrepareHardware and ReleaseHardware. I/O callbacks clone
    /// the `Arc` under the lock; ReleaseHardware takes it out and waits to be the only
    /// owner before it closes the channel.
    pub(super) device: KSpinLock<Option<Arc<Device>>>,
    /// The bridge of `device`, for `EvtRequestCancel` and `EvtIoStop`: set before
    /// `device`, taken out only after ReleaseHardware closed the channel, so a request the
    /// bridge holds is always found there (the cancel routine completes a request it does
    /// not find itself).
    pub(super) bridge: KSpinLock<Option<Arc<GuestBridge>>>,
}

/// `WDF_OBJECT_CONTEXT_TYPE_INFO` made `Sync` so it can be a `static` (it holds raw
/// pointers to itself and to a string literal, both immutable): what
/// `WDF_DECLARE_CONTEXT_TYPE_WITH_NAME` emits, for the device context here and the
/// host-mode control device's context in `host.rs`.
#[repr(transparent)]
pub(super) struct ContextTypeInfo(WDF_OBJECT_CONTEXT_TYPE_INFO);

// SAFETY: rule WDF_CONTEXT_TYPE_INFO_IMMUTABLE: the struct is never written after
// initialisation; WDF only reads it (and compares `UniqueType` addresses).
unsafe impl Sync for ContextTypeInfo {}

impl ContextTypeInfo {
    /// The type info of a context of type `T` named `name`; `this` is the address of the
    /// `static` being initialised (the C macro points `UniqueType` at the info itself).
    pub(super) const fn new<T>(name: &'static CStr, this: *const ContextTypeInfo) -> Self {
        Self(WDF_OBJECT_CONTEXT_TYPE_INFO {
            Size: WDF_OBJECT_CONTEXT_TYPE_INFO_SIZE,
            // `ContextName` is an `LPCSTR` (`*const CHAR`), which `CStr::as_ptr` is.
            ContextName: name.as_ptr(),
            ContextSize: size_of::<T>(),
            // CAST: `ContextTypeInfo` is a transparent wrapper of the C struct.
            UniqueType: this.cast(),
            EvtDriverGetUniqueContextType: None,
        })
    }

    /// `WDF_GET_CONTEXT_TYPE_INFO(T)`.
    pub(super) fn get(&'static self) -> PCWDF_OBJECT_CONTEXT_TYPE_INFO {
        self.0.UniqueType
    }

    /// The context of this type of `object` (`WdfObjectGetTypedContextWorker`), or null
    /// when the object has no context of this type.
    ///
    /// # Safety
    ///
    /// `object` is a live WDF object of this driver; `T` is the type this info was made
    /// for.
    pub(super) unsafe fn context_of<T>(&'static self, object: WDFOBJECT) -> *mut T {
        // SAFETY: rule WDF_TYPED_CONTEXT: a live object (caller's contract); the worker
        // returns its context memory of exactly this type, or NULL.
        let p = unsafe {
            call_unsafe_wdf_function_binding!(WdfObjectGetTypedContextWorker, object, self.get())
        };
        p.cast()
    }
}

/// `_WDF_DEVICE_CONTEXT_TYPE_INFO` (what `WDF_DECLARE_CONTEXT_TYPE_WITH_NAME` emits).
pub(super) static WDF_DEVICE_CONTEXT_TYPE_INFO: ContextTypeInfo =
    ContextTypeInfo::new::<DeviceContext>(
        c"DeviceContext",
        ptr::addr_of!(WDF_DEVICE_CONTEXT_TYPE_INFO),
    );

/// `DeviceGetContext(device)` (the accessor the C macro generates).
///
/// # Safety
///
/// `object` is a `WDFDEVICE` created with `device_context_type()` in its attributes.
pub(super) unsafe fn device_get_context(object: WDFOBJECT) -> *mut DeviceContext {
    // SAFETY: rule WDF_TYPED_CONTEXT: the caller passes a device created with this context
    // type (or, under the framework verifier, gets NULL for a wrong type).
    unsafe { WDF_DEVICE_CONTEXT_TYPE_INFO.context_of(object) }
}
