//! The three malformed packets OpenVMM's reader accepts and ours rejects (issue 11, item
//! 5; the decisions and their grounds are in docs/simulator.md, "Where the reader is
//! stricter than OpenVMM's"): sent by the host as the recorded bytes, each fails the
//! channel with its reason, the driver sees nothing, nothing crashes.
//!
//! Data: `tests/data/openvmm/ring-malformed.jsonl` (the recorded bytes of each case).
#![expect(
    clippy::multiple_unsafe_ops_per_block,
    reason = "raw-C-style driver code: a sequence of KMCL calls under one SAFETY argument"
)]

mod common;

use common::*;
use kmcl_sim::{OfferConfig, Sim, SimConfig};

/// (case name in the recording, our reason as `error()` names it).
const CASES: [(&str, &str); 3] = [
    (
        "trailer not published (write_index = start + len8*8)",
        "length_beyond_available",
    ),
    (
        "GPA direct, range count 2 but header holds 1",
        "gpa_ranges_exceed_header",
    ),
    ("transfer pages, count 0", "zero_range_count"),
];

/// The published bytes of a recorded case (`bytes_hex` up to `write_index`).
fn recorded_bytes(case: &str) -> Vec<u8> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/data/openvmm/ring-malformed.jsonl"
    );
    let text = std::fs::read_to_string(path).expect("the recording");
    let line = text
        .lines()
        .find(|l| l.contains(&format!("\"case\":\"{case}\"")))
        .unwrap_or_else(|| panic!("case {case:?} recorded"));
    let field = |name: &str| {
        let at = line.find(&format!("\"{name}\":")).expect("field") + name.len() + 3;
        line[at..]
            .split([',', '}'])
            .next()
            .expect("value")
            .trim_matches('"')
    };
    let hex = field("bytes_hex");
    let published: usize = field("write_index").parse().expect("write_index");
    (0..published)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex"))
        .collect()
}

#[test]
fn packets_openvmm_accepts_and_we_reject_fail_the_channel_with_their_reason() {
    for (case, reason) in CASES {
        let sim = Sim::new(SimConfig::deterministic(3));
        let offer = sim.offer(OfferConfig::default());
        let host = offer.host();
        let c = Ctx::new(&sim, ECHO);
        let ch = open(&sim, &offer, &c).expect("opens");
        sim.run_until_idle();
        host.send_raw(&recorded_bytes(case)).expect("published");
        sim.run_until_idle();
        assert!(
            host.error().is_some_and(|e| e.contains(reason)),
            "{case}: {:?}",
            host.error()
        );
        assert!(!host.is_open(), "{case}: the channel is failed");
        assert!(c.received().is_empty(), "{case}: nothing delivered");
        close(&c, ch);
        sim.assert_clean();
    }
}
