//! Opening the device: a real one (Windows) or the simulated driver and host (`--sim`).
//!
//! C header: `cfgmgr32.h` (through `vmbridge_client::windows`).

use std::any::Any;

use vmbridge_client::Device;

use crate::{Cli, Failure, Outcome};

/// What the simulated host does while a command runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Host {
    /// Answers the driver's waiting sends (with their own payload).
    Quiet,
    /// Also sends a packet every 20 ms.
    Chatter,
    /// Also sends a packet every 20 ms, every second one asking for a response.
    Asking,
}

/// An open device and whatever keeps the simulation alive.
pub struct Backend {
    /// The handle (dropped first: `CloseHandle`).
    pub device: Device<'static>,
    _keep: Option<Box<dyn Any>>,
}

/// Binds a simulated guest to an offer of the given type and exchanges a packet each way.
pub type SimGuestOf = Box<dyn Fn(&Device<'static>, u128) -> Outcome>;

/// The host control device (host mode).
pub struct HostBackend {
    /// The control handle.
    pub device: Device<'static>,
    /// The simulated VM's VMBus handle.
    pub sim_handle: Option<u64>,
    /// Binds a simulated guest to the offer and exchanges a packet each way.
    pub sim_guest_of: Option<SimGuestOf>,
    _keep: Option<Box<dyn Any>>,
}

#[cfg(not(windows))]
const NO_DEVICE: &str =
    "no vmbridge device: the driver runs on Windows; --sim runs against the simulated driver";

/// The device paths.
pub fn list(sim: bool) -> Result<Vec<String>, Failure> {
    if sim {
        return Ok(vec![format!(
            "sim:0  (simulated vmbridge, channel type {})",
            crate::output::guid(vmbridge_abi::VMBRIDGE_CHANNEL_TYPE)
        )]);
    }
    #[cfg(windows)]
    {
        Ok(vmbridge_client::windows::list()?
            .into_iter()
            .map(|p| p.to_string_lossy().into_owned())
            .collect())
    }
    #[cfg(not(windows))]
    {
        Err(Failure(NO_DEVICE.into(), 1))
    }
}

#[cfg(windows)]
fn open_real(cli: &Cli) -> Result<Device<'static>, Failure> {
    let path = match &cli.device {
        Some(p) => std::ffi::OsString::from(p),
        None => vmbridge_client::windows::list()?
            .into_iter()
            .next()
            .ok_or_else(|| Failure("no vmbridge device present".into(), 1))?,
    };
    vmbridge_client::windows::open(&path).map_err(|e| Failure(format!("{path:?}: {e}"), 1))
}

#[cfg(not(windows))]
fn open_real(_cli: &Cli) -> Result<Device<'static>, Failure> {
    Err(Failure(NO_DEVICE.into(), 1))
}

/// Opens the device of `cli`; with `--sim`, a simulated driver with a host doing `host`.
pub fn open(cli: &Cli, host: Host) -> Result<Backend, Failure> {
    if !cli.sim {
        return Ok(Backend {
            device: open_real(cli)?,
            _keep: None,
        });
    }
    sim::open(host)
}

/// Opens the host control device (host mode).
pub fn open_host(cli: &Cli) -> Result<HostBackend, Failure> {
    if !cli.sim {
        return Ok(HostBackend {
            device: open_real(cli)?,
            sim_handle: None,
            sim_guest_of: None,
            _keep: None,
        });
    }
    sim::open_host()
}

#[cfg(not(windows))]
mod sim {
    use std::time::Duration;

    use vmbridge::bridge::Config;
    use vmbridge_client::Device;
    use vmbridge_sim::{HostTraffic, SimGuest, SimHostMode, TrafficPlan};

    use super::{Backend, Host, HostBackend};
    use crate::{Failure, Outcome};

    pub fn open(host: Host) -> Result<Backend, Failure> {
        let g = SimGuest::new(Config::DEFAULT);
        let plan = match host {
            Host::Quiet => TrafficPlan::Answer,
            Host::Chatter | Host::Asking => TrafficPlan::Chatter {
                count: 0,
                size: 24,
                interval: Duration::from_millis(20),
                ask: host == Host::Asking,
            },
        };
        let traffic = HostTraffic::start(g.host(), plan);
        Ok(Backend {
            device: g.open(),
            _keep: Some(Box::new((traffic, g))),
        })
    }

    pub fn open_host() -> Result<HostBackend, Failure> {
        let h = SimHostMode::new(Config::DEFAULT);
        let h2 = h.clone();
        let guest = move |control: &Device<'static>, ty: u128| -> Outcome {
            let g = h2
                .open_guest(ty)
                .ok_or_else(|| Failure("the simulated VM saw no offer".into(), 1))?;
            let wait = Some(Duration::from_secs(10));
            g.send(b"hello from the VM")?;
            let p = control.read(wait)?;
            println!(
                "simulated VM: its vmbridge bound to the offer; the host handle read {:?}",
                String::from_utf8_lossy(&p.payload).trim_end_matches('\0')
            );
            control.send(b"hello from the host")?;
            let p = g.read(wait)?;
            println!(
                "simulated VM: read {:?} from the host handle",
                String::from_utf8_lossy(&p.payload).trim_end_matches('\0')
            );
            Ok(())
        };
        Ok(HostBackend {
            device: h.open(),
            sim_handle: Some(h.vmbus_handle()),
            sim_guest_of: Some(Box::new(guest)),
            _keep: Some(Box::new(h)),
        })
    }
}

#[cfg(windows)]
mod sim {
    use super::{Backend, Host, HostBackend};
    use crate::Failure;

    const NO_SIM: &str = "--sim is not built on Windows (the driver package is the KMDF build \
        there); run the simulated driver on Linux or macOS";

    pub fn open(_host: Host) -> Result<Backend, Failure> {
        Err(Failure(NO_SIM.into(), 2))
    }

    pub fn open_host() -> Result<HostBackend, Failure> {
        Err(Failure(NO_SIM.into(), 2))
    }
}
