//! Incoming packets end to end against kmcl-sim: retirement, levels, modes, external data.
//!
//! C header: `vmbuskernelmodeclientlibapi.h` (`EvtVmbChannelProcessPacket(_EX)`,
//! `VmbChannelPacketComplete`, `VmbChannelPacketFail`, `VmbChannelPacketDeferToPassive`,
//! `VmbChannelPacketGetExternalData`); reference: their DDI pages.

mod common;

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use common::{Bench, Log, level_char, passive};
use kmcl::channel::{Endpoint, ProcessingMode};
use kmcl::external::Access;
use kmcl::irql::Level;
use kmcl::packet::{Packet, PacketHandler, PendingPacket};
use kmcl::state::StateHandler;
use kmcl_sim::SimConfig;

/// Echoes every payload back as the completion and logs the level it ran at.
#[derive(Default)]
struct Echo {
    levels: Log<char>,
    batches: Log<u32>,
}

impl PacketHandler for Echo {
    fn process(&self, packet: Packet<'_>, level: Level) {
        self.levels.lock().unwrap().push(level_char(level));
        let mut reply = [0u8; 256];
        let n = packet.payload().len().min(reply.len());
        reply[..n].copy_from_slice(&packet.payload()[..n]);
        packet.complete_with(&reply[..n]);
    }
    const HAS_PROCESSING_COMPLETE: bool = true;
    fn processing_complete(&self, _channel: Endpoint<'_>, packets: u32, _level: Level) {
        self.batches.lock().unwrap().push(packets);
    }
}
impl StateHandler for Echo {}

fn echo_roundtrip(b: &Bench, n: u32) {
    let host = b.offer.host();
    let mut ids = Vec::new();
    for i in 0..n {
        let msg = format!("message {i:04}");
        ids.push((
            host.send_inband(msg.as_bytes(), true).expect("host send"),
            msg,
        ));
        if i % 8 == 7 {
            b.idle();
        }
    }
    b.idle();
    let mut got = Vec::new();
    while let Some(c) = host.take_completion() {
        got.push(c);
    }
    assert_eq!(got.len(), ids.len());
    for ((id, msg), (cid, resp)) in ids.iter().zip(&got) {
        assert_eq!(id, cid);
        assert_eq!(&resp[..msg.len()], msg.as_bytes());
    }
}

#[test]
fn completes_each_packet_exactly_once() {
    let b = Bench::deterministic(7);
    let p = passive();
    let ch = b
        .kmcl
        .channel(b.parent(), Echo::default(), p)
        .unwrap()
        .ring_pages(4, 4)
        .unwrap()
        .enable(p)
        .unwrap();
    b.idle();
    echo_roundtrip(&b, 40);
    let levels = ch.handler().levels.lock().unwrap().clone();
    assert_eq!(levels.len(), 40);
    assert!(
        levels.iter().all(|l| *l == 'D'),
        "default mode delivers at DISPATCH_LEVEL: {levels:?}"
    );
    let batches: u32 = ch.handler().batches.lock().unwrap().iter().sum();
    assert_eq!(batches, 40, "ProcessingComplete counts every delivery");
    assert_eq!(ch.dropped_unretired(), 0);
    ch.close(p);
    b.sim.assert_clean();
    assert_eq!(kmcl::irql::mismatches(), 0);
}

#[test]
fn legacy_v1_callbacks_find_their_context_through_get_pointer() {
    let b = Bench::deterministic(8);
    let p = passive();
    let ch = b
        .kmcl
        .channel(b.parent(), Echo::default(), p)
        .unwrap()
        .legacy_callbacks()
        .enable(p)
        .unwrap();
    b.idle();
    echo_roundtrip(&b, 12);
    ch.close(p);
    b.sim.assert_clean();
}

#[test]
fn passive_mode_delivers_every_packet_with_a_passive_token() {
    let b = Bench::deterministic(9);
    let p = passive();
    let ch = b
        .kmcl
        .channel(b.parent(), Echo::default(), p)
        .unwrap()
        .processing_mode(ProcessingMode::Passive)
        .enable(p)
        .unwrap();
    b.idle();
    echo_roundtrip(&b, 10);
    let levels = ch.handler().levels.lock().unwrap().clone();
    assert_eq!(levels, vec!['P'; 10]);
    ch.close(p);
    b.sim.assert_clean();
}

