//! Memory the driver may touch: packet buffers, external-data pages and MDLs.
//!
//! C header: `wdm.h` (`MDL`, `MDL_MAPPED_TO_SYSTEM_VA`); DDI page
//! `FN_VMB_CHANNEL_PACKET_GET_EXTERNAL_DATA`.
//!
//! Everything the simulator hands to driver code as a raw pointer lives in a
//! [`SharedBuf`]: a boxed slice of `AtomicU64` words, so the driver may read and write
//! it through the pointer while the simulator reads it with atomic loads, without any
//! `unsafe` here. Buffers for external data are page-aligned.
//!
//! **The PFN fiction.** A host has no guest physical memory. The simulator's "guest
//! physical address" of a byte is its host virtual address: the PFN of a page is
//! `address >> PAGE_SHIFT` of page-aligned simulator memory. These PFNs are real
//! numbers in the ring packets and in the MDL's PFN array, consistent across every
//! packet, and resolvable through the simulation's page map, but they are not
//! physical frame numbers, and a driver must use `MappedSystemVa` to touch the data.
#![forbid(unsafe_code)]

use std::sync::atomic::{AtomicU64, Ordering};

use kmcl_sys::{MDL, MDL_MAPPED_TO_SYSTEM_VA, MDL_PAGES_LOCKED, PAGE_SIZE};

use crate::ring::{IncomingRing, PacketHeader};

/// Byte used to poison a packet buffer once the packet is completed.
pub(crate) const POISON: u8 = 0xDB;

/// A byte buffer that driver code may access through a raw pointer.
#[derive(Debug)]
pub(crate) struct SharedBuf {
    words: Box<[AtomicU64]>,
    /// Offset in bytes of the first data byte inside `words` (for page alignment).
    start: usize,
    len: usize,
}

impl SharedBuf {
    /// A zeroed buffer of `len` bytes (8-byte aligned).
    pub(crate) fn new(len: usize) -> Self {
        let words = (0..len.div_ceil(8).max(1))
            .map(|_| AtomicU64::new(0))
            .collect();
        Self {
            words,
            start: 0,
            len,
        }
    }

    /// A zeroed buffer of `len` bytes whose first byte is page-aligned, padded to whole pages.
    pub(crate) fn new_page_aligned(len: usize) -> Self {
        let pages = len.div_ceil(PAGE_SIZE).max(1);
        let nwords = (pages + 1) * PAGE_SIZE / 8;
        let words: Box<[AtomicU64]> = (0..nwords).map(|_| AtomicU64::new(0)).collect();
        let addr = words.as_ptr().addr();
        let start = (PAGE_SIZE - addr % PAGE_SIZE) % PAGE_SIZE;
        Self { words, start, len }
    }

    /// A zero-length buffer that allocates nothing (its address is never given out: a
    /// zero-sized client context is passed as NULL).
    pub(crate) fn empty() -> Self {
        Self {
            words: Box::new([]),
            start: 0,
            len: 0,
        }
    }

    /// A packet buffer of `len` bytes: `self` reused if its capacity suffices (its old
    /// bytes beyond `len` are left as they are: the driver is given `len`), else a fresh
    /// zeroed one with capacity rounded up to a power of two (so that it can be reused for
    /// the sizes around it).
    #[inline]
    pub(crate) fn reuse_or_new(reused: Option<Self>, len: usize) -> Self {
        match reused {
            Some(mut b) if b.start == 0 && b.words.len() * 8 >= len && !b.words.is_empty() => {
                b.len = len;
                b
            }
            _ => {
                let mut b = Self::new(len.max(64).next_power_of_two());
                b.len = len;
                b
            }
        }
    }

    /// Copies the payload of `header` (read from `ring`, not yet released) into the first
    /// [`len`](Self::len) bytes, with bulk copies.
    pub(crate) fn copy_from_ring(&self, ring: &IncomingRing, header: &PacketHeader) {
        ring.own_payload_view(header)
            .copy_to_words(&self.words, self.start, self.len);
    }

    /// A buffer holding a copy of `data`.
    pub(crate) fn from_bytes(data: &[u8]) -> Self {
        let b = Self::new(data.len());
        b.write(0, data);
        b
    }

    pub(crate) const fn len(&self) -> usize {
        self.len
    }

    /// Bytes the buffer can hold (its words).
    pub(crate) const fn capacity(&self) -> usize {
        self.words.len() * 8 - self.start
    }

