//! Nothing the host sends can make the parser or the endpoint panic, and every answer the
//! endpoint writes is itself a well-formed guest response.
//!
//! Reference: `docs/ic.md`; the rule "no panics reachable from peer input".

mod common;

use common::{FRAMINGS, Rng, SERVICES, host_versions, negotiate_fully};
use hv_ic::BuildError;
use hv_ic::endpoint::{Endpoint, Forwarded, Outcome, Service};
use hv_ic::heartbeat::parse_heartbeat;
use hv_ic::host::{self, HeartbeatLayout};
use hv_ic::negotiate::{FRAMEWORK_VERSIONS, NegotiatedVersions, parse_negotiate};
use hv_ic::parse::{Framing, parse_message};
use hv_ic::response::MAX_RESPONSE_LEN;
use hv_ic::shutdown::{ShutdownDecision, ShutdownParams, parse_shutdown};
use hv_ic::timesync::{TimeSample, parse_timesync};
use hv_ic::wire::{ApplicationState, HeaderFlags, ShutdownFlags, TimeSyncFlags, Version};

/// Valid host messages of every kind, in `framing`.
fn seeds(framing: Framing) -> Vec<Vec<u8>> {
    let mut v = Vec::new();
    let mut buf = vec![0u8; 4096];
    let mut push = |n: usize, buf: &[u8]| v.push(buf[..n].to_vec());
    for service in SERVICES {
        let n = host::write_negotiate_request(
            &mut buf,
            framing,
            FRAMEWORK_VERSIONS,
            host_versions(service),
            0,
        )
        .unwrap();
        push(n, &buf);
    }
    let v3 = NegotiatedVersions {
        framework: Version::new(3, 0),
        message: Version::new(3, 0),
    };
    let v4 = NegotiatedVersions {
        message: Version::new(4, 0),
        ..v3
    };
    for layout in [
        HeartbeatLayout::Reserved40,
        HeartbeatLayout::AppState16(ApplicationState::HEALTHY),
    ] {
        let n = host::write_heartbeat_request(&mut buf, framing, v3, 1, 99, layout).unwrap();
        push(n, &buf);
    }
    let params = ShutdownParams {
        reason_code: 0x8000_0000,
        timeout_secs: 5,
        flags: ShutdownFlags(3),
    };
    let n = host::write_shutdown_request(&mut buf, framing, v3, 2, &params, b"bye").unwrap();
    push(n, &buf);
    let s1 = TimeSample::V1 {
        parent_time: 1,
        child_time: 2,
        round_trip_time: 3,
        flags: TimeSyncFlags::SYNC,
    };
    let n = host::write_timesync_request(&mut buf, framing, v3, 3, &s1).unwrap();
    push(n, &buf);
    let s4 = TimeSample::V4 {
        parent_time: 1,
        vm_reference_time: 2,
        flags: TimeSyncFlags::SAMPLE,
        leap_indicator: 0,
        stratum: 1,
    };
    let n = host::write_timesync_request(&mut buf, framing, v4, 4, &s4).unwrap();
    push(n, &buf);
    v
}

/// Fresh and negotiated endpoints for every service in `framing`.
fn endpoints(framing: Framing) -> Vec<Endpoint> {
    let mut eps = Vec::new();
    for service in SERVICES {
        eps.push(Endpoint::new(service, framing));
        let mut ready = Endpoint::new(service, framing);
        negotiate_fully(&mut ready);
        eps.push(ready);
    }
    // A time sync endpoint negotiated below 4.0 decodes the other layout.
    let mut old = Endpoint::new(Service::TimeSync, framing);
    common::negotiate_with(&mut old, FRAMEWORK_VERSIONS, &[Version::new(3, 0)]);
    eps.push(old);
    eps
}

/// An answer built later must fit a full-size buffer and parse; into a smaller one it may
/// only fail with `OutputTooSmall`.
fn check_late_answer(r: Result<usize, BuildError>, out: &[u8], framing: Framing) {
    match r {
        Ok(n) => {
            let answer = parse_message(&out[..n], framing).expect("answers parse");
            assert_eq!(answer.header.flags(), HeaderFlags::GUEST_RESPONSE);
        }
        Err(BuildError::OutputTooSmall { needed, .. }) => {
            assert!(out.len() < MAX_RESPONSE_LEN && needed > out.len());
        }
        Err(e) => panic!("unexpected {e:?}"),
    }
}

