//! The shared ring memory: [`RingPair`] (one page-aligned buffer of atomic words), [`Ring`]
//! (one direction: control fields, index arithmetic and checks) and the word cursors the
//! writer and reader use over the data area.
//!
//! The `unsafe` accesses (32-bit control fields, bulk copies) live in `shared_mem.rs`.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use super::corrupt::CorruptReason;
use super::layout::{ControlField, PAGE_SIZE, WORDS_PER_PAGE};
use crate::shared_mem;

/// The buffer: over-allocated atomic words, used from a page-aligned index.
struct Memory {
    words: Box<[AtomicU64]>,
    /// Index of the first word of page 0.
    base: usize,
    /// Usable length in words.
    len_words: usize,
    ring_offset_pages: usize,
}

impl fmt::Debug for Memory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Memory")
            .field("len", &(self.len_words * 8))
            .field("ring_offset_pages", &self.ring_offset_pages)
            .finish_non_exhaustive()
    }
}

/// Ring memory of dropped [`RingPair`]s, per thread, for the next pair of the same size:
/// a simulation per fuzz input or test allocates (and page-faults in) its rings once, not
/// per channel. A buffer is zeroed when taken, so a new pair reads exactly as a fresh one.
mod spare_words {
    use std::cell::RefCell;
    use std::sync::atomic::AtomicU64;

    /// Buffers kept per thread (a few simulations' channels).
    const KEEP: usize = 8;
    /// The largest buffer kept, in words (1 MiB): larger rings are rare and freed.
    const KEEP_MAX_WORDS: usize = 128 * 1024;

    thread_local! {
        static SPARES: RefCell<Vec<Box<[AtomicU64]>>> = const { RefCell::new(Vec::new()) };
    }

