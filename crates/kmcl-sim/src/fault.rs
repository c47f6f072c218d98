//! Fault injection: make KMCL or the host fail the way a real system can.
//!
//! C header: `vmbuskernelmodeclientlibapi.h` (`VmbPacketAllocate` returns NULL on
//! failure; sends fail with `STATUS_INSUFFICIENT_RESOURCES`; a full ring queues the
//! packet; the host may rescind an offer at any time).
//!
//! Inject with [`Sim::inject`](crate::Sim::inject); each fault is armed for a number
//! of occurrences and disarms itself.
#![forbid(unsafe_code)]

use kmcl_sys::NTSTATUS;

/// A fault to inject.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// The next `count` `VmbPacketAllocate` calls return NULL.
    FailPacketAllocate {
        /// How many allocations fail.
        count: u32,
    },
    /// The next `count` sends (`VmbPacketSend*`, `VmbChannelSendSynchronousRequest`)
    /// fail with `STATUS_INSUFFICIENT_RESOURCES`.
    FailSend {
        /// How many sends fail.
        count: u32,
    },
    /// The next `count` writes into the guest-outbound ring find it full, so KMCL
    /// queues the packet until the host reads (exercises the pending-send path).
    RingFull {
        /// How many writes see a full ring.
        count: u32,
    },
    /// The host rescinds the channel right after the next `EvtVmbChannelProcessPacket` returns.
    RescindDuringDelivery,
    /// The host refuses the next channel open with this status: `EvtChannelOpened` is not
    /// called, `EvtChannelPnpFailure` (if registered) is, and the channel stays Disabled.
    RejectOpen {
        /// The failure status reported to `EvtChannelPnpFailure`.
        status: NTSTATUS,
    },
    /// KMCL signals the host after every write, whether the ring rules call for it or
    /// not (to check that the host endpoint reports `SPURIOUS_SIGNAL`).
    SpuriousGuestSignals {
        /// How many writes signal unconditionally.
        count: u32,
    },
}

/// Armed faults of one simulation.
#[derive(Debug, Default)]
pub(crate) struct Faults {
    pub(crate) fail_allocate: u32,
    pub(crate) fail_send: u32,
    pub(crate) ring_full: u32,
    pub(crate) rescind_during_delivery: bool,
    pub(crate) reject_open: Option<NTSTATUS>,
    pub(crate) spurious_guest_signals: u32,
}

impl Faults {
    pub(crate) fn arm(&mut self, f: Fault) {
        match f {
            Fault::FailPacketAllocate { count } => self.fail_allocate += count,
            Fault::FailSend { count } => self.fail_send += count,
            Fault::RingFull { count } => self.ring_full += count,
            Fault::RescindDuringDelivery => self.rescind_during_delivery = true,
            Fault::RejectOpen { status } => self.reject_open = Some(status),
            Fault::SpuriousGuestSignals { count } => self.spurious_guest_signals += count,
        }
    }

    /// Consumes one occurrence of a counted fault.
    pub(crate) fn take(counter: &mut u32) -> bool {
        if *counter > 0 {
            *counter -= 1;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counted_faults_disarm_after_count() {
        let mut f = Faults::default();
        f.arm(Fault::FailSend { count: 2 });
        assert!(Faults::take(&mut f.fail_send));
        assert!(Faults::take(&mut f.fail_send));
        assert!(!Faults::take(&mut f.fail_send));
    }
}
