//! The command line of `simulate`: both scenarios, parsed without touching the process, so
//! `examples/simulate/tests.rs` checks every message and limit.
//!
//! Exit status 2 for every error here; the messages name the flag and the bad value.

use vmbridge::bridge::{Config, ProcessingMode};

/// Which scenario, with its arguments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// `--help` (of the traffic scenario, or of the IC scenario with `--scenario ic`).
    Help(ScenarioName),
    /// The traffic scenario (the default).
    Traffic(TrafficArgs),
    /// `--scenario ic`.
    Ic(IcArgs),
}

/// The two scenarios.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScenarioName {
    /// Packets both ways through the user-mode ABI (`examples/simulate/run.rs`).
    Traffic,
    /// Integration components (`examples/simulate/ic.rs`).
    Ic,
}

/// Arguments of the traffic scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrafficArgs {
    /// Processing of incoming packets.
    pub mode: ProcessingMode,
    /// Packets in each direction.
    pub packets: u32,
    /// Payload bytes per packet.
    pub size: usize,
    /// Seed of the deterministic simulation.
    pub seed: u64,
    /// Real threads.
    pub threaded: bool,
    /// Driver queue depth / transaction quota.
    pub queue_depth: u32,
    /// Threaded mode: the run fails after this many seconds of wall time without
    /// progress (deterministic mode: after [`STALL_ROUNDS`] rounds of virtual time).
    pub stall_seconds: u32,
}

impl Default for TrafficArgs {
    fn default() -> Self {
        Self {
            mode: ProcessingMode::Dispatch,
            packets: 100_000,
            size: 256,
            seed: 1,
            threaded: false,
            queue_depth: 64,
            stall_seconds: 10,
        }
    }
}

/// Arguments of the IC scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IcArgs {
    /// Seed of the deterministic simulation.
    pub seed: u64,
    /// Heartbeats to send.
    pub heartbeats: u64,
}

/// Deterministic mode: the run fails after this many rounds without progress (each round
/// runs the simulation until it is idle: virtual time).
pub const STALL_ROUNDS: u32 = 1000;

/// Smallest `--size` (room for the sequence number and the response flag).
pub const MIN_SIZE: usize = 16;

/// Largest payload the driver's rings carry in one in-band packet: the data area of a ring
/// (`ring_buffer_pages - 1` pages: the first is the control page) minus the slot the writer
/// keeps free (8 bytes: a full ring would look empty), the descriptor (16) and the trailer
/// (8), rounded down to the 8-byte padding (the full rule and the size formula of
/// docs/simulator.md, "Rings and packets"). With the driver's default 16 pages: 61,408
/// bytes (the job itself stops at [`max_traffic_size`]).
#[must_use]
pub const fn max_size(ring_buffer_pages: u32) -> usize {
    let data = (ring_buffer_pages as usize).saturating_sub(1) * kmcl_sim::ring::PAGE_SIZE;
    data.saturating_sub(
        kmcl_sim::ring::TRAILER_SIZE
            + kmcl_sim::ring::DESCRIPTOR_SIZE
            + kmcl_sim::ring::TRAILER_SIZE,
    ) / 8
        * 8
}

/// The largest `--size` with the driver configuration the job uses: the driver's own
/// limit, [`Config::ring_payload_limit`] (the ring's [`max_size`] less 8 bytes kept for
/// IC mode's pipe header), to which the driver lowers a larger `MaxPacketSize`. With 16
/// pages: 61,400 bytes.
#[must_use]
pub const fn max_traffic_size() -> usize {
    let ring = max_size(Config::DEFAULT.ring_buffer_pages);
    let driver = Config::ring_payload_limit(Config::DEFAULT.ring_buffer_pages) as usize;
    if driver < ring { driver } else { ring }
}

fn number<T: std::str::FromStr>(flag: &str, v: &str) -> Result<T, String> {
    v.parse().map_err(|_| {
        if v.starts_with('-') {
            format!("{flag} {v:?}: must not be negative")
        } else {
            format!("{flag} {v:?}: not a whole number")
        }
    })
}

