//! Fuzz target `ring_bytes`: malformed bytes in the guest-inbound ring, driver attached.
//!
//! C header: none (wire format); reference: `docs/simulator.md` (control page,
//! indices, packet layout, trailer, descriptors, and the malformation classes:
//! garbage reserved bytes, unknown flags and types, `offset8 < 2`, `len8 < offset8`,
//! `len8 * 8 + 8 > available`, zero `range_cnt`, GPA `byte_offset > 0xfff`, missing or
//! garbage trailer, corrupt indices).
//!
//! Two hosts, picked by the first byte:
//!
//! * the built-in host writing descriptors the fuzzer shapes (type, `offset8`, `len8`,
//!   flags, transaction id, body) or fully raw bytes with `HostEndpoint::send_raw`,
//!   between valid packets;
//! * an external host (`HostEndpoint::attach_external`) that scribbles on any 8-byte word
//!   of the inbound ring, control page included (write/read indices, interrupt mask,
//!   pending send size), and signals the guest.
//!
//! Asserts: no panic or abort; if the ring is bad the channel fails cleanly (the host sees
//! the reason, the bridge is closed, the device still closes); every user request
//! completes exactly once; every delivered packet reached the bridge; the verifier is
//! clean (the external host's own spurious signals aside).
#![no_main]

use std::sync::atomic::{AtomicU64, Ordering};

use kmcl_sim::{Rule, SendError, SimConfig};
use libfuzzer_sys::fuzz_target;
use vmbridge::bridge::ChannelState;
use vmbridge_fuzz::{Bytes, Rig, config_from};

const PAGE: usize = 4096;
const MAX_OPS: usize = 64;

/// A descriptor-shaped packet: the fields of Linux `struct vmpacket_descriptor`, then the
/// body, as the fuzzer chose.
fn shaped_packet(b: &mut Bytes<'_>) -> Vec<u8> {
    let ty = match b.u8() % 8 {
        0 => 6,
        1 => 7,
        2 => 9,
        3 => 11,
        _ => b.u16(),
    };
    let offset8 = u16::from(b.u8() % 8);
    let len8 = u16::from(b.u8());
    let flags = if b.bool() {
        b.u16()
    } else {
        u16::from(b.bool())
    };
    let trans = b.u64();
    let mut p = Vec::with_capacity(16 + usize::from(len8) * 8);
    p.extend_from_slice(&ty.to_le_bytes());
    p.extend_from_slice(&offset8.to_le_bytes());
    p.extend_from_slice(&len8.to_le_bytes());
    p.extend_from_slice(&flags.to_le_bytes());
    p.extend_from_slice(&trans.to_le_bytes());
    p.extend_from_slice(b.blob(512));
    // Optionally the trailer a correct writer appends (start index << 32), or garbage.
    match b.u8() % 3 {
        0 => {}
        1 => p.extend_from_slice(&[0; 8]),
        _ => p.extend_from_slice(&b.u64().to_le_bytes()),
    }
    p
}

/// The built-in host sends shaped and raw packets between valid ones.
fn builtin(rig: &mut Rig, b: &mut Bytes<'_>) {
    let f = rig.open_file();
    for _ in 0..MAX_OPS {
        if b.is_empty() {
            break;
        }
        match b.u8() % 6 {
            0 => {
                let _ = rig.host.send_inband(b.blob(256), b.bool());
            }
            1 => {
                let p = shaped_packet(b);
                check_raw(rig.host.send_raw(&p));
            }
            2 => {
                let raw = b.blob(2048);
                check_raw(rig.host.send_raw(raw));
            }
            3 => rig.sim.run_until_idle(),
            4 => {
                for _ in 0..(b.u8() % 8) {
                    rig.sim.step();
                }
            }
            _ => {
                let len = usize::from(b.u16()) % 4096;
                let _ = rig.read(f, len);
            }
        }
    }
}

fn check_raw(r: Result<(), SendError>) {
    match r {
        Ok(()) | Err(SendError::Full | SendError::TooLarge | SendError::NotOpen) => {}
        // The host's own view of the ring indices can be corrupt only if the guest wrote
        // garbage into them: a finding.
        Err(e) => panic!("send_raw: {e}"),
    }
}

/// The word at `addr` of the shared ring memory.
///
/// # Safety
/// `addr` is 8-aligned inside the ring memory `external_ring()` returned just now (the
/// ring stays alive until the simulation runs again, which it cannot do while the
/// returned reference is used: deterministic mode, this thread).
unsafe fn word<'a>(addr: usize) -> &'a AtomicU64 {
    let p: *const AtomicU64 = std::ptr::with_exposed_provenance(addr);
    // SAFETY: rule EXTERNAL_RING_WORDS: the simulator's ring memory is live `AtomicU64`
    // words while the channel is open, and the caller vouches for `addr`.
    unsafe { &*p }
}

