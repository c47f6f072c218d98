//! 32-bit atomics and bulk copies over ring memory shared with the other endpoint.
//!
//! C header: none; reference: `docs/simulator.md` ("Performance")
//! (which endpoint owns which bytes of a ring when).
//!
//! Ring memory is a slice of `AtomicU64` words ([`crate::ring::RingPair`]), so every word may
//! be touched by the other endpoint at any time without undefined behaviour on *their*
//! side, and an external implementation attached through a raw pointer sees the wire bytes.
//! Word-by-word atomic copies of payloads cost 13-14 instructions per 8 bytes each way and
//! control fields assembled from bytes about 190 per packet, so this module (the only
//! `unsafe` on the ring path) offers the two accesses the ring needs beyond whole words:
//!
//! * [`atomic_u32`]: a control field (`write_index`, `read_index`, ...) as one `AtomicU32`
//!   inside its word;
//! * [`copy_in`] / [`copy_out`]: `copy_nonoverlapping` between a private buffer and a
//!   range of the words.
//!
//! **The ownership rule (RING_WINDOW_OWNERSHIP)** that makes the bulk copies data-race free:
//! a ring's writer copies only into the free window `[write_index, read_index)`, after an
//! acquire load of `read_index`, and publishes the bytes with a SeqCst store of
//! `write_index`; the reader copies only out of `[read_index, write_index)`, after an
//! acquire load of `write_index`, and gives the bytes back with a SeqCst store of
//! `read_index` made after its copies. So every non-atomic copy of a byte happens-after
//! the other endpoint's last access to it and happens-before its next one. Endpoints
//! inside this process (the built-in host, the guest side, fault injection, and the
//! external hosts in tests and fuzzers) follow the rule or act from the same thread. An
//! external host in another thread that breaks the rule races, exactly as a real host
//! scribbling on guest memory does: the copy may see torn bytes, which the reader then
//! validates like any other hostile input (nothing here trusts the bytes it copies).
#![allow(
    unsafe_code,
    reason = "the one module with raw access to shared ring words; every block names its rule"
)]

use std::sync::atomic::{AtomicU32, AtomicU64};

/// Panics unless `[byte_offset, byte_offset + len)` lies inside `words`.
#[inline]
fn check_range(words: &[AtomicU64], byte_offset: usize, len: usize) {
    assert!(
        byte_offset
            .checked_add(len)
            .is_some_and(|end| end <= words.len() * 8),
        "shared memory range {byte_offset}+{len} outside {} bytes",
        words.len() * 8
    );
}

/// The 32-bit half of `word` at byte `half` of its memory, as an atomic: byte 0 for
/// `half < 4`, byte 4 otherwise (callers pass 0 or 4).
#[inline]
pub(crate) fn atomic_u32(word: &AtomicU64, half: usize) -> &AtomicU32 {
    let p = word.as_ptr().cast::<u8>().wrapping_add(half & 4);
    // SAFETY: rule CONTROL_FIELD_ATOMIC_U32: `p` is the first or second 4-byte half of
    // `word` (`half & 4` is 0 or 4), so 4-aligned and in bounds; the bytes are an `AtomicU64`,
    // i.e. inside an `UnsafeCell`, live for the returned borrow of `word`, and only ever
    // accessed atomically (here, by the word accessors of ring/memory.rs, and by external
    // endpoints, which must use atomics). An `AtomicU32` over half a word that another
    // thread accesses as an `AtomicU64` is a mixed-size access, which the hardware makes
    // atomic for aligned fields, as on a real host's ring.
    unsafe { AtomicU32::from_ptr(p.cast::<u32>()) }
}

/// Copies `bytes` into `words` at `byte_offset` (no wrap: the caller splits).
///
/// # Panics
///
/// If the range is outside `words`.
#[inline]
pub(crate) fn copy_in(words: &[AtomicU64], byte_offset: usize, bytes: &[u8]) {
    check_range(words, byte_offset, bytes.len());
    let dst = words
        .as_ptr()
        .cast::<u8>()
        .cast_mut()
        .wrapping_add(byte_offset);
    // SAFETY: rule RING_WINDOW_OWNERSHIP (module doc): the caller is the ring's writer
    // copying into the free window it owns until it publishes `write_index`. `dst` is in
    // bounds for `bytes.len()` bytes (checked above) and writable (the words are
    // `UnsafeCell`s, and the pointer is derived from the whole slice); `bytes` is a
    // private buffer, so the ranges do not overlap; u8 needs no alignment.
    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), dst, bytes.len()) };
}

