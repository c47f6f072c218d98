//! The other endpoint of a channel: the built-in host, or an external one on the same ring bytes.
//!
//! C header: none (the host side of VMBus); reference: `docs/simulator.md` ("Rings and
//! packets": signalling, packets, pipe header).
//!
//! The built-in host reads the guest-outbound ring when KMCL signals it and writes the
//! guest-inbound ring; it answers driver requests through [`HostEndpoint::complete`] or a
//! responder ([`HostEndpoint::set_responder`]). It checks every guest-to-host signal
//! against the ring rules: a write signal is legitimate only on the ring's
//! empty-to-non-empty transition (the host drained it since the last signal), a release
//! signal only while the host waits for space (`pending_send_sz != 0`); anything else is
//! `SPURIOUS_SIGNAL`.
//!
//! With [`HostEndpoint::attach_external`], the built-in host steps aside: the ring memory
//! ([`ExternalRing`]) belongs to the external implementation, every guest-to-host signal
//! calls its hook, and the guest runs only when the external host calls
//! [`HostEndpoint::signal_guest`] (a signal that finds nothing to do is `SPURIOUS_SIGNAL`).
//!
//! Every `HostEndpoint` call is a verifier safe point (it panics in bugcheck mode when
//! a violation is pending).
//!
//! Layer: above the channel state machine. This file is the public [`HostEndpoint`] API; the
//! host engine it drives (per-offer host state, the signal checks, the host task) is
//! `host.rs`, below the channel. It uses `channel` (close, rescind, poll), `host`, the ring,
//! `mem`, `registry` and `upcall::write_driver_memory`; nothing in the simulator core calls it.
#![forbid(unsafe_code)]

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use kmcl_sys::NTSTATUS;

use crate::channel::{self};
use crate::host::{self, HostPacket};
use crate::mem::SharedBuf;
use crate::ring::{self, GpaRange, OutgoingPacket, TransferPageRange, WriteError};
use crate::sched::Task;
use crate::{Rule, SimInner, State};

/// Why a host operation failed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SendError {
    /// No channel is open on this offer.
    NotOpen,
    /// The guest-inbound ring has no room now (the driver holds packets, or is slow).
    Full,
    /// The packet can never fit in the ring.
    TooLarge,
    /// `complete` for a transaction the driver did not send with a completion request.
    UnknownTransaction(u64),
    /// The ring indices are corrupt.
    Corrupt(String),
    /// An external host is attached; the built-in host cannot write.
    External,
    /// The driver's external buffer is not writable there (`DATA_OUT_ONLY`, or out of bounds).
    ReadOnly,
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::NotOpen => f.write_str("no channel open on this offer"),
            SendError::Full => f.write_str("guest inbound ring full"),
            SendError::TooLarge => f.write_str("packet larger than the ring"),
            SendError::UnknownTransaction(t) => {
                write!(f, "no driver request with transaction {t:#x}")
            }
            SendError::Corrupt(why) => write!(f, "ring corrupt: {why}"),
            SendError::External => f.write_str("an external host is attached"),
            SendError::ReadOnly => f.write_str("external buffer not writable there"),
        }
    }
}

impl std::error::Error for SendError {}

/// The ring memory of an open channel, for an external host implementation.
///
/// One page-aligned buffer laid out as the channel GPADL: the guest-outbound ring
/// (control page + data) at page 0, the guest-inbound ring at `ring_offset_pages`.
/// Every 8-byte word must be accessed atomically (the simulator uses `AtomicU64`).
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct ExternalRing {
    /// Byte 0 of the ring memory.
    pub ptr: *mut u8,
    /// Length of the ring memory in bytes.
    pub len: usize,
    /// Page offset of the guest-inbound ring (`downstream_ringbuffer_pageoffset`).
    pub ring_offset_pages: usize,
}

/// The host side of the channel opened on one offer.
#[derive(Clone, Debug)]
pub struct HostEndpoint {
    sim: Arc<SimInner>,
    offer: u64,
}

