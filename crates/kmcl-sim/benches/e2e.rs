//! End-to-end delivery: host in-band packets -> ring -> DPC -> the table -> a trivial raw
//! handler that completes each packet; beside a memcpy of the same bytes, in the same run.
//!
//! C header: `vmbuskernelmodeclientlibapi.h` (EvtVmbChannelProcessPacket, VmbChannelPacketComplete).
//!
//! Run: `cargo bench -p kmcl-sim --bench e2e` (plain `std::time`, no criterion). The figure to
//! compare across machines is the ratio to memcpy, not the absolute rate.
#![allow(non_snake_case, reason = "the driver callback keeps its C name")]

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use kmcl_sim::{OfferConfig, SendError, Sim, SimConfig};

#[path = "common/callgrind.rs"]
mod callgrind;
#[path = "../../../tests/counting/mod.rs"]
mod counting;

/// Counts this thread's heap allocations (the no-allocation tests' allocator).
#[global_allocator]
static GLOBAL: counting::Counting = counting::Counting;
use kmcl_sys::status::STATUS_SUCCESS;
use kmcl_sys::*;

static COMPLETE: AtomicUsize = AtomicUsize::new(0);
static DELIVERED: AtomicU64 = AtomicU64::new(0);

/// The trivial raw handler: complete at once, no response.
unsafe extern "system" fn EvtProcessPacket(
    _ch: VMBCHANNEL,
    pkt: VMBPACKETCOMPLETION,
    _buf: PVOID,
    _len: UINT32,
    _flags: UINT32,
) {
    DELIVERED.fetch_add(1, Ordering::Relaxed);
    let f = COMPLETE.load(Ordering::Relaxed);
    if f != 0 {
        // SAFETY: `COMPLETE` holds the table's VmbChannelPacketComplete entry.
        let f: FN_VMB_CHANNEL_PACKET_COMPLETE =
            unsafe { std::mem::transmute::<usize, FN_VMB_CHANNEL_PACKET_COMPLETE>(f) };
        // SAFETY: rule PACKET_COMPLETED_TWICE: each delivered packet is completed once, here.
        unsafe { f(pkt, std::ptr::null_mut(), 0) };
    }
}

fn open(sim: &Sim) -> (kmcl_sim::HostEndpoint, VMBCHANNEL, KMCL_CLIENT_INTERFACE_V5) {
    let t = *sim.client_interface();
    COMPLETE.store(
        t.VmbChannelPacketComplete.map_or(0, |f| f as usize),
        Ordering::SeqCst,
    );
    let offer = sim.offer(OfferConfig::default());
    let mut ch: VMBCHANNEL = std::ptr::null_mut();
    // SAFETY: rule INIT_AFTER_ENABLE: allocate and init at PASSIVE before Enable; valid pointers.
    let ok = unsafe {
        (t.VmbChannelAllocate.expect("slot"))(offer.device_object(), FALSE, &raw mut ch)
            == STATUS_SUCCESS
    };
    assert!(ok);
    // SAFETY: as above.
    let s1 = unsafe { (t.VmbClientChannelInitSetRingBufferPageCount.expect("slot"))(ch, 65, 65) };
    // SAFETY: as above.
    let s2 = unsafe {
        (t.VmbChannelInitSetProcessPacketCallbacks.expect("slot"))(ch, Some(EvtProcessPacket), None)
    };
    // SAFETY: as above.
    let s3 = unsafe { (t.VmbChannelEnable.expect("slot"))(ch) };
    assert_eq!((s1, s2, s3), (0, 0, 0));
    sim.run_until_idle();
    (offer.host(), ch, t)
}

fn run(size: usize, total_bytes: usize) {
    let sim = Sim::new(SimConfig::deterministic(1));
    let (host, ch, t) = open(&sim);
    let payload = vec![0x5Au8; size];
    let n = (total_bytes / size).max(1);
    DELIVERED.store(0, Ordering::SeqCst);
    let start = Instant::now();
    let mut sent = 0;
    // Allocations are counted over the second half (the first warms the pools up).
    let mut allocs_from = None;
    while sent < n {
        if sent == n / 2 && allocs_from.is_none() {
            allocs_from = Some(counting::allocations());
        }
        match host.send_inband(&payload, false) {
            Ok(_) => sent += 1,
            Err(SendError::Full) => sim.run_until_idle(),
            Err(e) => panic!("{e}"),
        }
    }
    sim.run_until_idle();
    let e2e = start.elapsed();
    let allocs = counting::allocations() - allocs_from.unwrap_or(0);
    assert_eq!(DELIVERED.load(Ordering::SeqCst), n as u64);

    // memcpy of the same bytes (packet by packet), same run.
    let mut dst = vec![0u8; size];
    let start = Instant::now();
    for _ in 0..n {
        dst.copy_from_slice(black_box(&payload));
        black_box(&mut dst);
    }
    let copy = start.elapsed().max(Duration::from_nanos(1));

    let bytes = (n * size) as f64;
    let pps = n as f64 / e2e.as_secs_f64();
    println!(
        "e2e in-band {size:>5} B: {n:>7} packets in {:>8.2} ms = {:>10.0} packets/s, {:>8.1} MB/s | memcpy {:>9.1} MB/s | memcpy/e2e = {:>6.0}x | {:>6} instr/packet | {:.3} allocations/packet",
        e2e.as_secs_f64() * 1e3,
        pps,
        bytes / e2e.as_secs_f64() / 1e6,
        bytes / copy.as_secs_f64() / 1e6,
        e2e.as_secs_f64() / copy.as_secs_f64(),
        callgrind::cell(callgrind::per_packet(size, 5000, 15000)),
        allocs as f64 / (n - n / 2) as f64,
    );
    // SAFETY: rule IRQL_TOO_HIGH: PASSIVE bench thread; the channel is not used afterwards.
    unsafe { (t.VmbChannelDisable.expect("slot"))(ch) };
    // SAFETY: as above.
    unsafe { (t.VmbChannelCleanup.expect("slot"))(ch) };
    sim.assert_clean();
}

/// Exactly `n` host packets of `size` bytes delivered and completed, nothing printed
/// (instruction-count mode for `scripts/bench-instructions.sh`, which takes the difference
/// of two `n` under callgrind so set-up and tear-down cancel out).
fn run_count(size: usize, n: u64) {
    let sim = Sim::new(SimConfig::deterministic(1));
    let (host, ch, t) = open(&sim);
    let payload = vec![0x5Au8; size];
    DELIVERED.store(0, Ordering::SeqCst);
    let mut sent = 0;
    while sent < n {
        match host.send_inband(black_box(&payload), false) {
            Ok(_) => sent += 1,
            Err(SendError::Full) => sim.run_until_idle(),
            Err(e) => panic!("{e}"),
        }
    }
    sim.run_until_idle();
    assert_eq!(DELIVERED.load(Ordering::SeqCst), n);
    if std::env::var_os("E2E_ALLOCS").is_some() {
        eprintln!("allocations: {}", counting::allocations());
    }
    // SAFETY: rule IRQL_TOO_HIGH: PASSIVE bench thread; the channel is not used afterwards.
    unsafe { (t.VmbChannelDisable.expect("slot"))(ch) };
    // SAFETY: as above.
    unsafe { (t.VmbChannelCleanup.expect("slot"))(ch) };
    sim.assert_clean();
}

fn main() {
    if let Some((n, size)) = callgrind::count_args() {
        run_count(size, n);
        return;
    }
    let total = std::env::var("E2E_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(16 << 20);
    for size in [64, 1024, 4096] {
        run(size, total);
    }
}
