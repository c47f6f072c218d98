//! Batched against single reads at queue depth 64, through the client library and the
//! driver's real core in the deterministic simulator.
//!
//! Reference: issue 13 item 5 (the goal: at least 16 packets per request under load and
//! at least 4x the single-read throughput at 64 B).
//!
//! ```text
//! cargo run --release -p vmbridge-sim --example batch_bench -- [SIZE] [ROUNDS]
//! valgrind --tool=callgrind --toggle-collect='*drain_single*' target/release/examples/batch_bench 64 200 single
//! valgrind --tool=callgrind --toggle-collect='*drain_batch*'  target/release/examples/batch_bench 64 200 batch
//! valgrind --tool=callgrind --toggle-collect='*drain_batch_vec*' target/release/examples/batch_bench 64 200 batch_vec
//! ```
//!
//! Each round the simulated host fills the ring, the simulator delivers packets until
//! the driver's queue holds `QueueDepth` (64) of them (the transaction quota), and the
//! reader drains those 64: one `IOCTL_VMBRIDGE_READ` per packet, or
//! `IOCTL_VMBRIDGE_READ_BATCH` requests (`batch`: `Device::read_batch_with`, packets lent in
//! place; `batch_vec`: `Device::read_batch`, a `Vec` per packet). Only the drain is in `drain_single` /
//! `drain_batch`, so callgrind's toggle counts the reader's side (client, request,
//! driver core, packet completion) and nothing of the host. Without a mode the example
//! times the three drains in one process, round by round in rotating order (each with its
//! own simulated guest), and prints the median over the rounds of the per-round throughput
//! ratio to single reads, with its quartiles: wall time on a shared machine is noisy, and
//! load that comes and goes then hits every mode alike.

use std::time::{Duration, Instant};

use kmcl_sim::{SendError, SimConfig};
use vmbridge::bridge::Config;
use vmbridge::trace::Tracer;
use vmbridge_abi::{VMBRIDGE_BATCH_HEADER, read_batch_entry_len};
use vmbridge_client::{BatchOptions, Device};
use vmbridge_sim::SimGuest;

const DEPTH: u32 = 64;

/// Fills the ring and lets the simulator deliver until the driver's queue is full, or
/// holds all the ring can carry (held packets keep their ring space: 1 KiB packets in
/// the simulator's default ring stop short of 64).
fn fill(g: &SimGuest, d: &Device, size: usize) -> u32 {
    let p = vec![0xa5u8; size];
    let mut last = u32::MAX;
    loop {
        loop {
            match g.host().send_inband(&p, false) {
                Ok(_) => {}
                Err(SendError::Full) => break,
                Err(e) => panic!("host send: {e:?}"),
            }
        }
        g.sim().run_until_idle();
        let queued = d.stats().expect("stats").QueueDepth;
        if queued == DEPTH || queued == last {
            return queued;
        }
        last = queued;
    }
}

#[inline(never)]
fn drain_single(d: &Device, n: u32) -> (u64, u64) {
    let mut bytes = 0u64;
    for _ in 0..n {
        let p = d.read(Some(Duration::ZERO)).expect("a queued packet");
        bytes += u64::from(p.header.PayloadLength);
    }
    (u64::from(n), bytes)
}

/// Batched reads with `Device::read_batch_with`: each packet lent in place (no copy out,
/// no allocation).
#[inline(never)]
fn drain_batch(d: &Device, n: u32, opts: BatchOptions) -> (u64, u64) {
    let (mut got, mut bytes, mut requests) = (0u64, 0u64, 0u64);
    while got < u64::from(n) {
        let k = d
            .read_batch_with(opts, Some(Duration::ZERO), |_, payload| {
                bytes += payload.len() as u64;
            })
            .expect("a batch");
        requests += 1;
        got += k as u64;
    }
    (requests, bytes)
}

/// Batched reads with `Device::read_batch`: each packet copied into its own `Vec`.
#[inline(never)]
fn drain_batch_vec(d: &Device, n: u32, opts: BatchOptions) -> (u64, u64) {
    let (mut got, mut bytes, mut requests) = (0u64, 0u64, 0u64);
    while got < u64::from(n) {
        let batch = d.read_batch(opts, Some(Duration::ZERO)).expect("a batch");
        requests += 1;
        got += batch.len() as u64;
        bytes += batch
            .iter()
            .map(|p| u64::from(p.header.PayloadLength))
            .sum::<u64>();
    }
    (requests, bytes)
}

/// Which drain a run measures.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Single,
    Batch,
    BatchVec,
}

struct Result {
    filled: u32,
    packets: u64,
    requests: u64,
    elapsed: Duration,
}

/// One mode's guest, device and options, drained round by round.
struct Bench {
    mode: Mode,
    size: usize,
    g: SimGuest,
    opts: BatchOptions,
}

