//! Heartbeat: both body layouts, echo length, sequence handling.
//!
//! Reference: `docs/ic.md` (heartbeat).

mod common;

use common::{FRAMINGS, Rng, negotiate_fully};
use hv_ic::endpoint::{DropReason, Endpoint, Outcome, Service};
use hv_ic::host::{self, HeartbeatLayout, HostError};
use hv_ic::parse::{Framing, ParseError, parse_message};
use hv_ic::response::MAX_RESPONSE_LEN;
use hv_ic::wire::{ApplicationState, HeaderFlags, MsgType, Status};

fn ready(framing: Framing) -> Endpoint {
    let mut ep = Endpoint::new(Service::Heartbeat, framing);
    negotiate_fully(&mut ep);
    ep
}

/// A heartbeat request with an arbitrary body of `body_len` bytes (`body_len >= 8`).
fn raw_heartbeat(framing: Framing, seq: u64, body_len: usize, fill: u8, xid: u8) -> Vec<u8> {
    let mut msg = vec![0u8; 20 + body_len];
    msg[0..4].copy_from_slice(&[3, 0, 0, 0]);
    msg[4..6].copy_from_slice(&1u16.to_le_bytes());
    msg[6..10].copy_from_slice(&[3, 0, 0, 0]);
    msg[10..12].copy_from_slice(&(body_len as u16).to_le_bytes());
    msg[16] = xid;
    msg[17] = 0x03;
    msg[20..28].copy_from_slice(&seq.to_le_bytes());
    for b in &mut msg[28..] {
        *b = fill;
    }
    match framing {
        Framing::Bare => msg,
        Framing::Pipe => {
            let mut v = vec![1, 0, 0, 0];
            v.extend_from_slice(&(msg.len() as u32).to_le_bytes());
            v.extend_from_slice(&msg);
            v
        }
    }
}

#[test]
fn answers_both_body_layouts_incrementing_only_the_sequence_number() {
    for framing in FRAMINGS {
        let mut ep = ready(framing);
        let v = ep.negotiated().unwrap();
        for layout in [
            HeartbeatLayout::Reserved40,
            HeartbeatLayout::AppState16(ApplicationState::HEALTHY),
        ] {
            let mut req = [0u8; 128];
            let n = host::write_heartbeat_request(&mut req, framing, v, 0, 41, layout).unwrap();
            let mut out = [0u8; MAX_RESPONSE_LEN];
            let Outcome::Respond(len) = ep.handle(&req[..n], &mut out) else {
                panic!("heartbeat must be answered");
            };
            assert_eq!(len, n, "echoes the length received");
            let body_at = framing.prefix_len() + 20;
            assert_eq!(&out[body_at..body_at + 8], &42u64.to_le_bytes());
            assert_eq!(
                &out[body_at + 8..len],
                &req[body_at + 8..n],
                "rest of body untouched"
            );
            assert_eq!(&out[..framing.prefix_len()], &req[..framing.prefix_len()]);
            let msg = parse_message(&out[..len], framing).unwrap();
            assert_eq!(msg.header.flags(), HeaderFlags::GUEST_RESPONSE);
            assert_eq!(msg.header.status(), Status::S_OK);
            assert_eq!(msg.header.msg_size.get() as usize, len - body_at);
            assert_eq!(
                host::parse_heartbeat_response(&out[..len], framing, 0, 41),
                Ok(42)
            );
        }
    }
}

#[test]
fn accepts_any_body_of_eight_bytes_or_more_and_echoes_its_length() {
    for framing in FRAMINGS {
        let mut ep = ready(framing);
        for body_len in [8usize, 9, 12, 13, 16, 17, 40, 41, 64, 1000] {
            let req = raw_heartbeat(framing, 5, body_len, 0xA5, 9);
            let mut out = vec![0u8; MAX_RESPONSE_LEN];
            assert_eq!(
                ep.handle(&req, &mut out),
                Outcome::Respond(req.len()),
                "body {body_len}"
            );
            let mut expect = req.clone();
            let at = framing.prefix_len();
            expect[at + 17] = 0x05;
            expect[at + 20..at + 28].copy_from_slice(&6u64.to_le_bytes());
            assert_eq!(&out[..req.len()], &expect[..], "body {body_len}");
        }
    }
}

