//! Every class of malformed or unexpected message, and what the endpoint does with it.
//!
//! Reference: `docs/ic.md`.

mod common;

use common::{FRAMINGS, SERVICES, negotiate_fully};
use hv_ic::BuildError;
use hv_ic::endpoint::{DropReason, Endpoint, EndpointState, Outcome, Service};
use hv_ic::negotiate::{FRAMEWORK_VERSIONS, parse_negotiate};
use hv_ic::parse::{Framing, ParseError, parse_message};
use hv_ic::response::MAX_RESPONSE_LEN;
use hv_ic::wire::{HeaderFlags, MAX_MESSAGE_SIZE, MsgType, PipePacketType, Status, Version};

/// `icmsg_hdr` + body for `ty` with flags 0x03 and `icmsgsize = body.len()`.
fn message(ty: u16, body: &[u8]) -> Vec<u8> {
    let mut m = vec![0u8; 20];
    m[0] = 3;
    m[4..6].copy_from_slice(&ty.to_le_bytes());
    m[6] = 3;
    m[10..12].copy_from_slice(&(body.len() as u16).to_le_bytes());
    m[16] = 0x21;
    m[17] = 0x03;
    m.extend_from_slice(body);
    m
}

fn piped(msg: &[u8]) -> Vec<u8> {
    let mut v = vec![1, 0, 0, 0];
    v.extend_from_slice(&(msg.len() as u32).to_le_bytes());
    v.extend_from_slice(msg);
    v
}

fn frame(framing: Framing, msg: &[u8]) -> Vec<u8> {
    match framing {
        Framing::Pipe => piped(msg),
        Framing::Bare => msg.to_vec(),
    }
}

fn drop_reason(ep: &mut Endpoint, bytes: &[u8]) -> DropReason {
    let before = ep.state();
    let mut out = vec![0u8; MAX_RESPONSE_LEN];
    match ep.handle(bytes, &mut out) {
        Outcome::Drop(r) => {
            assert_eq!(
                ep.state(),
                before,
                "a dropped message leaves the state alone"
            );
            r
        }
        other => panic!("expected a drop, got {other:?}"),
    }
}

fn malformed(e: ParseError) -> DropReason {
    DropReason::Malformed(e)
}

#[test]
fn rejects_truncated_pipe_header() {
    let mut ep = Endpoint::new(Service::Heartbeat, Framing::Pipe);
    for len in 0..8 {
        assert_eq!(
            drop_reason(&mut ep, &[1u8; 8][..len]),
            malformed(ParseError::PipeHeaderTruncated { len })
        );
    }
}

#[test]
fn rejects_pipe_packet_types_other_than_data() {
    let mut ep = Endpoint::new(Service::Heartbeat, Framing::Pipe);
    for ty in [0u32, 2, 3, 4, 5, 0xFFFF_FFFF] {
        let mut b = piped(&message(0, &[0u8; 8]));
        b[0..4].copy_from_slice(&ty.to_le_bytes());
        assert_eq!(
            drop_reason(&mut ep, &b),
            malformed(ParseError::PipePacketType(PipePacketType(ty)))
        );
    }
}

#[test]
fn rejects_pipe_size_beyond_buffer_and_beyond_padding() {
    let mut ep = Endpoint::new(Service::Heartbeat, Framing::Pipe);
    let msg = message(0, &[0u8; 8]);
    for announced in [msg.len() as u32 + 1, 0xFFFF_FFFF] {
        let mut b = piped(&msg);
        b[4..8].copy_from_slice(&announced.to_le_bytes());
        assert_eq!(
            drop_reason(&mut ep, &b),
            malformed(ParseError::PipeSizeTooLarge {
                msgsize: announced,
                available: msg.len()
            })
        );
    }
    // Up to 7 bytes of padding are fine, 8 are not.
    let mut b = piped(&msg);
    b.extend_from_slice(&[0u8; 7]);
    assert!(parse_message(&b, Framing::Pipe).is_ok());
    b.push(0);
    assert_eq!(
        parse_message(&b, Framing::Pipe).unwrap_err(),
        ParseError::PipeSizeMismatch {
            msgsize: msg.len() as u32,
            available: msg.len() + 8
        }
    );
}

#[test]
fn rejects_message_longer_than_maximum() {
    for framing in FRAMINGS {
        let mut ep = Endpoint::new(Service::Heartbeat, framing);
        let body = vec![0u8; MAX_MESSAGE_SIZE - 20 + 1];
        let mut msg = message(1, &[]);
        msg.extend_from_slice(&body); // icmsgsize stays 0: only the total is too long
        assert_eq!(
            drop_reason(&mut ep, &frame(framing, &msg)),
            malformed(ParseError::MessageTooLong {
                len: MAX_MESSAGE_SIZE + 1
            })
        );
        let mut ok = message(1, &[]);
        ok.extend_from_slice(&body[1..]);
        assert!(parse_message(&frame(framing, &ok), framing).is_ok());
    }
}