impl Bench {
    fn new(size: usize, mode: Mode) -> Self {
        let config = Config {
            queue_depth: DEPTH,
            max_packet_size: (size.next_multiple_of(8) as u32).max(4096),
            ..Config::DEFAULT
        };
        let g = SimGuest::with_sim(SimConfig::deterministic(1), config, Tracer::etw());
        let opts = BatchOptions {
            hold: false,
            wait: false,
            max_packets: 0,
            buffer_len: size_of::<VMBRIDGE_BATCH_HEADER>()
                + DEPTH as usize * read_batch_entry_len(size),
        };
        Self {
            mode,
            size,
            g,
            opts,
        }
    }

    /// Fills the queue, then drains it (timed): (packets, requests, drain time).
    fn round(&self, d: &Device) -> (u32, u64, Duration) {
        let queued = fill(&self.g, d, self.size);
        let t = Instant::now();
        let (req, _) = match self.mode {
            Mode::Single => drain_single(d, queued),
            Mode::Batch => drain_batch(d, queued, self.opts),
            Mode::BatchVec => drain_batch_vec(d, queued, self.opts),
        };
        (queued, req, t.elapsed())
    }
}

/// `rounds` rounds of one mode (what callgrind measures: one mode per process).
fn run(size: usize, rounds: u32, mode: Mode) -> Result {
    let b = Bench::new(size, mode);
    let d = b.g.open();
    let mut r = Result {
        filled: 0,
        packets: 0,
        requests: 0,
        elapsed: Duration::ZERO,
    };
    for _ in 0..rounds {
        let (queued, req, t) = b.round(&d);
        r.filled = queued;
        r.packets += u64::from(queued);
        r.requests += req;
        r.elapsed += t;
    }
    assert!(b.g.sim().violations().is_empty(), "verifier clean");
    r
}

/// The three modes in one process, round by round in rotating order (load that comes and
/// goes hits all of them alike), each with its own guest: the totals per mode and, per
/// round, the throughput ratio of each batch mode to single reads.
fn run_interleaved(size: usize, rounds: u32) -> (Vec<Result>, Vec<[f64; 2]>) {
    let modes = [Mode::Single, Mode::Batch, Mode::BatchVec];
    let benches: Vec<Bench> = modes.iter().map(|m| Bench::new(size, *m)).collect();
    let devices: Vec<Device> = benches.iter().map(|b| b.g.open()).collect();
    let mut totals: Vec<Result> = modes
        .iter()
        .map(|_| Result {
            filled: 0,
            packets: 0,
            requests: 0,
            elapsed: Duration::ZERO,
        })
        .collect();
    let mut ratios = Vec::new();
    for round in 0..rounds as usize {
        let mut rate = [0f64; 3];
        for k in 0..3 {
            let i = (round + k) % 3;
            let (queued, req, t) = benches[i].round(&devices[i]);
            let r = &mut totals[i];
            r.filled = queued;
            r.packets += u64::from(queued);
            r.requests += req;
            r.elapsed += t;
            rate[i] = f64::from(queued) / t.as_secs_f64().max(1e-9);
        }
        ratios.push([rate[1] / rate[0], rate[2] / rate[0]]);
    }
    for b in &benches {
        assert!(b.g.sim().violations().is_empty(), "verifier clean");
    }
    (totals, ratios)
}

/// Median and quartiles of `v`.
fn quartiles(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.25), at(0.75))
}

fn print(name: &str, size: usize, r: &Result) {
    println!(
        "{name:>9} reads, {size} B, queue depth {DEPTH} (filled to {}): {} packets, {} requests ({:.1} packets/request), drain {:.3} s, {:.0} packets/s",
        r.filled,
        r.packets,
        r.requests,
        r.packets as f64 / r.requests as f64,
        r.elapsed.as_secs_f64(),
        r.packets as f64 / r.elapsed.as_secs_f64().max(1e-9)
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let size: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(64);
    let rounds: u32 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(500);
    let names = [
        ("single", Mode::Single),
        ("batch", Mode::Batch),
        ("batch_vec", Mode::BatchVec),
    ];
    if let Some(only) = args.get(2) {
        let Some((name, mode)) = names.iter().find(|(n, _)| n == only) else {
            eprintln!("batch_bench: the mode is single, batch or batch_vec");
            std::process::exit(2);
        };
        print(name, size, &run(size, rounds, *mode));
        return;
    }
    let (totals, ratios) = run_interleaved(size, rounds);
    for ((name, _), r) in names.iter().zip(&totals) {
        print(name, size, r);
    }
    let (m, lo, hi) = quartiles(ratios.iter().map(|r| r[0]).collect());
    let (mv, lov, hiv) = quartiles(ratios.iter().map(|r| r[1]).collect());
    println!(
        "batch/single throughput, median of {rounds} interleaved rounds (quartiles): \
         {m:.2}x ({lo:.2}-{hi:.2}) read_batch_with, {mv:.2}x ({lov:.2}-{hiv:.2}) read_batch"
    );
}
