//! The handle registry: every handle given to the driver is an opaque token.
//!
//! C header: `vmbuskernelmodeclientlibapi.h` (`DECLARE_HANDLE(VMBCHANNEL)`, `VMBPACKET`,
//! `VMBPACKETCOMPLETION`; `PDEVICE_OBJECT` of the offer).
//!
//! The simulator never dereferences a handle. Each token maps to (simulation,
//! object); a retired token stays as a tombstone so that a stale handle is told
//! apart from a forged one (`INVALID_PACKET_HANDLE` vs `PACKET_COMPLETED_TWICE`,
//! `USE_AFTER_CLEANUP`). Tokens are process-wide because the `extern "system"`
//! entries receive nothing but the handle.
#![forbid(unsafe_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};

use crate::SimInner;
use crate::fast_hash::HashMap;

/// What a token stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Obj {
    /// An offer's device object (`ParentDeviceObject`).
    Device { offer: u64 },
    /// A channel (`VMBCHANNEL`).
    Channel { ch: u64 },
    /// An outgoing packet (`VMBPACKET`).
    Packet { ch: u64, pkt: u64 },
    /// An incoming packet (`VMBPACKETCOMPLETION`).
    Incoming { ch: u64, pkt: u64 },
    /// The root partition's device object a server (VSP) channel is allocated on.
    HostDevice,
    /// A user-mode VMBus handle of a partition, valid in the simulated process `process`.
    UserVmbusHandle { process: u64 },
    /// A kernel VMBus handle (from `VmbConvertVmbusHandleToKernelHandle`).
    KernelVmbusHandle,
}

#[derive(Debug)]
struct Entry {
    sim: Weak<SimInner>,
    obj: Obj,
    live: bool,
}

/// The outcome of looking a token up.
pub(crate) enum Lookup {
    /// A live object of a running simulation.
    Live(Arc<SimInner>, Obj),
    /// A retired object (tombstone), with its simulation if still alive.
    Stale(Option<Arc<SimInner>>, Obj),
    /// Never handed out.
    Unknown,
}

fn table() -> MutexGuard<'static, HashMap<usize, Entry>> {
    static T: OnceLock<Mutex<HashMap<usize, Entry>>> = OnceLock::new();
    T.get_or_init(|| Mutex::new(HashMap::default()))
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Base of minted tokens: far from null and from small integers, 16-aligned.
const TOKEN_BASE: usize = 0x7e00_0000_0000;

/// Mints a new token for `obj`.
pub(crate) fn mint(sim: &Arc<SimInner>, obj: Obj) -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(1);
    let tok = TOKEN_BASE + NEXT.fetch_add(1, Ordering::Relaxed) * 16;
    table().insert(
        tok,
        Entry {
            sim: Arc::downgrade(sim),
            obj,
            live: true,
        },
    );
    tok
}

/// Registers caller memory (`VmbChannelInitialize`, `VmbPacketInitialize`) as a token.
pub(crate) fn adopt(sim: &Arc<SimInner>, addr: usize, obj: Obj) {
    table().insert(
        addr,
        Entry {
            sim: Arc::downgrade(sim),
            obj,
            live: true,
        },
    );
}

/// Retires `tok`: later lookups report it as stale.
pub(crate) fn retire(tok: usize) {
    if let Some(e) = table().get_mut(&tok) {
        e.live = false;
    }
}

/// Forgets `tok` entirely (its caller memory may be reused for something else).
pub(crate) fn forget(tok: usize) {
    table().remove(&tok);
}

/// Looks `tok` up.
pub(crate) fn lookup(tok: usize) -> Lookup {
    let t = table();
    match t.get(&tok) {
        None => Lookup::Unknown,
        Some(e) if e.live => match e.sim.upgrade() {
            Some(s) => Lookup::Live(s, e.obj),
            None => Lookup::Stale(None, e.obj),
        },
        Some(e) => Lookup::Stale(e.sim.upgrade(), e.obj),
    }
}

/// Drops every token of a finished simulation.
pub(crate) fn forget_sim(sim: *const SimInner) {
    table().retain(|_, e| !std::ptr::eq(e.sim.as_ptr(), sim));
}

thread_local! {
    static CURRENT: std::cell::RefCell<Weak<SimInner>> = const { std::cell::RefCell::new(Weak::new()) };
}

/// Remembers `sim` as the simulation this thread last worked with: violations about
/// handles that belong to no simulation (forged ones) are reported to it.
pub(crate) fn set_current_sim(sim: &Arc<SimInner>) {
    CURRENT.with(|c| {
        let same = std::ptr::eq(c.borrow().as_ptr(), Arc::as_ptr(sim));
        if !same {
            *c.borrow_mut() = Arc::downgrade(sim);
        }
    });
}

/// The simulation this thread last worked with.
pub(crate) fn current_sim() -> Option<Arc<SimInner>> {
    CURRENT.with(|c| c.borrow().upgrade())
}
