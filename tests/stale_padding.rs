//! vmbridge does not depend on the 0–7 pad bytes after a payload being zero: OpenVMM's
//! writer leaves them stale (issue 11, item 5), and KMCL passes the padded length.
//!
//! Reference: `docs/simulator.md` (padding); `tests/data/openvmm/README.md` (what OpenVMM writes).
#![cfg(not(windows))]

mod common;

use common::Rig;
use kmcl_sim::SimConfig;
use vmbridge::bridge::protocol::VMBRIDGE_PACKET_HEADER;
use vmbridge::bridge::{Config, NtStatus};
use vmbridge::trace::Tracer;

const HDR: usize = size_of::<VMBRIDGE_PACKET_HEADER>();

#[test]
fn stale_pad_bytes_reach_user_mode_as_padding_and_nothing_fails() {
    let mut rig = Rig::new(
        SimConfig::deterministic(4).with_stale_pad_bytes(true),
        Config::DEFAULT,
        Tracer::etw(),
    );
    let f = rig.open_file();
    // Lap the 15-page ring with 0xAB, so later pad bytes fall on old bytes.
    for _ in 0..1000 {
        rig.host.send_inband(&[0xAB; 248], false).expect("fits");
        rig.idle();
        let r = rig.read(f, 512);
        rig.idle();
        let c = r.result().expect("read completes");
        assert_eq!(c.status, NtStatus::SUCCESS);
    }
    let mut stale_seen = false;
    for n in 1..=7usize {
        let data = vec![n as u8; n];
        rig.host.send_inband(&data, false).expect("fits");
        rig.idle();
        let r = rig.read(f, 64);
        rig.idle();
        let c = r.result().expect("read completes");
        assert_eq!(c.status, NtStatus::SUCCESS);
        let h = VMBRIDGE_PACKET_HEADER::parse(&c.output).expect("header");
        assert_eq!(h.PayloadLength, 8, "the padded length KMCL passes");
        let body = &c.output[HDR..HDR + 8];
        assert_eq!(&body[..n], &data[..]);
        stale_seen |= body[n..].iter().any(|b| *b != 0);
    }
    assert!(stale_seen, "the knob left stale pad bytes");
    rig.close_file(f);
    let stats = rig.close();
    assert_eq!(stats.errors(), 0, "{stats:?}");
    assert_eq!(stats.packets_discarded, 0);
    rig.sim.assert_clean();
}
