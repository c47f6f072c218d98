//! The built-in host engine: the host-side state of each offer, the guest-to-host signal
//! and its checks, and the host task that drains the guest-outbound ring and answers.
//!
//! C header: none (the host side of VMBus); reference: `docs/simulator.md` ("Rings and
//! packets": signalling, packets, pipe header; "Layers").
//!
//! Layer: below the channel state machine. The channel calls [`signal_host`] after a ring
//! write or release; KMCL's thread runs [`run_host`] for `Task::Host`. This module uses the
//! ring, `mem`, `sched` and the simulation root (`State`, `SimInner`); it never calls the
//! channel, the server or the table. The public [`HostEndpoint`](crate::HostEndpoint) API
//! (`endpoint.rs`) sits above the channel and drives this state.
#![forbid(unsafe_code)]

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;

use kmcl_sys::NTSTATUS;

use crate::fast_hash::{HashMap, HashSet};
use crate::mem::SharedBuf;
use crate::ring::{
    self, ControlField, GpaRange, IncomingKind, IncomingRing, OutgoingPacket, OutgoingRing,
    PacketType, ReadError, RingPair, WriteError,
};
use crate::sched::Task;
use crate::{Rule, SimInner, State};

/// A packet the driver sent, as the host received it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct HostPacket {
    /// VMBus packet type: 6 (in-band) or 9 (GPA direct).
    pub packet_type: u16,
    /// Descriptor flags (1 = completion requested).
    pub flags: u16,
    /// Transaction id (answer with [`HostEndpoint::complete`](crate::HostEndpoint::complete)).
    pub trans_id: u64,
    /// The payload as the driver passed it (pipe header stripped; exact length).
    pub payload: Vec<u8>,
    /// The bytes of the external buffer (MDL or PFNs), copied when the driver sent it.
    pub external: Vec<u8>,
    /// The GPA ranges as written on the wire (empty for in-band).
    pub ranges: Vec<GpaRange>,
}

impl HostPacket {
    /// Whether the driver asked for a completion (`VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION`).
    #[must_use]
    pub const fn completion_requested(&self) -> bool {
        self.flags & ring::FLAG_COMPLETION_REQUESTED != 0
    }
}

/// What the host learns about the external data of one driver send.
#[derive(Clone, Debug, Default)]
pub(crate) struct ExtInfo {
    pub(crate) data: Vec<u8>,
    pub(crate) exact_len: Option<usize>,
    /// Driver address of the mapped external buffer (for host writes while in flight).
    pub(crate) addr: Option<usize>,
    /// Not `VMBUS_CHANNEL_FORMAT_FLAG_DATA_OUT_ONLY`.
    pub(crate) writable: bool,
}

/// Writes the response to a driver request into the (cleared) buffer and returns `true`,
/// or returns `false` to leave the packet for `recv`.
pub(crate) type Responder = Box<dyn FnMut(&HostPacket, &mut Vec<u8>) -> bool + Send>;
type Hook = Arc<dyn Fn() + Send + Sync>;

/// The built-in host's ring ends.
#[derive(Debug)]
pub(crate) struct HostRings {
    pub(crate) tx: OutgoingRing,
    pub(crate) rx: IncomingRing,
}

