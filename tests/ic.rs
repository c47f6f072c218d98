//! IC mode end to end: vmbridge in IC mode, `kmcl`, `kmcl-sim` in pipe mode, the
//! simulator's host IC endpoint and a simulated user-mode program.
//!
//! Reference: `docs/ic.md` ("IC mode in the
//! driver"). The guest runs only when the host signals it (deterministic simulator).
#![cfg(not(windows))]

mod common;

use std::sync::Mutex;

use common::ic::{IcRig, IcUser, hv_service};
use hv_ic::host::HeartbeatLayout;
use hv_ic::host::HostError;
use hv_ic::negotiate::{FRAMEWORK_VERSIONS, NegotiatedVersions};
use hv_ic::shutdown::ShutdownParams;
use hv_ic::timesync::TimeSample;
use hv_ic::wire::{ApplicationState, MsgType, ShutdownFlags, Status, TimeSyncFlags, Version};
use kmcl_sim::SimConfig;
use kmcl_sim::ic_host::{IcHost, IcHostError, host_versions};
use vmbridge::bridge::config::{IcConfig, IcService};
use vmbridge::bridge::protocol::{
    IOCTL_VMBRIDGE_GET_INFO, IOCTL_VMBRIDGE_SEND, IOCTL_VMBRIDGE_SEND_BATCH, VMBRIDGE_INFO,
    VMBRIDGE_SEND_FLAG_WAIT_FOR_COMPLETION, build_send, build_send_batch,
};
use vmbridge::bridge::{Config, FileId, NtStatus};
use vmbridge::ic::{STATUS_IC_NO_DECISION, STATUS_IC_TIMEOUT};
use vmbridge::sim_request::SimRequest;
use vmbridge::trace::{Event, IcAnswerCause, IcOutcome, KEYWORD_IC, Tracer};

const SERVICES: [IcService; 3] = [
    IcService::Heartbeat,
    IcService::Shutdown,
    IcService::TimeSync,
];

/// Guest preference lists from Linux `drivers/hv/hv_util.c`, most preferred first.
fn guest_preference(s: IcService) -> &'static [Version] {
    const HB: &[Version] = &[Version::new(3, 0), Version::new(1, 0)];
    const SD: &[Version] = &[
        Version::new(3, 2),
        Version::new(3, 1),
        Version::new(3, 0),
        Version::new(1, 0),
    ];
    const TS: &[Version] = &[Version::new(4, 0), Version::new(3, 0), Version::new(1, 0)];
    match s {
        IcService::Heartbeat => HB,
        IcService::Shutdown => SD,
        IcService::TimeSync => TS,
    }
}

fn subsets(list: &[Version]) -> Vec<Vec<Version>> {
    (0..1u32 << list.len())
        .map(|mask| {
            list.iter()
                .enumerate()
                .filter(|(i, _)| mask & (1 << i) != 0)
                .map(|(_, v)| *v)
                .collect()
        })
        .collect()
}

fn first_common(pref: &[Version], offered: &[Version]) -> Option<Version> {
    pref.iter().copied().find(|v| offered.contains(v))
}

fn negotiated(rig: &mut IcRig) -> NegotiatedVersions {
    rig.host.negotiate().expect("negotiation succeeds")
}

const SHUTDOWN_PARAMS: ShutdownParams = ShutdownParams {
    reason_code: 0x8000_0000,
    timeout_secs: 0,
    flags: ShutdownFlags(0),
};

#[test]
fn negotiates_every_version_combination_of_the_reference_through_the_stack() {
    let mut cases = 0;
    for service in SERVICES {
        let mut rig = IcRig::deterministic(1, service);
        let full = host_versions(hv_service(service));
        for fw in subsets(FRAMEWORK_VERSIONS) {
            for msg in subsets(full) {
                let mut host =
                    IcHost::with_versions(rig.offer.host(), hv_service(service), &fw, &msg);
                let fw_pref = [Version::new(3, 0), Version::new(1, 0)];
                let expected =
                    first_common(&fw_pref, &fw).zip(first_common(guest_preference(service), &msg));
                match (host.negotiate(), expected) {
                    (Ok(v), Some((f, m))) => {
                        assert_eq!(
                            (v.framework, v.message),
                            (f, m),
                            "{service:?} {fw:?} {msg:?}"
                        );
                        assert_eq!(rig.device().ic().and_then(|ic| ic.negotiated()), Some(v));
                    }
                    (Err(IcHostError::Answer(HostError::NoCommonVersion)), None) => {
                        assert_eq!(rig.device().ic().and_then(|ic| ic.negotiated()), None);
                    }
                    (got, want) => {
                        panic!("{service:?} fw {fw:?} msg {msg:?}: {got:?}, want {want:?}")
                    }
                }
                cases += 1;
            }
        }
        // After a no-match answer the guest waits for a new negotiation: a heartbeat-type
        // message is dropped, and a full offer negotiates again.
        let mut none = IcHost::with_versions(rig.offer.host(), hv_service(service), &[], &[]);
        assert!(none.negotiate().is_err());
        let ty = hv_service(service).msg_type().0;
        rig.host
            .send_message(&hdr(ty, 3, &[0; 40], 40))
            .expect("send");
        rig.idle();
        assert_eq!(rig.host.try_answer(), None, "dropped after no match");
        let v = negotiated(&mut rig);
        assert!(v.message >= Version::new(1, 0));
        rig.close();
        rig.sim.assert_clean();
    }
    assert_eq!(cases, 4 * 8 + 4 * 16 + 4 * 8, "every subset of every list");
}

