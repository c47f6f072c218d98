//! Hyper-V integration-component protocols.
#![no_std]
#![forbid(unsafe_code)]
