//! The same paths in the simulator's threaded mode: KMCL's DPC, passive worker and the
//! host run on their own threads; the verifier stays in bugcheck mode.
//!
//! C header: `vmbuskernelmodeclientlibapi.h` (`VmbChannelSetIncomingProcessingAtPassive`,
//! `VmbChannelPacketDeferToPassive`, `VmbChannelPacketGetExternalData`,
//! `VmbChannelSendSynchronousRequest`, state-change callbacks); reference `docs/irql.md`,
//! `docs/architecture.md` (lifecycle).

mod common;

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use common::{Bench, Log, level_char, passive, wait_for};
use kmcl::channel::{Endpoint, ProcessingMode};
use kmcl::external::Access;
use kmcl::irql::{Level, Passive};
use kmcl::packet::{Packet, PacketHandler, PendingPacket};
use kmcl::send::words_as_bytes;
use kmcl::state::StateHandler;

const T: Duration = Duration::from_secs(30);

/// Every kind of retirement, picked by the first payload byte:
/// 0 complete with echo, 1 defer then complete at passive, 2 keep pending,
/// 3 external data checksum, 4 complete without response.
#[derive(Default)]
struct Mixed {
    levels: Log<(u8, char)>,
    pending: Mutex<Vec<PendingPacket>>,
    negotiated: Log<Vec<u8>>,
    events: Log<&'static str>,
}

impl PacketHandler for Mixed {
    fn process(&self, mut packet: Packet<'_>, level: Level) {
        let kind = packet.payload().first().copied().unwrap_or(0);
        self.levels.lock().unwrap().push((kind, level_char(level)));
        match (kind, level) {
            (1, Level::Dispatch(d)) => packet.defer(d),
            (2, _) => self.pending.lock().unwrap().push(packet.into_pending()),
            (3, _) => {
                let sum = match packet.external_data(Access::ReadOnly) {
                    Ok(ext) => ext.as_slice().iter().map(|&b| u32::from(b)).sum::<u32>(),
                    Err(_) => u32::MAX,
                };
                packet.complete_with(&sum.to_le_bytes());
            }
            (4, _) => packet.complete(),
            _ => {
                let echo = packet.payload().to_vec();
                packet.complete_with(&echo);
            }
        }
    }
}

impl StateHandler for Mixed {
    fn opened(&self, _c: Endpoint<'_>, _p: Passive) -> kmcl::Result {
        self.events.lock().unwrap().push("opened");
        Ok(())
    }
    fn post_started(&self, channel: Endpoint<'_>, irql: Passive) {
        self.events.lock().unwrap().push("post_started");
        let mut response = [0u64; 2];
        if let Ok(n) = channel.send_sync(b"hello?", &mut response, None, irql) {
            self.negotiated
                .lock()
                .unwrap()
                .push(words_as_bytes(&response, n).to_vec());
        }
    }
    fn suspend(&self, _c: Endpoint<'_>, _p: Passive) {
        self.events.lock().unwrap().push("suspend");
        for p in self.pending.lock().unwrap().drain(..) {
            p.complete_with(b"suspend!");
        }
    }
    fn closed(&self, _c: Endpoint<'_>, _p: Passive) {
        self.events.lock().unwrap().push("closed");
    }
}

fn start(mode: ProcessingMode) -> (Bench, kmcl::channel::Channel<Mixed>) {
    let b = Bench::threaded();
    b.offer.host().set_responder(|pkt| {
        pkt.payload
            .starts_with(b"hello?")
            .then(|| b"welcome!".to_vec())
    });
    let p = passive();
    let ch = b
        .kmcl
        .channel(b.parent(), Mixed::default(), p)
        .unwrap()
        .ring_pages(8, 8)
        .unwrap()
        .max_external_data(0x1_0000, 4)
        .unwrap()
        .processing_mode(mode)
        .enable(p)
        .unwrap();
    assert!(b.offer.host().wait_open(T));
    assert!(wait_for(T, || ch
        .handler()
        .negotiated
        .lock()
        .unwrap()
        .len()
        == 1));
    (b, ch)
}

fn collect(b: &Bench, n: usize) -> Vec<(u64, Vec<u8>)> {
    let host = b.offer.host();
    let mut got = Vec::new();
    let end = std::time::Instant::now() + T;
    while got.len() < n && std::time::Instant::now() < end {
        if let Some(c) = host.take_completion_timeout(Duration::from_millis(10)) {
            got.push(c);
        }
    }
    got
}

