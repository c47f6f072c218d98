//! Unit tests of the ring, named after the rule each checks.

use std::collections::VecDeque;

use super::*;

/// A one-ring test setup: a writer and a reader on the guest's outbound ring.
fn one_ring(data_pages: usize) -> (RingPair, OutgoingRing, IncomingRing) {
    let pair = RingPair::new(data_pages, 1);
    let tx = OutgoingRing::new(pair.outbound());
    let rx = IncomingRing::new(pair.outbound());
    (pair, tx, rx)
}

fn descriptor(packet_type: u16, offset8: u16, len8: u16, flags: u16) -> u64 {
    u64::from(packet_type)
        | u64::from(offset8) << 16
        | u64::from(len8) << 32
        | u64::from(flags) << 48
}

/// Writes a hand-made packet: the given words, then a correct trailer.
fn write_words(tx: &mut OutgoingRing, words: &[u64]) -> WriteOutcome {
    let start = tx.write_index();
    let mut bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    bytes.extend_from_slice(&(u64::from(start) << 32).to_le_bytes());
    tx.write_raw(&bytes).expect("test packet fits")
}

fn corrupt_read(words: &[u64]) -> ReadError {
    let (_pair, mut tx, mut rx) = one_ring(1);
    write_words(&mut tx, words);
    let before = rx.cursor();
    let err = rx.read_next().expect_err("packet must be rejected");
    assert_eq!(
        rx.cursor(),
        before,
        "a rejected packet must not move the cursor"
    );
    err
}

/// Moves an empty ring's indices to `at` by writing and releasing filler packets.
fn advance_empty_ring(tx: &mut OutgoingRing, rx: &mut IncomingRing, at: u32) {
    while rx.read_index() != at {
        let dist = rx.ring().distance(rx.read_index(), at) as usize;
        // Footprints are 24 + payload; keep each at most half the ring and leave >= 24.
        let total = dist.min(2048);
        let total = if dist - total != 0 && dist - total < 24 {
            total - 24
        } else {
            total
        };
        let payload = vec![0x5a; total - 24];
        tx.write(&OutgoingPacket::in_band(0, false, &payload))
            .expect("filler fits");
        let p = rx.read_next().expect("filler reads");
        rx.release(p.end_offset());
    }
}

#[test]
fn memory_is_page_aligned_with_inbound_ring_at_ring_offset() {
    let pair = RingPair::new(3, 2);
    assert_eq!(pair.as_ptr() as usize % PAGE_SIZE, 0);
    assert_eq!(pair.len(), (1 + 3 + 1 + 2) * PAGE_SIZE);
    assert!(!pair.is_empty());
    assert_eq!(pair.ring_offset_pages(), 4);
    let out = pair.outbound();
    let inb = pair.inbound();
    assert_eq!(
        (out.control_offset(), out.data_offset(), out.data_size()),
        (0, 4096, 3 * 4096)
    );
    assert_eq!(
        (inb.control_offset(), inb.data_offset(), inb.data_size()),
        (4 * 4096, 5 * 4096, 2 * 4096)
    );
    let mut tx = OutgoingRing::new(pair.inbound());
    tx.write(&OutgoingPacket::in_band(0xabcd, false, b"xyz"))
        .expect("fits");
    let mut word = [0u8; 8];
    pair.read_bytes(5 * 4096 + 8, &mut word);
    assert_eq!(
        u64::from_le_bytes(word),
        0xabcd,
        "trans_id lands in the inbound data area"
    );
    let mut idx = [0u8; 4];
    pair.read_bytes(4 * 4096, &mut idx);
    assert_eq!(
        u32::from_le_bytes(idx),
        32,
        "inbound write_index in its control page"
    );
}

#[test]
fn control_fields_sit_at_wire_offsets() {
    let pair = RingPair::new(1, 1);
    let ring = pair.inbound();
    let base = ring.control_offset();
    for (field, value) in [
        (ControlField::WriteIndex, 0x1111_1110),
        (ControlField::ReadIndex, 0x2222_2220),
        (ControlField::InterruptMask, 1),
        (ControlField::PendingSendSize, 0x4444_4440),
        (ControlField::FeatureBits, 0x5555_5555),
    ] {
        ring.store(field, value);
        let mut b = [0u8; 4];
        pair.read_bytes(base + field.offset(), &mut b);
        assert_eq!(u32::from_le_bytes(b), value, "{field:?}");
    }
    // Storing one half of a word keeps the other half.
    assert_eq!(ring.load(ControlField::WriteIndex), 0x1111_1110);
    assert_eq!(ring.load(ControlField::ReadIndex), 0x2222_2220);
    pair.write_bytes(base + 4, &7u32.to_le_bytes());
    assert_eq!(ring.load(ControlField::ReadIndex), 7);
    assert_eq!(ring.load(ControlField::WriteIndex), 0x1111_1110);
}

#[test]
fn writer_sets_feature_bit_pending_send_size() {
    let pair = RingPair::new(1, 1);
    assert_eq!(pair.outbound().load(ControlField::FeatureBits), 0);
    let _tx = OutgoingRing::new(pair.outbound());
    assert_eq!(
        pair.outbound().load(ControlField::FeatureBits),
        FEATURE_SUPPORTS_PENDING_SEND_SIZE
    );
}

#[test]
fn writes_the_bytes_of_the_openvmm_capture() {
    // The packet layout of Linux `hv_ringbuffer_write`, byte by byte.
    let (pair, mut tx, _rx) = one_ring(1);
    let o1 = tx
        .write(&OutgoingPacket::in_band(
            0x1122_3344_5566_7788,
            true,
            &[0xaa, 0xbb, 0xcc, 0xdd, 0xee],
        ))
        .expect("fits");
    assert!(o1.signal);
    let o2 = tx
        .write(&OutgoingPacket::completion(7, &[1, 0, 0, 0]))
        .expect("fits");
    assert!(!o2.signal, "ring was not empty");
    let ranges = [
        TransferPageRange {
            byte_count: 100,
            byte_offset: 0,
        },
        TransferPageRange {
            byte_count: 200,
            byte_offset: 4096,
        },
    ];
    tx.write(&OutgoingPacket::transfer_pages(
        9, true, 3, &ranges, &[9; 8],
    ))
    .expect("fits");
    assert_eq!(tx.write_index(), 120);
    assert_eq!(pair.outbound().load(ControlField::WriteIndex), 120);
    let mut got = [0u8; 120];
    pair.read_bytes(4096, &mut got);
    let mut want = Vec::new();
    want.extend_from_slice(&[
        6, 0, 2, 0, 3, 0, 1, 0, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11,
    ]);
    want.extend_from_slice(&[0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0, 0, 0]);
    want.extend_from_slice(&[0; 8]);
    want.extend_from_slice(&[0x0b, 0, 2, 0, 3, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0]);
    want.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0]);
    want.extend_from_slice(&[0, 0, 0, 0, 0x20, 0, 0, 0]);
    want.extend_from_slice(&[7, 0, 5, 0, 6, 0, 1, 0, 9, 0, 0, 0, 0, 0, 0, 0]);
    want.extend_from_slice(&[3, 0, 0, 0, 2, 0, 0, 0]);
    want.extend_from_slice(&[100, 0, 0, 0, 0, 0, 0, 0, 200, 0, 0, 0, 0, 0x10, 0, 0]);
    want.extend_from_slice(&[9; 8]);
    want.extend_from_slice(&[0, 0, 0, 0, 0x40, 0, 0, 0]);
    assert_eq!(&got[..], &want[..]);
}

