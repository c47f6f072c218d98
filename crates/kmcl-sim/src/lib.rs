//! A host-side KMCL simulator.