/// Parses the arguments after the program name.
///
/// # Errors
/// A message naming the flag and the bad value (exit status 2).
pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Command, String> {
    let args: Vec<String> = args.into_iter().collect();
    // The scenario first: it decides which flags exist.
    let mut scenario = ScenarioName::Traffic;
    let mut i = 0;
    while i < args.len() {
        if args[i] == "--scenario" {
            let v = args
                .get(i + 1)
                .ok_or("--scenario needs a value: traffic or ic")?;
            scenario = match v.to_ascii_lowercase().as_str() {
                "ic" => ScenarioName::Ic,
                "traffic" => ScenarioName::Traffic,
                _ => {
                    return Err(format!(
                        "--scenario {v:?}: unknown scenario (traffic or ic)"
                    ));
                }
            };
            i += 1;
        }
        i += 1;
    }
    let mut t = TrafficArgs::default();
    let mut ic = IcArgs {
        seed: 1,
        heartbeats: 10_000,
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let flag = flag.as_str();
        if flag == "--help" || flag == "-h" {
            return Ok(Command::Help(scenario));
        }
        if flag == "--threaded" && scenario == ScenarioName::Traffic {
            t.threaded = true;
            continue;
        }
        let known = match scenario {
            ScenarioName::Traffic => matches!(
                flag,
                "--scenario"
                    | "--mode"
                    | "--packets"
                    | "--size"
                    | "--seed"
                    | "--queue-depth"
                    | "--stall-seconds"
            ),
            ScenarioName::Ic => matches!(flag, "--scenario" | "--seed" | "--heartbeats"),
        };
        if !known {
            return Err(match scenario {
                ScenarioName::Traffic => format!("unknown argument {flag:?}"),
                ScenarioName::Ic => format!("unknown argument {flag:?} for --scenario ic"),
            });
        }
        let v = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match (scenario, flag) {
            (_, "--scenario") => {}
            (ScenarioName::Traffic, "--mode") => {
                t.mode = ProcessingMode::from_name(v)
                    .ok_or_else(|| format!("--mode {v:?}: unknown mode (dispatch or passive)"))?;
            }
            (ScenarioName::Traffic, "--packets") => t.packets = number(flag, v)?,
            (ScenarioName::Traffic, "--size") => t.size = number(flag, v)?,
            (ScenarioName::Traffic, "--seed") => t.seed = number(flag, v)?,
            (ScenarioName::Traffic, "--queue-depth") => t.queue_depth = number(flag, v)?,
            (ScenarioName::Traffic, "--stall-seconds") => t.stall_seconds = number(flag, v)?,
            (ScenarioName::Ic, "--seed") => ic.seed = number(flag, v)?,
            (ScenarioName::Ic, "--heartbeats") => ic.heartbeats = number(flag, v)?,
            _ => return Err(format!("unknown argument {flag:?}")),
        }
    }
    match scenario {
        ScenarioName::Ic => {
            if !(1..=1_000_000).contains(&ic.heartbeats) {
                return Err(format!(
                    "--heartbeats {}: must be in 1..=1000000",
                    ic.heartbeats
                ));
            }
            Ok(Command::Ic(ic))
        }
        ScenarioName::Traffic => {
            let max = max_traffic_size();
            if !(MIN_SIZE..=max).contains(&t.size) {
                return Err(format!(
                    "--size {}: must be in {MIN_SIZE}..={max} (the largest payload one packet \
                     carries in the driver's {}-page rings)",
                    t.size,
                    Config::DEFAULT.ring_buffer_pages
                ));
            }
            if !(1..=4096).contains(&t.queue_depth) {
                return Err(format!(
                    "--queue-depth {}: must be in 1..=4096",
                    t.queue_depth
                ));
            }
            if t.packets == 0 {
                return Err("--packets 0: must be at least 1".into());
            }
            if t.stall_seconds == 0 {
                return Err("--stall-seconds 0: must be at least 1".into());
            }
            Ok(Command::Traffic(t))
        }
    }
}
