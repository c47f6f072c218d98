//! Calls that must not compile against the surface (as against the real wdk-sys), each
//! one token away from the baseline that must compile. Run by `scripts/check-glue.sh`.
#![no_std]

use wdk_sys::{
    NTSTATUS, PIRP, PLUGPLAY_REGKEY_DEVICE, PWDFDEVICE_INIT, WDF_NO_OBJECT_ATTRIBUTES, WDFKEY,
    WDFTIMER, call_unsafe_wdf_function_binding,
};

/// The baseline: the same calls, spelled right.
///
/// # Safety
///
/// Never called; compiled only.
pub unsafe fn baseline(init: PWDFDEVICE_INIT, timer: WDFTIMER, mut key: WDFKEY, irp: PIRP) {
    // SAFETY: compiled only.
    let _st: NTSTATUS = unsafe {
        call_unsafe_wdf_function_binding!(
            WdfFdoInitOpenRegistryKey,
            init,
            PLUGPLAY_REGKEY_DEVICE,
            0x0002_0019,
            WDF_NO_OBJECT_ATTRIBUTES,
            &raw mut key
        )
    };
    // SAFETY: compiled only.
    let _was_queued = unsafe { call_unsafe_wdf_function_binding!(WdfTimerStop, timer, 1) };
    // SAFETY: compiled only.
    unsafe { call_unsafe_wdf_function_binding!(WdfRegistryClose, key) };
    // SAFETY: compiled only.
    let _stack = unsafe {
        (*irp)
            .Tail
            .Overlay
            .__bindgen_anon_2
            .__bindgen_anon_1
            .CurrentStackLocation
    };
}

/// The failing cases.
///
/// # Safety
///
/// Never called; compiled only.
#[allow(unused_variables, unused_mut)]
pub unsafe fn failing(init: PWDFDEVICE_INIT, timer: WDFTIMER, mut key: WDFKEY, irp: PIRP) {
    #[cfg(feature = "wrong_name")]
    // SAFETY: compiled only.
    let _st: NTSTATUS = unsafe {
        call_unsafe_wdf_function_binding!(
            WdfDeviceInitOpenRegistryKey,
            init,
            PLUGPLAY_REGKEY_DEVICE,
            0x0002_0019,
            WDF_NO_OBJECT_ATTRIBUTES,
            &raw mut key
        )
    };
    #[cfg(feature = "wrong_type")]
    // SAFETY: compiled only.
    let _was_queued = unsafe { call_unsafe_wdf_function_binding!(WdfTimerStop, timer, true) };
    #[cfg(feature = "wrong_arity")]
    // SAFETY: compiled only.
    unsafe {
        call_unsafe_wdf_function_binding!(WdfRegistryClose, key, 0)
    };
    #[cfg(feature = "inline_only")]
    // SAFETY: compiled only.
    let _stack = unsafe { wdk_sys::ntddk::IoGetCurrentIrpStackLocation(irp) };
}