    /// `len` zeroed words: a kept buffer of that length, or a new one.
    pub(super) fn take(len: usize) -> Box<[AtomicU64]> {
        let kept = SPARES
            .try_with(|s| {
                let mut s = s.borrow_mut();
                let at = s.iter().position(|w| w.len() == len)?;
                Some(s.swap_remove(at))
            })
            .ok()
            .flatten();
        match kept {
            Some(mut words) => {
                for w in &mut words {
                    *w.get_mut() = 0;
                }
                words
            }
            None => (0..len).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Frees the kept buffers.
    pub(crate) fn clear() {
        let _ = SPARES.try_with(|s| s.borrow_mut().clear());
    }

    /// Keeps `words` for a later [`take`] (the oldest goes when full).
    pub(super) fn put(words: Box<[AtomicU64]>) {
        if words.is_empty() || words.len() > KEEP_MAX_WORDS {
            return;
        }
        let _ = SPARES.try_with(|s| {
            let mut s = s.borrow_mut();
            if s.len() == KEEP {
                s.remove(0);
            }
            s.push(words);
        });
    }
}

/// Frees this thread's kept ring memory (see `kmcl_sim::free_spares`).
pub(crate) fn free_spare_memory() {
    spare_words::clear();
}

impl Drop for Memory {
    fn drop(&mut self) {
        // The last RingPair (and Ring) of this memory is gone: no reference into `words`
        // is left, and the next pair zeroes it before use.
        spare_words::put(std::mem::take(&mut self.words));
    }
}

impl Memory {
    #[inline]
    fn word(&self, index: usize) -> &AtomicU64 {
        &self.words[self.base + index]
    }

    /// Replaces word `index` with `f(current)` in a SeqCst compare-exchange loop (what
    /// `fetch_update` does; spelled out because `fetch_update` is deprecated from Rust 1.99
    /// and its replacement `update` needs 1.95, above this workspace's `rust-version`).
    fn merge_word(&self, index: usize, f: impl Fn(u64) -> u64) {
        let word = self.word(index);
        let mut current = word.load(Ordering::SeqCst);
        while let Err(seen) =
            word.compare_exchange_weak(current, f(current), Ordering::SeqCst, Ordering::SeqCst)
        {
            current = seen;
        }
    }

    fn read_bytes(&self, offset: usize, out: &mut [u8]) {
        for (i, byte) in out.iter_mut().enumerate() {
            let at = offset + i;
            *byte = self.word(at / 8).load(Ordering::SeqCst).to_ne_bytes()[at % 8];
        }
    }

    fn write_bytes(&self, offset: usize, bytes: &[u8]) {
        let mut i = 0;
        while i < bytes.len() {
            let at = offset + i;
            let k = at % 8;
            let n = (8 - k).min(bytes.len() - i);
            let chunk = &bytes[i..i + n];
            self.merge_word(at / 8, |w| {
                let mut b = w.to_ne_bytes();
                b[k..k + n].copy_from_slice(chunk);
                u64::from_ne_bytes(b)
            });
            i += n;
        }
    }
}

/// One channel's ring memory: the guest's outbound ring at page 0 and its inbound ring at
/// [`ring_offset_pages`](Self::ring_offset_pages), as in the GPADL a real guest passes in
/// `vmbus_channel_open_channel` (Linux `include/linux/hyperv.h`). Cheap to clone (shared).
#[derive(Debug, Clone)]
pub struct RingPair {
    mem: Arc<Memory>,
}

impl RingPair {
    /// Allocates zeroed ring memory with `outbound_data_pages` and `inbound_data_pages` data
    /// pages (plus one control page each).
    ///
    /// # Panics
    ///
    /// If a page count is 0 or a data area would not fit in a u32 index.
    #[must_use]
    pub fn new(outbound_data_pages: usize, inbound_data_pages: usize) -> Self {
        assert!(
            outbound_data_pages >= 1 && inbound_data_pages >= 1,
            "each ring needs a data page"
        );
        let max_pages = (u32::MAX as usize) / PAGE_SIZE;
        assert!(
            outbound_data_pages < max_pages && inbound_data_pages < max_pages,
            "data area must be indexable by a u32"
        );
        let ring_offset_pages = 1 + outbound_data_pages;
        let pages = ring_offset_pages + 1 + inbound_data_pages;
        let len_words = pages * WORDS_PER_PAGE;
        let words = spare_words::take(len_words + WORDS_PER_PAGE);
        // CAST: address arithmetic only, to find the first 4096-aligned word.
        let addr = words.as_ptr() as usize;
        let base = ((PAGE_SIZE - addr % PAGE_SIZE) % PAGE_SIZE) / 8;
        let mem = Memory {
            words,
            base,
            len_words,
            ring_offset_pages,
        };
        Self { mem: Arc::new(mem) }
    }

    /// Pointer to byte 0 of the (page-aligned) ring memory, for attaching an external VMBus
    /// implementation. Every word is an `AtomicU64`; external code must access it atomically
    /// (or with volatile accesses, as a real host does).
    #[must_use]
    pub fn as_ptr(&self) -> *mut u8 {
        self.mem.word(0).as_ptr().cast::<u8>()
    }

    /// Length of the ring memory in bytes (both rings, control pages included).
    #[must_use]
    pub fn len(&self) -> usize {
        self.mem.len_words * 8
    }

    /// Always false: a ring pair has at least four pages.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.mem.len_words == 0
    }

    /// Page offset of the guest's inbound ring (`downstream_ringbuffer_pageoffset`).
    #[must_use]
    pub fn ring_offset_pages(&self) -> usize {
        self.mem.ring_offset_pages
    }

    /// The guest's outbound ring (guest writes, host reads), at page 0.
    #[must_use]
    pub fn outbound(&self) -> Ring {
        Ring::new(self.mem.clone(), 0, self.mem.ring_offset_pages - 1)
    }

    /// The guest's inbound ring (host writes, guest reads), at `ring_offset_pages`.
    #[must_use]
    pub fn inbound(&self) -> Ring {
        let pages = self.mem.len_words / WORDS_PER_PAGE - self.mem.ring_offset_pages - 1;
        Ring::new(self.mem.clone(), self.mem.ring_offset_pages, pages)
    }

    /// Copies bytes out of the ring memory at `offset` (byte-granular; for tests and fault
    /// injection).
    ///
    /// # Panics
    ///
    /// If the range is outside [`len`](Self::len).
    pub fn read_bytes(&self, offset: usize, out: &mut [u8]) {
        assert!(
            offset
                .checked_add(out.len())
                .is_some_and(|end| end <= self.len()),
            "out of range"
        );
        self.mem.read_bytes(offset, out);
    }

    /// Overwrites bytes of the ring memory at `offset` (byte-granular, each word updated
    /// atomically; for tests and fault injection).
    ///
    /// # Panics
    ///
    /// If the range is outside [`len`](Self::len).
    pub fn write_bytes(&self, offset: usize, bytes: &[u8]) {
        assert!(
            offset
                .checked_add(bytes.len())
                .is_some_and(|end| end <= self.len()),
            "out of range"
        );
        self.mem.write_bytes(offset, bytes);
    }
}

/// One ring direction inside a [`RingPair`]: its control page and data area. Cheap to clone.
/// The raw accessors here ignore ownership rules; use [`OutgoingRing`](super::OutgoingRing) / [`IncomingRing`](super::IncomingRing) for
/// protocol-conforming access.
#[derive(Debug, Clone)]
pub struct Ring {
    mem: Arc<Memory>,
    /// Byte offset of the control page in the memory.
    control: usize,
    /// Word index of the first data word.
    data_word: usize,
    /// Index in `mem.words` of the control page's first word (hot-path precomputation).
    control_first: usize,
    /// Index in `mem.words` of the first data word (hot-path precomputation).
    data_first: usize,
    /// Index in `mem.words` just past the last data word (hot-path precomputation).
    data_end: usize,
    /// Data area size in bytes.
    pub(super) dsize: u32,
}

impl Ring {
    fn new(mem: Arc<Memory>, first_page: usize, data_pages: usize) -> Self {
        let control = first_page * PAGE_SIZE;
        let data_word = (first_page + 1) * WORDS_PER_PAGE;
        // The RingPair constructor bounds the page count so this fits.
        let dsize = u32::try_from(data_pages * PAGE_SIZE).unwrap_or(!0xfff);
        Self {
            control_first: mem.base + control / 8,
            data_first: mem.base + data_word,
            data_end: mem.base + data_word + data_pages * WORDS_PER_PAGE,
            mem,
            control,
            data_word,
            dsize,
        }
    }