#[test]
fn rejects_truncated_icmsg_header() {
    for framing in FRAMINGS {
        let mut ep = Endpoint::new(Service::Heartbeat, framing);
        let full = message(0, &[]);
        for len in 0..20 {
            assert_eq!(
                drop_reason(&mut ep, &frame(framing, &full[..len])),
                malformed(ParseError::HeaderTruncated { len })
            );
        }
    }
}

#[test]
fn rejects_icmsgsize_beyond_payload_and_tolerates_trailing_bytes() {
    for framing in FRAMINGS {
        let mut ep = Endpoint::new(Service::Heartbeat, framing);
        let mut msg = message(1, &[0u8; 16]);
        msg[10..12].copy_from_slice(&17u16.to_le_bytes());
        assert_eq!(
            drop_reason(&mut ep, &frame(framing, &msg)),
            malformed(ParseError::BodyTruncated {
                declared: 17,
                available: 16
            })
        );
        msg[10..12].copy_from_slice(&12u16.to_le_bytes());
        let framed = frame(framing, &msg);
        let parsed = parse_message(&framed, framing).unwrap();
        assert_eq!(parsed.body.len(), 12);
        assert_eq!(parsed.payload.len(), 36);
    }
}

#[test]
fn rejects_negotiate_body_shorter_than_its_head() {
    for framing in FRAMINGS {
        let mut ep = Endpoint::new(Service::Shutdown, framing);
        for len in 0..8 {
            assert_eq!(
                drop_reason(&mut ep, &frame(framing, &message(0, &[0u8; 8][..len]))),
                malformed(ParseError::NegotiateTruncated { len })
            );
        }
    }
}

#[test]
fn rejects_version_counts_above_100() {
    let mut ep = Endpoint::new(Service::Shutdown, Framing::Bare);
    for (f, m) in [(101u16, 1u16), (1, 101), (0xFFFF, 0xFFFF)] {
        let mut body = vec![0u8; 8 + 4 * (f as usize + m as usize)];
        body[0..2].copy_from_slice(&f.to_le_bytes());
        body[2..4].copy_from_slice(&m.to_le_bytes());
        let msg = message(0, &[]); // body too long for icmsgsize: build by hand
        let mut bytes = msg.clone();
        let n = body.len().min(MAX_MESSAGE_SIZE - 20);
        bytes[10..12].copy_from_slice(&(n as u16).to_le_bytes());
        bytes.extend_from_slice(&body[..n]);
        assert_eq!(
            drop_reason(&mut ep, &bytes),
            malformed(ParseError::TooManyVersions {
                framework: f,
                message: m
            })
        );
    }
    // Exactly 100 + 100 is accepted (and answered with no match here).
    let mut body = vec![0u8; 8 + 4 * 200];
    body[0..2].copy_from_slice(&100u16.to_le_bytes());
    body[2..4].copy_from_slice(&100u16.to_le_bytes());
    assert!(parse_negotiate(&body).is_ok());
    let mut out = [0u8; 64];
    assert_eq!(
        ep.handle(&message(0, &body), &mut out),
        Outcome::Respond(36)
    );
}

#[test]
fn rejects_version_lists_that_do_not_fit_the_body() {
    let mut ep = Endpoint::new(Service::Heartbeat, Framing::Pipe);
    for (f, m, have) in [(2u16, 2u16, 3usize), (1, 0, 0), (0, 1, 0), (2, 4, 23)] {
        let mut body = vec![0u8; 8 + have];
        body[0..2].copy_from_slice(&f.to_le_bytes());
        body[2..4].copy_from_slice(&m.to_le_bytes());
        assert_eq!(
            drop_reason(&mut ep, &piped(&message(0, &body))),
            malformed(ParseError::VersionsTruncated {
                needed: 8 + 4 * (f as usize + m as usize),
                available: 8 + have
            })
        );
    }
}

#[test]
fn rejects_service_bodies_below_their_minimum() {
    let cases = [
        (Service::Heartbeat, 8usize),
        (Service::Shutdown, 12),
        (Service::TimeSync, 22),
    ];
    for (service, min) in cases {
        let mut ep = Endpoint::new(service, Framing::Bare);
        negotiate_fully(&mut ep);
        for len in 0..min {
            assert_eq!(
                drop_reason(&mut ep, &message(service.msg_type().0, &vec![0u8; len])),
                malformed(ParseError::BodyTooShort {
                    msg_type: service.msg_type(),
                    needed: min,
                    len
                })
            );
        }
    }
}

#[test]
fn drops_service_messages_before_negotiation() {
    for service in SERVICES {
        let mut ep = Endpoint::new(service, Framing::Pipe);
        assert_eq!(ep.expects(), MsgType::NEGOTIATE);
        for ty in [1u16, 3, 4, 9, 0xFFFF] {
            assert_eq!(
                drop_reason(&mut ep, &piped(&message(ty, &[0u8; 40]))),
                DropReason::NotNegotiated(MsgType(ty))
            );
        }
    }
}

