//! Outgoing packets end to end against kmcl-sim: plain sends, typed completions (plain
//! and `_EX` routines), external MDLs, synchronous requests, failures.
//!
//! C header: `vmbuskernelmodeclientlibapi.h` (`VmbPacketAllocate`, `VmbPacketSend`,
//! `VmbPacketSendWithExternalMdl`, `VmbPacketSetCompletionRoutine(Ex)`, `VmbPacketFree`,
//! `VmbChannelSendSynchronousRequest`); reference: their DDI pages, `docs/irql.md`.

mod common;

use std::ptr::NonNull;
use std::sync::Mutex;

use common::{Bench, Log, passive};
use kmcl::NtStatus;
use kmcl::channel::Endpoint;
use kmcl::irql::{Level, Passive};
use kmcl::packet::{Packet, PacketHandler};
use kmcl::send::{Completion, ExternalMdl, SendFlags, words_as_bytes};
use kmcl::state::StateHandler;
use kmcl_sim::Fault;

/// What completions reported: (context, status, response).
static DONE: Mutex<Vec<(usize, NtStatus, Vec<u8>)>> = Mutex::new(Vec::new());

struct Record;
impl Completion for Record {
    type Context = usize;
    fn completed(context: usize, status: NtStatus, response: &[u8], _level: Level) {
        DONE.lock()
            .unwrap()
            .push((context, status, response.to_vec()));
    }
}

fn done_for(ctx: usize) -> Vec<(NtStatus, Vec<u8>)> {
    DONE.lock()
        .unwrap()
        .iter()
        .filter(|d| d.0 == ctx)
        .map(|d| (d.1, d.2.clone()))
        .collect()
}

/// Does nothing with packets; sends are driven by the test.
struct Quiet;
impl PacketHandler for Quiet {
    fn process(&self, packet: Packet<'_>, _level: Level) {
        packet.complete();
    }
}
impl StateHandler for Quiet {}

#[test]
fn send_without_completion_reaches_the_host_and_is_freed_by_kmcl() {
    let b = Bench::deterministic(21);
    let p = passive();
    let ch = b
        .kmcl
        .channel(b.parent(), Quiet, p)
        .unwrap()
        .enable(p)
        .unwrap();
    b.idle();
    ch.endpoint().send(b"hello host").unwrap();
    b.idle();
    let pkt = b.offer.host().recv().expect("host got the packet");
    assert_eq!(&pkt.payload[..10], b"hello host");
    ch.close(p);
    b.sim.assert_clean();
}

fn completion_carries_the_response(legacy: bool, ctx: usize) {
    let b = Bench::deterministic(22);
    let p = passive();
    let mut builder = b.kmcl.channel(b.parent(), Quiet, p).unwrap();
    if legacy {
        builder = builder.legacy_callbacks();
    }
    let ch = builder.enable(p).unwrap();
    b.idle();
    ch.endpoint()
        .send_with_completion::<Record>(b"question", SendFlags::WAIT_FOR_COMPLETION, ctx)
        .unwrap();
    b.idle();
    let host = b.offer.host();
    let pkt = host.recv().expect("request");
    assert!(
        done_for(ctx).is_empty(),
        "no completion before the host answers"
    );
    host.complete(pkt.trans_id, b"answer!!").unwrap();
    b.idle();
    let got = done_for(ctx);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, NtStatus::SUCCESS);
    assert_eq!(&got[0].1[..8], b"answer!!");
    ch.close(p);
    b.sim.assert_clean();
}

#[test]
fn ex_completion_routine_carries_context_and_response() {
    completion_carries_the_response(false, 0xE5);
}

#[test]
fn plain_completion_routine_carries_context_and_response() {
    completion_carries_the_response(true, 0x71);
}

#[test]
fn failed_send_frees_the_packet_and_returns_the_context() {
    let b = Bench::deterministic(23);
    let p = passive();
    let ch = b
        .kmcl
        .channel(b.parent(), Quiet, p)
        .unwrap()
        .enable(p)
        .unwrap();
    b.idle();
    b.sim.inject(Fault::FailSend { count: 1 });
    let err = ch
        .endpoint()
        .send_with_completion::<Record>(b"x", SendFlags::WAIT_FOR_COMPLETION, 0xF0)
        .unwrap_err();
    assert_eq!(err.status, NtStatus::INSUFFICIENT_RESOURCES);
    assert_eq!(err.context, 0xF0);
    b.sim.inject(Fault::FailSend { count: 1 });
    assert_eq!(
        ch.endpoint().send(b"y"),
        Err(NtStatus::INSUFFICIENT_RESOURCES)
    );
    b.sim.inject(Fault::FailPacketAllocate { count: 1 });
    assert_eq!(
        ch.endpoint().send(b"z"),
        Err(NtStatus::INSUFFICIENT_RESOURCES)
    );
    b.idle();
    assert!(
        done_for(0xF0).is_empty(),
        "no callback follows a failed send"
    );
    ch.close(p);
    b.sim.assert_clean();
}