    /// Byte offset of this ring's control page in the [`RingPair`] memory.
    #[must_use]
    pub const fn control_offset(&self) -> usize {
        self.control
    }

    /// Byte offset of this ring's data area in the [`RingPair`] memory.
    #[must_use]
    pub const fn data_offset(&self) -> usize {
        self.data_word * 8
    }

    /// Size of the data area in bytes (`dsize`).
    #[must_use]
    pub const fn data_size(&self) -> u32 {
        self.dsize
    }

    /// Loads a control field (SeqCst).
    #[must_use]
    #[inline]
    pub fn load(&self, field: ControlField) -> u32 {
        self.load_field(field, Ordering::SeqCst)
    }

    /// A control field as one 32-bit atomic.
    #[inline(always)]
    fn field(&self, field: ControlField) -> &AtomicU32 {
        let at = field.offset();
        shared_mem::atomic_u32(&self.mem.words[self.control_first + at / 8], at % 8)
    }

    /// Loads a control field with `order`.
    #[inline(always)]
    pub(super) fn load_field(&self, field: ControlField, order: Ordering) -> u32 {
        u32::from_le(self.field(field).load(order))
    }

    /// Stores a control field (SeqCst; the neighbouring field is preserved). Raw: no protocol
    /// checks; use for fault injection or to stand in for an external endpoint.
    #[inline]
    pub fn store(&self, field: ControlField, value: u32) {
        // A SeqCst read-modify-write of the 32-bit field only: a full barrier, and the other
        // half of the word (often owned by the other endpoint) is never touched.
        self.field(field).swap(value.to_le(), Ordering::SeqCst);
    }

    /// Copies `out.len()` data-area bytes starting at `offset`, wrapping at the data size.
    pub fn read_data(&self, offset: u32, out: &mut [u8]) {
        for (i, byte) in out.iter_mut().enumerate() {
            let at = (offset as usize + i) % self.dsize as usize;
            let mut b = [0u8; 1];
            self.mem.read_bytes(self.data_offset() + at, &mut b);
            *byte = b[0];
        }
    }