/// Host-side state of one offer.
#[derive(Default)]
pub(crate) struct HostSide {
    pub(crate) open_status: Option<NTSTATUS>,
    pub(crate) error: Option<String>,
    pub(crate) pair: Option<RingPair>,
    pub(crate) rings: Option<HostRings>,
    pub(crate) pipe: bool,
    pub(crate) inbox: VecDeque<HostPacket>,
    pub(crate) completions: VecDeque<(u64, Vec<u8>)>,
    pub(crate) responder: Option<Responder>,
    pub(crate) external: Option<Hook>,
    pub(crate) signalled_since_drain: bool,
    pub(crate) next_trans: u64,
    /// Host requests that asked for a completion.
    pub(crate) outstanding: HashSet<u64>,
    /// Driver requests that asked for a completion.
    pub(crate) driver_requests: HashSet<u64>,
    /// Completions that did not fit yet.
    pub(crate) pending: VecDeque<(u64, Vec<u8>)>,
    /// Exact payload length of host writes, by ring offset (for `padded_lengths = false`).
    pub(crate) exact: ExactLens,
    /// What the guest wrote at a ring offset, for writes with external data.
    pub(crate) guest_writes: HashMap<u32, ExtInfo>,
    /// The exact payload length of the guest's other writes (in-band: nothing else to
    /// know), by ring offset: no hashing, no `ExtInfo` per packet.
    pub(crate) guest_exact: ExactLens,
    pub(crate) xfer_sets: HashMap<u16, Arc<SharedBuf>>,
    /// Driver request -> (address, length) of its writable external buffer.
    pub(crate) ext_targets: HashMap<u64, (usize, usize)>,
    pub(crate) gpa_bufs: HashMap<u64, Arc<SharedBuf>>,
    pub(crate) next_set: u16,
    pub(crate) paused: bool,
    /// The offer belongs to a server channel: the built-in host steps aside (the server
    /// channel is the host side).
    pub(crate) peer_is_server: bool,
    /// On a server's offer: the built-in endpoint plays the guest (ring directions swapped).
    pub(crate) guest_mode: bool,
    /// The host task's reused lists (packets for the responder, their answers), kept
    /// between runs so that answering allocates nothing.
    pub(crate) scratch: AnswerScratch,
    /// A reused buffer for a pipe-mode completion's framing (`flush_pending`).
    pub(crate) frame: Vec<u8>,
}

/// The host task's reused lists: the packets handed to the responder and its answers.
#[derive(Default)]
pub(crate) struct AnswerScratch {
    to_answer: Vec<HostPacket>,
    answers: Vec<(Vec<u8>, bool)>,
}

/// Spare byte buffers of the host's packets, completions and answers, per thread: a
/// packet's payload is taken from here when the host reads it and comes back when the
/// lending API (`HostEndpoint::recv_with`, `take_completion_with`) or the responder path is
/// done with it, so the built-in host's steady state allocates nothing. Bounded in count
/// and size; which buffer is reused never shows (every byte is written before it is read).
mod spare {
    use std::cell::RefCell;

    const MAX_BUFFERS: usize = 64;
    const MAX_CAPACITY: usize = 64 * 1024;

    thread_local! {
        static SPARE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
    }

    /// An empty buffer, with capacity if a spare one is there.
    pub(crate) fn take() -> Vec<u8> {
        SPARE
            .try_with(|s| s.borrow_mut().pop())
            .ok()
            .flatten()
            .unwrap_or_default()
    }

    /// Gives `buf` back (dropped if the pool is full or it is empty or large).
    #[inline]
    pub(crate) fn give(buf: Vec<u8>) {
        if buf.capacity() == 0 || buf.capacity() > MAX_CAPACITY {
            return;
        }
        keep(buf);
    }

    /// [`give`] of a buffer worth keeping.
    #[inline(never)]
    fn keep(mut buf: Vec<u8>) {
        buf.clear();
        let _ = SPARE.try_with(|s| {
            let mut s = s.borrow_mut();
            if s.len() < MAX_BUFFERS {
                s.push(buf);
            }
        });
    }
}

pub(crate) use spare::{give as give_buf, take as take_buf};

/// Gives the buffers of `p` back to the spare pool.
pub(crate) fn recycle_packet(p: HostPacket) {
    give_buf(p.payload);
    give_buf(p.external);
}

impl fmt::Debug for HostSide {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostSide")
            .field("open_status", &self.open_status)
            .field("error", &self.error)
            .field("inbox", &self.inbox.len())
            .field("external", &self.external.is_some())
            .finish_non_exhaustive()
    }
}

/// Exact payload lengths by ring offset: a vector indexed by `offset / 8` (offsets are
/// 8-aligned and below the data size), grown on demand; `u32::MAX` = none.
#[derive(Debug, Default)]
pub(crate) struct ExactLens(Vec<u32>);

impl ExactLens {
    pub(crate) fn insert(&mut self, offset: u32, len: usize) {
        let i = (offset / 8) as usize;
        if i >= self.0.len() {
            self.0.resize(i + 1, u32::MAX);
        }
        self.0[i] = u32::try_from(len).unwrap_or(u32::MAX - 1);
    }

    pub(crate) fn get(&self, offset: u32) -> Option<usize> {
        if !offset.is_multiple_of(8) {
            return None;
        }
        match self.0.get((offset / 8) as usize) {
            Some(&n) if n != u32::MAX => Some(n as usize),
            _ => None,
        }
    }

