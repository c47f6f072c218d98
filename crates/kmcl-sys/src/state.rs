//! The state-change callback tables and their `INIT` helpers.
//!
//! C header: `vmbuskernelmodeclientlibapi.h` (`VMB_CHANNEL_STATE_CHANGE_CALLBACKS`,
//! `VMB_CHANNEL_STATE_CHANGE_CALLBACKS_V5`, `FORCEINLINE ..._INIT`, `..._INIT_V5`).
//!
//! Every callback is optional. `VmbChannelInitSetStateChangeCallbacks` checks
//! `Version` and `Size` (a wrong pair is `STATUS_INVALID_PARAMETER_2`); the V5 table
//! is passed to it cast to `PVMB_CHANNEL_STATE_CHANGE_CALLBACKS`.

use crate::callbacks::{
    PFN_VMB_CHANNEL_CLOSED, PFN_VMB_CHANNEL_CLOSED_EX, PFN_VMB_CHANNEL_OPENED,
    PFN_VMB_CHANNEL_OPENED_EX, PFN_VMB_CHANNEL_POST_STARTED, PFN_VMB_CHANNEL_POST_STARTED_EX,
    PFN_VMB_CHANNEL_STARTED, PFN_VMB_CHANNEL_STARTED_EX, PFN_VMB_CHANNEL_SUSPEND,
    PFN_VMB_CHANNEL_SUSPEND_EX,
};
use crate::types::{PVOID, ULONG};

/// `VMB_CHANNEL_STATE_CHANGE_CALLBACKS` (Version 1, 48 bytes on x64).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct VMB_CHANNEL_STATE_CHANGE_CALLBACKS {
    pub Version: ULONG,
    pub Size: ULONG,
    pub EvtChannelOpened: PFN_VMB_CHANNEL_OPENED,
    pub EvtChannelClosed: PFN_VMB_CHANNEL_CLOSED,
    pub EvtChannelSuspend: PFN_VMB_CHANNEL_SUSPEND,
    pub EvtChannelStarted: PFN_VMB_CHANNEL_STARTED,
    pub EvtChannelPostStarted: PFN_VMB_CHANNEL_POST_STARTED,
}

/// `PVMB_CHANNEL_STATE_CHANGE_CALLBACKS`.
pub type PVMB_CHANNEL_STATE_CHANGE_CALLBACKS = *mut VMB_CHANNEL_STATE_CHANGE_CALLBACKS;

/// `VMB_CHANNEL_STATE_CHANGE_CALLBACKS_V5` (Version 5, 56 bytes on x64).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct VMB_CHANNEL_STATE_CHANGE_CALLBACKS_V5 {
    pub Version: ULONG,
    pub Size: ULONG,
    pub CallbackContext: PVOID,
    pub EvtChannelOpenedEx: PFN_VMB_CHANNEL_OPENED_EX,
    pub EvtChannelClosedEx: PFN_VMB_CHANNEL_CLOSED_EX,
    pub EvtChannelSuspendEx: PFN_VMB_CHANNEL_SUSPEND_EX,
    pub EvtChannelStartedEx: PFN_VMB_CHANNEL_STARTED_EX,
    pub EvtChannelPostStartedEx: PFN_VMB_CHANNEL_POST_STARTED_EX,
}

/// `PVMB_CHANNEL_STATE_CHANGE_CALLBACKS_V5`.
pub type PVMB_CHANNEL_STATE_CHANGE_CALLBACKS_V5 = *mut VMB_CHANNEL_STATE_CHANGE_CALLBACKS_V5;

/// `Version` the header's `VMB_CHANNEL_STATE_CHANGE_CALLBACKS_INIT` writes (a literal in C).
const VERSION_1: ULONG = 1;
/// `Version` the header's `VMB_CHANNEL_STATE_CHANGE_CALLBACKS_INIT_V5` writes (a literal in C).
const VERSION_5: ULONG = 5;

#[allow(clippy::cast_possible_truncation)]
const SIZE_V1: ULONG = core::mem::size_of::<VMB_CHANNEL_STATE_CHANGE_CALLBACKS>() as ULONG;
#[allow(clippy::cast_possible_truncation)]
const SIZE_V5: ULONG = core::mem::size_of::<VMB_CHANNEL_STATE_CHANGE_CALLBACKS_V5>() as ULONG;

/// `VMB_CHANNEL_STATE_CHANGE_CALLBACKS_INIT`: zeroed, `Version = 1`, `Size = sizeof`.
#[must_use]
pub const fn VMB_CHANNEL_STATE_CHANGE_CALLBACKS_INIT() -> VMB_CHANNEL_STATE_CHANGE_CALLBACKS {
    VMB_CHANNEL_STATE_CHANGE_CALLBACKS {
        Version: VERSION_1,
        Size: SIZE_V1,
        EvtChannelOpened: None,
        EvtChannelClosed: None,
        EvtChannelSuspend: None,
        EvtChannelStarted: None,
        EvtChannelPostStarted: None,
    }
}

/// `VMB_CHANNEL_STATE_CHANGE_CALLBACKS_INIT_V5`: zeroed, `Version = 5`, `Size = sizeof`.
#[must_use]
pub const fn VMB_CHANNEL_STATE_CHANGE_CALLBACKS_INIT_V5() -> VMB_CHANNEL_STATE_CHANGE_CALLBACKS_V5 {
    VMB_CHANNEL_STATE_CHANGE_CALLBACKS_V5 {
        Version: VERSION_5,
        Size: SIZE_V5,
        CallbackContext: core::ptr::null_mut(),
        EvtChannelOpenedEx: None,
        EvtChannelClosedEx: None,
        EvtChannelSuspendEx: None,
        EvtChannelStartedEx: None,
        EvtChannelPostStartedEx: None,
    }
}