/// Defers every packet delivered at DISPATCH_LEVEL; completes it when redelivered at PASSIVE.
#[derive(Default)]
struct Deferrer {
    seen: Log<(char, Vec<u8>)>,
}

impl PacketHandler for Deferrer {
    fn process(&self, packet: Packet<'_>, level: Level) {
        self.seen
            .lock()
            .unwrap()
            .push((level_char(level), packet.payload()[..3].to_vec()));
        match level {
            Level::Dispatch(d) => packet.defer(d),
            Level::Passive(_) => packet.complete_with(b"passive!"),
        }
    }
}
impl StateHandler for Deferrer {}

#[test]
fn deferred_packet_is_redelivered_at_passive_level() {
    let b = Bench::deterministic(10);
    let p = passive();
    let ch = b
        .kmcl
        .channel(b.parent(), Deferrer::default(), p)
        .unwrap()
        .enable(p)
        .unwrap();
    b.idle();
    let host = b.offer.host();
    let id = host.send_inband(b"abcdefgh", true).unwrap();
    b.idle();
    assert_eq!(
        host.take_completion().map(|(i, r)| (i, r[..8].to_vec())),
        Some((id, b"passive!".to_vec()))
    );
    let seen = ch.handler().seen.lock().unwrap().clone();
    assert_eq!(seen, vec![('D', b"abc".to_vec()), ('P', b"abc".to_vec())]);
    ch.close(p);
    b.sim.assert_clean();
}

/// Drops every packet without retiring it.
struct Dropper;
impl PacketHandler for Dropper {
    fn process(&self, packet: Packet<'_>, _level: Level) {
        let _ = packet.payload().len();
    }
}
impl StateHandler for Dropper {}

#[test]
fn dropped_unretired_packet_is_completed_and_reported() {
    let b = Bench::deterministic(11);
    let p = passive();
    let before = kmcl::packet::unretired_drops();
    let ch = b
        .kmcl
        .channel(b.parent(), Dropper, p)
        .unwrap()
        .enable(p)
        .unwrap();
    b.idle();
    let host = b.offer.host();
    for _ in 0..5 {
        host.send_inband(b"forgotten", true).unwrap();
    }
    b.idle();
    let mut completions = 0;
    while let Some((_, resp)) = host.take_completion() {
        assert!(resp.iter().all(|&x| x == 0), "no response bytes: {resp:?}");
        completions += 1;
    }
    assert_eq!(completions, 5);
    assert_eq!(ch.dropped_unretired(), 5);
    assert!(kmcl::packet::unretired_drops() >= before + 5);
    ch.close(p);
    b.sim.assert_clean();
}

/// Keeps every packet pending; the test completes them later from another thread.
#[derive(Default)]
struct Keeper {
    pending: Mutex<Vec<PendingPacket>>,
    suspended: AtomicU32,
}

impl PacketHandler for Keeper {
    fn process(&self, packet: Packet<'_>, _level: Level) {
        self.pending.lock().unwrap().push(packet.into_pending());
    }
}
impl StateHandler for Keeper {
    fn suspend(&self, _channel: Endpoint<'_>, _irql: kmcl::irql::Passive) {
        self.suspended.fetch_add(1, Ordering::Relaxed);
        for p in self.pending.lock().unwrap().drain(..) {
            p.complete_with(b"at suspend");
        }
    }
}

