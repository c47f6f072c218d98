//! `echo-driver`: the smallest KMCL driver, to copy when starting a new one.
//!
//! C header: `vmbuskernelmodeclientlibapi.h` (through `kmcl`); `wdf.h` (through
//! `wdk-sys`, Windows only). Guide: `docs/writing-a-driver.md`.
//!
//! It binds to the VMBus channels of one interface type ([`ECHO_CHANNEL_TYPE`]) and
//! completes every incoming packet with `VmbChannelPacketComplete`, the packet's own
//! bytes as the response.
//!
//! * this file: the portable driver: the packet handler [`Echo`] and [`open`]
//!   (allocate, configure, enable). It runs unchanged against `kmcl-sim` (the tests in
//!   `tests/`) and in the kernel.
//! * `kmdf.rs` (Windows only): the KMDF glue: `DriverEntry`, `EvtDriverDeviceAdd` (the
//!   KMCL table through `WdfFdoQueryForInterface`), `EvtDevicePrepareHardware` (open the
//!   channel), `EvtDeviceReleaseHardware` (close it), the context cleanup.
//! * `echo_driver.inx`: the INF (binds `VMBUS\{ba819675-e62e-41cc-8d14-a9e2acabcd4d}`).
#![cfg_attr(windows, no_std)]

extern crate alloc;

// Kernel runtime: panics bugcheck (wdk-panic), the heap is non-paged pool (wdk-alloc).
#[cfg(all(windows, not(test)))]
extern crate wdk_panic;

#[cfg(all(windows, not(test)))]
#[global_allocator]
static GLOBAL_ALLOCATOR: wdk_alloc::WdkAllocator = wdk_alloc::WdkAllocator;

#[cfg(windows)]
mod kmdf;

use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

use kmcl::channel::{Channel, Kmcl, ParentDevice, ProcessingMode};
use kmcl::irql::{Level, Passive};
use kmcl::packet::{Packet, PacketHandler};
use kmcl::state::StateHandler;

/// The interface type of the echo channel; the INF binds `VMBUS\{<this GUID>}`.
pub const ECHO_CHANNEL_TYPE: kmcl_sys::GUID = kmcl_sys::GUID::from_fields(
    0xba81_9675,
    0xe62e,
    0x41cc,
    [0x8d, 0x14, 0xa9, 0xe2, 0xac, 0xab, 0xcd, 0x4d],
);

/// The largest packet payload the channel is configured for
/// (`VmbChannelInitSetMaximumPacketSize`).
pub const MAX_PACKET_SIZE: u32 = 4096;

/// Pages per ring, each direction (`VmbClientChannelInitSetRingBufferPageCount`).
pub const RING_PAGES: u32 = 4;

/// The channel's context: echoes every packet and counts what it did.
#[derive(Debug, Default)]
pub struct Echo {
    echoed: AtomicU64,
    unanswered: AtomicU64,
    at_passive: AtomicU64,
}

impl Echo {
    /// Packets completed with their own bytes as the response.
    pub fn echoed(&self) -> u64 {
        self.echoed.load(Ordering::Relaxed)
    }

    /// Packets completed without a response because no memory was left for its copy.
    pub fn unanswered(&self) -> u64 {
        self.unanswered.load(Ordering::Relaxed)
    }

    /// Packets KMCL delivered at PASSIVE_LEVEL (all of them in `ProcessingMode::Passive`).
    pub fn at_passive(&self) -> u64 {
        self.at_passive.load(Ordering::Relaxed)
    }
}

impl PacketHandler for Echo {
    /// Runs at DISPATCH_LEVEL or PASSIVE_LEVEL (the channel's [`ProcessingMode`]); does
    /// neither block nor touch pageable memory, so the level does not matter.
    fn process(&self, packet: Packet<'_>, level: Level) {
        if level.passive().is_some() {
            self.at_passive.fetch_add(1, Ordering::Relaxed);
        }
        // `complete_with` consumes the packet, which owns the payload: copy it first
        // (KMCL copies the response into the completion before the call returns).
        let mut response = Vec::new();
        if response.try_reserve_exact(packet.payload().len()).is_err() {
            // Out of non-paged pool: still retire the packet, with an empty completion.
            self.unanswered.fetch_add(1, Ordering::Relaxed);
            packet.complete();
            return;
        }
        response.extend_from_slice(packet.payload());
        packet.complete_with(&response);
        self.echoed.fetch_add(1, Ordering::Relaxed);
    }
}

/// Nothing to do on state changes: no packet is ever held, nothing is sent.
impl StateHandler for Echo {}

/// Allocates the channel on `parent`, configures it and enables it (KMCL opens it
/// asynchronously; packets arrive once the host's open completes).
///
/// # Errors
///
/// The status of the first KMCL call that failed (`VmbChannelAllocate`, an
/// `VmbChannelInit*` setter, or `VmbChannelEnable`); the channel is cleaned up.
pub fn open(
    kmcl: &Kmcl,
    parent: ParentDevice,
    mode: ProcessingMode,
    passive: Passive,
) -> kmcl::Result<Channel<Echo>> {
    kmcl.channel(parent, Echo::default(), passive)?
        .max_packet_size(MAX_PACKET_SIZE)?
        .ring_pages(RING_PAGES, RING_PAGES)?
        .processing_mode(mode)
        .enable(passive)
}
