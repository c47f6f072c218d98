//! GPADLs: `VmbChannelCreateGpadlFromBuffer`/`FromMdl`/`FromPfnList` and `VmbChannelDeleteGpadl`.
//!
//! Part of the ABI entry points (`table/`, see `mod.rs`).
#![expect(
    unsafe_code,
    reason = "the extern \"system\" boundary with driver code (see table/mod.rs UNSAFETY)"
)]
#![expect(non_snake_case, reason = "routines and parameters keep their C names")]

use super::*;

pub(super) fn create_gpadl(
    Channel: VMBCHANNEL,
    name: &str,
    Flags: UINT32,
    bytes: Option<usize>,
    GpadlHandle: PUINT32,
    buf: impl FnOnce(&crate::State) -> crate::channel::GpadlBuf,
) -> NTSTATUS {
    let site = || format!("{name}({:#x})", tok(Channel));
    let Some((sim, ch)) = chan(Channel, &site) else {
        return STATUS_INVALID_PARAMETER_1;
    };
    if !passive(&sim, &site) {
        return STATUS_INVALID_DEVICE_STATE;
    }
    if Flags & !VMBUS_CHANNEL_GPADL_FLAGS != 0 {
        return STATUS_INVALID_PARAMETER_2;
    }
    let Some(bytes) = bytes.filter(|b| *b > 0) else {
        return STATUS_INVALID_PARAMETER_3;
    };
    if GpadlHandle.is_null() {
        return STATUS_INVALID_PARAMETER;
    }
    let h = {
        let mut st = sim.lock();
        let mut b = buf(&st);
        b.read_only = Flags & VMBUS_CHANNEL_GPADL_FLAG_READ_ONLY != 0;
        let handle = st.next_gpadl.wrapping_add(1).max(1);
        let h = st
            .channels
            .get_mut(&ch)
            .and_then(|c| c.add_gpadl(handle, bytes, b));
        if h.is_some() {
            st.next_gpadl = handle;
        }
        h
    };
    let Some(h) = h else {
        return STATUS_INVALID_DEVICE_STATE;
    };
    // SAFETY: rule OUT_PARAM: `_Out_ PUINT32`, non-null here.
    unsafe { GpadlHandle.write(h) };
    STATUS_SUCCESS
}

/// `VmbChannelCreateGpadlFromBuffer`: records the GPADL (the host side does not map it).
pub(super) unsafe extern "system" fn VmbChannelCreateGpadlFromBuffer(
    Channel: VMBCHANNEL,
    Flags: UINT32,
    Buffer: PVOID,
    ByteCount: UINT32,
    GpadlHandle: PUINT32,
) -> NTSTATUS {
    let bytes = if Buffer.is_null() {
        None
    } else {
        Some(ByteCount as usize)
    };
    let addr = Buffer.expose_provenance();
    create_gpadl(
        Channel,
        "VmbChannelCreateGpadlFromBuffer",
        Flags,
        bytes,
        GpadlHandle,
        |_| fiction_gpadl(Some(addr), ByteCount),
    )
}

/// `VmbChannelCreateGpadlFromMdl`: records the GPADL.
pub(super) unsafe extern "system" fn VmbChannelCreateGpadlFromMdl(
    Channel: VMBCHANNEL,
    Flags: UINT32,
    Mdl: PMDL,
    StartOffsetWithinMdl: UINT32,
    DataLengthWithinMdl: UINT32,
    GpadlHandle: PUINT32,
) -> NTSTATUS {
    // SAFETY: rule MDL_VALID: the driver passes a valid MDL.
    let v = unsafe { read_mdl(Mdl, StartOffsetWithinMdl, DataLengthWithinMdl, false) };
    let gb = v.as_ref().map(|v| crate::channel::GpadlBuf {
        addr: v.va,
        len: v.byte_count,
        pfns: v.pfns.clone(),
        read_only: false,
        deleted: false,
    });
    create_gpadl(
        Channel,
        "VmbChannelCreateGpadlFromMdl",
        Flags,
        v.map(|v| v.byte_count as usize),
        GpadlHandle,
        |_| gb.unwrap_or_else(|| fiction_gpadl(None, 0)),
    )
}

/// `VmbChannelCreateGpadlFromPfnList`: records the GPADL.
pub(super) unsafe extern "system" fn VmbChannelCreateGpadlFromPfnList(
    Channel: VMBCHANNEL,
    Flags: UINT32,
    PfnList: PPFN_NUMBER,
    PfnListCount: UINT32,
    GpadlHandle: PUINT32,
) -> NTSTATUS {
    let bytes = if PfnList.is_null() {
        None
    } else {
        Some(PfnListCount as usize * PAGE_SIZE)
    };
    let pfns: Vec<u64> = if PfnList.is_null() {
        Vec::new()
    } else {
        // SAFETY: rule BUFFER_VALID: `_In_reads_(PfnListCount) PPFN_NUMBER`, non-null here.
        unsafe { std::slice::from_raw_parts(PfnList, PfnListCount as usize) }
            .iter()
            .map(|p| *p as u64)
            .collect()
    };
    let len = PfnListCount.saturating_mul(PAGE_SIZE as u32);
    create_gpadl(
        Channel,
        "VmbChannelCreateGpadlFromPfnList",
        Flags,
        bytes,
        GpadlHandle,
        |st| crate::channel::GpadlBuf {
            addr: contiguous_pages(st, &pfns),
            len,
            pfns,
            read_only: false,
            deleted: false,
        },
    )
}

/// `VmbChannelDeleteGpadl`.
pub(super) unsafe extern "system" fn VmbChannelDeleteGpadl(
    Channel: VMBCHANNEL,
    GpadlHandle: UINT32,
) {
    let site = || format!("VmbChannelDeleteGpadl({:#x}, {GpadlHandle})", tok(Channel));
    let Some((sim, ch)) = chan(Channel, &site) else {
        return;
    };
    if passive(&sim, &site) {
        crate::server::delete_gpadl(&sim, ch, GpadlHandle, &site);
    }
}

/// A GPADL over driver memory at `addr` (the PFN fiction: page address >> 12).
pub(super) fn fiction_gpadl(addr: Option<usize>, len: u32) -> crate::channel::GpadlBuf {
    let pfns = match addr {
        Some(a) if len > 0 => {
            let first = a / PAGE_SIZE;
            let last = (a + len as usize - 1) / PAGE_SIZE;
            (first..=last).map(|p| p as u64).collect()
        }
        _ => Vec::new(),
    };
    crate::channel::GpadlBuf {
        addr,
        len,
        pfns,
        read_only: false,
        deleted: false,
    }
}

/// The address of `pfns` if they are contiguous pages of one simulator buffer.
pub(super) fn contiguous_pages(st: &crate::State, pfns: &[u64]) -> Option<usize> {
    let (buf, page) = st.pages.get(pfns.first()?)?;
    for (i, pfn) in pfns.iter().enumerate() {
        match st.pages.get(pfn) {
            Some((b, p)) if Arc::ptr_eq(b, buf) && *p == page + i => {}
            _ => return None,
        }
    }
    Some(buf.addr() + page * PAGE_SIZE)
}
