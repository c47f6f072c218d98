//! The verifier: KMCL rules, their stable names, and the record of violations.
//!
//! C header: `vmbuskernelmodeclientlibapi.h` (the rules come from its comments and from
//! the DDI pages; `docs/irql.md`; `docs/simulator.md`).
//!
//! A violation is recorded where it happens (often inside an `extern "system"` entry,
//! where a panic would abort the process); the offending call then returns without
//! doing harm. In [`VerifierMode::Bugcheck`](crate::VerifierMode::Bugcheck) the next
//! Rust-frame safe point ([`Sim::run_until_idle`](crate::Sim::run_until_idle), a
//! [`HostEndpoint`](crate::HostEndpoint) call, [`Sim::assert_clean`](crate::Sim::assert_clean)
//! or dropping the last [`Sim`](crate::Sim)) panics with the rule name and the call.
#![forbid(unsafe_code)]

use std::fmt;

/// A KMCL usage rule the simulator checks. [`Rule::name`] is stable; tests and
/// `// SAFETY:` comments refer to rules by that name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Rule {
    /// `VmbChannelPacketComplete`/`Fail` called a second time for the same incoming packet.
    PacketCompletedTwice,
    /// `VmbChannelDisable` (or a rescind) could not finish because incoming packets stayed outstanding.
    PacketOutstandingAtDisable,
    /// `VmbChannelCleanup` found incoming packets that were never completed.
    PacketOutstandingAtCleanup,
    /// A `VMBCHANNEL` that the simulator never handed out (forged or garbage).
    InvalidChannelHandle,
    /// A `VMBPACKETCOMPLETION` or `VMBPACKET` that is forged, or stale after its retirement.
    InvalidPacketHandle,
    /// The driver wrote into a packet's `Buffer` after completing it (the poison changed).
    PayloadWrittenAfterCompletion,
    /// A routine was called above the IRQL that KMCL allows for it (`docs/irql.md`).
    IrqlTooHigh,
    /// A `VmbChannelInit*` routine was called after `VmbChannelEnable` (channel not Disabled).
    InitAfterEnable,
    /// `VmbChannelSendSynchronousRequest` that may wait, called above PASSIVE_LEVEL.
    SyncRequestAtDispatch,
    /// `*CompletionBufferSize` of a synchronous request is not a multiple of 8.
    CompletionBufferSize,
    /// A channel handle used after `VmbChannelCleanup`.
    UseAfterCleanup,
    /// `VmbPacketFree` on a packet that was already freed (or auto-freed by the default completion routine).
    OutgoingPacketDoubleFree,
    /// Outgoing packets from `VmbPacketAllocate` never freed by `VmbChannelCleanup`.
    OutgoingPacketLeaked,
    /// `VmbPacketFree` on a packet whose send has not completed yet.
    OutgoingPacketFreedInFlight,
    /// A packet object was sent again before its previous send completed.
    OutgoingPacketReused,
    /// `VmbChannelPacketDeferToPassive` outside the in-line `EvtVmbChannelProcessPacket` call for that packet.
    DeferOutsideCallback,
    /// A signal that the ring rules (`docs/simulator.md`, signalling) did not call for.
    SpuriousSignal,
    /// A blocking KMCL call could never finish (nothing left that could make progress).
    Deadlock,
    /// `VmbChannelCleanup` on a channel that is not Disabled.
    CleanupWhileEnabled,
    /// A send after `EvtChannelSuspend`: while the channel closes, or once the close left
    /// it Disabled, until the next `VmbChannelEnable` (the call fails with
    /// `STATUS_INVALID_DEVICE_STATE`). A send on a channel never enabled also fails, but
    /// breaks no rule.
    SendWhileClosed,
    /// A packet built with `VmbPacketInitialize` was sent without a completion routine.
    CompletionRoutineNotSet,
    /// A blocking routine (`VmbChannelDisable`, `Pause`, `Start`) called from inside a
    /// state-change or packet callback of the same channel.
    BlockingCallInCallback,
    /// Server: `VmbChannelMapGpadl` of a GPADL this channel has mapped already (one mapping per GPADL).
    GpadlMappedTwice,
    /// Server: `VmbChannelUnmapGpadl` of a GPADL that is not mapped (never, or already unmapped).
    GpadlUnmapUnmapped,
    /// Server: a GPADL mapped while the channel is not open (closed, or never opened), or
    /// unmapped there when it is not mapped. A mapping made while open stays valid past a
    /// close until `VmbChannelUnmapGpadl` (the guest's `VmbChannelDeleteGpadl` waits for
    /// it), so unmapping it after the close is the required pairing, not this rule.
    GpadlUseAfterClose,
    /// Server: `VmbChannelCleanup` of a channel that still has GPADLs mapped (never
    /// unmapped: the guest's `VmbChannelDeleteGpadl` would wait forever); the simulator
    /// frees the mappings.
    GpadlMappedAtCleanup,
    /// `VmbConvertVmbusHandleToKernelHandle` outside the user process that opened the handle.
    VmbusHandleWrongProcess,
    /// `VmbChannelPacketComplete` with a completion buffer that can never fit the outgoing
    /// ring: the completion cannot be sent (the routine returns nothing to report it).
    CompletionTooLarge,
}

