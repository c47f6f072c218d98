//! Guest mode: vmbridge bound to a simulated offer of its channel type.
//!
//! C header: `vmbuskernelmodeclientlibapi.h` (the lifecycle: query the table, allocate
//! on the PDO, configure, enable; disable and clean up at the end).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use kmcl::channel::{Kmcl, ParentDevice};
use kmcl::irql::Passive;
use kmcl_sim::{HostEndpoint, Offer, OfferConfig, Sim, SimConfig};
use vmbridge::bridge::{Config, FileId, State, StdLock};
use vmbridge::sim_request::SimRequest;
use vmbridge::trace::Tracer;
use vmbridge::vmbus::{Held, VmbusDevice};
use vmbridge_abi::{VMBRIDGE_CHANNEL_TYPE, guid_bytes};
use vmbridge_client::Device;

use crate::transport::{HoldsDevice, SimTransport};

/// The lock the host build uses.
pub type SimLock = StdLock<State<Held, SimRequest>>;
/// The simulated device type.
pub type SimDevice = VmbusDevice<SimRequest, SimLock>;

static NEXT_FILE: AtomicU64 = AtomicU64::new(1);

/// A fresh `FileId` (one per simulated `CreateFile`).
pub fn next_file() -> FileId {
    FileId(NEXT_FILE.fetch_add(1, Ordering::Relaxed))
}

/// The calling thread's PASSIVE_LEVEL token (every thread outside the simulator's
/// KMCL contexts runs at PASSIVE_LEVEL).
///
/// # Panics
///
/// When called from a simulated DPC (a bug in the caller).
pub fn passive() -> Passive {
    Passive::try_current().expect("the caller runs at PASSIVE_LEVEL")
}

/// A GUID in reading order as the simulator's `GUID`.
pub fn sim_guid(guid: u128) -> kmcl_sys::GUID {
    let b = guid_bytes(guid);
    kmcl_sys::GUID::from_fields(
        u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        u16::from_le_bytes([b[4], b[5]]),
        u16::from_le_bytes([b[6], b[7]]),
        [b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]],
    )
}

/// Routes the simulator's IRQL and thread ids into `kmcl` (once per process is enough;
/// repeating it is harmless).
pub fn install_sim_hooks() {
    // SAFETY: rule IRQL_SOURCE_TRUTHFUL: the simulator's IRQL of the calling thread, the
    // IRQL it runs the driver's code at on every thread.
    unsafe { kmcl::irql::set_host_irql_source(kmcl_sim::current_irql) };
    // SAFETY: rule THREAD_ID_SOURCE_UNIQUE: the address of a thread-local of the calling
    // thread, unique among live threads and never 0.
    unsafe { kmcl::thread::set_thread_id_source(kmcl_sim::current_thread_id) };
}

/// The simulator and the bound device.
#[derive(Debug)]
pub struct GuestTarget {
    sim: Sim,
    offer: Offer,
    device: RwLock<Option<SimDevice>>,
}

impl HoldsDevice for GuestTarget {
    fn slot(&self) -> &RwLock<Option<SimDevice>> {
        &self.device
    }
}

impl Drop for GuestTarget {
    fn drop(&mut self) {
        let d = self
            .device
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(d) = d {
            let _ = d.close(passive());
        }
    }
}

/// vmbridge in guest mode on a threaded simulator.
#[derive(Clone, Debug)]
pub struct SimGuest {
    target: Arc<GuestTarget>,
    host: HostEndpoint,
}

impl SimGuest {
    /// Starts a threaded simulator, offers the vmbridge channel type, opens the device
    /// with `config` (`EvtDevicePrepareHardware`) and waits until the channel is open.
    ///
    /// # Panics
    ///
    /// When the simulated channel does not open (a driver or simulator bug).
    #[must_use]
    pub fn new(config: Config) -> Self {
        Self::with_sim(SimConfig::threaded(), config, Tracer::etw())
    }

    /// As [`SimGuest::new`] with a chosen simulator configuration and tracer.
    ///
    /// # Panics
    ///
    /// As [`SimGuest::new`].
    #[must_use]
    pub fn with_sim(sim_cfg: SimConfig, config: Config, tracer: Tracer) -> Self {
        install_sim_hooks();
        let sim = Sim::new(sim_cfg);
        let offer =
            sim.offer(OfferConfig::default().with_interface_type(sim_guid(VMBRIDGE_CHANNEL_TYPE)));
        let host = offer.host();
        let table: &'static kmcl_sys::KMCL_CLIENT_INTERFACE_V5 =
            Box::leak(Box::new(*sim.client_interface()));
        let kmcl = Kmcl::new(table).expect("the simulator's table validates");
        // SAFETY: rule PARENT_DEVICE_OUTLIVES_CHANNEL: the offer's device object lives as long
        // as `sim`, which the target keeps until after the device is closed (its `Drop`).
        let parent = unsafe { ParentDevice::from_raw(offer.device_object()) };
        let device =
            SimDevice::open(&kmcl, parent, config, tracer, passive()).expect("the channel enables");
        sim.run_until_idle();
        let _ = host.wait_open(Duration::from_secs(10));
        Self {
            target: Arc::new(GuestTarget {
                sim,
                offer,
                device: RwLock::new(Some(device)),
            }),
            host,
        }
    }

    /// A new handle on the device (`CreateFile`); dropping the `Device` closes it.
    #[must_use]
    pub fn open(&self) -> Device<'static> {
        Device::new(Box::new(SimTransport::new(
            self.target.clone(),
            next_file(),
        )))
    }

    /// The host side of the channel.
    #[must_use]
    pub fn host(&self) -> &HostEndpoint {
        &self.host
    }

    /// The simulator (verifier findings, statistics).
    #[must_use]
    pub fn sim(&self) -> &Sim {
        &self.target.sim
    }

    /// The offer (rescind and re-offer through [`SimGuest::host`]).
    #[must_use]
    pub fn offer(&self) -> &Offer {
        &self.target.offer
    }

    /// The driver's own counters (beyond the ABI's `VMBRIDGE_STATS`).
    #[must_use]
    pub fn driver_stats(&self) -> Option<vmbridge::bridge::Stats> {
        let d = self
            .target
            .device
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        d.as_ref().map(|d| d.bridge().stats())
    }
}
