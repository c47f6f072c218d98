//! [`Device`]: one open `vmbridge` handle and every request of the ABI.
//!
//! C header: `include/vmbridge.h` (the requests); `ioapiset.h` (`DeviceIoControl`).
//!
//! Every call builds its input with `vmbridge-abi`, submits it to the transport, waits
//! (with an optional timeout: on expiry the request is cancelled and its completion
//! awaited, so a packet that arrived in the race is returned, not lost), checks the
//! status and parses the output.

use std::cell::RefCell;
use std::io;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use vmbridge_abi::{
    IOCTL_VMBRIDGE_CREATE_OFFER, IOCTL_VMBRIDGE_GET_INFO, IOCTL_VMBRIDGE_GET_STATS,
    IOCTL_VMBRIDGE_READ, IOCTL_VMBRIDGE_READ_BATCH, IOCTL_VMBRIDGE_RESPOND, IOCTL_VMBRIDGE_SEND,
    IOCTL_VMBRIDGE_SEND_BATCH, NtStatus, VMBRIDGE_COMPLETION_HEADER, VMBRIDGE_CREATE_OFFER_REQUEST,
    VMBRIDGE_INFO, VMBRIDGE_OFFER_FLAG_PIPE, VMBRIDGE_PACKET_FLAG_RESPONSE_PENDING,
    VMBRIDGE_PACKET_HEADER, VMBRIDGE_READ_BATCH_FLAG_WAIT, VMBRIDGE_READ_BATCH_REQUEST,
    VMBRIDGE_READ_FLAG_HOLD_FOR_RESPONSE, VMBRIDGE_READ_REQUEST, VMBRIDGE_RESPOND_REQUEST,
    VMBRIDGE_SEND_FLAG_WAIT_FOR_COMPLETION, VMBRIDGE_SEND_REQUEST, VMBRIDGE_STATS,
    build_create_offer, build_send_batch, ioctl_name, parse_read_batch, read_batch_len_for,
};

use crate::error::{bad_output, driver_error};
use crate::transport::{Completion, CompletionStatus, Pending, Request, SharedRequest, Transport};

const HDR: usize = size_of::<VMBRIDGE_PACKET_HEADER>();
const CHDR: usize = size_of::<VMBRIDGE_COMPLETION_HEADER>();
/// Output size used before `IOCTL_VMBRIDGE_GET_INFO` told the real `MaxPacketSize`
/// (the driver's largest allowed value).
const FALLBACK_MAX_PACKET: u32 = 65536;

thread_local! {
    /// The input [`with_input`] builds: one buffer per thread, not one per request (the
    /// transport copies the input when it submits, as `DeviceIoControl` does).
    static INPUT: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Calls `f` with a request input: a `head_len`-byte header written by `head` (over
/// zeros) followed by `tail`, built in this thread's scratch buffer (a fresh one if `f`
/// itself builds an input).
fn with_input<T>(
    head_len: usize,
    head: impl FnOnce(&mut [u8]),
    tail: &[u8],
    f: impl FnOnce(&[u8]) -> T,
) -> T {
    let build = |b: &mut Vec<u8>| {
        b.clear();
        b.resize(head_len, 0);
        head(b);
        b.extend_from_slice(tail);
    };
    let mut head_and_f = Some((build, f));
    let r = INPUT.try_with(|cell| {
        let mut b = cell.try_borrow_mut().ok()?;
        let (build, f) = head_and_f.take()?;
        build(&mut b);
        Some(f(&b))
    });
    if let Ok(Some(r)) = r {
        return r;
    }
    let (build, f) = head_and_f.take().expect("not consumed without a result");
    let mut b = Vec::new();
    build(&mut b);
    f(&b)
}

/// The input of `IOCTL_VMBRIDGE_READ` (on the stack).
fn read_input(flags: u32) -> [u8; size_of::<VMBRIDGE_READ_REQUEST>()] {
    let mut b = [0u8; size_of::<VMBRIDGE_READ_REQUEST>()];
    VMBRIDGE_READ_REQUEST::new(flags).write_to(&mut b);
    b
}

/// `IOCTL_VMBRIDGE_SEND`'s input (header + `payload`) for `f`.
fn with_send_input<T>(flags: u32, payload: &[u8], f: impl FnOnce(&[u8]) -> T) -> T {
    with_input(
        size_of::<VMBRIDGE_SEND_REQUEST>(),
        |h| VMBRIDGE_SEND_REQUEST::new(flags, len32(payload.len())).write_to(h),
        payload,
        f,
    )
}

fn len32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// A packet a read returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packet {
    /// Its header (`PacketId` non-zero when held).
    pub header: VMBRIDGE_PACKET_HEADER,
    /// The payload (VMBus pads in-band payloads to 8 bytes with zeros).
    pub payload: Vec<u8>,
}

impl Packet {
    /// Whether the packet is held for [`Device::respond`].
    #[must_use]
    pub const fn is_held(&self) -> bool {
        self.header.Flags & VMBRIDGE_PACKET_FLAG_RESPONSE_PENDING != 0
    }
}

/// The other side's completion of a waiting send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SendCompletion {
    /// The `NTSTATUS` KMCL reported for the send.
    pub status: NtStatus,
    /// The response (possibly empty).
    pub response: Vec<u8>,
}

