//! Shared helpers for the hv-ic integration tests.
//!
//! Reference: `docs/ic.md`.
#![allow(dead_code, reason = "each test binary uses a different subset")]

use hv_ic::endpoint::{Endpoint, Outcome, Service};
use hv_ic::host;
use hv_ic::negotiate::{FRAMEWORK_VERSIONS, NegotiatedVersions};
use hv_ic::parse::Framing;
use hv_ic::response::MAX_RESPONSE_LEN;
use hv_ic::wire::Version;

/// xorshift64*: deterministic pseudo-random numbers without dependencies.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            *b = self.next() as u8;
        }
    }
}

/// Every host version list the reference gives for a service.
pub fn host_versions(service: Service) -> &'static [Version] {
    match service {
        Service::Heartbeat => hv_ic::negotiate::HEARTBEAT_VERSIONS,
        Service::Shutdown => hv_ic::negotiate::SHUTDOWN_VERSIONS,
        Service::TimeSync => hv_ic::negotiate::TIMESYNC_VERSIONS,
    }
}

pub const SERVICES: [Service; 3] = [Service::Heartbeat, Service::Shutdown, Service::TimeSync];
pub const FRAMINGS: [Framing; 2] = [Framing::Pipe, Framing::Bare];

/// Negotiates `ep` with the host's full lists and returns the agreed versions.
pub fn negotiate_fully(ep: &mut Endpoint) -> NegotiatedVersions {
    negotiate_with(ep, FRAMEWORK_VERSIONS, host_versions(ep.service()))
}

/// Negotiates `ep` offering `fw` / `msg`; panics (test failure) if no agreement.
pub fn negotiate_with(ep: &mut Endpoint, fw: &[Version], msg: &[Version]) -> NegotiatedVersions {
    let framing = ep.framing();
    let mut req = vec![0u8; 2048];
    let n = host::write_negotiate_request(&mut req, framing, fw, msg, 0).expect("request fits");
    let mut out = vec![0u8; MAX_RESPONSE_LEN];
    let Outcome::Respond(len) = ep.handle(&req[..n], &mut out) else {
        panic!("negotiation not answered");
    };
    host::parse_negotiate_response(&out[..len], framing, 0, fw, msg).expect("agreement")
}
