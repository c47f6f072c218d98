//! What the bridge needs from the channel and from the I/O framework, as traits.
//!
//! C header: `vmbuskernelmodeclientlibapi.h` (incoming packets, sends), `wdfrequest.h`
//! (requests, cancellation).
//!
//! The core never names KMCL or WDF types. The glue implements:
//!
//! * [`HeldPacket`] over an incoming KMCL packet that is still owed its
//!   `VmbChannelPacketComplete` (a `kmcl` pending packet);
//! * [`ChannelSender`] over the KMCL channel's in-band send;
//! * [`UserRequest`] over a `WDFREQUEST` (kernel) or a simulated request (host).

use super::status::NtStatus;

/// Identifies the file object (user handle) a request came through.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FileId(pub u64);

/// Identifies a pending request (the `WDFREQUEST` handle value in the kernel), for
/// cancellation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RequestKey(pub u64);

/// Names a send that waits for its completion; handed to [`ChannelSender::send`] and
/// given back to `Bridge::send_completed`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SendTag(pub u64);

/// An incoming packet that has not been completed yet.
///
/// Holding one means KMCL is owed exactly one `VmbChannelPacketComplete`; the bridge
/// keeps it (uncompleted) until user mode reads it, which is what throttles the sender:
/// KMCL stops delivering at the transaction quota and the host's ring fills.
pub trait HeldPacket: Send {
    /// The in-band payload (valid until [`HeldPacket::complete`]).
    fn payload(&self) -> &[u8];

    /// `VmbChannelPacketComplete(packet, response, len)`: retires the packet and sends
    /// `response` back if the sender asked for a completion. IRQL <= DISPATCH_LEVEL.
    fn complete(self, response: &[u8]);

    /// True when the packet was already answered by other means (an IC request answered
    /// by its timeout, `driver/ic.rs`): [`Bridge::discard_stale`](super::Bridge::discard_stale)
    /// then drops it, uncompleted, so it neither fills the queue nor reaches a read.
    /// A KMCL packet is never stale (the default).
    fn is_stale(&self) -> bool {
        false
    }
}

/// The channel's send side.
pub trait ChannelSender {
    /// Sends `payload` in-band. With `completion = Some(tag)` the packet asks for a
    /// completion and the glue must later call `Bridge::send_completed(tag, ..)` exactly
    /// once (possibly before this call returns, on another processor); with `None` no
    /// completion is requested and none is reported.
    ///
    /// # Errors
    ///
    /// The KMCL status when the packet could not be sent (then no completion follows).
    fn send(&self, payload: &[u8], completion: Option<SendTag>) -> Result<(), NtStatus>;
}

/// A user-mode request (read, write or device control) owned by the bridge until it
/// completes it.
///
/// The bridge calls [`UserRequest::complete`] exactly once for every request it was
/// given, except one whose [`UserRequest::claim`] returned `false` (cancellation won;
/// the framework's cancel path completes it) — that one is dropped.
///
/// With `METHOD_BUFFERED` the input and output may be the same memory: the bridge never
/// holds [`UserRequest::input`] and [`UserRequest::output`] at the same time and reads
/// all input it needs before writing output.
pub trait UserRequest: Send {
    /// The key cancellation uses.
    fn key(&self) -> RequestKey;

    /// The input buffer (empty for reads).
    fn input(&self) -> &[u8];

    /// The output buffer (empty for writes).
    fn output(&mut self) -> &mut [u8];

    /// Makes the request cancelable before the bridge parks it
    /// (`WdfRequestMarkCancelableEx`); called with the bridge lock held, so it must not
    /// call the cancel routine synchronously.
    ///
    /// # Errors
    ///
    /// `STATUS_CANCELLED` if the request was already cancelled: the bridge then
    /// completes it with that status instead of parking it.
    fn park(&mut self) -> Result<(), NtStatus>;

    /// Takes a parked request back from cancellation (`WdfRequestUnmarkCancelable`);
    /// `false` when the cancel routine already owns it.
    fn claim(&mut self) -> bool;

    /// Completes the request (`WdfRequestCompleteWithInformation`). Any IRQL <=
    /// DISPATCH_LEVEL; the bridge never calls it with its lock held.
    fn complete(self, status: NtStatus, information: usize);
}