#[test]
fn threaded_every_retirement_kind_completes_each_packet_once() {
    let (b, ch) = start(ProcessingMode::Dispatch);
    assert_eq!(
        ch.handler().negotiated.lock().unwrap()[0][..8],
        *b"welcome!"
    );
    let host = b.offer.host();
    let mut expected = 0;
    for round in 0..40u8 {
        for kind in [0u8, 1, 3, 4] {
            let sent = if kind == 3 {
                host.send_gpa_direct(&[3, round], &[round; 32], false, true)
            } else {
                host.send_inband(&[kind, round, 0, 0, 0, 0, 0, 0], true)
            };
            if sent.is_ok() {
                expected += 1;
            }
        }
    }
    let got = collect(&b, expected);
    assert_eq!(got.len(), expected);
    let levels = ch.handler().levels.lock().unwrap().clone();
    assert!(
        levels.iter().any(|&(k, l)| k == 1 && l == 'P'),
        "deferred packets came back at PASSIVE"
    );
    assert!(
        levels
            .iter()
            .filter(|&&(k, _)| k == 0)
            .all(|&(_, l)| l == 'D')
    );
    // Pending packets completed from a foreign thread while the DPC keeps delivering.
    let ids: Vec<u64> = (0..20u8)
        .filter_map(|i| host.send_inband(&[2, i], true).ok())
        .collect();
    assert!(wait_for(T, || ch.handler().pending.lock().unwrap().len()
        == ids.len()));
    let pending: Vec<PendingPacket> = ch.handler().pending.lock().unwrap().drain(..).collect();
    std::thread::spawn(move || {
        pending
            .into_iter()
            .for_each(|p| p.complete_with(b"worker!!"))
    })
    .join()
    .unwrap();
    assert_eq!(collect(&b, ids.len()).len(), ids.len());
    ch.close(passive());
    b.sim.assert_clean();
}

#[test]
fn threaded_passive_mode_delivers_at_passive_level() {
    let (b, ch) = start(ProcessingMode::Passive);
    let host = b.offer.host();
    let n = (0..100u8)
        .filter(|i| host.send_inband(&[0, *i], true).is_ok())
        .count();
    assert_eq!(collect(&b, n).len(), n);
    let levels = ch.handler().levels.lock().unwrap().clone();
    assert!(levels.iter().all(|&(_, l)| l == 'P'), "{levels:?}");
    ch.close(passive());
    b.sim.assert_clean();
}

#[test]
fn threaded_suspend_completes_pending_packets_on_close() {
    let (b, ch) = start(ProcessingMode::Dispatch);
    let host = b.offer.host();
    let n = (0..10u8)
        .filter(|i| host.send_inband(&[2, *i], true).is_ok())
        .count();
    assert!(wait_for(T, || ch.handler().pending.lock().unwrap().len() == n));
    let Ok(builder) = ch.disable(passive()) else {
        unreachable!("not inside a state callback")
    };
    let events = builder.handler().events.lock().unwrap().clone();
    assert_eq!(events, ["opened", "post_started", "suspend", "closed"]);
    drop(builder);
    b.sim.assert_clean();
}

#[test]
fn threaded_rescind_reaches_suspend_and_closed() {
    let (b, ch) = start(ProcessingMode::Dispatch);
    b.offer.host().rescind();
    assert!(wait_for(T, || ch
        .handler()
        .events
        .lock()
        .unwrap()
        .contains(&"closed")));
    ch.close(passive());
    b.sim.assert_clean();
}

/// Counts deliveries; used to flood the channel from several host threads.
#[derive(Default)]
struct Count(AtomicU32);
impl PacketHandler for Count {
    fn process(&self, packet: Packet<'_>, _level: Level) {
        self.0.fetch_add(1, Ordering::Relaxed);
        packet.complete();
    }
}
impl StateHandler for Count {}

#[test]
fn threaded_concurrent_host_senders_are_all_completed() {
    let b = Bench::threaded();
    let p = passive();
    let ch = b
        .kmcl
        .channel(b.parent(), Count::default(), p)
        .unwrap()
        .ring_pages(16, 16)
        .unwrap()
        .enable(p)
        .unwrap();
    assert!(b.offer.host().wait_open(T));
    let senders: Vec<_> = (0..3)
        .map(|t| {
            let host = b.offer.host();
            std::thread::spawn(move || {
                let mut sent = 0u32;
                let mut tries = 0u32;
                while sent < 300 && tries < 100_000 {
                    tries += 1;
                    if host.send_inband(&[t; 24], false).is_ok() {
                        sent += 1;
                    } else {
                        std::thread::yield_now();
                    }
                }
                sent
            })
        })
        .collect();
    let total: u32 = senders.into_iter().map(|h| h.join().unwrap()).sum();
    assert!(wait_for(T, || ch.handler().0.load(Ordering::Relaxed) == total));
    ch.close(p);
    b.sim.assert_clean();
}
