//! IC mode's per-device values: `IcService` and `IcTimeoutMs` in the device's hardware key.
//!
//! C header: `wdfdevice.h` (`WdfDeviceOpenRegistryKey`), `wdfregistry.h`
//! (`WdfRegistryQueryULong`, `WdfRegistryClose`). Reference: `docs/ic.md` ("Binding it").
//!
//! The INF's IC install sections write `IcService` with `HKR,,IcService` in their `.HW`
//! AddReg (the device's `Device Parameters` key, `PLUGPLAY_REGKEY_DEVICE`). One
//! installation can then bind heartbeat, shutdown and time sync, each device speaking
//! its own service. Values found there override the service-wide ones in `Parameters`.

use wdk_sys::{
    NTSTATUS, PLUGPLAY_REGKEY_DEVICE, ULONG, WDF_NO_HANDLE, WDF_NO_OBJECT_ATTRIBUTES, WDFDEVICE,
    WDFKEY, call_unsafe_wdf_function_binding,
};

use super::device::{KEY_READ, unicode};
use crate::bridge::config::{self, IcConfig, Value};
use crate::trace::{Event, Tracer};

/// ASCII to UTF-16 at compile time, for registry value names.
const fn ascii_utf16<const N: usize>(s: &str) -> [u16; N] {
    let b = s.as_bytes();
    let mut out = [0u16; N];
    let mut i = 0;
    while i < N {
        out[i] = b[i] as u16;
        i += 1;
    }
    out
}

static IC_SERVICE_NAME: [u16; config::KEY_IC_SERVICE.len()] = ascii_utf16(config::KEY_IC_SERVICE);
static IC_TIMEOUT_NAME: [u16; config::KEY_IC_TIMEOUT_MS.len()] =
    ascii_utf16(config::KEY_IC_TIMEOUT_MS);

/// `base` (the service-wide IC values) with the device's own values applied; bad values
/// are reported as `ConfigIssue` events and ignored. PASSIVE_LEVEL, in
/// `EvtDriverDeviceAdd` after `WdfDeviceCreate`.
///
/// # Safety
///
/// `device` is the device this `EvtDriverDeviceAdd` created.
pub(super) unsafe fn apply_device_values(
    device: WDFDEVICE,
    base: IcConfig,
    tracer: Tracer,
) -> IcConfig {
    let mut key = WDF_NO_HANDLE as WDFKEY;
    // SAFETY: rule WDF_CALL_AT_PASSIVE: EvtDriverDeviceAdd; a created device; `key` is a
    // local out-param. PLUGPLAY_REGKEY_DEVICE opens the hardware key the INF's .HW AddReg
    // wrote.
    // UNVERIFIED: PLUGPLAY_REGKEY_DEVICE is generated as a `u32` constant (wdm.h
    // `#define PLUGPLAY_REGKEY_DEVICE 1`) matching the ULONG parameter.
    let st: NTSTATUS = unsafe {
        call_unsafe_wdf_function_binding!(
            WdfDeviceOpenRegistryKey,
            device,
            PLUGPLAY_REGKEY_DEVICE,
            KEY_READ,
            WDF_NO_OBJECT_ATTRIBUTES,
            &raw mut key
        )
    };
    if st < 0 {
        return base;
    }
    let names: [(&str, &'static [u16]); 2] = [
        (config::KEY_IC_SERVICE, &IC_SERVICE_NAME),
        (config::KEY_IC_TIMEOUT_MS, &IC_TIMEOUT_NAME),
    ];
    let mut values: [(&str, u32, bool); 2] = [("", 0, false); 2];
    for (slot, (name, wide)) in values.iter_mut().zip(names) {
        let us = unicode(wide);
        let mut v: ULONG = 0;
        // SAFETY: rule WDF_CALL_AT_PASSIVE: an open key; `us` describes a static buffer;
        // `v` is a local out-param. A missing value returns STATUS_OBJECT_NAME_NOT_FOUND.
        let st: NTSTATUS = unsafe {
            call_unsafe_wdf_function_binding!(WdfRegistryQueryULong, key, &raw const us, &raw mut v)
        };
        *slot = (name, v, st >= 0);
    }
    // SAFETY: rule WDF_CALL_AT_PASSIVE: closes the key opened above, once.
    unsafe { call_unsafe_wdf_function_binding!(WdfRegistryClose, key) };
    let (ic, issues) = IcConfig::parse_onto(
        base,
        values
            .iter()
            .filter(|v| v.2)
            .map(|&(k, v, _)| (k, Value::Dword(v))),
    );
    for issue in &issues {
        tracer.emit(Event::ConfigIssue {
            key: issue.key,
            kind: issue.kind,
        });
    }
    ic
}