/// Options of [`Device::read_batch`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchOptions {
    /// Hold every packet of the batch for [`Device::respond`].
    pub hold: bool,
    /// Pend until at least one packet is queued (else an empty queue returns no packets).
    pub wait: bool,
    /// At most this many packets (0: as many as fit).
    pub max_packets: u32,
    /// Output buffer bytes (grown to what the driver reports when the oldest packet does
    /// not fit).
    pub buffer_len: usize,
}

impl Default for BatchOptions {
    fn default() -> Self {
        Self {
            hold: false,
            wait: true,
            max_packets: 0,
            buffer_len: 64 * 1024,
        }
    }
}

/// A host-mode offer (`IOCTL_VMBRIDGE_CREATE_OFFER`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OfferRequest {
    /// Interface type GUID (reading order).
    pub interface_type: u128,
    /// Interface instance GUID (reading order).
    pub instance: u128,
    /// Offer as a pipe.
    pub pipe: bool,
    /// The VM's VMBus handle, valid in this process.
    pub vmbus_handle: u64,
}

/// One open `vmbridge` handle. `'t` is how long the transport lives (`'static` for a
/// Windows handle; a simulated driver the caller owns may lend it for less).
pub struct Device<'t> {
    transport: Box<dyn Transport + 't>,
    max_packet: OnceLock<u32>,
    /// Payload bytes a read's buffer holds; 0: `MaxPacketSize`.
    read_capacity: AtomicU32,
}

impl std::fmt::Debug for Device<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device")
            .field("max_packet", &self.max_packet.get())
            .finish_non_exhaustive()
    }
}

fn timed_out(op: &str, timeout: Option<Duration>) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!(
            "{op}: no completion within {:.3} s (request cancelled)",
            timeout.unwrap_or_default().as_secs_f64()
        ),
    )
}

/// Waits for `p` up to `timeout`; on expiry cancels it and returns what it completed
/// with (its result when completion won the race, else `STATUS_CANCELLED`).
fn finish(p: &mut dyn Pending, timeout: Option<Duration>) -> io::Result<(Completion, bool)> {
    if let Some(c) = p.wait(timeout)? {
        return Ok((c, false));
    }
    p.cancel();
    let c = p
        .wait(None)?
        .ok_or_else(|| io::Error::other("a cancelled request never completed"))?;
    Ok((c, true))
}

/// How many times a read or a batched read is submitted, counting the retries with the
/// size the driver named. The driver names that size with the packet still queued, so one
/// retry succeeds unless another reader of the device took the packet meanwhile and an
/// even larger one is the oldest now. A driver that keeps naming larger sizes (a bug, or
/// another ABI) gets its last status back as an error instead of an endless loop of ever
/// larger buffers.
const SIZED_ATTEMPTS: usize = 3;

/// The end of a wait of `timeout` from now (`None`: no end, as for `None`, or a timeout
/// so long that no `Instant` holds its end).
fn deadline(timeout: Option<Duration>) -> Option<Instant> {
    timeout.and_then(|t| Instant::now().checked_add(t))
}

/// What is left of the wait ending at `end`, for a request submitted again: a retry does
/// not restart the caller's timeout.
fn remaining(timeout: Option<Duration>, end: Option<Instant>) -> Option<Duration> {
    match (timeout, end) {
        (Some(_), Some(end)) => Some(end.saturating_duration_since(Instant::now())),
        _ => timeout,
    }
}

/// An output size the driver asked for (`Information` of `STATUS_BUFFER_TOO_SMALL`, or
/// header + `PayloadLength` with `STATUS_BUFFER_OVERFLOW`), before it is allocated and
/// asked again: an output buffer's length is a `DWORD` (`DeviceIoControl`'s
/// `nOutBufferSize`), so a larger size is not believed (`InvalidData`), rather than
/// allocated or overflowing the allocation's size.
fn reported_out_len(op: &'static str, status: NtStatus, need: usize) -> io::Result<usize> {
    if u32::try_from(need).is_ok() {
        Ok(need)
    } else {
        Err(bad_output(op, status))
    }
}

