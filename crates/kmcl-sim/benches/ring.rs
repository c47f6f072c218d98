//! Ring write+read throughput against a plain memcpy of the same bytes.
//!
//! Reference: `shared/reference/vmbus-protocol.md` §1.3–§1.4.

fn main() {}
