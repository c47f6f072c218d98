//! The versioned wire headers and their flags.
//!
//! C header: `include/vmbridge.h` (the same structs, `#pragma pack` not needed: every
//! field is naturally aligned and no struct has padding, which `IntoBytes` proves).
#![allow(non_camel_case_types, non_snake_case)]

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// The ABI version every header carries in its `Version` field.
pub const VMBRIDGE_ABI_VERSION: u16 = 1;

/// Required alignment of every header (the system buffer of `METHOD_BUFFERED` is
/// pool memory, which is at least 16-byte aligned); also the alignment of every entry
/// in a batch.
pub const HEADER_ALIGNMENT: usize = 8;

/// The packet is held: answer it with `IOCTL_VMBRIDGE_RESPOND` and its `PacketId`.
pub const VMBRIDGE_PACKET_FLAG_RESPONSE_PENDING: u32 = 0x1;

/// Hold the packet(s) for a response instead of completing them when they are read.
pub const VMBRIDGE_READ_FLAG_HOLD_FOR_RESPONSE: u32 = 0x1;
/// Every flag `IOCTL_VMBRIDGE_READ` accepts.
pub const VMBRIDGE_READ_FLAGS: u32 = VMBRIDGE_READ_FLAG_HOLD_FOR_RESPONSE;

/// `IOCTL_VMBRIDGE_READ_BATCH`: pend until at least one packet is queued (without it an
/// empty queue completes the request at once with `Count` 0).
pub const VMBRIDGE_READ_BATCH_FLAG_WAIT: u32 = 0x2;
/// Every flag `IOCTL_VMBRIDGE_READ_BATCH` accepts.
pub const VMBRIDGE_READ_BATCH_FLAGS: u32 =
    VMBRIDGE_READ_FLAG_HOLD_FOR_RESPONSE | VMBRIDGE_READ_BATCH_FLAG_WAIT;

/// Keep the request pending until the other side completes the packet, and return
/// its response.
pub const VMBRIDGE_SEND_FLAG_WAIT_FOR_COMPLETION: u32 = 0x1;
/// Every flag `IOCTL_VMBRIDGE_SEND` accepts.
pub const VMBRIDGE_SEND_FLAGS: u32 = VMBRIDGE_SEND_FLAG_WAIT_FOR_COMPLETION;

/// Offer the channel as a pipe (`VMBUS_SERVER_CHANNEL_INIT_FLAG_OFFER_AS_PIPE`; the
/// guest's channel must then be in pipe mode too).
pub const VMBRIDGE_OFFER_FLAG_PIPE: u32 = 0x1;
/// Every flag `IOCTL_VMBRIDGE_CREATE_OFFER` accepts.
pub const VMBRIDGE_OFFER_FLAGS: u32 = VMBRIDGE_OFFER_FLAG_PIPE;

/// Header written in front of every packet a read returns.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct VMBRIDGE_PACKET_HEADER {
    /// `size_of::<VMBRIDGE_PACKET_HEADER>()` (32).
    pub Size: u16,
    /// [`VMBRIDGE_ABI_VERSION`].
    pub Version: u16,
    /// `VMBRIDGE_PACKET_FLAG_*`.
    pub Flags: u32,
    /// Id to answer with `IOCTL_VMBRIDGE_RESPOND`; 0 when the packet was completed.
    pub PacketId: u64,
    /// Payload bytes that follow; with `STATUS_BUFFER_OVERFLOW`, the bytes needed.
    pub PayloadLength: u32,
    /// Zero.
    pub Reserved: u32,
    /// Receive sequence number (1 for the first packet the device received).
    pub Sequence: u64,
}

/// Input of `IOCTL_VMBRIDGE_READ`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
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

/// Input of `IOCTL_VMBRIDGE_READ_BATCH`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct VMBRIDGE_READ_BATCH_REQUEST {
    /// `size_of::<VMBRIDGE_READ_BATCH_REQUEST>()` (16).
    pub Size: u16,
    /// [`VMBRIDGE_ABI_VERSION`].
    pub Version: u16,
    /// `VMBRIDGE_READ_FLAG_HOLD_FOR_RESPONSE` (every packet of the batch is held),
    /// `VMBRIDGE_READ_BATCH_FLAG_WAIT`.
    pub Flags: u32,
    /// At most this many packets; 0 = as many as fit.
    pub MaxPackets: u32,
    /// Zero.
    pub Reserved: u32,
}

