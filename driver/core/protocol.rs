//! The user-mode ABI of `vmbridge`: IOCTL codes and versioned request/response headers.
//!
//! C header: `winioctl.h` (`CTL_CODE`, `FILE_DEVICE_UNKNOWN`, `METHOD_BUFFERED`); this
//! file is the Rust twin of a `vmbridge.h` a user-mode tool would include.
//!
//! # Requests
//!
//! | request | input | output |
//! |---|---|---|
//! | `ReadFile` | — | [`VMBRIDGE_PACKET_HEADER`] + payload; the packet is completed (acknowledged with an empty response) when it is read |
//! | `WriteFile` | the payload | — (an in-band send, no completion requested) |
//! | [`IOCTL_VMBRIDGE_READ`] | [`VMBRIDGE_READ_REQUEST`] | [`VMBRIDGE_PACKET_HEADER`] + payload; with [`VMBRIDGE_READ_FLAG_HOLD_FOR_RESPONSE`] the packet stays uncompleted until [`IOCTL_VMBRIDGE_RESPOND`] names its `PacketId` |
//! | [`IOCTL_VMBRIDGE_SEND`] | [`VMBRIDGE_SEND_REQUEST`] + payload | with [`VMBRIDGE_SEND_FLAG_WAIT_FOR_COMPLETION`]: [`VMBRIDGE_COMPLETION_HEADER`] + the other side's response |
//! | [`IOCTL_VMBRIDGE_RESPOND`] | [`VMBRIDGE_RESPOND_REQUEST`] + response | — |
//! | [`IOCTL_VMBRIDGE_GET_INFO`] | — | [`VMBRIDGE_INFO`] |
//! | [`IOCTL_VMBRIDGE_GET_STATS`] | — | [`VMBRIDGE_STATS`] |
//!
//! All IOCTLs are `METHOD_BUFFERED`: input and output share the system buffer, so the
//! driver parses (and copies what it needs from) the input before it writes output.
//!
//! # Validation
//!
//! Every header is little-endian, starts at offset 0 of its buffer, must be 8-byte
//! aligned, carries its own `Size` and `Version`, and has reserved fields that must be
//! zero. A buffer that fails any check is completed with the status below and changes
//! nothing in the driver:
//!
//! | problem | status |
//! |---|---|
//! | buffer shorter than the header | `STATUS_BUFFER_TOO_SMALL` |
//! | header not 8-byte aligned | `STATUS_DATATYPE_MISALIGNMENT_ERROR` |
//! | `Size` or `Version` not this ABI's | `STATUS_REVISION_MISMATCH` |
//! | unknown flag, non-zero reserved field, `PacketId` 0 in a response | `STATUS_INVALID_PARAMETER` |
//! | a length that runs past the buffer, or above `MaxPacketSize` | `STATUS_INVALID_BUFFER_SIZE` |
//! | unknown IOCTL | `STATUS_INVALID_DEVICE_REQUEST` |
//!
//! `MaxPacketSize` is the one `IOCTL_VMBRIDGE_GET_INFO` reports: the configured value,
//! lowered to what one packet of the ring carries (`Config::fit_ring`), so every send
//! and response that passes the length check can be written.
//!
//! # Outcomes of sends and responses
//!
//! A request completes with `STATUS_SUCCESS` only when its effect happened: a send was
//! accepted by KMCL (and, waiting, answered), a response was handed to
//! `VmbChannelPacketComplete`. Otherwise:
//!
//! | situation | status |
//! |---|---|
//! | `MaxPendingSends` waiting sends already wait | `STATUS_DEVICE_BUSY` (nothing sent) |
//! | `MaxPostedSends` writes / no-wait sends are in KMCL, not yet in the ring (the host stopped reading) | `STATUS_DEVICE_BUSY` (nothing sent; retry later) |
//! | channel not open yet, or suspended | `STATUS_DEVICE_NOT_READY` |
//! | channel closed (rescind, removal) | `STATUS_DEVICE_NOT_CONNECTED` |
//! | a waiting send the channel lost before the other side answered (KMCL's cancellation completion) | `STATUS_DEVICE_NOT_CONNECTED`, no output |
//! | KMCL refused the send | KMCL's status |
//! | `IOCTL_VMBRIDGE_RESPOND` for a packet this handle does not hold (never, answered, its handle closed, or an IC request answered by its timeout) | `STATUS_NOT_FOUND` |
//! | the request cancelled (`CancelIoEx`) or its handle closed | `STATUS_CANCELLED` |
//!
//! A waiting send's result depends only on the other side's response and the output
//! buffer, never on when the completion arrives.
//!
//! Held packets and waiting sends share the transaction quota: while `QueueDepth`
//! packets are held (or queued unread), KMCL takes nothing from the ring, the
//! completion of a waiting send included. `docs/bridge.md` states the rule and the
//! ways out (respond first, or cancel the send).
#![allow(non_camel_case_types, non_snake_case)]

use super::status::NtStatus;

