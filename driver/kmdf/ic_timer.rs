//! IC mode's timeout clock: a periodic `WDFTIMER` that calls `VmbusDevice::ic_tick`.
//!
//! C header: `wdftimer.h` (`WdfTimerCreate`, `WdfTimerStart`, `WdfTimerStop`,
//! `WdfTimerGetParentObject`, `WDF_TIMER_CONFIG_INIT_PERIODIC`); `wdm.h`
//! (`KeQueryUnbiasedInterruptTime`). Reference: `docs/ic.md` ("The user-mode side").
//!
//! Only devices in IC mode have one. It is created once, parented to the device (WDF
//! deletes it with the device), started when PrepareHardware opened the channel and
//! stopped, waiting for a running callback, at the start of ReleaseHardware. So its
//! callback never holds the last reference to the device, which must be dropped at
//! PASSIVE_LEVEL.

use core::ptr;
use core::sync::atomic::Ordering;

use wdk_sys::{
    _WDF_EXECUTION_LEVEL, _WDF_SYNCHRONIZATION_SCOPE, NTSTATUS, STATUS_SUCCESS, ULONG,
    WDF_OBJECT_ATTRIBUTES, WDF_TIMER_CONFIG, WDFDEVICE, WDFOBJECT, WDFTIMER,
    call_unsafe_wdf_function_binding,
};

use super::context::{DeviceContext, WDF_OBJECT_ATTRIBUTES_SIZE, device_get_context};
use crate::bridge::Lock;

/// Tick period: timeouts fire at most this late.
const IC_TICK_MS: ULONG = 1_000;

/// `WDF_TIMER_CONFIG_SIZE`.
#[expect(
    clippy::cast_possible_truncation,
    reason = "a few dozen bytes always fit in ULONG"
)]
const WDF_TIMER_CONFIG_SIZE: ULONG = size_of::<WDF_TIMER_CONFIG>() as ULONG;

/// Creates (once) and starts the device's IC timer. PASSIVE_LEVEL (PrepareHardware).
///
/// # Safety
///
/// `device` is our live device and `ctx` its initialised context.
pub(super) unsafe fn start(device: WDFDEVICE, ctx: &DeviceContext) -> NTSTATUS {
    // CAST: the context keeps the WDFTIMER handle as an untyped pointer.
    let mut timer = ctx.ic_timer.load(Ordering::Acquire) as WDFTIMER;
    if timer.is_null() {
        // WDF_TIMER_CONFIG_INIT_PERIODIC, without automatic serialization (the callback
        // takes the device's own locks).
        let mut config = WDF_TIMER_CONFIG {
            Size: WDF_TIMER_CONFIG_SIZE,
            EvtTimerFunc: Some(evt_ic_timer),
            Period: IC_TICK_MS,
            AutomaticSerialization: 0,
            TolerableDelay: 0,
            ..WDF_TIMER_CONFIG::default()
        };
        let mut attributes = WDF_OBJECT_ATTRIBUTES {
            Size: WDF_OBJECT_ATTRIBUTES_SIZE,
            ExecutionLevel: _WDF_EXECUTION_LEVEL::WdfExecutionLevelInheritFromParent,
            SynchronizationScope:
                _WDF_SYNCHRONIZATION_SCOPE::WdfSynchronizationScopeInheritFromParent,
            ParentObject: device as WDFOBJECT,
            ..WDF_OBJECT_ATTRIBUTES::default()
        };
        let mut created: WDFTIMER = ptr::null_mut();
        // SAFETY: rule WDF_CREATE_AT_PASSIVE: PASSIVE_LEVEL (PrepareHardware); config and
        // attributes are initialised locals; the timer is a child of our live device.
        let st: NTSTATUS = unsafe {
            call_unsafe_wdf_function_binding!(
                WdfTimerCreate,
                &raw mut config,
                &raw mut attributes,
                &raw mut created
            )
        };
        if st < 0 {
            return st;
        }
        ctx.ic_timer.store(created.cast(), Ordering::Release);
        timer = created;
    }
    // The IC clock starts at 0 when the channel is set up (`IcChannel::new`, just before):
    // ticks count from here, not from boot, or a request forwarded before the first tick
    // (deadline `timeout` ms) would time out at once.
    // SAFETY: rule IRQL_TOO_HIGH: KeQueryUnbiasedInterruptTime (an ntoskrnl export) is
    // callable at any IRQL.
    let base = unsafe { wdk_sys::ntddk::KeQueryUnbiasedInterruptTime() };
    ctx.ic_clock_base.store(base, Ordering::Release);
    // SAFETY: rule WDF_HANDLE_VALID_IN_CALLBACK: a timer of our live device; a negative
    // due time is relative, in 100 ns units.
    let _already_queued = unsafe {
        call_unsafe_wdf_function_binding!(WdfTimerStart, timer, -i64::from(IC_TICK_MS) * 10_000)
    };
    STATUS_SUCCESS
}

/// Stops the IC timer, if any, waiting for a running callback. PASSIVE_LEVEL
/// (ReleaseHardware, before the device is taken out of the context).
///
/// # Safety
///
/// `ctx` is our device's initialised context.
pub(super) unsafe fn stop(ctx: &DeviceContext) {
    // CAST: as in `start`.
    let timer = ctx.ic_timer.load(Ordering::Acquire) as WDFTIMER;
    if timer.is_null() {
        return;
    }
    // SAFETY: rule WDF_CALL_AT_PASSIVE: `Wait = TRUE` requires PASSIVE_LEVEL
    // (ReleaseHardware); the timer is a child of our live device.
    let _was_queued = unsafe { call_unsafe_wdf_function_binding!(WdfTimerStop, timer, 1) };
}

/// `EvtTimerFunc` (DISPATCH_LEVEL): advance the IC clock, answer expired requests.
extern "C" fn evt_ic_timer(timer: WDFTIMER) {
    // SAFETY: rule WDF_HANDLE_VALID_IN_CALLBACK: the timer whose callback this is.
    let device = unsafe { call_unsafe_wdf_function_binding!(WdfTimerGetParentObject, timer) };
    // SAFETY: rule WDF_TYPED_CONTEXT: the parent is our device.
    let ctx = unsafe { device_get_context(device) };
    if ctx.is_null() {
        return;
    }
    // SAFETY: rule DEVICE_CONTEXT_INITIALISED: the timer is started after the context
    // was written and stopped before it is dropped.
    let ctx = unsafe { &*ctx };
    if let Some(dev) = ctx.device.with(|d| d.clone()) {
        // SAFETY: rule IRQL_TOO_HIGH: KeQueryUnbiasedInterruptTime (an ntoskrnl export) is
        // callable at any IRQL.
        let now_100ns = unsafe { wdk_sys::ntddk::KeQueryUnbiasedInterruptTime() };
        let since_start = now_100ns.saturating_sub(ctx.ic_clock_base.load(Ordering::Acquire));
        dev.ic_tick(since_start / 10_000);
    }
}