/// Output header of `IOCTL_VMBRIDGE_READ_BATCH`; `Count` packets follow, each a
/// [`VMBRIDGE_PACKET_HEADER`] and its payload, each starting at the next 8-byte boundary.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct VMBRIDGE_BATCH_HEADER {
    /// `size_of::<VMBRIDGE_BATCH_HEADER>()` (16).
    pub Size: u16,
    /// [`VMBRIDGE_ABI_VERSION`].
    pub Version: u16,
    /// Packets that follow.
    pub Count: u32,
    /// Bytes of the batch, this header included (= the request's `Information`).
    pub Length: u32,
    /// Zero.
    pub Reserved: u32,
}

/// Input header of `IOCTL_VMBRIDGE_SEND`; the payload follows it. Also the header of
/// each entry of `IOCTL_VMBRIDGE_SEND_BATCH` (there `Flags` must be 0).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
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

/// Input header of `IOCTL_VMBRIDGE_SEND_BATCH`; `Count` entries follow, each a
/// [`VMBRIDGE_SEND_REQUEST`] (no flags) and its payload, each starting at the next
/// 8-byte boundary.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct VMBRIDGE_SEND_BATCH_REQUEST {
    /// `size_of::<VMBRIDGE_SEND_BATCH_REQUEST>()` (16).
    pub Size: u16,
    /// [`VMBRIDGE_ABI_VERSION`].
    pub Version: u16,
    /// Zero (no flags defined).
    pub Flags: u32,
    /// Entries that follow; at least 1.
    pub Count: u32,
    /// Zero.
    pub Reserved: u32,
}

/// Output header of a waiting `IOCTL_VMBRIDGE_SEND`; the response follows it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
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

/// Input header of `IOCTL_VMBRIDGE_RESPOND`; the response follows it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
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

/// Output of `IOCTL_VMBRIDGE_GET_INFO`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
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

/// Output of `IOCTL_VMBRIDGE_GET_STATS`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
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

/// Input of `IOCTL_VMBRIDGE_CREATE_OFFER` (host mode; see [`crate::offer`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct VMBRIDGE_CREATE_OFFER_REQUEST {
    /// `size_of::<VMBRIDGE_CREATE_OFFER_REQUEST>()` (56).
    pub Size: u16,
    /// [`VMBRIDGE_ABI_VERSION`].
    pub Version: u16,
    /// `VMBRIDGE_OFFER_FLAG_*`.
    pub Flags: u32,
    /// The offer's interface type GUID (the guest's hardware ID `VMBUS\{type}`), in the
    /// Windows `GUID` memory layout; not zero.
    pub InterfaceType: [u8; 16],
    /// The offer's interface instance GUID.
    pub InterfaceInstance: [u8; 16],
    /// The VM's VMBus handle, valid in the calling process; not 0.
    pub VmbusHandle: u64,
    /// Zero.
    pub Reserved: u64,
}

const _: () = assert!(size_of::<VMBRIDGE_PACKET_HEADER>() == 32);
const _: () = assert!(size_of::<VMBRIDGE_READ_REQUEST>() == 16);
const _: () = assert!(size_of::<VMBRIDGE_READ_BATCH_REQUEST>() == 16);
const _: () = assert!(size_of::<VMBRIDGE_BATCH_HEADER>() == 16);
const _: () = assert!(size_of::<VMBRIDGE_SEND_REQUEST>() == 16);
const _: () = assert!(size_of::<VMBRIDGE_SEND_BATCH_REQUEST>() == 16);
const _: () = assert!(size_of::<VMBRIDGE_COMPLETION_HEADER>() == 16);
const _: () = assert!(size_of::<VMBRIDGE_RESPOND_REQUEST>() == 24);
const _: () = assert!(size_of::<VMBRIDGE_INFO>() == 32);
const _: () = assert!(size_of::<VMBRIDGE_STATS>() == 88);
const _: () = assert!(size_of::<VMBRIDGE_CREATE_OFFER_REQUEST>() == 56);
const _: () = assert!(align_of::<VMBRIDGE_PACKET_HEADER>() == 8);
const _: () = assert!(align_of::<VMBRIDGE_STATS>() == 8);
const _: () = assert!(align_of::<VMBRIDGE_CREATE_OFFER_REQUEST>() == 8);

