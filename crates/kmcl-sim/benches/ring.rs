//! Ring write+read throughput for in-band packets, beside plain memcpys of the same bytes.
//!
//! Reference: `docs/simulator.md` ("Rings and packets", "Performance"; Linux
//! `drivers/hv/ring_buffer.c`).
//!
//! Run: `cargo bench -p kmcl-sim --bench ring`. Each ring row writes packets into a 64 KiB ring
//! until it is full, reads them all back (validated with `read_header`), releases the space,
//! and repeats. The reader either copies each payload out into a reused buffer
//! (`copy_payload`: "copy") or looks at it in place (`payload_view`, its first and last
//! word: "view"); nothing allocates.
//!
//! The reference columns do the same payload copies with the library memcpy
//! (`copy_from_slice`) and nothing else, with the same bytes at the same places: the same
//! payload buffer as source, and as destination a page-aligned 64 KiB area at exactly the
//! offsets where the ring puts each payload (after its 16-byte descriptor, advancing by the
//! packet's ring footprint and wrapping around the end, in two copies when a payload wraps,
//! as the ring does). That matters: memcpy speed depends on the source and destination
//! alignment (on some CPUs by 2x), so a reference at other offsets would compare
//! alignments, not the ring. "mc" is one copy per packet (into the area), the bound of the
//! view path; "2mc" is two (into the area, then out into the reader's buffer), the bound of
//! the copy path, which necessarily copies each payload twice and so can reach at most
//! about 0.5x of "mc".
//!
//! Wall time is noisy on a shared machine, so the four methods run interleaved in short
//! slices (rotating their order) for `ROUNDS` rounds: load that comes and goes hits all of
//! them alike. Rates are totals over all rounds; each ratio is the median over the rounds
//! of the per-round ratio, with the lower and upper quartile in brackets.
//!
//! `cargo bench -p kmcl-sim --bench ring -- --phases` prints where a packet's time goes
//! instead (fastest of many fills: writing, reading in place, the reference memcpy), which
//! shows the ring's fixed cost per packet beyond the copy.

use std::hint::black_box;
use std::time::{Duration, Instant};

use kmcl_sim::ring::{
    DESCRIPTOR_SIZE, IncomingRing, OutgoingPacket, OutgoingRing, RingPair, TRAILER_SIZE, WriteError,
};

#[path = "common/callgrind.rs"]
mod callgrind;

/// Data pages per ring (64 KiB data area).
const DATA_PAGES: usize = 16;
/// Bytes of the ring's data area (and of the memcpy reference's area).
const AREA: usize = DATA_PAGES * 4096;
/// Rounds per row; each runs every method for one `SLICE`.
const ROUNDS: usize = 24;
/// Measuring time per method and round (`ROUNDS * SLICE` = 1.2 s per method and row).
const SLICE: Duration = Duration::from_millis(50);

/// The bytes of every packet of one row (the same buffer for every method).
fn payload_of(size: usize) -> Vec<u8> {
    (0..size).map(|i| i as u8).collect()
}

/// Ring footprint of an in-band packet of `size` payload bytes.
const fn footprint(size: usize) -> usize {
    DESCRIPTOR_SIZE + size.next_multiple_of(8) + TRAILER_SIZE
}

/// A ring writer and reader that keep their state across slices.
struct RingRun<'p> {
    tx: OutgoingRing,
    rx: IncomingRing,
    payload: &'p [u8],
    out: Vec<u8>,
    id: u64,
    copy_out: bool,
}

impl<'p> RingRun<'p> {
    fn new(payload: &'p [u8], copy_out: bool) -> Self {
        let pair = RingPair::new(DATA_PAGES, 1);
        Self {
            tx: OutgoingRing::new(pair.outbound()),
            rx: IncomingRing::new(pair.outbound()),
            payload,
            out: vec![0u8; payload.len().next_multiple_of(8)],
            id: 0,
            copy_out,
        }
    }

    /// Fills the ring, reads and releases everything; returns the packets moved.
    fn fill_and_drain(&mut self) -> u64 {
        self.fill();
        self.drain()
    }

