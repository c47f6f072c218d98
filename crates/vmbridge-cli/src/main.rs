//! `vmbridge`: the command-line tool of the vmbridge driver.
//!
//! C header: `include/vmbridge.h` (the ABI it speaks, through `vmbridge-client`).
//!
//! `main.rs` parses the command line and dispatches; [`backend`] opens a real device or
//! the simulated one (`--sim`); [`output`] formats packets and counters; [`bench`]
//! measures. Exit status: 0 success, 1 a failed request or device, 2 bad arguments
//! (one line on stderr).

mod backend;
mod bench;
mod output;

use std::io::{self, Read, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use vmbridge_client::{Device, OfferRequest};

const EXAMPLES: &str = "\
Examples (every command works on any host with --sim: the driver's real core in a
simulator, with a simulated host that sends and answers packets):
  vmbridge --sim list
  vmbridge --sim info
  vmbridge --sim stats --watch --interval 500
  vmbridge --sim recv --count 4 --json
  vmbridge --sim recv --count 2 --hold --hex
  vmbridge --sim send --hex 48656c6c6f
  echo hello | vmbridge --sim send --wait
  vmbridge --sim echo --count 10
  vmbridge --sim bench --packets 100000 --size 64 --batch
  vmbridge --sim offer --type 2942a8b6-8b33-4dd5-8dbb-6dba460aea7b --instance 00000000-0000-0000-0000-000000000001

On Windows, without --sim, the tool opens the first vmbridge device
(GUID_DEVINTERFACE_VMBRIDGE) or the one --device names (a path `list` prints).";

/// Talk to the vmbridge driver: read, send, answer, measure, offer.
#[derive(Debug, Parser)]
#[command(name = "vmbridge", version, after_help = EXAMPLES)]
struct Cli {
    /// Run against the simulated driver and host (any OS).
    #[arg(long, global = true)]
    sim: bool,
    /// Device path (from `vmbridge list`); default: the first device.
    #[arg(long, global = true, value_name = "PATH")]
    device: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List the vmbridge devices (device-interface paths).
    List,
    /// Show the device's configuration and channel state (IOCTL_VMBRIDGE_GET_INFO).
    Info,
    /// Show the device's counters (IOCTL_VMBRIDGE_GET_STATS).
    Stats {
        /// Print them again every --interval.
        #[arg(long)]
        watch: bool,
        /// Milliseconds between prints with --watch.
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(10..))]
        interval: u64,
        /// Stop after this many prints with --watch (default: until interrupted).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        count: Option<u64>,
    },
    /// Receive packets and print them.
    Recv(RecvArgs),
    /// Send one packet (from --hex, --file or stdin).
    Send(SendArgs),
    /// Answer every packet that asks for a response with its own payload.
    Echo {
        /// Stop after this many packets (default: until interrupted).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        count: Option<u64>,
        /// Give up after this many milliseconds without a packet.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        timeout: Option<u64>,
    },
    /// Measure: packets/s and latency percentiles.
    Bench(bench::BenchArgs),
    /// Host mode: offer a VMBus channel into a VM (on the host control device).
    Offer(OfferArgs),
}

#[derive(Debug, Args)]
struct RecvArgs {
    /// Stop after this many packets (default: until interrupted).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    count: Option<u64>,
    /// Hold each packet for a response (answered empty when the tool exits).
    #[arg(long)]
    hold: bool,
    /// Print payloads as hex.
    #[arg(long, group = "format")]
    hex: bool,
    /// Write the raw payload bytes to stdout, nothing else.
    #[arg(long, group = "format")]
    raw: bool,
    /// One JSON object per packet.
    #[arg(long, group = "format")]
    json: bool,
    /// Give up after this many milliseconds without a packet.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    timeout: Option<u64>,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("source").args(["hex", "file"])))]
struct SendArgs {
    /// Wait for the other side's completion and print its response.
    #[arg(long)]
    wait: bool,
    /// The payload as hex digits (e.g. 48656c6c6f).
    #[arg(long, value_parser = output::parse_hex)]
    hex: Option<output::HexBytes>,
    /// The payload from a file.
    #[arg(long, value_name = "FILE")]
    file: Option<std::path::PathBuf>,
    /// Milliseconds to wait for the completion with --wait.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    timeout: u64,
}

#[derive(Debug, Args)]
struct OfferArgs {
    /// Interface type GUID (the guest's hardware ID VMBUS\{type}).
    #[arg(long = "type", value_parser = output::parse_guid_arg)]
    interface_type: u128,
    /// Interface instance GUID.
    #[arg(long, value_parser = output::parse_guid_arg)]
    instance: u128,
    /// Offer as a pipe.
    #[arg(long)]
    pipe: bool,
    /// The VM's VMBus handle in this process (decimal or 0x-hex); with --sim the
    /// simulated VM's handle is used when omitted.
    #[arg(long, value_parser = output::parse_u64)]
    vmbus_handle: Option<u64>,
    /// Keep the offer for this many seconds, then rescind it (default: until interrupted).
    #[arg(long)]
    seconds: Option<u64>,
}

/// A runtime failure: the message and the exit status.
struct Failure(String, u8);

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure(e.to_string(), 1)
    }
}

