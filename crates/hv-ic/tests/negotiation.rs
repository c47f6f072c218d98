//! Version negotiation over every combination of offered versions in the reference.
//!
//! Reference: `docs/ic.md` (version negotiation).

mod common;

use common::{FRAMINGS, SERVICES, host_versions};
use hv_ic::endpoint::{Endpoint, EndpointState, Outcome, Service};
use hv_ic::host::{self, HostError};
use hv_ic::negotiate::{
    FRAMEWORK_PREFERENCE, FRAMEWORK_VERSIONS, KVP_VERSIONS, NegotiatedVersions, VSS_VERSIONS,
    negotiate, parse_negotiate,
};
use hv_ic::parse::{Framing, parse_message};
use hv_ic::response::MAX_RESPONSE_LEN;
use hv_ic::wire::{HeaderFlags, MsgType, Status, Version};

/// All subsets of `items`, each also in reverse order (offer order must not matter).
fn subsets(items: &[Version]) -> Vec<Vec<Version>> {
    let mut all = Vec::new();
    for mask in 0u32..(1 << items.len()) {
        let s: Vec<Version> = items
            .iter()
            .enumerate()
            .filter(|(i, _)| mask & (1 << i) != 0)
            .map(|(_, v)| *v)
            .collect();
        let mut r = s.clone();
        r.reverse();
        all.push(s);
        if r.len() > 1 {
            all.push(r);
        }
    }
    all
}

/// Independent oracle: the guest lists are "highest known first", so the answer is the
/// highest offered version the guest knows.
fn oracle(ours: &[Version], offered: &[Version]) -> Option<Version> {
    offered.iter().copied().filter(|v| ours.contains(v)).max()
}

fn run_case(service: Service, framing: Framing, fw: &[Version], msg: &[Version]) {
    let mut ep = Endpoint::new(service, framing);
    let mut req = [0u8; 256];
    let n = host::write_negotiate_request(&mut req, framing, fw, msg, 7).unwrap();
    let mut out = [0u8; MAX_RESPONSE_LEN];
    let Outcome::Respond(len) = ep.handle(&req[..n], &mut out) else {
        panic!("{service:?} {fw:?} {msg:?}: negotiation must always be answered");
    };
    assert_eq!(
        len,
        framing.prefix_len() + 20 + 16,
        "answer is always 36 bytes + framing"
    );

    let expected = oracle(FRAMEWORK_PREFERENCE, fw).and_then(|f| {
        oracle(service.message_preference(), msg).map(|m| NegotiatedVersions {
            framework: f,
            message: m,
        })
    });
    let answer = parse_message(&out[..len], framing).unwrap();
    assert_eq!(answer.header.flags(), HeaderFlags::GUEST_RESPONSE);
    assert_eq!(answer.header.transaction_id, 7);
    assert_eq!(answer.header.status(), Status::S_OK);
    assert_eq!(answer.msg_type(), MsgType::NEGOTIATE);
    let got = host::parse_negotiate_response(&out[..len], framing, 7, fw, msg);
    match expected {
        Some(v) => {
            assert_eq!(got, Ok(v), "{service:?} fw {fw:?} msg {msg:?}");
            assert_eq!(ep.state(), EndpointState::Ready(v));
            assert_eq!(ep.expects(), service.msg_type());
        }
        None => {
            assert_eq!(
                got,
                Err(HostError::NoCommonVersion),
                "{service:?} fw {fw:?} msg {msg:?}"
            );
            assert_eq!(ep.state(), EndpointState::AwaitingNegotiate);
            // counts 0/0, reserved 0, both version slots zero.
            assert_eq!(answer.body, &[0u8; 16]);
        }
    }
}

#[test]
fn negotiates_best_common_version_for_every_offer_combination() {
    let unknown = Version::new(2, 0);
    let mut fw_items = FRAMEWORK_VERSIONS.to_vec();
    fw_items.push(unknown);
    let mut cases = 0;
    for service in SERVICES {
        let mut msg_items = host_versions(service).to_vec();
        msg_items.push(Version::new(9, 9));
        for fw in subsets(&fw_items) {
            for msg in subsets(&msg_items) {
                for framing in FRAMINGS {
                    run_case(service, framing, &fw, &msg);
                    cases += 1;
                }
            }
        }
    }
    assert!(cases > 1000, "{cases} cases");
}

