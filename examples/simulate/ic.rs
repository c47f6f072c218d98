//! `simulate --scenario ic`: vmbridge in IC mode against the simulator's host IC endpoint.
//!
//! Reference: `docs/ic.md` (IC mode; negotiation, heartbeat, shutdown, time sync).
//!
//! ```text
//! cargo run --release --example simulate -- --scenario ic [--seed S] [--heartbeats N]
//! ```
//!
//! Three offers (heartbeat, shutdown, time sync), each opened by vmbridge in IC mode in
//! pipe mode; the host negotiates with the reference's version lists, sends heartbeats
//! (both body layouts), shutdown requests and time samples; a simulated user-mode program
//! accepts, refuses, ignores (timeout) or abandons (handle closed) the forwarded
//! requests. Prints the messages exchanged, the versions negotiated, the IC counters and
//! the verifier verdict. Exit status 1 on a wrong answer or a verifier violation.

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::common::ic::{IcRig, IcUser};
use hv_ic::host::HeartbeatLayout;
use hv_ic::negotiate::FRAMEWORK_VERSIONS;
use hv_ic::shutdown::ShutdownParams;
use hv_ic::timesync::TimeSample;
use hv_ic::wire::{ApplicationState, MsgType, ShutdownFlags, Status, TimeSyncFlags, Version};
use kmcl_sim::SimConfig;
use kmcl_sim::ic_host::IcHost;
use vmbridge::bridge::config::{IcConfig, IcService};
use vmbridge::bridge::{Config, FileId};
use vmbridge::trace::{Event, KEYWORD_IC, Tracer};

/// `--scenario ic --help`.
pub const USAGE: &str = "\
usage: simulate --scenario ic [--seed S] [--heartbeats N] [--help]

Runs vmbridge in IC mode (heartbeat, shutdown, time sync) against kmcl-sim's host IC
endpoint and a simulated user-mode program, then prints the exchange and the verdict.

  --seed S        seed of the deterministic simulation (default 1)
  --heartbeats N  heartbeats to send, 1..=1000000 (default 10000)

Times are simulated: the user-mode timeout is driven by the driver's IC tick (no wall
clock passes), and the time-sync samples carry a fixed simulated parent time.";

static IC_EVENTS: AtomicU64 = AtomicU64::new(0);

fn count_ic(e: &Event) {
    if e.keyword() == KEYWORD_IC {
        IC_EVENTS.fetch_add(1, Ordering::Relaxed);
    }
}

use crate::args::IcArgs as Args;

fn rig(seed: u64, service: IcService, timeout_ms: u32) -> IcRig {
    IcRig::new(
        SimConfig::deterministic(seed).collect(),
        Config {
            ring_buffer_pages: 2,
            ..Config::DEFAULT
        },
        IcConfig {
            service: Some(service),
            timeout_ms,
        },
        Tracer::with_sink(count_ic),
    )
}

/// Prints the host transcript lines not printed yet.
fn show(rig: &IcRig, printed: &mut usize) {
    for line in rig.host.transcript().iter().skip(*printed) {
        println!("  {line}");
    }
    *printed = rig.host.transcript().len();
}

/// Closes the rig, prints the rest of its transcript, IC counters and verdict; false on
/// a violation.
fn finish(name: &str, mut rig: IcRig, printed: &mut usize) -> bool {
    show(&rig, printed);
    let ic = rig.device().ic().map(|ic| ic.stats()).unwrap_or_default();
    rig.close();
    let violations = rig.sim.violations();
    println!(
        "  [{name}] messages {} negotiated {} no-match {} answered-in-kernel {} forwarded {} \
         user-answers {} no-decision {} timeouts {} late {} dropped {}",
        ic.messages,
        ic.negotiated,
        ic.no_match,
        ic.answered_in_kernel,
        ic.forwarded,
        ic.user_answers,
        ic.no_decision,
        ic.timeouts,
        ic.late,
        ic.dropped
    );
    let stats = rig.sim.stats();
    println!(
        "  [{name}] packets delivered {} sent {}; verifier: {}",
        stats.packets_delivered,
        stats.packets_sent,
        if violations.is_empty() {
            "clean".to_string()
        } else {
            format!("{} violation(s)", violations.len())
        }
    );
    for v in &violations {
        println!("    violation {} at {}", v.rule.name(), v.site);
    }
    violations.is_empty()
}

fn check(ok: bool, what: &str, failures: &mut Vec<String>) {
    if !ok {
        failures.push(what.to_string());
    }
}