    pub(crate) fn clear(&mut self) {
        self.0.fill(u32::MAX);
    }

    /// [`get`](Self::get), and the entry is removed.
    pub(crate) fn take(&mut self, offset: u32) -> Option<usize> {
        let n = self.get(offset)?;
        self.remove(offset);
        Some(n)
    }

    pub(crate) fn remove(&mut self, offset: u32) {
        if let Some(n) = self.0.get_mut((offset / 8) as usize) {
            *n = u32::MAX;
        }
    }
}

impl HostSide {
    pub(crate) fn on_open(&mut self, pair: &RingPair, pipe: bool, stale_pad: bool) {
        self.pair = Some(pair.clone());
        self.pipe = pipe;
        self.error = None;
        self.signalled_since_drain = false;
        self.rings = if self.guest_mode {
            // The built-in guest of a server offer: writes the guest-outbound ring.
            Some(HostRings {
                tx: OutgoingRing::new(pair.outbound()),
                rx: IncomingRing::new(pair.inbound()),
            })
        } else if self.external.is_some() || self.peer_is_server {
            None
        } else {
            let mut tx = OutgoingRing::new(pair.inbound());
            tx.set_stale_padding(stale_pad);
            Some(HostRings {
                tx,
                rx: IncomingRing::new(pair.outbound()),
            })
        };
    }

    pub(crate) fn on_close(&mut self) {
        // What KMCL wrote before closing is still read by the host.
        let mut answers = Vec::new();
        let mut signal = false;
        if let Some(e) = drain_ring(self, &mut answers, &mut signal) {
            self.error = Some(e);
        }
        self.inbox.extend(answers);
        self.pair = None;
        self.rings = None;
        self.pending.clear();
        self.exact.clear();
        self.guest_writes.clear();
        self.guest_exact.clear();
        self.driver_requests.clear();
        self.outstanding.clear();
        self.ext_targets.clear();
    }

    pub(crate) fn exact_len(&self, _trans: u64, offset: u32) -> Option<usize> {
        self.exact.get(offset)
    }

    pub(crate) fn transfer_set(&self, id: u16) -> Option<Arc<SharedBuf>> {
        self.xfer_sets.get(&id).cloned()
    }

    pub(crate) fn note_guest_write(&mut self, _trans: u64, offset: u32, info: &ExtInfo) {
        if self.rings.is_none() {
            return;
        }
        if info.data.is_empty() && info.addr.is_none() && !info.writable {
            // The usual write (no external data): only its exact length.
            if !self.guest_writes.is_empty() {
                self.guest_writes.remove(&offset);
            }
            match info.exact_len {
                Some(n) => self.guest_exact.insert(offset, n),
                None => self.guest_exact.remove(offset),
            }
        } else {
            self.guest_exact.remove(offset);
            self.guest_writes.insert(offset, info.clone());
        }
    }

    /// What the guest wrote at `offset` (noted by [`note_guest_write`](Self::note_guest_write)),
    /// forgotten; the default if nothing was noted.
    fn take_guest_write(
        writes: &mut HashMap<u32, ExtInfo>,
        exact: &mut ExactLens,
        offset: u32,
    ) -> ExtInfo {
        if !writes.is_empty()
            && let Some(info) = writes.remove(&offset)
        {
            return info;
        }
        ExtInfo {
            exact_len: exact.take(offset),
            ..ExtInfo::default()
        }
    }
}

/// Why KMCL signals the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SignalWhy {
    /// A write into the guest-outbound ring.
    Write,
    /// A read from the guest-inbound ring released space.
    Release,
}