#[test]
fn pending_packet_is_completed_later_from_another_thread() {
    let b = Bench::deterministic(12);
    let p = passive();
    let ch = b
        .kmcl
        .channel(b.parent(), Keeper::default(), p)
        .unwrap()
        .enable(p)
        .unwrap();
    b.idle();
    let host = b.offer.host();
    let ids: Vec<u64> = (0..3)
        .map(|i| host.send_inband(&[i; 16], true).unwrap())
        .collect();
    b.idle();
    assert!(host.take_completion().is_none(), "nothing completed yet");
    let pending: Vec<PendingPacket> = ch.handler().pending.lock().unwrap().drain(..).collect();
    std::thread::spawn(move || {
        for (i, p) in pending.into_iter().enumerate() {
            assert_eq!(p.payload()[..16], [u8::try_from(i).unwrap(); 16]);
            p.complete_with(&[0xA0 + u8::try_from(i).unwrap(); 8]);
        }
    })
    .join()
    .unwrap();
    b.idle();
    for (i, id) in ids.iter().enumerate() {
        let (cid, resp) = host.take_completion().expect("completion");
        assert_eq!(cid, *id);
        assert_eq!(resp[..8], [0xA0 + u8::try_from(i).unwrap(); 8]);
    }
    ch.close(p);
    b.sim.assert_clean();
}

#[test]
fn suspend_completes_pending_packets_so_disable_finishes() {
    let b = Bench::deterministic(13);
    let p = passive();
    let ch = b
        .kmcl
        .channel(b.parent(), Keeper::default(), p)
        .unwrap()
        .enable(p)
        .unwrap();
    b.idle();
    let host = b.offer.host();
    host.send_inband(b"held over", true).unwrap();
    b.idle();
    let Ok(builder) = ch.disable(p) else {
        unreachable!("not inside a state callback")
    };
    assert_eq!(builder.handler().suspended.load(Ordering::Relaxed), 1);
    assert!(builder.handler().pending.lock().unwrap().is_empty());
    drop(builder);
    b.idle();
    // Had `suspend` not completed the packet, Disable could not finish: the verifier
    // reports PACKET_OUTSTANDING_AT_DISABLE (or DEADLOCK) here.
    b.sim.assert_clean();
}

/// Fails every packet as malformed.
struct Failer;
impl PacketHandler for Failer {
    fn process(&self, packet: Packet<'_>, _level: Level) {
        packet.fail();
    }
}
impl StateHandler for Failer {}

#[test]
fn fail_retires_a_malformed_packet_once() {
    let b = Bench::deterministic(14);
    let p = passive();
    let ch = b
        .kmcl
        .channel(b.parent(), Failer, p)
        .unwrap()
        .enable(p)
        .unwrap();
    b.idle();
    b.offer.host().send_inband(b"garbage", true).unwrap();
    b.idle();
    assert_eq!(ch.dropped_unretired(), 0);
    ch.close(p);
    b.sim.assert_clean();
}

/// Reads (or fills) the external data and answers with its checksum.
#[derive(Default)]
struct External {
    seen: Log<Vec<u8>>,
}

impl PacketHandler for External {
    fn process(&self, mut packet: Packet<'_>, _level: Level) {
        if !packet.flags().has_external_data() {
            packet.complete_with(b"no-ext");
            return;
        }
        let writable = packet.payload().starts_with(b"fill");
        let access = if writable {
            Access::Writable
        } else {
            Access::ReadOnly
        };
        let sum = match packet.external_data(access) {
            Ok(mut ext) => {
                self.seen.lock().unwrap().push(ext.as_slice().to_vec());
                if writable && let Ok(bytes) = ext.as_mut_slice() {
                    bytes.fill(0x5A);
                }
                ext.as_slice().iter().map(|&b| u32::from(b)).sum::<u32>()
            }
            Err(e) => {
                self.seen.lock().unwrap().push(format!("{e}").into_bytes());
                0
            }
        };
        packet.complete_with(&sum.to_le_bytes());
    }
}
impl StateHandler for External {}

#[test]
fn external_data_is_a_read_only_view_of_the_mdl() {
    let b = Bench::deterministic(15);
    let p = passive();
    let ch = b
        .kmcl
        .channel(b.parent(), External::default(), p)
        .unwrap()
        .max_external_data(0x10000, 4)
        .unwrap()
        .enable(p)
        .unwrap();
    b.idle();
    let host = b.offer.host();
    let ext: Vec<u8> = (0..100u8).collect();
    let id = host.send_gpa_direct(b"read", &ext, false, true).unwrap();
    b.idle();
    let seen = ch.handler().seen.lock().unwrap().clone();
    assert_eq!(seen, vec![ext.clone()]);
    let expect: u32 = ext.iter().map(|&x| u32::from(x)).sum();
    assert_eq!(
        host.take_completion().map(|(i, r)| (i, r[..4].to_vec())),
        Some((id, expect.to_le_bytes().to_vec()))
    );
    ch.close(p);
    b.sim.assert_clean();
}

