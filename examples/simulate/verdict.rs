//! The one verdict both scenarios print: `verdict        : PASS` or `FAIL` with the reasons.

use std::process::ExitCode;

/// Prints the verdict for `failures` (empty: every check held and the verifier is clean)
/// and returns the exit status: 0, or 1 on any failure.
pub fn verdict(failures: &[String]) -> ExitCode {
    if failures.is_empty() {
        println!("verdict        : PASS (every check held, verifier clean)");
        ExitCode::SUCCESS
    } else {
        println!("verdict        : FAIL ({} problem(s))", failures.len());
        for f in failures {
            println!("                 - {f}");
        }
        ExitCode::from(1)
    }
}