/// KMCL signals the host of channel `ch`; the built-in host checks the signal.
pub(crate) fn signal_host(sim: &SimInner, st: &mut State, ch: u64, why: SignalWhy) {
    if st.channels.get(&ch).is_some_and(|c| c.guest_gone()) {
        // A server still closing after its guest left writes the ring of that guest: the
        // signal is for nobody (a guest attached now is a new one, on new rings).
        return;
    }
    if let Some(peer) = signal_peer(st, ch) {
        // A server channel and a client channel on one ring pair: the other end's DPC.
        let is_server = st.channels.get(&ch).is_some_and(|c| c.server.is_some());
        if is_server {
            st.stats.host_to_guest_signals += 1;
        } else {
            st.stats.guest_to_host_signals += 1;
        }
        if let Some(peer) = peer {
            sim.push(st, Task::Dpc { ch: peer });
        }
        return;
    }
    st.stats.guest_to_host_signals += 1;
    let Some(offer) = st.channels.get(&ch).map(|c| c.offer) else {
        return;
    };
    let Some(o) = st.offers.get_mut(&offer) else {
        return;
    };
    if o.host.external.is_none() {
        let legit = match why {
            SignalWhy::Write => !std::mem::replace(&mut o.host.signalled_since_drain, true),
            SignalWhy::Release => o.host.pair.as_ref().is_some_and(|p| {
                // The ring the built-in endpoint writes: guest-inbound, or guest-outbound
                // when it plays the guest of a server offer.
                let ring = if o.host.guest_mode {
                    p.outbound()
                } else {
                    p.inbound()
                };
                ring.load(ControlField::PendingSendSize) != 0
            }),
        };
        if !legit {
            st.stats.spurious_guest_to_host += 1;
            let site = format!(
                "guest->host signal ({why:?}) on channel {ch} that the ring rules did not call for"
            );
            st.violation(Rule::SpuriousSignal, site);
        }
    }
    sim.push(st, Task::Host { ch });
}

/// Task::Host: the built-in host reads its ring and answers; an external host's hook is called.
pub(crate) fn run_host(sim: &Arc<SimInner>, ch: u64) {
    let (offer, hook) = {
        let st = sim.lock();
        let Some(offer) = st.channels.get(&ch).map(|c| c.offer) else {
            return;
        };
        (
            offer,
            st.offers.get(&offer).and_then(|o| o.host.external.clone()),
        )
    };
    if let Some(hook) = hook {
        hook();
        return;
    }
    let (mut scratch, responder) = {
        let mut st = sim.lock();
        let st = &mut *st;
        let mut signal_guest = false;
        let Some(o) = st.offers.get_mut(&offer) else {
            return;
        };
        let h = &mut o.host;
        if h.paused {
            return;
        }
        let mut scratch = std::mem::take(&mut h.scratch);
        let error = drain_ring(h, &mut scratch.to_answer, &mut signal_guest);
        if let Some(e) = error {
            h.error = Some(e);
        }
        flush_pending(h, &mut signal_guest);
        let responder = if scratch.to_answer.is_empty() {
            h.scratch = scratch;
            scratch = AnswerScratch::default();
            None
        } else {
            h.responder.take()
        };
        if signal_guest {
            st.stats.host_to_guest_signals += 1;
            sim.push(st, Task::Dpc { ch });
        }
        sim.wake();
        (scratch, responder)
    };
    let Some(mut responder) = responder else {
        return;
    };
    let AnswerScratch { to_answer, answers } = &mut scratch;
    answers.clear();
    for p in to_answer.iter() {
        let mut out = take_buf();
        let answered = responder(p, &mut out);
        answers.push((out, answered));
    }
    let mut st = sim.lock();
    let st = &mut *st;
    let Some(o) = st.offers.get_mut(&offer) else {
        return;
    };
    let h = &mut o.host;
    if h.responder.is_none() {
        h.responder = Some(responder);
    }
    for (p, (resp, answered)) in to_answer.drain(..).zip(answers.drain(..)) {
        if answered {
            h.driver_requests.remove(&p.trans_id);
            h.pending.push_back((p.trans_id, resp));
            recycle_packet(p);
        } else {
            give_buf(resp);
            h.inbox.push_back(p);
        }
    }
    h.scratch = scratch;
    let mut signal = false;
    flush_pending(h, &mut signal);
    if signal {
        st.stats.host_to_guest_signals += 1;
        sim.push(st, Task::Dpc { ch });
    }
    sim.wake();
}

