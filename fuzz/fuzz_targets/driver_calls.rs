//! Fuzz target `driver_calls`: a hostile (buggy) *driver* against `kmcl-sim`'s verifier.
//!
//! C header: `vmbuskernelmodeclientlibapi.h` (every routine called here, through the
//! `KMCL_CLIENT_INTERFACE_V5` table `Sim::client_interface` hands out); reference: the
//! `Rule` doc comments, `docs/simulator.md` (lifecycle, the verifier's table, the IRQL
//! table), `docs/irql.md`, Microsoft's DDI pages (`VmbChannelDisable`, `VmbPacketFree`,
//! `EVT_VMB_CHANNEL_SUSPEND`, ...).
//!
//! The other targets make the other endpoint hostile and keep the driver correct. Here the
//! host is the built-in one (deterministic simulator, verifier in Collect mode) and the
//! driver is a raw C-style KMCL client whose every call the input picks, misuse included:
//! the channel lifecycle in any order (Allocate, `Init*` before and after Enable, Enable,
//! Disable, Cleanup, use after Cleanup); incoming packets completed, failed, deferred,
//! completed twice, kept and completed later, completed with response sizes around the
//! ring's limit, written after completion, left outstanding at Disable/Cleanup; outgoing
//! packets allocated, sent (with the driver's completion routine, which may free them, or
//! the default one), freed twice, freed or sent again in flight, leaked, sent on a closed
//! channel; synchronous requests (a completion buffer size not a multiple of 8; at
//! DISPATCH_LEVEL); forged handles from a small set (0, 1, a freed or completed handle, a
//! handle of another kind; never an arbitrary address); PASSIVE-only routines from the
//! DPC's ProcessPacket callback.
//!
//! Beside the simulator the harness keeps its own model of what the driver did wrong,
//! written from the documentation of the rules (not from the simulator's code): for each
//! rule, how many violations the input must produce (a range, where a rule's reporting is
//! approximate by its documentation; each such place says why). At the end (the input's
//! own teardown, then a final `run_until_idle`) it asserts:
//!
//! 1. no panic, abort or hang (deterministic stepping, every loop bounded);
//! 2. every misuse the model recorded is reported as that rule (count within the range);
//! 3. nothing else is reported (rules the model expects none of have count 0);
//! 4. rejected calls did no harm: the host got exactly one completion for each packet that
//!    asked for one and that the driver completed once while the channel was open, none for
//!    a packet never completed, failed, or whose completion could never fit, and never
//!    two; the driver's completion routine ran exactly once per accepted send, for a packet
//!    in flight; a packet a forged call named is still usable as before.
#![no_main]

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::c_void;

use kmcl_sim::{HostEndpoint, Offer, OfferConfig, Rule, Sim, SimConfig};
use kmcl_sys::status::*;
use kmcl_sys::*;
use libfuzzer_sys::fuzz_target;
use vmbridge_fuzz::debug;

/// Host packets per input, at most (their completions and buffers stay far below the
/// ring's 64 KiB and the simulator's 256 kept buffers: see `PAYLOAD_WRITTEN_AFTER_COMPLETION`).
const MAX_HOST_PACKETS: u32 = 48;
/// Operations per input, at most.
const MAX_OPS: usize = 256;
/// Outgoing packets per input, at most.
const MAX_OUT: usize = 32;
/// Data bytes of each ring: `SimConfig::default_ring_pages` (16) pages; the driver never
/// sets another count.
const RING_DATA: u32 = 16 * 4096;
/// Bytes of a completion packet besides its payload: the 16-byte descriptor of a type-11
/// packet and the 8-byte trailer.
const COMPLETION_OVERHEAD: u32 = 24;
/// The response buffer every completion reads from (larger than the ring).
const RESPONSE_BUF: usize = RING_DATA as usize + 4096;
/// First byte of a synchronous request's payload (the host's responder answers those).
const SYNC_MARK: u8 = b'S';
/// First byte of an asynchronous send's payload (left for `HostEndpoint::recv`).
const ASYNC_MARK: u8 = b'A';

// ---------------------------------------------------------------------------------------
// The model
// ---------------------------------------------------------------------------------------

/// How many violations of each rule the input must produce: `lo..=hi`.
#[derive(Debug, Default)]
struct Expect {
    range: HashMap<Rule, (u32, u32)>,
    /// Events that are "exactly one violation of one of these rules" (the documentation
    /// leaves which to the implementation): each adds `(0, 1)` to every candidate, and
    /// here `(1, 1)` to the total.
    either: Vec<(&'static [Rule], String)>,
    /// Every event, for the failure message.
    log: Vec<String>,
}

impl Expect {
    fn add(&mut self, rule: Rule, lo: u32, hi: u32, why: String) {
        let r = self.range.entry(rule).or_default();
        r.0 += lo;
        r.1 += hi;
        if debug() {
            eprintln!("  expect {rule} {lo}..={hi}: {why}");
        }
        self.log.push(format!("{rule} {lo}..={hi}: {why}"));
    }

    fn one(&mut self, rule: Rule, why: String) {
        self.add(rule, 1, 1, why);
    }

