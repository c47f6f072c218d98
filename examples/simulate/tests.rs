//! The main job (`examples/simulate`): its command line, and that its verdict tells the
//! truth (issue 11, items 3 and 4). A test module of the example itself (`test = true` in
//! `Cargo.toml`, so `cargo test` runs it): the tests call the same parser and the same run
//! as `cargo run --example simulate`.
//!
//! Runs are bounded by progress (the job's own stall detection), never timed.

use crate::{args, run};
use std::sync::{Mutex, PoisonError};

use args::{Command, IcArgs, MIN_SIZE, ScenarioName, TrafficArgs, max_size, parse};
use kmcl_sim::ring::{OutgoingPacket, OutgoingRing, RingPair, WriteError};

/// The job mirrors its lifecycle events in a process-wide sink: one run at a time.
static ONE_RUN: Mutex<()> = Mutex::new(());

fn parse_line(line: &str) -> Result<Command, String> {
    parse(line.split_whitespace().map(str::to_owned))
}

fn traffic(line: &str) -> TrafficArgs {
    match parse_line(line) {
        Ok(Command::Traffic(a)) => a,
        other => panic!("{line:?}: {other:?}"),
    }
}

#[test]
fn defaults_are_the_documented_ones() {
    assert_eq!(traffic(""), TrafficArgs::default());
    let d = TrafficArgs::default();
    assert_eq!(
        (d.packets, d.size, d.seed, d.queue_depth),
        (100_000, 256, 1, 64)
    );
    assert!(!d.threaded);
    assert_eq!(
        parse_line("--scenario ic"),
        Ok(Command::Ic(IcArgs {
            seed: 1,
            heartbeats: 10_000
        }))
    );
    assert_eq!(
        parse_line("--scenario IC --help"),
        Ok(Command::Help(ScenarioName::Ic))
    );
    assert_eq!(parse_line("-h"), Ok(Command::Help(ScenarioName::Traffic)));
    let a = traffic("--mode passive --packets 7 --size 4096 --seed 9 --threaded --queue-depth 3");
    assert_eq!((a.packets, a.size, a.seed, a.queue_depth), (7, 4096, 9, 3));
    assert!(a.threaded);
}

#[test]
fn bad_values_are_named() {
    let err = |line: &str| parse_line(line).expect_err(line);
    assert_eq!(
        err("--scenario bogus"),
        "--scenario \"bogus\": unknown scenario (traffic or ic)"
    );
    assert_eq!(err("--scenario"), "--scenario needs a value: traffic or ic");
    assert_eq!(err("--size -5"), "--size \"-5\": must not be negative");
    assert_eq!(
        err("--packets ten"),
        "--packets \"ten\": not a whole number"
    );
    assert_eq!(err("--seed 1.5"), "--seed \"1.5\": not a whole number");
    assert_eq!(
        err("--scenario ic --heartbeats -1"),
        "--heartbeats \"-1\": must not be negative"
    );
    assert_eq!(
        err("--mode fast"),
        "--mode \"fast\": unknown mode (dispatch or passive)"
    );
    assert_eq!(err("--packets"), "--packets needs a value");
    assert_eq!(err("--packets 0"), "--packets 0: must be at least 1");
    assert_eq!(
        err("--queue-depth 0"),
        "--queue-depth 0: must be in 1..=4096"
    );
    assert_eq!(err("--heartbeats 5"), "unknown argument \"--heartbeats\"");
    assert_eq!(
        err("--scenario ic --threaded"),
        "unknown argument \"--threaded\" for --scenario ic"
    );
    assert_eq!(
        err("--scenario ic --heartbeats 0"),
        "--heartbeats 0: must be in 1..=1000000"
    );
}

