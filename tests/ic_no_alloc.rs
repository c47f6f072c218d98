//! The IC in-kernel path allocates nothing.
//!
//! Negotiation, heartbeats, a forwarded shutdown handed to the bridge and read by user
//! mode, its answer flushed, a timeout: zero heap allocations after `IcChannel::new`.
//!
//! Reference: `driver/ic.rs` ("Nothing here allocates after `IcChannel::new`"); the
//! kernel heap is non-paged pool and this path runs in KMCL's DPC at DISPATCH_LEVEL.
#![cfg(not(windows))]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use hv_ic::Framing;
use hv_ic::host::{self, HeartbeatLayout};
use hv_ic::negotiate::{FRAMEWORK_VERSIONS, HEARTBEAT_VERSIONS, SHUTDOWN_VERSIONS};
use hv_ic::shutdown::ShutdownParams;
use hv_ic::wire::ShutdownFlags;
use vmbridge::bridge::config::{IcConfig, IcService};
use vmbridge::bridge::protocol::AlignedBuf;
use vmbridge::bridge::{Bridge, Config, FileId, NtStatus, RequestKey, State, StdLock, UserRequest};
use vmbridge::ic::{IcChannel, IcHeld};
use vmbridge::trace::Tracer;

mod counting;

use counting::{Counting, allocations};

#[global_allocator]
static GLOBAL: Counting = Counting;

static SENT: AtomicU64 = AtomicU64::new(0);
static LAST_STATUS: AtomicU64 = AtomicU64::new(u64::MAX);

/// The send half of `VmbPacketSend`: counts, keeps the answer's status.
fn send(b: &[u8]) -> Result<(), NtStatus> {
    SENT.fetch_add(1, Ordering::Relaxed);
    if let Some(s) = b.get(12..16) {
        let s = u32::from_le_bytes([s[0], s[1], s[2], s[3]]);
        LAST_STATUS.store(u64::from(s), Ordering::Relaxed);
    }
    Ok(())
}

/// A read over a preallocated buffer whose completion only counts.
struct FixedRequest {
    key: u64,
    out: AlignedBuf,
}

impl UserRequest for FixedRequest {
    fn key(&self) -> RequestKey {
        RequestKey(self.key)
    }
    fn input(&self) -> &[u8] {
        &[]
    }
    fn output(&mut self) -> &mut [u8] {
        self.out.as_mut_slice()
    }
    fn park(&mut self) -> Result<(), NtStatus> {
        Ok(())
    }
    fn claim(&mut self) -> bool {
        true
    }
    fn complete(self, _status: NtStatus, _information: usize) {}
}

type B = Bridge<IcHeld, FixedRequest, StdLock<State<IcHeld, FixedRequest>>>;

fn message(f: impl FnOnce(&mut [u8]) -> usize) -> Vec<u8> {
    let mut b = vec![0u8; 4096];
    let n = f(&mut b);
    b.truncate(n);
    b
}

#[test]
fn ic_in_kernel_path_makes_no_heap_allocation() {
    // Heartbeat channel: negotiation + heartbeats, both layouts.
    let hb = IcChannel::new(
        IcConfig::for_service(IcService::Heartbeat),
        8,
        Tracer::etw(),
    )
    .expect("IC mode");
    hb.opened();
    let nego_hb = message(|b| {
        host::write_negotiate_request(b, Framing::Bare, FRAMEWORK_VERSIONS, HEARTBEAT_VERSIONS, 0)
            .expect("request")
    });
    let v = hv_ic::negotiate::NegotiatedVersions {
        framework: hv_ic::wire::Version::new(3, 0),
        message: hv_ic::wire::Version::new(3, 0),
    };
    let beats: Vec<Vec<u8>> = (0..1000u64)
        .map(|i| {
            let layout = if i % 2 == 0 {
                HeartbeatLayout::Reserved40
            } else {
                HeartbeatLayout::AppState16(hv_ic::wire::ApplicationState(1))
            };
            message(|b| {
                host::write_heartbeat_request(b, Framing::Bare, v, 0, i, layout).expect("request")
            })
        })
        .collect();

    // Shutdown channel: forwarded to a bridge, read by user mode, answered, timed out.
    let sd = IcChannel::new(
        IcConfig::for_service(IcService::Shutdown),
        64,
        Tracer::etw(),
    )
    .expect("IC mode");
    sd.opened();
    let nego_sd = message(|b| {
        host::write_negotiate_request(b, Framing::Bare, FRAMEWORK_VERSIONS, SHUTDOWN_VERSIONS, 0)
            .expect("request")
    });
    let vs = hv_ic::negotiate::NegotiatedVersions {
        framework: hv_ic::wire::Version::new(3, 0),
        message: hv_ic::wire::Version::new(3, 2),
    };
    let params = ShutdownParams {
        reason_code: 0x8000_0000,
        timeout_secs: 0,
        flags: ShutdownFlags(2),
    };
    let shutdown = message(|b| {
        host::write_shutdown_request(b, Framing::Bare, vs, 1, &params, b"bye").expect("request")
    });
    let bridge = B::new(
        Config {
            queue_depth: 64,
            max_pending_reads: 64,
            ..Config::DEFAULT
        },
        Tracer::etw(),
    );
    bridge.channel_opened();
    bridge.channel_started();
    let mut reqs = (0..64u64)
        .map(|key| FixedRequest {
            key,
            out: AlignedBuf::zeroed(256),
        })
        .collect::<Vec<_>>()
        .into_iter();
    let file = FileId(1);
    let mut tx = send;
    // Warm up (first lock, lazy statics).
    let _ = hb.on_packet(&nego_hb, &mut tx);
    let _ = sd.on_packet(&nego_sd, &mut tx);
    let sd = Arc::clone(&sd);

    let before = allocations();
    assert!(hb.on_packet(&nego_hb, &mut tx).is_none());
    for b in &beats {
        assert!(hb.on_packet(b, &mut tx).is_none());
    }
    assert!(sd.on_packet(&nego_sd, &mut tx).is_none());
    for _ in 0..16 {
        let held = sd.on_packet(&shutdown, &mut tx).expect("forwarded");
        bridge.packet_arrived(held);
        bridge.read(file, reqs.next().expect("request"));
        sd.flush(&mut tx);
    }
    for _ in 0..16 {
        let held = sd.on_packet(&shutdown, &mut tx).expect("forwarded");
        bridge.packet_arrived(held);
    }
    assert_eq!(sd.tick(u64::MAX), 16);
    sd.flush(&mut tx);
    let after = allocations();

    assert_eq!(after - before, 0, "allocations on the IC path");
    assert_eq!(
        SENT.load(Ordering::Relaxed),
        2 + 1 + 1000 + 1 + 16 + 16,
        "every negotiation, heartbeat and forwarded request answered once"
    );
    assert_eq!(
        LAST_STATUS.load(Ordering::Relaxed),
        u64::from(vmbridge::ic::STATUS_IC_TIMEOUT)
    );
    let st = sd.stats();
    assert_eq!((st.forwarded, st.no_decision, st.timeouts), (32, 16, 16));
    assert_eq!(hb.stats().answered_in_kernel, 1000);
}