    fn one_of(&mut self, rules: &'static [Rule], why: String) {
        for r in rules {
            self.add(*r, 0, 1, why.clone());
        }
        self.either.push((rules, why));
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ChState {
    /// Allocated (or closed again by Disable): `Init*` allowed, sends fail.
    Disabled {
        /// A close raised `EvtChannelSuspend` since the last open (the driver must have
        /// stopped sending).
        suspended: bool,
    },
    /// Enabled and opened (Opened, Started, PostStarted ran).
    Open,
    /// `VmbChannelDisable` runs and raised Suspend (set by the Suspend callback).
    Closing,
}

#[derive(Debug)]
struct Chan {
    tok: usize,
    state: ChState,
    /// Sessions (opens) so far; incoming packets remember theirs.
    session: u32,
    /// `VmbChannelPacketFail` was called in this session: KMCL stops the channel's queue
    /// (`docs/simulator.md`: "processing ceases"), so nothing more arrives, host
    /// completions of the driver's requests included.
    queue_stopped: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum IncState {
    /// Delivered, not completed (held by the driver, or deferred).
    Held,
    /// Deferred to PASSIVE in-line: KMCL re-delivers it.
    Deferred,
    /// Completed or failed.
    Done,
}

#[derive(Debug)]
struct Inc {
    tok: usize,
    seq: u32,
    buf: usize,
    len: u32,
    state: IncState,
    session: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Routine {
    /// KMCL's default routine (frees the packet).
    Default,
    /// The harness's routine; `free` says whether it frees the packet.
    Driver { free: bool },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum OutState {
    Idle,
    /// Sent with the driver's routine, which has not run yet.
    InFlight,
    /// Sent with the default routine: in flight until it runs and frees the packet, which
    /// the driver cannot observe; certain only once a Disable returned.
    DefaultOwned,
    Freed,
}

#[derive(Debug)]
struct Out {
    tok: usize,
    routine: Routine,
    state: OutState,
    /// Completion routine calls for this packet.
    done: u32,
    /// Accepted sends with the driver's routine.
    sends: u32,
}

/// A packet the host sent: how many completions it must get (`lo..=hi`).
#[derive(Debug)]
struct HostPkt {
    trans: u64,
    want: bool,
    lo: u32,
    hi: u32,
}

#[derive(Debug, Default)]
struct Model {
    input: Vec<u8>,
    pos: usize,
    ch: Option<Chan>,
    /// Handles of cleaned-up channels.
    stale_channels: Vec<usize>,
    incoming: Vec<Inc>,
    outgoing: Vec<Out>,
    host: Vec<HostPkt>,
    expect: Expect,
    /// The Suspend callback completes every held packet (else it leaves them).
    suspend_completes: bool,
    /// `VmbChannelDisable` was called and has not returned (Suspend may not have run yet).
    closing: bool,
    /// Findings of the harness itself (the simulator broke a documented behaviour).
    broken: Vec<String>,
    device: usize,
}

impl Model {
    fn byte(&mut self) -> u8 {
        let b = self.input.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }

    fn done(&self) -> bool {
        self.pos >= self.input.len()
    }

    fn inc_mut(&mut self, tok: usize) -> Option<&mut Inc> {
        self.incoming.iter_mut().find(|i| i.tok == tok)
    }

    fn out_mut(&mut self, tok: usize) -> Option<&mut Out> {
        self.outgoing.iter_mut().find(|o| o.tok == tok)
    }

    fn open(&self) -> bool {
        self.ch.as_ref().is_some_and(|c| c.state == ChState::Open)
    }

    /// The driver completed incoming packet `seq` (first time) with `size` bytes.
    fn host_completion(&mut self, seq: u32, size: u32, fail: bool) {
        let state = self.ch.as_ref().map(|c| c.state);
        let Some(h) = self.host.get_mut(seq as usize) else {
            self.broken.push(format!("packet seq {seq} was never sent"));
            return;
        };
        let need = COMPLETION_OVERHEAD + size.next_multiple_of(8);
        let certain_fit = need + 64 <= RING_DATA;
        let certain_too_large = need > RING_DATA;
        if fail || !h.want {
            // No completion asked for, or failed: nothing goes to the host. (A buffer that
            // can never fit, with no completion asked for: the rule's documentation speaks
            // of a completion that "cannot be sent"; none is sent either way, so either
            // reading is allowed here.)
            if !fail && !certain_fit {
                self.expect.add(
                    Rule::CompletionTooLarge,
                    0,
                    1,
                    format!("seq {seq}: {size}-byte completion, none asked for"),
                );
            }
            return;
        }
        let open = matches!(state, Some(ChState::Open | ChState::Closing));
        if certain_too_large {
            // Reported when KMCL would send it; on a closed channel (no ring) nothing is
            // sent, and the documentation does not say whether the size is still checked.
            let lo = u32::from(open);
            self.expect.add(
                Rule::CompletionTooLarge,
                lo,
                1,
                format!("seq {seq}: {size}-byte completion never fits a {RING_DATA}-byte ring"),
            );
            return;
        }
        // Open or in Suspend: "Completions the driver sent during Suspend still reach the
        // host" (docs/simulator.md, Disable), also behind a full ring (the built-in host
        // always reads). Later (Disabled) there is no ring: whether it is dropped or kept
        // is not documented. At the ring's limit: it is sent or reported, not both.
        let (lo, hi) = if open && certain_fit { (1, 1) } else { (0, 1) };
        h.lo = lo;
        h.hi = hi;
        if !certain_fit {
            // Within 64 bytes of the ring's size: whether an empty ring takes it depends
            // on the ring's one reserved slot, an implementation detail.
            self.expect.add(
                Rule::CompletionTooLarge,
                0,
                1,
                format!("seq {seq}: {size}-byte completion at the ring's limit"),
            );
        }
    }
}

thread_local! {
    static MODEL: RefCell<Model> = RefCell::new(Model::default());
    /// The table (the simulator's is the same for every `Sim`): one leaked copy per thread.
    static TABLE: &'static KMCL_CLIENT_INTERFACE_V5 = {
        let sim = Sim::new(SimConfig::deterministic(0).collect());
        Box::leak(Box::new(*sim.client_interface()))
    };
    /// The response bytes every completion reads (zeros).
    static RESPONSE: &'static [u8] = Box::leak(vec![0u8; RESPONSE_BUF].into_boxed_slice());
}

/// Runs `f` on the model. Never held across a KMCL call (callbacks use the model too).
fn m<R>(f: impl FnOnce(&mut Model) -> R) -> R {
    MODEL.with(|c| f(&mut c.borrow_mut()))
}

fn t() -> &'static KMCL_CLIENT_INTERFACE_V5 {
    TABLE.with(|t| *t)
}

fn h<T>(tok: usize) -> *mut T {
    std::ptr::with_exposed_provenance_mut(tok)
}

fn response() -> *mut c_void {
    RESPONSE.with(|r| r.as_ptr().cast_mut().cast())
}

fn log(s: impl FnOnce() -> String) {
    if debug() {
        eprintln!("{}", s());
    }
}

// ---------------------------------------------------------------------------------------
// KMCL calls (each a single call of the table, the SAFETY argument at each)
// ---------------------------------------------------------------------------------------

fn complete(pkt: usize, size: u32) {
    let f = t().VmbChannelPacketComplete.expect("slot");
    // SAFETY: rule BUFFER_VALID: the response buffer holds RESPONSE_BUF >= `size` readable
    // bytes for the call. The handle is a token the simulator looks up, never memory.
    unsafe { f(h(pkt), response(), size) };
}

fn fail(pkt: usize) {
    let f = t().VmbChannelPacketFail.expect("slot");
    // SAFETY: rule INVALID_PACKET_HANDLE: any value is looked up, never dereferenced.
    unsafe { f(h(pkt)) };
}

fn defer(pkt: usize) {
    let f = t().VmbChannelPacketDeferToPassive.expect("slot");
    // SAFETY: rule INVALID_PACKET_HANDLE: any value is looked up, never dereferenced.
    unsafe { f(h(pkt)) };
}

fn packet_allocate(ch: usize) -> usize {
    let f = t().VmbPacketAllocate.expect("slot");
    // SAFETY: rule INVALID_CHANNEL_HANDLE: any value is looked up, never dereferenced.
    unsafe { f(h(ch)) }.expose_provenance()
}

fn packet_free(pkt: usize) {
    let f = t().VmbPacketFree.expect("slot");
    // SAFETY: rule INVALID_PACKET_HANDLE: any value is looked up, never dereferenced.
    unsafe { f(h(pkt)) };
}

fn set_routine(pkt: usize, r: Routine) {
    let f = t().VmbPacketSetCompletionRoutine.expect("slot");
    let routine: PFN_VMB_PACKET_COMPLETION_ROUTINE = match r {
        Routine::Default => None,
        Routine::Driver { .. } => Some(evt_send_done),
    };
    // SAFETY: rule INVALID_PACKET_HANDLE: any value is looked up, never dereferenced; the
    // routine is an `extern "system"` fn of the right type.
    unsafe { f(h(pkt), routine) };
}

fn packet_send(pkt: usize, len: u32, flags: u32) -> NTSTATUS {
    let f = t().VmbPacketSend.expect("slot");
    let mut payload = [ASYNC_MARK; 64];
    let len = len.min(64);
    // SAFETY: rule BUFFER_VALID: `payload` is readable for `len <= 64` bytes during the
    // call (KMCL copies it); no external MDL.
    unsafe {
        f(
            h(pkt),
            payload.as_mut_ptr().cast(),
            len,
            std::ptr::null_mut(),
            flags,
        )
    }
}

fn sync_request(ch: usize, capacity: u32, flags: u32) -> NTSTATUS {
    let f = t().VmbChannelSendSynchronousRequest.expect("slot");
    let mut payload = [SYNC_MARK; 16];
    let mut resp = [0u8; 64];
    let mut size = capacity.min(64);
    // SAFETY: rule BUFFER_VALID: `payload` 16 readable bytes, `resp` writable for `size <=
    // 64` bytes, `size` a valid in/out pointer, all alive until the call returns; no
    // timeout (the host's responder answers); no MDL.
    unsafe {
        f(
            h(ch),
            payload.as_mut_ptr().cast(),
            16,
            std::ptr::null_mut(),
            flags,
            resp.as_mut_ptr().cast(),
            &raw mut size,
            std::ptr::null_mut(),
        )
    }
}

fn channel_allocate(device: usize) -> (NTSTATUS, usize) {
    let f = t().VmbChannelAllocate.expect("slot");
    let mut ch: VMBCHANNEL = std::ptr::null_mut();
    // SAFETY: rule OUT_PARAM: `ch` is a valid out pointer; the device is the offer's token.
    let s = unsafe { f(h(device), FALSE, &raw mut ch) };
    (s, ch.expose_provenance())
}

fn init_callbacks(ch: usize) -> NTSTATUS {
    let set = t().VmbChannelInitSetProcessPacketCallbacks.expect("slot");
    // SAFETY: rule INVALID_CHANNEL_HANDLE: looked up, never dereferenced; the callbacks
    // are `extern "system"` fns of the right types.
    let s = unsafe {
        set(
            h(ch),
            Some(evt_process_packet),
            Some(evt_processing_complete),
        )
    };
    if !NT_SUCCESS(s) {
        return s;
    }
    let mut cb = VMB_CHANNEL_STATE_CHANGE_CALLBACKS_INIT();
    cb.EvtChannelOpened = Some(evt_opened);
    cb.EvtChannelSuspend = Some(evt_suspend);
    cb.EvtChannelClosed = Some(evt_closed);
    let set = t().VmbChannelInitSetStateChangeCallbacks.expect("slot");
    // SAFETY: rule BUFFER_VALID: `cb` is a valid callbacks table for the call (Version
    // and Size set by the INIT function).
    unsafe { set(h(ch), &raw mut cb) }
}

/// An `Init*` setter with no effect on what the harness observes.
fn init_setter(ch: usize, which: u8) -> NTSTATUS {
    if which & 1 == 0 {
        let f = t().VmbChannelInitSetMaximumPacketCount.expect("slot");
        // SAFETY: rule INVALID_CHANNEL_HANDLE: looked up, never dereferenced.
        unsafe { f(h(ch), 64) }
    } else {
        let f = t().VmbChannelInitSetClientContextSize.expect("slot");
        // SAFETY: rule INVALID_CHANNEL_HANDLE: looked up, never dereferenced.
        unsafe { f(h(ch), 16) }
    }
}

fn enable(ch: usize) -> NTSTATUS {
    let f = t().VmbChannelEnable.expect("slot");
    // SAFETY: rule INVALID_CHANNEL_HANDLE: looked up, never dereferenced.
    unsafe { f(h(ch)) }
}

fn disable(ch: usize) {
    let f = t().VmbChannelDisable.expect("slot");
    // SAFETY: rule INVALID_CHANNEL_HANDLE: looked up, never dereferenced.
    unsafe { f(h(ch)) };
}

fn cleanup(ch: usize) {
    let f = t().VmbChannelCleanup.expect("slot");
    // SAFETY: rule INVALID_CHANNEL_HANDLE: looked up, never dereferenced.
    unsafe { f(h(ch)) };
}

fn pause(ch: usize) {
    let f = t().VmbChannelPause.expect("slot");
    // SAFETY: rule INVALID_CHANNEL_HANDLE: looked up, never dereferenced.
    unsafe { f(h(ch)) };
}

fn start(ch: usize) {
    let f = t().VmbChannelStart.expect("slot");
    // SAFETY: rule INVALID_CHANNEL_HANDLE: looked up, never dereferenced.
    unsafe { f(h(ch)) };
}

/// Writes one byte into a completed packet's buffer.
///
/// # Safety
/// `buf` is the `Buffer` of an incoming packet completed just now, of `len > 0` bytes.
unsafe fn scribble(buf: usize, len: u32) {
    if len == 0 {
        return;
    }
    let p: *mut u8 = h(buf);
    // SAFETY: rule PAYLOAD_WRITTEN_AFTER_COMPLETION: the simulator keeps a completed
    // packet's buffer, poisoned, among its last 256 completed ones (docs/simulator.md,
    // Delivery) to detect exactly this write; an input completes at most
    // MAX_HOST_PACKETS < 256, so the memory is still the simulator's live buffer of `len`
    // bytes. The harness breaks the rule on purpose; the memory access itself is valid.
    unsafe { p.write_volatile(0) };
}

// ---------------------------------------------------------------------------------------
// Callbacks
// ---------------------------------------------------------------------------------------

unsafe extern "system" fn evt_opened(_ch: VMBCHANNEL) -> NTSTATUS {
    STATUS_SUCCESS
}

unsafe extern "system" fn evt_suspend(_ch: VMBCHANNEL) {
    let held = m(|m| {
        if let Some(c) = m.ch.as_mut() {
            c.state = ChState::Closing;
        }
        if !m.suspend_completes {
            return Vec::new();
        }
        // This session's packets (a packet of an earlier session is one an earlier Disable
        // was left waiting for: it stays outstanding).
        let session = m.ch.as_ref().map_or(0, |c| c.session);
        m.incoming
            .iter()
            .filter(|i| i.state == IncState::Held && i.session == session)
            .map(|i| i.tok)
            .collect()
    });
    for tok in held {
        log(|| format!("  suspend completes {tok:#x}"));
        let seq = m(|m| {
            let i = m.inc_mut(tok)?;
            i.state = IncState::Done;
            Some(i.seq)
        });
        if let Some(seq) = seq {
            m(|m| m.host_completion(seq, 8, false));
            complete(tok, 8);
        }
    }
}

unsafe extern "system" fn evt_closed(_ch: VMBCHANNEL) {
    m(|m| {
        if let Some(c) = m.ch.as_mut() {
            c.state = ChState::Disabled { suspended: true };
        }
    });
}

unsafe extern "system" fn evt_processing_complete(_ch: VMBCHANNEL, _n: UINT32) {}

unsafe extern "system" fn evt_send_done(pkt: VMBPACKET, status: NTSTATUS, _b: PVOID, _l: UINT32) {
    let tok = pkt.expose_provenance();
    log(|| format!("  send done {tok:#x} status {status:#x}"));
    let free = m(|m| {
        let Some(o) = m.out_mut(tok) else {
            m.broken
                .push(format!("completion routine for unknown packet {tok:#x}"));
            return false;
        };
        o.done += 1;
        if o.state != OutState::InFlight {
            let s = o.state;
            m.broken.push(format!(
                "completion routine for packet {tok:#x} not in flight ({s:?})"
            ));
            return false;
        }
        o.state = OutState::Idle;
        if o.routine == (Routine::Driver { free: true }) {
            o.state = OutState::Freed;
            true
        } else {
            false
        }
    });
    if free {
        packet_free(tok);
    }
}

unsafe extern "system" fn evt_process_packet(
    ch: VMBCHANNEL,
    pkt: VMBPACKETCOMPLETION,
    buf: PVOID,
    len: UINT32,
    _flags: UINT32,
) {
    let tok = pkt.expose_provenance();
    let ch = ch.expose_provenance();
    let irql = kmcl_sim::current_irql();
    let seq = if len >= 4 && !buf.is_null() {
        let mut b = [0u8; 4];
        // SAFETY: rule BUFFER_VALID: KMCL passes `len >= 4` readable bytes until completion.
        unsafe { std::ptr::copy_nonoverlapping(buf.cast::<u8>(), b.as_mut_ptr(), 4) };
        u32::from_le_bytes(b)
    } else {
        u32::MAX
    };
    let buf = buf.expose_provenance();
    let (redelivery, action) = m(|m| {
        let session = m.ch.as_ref().map_or(0, |c| c.session);
        let redelivery = match m.inc_mut(tok) {
            Some(i) if i.state == IncState::Deferred => {
                i.state = IncState::Held;
                i.buf = buf;
                i.len = len;
                true
            }
            Some(i) => {
                let s = i.state;
                m.broken
                    .push(format!("packet {tok:#x} delivered again in state {s:?}"));
                true
            }
            None => {
                m.incoming.push(Inc {
                    tok,
                    seq,
                    buf,
                    len,
                    state: IncState::Held,
                    session,
                });
                false
            }
        };
        // docs/irql.md: packets come from KMCL's DPC (DISPATCH_LEVEL) in the default mode;
        // a deferred packet is re-delivered at PASSIVE_LEVEL.
        let want = if redelivery { 0 } else { 2 };
        if irql != want {
            m.broken.push(format!(
                "packet {tok:#x} (redelivery {redelivery}) delivered at IRQL {irql}"
            ));
        }
        (redelivery, m.byte())
    });
    log(|| format!("  process {tok:#x} seq {seq} len {len} irql {irql} action {action}"));
    let dispatch = irql > 0;
    match action % 12 {
        // Keep it (complete later, or never).
        0 | 1 => {}
        // Defer to PASSIVE (in-line, at DISPATCH only: a re-delivery is completed).
        2 if dispatch && !redelivery => {
            m(|m| {
                if let Some(i) = m.inc_mut(tok) {
                    i.state = IncState::Deferred;
                }
            });
            defer(tok);
        }
        // Fail it.
        3 => {
            m(|m| {
                if let Some(i) = m.inc_mut(tok) {
                    i.state = IncState::Done;
                }
                if let Some(c) = m.ch.as_mut() {
                    c.queue_stopped = true;
                }
                m.host_completion(seq, 0, true);
            });
            fail(tok);
        }
        // Complete twice.
        4 => {
            let size = response_size(m(Model::byte));
            complete_kept(tok, size, false);
            m(|m| {
                m.expect.one(
                    Rule::PacketCompletedTwice,
                    format!("{tok:#x} completed twice in-line"),
                );
            });
            complete(tok, 8);
        }
        // Complete, then write the payload.
        5 => {
            let size = response_size(m(Model::byte));
            complete_kept(tok, size, true);
        }
        // A PASSIVE-only routine from the DPC, then complete.
        6 if dispatch => {
            let what = m(Model::byte);
            dpc_misuse(ch, what);
            complete_kept(tok, 8, false);
        }
        // Defer another kept packet (not in-line from its own ProcessPacket), then complete.
        7 => {
            let other = m(|m| {
                let held: Vec<usize> = m
                    .incoming
                    .iter()
                    .filter(|i| i.state == IncState::Held && i.tok != tok)
                    .map(|i| i.tok)
                    .collect();
                let n = usize::from(m.byte());
                let other = held.get(n % held.len().max(1)).copied()?;
                m.expect.one(
                    Rule::DeferOutsideCallback,
                    format!("defer {other:#x} from the callback of {tok:#x}"),
                );
                Some(other)
            });
            if let Some(o) = other {
                defer(o);
            }
            complete_kept(tok, 8, false);
        }
        // Send a packet from the callback (allowed at DISPATCH), then complete.
        8 => {
            let which = m(Model::byte);
            outgoing_op(which);
            complete_kept(tok, 8, false);
        }
        // Complete with a size picked by the input.
        _ => {
            let size = response_size(m(Model::byte));
            complete_kept(tok, size, false);
        }
    }
}

/// A response size: small ones, or around the ring's limit.
fn response_size(b: u8) -> u32 {
    match b % 8 {
        0 => 0,
        1 => 8,
        2 => 13,
        3 => 200,
        // Around "can never fit": the ring's size minus the completion's overhead.
        4 | 5 => RING_DATA - COMPLETION_OVERHEAD - 64 + u32::from(b >> 3) * 8 % 128,
        6 => RING_DATA,
        _ => RING_DATA + 8,
    }
}

/// Completes a kept packet once (the model first), optionally writing its buffer after.
fn complete_kept(tok: usize, size: u32, scribble_after: bool) {
    let info = m(|m| {
        let i = m.inc_mut(tok)?;
        if i.state == IncState::Done {
            return None;
        }
        i.state = IncState::Done;
        let (seq, buf, len) = (i.seq, i.buf, i.len);
        m.host_completion(seq, size, false);
        if scribble_after && len > 0 {
            m.expect.one(
                Rule::PayloadWrittenAfterCompletion,
                format!("{tok:#x} written after completion"),
            );
        }
        Some((buf, len))
    });
    let Some((buf, len)) = info else {
        return;
    };
    log(|| format!("  complete {tok:#x} with {size} bytes (scribble {scribble_after})"));
    complete(tok, size);
    if scribble_after {
        // SAFETY: rule PAYLOAD_WRITTEN_AFTER_COMPLETION: `buf`/`len` are this packet's
        // buffer, completed just now (see `scribble`).
        unsafe { scribble(buf, len) };
    }
}

/// A routine KMCL allows only at PASSIVE_LEVEL, called from the DPC (DISPATCH_LEVEL).
fn dpc_misuse(ch: usize, what: u8) {
    const IRQL: &[Rule] = &[Rule::IrqlTooHigh];
    const IRQL_OR_INIT: &[Rule] = &[Rule::IrqlTooHigh, Rule::InitAfterEnable];
    const IRQL_OR_BLOCKING: &[Rule] = &[Rule::IrqlTooHigh, Rule::BlockingCallInCallback];
    log(|| format!("  dpc misuse {}", what % 9));
    let device = m(|m| m.device);
    let expect = |rules: &'static [Rule], what: &str| {
        m(|m| {
            let why = format!("{what} at DISPATCH_LEVEL");
            if rules.len() == 1 {
                m.expect.one(rules[0], why);
            } else {
                m.expect.one_of(rules, why);
            }
        });
    };
    match what % 9 {
        0 => {
            expect(IRQL, "VmbChannelAllocate");
            let _ = channel_allocate(device);
        }
        1 => {
            expect(IRQL, "VmbChannelEnable");
            let _ = enable(ch);
        }
        // Disable, Pause and Start are PASSIVE-only (IRQL table) and blocking routines
        // called from a packet callback of the same channel (BLOCKING_CALL_IN_CALLBACK):
        // the documentation does not say which check comes first; the call must be
        // refused with one report.
        2 => {
            expect(IRQL_OR_BLOCKING, "VmbChannelDisable");
            disable(ch);
        }
        3 => {
            expect(IRQL, "VmbChannelCleanup");
            cleanup(ch);
        }
        // An Init* setter on an open channel at DISPATCH breaks two rules (PASSIVE only;
        // only while Disabled); which one the refusal reports is not documented.
        4 => {
            expect(IRQL_OR_INIT, "VmbChannelInitSetMaximumPacketCount");
            let _ = init_setter(ch, 0);
        }
        5 => {
            expect(IRQL_OR_BLOCKING, "VmbChannelPause");
            pause(ch);
        }
        6 => {
            expect(IRQL_OR_BLOCKING, "VmbChannelStart");
            start(ch);
        }
        // A paged buffer is PASSIVE only (header: VMBUS_CHANNEL_FORMAT_FLAG_PAGED_BUFFER).
        7 => {
            let pkt = packet_allocate(ch);
            if pkt == 0 {
                return;
            }
            m(|m| {
                m.outgoing.push(Out {
                    tok: pkt,
                    routine: Routine::Default,
                    state: OutState::Idle,
                    done: 0,
                    sends: 0,
                });
            });
            expect(IRQL, "VmbPacketSend(PAGED_BUFFER)");
            let s = packet_send(pkt, 8, VMBUS_CHANNEL_FORMAT_FLAG_PAGED_BUFFER);
            if NT_SUCCESS(s) {
                m(|m| {
                    m.broken
                        .push(format!("paged send at DISPATCH succeeded: {s:#x}"))
                });
            }
        }
        // A waiting synchronous request at DISPATCH: the rule made for it.
        _ => {
            expect(
                &[Rule::SyncRequestAtDispatch],
                "VmbChannelSendSynchronousRequest(WAIT)",
            );
            let s = sync_request(ch, 64, VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION);
            if NT_SUCCESS(s) {
                m(|m| {
                    m.broken
                        .push(format!("sync request at DISPATCH succeeded: {s:#x}"))
                });
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Outgoing packets
// ---------------------------------------------------------------------------------------

/// One operation on outgoing packets (from the harness thread or a packet callback).
fn outgoing_op(op: u8) {
    let (ch, pick) = m(|m| (m.ch.as_ref().map(|c| c.tok), m.byte()));
    let pkts: Vec<usize> = m(|m| m.outgoing.iter().map(|o| o.tok).collect());
    let pkt = pkts.get(usize::from(pick) % pkts.len().max(1)).copied();
    match op % 4 {
        // Allocate.
        0 => {
            let Some(ch) = ch else { return };
            if pkts.len() >= MAX_OUT {
                return;
            }
            let p = packet_allocate(ch);
            log(|| format!("  packet allocate -> {p:#x}"));
            if p == 0 {
                m(|m| {
                    m.broken
                        .push("VmbPacketAllocate failed on a live channel".into())
                });
                return;
            }
            m(|m| {
                m.outgoing.push(Out {
                    tok: p,
                    routine: Routine::Default,
                    state: OutState::Idle,
                    done: 0,
                    sends: 0,
                });
            });
        }
        // Set the completion routine.
        1 => {
            let Some(p) = pkt else { return };
            let r = match m(Model::byte) % 3 {
                0 => Routine::Default,
                1 => Routine::Driver { free: false },
                _ => Routine::Driver { free: true },
            };
            let ok = m(|m| {
                let o = m.out_mut(p)?;
                match o.state {
                    OutState::Freed => {
                        m.expect.one(
                            Rule::InvalidPacketHandle,
                            format!("set routine of freed {p:#x}"),
                        );
                        Some(false)
                    }
                    // Changing the routine of a packet in flight: not documented as a
                    // misuse; not done.
                    OutState::InFlight | OutState::DefaultOwned => None,
                    OutState::Idle => {
                        o.routine = r;
                        Some(true)
                    }
                }
            });
            if ok.is_some() {
                log(|| format!("  set routine {p:#x} {r:?}"));
                set_routine(p, r);
            }
        }
        // Send.
        2 => {
            let Some(p) = pkt else { return };
            let (lenb, fb) = m(|m| (m.byte(), m.byte()));
            let len = [0, 8, 13, 64][usize::from(lenb % 4)];
            let flags = match fb % 4 {
                0 | 1 => 0,
                2 => VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION,
                _ => {
                    VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION
                        | VMBUS_CHANNEL_FORMAT_FLAG_PAGED_BUFFER
                }
            };
            let irql = kmcl_sim::current_irql();
            if irql > 0 && flags & VMBUS_CHANNEL_FORMAT_FLAG_PAGED_BUFFER != 0 {
                return;
            }
            let verdict = m(|m| {
                let state = m.ch.as_ref().map(|c| c.state);
                let closing = m.closing;
                let o = m.out_mut(p)?;
                let (st, routine) = (o.state, o.routine);
                let e = &mut m.expect;
                Some(match st {
                    OutState::Freed => {
                        e.one(Rule::InvalidPacketHandle, format!("send of freed {p:#x}"));
                        Verdict::Refused
                    }
                    OutState::InFlight => {
                        e.one(
                            Rule::OutgoingPacketReused,
                            format!("send of {p:#x} in flight"),
                        );
                        Verdict::Refused
                    }
                    // The default routine may have run (freed: a stale handle) or not
                    // (in flight): the driver cannot know; one report either way.
                    OutState::DefaultOwned => {
                        e.one_of(
                            &[Rule::OutgoingPacketReused, Rule::InvalidPacketHandle],
                            format!("send of {p:#x} handed to the default routine"),
                        );
                        Verdict::Refused
                    }
                    OutState::Idle => match state {
                        Some(ChState::Open) if closing => Verdict::Maybe(routine),
                        Some(ChState::Open) => Verdict::Accepted(routine),
                        // After Suspend, until the next Enable: "stop sending"
                        // (EVT_VMB_CHANNEL_SUSPEND; the rule's documentation).
                        Some(ChState::Closing | ChState::Disabled { suspended: true }) => {
                            e.one(
                                Rule::SendWhileClosed,
                                format!("send of {p:#x} after Suspend"),
                            );
                            Verdict::Refused
                        }
                        // Never opened: the send fails, no rule (the driver was never told
                        // to stop).
                        Some(ChState::Disabled { suspended: false }) | None => Verdict::Refused,
                    },
                })
            });
            let Some(verdict) = verdict else { return };
            log(|| format!("  send {p:#x} len {len} flags {flags:#x} -> {verdict:?}"));
            // The model first: the routine may run before the harness sees the status.
            let sent = |m: &mut Model, routine: Routine| {
                if let Some(o) = m.out_mut(p) {
                    o.state = match routine {
                        Routine::Default => OutState::DefaultOwned,
                        Routine::Driver { .. } => OutState::InFlight,
                    };
                    if matches!(routine, Routine::Driver { .. }) {
                        o.sends += 1;
                    }
                }
            };
            let unsent = |m: &mut Model, routine: Routine| {
                if let Some(o) = m.out_mut(p) {
                    o.state = OutState::Idle;
                    if matches!(routine, Routine::Driver { .. }) {
                        o.sends -= 1;
                    }
                }
            };
            if let Verdict::Accepted(r) | Verdict::Maybe(r) = verdict {
                m(|m| sent(m, r));
            }
            let s = packet_send(p, len, flags);
            match verdict {
                Verdict::Accepted(r) => {
                    if !NT_SUCCESS(s) {
                        m(|m| {
                            unsent(m, r);
                            m.broken
                                .push(format!("send on an open channel failed: {s:#x}"));
                        });
                    }
                }
                Verdict::Maybe(r) => {
                    if !NT_SUCCESS(s) {
                        m(|m| unsent(m, r));
                    }
                }
                Verdict::Refused => {
                    if NT_SUCCESS(s) {
                        m(|m| {
                            m.broken
                                .push(format!("a refused send of {p:#x} succeeded: {s:#x}"));
                        });
                    }
                }
            }
        }
        // Free.
        _ => {
            let Some(p) = pkt else { return };
            m(|m| {
                let Some(o) = m.out_mut(p) else { return };
                let st = o.state;
                match st {
                    OutState::Idle => o.state = OutState::Freed,
                    OutState::Freed => m.expect.one(
                        Rule::OutgoingPacketDoubleFree,
                        format!("free of freed {p:#x}"),
                    ),
                    OutState::InFlight => m.expect.one(
                        Rule::OutgoingPacketFreedInFlight,
                        format!("free of {p:#x} in flight"),
                    ),
                    // Freed by the default routine already, or still in flight.
                    OutState::DefaultOwned => m.expect.one_of(
                        &[
                            Rule::OutgoingPacketDoubleFree,
                            Rule::OutgoingPacketFreedInFlight,
                        ],
                        format!("free of {p:#x} handed to the default routine"),
                    ),
                }
            });
            log(|| format!("  free {p:#x}"));
            packet_free(p);
        }
    }
}

/// What the model says of a send before it is made.
#[derive(Clone, Copy, Debug)]
enum Verdict {
    /// The send must succeed (the packet is then in flight).
    Accepted(Routine),
    /// A close started and Suspend was not raised yet: the send may fail
    /// (`STATUS_INVALID_DEVICE_STATE`) but breaks no rule (docs/simulator.md,
    /// `SEND_WHILE_CLOSED`: "A send from a packet the close delivers before Suspend ...
    /// fails but breaks no rule").
    Maybe(Routine),
    /// The send must fail (the model recorded the rule it breaks).
    Refused,
}

// ---------------------------------------------------------------------------------------
// The harness thread's operations (PASSIVE_LEVEL)
// ---------------------------------------------------------------------------------------

struct World {
    sim: Sim,
    offer: Offer,
    host: HostEndpoint,
}

fn op_allocate(w: &World) {
    let live = m(|m| m.ch.is_some());
    if live {
        // A second client channel on the offer: refused with a status, no rule.
        let (s, _) = channel_allocate(w.offer.device_object().expose_provenance());
        if NT_SUCCESS(s) {
            m(|m| {
                m.broken
                    .push("a second channel on the offer was allocated".into())
            });
        }
        return;
    }
    let (s, ch) = channel_allocate(w.offer.device_object().expose_provenance());
    log(|| format!("allocate -> {s:#x} {ch:#x}"));
    if !NT_SUCCESS(s) || ch == 0 {
        m(|m| m.broken.push(format!("VmbChannelAllocate failed: {s:#x}")));
        return;
    }
    let s = init_callbacks(ch);
    if !NT_SUCCESS(s) {
        m(|m| {
            m.broken
                .push(format!("callback registration failed: {s:#x}"))
        });
    }
    m(|m| {
        m.ch = Some(Chan {
            tok: ch,
            state: ChState::Disabled { suspended: false },
            session: 0,
            queue_stopped: false,
        });
    });
}

fn op_init(which: u8) {
    let Some((ch, state)) = m(|m| m.ch.as_ref().map(|c| (c.tok, c.state))) else {
        return;
    };
    if !matches!(state, ChState::Disabled { .. }) {
        m(|m| {
            m.expect.one(
                Rule::InitAfterEnable,
                format!("Init* on {ch:#x} ({state:?})"),
            )
        });
    }
    log(|| format!("init setter {which} on {ch:#x} ({state:?})"));
    let s = init_setter(ch, which);
    let ok = NT_SUCCESS(s);
    if ok != matches!(state, ChState::Disabled { .. }) {
        m(|m| m.broken.push(format!("Init* in {state:?} returned {s:#x}")));
    }
}

fn op_enable(w: &World) {
    let Some((ch, state)) = m(|m| m.ch.as_ref().map(|c| (c.tok, c.state))) else {
        return;
    };
    log(|| format!("enable {ch:#x} ({state:?})"));
    let s = enable(ch);
    if !matches!(state, ChState::Disabled { .. }) {
        // Enable of an enabled channel: refused with a status (no rule documents it).
        return;
    }
    if !NT_SUCCESS(s) {
        m(|m| {
            m.broken
                .push(format!("Enable of a Disabled channel failed: {s:#x}"))
        });
        return;
    }
    w.sim.run_until_idle();
    let open = w.host.is_open();
    m(|m| {
        if !open {
            m.broken
                .push("the channel did not open after Enable".into());
        }
        if let Some(c) = m.ch.as_mut() {
            c.state = ChState::Open;
            c.session += 1;
            c.queue_stopped = false;
        }
    });
}

fn op_disable() {
    let Some((ch, state)) = m(|m| m.ch.as_ref().map(|c| (c.tok, c.state))) else {
        return;
    };
    log(|| format!("disable {ch:#x} ({state:?})"));
    m(|m| m.closing = true);
    disable(ch);
    m(|m| {
        m.closing = false;
        if state == ChState::Open {
            // Suspend ran (and completed what the policy says); anything still held is
            // what Disable waits for forever (VmbChannelDisable: "waits until the channel
            // is completely torn down"; EVT_VMB_CHANNEL_SUSPEND: complete everything
            // outstanding). One report per Disable.
            let held = m
                .incoming
                .iter()
                .filter(|i| i.state != IncState::Done)
                .count();
            if held > 0 {
                m.expect.one(
                    Rule::PacketOutstandingAtDisable,
                    format!("Disable of {ch:#x} with {held} packet(s) held"),
                );
            }
            // When Disable returns every send's routine has returned (docs/simulator.md):
            // the default routine freed its packets.
            for o in &mut m.outgoing {
                if o.state == OutState::DefaultOwned {
                    o.state = OutState::Freed;
                }
                if o.state == OutState::InFlight {
                    let t = o.tok;
                    m.broken
                        .push(format!("packet {t:#x} still in flight after Disable"));
                }
            }
        }
        if let Some(c) = m.ch.as_mut() {
            if !matches!(c.state, ChState::Disabled { .. }) {
                m.broken
                    .push(format!("Disable returned in state {:?}", c.state));
            }
            c.state = match state {
                ChState::Disabled { suspended } => ChState::Disabled { suspended },
                _ => ChState::Disabled { suspended: true },
            };
        }
    });
}

fn op_cleanup() {
    let Some((ch, state)) = m(|m| m.ch.as_ref().map(|c| (c.tok, c.state))) else {
        return;
    };
    log(|| format!("cleanup {ch:#x} ({state:?})"));
    let cleaned = m(|m| {
        if !matches!(state, ChState::Disabled { .. }) {
            m.expect.one(
                Rule::CleanupWhileEnabled,
                format!("Cleanup of {ch:#x} ({state:?})"),
            );
            return false;
        }
        let held = m
            .incoming
            .iter()
            .filter(|i| i.state != IncState::Done)
            .count();
        if held > 0 {
            m.expect.one(
                Rule::PacketOutstandingAtCleanup,
                format!("Cleanup of {ch:#x} with {held} packet(s) never completed"),
            );
        }
        let leaked = m
            .outgoing
            .iter()
            .filter(|o| o.state != OutState::Freed)
            .count();
        if leaked > 0 {
            m.expect.one(
                Rule::OutgoingPacketLeaked,
                format!("Cleanup of {ch:#x} with {leaked} packet(s) never freed"),
            );
        }
        true
    });
    cleanup(ch);
    if cleaned {
        m(|m| {
            m.ch = None;
            m.stale_channels.push(ch);
            // Handles of the cleaned-up channel: freed and completed ones stay as
            // forgery candidates (stale); live ones are dropped (what a use of them means
            // after Cleanup is not documented).
            m.incoming.retain(|i| i.state == IncState::Done);
            m.outgoing.retain(|o| o.state == OutState::Freed);
        });
    }
}

/// Completes (or fails, or defers from outside its callback) a kept packet.
fn op_kept(what: u8, pick: u8) {
    let Some((tok, buf, len)) = m(|m| {
        let session = m.ch.as_ref().map_or(0, |c| c.session);
        let kept: Vec<&Inc> = m
            .incoming
            .iter()
            .filter(|i| i.state == IncState::Held && i.session == session)
            .collect();
        let i = kept.get(usize::from(pick) % kept.len().max(1))?;
        Some((i.tok, i.buf, i.len))
    }) else {
        return;
    };
    match what % 4 {
        0 | 1 => {
            let size = response_size(m(Model::byte));
            complete_kept(tok, size, what % 4 == 1);
        }
        2 => {
            m(|m| {
                m.expect.one(
                    Rule::DeferOutsideCallback,
                    format!("defer {tok:#x} from PASSIVE thread"),
                );
            });
            log(|| format!("defer {tok:#x} outside its callback"));
            defer(tok);
        }
        _ => {
            m(|m| {
                if let Some(i) = m.inc_mut(tok) {
                    i.state = IncState::Done;
                    let seq = i.seq;
                    m.host_completion(seq, 0, true);
                }
                if let Some(c) = m.ch.as_mut() {
                    c.queue_stopped = true;
                }
            });
            log(|| format!("fail {tok:#x}"));
            fail(tok);
            let _ = (buf, len);
        }
    }
}

/// A forged handle: 0, 1, a handle of another kind, a freed or completed one.
fn op_forged(kind: u8, pick: u8) {
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum K {
        Junk,
        Channel,
        StaleChannel,
        LiveOut,
        FreedOut,
        LiveIn,
        DoneIn,
    }
    let (k, v) = m(|m| {
        let n = usize::from(pick);
        let choose = |v: Vec<usize>| v.get(n % v.len().max(1)).copied();
        match kind % 8 {
            0 => (K::Junk, Some(0)),
            1 => (K::Junk, Some(1)),
            2 => (K::Channel, m.ch.as_ref().map(|c| c.tok)),
            3 => (K::StaleChannel, choose(m.stale_channels.clone())),
            4 => (
                K::LiveOut,
                choose(
                    m.outgoing
                        .iter()
                        .filter(|o| o.state != OutState::Freed)
                        .map(|o| o.tok)
                        .collect(),
                ),
            ),
            5 => (
                K::FreedOut,
                choose(
                    m.outgoing
                        .iter()
                        .filter(|o| o.state == OutState::Freed)
                        .map(|o| o.tok)
                        .collect(),
                ),
            ),
            6 => (
                K::LiveIn,
                choose(
                    m.incoming
                        .iter()
                        .filter(|i| i.state == IncState::Held)
                        .map(|i| i.tok)
                        .collect(),
                ),
            ),
            _ => (
                K::DoneIn,
                choose(
                    m.incoming
                        .iter()
                        .filter(|i| i.state == IncState::Done)
                        .map(|i| i.tok)
                        .collect(),
                ),
            ),
        }
    });
    let Some(v) = v else { return };
    let routine = m(Model::byte) % 4;
    log(|| format!("forged {k:?} {v:#x} as routine {routine}"));
    match routine {
        // As a VMBPACKETCOMPLETION: Complete (0) or Fail (3). ("completed (or failed) a
        // second time": PACKET_COMPLETED_TWICE either way.)
        0 | 3 => {
            let rule = match k {
                K::LiveIn => return, // a correct call, not a forgery
                K::DoneIn => Rule::PacketCompletedTwice,
                _ => Rule::InvalidPacketHandle,
            };
            let name = if routine == 0 { "Complete" } else { "Fail" };
            m(|m| {
                m.expect
                    .one(rule, format!("VmbChannelPacket{name}({v:#x}) {k:?}"))
            });
            if routine == 0 {
                complete(v, 8);
            } else {
                fail(v);
            }
        }
        // As a VMBPACKET.
        1 => {
            let rule = match k {
                K::LiveOut => return,
                K::FreedOut => Rule::OutgoingPacketDoubleFree,
                _ => Rule::InvalidPacketHandle,
            };
            m(|m| m.expect.one(rule, format!("VmbPacketFree({v:#x}) {k:?}")));
            packet_free(v);
        }
        // As a VMBCHANNEL.
        _ => {
            let rule = match k {
                K::Channel => return,
                K::StaleChannel => Rule::UseAfterCleanup,
                _ => Rule::InvalidChannelHandle,
            };
            let which = m(Model::byte) % 5;
            m(|m| {
                m.expect
                    .one(rule, format!("channel routine {which} on {v:#x} {k:?}"))
            });
            match which {
                0 => {
                    let p = packet_allocate(v);
                    if p != 0 {
                        m(|m| {
                            m.broken
                                .push(format!("VmbPacketAllocate({v:#x}) {k:?} gave a packet"));
                        });
                    }
                }
                1 => {
                    let _ = enable(v);
                }
                2 => {
                    let _ = init_setter(v, 1);
                }
                3 => disable(v),
                _ => cleanup(v),
            }
        }
    }
}

fn op_sync(bad_size: bool) {
    let Some((ch, state, stopped)) =
        m(|m| m.ch.as_ref().map(|c| (c.tok, c.state, c.queue_stopped)))
    else {
        return;
    };
    if let ChState::Disabled { suspended } = state {
        // Refused at once: after Suspend it breaks SEND_WHILE_CLOSED, before any open no
        // rule (as for VmbPacketSend).
        if suspended {
            m(|m| {
                m.expect
                    .one(Rule::SendWhileClosed, "sync request after Suspend".into())
            });
        }
        let s = sync_request(ch, 64, VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION);
        if NT_SUCCESS(s) {
            m(|m| {
                m.broken
                    .push(format!("sync request on a Disabled channel: {s:#x}"))
            });
        }
        return;
    }
    // Only on an open channel whose queue runs: otherwise it waits for ever (a DEADLOCK
    // the driver caused).
    if state != ChState::Open || stopped {
        return;
    }
    let capacity = if bad_size { 60 } else { 64 };
    if bad_size {
        m(|m| {
            m.expect.one(
                Rule::CompletionBufferSize,
                format!("sync request with capacity {capacity}"),
            );
        });
    }
    log(|| format!("sync request capacity {capacity}"));
    let s = sync_request(ch, capacity, VMBUS_CHANNEL_FORMAT_FLAG_WAIT_FOR_COMPLETION);
    // A packet callback that ran during the wait may have failed a packet: the queue
    // stopped and the answer can never be read, a DEADLOCK the driver caused (the
    // request then ends with an error).
    if m(|m| m.ch.as_ref().is_some_and(|c| c.queue_stopped)) {
        m(|m| {
            m.expect.add(
                Rule::Deadlock,
                0,
                1,
                "sync request after a Fail in a callback".into(),
            );
        });
        return;
    }
    // Otherwise the request is answered (a callback's Disable is refused, so the channel
    // stays open).
    if NT_SUCCESS(s) == bad_size {
        m(|m| {
            m.broken.push(format!(
                "sync request (bad size {bad_size}) returned {s:#x}"
            ))
        });
    }
}

fn op_host_send(w: &World, want: bool, len: u8) {
    let (seq, open) = m(|m| (m.host.len() as u32, m.open()));
    if !open || seq >= MAX_HOST_PACKETS {
        return;
    }
    let n = 8 + usize::from(len % 56);
    let mut payload = vec![0u8; n];
    payload[..4].copy_from_slice(&seq.to_le_bytes());
    if let Ok(trans) = w.host.send_inband(&payload, want) {
        log(|| format!("host send seq {seq} trans {trans} want {want}"));
        m(|m| {
            m.host.push(HostPkt {
                trans,
                want,
                lo: 0,
                hi: 0,
            });
        });
    }
}

fn op_host_complete(w: &World) {
    if let Some(p) = w.host.recv()
        && p.completion_requested()
    {
        log(|| format!("host completes driver request {}", p.trans_id));
        let _ = w.host.complete(p.trans_id, &[0u8; 8]);
    }
}

fn run_one(data: &[u8]) {
    let seed = u64::from(data.first().copied().unwrap_or(0));
    // The table first: its first use makes (and drops) a simulation, which would become
    // the thread's current one, the simulation a forged handle's violation is reported to
    // (a handle that belongs to no simulation names none). Then this input's.
    let _ = t();
    let sim = Sim::new(SimConfig::deterministic(seed).collect());
    let offer = sim.offer(OfferConfig::default());
    let host = offer.host();
    host.set_responder(|p| (p.payload.first() == Some(&SYNC_MARK)).then(|| vec![0u8; 16]));
    let w = World { sim, offer, host };
    m(|m| {
        *m = Model {
            input: data.get(1..).unwrap_or_default().to_vec(),
            device: w.offer.device_object().expose_provenance(),
            ..Model::default()
        };
    });
    for _ in 0..MAX_OPS {
        if m(|m| m.done()) {
            break;
        }
        let (op, a, b) = m(|m| (m.byte(), m.byte(), m.byte()));
        match op % 16 {
            0 => op_allocate(&w),
            1 => op_init(a),
            2 => op_enable(&w),
            3 => op_disable(),
            4 => op_cleanup(),
            5 | 6 => op_host_send(&w, a & 1 == 0, b),
            7 => op_kept(a, b),
            8 => outgoing_op(a),
            9 => op_forged(a, b),
            10 => op_sync(a & 1 == 1),
            11 => op_host_complete(&w),
            12 => m(|m| m.suspend_completes = a & 1 == 1),
            13 => {
                for _ in 0..=(a % 8) {
                    w.sim.step();
                }
            }
            _ => {
                w.sim.run_until_idle();
            }
        }
    }
    // The teardown the input leaves: Disable (Suspend as its policy says) and Cleanup.
    w.sim.run_until_idle();
    if m(|m| m.ch.is_some()) {
        op_disable();
        op_cleanup();
    }
    w.sim.run_until_idle();
    check(&w);
}

fn check(w: &World) {
    let mut got: HashMap<u64, u32> = HashMap::new();
    while let Some((trans, _)) = w.host.take_completion() {
        *got.entry(trans).or_default() += 1;
    }
    let violations = w.sim.violations();
    m(|m| {
        let mut count: HashMap<Rule, u32> = HashMap::new();
        for v in &violations {
            *count.entry(v.rule).or_default() += 1;
        }
        let mut bad = m.broken.clone();
        for r in Rule::ALL {
            let n = count.get(r).copied().unwrap_or(0);
            let (lo, hi) = m.expect.range.get(r).copied().unwrap_or((0, 0));
            if n < lo || n > hi {
                bad.push(format!("{r}: {n} reported, {lo}..={hi} expected"));
            }
        }
        // Each "one of" event is one report among its rules: the total over the rules
        // that have such events must cover them.
        let sure: u32 = m.expect.range.values().map(|r| r.0).sum();
        let total = violations.len() as u32;
        let either = m.expect.either.len() as u32;
        if total < sure + either {
            bad.push(format!(
                "{total} violations, at least {sure} + {either} (one-of events) expected"
            ));
        }
        for (seq, p) in m.host.iter().enumerate() {
            let n = got.get(&p.trans).copied().unwrap_or(0);
            if n < p.lo || n > p.hi {
                bad.push(format!(
                    "host packet seq {seq} (trans {}, want {}) got {n} completion(s), {}..={} expected",
                    p.trans, p.want, p.lo, p.hi
                ));
            }
        }
        for (trans, n) in &got {
            if !m.host.iter().any(|p| p.trans == *trans) {
                bad.push(format!("{n} completion(s) of unknown transaction {trans}"));
            }
        }
        for o in &m.outgoing {
            if o.done != o.sends {
                bad.push(format!(
                    "packet {:#x}: {} accepted send(s), routine ran {} time(s)",
                    o.tok, o.sends, o.done
                ));
            }
        }
        if !bad.is_empty() || debug() {
            let mut got: Vec<_> = got.iter().collect();
            got.sort_unstable();
            eprintln!("host completions (transaction, count): {got:?}");
            for v in &violations {
                eprintln!("violation: {v}");
            }
            for e in &m.expect.log {
                eprintln!("expected: {e}");
            }
        }
        assert!(bad.is_empty(), "driver_calls: {bad:#?}");
    });
}

fuzz_target!(|data: &[u8]| {
    run_one(data);
});
