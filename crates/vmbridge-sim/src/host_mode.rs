//! Host mode: the control device in a simulated root partition; offers made through
//! `IOCTL_VMBRIDGE_CREATE_OFFER` from a simulated process, and a guest `vmbridge` that
//! binds to them.
//!
//! C header: `vmbuskernelmodeclientlibapi.h` (`VmbConvertVmbusHandleToKernelHandle`, the
//! server channel calls behind the offer).

use std::sync::{Arc, PoisonError, RwLock};

use kmcl::channel::{Kmcl, ParentDevice};
use kmcl::server::{InRequestorProcess, KmclServer};
use kmcl_sim::{Sim, SimConfig};
use vmbridge::bridge::{Config, FileId, RequestKey, StdLock};
use vmbridge::host_mode::{HostControl, OfferSetup, Offers};
use vmbridge::sim_request::SimRequest;
use vmbridge::trace::Tracer;
use vmbridge_abi::IOCTL_VMBRIDGE_CREATE_OFFER;
use vmbridge_client::Device;

use crate::guest::{SimDevice, SimLock, install_sim_hooks, next_file, passive, sim_guid};
use crate::transport::{HoldsDevice, SimTransport, Target};

/// The simulated process of the administrator's program (the tool), which holds the
/// VM's VMBus handle.
pub const TOOL_PROCESS: u64 = 4242;

type Control = HostControl<SimRequest, SimLock, StdLock<Offers<SimRequest, SimLock>>>;

fn no_close(_: kmcl_sys::HANDLE) {}

/// The control device, and a guest device once one is bound.
#[derive(Debug)]
pub struct HostTarget {
    sim: Sim,
    control: Control,
    client: Kmcl,
    config: Config,
    guest: RwLock<Option<SimDevice>>,
}

// SAFETY: the raw pointers inside (`ParentDevice`, the KMCL function tables, the
// simulator's handle tokens) are the same the kernel glue shares between its I/O
// callbacks on any processor: the control device and its offers serialize their own
// state with their locks, and the simulator's tokens are plain integers behind the
// pointer type. Nothing here is tied to the creating thread.
unsafe impl Send for HostTarget {}
// SAFETY: as for `Send`: every method takes `&self` and synchronizes internally.
unsafe impl Sync for HostTarget {}

impl Target for HostTarget {
    fn read(&self, file: FileId, req: SimRequest) {
        self.control.read(file, req);
    }
    fn write(&self, file: FileId, req: SimRequest) {
        self.control.write(file, req);
    }
    fn device_control(&self, file: FileId, code: u32, req: SimRequest) {
        if code == IOCTL_VMBRIDGE_CREATE_OFFER {
            // The glue handles it in EvtIoInCallerContext: in the caller's process.
            let _in = kmcl_sim::enter_process(TOOL_PROCESS);
            // SAFETY: rule IN_REQUESTOR_PROCESS: the simulated process of the caller was
            // entered just above, as EvtIoInCallerContext runs in the caller's process.
            let token = unsafe { InRequestorProcess::assume() };
            self.control.create_offer(file, req, &token, passive());
        } else {
            self.control.device_control(file, code, req);
        }
    }
    fn cancel(&self, key: RequestKey) -> Option<SimRequest> {
        self.control.cancel(key)
    }
    fn close_file(&self, file: FileId) {
        let _ = self.control.close_file(file, passive());
        self.sim.run_until_idle();
    }
}

impl Drop for HostTarget {
    fn drop(&mut self) {
        let g = self
            .guest
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(d) = g {
            let _ = d.close(passive());
        }
        self.control.close_all(passive());
    }
}

/// The guest device bound to a host-mode offer, as a [`Target`].
#[derive(Debug)]
pub struct BoundGuest(Arc<HostTarget>);

impl HoldsDevice for BoundGuest {
    fn slot(&self) -> &RwLock<Option<SimDevice>> {
        &self.0.guest
    }
}

/// vmbridge in host mode on a threaded simulator.
#[derive(Clone, Debug)]
pub struct SimHostMode {
    target: Arc<HostTarget>,
}

impl SimHostMode {
    /// A threaded simulator with the host control device (`Root\VmBridgeHost`);
    /// offers and the guest side use `config`.
    ///
    /// # Panics
    ///
    /// When the simulator's server table does not validate (a simulator bug).
    #[must_use]
    pub fn new(config: Config) -> Self {
        install_sim_hooks();
        let sim = Sim::new(SimConfig::threaded());
        let table = Box::leak(Box::new(*sim.server_interface()));
        let server = KmclServer::new(table).expect("the server table validates");
        // SAFETY: rule PARENT_DEVICE_OUTLIVES_CHANNEL: the host device token lives as long
        // as `sim`, which the target drops after every offer is closed.
        let parent = unsafe { ParentDevice::from_raw(sim.host_device()) };
        let control = Control::new(OfferSetup {
            server,
            parent,
            config,
            tracer: Tracer::etw(),
            close_handle: no_close,
        });
        let client = Kmcl::new(Box::leak(Box::new(*sim.client_interface()))).expect("client table");
        Self {
            target: Arc::new(HostTarget {
                sim,
                control,
                client,
                config,
                guest: RwLock::new(None),
            }),
        }
    }

    /// A new handle on the control device.
    #[must_use]
    pub fn open(&self) -> Device<'static> {
        Device::new(Box::new(SimTransport::new(
            self.target.clone(),
            next_file(),
        )))
    }

    /// The VM's VMBus handle as the tool's (simulated) process holds it.
    #[must_use]
    pub fn vmbus_handle(&self) -> u64 {
        self.target.sim.user_vmbus_handle(TOOL_PROCESS).addr() as u64
    }

    /// Binds a guest `vmbridge` to the offer of `interface_type` (as PnP in the VM would)
    /// and returns a handle on it; `None` while no such offer exists.
    #[must_use]
    pub fn open_guest(&self, interface_type: u128) -> Option<Device<'static>> {
        let t = &self.target;
        let offer = t.sim.find_offer(&sim_guid(interface_type), None)?;
        {
            let mut g = t.guest.write().unwrap_or_else(PoisonError::into_inner);
            if g.is_none() {
                // SAFETY: rule PARENT_DEVICE_OUTLIVES_CHANNEL: the offer's device object
                // lives as long as `sim`; the guest device is closed first (`Drop`).
                let parent = unsafe { ParentDevice::from_raw(offer.device_object()) };
                let d =
                    SimDevice::open(&t.client, parent, t.config, Tracer::etw(), passive()).ok()?;
                *g = Some(d);
            }
        }
        t.sim.run_until_idle();
        Some(Device::new(Box::new(SimTransport::new(
            Arc::new(BoundGuest(t.clone())),
            next_file(),
        ))))
    }

    /// The simulator.
    #[must_use]
    pub fn sim(&self) -> &Sim {
        &self.target.sim
    }
}