#[test]
fn trailer_holds_start_offset_shifted_left_32() {
    let (pair, mut tx, mut rx) = one_ring(1);
    for len in [0usize, 1, 8, 13, 100] {
        let o = tx
            .write(&OutgoingPacket::in_band(1, false, &vec![3; len]))
            .expect("fits");
        let mut t = [0u8; 8];
        pair.outbound()
            .read_data(o.offset + o.total_len - 8, &mut t);
        assert_eq!(u64::from_le_bytes(t), u64::from(o.offset) << 32);
        let p = rx.read_next().expect("reads");
        assert_eq!(p.trailer, u64::from(o.offset) << 32);
        assert_eq!((p.offset, p.total_len), (o.offset, o.total_len));
    }
}

#[test]
fn pads_payload_to_eight_with_zeroes() {
    let (pair, mut tx, mut rx) = one_ring(1);
    pair.outbound().write_data(0, &[0xff; 64]);
    let o = tx
        .write(&OutgoingPacket::in_band(1, false, &[1, 2, 3, 4, 5]))
        .expect("fits");
    assert_eq!(o.total_len, 16 + 8 + 8);
    let p = rx.read_next().expect("reads");
    assert_eq!(p.payload, vec![1, 2, 3, 4, 5, 0, 0, 0]);
    assert_eq!((p.offset8, p.len8), (2, 3));
}

#[test]
fn wraps_in_the_middle_of_a_descriptor() {
    let (pair, mut tx, mut rx) = one_ring(1);
    advance_empty_ring(&mut tx, &mut rx, 4088);
    assert_eq!(tx.write_index(), 4088);
    let payload: Vec<u8> = (0..100u8).collect();
    let o = tx
        .write(&OutgoingPacket::in_band(
            0x0102_0304_0506_0708,
            true,
            &payload,
        ))
        .expect("fits");
    assert_eq!(o.offset, 4088);
    // The descriptor's second word (trans_id) is the first word of the data area.
    let mut w = [0u8; 8];
    pair.outbound().read_data(0, &mut w);
    assert_eq!(u64::from_le_bytes(w), 0x0102_0304_0506_0708);
    let p = rx.read_next().expect("reads across the wrap");
    assert_eq!(p.transaction_id, 0x0102_0304_0506_0708);
    assert_eq!(&p.payload[..100], &payload[..]);
    assert_eq!(p.end_offset(), (4088 + o.total_len) % 4096);
}

#[test]
fn wraps_payload_and_trailer_at_the_end_of_the_ring() {
    let (_pair, mut tx, mut rx) = one_ring(1);
    for at in [4000u32, 4064, 4072, 4080] {
        advance_empty_ring(&mut tx, &mut rx, at);
        let payload: Vec<u8> = (0..=255u8).cycle().take(301).collect();
        let o = tx
            .write(&OutgoingPacket::in_band(u64::from(at), false, &payload))
            .expect("fits");
        let p = rx.read_next().expect("reads");
        assert_eq!(p.transaction_id, u64::from(at));
        assert_eq!(&p.payload[..301], &payload[..]);
        assert_eq!(p.trailer, u64::from(o.offset) << 32);
        rx.release(p.end_offset());
    }
}

#[test]
fn large_payloads_move_byte_exact_at_any_start_across_the_wrap() {
    // A payload of more than half the data area, with a partial last word: the bytes read
    // (copied out, viewed, or parsed) are those written, at any start, whether the payload
    // wraps or not.
    let (_pair, mut tx, mut rx) = one_ring(2);
    let payload: Vec<u8> = (0..5001u32).map(|i| (i * 7 + i / 251) as u8).collect();
    for at in [0u32, 8, 3000, 3080, 8168, 8176] {
        advance_empty_ring(&mut tx, &mut rx, at);
        tx.write(&OutgoingPacket::in_band(1, false, &payload))
            .expect("fits");
        let h = rx.read_header().expect("reads");
        let mut out = vec![0u8; 5008];
        assert_eq!(rx.copy_payload(&h, &mut out), 5008);
        assert_eq!(&out[..5001], &payload[..]);
        assert_eq!(&out[5001..], &[0u8; 7]);
        let mut viewed = vec![0u8; 5008];
        assert_eq!(rx.payload_view(&h).copy_to(&mut viewed), 5008);
        assert_eq!(viewed, out);
        rx.rewind();
        let p = rx.read_next().expect("reads again");
        assert_eq!(p.payload, out);
        rx.release(p.end_offset());
    }
}

#[test]
fn header_read_sees_the_bytes_the_owned_read_sees_across_the_wrap() {
    let (_pair, mut tx, mut rx) = one_ring(1);
    for at in [0u32, 3960, 4000, 4064, 4072, 4080, 4088] {
        advance_empty_ring(&mut tx, &mut rx, at);
        let payload: Vec<u8> = (0..=255u8).rev().cycle().take(301).collect();
        tx.write(&OutgoingPacket::in_band(u64::from(at), true, &payload))
            .expect("fits");
        let owned = rx.peek().expect("reads");
        let h = rx.peek_header().expect("reads");
        assert_eq!(
            (
                h.offset,
                h.total_len,
                h.packet_type,
                h.flags,
                h.transaction_id
            ),
            (
                owned.offset,
                owned.total_len,
                owned.packet_type,
                owned.flags,
                owned.transaction_id
            )
        );
        assert_eq!(
            (h.offset8, h.len8, h.trailer),
            (owned.offset8, owned.len8, owned.trailer)
        );
        assert_eq!(h.end_offset(), owned.end_offset());
        assert_eq!(h.payload_len(), owned.payload.len());
        let mut copied = vec![0u8; h.payload_len()];
        assert_eq!(rx.copy_payload(&h, &mut copied), owned.payload.len());
        assert_eq!(copied, owned.payload);
        let view = rx.payload_view(&h);
        let mut viewed = vec![0u8; view.len()];
        assert_eq!(view.copy_to(&mut viewed), owned.payload.len());
        assert_eq!(viewed, owned.payload);
        let words: Vec<u8> = (0..view.len() / 8)
            .flat_map(|i| view.word(i).expect("in range").to_le_bytes())
            .collect();
        assert_eq!(words, owned.payload);
        assert!(rx.consume_header(&h));
        assert_eq!(rx.peek_header(), Err(ReadError::Empty));
        rx.release(h.end_offset());
    }
}