#[test]
fn rejects_heartbeat_body_below_eight_bytes() {
    for framing in FRAMINGS {
        let mut ep = ready(framing);
        for body_len in 0..8usize {
            let mut req = raw_heartbeat(framing, 0, 8, 0, 0);
            // shrink the declared and carried size to body_len
            let at = framing.prefix_len();
            req.truncate(at + 20 + body_len);
            req[at + 10..at + 12].copy_from_slice(&(body_len as u16).to_le_bytes());
            if framing == Framing::Pipe {
                req[4..8].copy_from_slice(&((20 + body_len) as u32).to_le_bytes());
            }
            let mut out = [0u8; 256];
            assert_eq!(
                ep.handle(&req, &mut out),
                Outcome::Drop(DropReason::Malformed(ParseError::BodyTooShort {
                    msg_type: MsgType::HEARTBEAT,
                    needed: 8,
                    len: body_len
                }))
            );
        }
    }
}

#[test]
fn sequence_number_increments_over_ten_thousand_heartbeats() {
    let mut rng = Rng(0x5eed_0001);
    for framing in FRAMINGS {
        let mut ep = ready(framing);
        let v = ep.negotiated().unwrap();
        let mut seq = 0u64;
        let mut req = [0u8; 128];
        let mut out = [0u8; 256];
        for i in 0..10_000u32 {
            // The host normally counts up; jump now and then, including across u64::MAX.
            seq = match i % 2500 {
                0 => u64::MAX - 3,
                1250 => rng.next(),
                _ => seq.wrapping_add(1),
            };
            let layout = if i % 2 == 0 {
                HeartbeatLayout::Reserved40
            } else {
                HeartbeatLayout::AppState16(ApplicationState::HEALTHY)
            };
            let xid = i as u8;
            let n = host::write_heartbeat_request(&mut req, framing, v, xid, seq, layout).unwrap();
            let Outcome::Respond(len) = ep.handle(&req[..n], &mut out) else {
                panic!("heartbeat {i} not answered");
            };
            assert_eq!(len, n);
            assert_eq!(
                host::parse_heartbeat_response(&out[..len], framing, xid, seq),
                Ok(seq.wrapping_add(1)),
                "heartbeat {i} seq {seq}"
            );
        }
    }
}

#[test]
fn pipe_padding_is_not_echoed() {
    let mut ep = ready(Framing::Pipe);
    let mut req = raw_heartbeat(Framing::Pipe, 1, 16, 0, 0);
    let exact = req.len();
    req.extend_from_slice(&[0u8; 4]); // ring padding to a multiple of 8
    let mut out = [0u8; 256];
    assert_eq!(ep.handle(&req, &mut out), Outcome::Respond(exact));
}

#[test]
fn host_detects_a_wrong_sequence_number() {
    let mut ep = ready(Framing::Bare);
    let v = ep.negotiated().unwrap();
    let mut req = [0u8; 128];
    let n = host::write_heartbeat_request(
        &mut req,
        Framing::Bare,
        v,
        0,
        10,
        HeartbeatLayout::Reserved40,
    )
    .unwrap();
    let mut out = [0u8; 256];
    let Outcome::Respond(len) = ep.handle(&req[..n], &mut out) else {
        panic!()
    };
    assert_eq!(
        host::parse_heartbeat_response(&out[..len], Framing::Bare, 0, 11),
        Err(HostError::WrongSequence {
            expected: 12,
            got: 11
        })
    );
    assert_eq!(
        host::parse_heartbeat_response(&req[..n], Framing::Bare, 0, 10),
        Err(HostError::NotAResponse(HeaderFlags::HOST_REQUEST)),
        "the request itself is not an answer"
    );
}
