//! The test rig: vmbridge bound to a `kmcl-sim` offer, with a simulated user-mode caller.
//!
//! The driver is the real one (core + kmcl + the shims). Shared by vmbridge's end-to-end
//! tests (`tests/common/mod.rs` re-exports it) and `examples/simulate/main.rs`.
//!
//! Reference: `docs/architecture.md` (the lifecycle the rig walks: query the table,
//! allocate on the PDO, configure, enable; disable and clean up at the end).

pub mod client;
pub mod ic;

use std::sync::atomic::{AtomicU64, Ordering};

use kmcl::channel::{Kmcl, ParentDevice};
use kmcl::irql::Passive;
use kmcl_sim::{HostEndpoint, Offer, OfferConfig, Sim, SimConfig};
use vmbridge::bridge::protocol::{AlignedBuf, VMBRIDGE_CHANNEL_TYPE};
use vmbridge::bridge::{Config, FileId, NtStatus, State, UserRequest};
use vmbridge::sim_request::{RequestHandle, RequestRef, SimRequest};
use vmbridge::spin_lock::SpinLock;
use vmbridge::trace::Tracer;
use vmbridge::vmbus::{Held, VmbusDevice};

/// The lock the host build uses.
pub type SimLock = SpinLock<State<Held, SimRequest>>;
/// The device type the rig drives.
pub type SimDevice = VmbusDevice<SimRequest, SimLock>;

static NEXT_FILE: AtomicU64 = AtomicU64::new(1);

/// The `VMBRIDGE_CHANNEL_TYPE` as the simulator's GUID (the offer the INF binds to).
pub fn channel_type() -> kmcl_sys::GUID {
    let b = VMBRIDGE_CHANNEL_TYPE.to_be_bytes();
    kmcl_sys::GUID::from_fields(
        u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
        u16::from_be_bytes([b[4], b[5]]),
        u16::from_be_bytes([b[6], b[7]]),
        [b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]],
    )
}

/// One simulated VMBus, one offer of the vmbridge channel type, one bound device.
#[derive(Debug)]
pub struct Rig {
    /// The simulator.
    pub sim: Sim,
    /// The offer (the PDO).
    pub offer: Offer,
    /// The host side of the channel.
    pub host: HostEndpoint,
    device: Option<SimDevice>,
}

/// The test thread's PASSIVE_LEVEL token.
pub fn passive() -> Passive {
    Passive::try_current().expect("the caller runs at PASSIVE_LEVEL")
}

impl Rig {
    /// `EvtDriverDeviceAdd` + `EvtDevicePrepareHardware` on a fresh simulator: query the
    /// table, allocate the channel on the offer's device object, configure it from
    /// `config`, enable it, and run until the channel is open.
    pub fn new(sim_cfg: SimConfig, config: Config, tracer: Tracer) -> Rig {
        // SAFETY: rule IRQL_SOURCE_TRUTHFUL: the simulator's IRQL of the calling thread, the
        // IRQL it runs the driver's code at on every thread.
        unsafe { kmcl::irql::set_host_irql_source(kmcl_sim::current_irql) };
        let sim = Sim::new(sim_cfg);
        let offer = sim.offer(OfferConfig::default().with_interface_type(channel_type()));
        let host = offer.host();
        let table: &'static kmcl_sys::KMCL_CLIENT_INTERFACE_V5 =
            Box::leak(Box::new(*sim.client_interface()));
        let kmcl = Kmcl::new(table).expect("the simulator's table validates");
        // SAFETY: the offer's device object lives as long as `sim`, which the rig keeps
        // until after the device is closed.
        let parent = unsafe { ParentDevice::from_raw(offer.device_object()) };
        let device =
            SimDevice::open(&kmcl, parent, config, tracer, passive()).expect("the channel enables");
        sim.run_until_idle();
        Rig {
            sim,
            offer,
            host,
            device: Some(device),
        }
    }

    /// Deterministic simulator, default configuration, no host sink.
    pub fn deterministic(seed: u64, config: Config) -> Rig {
        Rig::new(SimConfig::deterministic(seed), config, Tracer::etw())
    }

    /// The bound device.
    pub fn device(&self) -> &SimDevice {
        self.device.as_ref().expect("the device is open")
    }

    /// A new user handle (`CreateFile`).
    pub fn open_file(&self) -> FileId {
        FileId(NEXT_FILE.fetch_add(1, Ordering::Relaxed))
    }

    /// `ReadFile` with an `out_len`-byte buffer.
    pub fn read(&self, file: FileId, out_len: usize) -> RequestHandle {
        let (req, h) = SimRequest::new(&[], out_len);
        self.device().read(file, req);
        h
    }

    /// `WriteFile` of `data`.
    pub fn write(&self, file: FileId, data: &[u8]) -> RequestHandle {
        let (req, h) = SimRequest::new(data, 0);
        self.device().write(file, req);
        h
    }

    /// `DeviceIoControl(code, input, out_len)`.
    pub fn ioctl(&self, file: FileId, code: u32, input: &[u8], out_len: usize) -> RequestHandle {
        let (req, h) = SimRequest::new(input, out_len);
        self.device().device_control(file, code, req);
        h
    }

    /// `DeviceIoControl` over prepared (possibly misaligned) buffers.
    pub fn ioctl_raw(
        &self,
        file: FileId,
        code: u32,
        input: AlignedBuf,
        output: AlignedBuf,
    ) -> RequestHandle {
        let (req, h) = SimRequest::from_buffers(input, output);
        self.device().device_control(file, code, req);
        h
    }

    /// `CancelIoEx` on `h`: the driver's cancel routine takes it back and completes it.
    pub fn cancel(&self, h: &RequestHandle) {
        self.cancel_ref(h.by_ref());
    }

    /// [`Rig::cancel`] of a borrowed request.
    pub fn cancel_ref(&self, h: RequestRef<'_>) {
        h.cancel(|k| {
            self.device()
                .cancel(k)
                .map(|r| r.complete(NtStatus::CANCELLED, 0))
                .is_some()
        });
    }

    /// `CloseHandle` (`EvtFileCleanup`).
    pub fn close_file(&self, file: FileId) {
        self.device().close_file(file);
    }

    /// Runs the simulation until nothing is left to do (deterministic mode).
    pub fn idle(&self) {
        self.sim.run_until_idle();
    }

    /// `EvtDeviceReleaseHardware`: disable and clean up the channel (blocks until KMCL tore
    /// it down). Returns the final bridge counters.
    pub fn close(&mut self) -> vmbridge::bridge::Stats {
        let device = self.device.take().expect("open");
        let stats = device.close(passive());
        self.sim.run_until_idle();
        stats
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        if let Some(device) = self.device.take() {
            device.close(passive());
        }
    }
}
