//! Shared setup of the end-to-end tests: a simulator, one offer, the validated table.
//!
//! C header: `vmbuskernelmodeclientlibapi.h` (the table a driver queries); reference
//! `docs/architecture.md` (lifecycle).
#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::sync::Mutex;
use std::time::{Duration, Instant};

use kmcl::channel::{Kmcl, ParentDevice};
use kmcl::irql::{Level, Passive};
use kmcl_sim::{Offer, OfferConfig, Sim, SimConfig};

/// One simulated VMBus with one offer, and the KMCL table as a driver sees it.
pub struct Bench {
    pub sim: Sim,
    pub offer: Offer,
    pub kmcl: Kmcl,
}

/// Installs the simulator's IRQL as the host IRQL source (idempotent).
pub fn install_irql() {
    // SAFETY: rule IRQL_SOURCE_TRUTHFUL: the simulator's IRQL of the calling thread, the
    // IRQL it runs the driver's code at on every thread.
    unsafe { kmcl::irql::set_host_irql_source(kmcl_sim::current_irql) };
}

/// Installs the simulator's thread identity as the thread-id source (idempotent), as an
/// ARM64 driver installs one (on Windows x64 `kmcl` reads it from the TEB).
pub fn install_thread_ids() {
    // SAFETY: rule THREAD_ID_SOURCE_UNIQUE: the address of a thread-local of the calling
    // thread, unique among live threads and never 0.
    unsafe { kmcl::thread::set_thread_id_source(kmcl_sim::current_thread_id) };
}

/// A leaked copy of the simulator's table: `'static`, as `Kmcl::new` requires.
pub fn leaked_table(sim: &Sim) -> &'static kmcl_sys::KMCL_CLIENT_INTERFACE_V5 {
    Box::leak(Box::new(*sim.client_interface()))
}

impl Bench {
    /// Deterministic mode with `seed`, verifier in bugcheck mode.
    pub fn deterministic(seed: u64) -> Self {
        Self::with(SimConfig::deterministic(seed))
    }

    /// Threaded mode, verifier in bugcheck mode.
    pub fn threaded() -> Self {
        Self::with(SimConfig::threaded())
    }

    /// Any configuration.
    pub fn with(cfg: SimConfig) -> Self {
        install_irql();
        let sim = Sim::new(cfg);
        let offer = sim.offer(OfferConfig::default());
        let kmcl = Kmcl::new(leaked_table(&sim)).expect("the simulator's table validates");
        Bench { sim, offer, kmcl }
    }

    /// The offer's device object.
    pub fn parent(&self) -> ParentDevice {
        // SAFETY: the offer (and its device object) lives as long as the simulation,
        // which every test keeps until after the channel is closed.
        unsafe { ParentDevice::from_raw(self.offer.device_object()) }
    }

    /// Runs the simulation until idle (deterministic), or until idle (threaded).
    pub fn idle(&self) {
        self.sim.run_until_idle();
    }
}

/// The test thread is a PASSIVE_LEVEL thread.
pub fn passive() -> Passive {
    Passive::try_current().expect("the test thread runs at PASSIVE_LEVEL")
}

/// Which level a delivery reported, as 'P' or 'D'.
pub fn level_char(level: Level) -> char {
    match level {
        Level::Passive(_) => 'P',
        Level::Dispatch(_) => 'D',
    }
}

/// Polls `cond` until true or `timeout` passes.
pub fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    cond()
}

/// A log shared between a handler and the test.
pub type Log<T> = Mutex<Vec<T>>;
