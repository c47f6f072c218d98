//! Wake-ups the ring rules do not owe the guest: a guest that holds incoming packets keeps
//! `read_index` behind its read cursor, so the host's empty-to-non-empty rule never fires
//! for what it writes behind them; KMCL must find it by itself (issue 11, item 3).
//!
//! C header: none (wire format); reference: `docs/simulator.md` (signalling; Linux
//! `hv_signal_on_write`, `hv_pkt_iter_close`).
#![expect(
    clippy::multiple_unsafe_ops_per_block,
    reason = "raw-C-style driver code: a sequence of KMCL calls under one SAFETY argument"
)]

mod common;

use std::sync::atomic::Ordering;

use common::*;
use kmcl_sim::{OfferConfig, Sim, SimConfig};
use kmcl_sys::VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION;
use kmcl_sys::status::STATUS_SUCCESS;

/// The driver sends a request that waits for the host's completion.
fn send_request(sim: &Sim, c: &Ctx, ch: kmcl_sys::VMBCHANNEL) {
    assert_eq!(
        send(
            c,
            ch,
            b"request",
            VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION
        ),
        STATUS_SUCCESS
    );
    sim.run_until_idle();
}

/// The driver waits for the completion of its request; the host wrote that completion
/// behind packets the driver holds, with no signal (the rules owe none). Before the fix
/// the DPC never ran again and the send never completed.
#[test]
fn completion_behind_held_packets_is_found_without_a_signal() {
    for seed in 1..=20 {
        let sim = Sim::new(SimConfig::deterministic(seed));
        let offer = sim.offer(OfferConfig::default());
        let host = offer.host();
        let c = Ctx::new(&sim, COMPLETE_HELD_ON_SUSPEND);
        let ch = open(&sim, &offer, &c).expect("opens");
        sim.run_until_idle();
        send_request(&sim, &c, ch);
        let req = host.recv().expect("the host got the request");
        for i in 0..3u8 {
            host.send_inband(&[i; 40], false).expect("fits");
        }
        sim.run_until_idle();
        assert_eq!(
            c.held.lock().map(|h| h.len()).unwrap_or(0),
            3,
            "seed {seed}"
        );
        let signals = sim.stats().host_to_guest_signals;
        host.complete(req.trans_id, b"answer").expect("fits");
        assert_eq!(
            sim.stats().host_to_guest_signals,
            signals,
            "seed {seed}: the ring rules owe no signal (read_index lags)"
        );
        sim.run_until_idle();
        assert_eq!(
            c.sends_done.load(Ordering::SeqCst),
            1,
            "seed {seed}: the completion behind the held packets was never read"
        );
        let results = c.send_results.lock().map(|r| r.clone()).unwrap_or_default();
        assert_eq!(&results[0].1[..6], b"answer");
        close(&c, ch);
        assert!(sim.violations().is_empty(), "{:?}", sim.violations());
    }
}

/// A poll never spins: a guest that holds packets and has nothing more to read goes idle.
#[test]
fn held_packets_with_nothing_behind_them_go_idle() {
    let sim = Sim::new(SimConfig::deterministic(3));
    let offer = sim.offer(OfferConfig::default());
    let host = offer.host();
    let c = Ctx::new(&sim, COMPLETE_HELD_ON_SUSPEND);
    let ch = open(&sim, &offer, &c).expect("opens");
    sim.run_until_idle();
    host.send_inband(b"held", false).expect("fits");
    sim.run_until_idle();
    assert!(!sim.step(), "nothing to do: no task, no poll");
    close(&c, ch);
    assert!(sim.violations().is_empty(), "{:?}", sim.violations());
}

/// The built-in host has one queue per ring: a completion that did not fit keeps its
/// `pending_send_sz` armed for its own size. Before the fix a data write that failed re-armed
/// it for the (larger) data packet, so the guest's release that made room for the
/// completion was not signalled, and the driver waited for it forever.
#[test]
fn a_queued_completion_keeps_its_pending_send_size() {
    for seed in 1..=10 {
        let sim = Sim::new(SimConfig::deterministic(seed));
        let offer = sim.offer(OfferConfig::default());
        let host = offer.host();
        host.set_responder(|_| Some(b"answer".to_vec()));
        let c = Ctx::new(&sim, COMPLETE_HELD_ON_SUSPEND);
        let ch = open(&sim, &offer, &c).expect("opens");
        sim.run_until_idle();
        // Fill the guest-inbound ring with packets the driver holds: 64-byte footprints,
        // then 24-byte ones, so fewer than 32 bytes stay free.
        for payload in [&[7u8; 40][..], &[][..]] {
            while host.send_inband(payload, false).is_ok() {
                sim.run_until_idle();
            }
        }
        let before = c.held.lock().map(|h| h.len()).unwrap_or(0);
        assert!(before > 100, "seed {seed}: the driver holds the ring");
        // The driver's request: the responder's completion (32 bytes) does not fit.
        send_request(&sim, &c, ch);
        assert_eq!(c.sends_done.load(Ordering::SeqCst), 0);
        // A large host packet does not fit either.
        assert!(host.send_inband(&[1u8; 2000], false).is_err());
        // The driver completes its first held packet: 64 bytes free, room for the completion.
        let first = c.held.lock().map(|mut h| h.remove(0)).expect("held");
        let complete = c.table.VmbChannelPacketComplete.expect("entry");
        // SAFETY: rule PACKET_COMPLETED_TWICE: `first` is a held packet, completed once, here.
        unsafe {
            complete(
                std::ptr::with_exposed_provenance_mut(first),
                std::ptr::null_mut(),
                0,
            )
        };
        sim.run_until_idle();
        assert_eq!(
            c.sends_done.load(Ordering::SeqCst),
            1,
            "seed {seed}: the completion that fits was never written"
        );
        close(&c, ch);
        assert!(sim.violations().is_empty(), "{:?}", sim.violations());
    }
}
