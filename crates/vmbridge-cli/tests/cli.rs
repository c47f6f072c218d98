//! The `vmbridge` tool end to end with `--sim`: every command, its output, and bad
//! arguments (one line on stderr, exit status 2).
//!
//! Reference: `docs/user-mode.md` (the tool's reference).
#![cfg(not(windows))]

use std::io::Write;
use std::process::{Command, Output, Stdio};

fn vmbridge(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vmbridge"))
        .args(args)
        .output()
        .expect("the tool runs")
}

fn ok(args: &[&str]) -> String {
    let o = vmbridge(args);
    assert!(
        o.status.success(),
        "{args:?}: {}\n{}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).expect("utf-8")
}

/// Exit status 2 and exactly one line on stderr naming `what`.
fn bad(args: &[&str], what: &str) {
    let o = vmbridge(args);
    assert_eq!(o.status.code(), Some(2), "{args:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.lines().count(), 1, "{args:?}: one line: {err:?}");
    assert!(err.starts_with("vmbridge: "), "{err:?}");
    assert!(err.contains(what), "{args:?}: {err:?} names {what:?}");
    assert!(o.stdout.is_empty());
}

#[test]
fn list_names_the_simulated_device() {
    let out = ok(&["--sim", "list"]);
    assert!(out.starts_with("sim:0"), "{out}");
    assert!(out.contains("2942a8b6-8b33-4dd5-8dbb-6dba460aea7b"));
}

#[test]
fn info_shows_configuration_and_open_channel() {
    let out = ok(&["--sim", "info"]);
    for line in [
        "abi version       : 1",
        "channel state     : open",
        "processing mode   : dispatch",
        "queue depth       : 64",
        "max packet size   : 4096",
    ] {
        assert!(out.contains(line), "{line:?} in\n{out}");
    }
}

#[test]
fn stats_and_stats_watch_print_counters() {
    let out = ok(&["--sim", "stats"]);
    assert!(out.contains("packets received  : "), "{out}");
    assert!(out.contains("held for response : 0"), "{out}");
    let out = ok(&[
        "--sim",
        "stats",
        "--watch",
        "--interval",
        "30",
        "--count",
        "3",
    ]);
    assert_eq!(out.lines().count(), 3, "{out}");
    assert!(out.lines().all(|l| l.starts_with("received ")), "{out}");
}

#[test]
fn recv_prints_packets_in_each_format() {
    let out = ok(&["--sim", "recv", "--count", "2"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            "#1 len=24 \"host packet #0..........\"",
            "#2 len=24 \"host packet #1..........\""
        ]
    );
    let out = ok(&["--sim", "recv", "--count", "1", "--hex"]);
    assert_eq!(
        out.trim(),
        "#1 len=24 686f7374207061636b65742023302e2e2e2e2e2e2e2e2e2e"
    );
    let out = ok(&["--sim", "recv", "--count", "1", "--json", "--hold"]);
    assert_eq!(
        out.trim(),
        "{\"sequence\":1,\"length\":24,\"packet_id\":1,\"held\":true,\"payload_hex\":\"686f7374207061636b65742023302e2e2e2e2e2e2e2e2e2e\"}"
    );
    let o = vmbridge(&["--sim", "recv", "--count", "2", "--raw"]);
    assert!(o.status.success());
    assert_eq!(
        o.stdout,
        b"host packet #0..........host packet #1.........."
    );
}

#[test]
fn send_from_hex_file_and_stdin_and_wait_for_the_response() {
    assert_eq!(
        ok(&["--sim", "send", "--hex", "01 02 03"]),
        "sent 3 bytes\n"
    );
    let out = ok(&["--sim", "send", "--wait", "--hex", "48656c6c6f"]);
    assert_eq!(
        out,
        "sent 5 bytes; completion STATUS_SUCCESS (0x00000000), response 8 bytes: 48656c6c6f000000\n"
    );
    let file = std::env::temp_dir().join(format!("vmbridge-cli-{}.bin", std::process::id()));
    std::fs::write(&file, b"from a file").expect("write");
    let out = ok(&["--sim", "send", "--file", file.to_str().expect("utf-8")]);
    assert_eq!(out, "sent 11 bytes\n");
    let _ = std::fs::remove_file(&file);
    let mut child = Command::new(env!("CARGO_BIN_EXE_vmbridge"))
        .args(["--sim", "send"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"from stdin")
        .expect("write stdin");
    let o = child.wait_with_output().expect("wait");
    assert!(o.status.success());
    assert_eq!(o.stdout, b"sent 10 bytes\n");
}

#[test]
fn echo_answers_held_packets() {
    let out = ok(&["--sim", "echo", "--count", "3"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert_eq!(lines[0], "answered #1 (24 bytes, packet id 1)");
    assert_eq!(lines[2], "answered #3 (24 bytes, packet id 3)");
}

#[test]
fn bench_reports_rate_latency_and_batches() {
    let out = ok(&["--sim", "bench", "--packets", "2000", "--size", "64"]);
    assert!(out.contains("single reads: 2000 packets in "), "{out}");
    assert!(out.contains("1.0 packets/request"), "{out}");
    assert!(out.contains("request latency (us) p50 "), "{out}");
    let out = ok(&["--sim", "bench", "--packets", "2000", "--batch"]);
    assert!(out.contains("batched reads: "), "{out}");
    let out = ok(&["--sim", "bench", "--packets", "500", "--roundtrip"]);
    assert!(out.contains("round trips: 500 packets"), "{out}");
    let out = ok(&["--sim", "bench", "--packets", "2000", "--compare"]);
    assert!(out.contains("batched/single: "), "{out}");
}

#[test]
fn bench_size_range_the_largest_size_the_argument_takes_runs_with_sim() {
    // `--size` takes 1..=65536; the default ring (16 pages) carries 61,400 bytes a packet.
    for (mode, what) in [
        (None, "single reads: 3 packets"),
        (Some("--batch"), "batched reads: 3 packets"),
        (Some("--roundtrip"), "round trips: 3 packets"),
    ] {
        let mut args = vec!["--sim", "bench", "--packets", "3", "--size", "65536"];
        args.extend(mode);
        let out = ok(&args);
        assert!(out.contains(what), "{args:?}: {out}");
    }
}

#[test]
fn offer_in_host_mode_binds_a_simulated_guest() {
    let out = ok(&[
        "--sim",
        "offer",
        "--type",
        "2942a8b6-8b33-4dd5-8dbb-6dba460aea7b",
        "--instance",
        "{00000000-0000-0000-0000-000000000001}",
    ]);
    assert!(
        out.starts_with("offered type 2942a8b6-8b33-4dd5-8dbb-6dba460aea7b instance 00000000-0000-0000-0000-000000000001 into the VM"),
        "{out}"
    );
    assert!(
        out.contains("the host handle read \"hello from the VM\""),
        "{out}"
    );
    assert!(
        out.contains("read \"hello from the host\" from the host handle"),
        "{out}"
    );
}

#[test]
fn help_lists_commands_and_examples() {
    let out = ok(&["--help"]);
    for w in [
        "list", "info", "stats", "recv", "send", "echo", "bench", "offer", "Examples",
    ] {
        assert!(out.contains(w), "{w} in --help");
    }
    assert!(ok(&["recv", "--help"]).contains("--hold"));
}

#[test]
fn bad_arguments_get_one_line_and_exit_status_2() {
    bad(&["--sim"], "subcommand");
    bad(&["--sim", "frobnicate"], "frobnicate");
    bad(
        &["--sim", "send", "--hex", "abc"],
        "odd number of hex digits",
    );
    bad(&["--sim", "send", "--hex", "zz"], "not a hex byte");
    bad(&["--sim", "send", "--hex", "00", "--file", "x"], "--file");
    bad(&["--sim", "recv", "--count", "0"], "--count");
    bad(&["--sim", "recv", "--hex", "--json"], "--json");
    bad(&["--sim", "stats", "--interval", "abc"], "--interval");
    bad(&["--sim", "bench", "--size", "0"], "--size");
    bad(&["--sim", "bench", "--batch", "--compare"], "--compare");
    bad(
        &["--sim", "offer", "--type", "not-a-guid", "--instance", "1"],
        "GUID",
    );
    bad(
        &[
            "--sim",
            "offer",
            "--instance",
            "00000000-0000-0000-0000-000000000001",
        ],
        "--type",
    );
    bad(
        &["--sim", "send", "--file", "/nonexistent/vmbridge"],
        "/nonexistent/vmbridge",
    );
}

#[test]
fn without_sim_on_linux_the_tool_says_there_is_no_device() {
    let o = vmbridge(&["info"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--sim"));
}

#[test]
fn signs_are_not_digits_hex_bytes_and_numbers_with_a_sign_get_exit_status_2() {
    // `u8::from_str_radix` and `u64::from_str_radix` accept a leading `+` (a decimal
    // `+5` stays a number, as clap's own numeric arguments take it).
    bad(&["--sim", "send", "--hex", "+f+f"], "not a hex byte");
    bad(&["--sim", "send", "--hex", "0+ff"], "not a hex byte");
    let offer = |handle: &'static str| {
        [
            "--sim",
            "offer",
            "--type",
            "2942a8b6-8b33-4dd5-8dbb-6dba460aea7b",
            "--instance",
            "00000000-0000-0000-0000-000000000001",
            "--vmbus-handle",
            handle,
        ]
    };
    bad(&offer("0x+5"), "--vmbus-handle");
}
