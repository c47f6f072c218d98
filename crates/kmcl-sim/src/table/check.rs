//! Handle look-ups, the IRQL check and the reads of driver memory every entry point uses.
//!
//! Part of the ABI entry points (`table/`, see `mod.rs`).
#![expect(
    unsafe_code,
    reason = "the extern \"system\" boundary with driver code (see table/mod.rs UNSAFETY)"
)]

use super::*;

pub(super) fn tok<T>(h: *mut T) -> usize {
    h.expose_provenance()
}

pub(super) fn handle<T>(tok: usize) -> *mut T {
    std::ptr::with_exposed_provenance_mut(tok)
}

pub(super) fn report(sim: Option<&Arc<SimInner>>, rule: Rule, site: String) {
    match sim.cloned().or_else(registry::current_sim) {
        Some(s) => s.violation(rule, site),
        None => eprintln!(
            "kmcl-sim: {} at {site} (no simulation to report to)",
            rule.name()
        ),
    }
}

/// Looks a handle up as the object kind `pick` accepts. A live object of that kind is
/// returned (and its simulation becomes the thread's current one); a retired one records
/// `stale_rule`; a forged, unknown or other-kind handle records `invalid_rule`.
pub(super) fn lookup<T>(
    token: usize,
    pick: fn(&Obj) -> Option<T>,
    stale_rule: Rule,
    invalid_rule: Rule,
    site: &dyn Fn() -> String,
) -> Option<(Arc<SimInner>, T)> {
    lookup_retiring(token, pick, false, stale_rule, invalid_rule, site)
}

/// [`lookup`]; with `retire`, a live object of the kind `pick` accepts is also retired (in
/// the same registry round). Inlined: `pick` and `retire` are constants at each call site.
#[inline]
pub(super) fn lookup_retiring<T>(
    token: usize,
    pick: fn(&Obj) -> Option<T>,
    retire: bool,
    stale_rule: Rule,
    invalid_rule: Rule,
    site: &dyn Fn() -> String,
) -> Option<(Arc<SimInner>, T)> {
    let found = if retire {
        registry::lookup_then_retire(token, |o| matches!(o, Obj::Incoming { .. }))
    } else {
        registry::lookup(token)
    };
    match found {
        Lookup::Live(s, obj) => match pick(&obj) {
            Some(v) => {
                registry::set_current_sim(&s);
                Some((s, v))
            }
            None => {
                report(Some(&s), invalid_rule, site());
                None
            }
        },
        Lookup::Stale(s, obj) => {
            let rule = if pick(&obj).is_some() {
                stale_rule
            } else {
                invalid_rule
            };
            report(s.as_ref(), rule, site());
            None
        }
        Lookup::Unknown => {
            report(None, invalid_rule, site());
            None
        }
    }
}

/// Looks a `VMBCHANNEL` up; records `INVALID_CHANNEL_HANDLE` / `USE_AFTER_CLEANUP`.
pub(super) fn chan(h: VMBCHANNEL, site: &dyn Fn() -> String) -> Option<(Arc<SimInner>, u64)> {
    lookup(
        tok(h),
        |o| match *o {
            Obj::Channel { ch } => Some(ch),
            _ => None,
        },
        Rule::UseAfterCleanup,
        Rule::InvalidChannelHandle,
        site,
    )
}

/// Looks a `VMBPACKETCOMPLETION` up; a stale one is `stale_rule`, a forged one `INVALID_PACKET_HANDLE`.
pub(super) fn incoming(
    h: VMBPACKETCOMPLETION,
    stale_rule: Rule,
    site: &dyn Fn() -> String,
) -> Option<(Arc<SimInner>, u64, u64)> {
    lookup(
        tok(h),
        pick_incoming,
        stale_rule,
        Rule::InvalidPacketHandle,
        site,
    )
    .map(|(s, (ch, pkt))| (s, ch, pkt))
}

fn pick_incoming(o: &Obj) -> Option<(u64, u64)> {
    match *o {
        Obj::Incoming { ch, pkt } => Some((ch, pkt)),
        _ => None,
    }
}

/// [`incoming`] for `VmbChannelPacketComplete` / `VmbChannelPacketFail`: a live packet
/// handle is retired by the look-up itself (the completion retires it; a second one is
/// `stale_rule`). Every live packet handle names a packet its channel holds, so the
/// completion that follows always finds it.
pub(super) fn incoming_retiring(
    h: VMBPACKETCOMPLETION,
    stale_rule: Rule,
    site: &dyn Fn() -> String,
) -> Option<(Arc<SimInner>, u64, u64)> {
    lookup_retiring(
        tok(h),
        pick_incoming,
        true,
        stale_rule,
        Rule::InvalidPacketHandle,
        site,
    )
    .map(|(s, (ch, pkt))| (s, ch, pkt))
}

/// Looks a `VMBPACKET` up; a stale one is `stale_rule`, a forged one `INVALID_PACKET_HANDLE`.
pub(super) fn outgoing(
    h: VMBPACKET,
    stale_rule: Rule,
    site: &dyn Fn() -> String,
) -> Option<(Arc<SimInner>, u64, u64)> {
    let pick = |o: &Obj| match *o {
        Obj::Packet { ch, pkt } => Some((ch, pkt)),
        _ => None,
    };
    lookup(tok(h), pick, stale_rule, Rule::InvalidPacketHandle, site)
        .map(|(s, (ch, pkt))| (s, ch, pkt))
}