type Outcome = Result<(), Failure>;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // clap's message, up to its usage block, on one line.
            let text = e.to_string();
            let msg = text
                .lines()
                .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more"))
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with("tip:"))
                .collect::<Vec<_>>()
                .join(" ");
            let msg = msg.strip_prefix("error: ").unwrap_or(&msg);
            eprintln!("vmbridge: {msg} (see vmbridge --help)");
            return ExitCode::from(2);
        }
    };
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(msg, code)) => {
            eprintln!("vmbridge: {msg}");
            ExitCode::from(code)
        }
    }
}

fn run(cli: &Cli) -> Outcome {
    match &cli.command {
        Command::List => {
            for p in backend::list(cli.sim)? {
                println!("{p}");
            }
            Ok(())
        }
        Command::Info => {
            let b = backend::open(cli, backend::Host::Quiet)?;
            output::print_info(&b.device.info()?);
            Ok(())
        }
        Command::Stats {
            watch,
            interval,
            count,
        } => {
            let b = backend::open(cli, backend::Host::Chatter)?;
            let rounds = if *watch { *count } else { Some(1) };
            let mut n = 0u64;
            loop {
                output::print_stats(&b.device.stats()?, *watch);
                n += 1;
                if rounds.is_some_and(|r| n >= r) {
                    return Ok(());
                }
                std::thread::sleep(Duration::from_millis(*interval));
            }
        }
        Command::Recv(a) => recv(cli, a),
        Command::Send(a) => send(cli, a),
        Command::Echo { count, timeout } => echo(cli, *count, *timeout),
        Command::Bench(a) => bench::run(cli.sim, cli.device.as_deref(), a),
        Command::Offer(a) => offer(cli, a),
    }
}

fn timeout_of(ms: Option<u64>) -> Option<Duration> {
    ms.map(Duration::from_millis)
}

fn recv(cli: &Cli, a: &RecvArgs) -> Outcome {
    let b = backend::open(cli, backend::Host::Chatter)?;
    let d: &Device = &b.device;
    let mut out = io::stdout().lock();
    let mut n = 0u64;
    while a.count.is_none_or(|c| n < c) {
        let p = if a.hold {
            d.read_held(timeout_of(a.timeout))?
        } else {
            d.read(timeout_of(a.timeout))?
        };
        if a.raw {
            out.write_all(&p.payload)?;
        } else if a.json {
            writeln!(out, "{}", output::packet_json(&p))?;
        } else {
            writeln!(out, "{}", output::packet_line(&p, a.hex))?;
        }
        out.flush()?;
        n += 1;
    }
    Ok(())
}

fn send(cli: &Cli, a: &SendArgs) -> Outcome {
    let payload = match (&a.hex, &a.file) {
        (Some(h), _) => h.0.clone(),
        (None, Some(f)) => {
            std::fs::read(f).map_err(|e| Failure(format!("{}: {e}", f.display()), 2))?
        }
        (None, None) => {
            let mut v = Vec::new();
            io::stdin().read_to_end(&mut v)?;
            v
        }
    };
    let b = backend::open(cli, backend::Host::Quiet)?;
    if a.wait {
        let c = b
            .device
            .send_wait(&payload, Some(Duration::from_millis(a.timeout)))?;
        println!(
            "sent {} bytes; completion {} ({:#010x}), response {} bytes: {}",
            payload.len(),
            c.status.name(),
            c.status.raw(),
            c.response.len(),
            output::hex(&c.response)
        );
    } else {
        b.device.send(&payload)?;
        println!("sent {} bytes", payload.len());
    }
    Ok(())
}

fn echo(cli: &Cli, count: Option<u64>, timeout: Option<u64>) -> Outcome {
    let b = backend::open(cli, backend::Host::Asking)?;
    let d = &b.device;
    let mut n = 0u64;
    while count.is_none_or(|c| n < c) {
        let p = d.read_held(timeout_of(timeout))?;
        d.respond(p.header.PacketId, &p.payload)?;
        println!(
            "answered #{} ({} bytes, packet id {})",
            p.header.Sequence,
            p.payload.len(),
            p.header.PacketId
        );
        n += 1;
    }
    Ok(())
}

fn offer(cli: &Cli, a: &OfferArgs) -> Outcome {
    let b = backend::open_host(cli)?;
    let handle = match (a.vmbus_handle, b.sim_handle) {
        (Some(h), _) | (None, Some(h)) => h,
        (None, None) => {
            return Err(Failure(
                "offer needs --vmbus-handle (the VM's VMBus handle in this process)".into(),
                2,
            ));
        }
    };
    let req = OfferRequest {
        interface_type: a.interface_type,
        instance: a.instance,
        pipe: a.pipe,
        vmbus_handle: handle,
    };
    b.device.create_offer(&req)?;
    println!(
        "offered type {} instance {}{} into the VM (VMBus handle {handle:#x})",
        output::guid(a.interface_type),
        output::guid(a.instance),
        if a.pipe { " as a pipe" } else { "" }
    );
    if let Some(guest) = &b.sim_guest_of {
        guest(&b.device, a.interface_type)?;
    }
    let start = Instant::now();
    while a
        .seconds
        .is_none_or(|s| start.elapsed() < Duration::from_secs(s))
    {
        if b.sim_handle.is_some() && a.seconds.is_none() {
            break; // the simulated VM has shown the offer works
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("closing the handle rescinds the offer");
    Ok(())
}
