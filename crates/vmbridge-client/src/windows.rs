//! The Windows backend: find devices through their interface class, open one for
//! overlapped I/O, issue requests with `DeviceIoControl` / `ReadFile` / `WriteFile`.
//!
//! C header: `cfgmgr32.h` (`CM_Get_Device_Interface_List_SizeW`,
//! `CM_Get_Device_Interface_ListW`), `fileapi.h` (`CreateFileW`, `ReadFile`,
//! `WriteFile`), `ioapiset.h` (`DeviceIoControl`, `GetOverlappedResultEx`, `CancelIoEx`),
//! `synchapi.h` (`CreateEventW`), `winternl.h` (`RtlNtStatusToDosError`).
//!
//! Every request owns an `OVERLAPPED`, an event and 8-byte-aligned copies of its
//! buffers, in one heap allocation that stays put until the request completes (a request
//! dropped early is cancelled and waited for). The status is the `NTSTATUS` the I/O
//! manager stores in `OVERLAPPED.Internal`; for a request that failed before it was
//! queued (the I/O manager does not write the status block then), the Win32 error is
//! mapped back through `RtlNtStatusToDosError` over the ABI's documented statuses.

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::windows::ffi::{OsStrExt, OsStringExt};
use std::os::windows::io::{AsRawHandle, FromRawHandle, OwnedHandle};
use std::ptr;
use std::sync::Arc;
use std::time::Duration;

use vmbridge_abi::{AlignedBuf, GUID_DEVINTERFACE_VMBRIDGE, NtStatus};
use windows_sys::Win32::Devices::DeviceAndDriverInstallation::{
    CM_GET_DEVICE_INTERFACE_LIST_PRESENT, CM_Get_Device_Interface_List_SizeW,
    CM_Get_Device_Interface_ListW, CR_BUFFER_SMALL, CR_SUCCESS,
};
use windows_sys::Win32::Foundation::{
    ERROR_IO_INCOMPLETE, ERROR_IO_PENDING, GENERIC_READ, GENERIC_WRITE, GetLastError, HANDLE,
    INVALID_HANDLE_VALUE, RtlNtStatusToDosError, WAIT_TIMEOUT,
};
use windows_sys::Win32::Storage::FileSystem::{
    CreateFileW, FILE_FLAG_OVERLAPPED, FILE_SHARE_READ, FILE_SHARE_WRITE, OPEN_EXISTING, ReadFile,
    WriteFile,
};
use windows_sys::Win32::System::IO::{
    CancelIoEx, DeviceIoControl, GetOverlappedResult, GetOverlappedResultEx, OVERLAPPED,
};
use windows_sys::Win32::System::Threading::{CreateEventW, INFINITE};
use windows_sys::core::GUID;

use crate::device::Device;
use crate::transport::{Completion, Pending, Request, Transport};

/// The paths of every present `vmbridge` device (`GUID_DEVINTERFACE_VMBRIDGE`).
///
/// # Errors
///
/// The configuration manager's `CONFIGRET`, as `io::Error`.
pub fn list() -> io::Result<Vec<OsString>> {
    let guid = GUID::from_u128(GUID_DEVINTERFACE_VMBRIDGE);
    loop {
        let mut len = 0u32;
        // SAFETY: CM_Get_Device_Interface_List_SizeW writes one u32 through `len` and reads
        // the GUID; a null device id means "all devices" (cfgmgr32.h).
        let cr = unsafe {
            CM_Get_Device_Interface_List_SizeW(
                &raw mut len,
                &raw const guid,
                ptr::null(),
                CM_GET_DEVICE_INTERFACE_LIST_PRESENT,
            )
        };
        if cr != CR_SUCCESS {
            return Err(io::Error::other(format!(
                "CM_Get_Device_Interface_List_SizeW failed: CONFIGRET {cr}"
            )));
        }
        let mut buf = vec![0u16; len as usize];
        // SAFETY: `buf` holds `len` WCHARs, the size passed; the call writes at most that
        // many (a multi-sz list).
        let cr = unsafe {
            CM_Get_Device_Interface_ListW(
                &raw const guid,
                ptr::null(),
                buf.as_mut_ptr(),
                len,
                CM_GET_DEVICE_INTERFACE_LIST_PRESENT,
            )
        };
        if cr == CR_BUFFER_SMALL {
            continue; // a device arrived in between
        }
        if cr != CR_SUCCESS {
            return Err(io::Error::other(format!(
                "CM_Get_Device_Interface_ListW failed: CONFIGRET {cr}"
            )));
        }
        return Ok(buf
            .split(|c| *c == 0)
            .filter(|s| !s.is_empty())
            .map(OsString::from_wide)
            .collect());
    }
}

