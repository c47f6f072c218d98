//! Byte-exact vectors built from the field tables of the reference.
//!
//! Reference: `docs/ic.md` (the pipe header, `icmsg_hdr`
//! offsets; OpenVMM's shutdown offer: framework [1.0, 3.0], messages
//! [1.0, 3.0, 3.1, 3.2], ascending, header versions 0.0, flags 0x03, transaction id 0;
//! guest answer: flags 0x05, counts 1/1, `icmsgsize = 16`; heartbeat).

mod common;

use hv_ic::endpoint::{Endpoint, Outcome, Service};
use hv_ic::host::{self, HeartbeatLayout};
use hv_ic::negotiate::{FRAMEWORK_VERSIONS, NegotiatedVersions, SHUTDOWN_VERSIONS};
use hv_ic::parse::Framing;
use hv_ic::response::MAX_RESPONSE_LEN;
use hv_ic::wire::Version;

#[rustfmt::skip]
const SHUTDOWN_NEGOTIATE_REQUEST: [u8; 60] = [
    // vmbuspipe_hdr: DATA, msgsize 52 (20 + 32)
    0x01, 0x00, 0x00, 0x00, 0x34, 0x00, 0x00, 0x00,
    // icmsg_hdr: icverframe 0.0, type 0, icvermsg 0.0, icmsgsize 32, status 0, xid 0, flags 0x03, reserved
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x20, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00,
    // icmsg_negotiate: 2 framework versions, 4 message versions, reserved
    0x02, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00,
    // framework 1.0, 3.0
    0x01, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00,
    // shutdown 1.0, 3.0, 3.1, 3.2
    0x01, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00,
    0x03, 0x00, 0x01, 0x00, 0x03, 0x00, 0x02, 0x00,
];

#[rustfmt::skip]
const SHUTDOWN_NEGOTIATE_RESPONSE: [u8; 44] = [
    // vmbuspipe_hdr: DATA, msgsize 36 (20 + 16)
    0x01, 0x00, 0x00, 0x00, 0x24, 0x00, 0x00, 0x00,
    // icmsg_hdr: header fields echoed, icmsgsize 16, status S_OK, xid 0, flags 0x05
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x05, 0x00, 0x00,
    // counts 1/1, reserved
    0x01, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00,
    // framework 3.0, shutdown 3.2 (Linux's first preferences)
    0x03, 0x00, 0x00, 0x00, 0x03, 0x00, 0x02, 0x00,
];

#[test]
fn host_builds_openvmm_shutdown_negotiate_request_byte_for_byte() {
    let mut out = [0u8; 128];
    let n = host::write_negotiate_request(
        &mut out,
        Framing::Pipe,
        FRAMEWORK_VERSIONS,
        SHUTDOWN_VERSIONS,
        0,
    )
    .unwrap();
    assert_eq!(&out[..n], &SHUTDOWN_NEGOTIATE_REQUEST[..]);
    // Bare framing is the same bytes without the pipe header.
    let n = host::write_negotiate_request(
        &mut out,
        Framing::Bare,
        FRAMEWORK_VERSIONS,
        SHUTDOWN_VERSIONS,
        0,
    )
    .unwrap();
    assert_eq!(&out[..n], &SHUTDOWN_NEGOTIATE_REQUEST[8..]);
}

#[test]
fn guest_answers_openvmm_shutdown_negotiate_byte_for_byte() {
    let mut ep = Endpoint::new(Service::Shutdown, Framing::Pipe);
    let mut out = [0u8; MAX_RESPONSE_LEN];
    assert_eq!(
        ep.handle(&SHUTDOWN_NEGOTIATE_REQUEST, &mut out),
        Outcome::Respond(44)
    );
    assert_eq!(&out[..44], &SHUTDOWN_NEGOTIATE_RESPONSE[..]);

    let mut ep = Endpoint::new(Service::Shutdown, Framing::Bare);
    assert_eq!(
        ep.handle(&SHUTDOWN_NEGOTIATE_REQUEST[8..], &mut out),
        Outcome::Respond(36)
    );
    assert_eq!(&out[..36], &SHUTDOWN_NEGOTIATE_RESPONSE[8..]);

    assert_eq!(
        host::parse_negotiate_response(
            &SHUTDOWN_NEGOTIATE_RESPONSE,
            Framing::Pipe,
            0,
            FRAMEWORK_VERSIONS,
            SHUTDOWN_VERSIONS
        ),
        Ok(NegotiatedVersions {
            framework: Version::new(3, 0),
            message: Version::new(3, 2)
        })
    );
}

#[test]
fn host_accepts_linux_answer_that_keeps_the_request_length() {
    // Linux rewrites the request in place (icmsgsize = 0x10, counts 1/1, two slots, flags
    // 0x05) and sends `recvlen` bytes back: the pipe header still says 52 and the old
    // message versions trail the 16-byte body.
    let mut linux = SHUTDOWN_NEGOTIATE_REQUEST;
    linux[8 + 10] = 0x10;
    linux[8 + 17] = 0x05;
    linux[28..32].copy_from_slice(&[1, 0, 1, 0]);
    linux[36..44].copy_from_slice(&[3, 0, 0, 0, 3, 0, 2, 0]);
    assert_eq!(
        host::parse_negotiate_response(
            &linux,
            Framing::Pipe,
            0,
            FRAMEWORK_VERSIONS,
            SHUTDOWN_VERSIONS
        ),
        Ok(NegotiatedVersions {
            framework: Version::new(3, 0),
            message: Version::new(3, 2)
        })
    );
}

#[rustfmt::skip]
const HEARTBEAT_REQUEST_40: [u8; 68] = [
    0x01, 0x00, 0x00, 0x00, 0x3c, 0x00, 0x00, 0x00,             // pipe: DATA, 60
    0x03, 0x00, 0x00, 0x00, 0x01, 0x00, 0x03, 0x00, 0x00, 0x00, // fw 3.0, type 1, msg 3.0
    0x28, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03, 0x00, 0x00, // size 40, status 0, xid 0, flags 3
    0x10, 0x32, 0x54, 0x76, 0x98, 0xba, 0xdc, 0xfe,             // seq_num
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,             // reserved[8]
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
];

#[test]
fn heartbeat_request_and_answer_byte_for_byte() {
    let v = NegotiatedVersions {
        framework: Version::new(3, 0),
        message: Version::new(3, 0),
    };
    let mut out = [0u8; 128];
    let n = host::write_heartbeat_request(
        &mut out,
        Framing::Pipe,
        v,
        0,
        0xfedc_ba98_7654_3210,
        HeartbeatLayout::Reserved40,
    )
    .unwrap();
    assert_eq!(&out[..n], &HEARTBEAT_REQUEST_40[..]);

    let mut ep = Endpoint::new(Service::Heartbeat, Framing::Pipe);
    common::negotiate_fully(&mut ep);
    let mut answer = [0u8; 128];
    assert_eq!(
        ep.handle(&HEARTBEAT_REQUEST_40, &mut answer),
        Outcome::Respond(68)
    );
    let mut expect = HEARTBEAT_REQUEST_40;
    expect[8 + 17] = 0x05;
    expect[28] = 0x11; // seq + 1
    assert_eq!(&answer[..68], &expect[..]);
}
