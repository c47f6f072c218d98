//! External data of an incoming packet: the MDL from `VmbChannelPacketGetExternalData`
//! as a byte view ([`ExternalData`]), and the pluggable MDL mapper.
//!
//! C header: `vmbuskernelmodeclientlibapi.h` (`VmbChannelPacketGetExternalData`,
//! `VMBUS_CHANNEL_PACKET_EXTERNAL_DATA_FLAG_READ_ONLY`); `wdm.h` (`MDL`,
//! `MDL_MAPPED_TO_SYSTEM_VA`, `MDL_SOURCE_IS_NONPAGED_POOL`,
//! `MmGetSystemAddressForMdlSafe`); DDI page `FN_VMB_CHANNEL_PACKET_GET_EXTERNAL_DATA`.
//!
//! KMCL returns the external data as a locked but, in general, *unmapped* MDL (chain).
//! When the MDL already has a system address (`MDL_MAPPED_TO_SYSTEM_VA` or
//! `MDL_SOURCE_IS_NONPAGED_POOL`, as `MmGetSystemAddressForMdlSafe` tests) this module
//! uses `MappedSystemVa`. Otherwise it calls the mapper installed with
//! [`set_mdl_mapper`]: a Windows driver installs one in its glue that calls
//! `MmGetSystemAddressForMdlSafe(Mdl, NormalPagePriority | MdlMappingNoExecute)` (adding
//! `MdlMappingNoWrite` for read-only access); the mapping is released by KMCL with the
//! MDL at `VmbChannelPacketComplete`. `kmcl` itself has no `wdk-sys` dependency, so it
//! cannot call the memory manager.
//!
//! The pages belong to (or are shared with) the other endpoint, which may still write
//! them. The view is plain bytes, so any content is a valid value; a protocol that
//! needs a stable snapshot should copy what it parses first (`to_vec`-style into its
//! own buffer) and validate the copy.

use core::marker::PhantomData;
use core::ptr::{self, NonNull};
use core::sync::atomic::{AtomicPtr, Ordering};

use kmcl_sys::{MDL, MDL_MAPPED_TO_SYSTEM_VA, MDL_SOURCE_IS_NONPAGED_POOL, PMDL, PVOID};

use crate::status::{NtStatus, Result};

/// How the external data is mapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// `VMBUS_CHANNEL_PACKET_EXTERNAL_DATA_FLAG_READ_ONLY`: read the sender's data.
    ReadOnly,
    /// Writable: fill a buffer the sender handed over (a read request).
    Writable,
}

/// Maps an MDL that has no system address: returns its system VA, or null on failure.
/// The `bool` is true for writable access.
pub type MdlMapper = fn(PMDL, bool) -> PVOID;

static MAPPER: AtomicPtr<()> = AtomicPtr::new(ptr::null_mut());

/// Installs the MDL mapper (see the module docs). It runs at up to DISPATCH_LEVEL and
/// must not panic.
///
/// # Safety
///
/// Rule MDL_MAPPER_VALID: for as long as it is installed, `mapper` returns null or a
/// system address of the MDL's bytes (`ByteCount` bytes from `StartVa + ByteOffset`),
/// readable (and writable when asked for writable access) until KMCL releases the MDL at
/// `VmbChannelPacketComplete`, as `MmGetSystemAddressForMdlSafe` does. [`ExternalData`]
/// lends those bytes to safe code as slices.
pub unsafe fn set_mdl_mapper(mapper: MdlMapper) {
    // CAST: a fn pointer stored as a data pointer; `mapper()` reads it back as the same type.
    MAPPER.store(mapper as *mut (), Ordering::Release);
}

fn mapper() -> Option<MdlMapper> {
    let p = MAPPER.load(Ordering::Acquire);
    if p.is_null() {
        return None;
    }
    // SAFETY: rule FN_HOOK_ROUNDTRIP: only `set_mdl_mapper` stores into MAPPER, an `MdlMapper`.
    Some(unsafe { core::mem::transmute::<*mut (), MdlMapper>(p) })
}

/// One MDL of a packet's external data, mapped, borrowed from its packet.
///
/// # Invariants
///
/// `ptr` is a system address of `len` bytes described by `mdl`, valid (and writable
/// when `access` is [`Access::Writable`]) until the packet is retired, which cannot
/// happen while `'p` lives; no other `ExternalData` of `mdl` lives during `'p` (each
/// maker hands out its view under a `&mut` borrow).
#[derive(Debug)]
pub struct ExternalData<'p> {
    mdl: NonNull<MDL>,
    ptr: *mut u8,
    len: usize,
    access: Access,
    _packet: PhantomData<&'p ()>,
}