fn heartbeat(a: &Args, failures: &mut Vec<String>) -> bool {
    println!("heartbeat channel (answered in the kernel):");
    let mut r = rig(a.seed, IcService::Heartbeat, 30_000);
    // A host offering only heartbeat 3.1 (Mile): no common version.
    let mut only31 = IcHost::with_versions(
        r.offer.host(),
        hv_ic::Service::Heartbeat,
        FRAMEWORK_VERSIONS,
        &[Version::new(3, 1)],
    );
    check(
        only31.negotiate().is_err(),
        "3.1-only offer must not match",
        failures,
    );
    for line in only31.transcript() {
        println!("  {line}");
    }
    let mut printed = 0;
    match r.host.negotiate() {
        Ok(v) => {
            show(&r, &mut printed);
            println!(
                "  negotiated: framework {} heartbeat {}",
                v.framework, v.message
            );
        }
        Err(e) => failures.push(format!("heartbeat negotiation: {e}")),
    }
    r.host.set_sequence(u64::MAX - a.heartbeats / 2);
    let mut ok = 0u64;
    let started = std::time::Instant::now();
    for i in 0..a.heartbeats {
        let layout = if i % 2 == 0 {
            HeartbeatLayout::Reserved40
        } else {
            HeartbeatLayout::AppState16(ApplicationState(1))
        };
        match r.host.heartbeat(layout) {
            Ok(_) => ok += 1,
            Err(e) => {
                failures.push(format!("heartbeat {i}: {e}"));
                break;
            }
        }
    }
    let elapsed = started.elapsed();
    show(&r, &mut printed);
    println!(
        "  ... {ok} heartbeats in {:.1} ms ({:.2} us per round trip through host, ring, KMCL, vmbridge)",
        elapsed.as_secs_f64() * 1e3,
        elapsed.as_secs_f64() * 1e6 / ok.max(1) as f64
    );
    println!(
        "  ... {ok}/{} heartbeats answered with seq + 1 (40- and 16-byte bodies, sequence wrapped at u64::MAX, 2-page ring)",
        a.heartbeats
    );
    finish("heartbeat", r, &mut printed)
}

fn shutdown(a: &Args, failures: &mut Vec<String>) -> bool {
    println!("shutdown channel (forwarded to user mode):");
    let mut r = rig(a.seed, IcService::Shutdown, 5_000);
    let mut printed = 0;
    match r.host.negotiate() {
        Ok(v) => {
            show(&r, &mut printed);
            println!(
                "  negotiated: framework {} shutdown {}",
                v.framework, v.message
            );
        }
        Err(e) => failures.push(format!("shutdown negotiation: {e}")),
    }
    let user = IcUser::new(FileId(1));
    let cases: [(&str, u32, Option<u32>, u32); 2] = [
        (
            "restart, user mode accepts",
            2,
            Some(Status::S_OK.0),
            Status::S_OK.0,
        ),
        (
            "hibernate, user mode refuses",
            4,
            Some(Status::E_FAIL.0),
            Status::E_FAIL.0,
        ),
    ];
    for (what, flags, decision, expect) in cases {
        let params = ShutdownParams {
            reason_code: 0x8000_0000,
            timeout_secs: 0,
            flags: ShutdownFlags(flags),
        };
        let Ok(txid) = r.host.send_shutdown(&params, b"vmbridge simulate") else {
            failures.push(format!("{what}: send"));
            continue;
        };
        let read = user.post_read(&r);
        r.idle();
        show(&r, &mut printed);
        let Some(req) = IcUser::decode(&read) else {
            failures.push(format!("{what}: not forwarded"));
            continue;
        };
        println!(
            "  user mode read: shutdown action {} flags {:#x} txid {}  -> answers {:#010x} ({what})",
            req.request.action,
            req.request.shutdown_flags,
            req.request.transaction_id,
            decision.unwrap_or(0)
        );
        check(
            r.host.try_answer().is_none(),
            "answer before decision",
            failures,
        );
        if let Some(d) = decision {
            let _ = user.respond(&r, req.packet_id, d);
        }
        let got = r.host.await_status(MsgType::SHUTDOWN, txid);
        check(got == Ok(Status(expect)), what, failures);
    }
    let params = ShutdownParams {
        reason_code: 0,
        timeout_secs: 0,
        flags: ShutdownFlags(0),
    };
    // Handle closed before answering.
    if let Ok(txid) = r.host.send_shutdown(&params, &[]) {
        let other = IcUser::new(FileId(2));
        let read = other.post_read(&r);
        r.idle();
        check(
            IcUser::decode(&read).is_some(),
            "forwarded before close",
            failures,
        );
        show(&r, &mut printed);
        other.close(&r);
        println!("  user mode closed its handle before answering");
        let got = r.host.await_status(MsgType::SHUTDOWN, txid);
        check(
            got == Ok(Status(vmbridge::ic::STATUS_IC_NO_DECISION)),
            "close answer",
            failures,
        );
    }
    // No decision within the timeout.
    if let Ok(txid) = r.host.send_shutdown(&params, &[]) {
        r.idle();
        show(&r, &mut printed);
        let expired = r.device().ic_tick(5_000);
        println!(
            "  user mode silent for 5 s of simulated time (the IC tick, no wall clock): {expired} request(s) timed out"
        );
        let got = r.host.await_status(MsgType::SHUTDOWN, txid);
        check(
            got == Ok(Status(vmbridge::ic::STATUS_IC_TIMEOUT)),
            "timeout answer",
            failures,
        );
    }
    show(&r, &mut printed);
    // The timed-out request is still queued: user mode reads and answers it late.
    let read = user.post_read(&r);
    r.idle();
    if let Some(req) = IcUser::decode(&read) {
        let _ = user.respond(&r, req.packet_id, 0);
        r.idle();
        check(
            r.host.try_answer().is_none(),
            "late answer ignored",
            failures,
        );
        println!("  late user-mode answer to the timed-out request: ignored");
    }
    finish("shutdown", r, &mut printed)
}

