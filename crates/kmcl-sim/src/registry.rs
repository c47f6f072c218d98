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

use std::sync::{Arc, Weak};

use crate::spin::{SpinGuard, SpinLock};

use crate::SimInner;
use crate::fast_hash::HashMap;
use std::collections::VecDeque;

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
    /// Index of the token's simulation in [`Table::sims`] (a token holds no reference
    /// count: minting and forgetting one touches no atomic).
    sim: u32,
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

/// The tokens: minted ones in a deque indexed by their sequence number (no hashing, and
/// growth is a copy, not a rehash), adopted caller addresses in a map. Sequence numbers only
/// grow; the deque drops its oldest slots once they are forgotten, so it spans the tokens of
/// the simulations still alive, not every token ever minted.
#[derive(Debug)]
struct Table {
    /// `minted[i]` is the token of sequence number `first + i`; `None` once forgotten.
    minted: VecDeque<Option<Entry>>,
    /// Sequence number of `minted[0]` (0-based: token `TOKEN_BASE + (seq + 1) * 16`).
    first: usize,
    adopted: HashMap<usize, Entry>,
    /// Every simulation that minted or adopted a token, by index, held strongly until
    /// [`forget_sim`] (its last `Sim` handle dropped): a look-up clones the `Arc` (one atomic
    /// add) instead of upgrading a `Weak` (a compare-and-swap loop). A forgotten simulation's
    /// slot (all its tokens gone) is `None` until another simulation takes it.
    sims: Vec<Option<Arc<SimInner>>>,
    /// Indices of forgotten simulations' slots.
    free_sims: Vec<u32>,
    /// (address, index) of the simulation that registered a token last.
    last: Option<(usize, u32)>,
}

impl Table {
    /// The sequence number of a minted token.
    fn seq(tok: usize) -> Option<usize> {
        let off = tok.checked_sub(TOKEN_BASE + 16)?;
        off.is_multiple_of(16).then_some(off / 16)
    }

    /// The entry of `tok` (an adopted address shadows a minted token of the same value,
    /// as a later insert did in one map).
    fn get_mut(&mut self, tok: usize) -> Option<&mut Entry> {
        entry_mut(&mut self.minted, self.first, &mut self.adopted, tok)
    }

    /// The index of `sim` in `sims`, registered on first use.
    #[inline(always)]
    fn sim_index(&mut self, sim: &Arc<SimInner>) -> u32 {
        if let Some((a, i)) = self.last
            && a == Arc::as_ptr(sim).addr()
        {
            return i;
        }
        self.sim_index_slow(sim)
    }

    /// [`sim_index`](Self::sim_index) for another simulation than the last one.
    #[cold]
    #[inline(never)]
    fn sim_index_slow(&mut self, sim: &Arc<SimInner>) -> u32 {
        let addr = Arc::as_ptr(sim).addr();
        // Newest first; an `Arc` here keeps its allocation, so an address names one
        // simulation (forgotten slots are `None` and match nothing).
        let found = self.sims.iter().rposition(|w| is_sim(w, Arc::as_ptr(sim)));
        let i = found.unwrap_or_else(|| match self.free_sims.pop() {
            Some(i) => {
                self.sims[i as usize] = Some(Arc::clone(sim));
                i as usize
            }
            None => {
                self.sims.push(Some(Arc::clone(sim)));
                self.sims.len() - 1
            }
        });
        let i = u32::try_from(i).unwrap_or(u32::MAX);
        self.last = Some((addr, i));
        i
    }

    /// Drops forgotten slots from the front.
    fn trim(&mut self) {
        while matches!(self.minted.front(), Some(None)) {
            self.minted.pop_front();
            self.first += 1;
        }
    }
}

/// [`Table::get_mut`] over the fields it needs (so a caller can hold the entry and read
/// `sims` at once).
#[inline]
fn entry_mut<'t>(
    minted: &'t mut VecDeque<Option<Entry>>,
    first: usize,
    adopted: &'t mut HashMap<usize, Entry>,
    tok: usize,
) -> Option<&'t mut Entry> {
    if !adopted.is_empty()
        && let Some(e) = adopted.get_mut(&tok)
    {
        return Some(e);
    }
    let i = Table::seq(tok)?.checked_sub(first)?;
    minted.get_mut(i)?.as_mut()
}

fn table() -> SpinGuard<'static, Table> {
    // Built at compile time: no lazy-initialisation check on every call. A spin lock
    // (crate::spin): every KMCL call takes it for a few dozen instructions.
    static T: SpinLock<Table> = SpinLock::new(Table {
        minted: VecDeque::new(),
        first: 0,
        adopted: HashMap::with_hasher(std::hash::BuildHasherDefault::new()),
        sims: Vec::new(),
        free_sims: Vec::new(),
        last: None,
    });
    T.lock()
}

/// Base of minted tokens: far from null and from small integers, 16-aligned.
const TOKEN_BASE: usize = 0x7e00_0000_0000;