#[test]
fn header_read_rejects_what_the_owned_read_rejects() {
    // Every corrupt shape of the tests below, through both readers.
    for words in [
        vec![descriptor(6, 1, 2, 0), 0, 0],
        vec![descriptor(6, 3, 2, 0), 0, 0],
        vec![descriptor(6, 2, 2, 2), 0, 0],
        vec![descriptor(5, 2, 2, 0), 0, 0],
        vec![descriptor(7, 2, 2, 0), 0, 0],
        vec![descriptor(7, 3, 3, 0), 0, 0, 0],
        vec![descriptor(9, 4, 4, 0), 0, 1 << 32, 0, 0],
    ] {
        let (_pair, mut tx, rx) = one_ring(1);
        write_words(&mut tx, &words);
        let owned = rx.peek().map(|p| p.offset);
        assert_eq!(rx.peek_header().map(|h| h.offset), owned, "{words:x?}");
        assert!(owned.is_err(), "{words:x?}");
    }
}

#[test]
fn copy_payload_of_a_forged_header_stays_in_the_ring() {
    let (_pair, mut tx, rx) = one_ring(1);
    tx.write(&OutgoingPacket::in_band(1, false, &[7; 8]))
        .expect("fits");
    let mut h = rx.peek_header().expect("reads");
    h.offset = 4088;
    h.offset8 = 2;
    h.len8 = u16::MAX;
    let mut out = vec![0u8; 1 << 20];
    assert_eq!(rx.copy_payload(&h, &mut out), 4096);
    assert_eq!(rx.payload_view(&h).len(), 4096);
}

#[test]
fn refuses_write_when_free_equals_total() {
    let (_pair, mut tx, rx) = one_ring(1);
    tx.write(&OutgoingPacket::in_band(0, false, &[0; 2048 - 24]))
        .expect("half the ring");
    assert_eq!(tx.free_bytes(), Ok(2048 - 8));
    // raw free == 2048 == footprint: would fill the ring exactly, which looks empty.
    let exact = OutgoingPacket::in_band(1, false, &[0; 2048 - 24]);
    assert_eq!(tx.write(&exact), Err(WriteError::Full { needed: 2048 }));
    assert_eq!(tx.write_index(), 2048, "nothing written");
    // raw free == footprint + 8: accepted, leaving 8 bytes.
    let fits = OutgoingPacket::in_band(2, false, &[0; 2040 - 24]);
    assert!(tx.write(&fits).is_ok());
    assert_eq!(tx.write_index(), 4088);
    assert_ne!(
        tx.write_index(),
        rx.ring().load(ControlField::ReadIndex),
        "ring is not empty"
    );
    assert_eq!(tx.free_bytes(), Ok(0));
}

#[test]
fn rejects_packet_that_can_never_fit() {
    let (_pair, mut tx, _rx) = one_ring(1);
    assert_eq!(tx.maximum_packet_size(), 4088);
    let too_big = vec![0; 4096 - 24];
    assert_eq!(
        tx.write(&OutgoingPacket::in_band(0, false, &too_big)),
        Err(WriteError::TooLarge {
            needed: 4096,
            max: 4088
        })
    );
    let largest = vec![0; 4088 - 24];
    assert!(
        tx.write(&OutgoingPacket::in_band(0, false, &largest))
            .is_ok()
    );
}

#[test]
fn writer_signals_only_on_empty_to_non_empty() {
    let (_pair, mut tx, mut rx) = one_ring(1);
    assert!(
        tx.write(&OutgoingPacket::in_band(1, false, b"a"))
            .expect("fits")
            .signal
    );
    assert!(
        !tx.write(&OutgoingPacket::in_band(2, false, b"b"))
            .expect("fits")
            .signal
    );
    rx.read_next().expect("reads");
    // Read but not released: still non-empty for the writer.
    assert!(
        !tx.write(&OutgoingPacket::in_band(3, false, b"c"))
            .expect("fits")
            .signal
    );
    while rx.read_next().is_ok() {}
    rx.release_all();
    assert!(
        tx.write(&OutgoingPacket::in_band(4, false, b"d"))
            .expect("fits")
            .signal
    );
}

#[test]
fn masked_reader_gets_no_signal() {
    let (_pair, mut tx, mut rx) = one_ring(1);
    rx.set_interrupt_mask(true);
    assert_eq!(rx.ring().load(ControlField::InterruptMask), 1);
    assert!(
        !tx.write(&OutgoingPacket::in_band(1, false, b"a"))
            .expect("fits")
            .signal
    );
    rx.read_next().expect("reads");
    rx.release_all();
    assert!(
        !tx.write(&OutgoingPacket::in_band(2, false, b"b"))
            .expect("fits")
            .signal
    );
    rx.read_next().expect("reads");
    rx.release_all();
    rx.set_interrupt_mask(false);
    assert!(
        tx.write(&OutgoingPacket::in_band(3, false, b"c"))
            .expect("fits")
            .signal
    );
}

#[test]
fn unmask_and_recheck_reports_data_that_raced_in() {
    let (_pair, mut tx, mut rx) = one_ring(1);
    rx.set_interrupt_mask(true);
    assert!(!rx.unmask_and_recheck(), "empty ring");
    rx.set_interrupt_mask(true);
    tx.write(&OutgoingPacket::in_band(1, false, b"a"))
        .expect("fits");
    assert!(rx.unmask_and_recheck(), "data arrived while masked");
    assert_eq!(rx.ring().load(ControlField::InterruptMask), 0);
}

#[test]
fn pending_send_size_crossing_signals_once() {
    // OpenVMM's case: 4 x 4000-byte packets in a 16 KiB ring, pending = 2 x 4024.
    let (_pair, mut tx, mut rx) = one_ring(4);
    for i in 0..4 {
        tx.write(&OutgoingPacket::in_band(i, false, &[0; 4000]))
            .expect("fits");
    }
    assert!(matches!(
        tx.write(&OutgoingPacket::in_band(9, false, &[0; 4000])),
        Err(WriteError::Full { .. })
    ));
    tx.set_pending_send_size(4024 * 2);
    let mut signals = Vec::new();
    for _ in 0..4 {
        let p = rx.read_next().expect("reads");
        signals.push(rx.release(p.end_offset()));
    }
    assert_eq!(signals, [false, true, false, false]);
}

