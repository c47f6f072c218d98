//! Zero heap allocations per received packet on the DISPATCH_LEVEL path.
//!
//! C header: `vmbuskernelmodeclientlibapi.h` (`EvtVmbChannelProcessPacket`,
//! `VmbChannelPacketComplete`); reference: its DDI page.
//!
//! What is measured, exactly: a counting global allocator counts allocations made on
//! the delivering thread while a thread-local flag is set. The flag is set by the host
//! IRQL source, which the packet shim calls as its first action (`Level::from_current`),
//! and cleared when the test handler returns; while the shim calls into the simulator
//! (`VmbChannelPacketComplete`, through a patched copy of the table), the flag is
//! cleared, because those allocations are the simulator's (its ring model), not ours.
//! So the window is: shim prologue + `Packet` construction + the handler (payload read,
//! response, retirement in `kmcl`) — everything `kmcl` and a driver add per packet.
//! The `_EX` path (context passed by KMCL) is measured; the deterministic simulator
//! delivers on the test thread.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

use common::{Bench, passive};
use kmcl::channel::Kmcl;
use kmcl::irql::Level;
use kmcl::packet::{Packet, PacketHandler};
use kmcl::state::StateHandler;
use kmcl_sys::{KMCL_CLIENT_INTERFACE_V5, PVOID, UINT32, VMBPACKETCOMPLETION};

struct Counting;

thread_local! {
    static IN_WINDOW: Cell<bool> = const { Cell::new(false) };
}
static IN_WINDOW_ALLOCS: AtomicU64 = AtomicU64::new(0);
static WINDOWS: AtomicU64 = AtomicU64::new(0);

fn in_window() -> bool {
    IN_WINDOW.try_with(Cell::get).unwrap_or(false)
}

// SAFETY: forwards every call to `System` unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if in_window() {
            IN_WINDOW_ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if in_window() {
            IN_WINDOW_ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The IRQL source: the simulator's, and the start of the measured window.
fn irql_and_open_window() -> u8 {
    let l = kmcl_sim::current_irql();
    IN_WINDOW.with(|w| w.set(true));
    WINDOWS.fetch_add(1, Ordering::Relaxed);
    l
}

static SIM_COMPLETE: std::sync::OnceLock<kmcl_sys::FN_VMB_CHANNEL_PACKET_COMPLETE> =
    std::sync::OnceLock::new();

/// `VmbChannelPacketComplete` with the window closed while the simulator runs.
unsafe extern "system" fn complete_outside_window(p: VMBPACKETCOMPLETION, buf: PVOID, len: UINT32) {
    let was = IN_WINDOW.with(|w| w.replace(false));
    if let Some(f) = SIM_COMPLETE.get() {
        // SAFETY: forwards KMCL's own arguments to the simulator's routine.
        unsafe { f(p, buf, len) };
    }
    IN_WINDOW.with(|w| w.set(was));
}

/// Answers with a checksum (mode 1) or completes without a response (mode 0).
struct Sum {
    respond: bool,
}

impl PacketHandler for Sum {
    fn process(&self, packet: Packet<'_>, level: Level) {
        assert!(matches!(level, Level::Dispatch(_)));
        let sum = packet
            .payload()
            .iter()
            .fold(0u32, |a, &b| a.wrapping_add(u32::from(b)));
        if self.respond {
            packet.complete_with(&sum.to_le_bytes());
        } else {
            packet.complete();
        }
        IN_WINDOW.with(|w| w.set(false));
    }
}
impl StateHandler for Sum {}

fn run(respond: bool) -> (u64, u64) {
    let b = Bench::deterministic(41);
    // SAFETY: rule IRQL_SOURCE_TRUTHFUL: the simulator's IRQL of the calling thread
    // (`kmcl_sim::current_irql`), read as is.
    unsafe { kmcl::irql::set_host_irql_source(irql_and_open_window) };
    let mut table: KMCL_CLIENT_INTERFACE_V5 = *b.sim.client_interface();
    if let Some(f) = table.VmbChannelPacketComplete {
        let _ = SIM_COMPLETE.set(f);
    }
    table.VmbChannelPacketComplete = Some(complete_outside_window);
    let kmcl = Kmcl::new(Box::leak(Box::new(table))).unwrap();
    let p = passive();
    IN_WINDOW.with(|w| w.set(false));
    let ch = kmcl
        .channel(b.parent(), Sum { respond }, p)
        .unwrap()
        .ring_pages(8, 8)
        .unwrap()
        .enable(p)
        .unwrap();
    b.idle();
    IN_WINDOW.with(|w| w.set(false));
    let host = b.offer.host();
    let payload = [7u8; 64];
    let windows0 = WINDOWS.load(Ordering::Relaxed);
    let allocs0 = IN_WINDOW_ALLOCS.load(Ordering::Relaxed);
    for _ in 0..50 {
        for _ in 0..20 {
            host.send_inband(&payload, true).unwrap();
        }
        b.idle();
        while host.take_completion().is_some() {}
    }
    IN_WINDOW.with(|w| w.set(false));
    let windows = WINDOWS.load(Ordering::Relaxed) - windows0;
    let allocs = IN_WINDOW_ALLOCS.load(Ordering::Relaxed) - allocs0;
    ch.close(p);
    b.sim.assert_clean();
    // SAFETY: rule IRQL_SOURCE_TRUTHFUL: the simulator's IRQL of the calling thread, the
    // IRQL it runs the driver's code at on every thread.
    unsafe { kmcl::irql::set_host_irql_source(kmcl_sim::current_irql) };
    (windows, allocs)
}

#[test]
fn receive_path_allocates_nothing_per_packet() {
    for respond in [false, true] {
        let (windows, allocs) = run(respond);
        println!("respond={respond}: {windows} shim windows, {allocs} allocations inside them");
        assert!(windows >= 1000, "every packet opened a window ({windows})");
        assert_eq!(
            allocs, 0,
            "allocations on the DISPATCH path (respond={respond})"
        );
    }
}
