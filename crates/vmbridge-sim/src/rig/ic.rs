//! The IC test rig: vmbridge in IC mode on a simulated IC offer, the simulator's host IC
//! endpoint, and a simulated user-mode IC program.
//!
//! Reference: `docs/ic.md` (IC mode), `driver/ic.rs` (the `IcRequest` record and the
//! 4-byte HRESULT answer), `docs/architecture.md` (the lifecycle the rig walks).
#![allow(
    dead_code,
    reason = "each test binary and the example use a different subset"
)]

use kmcl::channel::{Kmcl, ParentDevice};
use kmcl::irql::Passive;
use kmcl_sim::ic_host::IcHost;
use kmcl_sim::{Offer, OfferConfig, Sim, SimConfig};
use vmbridge::bridge::config::{IcConfig, IcService};
use vmbridge::bridge::protocol::{
    IOCTL_VMBRIDGE_READ, IOCTL_VMBRIDGE_RESPOND, VMBRIDGE_PACKET_HEADER,
    VMBRIDGE_READ_FLAG_HOLD_FOR_RESPONSE, build_read, build_respond,
};
use vmbridge::bridge::{Config, FileId, NtStatus, State, StdLock};
use vmbridge::ic::{IC_REQUEST_LEN, IcRequest};
use vmbridge::sim_request::{RequestHandle, SimRequest};
use vmbridge::trace::Tracer;
use vmbridge::vmbus::{Held, VmbusDevice};

/// The device type the rig drives.
pub type IcDevice = VmbusDevice<SimRequest, StdLock<State<Held, SimRequest>>>;

const HDR: usize = size_of::<VMBRIDGE_PACKET_HEADER>();

/// The `hv_ic` service of a configured IC service.
#[must_use]
pub const fn hv_service(s: IcService) -> hv_ic::Service {
    match s {
        IcService::Heartbeat => hv_ic::Service::Heartbeat,
        IcService::Shutdown => hv_ic::Service::Shutdown,
        IcService::TimeSync => hv_ic::Service::TimeSync,
    }
}

fn sim_guid(g: hv_ic::guid::Guid) -> kmcl_sys::GUID {
    kmcl_sys::GUID::from_fields(g.data1, g.data2, g.data3, g.data4)
}

/// The caller's PASSIVE_LEVEL token.
fn passive() -> Passive {
    Passive::try_current().expect("the caller runs at PASSIVE_LEVEL")
}

/// One simulated VMBus, one IC offer (pipe mode), vmbridge bound in IC mode.
#[derive(Debug)]
pub struct IcRig {
    /// The simulator.
    pub sim: Sim,
    /// The offer (the IC channel's PDO).
    pub offer: Offer,
    /// The host side of the IC channel.
    pub host: IcHost,
    device: Option<IcDevice>,
}

impl IcRig {
    /// Offers `ic.service`'s channel (interface and instance GUIDs from `hv-ic`, as a
    /// pipe), opens vmbridge on it in IC mode with `config`, and runs until it is open.
    /// The host offers the full version lists.
    pub fn new(sim_cfg: SimConfig, config: Config, ic: IcConfig, tracer: Tracer) -> IcRig {
        Self::with_offer(sim_cfg, config, ic, tracer, |_| {})
    }

    /// As [`new`](Self::new), with `before_open` called on the offer before the driver
    /// opens the channel (e.g. to attach an external host).
    pub fn with_offer(
        sim_cfg: SimConfig,
        config: Config,
        ic: IcConfig,
        tracer: Tracer,
        before_open: impl FnOnce(&Offer),
    ) -> IcRig {
        // SAFETY: rule IRQL_SOURCE_TRUTHFUL: the simulator's IRQL of the calling thread, the
        // IRQL it runs the driver's code at on every thread.
        unsafe { kmcl::irql::set_host_irql_source(kmcl_sim::current_irql) };
        let service = hv_service(ic.service.expect("an IC service"));
        let sim = Sim::new(sim_cfg);
        let offer = sim.offer(
            OfferConfig::default()
                .with_interface_type(sim_guid(service.interface_id()))
                .with_interface_instance(sim_guid(service.instance_id()))
                .with_pipe(true),
        );
        before_open(&offer);
        let host = IcHost::new(offer.host(), service);
        let table: &'static kmcl_sys::KMCL_CLIENT_INTERFACE_V5 =
            Box::leak(Box::new(*sim.client_interface()));
        let kmcl = Kmcl::new(table).expect("the simulator's table validates");
        // SAFETY: the offer's device object lives as long as `sim`, which the rig keeps
        // until after the device is closed.
        let parent = unsafe { ParentDevice::from_raw(offer.device_object()) };
        let device = IcDevice::open_ic(&kmcl, parent, config, ic, tracer, passive())
            .expect("the channel enables");
        sim.run_until_idle();
        IcRig {
            sim,
            offer,
            host,
            device: Some(device),
        }
    }

