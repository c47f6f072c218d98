//! The user-mode ABI of the `vmbridge` driver: one definition for the driver, the client
//! library, the command-line tool and (through `include/vmbridge.h`) C programs.
//!
//! C header: `include/vmbridge.h` (this crate's twin; `tests/header.rs` compiles a C
//! program against it and compares every size, offset and constant); `winioctl.h`
//! (`CTL_CODE`); `ntstatus.h` (the status values).
//!
//! `no_std`, `forbid(unsafe_code)`; the wire headers are `#[repr(C)]` `zerocopy` types
//! (little-endian, the byte order of every Windows target).
//!
//! # Requests
//!
//! | request | input | output |
//! |---|---|---|
//! | `ReadFile` | — | [`VMBRIDGE_PACKET_HEADER`] + payload; the packet is completed (acknowledged with an empty response) when it is read |
//! | `WriteFile` | the payload | — (an in-band send, no completion requested) |
//! | [`IOCTL_VMBRIDGE_READ`] | [`VMBRIDGE_READ_REQUEST`] | [`VMBRIDGE_PACKET_HEADER`] + payload; with [`VMBRIDGE_READ_FLAG_HOLD_FOR_RESPONSE`] the packet stays uncompleted until [`IOCTL_VMBRIDGE_RESPOND`] names its `PacketId` |
//! | [`IOCTL_VMBRIDGE_READ_BATCH`] | [`VMBRIDGE_READ_BATCH_REQUEST`] | [`VMBRIDGE_BATCH_HEADER`] + `Count` × ([`VMBRIDGE_PACKET_HEADER`] + payload, each starting 8-byte aligned) |
//! | [`IOCTL_VMBRIDGE_SEND`] | [`VMBRIDGE_SEND_REQUEST`] + payload | with [`VMBRIDGE_SEND_FLAG_WAIT_FOR_COMPLETION`]: [`VMBRIDGE_COMPLETION_HEADER`] + the other side's response |
//! | [`IOCTL_VMBRIDGE_SEND_BATCH`] | [`VMBRIDGE_SEND_BATCH_REQUEST`] + `Count` × ([`VMBRIDGE_SEND_REQUEST`] + payload, each starting 8-byte aligned) | — (`Information` = packets sent: fewer than `Count` when `MaxPostedSends` is reached) |
//! | [`IOCTL_VMBRIDGE_RESPOND`] | [`VMBRIDGE_RESPOND_REQUEST`] + response | — |
//! | [`IOCTL_VMBRIDGE_GET_INFO`] | — | [`VMBRIDGE_INFO`] |
//! | [`IOCTL_VMBRIDGE_GET_STATS`] | — | [`VMBRIDGE_STATS`] |
//! | [`IOCTL_VMBRIDGE_CREATE_OFFER`] (host mode) | [`VMBRIDGE_CREATE_OFFER_REQUEST`] | — |
//!
//! All IOCTLs are `METHOD_BUFFERED`: input and output share the system buffer, so the
//! driver parses (and copies what it needs from) the input before it writes output.
//!
//! # Validation
//!
//! Every header is little-endian, starts at offset 0 of its buffer, must be 8-byte
//! aligned, carries its own `Size` and `Version`, and has reserved fields that must be
//! zero. A buffer that fails any check is completed with the status below and changes
//! nothing in the driver:
//!
//! | problem | status |
//! |---|---|
//! | buffer shorter than the header | `STATUS_BUFFER_TOO_SMALL` |
//! | header not 8-byte aligned | `STATUS_DATATYPE_MISALIGNMENT_ERROR` |
//! | `Size` or `Version` not this ABI's | `STATUS_REVISION_MISMATCH` |
//! | unknown flag, non-zero reserved field, `PacketId` 0 in a response, `Count` 0 or an output buffer in a batched send | `STATUS_INVALID_PARAMETER` |
//! | a length that runs past the buffer, or above `MaxPacketSize` | `STATUS_INVALID_BUFFER_SIZE` |
//! | unknown IOCTL | `STATUS_INVALID_DEVICE_REQUEST` |
//!
//! A batched read whose output cannot hold the oldest queued packet completes with
//! `STATUS_BUFFER_TOO_SMALL` and `Information` = the output size that packet needs; the
//! packet stays queued.
//!
//! `MaxPacketSize` is the one `IOCTL_VMBRIDGE_GET_INFO` reports: the configured value,
//! lowered to what one packet of the ring carries (`Config::fit_ring`), so every send
//! and response that passes the length check can be written.
//!
//! # Outcomes of sends and responses
//!
//! A request completes with `STATUS_SUCCESS` only when its effect happened: a send was
//! accepted by KMCL (and, waiting, answered), a response was handed to
//! `VmbChannelPacketComplete`. Otherwise:
//!
//! | situation | status |
//! |---|---|
//! | `MaxPendingSends` waiting sends already wait | `STATUS_DEVICE_BUSY` (nothing sent) |
//! | `MaxPostedSends` writes / no-wait sends are in KMCL, not yet in the ring (the host stopped reading) | `STATUS_DEVICE_BUSY` (nothing sent; retry later) |
//! | channel not open yet, or suspended | `STATUS_DEVICE_NOT_READY` |
//! | channel closed (rescind, removal) | `STATUS_DEVICE_NOT_CONNECTED` |
//! | a waiting send the channel lost before the other side answered (KMCL's cancellation completion) | `STATUS_DEVICE_NOT_CONNECTED`, no output |
//! | KMCL refused the send | KMCL's status |
//! | `IOCTL_VMBRIDGE_RESPOND` for a packet this handle does not hold (never, answered, its handle closed, or an IC request answered by its timeout) | `STATUS_NOT_FOUND` |
//! | the request cancelled (`CancelIoEx`) or its handle closed | `STATUS_CANCELLED` |
//!
//! A waiting send's result depends only on the other side's response and the output
//! buffer, never on when the completion arrives.
//!
//! Held packets and waiting sends share the transaction quota: while `QueueDepth`
//! packets are held (or queued unread), KMCL takes nothing from the ring, the
//! completion of a waiting send included. `docs/bridge.md` states the rule and the
//! ways out (respond first, or cancel the send).
//!
//! # Modules
//!
//! [`status`] (`NtStatus`), [`ioctl`] (codes), [`guid`] (GUIDs), [`wire`] (headers and
//! flags), [`validate`] (parsing user and driver buffers), [`batch`] (batch layout),
//! [`offer`] (host-mode offers), `buf` (aligned buffers and builders, feature `alloc`).
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

#[cfg(feature = "alloc")]
extern crate alloc;

#[cfg(target_endian = "big")]
compile_error!("the vmbridge ABI is little-endian (every Windows target is)");

pub mod batch;
#[cfg(feature = "alloc")]
mod buf;
pub mod guid;
pub mod ioctl;
pub mod offer;
pub mod status;
pub mod validate;
pub mod wire;

pub use batch::*;
#[cfg(feature = "alloc")]
pub use buf::*;
pub use guid::*;
pub use ioctl::*;
pub use offer::*;
pub use status::NtStatus;
pub use wire::*;
