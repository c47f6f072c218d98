/*
 * vmbridge.h - the user-mode ABI of the vmbridge driver, for C and C++ programs.
 *
 * The same definitions as the Rust crate `crates/vmbridge-abi` (the one source the
 * driver, the client library and the tool use); `crates/vmbridge-abi/tests/header.rs`
 * compiles a C program against this file and compares every size, offset and constant
 * with the Rust definitions. See docs/user-mode.md for how to use them.
 *
 * Every header is little-endian, starts 8-byte aligned at offset 0 of its buffer, and
 * carries its own Size and Version; reserved fields must be zero. All IOCTLs are
 * METHOD_BUFFERED. Status codes are the standard NTSTATUS values (ntstatus.h); the
 * validation table is in docs/user-mode.md.
 *
 * The header includes what it needs (on Windows <windows.h> and <winioctl.h>). In
 * exactly one translation unit include <initguid.h> before this file to define the
 * GUIDs (after <windows.h>, as usual). Elsewhere (tests, tools that only build buffers)
 * the portable fallbacks below are used.
 */
#ifndef VMBRIDGE_H
#define VMBRIDGE_H

#include <stddef.h> /* size_t (VMBRIDGE_ALIGN8), offsetof */
#include <stdint.h>

#ifdef _WIN32
#include <windows.h> /* the types winioctl.h needs */
#include <winioctl.h>
#else
#ifndef CTL_CODE
#define CTL_CODE(DeviceType, Function, Method, Access) \
    (((DeviceType) << 16) | ((Access) << 14) | ((Function) << 2) | (Method))
#endif
#ifndef FILE_DEVICE_UNKNOWN
#define FILE_DEVICE_UNKNOWN 0x00000022
#endif
#ifndef METHOD_BUFFERED
#define METHOD_BUFFERED 0
#endif
#ifndef FILE_ANY_ACCESS
#define FILE_ANY_ACCESS 0
#endif
#ifndef FILE_READ_ACCESS
#define FILE_READ_ACCESS 0x0001
#endif
#ifndef FILE_WRITE_ACCESS
#define FILE_WRITE_ACCESS 0x0002
#endif
#ifndef GUID_DEFINED
#define GUID_DEFINED
typedef struct _GUID {
    uint32_t Data1;
    uint16_t Data2;
    uint16_t Data3;
    uint8_t Data4[8];
} GUID;
#endif
#ifndef DEFINE_GUID
#define DEFINE_GUID(name, l, w1, w2, b1, b2, b3, b4, b5, b6, b7, b8) \
    static const GUID name = {l, w1, w2, {b1, b2, b3, b4, b5, b6, b7, b8}}
#endif
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* Device interface class of vmbridge devices: find them with
 * CM_Get_Device_Interface_ListW, open them with CreateFileW (FILE_FLAG_OVERLAPPED).
 * {447814ac-fb57-4429-a5dc-4580788dd536} */
DEFINE_GUID(GUID_DEVINTERFACE_VMBRIDGE, 0x447814ac, 0xfb57, 0x4429, 0xa5, 0xdc, 0x45, 0x80,
            0x78, 0x8d, 0xd5, 0x36);

/* The VMBus interface type vmbridge binds to by default.
 * {2942a8b6-8b33-4dd5-8dbb-6dba460aea7b} */
DEFINE_GUID(VMBRIDGE_CHANNEL_TYPE, 0x2942a8b6, 0x8b33, 0x4dd5, 0x8d, 0xbb, 0x6d, 0xba, 0x46,
            0x0a, 0xea, 0x7b);

#define VMBRIDGE_ABI_VERSION 1
/* Alignment of every header and of every entry in a batch. */
#define VMBRIDGE_HEADER_ALIGNMENT 8
/* n rounded up to the next entry boundary. */
#define VMBRIDGE_ALIGN8(n) (((n) + 7u) & ~(size_t)7u)

/* ---- IOCTL codes --------------------------------------------------------------- */
#define IOCTL_VMBRIDGE_GET_INFO \
    CTL_CODE(FILE_DEVICE_UNKNOWN, 0x800, METHOD_BUFFERED, FILE_ANY_ACCESS)