fn timesync(a: &Args, failures: &mut Vec<String>) -> bool {
    println!("time sync channel (forwarded to user mode, acknowledged):");
    let mut ok = true;
    for offered in [
        hv_ic::negotiate::TIMESYNC_VERSIONS,
        &[Version::new(1, 0), Version::new(3, 0)][..],
    ] {
        let mut r = rig(a.seed, IcService::TimeSync, 30_000);
        r.host = IcHost::with_versions(
            r.offer.host(),
            hv_ic::Service::TimeSync,
            FRAMEWORK_VERSIONS,
            offered,
        );
        let v = match r.host.negotiate() {
            Ok(v) => v,
            Err(e) => {
                failures.push(format!("time sync negotiation: {e}"));
                continue;
            }
        };
        let mut printed = 0;
        show(&r, &mut printed);
        println!(
            "  negotiated: framework {} time sync {}",
            v.framework, v.message
        );
        let user = IcUser::new(FileId(1));
        for flags in [1u8, 2] {
            let sample = if v.message >= Version::new(4, 0) {
                TimeSample::V4 {
                    parent_time: 133_500_000_000_000_000,
                    vm_reference_time: 10_000_000,
                    flags: TimeSyncFlags(flags),
                    leap_indicator: 0,
                    stratum: 2,
                }
            } else {
                TimeSample::V1 {
                    parent_time: 133_500_000_000_000_000,
                    child_time: 133_499_999_999_990_000,
                    round_trip_time: 500,
                    flags: TimeSyncFlags(flags),
                }
            };
            let Ok(txid) = r.host.send_timesync(&sample) else {
                failures.push("time sync send".into());
                continue;
            };
            let read = user.post_read(&r);
            r.idle();
            show(&r, &mut printed);
            if let Some(req) = IcUser::decode(&read) {
                println!(
                    "  user mode read: time sample parent {} flags {} v4 {} -> acknowledges",
                    req.request.parent_time, req.request.timesync_flags, req.request.is_v4
                );
                let _ = user.respond(&r, req.packet_id, 0);
            }
            let got = r.host.await_status(MsgType::TIMESYNC, txid);
            check(got == Ok(Status::S_OK), "time sync answer", failures);
        }
        ok &= finish("timesync", r, &mut printed);
    }
    ok
}

/// Runs the IC scenario and prints the verdict.
pub fn main(a: &Args) -> ExitCode {
    println!(
        "vmbridge simulate --scenario ic: seed={} heartbeats={} (IC mode, pipe mode, DISPATCH_LEVEL processing; \
         times are simulated: timeouts run on the IC tick, time samples carry a fixed parent time)",
        a.seed, a.heartbeats
    );
    let mut failures = Vec::new();
    let clean =
        heartbeat(a, &mut failures) & shutdown(a, &mut failures) & timesync(a, &mut failures);
    println!(
        "IC ETW events (keyword 0x10): {}",
        IC_EVENTS.load(Ordering::Relaxed)
    );
    if !clean && failures.is_empty() {
        failures.push("the KMCL verifier recorded violations (listed above)".into());
    }
    crate::verdict::verdict(&failures)
}
