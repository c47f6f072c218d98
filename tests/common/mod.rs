//! The end-to-end test rig, shared with `examples/simulate`: it lives in `vmbridge-sim`
//! (`crates/vmbridge-sim/src/rig/`) so that the tests and the example use one copy without
//! a `#[path]` include.
pub use vmbridge_sim::rig::*;