fn check(op: &'static str, c: &Completion) -> io::Result<()> {
    check_status(op, &c.status())
}

fn check_status(op: &'static str, c: &CompletionStatus) -> io::Result<()> {
    if c.status.is_success() {
        Ok(())
    } else {
        Err(driver_error(op, c.status, c.win32))
    }
}

/// Parses a read's output `out`: its header and its payload (borrowed from `out`).
fn parse_packet<'o>(
    op: &'static str,
    out: &'o [u8],
) -> io::Result<(VMBRIDGE_PACKET_HEADER, &'o [u8])> {
    let header = VMBRIDGE_PACKET_HEADER::parse(out).map_err(|s| bad_output(op, s))?;
    let payload = out
        .get(HDR..HDR + header.PayloadLength as usize)
        .ok_or_else(|| bad_output(op, NtStatus::INVALID_BUFFER_SIZE))?;
    Ok((header, payload))
}

/// Parses the read output in `out` and turns `out` into the payload (moved to the front,
/// no allocation); returns the header.
fn packet_in_place(op: &'static str, out: &mut Vec<u8>) -> io::Result<VMBRIDGE_PACKET_HEADER> {
    let (header, payload) = parse_packet(op, out)?;
    let n = payload.len();
    out.copy_within(HDR..HDR + n, 0);
    out.truncate(n);
    Ok(header)
}

/// As [`check_status`] and [`packet_in_place`] over a read's output lent in place
/// (`out`): the payload is copied into `payload` (its contents replaced); on an error
/// `payload` holds the output as [`packet_in_place`] would have left it.
fn payload_from(
    op: &'static str,
    c: &CompletionStatus,
    out: &[u8],
    payload: &mut Vec<u8>,
) -> io::Result<VMBRIDGE_PACKET_HEADER> {
    payload.clear();
    let parsed = check_status(op, c).and_then(|()| {
        let (header, body) = parse_packet(op, out)?;
        payload.extend_from_slice(body);
        Ok(header)
    });
    if parsed.is_err() {
        payload.extend_from_slice(out);
    }
    parsed
}

/// Checks a batched read's completion and lends its packets to `each` in order; the
/// whole batch is validated first, so `each` sees a well-formed batch or nothing.
fn lend_batch(
    op: &'static str,
    c: &CompletionStatus,
    out: &[u8],
    each: &mut impl FnMut(VMBRIDGE_PACKET_HEADER, &[u8]),
) -> io::Result<usize> {
    check_status(op, c)?;
    let packets = parse_read_batch(out).map_err(|s| bad_output(op, s))?;
    let mut n = 0;
    for r in packets.clone() {
        r.map_err(|s| bad_output(op, s))?;
        n += 1;
    }
    for (header, payload) in packets.flatten() {
        each(header, payload);
    }
    Ok(n)
}

/// A submitted request: shared state of its transport ([`Transport::submit_shared`]: no
/// allocation) or a boxed [`Pending`].
enum Submitted<'d> {
    Shared {
        transport: &'d dyn Transport,
        /// `Some` until dropped (the drop hands it back to the transport).
        req: Option<SharedRequest>,
    },
    Boxed(Box<dyn Pending + 'd>),
}

impl<'d> Submitted<'d> {
    /// Submits `req` on `transport`, shared if the transport makes shared requests.
    fn new(transport: &'d dyn Transport, req: Request<'_>) -> io::Result<Self> {
        match transport.submit_shared(req) {
            Some(r) => Ok(Submitted::Shared {
                transport,
                req: Some(r?),
            }),
            None => transport.submit(req).map(Submitted::Boxed),
        }
    }

    fn wait_into(
        &mut self,
        timeout: Option<Duration>,
        output: &mut Vec<u8>,
    ) -> io::Result<Option<CompletionStatus>> {
        match self {
            Submitted::Shared {
                transport,
                req: Some(r),
            } => transport.shared_wait_into(r, timeout, output),
            Submitted::Shared { req: None, .. } => Err(io::Error::other("request dropped")),
            Submitted::Boxed(p) => p.wait_into(timeout, output),
        }
    }

    fn cancel(&mut self) {
        match self {
            Submitted::Shared {
                transport,
                req: Some(r),
            } => transport.shared_cancel(r),
            Submitted::Shared { req: None, .. } => {}
            Submitted::Boxed(p) => p.cancel(),
        }
    }
}

