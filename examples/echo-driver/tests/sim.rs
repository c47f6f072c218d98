//! The echo driver against the simulated host, with the verifier on: both processing
//! modes, deterministic seeds and real threads, rescinds, injected faults, and a broken
//! variant the verifier reports.
//!
//! C header: `vmbuskernelmodeclientlibapi.h` (through `kmcl` and `kmcl-sim`).

use echo_driver::{ECHO_CHANNEL_TYPE, Echo, open};
use kmcl::channel::{Channel, Kmcl, ParentDevice, ProcessingMode};
use kmcl::irql::{Level, Passive};
use kmcl::packet::{Packet, PacketHandler};
use kmcl::state::StateHandler;
use kmcl_sim::script::{ErrorKind, Script, for_each_seed};
use kmcl_sim::{Fault, Offer, OfferConfig, Rule, Sim, SimConfig};

const MODES: [ProcessingMode; 2] = [ProcessingMode::Dispatch, ProcessingMode::Passive];

/// The simulated VMBus, the echo channel's offer, and the driver's view of KMCL, as the
/// KMDF glue gets them (`WdfFdoQueryForInterface`, the FDO).
struct Bench {
    sim: Sim,
    offer: Offer,
    kmcl: Kmcl,
    passive: Passive,
}

impl Bench {
    fn new(cfg: SimConfig) -> Bench {
        // SAFETY: rule IRQL_SOURCE_TRUTHFUL: the simulator's IRQL of the calling thread, the
        // IRQL it runs the driver's code at on every thread.
        unsafe { kmcl::irql::set_host_irql_source(kmcl_sim::current_irql) };
        let sim = Sim::new(cfg);
        let offer = sim.offer(OfferConfig::default().with_interface_type(ECHO_CHANNEL_TYPE));
        // The kernel's table outlives the driver; a test leaks its copy.
        let kmcl = Kmcl::new(Box::leak(Box::new(*sim.client_interface()))).unwrap();
        let passive = Passive::try_current().unwrap();
        Bench {
            sim,
            offer,
            kmcl,
            passive,
        }
    }

    fn parent(&self) -> ParentDevice {
        // SAFETY: the offer's device object lives as long as the simulation, which
        // outlives every channel of these tests.
        unsafe { ParentDevice::from_raw(self.offer.device_object()) }
    }

    /// `EvtDevicePrepareHardware`: open the echo channel and let the host's open finish.
    fn open(&self, mode: ProcessingMode) -> Channel<Echo> {
        let channel = open(&self.kmcl, self.parent(), mode, self.passive).unwrap();
        assert!(
            self.offer
                .host()
                .wait_open(std::time::Duration::from_secs(10))
        );
        channel
    }
}

/// Packets of every size class: empty, unaligned, one 8-byte unit, larger than a page.
fn payloads() -> Vec<Vec<u8>> {
    [0usize, 1, 7, 8, 13, 64, 4000]
        .iter()
        .map(|&n| (0..n).map(|i| (i * 7 + n) as u8).collect())
        .collect()
}

fn echo_script() -> Script {
    let mut script = Script::new();
    for p in payloads() {
        script = script.send(&p).expect_response(&p);
    }
    script.send_no_completion(b"no completion asked").settle()
}

#[test]
fn every_packet_is_echoed_in_both_modes_over_many_seeds() {
    for mode in MODES {
        for_each_seed(0..16, |seed| {
            let b = Bench::new(SimConfig::deterministic(seed));
            let channel = b.open(mode);
            let report = echo_script().run(&b.sim, &b.offer.host()).unwrap();
            report.assert_clean();
            assert_eq!(report.completions.len(), payloads().len());
            assert_eq!(channel.handler().echoed(), payloads().len() as u64 + 1);
            assert_eq!(channel.handler().unanswered(), 0);
            assert_eq!(channel.processing_mode(), mode);
            let at_passive = match mode {
                ProcessingMode::Passive => channel.handler().echoed(),
                _ => 0,
            };
            assert_eq!(channel.handler().at_passive(), at_passive, "{mode:?}");
            channel.close(b.passive);
            b.sim.assert_clean();
        });
    }
}

#[test]
fn echoes_under_threaded_kmcl_in_both_modes() {
    for mode in MODES {
        let b = Bench::new(SimConfig::threaded());
        let channel = b.open(mode);
        let mut script = Script::new();
        for i in 0u32..300 {
            let p = i.to_le_bytes().repeat(1 + i as usize % 40);
            script = script.send(&p).expect_response(&p);
        }
        script.run(&b.sim, &b.offer.host()).unwrap().assert_clean();
        assert_eq!(channel.handler().echoed(), 300);
        let at_passive = if mode == ProcessingMode::Passive {
            300
        } else {
            0
        };
        assert_eq!(channel.handler().at_passive(), at_passive, "{mode:?}");
        channel.close(b.passive);
        b.sim.assert_clean();
    }
}

#[test]
fn a_wrong_response_names_its_step() {
    let b = Bench::new(SimConfig::deterministic(1));
    let channel = b.open(ProcessingMode::Dispatch);
    let err = Script::new()
        .send(b"one")
        .expect_response(b"one")
        .send(b"two")
        .expect_response(b"not two")
        .run(&b.sim, &b.offer.host())
        .unwrap_err();
    assert_eq!(err.step(), 1);
    assert!(
        matches!(err.kind(), ErrorKind::WrongResponse { .. }),
        "{err}"
    );
    channel.close(b.passive);
}