/// Device interface class of `vmbridge` devices (`GUID_DEVINTERFACE_VMBRIDGE`,
/// `{447814ac-fb57-4429-a5dc-4580788dd536}`): user mode finds the device with
/// `CM_Get_Device_Interface_List` / `SetupDiGetClassDevs` and opens it with `CreateFile`.
pub const GUID_DEVINTERFACE_VMBRIDGE: u128 = 0x4478_14ac_fb57_4429_a5dc_4580_788d_d536;

/// The VMBus interface-type GUID `vmbridge` binds to by default
/// (`{2942a8b6-8b33-4dd5-8dbb-6dba460aea7b}`): the host offers a channel with this type
/// and the guest's PDO gets the hardware ID `VMBUS\{2942a8b6-8b33-4dd5-8dbb-6dba460aea7b}`
/// (see `inf/vmbridge.inx` and `docs/windows.md` to bind another channel type).
pub const VMBRIDGE_CHANNEL_TYPE: u128 = 0x2942_a8b6_8b33_4dd5_8dbb_6dba_460a_ea7b;

/// Formats a GUID (as a `u128` in the usual reading order) as
/// `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`, lower case, into `out`.
pub fn format_guid(guid: u128, out: &mut [u8; 36]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut at = 0;
    for i in 0..32 {
        if matches!(i, 8 | 12 | 16 | 20) {
            out[at] = b'-';
            at += 1;
        }
        let nibble = (guid >> (124 - 4 * i)) & 0xF;
        out[at] = HEX[nibble as usize];
        at += 1;
    }
}

/// The ABI version every header carries in its `Version` field.
pub const VMBRIDGE_ABI_VERSION: u16 = 1;

/// `FILE_DEVICE_UNKNOWN` (winioctl.h).
pub const FILE_DEVICE_UNKNOWN: u32 = 0x0000_0022;
/// `METHOD_BUFFERED` (winioctl.h).
pub const METHOD_BUFFERED: u32 = 0;
/// `FILE_ANY_ACCESS` (winioctl.h).
pub const FILE_ANY_ACCESS: u32 = 0;
/// `FILE_READ_ACCESS` (winioctl.h).
pub const FILE_READ_ACCESS: u32 = 0x0001;
/// `FILE_WRITE_ACCESS` (winioctl.h).
pub const FILE_WRITE_ACCESS: u32 = 0x0002;

/// `CTL_CODE(DeviceType, Function, Method, Access)` from winioctl.h.
#[must_use]
pub const fn CTL_CODE(device_type: u32, function: u32, method: u32, access: u32) -> u32 {
    (device_type << 16) | (access << 14) | (function << 2) | method
}

/// Returns the `VMBRIDGE_INFO` block (configuration, ABI version).
pub const IOCTL_VMBRIDGE_GET_INFO: u32 =
    CTL_CODE(FILE_DEVICE_UNKNOWN, 0x800, METHOD_BUFFERED, FILE_ANY_ACCESS);
/// Takes the oldest received packet (pends until one arrives).
pub const IOCTL_VMBRIDGE_READ: u32 = CTL_CODE(
    FILE_DEVICE_UNKNOWN,
    0x801,
    METHOD_BUFFERED,
    FILE_READ_ACCESS,
);
/// Sends an in-band packet, optionally waiting for the other side's completion.
pub const IOCTL_VMBRIDGE_SEND: u32 = CTL_CODE(
    FILE_DEVICE_UNKNOWN,
    0x802,
    METHOD_BUFFERED,
    FILE_WRITE_ACCESS,
);
/// Completes a held packet with a response.
pub const IOCTL_VMBRIDGE_RESPOND: u32 = CTL_CODE(
    FILE_DEVICE_UNKNOWN,
    0x803,
    METHOD_BUFFERED,
    FILE_WRITE_ACCESS,
);
/// Returns the `VMBRIDGE_STATS` counters.
pub const IOCTL_VMBRIDGE_GET_STATS: u32 =
    CTL_CODE(FILE_DEVICE_UNKNOWN, 0x804, METHOD_BUFFERED, FILE_ANY_ACCESS);

/// Required alignment of every header (the system buffer of `METHOD_BUFFERED` is
/// pool memory, which is at least 16-byte aligned).
pub const HEADER_ALIGNMENT: usize = 8;

/// The packet is held: answer it with [`IOCTL_VMBRIDGE_RESPOND`] and its `PacketId`.
pub const VMBRIDGE_PACKET_FLAG_RESPONSE_PENDING: u32 = 0x1;

/// Header written in front of every packet a read returns.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VMBRIDGE_PACKET_HEADER {
    /// `size_of::<VMBRIDGE_PACKET_HEADER>()` (32).
    pub Size: u16,
    /// [`VMBRIDGE_ABI_VERSION`].
    pub Version: u16,
    /// `VMBRIDGE_PACKET_FLAG_*`.
    pub Flags: u32,
    /// Id to answer with [`IOCTL_VMBRIDGE_RESPOND`]; 0 when the packet was completed.
    pub PacketId: u64,
    /// Payload bytes that follow; with `STATUS_BUFFER_OVERFLOW`, the bytes needed.
    pub PayloadLength: u32,
    /// Zero.
    pub Reserved: u32,
    /// Receive sequence number (1 for the first packet the device received).
    pub Sequence: u64,
}