#[test]
fn pending_send_size_crossing_by_one_large_release_signals() {
    let (_pair, mut tx, mut rx) = one_ring(4);
    for i in 0..4 {
        tx.write(&OutgoingPacket::in_band(i, false, &[0; 4000]))
            .expect("fits");
    }
    tx.set_pending_send_size(4024);
    for _ in 0..3 {
        rx.read_next().expect("reads");
    }
    assert!(
        rx.release_all(),
        "one release crossing the threshold signals"
    );
    let p = rx.read_next().expect("reads");
    assert!(!rx.release(p.end_offset()), "already above the threshold");
}

#[test]
fn no_reader_signal_without_pending_send_size() {
    let (_pair, mut tx, mut rx) = one_ring(1);
    tx.write(&OutgoingPacket::in_band(1, false, &[0; 4000]))
        .expect("fits");
    rx.read_next().expect("reads");
    assert!(!rx.release_all());
}

#[test]
fn write_or_arm_sets_pending_send_size_when_full_and_clears_it() {
    let (_pair, mut tx, mut rx) = one_ring(1);
    tx.write(&OutgoingPacket::in_band(1, false, &[0; 3000]))
        .expect("fits");
    let big = OutgoingPacket::in_band(2, false, &[0; 2000]);
    assert_eq!(
        tx.write_or_arm(&big),
        Err(WriteError::Full { needed: 2024 })
    );
    assert_eq!(rx.ring().load(ControlField::PendingSendSize), 2024);
    let p = rx.read_next().expect("reads");
    assert!(
        rx.release(p.end_offset()),
        "reader signals the blocked writer"
    );
    assert!(tx.write_or_arm(&big).is_ok());
    assert_eq!(rx.ring().load(ControlField::PendingSendSize), 0);
}

#[test]
fn set_pending_send_size_rounds_up_to_eight() {
    let (_pair, mut tx, _rx) = one_ring(1);
    tx.set_pending_send_size(4095);
    assert_eq!(tx.ring().load(ControlField::PendingSendSize), 4096);
    tx.clear_pending_send_size();
    assert_eq!(tx.ring().load(ControlField::PendingSendSize), 0);
}

#[test]
fn in_band_round_trip() {
    let (_pair, mut tx, mut rx) = one_ring(1);
    tx.write(&OutgoingPacket::in_band(42, true, b"hello world"))
        .expect("fits");
    let p = rx.read_next().expect("reads");
    assert_eq!(p.packet_type, PacketType::IN_BAND);
    assert_eq!(p.kind, IncomingKind::InBand);
    assert!(p.completion_requested());
    assert_eq!(p.transaction_id, 42);
    assert_eq!(&p.payload[..11], b"hello world");
    assert_eq!(p.payload.len(), 16);
}

#[test]
fn completion_round_trip() {
    let (_pair, mut tx, mut rx) = one_ring(1);
    tx.write(&OutgoingPacket::completion(0xdead_beef, &[7; 16]))
        .expect("fits");
    let p = rx.read_next().expect("reads");
    assert_eq!(p.packet_type, PacketType::COMPLETION);
    assert_eq!(p.kind, IncomingKind::Completion);
    assert!(!p.completion_requested());
    assert_eq!(p.transaction_id, 0xdead_beef);
    assert_eq!(p.payload, vec![7; 16]);
}

#[test]
fn transfer_pages_round_trip_with_ranges() {
    let (_pair, mut tx, mut rx) = one_ring(1);
    let ranges = [
        TransferPageRange {
            byte_count: 1514,
            byte_offset: 0,
        },
        TransferPageRange {
            byte_count: 60,
            byte_offset: 8192,
        },
        TransferPageRange {
            byte_count: 9000,
            byte_offset: 0x10_0000,
        },
    ];
    tx.write(&OutgoingPacket::transfer_pages(
        5, true, 0xcafe, &ranges, b"nvsp",
    ))
    .expect("fits");
    let p = rx.read_next().expect("reads");
    assert_eq!(p.packet_type, PacketType::TRANSFER_PAGES);
    assert_eq!(p.offset8, 3 + 3);
    assert_eq!(
        p.kind,
        IncomingKind::TransferPages {
            set_id: 0xcafe,
            reserved: 0,
            ranges: ranges.to_vec()
        }
    );
    assert_eq!(&p.payload[..4], b"nvsp");
}

#[test]
fn gpa_direct_round_trip_with_multi_page_ranges() {
    let (_pair, mut tx, mut rx) = one_ring(1);
    let ranges = [
        GpaRange {
            byte_count: 4096,
            byte_offset: 0x800,
            pfns: vec![0x1000, 0x1001],
        },
        GpaRange {
            byte_count: 10,
            byte_offset: 0xfff,
            pfns: vec![0x2000, 0x2001],
        },
        GpaRange {
            byte_count: 512,
            byte_offset: 0,
            pfns: vec![0x3000],
        },
    ];
    for r in &ranges {
        assert_eq!(
            GpaRange::pfn_count(r.byte_offset, r.byte_count),
            r.pfns.len()
        );
    }
    tx.write(&OutgoingPacket::gpa_direct(11, true, &ranges, b"vstor"))
        .expect("fits");
    let p = rx.read_next().expect("reads");
    assert_eq!(p.packet_type, PacketType::GPA_DIRECT);
    assert_eq!(
        usize::from(p.offset8) * 8,
        24 + (8 + 16) + (8 + 16) + (8 + 8)
    );
    assert_eq!(
        p.kind,
        IncomingKind::GpaDirect {
            reserved: 0,
            ranges: ranges.to_vec()
        }
    );
    assert_eq!(&p.payload[..5], b"vstor");
}

#[test]
fn empty_ring_reads_empty() {
    let (_pair, _tx, mut rx) = one_ring(1);
    assert_eq!(rx.peek(), Err(ReadError::Empty));
    assert_eq!(rx.read_next(), Err(ReadError::Empty));
    assert!(!rx.has_data());
}

#[test]
fn peek_does_not_move_the_cursor() {
    let (_pair, mut tx, mut rx) = one_ring(1);
    tx.write(&OutgoingPacket::in_band(1, false, b"a"))
        .expect("fits");
    let a = rx.peek().expect("peeks");
    assert_eq!(rx.cursor(), 0);
    assert_eq!(rx.read_next(), Ok(a));
    assert_eq!(rx.cursor(), 32);
}

#[test]
fn consume_advances_only_past_the_packet_at_the_cursor() {
    let (_pair, mut tx, mut rx) = one_ring(1);
    tx.write(&OutgoingPacket::in_band(1, false, b"a"))
        .expect("fits");
    tx.write(&OutgoingPacket::in_band(2, false, b"b"))
        .expect("fits");
    let a = rx.peek().expect("peeks");
    assert!(rx.consume(&a));
    assert!(!rx.consume(&a), "already past it");
    assert_eq!(rx.peek().map(|p| p.transaction_id), Ok(2));
}