#[test]
fn heartbeat_answers_both_body_sizes_at_received_length() {
    let mut rig = IcRig::deterministic(2, IcService::Heartbeat);
    let v = negotiated(&mut rig);
    assert_eq!(
        (v.framework, v.message),
        (Version::new(3, 0), Version::new(3, 0))
    );
    for (layout, body) in [
        (HeartbeatLayout::Reserved40, 40),
        (HeartbeatLayout::AppState16(ApplicationState(1)), 16),
    ] {
        rig.host.set_sequence(41);
        assert_eq!(rig.host.heartbeat(layout), Ok(42));
        // The answer is the request's length: icmsg_hdr + body.
        let mut req = vec![0u8; 256];
        let n =
            hv_ic::host::write_heartbeat_request(&mut req, hv_ic::Framing::Bare, v, 7, 100, layout)
                .expect("request");
        assert_eq!(n, 20 + body);
        rig.host.send_message(&req[..n]).expect("send");
        let answer = rig.host.next_answer().expect("answer");
        assert_eq!(answer.len(), n, "echoed at the received length");
        assert_eq!(&answer[20..28], &101u64.to_le_bytes());
    }
    let ic = rig.device().ic().expect("IC mode").stats();
    assert_eq!((ic.answered_in_kernel, ic.forwarded, ic.dropped), (4, 0, 0));
    rig.close();
    rig.sim.assert_clean();
}

#[test]
fn ten_thousand_heartbeats_wrap_the_ring_and_the_sequence() {
    let config = Config {
        ring_buffer_pages: 2,
        ..Config::DEFAULT
    };
    let mut rig = IcRig::new(
        SimConfig::deterministic(3),
        config,
        IcConfig::for_service(IcService::Heartbeat),
        Tracer::etw(),
    );
    negotiated(&mut rig);
    let start = u64::MAX - 4_999;
    rig.host.set_sequence(start);
    for i in 0..10_000u64 {
        let layout = if i % 2 == 0 {
            HeartbeatLayout::Reserved40
        } else {
            HeartbeatLayout::AppState16(ApplicationState(1))
        };
        let got = rig.host.heartbeat(layout).expect("heartbeat answered");
        assert_eq!(got, start.wrapping_add(i + 1), "seq + 1 at beat {i}");
    }
    let ic = rig.device().ic().expect("IC mode").stats();
    assert_eq!(ic.answered_in_kernel, 10_000);
    // 10 000 packets of 64..88 bytes (with descriptor and trailer) through a 2-page
    // ring: it wrapped about a hundred times.
    assert!(rig.sim.stats().packets_delivered >= 10_001);
    rig.close();
    rig.sim.assert_clean();
}

#[test]
fn shutdown_is_answered_only_after_user_mode_accepts() {
    let mut rig = IcRig::deterministic(4, IcService::Shutdown);
    let v = negotiated(&mut rig);
    assert_eq!(v.message, Version::new(3, 2));
    let user = IcUser::new(FileId(1));
    let params = ShutdownParams {
        flags: ShutdownFlags(2),
        ..SHUTDOWN_PARAMS
    };
    let txid = rig
        .host
        .send_shutdown(&params, b"planned restart")
        .expect("send");
    rig.idle();
    assert_eq!(
        rig.host.try_answer(),
        None,
        "no answer before user mode decides"
    );
    let read = user.post_read(&rig);
    rig.idle();
    let r = IcUser::decode(&read).expect("the request reached user mode");
    assert_eq!(r.request.service, 2);
    assert_eq!(r.request.action, 1, "restart");
    assert_eq!(r.request.reason_code, 0x8000_0000);
    assert_eq!(r.request.transaction_id, u32::from(txid));
    assert_eq!(r.request.message_version, 3 << 16 | 2);
    assert_eq!(rig.host.try_answer(), None, "still undecided");
    assert_eq!(
        user.respond(&rig, r.packet_id, Status::S_OK.0),
        NtStatus::SUCCESS
    );
    assert_eq!(
        rig.host.await_status(MsgType::SHUTDOWN, txid),
        Ok(Status::S_OK)
    );
    let ic = rig.device().ic().expect("IC mode").stats();
    assert_eq!((ic.forwarded, ic.user_answers, ic.waiting), (1, 1, 0));
    rig.close();
    rig.sim.assert_clean();
}