#[test]
#[cfg_attr(
    miri,
    ignore = "UB in the test: its MDL has no PFN array after the header, which read_mdl reads (docs/security.md)"
)]
fn send_with_external_mdl_hands_the_pages_to_the_host() {
    let b = Bench::deterministic(24);
    let p = passive();
    let ch = b
        .kmcl
        .channel(b.parent(), Quiet, p)
        .unwrap()
        .max_external_data(0x4000, 1)
        .unwrap()
        .enable(p)
        .unwrap();
    b.idle();
    let data: &'static mut [u8] = Box::leak(vec![0xC3u8; 300].into_boxed_slice());
    let mdl: &'static mut kmcl_sys::MDL = Box::leak(Box::new(kmcl_sys::MDL {
        Next: std::ptr::null_mut(),
        Size: 0,
        MdlFlags: kmcl_sys::MDL_MAPPED_TO_SYSTEM_VA,
        Process: std::ptr::null_mut(),
        MappedSystemVa: data.as_mut_ptr().cast(),
        StartVa: data.as_mut_ptr().cast(),
        ByteCount: 300,
        ByteOffset: 0,
    }));
    // SAFETY: the MDL and its buffer are leaked, so they outlive the transaction.
    let ext = unsafe { ExternalMdl::new(NonNull::from(mdl), 0, 0) };
    ch.endpoint()
        .send_with_mdl::<Record>(b"with mdl", ext, SendFlags::DATA_OUT_ONLY, 0x3D)
        .unwrap();
    b.idle();
    let host = b.offer.host();
    let pkt = host.recv().expect("request with external data");
    assert_eq!(&pkt.external[..300], &[0xC3; 300][..]);
    host.complete(pkt.trans_id, b"").unwrap();
    b.idle();
    assert_eq!(done_for(0x3D).len(), 1);
    ch.close(p);
    b.sim.assert_clean();
}

/// Negotiates synchronously in `post_started`, as the header recommends.
#[derive(Default)]
struct Negotiator {
    result: Log<Result<Vec<u8>, NtStatus>>,
}
impl PacketHandler for Negotiator {
    fn process(&self, packet: Packet<'_>, level: Level) {
        // The zero-timeout form works at DISPATCH_LEVEL.
        let r = packet.endpoint().try_send_now(b"notify");
        self.result
            .lock()
            .unwrap()
            .push(r.map(|()| format!("{}", common::level_char(level)).into_bytes()));
        packet.complete();
    }
}
impl StateHandler for Negotiator {
    fn post_started(&self, channel: Endpoint<'_>, irql: Passive) {
        let mut response = [0u64; 4];
        let r = channel.send_sync(b"version?", &mut response, None, irql);
        self.result
            .lock()
            .unwrap()
            .push(r.map(|n| words_as_bytes(&response, n).to_vec()));
    }
}

#[test]
fn synchronous_request_in_post_started_gets_the_response() {
    let b = Bench::deterministic(25);
    let host = b.offer.host();
    host.set_responder(|pkt| {
        pkt.payload
            .starts_with(b"version?")
            .then(|| b"v1.0....".to_vec())
    });
    let p = passive();
    let ch = b
        .kmcl
        .channel(b.parent(), Negotiator::default(), p)
        .unwrap()
        .enable(p)
        .unwrap();
    b.idle();
    let first = ch.handler().result.lock().unwrap().first().cloned();
    assert_eq!(
        first.map(|r| r.map(|v| v[..8].to_vec())),
        Some(Ok(b"v1.0....".to_vec()))
    );
    ch.close(p);
    b.sim.assert_clean();
}