impl Drop for Submitted<'_> {
    fn drop(&mut self) {
        if let Submitted::Shared { transport, req } = self
            && let Some(r) = req.take()
        {
            transport.shared_drop(r);
        }
    }
}

/// An outstanding read ([`Device::start_read`]).
pub struct PendingRead<'d> {
    pending: Submitted<'d>,
}

impl std::fmt::Debug for PendingRead<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingRead").finish_non_exhaustive()
    }
}

impl PendingRead<'_> {
    /// Waits up to `timeout` (`None`: forever); `Ok(None)` if the read is still pending.
    ///
    /// # Errors
    ///
    /// The read's failure status (`STATUS_BUFFER_OVERFLOW` if the packet was larger
    /// than `MaxPacketSize` said, `STATUS_CANCELLED`, `STATUS_DEVICE_NOT_CONNECTED`, ...).
    pub fn wait(&mut self, timeout: Option<Duration>) -> io::Result<Option<Packet>> {
        let mut payload = Vec::new();
        Ok(self
            .wait_into(timeout, &mut payload)?
            .map(|header| Packet { header, payload }))
    }

    /// As [`PendingRead::wait`], the payload going into `payload` (its contents replaced,
    /// its allocation reused: a reader that keeps one buffer allocates nothing per
    /// packet); returns the packet's header.
    ///
    /// # Errors
    ///
    /// As [`PendingRead::wait`].
    pub fn wait_into(
        &mut self,
        timeout: Option<Duration>,
        payload: &mut Vec<u8>,
    ) -> io::Result<Option<VMBRIDGE_PACKET_HEADER>> {
        let op = ioctl_name(IOCTL_VMBRIDGE_READ);
        if let Submitted::Shared {
            transport,
            req: Some(r),
        } = &self.pending
        {
            // The output lent in place: only the payload is copied (no copy of the whole
            // output and move of the payload to the front).
            let mut read = None;
            transport.shared_wait_with(r, timeout, &mut |c, out| {
                read = Some(payload_from(op, &c, out, payload));
            })?;
            return read.transpose();
        }
        let Some(c) = self.pending.wait_into(timeout, payload)? else {
            return Ok(None);
        };
        check_status(op, &c)?;
        packet_in_place(op, payload).map(Some)
    }

    /// Cancels the read (`CancelIoEx`); [`PendingRead::wait`] then returns its end.
    pub fn cancel(&mut self) {
        self.pending.cancel();
    }
}

/// An outstanding waiting send ([`Device::start_send_wait`]).
pub struct PendingSend<'d> {
    pending: Submitted<'d>,
}

impl std::fmt::Debug for PendingSend<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingSend").finish_non_exhaustive()
    }
}

/// Parses a waiting send's output in `out` and turns `out` into the response (moved to
/// the front, no allocation); returns the other side's status.
fn send_completion_in_place(c: &CompletionStatus, out: &mut Vec<u8>) -> io::Result<NtStatus> {
    let op = ioctl_name(IOCTL_VMBRIDGE_SEND);
    check_status(op, c)?;
    let h = VMBRIDGE_COMPLETION_HEADER::parse(out).map_err(|s| bad_output(op, s))?;
    let end = CHDR + h.ResponseLength as usize;
    if out.len() < end {
        return Err(bad_output(op, NtStatus::INVALID_BUFFER_SIZE));
    }
    out.copy_within(CHDR..end, 0);
    out.truncate(end - CHDR);
    Ok(NtStatus::from_raw(h.Status))
}

impl PendingSend<'_> {
    /// Waits up to `timeout` for the other side's completion; `Ok(None)` if pending.
    ///
    /// # Errors
    ///
    /// The request's failure status.
    pub fn wait(&mut self, timeout: Option<Duration>) -> io::Result<Option<SendCompletion>> {
        let mut response = Vec::new();
        Ok(self
            .wait_into(timeout, &mut response)?
            .map(|status| SendCompletion { status, response }))
    }

    /// As [`PendingSend::wait`], the response going into `response` (its contents
    /// replaced, its allocation reused); returns the other side's status.
    ///
    /// # Errors
    ///
    /// As [`PendingSend::wait`].
    pub fn wait_into(
        &mut self,
        timeout: Option<Duration>,
        response: &mut Vec<u8>,
    ) -> io::Result<Option<NtStatus>> {
        match self.pending.wait_into(timeout, response)? {
            None => Ok(None),
            Some(c) => send_completion_in_place(&c, response).map(Some),
        }
    }

    /// Cancels the send's wait (the packet itself was sent).
    pub fn cancel(&mut self) {
        self.pending.cancel();
    }
}