#[test]
fn shutdown_refused_by_user_mode_reaches_host_as_its_hresult() {
    let mut rig = IcRig::deterministic(5, IcService::Shutdown);
    negotiated(&mut rig);
    let user = IcUser::new(FileId(1));
    for (flags, action) in [(0u32, 0u32), (1, 0), (4, 2), (6, 3)] {
        let params = ShutdownParams {
            flags: ShutdownFlags(flags),
            ..SHUTDOWN_PARAMS
        };
        let txid = rig.host.send_shutdown(&params, &[]).expect("send");
        let read = user.post_read(&rig);
        rig.idle();
        let r = IcUser::decode(&read).expect("forwarded");
        assert_eq!(r.request.action, action);
        assert_eq!(
            user.respond(&rig, r.packet_id, Status::E_FAIL.0),
            NtStatus::SUCCESS
        );
        assert_eq!(
            rig.host.await_status(MsgType::SHUTDOWN, txid),
            Ok(Status::E_FAIL)
        );
    }
    rig.close();
    rig.sim.assert_clean();
}

/// `docs/ic.md`, "The user-mode side": in IC mode every answer the host gets is the
/// kernel's; user mode decides a forwarded request only through `IOCTL_VMBRIDGE_RESPOND` on
/// the handle that holds it. A write, a send (waiting or not) or a batched send is
/// `STATUS_INVALID_DEVICE_REQUEST` and reaches nothing: before the rule, a second handle
/// could write an `S_OK` answer to a shutdown the holder then refused, and the host got both.
#[test]
fn only_the_kernel_answers_the_host_user_writes_and_sends_are_refused_in_ic_mode() {
    let mut rig = IcRig::deterministic(9, IcService::Shutdown);
    let v = negotiated(&mut rig);
    let holder = IcUser::new(FileId(1));
    let forger = FileId(2);
    let txid = rig.host.send_shutdown(&SHUTDOWN_PARAMS, b"").expect("send");
    let read = holder.post_read(&rig);
    rig.idle();
    let r = IcUser::decode(&read).expect("forwarded");
    // The host's request with the RESPONSE flag and S_OK: a well-formed answer to it.
    let mut forged = vec![0u8; hv_ic::response::MAX_RESPONSE_LEN];
    let n = hv_ic::host::write_shutdown_request(
        &mut forged,
        hv_ic::parse::Framing::Bare,
        v,
        txid,
        &SHUTDOWN_PARAMS,
        b"",
    )
    .expect("a shutdown request");
    forged.truncate(n);
    forged[17] = 0x05;
    let requests = [
        (None, forged.clone(), 0),
        (None, Vec::new(), 0),
        (
            Some(IOCTL_VMBRIDGE_SEND),
            build_send(0, &forged).as_slice().to_vec(),
            0,
        ),
        (
            Some(IOCTL_VMBRIDGE_SEND),
            build_send(VMBRIDGE_SEND_FLAG_WAIT_FOR_COMPLETION, &forged)
                .as_slice()
                .to_vec(),
            64,
        ),
        (
            Some(IOCTL_VMBRIDGE_SEND_BATCH),
            build_send_batch(&[&forged[..], b"x"]).as_slice().to_vec(),
            0,
        ),
    ];
    for (i, (code, input, out_len)) in requests.iter().enumerate() {
        let (req, h) = SimRequest::new(input, *out_len);
        match code {
            None => rig.device().write(forger, req),
            Some(code) => rig.device().device_control(forger, *code, req),
        }
        let c = h.result().expect("completed at once");
        assert_eq!(
            (c.status, c.information),
            (NtStatus::INVALID_DEVICE_REQUEST, 0),
            "request {i}"
        );
        rig.idle();
        assert_eq!(rig.host.try_answer(), None, "request {i} reached the host");
    }
    let stats = rig.device().bridge().stats();
    assert_eq!(
        (stats.packets_sent, stats.requests_rejected),
        (0, 5),
        "{stats:?}"
    );
    // The holder refuses: the host gets that, the one answer.
    assert_eq!(
        holder.respond(&rig, r.packet_id, Status::E_FAIL.0),
        NtStatus::SUCCESS
    );
    assert_eq!(
        rig.host.await_status(MsgType::SHUTDOWN, txid),
        Ok(Status::E_FAIL)
    );
    rig.idle();
    assert_eq!(rig.host.try_answer(), None, "one answer per request");
    // Reads, INFO and STATS stay what they are outside IC mode.
    let (req, h) = SimRequest::new(&[], size_of::<VMBRIDGE_INFO>());
    rig.device()
        .device_control(forger, IOCTL_VMBRIDGE_GET_INFO, req);
    assert_eq!(
        h.result().map(|c| (c.status, c.information)),
        Some((NtStatus::SUCCESS, size_of::<VMBRIDGE_INFO>()))
    );
    rig.close();
    rig.sim.assert_clean();
}

