//! Instructions per packet for a bench binary's `--count N --size S` mode, measured by running
//! the binary itself under `valgrind --tool=callgrind` at two run lengths and taking the
//! difference (start-up and set-up cancel out). `scripts/bench-instructions.sh` uses the same
//! method and is the regression gate; this prints the figure beside the timed rows of
//! `cargo bench`. `None` when valgrind is not installed or the run fails.

use std::process::Command;

/// Instructions callgrind collected for one run of this binary with `args`.
fn collected(args: &[String]) -> Option<u64> {
    let exe = std::env::current_exe().ok()?;
    let out = Command::new("valgrind")
        .args(["--tool=callgrind", "--callgrind-out-file=/dev/null"])
        .arg(exe)
        .args(args)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let log = String::from_utf8_lossy(&out.stderr);
    let line = log.lines().find(|l| l.contains("Collected :"))?;
    line.rsplit(':').next()?.trim().parse().ok()
}

/// `(I(long) - I(short)) / (long - short)` for `--count {short,long} --size size`.
pub fn per_packet(size: usize, short: u64, long: u64) -> Option<u64> {
    let run = |n: u64| {
        collected(&[
            "--count".into(),
            n.to_string(),
            "--size".into(),
            size.to_string(),
        ])
    };
    let a = run(short)?;
    let b = run(long)?;
    Some(b.saturating_sub(a) / (long - short))
}

/// The figure as a table cell ("-" without valgrind).
pub fn cell(v: Option<u64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

/// `--count N --size S` on the command line: the instruction-count mode (else `None`: the
/// timed table).
pub fn count_args() -> Option<(u64, usize)> {
    let args: Vec<String> = std::env::args().collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    Some((value("--count")?, usize::try_from(value("--size")?).ok()?))
}
