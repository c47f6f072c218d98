//! Every constant and mask of the KMCL header, with its exact value.
//!
//! C header: `vmbuskernelmodeclientlibapi.h` (`#define`s; values from WDK 10.0.20348).

use crate::types::{UINT32, ULONG, USHORT};

// --- Send format flags (`Flags` of VmbPacketSend*, VmbChannelSendSynchronousRequest).

/// The transaction is not complete until the other side sends a completion packet.
pub const VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION: UINT32 = 0x1;
/// Use `MdlLength` even beyond the MDL's `ByteCount` (up to page rounding).
pub const VMBUS_CHANNEL_FORMAT_FLAG_FORCE_MDL_LENGTH: UINT32 = 0x2;
/// The inline buffer is pageable; KMCL copies it before raising IRQL.
pub const VMBUS_CHANNEL_FORMAT_FLAG_PAGED_BUFFER: UINT32 = 0x4;
/// The MDL only receives data from the remote side (WDK 18362+).
pub const VMBUS_CHANNEL_FORMAT_FLAG_DATA_IN_ONLY: UINT32 = 0x8;
/// The MDL is only sent to the remote side (WDK 18362+).
pub const VMBUS_CHANNEL_FORMAT_FLAG_DATA_OUT_ONLY: UINT32 = 0x10;
/// Mask of all format flags (WDK 18362+; `0x7` in WDK 17763 and earlier).
pub const VMBUS_CHANNEL_FORMAT_FLAGS: UINT32 = VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION
    | VMBUS_CHANNEL_FORMAT_FLAG_FORCE_MDL_LENGTH
    | VMBUS_CHANNEL_FORMAT_FLAG_PAGED_BUFFER
    | VMBUS_CHANNEL_FORMAT_FLAG_DATA_IN_ONLY
    | VMBUS_CHANNEL_FORMAT_FLAG_DATA_OUT_ONLY;

// --- GPADL flags.

/// The GPADL is read-only for the other endpoint.
pub const VMBUS_CHANNEL_GPADL_FLAG_READ_ONLY: UINT32 = 0x1;
/// Mask of all GPADL flags.
pub const VMBUS_CHANNEL_GPADL_FLAGS: UINT32 = VMBUS_CHANNEL_GPADL_FLAG_READ_ONLY;

// --- Channel init flags (VmbChannelInitSetFlags).

/// The channel operates in VMBus pipe mode.
pub const VMBUS_CHANNEL_INIT_FLAG_IS_PIPE: UINT32 = 0x1;
/// Mask of all channel init flags.
pub const VMBUS_CHANNEL_INIT_FLAGS: UINT32 = VMBUS_CHANNEL_INIT_FLAG_IS_PIPE;

// --- Server channel init flags (VmbServerChannelInitSetFlags).

/// Loopback offer (meaning undocumented).
pub const VMBUS_SERVER_CHANNEL_INIT_FLAG_LOOPBACK_OFFER: UINT32 = 0x1;
/// The guest exposes a device interface with the channel-type GUID.
pub const VMBUS_SERVER_CHANNEL_INIT_FLAG_ENUMERATE_DEVICE_INTERFACE: UINT32 = 0x2;
/// Offer the channel in pipe mode.
pub const VMBUS_SERVER_CHANNEL_INIT_FLAG_OFFER_AS_PIPE: UINT32 = 0x4;
/// Re-offer after save/restore instead of reusing the channel.
pub const VMBUS_SERVER_CHANNEL_INIT_FLAG_FORCE_NEW_CHANNEL: UINT32 = 0x8;
/// The offer is a socket (TLNPI) provider.
pub const VMBUS_SERVER_CHANNEL_INIT_FLAG_TLNPI_PROVIDER_OFFER: UINT32 = 0x10;
/// Mask of all server channel init flags.
pub const VMBUS_SERVER_CHANNEL_INIT_FLAGS: UINT32 = VMBUS_SERVER_CHANNEL_INIT_FLAG_LOOPBACK_OFFER
    | VMBUS_SERVER_CHANNEL_INIT_FLAG_ENUMERATE_DEVICE_INTERFACE
    | VMBUS_SERVER_CHANNEL_INIT_FLAG_OFFER_AS_PIPE
    | VMBUS_SERVER_CHANNEL_INIT_FLAG_FORCE_NEW_CHANNEL
    | VMBUS_SERVER_CHANNEL_INIT_FLAG_TLNPI_PROVIDER_OFFER;

/// Maximum bytes of extra data in an offer.
pub const VMBUS_SERVER_CHANNEL_INIT_MAXIMUM_OFFER_DATA: ULONG = 120;

// --- Incoming packet flags (`Flags` of EvtVmbChannelProcessPacket).

/// The packet references external data: call `VmbChannelPacketGetExternalData`.
pub const VMBUS_CHANNEL_PROCESS_PACKET_FLAG_EXTERNAL_DATA: UINT32 = 0x1;
/// Mask of all process-packet flags.
pub const VMBUS_CHANNEL_PROCESS_PACKET_FLAGS: UINT32 =
    VMBUS_CHANNEL_PROCESS_PACKET_FLAG_EXTERNAL_DATA;

// --- External data flags (`Flags` of VmbChannelPacketGetExternalData).

/// Map the external data MDL read-only.
pub const VMBUS_CHANNEL_PACKET_EXTERNAL_DATA_FLAG_READ_ONLY: UINT32 = 0x1;
/// Mask of all external data flags.
pub const VMBUS_CHANNEL_PACKET_EXTERNAL_DATA_FLAGS: UINT32 =
    VMBUS_CHANNEL_PACKET_EXTERNAL_DATA_FLAG_READ_ONLY;

// --- Interface versions (`Version` of the interface query).

pub const KMCL_CLIENT_INTERFACE_VERSION_V1: USHORT = 1;
pub const KMCL_CLIENT_INTERFACE_VERSION_V2: USHORT = 2;
pub const KMCL_CLIENT_INTERFACE_VERSION_V3: USHORT = 3;
pub const KMCL_CLIENT_INTERFACE_VERSION_V4: USHORT = 4;
pub const KMCL_CLIENT_INTERFACE_VERSION_V5: USHORT = 5;
/// `_LATEST` as of WDK 19041 and later.
pub const KMCL_CLIENT_INTERFACE_VERSION_LATEST: USHORT = KMCL_CLIENT_INTERFACE_VERSION_V5;

/// Server interface versions 2 through 4 did not ship.
pub const KMCL_SERVER_INTERFACE_VERSION_V1: USHORT = 1;
pub const KMCL_SERVER_INTERFACE_VERSION_V5: USHORT = 5;
/// `_LATEST` as of WDK 19041 and later.
pub const KMCL_SERVER_INTERFACE_VERSION_LATEST: USHORT = KMCL_SERVER_INTERFACE_VERSION_V5;
