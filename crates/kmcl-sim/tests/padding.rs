//! Pad bytes after a payload: the simulator's host can leave them stale, as OpenVMM's
//! writer does (issue 11, item 5), and KMCL hands them to the driver as they are.
//!
//! Reference: Linux `hv_ringbuffer_write`, mu_msvm `EmclDxe` (payload zero-padded; OpenVMM does
//! not write the padding).
#![expect(
    clippy::multiple_unsafe_ops_per_block,
    reason = "raw-C-style driver code: a sequence of KMCL calls under one SAFETY argument"
)]
#![allow(
    non_snake_case,
    reason = "driver callbacks keep their C names (EvtProcessPacket...)"
)]

mod common;

use common::*;
use kmcl_sim::ring::{IncomingRing, OutgoingPacket, OutgoingRing, RingPair};
use kmcl_sim::{OfferConfig, Sim, SimConfig};

#[test]
fn stale_padding_leaves_ring_memory_and_zero_padding_clears_it() {
    for stale in [false, true] {
        let pair = RingPair::new(1, 1);
        let ring = pair.outbound();
        ring.write_data(0, &[0xCC; 4096]);
        let mut tx = OutgoingRing::new(ring.clone());
        tx.set_stale_padding(stale);
        let mut rx = IncomingRing::new(ring);
        rx.set_check_trailer(true);
        tx.write(&OutgoingPacket::in_band(1, false, b"abcde"))
            .expect("fits");
        tx.write(&OutgoingPacket::in_band(2, false, b"12345678"))
            .expect("fits");
        let p = rx.read_next().expect("first packet");
        assert_eq!(&p.payload[..5], b"abcde");
        let pad: &[u8] = if stale { &[0xCC; 3] } else { &[0; 3] };
        assert_eq!(&p.payload[5..], pad, "stale {stale}");
        let p = rx.read_next().expect("second packet (no padding)");
        assert_eq!(p.payload, b"12345678");
    }
}

/// With `stale_pad_bytes`, a driver's `BufferLength` covers pad bytes that hold what earlier
/// packets left in the ring; KMCL delivers them as they are and nothing fails.
#[test]
fn driver_gets_stale_pad_bytes_and_the_channel_holds() {
    let sim = Sim::new(SimConfig::deterministic(11).with_stale_pad_bytes(true));
    let offer = sim.offer(OfferConfig::default());
    let host = offer.host();
    let c = Ctx::new(&sim, ECHO);
    let ch = open(&sim, &offer, &c).expect("opens");
    sim.run_until_idle();
    // Three data pages: lap the ring with 8-byte-multiple payloads of 0xAB, then send short
    // ones whose pads fall on those bytes.
    for i in 0..300u32 {
        host.send_inband(&[0xAB; 64], false).expect("fits");
        if i % 16 == 0 {
            sim.run_until_idle();
        }
    }
    sim.run_until_idle();
    for n in 1..=7usize {
        host.send_inband(&vec![n as u8; n], false).expect("fits");
    }
    sim.run_until_idle();
    let got = c.received();
    let tail = &got[got.len() - 7..];
    let mut stale_seen = false;
    for (n, (buf, _, _)) in (1..=7usize).zip(tail) {
        assert_eq!(buf.len(), 8, "BufferLength is the padded length");
        assert!(buf[..n].iter().all(|b| *b == n as u8));
        stale_seen |= buf[n..].iter().any(|b| *b != 0);
    }
    assert!(stale_seen, "pads hold earlier bytes: {tail:?}");
    close(&c, ch);
    assert!(sim.violations().is_empty(), "{:?}", sim.violations());
}
