//! [`Device`]: one open `vmbridge` handle and every request of the ABI.
//!
//! C header: `include/vmbridge.h` (the requests); `ioapiset.h` (`DeviceIoControl`).
//!
//! Every call builds its input with `vmbridge-abi`, submits it to the transport, waits
//! (with an optional timeout: on expiry the request is cancelled and its completion
//! awaited, so a packet that arrived in the race is returned, not lost), checks the
//! status and parses the output.

use std::io;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use vmbridge_abi::{
    IOCTL_VMBRIDGE_CREATE_OFFER, IOCTL_VMBRIDGE_GET_INFO, IOCTL_VMBRIDGE_GET_STATS,
    IOCTL_VMBRIDGE_READ, IOCTL_VMBRIDGE_READ_BATCH, IOCTL_VMBRIDGE_RESPOND, IOCTL_VMBRIDGE_SEND,
    IOCTL_VMBRIDGE_SEND_BATCH, NtStatus, VMBRIDGE_COMPLETION_HEADER, VMBRIDGE_CREATE_OFFER_REQUEST,
    VMBRIDGE_INFO, VMBRIDGE_OFFER_FLAG_PIPE, VMBRIDGE_PACKET_FLAG_RESPONSE_PENDING,
    VMBRIDGE_PACKET_HEADER, VMBRIDGE_READ_BATCH_FLAG_WAIT, VMBRIDGE_READ_FLAG_HOLD_FOR_RESPONSE,
    VMBRIDGE_SEND_FLAG_WAIT_FOR_COMPLETION, VMBRIDGE_STATS, build_create_offer, build_read,
    build_read_batch, build_respond, build_send, build_send_batch, ioctl_name, parse_read_batch,
    read_batch_len_for,
};

use crate::error::{bad_output, driver_error};
use crate::transport::{Completion, Pending, Request, Transport};

const HDR: usize = size_of::<VMBRIDGE_PACKET_HEADER>();
const CHDR: usize = size_of::<VMBRIDGE_COMPLETION_HEADER>();
/// Output size used before `IOCTL_VMBRIDGE_GET_INFO` told the real `MaxPacketSize`
/// (the driver's largest allowed value).
const FALLBACK_MAX_PACKET: u32 = 65536;

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

fn check(op: &'static str, c: &Completion) -> io::Result<()> {
    if c.status.is_success() {
        Ok(())
    } else {
        Err(driver_error(op, c.status, c.win32))
    }
}

fn parse_packet(op: &'static str, out: &[u8]) -> io::Result<Packet> {
    let header = VMBRIDGE_PACKET_HEADER::parse(out).map_err(|s| bad_output(op, s))?;
    let payload = out
        .get(HDR..HDR + header.PayloadLength as usize)
        .ok_or_else(|| bad_output(op, NtStatus::INVALID_BUFFER_SIZE))?
        .to_vec();
    Ok(Packet { header, payload })
}

/// An outstanding read ([`Device::start_read`]).
pub struct PendingRead<'d> {
    pending: Box<dyn Pending + 'd>,
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
        let op = ioctl_name(IOCTL_VMBRIDGE_READ);
        let Some(c) = self.pending.wait(timeout)? else {
            return Ok(None);
        };
        check(op, &c)?;
        parse_packet(op, &c.output).map(Some)
    }

    /// Cancels the read (`CancelIoEx`); [`PendingRead::wait`] then returns its end.
    pub fn cancel(&mut self) {
        self.pending.cancel();
    }
}

/// An outstanding waiting send ([`Device::start_send_wait`]).
pub struct PendingSend<'d> {
    pending: Box<dyn Pending + 'd>,
}

impl std::fmt::Debug for PendingSend<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingSend").finish_non_exhaustive()
    }
}

fn parse_send_completion(c: &Completion) -> io::Result<SendCompletion> {
    let op = ioctl_name(IOCTL_VMBRIDGE_SEND);
    check(op, c)?;
    let h = VMBRIDGE_COMPLETION_HEADER::parse(&c.output).map_err(|s| bad_output(op, s))?;
    let response = c
        .output
        .get(CHDR..CHDR + h.ResponseLength as usize)
        .ok_or_else(|| bad_output(op, NtStatus::INVALID_BUFFER_SIZE))?
        .to_vec();
    Ok(SendCompletion {
        status: NtStatus::from_raw(h.Status),
        response,
    })
}