#[test]
fn rejects_misaligned_write_index() {
    let (_pair, _tx, rx) = one_ring(1);
    rx.ring().store(ControlField::WriteIndex, 12);
    assert_eq!(
        rx.peek(),
        Err(ReadError::Corrupt(CorruptReason::WriteIndexMisaligned))
    );
}

#[test]
fn rejects_write_index_out_of_range() {
    let (_pair, _tx, rx) = one_ring(1);
    rx.ring().store(ControlField::WriteIndex, 4096);
    assert_eq!(
        rx.peek(),
        Err(ReadError::Corrupt(CorruptReason::WriteIndexOutOfRange))
    );
}

#[test]
fn writer_rejects_misaligned_read_index() {
    let (_pair, mut tx, _rx) = one_ring(1);
    tx.ring().store(ControlField::ReadIndex, 3);
    assert_eq!(
        tx.write(&OutgoingPacket::in_band(1, false, b"a")),
        Err(WriteError::Corrupt(CorruptReason::ReadIndexMisaligned))
    );
}

#[test]
fn writer_rejects_read_index_out_of_range() {
    let (_pair, tx, _rx) = one_ring(1);
    tx.ring().store(ControlField::ReadIndex, 8192);
    assert_eq!(
        tx.free_bytes(),
        Err(WriteError::Corrupt(CorruptReason::ReadIndexOutOfRange))
    );
}

#[test]
fn writer_rejects_own_corrupt_write_index_found_at_attach() {
    let pair = RingPair::new(1, 1);
    pair.outbound().store(ControlField::WriteIndex, 4104);
    let mut tx = OutgoingRing::new(pair.outbound());
    assert_eq!(
        tx.write(&OutgoingPacket::in_band(1, false, b"a")),
        Err(WriteError::Corrupt(CorruptReason::WriteIndexOutOfRange))
    );
}

#[test]
fn reader_rejects_corrupt_read_index_found_at_attach() {
    let pair = RingPair::new(1, 1);
    pair.outbound().store(ControlField::ReadIndex, 5);
    let rx = IncomingRing::new(pair.outbound());
    assert_eq!(
        rx.peek(),
        Err(ReadError::Corrupt(CorruptReason::ReadIndexMisaligned))
    );
    pair.outbound().store(ControlField::ReadIndex, 1 << 20);
    let rx = IncomingRing::new(pair.outbound());
    assert_eq!(
        rx.peek(),
        Err(ReadError::Corrupt(CorruptReason::ReadIndexOutOfRange))
    );
}

#[test]
fn rejects_fewer_than_sixteen_available_bytes() {
    let (_pair, mut tx, mut rx) = one_ring(1);
    tx.write_raw(&descriptor(6, 2, 2, 0).to_le_bytes())
        .expect("fits");
    assert_eq!(
        rx.read_next(),
        Err(ReadError::Corrupt(CorruptReason::DescriptorTruncated))
    );
}

#[test]
fn rejects_data_offset_below_two() {
    assert_eq!(
        corrupt_read(&[descriptor(6, 1, 2, 0), 1, 0]),
        ReadError::Corrupt(CorruptReason::DataOffsetTooSmall)
    );
}

#[test]
fn rejects_length_below_data_offset() {
    assert_eq!(
        corrupt_read(&[descriptor(6, 3, 2, 0), 1, 0]),
        ReadError::Corrupt(CorruptReason::LengthBelowDataOffset)
    );
}

#[test]
fn rejects_length_beyond_available() {
    // Claims 4 words; 3 words + trailer are present, so len8 * 8 + 8 > available.
    assert_eq!(
        corrupt_read(&[descriptor(6, 2, 4, 0), 1, 0]),
        ReadError::Corrupt(CorruptReason::LengthBeyondAvailable)
    );
}

#[test]
fn rejects_unknown_flags() {
    assert_eq!(
        corrupt_read(&[descriptor(6, 2, 3, 2), 1, 0]),
        ReadError::Corrupt(CorruptReason::UnknownFlags)
    );
}

#[test]
fn rejects_unknown_type() {
    for ty in [0u16, 1, 5, 8, 10, 12, 0xffff] {
        assert_eq!(
            corrupt_read(&[descriptor(ty, 2, 3, 0), 1, 0]),
            ReadError::Corrupt(CorruptReason::UnknownType)
        );
    }
}

#[test]
fn rejects_transfer_page_and_gpa_packets_without_header_room() {
    for ty in [7u16, 9] {
        assert_eq!(
            corrupt_read(&[descriptor(ty, 2, 3, 1), 1, 0]),
            ReadError::Corrupt(CorruptReason::ExtensionTooShort)
        );
    }
}

#[test]
fn rejects_zero_range_count() {
    assert_eq!(
        corrupt_read(&[descriptor(7, 3, 3, 1), 1, 3]),
        ReadError::Corrupt(CorruptReason::ZeroRangeCount)
    );
    assert_eq!(
        corrupt_read(&[descriptor(9, 3, 3, 1), 1, 0xdead_beef]),
        ReadError::Corrupt(CorruptReason::ZeroRangeCount)
    );
}

#[test]
fn rejects_transfer_page_range_count_disagreeing_with_offset8() {
    // Header room for one range, header says two.
    assert_eq!(
        corrupt_read(&[descriptor(7, 4, 4, 1), 1, 3 | 2 << 32, 100]),
        ReadError::Corrupt(CorruptReason::RangeCountMismatch)
    );
}

/// A transfer-page header with room for more ranges than `range_cnt` names is accepted, and
/// the packet carries the `range_cnt` ranges: OpenVMM `vmbus_ring/src/lib.rs` `parse_packet`
/// checks only `data_offset8 >= 3` for type 7; Linux `drivers/hv/ring_buffer.c`
/// (`hv_pkt_iter_first`) does not parse types at all, and its one type-7 reader,
/// `drivers/net/hyperv/netvsc.c` `netvsc_receive`, rejects only
/// `NETVSC_XFER_HEADER_SIZE(count) > desc->offset8 << 3` (more ranges than the header holds).
#[test]
fn accepts_transfer_page_range_count_below_header_room() {
    let (_pair, mut tx, mut rx) = one_ring(1);
    // Header room for two ranges, header names one; then one payload word.
    write_words(
        &mut tx,
        &[
            descriptor(7, 5, 6, 1),
            9,
            4 | 1 << 32,
            100 | 8 << 32,
            0,
            0x55,
        ],
    );
    let p = rx
        .read_next()
        .expect("range_cnt below header room is valid");
    assert_eq!(
        p.kind,
        IncomingKind::TransferPages {
            set_id: 4,
            reserved: 0,
            ranges: vec![TransferPageRange {
                byte_count: 100,
                byte_offset: 8
            }],
        }
    );
    assert_eq!(p.payload, 0x55u64.to_le_bytes());
}