#[test]
fn refuses_unknown_and_foreign_message_types_with_e_fail_echo() {
    for service in SERVICES {
        for framing in FRAMINGS {
            let mut ep = Endpoint::new(service, framing);
            let v = negotiate_fully(&mut ep);
            for ty in [1u16, 2, 3, 4, 5, 6, 7, 8, 9, 0x7FFF, 0xFFFF] {
                if ty == service.msg_type().0 {
                    continue;
                }
                let req = frame(framing, &message(ty, &[0xEE; 40]));
                let mut out = vec![0u8; MAX_RESPONSE_LEN];
                assert_eq!(
                    ep.handle(&req, &mut out),
                    Outcome::Respond(req.len()),
                    "{service:?} type {ty}"
                );
                let answer = parse_message(&out[..req.len()], framing).unwrap();
                assert_eq!(answer.header.status(), Status::E_FAIL);
                assert_eq!(answer.header.flags(), HeaderFlags::GUEST_RESPONSE);
                assert_eq!(answer.header.transaction_id, 0x21);
                assert_eq!(answer.msg_type(), MsgType(ty));
                assert_eq!(answer.body, &[0xEE; 40]);
                assert_eq!(ep.negotiated(), Some(v), "refusal keeps the negotiation");
            }
        }
    }
}

#[test]
fn drops_messages_flagged_as_responses() {
    for flags in [0x04u8, 0x05, 0x07, 0xFF] {
        let mut ep = Endpoint::new(Service::Heartbeat, Framing::Bare);
        let mut msg = message(0, &[0u8; 8]);
        msg[17] = flags;
        assert_eq!(
            drop_reason(&mut ep, &msg),
            DropReason::UnexpectedResponse(HeaderFlags(flags))
        );
    }
}

#[test]
fn accepts_requests_without_transaction_or_request_flags() {
    // OpenVMM's time sync IC has sent flags 0; the guest answers anyway.
    let mut ep = Endpoint::new(Service::Heartbeat, Framing::Bare);
    let mut req = [0u8; 128];
    let n = hv_ic::host::write_negotiate_request(
        &mut req,
        Framing::Bare,
        FRAMEWORK_VERSIONS,
        &[hv_ic::wire::Version::new(3, 0)],
        0,
    )
    .unwrap();
    req[17] = 0;
    let mut out = [0u8; 128];
    assert_eq!(ep.handle(&req[..n], &mut out), Outcome::Respond(36));
    assert!(matches!(ep.state(), EndpointState::Ready(_)));
}

#[test]
fn drops_when_output_buffer_is_too_small() {
    for framing in FRAMINGS {
        let mut ep = Endpoint::new(Service::Heartbeat, framing);
        let mut req = [0u8; 128];
        let n = hv_ic::host::write_negotiate_request(
            &mut req,
            framing,
            FRAMEWORK_VERSIONS,
            hv_ic::negotiate::HEARTBEAT_VERSIONS,
            0,
        )
        .unwrap();
        let needed = framing.prefix_len() + 36;
        let mut out = vec![0u8; needed - 1];
        assert_eq!(
            ep.handle(&req[..n], &mut out),
            Outcome::Drop(DropReason::Output(BuildError::OutputTooSmall {
                needed,
                available: needed - 1
            }))
        );
        assert_eq!(
            ep.state(),
            EndpointState::AwaitingNegotiate,
            "unanswered negotiation changes nothing"
        );
        negotiate_fully(&mut ep);
        let hb = frame(framing, &message(1, &[0u8; 40]));
        let mut out = vec![0u8; hb.len() - 1];
        assert_eq!(
            ep.handle(&hb, &mut out),
            Outcome::Drop(DropReason::Output(BuildError::OutputTooSmall {
                needed: hb.len(),
                available: hb.len() - 1
            }))
        );
    }
}

/// `host::forged_header` (what tests and fuzzers send as a hostile host) puts each field
/// it is given where `icmsg_hdr` has it: a message built with it parses back to them, and
/// a declared size that lies is carried as given.
#[test]
fn forged_header_puts_each_field_where_icmsg_hdr_has_it() {
    let body = [7u8; 12];
    let m = [
        &hv_ic::host::forged_header(MsgType::SHUTDOWN, 0x03, 12),
        &body[..],
    ]
    .concat();
    let msg = parse_message(&m, Framing::Bare).expect("a well-formed message");
    assert_eq!(msg.header.msg_type(), MsgType::SHUTDOWN);
    assert_eq!(msg.header.flags(), HeaderFlags(0x03));
    assert_eq!(msg.header.msg_size.get(), 12);
    assert_eq!(msg.header.framework_version, Version::new(3, 0));
    assert_eq!(msg.header.message_version, Version::new(3, 0));
    assert_eq!(msg.header.transaction_id, 0);
    assert_eq!(msg.body, &body);

    let lying = [
        &hv_ic::host::forged_header(MsgType::HEARTBEAT, 0x03, 40),
        &body[..],
    ]
    .concat();
    assert_eq!(&lying[10..12], &40u16.to_le_bytes());
    assert!(parse_message(&lying, Framing::Bare).is_err());
}