impl<'t> Device<'t> {
    /// A device over `transport` (one open handle).
    #[must_use]
    pub fn new(transport: Box<dyn Transport + 't>) -> Self {
        Self {
            transport,
            max_packet: OnceLock::new(),
            read_capacity: AtomicU32::new(0),
        }
    }

    /// Sizes the buffers of single reads for payloads of up to `bytes` (default, 0: the
    /// device's `MaxPacketSize`). `MaxPacketSize` bounds what user mode sends; the other
    /// side may send larger packets (up to what the ring carries). A packet larger than
    /// the buffer stays queued: [`Device::read`] retries with the size the driver
    /// reports, a [`PendingRead`] ends with `STATUS_BUFFER_OVERFLOW`.
    pub fn set_read_capacity(&self, bytes: u32) {
        self.read_capacity.store(bytes, Ordering::Relaxed);
    }

    fn read_len(&self) -> usize {
        match self.read_capacity.load(Ordering::Relaxed) {
            0 => HDR + self.max_packet() as usize,
            n => HDR + n as usize,
        }
    }

    /// `DeviceIoControl(code, input, out_len)`, waiting up to `timeout`; the output
    /// goes into `output` (see [`Transport::call_into`]).
    fn call_into(
        &self,
        code: u32,
        input: &[u8],
        out_len: usize,
        timeout: Option<Duration>,
        output: &mut Vec<u8>,
    ) -> io::Result<CompletionStatus> {
        let (c, cancelled) = self.transport.call_into(
            Request::Ioctl {
                code,
                input,
                out_len,
            },
            timeout,
            output,
        )?;
        if cancelled && c.status == NtStatus::CANCELLED {
            return Err(timed_out(ioctl_name(code), timeout));
        }
        Ok(c)
    }

    /// As [`Device::call_into`], for requests without output to keep: checks the status.
    fn call_checked(
        &self,
        code: u32,
        input: &[u8],
        out_len: usize,
        op: &'static str,
    ) -> io::Result<CompletionStatus> {
        let c = self.call_status(Request::Ioctl {
            code,
            input,
            out_len,
        })?;
        check_status(op, &c)?;
        Ok(c)
    }

    /// A synchronous request whose output is not kept, waiting without a timeout: how it
    /// ended (the output lent by the transport, [`Transport::call_with`], not copied).
    fn call_status(&self, req: Request<'_>) -> io::Result<CompletionStatus> {
        let mut status = None;
        self.transport
            .call_with(req, None, &mut |c, _| status = Some(c))?;
        status.ok_or_else(|| io::Error::other("a request ended without its completion"))
    }

    fn call(
        &self,
        code: u32,
        input: &[u8],
        out_len: usize,
        timeout: Option<Duration>,
    ) -> io::Result<Completion> {
        let mut output = Vec::new();
        let c = self.call_into(code, input, out_len, timeout, &mut output)?;
        Ok(Completion {
            status: c.status,
            information: c.information,
            output,
            win32: c.win32,
        })
    }

    /// The driver's `MaxPacketSize` (asked once).
    fn max_packet(&self) -> u32 {
        if let Some(m) = self.max_packet.get() {
            return *m;
        }
        match self.info() {
            Ok(i) => *self.max_packet.get_or_init(|| i.MaxPacketSize),
            Err(_) => FALLBACK_MAX_PACKET,
        }
    }

    /// `IOCTL_VMBRIDGE_GET_INFO`: configuration, channel state, ABI version.
    ///
    /// # Errors
    ///
    /// The request's status; `InvalidData` if the block does not parse.
    pub fn info(&self) -> io::Result<VMBRIDGE_INFO> {
        let op = ioctl_name(IOCTL_VMBRIDGE_GET_INFO);
        let c = self.call(
            IOCTL_VMBRIDGE_GET_INFO,
            &[],
            size_of::<VMBRIDGE_INFO>(),
            None,
        )?;
        check(op, &c)?;
        let info = VMBRIDGE_INFO::parse(&c.output).map_err(|s| bad_output(op, s))?;
        let _ = self.max_packet.set(info.MaxPacketSize);
        Ok(info)
    }