#[test]
fn linux_preference_lists_choose_reference_versions_from_openvmm_offer() {
    let table = [
        (Service::Heartbeat, Version::new(3, 0)),
        (Service::Shutdown, Version::new(3, 2)),
        (Service::TimeSync, Version::new(4, 0)),
    ];
    for (service, want) in table {
        let mut ep = Endpoint::new(service, Framing::Pipe);
        let v = common::negotiate_fully(&mut ep);
        assert_eq!(v.framework, Version::new(3, 0));
        assert_eq!(v.message, want);
    }
}

#[test]
fn ws2008_host_offering_only_1_0_gets_1_0() {
    for service in SERVICES {
        let mut ep = Endpoint::new(service, Framing::Bare);
        let one = [Version::new(1, 0)];
        let v = common::negotiate_with(&mut ep, &one, &one);
        assert_eq!(v.framework, Version::new(1, 0));
        assert_eq!(v.message, Version::new(1, 0));
    }
}

#[test]
fn no_match_answer_has_counts_zero_and_keeps_endpoint_unnegotiated() {
    let mut ep = Endpoint::new(Service::Shutdown, Framing::Pipe);
    let mut req = [0u8; 256];
    let n = host::write_negotiate_request(
        &mut req,
        Framing::Pipe,
        &[Version::new(3, 0)],
        &[Version::new(7, 7)],
        0,
    )
    .unwrap();
    let mut out = [0u8; 256];
    assert_eq!(ep.handle(&req[..n], &mut out), Outcome::Respond(44));
    // pipe header: DATA, 36 bytes.
    assert_eq!(&out[..8], &[1, 0, 0, 0, 36, 0, 0, 0]);
    // icmsg_hdr: versions 0.0, type 0, size 16, status 0, xid 0, flags 5.
    assert_eq!(
        &out[8..28],
        &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 16, 0, 0, 0, 0, 0, 0, 5, 0, 0]
    );
    assert_eq!(&out[28..44], &[0u8; 16]);
    assert_eq!(ep.state(), EndpointState::AwaitingNegotiate);
}

#[test]
fn renegotiation_replaces_versions_and_failed_renegotiation_unnegotiates() {
    let mut ep = Endpoint::new(Service::TimeSync, Framing::Pipe);
    let v = common::negotiate_fully(&mut ep);
    assert_eq!(v.message, Version::new(4, 0));
    let v = common::negotiate_with(&mut ep, FRAMEWORK_VERSIONS, &[Version::new(3, 0)]);
    assert_eq!(ep.negotiated(), Some(v));
    assert_eq!(v.message, Version::new(3, 0));

    let mut req = [0u8; 256];
    let n = host::write_negotiate_request(&mut req, Framing::Pipe, &[Version::new(5, 0)], &[], 0)
        .unwrap();
    let mut out = [0u8; 256];
    assert!(matches!(
        ep.handle(&req[..n], &mut out),
        Outcome::Respond(_)
    ));
    assert_eq!(ep.negotiated(), None);
}

#[test]
fn custom_preferences_negotiate_kvp_and_vss_lists() {
    static KVP_PREF: [Version; 3] = [Version::new(5, 0), Version::new(4, 0), Version::new(3, 0)];
    for offered in subsets(KVP_VERSIONS) {
        let mut b = vec![0u8; 8 + 4 * (1 + offered.len())];
        b[0..2].copy_from_slice(&1u16.to_le_bytes());
        b[2..4].copy_from_slice(&(offered.len() as u16).to_le_bytes());
        b[8..12].copy_from_slice(&[3, 0, 0, 0]);
        for (i, v) in offered.iter().enumerate() {
            b[12 + 4 * i..16 + 4 * i].copy_from_slice(&v.packed().rotate_left(16).to_le_bytes());
        }
        let req = parse_negotiate(&b).unwrap();
        let got = negotiate(&req, FRAMEWORK_PREFERENCE, &KVP_PREF).map(|v| v.message);
        assert_eq!(got, oracle(&KVP_PREF, &offered));
    }
    // VSS: an endpoint built with custom lists answers from them.
    static VSS_PREF: [Version; 2] = [Version::new(7, 0), Version::new(6, 0)];
    let mut ep = Endpoint::with_preferences(
        Service::Shutdown,
        Framing::Bare,
        FRAMEWORK_PREFERENCE,
        &VSS_PREF,
    );
    let v = common::negotiate_with(&mut ep, FRAMEWORK_VERSIONS, VSS_VERSIONS);
    assert_eq!(v.message, Version::new(7, 0));
}
