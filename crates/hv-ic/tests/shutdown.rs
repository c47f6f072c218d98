//! Shutdown: flags decoding, forwarding, and answers built later for a decision.
//!
//! Reference: `docs/ic.md` (shutdown).

mod common;

use common::{FRAMINGS, negotiate_fully};
use hv_ic::endpoint::{Endpoint, Forwarded, Outcome, Service};
use hv_ic::host;
use hv_ic::parse::{Framing, parse_message};
use hv_ic::response::MAX_RESPONSE_LEN;
use hv_ic::shutdown::{
    ShutdownAction, ShutdownDecision, ShutdownParams, ShutdownRequest, parse_shutdown,
    shutdown_message,
};
use hv_ic::wire::{
    HeaderFlags, MsgType, SHTDN_REASON_FLAG_PLANNED, SHUTDOWN_BODY_LEN, ShutdownFlags, Status,
};

fn forward(
    ep: &mut Endpoint,
    params: &ShutdownParams,
    text: &[u8],
    xid: u8,
) -> (ShutdownRequest, Vec<u8>) {
    let framing = ep.framing();
    let v = ep.negotiated().unwrap();
    let mut req = vec![0u8; 4096];
    let n = host::write_shutdown_request(&mut req, framing, v, xid, params, text).unwrap();
    req.truncate(n);
    let mut out = vec![0u8; MAX_RESPONSE_LEN];
    match ep.handle(&req, &mut out) {
        Outcome::Forward(Forwarded::Shutdown(r)) => (r, req),
        other => panic!("shutdown not forwarded: {other:?}"),
    }
}

#[test]
fn decodes_force_restart_hibernate_flags_like_linux() {
    let table = [
        (0u32, ShutdownAction::PowerOff, false),
        (1, ShutdownAction::PowerOff, true),
        (2, ShutdownAction::Restart, false),
        (3, ShutdownAction::Restart, true),
        (4, ShutdownAction::Hibernate, false),
        (5, ShutdownAction::Hibernate, true),
        (6, ShutdownAction::Invalid, false),
        (7, ShutdownAction::Invalid, true),
        (8, ShutdownAction::Invalid, false),
        (0x8000_0001, ShutdownAction::Invalid, true),
    ];
    let mut ep = Endpoint::new(Service::Shutdown, Framing::Pipe);
    negotiate_fully(&mut ep);
    for (flags, action, force) in table {
        let params = ShutdownParams {
            reason_code: SHTDN_REASON_FLAG_PLANNED,
            timeout_secs: 30,
            flags: ShutdownFlags(flags),
        };
        let (r, _) = forward(&mut ep, &params, &[], 0);
        assert_eq!(r.params, params);
        assert_eq!(r.params.action(), action, "flags {flags:#x}");
        assert_eq!(r.params.force(), force, "flags {flags:#x}");
        assert_eq!(r.params.flags.restart(), flags & 2 != 0);
        assert_eq!(r.params.flags.hibernate(), flags & 4 != 0);
    }
}

#[test]
fn decodes_reason_code_and_timeout() {
    let mut b = [0u8; 12];
    b[0..4].copy_from_slice(&0x8004_0001u32.to_le_bytes());
    b[4..8].copy_from_slice(&120u32.to_le_bytes());
    b[8..12].copy_from_slice(&2u32.to_le_bytes());
    let p = parse_shutdown(&b).unwrap();
    assert_eq!(p.reason_code, 0x8004_0001);
    assert_eq!(p.timeout_secs, 120);
    assert_eq!(p.flags, ShutdownFlags::RESTART);
    assert!(shutdown_message(&b).is_empty());
}

#[test]
fn response_carries_caller_decision_transaction_id_and_request_length() {
    for framing in FRAMINGS {
        let mut ep = Endpoint::new(Service::Shutdown, framing);
        negotiate_fully(&mut ep);
        let params = ShutdownParams {
            reason_code: SHTDN_REASON_FLAG_PLANNED,
            timeout_secs: 0,
            flags: ShutdownFlags::FORCE,
        };
        let text: Vec<u8> = "Shutdown requested by host"
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
        for (decision, status) in [
            (ShutdownDecision::Accept, Status::S_OK),
            (ShutdownDecision::Refuse, Status::E_FAIL),
            (
                ShutdownDecision::Status(Status::MACHINE_LOCKED),
                Status::MACHINE_LOCKED,
            ),
        ] {
            let (r, req) = forward(&mut ep, &params, &text, 0x5a);
            assert_eq!(req.len(), framing.prefix_len() + 20 + SHUTDOWN_BODY_LEN);
            let mut out = vec![0u8; MAX_RESPONSE_LEN];
            let len = r.write_response(decision, &mut out).unwrap();
            assert_eq!(len, req.len(), "answer has the request's length");
            assert_eq!(r.ticket.response_len(), len);
            assert_eq!(
                host::parse_status_response(&out[..len], framing, MsgType::SHUTDOWN, 0x5a),
                Ok(status)
            );
            let msg = parse_message(&out[..len], framing).unwrap();
            assert_eq!(msg.header.flags(), HeaderFlags::GUEST_RESPONSE);
            assert_eq!(parse_shutdown(msg.body).unwrap(), params, "head echoed");
            assert!(
                shutdown_message(msg.body).iter().all(|&b| b == 0),
                "text zeroed"
            );
            // The endpoint stays ready for the next request.
            assert_eq!(ep.expects(), MsgType::SHUTDOWN);
        }
    }
}

#[test]
fn response_into_short_buffer_fails_without_writing_past_it() {
    let mut ep = Endpoint::new(Service::Shutdown, Framing::Bare);
    negotiate_fully(&mut ep);
    let params = ShutdownParams {
        reason_code: 0,
        timeout_secs: 0,
        flags: ShutdownFlags(0),
    };
    let (r, _) = forward(&mut ep, &params, &[], 0);
    let mut out = [0u8; 100];
    assert_eq!(
        r.write_response(ShutdownDecision::Accept, &mut out),
        Err(hv_ic::BuildError::OutputTooSmall {
            needed: 20 + SHUTDOWN_BODY_LEN,
            available: 100
        })
    );
}

#[test]
fn host_refuses_shutdown_text_longer_than_2048_bytes() {
    let v = hv_ic::negotiate::NegotiatedVersions {
        framework: hv_ic::wire::FRAMEWORK_3_0,
        message: hv_ic::wire::Version::new(3, 2),
    };
    let mut out = [0u8; 4096];
    let params = ShutdownParams {
        reason_code: 0,
        timeout_secs: 0,
        flags: ShutdownFlags(0),
    };
    assert_eq!(
        host::write_shutdown_request(&mut out, Framing::Bare, v, 0, &params, &[1u8; 2049]),
        Err(hv_ic::BuildError::MessageTooLong { len: 2049 })
    );
}
