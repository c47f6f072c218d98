//! The user-mode client of `vmbridge`: find the devices, open one, and speak the ABI of
//! `vmbridge-abi` through it.
//!
//! C header: `include/vmbridge.h` (the same ABI for C); `winioctl.h`, `fileapi.h`,
//! `ioapiset.h`, `cfgmgr32.h` (the Windows backend).
//!
//! * [`Device`] ([`device`]): `info`, `stats`, `read` (blocking, with a timeout),
//!   `read_held` + `respond`, `read_batch`, `send`, `send_wait`, `send_batch`,
//!   `create_offer` (host mode), and the overlapped forms `start_read` / `start_send_wait`
//!   so reads and sends can be outstanding together. `read_into`, `read_batch_with` and
//!   the pending requests' `wait_into` reuse the caller's buffer (or lend the packets in
//!   place): no allocation per packet.
//! * [`transport`]: what a device runs over — [`transport::Transport`]. The Windows
//!   backend (module `windows`, `cfg(windows)`) opens the device with `FILE_FLAG_OVERLAPPED`
//!   and issues `DeviceIoControl`; the `vmbridge-sim` crate implements the same trait
//!   over the real driver core in `kmcl-sim`, so the same code runs on any host.
//! * [`report`]: latency percentiles ([`report::Latencies`], a log-linear histogram within
//!   3.1%, constant memory) and the progress line the benchmark tools print.
//! * [`error`]: every failure is a `std::io::Error` whose inner [`error::DriverError`]
//!   carries the `NTSTATUS` (and on Windows the Win32 code) and a clear message;
//!   [`error::ntstatus`] gets the status back.
//!
//! ```no_run
//! # fn main() -> std::io::Result<()> {
//! # #[cfg(windows)] {
//! use std::time::Duration;
//! let path = vmbridge_client::windows::list()?.into_iter().next().expect("a device");
//! let dev = vmbridge_client::windows::open(&path)?;
//! let p = dev.read_held(Some(Duration::from_secs(5)))?;
//! dev.respond(p.header.PacketId, &p.payload)?;
//! # }
//! # Ok(()) }
//! ```

pub mod device;
pub mod error;
pub mod report;
pub mod transport;
#[cfg(windows)]
pub mod windows;

pub use device::{
    BatchOptions, Device, OfferRequest, Packet, PendingRead, PendingSend, SendCompletion,
};
pub use error::{DriverError, ntstatus};
pub use transport::{Completion, CompletionStatus, Pending, Request, Transport};
pub use vmbridge_abi as abi;
