//! The portable driver core: the bridge between a VMBus channel and user mode.
//!
//! C header: none of its own; it follows `vmbuskernelmodeclientlibapi.h` (packet
//! completion, quota, state changes) and `wdfrequest.h` (request completion,
//! cancellation) through the traits in [`channel`].
//!
//! No `unsafe`, no `wdk-sys`, no `kmcl`: the same code runs in the kernel (under a
//! `WDFSPINLOCK`, at DISPATCH_LEVEL or PASSIVE_LEVEL) and on the host (under a
//! `std::sync::Mutex`, in the simulator and the tests).
//!
//! * [`protocol`], [`offer`], [`status`]: the user-mode ABI — the `vmbridge-abi` crate
//!   (IOCTL codes, versioned headers, validation of every user buffer, host-mode offers,
//!   `NTSTATUS` codes), shared with the client library, the tool and `include/vmbridge.h`;
//! * [`config`]: registry values (`ProcessingMode`, `QueueDepth`, ...) with defaults;
//! * [`device`]: [`device::Bridge`], the per-device state machine;
//! * [`channel`]: what the bridge needs from KMCL and WDF, as traits;
//! * [`queue`]: bounded, preallocated containers; [`lock`]: the lock abstraction.
#![forbid(unsafe_code)]

pub mod channel;
pub mod config;
pub mod device;
pub mod lock;
pub mod queue;

/// The user-mode ABI (`vmbridge-abi`): codes, headers, validation.
pub use vmbridge_abi as protocol;
/// The host-mode offer ABI (in `vmbridge-abi`).
pub use vmbridge_abi as offer;
/// The `NTSTATUS` codes (in `vmbridge-abi`).
pub use vmbridge_abi::status;

pub use channel::{ChannelSender, FileId, HeldPacket, RequestKey, SendTag, UserRequest};
pub use config::{Config, ProcessingMode};
pub use device::{Bridge, ChannelState, State, Stats};
pub use lock::Lock;
#[cfg(not(windows))]
pub use lock::StdLock;
pub use status::NtStatus;
