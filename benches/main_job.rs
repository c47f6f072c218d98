//! `cargo bench --bench main_job`: the main job (`examples/simulate`, traffic scenario,
//! defaults) timed in packets/s, with its instructions per packet from callgrind beside it.
//!
//! Reference: `docs/simulator.md` ("Performance"); `scripts/bench-instructions.sh` (the
//! gate, the same figure as its `main_job` line: it runs the example binary, this runs the
//! same code, `examples/simulate/run.rs`, compiled into the bench).
//!
//! ```text
//! cargo bench --bench main_job                      timed runs, then the callgrind count
//! target/release/deps/main_job-* --count N --size S one run of N packets each way (what
//!                                                   callgrind measures; the count of
//!                                                   instructions per packet is per 2N)
//! ```
//!
//! The instruction count is `(I(10000) - I(2000)) / (2 * 8000)` over two runs of this
//! binary under `valgrind --tool=callgrind` (set-up and tear-down cancel out), by the
//! helper the kmcl-sim benches use (`crates/kmcl-sim/benches/common/callgrind.rs`); "-"
//! without valgrind.

#[cfg(not(windows))]
use vmbridge_sim::rig as common;

// The main job's own code, as the example builds it (its entry points and the IC scenario
// are not used here).
#[cfg(not(windows))]
#[allow(dead_code)]
#[path = "../examples/simulate/args.rs"]
mod args;
#[cfg(not(windows))]
#[allow(dead_code)]
#[path = "../examples/simulate/run.rs"]
mod run;
#[cfg(not(windows))]
#[allow(dead_code)]
#[path = "../examples/simulate/verdict.rs"]
mod verdict;

#[cfg(not(windows))]
#[path = "../crates/kmcl-sim/benches/common/callgrind.rs"]
mod callgrind;

/// Packets each way of a timed run.
#[cfg(not(windows))]
const TIMED_PACKETS: u32 = 20_000;
/// Timed runs (the median is reported).
#[cfg(not(windows))]
const TIMED_RUNS: usize = 5;
/// Run lengths of the instruction count (as `scripts/bench-instructions.sh`).
#[cfg(not(windows))]
const SHORT: u64 = 2_000;
#[cfg(not(windows))]
const LONG: u64 = 10_000;

/// The main job's arguments: the defaults, changed by `argv`.
#[cfg(not(windows))]
fn job(argv: Vec<String>) -> args::TrafficArgs {
    match args::parse(argv) {
        Ok(args::Command::Traffic(a)) => a,
        other => panic!("main job arguments: {other:?}"),
    }
}

/// Runs the main job; panics if it fails (a benchmark of a broken run means nothing).
#[cfg(not(windows))]
fn run_job(a: &args::TrafficArgs) {
    let failures = run::run(a, |_| {});
    assert!(failures.is_empty(), "the main job failed: {failures:?}");
}

#[cfg(not(windows))]
fn main() {
    let default_size = job(Vec::new()).size;
    if let Some((n, size)) = callgrind::count_args() {
        let argv = ["--packets", &n.to_string(), "--size", &size.to_string()].map(String::from);
        run_job(&job(argv.into()));
        return;
    }
    let a = job(vec!["--packets".into(), TIMED_PACKETS.to_string()]);
    let mut rates = Vec::with_capacity(TIMED_RUNS);
    for _ in 0..TIMED_RUNS {
        let t = std::time::Instant::now();
        run_job(&a);
        rates.push(f64::from(2 * TIMED_PACKETS) / t.elapsed().as_secs_f64().max(1e-9));
    }
    rates.sort_by(f64::total_cmp);
    // Each unit of `--count` moves two packets (one each way).
    let per_packet = callgrind::per_packet(default_size, SHORT, LONG).map(|v| v / 2);
    println!();
    println!(
        "main job ({} B, {} packets each way, median of {TIMED_RUNS} runs, run summaries above)",
        a.size, TIMED_PACKETS
    );
    println!(
        "{:<28} {:>14} {:>22}",
        "", "packets/s", "instructions/packet"
    );
    println!(
        "{:<28} {:>14.0} {:>22}",
        "main_job",
        rates[rates.len() / 2],
        callgrind::cell(per_packet)
    );
}

#[cfg(windows)]
fn main() {
    eprintln!("main_job: kmcl-sim runs on non-Windows hosts");
}