    /// Writes packets until the ring is full; returns how many.
    fn fill(&mut self) -> u64 {
        let mut packets = 0;
        loop {
            let packet = OutgoingPacket::in_band(self.id, false, black_box(self.payload));
            match self.tx.write(&packet) {
                Ok(outcome) => {
                    black_box(outcome);
                    self.id += 1;
                    packets += 1;
                }
                Err(WriteError::Full { .. }) => break,
                Err(e) => panic!("bench ring failed: {e}"),
            }
        }
        packets
    }

    /// Reads every packet (copied out or viewed in place) and releases them; returns how many.
    fn drain(&mut self) -> u64 {
        let mut packets = 0;
        while let Ok(h) = self.rx.read_header() {
            if self.copy_out {
                black_box(self.rx.copy_payload(&h, &mut self.out));
                black_box(&self.out);
            } else {
                let view = self.rx.payload_view(&h);
                black_box((view.word(0), view.word(view.len() / 8 - 1)));
            }
            packets += 1;
        }
        black_box(self.rx.release_all());
        packets
    }
}

/// The memcpy reference: the payload copied to where the ring would put it (and, with
/// `copy_out`, copied from there into a reused buffer), nothing else.
struct MemcpyRun<'p> {
    buf: Vec<u8>,
    /// Offset of the page-aligned area in `buf`.
    base: usize,
    payload: &'p [u8],
    out: Vec<u8>,
    /// Where the ring's next packet (its descriptor) starts.
    start: usize,
    copy_out: bool,
}

impl<'p> MemcpyRun<'p> {
    fn new(payload: &'p [u8], copy_out: bool) -> Self {
        let buf = vec![0u8; AREA + 4096];
        // CAST: address arithmetic only, to find the first 4096-aligned byte (as RingPair).
        let base = (4096 - buf.as_ptr() as usize % 4096) % 4096;
        Self {
            buf,
            base,
            payload,
            out: vec![0u8; payload.len().next_multiple_of(8)],
            start: 0,
            copy_out,
        }
    }

    /// Copies 64 packets' payloads; returns 64.
    fn batch(&mut self) -> u64 {
        let size = self.payload.len();
        let area = &mut self.buf[self.base..self.base + AREA];
        for _ in 0..64 {
            let at = (self.start + DESCRIPTOR_SIZE) % AREA;
            let first = size.min(AREA - at);
            let src = black_box(self.payload);
            area[at..at + first].copy_from_slice(&src[..first]);
            if first < size {
                area[..size - first].copy_from_slice(&src[first..]);
            }
            black_box(&mut *area);
            if self.copy_out {
                self.out[..first].copy_from_slice(&area[at..at + first]);
                if first < size {
                    self.out[first..size].copy_from_slice(&area[..size - first]);
                }
                black_box(&mut self.out);
            }
            self.start = (self.start + footprint(size)) % AREA;
        }
        64
    }
}

/// Packets moved and time taken by one method, per round.
#[derive(Default)]
struct Rates {
    packets: Vec<u64>,
    elapsed: Vec<Duration>,
}

impl Rates {
    /// Runs `step` (returning packets moved) until `SLICE` has passed; records the round.
    fn slice(&mut self, mut step: impl FnMut() -> u64) {
        let start = Instant::now();
        let mut packets = 0;
        while start.elapsed() < SLICE {
            packets += step();
        }
        self.packets.push(packets);
        self.elapsed.push(start.elapsed());
    }

    fn round(&self, i: usize) -> f64 {
        self.packets[i] as f64 / self.elapsed[i].as_secs_f64()
    }

    /// Payload megabytes per second over all rounds.
    fn mb_per_s(&self, size: usize) -> f64 {
        let packets: u64 = self.packets.iter().sum();
        let secs: f64 = self.elapsed.iter().map(Duration::as_secs_f64).sum();
        packets as f64 * size as f64 / secs / 1e6
    }

    /// Median and quartiles over the rounds of `self / other`.
    fn ratio(&self, other: &Self) -> String {
        let mut r: Vec<f64> = (0..self.packets.len())
            .map(|i| self.round(i) / other.round(i))
            .collect();
        r.sort_by(f64::total_cmp);
        let at = |q: usize| r[(r.len() - 1) * q / 4];
        format!("{:.2} ({:.2}-{:.2})", at(2), at(1), at(3))
    }
}

