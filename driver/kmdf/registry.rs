//! Registry reads of the glue: UTF-16 value names, counted strings, and a `WDFKEY` that
//! closes itself.
//!
//! C header: `wdfregistry.h` (`WdfRegistryQueryULong`, `WdfRegistryClose`), `wdfdriver.h`
//! (`WdfDriverOpenParametersRegistryKey`), `wdfdevice.h` (`WdfDeviceOpenRegistryKey`),
//! `wdffdo.h` (`WdfFdoInitOpenRegistryKey`), `wdm.h` (`PLUGPLAY_REGKEY_DEVICE`).
//!
//! Three keys are read, all at PASSIVE_LEVEL in `EvtDriverDeviceAdd`: the service's
//! `Parameters` (the bridge configuration, `HostMode`), and the device's hardware key
//! (`Device Parameters`, where an INF's `.HW` AddReg writes `IcService`/`HostMode`) —
//! through the `WDFDEVICE_INIT` before `WdfDeviceCreate`, or through the device after it.

use wdk_sys::{
    NTSTATUS, PLUGPLAY_REGKEY_DEVICE, PWDFDEVICE_INIT, ULONG, UNICODE_STRING, WDF_NO_HANDLE,
    WDF_NO_OBJECT_ATTRIBUTES, WDFDEVICE, WDFDRIVER, WDFKEY, call_unsafe_wdf_function_binding,
};

/// `KEY_READ` (winnt.h: `(STANDARD_RIGHTS_READ | KEY_QUERY_VALUE | KEY_ENUMERATE_SUB_KEYS
/// | KEY_NOTIFY) & ~SYNCHRONIZE`), the generated value.
pub(super) const KEY_READ: ULONG = 0x0002_0019;

/// ASCII to UTF-16 at compile time (registry value and device names).
pub(super) const fn ascii_utf16<const N: usize>(s: &str) -> [u16; N] {
    let b = s.as_bytes();
    let mut out = [0u16; N];
    let mut i = 0;
    while i < N {
        out[i] = b[i] as u16;
        i += 1;
    }
    out
}

/// A `&'static [u16]` of an ASCII `&'static str` constant.
macro_rules! wide {
    ($s:expr) => {{
        const S: &str = $s;
        const W: [u16; S.len()] = $crate::kmdf::registry::ascii_utf16::<{ S.len() }>(S);
        &W
    }};
}
pub(super) use wide;

/// A counted string over a static UTF-16 name.
pub(super) fn unicode(name: &'static [u16]) -> UNICODE_STRING {
    let bytes = u16::try_from(name.len() * 2).unwrap_or(u16::MAX);
    // CAST: the callers only pass it as a string the callee reads.
    UNICODE_STRING {
        Length: bytes,
        MaximumLength: bytes,
        Buffer: name.as_ptr().cast_mut(),
    }
}

/// An open `WDFKEY`, closed on drop. PASSIVE_LEVEL throughout.
///
/// # Invariants
///
/// `0` is a key the framework opened for this driver and nobody else closes.
pub(super) struct Key(WDFKEY);

impl Key {
    /// A key `open` opens into its out-param, if it returns success.
    fn open(open: impl FnOnce(*mut WDFKEY) -> NTSTATUS) -> Option<Self> {
        let mut key = WDF_NO_HANDLE as WDFKEY;
        let st = open(&raw mut key);
        // INVARIANT: opened for us on success.
        (st >= 0).then_some(Self(key))
    }

    /// The service's `Parameters` key (`WdfDriverOpenParametersRegistryKey`).
    pub(super) fn driver_parameters(driver: WDFDRIVER) -> Option<Self> {
        Self::open(|key| {
            // SAFETY: rule WDF_CALL_AT_PASSIVE: EvtDriverDeviceAdd runs at PASSIVE_LEVEL;
            // `driver` is the live driver object; `key` is a local out-param.
            unsafe {
                call_unsafe_wdf_function_binding!(
                    WdfDriverOpenParametersRegistryKey,
                    driver,
                    KEY_READ,
                    WDF_NO_OBJECT_ATTRIBUTES,
                    key
                )
            }
        })
    }

    /// The device's hardware key, before `WdfDeviceCreate` (`WdfFdoInitOpenRegistryKey`
    /// with `PLUGPLAY_REGKEY_DEVICE`).
    ///
    /// # Safety
    ///
    /// `device_init` is the framework's `WDFDEVICE_INIT` of the running
    /// `EvtDriverDeviceAdd`, not yet passed to `WdfDeviceCreate`.
    pub(super) unsafe fn device_init_hardware(device_init: PWDFDEVICE_INIT) -> Option<Self> {
        Self::open(|key| {
            // SAFETY: rule DEVICE_INIT_BEFORE_CREATE: `device_init` is valid until
            // WdfDeviceCreate (caller's contract); `key` is a local out-param.
            unsafe {
                call_unsafe_wdf_function_binding!(
                    WdfFdoInitOpenRegistryKey,
                    device_init,
                    PLUGPLAY_REGKEY_DEVICE,
                    KEY_READ,
                    WDF_NO_OBJECT_ATTRIBUTES,
                    key
                )
            }
        })
    }

    /// The device's hardware key, after `WdfDeviceCreate` (`WdfDeviceOpenRegistryKey` with
    /// `PLUGPLAY_REGKEY_DEVICE`).
    ///
    /// # Safety
    ///
    /// `device` is a live device of this driver.
    pub(super) unsafe fn device_hardware(device: WDFDEVICE) -> Option<Self> {
        Self::open(|key| {
            // SAFETY: rule WDF_CALL_AT_PASSIVE: a live device (caller's contract); `key` is
            // a local out-param.
            unsafe {
                call_unsafe_wdf_function_binding!(
                    WdfDeviceOpenRegistryKey,
                    device,
                    PLUGPLAY_REGKEY_DEVICE,
                    KEY_READ,
                    WDF_NO_OBJECT_ATTRIBUTES,
                    key
                )
            }
        })
    }

    /// One REG_DWORD; `None` when it is missing (or not a DWORD).
    pub(super) fn query_ulong(&self, name: &'static [u16]) -> Option<u32> {
        let us = unicode(name);
        let mut v: ULONG = 0;
        // SAFETY: rule WDF_CALL_AT_PASSIVE: an open key (type invariant); `us` describes a
        // static buffer; `v` is a local out-param. A missing value returns
        // STATUS_OBJECT_NAME_NOT_FOUND.
        let st: NTSTATUS = unsafe {
            call_unsafe_wdf_function_binding!(
                WdfRegistryQueryULong,
                self.0,
                &raw const us,
                &raw mut v
            )
        };
        (st >= 0).then_some(v)
    }

    /// The REG_DWORDs of `names` that are present, as `(name, value)` pairs in `out`;
    /// returns how many were found.
    pub(super) fn query_ulongs<'n>(
        &self,
        names: &[(&'n str, &'static [u16])],
        out: &mut [(&'n str, u32)],
    ) -> usize {
        let mut found = 0;
        for &(name, wide) in names {
            if let (Some(v), Some(slot)) = (self.query_ulong(wide), out.get_mut(found)) {
                *slot = (name, v);
                found += 1;
            }
        }
        found
    }
}

impl Drop for Key {
    fn drop(&mut self) {
        // SAFETY: rule WDF_CALL_AT_PASSIVE: closes the key opened for us, once (type
        // invariant; `drop` runs once).
        unsafe { call_unsafe_wdf_function_binding!(WdfRegistryClose, self.0) };
    }
}