impl Rule {
    /// Every rule, in documentation order.
    pub const ALL: &'static [Rule] = &[
        Rule::PacketCompletedTwice,
        Rule::PacketOutstandingAtDisable,
        Rule::PacketOutstandingAtCleanup,
        Rule::InvalidChannelHandle,
        Rule::InvalidPacketHandle,
        Rule::PayloadWrittenAfterCompletion,
        Rule::IrqlTooHigh,
        Rule::InitAfterEnable,
        Rule::SyncRequestAtDispatch,
        Rule::CompletionBufferSize,
        Rule::UseAfterCleanup,
        Rule::OutgoingPacketDoubleFree,
        Rule::OutgoingPacketLeaked,
        Rule::OutgoingPacketFreedInFlight,
        Rule::OutgoingPacketReused,
        Rule::DeferOutsideCallback,
        Rule::SpuriousSignal,
        Rule::Deadlock,
        Rule::CleanupWhileEnabled,
        Rule::SendWhileClosed,
        Rule::CompletionRoutineNotSet,
        Rule::BlockingCallInCallback,
        Rule::GpadlMappedTwice,
        Rule::GpadlUnmapUnmapped,
        Rule::GpadlUseAfterClose,
        Rule::GpadlMappedAtCleanup,
        Rule::VmbusHandleWrongProcess,
        Rule::CompletionTooLarge,
    ];

    /// The stable rule name (`PACKET_COMPLETED_TWICE`, ...).
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Rule::PacketCompletedTwice => "PACKET_COMPLETED_TWICE",
            Rule::PacketOutstandingAtDisable => "PACKET_OUTSTANDING_AT_DISABLE",
            Rule::PacketOutstandingAtCleanup => "PACKET_OUTSTANDING_AT_CLEANUP",
            Rule::InvalidChannelHandle => "INVALID_CHANNEL_HANDLE",
            Rule::InvalidPacketHandle => "INVALID_PACKET_HANDLE",
            Rule::PayloadWrittenAfterCompletion => "PAYLOAD_WRITTEN_AFTER_COMPLETION",
            Rule::IrqlTooHigh => "IRQL_TOO_HIGH",
            Rule::InitAfterEnable => "INIT_AFTER_ENABLE",
            Rule::SyncRequestAtDispatch => "SYNC_REQUEST_AT_DISPATCH",
            Rule::CompletionBufferSize => "COMPLETION_BUFFER_SIZE",
            Rule::UseAfterCleanup => "USE_AFTER_CLEANUP",
            Rule::OutgoingPacketDoubleFree => "OUTGOING_PACKET_DOUBLE_FREE",
            Rule::OutgoingPacketLeaked => "OUTGOING_PACKET_LEAKED",
            Rule::OutgoingPacketFreedInFlight => "OUTGOING_PACKET_FREED_IN_FLIGHT",
            Rule::OutgoingPacketReused => "OUTGOING_PACKET_REUSED",
            Rule::DeferOutsideCallback => "DEFER_OUTSIDE_CALLBACK",
            Rule::SpuriousSignal => "SPURIOUS_SIGNAL",
            Rule::Deadlock => "DEADLOCK",
            Rule::CleanupWhileEnabled => "CLEANUP_WHILE_ENABLED",
            Rule::SendWhileClosed => "SEND_WHILE_CLOSED",
            Rule::CompletionRoutineNotSet => "COMPLETION_ROUTINE_NOT_SET",
            Rule::BlockingCallInCallback => "BLOCKING_CALL_IN_CALLBACK",
            Rule::GpadlMappedTwice => "GPADL_MAPPED_TWICE",
            Rule::GpadlUnmapUnmapped => "GPADL_UNMAP_UNMAPPED",
            Rule::GpadlUseAfterClose => "GPADL_USE_AFTER_CLOSE",
            Rule::GpadlMappedAtCleanup => "GPADL_MAPPED_AT_CLEANUP",
            Rule::VmbusHandleWrongProcess => "VMBUS_HANDLE_WRONG_PROCESS",
            Rule::CompletionTooLarge => "COMPLETION_TOO_LARGE",
        }
    }

    /// One line saying what the rule checks.
    #[must_use]
    pub const fn description(self) -> &'static str {
        match self {
            Rule::PacketCompletedTwice => "an incoming packet was completed (or failed) twice",
            Rule::PacketOutstandingAtDisable => {
                "Disable/rescind waited for incoming packets that were never completed"
            }
            Rule::PacketOutstandingAtCleanup => "Cleanup found incoming packets never completed",
            Rule::InvalidChannelHandle => "a VMBCHANNEL the simulator never handed out",
            Rule::InvalidPacketHandle => "a forged or stale VMBPACKETCOMPLETION/VMBPACKET",
            Rule::PayloadWrittenAfterCompletion => {
                "the driver wrote into a packet Buffer after completing it"
            }
            Rule::IrqlTooHigh => "a routine was called above its maximum IRQL",
            Rule::InitAfterEnable => "a VmbChannelInit* routine was called after Enable",
            Rule::SyncRequestAtDispatch => "a waiting synchronous request above PASSIVE_LEVEL",
            Rule::CompletionBufferSize => "*CompletionBufferSize is not a multiple of 8",
            Rule::UseAfterCleanup => "a channel handle was used after VmbChannelCleanup",
            Rule::OutgoingPacketDoubleFree => "an outgoing packet was freed twice",
            Rule::OutgoingPacketLeaked => "outgoing packets were never freed by Cleanup",
            Rule::OutgoingPacketFreedInFlight => "an outgoing packet was freed while in flight",
            Rule::OutgoingPacketReused => "an outgoing packet was sent again while in flight",
            Rule::DeferOutsideCallback => "DeferToPassive outside the in-line ProcessPacket call",
            Rule::SpuriousSignal => "a signal that the ring signalling rules did not call for",
            Rule::Deadlock => "a blocking call could never finish",
            Rule::CleanupWhileEnabled => "Cleanup on a channel that is not Disabled",
            Rule::SendWhileClosed => "a send on a channel that is not open",
            Rule::CompletionRoutineNotSet => {
                "a VmbPacketInitialize packet was sent without a completion routine"
            }
            Rule::BlockingCallInCallback => {
                "a blocking routine was called from a callback of the same channel"
            }
            Rule::GpadlMappedTwice => "a server mapped the same GPADL twice",
            Rule::GpadlUnmapUnmapped => "a server unmapped a GPADL that is not mapped",
            Rule::GpadlUseAfterClose => {
                "a GPADL mapped while the channel is closed, or unmapped there when not mapped"
            }
            Rule::GpadlMappedAtCleanup => "a server channel cleaned up with GPADLs still mapped",
            Rule::VmbusHandleWrongProcess => {
                "a VMBus handle converted outside the process that opened it"
            }
            Rule::CompletionTooLarge => {
                "a packet completed with a buffer that can never fit the outgoing ring"
            }
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One recorded violation: the rule and the call (routine and arguments) that broke it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Violation {
    /// The rule that was broken.
    pub rule: Rule,
    /// The call site: the routine name and its arguments, e.g. `VmbChannelPacketComplete(0x...)`.
    pub site: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at {}", self.rule.name(), self.site)
    }
}