impl PendingSend<'_> {
    /// Waits up to `timeout` for the other side's completion; `Ok(None)` if pending.
    ///
    /// # Errors
    ///
    /// The request's failure status.
    pub fn wait(&mut self, timeout: Option<Duration>) -> io::Result<Option<SendCompletion>> {
        match self.pending.wait(timeout)? {
            None => Ok(None),
            Some(c) => parse_send_completion(&c).map(Some),
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

    fn call(
        &self,
        code: u32,
        input: &[u8],
        out_len: usize,
        timeout: Option<Duration>,
    ) -> io::Result<Completion> {
        let mut p = self.transport.submit(Request::Ioctl {
            code,
            input,
            out_len,
        })?;
        let (c, cancelled) = finish(p.as_mut(), timeout)?;
        if cancelled && c.status == NtStatus::CANCELLED {
            return Err(timed_out(ioctl_name(code), timeout));
        }
        Ok(c)
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
        let op = ioctl_name(IOCTL_VMBRIDGE_READ);
        let input = build_read(flags);
        let mut out_len = self.read_len();
        loop {
            let c = self.call(IOCTL_VMBRIDGE_READ, input.as_slice(), out_len, timeout)?;
            if c.status == NtStatus::BUFFER_OVERFLOW {
                // The packet stays queued; the header says how much room it needs.
                let h = VMBRIDGE_PACKET_HEADER::parse(&c.output).map_err(|s| bad_output(op, s))?;
                let need = HDR + h.PayloadLength as usize;
                if need <= out_len {
                    return Err(bad_output(op, NtStatus::BUFFER_OVERFLOW));
                }
                out_len = need;
                continue;
            }
            check(op, &c)?;
            return parse_packet(op, &c.output);
        }
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
        let input = build_read(flags);
        let pending = self.transport.submit(Request::Ioctl {
            code: IOCTL_VMBRIDGE_READ,
            input: input.as_slice(),
            out_len: self.read_len(),
        })?;
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
        let op = ioctl_name(IOCTL_VMBRIDGE_READ_BATCH);
        let mut flags = 0;
        if opts.hold {
            flags |= VMBRIDGE_READ_FLAG_HOLD_FOR_RESPONSE;
        }
        if opts.wait {
            flags |= VMBRIDGE_READ_BATCH_FLAG_WAIT;
        }
        let input = build_read_batch(flags, opts.max_packets);
        let mut out_len = opts.buffer_len.max(read_batch_len_for(0));
        for _ in 0..2 {
            let c = self.call(
                IOCTL_VMBRIDGE_READ_BATCH,
                input.as_slice(),
                out_len,
                timeout,
            )?;
            if c.status == NtStatus::BUFFER_TOO_SMALL && c.information > out_len {
                out_len = c.information;
                continue;
            }
            check(op, &c)?;
            let packets = parse_read_batch(&c.output).map_err(|s| bad_output(op, s))?;
            return packets
                .map(|r| {
                    r.map(|(header, payload)| Packet {
                        header,
                        payload: payload.to_vec(),
                    })
                    .map_err(|s| bad_output(op, s))
                })
                .collect();
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
        let c = self.call(
            IOCTL_VMBRIDGE_RESPOND,
            build_respond(packet_id, response).as_slice(),
            0,
            None,
        )?;
        check(ioctl_name(IOCTL_VMBRIDGE_RESPOND), &c)
    }

    /// `IOCTL_VMBRIDGE_SEND`: sends `payload` in-band, no completion requested.
    ///
    /// # Errors
    ///
    /// `STATUS_INVALID_BUFFER_SIZE` (above `MaxPacketSize`), `STATUS_DEVICE_NOT_READY`,
    /// `STATUS_DEVICE_NOT_CONNECTED`, KMCL's send status.
    pub fn send(&self, payload: &[u8]) -> io::Result<()> {
        let c = self.call(
            IOCTL_VMBRIDGE_SEND,
            build_send(0, payload).as_slice(),
            0,
            None,
        )?;
        check(ioctl_name(IOCTL_VMBRIDGE_SEND), &c)
    }

    /// `WriteFile`: sends `payload` in-band; returns the bytes written.
    ///
    /// # Errors
    ///
    /// As [`Device::send`].
    pub fn write(&self, payload: &[u8]) -> io::Result<usize> {
        let mut p = self.transport.submit(Request::Write { data: payload })?;
        let (c, _) = finish(p.as_mut(), None)?;
        check("WriteFile", &c)?;
        Ok(c.information)
    }

    /// Starts a waiting send (overlapped) and returns at once.
    ///
    /// # Errors
    ///
    /// The transport could not submit it.
    pub fn start_send_wait(&self, payload: &[u8]) -> io::Result<PendingSend<'_>> {
        let input = build_send(VMBRIDGE_SEND_FLAG_WAIT_FOR_COMPLETION, payload);
        let pending = self.transport.submit(Request::Ioctl {
            code: IOCTL_VMBRIDGE_SEND,
            input: input.as_slice(),
            out_len: CHDR + self.max_packet() as usize,
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
        let input = build_send(VMBRIDGE_SEND_FLAG_WAIT_FOR_COMPLETION, payload);
        let c = self.call(
            IOCTL_VMBRIDGE_SEND,
            input.as_slice(),
            CHDR + self.max_packet() as usize,
            timeout,
        )?;
        parse_send_completion(&c)
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
