//! What the benchmark tools print: latency percentiles and a progress line. Shared by
//! `vmbridge bench` (`crates/vmbridge-cli/src/bench.rs`) and the main job
//! (`examples/simulate/run.rs`).

use std::io::Write;
use std::time::Instant;

/// `p50 .. p90 .. p99 .. max ..` of latencies in nanoseconds, printed in microseconds
/// (nearest-rank on the sorted values); `n/a` for none. Sorts `v`.
#[must_use]
pub fn percentiles_us(v: &mut [u64]) -> String {
    if v.is_empty() {
        return "n/a".into();
    }
    v.sort_unstable();
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize] as f64 / 1000.0;
    format!(
        "p50 {:.1}  p90 {:.1}  p99 {:.1}  max {:.1}",
        at(0.5),
        at(0.9),
        at(0.99),
        at(1.0)
    )
}

/// A progress line on stderr every tenth of `total` packets:
/// `  40%  400/1000 packets  1.2 s  333 packets/s`.
#[derive(Debug)]
pub struct Progress {
    total: u64,
    next: u64,
    start: Instant,
    quiet: bool,
    in_place: bool,
}

impl Progress {
    /// Progress towards `total` packets; silent when `total` is below `min_total` (short
    /// runs). `in_place`: rewrite one line (`\r`, for a terminal) instead of one line per
    /// step.
    #[must_use]
    pub fn new(total: u64, min_total: u64, in_place: bool) -> Self {
        Self {
            total,
            next: total / 10,
            start: Instant::now(),
            quiet: total < min_total,
            in_place,
        }
    }

    /// `done` packets so far: prints when a tenth more is done.
    pub fn tick(&mut self, done: u64) {
        if self.quiet || done < self.next || self.total == 0 {
            return;
        }
        let s = self.start.elapsed().as_secs_f64();
        let (lead, tail) = if self.in_place {
            ("\r", "   ")
        } else {
            ("", "\n")
        };
        let mut e = std::io::stderr().lock();
        let _ = write!(
            e,
            "{lead}  {:>3}%  {done}/{} packets  {s:.1} s  {:.0} packets/s{tail}",
            done * 100 / self.total,
            self.total,
            done as f64 / s.max(1e-9)
        );
        if self.in_place && done >= self.total {
            let _ = writeln!(e);
        }
        while self.next <= done {
            self.next += (self.total / 10).max(1);
        }
    }
}
