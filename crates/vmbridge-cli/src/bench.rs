//! `vmbridge bench`: packets/s and latency percentiles of reads (single or batched) or of
//! waiting sends, with a progress line on stderr. The percentiles come from a log-linear
//! histogram (`report::Latencies`): within 3.1% of the exact value, max exact.
//!
//! C header: none (through `vmbridge-client`).
//!
//! With `--sim` the simulated host floods `--packets` packets of `--size` bytes into a
//! driver of queue depth `--depth` (reads), or echoes every waiting send (round trips).
//! `--compare` runs single reads and batched reads back to back in one process and prints
//! the ratio: the batched-read figure of issue 13 (a ratio, not a timed assertion).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use clap::Args;
use vmbridge_abi::{VMBRIDGE_BATCH_HEADER, read_batch_entry_len};
use vmbridge_client::report::{Latencies, Progress};
use vmbridge_client::{BatchOptions, Device};

use crate::{Failure, Outcome};

/// `vmbridge bench` arguments.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Packets to move.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    packets: u64,
    /// Payload bytes per packet.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=65536))]
    size: u32,
    /// Read with IOCTL_VMBRIDGE_READ_BATCH instead of one IOCTL_VMBRIDGE_READ per packet.
    #[arg(long, conflicts_with_all = ["roundtrip", "compare"])]
    batch: bool,
    /// Single reads kept outstanding at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    outstanding: u32,
    /// Driver queue depth (transaction quota) of the simulated driver.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=4096))]
    depth: u32,
    /// Measure waiting sends (send, the other side's response) instead of reads.
    #[arg(long, conflicts_with = "compare")]
    roundtrip: bool,
    /// Run single and batched reads back to back (with --sim) and print the ratio.
    #[arg(long)]
    compare: bool,
}

/// What one run measured.
#[derive(Debug, Default)]
struct Run {
    packets: u64,
    bytes: u64,
    requests: u64,
    elapsed: Duration,
    /// Request latencies.
    latency: Latencies,
}

impl Run {
    fn rate(&self) -> f64 {
        self.packets as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn print(&self, what: &str) {
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        println!(
            "{what}: {} packets in {:.3} s: {:.0} packets/s, {:.1} MB/s; {} requests, {:.1} packets/request",
            self.packets,
            secs,
            self.rate(),
            self.bytes as f64 / secs / 1e6,
            self.requests,
            self.packets as f64 / self.requests.max(1) as f64
        );
        println!("{what}: request latency (us) {}", self.latency.summary_us());
    }
}

const WAIT: Option<Duration> = Some(Duration::from_secs(30));

fn single_reads(d: &Device, n: u64, outstanding: u32) -> Result<Run, Failure> {
    let mut r = Run::default();
    let mut p = Progress::new(n, 1000, true);
    let start = Instant::now();
    let mut q = VecDeque::new();
    let mut issued = 0u64;
    while r.packets < n {
        while q.len() < outstanding as usize && issued < n {
            q.push_back((d.start_read(false)?, Instant::now()));
            issued += 1;
        }
        let Some((mut pending, at)) = q.pop_front() else {
            break;
        };
        let pkt = pending
            .wait(WAIT)?
            .ok_or_else(|| Failure("a read did not complete in 30 s".into(), 1))?;
        r.latency.record(at.elapsed().as_nanos() as u64);
        r.requests += 1;
        r.packets += 1;
        r.bytes += u64::from(pkt.header.PayloadLength);
        p.tick(r.packets);
    }
    r.elapsed = start.elapsed();
    Ok(r)
}

fn batched_reads(d: &Device, n: u64, size: u32, depth: u32) -> Result<Run, Failure> {
    let mut r = Run::default();
    let mut p = Progress::new(n, 1000, true);
    let opts = BatchOptions {
        hold: false,
        wait: true,
        max_packets: 0,
        buffer_len: size_of::<VMBRIDGE_BATCH_HEADER>()
            + depth as usize * read_batch_entry_len(size as usize),
    };
    let start = Instant::now();
    while r.packets < n {
        let at = Instant::now();
        let batch = d.read_batch(opts, WAIT)?;
        r.latency.record(at.elapsed().as_nanos() as u64);
        r.requests += 1;
        r.packets += batch.len() as u64;
        r.bytes += batch
            .iter()
            .map(|b| u64::from(b.header.PayloadLength))
            .sum::<u64>();
        p.tick(r.packets);
    }
    r.elapsed = start.elapsed();
    Ok(r)
}

fn round_trips(d: &Device, n: u64, size: u32, outstanding: u32) -> Result<Run, Failure> {
    let mut r = Run::default();
    let mut p = Progress::new(n, 1000, true);
    let payload = vec![0x5a_u8; size as usize];
    let start = Instant::now();
    let mut q = VecDeque::new();
    let mut issued = 0u64;
    while r.packets < n {
        while q.len() < outstanding as usize && issued < n {
            q.push_back((d.start_send_wait(&payload)?, Instant::now()));
            issued += 1;
        }
        let Some((mut pending, at)) = q.pop_front() else {
            break;
        };
        let c = pending
            .wait(WAIT)?
            .ok_or_else(|| Failure("a send was not completed in 30 s".into(), 1))?;
        if !c.status.is_success() {
            return Err(Failure(format!("a send completed with {}", c.status), 1));
        }
        r.latency.record(at.elapsed().as_nanos() as u64);
        r.requests += 1;
        r.packets += 1;
        r.bytes += u64::from(size);
        p.tick(r.packets);
    }
    r.elapsed = start.elapsed();
    Ok(r)
}

/// The kind of run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Single,
    Batched,
    RoundTrip,
}