/// Hold the packet for a response instead of completing it when it is read.
pub const VMBRIDGE_READ_FLAG_HOLD_FOR_RESPONSE: u32 = 0x1;
const READ_FLAGS: u32 = VMBRIDGE_READ_FLAG_HOLD_FOR_RESPONSE;

/// Input of [`IOCTL_VMBRIDGE_READ`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VMBRIDGE_READ_REQUEST {
    /// `size_of::<VMBRIDGE_READ_REQUEST>()` (16).
    pub Size: u16,
    /// [`VMBRIDGE_ABI_VERSION`].
    pub Version: u16,
    /// `VMBRIDGE_READ_FLAG_*`.
    pub Flags: u32,
    /// Zero.
    pub Reserved: u64,
}

/// Keep the request pending until the other side completes the packet, and return
/// its response.
pub const VMBRIDGE_SEND_FLAG_WAIT_FOR_COMPLETION: u32 = 0x1;
const SEND_FLAGS: u32 = VMBRIDGE_SEND_FLAG_WAIT_FOR_COMPLETION;

/// Input header of [`IOCTL_VMBRIDGE_SEND`]; the payload follows it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VMBRIDGE_SEND_REQUEST {
    /// `size_of::<VMBRIDGE_SEND_REQUEST>()` (16).
    pub Size: u16,
    /// [`VMBRIDGE_ABI_VERSION`].
    pub Version: u16,
    /// `VMBRIDGE_SEND_FLAG_*`.
    pub Flags: u32,
    /// Payload bytes that follow the header.
    pub PayloadLength: u32,
    /// Zero.
    pub Reserved: u32,
}

/// Output header of a waiting [`IOCTL_VMBRIDGE_SEND`]; the response follows it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VMBRIDGE_COMPLETION_HEADER {
    /// `size_of::<VMBRIDGE_COMPLETION_HEADER>()` (16).
    pub Size: u16,
    /// [`VMBRIDGE_ABI_VERSION`].
    pub Version: u16,
    /// The `NTSTATUS` KMCL reported for the send.
    pub Status: i32,
    /// Response bytes the other side sent (those that follow may be fewer if the
    /// output buffer was short: then the request ends with `STATUS_BUFFER_OVERFLOW`).
    pub ResponseLength: u32,
    /// Zero.
    pub Reserved: u32,
}

/// Input header of [`IOCTL_VMBRIDGE_RESPOND`]; the response follows it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VMBRIDGE_RESPOND_REQUEST {
    /// `size_of::<VMBRIDGE_RESPOND_REQUEST>()` (24).
    pub Size: u16,
    /// [`VMBRIDGE_ABI_VERSION`].
    pub Version: u16,
    /// Zero (no flags defined).
    pub Flags: u32,
    /// The `PacketId` a held read returned.
    pub PacketId: u64,
    /// Response bytes that follow the header.
    pub ResponseLength: u32,
    /// Zero.
    pub Reserved: u32,
}

/// Output of [`IOCTL_VMBRIDGE_GET_INFO`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VMBRIDGE_INFO {
    /// `size_of::<VMBRIDGE_INFO>()` (32).
    pub Size: u16,
    /// [`VMBRIDGE_ABI_VERSION`].
    pub Version: u16,
    /// 0 = DISPATCH_LEVEL, 1 = PASSIVE_LEVEL (registry `ProcessingMode`).
    pub ProcessingMode: u32,
    /// Registry `QueueDepth`.
    pub QueueDepth: u32,
    /// Registry `MaxPacketSize`.
    pub MaxPacketSize: u32,
    /// Registry `MaxPendingReads`.
    pub MaxPendingReads: u32,
    /// Registry `MaxPendingSends`.
    pub MaxPendingSends: u32,
    /// 0 = starting, 1 = open, 2 = suspended, 3 = closed.
    pub ChannelState: u32,
    /// Zero.
    pub Reserved: u32,
}

/// Output of [`IOCTL_VMBRIDGE_GET_STATS`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VMBRIDGE_STATS {
    /// `size_of::<VMBRIDGE_STATS>()` (88).
    pub Size: u16,
    /// [`VMBRIDGE_ABI_VERSION`].
    pub Version: u16,
    /// Packets waiting to be read now.
    pub QueueDepth: u32,
    /// Packets received from the channel.
    pub PacketsReceived: u64,
    /// Payload bytes received.
    pub BytesReceived: u64,
    /// Packets handed to user-mode reads.
    pub PacketsRead: u64,
    /// Packets sent to the channel.
    pub PacketsSent: u64,
    /// Payload bytes sent.
    pub BytesSent: u64,
    /// Sends whose completion came back.
    pub SendsCompleted: u64,
    /// Held packets answered from user mode.
    pub Responses: u64,
    /// Packets completed unread because the channel closed or suspended.
    pub PacketsDiscarded: u64,
    /// Requests rejected, failed sends, overflows.
    pub Errors: u64,
    /// Highest `QueueDepth` seen.
    pub QueueHighWater: u32,
    /// Packets held for a response now.
    pub HeldForResponse: u32,
}