#[test]
fn unanswered_shutdown_times_out_with_a_failure_and_leaves_the_bridge_queue() {
    let mut rig = IcRig::new(
        SimConfig::deterministic(6),
        Config::DEFAULT,
        IcConfig {
            service: Some(IcService::Shutdown),
            timeout_ms: 1_000,
        },
        Tracer::etw(),
    );
    negotiated(&mut rig);
    let user = IcUser::new(FileId(1));
    let txid = rig.host.send_shutdown(&SHUTDOWN_PARAMS, &[]).expect("send");
    rig.idle();
    assert_eq!(rig.device().ic_tick(999), 0, "not yet");
    rig.idle();
    assert_eq!(rig.host.try_answer(), None);
    assert_eq!(rig.device().ic_tick(1_000), 1);
    assert_eq!(
        rig.host.await_status(MsgType::SHUTDOWN, txid),
        Ok(Status(STATUS_IC_TIMEOUT))
    );
    // The request answered by its timeout left the bridge: a read finds nothing.
    let read = user.post_read(&rig);
    rig.idle();
    assert!(!read.is_done(), "no dead request to read");
    assert_eq!(rig.host.try_answer(), None, "one answer per request");
    // A fresh request reaches the parked read; held when it times out, its RESPOND
    // finds nothing (the host already has the timeout answer).
    let fresh = rig.host.send_shutdown(&SHUTDOWN_PARAMS, &[]).expect("send");
    rig.idle();
    let r = IcUser::decode(&read).expect("the fresh request");
    assert_eq!(r.request.transaction_id, u32::from(fresh));
    assert_eq!(rig.device().ic_tick(2_000), 1);
    assert_eq!(
        rig.host.await_status(MsgType::SHUTDOWN, fresh),
        Ok(Status(STATUS_IC_TIMEOUT))
    );
    assert_eq!(user.respond(&rig, r.packet_id, 0), NtStatus::NOT_FOUND);
    rig.idle();
    assert_eq!(rig.host.try_answer(), None, "one answer per request");
    let ic = rig.device().ic().expect("IC mode").stats();
    assert_eq!((ic.timeouts, ic.late, ic.waiting), (2, 0, 0));
    let stats = rig.close();
    assert_eq!(stats.packets_discarded, 2);
    rig.sim.assert_clean();
}

#[test]
fn handle_closed_before_answering_fails_the_shutdown() {
    let mut rig = IcRig::deterministic(7, IcService::Shutdown);
    negotiated(&mut rig);
    let user = IcUser::new(FileId(1));
    let txid = rig.host.send_shutdown(&SHUTDOWN_PARAMS, &[]).expect("send");
    let read = user.post_read(&rig);
    rig.idle();
    assert!(IcUser::decode(&read).is_some());
    user.close(&rig);
    assert_eq!(
        rig.host.await_status(MsgType::SHUTDOWN, txid),
        Ok(Status(STATUS_IC_NO_DECISION))
    );
    // A short response (no HRESULT) is no decision either.
    let user = IcUser::new(FileId(2));
    let txid = rig.host.send_shutdown(&SHUTDOWN_PARAMS, &[]).expect("send");
    let read = user.post_read(&rig);
    rig.idle();
    let r = IcUser::decode(&read).expect("forwarded");
    assert_eq!(
        user.respond_bytes(&rig, r.packet_id, &[0, 0]),
        NtStatus::SUCCESS
    );
    assert_eq!(
        rig.host.await_status(MsgType::SHUTDOWN, txid),
        Ok(Status(STATUS_IC_NO_DECISION))
    );
    let ic = rig.device().ic().expect("IC mode").stats();
    assert_eq!(ic.no_decision, 2);
    rig.close();
    rig.sim.assert_clean();
}

#[test]
fn time_sync_is_forwarded_and_acknowledged_at_both_layouts() {
    let fw = FRAMEWORK_VERSIONS;
    for (offered, expect) in [
        (
            &[Version::new(1, 0), Version::new(3, 0)][..],
            Version::new(3, 0),
        ),
        (&[Version::new(1, 0)][..], Version::new(1, 0)),
        (hv_ic::negotiate::TIMESYNC_VERSIONS, Version::new(4, 0)),
    ] {
        let mut rig = IcRig::deterministic(8, IcService::TimeSync);
        rig.host = IcHost::with_versions(rig.offer.host(), hv_ic::Service::TimeSync, fw, offered);
        let v = negotiated(&mut rig);
        assert_eq!(v.message, expect);
        let user = IcUser::new(FileId(1));
        let sample = if expect >= Version::new(4, 0) {
            TimeSample::V4 {
                parent_time: 133_000_000_000_000_000,
                vm_reference_time: 5_000_000,
                flags: TimeSyncFlags(1),
                leap_indicator: 0,
                stratum: 2,
            }
        } else {
            TimeSample::V1 {
                parent_time: 133_000_000_000_000_000,
                child_time: 132_999_999_999_000_000,
                round_trip_time: 1234,
                flags: TimeSyncFlags(2),
            }
        };
        let txid = rig.host.send_timesync(&sample).expect("send");
        let read = user.post_read(&rig);
        rig.idle();
        let r = IcUser::decode(&read).expect("forwarded");
        assert_eq!(r.request.service, 3);
        assert_eq!(r.request.parent_time, 133_000_000_000_000_000);
        assert_eq!(r.request.is_v4, expect >= Version::new(4, 0));
        if r.request.is_v4 {
            assert_eq!((r.request.child_time, r.request.stratum), (5_000_000, 2));
        } else {
            assert_eq!(r.request.round_trip_time, 1234);
        }
        assert_eq!(rig.host.try_answer(), None);
        assert_eq!(user.respond(&rig, r.packet_id, 0), NtStatus::SUCCESS);
        assert_eq!(
            rig.host.await_status(MsgType::TIMESYNC, txid),
            Ok(Status::S_OK)
        );
        rig.close();
        rig.sim.assert_clean();
    }
}

