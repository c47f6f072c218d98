//! Ring write+read throughput for in-band packets, beside a plain memcpy of the same bytes.
//!
//! Reference: `docs/simulator.md` ("Rings and packets"; Linux `drivers/hv/ring_buffer.c`).
//!
//! Run: `cargo bench -p kmcl-sim --bench ring`. Each row writes packets into a 64 KiB ring
//! until it is full, reads them all back (parsed, payload copied out), releases the space, and
//! repeats for a fixed time. The memcpy column copies the same payload bytes with
//! `copy_from_slice` into a 64 KiB buffer at the same rotating offsets, in the same run, so
//! the ratio is what matters on a noisy machine.

use std::hint::black_box;
use std::time::{Duration, Instant};

use kmcl_sim::ring::{IncomingRing, OutgoingPacket, OutgoingRing, RingPair, WriteError};

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

/// Write until full, read everything back, release; repeat until `MEASURE` has passed.
fn ring_rate(size: usize) -> Rate {
    let pair = RingPair::new(DATA_PAGES, 1);
    let mut tx = OutgoingRing::new(pair.outbound());
    let mut rx = IncomingRing::new(pair.outbound());
    let payload: Vec<u8> = (0..size).map(|i| i as u8).collect();
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
            while let Ok(p) = rx.read_next() {
                black_box(&p.payload);
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

fn main() {
    println!(
        "ring write+read vs memcpy, {} KiB ring data area",
        DATA_PAGES * 4
    );
    println!(
        "{:>7} | {:>14} {:>12} | {:>14} {:>12} | {:>8}",
        "payload", "ring pkts/s", "ring MB/s", "memcpy pkts/s", "memcpy MB/s", "ratio"
    );
    for size in [64usize, 1024, 4096] {
        let ring = ring_rate(size);
        let copy = memcpy_rate(size);
        let mb = |r: &Rate| r.per_second() * size as f64 / 1e6;
        println!(
            "{:>7} | {:>14.0} {:>12.1} | {:>14.0} {:>12.1} | {:>7.1}x",
            size,
            ring.per_second(),
            mb(&ring),
            copy.per_second(),
            mb(&copy),
            copy.per_second() / ring.per_second()
        );
    }
    println!("ratio = memcpy rate / ring rate (how many times slower the ring path is)");
}
