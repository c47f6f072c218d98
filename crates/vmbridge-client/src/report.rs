//! What the benchmark tools print: latency percentiles from a log-linear histogram
//! ([`Latencies`], within 3.1%) and a progress line. Shared by `vmbridge bench`
//! (`crates/vmbridge-cli/src/bench.rs`) and the main job (`examples/simulate/run.rs`).

use std::fmt;
use std::io::Write;
use std::time::Instant;

/// Buckets of [`Latencies`]: 64 exact values (0..=63), then 58 powers of two (2^6 ..
/// 2^63) of 32 linear sub-buckets each.
const BUCKETS: usize = 64 + 58 * 32;

/// Latencies in nanoseconds, in a log-linear histogram (HdrHistogram-style, 3.1%
/// resolution): constant memory and a few instructions per [`record`](Self::record),
/// however long the run.
///
/// Values below 64 ns are kept exactly; above, each power of two `[2^e, 2^(e+1))` is split
/// into 32 equal sub-buckets, so a bucket is at most 1/32 (3.1%) of its lower bound wide.
/// Count, minimum and maximum are exact. A [`percentile`](Self::percentile) reports the
/// midpoint of the bucket holding that rank, clamped to `[min, max]`: within 1/64 (1.6%)
/// of the exact nearest-rank value, and exact for values below 64, at `q = 0` (the
/// minimum) and at `q = 1` (the maximum).
#[derive(Clone)]
pub struct Latencies {
    /// Samples per bucket; allocated once, in [`new`](Self::new).
    counts: Box<[u64; BUCKETS]>,
    len: u64,
    min: u64,
    max: u64,
}

impl Latencies {
    /// An empty histogram (its one allocation: 15 KiB of buckets).
    #[must_use]
    pub fn new() -> Self {
        let counts: Box<[u64]> = vec![0; BUCKETS].into_boxed_slice();
        Self {
            counts: counts.try_into().expect("BUCKETS counters"),
            len: 0,
            min: u64::MAX,
            max: 0,
        }
    }

    /// The bucket of `ns`: `ns` itself below 64; above, 32 per power of two.
    #[inline]
    fn bucket(ns: u64) -> usize {
        // s: how many low bits the bucket drops (0 below 64); ns >> s is in 32..64 then.
        let s = (63 - (ns | 1).leading_zeros()).saturating_sub(5);
        ((s << 5) as usize) + (ns >> s) as usize
    }

    /// The lowest value of bucket `i` and its width.
    fn bounds(i: usize) -> (u64, u64) {
        if i < 64 {
            return (i as u64, 1);
        }
        let s = (i >> 5) - 1;
        (((i & 31) as u64 + 32) << s, 1 << s)
    }

    /// Adds one latency of `ns` nanoseconds (no allocation).
    #[inline]
    pub fn record(&mut self, ns: u64) {
        self.counts[Self::bucket(ns)] += 1;
        self.len += 1;
        self.min = self.min.min(ns);
        self.max = self.max.max(ns);
    }

    /// Adds every sample of `other`, as if each had been recorded here.
    pub fn merge(&mut self, other: &Self) {
        for (c, o) in self.counts.iter_mut().zip(other.counts.iter()) {
            *c += o;
        }
        self.len += other.len;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }

    /// Samples recorded.
    #[must_use]
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing was recorded.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The smallest sample, exact; `None` when empty.
    #[must_use]
    pub fn min(&self) -> Option<u64> {
        (self.len > 0).then_some(self.min)
    }

    /// The largest sample, exact; `None` when empty.
    #[must_use]
    pub fn max(&self) -> Option<u64> {
        (self.len > 0).then_some(self.max)
    }

    /// The `q`-quantile (`q` in `0.0..=1.0`, clamped) by nearest rank, rank
    /// `round((len - 1) * q)` of the samples in ascending order: the midpoint of that
    /// rank's bucket clamped to `[min, max]` (see [`Latencies`] for the error bound);
    /// `None` when empty.
    #[must_use]
    pub fn percentile(&self, q: f64) -> Option<u64> {
        if self.len == 0 {
            return None;
        }
        let rank = ((self.len - 1) as f64 * q.clamp(0.0, 1.0)).round() as u64;
        if rank == 0 {
            return Some(self.min);
        }
        if rank >= self.len - 1 {
            return Some(self.max);
        }
        let mut seen = 0u64;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen > rank {
                let (lo, width) = Self::bounds(i);
                return Some((lo + width / 2).clamp(self.min, self.max));
            }
        }
        Some(self.max)
    }

    /// `p50 .. p90 .. p99 .. max ..` in microseconds, one decimal; `n/a` when empty.
    #[must_use]
    pub fn summary_us(&self) -> String {
        let at = |q: f64| self.percentile(q).map(|ns| ns as f64 / 1000.0);
        match (at(0.5), at(0.9), at(0.99), at(1.0)) {
            (Some(p50), Some(p90), Some(p99), Some(max)) => {
                format!("p50 {p50:.1}  p90 {p90:.1}  p99 {p99:.1}  max {max:.1}")
            }
            _ => "n/a".into(),
        }
    }
}

impl Default for Latencies {
    fn default() -> Self {
        Self::new()
    }
}

/// The summary, not the 1,920 buckets.
impl fmt::Debug for Latencies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Latencies")
            .field("len", &self.len)
            .field("min", &self.min())
            .field("max", &self.max())
            .finish_non_exhaustive()
    }
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