impl<'p> ExternalData<'p> {
    /// # Safety
    ///
    /// `mdl` is a KMCL-owned, locked MDL chain that stays valid for `'p`, and no other
    /// `ExternalData` of `mdl` lives during `'p`.
    pub(crate) unsafe fn from_mdl(mdl: NonNull<MDL>, access: Access) -> Result<Self> {
        // SAFETY: rule EXTERNAL_MDL_LIVES_UNTIL_COMPLETE: the caller guarantees `mdl` is valid.
        let m = unsafe { mdl.as_ref() };
        let len = m.ByteCount as usize;
        let ptr = if len == 0 {
            NonNull::<u8>::dangling().as_ptr()
        } else if m.MdlFlags & (MDL_MAPPED_TO_SYSTEM_VA | MDL_SOURCE_IS_NONPAGED_POOL) != 0 {
            // The memory manager wrote this address into the MDL as a number: take it with
            // exposed provenance (the same machine code; under Miri, a pointer read from
            // integer bytes has none, and dereferencing it is reported as UB).
            core::ptr::with_exposed_provenance_mut::<u8>(m.MappedSystemVa.addr())
        } else {
            let map = mapper().ok_or(NtStatus::INSUFFICIENT_RESOURCES)?;
            map(mdl.as_ptr(), access == Access::Writable).cast::<u8>()
        };
        if ptr.is_null() {
            return Err(NtStatus::INSUFFICIENT_RESOURCES);
        }
        // INVARIANT: a system address of the MDL's ByteCount bytes, valid for `'p`.
        Ok(ExternalData {
            mdl,
            ptr,
            len,
            access,
            _packet: PhantomData,
        })
    }

    /// Bytes in this MDL (`ByteCount`).
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether this MDL is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The access it was mapped with.
    #[must_use]
    pub fn access(&self) -> Access {
        self.access
    }

    /// The bytes, read-only.
    #[must_use]
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: rule EXTERNAL_MDL_LIVES_UNTIL_COMPLETE: type invariant; `u8` accepts any
        // content, and the borrow is tied to `&self` (and so to the packet).
        unsafe { core::slice::from_raw_parts(self.ptr, self.len) }
    }

    /// The bytes, writable.
    ///
    /// # Errors
    ///
    /// `ACCESS_DENIED` for data mapped [`Access::ReadOnly`].
    pub fn as_mut_slice(&mut self) -> Result<&mut [u8]> {
        if self.access != Access::Writable {
            return Err(NtStatus::ACCESS_DENIED);
        }
        // SAFETY: rule EXTERNAL_MDL_LIVES_UNTIL_COMPLETE: type invariant (writable
        // mapping); `&mut self` makes this the only view of the MDL from this packet.
        Ok(unsafe { core::slice::from_raw_parts_mut(self.ptr, self.len) })
    }

    /// The next MDL of the chain (`Mdl->Next`), mapped the same way. The view borrows
    /// `self` mutably, so each MDL of the chain has one live view at a time.
    ///
    /// # Errors
    ///
    /// As mapping the first one.
    #[expect(
        clippy::should_implement_trait,
        reason = "a lending walk: each view borrows the one before it mutably, which `Iterator` cannot express"
    )]
    pub fn next(&mut self) -> Option<Result<ExternalData<'_>>> {
        // SAFETY: rule EXTERNAL_MDL_LIVES_UNTIL_COMPLETE: type invariant.
        let next = unsafe { self.mdl.as_ref() }.Next;
        let next = NonNull::new(next)?;
        // SAFETY: rule EXTERNAL_MDL_LIVES_UNTIL_COMPLETE: the chain is KMCL's, valid for
        // `'p`; the view borrows `self` mutably, so no second view of `next` can be made
        // from this one while it lives (and, by the type invariant, none from elsewhere).
        Some(unsafe { ExternalData::from_mdl(next, self.access) })
    }

    /// The raw MDL (for a driver that maps or DMA-maps it itself).
    #[must_use]
    pub fn mdl(&self) -> PMDL {
        self.mdl.as_ptr()
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;

    fn mdl_over(buf: &mut [u8], flags: i16) -> MDL {
        MDL {
            Next: ptr::null_mut(),
            Size: 0,
            MdlFlags: flags,
            Process: ptr::null_mut(),
            // An address as the memory manager publishes it (exposed; `from_mdl` takes it so).
            MappedSystemVa: ptr::with_exposed_provenance_mut(buf.as_mut_ptr().expose_provenance()),
            StartVa: ptr::null_mut(),
            ByteCount: u32::try_from(buf.len()).unwrap_or(0),
            ByteOffset: 0,
        }
    }

    #[test]
    fn uses_mapped_system_va_when_mapped() {
        let mut buf = [1u8, 2, 3, 4];
        let mut mdl = mdl_over(&mut buf, MDL_MAPPED_TO_SYSTEM_VA);
        // SAFETY: test: the MDL and its buffer outlive the view.
        let view = unsafe { ExternalData::from_mdl(NonNull::from(&mut mdl), Access::ReadOnly) };
        assert_eq!(
            view.map(|v| v.as_slice().to_vec()),
            Ok(std::vec![1, 2, 3, 4])
        );
    }

    #[test]
    fn refuses_writes_to_read_only_external_data() {
        let mut buf = [0u8; 8];
        let mut mdl = mdl_over(&mut buf, MDL_SOURCE_IS_NONPAGED_POOL);
        // SAFETY: test: the MDL and its buffer outlive the view.
        let view = unsafe { ExternalData::from_mdl(NonNull::from(&mut mdl), Access::ReadOnly) };
        let mut view = view.expect("mapped");
        assert_eq!(view.as_mut_slice().err(), Some(NtStatus::ACCESS_DENIED));
    }
}