/// Copies `out.len()` bytes of `words` at `byte_offset` into `out` (no wrap: the caller
/// splits).
///
/// # Panics
///
/// If the range is outside `words`.
#[inline]
pub(crate) fn copy_out(words: &[AtomicU64], byte_offset: usize, out: &mut [u8]) {
    check_range(words, byte_offset, out.len());
    let src = words.as_ptr().cast::<u8>().wrapping_add(byte_offset);
    // SAFETY: rule RING_WINDOW_OWNERSHIP (module doc): the caller is the ring's reader
    // copying out of the published window it owns until it releases `read_index`. `src`
    // is in bounds for `out.len()` bytes (checked above) and readable; `out` is a private
    // exclusive buffer, so the ranges do not overlap; u8 needs no alignment.
    unsafe { std::ptr::copy_nonoverlapping(src, out.as_mut_ptr(), out.len()) };
}

/// Copies the first `len` bytes of the ring words `src` into the words `dst` at byte
/// `dst_byte`: ring payload into a packet buffer the simulator is about to hand to a driver.
///
/// # Panics
///
/// If either range is out of bounds.
#[inline]
pub(crate) fn copy_words(src: &[AtomicU64], dst: &[AtomicU64], dst_byte: usize, len: usize) {
    check_range(src, 0, len);
    check_range(dst, dst_byte, len);
    let from = src.as_ptr().cast::<u8>();
    let to = dst.as_ptr().cast::<u8>().cast_mut().wrapping_add(dst_byte);
    // SAFETY: rules RING_WINDOW_OWNERSHIP (module doc) for `src`, the reader's published
    // window, and PACKET_BUFFER_OWNERSHIP for `dst`: a packet buffer belongs to the
    // simulator until it is delivered and again once the driver completes it (a driver
    // that writes it after completion breaks the KMCL contract; the verifier's poison
    // check reports it). Both ranges are in bounds (checked above) and inside
    // `UnsafeCell`s; they are distinct allocations (ring memory and a packet buffer), so
    // they do not overlap; u8 needs no alignment.
    unsafe { std::ptr::copy_nonoverlapping(from, to, len) };
}

/// Whether the words `src` equal `expected` (same length), compared in place as plain
/// integers (slice equality of integers: the library's `memcmp`, no copy).
///
/// # Panics
///
/// If the lengths differ.
#[inline]
pub(crate) fn words_equal(src: &[AtomicU64], expected: &[u64]) -> bool {
    assert_eq!(
        src.len(),
        expected.len(),
        "word comparison of unequal lengths"
    );
    // SAFETY: rule PACKET_BUFFER_OWNERSHIP (see `copy_words`): `src` is a completed packet's
    // buffer, the simulator's again, read here only to compare it with the poison; a driver
    // writing it now breaks the KMCL contract, and a torn read of such a write still differs
    // from the poison the caller looks for (the comparison is all it is used for: no value
    // read here is kept). `AtomicU64` has the size and alignment of `u64`, and the slice
    // covers exactly the `src.len()` words of `src` (in bounds, live for the borrow).
    let words = unsafe { std::slice::from_raw_parts(src.as_ptr().cast::<u64>(), src.len()) };
    words == expected
}

/// Sets every byte of `words` to `v` (the poison of a completed packet's buffer).
#[inline]
pub(crate) fn fill_words(words: &[AtomicU64], v: u8) {
    // In 1 KiB pieces: glibc's memset switches to `rep stosb` from 2 KiB, which callgrind
    // counts per byte; vector stores are as fast on the CPU and count per 32 bytes.
    for piece in words.chunks(128) {
        let to = piece.as_ptr().cast::<u8>().cast_mut();
        // SAFETY: rule PACKET_BUFFER_OWNERSHIP (see `copy_words`): the packet was completed,
        // so its buffer is the simulator's; a driver still writing it breaks the KMCL
        // contract and is what the poison check then reports. The bytes are the whole of
        // `piece` (in bounds, inside `UnsafeCell`s, writable through a pointer derived from
        // the slice).
        unsafe { std::ptr::write_bytes(to, v, piece.len() * 8) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    fn words(n: usize) -> Box<[AtomicU64]> {
        (0..n).map(|_| AtomicU64::new(0)).collect()
    }

    #[test]
    fn u32_field_is_the_little_endian_half_of_its_word() {
        let w = words(2);
        atomic_u32(&w[1], 4).store(u32::from_le_bytes([1, 2, 3, 4]), Ordering::SeqCst);
        assert_eq!(
            w[1].load(Ordering::SeqCst).to_ne_bytes(),
            [0, 0, 0, 0, 1, 2, 3, 4]
        );
        assert_eq!(atomic_u32(&w[1], 0).load(Ordering::SeqCst), 0);
    }

    #[test]
    fn copies_are_byte_exact_at_any_offset() {
        let w = words(4);
        copy_in(&w, 3, &[9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 11]);
        let mut out = [0u8; 13];
        copy_out(&w, 2, &mut out);
        assert_eq!(out, [0, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 11, 0]);
    }

    #[test]
    #[should_panic(expected = "outside")]
    fn copy_past_the_end_panics_instead_of_writing() {
        copy_in(&words(1), 4, &[0; 5]);
    }
}
