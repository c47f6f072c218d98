//! The `vmbridge` driver in the simulator, behind `vmbridge-client`'s `Transport`: the
//! same client code that drives a Windows device drives the driver's real core (with
//! `kmcl` and its `extern "system"` shims) bound to a `kmcl-sim` offer, on any host.
//!
//! C header: `vmbuskernelmodeclientlibapi.h` (through `kmcl`), `wdfrequest.h` (the
//! request model of `vmbridge::sim_request`).
//!
//! * [`guest::SimGuest`]: guest mode — one threaded simulator, one offer of
//!   `VMBRIDGE_CHANNEL_TYPE`, one bound device, and the host endpoint; each
//!   [`guest::SimGuest::open`] is a new handle (`CreateFile`), dropping it is `CloseHandle`.
//! * [`host_mode::SimHostMode`]: host mode — the control device; `IOCTL_VMBRIDGE_CREATE_OFFER`
//!   runs in a simulated process that holds a VMBus handle, and a guest `vmbridge` can
//!   bind to the offer.
//! * [`traffic`]: a simulated host that sends packets and answers the driver's, for the
//!   tool's `--sim` and the benchmarks.
//! * [`rig`]: the end-to-end test rig of vmbridge's own `tests/` and `examples/simulate`:
//!   the device bound to an offer in a deterministic or threaded simulator, a simulated
//!   user-mode caller issuing `SimRequest`s, the IC rig, and a client `Transport` over it.
//! * [`transport`]: requests as `vmbridge::sim_request::SimRequest`s (the WDF request model:
//!   park, cancel, exactly one completion).
//!
//! The rig's bridge lock is `vmbridge::spin_lock::SpinLock`, a spin lock as the kernel's.
//!
//! The only `unsafe`: `ParentDevice::from_raw` on the simulator's device objects, the
//! caller-context token of a host-mode offer, and `Send`/`Sync` for the host control.
#![cfg(not(windows))]

pub mod guest;
pub mod host_mode;
pub mod rig;
pub mod traffic;
pub mod transport;

pub use guest::SimGuest;
pub use host_mode::SimHostMode;
pub use traffic::{HostTraffic, TrafficPlan};
