//! Time sync at both body versions, and its answer.
//!
//! Reference: `docs/ic.md` (time sync).

mod common;

use common::{FRAMINGS, negotiate_with};
use hv_ic::endpoint::{DropReason, Endpoint, Forwarded, Outcome, Service};
use hv_ic::host;
use hv_ic::negotiate::FRAMEWORK_VERSIONS;
use hv_ic::parse::{Framing, ParseError, parse_message};
use hv_ic::response::MAX_RESPONSE_LEN;
use hv_ic::timesync::{TimeSample, parse_timesync};
use hv_ic::wire::{HeaderFlags, MsgType, Status, TimeSyncFlags, Version, WLTIMEDELTA};

const UNIX_2024: u64 = 1_704_067_200; // 2024-01-01T00:00:00Z
const PARENT: u64 = WLTIMEDELTA + UNIX_2024 * 10_000_000 + 1234;

fn endpoint_at(framing: Framing, version: Version) -> Endpoint {
    let mut ep = Endpoint::new(Service::TimeSync, framing);
    let v = negotiate_with(&mut ep, FRAMEWORK_VERSIONS, &[version]);
    assert_eq!(v.message, version);
    ep
}

fn round_trip(ep: &mut Endpoint, sample: &TimeSample, xid: u8) {
    let framing = ep.framing();
    let v = ep.negotiated().unwrap();
    let mut req = [0u8; 128];
    let n = host::write_timesync_request(&mut req, framing, v, xid, sample).unwrap();
    let mut out = [0u8; MAX_RESPONSE_LEN];
    let Outcome::Forward(Forwarded::TimeSync(r)) = ep.handle(&req[..n], &mut out) else {
        panic!("time sync not forwarded");
    };
    assert_eq!(r.sample, *sample);
    let len = r.write_response(&mut out).unwrap();
    assert_eq!(len, n, "answer echoes the request length");
    let at = framing.prefix_len();
    assert_eq!(&out[at + 20..len], &req[at + 20..n], "body echoed");
    let msg = parse_message(&out[..len], framing).unwrap();
    assert_eq!(msg.header.flags(), HeaderFlags::GUEST_RESPONSE);
    assert_eq!(
        host::parse_status_response(&out[..len], framing, MsgType::TIMESYNC, xid),
        Ok(Status::S_OK)
    );
}

#[test]
fn decodes_v1_layout_below_4_0_with_sync_and_sample_flags() {
    for framing in FRAMINGS {
        for version in [Version::new(1, 0), Version::new(3, 0)] {
            let mut ep = endpoint_at(framing, version);
            for flags in [TimeSyncFlags::SYNC, TimeSyncFlags::SAMPLE] {
                let sample = TimeSample::V1 {
                    parent_time: PARENT,
                    child_time: 77,
                    round_trip_time: 88,
                    flags,
                };
                round_trip(&mut ep, &sample, 3);
                assert_eq!(sample.flags().sync(), flags == TimeSyncFlags::SYNC);
                assert_eq!(sample.flags().sample(), flags == TimeSyncFlags::SAMPLE);
            }
        }
    }
}

#[test]
fn decodes_v4_layout_at_4_0() {
    for framing in FRAMINGS {
        let mut ep = endpoint_at(framing, Version::new(4, 0));
        for flags in [TimeSyncFlags::SYNC, TimeSyncFlags::SAMPLE] {
            let sample = TimeSample::V4 {
                parent_time: PARENT,
                vm_reference_time: 0x1122_3344_5566,
                flags,
                leap_indicator: 1,
                stratum: 2,
            };
            round_trip(&mut ep, &sample, 200);
            assert!(sample.is_v4());
            assert_eq!(
                sample.unix_time_100ns(),
                Some(UNIX_2024 * 10_000_000 + 1234)
            );
        }
    }
}

#[test]
fn same_bytes_decode_by_negotiated_version() {
    let mut b = [0u8; 28];
    b[0..8].copy_from_slice(&PARENT.to_le_bytes());
    b[8..16].copy_from_slice(&5u64.to_le_bytes());
    b[16] = 1; // v4 flags; v1 round_trip low byte
    b[24] = 2; // v1 flags
    assert_eq!(
        parse_timesync(&b, Version::new(3, 0)).unwrap(),
        TimeSample::V1 {
            parent_time: PARENT,
            child_time: 5,
            round_trip_time: 1,
            flags: TimeSyncFlags::SAMPLE
        }
    );
    assert_eq!(
        parse_timesync(&b, Version::new(4, 0)).unwrap(),
        TimeSample::V4 {
            parent_time: PARENT,
            vm_reference_time: 5,
            flags: TimeSyncFlags::SYNC,
            leap_indicator: 0,
            stratum: 0
        }
    );
}

#[test]
fn accepts_linux_packed_sizes_and_rejects_shorter_bodies() {
    // Linux: ictimesync_data 25 bytes, ictimesync_ref_data 22 bytes.
    assert!(parse_timesync(&[0u8; 25], Version::new(3, 0)).is_ok());
    assert!(parse_timesync(&[0u8; 22], Version::new(4, 0)).is_ok());
    assert_eq!(
        parse_timesync(&[0u8; 24], Version::new(3, 0)),
        Err(ParseError::BodyTooShort {
            msg_type: MsgType::TIMESYNC,
            needed: 25,
            len: 24
        })
    );
    assert_eq!(
        parse_timesync(&[0u8; 21], Version::new(4, 0)),
        Err(ParseError::BodyTooShort {
            msg_type: MsgType::TIMESYNC,
            needed: 22,
            len: 21
        })
    );
}

#[test]
fn endpoint_drops_short_time_sync_body() {
    let mut ep = endpoint_at(Framing::Bare, Version::new(4, 0));
    let mut msg = vec![0u8; 20 + 21];
    msg[4] = 4; // TIMESYNC
    msg[10] = 21;
    msg[17] = 3;
    let mut out = [0u8; 256];
    assert_eq!(
        ep.handle(&msg, &mut out),
        Outcome::Drop(DropReason::Malformed(ParseError::BodyTooShort {
            msg_type: MsgType::TIMESYNC,
            needed: 22,
            len: 21
        }))
    );
}

#[test]
fn host_refuses_sample_layout_that_contradicts_version() {
    let v3 = hv_ic::negotiate::NegotiatedVersions {
        framework: Version::new(3, 0),
        message: Version::new(3, 0),
    };
    let v4 = hv_ic::negotiate::NegotiatedVersions {
        message: Version::new(4, 0),
        ..v3
    };
    let s1 = TimeSample::V1 {
        parent_time: 0,
        child_time: 0,
        round_trip_time: 0,
        flags: TimeSyncFlags::SYNC,
    };
    let s4 = TimeSample::V4 {
        parent_time: 0,
        vm_reference_time: 0,
        flags: TimeSyncFlags::SYNC,
        leap_indicator: 0,
        stratum: 0,
    };
    let mut out = [0u8; 128];
    assert_eq!(
        host::write_timesync_request(&mut out, Framing::Pipe, v3, 0, &s4),
        Err(hv_ic::BuildError::VersionMismatch)
    );
    assert_eq!(
        host::write_timesync_request(&mut out, Framing::Pipe, v4, 0, &s1),
        Err(hv_ic::BuildError::VersionMismatch)
    );
    assert_eq!(
        host::write_timesync_request(&mut out, Framing::Pipe, v3, 0, &s1),
        Ok(8 + 20 + 28)
    );
    assert_eq!(
        host::write_timesync_request(&mut out, Framing::Pipe, v4, 0, &s4),
        Ok(8 + 20 + 24)
    );
}