    /// The address of the first byte, for driver code (exposed provenance).
    pub(crate) fn addr(&self) -> usize {
        self.words.as_ptr().expose_provenance() + self.start
    }

    /// The pointer driver code gets.
    pub(crate) fn as_mut_ptr(&self) -> *mut u8 {
        std::ptr::with_exposed_provenance_mut(self.addr())
    }

    fn byte(&self, i: usize) -> u8 {
        let b = self.start + i;
        let w = self.words[b / 8].load(Ordering::Relaxed);
        w.to_le_bytes()[b % 8]
    }

    /// Copies `data` in at `offset` (clipped to the buffer).
    pub(crate) fn write(&self, offset: usize, data: &[u8]) {
        let end = (offset + data.len()).min(self.len);
        let mut i = offset;
        while i < end {
            let b = self.start + i;
            let (wi, bi) = (b / 8, b % 8);
            if bi == 0 && end - i >= 8 {
                let mut chunk = [0u8; 8];
                chunk.copy_from_slice(&data[i - offset..i - offset + 8]);
                self.words[wi].store(u64::from_le_bytes(chunk), Ordering::Relaxed);
                i += 8;
            } else {
                let mut bytes = self.words[wi].load(Ordering::Relaxed).to_le_bytes();
                bytes[bi] = data[i - offset];
                self.words[wi].store(u64::from_le_bytes(bytes), Ordering::Relaxed);
                i += 1;
            }
        }
    }

    /// Copies `len` bytes out from `offset` (clipped to the buffer).
    pub(crate) fn read(&self, offset: usize, len: usize) -> Vec<u8> {
        let end = (offset + len).min(self.len);
        let mut out = Vec::with_capacity(end.saturating_sub(offset));
        let mut i = offset;
        while i < end {
            let b = self.start + i;
            if b.is_multiple_of(8) && end - i >= 8 {
                out.extend_from_slice(&self.words[b / 8].load(Ordering::Relaxed).to_le_bytes());
                i += 8;
            } else {
                out.push(self.byte(i));
                i += 1;
            }
        }
        out
    }

    /// The whole words inside the buffer's bytes, as a word range, and the byte ranges
    /// before and after them.
    fn word_span(
        &self,
    ) -> (
        std::ops::Range<usize>,
        std::ops::Range<usize>,
        std::ops::Range<usize>,
    ) {
        let (start, end) = (self.start, self.start + self.len);
        let first = start.div_ceil(8).min(end / 8);
        let last = (end / 8).max(first);
        (
            first..last,
            0..(first * 8).saturating_sub(start).min(self.len),
            (last * 8).max(start) - start..self.len,
        )
    }

    /// Fills the whole buffer with `v`: a bulk fill of the whole words (rule
    /// PACKET_BUFFER_OWNERSHIP: the driver completed the packet, the buffer is the
    /// simulator's again), the edge bytes one by one.
    pub(crate) fn fill(&self, v: u8) {
        // A pooled packet buffer starts on a word and usually holds whole words: no edges.
        if self.start == 0
            && self.len.is_multiple_of(8)
            && let Some(words) = self.words.get(..self.len / 8)
        {
            crate::shared_mem::fill_words(words, v);
            return;
        }
        let (words, head, tail) = self.word_span();
        crate::shared_mem::fill_words(&self.words[words], v);
        for i in head.chain(tail) {
            self.write(i, &[v]);
        }
    }

    /// Whether every byte still equals `v`. The poison check of a pooled packet buffer
    /// (word-aligned, whole words: the usual case) compares it in place, 1 KiB at a time,
    /// with the library's `memcmp` against a constant chunk of the pattern
    /// (`shared_mem::words_equal`, rule PACKET_BUFFER_OWNERSHIP: a driver writing the buffer
    /// after completion is what this detects, and a torn read of such a write still differs
    /// from the poison); at 64 bytes that is cheaper than a fold over the words. Otherwise
    /// up to [`FOLD_WORDS`] whole words are compared word by word (atomic loads folded with
    /// xor/or), more with `memcmp` as above, and the edge bytes one by one.
    pub(crate) fn all_equal(&self, v: u8) -> bool {
        let pattern = u64::from_ne_bytes([v; 8]);
        // A pooled packet buffer starts on a word and usually holds whole words: no edges.
        if self.start == 0
            && self.len.is_multiple_of(8)
            && v == POISON
            && let Some(w) = self.words.get(..self.len / 8)
        {
            return poison_chunks_equal(w);
        }
        let (words, head, tail) = self.word_span();
        let words = &self.words[words];
        let clean = if words.len() <= FOLD_WORDS || v != POISON {
            words_fold_equal(words, pattern)
        } else {
            poison_chunks_equal(words)
        };
        clean && head.chain(tail).all(|i| self.byte(i) == v)
    }

