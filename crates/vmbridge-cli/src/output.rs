//! Formatting: packets (text, hex, JSON), info, stats, GUIDs; parsing hex and GUIDs.
//!
//! C header: none.

use std::fmt::Write as _;

use vmbridge_abi::{VMBRIDGE_INFO, VMBRIDGE_STATS, format_guid, parse_guid};
use vmbridge_client::Packet;

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Bytes given as hex on the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HexBytes(pub Vec<u8>);

/// Parses hex digits (spaces allowed between bytes) for `send --hex`.
pub fn parse_hex(text: &str) -> Result<HexBytes, String> {
    let digits: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    if !digits.len().is_multiple_of(2) {
        return Err("odd number of hex digits".into());
    }
    digits
        .chunks(2)
        .map(|p| {
            let s = std::str::from_utf8(p).map_err(|_| "not hex".to_string())?;
            // Two hex digits: `from_str_radix` alone also takes a sign ("+f").
            if !p.iter().all(u8::is_ascii_hexdigit) {
                return Err(format!("{s:?} is not a hex byte"));
            }
            u8::from_str_radix(s, 16).map_err(|_| format!("{s:?} is not a hex byte"))
        })
        .collect::<Result<_, _>>()
        .map(HexBytes)
}

/// Parses a GUID argument.
pub fn parse_guid_arg(text: &str) -> Result<u128, String> {
    parse_guid(text)
        .ok_or_else(|| "expected a GUID like 2942a8b6-8b33-4dd5-8dbb-6dba460aea7b".into())
}

/// Parses a decimal or `0x` hex number.
pub fn parse_u64(text: &str) -> Result<u64, String> {
    let r = match text.strip_prefix("0x") {
        // Hex digits only: `from_str_radix` alone also takes a sign ("0x+5").
        Some(h) if h.starts_with('+') => return Err(format!("{text:?}: not a hex number")),
        Some(h) => u64::from_str_radix(h, 16),
        None => text.parse(),
    };
    r.map_err(|e| format!("{text:?}: {e}"))
}

/// A GUID in registry form.
pub fn guid(g: u128) -> String {
    let mut t = [0u8; 36];
    format_guid(g, &mut t);
    String::from_utf8_lossy(&t).into_owned()
}

/// The payload as text when it is printable (trailing VMBus padding dropped), else hex.
fn text_or_hex(p: &[u8]) -> String {
    let end = p.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
    let body = &p[..end];
    if body.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
        format!("{:?}", String::from_utf8_lossy(body))
    } else {
        hex(p)
    }
}

/// One line per packet.
pub fn packet_line(p: &Packet, as_hex: bool) -> String {
    let h = &p.header;
    let held = if p.is_held() {
        format!(" held id={}", h.PacketId)
    } else {
        String::new()
    };
    let body = if as_hex {
        hex(&p.payload)
    } else {
        text_or_hex(&p.payload)
    };
    format!("#{} len={}{held} {body}", h.Sequence, h.PayloadLength)
}

/// One JSON object per packet.
pub fn packet_json(p: &Packet) -> String {
    let h = &p.header;
    format!(
        "{{\"sequence\":{},\"length\":{},\"packet_id\":{},\"held\":{},\"payload_hex\":\"{}\"}}",
        h.Sequence,
        h.PayloadLength,
        h.PacketId,
        p.is_held(),
        hex(&p.payload)
    )
}

/// `IOCTL_VMBRIDGE_GET_INFO`, one field a line.
pub fn print_info(i: &VMBRIDGE_INFO) {
    let mode = match i.ProcessingMode {
        0 => "dispatch",
        1 => "passive",
        _ => "unknown",
    };
    let state = match i.ChannelState {
        0 => "starting",
        1 => "open",
        2 => "suspended",
        3 => "closed",
        _ => "unknown",
    };
    println!("abi version       : {}", i.Version);
    println!("channel state     : {state}");
    println!("processing mode   : {mode}");
    println!("queue depth       : {}", i.QueueDepth);
    println!("max packet size   : {}", i.MaxPacketSize);
    println!("max pending reads : {}", i.MaxPendingReads);
    println!("max pending sends : {}", i.MaxPendingSends);
}

/// `IOCTL_VMBRIDGE_GET_STATS`: a block, or one line with `--watch`.
pub fn print_stats(s: &VMBRIDGE_STATS, one_line: bool) {
    if one_line {
        println!(
            "received {} read {} sent {} completed {} responses {} discarded {} errors {} queue {} (high {}) held {}",
            s.PacketsReceived,
            s.PacketsRead,
            s.PacketsSent,
            s.SendsCompleted,
            s.Responses,
            s.PacketsDiscarded,
            s.Errors,
            s.QueueDepth,
            s.QueueHighWater,
            s.HeldForResponse
        );
        return;
    }
    println!("packets received  : {}", s.PacketsReceived);
    println!("bytes received    : {}", s.BytesReceived);
    println!("packets read      : {}", s.PacketsRead);
    println!("packets sent      : {}", s.PacketsSent);
    println!("bytes sent        : {}", s.BytesSent);
    println!("sends completed   : {}", s.SendsCompleted);
    println!("responses         : {}", s.Responses);
    println!("packets discarded : {}", s.PacketsDiscarded);
    println!("errors            : {}", s.Errors);
    println!(
        "queue depth       : {} (high-water {})",
        s.QueueDepth, s.QueueHighWater
    );
    println!("held for response : {}", s.HeldForResponse);
}