fn hdr(msg_type: u16, flags: u8, body: &[u8], declared: u16) -> Vec<u8> {
    [
        &hv_ic::host::forged_header(MsgType(msg_type), flags, declared),
        body,
    ]
    .concat()
}

#[test]
fn every_malformed_message_class_is_answered_or_dropped_with_nothing_stuck() {
    for service in SERVICES {
        let mut rig = IcRig::deterministic(9, service);
        let ty = hv_service(service).msg_type().0;
        // Before negotiation: a service message is dropped.
        rig.host
            .send_message(&hdr(ty, 3, &[0; 40], 40))
            .expect("send");
        rig.idle();
        assert_eq!(rig.host.try_answer(), None, "{service:?}: not negotiated");
        negotiated(&mut rig);
        let dropped: Vec<(&str, Vec<u8>)> = vec![
            ("empty", vec![]),
            ("header truncated", vec![0u8; 19]),
            ("body truncated", hdr(ty, 3, &[0; 4], 40)),
            ("response flag", hdr(ty, 5, &[0; 40], 40)),
            ("negotiate head truncated", hdr(0, 3, &[1, 0], 2)),
            ("negotiate count over 100", {
                let mut b = vec![0u8; 8];
                b[0] = 101;
                b[2] = 1;
                hdr(0, 3, &b, 8)
            }),
            (
                "negotiate versions truncated",
                hdr(0, 3, &[1, 0, 1, 0, 0, 0, 0, 0], 8),
            ),
            ("service body too short", hdr(ty, 3, &[0; 4], 4)),
            ("message too long", hdr(ty, 3, &vec![0; 13_400], 40)),
        ];
        for (what, bytes) in &dropped {
            rig.host.send_message(bytes).expect("send");
            rig.idle();
            assert_eq!(
                rig.host.try_answer(),
                None,
                "{service:?}: {what} is dropped"
            );
        }
        // An unknown or foreign type after negotiation is refused with E_FAIL, echoed.
        for foreign in [2u16, 9, 0x7FFF] {
            let m = hdr(foreign, 3, &[0xAB; 12], 12);
            rig.host.send_message(&m).expect("send");
            let a = rig.host.next_answer().expect("refusal");
            assert_eq!(a.len(), m.len());
            assert_eq!(&a[12..16], &Status::E_FAIL.0.to_le_bytes());
            assert_eq!(a[17], 0x05);
        }
        // Nothing stuck: the service still works, and the channel closes cleanly (KMCL's
        // Disable waits for every packet: each one was completed).
        negotiated(&mut rig);
        if service == IcService::Heartbeat {
            assert!(rig.host.heartbeat(HeartbeatLayout::Reserved40).is_ok());
        }
        let ic = rig.device().ic().expect("IC mode").stats();
        assert_eq!(ic.dropped, 1 + dropped.len() as u64, "{service:?}");
        assert_eq!(ic.forwarded, 0);
        let stats = rig.close();
        assert_eq!(stats.queue_depth, 0);
        rig.sim.assert_clean();
    }
}

static EVENTS: Mutex<Vec<Event>> = Mutex::new(Vec::new());

fn record(e: &Event) {
    if e.keyword() == KEYWORD_IC {
        EVENTS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(*e);
    }
}

#[test]
fn each_ic_message_and_answer_is_traced_with_the_ic_keyword() {
    let mut rig = IcRig::new(
        SimConfig::deterministic(10),
        Config::DEFAULT,
        IcConfig::for_service(IcService::Shutdown),
        Tracer::with_sink(record),
    );
    negotiated(&mut rig);
    let user = IcUser::new(FileId(1));
    let txid = rig.host.send_shutdown(&SHUTDOWN_PARAMS, &[]).expect("send");
    let read = user.post_read(&rig);
    rig.idle();
    let r = IcUser::decode(&read).expect("forwarded");
    assert_eq!(user.respond(&rig, r.packet_id, 0), NtStatus::SUCCESS);
    rig.host
        .await_status(MsgType::SHUTDOWN, txid)
        .expect("answer");
    rig.host.send_message(&[1, 2, 3]).expect("send");
    rig.idle();
    rig.close();
    let seen = EVENTS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let kinds: Vec<String> = seen
        .iter()
        .map(|e| match e {
            Event::IcMessage { outcome, .. } => outcome.name().to_string(),
            Event::IcAnswer { cause, .. } => format!("answer:{}", cause.name()),
            _ => String::new(),
        })
        .collect();
    assert_eq!(
        kinds,
        ["Negotiated", "Forwarded", "answer:UserMode", "Dropped"],
        "{seen:?}"
    );
    assert!(matches!(
        seen[0],
        Event::IcMessage {
            msg_type: 0,
            outcome: IcOutcome::Negotiated,
            detail: 0x0300_0302
        }
    ));
    assert!(matches!(
        seen[2],
        Event::IcAnswer {
            status: 0,
            cause: IcAnswerCause::UserMode,
            ..
        }
    ));
}

