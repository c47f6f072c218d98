//! Memory stays flat when the host stops reading: writes and no-wait sends are bounded
//! by `MaxPostedSends` (issue 15, bug 2), not queued without limit inside KMCL.
//!
//! Reference: `driver/bridge/device.rs` (`Bridge::write`), `driver/bridge/config.rs`
//! (`Config::max_posted_sends`). One test in its own binary: the live-byte count of the
//! counting allocator is process-wide.
#![cfg(not(windows))]

mod common;

mod counting;

use common::Rig;
use counting::{Counting, live_bytes};
use vmbridge::bridge::protocol::{IOCTL_VMBRIDGE_SEND, build_send};
use vmbridge::bridge::{Config, NtStatus};

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn writes_to_a_host_that_stops_reading_are_refused_busy_and_memory_stays_flat() {
    let mut rig = Rig::deterministic(21, Config::DEFAULT);
    rig.host.pause_reading(true);
    let f = rig.open_file();
    let data = vec![0x5A; 4096];
    let nowait = build_send(0, &data);
    let (mut ok, mut busy) = (0u32, 0u32);
    let mut tally = |st: NtStatus| match st {
        NtStatus::SUCCESS => ok += 1,
        NtStatus::DEVICE_BUSY => busy += 1,
        other => panic!("unexpected {other:?}"),
    };
    let issue = |i: u32| {
        let h = if i.is_multiple_of(2) {
            rig.write(f, &data)
        } else {
            rig.ioctl(f, IOCTL_VMBRIDGE_SEND, nowait.as_slice(), 0)
        };
        rig.idle();
        h.result().expect("completed at once").status
    };
    for i in 0..1_000 {
        tally(issue(i));
    }
    let baseline = live_bytes();
    for i in 1_000..50_000 {
        tally(issue(i));
    }
    let grown = live_bytes().saturating_sub(baseline);
    // The ring (15 data pages) holds 14 such packets and KMCL at most MaxPostedSends.
    let bound = 14 + Config::DEFAULT.max_posted_sends;
    assert!(ok <= bound, "{ok} accepted, bound {bound}");
    assert_eq!(ok + busy, 50_000);
    assert!(grown < 1 << 20, "memory grew by {grown} bytes");
    let st = rig.device().bridge().stats();
    assert_eq!(u64::from(ok), st.packets_sent);
    assert_eq!(st.posted_sends, Config::DEFAULT.max_posted_sends);
    eprintln!("accepted {ok}, busy {busy}, live bytes grew by {grown} over 49,000 sends");
    // The host reads again: everything accepted arrives, and sends are accepted again.
    rig.host.pause_reading(false);
    rig.idle();
    let mut received = 0;
    while rig.host.recv().is_some() {
        received += 1;
    }
    assert_eq!(received, ok);
    assert_eq!(rig.device().bridge().stats().posted_sends, 0);
    let h = rig.write(f, &data);
    rig.idle();
    assert_eq!(h.result().expect("done").status, NtStatus::SUCCESS);
    rig.close();
    rig.sim.assert_clean();
}