#[test]
fn rejects_gpa_ranges_exceeding_the_header() {
    // One range of 2 pages needs 3 words after the header word; only 2 are present.
    assert_eq!(
        corrupt_read(&[descriptor(9, 5, 5, 1), 1, 1 << 32, 4096 | 0x10 << 32, 0x100]),
        ReadError::Corrupt(CorruptReason::GpaRangesExceedHeader)
    );
    // A huge range count with room for one range.
    assert_eq!(
        corrupt_read(&[
            descriptor(9, 5, 5, 1),
            1,
            u64::from(u32::MAX) << 32,
            8,
            0x100
        ]),
        ReadError::Corrupt(CorruptReason::GpaRangesExceedHeader)
    );
}

#[test]
fn rejects_gpa_zero_byte_count() {
    assert_eq!(
        corrupt_read(&[descriptor(9, 5, 5, 1), 1, 1 << 32, 0, 0x100]),
        ReadError::Corrupt(CorruptReason::GpaZeroByteCount)
    );
}

#[test]
fn rejects_gpa_byte_offset_beyond_first_page() {
    assert_eq!(
        corrupt_read(&[descriptor(9, 5, 5, 1), 1, 1 << 32, 8 | 0x1000 << 32, 0x100]),
        ReadError::Corrupt(CorruptReason::GpaByteOffsetTooLarge)
    );
}

#[test]
fn rejects_garbage_trailer_only_when_checking() {
    let (_pair, mut tx, mut rx) = one_ring(1);
    tx.write(&OutgoingPacket::in_band(1, false, b"first"))
        .expect("fits");
    let o = tx
        .write(&OutgoingPacket::in_band(2, false, b"second"))
        .expect("fits");
    rx.ring()
        .write_data(o.offset + o.total_len - 8, &0xdead_u64.to_le_bytes());
    rx.set_check_trailer(true);
    assert_eq!(rx.read_next().map(|p| p.transaction_id), Ok(1));
    assert_eq!(
        rx.read_next(),
        Err(ReadError::Corrupt(CorruptReason::BadTrailer))
    );
    rx.set_check_trailer(false);
    let p = rx.read_next().expect("unchecked trailer is ignored");
    assert_eq!(p.trailer, 0xdead);
}

#[test]
fn accepts_missing_trailer_like_qemu_when_not_checking() {
    let (_pair, mut tx, mut rx) = one_ring(1);
    // QEMU seeks over the trailer without writing it: zeroes at a non-zero offset.
    tx.write(&OutgoingPacket::in_band(1, false, b"a"))
        .expect("fits");
    tx.write_raw(
        &[descriptor(6, 2, 3, 0), 2, 0, 0]
            .map(u64::to_le_bytes)
            .concat(),
    )
    .expect("fits");
    rx.read_next().expect("first");
    assert_eq!(rx.read_next().map(|p| p.transaction_id), Ok(2));
    rx.rewind();
    rx.set_check_trailer(true);
    rx.read_next().expect("first has a good trailer");
    assert_eq!(
        rx.read_next(),
        Err(ReadError::Corrupt(CorruptReason::BadTrailer))
    );
}

#[test]
fn every_corrupt_reason_has_a_distinct_name() {
    let all = [
        CorruptReason::WriteIndexMisaligned,
        CorruptReason::WriteIndexOutOfRange,
        CorruptReason::ReadIndexMisaligned,
        CorruptReason::ReadIndexOutOfRange,
        CorruptReason::DescriptorTruncated,
        CorruptReason::DataOffsetTooSmall,
        CorruptReason::LengthBelowDataOffset,
        CorruptReason::LengthBeyondAvailable,
        CorruptReason::UnknownFlags,
        CorruptReason::UnknownType,
        CorruptReason::ExtensionTooShort,
        CorruptReason::ZeroRangeCount,
        CorruptReason::RangeCountMismatch,
        CorruptReason::GpaRangesExceedHeader,
        CorruptReason::GpaZeroByteCount,
        CorruptReason::GpaByteOffsetTooLarge,
        CorruptReason::BadTrailer,
    ];
    let names: std::collections::HashSet<_> = all.iter().map(|r| r.name()).collect();
    assert_eq!(names.len(), all.len());
}

#[test]
fn garbage_never_panics_the_reader() {
    // Random words at random indices: every outcome must be Ok/Empty/Corrupt.
    let mut rng = Rng(0x1234_5678);
    for _ in 0..2000 {
        let (pair, _tx, mut rx) = one_ring(1);
        let words = 1 + rng.below(40) as usize;
        for i in 0..words {
            let mut w = rng.next();
            if rng.below(2) == 0 {
                // Plausible descriptor fields make deeper parsing paths reachable.
                let ty = [6u64, 7, 9, 11][rng.below(4) as usize];
                w = ty | (rng.below(8)) << 16 | (rng.below(48)) << 32 | (rng.below(3)) << 48;
            }
            pair.outbound().write_data(i as u32 * 8, &w.to_le_bytes());
        }
        pair.outbound()
            .store(ControlField::WriteIndex, (words as u32 * 8) % 4096);
        for _ in 0..4 {
            match rx.read_next() {
                Ok(p) => assert_eq!(p.payload.len(), usize::from(p.len8 - p.offset8) * 8),
                Err(ReadError::Empty | ReadError::Corrupt(_)) => break,
            }
        }
    }
}

#[test]
fn read_ahead_releases_only_the_completed_prefix() {
    let (_pair, mut tx, mut rx) = one_ring(1);
    let mut tracker = ReleaseTracker::new();
    let mut packets = Vec::new();
    for i in 0..4u64 {
        tx.write(&OutgoingPacket::in_band(i, true, &[i as u8; 40]))
            .expect("fits");
    }
    for _ in 0..4 {
        let p = rx.read_next().expect("reads ahead");
        tracker.consumed(&p);
        packets.push(p);
    }
    assert_eq!(rx.read_index(), 0, "reading ahead publishes nothing");
    assert_eq!(rx.ring().load(ControlField::ReadIndex), 0);
    assert_eq!(rx.unreleased_bytes(), 4 * 64);
    // Complete 2, then 1: nothing released (0 still outstanding).
    assert_eq!(tracker.complete(packets[2].offset), Ok(None));
    assert_eq!(
        tracker.complete_and_release(&mut rx, packets[1].offset),
        Ok(false)
    );
    assert_eq!(rx.ring().load(ControlField::ReadIndex), 0);
    // Complete 0: the prefix 0..=2 is released.
    assert_eq!(
        tracker.complete_and_release(&mut rx, packets[0].offset),
        Ok(false)
    );
    assert_eq!(
        rx.ring().load(ControlField::ReadIndex),
        packets[2].end_offset()
    );
    assert_eq!(tracker.len(), 1);
    assert_eq!(
        tracker.complete(packets[3].offset),
        Ok(Some(packets[3].end_offset()))
    );
    assert!(tracker.is_empty());
}

