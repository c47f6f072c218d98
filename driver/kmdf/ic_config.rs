//! IC mode's per-device values: `IcService` and `IcTimeoutMs` in the device's hardware key.
//!
//! C header: `wdfdevice.h` (`WdfDeviceOpenRegistryKey`, through `registry.rs`). Reference: `docs/ic.md` ("Binding it").
//!
//! The INF's IC install sections write `IcService` with `HKR,,IcService` in their `.HW`
//! AddReg (the device's `Device Parameters` key, `PLUGPLAY_REGKEY_DEVICE`). One
//! installation can then bind heartbeat, shutdown and time sync, each device speaking
//! its own service. Values found there override the service-wide ones in `Parameters`.

use wdk_sys::WDFDEVICE;

use super::device::report_issues;
use super::registry::{Key, wide};
use crate::bridge::config::{self, IcConfig, Value};
use crate::trace::Tracer;

/// The per-device IC values, with their UTF-16 names.
static IC_KEY_NAMES: [(&str, &[u16]); 2] = [
    (config::KEY_IC_SERVICE, wide!(config::KEY_IC_SERVICE)),
    (config::KEY_IC_TIMEOUT_MS, wide!(config::KEY_IC_TIMEOUT_MS)),
];

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
    // SAFETY: rule WDF_CALL_AT_PASSIVE: EvtDriverDeviceAdd; a created device (caller's
    // contract).
    let Some(key) = (unsafe { Key::device_hardware(device) }) else {
        return base;
    };
    let mut values = [("", 0u32); IC_KEY_NAMES.len()];
    let found = key.query_ulongs(&IC_KEY_NAMES, &mut values);
    drop(key);
    let (ic, issues) = IcConfig::parse_onto(
        base,
        values[..found].iter().map(|&(k, v)| (k, Value::Dword(v))),
    );
    report_issues(tracer, issues.iter());
    ic
}