#define IOCTL_VMBRIDGE_READ \
    CTL_CODE(FILE_DEVICE_UNKNOWN, 0x801, METHOD_BUFFERED, FILE_READ_ACCESS)
#define IOCTL_VMBRIDGE_SEND \
    CTL_CODE(FILE_DEVICE_UNKNOWN, 0x802, METHOD_BUFFERED, FILE_WRITE_ACCESS)
#define IOCTL_VMBRIDGE_RESPOND \
    CTL_CODE(FILE_DEVICE_UNKNOWN, 0x803, METHOD_BUFFERED, FILE_WRITE_ACCESS)
#define IOCTL_VMBRIDGE_GET_STATS \
    CTL_CODE(FILE_DEVICE_UNKNOWN, 0x804, METHOD_BUFFERED, FILE_ANY_ACCESS)
#define IOCTL_VMBRIDGE_READ_BATCH \
    CTL_CODE(FILE_DEVICE_UNKNOWN, 0x805, METHOD_BUFFERED, FILE_READ_ACCESS)
#define IOCTL_VMBRIDGE_SEND_BATCH \
    CTL_CODE(FILE_DEVICE_UNKNOWN, 0x806, METHOD_BUFFERED, FILE_WRITE_ACCESS)
/* Host mode, on the control device (Root\VmBridgeHost). */
#define IOCTL_VMBRIDGE_CREATE_OFFER \
    CTL_CODE(FILE_DEVICE_UNKNOWN, 0x810, METHOD_BUFFERED, FILE_READ_ACCESS | FILE_WRITE_ACCESS)

/* ---- flags ------------------------------------------------------------------- */
/* VMBRIDGE_PACKET_HEADER.Flags: the packet is held; answer with IOCTL_VMBRIDGE_RESPOND. */
#define VMBRIDGE_PACKET_FLAG_RESPONSE_PENDING 0x1u
/* VMBRIDGE_READ_REQUEST / VMBRIDGE_READ_BATCH_REQUEST.Flags */
#define VMBRIDGE_READ_FLAG_HOLD_FOR_RESPONSE 0x1u
/* VMBRIDGE_READ_BATCH_REQUEST.Flags: pend until at least one packet is queued. */
#define VMBRIDGE_READ_BATCH_FLAG_WAIT 0x2u
/* VMBRIDGE_SEND_REQUEST.Flags: wait for the other side's completion. */
#define VMBRIDGE_SEND_FLAG_WAIT_FOR_COMPLETION 0x1u
/* VMBRIDGE_CREATE_OFFER_REQUEST.Flags: offer the channel as a pipe. */
#define VMBRIDGE_OFFER_FLAG_PIPE 0x1u

/* ---- headers ----------------------------------------------------------------- */

/* In front of every packet a read returns (and of every packet in a batch). */
typedef struct _VMBRIDGE_PACKET_HEADER {
    uint16_t Size;          /* sizeof(VMBRIDGE_PACKET_HEADER) = 32 */
    uint16_t Version;       /* VMBRIDGE_ABI_VERSION */
    uint32_t Flags;         /* VMBRIDGE_PACKET_FLAG_* */
    uint64_t PacketId;      /* for IOCTL_VMBRIDGE_RESPOND; 0 when already completed */
    uint32_t PayloadLength; /* payload bytes that follow; with STATUS_BUFFER_OVERFLOW, needed */
    uint32_t Reserved;
    uint64_t Sequence;      /* receive sequence number, 1 for the first packet */
} VMBRIDGE_PACKET_HEADER;

/* Input of IOCTL_VMBRIDGE_READ. */
typedef struct _VMBRIDGE_READ_REQUEST {
    uint16_t Size;    /* 16 */
    uint16_t Version;
    uint32_t Flags;   /* VMBRIDGE_READ_FLAG_* */
    uint64_t Reserved;
} VMBRIDGE_READ_REQUEST;