    /// PFNs (see the module's PFN fiction) of the pages spanning `offset..offset+len`.
    pub(crate) fn pfns(&self, offset: usize, len: usize) -> Vec<u64> {
        let first = (self.addr() + offset) / PAGE_SIZE;
        let last = (self.addr() + offset + len.max(1) - 1) / PAGE_SIZE;
        (first..=last).map(|p| p as u64).collect()
    }
}

/// Buffers of at most this many words are checked with a fold over the words: about three
/// instructions a word, cheaper than the copy and the two library calls up to here.
const FOLD_WORDS: usize = 16;

/// Words per chunk of the in-place check: the poison pattern it compares with is one chunk.
const CHUNK_WORDS: usize = 128;

/// Whether every word of `words` equals `pattern`: four atomic loads folded with xor/or per
/// step (one branch per four words).
fn words_fold_equal(words: &[AtomicU64], pattern: u64) -> bool {
    let load = |w: &AtomicU64| w.load(Ordering::Relaxed) ^ pattern;
    let mut quads = words.chunks_exact(4);
    let mut acc = 0;
    for q in &mut quads {
        acc |= load(&q[0]) | load(&q[1]) | load(&q[2]) | load(&q[3]);
    }
    for w in quads.remainder() {
        acc |= load(w);
    }
    acc == 0
}

/// A chunk of the poison pattern, built once (no per-call fill).
static POISON_CHUNK: [u64; CHUNK_WORDS] = [u64::from_ne_bytes([POISON; 8]); CHUNK_WORDS];

/// Whether every word of `words` is the poison: compared in place a chunk at a time with
/// [`POISON_CHUNK`] (see [`SharedBuf::all_equal`]; the library's `memcmp`, a few
/// instructions per 32 bytes).
fn poison_chunks_equal(words: &[AtomicU64]) -> bool {
    words
        .chunks(CHUNK_WORDS)
        .all(|piece| crate::shared_mem::words_equal(piece, &POISON_CHUNK[..piece.len()]))
}

/// A real `MDL` header followed by its PFN array, in simulator-owned memory.
#[derive(Debug)]
pub(crate) struct MdlBlock {
    words: SharedBuf,
}

// The layout the words below reproduce (LLP64 `MDL`, x64/ARM64).
const _: () = {
    assert!(std::mem::size_of::<MDL>() == 48);
    assert!(std::mem::offset_of!(MDL, Next) == 0);
    assert!(std::mem::offset_of!(MDL, Size) == 8);
    assert!(std::mem::offset_of!(MDL, MdlFlags) == 10);
    assert!(std::mem::offset_of!(MDL, Process) == 16);
    assert!(std::mem::offset_of!(MDL, MappedSystemVa) == 24);
    assert!(std::mem::offset_of!(MDL, StartVa) == 32);
    assert!(std::mem::offset_of!(MDL, ByteCount) == 40);
    assert!(std::mem::offset_of!(MDL, ByteOffset) == 44);
};

impl MdlBlock {
    /// An MDL describing `len` bytes at `data_addr`, whose pages have PFNs `pfns`.
    /// `MappedSystemVa` = `data_addr`, flags `MDL_MAPPED_TO_SYSTEM_VA | MDL_PAGES_LOCKED`.
    pub(crate) fn new(data_addr: usize, len: u32, pfns: &[u64]) -> Self {
        let size = 48 + 8 * pfns.len();
        let words = SharedBuf::new(size);
        let mdl_size = i16::try_from(size).unwrap_or(i16::MAX);
        let flags = MDL_MAPPED_TO_SYSTEM_VA | MDL_PAGES_LOCKED;
        let byte_offset = (data_addr % PAGE_SIZE) as u64;
        let start_va = (data_addr - data_addr % PAGE_SIZE) as u64;
        let mut head = Vec::with_capacity(size);
        head.extend_from_slice(&0u64.to_le_bytes()); // Next
        head.extend_from_slice(&mdl_size.to_le_bytes()); // Size
        head.extend_from_slice(&flags.to_le_bytes()); // MdlFlags
        head.extend_from_slice(&[0u8; 4]); // padding
        head.extend_from_slice(&0u64.to_le_bytes()); // Process
        head.extend_from_slice(&(data_addr as u64).to_le_bytes()); // MappedSystemVa
        head.extend_from_slice(&start_va.to_le_bytes()); // StartVa
        head.extend_from_slice(&len.to_le_bytes()); // ByteCount
        head.extend_from_slice(&u32::try_from(byte_offset).unwrap_or(0).to_le_bytes()); // ByteOffset
        for p in pfns {
            head.extend_from_slice(&p.to_le_bytes());
        }
        words.write(0, &head);
        Self { words }
    }