/// The external host scribbles on the inbound ring's words and signals the guest.
fn external(rig: &mut Rig, b: &mut Bytes<'_>) {
    let f = rig.open_file();
    for _ in 0..MAX_OPS {
        if b.is_empty() {
            break;
        }
        match b.u8() % 5 {
            0 | 1 => {
                // Any word of the inbound ring: control page (indices, mask, pending size)
                // or data area; a word chosen near the start most of the time.
                let at = usize::from(b.u16());
                let value = b.u64();
                if let Some(r) = rig.host.external_ring() {
                    let base = r.ptr.expose_provenance() + r.ring_offset_pages * PAGE;
                    let words = (r.len - r.ring_offset_pages * PAGE) / 8;
                    let i = at % words;
                    // SAFETY: fetched just now, `i` < the inbound ring's word count.
                    unsafe { word(base + i * 8) }.store(value, Ordering::SeqCst);
                }
            }
            2 => {
                // A descriptor-shaped packet at the current write index, then the index
                // moved past it (as a writer would, right or wrong).
                let p = shaped_packet(b);
                let advance = b.bool();
                if let Some(r) = rig.host.external_ring() {
                    let ctl = r.ptr.expose_provenance() + r.ring_offset_pages * PAGE;
                    let data = ctl + PAGE;
                    let dsize = r.len - r.ring_offset_pages * PAGE - PAGE;
                    // SAFETY: word 0 of the inbound control page (write index, read index).
                    let w0 = unsafe { word(ctl) };
                    let idx = w0.load(Ordering::SeqCst);
                    let write = (idx & 0xFFFF_FFFF) as usize % dsize / 8 * 8;
                    for (k, chunk) in p.chunks(8).enumerate() {
                        let mut v = [0u8; 8];
                        v[..chunk.len()].copy_from_slice(chunk);
                        let at = (write + k * 8) % dsize;
                        // SAFETY: `at` is 8-aligned and < dsize, inside the data area.
                        unsafe { word(data + at) }.store(u64::from_le_bytes(v), Ordering::SeqCst);
                    }
                    if advance {
                        let new = ((write + p.len().next_multiple_of(8)) % dsize) as u64;
                        w0.store((idx & !0xFFFF_FFFF) | new, Ordering::SeqCst);
                    }
                }
            }
            3 => {
                rig.host.signal_guest();
                rig.sim.run_until_idle();
            }
            _ => {
                let len = usize::from(b.u16()) % 4096;
                let _ = rig.read(f, len);
                for _ in 0..(b.u8() % 8) {
                    rig.sim.step();
                }
            }
        }
    }
}

fn run(data: &[u8]) {
    let mut b = Bytes::new(data);
    let mode = b.u8();
    let seed = u64::from(b.u8());
    let cfg = config_from(b.u8());
    let ext = mode & 1 == 1;
    let sim_cfg = SimConfig::deterministic(seed).collect();
    let mut rig = if ext {
        Rig::with_sim(sim_cfg, cfg, |h| h.attach_external(|| {}))
    } else {
        Rig::with_sim(sim_cfg, cfg, |_| {})
    }
    .expect("the channel opens");
    if ext {
        external(&mut rig, &mut b);
    } else {
        builtin(&mut rig, &mut b);
    }
    rig.sim.run_until_idle();

    // `error()` also reports the host's own bookkeeping (a completion for a transaction the
    // raw bytes made up): only a channel that is no longer open has failed.
    let failed = rig.host.error();
    if !rig.host.is_open() {
        // A failed channel is closed in the bridge too (Suspend + Closed ran).
        assert_eq!(
            rig.device().bridge().channel_state(),
            ChannelState::Closed,
            "the channel failed ({failed:?}) but the bridge did not see it close"
        );
    }
    let stats = rig.close().expect("the device was open");
    rig.assert_requests_completed_once();
    assert_eq!(rig.sim.stats().packets_delivered, stats.packets_received);
    assert_eq!(
        (stats.queue_depth, stats.held_for_response),
        (0, 0),
        "packets left after close: {stats:?}"
    );
    // The external host may signal with nothing to read: its fault, not the driver's.
    let allowed: &[Rule] = if ext { &[Rule::SpuriousSignal] } else { &[] };
    let v = rig.violations_except(allowed);
    assert!(v.is_empty(), "verifier: {v:?} (channel error: {failed:?})");
}

fuzz_target!(|data: &[u8]| run(data));