fn one(sim: bool, device: Option<&str>, a: &BenchArgs, kind: Kind) -> Result<Run, Failure> {
    let target = source::open(sim, device, a, kind == Kind::RoundTrip)?;
    let d = target.device();
    match kind {
        Kind::Single => single_reads(d, a.packets, a.outstanding),
        Kind::Batched => batched_reads(d, a.packets, a.size, a.depth),
        Kind::RoundTrip => round_trips(d, a.packets, a.size, a.outstanding),
    }
}

/// Runs the benchmark `a`.
pub fn run(sim: bool, device: Option<&str>, a: &BenchArgs) -> Outcome {
    println!(
        "vmbridge bench: {} packets of {} bytes, {}queue depth {}",
        a.packets,
        a.size,
        if sim { "simulated driver, " } else { "" },
        a.depth
    );
    if a.compare {
        let single = one(sim, device, a, Kind::Single)?;
        single.print("single reads ");
        let batched = one(sim, device, a, Kind::Batched)?;
        batched.print("batched reads");
        println!(
            "batched/single: {:.2}x packets/s, {:.1} packets per batched request",
            batched.rate() / single.rate().max(1e-9),
            batched.packets as f64 / batched.requests.max(1) as f64
        );
        return Ok(());
    }
    let kind = if a.roundtrip {
        Kind::RoundTrip
    } else if a.batch {
        Kind::Batched
    } else {
        Kind::Single
    };
    let r = one(sim, device, a, kind)?;
    r.print(match kind {
        Kind::Single => "single reads",
        Kind::Batched => "batched reads",
        Kind::RoundTrip => "round trips",
    });
    Ok(())
}

#[cfg(not(windows))]
mod source {
    use vmbridge::bridge::Config;
    use vmbridge_client::Device;
    use vmbridge_sim::{HostTraffic, SimGuest, TrafficPlan};

    use super::BenchArgs;
    use crate::Failure;

    /// A device with its simulated host flooding (or echoing).
    pub struct Target {
        device: Device<'static>,
        _traffic: Option<HostTraffic>,
        _guest: Option<SimGuest>,
    }

    impl Target {
        pub fn device(&self) -> &Device<'static> {
            &self.device
        }
    }

    pub fn open(
        sim: bool,
        _device: Option<&str>,
        a: &BenchArgs,
        roundtrip: bool,
    ) -> Result<Target, Failure> {
        if !sim {
            return Err(Failure(
                "no vmbridge device: the driver runs on Windows; --sim runs against the simulated driver".into(),
                1,
            ));
        }
        let max_packet_size = a.size.next_multiple_of(8).max(4096);
        // A ring that carries one packet of --size: the default one (16 pages) carries
        // 61,400 bytes, and the driver lowers MaxPacketSize to that (Config::fit_ring),
        // so larger packets never arrived and larger sends were refused.
        let ring_buffer_pages = (Config::DEFAULT.ring_buffer_pages..512)
            .find(|&pages| Config::ring_payload_limit(pages) >= max_packet_size)
            .unwrap_or(512);
        let config = Config {
            queue_depth: a.depth,
            max_packet_size,
            ring_buffer_pages,
            ..Config::DEFAULT
        };
        let g = SimGuest::new(config);
        let plan = if roundtrip {
            TrafficPlan::Answer
        } else {
            TrafficPlan::Flood {
                count: a.packets,
                size: a.size as usize,
                ask: false,
            }
        };
        let device = g.open();
        let traffic = HostTraffic::start(g.host(), plan);
        Ok(Target {
            device,
            _traffic: Some(traffic),
            _guest: Some(g),
        })
    }
}

#[cfg(windows)]
mod source {
    use vmbridge_client::Device;

    use super::BenchArgs;
    use crate::Failure;

    /// A real device (the other side must send or answer).
    pub struct Target {
        device: Device<'static>,
    }

    impl Target {
        pub fn device(&self) -> &Device<'static> {
            &self.device
        }
    }

    pub fn open(
        sim: bool,
        device: Option<&str>,
        _a: &BenchArgs,
        _roundtrip: bool,
    ) -> Result<Target, Failure> {
        if sim {
            return Err(Failure("--sim is not built on Windows".into(), 2));
        }
        let path = match device {
            Some(p) => std::ffi::OsString::from(p),
            None => vmbridge_client::windows::list()?
                .into_iter()
                .next()
                .ok_or_else(|| Failure("no vmbridge device present".into(), 1))?,
        };
        Ok(Target {
            device: vmbridge_client::windows::open(&path)?,
        })
    }
}
