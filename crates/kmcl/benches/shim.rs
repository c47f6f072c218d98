//! The safe packet path vs a hand-written raw `extern "system"` handler doing the same work.
//!
//! C header: `vmbuskernelmodeclientlibapi.h` (`EVT_VMB_CHANNEL_PROCESS_PACKET_EX`,
//! `VmbChannelInitSetProcessPacketCallbacksEx`, `VmbChannelPacketComplete`).
//!
//! Two measurements, each safe vs raw in the same run (ratios, not absolute times, are
//! the point on a noisy machine):
//!
//! * `direct`: the registered `EvtVmbChannelProcessPacketEx` pointer is called in a loop
//!   with a fixed payload, over a table whose `VmbChannelPacketComplete` is a counter:
//!   the cost of the shim itself (context borrow, IRQL read, `Packet`, retirement).
//! * `sim`: packets sent by kmcl-sim's host endpoint and delivered by its DPC: the shim
//!   inside an end-to-end path (ring, scheduler, completion).
//!
//! The work is the same in both handlers: sum the payload bytes and complete with the
//! 4-byte sum. Usage:
//!
//! * `cargo bench -p kmcl --bench shim` — both modes, prints ns/packet and ratios;
//! * `<bench binary> callgrind <safe|raw> <direct|sim> <packets>` — one variant only,
//!   for `valgrind --tool=callgrind` (compare the `Ir` totals of two runs).

use std::ffi::c_void;
use std::hint::black_box;
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
use std::time::Instant;

use kmcl::channel::{Kmcl, ParentDevice};
use kmcl::irql::{Level, Passive};
use kmcl::packet::{Packet, PacketHandler};
use kmcl::state::StateHandler;
use kmcl_sim::{OfferConfig, Sim, SimConfig};
use kmcl_sys::{
    KMCL_CLIENT_INTERFACE_V5, NTSTATUS, PFN_VMB_CHANNEL_PROCESS_PACKET_EX,
    PFN_VMB_CHANNEL_PROCESSING_COMPLETE_EX, PVOID, UINT32, VMBCHANNEL, VMBPACKETCOMPLETION,
};

// ---- the safe handler

struct SumSafe;
impl PacketHandler for SumSafe {
    #[inline]
    fn process(&self, packet: Packet<'_>, _level: Level) {
        let sum = packet
            .payload()
            .iter()
            .fold(0u32, |a, &b| a.wrapping_add(u32::from(b)));
        packet.complete_with(&sum.to_le_bytes());
    }
}
impl StateHandler for SumSafe {}

// ---- the raw handler: what a C-style driver writes by hand

static RAW_COMPLETE: AtomicPtr<()> = AtomicPtr::new(std::ptr::null_mut());

unsafe extern "system" fn raw_process_packet(
    _channel: VMBCHANNEL,
    _context: PVOID,
    packet: VMBPACKETCOMPLETION,
    buffer: PVOID,
    length: UINT32,
    _flags: UINT32,
) {
    let bytes: &[u8] = if buffer.is_null() || length == 0 {
        &[]
    } else {
        // SAFETY: KMCL passes `length` readable bytes.
        unsafe { std::slice::from_raw_parts(buffer.cast::<u8>(), length as usize) }
    };
    let sum = bytes
        .iter()
        .fold(0u32, |a, &b| a.wrapping_add(u32::from(b)));
    let resp = sum.to_le_bytes();
    // SAFETY: stored from the table before Enable.
    let complete: kmcl_sys::FN_VMB_CHANNEL_PACKET_COMPLETE =
        unsafe { std::mem::transmute(RAW_COMPLETE.load(Ordering::Relaxed)) };
    // SAFETY: one completion for the delivered packet.
    unsafe { complete(packet, resp.as_ptr().cast_mut().cast(), 4) };
}

// ---- a stub KMCL for the `direct` mode

static COMPLETED: AtomicU64 = AtomicU64::new(0);
static REGISTERED: AtomicPtr<()> = AtomicPtr::new(std::ptr::null_mut());
static REGISTERED_CTX: AtomicPtr<c_void> = AtomicPtr::new(std::ptr::null_mut());
static CHANNEL_PTR: AtomicPtr<c_void> = AtomicPtr::new(std::ptr::null_mut());

