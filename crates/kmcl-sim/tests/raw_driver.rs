//! A raw-C-style driver (plain `extern "system"` fns over kmcl-sys) runs a full lifecycle
//! with traffic in both directions, verifier clean, in deterministic and threaded mode.
//!
//! C header: `vmbuskernelmodeclientlibapi.h`; the call sequence in `docs/architecture.md`.
#![expect(
    clippy::multiple_unsafe_ops_per_block,
    reason = "raw-C-style driver code: a sequence of KMCL calls under one SAFETY argument"
)]

mod common;

use std::time::Duration;

use common::*;
use kmcl_sim::{OfferConfig, Sim, SimConfig};
use kmcl_sys::status::*;

const T: Duration = Duration::from_secs(10);

fn full_lifecycle(cfg: SimConfig) {
    let sim = Sim::new(cfg);
    let offer = sim.offer(OfferConfig::default());
    let host = offer.host();
    host.set_responder(|p| {
        let mut r = b"ack:".to_vec();
        r.extend_from_slice(&p.payload);
        Some(r)
    });
    let c = Ctx::new(&sim, ECHO | SEND_ON_RECEIVE | SYNC_IN_POST_STARTED);
    let ch = open(&sim, &offer, &c).expect("channel opens");
    assert!(host.wait_open(T), "channel reaches Running");
    sim.run_until_idle();

    // Host -> guest: each completed with the reversed payload.
    let mut ids = Vec::new();
    for i in 0..20u8 {
        ids.push(
            host.send_inband(&[i, 1, 2, 3, 4, 5, 6, 7], true)
                .expect("host send"),
        );
    }
    let mut completions = Vec::new();
    while completions.len() < 20 {
        let Some(c) = host.take_completion_timeout(T) else {
            break;
        };
        completions.push(c);
    }
    sim.run_until_idle();
    assert_eq!(completions.len(), 20);
    for (i, (id, resp)) in completions.iter().enumerate() {
        assert_eq!(*id, ids[i]);
        assert_eq!(
            resp[..8],
            [7, 6, 5, 4, 3, 2, 1, u8::try_from(i).unwrap_or(0)]
        );
    }
    // Guest -> host: the driver sent one packet per received packet; the responder answered.
    let wait = std::time::Instant::now();
    while c.sends_done.load(std::sync::atomic::Ordering::SeqCst) < 20 && wait.elapsed() < T {
        sim.run_until_idle();
        std::thread::sleep(Duration::from_millis(1));
    }
    let results = c
        .send_results
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    assert_eq!(results.len(), 20);
    for (status, data, irql) in &results {
        assert_eq!(*status, STATUS_SUCCESS);
        assert_eq!(&data[..4], b"ack:");
        assert_eq!(*irql, 2, "send completion routines run at DISPATCH_LEVEL");
    }
    let reply = c
        .sync_reply
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    // The completion comes back padded to 8 bytes (VMBus carries no exact length).
    let mut expect = b"ack:hello-v1".to_vec();
    expect.resize(16, 0);
    assert_eq!(reply, Some((STATUS_SUCCESS, expect)));
    assert!(c.received().iter().all(|(_, _, irql)| *irql == 2));

    close(&c, ch);
    sim.run_until_idle();
    let ev = c.events();
    let order: Vec<&str> = ev
        .iter()
        .filter(|e| !e.starts_with("batch"))
        .map(String::as_str)
        .collect();
    assert_eq!(
        order,
        [
            "opened@0",
            "started@0",
            "post_started@0",
            "suspend@0",
            "closed@0"
        ]
    );
    assert!(ev.iter().any(|e| e.starts_with("batch:")));
    assert!(!host.is_open());
    sim.assert_clean();
}

#[test]
fn raw_driver_full_lifecycle_deterministic() {
    full_lifecycle(SimConfig::deterministic(1));
}

#[test]
fn raw_driver_full_lifecycle_threaded() {
    full_lifecycle(SimConfig::threaded());
}

#[test]
#[cfg_attr(
    miri,
    ignore = "16 full lifecycles: minutes under Miri; the deterministic lifecycle test runs the same path"
)]
fn raw_driver_is_clean_for_many_seeds() {
    for seed in 0..16 {
        full_lifecycle(SimConfig::deterministic(seed));
    }
}
