//! The safe Rust layer over the Hyper-V VMBus Kernel Mode Client Library (KMCL).
//!
//! C header: `vmbuskernelmodeclientlibapi.h`, through the raw bindings of `kmcl-sys`;
//! reference `kmcl-api.md`. `#![no_std]`; uses `alloc` once per channel (its context box).
//!
//! # Writing a driver with it
//!
//! 1. Query `KMCL_CLIENT_INTERFACE_V5` (glue: `WdfFdoQueryForInterface`) and build a
//!    [`Kmcl`](channel::Kmcl) from it ([`Kmcl::new`](channel::Kmcl::new) /
//!    [`Kmcl::from_raw`](channel::Kmcl::from_raw)).
//! 2. Implement [`PacketHandler`](packet::PacketHandler) (and
//!    [`StateHandler`](state::StateHandler)) on your channel context type.
//! 3. [`Kmcl::channel`](channel::Kmcl::channel) gives a
//!    [`ChannelBuilder`](channel::ChannelBuilder) for the Disabled channel: set ring
//!    sizes, the [`ProcessingMode`](channel::ProcessingMode), ...; then
//!    [`enable`](channel::ChannelBuilder::enable) it at PASSIVE_LEVEL.
//! 4. Every packet arrives as a [`Packet`](packet::Packet) with a level token
//!    ([`irql::Level`]); retire it exactly once: complete, fail, defer, or keep it as a
//!    [`PendingPacket`](packet::PendingPacket).
//! 5. Send through an [`Endpoint`](channel::Endpoint) ([`send`] module).
//! 6. [`close`](channel::Channel::close) the channel at PASSIVE_LEVEL (or drop it).
//!
//! The IRQL rules for driver authors are in `docs/irql.md`; a complete handler is the
//! example of the [`packet`] module.
//!
//! # Modules
//!
//! * [`status`]: `NTSTATUS` as [`NtStatus`], [`Result`].
//! * [`irql`]: the [`Passive`](irql::Passive)/[`Dispatch`](irql::Dispatch) tokens.
//! * [`channel`]: [`Kmcl`](channel::Kmcl), the builder, [`Channel`](channel::Channel),
//!   [`Endpoint`](channel::Endpoint).
//! * [`packet`]: the packet handler trait, its shims, the packet values.
//! * [`external`]: external data (MDL) views.
//! * [`send`]: outgoing packets and their completions.
//! * [`state`]: the state-change handler trait and its shims.
#![no_std]
#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod channel;
pub mod external;
pub mod irql;
pub mod packet;
pub mod send;
pub mod state;
pub mod status;

pub use status::{NtStatus, Result};