/// What kind of data packet the host writes.
enum HostWrite<'a> {
    InBand,
    Gpa(&'a [GpaRange]),
    Xfer(u16, &'a [TransferPageRange]),
}

impl HostEndpoint {
    pub(crate) const fn new(sim: Arc<SimInner>, offer: u64) -> Self {
        Self { sim, offer }
    }

    fn safe_point(&self) {
        crate::registry::set_current_sim(&self.sim);
        self.sim.safe_point();
    }

    /// [`safe_point`](Self::safe_point), then the state, locked once for both.
    fn lock_at_safe_point(&self) -> crate::StateGuard<'_> {
        crate::registry::set_current_sim(&self.sim);
        self.sim.lock_at_safe_point()
    }

    fn channel(&self, st: &State) -> Option<u64> {
        st.offers.get(&self.offer).and_then(|o| o.channel)
    }

    fn write(
        &self,
        st: &mut State,
        kind: HostWrite<'_>,
        payload: &[u8],
        completion: bool,
    ) -> Result<u64, SendError> {
        // One offer look-up for the channel and the host side (the maps are disjoint fields).
        let Some(o) = st.offers.get_mut(&self.offer) else {
            return Err(SendError::NotOpen);
        };
        let ch = o.channel.ok_or(SendError::NotOpen)?;
        if !st.channels.get(&ch).is_some_and(channel::Channel::is_open) {
            return Err(SendError::NotOpen);
        }
        let h = &mut o.host;
        if h.external.is_some() || (h.peer_is_server && !h.guest_mode) {
            return Err(SendError::External);
        }
        if h.rings.is_none() {
            return Err(SendError::NotOpen);
        }
        // One writer, one queue: completions that did not fit go first, and while one is
        // still waiting, a new packet must not take its space. Its `pending_send_sz` is armed
        // for its size; a data write that succeeded would clear it and the guest would never
        // signal the release the completion waits for (the lost wake-up of issue 11).
        let mut flushed = false;
        if !h.pending.is_empty() {
            host::flush_pending(h, &mut flushed);
        }
        let h = if flushed {
            st.stats.host_to_guest_signals += 1;
            self.sim.push(st, Task::Dpc { ch });
            let Some(o) = st.offers.get_mut(&self.offer) else {
                return Err(SendError::NotOpen);
            };
            &mut o.host
        } else {
            h
        };
        if !h.pending.is_empty() {
            return Err(SendError::Full);
        }
        let Some(r) = h.rings.as_mut() else {
            return Err(SendError::NotOpen);
        };
        h.next_trans += 1;
        let trans = h.next_trans;
        let piped;
        let data: &[u8] = if h.pipe {
            piped = ring::add_pipe_header(payload).map_err(|_| SendError::TooLarge)?;
            &piped
        } else {
            payload
        };
        let completion = completion && !h.pipe;
        let packet = match kind {
            HostWrite::InBand => OutgoingPacket::in_band(trans, completion, data),
            HostWrite::Gpa(ranges) => OutgoingPacket::gpa_direct(trans, completion, ranges, data),
            HostWrite::Xfer(set, ranges) => {
                OutgoingPacket::transfer_pages(trans, completion, set, ranges, data)
            }
        };
        let outcome = r.tx.write_or_arm(&packet).map_err(|e| match e {
            WriteError::Full { .. } => SendError::Full,
            WriteError::TooLarge { .. } => SendError::TooLarge,
            WriteError::Corrupt(why) => SendError::Corrupt(why.to_string()),
        })?;
        // Exact lengths are read only without padded lengths (`channel::parse_incoming`).
        if !self.sim.cfg.padded_lengths {
            h.exact.insert(outcome.offset, payload.len());
        }
        if completion {
            h.outstanding.insert(trans);
        }
        if outcome.signal {
            st.stats.host_to_guest_signals += 1;
            self.sim.push(st, Task::Dpc { ch });
        } else {
            // No signal is owed (the ring rules): a guest that holds packets finds this one
            // by polling (channel::poll_held); wake the scheduler so it looks now.
            self.sim.wake();
        }
        Ok(trans)
    }

    /// Sends an in-band packet to the driver. Returns its transaction id.
    ///
    /// # Errors
    /// [`SendError::NotOpen`], [`SendError::Full`] (the driver holds packets; retry after
    /// it completes some), [`SendError::TooLarge`].
    pub fn send_inband(
        &self,
        payload: &[u8],
        completion_requested: bool,
    ) -> Result<u64, SendError> {
        let mut st = self.lock_at_safe_point();
        self.write(&mut st, HostWrite::InBand, payload, completion_requested)
    }

    /// Sends a GPA-direct packet whose external data is a copy of `external`, in
    /// page-aligned simulator memory (the PFN fiction: see `docs/simulator.md`). The driver
    /// gets `VMBUS_CHANNEL_PROCESS_PACKET_FLAG_EXTERNAL_DATA` and an MDL over it; if
    /// `writable`, read what it wrote with [`external_data`](Self::external_data).
    ///
    /// # Errors
    /// As [`send_inband`](Self::send_inband).
    pub fn send_gpa_direct(
        &self,
        payload: &[u8],
        external: &[u8],
        writable: bool,
        completion_requested: bool,
    ) -> Result<u64, SendError> {
        self.safe_point();
        let buf = Arc::new(SharedBuf::new_page_aligned(external.len().max(1)));
        buf.write(0, external);
        let len = u32::try_from(external.len().max(1)).map_err(|_| SendError::TooLarge)?;
        let ranges = [GpaRange {
            byte_count: len,
            byte_offset: 0,
            pfns: buf.pfns(0, len as usize),
        }];
        let mut st = self.sim.lock();
        st.map_pages(&buf);
        let trans = self.write(
            &mut st,
            HostWrite::Gpa(&ranges),
            payload,
            completion_requested,
        );
        match &trans {
            Ok(t) if writable => {
                if let Some(o) = st.offers.get_mut(&self.offer) {
                    o.host.gpa_bufs.insert(*t, buf);
                }
            }
            Ok(t) => {
                if let Some(o) = st.offers.get_mut(&self.offer) {
                    o.host.gpa_bufs.insert(*t, buf);
                }
            }
            Err(_) => st.unmap_pages(&buf),
        }
        trans
    }

    /// Sends a transfer-page packet (type 7): `external` is placed in a fresh transfer page
    /// set and described by one range; the driver sees it as external data.
    ///
    /// # Errors
    /// As [`send_inband`](Self::send_inband).
    pub fn send_transfer_pages(
        &self,
        payload: &[u8],
        external: &[u8],
        completion_requested: bool,
    ) -> Result<u64, SendError> {
        self.safe_point();
        let buf = Arc::new(SharedBuf::new_page_aligned(external.len().max(1)));
        buf.write(0, external);
        let mut st = self.sim.lock();
        let Some(o) = st.offers.get_mut(&self.offer) else {
            return Err(SendError::NotOpen);
        };
        o.host.next_set = o.host.next_set.wrapping_add(1);
        let set = o.host.next_set;
        o.host.xfer_sets.insert(set, buf);
        // As for GPA direct: an empty external buffer is sent as one zeroed byte, since a
        // zero-byte range is not a valid transfer-page range.
        let len = u32::try_from(external.len().max(1)).map_err(|_| SendError::TooLarge)?;
        let ranges = [TransferPageRange {
            byte_count: len,
            byte_offset: 0,
        }];
        self.write(
            &mut st,
            HostWrite::Xfer(set, &ranges),
            payload,
            completion_requested,
        )
    }

    /// The current bytes of the external buffer of host packet `trans_id` (what the
    /// driver wrote into a writable GPA-direct buffer).
    #[must_use]
    pub fn external_data(&self, trans_id: u64) -> Option<Vec<u8>> {
        let st = self.sim.lock();
        st.offers
            .get(&self.offer)?
            .host
            .gpa_bufs
            .get(&trans_id)
            .map(|b| b.read(0, b.len()))
    }

    /// Writes raw bytes (no descriptor added; zero-padded to 8) into the guest-inbound ring
    /// and publishes them: for adversarial tests. A malformed packet fails the channel
    /// (it is closed and [`error`](Self::error) says why); it never crashes.
    ///
    /// # Errors
    /// As [`send_inband`](Self::send_inband).
    pub fn send_raw(&self, bytes: &[u8]) -> Result<(), SendError> {
        let mut st = self.lock_at_safe_point();
        let ch = self.channel(&st).ok_or(SendError::NotOpen)?;
        let Some(o) = st.offers.get_mut(&self.offer) else {
            return Err(SendError::NotOpen);
        };
        let Some(r) = o.host.rings.as_mut() else {
            return Err(SendError::NotOpen);
        };
        let outcome = r.tx.write_raw(bytes).map_err(|e| match e {
            WriteError::Full { .. } => SendError::Full,
            WriteError::TooLarge { .. } => SendError::TooLarge,
            WriteError::Corrupt(why) => SendError::Corrupt(why.to_string()),
        })?;
        if outcome.signal {
            st.stats.host_to_guest_signals += 1;
            self.sim.push(&mut st, Task::Dpc { ch });
        } else {
            self.sim.wake();
        }
        Ok(())
    }

    /// The next packet the driver sent (not answered by the responder), if any.
    pub fn recv(&self) -> Option<HostPacket> {
        let mut st = self.lock_at_safe_point();
        st.offers.get_mut(&self.offer)?.host.inbox.pop_front()
    }

    /// The next packet the driver sent (not answered by the responder), lent to `f`: its
    /// buffers are reused for later packets, so the steady state allocates nothing. `None`
    /// (and `f` not called) when there is none. `f` runs without the simulation's lock (it
    /// may call this endpoint).
    pub fn recv_with<R>(&self, f: impl FnOnce(&HostPacket) -> R) -> Option<R> {
        let p = {
            let mut st = self.lock_at_safe_point();
            st.offers.get_mut(&self.offer)?.host.inbox.pop_front()?
        };
        let r = f(&p);
        host::recycle_packet(p);
        Some(r)
    }

    /// Like [`recv`](Self::recv), but waits (threaded mode) or steps the simulation
    /// (deterministic mode) up to `timeout` for a packet.
    pub fn recv_timeout(&self, timeout: Duration) -> Option<HostPacket> {
        self.safe_point();
        let offer = self.offer;
        self.sim.wait_until(Some(timeout), |st| {
            st.offers
                .get(&offer)
                .is_some_and(|o| !o.host.inbox.is_empty())
        });
        self.recv()
    }

    /// Answers driver request `trans_id` with a completion packet carrying `response`.
    ///
    /// # Errors
    /// [`SendError::UnknownTransaction`] if the driver sent no such request asking for a
    /// completion; [`SendError::NotOpen`]. A full ring queues the completion.
    pub fn complete(&self, trans_id: u64, response: &[u8]) -> Result<(), SendError> {
        let mut st = self.lock_at_safe_point();
        let ch = self.channel(&st).ok_or(SendError::NotOpen)?;
        let Some(o) = st.offers.get_mut(&self.offer) else {
            return Err(SendError::NotOpen);
        };
        let h = &mut o.host;
        if h.rings.is_none() {
            return Err(SendError::NotOpen);
        }
        if !h.driver_requests.remove(&trans_id) {
            return Err(SendError::UnknownTransaction(trans_id));
        }
        h.ext_targets.remove(&trans_id);
        let mut resp = host::take_buf();
        resp.extend_from_slice(response);
        h.pending.push_back((trans_id, resp));
        let mut signal = false;
        host::flush_pending(h, &mut signal);
        if signal {
            st.stats.host_to_guest_signals += 1;
            self.sim.push(&mut st, Task::Dpc { ch });
        }
        Ok(())
    }

    /// Writes `data` at `offset` into the external buffer (MDL) of driver request
    /// `trans_id`, as a host fills a read buffer before completing the request.
    ///
    /// # Errors
    /// [`SendError::UnknownTransaction`] if no such request is in flight (completion
    /// requested, not yet completed) with a mapped external buffer; [`SendError::ReadOnly`]
    /// for a `VMBUS_CHANNEL_FORMAT_FLAG_DATA_OUT_ONLY` buffer or a write past its end.
    pub fn write_external(
        &self,
        trans_id: u64,
        offset: usize,
        data: &[u8],
    ) -> Result<(), SendError> {
        let st = self.lock_at_safe_point();
        let h = &st.offers.get(&self.offer).ok_or(SendError::NotOpen)?.host;
        if !h.driver_requests.contains(&trans_id) {
            return Err(SendError::UnknownTransaction(trans_id));
        }
        let Some(&(addr, len)) = h.ext_targets.get(&trans_id) else {
            return Err(SendError::ReadOnly);
        };
        if offset.checked_add(data.len()).is_none_or(|end| end > len) {
            return Err(SendError::ReadOnly);
        }
        crate::upcall::write_driver_memory(addr + offset, data);
        Ok(())
    }

    /// The next completion the driver sent for a host request: `(trans_id, payload)`.
    pub fn take_completion(&self) -> Option<(u64, Vec<u8>)> {
        let mut st = self.lock_at_safe_point();
        st.offers.get_mut(&self.offer)?.host.completions.pop_front()
    }

    /// The next completion the driver sent for a host request, lent to `f` as
    /// `(trans_id, payload)` (its buffer is reused: nothing allocated in steady state).
    /// `None` (and `f` not called) when there is none. `f` runs without the simulation's
    /// lock.
    pub fn take_completion_with<R>(&self, f: impl FnOnce(u64, &[u8]) -> R) -> Option<R> {
        let (trans, payload) = {
            let mut st = self.lock_at_safe_point();
            st.offers
                .get_mut(&self.offer)?
                .host
                .completions
                .pop_front()?
        };
        let r = f(trans, &payload);
        host::give_buf(payload);
        Some(r)
    }

    /// Waits (threaded) or steps (deterministic) up to `timeout` for a driver completion.
    pub fn take_completion_timeout(&self, timeout: Duration) -> Option<(u64, Vec<u8>)> {
        self.safe_point();
        let offer = self.offer;
        self.sim.wait_until(Some(timeout), |st| {
            st.offers
                .get(&offer)
                .is_some_and(|o| !o.host.completions.is_empty())
        });
        self.take_completion()
    }

    /// Answers every driver request that asks for a completion: `f` returns the response
    /// (`None` leaves the packet for [`recv`](Self::recv)). Runs on the host context.
    pub fn set_responder(
        &self,
        mut f: impl FnMut(&HostPacket) -> Option<Vec<u8>> + Send + 'static,
    ) {
        self.set_responder_into(move |p, out| match f(p) {
            Some(resp) => {
                *out = resp;
                true
            }
            None => false,
        });
    }

    /// [`set_responder`](Self::set_responder) that writes the response into a buffer it is
    /// lent (empty when `f` is called) and returns `true`, or returns `false` to leave the
    /// packet for [`recv`](Self::recv). The buffers are reused: answering allocates
    /// nothing in steady state. Runs on the host context.
    pub fn set_responder_into(
        &self,
        f: impl FnMut(&HostPacket, &mut Vec<u8>) -> bool + Send + 'static,
    ) {
        let mut st = self.lock_at_safe_point();
        if let Some(o) = st.offers.get_mut(&self.offer) {
            o.host.responder = Some(Box::new(f));
        }
    }

    /// Rescinds the offer: KMCL raises Suspend, waits for outstanding packets, raises
    /// Closed, and the channel ends Disabled. Enable then fails with `STATUS_DEVICE_REMOVED`
    /// until [`reoffer`](Self::reoffer).
    pub fn rescind(&self) {
        let mut st = self.lock_at_safe_point();
        channel::rescind_locked(&self.sim, &mut st, self.offer);
    }

    /// Offers the channel again after a rescind.
    pub fn reoffer(&self) {
        if let Some(o) = self.lock_at_safe_point().offers.get_mut(&self.offer) {
            o.rescinded = false;
        }
    }

    /// Stops (`true`) or resumes the built-in host's reading of the guest-outbound ring,
    /// so that the driver's sends fill it.
    pub fn pause_reading(&self, paused: bool) {
        let mut st = self.lock_at_safe_point();
        let ch = self.channel(&st);
        if let Some(o) = st.offers.get_mut(&self.offer) {
            o.host.paused = paused;
        }
        if let (false, Some(ch)) = (paused, ch) {
            self.sim.push(&mut st, Task::Host { ch });
        }
    }

    /// Whether a channel is open on this offer (between Opened and Closed).
    #[must_use]
    pub fn is_open(&self) -> bool {
        let st = self.sim.lock();
        self.channel(&st)
            .is_some_and(|ch| st.channels.get(&ch).is_some_and(channel::Channel::is_open))
    }

    /// Waits (threaded) or steps (deterministic) up to `timeout` until the channel is open.
    pub fn wait_open(&self, timeout: Duration) -> bool {
        self.safe_point();
        let offer = self.offer;
        self.sim.wait_until(Some(timeout), |st| {
            st.offers
                .get(&offer)
                .and_then(|o| o.channel)
                .is_some_and(|ch| {
                    st.channels
                        .get(&ch)
                        .is_some_and(|c| c.state == channel::ChState::Running)
                })
        })
    }

    /// The status of the last open: `STATUS_SUCCESS`, the failure `EvtChannelOpened`
    /// returned, or an injected rejection. `None` before any open.
    #[must_use]
    pub fn open_status(&self) -> Option<NTSTATUS> {
        self.sim.lock().offers.get(&self.offer)?.host.open_status
    }

    /// Why the channel was failed (a corrupt packet, an unknown completion...), if it was.
    #[must_use]
    pub fn error(&self) -> Option<String> {
        let st = self.sim.lock();
        let o = st.offers.get(&self.offer)?;
        o.host.error.clone().or_else(|| {
            o.channel
                .and_then(|ch| st.channels.get(&ch))
                .and_then(|c| c.failure.clone())
        })
    }

    /// Hands the channel to an external host implementation: from the next open on, the
    /// built-in host does nothing, `on_signal` is called (on the host context) for every
    /// guest-to-host signal, and the guest runs only when [`signal_guest`](Self::signal_guest)
    /// is called. Get the ring memory with [`external_ring`](Self::external_ring).
    pub fn attach_external(&self, on_signal: impl Fn() + Send + Sync + 'static) {
        if let Some(o) = self.lock_at_safe_point().offers.get_mut(&self.offer) {
            o.host.external = Some(Arc::new(on_signal));
        }
    }

    /// The ring memory of the open channel (for an external host).
    #[must_use]
    pub fn external_ring(&self) -> Option<ExternalRing> {
        let st = self.sim.lock();
        let p = st.offers.get(&self.offer)?.host.pair.as_ref()?;
        Some(ExternalRing {
            ptr: p.as_ptr(),
            len: p.len(),
            ring_offset_pages: p.ring_offset_pages(),
        })
    }

    /// The external host signals the guest (it wrote into an empty ring, or released
    /// space the guest waits for). The signal is judged against the ring rules as they
    /// stood when the host wrote or released, not the guest's state when it arrives (the
    /// guest may have consumed the packet meanwhile): a signal that no write or release
    /// since the previous one called for, and that finds nothing to do, is `SPURIOUS_SIGNAL`.
    pub fn signal_guest(&self) {
        let mut st = self.lock_at_safe_point();
        let Some(ch) = self.channel(&st) else { return };
        st.stats.host_to_guest_signals += 1;
        let legit = st
            .channels
            .get_mut(&ch)
            .and_then(|c| c.rings.as_mut())
            .is_some_and(channel::GuestRings::judge_host_signal);
        if !legit {
            st.stats.spurious_host_to_guest += 1;
            st.violation(
                Rule::SpuriousSignal,
                format!(
                    "host->guest signal on channel {ch} that no write or release since the last one called for"
                ),
            );
        }
        self.sim.push(&mut st, Task::Dpc { ch });
    }
}