/// Feeds `input` to `ep` and checks the outcome's invariants.
/// Returns 0 for Respond, 1 for Forward, 2 for Drop.
fn feed(ep: &mut Endpoint, input: &[u8], out: &mut [u8]) -> usize {
    let framing = ep.framing();
    let outcome = ep.handle(input, out);
    let kind = match outcome {
        Outcome::Respond(_) => 0,
        Outcome::Forward(_) => 1,
        Outcome::Drop(_) => 2,
    };
    match outcome {
        Outcome::Respond(n) => {
            assert!(n <= out.len());
            let answer = parse_message(&out[..n], framing).expect("answers parse");
            assert_eq!(answer.header.flags(), HeaderFlags::GUEST_RESPONSE);
        }
        Outcome::Forward(Forwarded::Shutdown(r)) => {
            check_late_answer(
                r.write_response(ShutdownDecision::Refuse, out),
                out,
                framing,
            );
        }
        Outcome::Forward(Forwarded::TimeSync(r)) => {
            check_late_answer(r.write_response(out), out, framing);
        }
        Outcome::Drop(_) => {}
    }
    // The free-standing decoders must not panic on the same bytes either.
    let _ = parse_negotiate(input);
    let _ = parse_heartbeat(input);
    let _ = parse_shutdown(input);
    let _ = parse_timesync(input, Version::new(3, 0));
    let _ = parse_timesync(input, Version::new(4, 0));
    let _ =
        host::parse_negotiate_response(input, framing, 0, FRAMEWORK_VERSIONS, FRAMEWORK_VERSIONS);
    let _ = host::parse_heartbeat_response(input, framing, 0, 0);
    kind
}

#[test]
fn never_panics_on_any_prefix_of_a_valid_message() {
    let mut out = vec![0u8; MAX_RESPONSE_LEN];
    let mut fed = 0usize;
    for framing in FRAMINGS {
        let mut eps = endpoints(framing);
        for seed in seeds(framing) {
            for len in 0..=seed.len() {
                for ep in &mut eps {
                    let _ = feed(ep, &seed[..len], &mut out);
                    fed += 1;
                }
            }
        }
    }
    assert!(fed > 10_000, "{fed}");
}

#[test]
fn never_panics_on_pseudo_random_buffers() {
    let mut rng = Rng(0x1c0d_e5ee_d000_0001);
    let mut out = vec![0u8; MAX_RESPONSE_LEN];
    let mut kinds = [0usize; 3];
    for framing in FRAMINGS {
        let mut eps = endpoints(framing);
        let seeds = seeds(framing);
        for i in 0..100_000usize {
            let input = match i % 4 {
                // Fully random bytes of random length.
                0 => {
                    let mut b = vec![0u8; rng.below(300)];
                    rng.fill(&mut b);
                    b
                }
                // A valid message with a few bytes flipped, mostly in the headers.
                1 | 2 => {
                    let mut b = seeds[rng.below(seeds.len())].clone();
                    for _ in 0..1 + rng.below(4) {
                        let at = if rng.below(4) == 0 {
                            rng.below(b.len())
                        } else {
                            rng.below(b.len().min(48))
                        };
                        b[at] = rng.next() as u8;
                    }
                    b
                }
                // A valid message cut or extended.
                _ => {
                    let mut b = seeds[rng.below(seeds.len())].clone();
                    let len = rng.below(b.len() + 16);
                    b.resize(len, rng.next() as u8);
                    b
                }
            };
            let k = rng.below(eps.len());
            kinds[feed(&mut eps[k], &input, &mut out)] += 1;
            // Small output buffers must fail cleanly too.
            let small = rng.below(64);
            let _ = feed(&mut eps[k], &input, &mut out[..small]);
        }
    }
    // The mutations reach every outcome, not only the parser's first check.
    assert!(
        kinds.iter().all(|&k| k > 1000),
        "respond/forward/drop = {kinds:?}"
    );
}