/// `--phases`: where a packet's time goes, as the fastest of 3,000 fills (the minimum is what
/// load on a shared machine cannot inflate): writing a full ring, reading it back in place,
/// and 64 memcpys of the reference, each per packet.
fn phases(size: usize) {
    let payload = payload_of(size);
    let mut ring = RingRun::new(&payload, false);
    let mut reference = MemcpyRun::new(&payload, false);
    let (mut write, mut read, mut memcpy) = (f64::MAX, f64::MAX, f64::MAX);
    let per_packet = |d: Duration, n: u64| d.as_secs_f64() * 1e9 / n as f64;
    for _ in 0..3000 {
        let t = Instant::now();
        let n = ring.fill();
        let u = Instant::now();
        ring.drain();
        write = write.min(per_packet(u - t, n));
        read = read.min(per_packet(u.elapsed(), n));
        let t = Instant::now();
        let n = reference.batch();
        memcpy = memcpy.min(per_packet(t.elapsed(), n));
    }
    println!(
        "{size:>7} | write {write:>6.1} | read+view {read:>6.1} | memcpy {memcpy:>6.1} | \
         ring beyond memcpy {:>6.1} ns/packet",
        write + read - memcpy
    );
}

/// Exactly `n` packets of `size` bytes written, read and released (instruction-count mode:
/// `scripts/bench-instructions.sh` runs this under callgrind at two `n` and takes the
/// difference, so start-up and the ring's construction cancel out).
fn ring_count(size: usize, n: u64) {
    let pair = RingPair::new(DATA_PAGES, 1);
    let mut tx = OutgoingRing::new(pair.outbound());
    let mut rx = IncomingRing::new(pair.outbound());
    let payload = payload_of(size);
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
    if std::env::args().any(|a| a == "--phases") {
        println!("fastest fill, ns per packet (view path; see phases())");
        for size in [64usize, 1024, 4096] {
            phases(size);
        }
        return;
    }
    println!(
        "ring write+read vs memcpy, {} KiB ring data area, {ROUNDS} interleaved rounds of {} ms",
        DATA_PAGES * 4,
        SLICE.as_millis()
    );
    println!(
        "{:>7} | {:>9} {:>9} {:>9} {:>9} | {:>16} {:>16} {:>16} | {:>12}",
        "payload",
        "copy MB/s",
        "view MB/s",
        "mc MB/s",
        "2mc MB/s",
        "copy/mc",
        "view/mc",
        "copy/2mc",
        "instr/packet"
    );
    for size in [64usize, 1024, 4096] {
        let payload = payload_of(size);
        let mut copy_ring = RingRun::new(&payload, true);
        let mut view_ring = RingRun::new(&payload, false);
        let mut one_mc = MemcpyRun::new(&payload, false);
        let mut two_mc = MemcpyRun::new(&payload, true);
        let mut rates: [Rates; 4] = Default::default();
        for round in 0..ROUNDS {
            for k in 0..4 {
                let m = (round + k) % 4;
                match m {
                    0 => rates[0].slice(|| copy_ring.fill_and_drain()),
                    1 => rates[1].slice(|| view_ring.fill_and_drain()),
                    2 => rates[2].slice(|| one_mc.batch()),
                    _ => rates[3].slice(|| two_mc.batch()),
                }
            }
        }
        let [copied, viewed, mc, mc2] = &rates;
        println!(
            "{:>7} | {:>9.0} {:>9.0} {:>9.0} {:>9.0} | {:>16} {:>16} {:>16} | {:>12}",
            size,
            copied.mb_per_s(size),
            viewed.mb_per_s(size),
            mc.mb_per_s(size),
            mc2.mb_per_s(size),
            copied.ratio(mc),
            viewed.ratio(mc),
            copied.ratio(mc2),
            callgrind::cell(callgrind::per_packet(size, 1000, 5000)),
        );
    }
    println!(
        "copy: the reader copies each payload out (copy_payload), so every payload is copied \
         twice\n(into the ring, out of it): its bound is 2mc, about 0.5x of mc. view: the \
         reader reads the payload\nin place (payload_view); its bound is mc. mc / 2mc: one / \
         two library memcpys per packet of the\nsame payload buffer to the same offsets of a \
         page-aligned 64 KiB area as the ring. Ratios: median\n(quartiles) over the rounds of \
         the per-round ratio. instr/packet: callgrind, write+read with copy-out,\ndifference \
         of --count 5000 and --count 1000 (scripts/bench-instructions.sh)"
    );
}
