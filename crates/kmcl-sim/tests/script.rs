//! The scripted host against a raw `kmcl-sys` driver: every way a script step can fail is
//! reported at its step, and a correct run yields the completions and a clean report.
//!
//! C header: `vmbuskernelmodeclientlibapi.h` (through the raw test driver of `common`).
#![expect(
    clippy::multiple_unsafe_ops_per_block,
    reason = "the shared raw-C-style driver: a sequence of KMCL calls under one SAFETY argument"
)]

mod common;

use common::*;
use kmcl_sim::script::{ErrorKind, Script};
use kmcl_sim::{OfferConfig, Rule, Sim, SimConfig};

/// A deterministic simulation and an enabled channel of the raw driver with `flags`.
fn setup(seed: u64, flags: u32) -> (Sim, kmcl_sim::Offer, std::sync::Arc<Ctx>) {
    let sim = Sim::new(SimConfig::deterministic(seed).collect());
    let offer = sim.offer(OfferConfig::default());
    let c = Ctx::new(&sim, flags);
    open(&sim, &offer, &c).expect("opens");
    (sim, offer, c)
}

#[test]
fn script_waits_for_the_open_and_collects_every_completion() {
    // ECHO completes each packet with its payload reversed (padding included).
    let (sim, offer, c) = setup(4, ECHO);
    let report = Script::new()
        .send(b"abcdefgh")
        .expect_response(b"hgfedcba")
        .send(b"12345678")
        .send_no_completion(b"none")
        .run(&sim, &offer.host())
        .unwrap();
    report.assert_clean();
    let steps: Vec<usize> = report.completions.iter().map(|c| c.step).collect();
    assert_eq!(steps, [0, 1]);
    assert_eq!(report.completions[1].response, b"87654321");
    assert_eq!(report.stats.packets_delivered, 3);
    close(&c, c.ch());
}

#[test]
fn script_reports_a_wrong_response_at_its_step() {
    let (sim, offer, c) = setup(5, ECHO);
    let err = Script::new()
        .send(b"abcdefgh")
        .expect_response(b"hgfedcba")
        .send(b"abcdefgh")
        .expect_response(b"abcdefgh")
        .run(&sim, &offer.host())
        .unwrap_err();
    assert_eq!(err.step(), 1);
    assert_eq!(
        err.kind(),
        &ErrorKind::WrongResponse {
            expected: b"abcdefgh".to_vec(),
            got: b"hgfedcba".to_vec()
        }
    );
    close(&c, c.ch());
}

#[test]
fn script_reports_a_packet_the_driver_never_completes() {
    // Without ECHO the raw driver holds every packet.
    let (sim, offer, c) = setup(6, 0);
    let err = Script::new()
        .send(b"held")
        .settle()
        .run(&sim, &offer.host())
        .unwrap_err();
    assert_eq!((err.step(), err.kind()), (0, &ErrorKind::NoCompletion));
    c.complete_held();
    close(&c, c.ch());
    assert!(sim.violations().is_empty());
}

#[test]
fn script_reports_a_channel_still_open() {
    let (sim, offer, c) = setup(7, ECHO);
    let err = Script::new()
        .send(b"x")
        .expect_closed()
        .run(&sim, &offer.host())
        .unwrap_err();
    assert_eq!((err.step(), err.kind()), (1, &ErrorKind::StillOpen));
    close(&c, c.ch());
}

#[test]
fn script_report_lists_the_rules_a_driver_broke() {
    // The driver holds the packet; the host rescinds: Disable can never finish.
    let (sim, offer, c) = setup(8, 0);
    let report = Script::new()
        .send_no_completion(b"held")
        .settle()
        .rescind()
        .run(&sim, &offer.host())
        .unwrap();
    assert!(report.violated(Rule::PacketOutstandingAtDisable));
    report.assert_rules(&[Rule::PacketOutstandingAtDisable]);
    let r = std::panic::catch_unwind(|| report.assert_clean());
    assert!(r.is_err(), "assert_clean must fail on a violation");
    c.complete_held();
    close(&c, c.ch());
}
