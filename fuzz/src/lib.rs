//! Shared harness of the fuzz targets: an input cursor and the driver rig.
//!
//! C header: none; reference: `docs/architecture.md` (the lifecycle the rig walks: query the
//! table, allocate on the PDO, configure, enable; disable and clean up at the end),
//! `docs/ic.md` (IC mode: [`Rig::ic`], the IC offer as `crates/vmbridge-sim/src/rig/ic.rs`
//! makes it).
//!
//! The rig is `vmbridge` (driver core + `kmcl` + the real `extern "system"` shims) bound to
//! a `kmcl-sim` offer in deterministic mode with the verifier in Collect mode, so a KMCL
//! rule violation is a finding the target asserts on rather than a panic inside the
//! simulator.

use std::sync::atomic::{AtomicU64, Ordering};

use kmcl::channel::{Kmcl, ParentDevice};
use kmcl::irql::Passive;
use kmcl_sim::{HostEndpoint, Offer, OfferConfig, Rule, Sim, SimConfig, Violation};
use vmbridge::bridge::config::{IcConfig, IcService};
use vmbridge::bridge::protocol::VMBRIDGE_CHANNEL_TYPE;
use vmbridge::bridge::{Config, FileId, NtStatus, ProcessingMode, State, Stats, StdLock};
use vmbridge::sim_request::{RequestHandle, SimRequest};
use vmbridge::trace::Tracer;
use vmbridge::vmbus::{Held, VmbusDevice};

/// The lock the host build uses.
pub type SimLock = StdLock<State<Held, SimRequest>>;
/// The device type the rig drives.
pub type SimDevice = VmbusDevice<SimRequest, SimLock>;

/// Whether `FUZZ_DEBUG` is set: the targets then print every operation (to read a crash
/// input).
#[must_use]
pub fn debug() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("FUZZ_DEBUG").is_some())
}

/// A little-endian cursor over fuzzer bytes; reads past the end give zeros.
#[derive(Debug)]
pub struct Bytes<'a> {
    data: &'a [u8],
}

impl<'a> Bytes<'a> {
    /// A cursor over `data`.
    #[must_use]
    pub const fn new(data: &'a [u8]) -> Self {
        Self { data }
    }

    /// Whether every byte was consumed.
    #[must_use]
    pub const fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The next byte (0 at the end).
    pub fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((b, rest)) => {
                self.data = rest;
                *b
            }
            None => 0,
        }
    }

    /// The next little-endian `u16`.
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    /// The next little-endian `u32`.
    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    /// The next little-endian `u64`.
    pub fn u64(&mut self) -> u64 {
        u64::from(self.u32()) | (u64::from(self.u32()) << 32)
    }

    /// The next bool.
    pub fn bool(&mut self) -> bool {
        self.u8() & 1 != 0
    }

    /// Up to `n` next bytes (fewer at the end).
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.data.len());
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        head
    }

    /// A length-prefixed byte string of at most `max` bytes: a `u16` length (mod `max + 1`),
    /// then that many bytes.
    pub fn blob(&mut self, max: usize) -> &'a [u8] {
        let n = usize::from(self.u16()) % (max + 1);
        self.take(n)
    }
}

/// The `VMBRIDGE_CHANNEL_TYPE` as the simulator's GUID (the offer the INF binds to).
#[must_use]
pub fn channel_type() -> kmcl_sys::GUID {
    sim_guid(VMBRIDGE_CHANNEL_TYPE)
}

/// A GUID given as a `u128` in the usual reading order, as the simulator's GUID.
#[must_use]
pub fn sim_guid(g: u128) -> kmcl_sys::GUID {
    let b = g.to_be_bytes();
    kmcl_sys::GUID::from_fields(
        u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
        u16::from_be_bytes([b[4], b[5]]),
        u16::from_be_bytes([b[6], b[7]]),
        [b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]],
    )
}

thread_local! {
    /// `Kmcl::new` needs a `'static` table; one leaked copy per thread (the simulator's
    /// table is the same for every `Sim`), so runs do not leak one each.
    static TABLE: &'static kmcl_sys::KMCL_CLIENT_INTERFACE_V5 = {
        let sim = Sim::new(SimConfig::deterministic(0).collect());
        Box::leak(Box::new(*sim.client_interface()))
    };
}

static NEXT_FILE: AtomicU64 = AtomicU64::new(1);

