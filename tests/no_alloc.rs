//! The receive path allocates nothing.
//!
//! A packet arriving (queued, or handed to a parked read) and a queued packet taken by a
//! read run with zero heap allocations.
//!
//! Reference: `driver/bridge/device.rs` ("No allocation after `Bridge::new`"); the kernel
//! heap is non-paged pool and the receive path may run at DISPATCH_LEVEL.
#![cfg(not(windows))]

use std::sync::atomic::{AtomicU64, Ordering};

use vmbridge::bridge::protocol::AlignedBuf;
use vmbridge::bridge::{
    Bridge, Config, FileId, HeldPacket, NtStatus, RequestKey, State, StdLock, UserRequest,
};
use vmbridge::trace::Tracer;

mod counting;

use counting::{Counting, allocations};

#[global_allocator]
static GLOBAL: Counting = Counting;

static COMPLETED: AtomicU64 = AtomicU64::new(0);

/// A packet over static memory whose completion only counts.
struct StaticPacket(&'static [u8]);

impl HeldPacket for StaticPacket {
    fn payload(&self) -> &[u8] {
        self.0
    }
    fn complete(self, _response: &[u8]) {
        COMPLETED.fetch_add(1, Ordering::Relaxed);
    }
}

/// A request over preallocated buffers whose completion only records the status.
struct FixedRequest {
    key: u64,
    out: AlignedBuf,
    status: &'static AtomicU64,
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
    fn complete(self, status: NtStatus, _information: usize) {
        self.status
            .store(u64::from(status.raw().cast_unsigned()), Ordering::Relaxed);
    }
}

type B = Bridge<StaticPacket, FixedRequest, StdLock<State<StaticPacket, FixedRequest>>>;

static PAYLOAD: [u8; 256] = [7; 256];
static STATUS: AtomicU64 = AtomicU64::new(u64::MAX);

#[test]
fn receive_path_makes_no_heap_allocation() {
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
    let file = FileId(1);
    // Warm up (lazy statics, first lock).
    bridge.packet_arrived(StaticPacket(&PAYLOAD));
    let reqs: Vec<FixedRequest> = (0..128)
        .map(|k| FixedRequest {
            key: k,
            out: AlignedBuf::zeroed(512),
            status: &STATUS,
        })
        .collect();
    let mut reqs = reqs.into_iter();
    bridge.read(file, reqs.next().expect("request"));

    let before = allocations();
    // Packets queued, uncompleted.
    for _ in 0..32 {
        bridge.packet_arrived(StaticPacket(&PAYLOAD));
    }
    // Reads taking queued packets.
    for _ in 0..32 {
        bridge.read(file, reqs.next().expect("request"));
    }
    // Reads parked, then packets delivered straight to them.
    for _ in 0..32 {
        bridge.read(file, reqs.next().expect("request"));
    }
    for _ in 0..32 {
        bridge.packet_arrived(StaticPacket(&PAYLOAD));
    }
    let after = allocations();

    assert_eq!(after - before, 0, "allocations on the receive path");
    assert_eq!(
        COMPLETED.load(Ordering::Relaxed),
        65,
        "every packet was read and completed"
    );
    assert_eq!(
        STATUS.load(Ordering::Relaxed),
        0,
        "reads completed with STATUS_SUCCESS"
    );
    let st = bridge.stats();
    assert_eq!(
        (st.packets_read, st.queue_depth, st.pending_reads),
        (65, 0, 0)
    );
}