    /// `IOCTL_VMBRIDGE_GET_STATS`: the counters.
    ///
    /// # Errors
    ///
    /// The request's status; `InvalidData` if the block does not parse.
    pub fn stats(&self) -> io::Result<VMBRIDGE_STATS> {
        let op = ioctl_name(IOCTL_VMBRIDGE_GET_STATS);
        let c = self.call(
            IOCTL_VMBRIDGE_GET_STATS,
            &[],
            size_of::<VMBRIDGE_STATS>(),
            None,
        )?;
        check(op, &c)?;
        VMBRIDGE_STATS::parse(&c.output).map_err(|s| bad_output(op, s))
    }

    fn read_flags(&self, flags: u32, timeout: Option<Duration>) -> io::Result<Packet> {
        let mut payload = Vec::new();
        let header = self.read_flags_into(flags, timeout, &mut payload)?;
        Ok(Packet { header, payload })
    }

    fn read_flags_into(
        &self,
        flags: u32,
        timeout: Option<Duration>,
        payload: &mut Vec<u8>,
    ) -> io::Result<VMBRIDGE_PACKET_HEADER> {
        let op = ioctl_name(IOCTL_VMBRIDGE_READ);
        let input = read_input(flags);
        let mut out_len = self.read_len();
        let end = deadline(timeout);
        for _ in 0..SIZED_ATTEMPTS {
            let left = remaining(timeout, end);
            let c = self.call_into(IOCTL_VMBRIDGE_READ, &input, out_len, left, payload)?;
            if c.status == NtStatus::BUFFER_OVERFLOW {
                // The packet stays queued; the header says how much room it needs.
                let h = VMBRIDGE_PACKET_HEADER::parse(payload).map_err(|s| bad_output(op, s))?;
                let need = reported_out_len(op, c.status, HDR + h.PayloadLength as usize)?;
                if need <= out_len {
                    return Err(bad_output(op, NtStatus::BUFFER_OVERFLOW));
                }
                out_len = need;
                continue;
            }
            check_status(op, &c)?;
            return packet_in_place(op, payload);
        }
        Err(driver_error(op, NtStatus::BUFFER_OVERFLOW, None))
    }

    /// `IOCTL_VMBRIDGE_READ`: the oldest packet, completed as it is read. Blocks up to
    /// `timeout` (`None`: until a packet arrives).
    ///
    /// # Errors
    ///
    /// `TimedOut`; the request's status (`STATUS_DEVICE_NOT_CONNECTED` after a rescind).
    pub fn read(&self, timeout: Option<Duration>) -> io::Result<Packet> {
        self.read_flags(0, timeout)
    }

    /// `IOCTL_VMBRIDGE_READ` with `VMBRIDGE_READ_FLAG_HOLD_FOR_RESPONSE`: the packet stays
    /// uncompleted until [`Device::respond`] (or this handle closes).
    ///
    /// # Errors
    ///
    /// As [`Device::read`].
    pub fn read_held(&self, timeout: Option<Duration>) -> io::Result<Packet> {
        self.read_flags(VMBRIDGE_READ_FLAG_HOLD_FOR_RESPONSE, timeout)
    }

    /// As [`Device::read`] (`hold`: [`Device::read_held`]), the payload going into
    /// `payload` (its contents replaced, its allocation reused: a reader that keeps one
    /// buffer allocates nothing per packet); returns the packet's header.
    ///
    /// # Errors
    ///
    /// As [`Device::read`].
    pub fn read_into(
        &self,
        hold: bool,
        timeout: Option<Duration>,
        payload: &mut Vec<u8>,
    ) -> io::Result<VMBRIDGE_PACKET_HEADER> {
        let flags = if hold {
            VMBRIDGE_READ_FLAG_HOLD_FOR_RESPONSE
        } else {
            0
        };
        self.read_flags_into(flags, timeout, payload)
    }