/* Input of IOCTL_VMBRIDGE_READ_BATCH. */
typedef struct _VMBRIDGE_READ_BATCH_REQUEST {
    uint16_t Size;       /* 16 */
    uint16_t Version;
    uint32_t Flags;      /* VMBRIDGE_READ_FLAG_HOLD_FOR_RESPONSE | VMBRIDGE_READ_BATCH_FLAG_WAIT */
    uint32_t MaxPackets; /* 0 = as many as fit */
    uint32_t Reserved;
} VMBRIDGE_READ_BATCH_REQUEST;

/* Output header of IOCTL_VMBRIDGE_READ_BATCH; Count packets follow, each a
 * VMBRIDGE_PACKET_HEADER and its payload, each at the next 8-byte boundary. A buffer
 * that cannot hold the oldest packet gets STATUS_BUFFER_TOO_SMALL with Information =
 * the size needed; the packet stays queued. */
typedef struct _VMBRIDGE_BATCH_HEADER {
    uint16_t Size;   /* 16 */
    uint16_t Version;
    uint32_t Count;  /* packets that follow */
    uint32_t Length; /* bytes of the batch, this header included */
    uint32_t Reserved;
} VMBRIDGE_BATCH_HEADER;

/* Input header of IOCTL_VMBRIDGE_SEND (payload follows); also each entry of
 * IOCTL_VMBRIDGE_SEND_BATCH (Flags 0 there). */
typedef struct _VMBRIDGE_SEND_REQUEST {
    uint16_t Size;          /* 16 */
    uint16_t Version;
    uint32_t Flags;         /* VMBRIDGE_SEND_FLAG_* */
    uint32_t PayloadLength;
    uint32_t Reserved;
} VMBRIDGE_SEND_REQUEST;

/* Input header of IOCTL_VMBRIDGE_SEND_BATCH; Count entries follow, each a
 * VMBRIDGE_SEND_REQUEST and its payload, each at the next 8-byte boundary. */
typedef struct _VMBRIDGE_SEND_BATCH_REQUEST {
    uint16_t Size;  /* 16 */
    uint16_t Version;
    uint32_t Flags; /* 0 */
    uint32_t Count; /* >= 1 */
    uint32_t Reserved;
} VMBRIDGE_SEND_BATCH_REQUEST;

/* Output header of a waiting IOCTL_VMBRIDGE_SEND; the response follows. */
typedef struct _VMBRIDGE_COMPLETION_HEADER {
    uint16_t Size;           /* 16 */
    uint16_t Version;
    int32_t Status;          /* the NTSTATUS KMCL reported for the send */
    uint32_t ResponseLength; /* response bytes the other side sent */
    uint32_t Reserved;
} VMBRIDGE_COMPLETION_HEADER;

/* Input header of IOCTL_VMBRIDGE_RESPOND; the response follows. */
typedef struct _VMBRIDGE_RESPOND_REQUEST {
    uint16_t Size;  /* 24 */
    uint16_t Version;
    uint32_t Flags; /* 0 */
    uint64_t PacketId;
    uint32_t ResponseLength;
    uint32_t Reserved;
} VMBRIDGE_RESPOND_REQUEST;

/* Output of IOCTL_VMBRIDGE_GET_INFO. */
typedef struct _VMBRIDGE_INFO {
    uint16_t Size; /* 32 */
    uint16_t Version;
    uint32_t ProcessingMode; /* 0 DISPATCH_LEVEL, 1 PASSIVE_LEVEL */
    uint32_t QueueDepth;
    uint32_t MaxPacketSize;
    uint32_t MaxPendingReads;
    uint32_t MaxPendingSends;
    uint32_t ChannelState; /* 0 starting, 1 open, 2 suspended, 3 closed */
    uint32_t Reserved;
} VMBRIDGE_INFO;