/// `IRQL_TOO_HIGH` unless at PASSIVE_LEVEL. Returns whether the call may proceed.
pub(super) fn passive(sim: &SimInner, site: &dyn Fn() -> String) -> bool {
    if current_irql() > PASSIVE_LEVEL {
        sim.violation(
            Rule::IrqlTooHigh,
            format!("{} at IRQL {}", site(), current_irql()),
        );
        return false;
    }
    true
}

/// Copies `len` bytes of driver memory.
///
/// # Safety
/// `buf` is valid for reads of `len` bytes (or `len` is 0).
pub(super) unsafe fn driver_bytes(buf: *const c_void, len: u32) -> Option<Vec<u8>> {
    if len == 0 {
        return Some(Vec::new());
    }
    if buf.is_null() {
        return None;
    }
    // SAFETY: rule BUFFER_VALID (KMCL `_In_reads_bytes_(BufferLength)`): the caller passes a
    // buffer readable for `len` bytes; non-null checked above.
    let s = unsafe { std::slice::from_raw_parts(buf.cast::<u8>(), len as usize) };
    Some(s.to_vec())
}

/// The driver's buffer of `len` bytes at `buf`, borrowed for the duration of the call
/// that received it (no copy): `None` if NULL with a non-zero length.
///
/// # Safety
/// `buf` is readable for `len` bytes (as for [`driver_bytes`]) and stays so, unchanged,
/// while the returned slice lives: the caller uses it only inside the KMCL call.
pub(super) unsafe fn driver_slice<'a>(buf: *const c_void, len: u32) -> Option<&'a [u8]> {
    if len == 0 {
        return Some(&[]);
    }
    if buf.is_null() {
        return None;
    }
    // SAFETY: rule BUFFER_VALID (KMCL `_In_reads_bytes_(BufferLength)`): the caller passes a
    // buffer readable for `len` bytes for the duration of the call; non-null checked above.
    Some(unsafe { std::slice::from_raw_parts(buf.cast::<u8>(), len as usize) })
}

/// Reads a driver MDL (first MDL of the chain): header, PFN array and, when it is mapped
/// (`MDL_MAPPED_TO_SYSTEM_VA` or `MDL_SOURCE_IS_NONPAGED_POOL`), the bytes `offset..offset+len`.
///
/// # Safety
/// `mdl` points to a valid MDL header followed by its PFN array, mapped as its flags say.
pub(super) unsafe fn read_mdl(mdl: PMDL, offset: u32, len: u32, force: bool) -> Option<MdlView> {
    if mdl.is_null() {
        return None;
    }
    // SAFETY: rule MDL_VALID: KMCL takes the driver's MDL as a valid, locked MDL.
    let m = unsafe { &*mdl };
    let start = m.StartVa.addr() + m.ByteOffset as usize;
    let pages = (start % PAGE_SIZE + m.ByteCount as usize).div_ceil(PAGE_SIZE);
    // SAFETY: rule MDL_VALID: a valid MDL is followed by its PFN array, one entry per page spanned.
    let pfn_ptr = unsafe { mdl.add(1) }.cast::<PFN_NUMBER>();
    // SAFETY: rule MDL_VALID: the array holds `pages` entries.
    let pfns = unsafe { std::slice::from_raw_parts(pfn_ptr, pages) };
    let avail = m.ByteCount.saturating_sub(offset);
    let len = if len == 0 {
        avail
    } else if force {
        len
    } else {
        len.min(avail)
    };
    let va = if m.MdlFlags & MDL_MAPPED_TO_SYSTEM_VA != 0 {
        Some(m.MappedSystemVa.expose_provenance())
    } else if m.MdlFlags & MDL_SOURCE_IS_NONPAGED_POOL != 0 {
        Some(m.StartVa.expose_provenance() + m.ByteOffset as usize)
    } else {
        None
    }
    .filter(|va| *va != 0);
    let data = match va {
        Some(va) => {
            let p: *const c_void = std::ptr::with_exposed_provenance(va + offset as usize);
            // SAFETY: rule MDL_VALID: a mapped MDL describes `ByteCount` readable bytes at its VA.
            unsafe { driver_bytes(p, len) }.unwrap_or_default()
        }
        None => Vec::new(),
    };
    let in_page = start % PAGE_SIZE + offset as usize;
    let first = in_page / PAGE_SIZE;
    let byte_offset = u32::try_from(in_page % PAGE_SIZE).unwrap_or(0);
    let n = GpaRange::pfn_count(byte_offset, len.max(1));
    Some(MdlView {
        va: va.map(|v| v + offset as usize),
        byte_count: len,
        byte_offset,
        pfns: pfns.iter().skip(first).take(n).map(|p| *p as u64).collect(),
        data,
    })
}

pub(super) fn ext_from_mdl(v: MdlView, flags: u32) -> ExtSpec {
    ExtSpec {
        ranges: vec![GpaRange {
            byte_count: v.byte_count.max(1),
            byte_offset: v.byte_offset,
            pfns: v.pfns,
        }],
        info: ExtInfo {
            data: v.data,
            exact_len: None,
            addr: v.va,
            writable: flags & VMBUS_CHANNEL_FORMAT_FLAG_DATA_OUT_ONLY == 0,
        },
    }
}

pub(super) fn with_exact(mut e: ExtSpec, len: usize) -> ExtSpec {
    e.info.exact_len = Some(len);
    e
}