    /// Overwrites data-area bytes starting at `offset`, wrapping at the data size (fault
    /// injection; no index changes).
    pub fn write_data(&self, offset: u32, bytes: &[u8]) {
        for (i, byte) in bytes.iter().enumerate() {
            let at = (offset as usize + i) % self.dsize as usize;
            self.mem.write_bytes(self.data_offset() + at, &[*byte]);
        }
    }

    /// Raw free bytes between `write` and `read` (`dsize` when empty).
    pub(super) const fn raw_free(&self, write: u32, read: u32) -> u32 {
        if write >= read {
            self.dsize - (write - read)
        } else {
            read - write
        }
    }

    /// Bytes from `from` to `to`, going forward around the ring.
    pub(super) const fn distance(&self, from: u32, to: u32) -> u32 {
        if to >= from {
            to - from
        } else {
            self.dsize - from + to
        }
    }

    /// `(at + n) mod dsize` for `at, n < dsize` (the callers' invariant), without a division.
    pub(super) const fn add(&self, at: u32, n: u32) -> u32 {
        let sum = at as u64 + n as u64;
        let dsize = self.dsize as u64;
        (if sum >= dsize { sum - dsize } else { sum }) as u32
    }

    #[inline]
    pub(super) fn check_write_index(&self, value: u32) -> Result<u32, CorruptReason> {
        if !value.is_multiple_of(8) {
            Err(CorruptReason::WriteIndexMisaligned)
        } else if value >= self.dsize {
            Err(CorruptReason::WriteIndexOutOfRange)
        } else {
            Ok(value)
        }
    }

    #[inline]
    pub(super) fn check_read_index(&self, value: u32) -> Result<u32, CorruptReason> {
        if !value.is_multiple_of(8) {
            Err(CorruptReason::ReadIndexMisaligned)
        } else if value >= self.dsize {
            Err(CorruptReason::ReadIndexOutOfRange)
        } else {
            Ok(value)
        }
    }

    /// The control page's hot fields (`write_index`, `read_index`, `interrupt_mask`,
    /// `pending_send_sz`: its first two words), bounds-checked once, for a packet's several
    /// accesses.
    #[inline(always)]
    pub(super) fn hot(&self) -> HotControl<'_> {
        let words = &self.mem.words[self.control_first..];
        HotControl(
            words
                .first_chunk::<2>()
                .unwrap_or_else(|| control_outside_memory()),
        )
    }

    /// The data area's words.
    #[inline(always)]
    pub(super) fn data_words(&self) -> &[AtomicU64] {
        &self.mem.words[self.data_first..self.data_end]
    }

    /// [`hot`](Self::hot) and [`data_words`](Self::data_words): what a packet's write or
    /// read needs, each bounds-checked once.
    #[inline(always)]
    pub(super) fn parts(&self) -> (HotControl<'_>, &[AtomicU64]) {
        (self.hot(), self.data_words())
    }

    /// Copies data-area bytes starting at `at` into `out` with bulk copies, wrapping at the
    /// data size (at most one wrap: `out` is shorter than the data area).
    #[inline(always)]
    pub(super) fn copy_out(&self, at: u32, out: &mut [u8]) {
        let words = self.data_words();
        let at = at as usize;
        let first = out.len().min(self.dsize as usize - at);
        let (head, tail) = out.split_at_mut(first);
        shared_mem::copy_out(words, at, head);
        if !tail.is_empty() {
            shared_mem::copy_out(words, 0, tail);
        }
    }
}

#[cold]
#[inline(never)]
fn control_outside_memory() -> ! {
    unreachable!("a ring's control page lies inside its memory (RingPair::new)")
}

/// The first two words of a control page ([`Ring::hot`]): the fields a packet's write or
/// read touches, each a 32-bit atomic, with no bounds check left per access.
#[derive(Clone, Copy)]
pub(super) struct HotControl<'r>(&'r [AtomicU64; 2]);