/* Output of IOCTL_VMBRIDGE_GET_STATS. */
typedef struct _VMBRIDGE_STATS {
    uint16_t Size; /* 88 */
    uint16_t Version;
    uint32_t QueueDepth;
    uint64_t PacketsReceived;
    uint64_t BytesReceived;
    uint64_t PacketsRead;
    uint64_t PacketsSent;
    uint64_t BytesSent;
    uint64_t SendsCompleted;
    uint64_t Responses;
    uint64_t PacketsDiscarded;
    uint64_t Errors;
    uint32_t QueueHighWater;
    uint32_t HeldForResponse;
} VMBRIDGE_STATS;

/* Input of IOCTL_VMBRIDGE_CREATE_OFFER (host mode). GUIDs in the GUID memory layout. */
typedef struct _VMBRIDGE_CREATE_OFFER_REQUEST {
    uint16_t Size; /* 56 */
    uint16_t Version;
    uint32_t Flags;             /* VMBRIDGE_OFFER_FLAG_* */
    uint8_t InterfaceType[16];  /* not all zero */
    uint8_t InterfaceInstance[16];
    uint64_t VmbusHandle;       /* the VM's VMBus handle in the calling process; not 0 */
    uint64_t Reserved;
} VMBRIDGE_CREATE_OFFER_REQUEST;

#ifdef __cplusplus
}
#endif

/* Compile-time layout checks: static_assert in C++11, _Static_assert in C11, and in
 * older C (C99, or MSVC's C without /std:c11) an array type whose size is negative
 * when the check fails. */
#if defined(__cplusplus)
#define VMBRIDGE_STATIC_ASSERT(e, m) static_assert(e, m)
#elif defined(__STDC_VERSION__) && __STDC_VERSION__ >= 201112L
#define VMBRIDGE_STATIC_ASSERT(e, m) _Static_assert(e, m)
#else
#define VMBRIDGE_STATIC_ASSERT_NAME(line) vmbridge_static_assert_##line
#define VMBRIDGE_STATIC_ASSERT_LINE(e, line) \
    typedef char VMBRIDGE_STATIC_ASSERT_NAME(line)[(e) ? 1 : -1]
#define VMBRIDGE_STATIC_ASSERT(e, m) VMBRIDGE_STATIC_ASSERT_LINE(e, __LINE__)
#endif

VMBRIDGE_STATIC_ASSERT(sizeof(VMBRIDGE_PACKET_HEADER) == 32, "VMBRIDGE_PACKET_HEADER");
VMBRIDGE_STATIC_ASSERT(sizeof(VMBRIDGE_READ_REQUEST) == 16, "VMBRIDGE_READ_REQUEST");
VMBRIDGE_STATIC_ASSERT(sizeof(VMBRIDGE_READ_BATCH_REQUEST) == 16, "VMBRIDGE_READ_BATCH_REQUEST");
VMBRIDGE_STATIC_ASSERT(sizeof(VMBRIDGE_BATCH_HEADER) == 16, "VMBRIDGE_BATCH_HEADER");
VMBRIDGE_STATIC_ASSERT(sizeof(VMBRIDGE_SEND_REQUEST) == 16, "VMBRIDGE_SEND_REQUEST");
VMBRIDGE_STATIC_ASSERT(sizeof(VMBRIDGE_SEND_BATCH_REQUEST) == 16, "VMBRIDGE_SEND_BATCH_REQUEST");
VMBRIDGE_STATIC_ASSERT(sizeof(VMBRIDGE_COMPLETION_HEADER) == 16, "VMBRIDGE_COMPLETION_HEADER");
VMBRIDGE_STATIC_ASSERT(sizeof(VMBRIDGE_RESPOND_REQUEST) == 24, "VMBRIDGE_RESPOND_REQUEST");
VMBRIDGE_STATIC_ASSERT(sizeof(VMBRIDGE_INFO) == 32, "VMBRIDGE_INFO");
VMBRIDGE_STATIC_ASSERT(sizeof(VMBRIDGE_STATS) == 88, "VMBRIDGE_STATS");
VMBRIDGE_STATIC_ASSERT(sizeof(VMBRIDGE_CREATE_OFFER_REQUEST) == 56, "VMBRIDGE_CREATE_OFFER_REQUEST");

#endif /* VMBRIDGE_H */