fn guid_text(g: hv_ic::guid::Guid) -> String {
    let d = g.data4;
    format!(
        "{:08x}-{:04x}-{:04x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        g.data1, g.data2, g.data3, d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]
    )
}

/// The uncommented lines of `section` (lower-cased name), comments and blanks removed.
fn inf_section(text: &str, section: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut inside = false;
    for raw in text.lines() {
        let line = raw.split(';').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            inside = name.eq_ignore_ascii_case(section);
            continue;
        }
        if inside {
            out.push(line.to_string());
        }
    }
    out
}

#[test]
fn inf_offers_one_opt_in_hardware_id_per_ic_with_its_ic_service() {
    let text = include_str!("../inf/vmbridge.inx");
    let models: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix(";IC-MODEL:"))
        .map(str::trim)
        .collect();
    assert_eq!(models.len(), 3, "heartbeat, shutdown, time sync");
    for (line, (service, ic)) in models.iter().zip([
        (hv_ic::Service::Heartbeat, IcService::Heartbeat),
        (hv_ic::Service::Shutdown, IcService::Shutdown),
        (hv_ic::Service::TimeSync, IcService::TimeSync),
    ]) {
        let (_, rhs) = line.split_once('=').expect("model line");
        let (section, hwid) = rhs.split_once(',').expect("section, hardware id");
        let section = section.trim();
        assert_eq!(
            hwid.trim().to_ascii_lowercase(),
            format!("vmbus\\{{{}}}", guid_text(service.interface_id())),
            "{service:?}"
        );
        // The install section is the plain device's plus the device's IcService.
        for suffix in [".NT", ".NT.Services", ".NT.Wdf"] {
            assert_eq!(
                inf_section(text, &format!("{section}{suffix}")),
                inf_section(text, &format!("VmBridge_Device{suffix}")),
                "{section}{suffix}"
            );
        }
        let hw = inf_section(text, &format!("{section}.NT.HW"));
        let addreg = hw
            .iter()
            .find_map(|l| l.strip_prefix("AddReg"))
            .and_then(|l| l.trim().strip_prefix('='))
            .expect("AddReg");
        let lists: Vec<&str> = addreg.split(',').map(str::trim).collect();
        assert!(
            lists.contains(&"VmBridge_Security_AddReg"),
            "{section}: same security"
        );
        let values: Vec<(String, u32)> = lists
            .iter()
            .filter(|l| **l != "VmBridge_Security_AddReg")
            .flat_map(|l| inf_section(text, l))
            .map(|l| {
                let f: Vec<&str> = l.split(',').map(str::trim).collect();
                assert_eq!((f[0], f[1], f[3]), ("HKR", "", "%REG_DWORD%"), "{l}");
                (f[2].to_string(), f[4].parse().expect("decimal DWORD"))
            })
            .collect();
        let (config, issues) = IcConfig::parse(
            values
                .iter()
                .map(|(k, v)| (k.as_str(), vmbridge::bridge::config::Value::Dword(*v))),
        );
        assert!(issues.is_empty(), "{issues:?}");
        assert_eq!(config.service, Some(ic), "{section}");
    }
    // The service-wide values, documented commented out, parse to IC mode off.
    let values: Vec<(String, u32)> = text
        .lines()
        .filter_map(|l| l.strip_prefix(";IC-REG:"))
        .map(|l| {
            let f: Vec<&str> = l.split(',').map(str::trim).collect();
            assert_eq!((f[0], f[1], f[3]), ("HKR", "Parameters", "%REG_DWORD%"));
            (f[2].to_string(), f[4].parse().expect("decimal DWORD"))
        })
        .collect();
    let mut names: Vec<&str> = values.iter().map(|(k, _)| k.as_str()).collect();
    names.sort_unstable();
    let mut keys = vmbridge::bridge::config::IC_KEYS.to_vec();
    keys.sort_unstable();
    assert_eq!(names, keys, "the INF documents exactly the IC values");
    let (config, issues) = IcConfig::parse(
        values
            .iter()
            .map(|(k, v)| (k.as_str(), vmbridge::bridge::config::Value::Dword(*v))),
    );
    assert!(issues.is_empty(), "{issues:?}");
    assert_eq!(
        config,
        IcConfig::OFF,
        "IC mode is off unless an administrator enables it"
    );
}