#[test]
fn zero_timeout_request_is_allowed_at_dispatch_level() {
    let b = Bench::deterministic(26);
    b.offer.host().set_responder(|_| Some(b"ok......".to_vec()));
    let p = passive();
    let ch = b
        .kmcl
        .channel(b.parent(), Negotiator::default(), p)
        .unwrap()
        .enable(p)
        .unwrap();
    b.idle();
    let host = b.offer.host();
    while host.recv().is_some() {}
    host.send_inband(b"tick", false).unwrap();
    b.idle();
    let last = ch.handler().result.lock().unwrap().last().cloned();
    assert_eq!(last, Some(Ok(b"D".to_vec())));
    let got = host.recv().expect("notify reached the host");
    assert_eq!(&got.payload[..6], b"notify");
    ch.close(p);
    b.sim.assert_clean();
}

#[test]
#[cfg_attr(miri, ignore = "threaded mode: real threads and timeouts")]
fn threaded_completions_arrive_for_every_send() {
    let b = Bench::threaded();
    let host = b.offer.host();
    host.set_responder(|pkt| Some(pkt.payload.clone()));
    let p = passive();
    let ch = b
        .kmcl
        .channel(b.parent(), Quiet, p)
        .unwrap()
        .enable(p)
        .unwrap();
    assert!(host.wait_open(std::time::Duration::from_secs(10)));
    let base = 0x10_0000;
    let mut sent = 0;
    while sent < 500 {
        match ch.endpoint().send_with_completion::<Record>(
            &u32::to_le_bytes(sent),
            SendFlags::WAIT_FOR_COMPLETION,
            base + sent as usize,
        ) {
            Ok(()) => sent += 1,
            Err(e) => {
                assert_eq!(e.context, base + sent as usize);
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
    }
    assert!(common::wait_for(std::time::Duration::from_secs(30), || {
        DONE.lock()
            .unwrap()
            .iter()
            .filter(|d| d.0 >= base && d.0 < base + 500)
            .count()
            == 500
    }));
    for i in 0..500usize {
        let d = done_for(base + i);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].1[..4], u32::try_from(i).unwrap().to_le_bytes());
    }
    ch.close(p);
    b.sim.assert_clean();
}

/// What inline completions reported: (value, status, response).
type InlineLog = Vec<([u64; 3], NtStatus, Vec<u8>)>;
static INLINE_DONE: Mutex<InlineLog> = Mutex::new(Vec::new());

struct InlineRecord;
impl kmcl::send::InlineCompletion for InlineRecord {
    type Value = [u64; 3];
    fn completed(value: [u64; 3], status: NtStatus, response: &[u8], _level: Level) {
        INLINE_DONE
            .lock()
            .unwrap()
            .push((value, status, response.to_vec()));
    }
}

#[test]
fn inline_packet_context_carries_the_completion_value() {
    let b = Bench::deterministic(27);
    let p = passive();
    let ch = b
        .kmcl
        .channel(b.parent(), Quiet, p)
        .unwrap()
        .inline_packet_context_size(24)
        .unwrap()
        .enable(p)
        .unwrap();
    b.idle();
    let value = [0x1111, 0x2222, 0x3333];
    ch.endpoint()
        .send_with_inline::<InlineRecord>(b"inline?", SendFlags::WAIT_FOR_COMPLETION, value)
        .unwrap();
    b.idle();
    let host = b.offer.host();
    let pkt = host.recv().expect("request");
    host.complete(pkt.trans_id, b"inline!!").unwrap();
    b.idle();
    let got: Vec<_> = INLINE_DONE
        .lock()
        .unwrap()
        .iter()
        .filter(|d| d.0 == value)
        .cloned()
        .collect();
    assert_eq!(got.len(), 1);
    assert_eq!(
        (got[0].1, &got[0].2[..8]),
        (NtStatus::SUCCESS, &b"inline!!"[..])
    );
    // A value larger than the configured inline size is refused and given back.
    struct Big;
    impl kmcl::send::InlineCompletion for Big {
        type Value = [u64; 4];
        fn completed(_: [u64; 4], _: NtStatus, _: &[u8], _: Level) {}
    }
    let err = ch
        .endpoint()
        .send_with_inline::<Big>(b"x", SendFlags::NONE, [9; 4])
        .unwrap_err();
    assert_eq!(
        (err.status, err.context),
        (NtStatus::BUFFER_TOO_SMALL, [9; 4])
    );
    // A failed send gives the inline value back too.
    b.sim.inject(Fault::FailSend { count: 1 });
    let err = ch
        .endpoint()
        .send_with_inline::<InlineRecord>(b"y", SendFlags::NONE, [7; 3])
        .unwrap_err();
    assert_eq!(
        (err.status, err.context),
        (NtStatus::INSUFFICIENT_RESOURCES, [7; 3])
    );
    ch.close(p);
    b.sim.assert_clean();
}