#[test]
fn release_tracker_rejects_double_and_unknown_completion() {
    let (_pair, mut tx, mut rx) = one_ring(1);
    let mut tracker = ReleaseTracker::new();
    tx.write(&OutgoingPacket::in_band(1, true, b"a"))
        .expect("fits");
    tx.write(&OutgoingPacket::in_band(2, true, b"b"))
        .expect("fits");
    let a = rx.read_next().expect("reads");
    let b = rx.read_next().expect("reads");
    tracker.consumed(&a);
    tracker.consumed(&b);
    assert_eq!(tracker.complete(b.offset), Ok(None));
    assert_eq!(
        tracker.complete(b.offset),
        Err(ReleaseError::AlreadyCompleted)
    );
    assert_eq!(tracker.complete(8), Err(ReleaseError::UnknownPacket));
    assert_eq!(tracker.complete(a.offset), Ok(Some(b.end_offset())));
    assert_eq!(tracker.complete(a.offset), Err(ReleaseError::UnknownPacket));
}

#[test]
fn release_refuses_offsets_outside_the_read_window() {
    let (_pair, mut tx, mut rx) = one_ring(1);
    tx.write(&OutgoingPacket::in_band(1, false, b"a"))
        .expect("fits");
    tx.write(&OutgoingPacket::in_band(2, false, b"b"))
        .expect("fits");
    let a = rx.read_next().expect("reads");
    assert_eq!(
        rx.try_release(64),
        Err(ReleaseError::OutsideReadWindow),
        "beyond the cursor"
    );
    assert_eq!(
        rx.try_release(4),
        Err(ReleaseError::OutsideReadWindow),
        "misaligned"
    );
    assert_eq!(
        rx.try_release(4096),
        Err(ReleaseError::OutsideReadWindow),
        "out of range"
    );
    assert!(!rx.release(64));
    assert_eq!(rx.read_index(), 0);
    assert_eq!(rx.try_release(a.end_offset()), Ok(false));
    assert_eq!(rx.read_index(), 32);
    assert_eq!(rx.try_release(32), Ok(false), "no-op release");
}

#[test]
fn rewind_rereads_unreleased_packets() {
    let (_pair, mut tx, mut rx) = one_ring(1);
    tx.write(&OutgoingPacket::in_band(1, false, b"a"))
        .expect("fits");
    tx.write(&OutgoingPacket::in_band(2, false, b"b"))
        .expect("fits");
    let a = rx.read_next().expect("reads");
    rx.release(a.end_offset());
    rx.read_next().expect("reads");
    rx.rewind();
    assert_eq!(rx.read_next().map(|p| p.transaction_id), Ok(2));
}

#[test]
fn pipe_header_add_and_strip_round_trip() {
    for len in [0usize, 1, 7, 8, 100, MAXIMUM_PIPE_PACKET_SIZE] {
        let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
        let framed = add_pipe_header(&payload).expect("within the maximum");
        assert_eq!(
            &framed[..8],
            &[&1u32.to_le_bytes()[..], &(len as u32).to_le_bytes()[..]].concat()[..]
        );
        // Through a ring: padded on the wire, exact after stripping.
        let (_pair, mut tx, mut rx) = one_ring(5);
        tx.write(&OutgoingPacket::in_band(0, false, &framed))
            .expect("fits");
        let p = rx.read_next().expect("reads");
        assert_eq!(strip_pipe_header(&p.payload), Ok(&payload[..]));
    }
}

#[test]
fn pipe_header_rejects_oversized_payload() {
    assert_eq!(
        add_pipe_header(&[0; MAXIMUM_PIPE_PACKET_SIZE + 1]),
        Err(PipeError::TooLarge { size: 16385 })
    );
    let mut framed = pipe_header(0).expect("zero is fine").to_vec();
    framed[4..8].copy_from_slice(&16385u32.to_le_bytes());
    framed.resize(8 + 16392, 0);
    assert_eq!(
        strip_pipe_header(&framed),
        Err(PipeError::TooLarge { size: 16385 })
    );
}

#[test]
fn pipe_strip_rejects_non_data_types() {
    for ty in [0u32, 2, 3, 4, 5, 99] {
        let mut framed = vec![0u8; 16];
        framed[..4].copy_from_slice(&ty.to_le_bytes());
        assert_eq!(
            strip_pipe_header(&framed),
            Err(PipeError::NotData(PipeMessageType(ty)))
        );
    }
}

#[test]
fn pipe_strip_rejects_size_beyond_inline_length() {
    let mut framed = add_pipe_header(&[1; 8]).expect("fits");
    framed[4..8].copy_from_slice(&9u32.to_le_bytes());
    assert_eq!(
        strip_pipe_header(&framed),
        Err(PipeError::SizeBeyondPacket {
            size: 9,
            available: 8
        })
    );
    assert_eq!(strip_pipe_header(&[1, 0, 0, 0]), Err(PipeError::Truncated));
}

/// xorshift64*: a small deterministic PRNG for the property tests.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A random packet kind (as the reader should see it) for the property test.
fn random_kind(rng: &mut Rng) -> IncomingKind {
    match rng.below(4) {
        0 => IncomingKind::InBand,
        1 => IncomingKind::Completion,
        2 => IncomingKind::TransferPages {
            set_id: rng.next() as u16,
            reserved: 0,
            ranges: (0..1 + rng.below(4))
                .map(|_| TransferPageRange {
                    byte_count: rng.next() as u32,
                    byte_offset: rng.next() as u32,
                })
                .collect(),
        },
        _ => IncomingKind::GpaDirect {
            reserved: 0,
            ranges: (0..1 + rng.below(3))
                .map(|_| {
                    let byte_offset = rng.below(0x1000) as u32;
                    let byte_count = 1 + rng.below(3 * 4096) as u32;
                    let n = GpaRange::pfn_count(byte_offset, byte_count);
                    GpaRange {
                        byte_count,
                        byte_offset,
                        pfns: (0..n).map(|_| rng.next()).collect(),
                    }
                })
                .collect(),
        },
    }
}