unsafe extern "system" fn stub_complete(_p: VMBPACKETCOMPLETION, buf: PVOID, len: UINT32) {
    black_box((buf, len));
    COMPLETED.fetch_add(1, Ordering::Relaxed);
}
unsafe extern "system" fn stub_allocate(
    _d: kmcl_sys::PDEVICE_OBJECT,
    _s: u8,
    ch: *mut VMBCHANNEL,
) -> NTSTATUS {
    // SAFETY: out-param from the caller.
    unsafe { ch.write(std::ptr::without_provenance_mut(0x1000)) };
    0
}
unsafe extern "system" fn stub_set_pointer(_c: VMBCHANNEL, p: PVOID) {
    CHANNEL_PTR.store(p, Ordering::Relaxed);
}
unsafe extern "system" fn stub_get_pointer(_c: VMBCHANNEL) -> PVOID {
    CHANNEL_PTR.load(Ordering::Relaxed)
}
unsafe extern "system" fn stub_set_ex(
    _c: VMBCHANNEL,
    ctx: PVOID,
    f: PFN_VMB_CHANNEL_PROCESS_PACKET_EX,
    _g: PFN_VMB_CHANNEL_PROCESSING_COMPLETE_EX,
) -> NTSTATUS {
    REGISTERED_CTX.store(ctx, Ordering::Relaxed);
    REGISTERED.store(
        f.map_or(std::ptr::null_mut(), |f| f as *mut ()),
        Ordering::Relaxed,
    );
    0
}
unsafe extern "system" fn stub_ok(_c: VMBCHANNEL) -> NTSTATUS {
    0
}
unsafe extern "system" fn stub_void(_c: VMBCHANNEL) {}
unsafe extern "system" fn stub_state(
    _c: VMBCHANNEL,
    _t: kmcl_sys::PVMB_CHANNEL_STATE_CHANGE_CALLBACKS,
) -> NTSTATUS {
    0
}
unsafe extern "system" fn stub_passive(_c: VMBCHANNEL, _b: u8) {}

fn stub_table(base: &KMCL_CLIENT_INTERFACE_V5) -> &'static KMCL_CLIENT_INTERFACE_V5 {
    let mut t = *base;
    t.VmbChannelPacketComplete = Some(stub_complete);
    t.VmbChannelAllocate = Some(stub_allocate);
    t.VmbChannelSetPointer = Some(stub_set_pointer);
    t.VmbChannelGetPointer = Some(stub_get_pointer);
    t.VmbChannelInitSetProcessPacketCallbacksEx = Some(stub_set_ex);
    t.VmbChannelInitSetStateChangeCallbacks = Some(stub_state);
    t.VmbChannelSetIncomingProcessingAtPassive = Some(stub_passive);
    t.VmbChannelEnable = Some(stub_ok);
    t.VmbChannelDisable = Some(stub_void);
    t.VmbChannelCleanup = Some(stub_void);
    Box::leak(Box::new(t))
}

fn dispatch_irql() -> u8 {
    2
}

/// Calls the safe shim (or the raw handler) `n` times directly; returns ns/packet.
fn direct(safe: bool, n: u64, base: &KMCL_CLIENT_INTERFACE_V5) -> f64 {
    // SAFETY: rule IRQL_SOURCE_TRUTHFUL: the bench calls the shim as KMCL would at
    // DISPATCH_LEVEL, and mints no token for anything else.
    unsafe { kmcl::irql::set_host_irql_source(dispatch_irql) };
    let kmcl = Kmcl::new(stub_table(base)).expect("stub table");
    // SAFETY: the stub never dereferences the device object.
    let parent = unsafe { ParentDevice::from_raw(std::ptr::null_mut()) };
    // SAFETY: bench setup, no real IRQL.
    let p = unsafe { Passive::assume() };
    let ch = kmcl
        .channel(parent, SumSafe, p)
        .expect("channel")
        .enable(p)
        .expect("enable");
    RAW_COMPLETE.store(stub_complete as *mut (), Ordering::Relaxed);
    let registered = REGISTERED.load(Ordering::Relaxed);
    // SAFETY: `stub_set_ex` stored the shim registered for `SumSafe`.
    let shim: kmcl_sys::EVT_VMB_CHANNEL_PROCESS_PACKET_EX =
        unsafe { std::mem::transmute(registered) };
    let f: kmcl_sys::EVT_VMB_CHANNEL_PROCESS_PACKET_EX =
        if safe { shim } else { raw_process_packet };
    let ctx = REGISTERED_CTX.load(Ordering::Relaxed);
    let payload = [3u8; 64];
    let start = Instant::now();
    for i in 0..n {
        // SAFETY: the arguments of a delivery, as KMCL would pass them.
        unsafe {
            f(
                black_box(std::ptr::without_provenance_mut(0x1000)),
                black_box(ctx),
                black_box(std::ptr::without_provenance_mut(
                    0x2000 + (i as usize & 0xff),
                )),
                black_box(payload.as_ptr().cast_mut().cast()),
                black_box(64),
                0,
            );
        }
    }
    let ns = start.elapsed().as_nanos() as f64 / n as f64;
    ch.close(p);
    ns
}