#[test]
fn heartbeats_and_a_shutdown_round_trip_with_real_threads() {
    let mut rig = IcRig::new(
        SimConfig::threaded(),
        Config::DEFAULT,
        IcConfig::for_service(IcService::Heartbeat),
        Tracer::etw(),
    );
    assert!(
        rig.offer
            .host()
            .wait_open(std::time::Duration::from_secs(10))
    );
    negotiated(&mut rig);
    for _ in 0..500 {
        rig.host
            .heartbeat(HeartbeatLayout::Reserved40)
            .expect("heartbeat answered");
    }
    rig.close();
    rig.sim.assert_clean();

    let mut rig = IcRig::new(
        SimConfig::threaded(),
        Config::DEFAULT,
        IcConfig::for_service(IcService::Shutdown),
        Tracer::etw(),
    );
    assert!(
        rig.offer
            .host()
            .wait_open(std::time::Duration::from_secs(10))
    );
    negotiated(&mut rig);
    let user = IcUser::new(FileId(1));
    let read = user.post_read(&rig);
    let txid = rig.host.send_shutdown(&SHUTDOWN_PARAMS, &[]).expect("send");
    read.wait(std::time::Duration::from_secs(10))
        .expect("forwarded to the parked read");
    let r = IcUser::decode(&read).expect("record");
    assert_eq!(r.request.transaction_id, u32::from(txid));
    assert_eq!(user.respond(&rig, r.packet_id, 0), NtStatus::SUCCESS);
    assert_eq!(
        rig.host.await_status(MsgType::SHUTDOWN, txid),
        Ok(Status::S_OK)
    );
    rig.close();
    rig.sim.assert_clean();
}

#[test]
fn requests_answered_by_timeout_leave_the_queue_so_fresh_ones_reach_user_mode() {
    // Issue 15, bug 5: QueueDepth 2, nobody reads until two requests timed out.
    let mut rig = IcRig::new(
        SimConfig::deterministic(11),
        Config {
            queue_depth: 2,
            ..Config::DEFAULT
        },
        IcConfig {
            service: Some(IcService::Shutdown),
            timeout_ms: 100,
        },
        Tracer::etw(),
    );
    negotiated(&mut rig);
    let user = IcUser::new(FileId(1));
    let mut answers = Vec::new();
    let send = |rig: &mut IcRig| rig.host.send_shutdown(&SHUTDOWN_PARAMS, &[]).expect("send");
    // Two wait in slots; the third finds no slot and is refused at once.
    let (a, b, c) = (send(&mut rig), send(&mut rig), send(&mut rig));
    answers.push((c, rig.host.await_status(MsgType::SHUTDOWN, c)));
    // Both time out, and leave the bridge queue with their slots.
    assert_eq!(rig.device().ic_tick(100), 2);
    answers.push((a, rig.host.await_status(MsgType::SHUTDOWN, a)));
    answers.push((b, rig.host.await_status(MsgType::SHUTDOWN, b)));
    // Two fresh ones take their places and reach user mode, who answers them.
    let (d, e) = (send(&mut rig), send(&mut rig));
    rig.idle();
    assert_eq!(rig.host.try_answer(), None, "waiting for user mode");
    for txid in [d, e] {
        let read = user.post_read(&rig);
        rig.idle();
        let r = IcUser::decode(&read).expect("a fresh request");
        assert_eq!(r.request.transaction_id, u32::from(txid), "in order");
        assert_eq!(
            user.respond(&rig, r.packet_id, Status::S_OK.0),
            NtStatus::SUCCESS
        );
        rig.idle();
        answers.push((txid, rig.host.await_status(MsgType::SHUTDOWN, txid)));
    }
    rig.idle();
    assert_eq!(rig.host.try_answer(), None, "no second answer");
    let fail = Ok(Status::E_FAIL);
    let timeout = Ok(Status(STATUS_IC_TIMEOUT));
    let ok = Ok(Status::S_OK);
    assert_eq!(
        answers,
        [
            (c, fail),
            (a, timeout.clone()),
            (b, timeout),
            (d, ok.clone()),
            (e, ok)
        ]
    );
    let stats = rig.close();
    assert_eq!((stats.overflows, stats.packets_discarded), (0, 2));
    rig.sim.assert_clean();
}

#[test]
fn ic_mode_runs_with_passive_processing() {
    let mut rig = IcRig::new(
        SimConfig::deterministic(12),
        Config {
            processing_mode: vmbridge::bridge::ProcessingMode::Passive,
            ..Config::DEFAULT
        },
        IcConfig::for_service(IcService::Shutdown),
        Tracer::etw(),
    );
    negotiated(&mut rig);
    let user = IcUser::new(FileId(1));
    let txid = rig.host.send_shutdown(&SHUTDOWN_PARAMS, &[]).expect("send");
    let read = user.post_read(&rig);
    rig.idle();
    let r = IcUser::decode(&read).expect("forwarded");
    assert_eq!(user.respond(&rig, r.packet_id, 0), NtStatus::SUCCESS);
    assert_eq!(
        rig.host.await_status(MsgType::SHUTDOWN, txid),
        Ok(Status::S_OK)
    );
    rig.close();
    rig.sim.assert_clean();
}