    /// Starts a read and returns at once (overlapped): several reads and sends can be
    /// outstanding together.
    ///
    /// # Errors
    ///
    /// The transport could not submit it.
    pub fn start_read(&self, hold: bool) -> io::Result<PendingRead<'_>> {
        let flags = if hold {
            VMBRIDGE_READ_FLAG_HOLD_FOR_RESPONSE
        } else {
            0
        };
        let input = read_input(flags);
        let pending = Submitted::new(
            &*self.transport,
            Request::Ioctl {
                code: IOCTL_VMBRIDGE_READ,
                input: &input,
                out_len: self.read_len(),
            },
        )?;
        Ok(PendingRead { pending })
    }

    /// `IOCTL_VMBRIDGE_READ_BATCH`: as many queued packets as fit in
    /// `opts.buffer_len` bytes. When the oldest packet alone does not fit, the driver
    /// answers `STATUS_BUFFER_TOO_SMALL` with the size it needs and this call retries
    /// with that size (nothing is lost).
    ///
    /// # Errors
    ///
    /// `TimedOut` (with `opts.wait`); the request's status.
    pub fn read_batch(
        &self,
        opts: BatchOptions,
        timeout: Option<Duration>,
    ) -> io::Result<Vec<Packet>> {
        let mut packets = Vec::new();
        self.read_batch_with(opts, timeout, |header, payload| {
            packets.push(Packet {
                header,
                payload: payload.to_vec(),
            });
        })?;
        Ok(packets)
    }

    /// As [`Device::read_batch`], each packet lent to `each` (header and payload, in
    /// order) instead of copied out: the payloads are read in place in the transport's
    /// output buffer ([`Transport::call_with`]), so a batch copies and allocates nothing
    /// on the client's side. Returns how many packets the batch held.
    ///
    /// # Errors
    ///
    /// As [`Device::read_batch`] (a malformed batch is reported before `each` runs).
    pub fn read_batch_with(
        &self,
        opts: BatchOptions,
        timeout: Option<Duration>,
        mut each: impl FnMut(VMBRIDGE_PACKET_HEADER, &[u8]),
    ) -> io::Result<usize> {
        let op = ioctl_name(IOCTL_VMBRIDGE_READ_BATCH);
        let mut flags = 0;
        if opts.hold {
            flags |= VMBRIDGE_READ_FLAG_HOLD_FOR_RESPONSE;
        }
        if opts.wait {
            flags |= VMBRIDGE_READ_BATCH_FLAG_WAIT;
        }
        let mut input = [0u8; size_of::<VMBRIDGE_READ_BATCH_REQUEST>()];
        VMBRIDGE_READ_BATCH_REQUEST::new(flags, opts.max_packets).write_to(&mut input);
        let mut out_len = opts.buffer_len.max(read_batch_len_for(0));
        let end = deadline(timeout);
        for _ in 0..SIZED_ATTEMPTS {
            let left = remaining(timeout, end);
            let mut status = NtStatus::SUCCESS;
            let mut retry = None;
            let mut outcome: io::Result<usize> = Ok(0);
            // The transport lends its output buffer: the packets are parsed in place.
            let cancelled = self.transport.call_with(
                Request::Ioctl {
                    code: IOCTL_VMBRIDGE_READ_BATCH,
                    input: &input,
                    out_len,
                },
                left,
                &mut |c, out| {
                    status = c.status;
                    if c.status == NtStatus::BUFFER_TOO_SMALL && c.information > out_len {
                        outcome = reported_out_len(op, c.status, c.information).map(|need| {
                            retry = Some(need);
                            0
                        });
                        return;
                    }
                    outcome = lend_batch(op, &c, out, &mut each);
                },
            )?;
            if cancelled && status == NtStatus::CANCELLED {
                return Err(timed_out(op, timeout));
            }
            match retry {
                Some(need) => out_len = need,
                None => return outcome,
            }
        }
        Err(driver_error(op, NtStatus::BUFFER_TOO_SMALL, None))
    }

    /// `IOCTL_VMBRIDGE_RESPOND`: completes held packet `packet_id` with `response`.
    ///
    /// # Errors
    ///
    /// `STATUS_NOT_FOUND` (no such held packet on this handle), `STATUS_INVALID_PARAMETER`
    /// (id 0), `STATUS_INVALID_BUFFER_SIZE` (response above `MaxPacketSize`).
    pub fn respond(&self, packet_id: u64, response: &[u8]) -> io::Result<()> {
        with_input(
            size_of::<VMBRIDGE_RESPOND_REQUEST>(),
            |h| VMBRIDGE_RESPOND_REQUEST::new(packet_id, len32(response.len())).write_to(h),
            response,
            |input| {
                let op = ioctl_name(IOCTL_VMBRIDGE_RESPOND);
                self.call_checked(IOCTL_VMBRIDGE_RESPOND, input, 0, op)
                    .map(|_| ())
            },
        )
    }

    /// `IOCTL_VMBRIDGE_SEND`: sends `payload` in-band, no completion requested.
    ///
    /// # Errors
    ///
    /// `STATUS_INVALID_BUFFER_SIZE` (above `MaxPacketSize`), `STATUS_DEVICE_NOT_READY`,
    /// `STATUS_DEVICE_NOT_CONNECTED`, KMCL's send status.
    pub fn send(&self, payload: &[u8]) -> io::Result<()> {
        with_send_input(0, payload, |input| {
            let op = ioctl_name(IOCTL_VMBRIDGE_SEND);
            self.call_checked(IOCTL_VMBRIDGE_SEND, input, 0, op)
                .map(|_| ())
        })
    }

    /// `WriteFile`: sends `payload` in-band; returns the bytes written.
    ///
    /// # Errors
    ///
    /// As [`Device::send`].
    pub fn write(&self, payload: &[u8]) -> io::Result<usize> {
        let c = self.call_status(Request::Write { data: payload })?;
        check_status("WriteFile", &c)?;
        Ok(c.information)
    }

    /// Starts a waiting send (overlapped) and returns at once.
    ///
    /// # Errors
    ///
    /// The transport could not submit it.
    pub fn start_send_wait(&self, payload: &[u8]) -> io::Result<PendingSend<'_>> {
        let out_len = CHDR + self.max_packet() as usize;
        let pending = with_send_input(VMBRIDGE_SEND_FLAG_WAIT_FOR_COMPLETION, payload, |input| {
            Submitted::new(
                &*self.transport,
                Request::Ioctl {
                    code: IOCTL_VMBRIDGE_SEND,
                    input,
                    out_len,
                },
            )
        })?;
        Ok(PendingSend { pending })
    }

    /// `IOCTL_VMBRIDGE_SEND` with `VMBRIDGE_SEND_FLAG_WAIT_FOR_COMPLETION`: sends
    /// `payload` and waits up to `timeout` for the other side's completion.
    ///
    /// # Errors
    ///
    /// `TimedOut`; as [`Device::send`]; `STATUS_DEVICE_BUSY` when `MaxPendingSends`
    /// sends already wait.
    pub fn send_wait(
        &self,
        payload: &[u8],
        timeout: Option<Duration>,
    ) -> io::Result<SendCompletion> {
        let out_len = CHDR + self.max_packet() as usize;
        let mut response = Vec::new();
        let c = with_send_input(VMBRIDGE_SEND_FLAG_WAIT_FOR_COMPLETION, payload, |input| {
            self.call_into(IOCTL_VMBRIDGE_SEND, input, out_len, timeout, &mut response)
        })?;
        let status = send_completion_in_place(&c, &mut response)?;
        Ok(SendCompletion { status, response })
    }

    /// `IOCTL_VMBRIDGE_SEND_BATCH`: sends every payload in order, no completions
    /// requested; returns how many were sent.
    ///
    /// # Errors
    ///
    /// A validation status (nothing sent), or the first failing send's status (the
    /// packets before it were sent).
    pub fn send_batch<P: AsRef<[u8]>>(&self, payloads: &[P]) -> io::Result<usize> {
        let c = self.call(
            IOCTL_VMBRIDGE_SEND_BATCH,
            build_send_batch(payloads).as_slice(),
            0,
            None,
        )?;
        check(ioctl_name(IOCTL_VMBRIDGE_SEND_BATCH), &c)?;
        Ok(c.information)
    }

    /// Host mode: `IOCTL_VMBRIDGE_CREATE_OFFER` on a control-device handle. From then on
    /// this handle reads and sends on the offer's channel; closing it rescinds the offer.
    ///
    /// # Errors
    ///
    /// `STATUS_INVALID_PARAMETER` (zero type, handle 0), `STATUS_INVALID_DEVICE_STATE`
    /// (a second offer on this handle), `STATUS_INVALID_HANDLE` (not this process's
    /// VMBus handle), KMCL's status.
    pub fn create_offer(&self, offer: &OfferRequest) -> io::Result<()> {
        let flags = if offer.pipe {
            VMBRIDGE_OFFER_FLAG_PIPE
        } else {
            0
        };
        let r = VMBRIDGE_CREATE_OFFER_REQUEST::new(
            flags,
            offer.interface_type,
            offer.instance,
            offer.vmbus_handle,
        );
        let c = self.call(
            IOCTL_VMBRIDGE_CREATE_OFFER,
            build_create_offer(&r).as_slice(),
            0,
            None,
        )?;
        check(ioctl_name(IOCTL_VMBRIDGE_CREATE_OFFER), &c)
    }

    /// Any request, raw (for tools and tests that exercise the driver's validation).
    ///
    /// # Errors
    ///
    /// The transport could not submit or wait; the completion carries the status.
    pub fn raw(&self, req: Request<'_>, timeout: Option<Duration>) -> io::Result<Completion> {
        let mut p = self.transport.submit(req)?;
        finish(p.as_mut(), timeout).map(|(c, _)| c)
    }
}