/// Opens the device at `path` (from [`list`], or the host-mode control device's
/// symbolic link) for overlapped I/O.
///
/// # Errors
///
/// `InvalidInput` for a path with a NUL in it; `CreateFileW`'s error.
pub fn open(path: &OsStr) -> io::Result<Device<'static>> {
    let wide: Vec<u16> = path.encode_wide().chain(std::iter::once(0)).collect();
    if wide[..wide.len() - 1].contains(&0) {
        // CreateFileW reads up to the first NUL: it would open a shorter path.
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "device path contains a NUL character",
        ));
    }
    // SAFETY: `wide` is NUL-terminated; no security attributes, no template.
    let h = unsafe {
        CreateFileW(
            wide.as_ptr(),
            GENERIC_READ | GENERIC_WRITE,
            FILE_SHARE_READ | FILE_SHARE_WRITE,
            ptr::null(),
            OPEN_EXISTING,
            FILE_FLAG_OVERLAPPED,
            ptr::null_mut(),
        )
    };
    if h == INVALID_HANDLE_VALUE {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `h` is a valid handle this call just opened and nothing else owns.
    let handle = unsafe { OwnedHandle::from_raw_handle(h) };
    Ok(Device::new(Box::new(WinTransport {
        handle: Arc::new(handle),
    })))
}

/// One open handle.
#[derive(Debug)]
struct WinTransport {
    handle: Arc<OwnedHandle>,
}

/// A submitted request: everything the kernel may touch until it completes.
struct WinPending {
    handle: Arc<OwnedHandle>,
    ov: Box<OVERLAPPED>,
    _event: OwnedHandle,
    _input: AlignedBuf,
    output: AlignedBuf,
    done: Option<Completion>,
}

// SAFETY: the raw pointers inside (`OVERLAPPED.hEvent`, the buffers) belong to this
// object alone; the kernel writes them only until the completion this object waits for
// (also in `Drop`), and `Pending` methods take `&mut self`.
unsafe impl Send for WinPending {}

/// The status a Win32 error stands for: the documented status whose
/// `RtlNtStatusToDosError` is `err`.
fn status_of_win32(err: u32) -> NtStatus {
    NtStatus::ALL
        .into_iter()
        .filter(|s| !s.is_success())
        // SAFETY: RtlNtStatusToDosError is a pure mapping of any value (winternl.h).
        .find(|s| unsafe { RtlNtStatusToDosError(s.raw()) } == err)
        .unwrap_or(NtStatus::from_raw(i32::from_ne_bytes(
            (0xC007_0000u32 | (err & 0xFFFF)).to_ne_bytes(),
        )))
}

impl WinPending {
    fn raw(&self) -> HANDLE {
        self.handle.as_raw_handle()
    }

    /// Whether the I/O manager is done with the request: its status block no longer
    /// reads `STATUS_PENDING` (`HasOverlappedIoCompleted`; "when the request is issued,
    /// the system sets this member to STATUS_PENDING", the `OVERLAPPED` page of the
    /// Win32 documentation).
    fn completed(&self) -> bool {
        // SAFETY: a read of a field of the OVERLAPPED `self` owns; volatile because the
        // kernel writes it outside Rust's view while the request runs (rule: the
        // status block is written by the I/O manager until the completion).
        let internal = unsafe { ptr::read_volatile(&raw const self.ov.Internal) };
        internal as u32 != NtStatus::PENDING.raw() as u32
    }

    /// Records the end from the status block.
    fn record(&mut self, win32: Option<u32>) -> Completion {
        let status = NtStatus::from_raw(self.ov.Internal as u32 as i32);
        let information = self.ov.InternalHigh;
        // The I/O manager copies METHOD_BUFFERED output only for non-error statuses.
        let copied = if status.raw() as u32 >= 0xC000_0000 {
            0
        } else {
            information.min(self.output.as_slice().len())
        };
        let c = Completion {
            status,
            information,
            output: self.output.as_slice()[..copied].to_vec(),
            win32,
        };
        self.done = Some(c.clone());
        c
    }
}

impl Pending for WinPending {
    fn wait(&mut self, timeout: Option<Duration>) -> io::Result<Option<Completion>> {
        if let Some(c) = &self.done {
            return Ok(Some(c.clone()));
        }
        let ms = timeout.map_or(INFINITE, |d| {
            u32::try_from(d.as_millis())
                .unwrap_or(INFINITE - 1)
                .min(INFINITE - 1)
        });
        let mut n = 0u32;
        // SAFETY: `ov` is the OVERLAPPED this request was issued with, alive in `self`.
        let ok =
            unsafe { GetOverlappedResultEx(self.raw(), &raw const *self.ov, &raw mut n, ms, 0) };
        let err = (ok == 0).then(|| {
            // SAFETY: reads the calling thread's last error.
            unsafe { GetLastError() }
        });
        if matches!(err, Some(WAIT_TIMEOUT | ERROR_IO_INCOMPLETE)) {
            return Ok(None);
        }
        // A failure is the request's own status only once the status block says it
        // completed: GetOverlappedResultEx also fails when its wait fails ("use
        // GetLastError to get extended error information"), with the request still in
        // flight. Recording that as the end would free the buffers under the I/O
        // (`Drop` skips its cancel and wait for a recorded request).
        if !self.completed() {
            return Err(match err {
                Some(e) => io::Error::from_raw_os_error(e as i32),
                None => io::Error::other("GetOverlappedResultEx succeeded on a pending request"),
            });
        }
        Ok(Some(self.record(err)))
    }

