#![doc = include_str!("../README.md")]
//!
//! # The API in brief
//!
//! C header: `vmbuskernelmodeclientlibapi.h`, through the raw bindings of `kmcl-sys`;
//! Microsoft's DDI pages for it (`docs/architecture.md`, "Sources").
//! `#![no_std]`; uses `alloc` once per channel (its context box).
//!
//! ## Writing a driver with it
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
//! A host-side (VSP) driver starts from [`KmclServer`](server::KmclServer) on the
//! server table instead: the same handlers and sends, plus the offer's configuration,
//! Start/Pause, GPADL mappings and save/restore (the [`server`] module and
//! `docs/host.md`).
//!
//! ## Modules
//!
//! * [`status`]: `NTSTATUS` as [`NtStatus`], [`Result`].
//! * [`irql`]: the [`Passive`](irql::Passive)/[`Dispatch`](irql::Dispatch) tokens.
//! * [`channel`]: [`Kmcl`](channel::Kmcl), the builder, [`Channel`](channel::Channel),
//!   [`Endpoint`](channel::Endpoint).
//! * [`packet`]: the packet handler trait, its shims, the packet values.
//! * [`external`]: external data (MDL) views.
//! * [`send`]: outgoing packets and their completions.
//! * [`state`]: the state-change handler trait and its shims.
//! * [`thread`]: the current thread's identity (for the server's Start/Pause check).
//! * [`server`]: the server (VSP) side: [`KmclServer`](server::KmclServer), server
//!   channels, GPADL mappings, save/restore, VMBus handles.
//!
//! ## Rule names in `// SAFETY:` comments
//!
//! Where the simulator's verifier checks a rule, the comment uses its name
//! (`kmcl_sim::Rule::name`): `PACKET_COMPLETED_TWICE`, `INIT_AFTER_ENABLE`,
//! `CLEANUP_WHILE_ENABLED`, `IRQL_TOO_HIGH`, `SYNC_REQUEST_AT_DISPATCH`,
//! `COMPLETION_BUFFER_SIZE`, `OUTGOING_PACKET_DOUBLE_FREE`, `DEFER_OUTSIDE_CALLBACK`,
//! `PAYLOAD_WRITTEN_AFTER_COMPLETION`, and for servers `BLOCKING_CALL_IN_CALLBACK`,
//! `GPADL_MAPPED_TWICE`, `GPADL_UNMAP_UNMAPPED`, `GPADL_USE_AFTER_CLOSE`,
//! `GPADL_MAPPED_AT_CLEANUP`, `VMBUS_HANDLE_WRONG_PROCESS`. The other names are contracts of this crate or
//! of the header that the simulator cannot observe:
//!
//! | rule | meaning |
//! |---|---|
//! | `TABLE_OUTLIVES_CHANNEL` | the KMCL table outlives everything built from it ([`channel`]) |
//! | `CONTEXT_BEFORE_ENABLE` | the channel's context is stored (`VmbChannelSetPointer`/`_EX`) before `VmbChannelEnable` |
//! | `CONTEXT_LIVES_UNTIL_CLEANUP` | the boxed context is freed only after `VmbChannelCleanup` |
//! | `HANDLES_ARE_THREAD_AGNOSTIC` | KMCL handles may be used from any thread |
//! | `PROCESS_PACKET_ARGS` / `PROCESS_PACKET_IRQL` | what KMCL passes to `EvtVmbChannelProcessPacket`, at the IRQL it keeps |
//! | `PACKET_COMPLETION_ARGS` / `PACKET_COMPLETION_IRQL` / `PACKET_CONTEXT_POINTER` | the same for `EvtVmbPacketCompletionRoutine` and the context we attach |
//! | `EXTERNAL_DATA_DURING_PROCESSING` / `EXTERNAL_MDL_LIVES_UNTIL_COMPLETE` / `EXTERNAL_MDL_UNTIL_COMPLETION` | external data MDLs, incoming and outgoing |
//! | `CLIENT_CONTEXT_PER_PACKET` | `VmbChannelPacketGetClientContext` memory belongs to one packet |
//! | `PENDING_COMPLETION_ANY_CONTEXT` | an incoming packet may be completed from any thread at <= DISPATCH_LEVEL |
//! | `STATE_CALLBACKS_AT_PASSIVE` / `STATE_CALLBACKS_V5_CAST` | state-change callbacks run at PASSIVE_LEVEL; the V5 table is registered cast |
//! | `SAVE_PACKET_ARGS` / `RESTORE_PACKET_ARGS` | what KMCL passes to the server's save/restore packet callbacks |
//! | `KE_GET_CURRENT_THREAD` | reading the current thread ([`thread`]) |
//! | `KE_GET_CURRENT_IRQL` / `FN_HOOK_ROUNDTRIP` | reading the IRQL ([`irql`]); fn-pointer hooks stored as data pointers |
#![no_std]
#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod channel;
pub mod external;
pub mod irql;
pub mod packet;
pub mod send;
pub mod server;
pub mod state;
pub mod status;
pub mod thread;

pub use status::{NtStatus, Result};