#[test]
fn random_sizes_round_trip_byte_exact() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let (_pair, mut tx, mut rx) = one_ring(3);
    let mut tracker = ReleaseTracker::new();
    let mut expected: VecDeque<(u64, u16, IncomingKind, Vec<u8>)> = VecDeque::new();
    let mut outstanding: Vec<u32> = Vec::new();
    let mut next_id = 0u64;
    let mut delivered = 0u64;
    let mut writer_blocked = false;
    let mut wake_ups = 0u32;
    for _ in 0..20_000 {
        match rng.below(3) {
            0 | 1 => {
                let len = match rng.below(4) {
                    0 => rng.below(9) as usize,
                    1 => rng.below(200) as usize,
                    _ => rng.below(3000) as usize,
                };
                let payload: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                let kind = random_kind(&mut rng);
                let flags = if rng.below(2) == 0 {
                    FLAG_COMPLETION_REQUESTED
                } else {
                    0
                };
                let out_kind = match &kind {
                    IncomingKind::InBand => OutgoingKind::InBand,
                    IncomingKind::Completion => OutgoingKind::Completion,
                    IncomingKind::TransferPages { set_id, ranges, .. } => {
                        OutgoingKind::TransferPages {
                            set_id: *set_id,
                            ranges,
                        }
                    }
                    IncomingKind::GpaDirect { ranges, .. } => OutgoingKind::GpaDirect { ranges },
                };
                let packet = OutgoingPacket {
                    kind: out_kind,
                    flags,
                    transaction_id: next_id,
                    payload: &payload,
                };
                match tx.write_or_arm(&packet) {
                    Ok(o) => {
                        assert_eq!(o.total_len as usize, packet.total_len());
                        expected.push_back((next_id, flags, kind, payload));
                        next_id += 1;
                        writer_blocked = false;
                    }
                    Err(WriteError::Full { needed }) => {
                        assert_eq!(needed, packet.total_len());
                        assert!(tx.free_bytes().expect("valid") < needed);
                        writer_blocked = true;
                    }
                    Err(e) => panic!("unexpected write error {e}"),
                }
            }
            _ => {
                if rng.below(2) == 0 {
                    match rx.read_next() {
                        Ok(p) => {
                            let (id, flags, kind, payload) =
                                expected.pop_front().expect("a packet was written");
                            assert_eq!(p.transaction_id, id);
                            assert_eq!(p.flags, flags);
                            assert_eq!(p.kind, kind);
                            assert_eq!(&p.payload[..payload.len()], &payload[..]);
                            assert!(
                                p.payload[payload.len()..].iter().all(|&b| b == 0),
                                "zero padding"
                            );
                            assert_eq!(p.payload.len(), payload.len().next_multiple_of(8));
                            assert_eq!(p.trailer, u64::from(p.offset) << 32);
                            tracker.consumed(&p);
                            outstanding.push(p.offset);
                            delivered += 1;
                        }
                        Err(ReadError::Empty) => assert!(expected.is_empty()),
                        Err(e) => panic!("unexpected read error {e}"),
                    }
                } else if !outstanding.is_empty() {
                    // Complete a random outstanding packet (out of order).
                    let i = rng.below(outstanding.len() as u64) as usize;
                    let offset = outstanding.swap_remove(i);
                    if tracker
                        .complete_and_release(&mut rx, offset)
                        .expect("tracked")
                    {
                        assert!(writer_blocked, "reader signals only a blocked writer");
                        wake_ups += 1;
                    }
                }
            }
        }
    }
    assert!(delivered > 3000, "exercised enough packets ({delivered})");
    assert!(wake_ups > 0, "pending-send-size wake-ups happened");
}

#[test]
fn threaded_writer_and_reader_transfer_every_packet_in_order() {
    let pair = RingPair::new(2, 1);
    let mut tx = OutgoingRing::new(pair.outbound());
    let mut rx = IncomingRing::new(pair.outbound());
    const N: u64 = 20_000;
    let writer = std::thread::spawn(move || {
        let mut i = 0u64;
        while i < N {
            let len = (i % 97) as usize;
            let payload = vec![i as u8; len];
            match tx.write(&OutgoingPacket::in_band(i, false, &payload)) {
                Ok(_) => i += 1,
                Err(WriteError::Full { .. }) => std::thread::yield_now(),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    });
    let mut i = 0u64;
    while i < N {
        match rx.read_next() {
            Ok(p) => {
                assert_eq!(p.transaction_id, i);
                let len = (i % 97) as usize;
                assert!(p.payload[..len].iter().all(|&b| b == i as u8));
                rx.release(p.end_offset());
                i += 1;
            }
            Err(ReadError::Empty) => std::thread::yield_now(),
            Err(e) => panic!("corrupt under concurrency: {e}"),
        }
    }
    assert_eq!(writer.join().expect("writer thread"), Ok(()));
}

#[test]
fn a_pair_made_from_a_dropped_pairs_memory_reads_as_fresh_zeros() {
    // Memory of a dropped pair is kept for the next pair of its size (per thread), zeroed.
    let old = RingPair::new(3, 1);
    let len = old.len();
    old.write_bytes(0, &[0xA5; 64]);
    old.write_bytes(len - 64, &[0x5A; 64]);
    let old_ptr = old.as_ptr();
    drop(old);
    let new = RingPair::new(3, 1);
    assert_eq!(new.as_ptr(), old_ptr, "the dropped pair's memory is reused");
    let mut bytes = vec![0xFFu8; len];
    new.read_bytes(0, &mut bytes);
    assert!(
        bytes.iter().all(|&b| b == 0),
        "reused ring memory is zeroed"
    );
    // A clone keeps the memory alive: a second pair does not get it while one exists.
    let other = RingPair::new(3, 1);
    assert_ne!(other.as_ptr(), new.as_ptr());
}

/// Rule RING_WINDOW_OWNERSHIP (`shared_mem.rs`): the reader bulk-copies only bytes of its
/// window `[read_index, write_index)`. `PacketHeader` is `Copy` with public fields, so safe
/// code can hand `copy_payload` / `payload_view` a released header (bytes the writer owns
/// again) or a forged one (`len8 = 0xffff`): those are read with atomic loads, not copied
/// in bulk, and still give the bytes the ring holds.
#[test]
fn ring_window_ownership_a_released_or_forged_header_is_read_atomically() {
    let (_pair, mut tx, mut rx) = one_ring(1);
    let payload: Vec<u8> = (0..200u8).collect();
    tx.write(&OutgoingPacket::in_band(7, false, &payload))
        .expect("fits");
    let h = rx.read_header().expect("reads");
    let start = h.offset + u32::from(h.offset8) * 8;
    assert!(
        rx.owns(start, h.payload_len()),
        "a header just read is owned"
    );
    let forged = PacketHeader {
        len8: u16::MAX,
        ..h
    };
    assert!(
        !rx.owns(start, forged.payload_len().min(4096)),
        "a forged length runs past the published bytes"
    );
    let mut out = vec![0u8; 200];
    assert_eq!(rx.copy_payload(&forged, &mut out), 200);
    assert_eq!(out, payload);
    assert_eq!(rx.try_release(h.end_offset()), Ok(false));
    assert!(
        !rx.owns(start, h.payload_len()),
        "released bytes are the writer's"
    );
    let mut again = vec![0u8; 200];
    assert_eq!(rx.copy_payload(&h, &mut again), 200);
    assert_eq!(again, payload, "atomic reads give the same bytes");
    let mut viewed = vec![0u8; 200];
    assert_eq!(rx.payload_view(&h).copy_to(&mut viewed), 200);
    assert_eq!(viewed, payload);
}
