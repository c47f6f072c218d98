//! The safe Rust layer over KMCL.
#![no_std]
