//! The VMBus ring pair of one simulated channel: real ring bytes, two-phase reads, signalling.
//!
//! C header: none (wire format); reference: `docs/simulator.md` ("Rings and packets"), from Linux
//! `drivers/hv/ring_buffer.c` and `include/linux/hyperv.h`, OpenVMM `vm/devices/vmbus/vmbus_ring`.
//!
//! # Memory
//!
//! [`RingPair`] is one page-aligned buffer laid out as a real VM's ring GPADL: the guest's
//! outbound ring at page 0, the guest's inbound ring at [`RingPair::ring_offset_pages`]. Each
//! ring is a 4 KiB control page (`write_index`@0, `read_index`@4, `interrupt_mask`@8,
//! `pending_send_sz`@12, `feature_bits`@64) followed by a data area of whole pages. The bytes
//! are `AtomicU64` words, so an external VMBus implementation attached through
//! [`RingPair::as_ptr`] sees exactly the wire layout. Words are accessed atomically, control
//! fields as single 32-bit atomics, and payloads with bulk copies that follow the ring's
//! ownership rule; the `unsafe` for the last two lives in `shared_mem.rs` (none here).
//!
//! # Files
//!
//! One role per file; this module re-exports their public items, so the API is
//! `kmcl_sim::ring::*` whatever file an item lives in. The ring uses only `shared_mem` and
//! `std`.
//!
//! | file | role |
//! |---|---|
//! | `layout.rs` | wire constants and the control page's fields ([`ControlField`]) |
//! | `memory.rs` | the shared words: [`RingPair`], [`Ring`] (index arithmetic and checks, a packet's control and data words), the word cursors (a payload is one `shared_mem` copy, two at the wrap) |
//! | `descriptor.rs` | packet descriptors: the types written and read, formatting and the validating parse |
//! | `corrupt.rs` | [`CorruptReason`], why ring bytes or indices were rejected |
//! | `outgoing.rs` | the writer, [`OutgoingRing`] |
//! | `incoming.rs` | the reader, [`IncomingRing`], and [`PayloadView`] |
//! | `release.rs` | [`ReleaseTracker`]: out-of-order completions to in-order releases |
//! | `pipe.rs` | pipe-mode headers ([`add_pipe_header`], [`strip_pipe_header`]) |
//! | `tests.rs` | the unit tests |
//!
//! # Reading without allocating
//!
//! [`IncomingRing::peek_header`] / [`IncomingRing::read_header`] validate a packet exactly as
//! [`IncomingRing::peek`] does and return its [`PacketHeader`] (`Copy`); the payload stays in
//! the ring and [`IncomingRing::copy_payload`] copies it into the caller's buffer.
//! [`IncomingRing::peek`] / [`IncomingRing::read_next`] return an owned [`IncomingPacket`]
//! (type-specific ranges and payload in `Vec`s) for tests and cold paths.
//!
//! # Reading ahead
//!
//! [`IncomingRing`] keeps a private read cursor. [`IncomingRing::read_next`] parses the packet
//! at the cursor and moves the cursor; the published `read_index` moves only on
//! [`IncomingRing::release`]. The simulator frees ring space when the driver completes packets,
//! which can happen out of order; [`ReleaseTracker`] turns out-of-order completions into
//! in-order releases of the completed prefix.
//!
//! # Examples
//!
//! ```
//! use kmcl_sim::ring::{IncomingRing, OutgoingPacket, OutgoingRing, ReadError, RingPair};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let pair = RingPair::new(2, 2);
//! let mut guest_tx = OutgoingRing::new(pair.outbound());
//! let mut host_rx = IncomingRing::new(pair.outbound());
//! let outcome = guest_tx.write(&OutgoingPacket::in_band(7, true, b"hello"))?;
//! assert!(outcome.signal); // empty -> non-empty, reader not masked
//! let packet = host_rx.read_next()?;
//! assert_eq!(&packet.payload[..5], b"hello");
//! assert_eq!(packet.payload.len(), 8); // padded to 8 on the wire
//! host_rx.release(packet.end_offset());
//! assert_eq!(host_rx.read_next(), Err(ReadError::Empty));
//! # Ok(())
//! # }
//! ```

#![forbid(unsafe_code)]

mod corrupt;
mod descriptor;
mod incoming;
mod layout;
mod memory;
mod outgoing;
mod pipe;
mod release;
#[cfg(test)]
mod tests;

pub use corrupt::CorruptReason;
pub use descriptor::{
    GpaRange, IncomingKind, IncomingPacket, OutgoingKind, OutgoingPacket, PacketHeader, PacketType,
    TransferPageRange,
};
pub use incoming::{IncomingRing, PayloadView, ReadError};
pub use layout::{
    ControlField, DESCRIPTOR_SIZE, FEATURE_SUPPORTS_PENDING_SEND_SIZE, FLAG_COMPLETION_REQUESTED,
    GPA_MAX_BYTE_OFFSET, PAGE_SIZE, TRAILER_SIZE,
};
pub(crate) use memory::free_spare_memory;
pub use memory::{Ring, RingPair};
pub use outgoing::{OutgoingRing, WriteError, WriteOutcome};
pub use pipe::{
    MAXIMUM_PIPE_PACKET_SIZE, PIPE_HEADER_SIZE, PipeError, PipeMessageType, add_pipe_header,
    pipe_header, strip_pipe_header,
};
pub use release::{ReleaseError, ReleaseTracker};
