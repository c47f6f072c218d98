//! `DriverEntry` and `EvtDriverUnload`.
//!
//! C header: `wdfdriver.h` (`WdfDriverCreate`, `WDF_DRIVER_CONFIG`); `wdm.h`
//! (`DRIVER_INITIALIZE`). Pattern: the `sample-kmdf-driver` and echo samples of
//! windows-drivers-rs / Windows-rust-driver-samples.

use wdk_sys::{
    DRIVER_OBJECT, NTSTATUS, PCUNICODE_STRING, PDRIVER_OBJECT, WDF_DRIVER_CONFIG, WDF_NO_HANDLE,
    WDF_NO_OBJECT_ATTRIBUTES, WDFDRIVER, call_unsafe_wdf_function_binding,
};

use super::context::WDF_DRIVER_CONFIG_SIZE;
use super::device::evt_device_add;
use crate::trace;

/// `DriverEntry`: registers the ETW provider and creates the WDF driver object.
/// PASSIVE_LEVEL, once. The linker's entry is `FxDriverEntry` (WdfDriverEntry.lib),
/// which binds WDF and calls this.
///
/// # Safety
///
/// Called only by the I/O manager (through `FxDriverEntry`) with a valid driver object
/// and registry path.
#[cfg_attr(not(test), unsafe(export_name = "DriverEntry"))]
pub unsafe extern "system" fn driver_entry(
    driver: &mut DRIVER_OBJECT,
    registry_path: PCUNICODE_STRING,
) -> NTSTATUS {
    // SAFETY: rule ETW_UNREGISTER_BEFORE_UNLOAD: `evt_driver_unload` unregisters, and so
    // does the failure path below, before the image can unload.
    let _ = unsafe { trace::register() };
    let mut config = WDF_DRIVER_CONFIG {
        Size: WDF_DRIVER_CONFIG_SIZE,
        EvtDriverDeviceAdd: Some(evt_device_add),
        EvtDriverUnload: Some(evt_driver_unload),
        ..WDF_DRIVER_CONFIG::default()
    };
    // SAFETY: rule WDF_CALL_AT_PASSIVE: DriverEntry; `driver` and `registry_path` come from
    // the I/O manager; the config is initialised (WDF_DRIVER_CONFIG_INIT's values).
    let status: NTSTATUS = unsafe {
        call_unsafe_wdf_function_binding!(
            WdfDriverCreate,
            driver as PDRIVER_OBJECT,
            registry_path,
            WDF_NO_OBJECT_ATTRIBUTES,
            &raw mut config,
            WDF_NO_HANDLE.cast::<WDFDRIVER>()
        )
    };
    if status < 0 {
        let _ = trace::unregister();
    }
    status
}

/// `EvtDriverUnload` (`EVT_WDF_DRIVER_UNLOAD`): unregisters the ETW provider. PASSIVE_LEVEL.
extern "C" fn evt_driver_unload(_driver: WDFDRIVER) {
    let _ = trace::unregister();
}