#[test]
fn writable_external_data_reaches_the_other_endpoint() {
    let b = Bench::deterministic(16);
    let p = passive();
    let ch = b
        .kmcl
        .channel(b.parent(), External::default(), p)
        .unwrap()
        .max_external_data(0x10000, 4)
        .unwrap()
        .enable(p)
        .unwrap();
    b.idle();
    let host = b.offer.host();
    let id = host
        .send_gpa_direct(b"fill", &[0u8; 64], true, true)
        .unwrap();
    b.idle();
    assert_eq!(host.external_data(id), Some(vec![0x5A; 64]));
    assert!(host.take_completion().is_some());
    ch.close(p);
    b.sim.assert_clean();
}

#[test]
fn empty_payload_is_an_empty_slice() {
    let b = Bench::with(SimConfig::deterministic(17).with_padded_lengths(false));
    let p = passive();
    let ch = b
        .kmcl
        .channel(b.parent(), Echo::default(), p)
        .unwrap()
        .enable(p)
        .unwrap();
    b.idle();
    let host = b.offer.host();
    let id = host.send_inband(&[], true).unwrap();
    b.idle();
    assert_eq!(host.take_completion(), Some((id, Vec::new())));
    ch.close(p);
    b.sim.assert_clean();
}

#[test]
#[cfg_attr(miri, ignore = "threaded mode: real threads and timeouts")]
fn threaded_echo_completes_every_packet_under_load() {
    let b = Bench::threaded();
    let p = passive();
    let ch = b
        .kmcl
        .channel(b.parent(), Echo::default(), p)
        .unwrap()
        .ring_pages(8, 8)
        .unwrap()
        .enable(p)
        .unwrap();
    let host = b.offer.host();
    assert!(host.wait_open(std::time::Duration::from_secs(10)));
    let n = 2000u32;
    let mut sent = 0u32;
    let mut done = 0u32;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while done < n && std::time::Instant::now() < deadline {
        if sent < n && host.send_inband(&sent.to_le_bytes(), true).is_ok() {
            sent += 1;
            continue;
        }
        if let Some((_, resp)) = host.take_completion_timeout(std::time::Duration::from_millis(5)) {
            assert_eq!(resp.len() % 8, 0);
            done += 1;
        }
    }
    assert_eq!(done, n);
    assert_eq!(ch.handler().levels.lock().unwrap().len(), n as usize);
    ch.close(p);
    b.sim.assert_clean();
}

/// Uses the per-packet client context as scratch space and answers with what it held.
struct Scratch;
impl PacketHandler for Scratch {
    fn process(&self, mut packet: Packet<'_>, _level: Level) {
        let mut reply = [0u8; 8];
        if let Ok(ctx) = packet.client_context() {
            let fresh = ctx.len();
            ctx[..8].copy_from_slice(b"scratch!");
            reply.copy_from_slice(&ctx[..8]);
            reply[7] = u8::try_from(fresh).unwrap_or(0);
        }
        packet.complete_with(&reply);
    }
}
impl StateHandler for Scratch {}

#[test]
fn client_context_is_per_packet_scratch_of_the_configured_size() {
    let b = Bench::deterministic(18);
    let p = passive();
    let ch = b
        .kmcl
        .channel(b.parent(), Scratch, p)
        .unwrap()
        .client_context_size(32)
        .unwrap()
        .enable(p)
        .unwrap();
    b.idle();
    let host = b.offer.host();
    host.send_inband(b"ctx", true).unwrap();
    b.idle();
    let (_, resp) = host.take_completion().expect("completion");
    assert_eq!(&resp[..7], b"scratch");
    assert_eq!(resp[7], 32, "the context has the configured size");
    ch.close(p);
    b.sim.assert_clean();
}
