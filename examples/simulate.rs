//! `cargo run --release --example simulate`: the vmbridge driver inside kmcl-sim.
//!
//! Reference: `examples/simulate/run.rs` (what it does), `docs/windows.md` §9.
//! `--scenario ic` runs IC mode instead: `examples/simulate/ic.rs`, `docs/ic.md`.
//!
//! The simulator is a host tool: on Windows targets (where the crate is the kernel
//! driver) the example only says so.

#[cfg(not(windows))]
#[path = "simulate/run.rs"]
mod run;

#[cfg(not(windows))]
#[path = "simulate/ic.rs"]
mod ic;

#[cfg(not(windows))]
fn main() -> std::process::ExitCode {
    // `--scenario ic`: the IC mode scenario (examples/simulate/ic.rs).
    if ic::requested() {
        return ic::main();
    }
    run::main()
}

#[cfg(windows)]
fn main() {
    eprintln!(
        "simulate: kmcl-sim runs on non-Windows hosts; on Windows, install the driver (docs/windows.md)"
    );
}
