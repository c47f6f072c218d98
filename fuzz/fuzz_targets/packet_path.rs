//! Fuzz target `packet_path`: arbitrary host packet sequences into the driver.
//!
//! C header: none; reference: Linux `include/linux/hyperv.h` (in-band 6, transfer pages 7, GPA
//! direct 9, completion 11), DDI page `EVT_VMB_CHANNEL_PROCESS_PACKET` (every incoming packet completed once).
//!
//! The simulated host sends in-band, GPA-direct and transfer-page packets (random
//! payload and external lengths, completion requested or not), answers the driver's
//! waiting sends (or never does), and rescinds; user mode reads, holds and answers
//! packets, sends, cancels and closes handles; the simulation is stepped task by task in
//! between. Asserts: no verifier violation, no channel failure, every host packet that
//! asked for a completion got exactly one, every delivered packet was received by the
//! bridge once, every user request completed exactly once, and no completion claims
//! more bytes than its buffer.
#![no_main]

use std::collections::HashSet;

use kmcl_sim::SendError;
use libfuzzer_sys::fuzz_target;
use vmbridge::bridge::protocol::{
    IOCTL_VMBRIDGE_READ, IOCTL_VMBRIDGE_RESPOND, IOCTL_VMBRIDGE_SEND, VMBRIDGE_PACKET_HEADER,
    VMBRIDGE_READ_FLAG_HOLD_FOR_RESPONSE, VMBRIDGE_SEND_FLAG_WAIT_FOR_COMPLETION, build_read,
    build_respond, build_send,
};
use vmbridge::bridge::{FileId, NtStatus};
use vmbridge::sim_request::RequestHandle;
use vmbridge_fuzz::{Bytes, Rig, config_from, debug};

const HDR: usize = size_of::<VMBRIDGE_PACKET_HEADER>();
/// Operations per input (keeps one run short).
const MAX_OPS: usize = 96;

/// Output buffer of a drain read: a packet of the largest `max_packet_size` the
/// configurations pick. A larger packet completes the read with `STATUS_BUFFER_OVERFLOW` and
/// its length in the header; the next read asks for that much (as a user-mode caller does),
/// up to [`DRAIN_READ_MAX`]. (A fresh 64 KiB buffer per input cost more than the rest of
/// the drain: the request model's buffers are zeroed when first allocated.)
const DRAIN_READ: usize = HDR + 4096;
/// The most a drain read asks for.
const DRAIN_READ_MAX: usize = 64 * 1024;

/// The output length of the drain read after `h` (completed).
fn drain_read_after(h: &RequestHandle) -> usize {
    h.with_result(|c| {
        c.filter(|c| c.status == NtStatus::BUFFER_OVERFLOW)
            .and_then(|c| VMBRIDGE_PACKET_HEADER::parse(c.output).ok())
            .map_or(DRAIN_READ, |hdr| {
                (HDR + hdr.PayloadLength as usize).clamp(DRAIN_READ, DRAIN_READ_MAX)
            })
    })
}

/// A read the target checks when it completes: its handle and output length.
struct Read {
    h: RequestHandle,
    out_len: usize,
    file: FileId,
    hold: bool,
}

fn host_result(r: Result<u64, SendError>, cr: bool, requested: &mut HashSet<u64>) {
    match r {
        Ok(tid) => {
            if cr {
                assert!(requested.insert(tid), "transaction id {tid} reused");
            }
        }
        Err(SendError::Full | SendError::TooLarge | SendError::NotOpen) => {}
        Err(e) => panic!("host send failed unexpectedly: {e}"),
    }
}