    /// Deterministic simulator, default bridge configuration, `service` with the default
    /// timeout, no trace sink.
    pub fn deterministic(seed: u64, service: IcService) -> IcRig {
        IcRig::new(
            SimConfig::deterministic(seed),
            Config::DEFAULT,
            IcConfig::for_service(service),
            Tracer::etw(),
        )
    }

    /// The bound device.
    pub fn device(&self) -> &IcDevice {
        self.device.as_ref().expect("the device is open")
    }

    /// Runs the simulation until nothing is left to do.
    pub fn idle(&self) {
        self.sim.run_until_idle();
    }

    /// `EvtDeviceReleaseHardware`; returns the bridge's final counters.
    pub fn close(&mut self) -> vmbridge::bridge::Stats {
        let device = self.device.take().expect("open");
        let stats = device.close(passive());
        self.sim.run_until_idle();
        stats
    }
}

impl Drop for IcRig {
    fn drop(&mut self) {
        if let Some(device) = self.device.take() {
            device.close(passive());
        }
    }
}

/// A simulated user-mode IC program: held reads, answers with an HRESULT.
#[derive(Debug)]
pub struct IcUser {
    /// The program's handle.
    pub file: FileId,
}

/// A request the program read: its packet id and record.
#[derive(Clone, Copy, Debug)]
pub struct ReadRequest {
    /// `PacketId` to answer.
    pub packet_id: u64,
    /// The decoded record.
    pub request: IcRequest,
}

impl IcUser {
    /// A program using handle `file`.
    pub const fn new(file: FileId) -> Self {
        Self { file }
    }

    /// Posts one held read (`IOCTL_VMBRIDGE_READ` + `HOLD_FOR_RESPONSE`).
    pub fn post_read(&self, rig: &IcRig) -> RequestHandle {
        let (req, h) = SimRequest::new(
            build_read(VMBRIDGE_READ_FLAG_HOLD_FOR_RESPONSE).as_slice(),
            HDR + IC_REQUEST_LEN,
        );
        rig.device()
            .device_control(self.file, IOCTL_VMBRIDGE_READ, req);
        h
    }

    /// Decodes a completed read.
    pub fn decode(h: &RequestHandle) -> Option<ReadRequest> {
        let c = h.result()?;
        if c.status != NtStatus::SUCCESS || c.output.len() < HDR + IC_REQUEST_LEN {
            return None;
        }
        let packet_id = u64::from_le_bytes(c.output[8..16].try_into().ok()?);
        let request = IcRequest::from_bytes(&c.output[HDR..])?;
        Some(ReadRequest { packet_id, request })
    }

    /// Answers `packet_id` with `status` (`IOCTL_VMBRIDGE_RESPOND`, 4-byte HRESULT);
    /// returns the IOCTL's status.
    pub fn respond(&self, rig: &IcRig, packet_id: u64, status: u32) -> NtStatus {
        self.respond_bytes(rig, packet_id, &status.to_le_bytes())
    }

    /// Answers `packet_id` with arbitrary response bytes.
    pub fn respond_bytes(&self, rig: &IcRig, packet_id: u64, response: &[u8]) -> NtStatus {
        let (req, h) = SimRequest::new(build_respond(packet_id, response).as_slice(), 0);
        rig.device()
            .device_control(self.file, IOCTL_VMBRIDGE_RESPOND, req);
        h.result().map_or(NtStatus::PENDING, |c| c.status)
    }

    /// `CloseHandle`.
    pub fn close(&self, rig: &IcRig) {
        rig.device().close_file(self.file);
    }
}