/// `--size` stops where one in-band packet stops fitting the driver's rings (it used to
/// accept up to 65,536 and fail every size from 61,409 with `TooLarge` at run time).
#[test]
fn size_limit_is_the_largest_packet_the_ring_takes() {
    let max = args::max_traffic_size();
    assert_eq!(
        max, 61_400,
        "16-page rings: 15 data pages, less the driver's pipe-header room"
    );
    assert_eq!(max_size(16), 61_408, "the ring writer's own limit");
    assert_eq!(traffic(&format!("--size {max}")).size, max);
    assert_eq!(traffic(&format!("--size {MIN_SIZE}")).size, MIN_SIZE);
    for bad in [max + 1, max + 8, 65_536, MIN_SIZE - 1] {
        let e = parse_line(&format!("--size {bad}")).expect_err("rejected");
        assert!(e.contains(&format!("16..={max}")), "{e}");
    }
    // The derivation holds for the simulator's real ring writer, at several ring sizes.
    for pages in [2u32, 3, 16, 33] {
        let max = max_size(pages);
        let pair = RingPair::new(pages as usize - 1, pages as usize - 1);
        let mut tx = OutgoingRing::new(pair.inbound());
        let too_big = vec![0u8; max + 1];
        assert!(matches!(
            tx.write(&OutgoingPacket::in_band(1, false, &too_big)),
            Err(WriteError::TooLarge { .. })
        ));
        assert!(
            tx.write(&OutgoingPacket::in_band(1, false, &vec![0u8; max]))
                .is_ok()
        );
    }
}

fn run_job(a: &TrafficArgs, setup: impl FnOnce(&run::Rig)) -> Vec<String> {
    let _one = ONE_RUN.lock().unwrap_or_else(PoisonError::into_inner);
    run::run(a, setup)
}

/// The sizes at which the threaded job stalled for 30 s (and still said OK), over many
/// deterministic seeds, and threaded runs: every run passes; a stall would fail it through
/// the job's own progress bound.
#[test]
fn job_passes_at_the_sizes_that_stalled() {
    for size in [4096, 8192, 32_768, 49_152] {
        for seed in 1..=20 {
            // Large packets fill the ring in one or two: a few suffice to cycle it full.
            let a = TrafficArgs {
                packets: if size > 8192 { 6 } else { 12 },
                size,
                seed,
                ..TrafficArgs::default()
            };
            let failures = run_job(&a, |_| {});
            assert!(failures.is_empty(), "size {size} seed {seed}: {failures:?}");
        }
    }
    for size in [4096, 8192, 32_768, 49_152] {
        for _ in 0..2 {
            let a = TrafficArgs {
                packets: 60,
                size,
                threaded: true,
                ..TrafficArgs::default()
            };
            let failures = run_job(&a, |_| {});
            assert!(failures.is_empty(), "threaded size {size}: {failures:?}");
        }
    }
}

/// The largest `--size` the job accepts also passes, both ways, in both modes (the limit
/// was once the ring writer's, 8 bytes above what the driver lets user mode send).
#[test]
fn job_passes_at_the_largest_accepted_size() {
    for threaded in [false, true] {
        let a = TrafficArgs {
            packets: 4,
            size: args::max_traffic_size(),
            threaded,
            ..TrafficArgs::default()
        };
        let failures = run_job(&a, |_| {});
        assert!(failures.is_empty(), "threaded {threaded}: {failures:?}");
    }
}

/// A run that stops making progress fails with a clear message instead of saying OK.
#[test]
fn a_stall_fails_the_run() {
    for threaded in [false, true] {
        let a = TrafficArgs {
            packets: 200,
            threaded,
            stall_seconds: 1,
            ..TrafficArgs::default()
        };
        // The host stops reading: the driver's sends fill the ring and nothing moves.
        let failures = run_job(&a, |rig| rig.host.pause_reading(true));
        assert!(
            failures
                .iter()
                .any(|f| f.starts_with("stalled: no progress")),
            "threaded {threaded}: {failures:?}"
        );
    }
}

/// A failed host send stops the run at once (it used to wait for the missing packets for
/// up to ten minutes in threaded mode).
#[test]
fn a_failed_send_stops_the_run() {
    for threaded in [false, true] {
        let a = TrafficArgs {
            packets: 50,
            size: max_size(16) + 8,
            threaded,
            stall_seconds: 3600,
            ..TrafficArgs::default()
        };
        let failures = run_job(&a, |_| {});
        assert!(
            failures
                .iter()
                .any(|f| f.starts_with("host send 0: packet larger than the ring")),
            "threaded {threaded}: {failures:?}"
        );
    }
}