/// Sends `n` packets through kmcl-sim to a safe or raw handler; returns ns/packet.
fn through_sim(safe: bool, n: u64) -> f64 {
    // SAFETY: rule IRQL_SOURCE_TRUTHFUL: the simulator's IRQL of the calling thread, the
    // IRQL it runs the driver's code at on every thread.
    unsafe { kmcl::irql::set_host_irql_source(kmcl_sim::current_irql) };
    let sim = Sim::new(SimConfig::deterministic(5));
    let offer = sim.offer(OfferConfig::default());
    let table: &'static KMCL_CLIENT_INTERFACE_V5 = Box::leak(Box::new(*sim.client_interface()));
    let host = offer.host();
    let payload = [3u8; 64];
    let run = |sim: &Sim| {
        let start = Instant::now();
        let mut left = n;
        while left > 0 {
            let k = left.min(32);
            for _ in 0..k {
                host.send_inband(&payload, true).expect("host send");
            }
            sim.run_until_idle();
            while host.take_completion().is_some() {}
            left -= k;
        }
        start.elapsed().as_nanos() as f64 / n as f64
    };
    if safe {
        let kmcl = Kmcl::new(table).expect("table");
        // SAFETY: the offer outlives the channel.
        let parent = unsafe { ParentDevice::from_raw(offer.device_object()) };
        let p = Passive::try_current().expect("passive");
        let ch = kmcl
            .channel(parent, SumSafe, p)
            .expect("channel")
            .ring_pages(8, 8)
            .expect("pages")
            .enable(p)
            .expect("enable");
        sim.run_until_idle();
        let ns = run(&sim);
        ch.close(p);
        ns
    } else {
        let t = table;
        RAW_COMPLETE.store(
            t.VmbChannelPacketComplete
                .map_or(std::ptr::null_mut(), |f| f as *mut ()),
            Ordering::Relaxed,
        );
        let mut ch: VMBCHANNEL = std::ptr::null_mut();
        let (Some(alloc), Some(pages), Some(set_ex), Some(enable), Some(disable), Some(cleanup)) = (
            t.VmbChannelAllocate,
            t.VmbClientChannelInitSetRingBufferPageCount,
            t.VmbChannelInitSetProcessPacketCallbacksEx,
            t.VmbChannelEnable,
            t.VmbChannelDisable,
            t.VmbChannelCleanup,
        ) else {
            panic!("the simulator's table is complete");
        };
        // SAFETY: the raw C-style sequence: Allocate (PASSIVE, test thread) ...
        assert_eq!(unsafe { alloc(offer.device_object(), 0, &raw mut ch) }, 0);
        // SAFETY: ... Init* while Disabled ...
        assert_eq!(unsafe { pages(ch, 8, 8) }, 0);
        // SAFETY: ... the raw handler needs no context ...
        let st = unsafe { set_ex(ch, std::ptr::null_mut(), Some(raw_process_packet), None) };
        assert_eq!(st, 0);
        // SAFETY: ... Enable.
        assert_eq!(unsafe { enable(ch) }, 0);
        sim.run_until_idle();
        let ns = run(&sim);
        // SAFETY: Disable at PASSIVE (test thread) ...
        unsafe { disable(ch) };
        // SAFETY: ... then Cleanup of the Disabled channel.
        unsafe { cleanup(ch) };
        ns
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let base_sim = Sim::new(SimConfig::deterministic(1));
    let base: KMCL_CLIENT_INTERFACE_V5 = *base_sim.client_interface();
    if args.get(1).map(String::as_str) == Some("callgrind") {
        let safe = args.get(2).map(String::as_str) != Some("raw");
        let mode = args.get(3).cloned().unwrap_or_else(|| "direct".into());
        let n: u64 = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(100_000);
        let ns = if mode == "sim" {
            through_sim(safe, n)
        } else {
            direct(safe, n, &base)
        };
        println!(
            "callgrind {} {mode} {n}: {ns:.1} ns/packet",
            if safe { "safe" } else { "raw" }
        );
        return;
    }
    // `cargo bench` passes `--bench`; any other argument is ignored.
    let n_direct = 2_000_000;
    let n_sim = 20_000;
    // Warm up, then alternate safe/raw to spread machine noise over both.
    let _ = direct(true, 100_000, &base);
    let _ = direct(false, 100_000, &base);
    let mut ds = Vec::new();
    let mut dr = Vec::new();
    for _ in 0..5 {
        ds.push(direct(true, n_direct, &base));
        dr.push(direct(false, n_direct, &base));
    }
    let mut ss = Vec::new();
    let mut sr = Vec::new();
    for _ in 0..3 {
        ss.push(through_sim(true, n_sim));
        sr.push(through_sim(false, n_sim));
    }
    let med = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (ds, dr, ss, sr) = (med(&mut ds), med(&mut dr), med(&mut ss), med(&mut sr));
    println!(
        "shim direct: safe {ds:.2} ns/packet, raw {dr:.2} ns/packet, ratio safe/raw {:.3}",
        ds / dr
    );
    println!(
        "through sim: safe {ss:.0} ns/packet, raw {sr:.0} ns/packet, ratio safe/raw {:.3}",
        ss / sr
    );
    println!(
        "completions counted by the stub: {}",
        COMPLETED.load(Ordering::Relaxed)
    );
}