/// xorshift64*: a deterministic byte source for mutated messages.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n as u64).unwrap_or(0)
    }
}

#[test]
fn mutated_and_random_messages_never_stick_or_answer_twice() {
    for (k, service) in SERVICES.into_iter().enumerate() {
        let mut rig = IcRig::deterministic(20 + k as u64, service);
        let v = negotiated(&mut rig);
        let mut valid = vec![0u8; 4096];
        let n = match service {
            IcService::Heartbeat => hv_ic::host::write_heartbeat_request(
                &mut valid,
                hv_ic::Framing::Bare,
                v,
                0,
                5,
                HeartbeatLayout::Reserved40,
            ),
            IcService::Shutdown => hv_ic::host::write_shutdown_request(
                &mut valid,
                hv_ic::Framing::Bare,
                v,
                0,
                &SHUTDOWN_PARAMS,
                b"x",
            ),
            IcService::TimeSync => hv_ic::host::write_timesync_request(
                &mut valid,
                hv_ic::Framing::Bare,
                v,
                0,
                &TimeSample::V4 {
                    parent_time: 1,
                    vm_reference_time: 2,
                    flags: TimeSyncFlags(1),
                    leap_indicator: 0,
                    stratum: 1,
                },
            ),
        }
        .expect("request");
        valid.truncate(n);
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ k as u64);
        let user = IcUser::new(FileId(1));
        let mut answers = 0u64;
        for _ in 0..2_000 {
            let mut m = if rng.below(4) == 0 {
                (0..rng.below(80)).map(|_| rng.next() as u8).collect()
            } else {
                valid.clone()
            };
            for _ in 0..=rng.below(4) {
                if m.is_empty() {
                    break;
                }
                let at = rng.below(m.len());
                match rng.below(3) {
                    0 => m[at] = rng.next() as u8,
                    1 => m.truncate(at),
                    _ => m[at] ^= 1 << rng.below(8),
                }
            }
            rig.host.send_message(&m).expect("send");
            rig.idle();
            // Answer whatever reached user mode; collect the host's answers.
            loop {
                let read = user.post_read(&rig);
                rig.idle();
                match IcUser::decode(&read) {
                    Some(r) => {
                        let _ = user.respond(&rig, r.packet_id, 0);
                    }
                    None => {
                        user.close(&rig);
                        break;
                    }
                }
            }
            rig.idle();
            while rig.host.try_answer().is_some() {
                answers += 1;
            }
        }
        let ic = rig.device().ic().expect("IC mode").stats();
        assert_eq!(ic.messages, 2_001, "{service:?}");
        // One answer at most per message: in-kernel answers, forwarded requests
        // answered, busy refusals; nothing else is sent.
        assert_eq!(
            answers,
            ic.negotiated
                + ic.no_match
                + ic.answered_in_kernel
                + ic.user_answers
                + ic.no_decision
                + ic.busy
                - 1,
            "{service:?}: {ic:?}"
        );
        assert_eq!(ic.waiting, 0);
        assert!(ic.dropped > 0, "{service:?}: some mutations are dropped");
        let served = if service == IcService::Heartbeat {
            ic.answered_in_kernel
        } else {
            ic.forwarded
        };
        assert!(served > 0, "{service:?}: some mutations stay valid");
        rig.close();
        rig.sim.assert_clean();
    }
}

static ANSWER_IRQLS: Mutex<Vec<(IcOutcome, u8)>> = Mutex::new(Vec::new());

fn record_irql(e: &Event) {
    if let Event::IcMessage { outcome, .. } = e {
        ANSWER_IRQLS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((*outcome, kmcl_sim::current_irql()));
    }
}

#[test]
fn negotiation_and_heartbeat_are_answered_at_dispatch_level() {
    let mut rig = IcRig::new(
        SimConfig::deterministic(13),
        Config::DEFAULT,
        IcConfig::for_service(IcService::Heartbeat),
        Tracer::with_sink(record_irql),
    );
    negotiated(&mut rig);
    for _ in 0..10 {
        rig.host
            .heartbeat(HeartbeatLayout::Reserved40)
            .expect("heartbeat");
    }
    rig.close();
    let seen = ANSWER_IRQLS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    assert_eq!(seen.len(), 11);
    assert_eq!(seen[0], (IcOutcome::Negotiated, kmcl_sim::DISPATCH_LEVEL));
    assert!(
        seen[1..]
            .iter()
            .all(|&x| x == (IcOutcome::Answered, kmcl_sim::DISPATCH_LEVEL)),
        "{seen:?}"
    );
}