/// The `hv_ic` service of a configured IC service.
#[must_use]
pub const fn hv_service(s: IcService) -> hv_ic::Service {
    match s {
        IcService::Heartbeat => hv_ic::Service::Heartbeat,
        IcService::Shutdown => hv_ic::Service::Shutdown,
        IcService::TimeSync => hv_ic::Service::TimeSync,
    }
}

/// An `hv_ic` GUID as the simulator's GUID.
#[must_use]
pub const fn ic_guid(g: hv_ic::guid::Guid) -> kmcl_sys::GUID {
    kmcl_sys::GUID::from_fields(g.data1, g.data2, g.data3, g.data4)
}

/// A configuration picked from one input byte: processing mode, queue depth, ring size.
#[must_use]
pub fn config_from(b: u8) -> Config {
    Config {
        processing_mode: if b & 1 == 0 {
            ProcessingMode::Dispatch
        } else {
            ProcessingMode::Passive
        },
        queue_depth: [2, 4, 16, 64][usize::from((b >> 1) & 3)],
        max_packet_size: [64, 512, 4096, 4096][usize::from((b >> 3) & 3)],
        max_pending_reads: [1, 4, 8, 64][usize::from((b >> 5) & 3)],
        max_pending_sends: if b & 0x80 == 0 { 2 } else { 8 },
        ring_buffer_pages: if b & 0x40 == 0 { 2 } else { 16 },
        // Small with the small ring, so the bound on sends queued in KMCL is reached.
        max_posted_sends: if b & 0x40 == 0 { 4 } else { 256 },
    }
}

/// One simulated VMBus (deterministic, verifier in Collect mode), one offer of the
/// vmbridge channel type, one bound device.
#[derive(Debug)]
pub struct Rig {
    /// The simulator.
    pub sim: Sim,
    /// The offer (the PDO).
    pub offer: Offer,
    /// The host side of the channel.
    pub host: HostEndpoint,
    device: Option<SimDevice>,
    /// Every user request handed to the driver (each must complete exactly once).
    pub requests: Vec<RequestHandle>,
}

/// The calling thread's PASSIVE_LEVEL token (the fuzzer's thread runs at PASSIVE).
///
/// # Panics
/// If the thread is not at PASSIVE_LEVEL (a harness bug).
#[must_use]
pub fn passive() -> Passive {
    Passive::try_current().expect("the fuzzer thread runs at PASSIVE_LEVEL")
}

impl Rig {
    /// `EvtDriverDeviceAdd` + `EvtDevicePrepareHardware` on a fresh deterministic simulator.
    /// `None` if the channel does not open (a finding only if the caller expects it to).
    #[must_use]
    pub fn new(seed: u64, config: Config) -> Option<Rig> {
        Self::with_sim(SimConfig::deterministic(seed).collect(), config, |_| {})
    }

    /// Like [`Rig::new`] with a prepared simulator configuration; `before_open` runs on
    /// the host endpoint before the driver enables the channel (e.g. `attach_external`).
    #[must_use]
    pub fn with_sim(
        sim_cfg: SimConfig,
        config: Config,
        before_open: impl FnOnce(&HostEndpoint),
    ) -> Option<Rig> {
        let offer = OfferConfig::default().with_interface_type(channel_type());
        Self::open(sim_cfg, offer, config, IcConfig::OFF, before_open)
    }

    /// vmbridge in IC mode (`VmbusDevice::open_ic`) on a fresh deterministic simulator:
    /// the offer of `ic.service`'s channel (interface and instance GUIDs from `hv-ic`, a
    /// pipe), as `crates/vmbridge-sim/src/rig/ic.rs` makes it. `None` without a service
    /// or if the channel does not open.
    #[must_use]
    pub fn ic(seed: u64, config: Config, ic: IcConfig) -> Option<Rig> {
        let service = hv_service(ic.service?);
        let offer = OfferConfig::default()
            .with_interface_type(ic_guid(service.interface_id()))
            .with_interface_instance(ic_guid(service.instance_id()))
            .with_pipe(true);
        let sim_cfg = SimConfig::deterministic(seed).collect();
        Self::open(sim_cfg, offer, config, ic, |_| {})
    }