/// Mints a new token for `obj`.
pub(crate) fn mint(sim: &Arc<SimInner>, obj: Obj) -> usize {
    let mut t = table();
    let sim = t.sim_index(sim);
    t.minted.push_back(Some(Entry {
        sim,
        obj,
        live: true,
    }));
    TOKEN_BASE + (t.first + t.minted.len()) * 16
}

/// Registers caller memory (`VmbChannelInitialize`, `VmbPacketInitialize`) as a token.
pub(crate) fn adopt(sim: &Arc<SimInner>, addr: usize, obj: Obj) {
    let mut t = table();
    let sim = t.sim_index(sim);
    t.adopted.insert(
        addr,
        Entry {
            sim,
            obj,
            live: true,
        },
    );
}

/// Retires `tok`: later lookups report it as stale.
pub(crate) fn retire(tok: usize) {
    if let Some(e) = table().get_mut(tok) {
        e.live = false;
    }
}

/// Forgets `tok` entirely (its caller memory may be reused for something else).
pub(crate) fn forget(tok: usize) {
    let mut t = table();
    if t.adopted.remove(&tok).is_none()
        && let Some(i) = Table::seq(tok).and_then(|s| s.checked_sub(t.first))
        && let Some(slot) = t.minted.get_mut(i)
    {
        *slot = None;
        t.trim();
    }
}

/// Looks `tok` up.
#[inline]
pub(crate) fn lookup(tok: usize) -> Lookup {
    lookup_then_retire(tok, |_| false)
}

/// Looks `tok` up as [`lookup`] does and, when it is live and `retire` accepts its object,
/// retires it under the same lock (`VmbChannelPacketComplete`: one registry round per
/// completion instead of two).
#[inline]
pub(crate) fn lookup_then_retire(tok: usize, retire: fn(&Obj) -> bool) -> Lookup {
    let mut t = table();
    let t = &mut *t;
    let Some(e) = entry_mut(&mut t.minted, t.first, &mut t.adopted, tok) else {
        return Lookup::Unknown;
    };
    let s = t.sims.get(e.sim as usize).and_then(Option::clone);
    match s {
        Some(s) if e.live => {
            if retire(&e.obj) {
                e.live = false;
            }
            Lookup::Live(s, e.obj)
        }
        s => Lookup::Stale(s, e.obj),
    }
}

/// Drops every token of a finished simulation.
pub(crate) fn forget_sim(sim: *const SimInner) {
    let mut t = table();
    let Some(i) = t.sims.iter().rposition(|w| is_sim(w, sim)) else {
        return;
    };
    let i = u32::try_from(i).unwrap_or(u32::MAX);
    t.adopted.retain(|_, e| e.sim != i);
    if t.minted.iter().flatten().all(|e| e.sim == i) {
        // The usual case (one simulation at a time): no per-token work. Sequence numbers
        // only grow (a token value is never handed out twice).
        t.first += t.minted.len();
        t.minted.clear();
    } else {
        for slot in &mut t.minted {
            if slot.as_ref().is_some_and(|e| e.sim == i) {
                *slot = None;
            }
        }
        t.trim();
    }
    // No token names slot `i` any more: another simulation may take it. The simulation
    // itself is dropped after the lock (its drop may not re-enter the registry under it).
    let sim = t.sims[i as usize].take();
    t.free_sims.push(i);
    t.last = None;
    drop(t);
    drop(sim);
}

/// Whether the slot holds the simulation at `sim`.
fn is_sim(slot: &Option<Arc<SimInner>>, sim: *const SimInner) -> bool {
    slot.as_ref()
        .is_some_and(|s| std::ptr::eq(Arc::as_ptr(s), sim))
}

thread_local! {
    static CURRENT: std::cell::RefCell<Weak<SimInner>> = const { std::cell::RefCell::new(Weak::new()) };
    /// The address `CURRENT` points to (0 = none), for the comparison on every call. The
    /// `Weak` in `CURRENT` keeps that allocation, so no other simulation can take the address.
    static CURRENT_ADDR: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Remembers `sim` as the simulation this thread last worked with: violations about
/// handles that belong to no simulation (forged ones) are reported to it.
#[inline]
pub(crate) fn set_current_sim(sim: &Arc<SimInner>) {
    if CURRENT_ADDR.with(std::cell::Cell::get) != Arc::as_ptr(sim).addr() {
        set_current_sim_slow(sim);
    }
}

/// [`set_current_sim`] for another simulation than the current one.
#[cold]
#[inline(never)]
fn set_current_sim_slow(sim: &Arc<SimInner>) {
    CURRENT.with(|c| *c.borrow_mut() = Arc::downgrade(sim));
    CURRENT_ADDR.with(|a| a.set(Arc::as_ptr(sim).addr()));
}

/// The simulation this thread last worked with.
pub(crate) fn current_sim() -> Option<Arc<SimInner>> {
    CURRENT.with(|c| c.borrow().upgrade())
}
