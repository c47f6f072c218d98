//! Nothing the other endpoint sends can panic the safe layer: random lengths, empty
//! packets, external data of any size, raw malformed ring bytes, rescind mid-delivery.
//!
//! C header: `vmbuskernelmodeclientlibapi.h` (`EvtVmbChannelProcessPacket`: `Buffer`,
//! `BufferLength`, `Flags` are the peer's); reference `docs/simulator.md` ("Rings and packets"),
//! DDI page `EVT_VMB_CHANNEL_PROCESS_PACKET`.

mod common;

use common::{Bench, passive};
use kmcl::external::Access;
use kmcl::irql::Level;
use kmcl::packet::{Packet, PacketHandler};
use kmcl::state::StateHandler;
use kmcl_sim::{Fault, SimConfig};

/// Parses like a real protocol handler: a 4-byte length prefix, then that many bytes;
/// fails malformed packets, reads external data when flagged.
struct Parser;

impl PacketHandler for Parser {
    fn process(&self, mut packet: Packet<'_>, _level: Level) {
        let p = packet.payload();
        let Some(len) = p
            .get(..4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
        else {
            packet.complete();
            return;
        };
        let body_ok = p.len() >= 4 && p.len() - 4 >= len;
        if packet.flags().has_external_data() {
            let n = packet
                .external_data(Access::ReadOnly)
                .map(|e| e.len())
                .unwrap_or(0);
            packet.complete_with(&u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes());
        } else if body_ok {
            let mut echo = [0u8; 64];
            let n = len.min(64);
            echo[..n].copy_from_slice(&p[4..4 + n]);
            packet.complete_with(&echo[..n]);
        } else {
            packet.complete_with(b"bad len!");
        }
    }
}
impl StateHandler for Parser {}

/// A small deterministic PRNG (xorshift) so failures are reproducible.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
#[cfg_attr(
    miri,
    ignore = "800 random packets take minutes under Miri; packets.rs covers the path"
)]
fn random_peer_payloads_never_panic_the_handler() {
    for padded in [true, false] {
        let b = Bench::with(SimConfig::deterministic(51).with_padded_lengths(padded));
        let p = passive();
        let ch = b
            .kmcl
            .channel(b.parent(), Parser, p)
            .unwrap()
            .ring_pages(16, 16)
            .unwrap()
            .max_external_data(0x4_0000, 8)
            .unwrap()
            .enable(p)
            .unwrap();
        b.idle();
        let host = b.offer.host();
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let mut sent = 0;
        for i in 0..400 {
            let len = (rng.next() % 600) as usize;
            let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            let ok = if i % 5 == 0 {
                let ext_len = (rng.next() % 9000) as usize;
                host.send_gpa_direct(&bytes, &vec![0xEE; ext_len], i % 2 == 0, true)
                    .is_ok()
            } else {
                host.send_inband(&bytes, true).is_ok()
            };
            if ok {
                sent += 1;
            }
            if i % 16 == 0 {
                b.idle();
            }
        }
        b.idle();
        let mut done = 0;
        while host.take_completion().is_some() {
            done += 1;
        }
        assert_eq!(done, sent);
        assert_eq!(ch.dropped_unretired(), 0);
        ch.close(p);
        b.sim.assert_clean();
    }
}

#[test]
fn malformed_ring_bytes_fail_the_channel_without_a_panic() {
    let b = Bench::with(SimConfig::deterministic(52).collect());
    let p = passive();
    let ch = b
        .kmcl
        .channel(b.parent(), Parser, p)
        .unwrap()
        .enable(p)
        .unwrap();
    b.idle();
    let host = b.offer.host();
    let mut rng = Rng(7);
    for _ in 0..8 {
        let junk: Vec<u8> = (0..(8 + rng.next() % 64))
            .map(|_| rng.next() as u8)
            .collect();
        let _ = host.send_raw(&junk);
        b.idle();
    }
    ch.close(p);
    b.idle();
    // Whatever the simulator made of the junk, the driver side broke no KMCL rule.
    let driver_bugs: Vec<_> = b
        .sim
        .violations()
        .into_iter()
        .filter(|v| v.rule.name() != "SPURIOUS_SIGNAL")
        .collect();
    assert!(driver_bugs.is_empty(), "{driver_bugs:?}");
}

#[test]
fn rescind_during_delivery_still_retires_the_packet() {
    let b = Bench::deterministic(53);
    let p = passive();
    let ch = b
        .kmcl
        .channel(b.parent(), Parser, p)
        .unwrap()
        .enable(p)
        .unwrap();
    b.idle();
    b.sim.inject(Fault::RescindDuringDelivery);
    b.offer
        .host()
        .send_inband(&[2, 0, 0, 0, 1, 2], true)
        .unwrap();
    b.idle();
    ch.close(p);
    b.sim.assert_clean();
}