    fn open(
        sim_cfg: SimConfig,
        offer_cfg: OfferConfig,
        config: Config,
        ic: IcConfig,
        before_open: impl FnOnce(&HostEndpoint),
    ) -> Option<Rig> {
        // SAFETY: rule IRQL_SOURCE_TRUTHFUL: the simulator's IRQL of the calling thread, the
        // IRQL it runs the driver's code at on every thread.
        unsafe { kmcl::irql::set_host_irql_source(kmcl_sim::current_irql) };
        // Every input starts from the same state: the request model's spare buffers hold
        // bytes of the previous inputs' requests (a read's output buffer starts with them),
        // so a finding would otherwise depend on what ran before its input. A new epoch
        // zeroes a spare before this input's requests get it: the same bytes as fresh
        // buffers, without allocating them again (page faults and, under ASan, a stack
        // trace per allocation were most of an input's time).
        vmbridge::sim_request::scrub_spares();
        let sim = Sim::new(sim_cfg);
        let offer = sim.offer(offer_cfg);
        let host = offer.host();
        before_open(&host);
        let table = TABLE.with(|t| *t);
        let kmcl = Kmcl::new(table).ok()?;
        // SAFETY: rule PARENT_DEVICE_OUTLIVES_CHANNEL: the offer's device object lives as
        // long as `sim`, which the rig keeps until after the device is closed.
        let parent = unsafe { ParentDevice::from_raw(offer.device_object()) };
        let device = SimDevice::open_ic(&kmcl, parent, config, ic, Tracer::etw(), passive());
        sim.run_until_idle();
        Some(Rig {
            sim,
            offer,
            host,
            device: Some(device.ok()?),
            requests: Vec::new(),
        })
    }

    /// The bound device.
    ///
    /// # Panics
    /// After [`Rig::close`].
    #[must_use]
    pub fn device(&self) -> &SimDevice {
        self.device.as_ref().expect("the device is open")
    }

    /// A new user handle (`CreateFile`).
    #[must_use]
    pub fn open_file(&self) -> FileId {
        FileId(NEXT_FILE.fetch_add(1, Ordering::Relaxed))
    }

    /// `ReadFile` with an `out_len`-byte buffer.
    pub fn read(&mut self, file: FileId, out_len: usize) -> RequestHandle {
        let (req, h) = SimRequest::new(&[], out_len);
        self.device().read(file, req);
        self.requests.push(h.clone());
        h
    }

    /// `WriteFile` of `data`.
    pub fn write(&mut self, file: FileId, data: &[u8]) -> RequestHandle {
        let (req, h) = SimRequest::new(data, 0);
        self.device().write(file, req);
        self.requests.push(h.clone());
        h
    }

    /// `DeviceIoControl(code, input, out_len)`.
    pub fn ioctl(
        &mut self,
        file: FileId,
        code: u32,
        input: &[u8],
        out_len: usize,
    ) -> RequestHandle {
        let (req, h) = SimRequest::new(input, out_len);
        self.device().device_control(file, code, req);
        self.requests.push(h.clone());
        h
    }

    /// `CancelIoEx` on `h`: the driver's cancel routine takes it back and completes it.
    pub fn cancel(&self, h: &RequestHandle) {
        h.cancel(|k| {
            self.device()
                .cancel(k)
                .map(|r| {
                    vmbridge::bridge::UserRequest::complete(r, NtStatus::CANCELLED, 0);
                })
                .is_some()
        });
    }

    /// `CloseHandle` (`EvtFileCleanup`).
    pub fn close_file(&self, file: FileId) {
        self.device().close_file(file);
    }

    /// `EvtDeviceReleaseHardware`: disable and clean up the channel. Returns the final bridge
    /// counters.
    pub fn close(&mut self) -> Option<Stats> {
        let device = self.device.take()?;
        let stats = device.close(passive());
        self.sim.run_until_idle();
        Some(stats)
    }

    /// Every violation except `allowed` rules.
    #[must_use]
    pub fn violations_except(&self, allowed: &[Rule]) -> Vec<Violation> {
        self.sim
            .violations()
            .into_iter()
            .filter(|v| !allowed.contains(&v.rule))
            .collect()
    }

    /// Asserts that every user request completed exactly once.
    ///
    /// # Panics
    /// When one did not (the finding).
    pub fn assert_requests_completed_once(&self) {
        for (i, h) in self.requests.iter().enumerate() {
            assert_eq!(
                h.completion_count(),
                1,
                "user request #{i} completed {} times",
                h.completion_count()
            );
        }
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        if let Some(device) = self.device.take() {
            device.close(passive());
        }
        // The closed device dropped every request, so their buffers are spares now: kept
        // for the next input (scrubbed by its `with_sim`). Once the pool holds what inputs
        // need, an input frees what it allocates (libFuzzer re-runs an input that ends
        // with more allocations than frees, and then looks for leaks; the spares are
        // reachable from a thread-local, not leaked).
    }
}