/// Header sizes as the `u16` each header stores in `Size`.
pub(crate) const fn size16<T>() -> u16 {
    let n = size_of::<T>();
    assert!(n <= u16::MAX as usize);
    n as u16
}

/// Copies a header into the first bytes of `out` (nothing when `out` is shorter; the
/// callers checked the room).
fn put<T: IntoBytes + Immutable>(h: &T, out: &mut [u8]) {
    let bytes = h.as_bytes();
    if let Some(dst) = out.get_mut(..bytes.len()) {
        dst.copy_from_slice(bytes);
    }
}

macro_rules! write_to {
    ($($t:ty),*) => {$(
        impl $t {
            /// Serializes the header into the first `Size` bytes of `out` (the caller
            /// checked the room; a shorter `out` is left unchanged).
            pub fn write_to(&self, out: &mut [u8]) {
                put(self, out);
            }
        }
    )*};
}

write_to!(
    VMBRIDGE_PACKET_HEADER,
    VMBRIDGE_READ_REQUEST,
    VMBRIDGE_READ_BATCH_REQUEST,
    VMBRIDGE_BATCH_HEADER,
    VMBRIDGE_SEND_REQUEST,
    VMBRIDGE_SEND_BATCH_REQUEST,
    VMBRIDGE_COMPLETION_HEADER,
    VMBRIDGE_RESPOND_REQUEST,
    VMBRIDGE_INFO,
    VMBRIDGE_STATS,
    VMBRIDGE_CREATE_OFFER_REQUEST
);

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
}

impl VMBRIDGE_READ_BATCH_REQUEST {
    /// A version-1 request with `flags`, at most `max_packets` packets (0 = no limit).
    #[must_use]
    pub const fn new(flags: u32, max_packets: u32) -> Self {
        Self {
            Size: size16::<Self>(),
            Version: VMBRIDGE_ABI_VERSION,
            Flags: flags,
            MaxPackets: max_packets,
            Reserved: 0,
        }
    }
}

impl VMBRIDGE_BATCH_HEADER {
    /// A version-1 header for `count` packets in `length` bytes.
    #[must_use]
    pub const fn new(count: u32, length: u32) -> Self {
        Self {
            Size: size16::<Self>(),
            Version: VMBRIDGE_ABI_VERSION,
            Count: count,
            Length: length,
            Reserved: 0,
        }
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
}

impl VMBRIDGE_SEND_BATCH_REQUEST {
    /// A version-1 header for `count` entries.
    #[must_use]
    pub const fn new(count: u32) -> Self {
        Self {
            Size: size16::<Self>(),
            Version: VMBRIDGE_ABI_VERSION,
            Flags: 0,
            Count: count,
            Reserved: 0,
        }
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
}

impl VMBRIDGE_CREATE_OFFER_REQUEST {
    /// A version-1 request.
    #[must_use]
    pub const fn new(flags: u32, interface_type: u128, instance: u128, vmbus_handle: u64) -> Self {
        Self {
            Size: size16::<Self>(),
            Version: VMBRIDGE_ABI_VERSION,
            Flags: flags,
            InterfaceType: crate::guid::guid_bytes(interface_type),
            InterfaceInstance: crate::guid::guid_bytes(instance),
            VmbusHandle: vmbus_handle,
            Reserved: 0,
        }
    }

    /// Whether [`VMBRIDGE_OFFER_FLAG_PIPE`] is set.
    #[must_use]
    pub const fn pipe(&self) -> bool {
        self.Flags & VMBRIDGE_OFFER_FLAG_PIPE != 0
    }
}