    /// The `PMDL` driver code gets.
    pub(crate) fn as_mdl_ptr(&self) -> *mut MDL {
        self.words.as_mut_ptr().cast()
    }
}

/// The fields of a driver-supplied MDL, read by the table (which owns the unsafe read).
#[derive(Clone, Debug, Default)]
pub(crate) struct MdlView {
    /// Address of the first byte of the window, when the MDL is mapped.
    pub(crate) va: Option<usize>,
    pub(crate) byte_count: u32,
    pub(crate) byte_offset: u32,
    pub(crate) pfns: Vec<u64>,
    /// The bytes the MDL describes (copied when the send is made).
    pub(crate) data: Vec<u8>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poison_fill_and_check_cover_every_byte_and_only_the_buffer() {
        for len in [0usize, 1, 7, 8, 9, 64, 511, 512, 513, 4096, 5000] {
            let b = SharedBuf::new(len);
            b.fill(POISON);
            assert!(b.all_equal(POISON), "{len}");
            for i in [0, len / 2, len.saturating_sub(1)] {
                if len == 0 {
                    break;
                }
                b.write(i, &[POISON ^ 1]);
                assert!(!b.all_equal(POISON), "{len} byte {i}");
                b.write(i, &[POISON]);
                assert!(b.all_equal(POISON), "{len} byte {i}");
            }
        }
        let b = SharedBuf::new_page_aligned(100);
        b.fill(POISON);
        assert!(b.all_equal(POISON));
        // Every byte, on both sides of the small-chunk size (8 words) and across the
        // 64-word chunks of the larger check.
        for len in [64usize, 72, 1100] {
            let b = SharedBuf::new(len);
            b.fill(POISON);
            for i in 0..len {
                b.write(i, &[0]);
                assert!(!b.all_equal(POISON), "{len} byte {i}");
                b.write(i, &[POISON]);
            }
            assert!(b.all_equal(POISON), "{len}");
        }
    }

    #[test]
    fn shared_buf_round_trips_unaligned_ranges() {
        let b = SharedBuf::new(21);
        b.write(3, &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
        assert_eq!(b.read(3, 11), vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
        assert_eq!(b.read(0, 3), vec![0, 0, 0]);
        assert_eq!(b.read(20, 10), vec![0]);
        b.fill(POISON);
        assert!(b.all_equal(POISON));
    }

    #[test]
    fn page_aligned_buffers_start_on_a_page() {
        let b = SharedBuf::new_page_aligned(5000);
        assert_eq!(b.addr() % PAGE_SIZE, 0);
        assert_eq!(b.pfns(0, 5000).len(), 2);
        assert_eq!(b.pfns(100, 10).len(), 1);
    }

    #[test]
    fn mdl_block_has_the_wdm_layout() {
        let data = SharedBuf::new_page_aligned(10);
        let m = MdlBlock::new(data.addr() + 4, 6, &data.pfns(4, 6));
        let raw = m.words.read(0, 56);
        assert_eq!(
            u64::from_le_bytes(raw[24..32].try_into().unwrap_or([0; 8])),
            (data.addr() + 4) as u64
        );
        assert_eq!(
            u32::from_le_bytes(raw[40..44].try_into().unwrap_or([0; 4])),
            6
        );
        assert_eq!(
            u32::from_le_bytes(raw[44..48].try_into().unwrap_or([0; 4])),
            4
        );
        assert_eq!(
            i16::from_le_bytes([raw[10], raw[11]]),
            MDL_MAPPED_TO_SYSTEM_VA | MDL_PAGES_LOCKED
        );
    }
}