const _: () = assert!(size_of::<VMBRIDGE_PACKET_HEADER>() == 32);
const _: () = assert!(size_of::<VMBRIDGE_READ_REQUEST>() == 16);
const _: () = assert!(size_of::<VMBRIDGE_SEND_REQUEST>() == 16);
const _: () = assert!(size_of::<VMBRIDGE_COMPLETION_HEADER>() == 16);
const _: () = assert!(size_of::<VMBRIDGE_RESPOND_REQUEST>() == 24);
const _: () = assert!(size_of::<VMBRIDGE_INFO>() == 32);
const _: () = assert!(size_of::<VMBRIDGE_STATS>() == 88);
const _: () = assert!(align_of::<VMBRIDGE_PACKET_HEADER>() == 8);
const _: () = assert!(align_of::<VMBRIDGE_STATS>() == 8);

/// Header sizes as the `u16` each header stores in `Size`.
const fn size16<T>() -> u16 {
    let n = size_of::<T>();
    assert!(n <= u16::MAX as usize);
    n as u16
}

/// Little-endian reader over a validated header; never reads out of bounds.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, at: 0 }
    }
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        if let Some(src) = self.bytes.get(self.at..self.at + N) {
            out.copy_from_slice(src);
        }
        self.at += N;
        out
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.take())
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take())
    }
    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.take())
    }
}

/// Little-endian writer into a buffer already checked to be large enough.
struct Writer<'a> {
    bytes: &'a mut [u8],
    at: usize,
}

