//! Ring write+read throughput for in-band packets, beside a plain memcpy of the same bytes.
//!
//! Reference: `docs/simulator.md` ("Rings and packets"; Linux `drivers/hv/ring_buffer.c`).
//!
//! Run: `cargo bench -p kmcl-sim --bench ring`. Each row writes packets into a 64 KiB ring
//! until it is full, reads them all back (validated with `read_header`, payload copied into a
//! reused buffer with `copy_payload`: no allocation), releases the space, and
//! repeats for a fixed time. The memcpy column copies the same payload bytes with
//! `copy_from_slice` into a 64 KiB buffer at the same rotating offsets, in the same run, so
//! the ratio is what matters on a noisy machine.

use std::hint::black_box;
use std::time::{Duration, Instant};

use kmcl_sim::ring::{IncomingRing, OutgoingPacket, OutgoingRing, RingPair, WriteError};

#[path = "common/callgrind.rs"]
mod callgrind;

/// Data pages per ring (64 KiB data area).
const DATA_PAGES: usize = 16;
/// Measuring time per row and method.
const MEASURE: Duration = Duration::from_millis(1200);

struct Rate {
    packets: u64,
    elapsed: Duration,
}

impl Rate {
    fn per_second(&self) -> f64 {
        self.packets as f64 / self.elapsed.as_secs_f64()
    }
}

/// Write until full, read everything back, release; repeat until `MEASURE` has passed. The
/// reader copies each payload out (`copy_out`) or only looks at it in place through
/// [`IncomingRing::payload_view`] (its first and last word).
fn ring_rate(size: usize, copy_out: bool) -> Rate {
    let pair = RingPair::new(DATA_PAGES, 1);
    let mut tx = OutgoingRing::new(pair.outbound());
    let mut rx = IncomingRing::new(pair.outbound());
    let payload: Vec<u8> = (0..size).map(|i| i as u8).collect();
    let mut out = vec![0u8; size.next_multiple_of(8)];
    let mut packets = 0u64;
    let mut id = 0u64;
    let start = Instant::now();
    while start.elapsed() < MEASURE {
        for _ in 0..64 {
            loop {
                let packet = OutgoingPacket::in_band(id, false, black_box(&payload));
                match tx.write(&packet) {
                    Ok(outcome) => {
                        black_box(outcome);
                        id += 1;
                    }
                    Err(WriteError::Full { .. }) => break,
                    Err(e) => panic!("bench ring failed: {e}"),
                }
            }
            while let Ok(h) = rx.read_header() {
                if copy_out {
                    black_box(rx.copy_payload(&h, &mut out));
                    black_box(&out);
                } else {
                    let view = rx.payload_view(&h);
                    black_box((view.word(0), view.word(view.len() / 8 - 1)));
                }
                packets += 1;
            }
            black_box(rx.release_all());
        }
    }
    Rate {
        packets,
        elapsed: start.elapsed(),
    }
}

/// The same bytes with `copy_from_slice`, into a buffer the size of the data area.
fn memcpy_rate(size: usize) -> Rate {
    let payload: Vec<u8> = (0..size).map(|i| i as u8).collect();
    let mut area = vec![0u8; DATA_PAGES * 4096];
    // Packet footprint on the ring: descriptor + padded payload + trailer.
    let stride = 16 + size.next_multiple_of(8) + 8;
    let mut at = 0usize;
    let mut packets = 0u64;
    let start = Instant::now();
    while start.elapsed() < MEASURE {
        for _ in 0..4096 {
            if at + size > area.len() {
                at = 0;
            }
            area[at..at + size].copy_from_slice(black_box(&payload));
            black_box(&area);
            at += stride;
            packets += 1;
        }
    }
    Rate {
        packets,
        elapsed: start.elapsed(),
    }
}

/// Exactly `n` packets of `size` bytes written, read and released (instruction-count mode:
/// `scripts/bench-instructions.sh` runs this under callgrind at two `n` and takes the
/// difference, so start-up and the ring's construction cancel out).
fn ring_count(size: usize, n: u64) {
    let pair = RingPair::new(DATA_PAGES, 1);
    let mut tx = OutgoingRing::new(pair.outbound());
    let mut rx = IncomingRing::new(pair.outbound());
    let payload: Vec<u8> = (0..size).map(|i| i as u8).collect();
    let mut out = vec![0u8; size.next_multiple_of(8)];
    let mut done = 0u64;
    let mut id = 0u64;
    while done < n {
        let mut written = 0;
        while done + written < n {
            let packet = OutgoingPacket::in_band(id, false, black_box(&payload));
            match tx.write(&packet) {
                Ok(outcome) => {
                    black_box(outcome);
                    id += 1;
                    written += 1;
                }
                Err(WriteError::Full { .. }) => break,
                Err(e) => panic!("bench ring failed: {e}"),
            }
        }
        while let Ok(h) = rx.read_header() {
            black_box(rx.copy_payload(&h, &mut out));
            black_box(&out);
            done += 1;
        }
        black_box(rx.release_all());
    }
}

fn main() {
    if let Some((n, size)) = callgrind::count_args() {
        ring_count(size, n);
        return;
    }
    println!(
        "ring write+read vs memcpy, {} KiB ring data area",
        DATA_PAGES * 4
    );
    println!(
        "{:>7} | {:>11} {:>11} {:>11} | {:>7} {:>7} | {:>12}",
        "payload", "copy MB/s", "view MB/s", "memcpy MB/s", "copy/mc", "view/mc", "instr/packet"
    );
    for size in [64usize, 1024, 4096] {
        let copied = ring_rate(size, true);
        let viewed = ring_rate(size, false);
        let copy = memcpy_rate(size);
        let mb = |r: &Rate| r.per_second() * size as f64 / 1e6;
        println!(
            "{:>7} | {:>11.1} {:>11.1} {:>11.1} | {:>6.2}x {:>6.2}x | {:>12}",
            size,
            mb(&copied),
            mb(&viewed),
            mb(&copy),
            copied.per_second() / copy.per_second(),
            viewed.per_second() / copy.per_second(),
            callgrind::cell(callgrind::per_packet(size, 1000, 5000)),
        );
    }
    println!(
        "copy: the reader copies each payload out (copy_payload); view: it reads the payload in \
         place (payload_view);\nx/mc = bandwidth relative to memcpy of the same bytes in the same \
         run; instr/packet: callgrind, write+read\nwith copy-out, difference of --count 5000 and \
         --count 1000 (scripts/bench-instructions.sh)"
    );
}
