//! Host mode: a request cancelled while its handle closes. `EvtRequestCancel` completes
//! the request itself when `HostControl::cancel` does not find it, so the control device
//! must not hold a request it can no longer find for the cancel routine: the bridge
//! would then `WdfRequestUnmarkCancelable` (claim) a request the cancel routine already
//! completed, a use of a freed request (the model panics on it).
//!
//! The offers' lock here runs a hook after a chosen acquisition: the cancel routine runs
//! at that point of `close_file`, as it can on another processor.
//!
//! Reference: `driver/host_mode.rs` (`close_file`, `cancel`), `driver/kmdf/queue.rs`
//! (`evt_request_cancel`); rule REQUEST_COMPLETED_ONCE.
#![cfg(not(windows))]

mod common;

use std::cell::RefCell;

use common::{SimLock, passive};
use kmcl::channel::ParentDevice;
use kmcl::server::{InRequestorProcess, KmclServer};
use kmcl_sim::{Sim, SimConfig};
use vmbridge::bridge::offer::{VMBRIDGE_CREATE_OFFER_REQUEST, build_create_offer};
use vmbridge::bridge::protocol::{AlignedBuf, VMBRIDGE_CHANNEL_TYPE};
use vmbridge::bridge::{Config, FileId, Lock, NtStatus, StdLock, UserRequest};
use vmbridge::host_mode::{HostControl, OfferSetup, Offers};
use vmbridge::sim_request::SimRequest;
use vmbridge::trace::Tracer;

const TOOL_PROCESS: u64 = 4242;
const INSTANCE: u128 = 0x1111_2222_3333_4444_5555_6666_7777_8888;
const HOST_FILE: FileId = FileId(9001);

thread_local! {
    /// Runs once, after the next acquisition of a [`HookLock`] on this thread.
    static AFTER_NEXT: RefCell<Option<Box<dyn FnOnce()>>> = RefCell::new(None);
}

/// A `StdLock` that runs the armed hook right after the closure (the lock released).
struct HookLock<T>(StdLock<T>);

impl<T: Send> Lock<T> for HookLock<T> {
    fn new(value: T) -> Self {
        Self(StdLock::new(value))
    }

    fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        let r = self.0.with(f);
        if let Some(hook) = AFTER_NEXT.with(|h| h.borrow_mut().take()) {
            hook();
        }
        r
    }
}

type Control = HostControl<SimRequest, SimLock, HookLock<Offers<SimRequest, SimLock>>>;

fn no_close(_: kmcl_sys::HANDLE) {}

#[test]
fn request_completed_once_when_cancelled_while_its_handle_closes() {
    // SAFETY: rule IRQL_SOURCE_TRUTHFUL: the simulator's IRQL of the calling thread, the
    // IRQL it runs the driver's code at on every thread.
    unsafe { kmcl::irql::set_host_irql_source(kmcl_sim::current_irql) };
    // SAFETY: rule THREAD_ID_SOURCE_UNIQUE: the address of a thread-local of the calling
    // thread, unique among live threads and never 0.
    unsafe { kmcl::thread::set_thread_id_source(kmcl_sim::current_thread_id) };
    let sim = Sim::new(SimConfig::deterministic(7));
    let table = Box::leak(Box::new(*sim.server_interface()));
    let server = KmclServer::new(table).expect("the server table validates");
    // SAFETY: the host device token lives as long as the simulation.
    let parent = unsafe { ParentDevice::from_raw(sim.host_device()) };
    let control: &'static Control = Box::leak(Box::new(Control::new(OfferSetup {
        server,
        parent,
        config: Config::DEFAULT,
        tracer: Tracer::etw(),
        close_handle: no_close,
    })));
    let handle = sim.user_vmbus_handle(TOOL_PROCESS).addr() as u64;
    let offer = VMBRIDGE_CREATE_OFFER_REQUEST::new(0, VMBRIDGE_CHANNEL_TYPE, INSTANCE, handle);
    let (req, h) = SimRequest::from_buffers(build_create_offer(&offer), AlignedBuf::zeroed(0));
    {
        let _in = kmcl_sim::enter_process(TOOL_PROCESS);
        // SAFETY: test: the simulated process of the caller was entered just above.
        let token = unsafe { InRequestorProcess::assume() };
        control.create_offer(HOST_FILE, req, &token, passive());
    }
    assert_eq!(h.result().map(|c| c.status), Some(NtStatus::SUCCESS));
    sim.run_until_idle();

    // A read parks: no packet yet.
    let (req, read) = SimRequest::new(&[], 4096);
    let key = req.key();
    control.read(HOST_FILE, req);
    assert!(!read.is_done(), "the read parks");

    // The program cancels it just as its handle closes: the cancel routine runs right
    // after close_file's first look at the offers.
    AFTER_NEXT.with(|h| {
        *h.borrow_mut() = Some(Box::new(move || {
            read.by_ref().cancel(|k| {
                assert_eq!(k, key);
                control
                    .cancel(k)
                    .map(|r| r.complete(NtStatus::CANCELLED, 0))
                    .is_some()
            });
            assert!(read.is_done(), "the cancel routine completed it");
            assert_eq!(read.completion_count(), 1);
        }));
    });
    let _ = control.close_file(HOST_FILE, passive());
    assert!(AFTER_NEXT.with(|h| h.borrow().is_none()), "the hook ran");
    sim.run_until_idle();
    sim.assert_clean();
}