impl<'a> Writer<'a> {
    fn new(bytes: &'a mut [u8]) -> Self {
        Self { bytes, at: 0 }
    }
    fn put(&mut self, src: &[u8]) {
        if let Some(dst) = self.bytes.get_mut(self.at..self.at + src.len()) {
            dst.copy_from_slice(src);
        }
        self.at += src.len();
    }
    fn u16(&mut self, v: u16) {
        self.put(&v.to_le_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.put(&v.to_le_bytes());
    }
    fn i32(&mut self, v: i32) {
        self.put(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.put(&v.to_le_bytes());
    }
}

/// Checks length and alignment of a buffer that must start with a `T` header.
fn check_header_room<T>(buf: &[u8]) -> Result<(), NtStatus> {
    if buf.len() < size_of::<T>() {
        return Err(NtStatus::BUFFER_TOO_SMALL);
    }
    if !buf.as_ptr().cast::<u64>().is_aligned() {
        return Err(NtStatus::DATATYPE_MISALIGNMENT_ERROR);
    }
    Ok(())
}

/// Checks the `Size`/`Version` pair every header starts with.
fn check_revision<T>(size: u16, version: u16) -> Result<(), NtStatus> {
    if size != size16::<T>() || version != VMBRIDGE_ABI_VERSION {
        return Err(NtStatus::REVISION_MISMATCH);
    }
    Ok(())
}

/// Splits `buf` into a validated trailing region of `len` bytes after a `T` header.
fn trailing<T>(buf: &[u8], len: u32, max: u32) -> Result<&[u8], NtStatus> {
    if len > max {
        return Err(NtStatus::INVALID_BUFFER_SIZE);
    }
    let start = size_of::<T>();
    let end = usize::try_from(len)
        .ok()
        .and_then(|l| start.checked_add(l))
        .ok_or(NtStatus::INVALID_BUFFER_SIZE)?;
    buf.get(start..end).ok_or(NtStatus::INVALID_BUFFER_SIZE)
}

impl VMBRIDGE_READ_REQUEST {
    /// A version-1 request with `flags`.
    #[must_use]
    pub const fn new(flags: u32) -> Self {
        Self {
            Size: size16::<Self>(),
            Version: VMBRIDGE_ABI_VERSION,
            Flags: flags,
            Reserved: 0,
        }
    }

    /// Parses and validates the input of [`IOCTL_VMBRIDGE_READ`].
    ///
    /// # Errors
    ///
    /// See the module's validation table.
    pub fn parse(buf: &[u8]) -> Result<Self, NtStatus> {
        check_header_room::<Self>(buf)?;
        let mut r = Reader::new(buf);
        let h = Self {
            Size: r.u16(),
            Version: r.u16(),
            Flags: r.u32(),
            Reserved: r.u64(),
        };
        check_revision::<Self>(h.Size, h.Version)?;
        if h.Flags & !READ_FLAGS != 0 || h.Reserved != 0 {
            return Err(NtStatus::INVALID_PARAMETER);
        }
        Ok(h)
    }

    /// Serializes the header (little-endian) into its first `Size` bytes of `out`.
    pub fn write_to(&self, out: &mut [u8]) {
        let mut w = Writer::new(out);
        w.u16(self.Size);
        w.u16(self.Version);
        w.u32(self.Flags);
        w.u64(self.Reserved);
    }
}

impl VMBRIDGE_SEND_REQUEST {
    /// A version-1 header for `payload_length` bytes with `flags`.
    #[must_use]
    pub const fn new(flags: u32, payload_length: u32) -> Self {
        Self {
            Size: size16::<Self>(),
            Version: VMBRIDGE_ABI_VERSION,
            Flags: flags,
            PayloadLength: payload_length,
            Reserved: 0,
        }
    }

    /// Parses the input of [`IOCTL_VMBRIDGE_SEND`]; returns the header and the payload.
    ///
    /// # Errors
    ///
    /// See the module's validation table; `max_payload` is `MaxPacketSize`.
    pub fn parse(buf: &[u8], max_payload: u32) -> Result<(Self, &[u8]), NtStatus> {
        check_header_room::<Self>(buf)?;
        let mut r = Reader::new(buf);
        let h = Self {
            Size: r.u16(),
            Version: r.u16(),
            Flags: r.u32(),
            PayloadLength: r.u32(),
            Reserved: r.u32(),
        };
        check_revision::<Self>(h.Size, h.Version)?;
        if h.Flags & !SEND_FLAGS != 0 || h.Reserved != 0 {
            return Err(NtStatus::INVALID_PARAMETER);
        }
        let payload = trailing::<Self>(buf, h.PayloadLength, max_payload)?;
        Ok((h, payload))
    }

    /// Serializes the header into the first `Size` bytes of `out`.
    pub fn write_to(&self, out: &mut [u8]) {
        let mut w = Writer::new(out);
        w.u16(self.Size);
        w.u16(self.Version);
        w.u32(self.Flags);
        w.u32(self.PayloadLength);
        w.u32(self.Reserved);
    }
}

impl VMBRIDGE_RESPOND_REQUEST {
    /// A version-1 header answering `packet_id` with `response_length` bytes.
    #[must_use]
    pub const fn new(packet_id: u64, response_length: u32) -> Self {
        Self {
            Size: size16::<Self>(),
            Version: VMBRIDGE_ABI_VERSION,
            Flags: 0,
            PacketId: packet_id,
            ResponseLength: response_length,
            Reserved: 0,
        }
    }

    /// Parses the input of [`IOCTL_VMBRIDGE_RESPOND`]; returns the header and response.
    ///
    /// # Errors
    ///
    /// See the module's validation table; `max_response` is `MaxPacketSize`.
    pub fn parse(buf: &[u8], max_response: u32) -> Result<(Self, &[u8]), NtStatus> {
        check_header_room::<Self>(buf)?;
        let mut r = Reader::new(buf);
        let h = Self {
            Size: r.u16(),
            Version: r.u16(),
            Flags: r.u32(),
            PacketId: r.u64(),
            ResponseLength: r.u32(),
            Reserved: r.u32(),
        };
        check_revision::<Self>(h.Size, h.Version)?;
        if h.Flags != 0 || h.Reserved != 0 || h.PacketId == 0 {
            return Err(NtStatus::INVALID_PARAMETER);
        }
        let response = trailing::<Self>(buf, h.ResponseLength, max_response)?;
        Ok((h, response))
    }

    /// Serializes the header into the first `Size` bytes of `out`.
    pub fn write_to(&self, out: &mut [u8]) {
        let mut w = Writer::new(out);
        w.u16(self.Size);
        w.u16(self.Version);
        w.u32(self.Flags);
        w.u64(self.PacketId);
        w.u32(self.ResponseLength);
        w.u32(self.Reserved);
    }
}

impl VMBRIDGE_PACKET_HEADER {
    /// A version-1 header.
    #[must_use]
    pub const fn new(flags: u32, packet_id: u64, payload_length: u32, sequence: u64) -> Self {
        Self {
            Size: size16::<Self>(),
            Version: VMBRIDGE_ABI_VERSION,
            Flags: flags,
            PacketId: packet_id,
            PayloadLength: payload_length,
            Reserved: 0,
            Sequence: sequence,
        }
    }

    /// Serializes the header into the first 32 bytes of `out` (the caller checked room).
    pub fn write_to(&self, out: &mut [u8]) {
        let mut w = Writer::new(out);
        w.u16(self.Size);
        w.u16(self.Version);
        w.u32(self.Flags);
        w.u64(self.PacketId);
        w.u32(self.PayloadLength);
        w.u32(self.Reserved);
        w.u64(self.Sequence);
    }

    /// Parses a header the driver wrote (user-mode side of the ABI).
    ///
    /// # Errors
    ///
    /// `STATUS_BUFFER_TOO_SMALL` or `STATUS_REVISION_MISMATCH`.
    pub fn parse(buf: &[u8]) -> Result<Self, NtStatus> {
        if buf.len() < size_of::<Self>() {
            return Err(NtStatus::BUFFER_TOO_SMALL);
        }
        let mut r = Reader::new(buf);
        let h = Self {
            Size: r.u16(),
            Version: r.u16(),
            Flags: r.u32(),
            PacketId: r.u64(),
            PayloadLength: r.u32(),
            Reserved: r.u32(),
            Sequence: r.u64(),
        };
        check_revision::<Self>(h.Size, h.Version)?;
        Ok(h)
    }
}

impl VMBRIDGE_COMPLETION_HEADER {
    /// A version-1 header.
    #[must_use]
    pub const fn new(status: i32, response_length: u32) -> Self {
        Self {
            Size: size16::<Self>(),
            Version: VMBRIDGE_ABI_VERSION,
            Status: status,
            ResponseLength: response_length,
            Reserved: 0,
        }
    }

    /// Serializes the header into the first 16 bytes of `out`.
    pub fn write_to(&self, out: &mut [u8]) {
        let mut w = Writer::new(out);
        w.u16(self.Size);
        w.u16(self.Version);
        w.i32(self.Status);
        w.u32(self.ResponseLength);
        w.u32(self.Reserved);
    }

    /// Parses a header the driver wrote (user-mode side of the ABI).
    ///
    /// # Errors
    ///
    /// `STATUS_BUFFER_TOO_SMALL` or `STATUS_REVISION_MISMATCH`.
    pub fn parse(buf: &[u8]) -> Result<Self, NtStatus> {
        if buf.len() < size_of::<Self>() {
            return Err(NtStatus::BUFFER_TOO_SMALL);
        }
        let mut r = Reader::new(buf);
        let h = Self {
            Size: r.u16(),
            Version: r.u16(),
            Status: i32::from_le_bytes(r.take()),
            ResponseLength: r.u32(),
            Reserved: r.u32(),
        };
        check_revision::<Self>(h.Size, h.Version)?;
        Ok(h)
    }
}

impl VMBRIDGE_INFO {
    /// Serializes the block into the first 32 bytes of `out`.
    pub fn write_to(&self, out: &mut [u8]) {
        let mut w = Writer::new(out);
        w.u16(self.Size);
        w.u16(self.Version);
        w.u32(self.ProcessingMode);
        w.u32(self.QueueDepth);
        w.u32(self.MaxPacketSize);
        w.u32(self.MaxPendingReads);
        w.u32(self.MaxPendingSends);
        w.u32(self.ChannelState);
        w.u32(self.Reserved);
    }

    /// Parses a block the driver wrote.
    ///
    /// # Errors
    ///
    /// `STATUS_BUFFER_TOO_SMALL` or `STATUS_REVISION_MISMATCH`.
    pub fn parse(buf: &[u8]) -> Result<Self, NtStatus> {
        if buf.len() < size_of::<Self>() {
            return Err(NtStatus::BUFFER_TOO_SMALL);
        }
        let mut r = Reader::new(buf);
        let h = Self {
            Size: r.u16(),
            Version: r.u16(),
            ProcessingMode: r.u32(),
            QueueDepth: r.u32(),
            MaxPacketSize: r.u32(),
            MaxPendingReads: r.u32(),
            MaxPendingSends: r.u32(),
            ChannelState: r.u32(),
            Reserved: r.u32(),
        };
        check_revision::<Self>(h.Size, h.Version)?;
        Ok(h)
    }
}

impl VMBRIDGE_STATS {
    /// Serializes the block into the first 88 bytes of `out`.
    pub fn write_to(&self, out: &mut [u8]) {
        let mut w = Writer::new(out);
        w.u16(self.Size);
        w.u16(self.Version);
        w.u32(self.QueueDepth);
        for v in [
            self.PacketsReceived,
            self.BytesReceived,
            self.PacketsRead,
            self.PacketsSent,
            self.BytesSent,
            self.SendsCompleted,
            self.Responses,
            self.PacketsDiscarded,
            self.Errors,
        ] {
            w.u64(v);
        }
        w.u32(self.QueueHighWater);
        w.u32(self.HeldForResponse);
    }

    /// Parses a block the driver wrote.
    ///
    /// # Errors
    ///
    /// `STATUS_BUFFER_TOO_SMALL` or `STATUS_REVISION_MISMATCH`.
    pub fn parse(buf: &[u8]) -> Result<Self, NtStatus> {
        if buf.len() < size_of::<Self>() {
            return Err(NtStatus::BUFFER_TOO_SMALL);
        }
        let mut r = Reader::new(buf);
        let h = Self {
            Size: r.u16(),
            Version: r.u16(),
            QueueDepth: r.u32(),
            PacketsReceived: r.u64(),
            BytesReceived: r.u64(),
            PacketsRead: r.u64(),
            PacketsSent: r.u64(),
            BytesSent: r.u64(),
            SendsCompleted: r.u64(),
            Responses: r.u64(),
            PacketsDiscarded: r.u64(),
            Errors: r.u64(),
            QueueHighWater: r.u32(),
            HeldForResponse: r.u32(),
        };
        check_revision::<Self>(h.Size, h.Version)?;
        Ok(h)
    }
}

/// An 8-byte-aligned byte buffer for user-mode callers (and tests) of the ABI.
///
/// `Vec<u8>` gives no alignment guarantee; this over-allocates by 7 bytes and starts at
/// the first aligned address, so the headers pass the alignment check.
#[derive(Clone, Debug)]
pub struct AlignedBuf {
    storage: alloc::vec::Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuf {
    /// A zeroed buffer of `len` bytes starting on an 8-byte boundary.
    #[must_use]
    pub fn zeroed(len: usize) -> Self {
        let storage = alloc::vec![0u8; len + HEADER_ALIGNMENT - 1];
        let start = storage
            .as_ptr()
            .align_offset(HEADER_ALIGNMENT)
            .min(HEADER_ALIGNMENT - 1);
        Self {
            storage,
            start,
            len,
        }
    }

    /// A zeroed buffer of `len` bytes starting 1 byte past an 8-byte boundary: what a
    /// careless caller might pass; for tests of the alignment check.
    #[must_use]
    pub fn zeroed_misaligned(len: usize) -> Self {
        let storage = alloc::vec![0u8; len + HEADER_ALIGNMENT];
        let start = storage
            .as_ptr()
            .align_offset(HEADER_ALIGNMENT)
            .min(HEADER_ALIGNMENT - 1)
            + 1;
        Self {
            storage,
            start,
            len,
        }
    }

    /// A buffer holding a copy of `bytes`.
    #[must_use]
    pub fn from_slice(bytes: &[u8]) -> Self {
        let mut b = Self::zeroed(bytes.len());
        b.as_mut_slice().copy_from_slice(bytes);
        b
    }

    /// The aligned bytes.
    #[must_use]
    pub fn as_slice(&self) -> &[u8] {
        &self.storage[self.start..self.start + self.len]
    }

    /// The aligned bytes, mutable.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.storage[self.start..self.start + self.len]
    }

    /// Shortens the buffer to `len` bytes (no-op if already shorter).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }
}

/// Builds the input buffer of [`IOCTL_VMBRIDGE_SEND`] (user-mode helper).
#[must_use]
pub fn build_send(flags: u32, payload: &[u8]) -> AlignedBuf {
    let mut b = AlignedBuf::zeroed(size_of::<VMBRIDGE_SEND_REQUEST>() + payload.len());
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    VMBRIDGE_SEND_REQUEST::new(flags, len).write_to(b.as_mut_slice());
    b.as_mut_slice()[size_of::<VMBRIDGE_SEND_REQUEST>()..].copy_from_slice(payload);
    b
}

/// Builds the input buffer of [`IOCTL_VMBRIDGE_RESPOND`] (user-mode helper).
#[must_use]
pub fn build_respond(packet_id: u64, response: &[u8]) -> AlignedBuf {
    let mut b = AlignedBuf::zeroed(size_of::<VMBRIDGE_RESPOND_REQUEST>() + response.len());
    let len = u32::try_from(response.len()).unwrap_or(u32::MAX);
    VMBRIDGE_RESPOND_REQUEST::new(packet_id, len).write_to(b.as_mut_slice());
    b.as_mut_slice()[size_of::<VMBRIDGE_RESPOND_REQUEST>()..].copy_from_slice(response);
    b
}

/// Builds the input buffer of [`IOCTL_VMBRIDGE_READ`] (user-mode helper).
#[must_use]
pub fn build_read(flags: u32) -> AlignedBuf {
    let mut b = AlignedBuf::zeroed(size_of::<VMBRIDGE_READ_REQUEST>());
    VMBRIDGE_READ_REQUEST::new(flags).write_to(b.as_mut_slice());
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guids_format_in_registry_order() {
        let mut t = [0u8; 36];
        format_guid(VMBRIDGE_CHANNEL_TYPE, &mut t);
        assert_eq!(&t, b"2942a8b6-8b33-4dd5-8dbb-6dba460aea7b");
        format_guid(GUID_DEVINTERFACE_VMBRIDGE, &mut t);
        assert_eq!(&t, b"447814ac-fb57-4429-a5dc-4580788dd536");
    }

    #[test]
    fn ioctl_codes_match_ctl_code_layout() {
        // CTL_CODE(FILE_DEVICE_UNKNOWN, 0x800, METHOD_BUFFERED, FILE_ANY_ACCESS) = 0x222000
        assert_eq!(IOCTL_VMBRIDGE_GET_INFO, 0x0022_2000);
        assert_eq!(IOCTL_VMBRIDGE_READ, 0x0022_6004);
        assert_eq!(IOCTL_VMBRIDGE_SEND, 0x0022_A008);
        assert_eq!(IOCTL_VMBRIDGE_RESPOND, 0x0022_A00C);
        assert_eq!(IOCTL_VMBRIDGE_GET_STATS, 0x0022_2010);
    }

    #[test]
    fn send_request_round_trips() {
        let b = build_send(VMBRIDGE_SEND_FLAG_WAIT_FOR_COMPLETION, b"hello");
        let (h, p) = VMBRIDGE_SEND_REQUEST::parse(b.as_slice(), 4096).expect("valid");
        assert_eq!(h.Flags, VMBRIDGE_SEND_FLAG_WAIT_FOR_COMPLETION);
        assert_eq!(p, b"hello");
    }

    #[test]
    fn rejects_buffer_shorter_than_header() {
        let b = AlignedBuf::zeroed(15);
        assert_eq!(
            VMBRIDGE_SEND_REQUEST::parse(b.as_slice(), 4096),
            Err(NtStatus::BUFFER_TOO_SMALL)
        );
        assert_eq!(
            VMBRIDGE_READ_REQUEST::parse(&[]),
            Err(NtStatus::BUFFER_TOO_SMALL)
        );
    }

    #[test]
    fn rejects_misaligned_header() {
        let good = build_send(0, b"abc");
        let mut shifted = AlignedBuf::zeroed(good.as_slice().len() + 1);
        shifted.as_mut_slice()[1..].copy_from_slice(good.as_slice());
        assert_eq!(
            VMBRIDGE_SEND_REQUEST::parse(&shifted.as_slice()[1..], 4096),
            Err(NtStatus::DATATYPE_MISALIGNMENT_ERROR)
        );
    }

    #[test]
    fn rejects_wrong_size_or_version() {
        let mut b = build_send(0, b"abc");
        b.as_mut_slice()[2] = 2; // Version = 2
        assert_eq!(
            VMBRIDGE_SEND_REQUEST::parse(b.as_slice(), 4096),
            Err(NtStatus::REVISION_MISMATCH)
        );
        let mut b = build_send(0, b"abc");
        b.as_mut_slice()[0] = 24; // Size = 24
        assert_eq!(
            VMBRIDGE_SEND_REQUEST::parse(b.as_slice(), 4096),
            Err(NtStatus::REVISION_MISMATCH)
        );
    }

    #[test]
    fn rejects_unknown_flags_and_reserved_bits() {
        let b = build_send(0x8, b"abc");
        assert_eq!(
            VMBRIDGE_SEND_REQUEST::parse(b.as_slice(), 4096),
            Err(NtStatus::INVALID_PARAMETER)
        );
        let mut b = build_read(0);
        b.as_mut_slice()[12] = 1;
        assert_eq!(
            VMBRIDGE_READ_REQUEST::parse(b.as_slice()),
            Err(NtStatus::INVALID_PARAMETER)
        );
        let b = build_respond(0, b"x");
        assert_eq!(
            VMBRIDGE_RESPOND_REQUEST::parse(b.as_slice(), 4096),
            Err(NtStatus::INVALID_PARAMETER)
        );
    }

    #[test]
    fn rejects_length_past_end_of_buffer() {
        let mut b = build_send(0, b"abcd");
        VMBRIDGE_SEND_REQUEST::new(0, 5).write_to(b.as_mut_slice());
        assert_eq!(
            VMBRIDGE_SEND_REQUEST::parse(b.as_slice(), 4096),
            Err(NtStatus::INVALID_BUFFER_SIZE)
        );
        VMBRIDGE_SEND_REQUEST::new(0, u32::MAX).write_to(b.as_mut_slice());
        assert_eq!(
            VMBRIDGE_SEND_REQUEST::parse(b.as_slice(), u32::MAX),
            Err(NtStatus::INVALID_BUFFER_SIZE)
        );
    }

    #[test]
    fn rejects_length_above_max_packet_size() {
        let b = build_respond(7, &[0u8; 65]);
        assert_eq!(
            VMBRIDGE_RESPOND_REQUEST::parse(b.as_slice(), 64),
            Err(NtStatus::INVALID_BUFFER_SIZE)
        );
        assert!(VMBRIDGE_RESPOND_REQUEST::parse(b.as_slice(), 65).is_ok());
    }

    #[test]
    fn packet_header_round_trips() {
        let mut b = AlignedBuf::zeroed(32);
        let h = VMBRIDGE_PACKET_HEADER::new(1, 42, 100, 9);
        h.write_to(b.as_mut_slice());
        assert_eq!(VMBRIDGE_PACKET_HEADER::parse(b.as_slice()), Ok(h));
        let s = VMBRIDGE_STATS {
            Size: 88,
            Version: 1,
            QueueDepth: 3,
            PacketsReceived: 1,
            BytesReceived: 2,
            PacketsRead: 3,
            PacketsSent: 4,
            BytesSent: 5,
            SendsCompleted: 6,
            Responses: 7,
            PacketsDiscarded: 8,
            Errors: 9,
            QueueHighWater: 10,
            HeldForResponse: 11,
        };
        let mut b = AlignedBuf::zeroed(88);
        s.write_to(b.as_mut_slice());
        assert_eq!(VMBRIDGE_STATS::parse(b.as_slice()), Ok(s));
    }
}