fn run(data: &[u8]) {
    let mut b = Bytes::new(data);
    let seed = u64::from(b.u8());
    let cfg = config_from(b.u8());
    let mut rig = Rig::new(seed, cfg).expect("the channel opens");
    let files = [rig.open_file(), rig.open_file(), rig.open_file()];
    let mut requested: HashSet<u64> = HashSet::new();
    let mut rescinded = false;
    let mut reads: Vec<Read> = Vec::new();
    let mut answered: HashSet<u64> = HashSet::new();

    for _ in 0..MAX_OPS {
        if b.is_empty() {
            break;
        }
        let op = b.u8();
        let file = files[usize::from(op >> 4) % files.len()];
        if debug() {
            eprintln!(
                "op {} stats {:?} bridge {:?}",
                op % 14,
                rig.sim.stats(),
                rig.device().bridge().stats()
            );
        }
        match op % 14 {
            0 => {
                let cr = b.bool();
                let payload = b.blob(5000);
                let r = rig.host.send_inband(payload, cr);
                if debug() {
                    eprintln!("  inband {} bytes cr {cr}: {r:?}", payload.len());
                }
                host_result(r, cr, &mut requested);
            }
            1 => {
                let (cr, writable) = (b.bool(), b.bool());
                let payload = b.blob(300);
                let external = b.blob(9000);
                let r = rig.host.send_gpa_direct(payload, external, writable, cr);
                host_result(r, cr, &mut requested);
            }
            2 => {
                let cr = b.bool();
                let payload = b.blob(300);
                let external = b.blob(9000);
                // The built-in host describes an empty external buffer as a 0-byte range,
                // which its own guest side then calls corrupt: keep at least one byte.
                let external = if external.is_empty() {
                    &[0u8][..]
                } else {
                    external
                };
                let r = rig.host.send_transfer_pages(payload, external, cr);
                host_result(r, cr, &mut requested);
            }
            3 => rig.sim.run_until_idle(),
            4 => {
                for _ in 0..(b.u8() % 16) {
                    rig.sim.step();
                }
            }
            5 | 6 => {
                let hold = op % 14 == 6;
                let out_len = usize::from(b.u16()) % 6000;
                let h = if hold {
                    let input = build_read(VMBRIDGE_READ_FLAG_HOLD_FOR_RESPONSE);
                    rig.ioctl(file, IOCTL_VMBRIDGE_READ, input.as_slice(), out_len)
                } else {
                    rig.read(file, out_len)
                };
                reads.push(Read {
                    h,
                    out_len,
                    file,
                    hold,
                });
            }
            7 => {
                // Answer a held packet (one a holding read returned), or a made-up id.
                let pick = usize::from(b.u8());
                let response = b.blob(600);
                let held: Vec<(FileId, u64)> = reads
                    .iter()
                    .filter(|r| r.hold)
                    .filter_map(|r| {
                        r.h.with_result(|c| {
                            let c = c?;
                            let hdr = VMBRIDGE_PACKET_HEADER::parse(c.output).ok()?;
                            (c.status == NtStatus::SUCCESS && hdr.PacketId != 0)
                                .then_some((r.file, hdr.PacketId))
                        })
                    })
                    .collect();
                let (f, id) = if held.is_empty() || pick == 0xFF {
                    (file, b.u64())
                } else {
                    held[pick % held.len()]
                };
                let h = rig.ioctl(
                    f,
                    IOCTL_VMBRIDGE_RESPOND,
                    build_respond(id, response).as_slice(),
                    0,
                );
                if h.with_result(|c| c.is_some_and(|c| c.status == NtStatus::SUCCESS)) {
                    assert!(answered.insert(id), "packet id {id} answered twice");
                }
            }
            8 => {
                let wait = b.bool();
                let flags = if wait {
                    VMBRIDGE_SEND_FLAG_WAIT_FOR_COMPLETION
                } else {
                    0
                };
                let payload = b.blob(5000);
                let out_len = usize::from(b.u16()) % 6000;
                let input = build_send(flags, payload);
                let _ = rig.ioctl(file, IOCTL_VMBRIDGE_SEND, input.as_slice(), out_len);
            }
            9 => {
                // The host reads what the driver sent and answers it, or never does.
                let answer = b.bool();
                let response = b.blob(6000);
                if let Some(p) = rig.host.recv()
                    && p.completion_requested()
                    && answer
                {
                    match rig.host.complete(p.trans_id, response) {
                        Ok(()) | Err(SendError::NotOpen) => {}
                        Err(e) => panic!("host completion refused: {e}"),
                    }
                }
            }
            10 => {
                let pick = usize::from(b.u16());
                if !rig.requests.is_empty() {
                    let h = rig.requests[pick % rig.requests.len()].clone();
                    rig.cancel(&h);
                }
            }
            11 => rig.close_file(file),
            12 => {
                let payload = b.blob(5000);
                let _ = rig.write(file, payload);
            }
            _ => {
                if b.u8() == 0x5A {
                    rig.host.rescind();
                    rescinded = true;
                }
            }
        }
    }

    // Drain: read until nothing is left, so every packet the host put in the ring is
    // delivered (and so owed its completion) before the device closes.
    rig.sim.run_until_idle();
    if !rescinded {
        // Closing the handles completes the packets they held for a response, which
        // frees the transaction quota for the packets still in the ring.
        for f in files {
            rig.close_file(f);
        }
        let drain = rig.open_file();
        let mut out_len = DRAIN_READ;
        for _ in 0..10_000 {
            let h = rig.read(drain, out_len);
            rig.sim.run_until_idle();
            if !h.is_done() {
                rig.cancel(&h);
                break;
            }
            out_len = drain_read_after(&h);
        }
    }
    let stats = rig.close().expect("the device was open");

    // Every KMCL rule kept.
    let violations = rig.sim.violations();
    assert!(violations.is_empty(), "verifier: {violations:?}");
    assert_eq!(rig.host.error(), None, "the channel failed");

    // Every user request completed exactly once; no completion overstates its buffer.
    rig.assert_requests_completed_once();
    for r in &reads {
        r.h.with_result(|c| {
            let c = c.expect("completed");
            assert!(
                c.information <= r.out_len,
                "read info {} > buffer {}",
                c.information,
                r.out_len
            );
            if c.status == NtStatus::SUCCESS {
                let hdr = VMBRIDGE_PACKET_HEADER::parse(c.output).expect("a packet header");
                assert_eq!(HDR + hdr.PayloadLength as usize, c.information);
            }
        });
    }

    // Every packet delivered reached the bridge once, and none is left behind.
    assert_eq!(rig.sim.stats().packets_delivered, stats.packets_received);
    assert_eq!(
        (
            stats.queue_depth,
            stats.held_for_response,
            stats.pending_reads,
            stats.pending_sends
        ),
        (0, 0, 0, 0),
        "state left after close: {stats:?}"
    );

    // Every host packet that asked for a completion got exactly one.
    let mut seen = HashSet::new();
    while let Some((tid, _)) = rig.host.take_completion() {
        assert!(seen.insert(tid), "transaction {tid} completed twice");
        assert!(
            requested.contains(&tid),
            "completion for unknown transaction {tid}"
        );
    }
    if !rescinded {
        assert_eq!(seen.len(), requested.len(), "packets never completed");
    }
}

fuzz_target!(|data: &[u8]| run(data));