impl<'r> HotControl<'r> {
    /// `field` as one 32-bit atomic (one of the four fields in the first two words).
    #[inline(always)]
    fn field(self, field: ControlField) -> &'r AtomicU32 {
        let at = field.offset();
        shared_mem::atomic_u32(&self.0[at / 8], at % 8)
    }

    /// Loads `field` with `order` (as [`Ring::load_field`]).
    #[inline(always)]
    pub(super) fn load(self, field: ControlField, order: Ordering) -> u32 {
        u32::from_le(self.field(field).load(order))
    }

    /// Stores `field` with a SeqCst read-modify-write of the field only (as [`Ring::store`]).
    #[inline(always)]
    pub(super) fn store(self, field: ControlField, value: u32) {
        self.field(field).swap(value.to_le(), Ordering::SeqCst);
    }
}

/// Sequential word writer over the data area, wrapping at dsize. Words are stored as
/// little-endian values, so the bytes in memory are the wire bytes on any host.
pub(super) struct WordWriter<'r> {
    words: &'r [AtomicU64],
    i: usize,
}

impl<'r> WordWriter<'r> {
    #[inline(always)]
    pub(super) fn new(ring: &'r Ring, at: u32) -> Self {
        Self {
            words: ring.data_words(),
            i: at as usize / 8,
        }
    }

    #[inline]
    fn store(&mut self, raw: u64) {
        self.words[self.i].store(raw, Ordering::Relaxed);
        self.i += 1;
        if self.i == self.words.len() {
            self.i = 0;
        }
    }

    #[inline]
    pub(super) fn put(&mut self, value: u64) {
        self.store(value.to_le());
    }

    /// Writes `bytes` zero-padded to 8: the pad bytes as one store of a zero word where the
    /// payload ends, then the payload with one bulk copy over the whole run (two at the
    /// wrap), which overwrites the front of that word.
    #[inline(always)]
    pub(super) fn put_bytes(&mut self, bytes: &[u8]) {
        if !bytes.len().is_multiple_of(8) {
            let mut last = self.i + bytes.len() / 8;
            if last >= self.words.len() {
                last -= self.words.len();
            }
            self.words[last].store(0, Ordering::Relaxed);
        }
        self.copy_run(bytes);
    }

    /// Like [`put_bytes`](Self::put_bytes), but the pad bytes of the last word keep what the
    /// memory held: the bulk copy alone.
    #[inline]
    pub(super) fn put_bytes_keep_padding(&mut self, bytes: &[u8]) {
        self.copy_run(bytes);
    }

    /// Copies `bytes` at the cursor with one bulk copy, two at the wrap (the data area ends
    /// on a word boundary, so the second starts on one) and moves the cursor past the
    /// words it touched; the bytes after a partial last word are left as they are.
    #[inline(always)]
    fn copy_run(&mut self, bytes: &[u8]) {
        let n = self.words.len();
        let first = bytes.len().min((n - self.i) * 8);
        shared_mem::copy_in(self.words, self.i * 8, &bytes[..first]);
        if first < bytes.len() {
            shared_mem::copy_in(self.words, 0, &bytes[first..]);
        }
        self.i += bytes.len().div_ceil(8);
        if self.i >= n {
            self.i -= n;
        }
    }
}

/// Sequential word reader over the data area, wrapping at dsize.
pub(super) struct WordReader<'r> {
    words: &'r [AtomicU64],
    i: usize,
}

impl<'r> WordReader<'r> {
    /// A reader at word `i` of `words` (a data area, [`Ring::data_words`]); `i` may be
    /// `words.len()` or `words.len() + 1` (just past the end: wraps to the start).
    #[inline(always)]
    pub(super) fn over(words: &'r [AtomicU64], i: usize) -> Self {
        Self {
            words,
            i: if i >= words.len() { i - words.len() } else { i },
        }
    }

    /// The next word as stored (little-endian).
    #[inline]
    pub(super) fn load(&mut self) -> u64 {
        let raw = self.words[self.i].load(Ordering::Relaxed);
        self.i += 1;
        if self.i == self.words.len() {
            self.i = 0;
        }
        raw
    }

    #[inline]
    pub(super) fn get(&mut self) -> u64 {
        u64::from_le(self.load())
    }

    /// Skips `n` words.
    #[inline]
    pub(super) fn skip(&mut self, n: usize) {
        self.i = (self.i + n) % self.words.len();
    }
}

pub(super) const fn lo32(v: u64) -> u32 {
    (v & 0xffff_ffff) as u32
}

pub(super) const fn hi32(v: u64) -> u32 {
    (v >> 32) as u32
}