/// The per-simulation violation log.
#[derive(Debug, Default)]
pub(crate) struct Log {
    all: Vec<Violation>,
    /// Violations already raised as a bugcheck panic (they are not raised twice).
    raised: usize,
}

impl Log {
    pub(crate) fn record(&mut self, rule: Rule, site: String) {
        self.all.push(Violation { rule, site });
    }

    pub(crate) fn all(&self) -> Vec<Violation> {
        self.all.clone()
    }

    /// The first violation not yet raised, marking everything raised.
    pub(crate) fn take_unraised(&mut self) -> Option<Violation> {
        if self.raised < self.all.len() {
            let v = self.all[self.raised].clone();
            self.raised = self.all.len();
            Some(v)
        } else {
            None
        }
    }
}

/// Formats a bugcheck message for `v`.
pub(crate) fn bugcheck_message(v: &Violation) -> String {
    format!(
        "KMCL verifier bugcheck: {} ({}) at {}",
        v.rule.name(),
        v.rule.description(),
        v.site
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_names_are_unique_and_upper_snake() {
        let mut seen = std::collections::HashSet::new();
        for r in Rule::ALL {
            assert!(seen.insert(r.name()), "duplicate {}", r.name());
            assert!(r.name().chars().all(|c| c.is_ascii_uppercase() || c == '_'));
            assert!(!r.description().is_empty());
        }
    }

    #[test]
    fn log_raises_each_violation_once() {
        let mut log = Log::default();
        log.record(Rule::Deadlock, "x".into());
        assert_eq!(log.take_unraised().map(|v| v.rule), Some(Rule::Deadlock));
        assert_eq!(log.take_unraised(), None);
        assert_eq!(log.all().len(), 1);
    }
}