#[test]
fn rescind_with_packets_in_flight_closes_cleanly_in_both_modes() {
    for mode in MODES {
        for_each_seed(0..8, |seed| {
            let b = Bench::new(SimConfig::deterministic(seed));
            let channel = b.open(mode);
            Script::new()
                .send(b"before")
                .expect_response(b"before")
                .send(b"in flight")
                .rescind()
                .expect_closed()
                .run(&b.sim, &b.offer.host())
                .unwrap()
                .assert_clean();
            // The glue's EvtDeviceReleaseHardware after the PDO is removed.
            channel.close(b.passive);
            b.sim.assert_clean();
        });
    }
}

#[test]
fn rescind_during_delivery_closes_cleanly() {
    for mode in MODES {
        let b = Bench::new(SimConfig::deterministic(3));
        let channel = b.open(mode);
        Script::new()
            .inject(Fault::RescindDuringDelivery)
            .send(b"last")
            .expect_closed()
            .run(&b.sim, &b.offer.host())
            .unwrap()
            .assert_clean();
        assert_eq!(channel.handler().echoed(), 1);
        channel.close(b.passive);
        b.sim.assert_clean();
    }
}

#[test]
fn full_outgoing_ring_delays_but_keeps_every_response() {
    for mode in MODES {
        let b = Bench::new(SimConfig::deterministic(5));
        let channel = b.open(mode);
        let report = Script::new()
            .inject(Fault::RingFull { count: 4 })
            .send(b"a")
            .expect_response(b"a")
            .send(b"bb")
            .expect_response(b"bb")
            .send(b"ccc")
            .expect_response(b"ccc")
            .run(&b.sim, &b.offer.host())
            .unwrap();
        report.assert_clean();
        assert_eq!(report.completions.len(), 3);
        channel.close(b.passive);
    }
}

/// A broken echo: it keeps every packet and forgets it (safe code can leak a
/// `PendingPacket`), which KMCL's Disable would wait for forever.
#[derive(Default)]
struct Forgetful;

impl PacketHandler for Forgetful {
    fn process(&self, packet: Packet<'_>, _level: Level) {
        std::mem::forget(packet.into_pending());
    }
}

impl StateHandler for Forgetful {}

#[test]
fn verifier_reports_a_packet_never_completed() {
    let b = Bench::new(SimConfig::deterministic(2).collect());
    let channel = b
        .kmcl
        .channel(b.parent(), Forgetful, b.passive)
        .unwrap()
        .enable(b.passive)
        .unwrap();
    assert!(b.offer.host().wait_open(std::time::Duration::from_secs(1)));
    let report = Script::new()
        .send_no_completion(b"never completed")
        .settle()
        .rescind()
        .run(&b.sim, &b.offer.host())
        .unwrap();
    report.assert_rules(&[Rule::PacketOutstandingAtDisable]);
    drop(channel);
}

#[test]
fn packets_with_external_data_are_echoed_payload_only() {
    for mode in MODES {
        let b = Bench::new(SimConfig::deterministic(9));
        let channel = b.open(mode);
        let host = b.offer.host();
        let gpa = host
            .send_gpa_direct(b"gpa", &[7u8; 5000], true, true)
            .unwrap();
        let xfer = host
            .send_transfer_pages(b"xfer", &[9u8; 300], true)
            .unwrap();
        b.sim.run_until_idle();
        let mut done: Vec<(u64, Vec<u8>)> = std::iter::from_fn(|| host.take_completion()).collect();
        done.sort();
        assert_eq!(done.len(), 2);
        assert_eq!((done[0].0, &done[0].1[..3]), (gpa, &b"gpa"[..]));
        assert_eq!((done[1].0, &done[1].1[..4]), (xfer, &b"xfer"[..]));
        // The echo never writes into the host's buffer.
        assert_eq!(host.external_data(gpa), Some(vec![7u8; 5000]));
        channel.close(b.passive);
        b.sim.assert_clean();
    }
}

#[test]
fn a_malformed_packet_fails_the_channel_not_the_driver() {
    for mode in MODES {
        let b = Bench::new(SimConfig::deterministic(10));
        let channel = b.open(mode);
        let host = b.offer.host();
        // An in-band descriptor whose data offset points past its own length.
        let mut raw = vec![0u8; 32];
        raw[0..2].copy_from_slice(&6u16.to_le_bytes());
        raw[2..4].copy_from_slice(&200u16.to_le_bytes());
        raw[4..6].copy_from_slice(&4u16.to_le_bytes());
        Script::new()
            .send(b"good")
            .expect_response(b"good")
            .run(&b.sim, &host)
            .unwrap();
        host.send_raw(&raw).unwrap();
        b.sim.run_until_idle();
        assert!(host.error().is_some(), "KMCL failed the channel");
        assert!(!host.is_open());
        assert_eq!(
            channel.handler().echoed(),
            1,
            "the bad packet never reached it"
        );
        channel.close(b.passive);
        b.sim.assert_clean();
    }
}
