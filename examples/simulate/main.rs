//! `cargo run --release --example simulate`: the vmbridge driver inside kmcl-sim.
//!
//! Reference: `examples/simulate/run.rs` (what it does), `docs/windows.md` §9.
//! `--scenario ic` runs IC mode instead: `examples/simulate/ic.rs`, `docs/ic.md`.
//!
//! The simulator is a host tool: on Windows targets (where the crate is the kernel
//! driver) the example only says so.

// The test rig (with its IC rig and client transport), shared with the integration tests.
#[cfg(not(windows))]
use vmbridge_sim::rig as common;

#[cfg(not(windows))]
mod run;

#[cfg(not(windows))]
mod ic;

#[cfg(not(windows))]
mod args;

#[cfg(not(windows))]
mod verdict;

#[cfg(all(test, not(windows)))]
mod tests;

#[cfg(not(windows))]
fn main() -> std::process::ExitCode {
    use args::{Command, ScenarioName};
    match args::parse(std::env::args().skip(1)) {
        Ok(Command::Help(ScenarioName::Traffic)) => {
            println!("{}", run::usage());
            std::process::ExitCode::SUCCESS
        }
        Ok(Command::Help(ScenarioName::Ic)) => {
            println!("{}", ic::USAGE);
            std::process::ExitCode::SUCCESS
        }
        Ok(Command::Traffic(a)) => run::main(&a),
        // `--scenario ic`: the IC mode scenario (examples/simulate/ic.rs).
        Ok(Command::Ic(a)) => ic::main(&a),
        Err(e) => {
            eprintln!("simulate: {e}\n(`simulate --help` lists the options)");
            std::process::ExitCode::from(2)
        }
    }
}

#[cfg(windows)]
fn main() {
    eprintln!(
        "simulate: kmcl-sim runs on non-Windows hosts; on Windows, install the driver (docs/windows.md)"
    );
}