/// Reads every packet the guest wrote: completions for host requests, data packets for
/// the responder (`to_answer`) or the inbox. Returns an error description if KMCL wrote
/// something malformed.
fn drain_ring(
    h: &mut HostSide,
    to_answer: &mut Vec<HostPacket>,
    signal_guest: &mut bool,
) -> Option<String> {
    let pipe = h.pipe;
    let mut error = None;
    if let Some(r) = h.rings.as_mut() {
        loop {
            // The header is validated exactly as `read_next` does; only a GPA-direct packet
            // (its ranges) is parsed into an owned packet. The payload goes into a spare
            // buffer before the release.
            let hdr = match r.rx.peek_header() {
                Ok(h) => h,
                Err(ReadError::Empty) => break,
                Err(ReadError::Corrupt(why)) => {
                    error = Some(format!("host read a corrupt packet from KMCL: {why}"));
                    break;
                }
            };
            let mut ranges = Vec::new();
            let mut payload;
            if hdr.packet_type == PacketType::GPA_DIRECT {
                let p = match r.rx.read_next() {
                    Ok(p) => p,
                    Err(ReadError::Empty) => break,
                    Err(ReadError::Corrupt(why)) => {
                        error = Some(format!("host read a corrupt packet from KMCL: {why}"));
                        break;
                    }
                };
                if let IncomingKind::GpaDirect { ranges: r, .. } = p.kind {
                    ranges = r;
                }
                payload = p.payload;
            } else {
                r.rx.consume_header(&hdr);
                payload = take_buf();
                payload.resize(hdr.payload_len(), 0);
                r.rx.copy_payload(&hdr, &mut payload);
            }
            *signal_guest |= r.rx.release(hdr.end_offset());
            let info =
                HostSide::take_guest_write(&mut h.guest_writes, &mut h.guest_exact, hdr.offset);
            if hdr.packet_type == PacketType::COMPLETION {
                if h.outstanding.remove(&hdr.transaction_id) {
                    if let Some(n) = info.exact_len {
                        payload.truncate(n);
                    }
                    h.completions.push_back((hdr.transaction_id, payload));
                } else {
                    give_buf(payload);
                    error = Some(format!(
                        "driver completed unknown host transaction {:#x}",
                        hdr.transaction_id
                    ));
                }
                continue;
            }
            if pipe {
                // The pipe header stripped in place (the payload, or nothing if malformed).
                match ring::strip_pipe_header(&payload).map(<[u8]>::len) {
                    Ok(n) => {
                        payload.copy_within(ring::PIPE_HEADER_SIZE..ring::PIPE_HEADER_SIZE + n, 0);
                        payload.truncate(n);
                    }
                    Err(_) => payload.clear(),
                }
            }
            if let Some(n) = info.exact_len {
                payload.truncate(n);
            }
            let hp = HostPacket {
                packet_type: hdr.packet_type.0,
                flags: hdr.flags,
                trans_id: hdr.transaction_id,
                payload,
                external: info.data,
                ranges,
            };
            if hp.completion_requested() {
                h.driver_requests.insert(hp.trans_id);
                if let (Some(addr), true) = (info.addr, info.writable) {
                    h.ext_targets.insert(hp.trans_id, (addr, hp.external.len()));
                }
            }
            if h.responder.is_some() && hp.completion_requested() {
                to_answer.push(hp);
            } else {
                h.inbox.push_back(hp);
            }
        }
        // Drained: the next write into an empty ring is signalled again.
        h.signalled_since_drain = false;
    }
    error
}

pub(crate) fn flush_pending(h: &mut HostSide, signal: &mut bool) {
    let Some(r) = h.rings.as_mut() else { return };
    while let Some((trans, resp)) = h.pending.pop_front() {
        let data: &[u8] = if h.pipe {
            // The framing goes into a reused buffer (nothing if too large for a pipe).
            h.frame.clear();
            if let Ok(header) = ring::pipe_header(resp.len()) {
                h.frame.extend_from_slice(&header);
                h.frame.extend_from_slice(&resp);
            }
            &h.frame
        } else {
            &resp
        };
        match r.tx.write_or_arm(&OutgoingPacket::completion(trans, data)) {
            Ok(o) => {
                *signal |= o.signal;
                h.exact.insert(o.offset, resp.len());
                give_buf(resp);
            }
            Err(WriteError::Full { .. }) => {
                h.pending.push_front((trans, resp));
                return;
            }
            Err(_) => give_buf(resp),
        }
    }
}

/// Where the other end of a ring write by channel `ch` on a server-backed offer lives:
/// `Some(peer channel)` to run its DPC, `None` to let the built-in endpoint handle it.
pub(crate) fn signal_peer(st: &State, ch: u64) -> Option<Option<u64>> {
    let offer = st.channels.get(&ch)?.offer;
    let o = st.offers.get(&offer)?;
    let server = o.server?;
    if o.host.guest_mode {
        // The built-in guest: the normal host path (mirrored).
        return None;
    }
    Some(if ch == server {
        o.channel
    } else {
        Some(server)
    })
}