    fn cancel(&mut self) {
        if self.done.is_none() {
            // SAFETY: cancels only this request (its OVERLAPPED); harmless if it already
            // completed.
            unsafe { CancelIoEx(self.raw(), &raw const *self.ov) };
        }
    }
}

impl Drop for WinPending {
    fn drop(&mut self) {
        if self.done.is_some() {
            return;
        }
        let mut n = 0u32;
        // SAFETY: cancel this request, then block until the kernel is done with its
        // OVERLAPPED and buffers (freed right after).
        unsafe {
            CancelIoEx(self.raw(), &raw const *self.ov);
        }
        // SAFETY: as above; bWait = TRUE.
        unsafe {
            GetOverlappedResult(self.raw(), &raw const *self.ov, &raw mut n, 1);
        }
        if !self.completed() {
            // The wait itself failed with the request still in flight: the kernel may
            // still write the OVERLAPPED and the output, so they are leaked rather
            // than freed (the event and the file handle may close: the I/O manager
            // holds its own references to both objects).
            Box::leak(std::mem::replace(
                &mut self.ov,
                Box::new(OVERLAPPED::default()),
            ));
            std::mem::forget(std::mem::replace(&mut self._input, AlignedBuf::zeroed(0)));
            std::mem::forget(std::mem::replace(&mut self.output, AlignedBuf::zeroed(0)));
        }
    }
}

fn len32(n: usize) -> io::Result<u32> {
    u32::try_from(n).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "buffer above 4 GiB"))
}

impl Transport for WinTransport {
    fn submit(&self, req: Request<'_>) -> io::Result<Box<dyn Pending + '_>> {
        // The lengths are DWORDs: checked before anything is allocated or created.
        let (in_len, out_len) = match req {
            Request::Read { out_len } => (0, out_len),
            Request::Write { data } => (data.len(), 0),
            Request::Ioctl { input, out_len, .. } => (input.len(), out_len),
        };
        let (in_len, out_len) = (len32(in_len)?, len32(out_len)?);
        // SAFETY: a manual-reset, initially non-signalled, unnamed event.
        let ev = unsafe { CreateEventW(ptr::null(), 1, 0, ptr::null()) };
        if ev.is_null() {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `ev` was just created and is owned here.
        let event = unsafe { OwnedHandle::from_raw_handle(ev) };
        let input = match req {
            Request::Read { .. } => AlignedBuf::zeroed(0),
            Request::Write { data: bytes } | Request::Ioctl { input: bytes, .. } => {
                AlignedBuf::from_slice(bytes)
            }
        };
        let mut p = Box::new(WinPending {
            handle: self.handle.clone(),
            ov: Box::new(OVERLAPPED::default()),
            _event: event,
            _input: input,
            output: AlignedBuf::zeroed(out_len as usize),
            done: None,
        });
        p.ov.hEvent = ev;
        let h = p.raw();
        let in_ptr = p._input.as_slice().as_ptr();
        let out_ptr = p.output.as_mut_slice().as_mut_ptr();
        let ov: *mut OVERLAPPED = &raw mut *p.ov;
        let mut n = 0u32;
        let ok = match req {
            // SAFETY: the buffers and the OVERLAPPED live in `p` until the completion
            // (`Pending::wait` or `Drop`); their lengths are the ones passed.
            Request::Read { .. } => unsafe { ReadFile(h, out_ptr, out_len, &raw mut n, ov) },
            // SAFETY: as above.
            Request::Write { .. } => unsafe { WriteFile(h, in_ptr, in_len, &raw mut n, ov) },
            // SAFETY: as above.
            Request::Ioctl { code, .. } => unsafe {
                DeviceIoControl(
                    h,
                    code,
                    in_ptr.cast(),
                    in_len,
                    out_ptr.cast(),
                    out_len,
                    &raw mut n,
                    ov,
                )
            },
        };
        if ok == 0 {
            // SAFETY: reads the calling thread's last error.
            let err = unsafe { GetLastError() };
            if err != ERROR_IO_PENDING {
                // Failed before it was queued: the status block may be stale.
                let status = if p.ov.Internal as u32 == NtStatus::PENDING.raw() as u32 {
                    status_of_win32(err)
                } else {
                    NtStatus::from_raw(p.ov.Internal as u32 as i32)
                };
                p.ov.Internal = status.raw() as u32 as usize;
                let _ = p.record(Some(err));
            }
        }
        Ok(p)
    }
}
