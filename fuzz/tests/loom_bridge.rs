//! Model checks (loom) of the bridge's races: pending packets, cancellation, completion.
//!
//! C header: `wdfrequest.h` (cancel vs. completion: `WdfRequestMarkCancelableEx`,
//! `WdfRequestUnmarkCancelable`), `vmbuskernelmodeclientlibapi.h` (a send's completion
//! routine may run before the send call returns, on another processor).
//!
//! The bridge core (`vmbridge::bridge::Bridge`) is generic over its lock, so the model
//! runs the real core code under a [`Lock`] backed by `loom::sync::Mutex`; requests and
//! packets use loom atomics. loom then explores every interleaving of the threads at
//! each lock acquisition and atomic access (bounded by `PREEMPTIONS` preemptions) and the
//! assertions must hold in all of them:
//!
//! * every request completed exactly once (by the bridge or by the cancel path);
//! * every packet completed exactly once;
//! * nothing left parked or held after teardown.
//!
//! Run: `cargo test --release --test loom_bridge` in `fuzz/` (or `scripts/loom.sh`).

use loom::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use loom::sync::{Arc, Mutex};
use loom::thread;
use vmbridge::bridge::protocol::{
    AlignedBuf, IOCTL_VMBRIDGE_READ, IOCTL_VMBRIDGE_RESPOND, IOCTL_VMBRIDGE_SEND,
    VMBRIDGE_READ_FLAG_HOLD_FOR_RESPONSE, VMBRIDGE_SEND_FLAG_WAIT_FOR_COMPLETION, build_read,
    build_respond, build_send,
};
use vmbridge::bridge::{
    Bridge, ChannelSender, Config, FileId, HeldPacket, Lock, NtStatus, RequestKey, SendTag, State,
    UserRequest,
};
use vmbridge::trace::Tracer;

/// Preemptions loom explores per execution (3 covers the races below; higher is slower).
const PREEMPTIONS: usize = 3;

/// The bridge lock as a loom mutex.
struct LoomLock<T>(Mutex<T>);

impl<T: Send> Lock<T> for LoomLock<T> {
    fn new(value: T) -> Self {
        Self(Mutex::new(value))
    }
    fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        let mut g = self.0.lock().expect("loom mutex");
        f(&mut g)
    }
}

const NEW: u8 = 0;
const PARKED: u8 = 1;
const CLAIMED: u8 = 2;
const CANCELLING: u8 = 3;
const DONE: u8 = 4;

/// The request state machine of WDF (the same one `vmbridge::sim_request::SimRequest` models).
struct Shared {
    key: u64,
    /// Plants a bug: `claim` always wins, even against a cancel (to show the model finds it).
    broken_claim: bool,
    state: AtomicU8,
    completions: AtomicUsize,
    status: Mutex<Option<NtStatus>>,
}

impl Shared {
    fn finish(&self, st: NtStatus) {
        self.completions.fetch_add(1, Ordering::SeqCst);
        self.state.store(DONE, Ordering::SeqCst);
        *self.status.lock().expect("status") = Some(st);
    }

    /// `CancelIoEx`: the I/O manager's cancel, with the bridge as `EvtRequestCancel`.
    fn cancel(&self, bridge: &TestBridge) {
        if self
            .state
            .compare_exchange(NEW, CANCELLING, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            return;
        }
        if self
            .state
            .compare_exchange(PARKED, CANCELLING, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            match bridge.cancel(RequestKey(self.key)) {
                Some(r) => r.complete(NtStatus::CANCELLED, 0),
                None => self.finish(NtStatus::CANCELLED),
            }
        }
    }
}

struct Req {
    shared: Arc<Shared>,
    input: AlignedBuf,
    output: AlignedBuf,
}

fn request(key: u64, input: AlignedBuf, out_len: usize) -> (Req, Arc<Shared>) {
    request_with(key, input, out_len, false)
}

fn request_with(
    key: u64,
    input: AlignedBuf,
    out_len: usize,
    broken_claim: bool,
) -> (Req, Arc<Shared>) {
    let shared = Arc::new(Shared {
        key,
        broken_claim,
        state: AtomicU8::new(NEW),
        completions: AtomicUsize::new(0),
        status: Mutex::new(None),
    });
    let req = Req {
        shared: Arc::clone(&shared),
        input,
        output: AlignedBuf::zeroed(out_len),
    };
    (req, shared)
}

impl UserRequest for Req {
    fn key(&self) -> RequestKey {
        RequestKey(self.shared.key)
    }
    fn input(&self) -> &[u8] {
        self.input.as_slice()
    }
    fn output(&mut self) -> &mut [u8] {
        self.output.as_mut_slice()
    }
    fn park(&mut self) -> Result<(), NtStatus> {
        self.shared
            .state
            .compare_exchange(NEW, PARKED, Ordering::SeqCst, Ordering::SeqCst)
            .map(|_| ())
            .map_err(|_| NtStatus::CANCELLED)
    }
    fn claim(&mut self) -> bool {
        if self.shared.broken_claim {
            self.shared.state.store(CLAIMED, Ordering::SeqCst);
            return true;
        }
        self.shared
            .state
            .compare_exchange(PARKED, CLAIMED, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    }
    fn complete(self, status: NtStatus, _information: usize) {
        self.shared.finish(status);
    }
}

/// A packet that counts its completions.
struct Pkt {
    payload: [u8; 8],
    completions: Arc<AtomicUsize>,
}

impl HeldPacket for Pkt {
    fn payload(&self) -> &[u8] {
        &self.payload
    }
    fn complete(self, _response: &[u8]) {
        self.completions.fetch_add(1, Ordering::SeqCst);
    }
}

/// A sender that records the tag of a waiting send.
#[derive(Default)]
struct Sender {
    tag: Mutex<Option<SendTag>>,
}

impl ChannelSender for Sender {
    fn send(&self, _payload: &[u8], completion: Option<SendTag>) -> Result<(), NtStatus> {
        *self.tag.lock().expect("tag") = completion;
        Ok(())
    }
}

type TestBridge = Bridge<Pkt, Req, LoomLock<State<Pkt, Req>>>;

const F1: FileId = FileId(1);

fn bridge() -> Arc<TestBridge> {
    let config = Config {
        queue_depth: 2,
        max_pending_reads: 2,
        max_pending_sends: 1,
        max_packet_size: 64,
        ..Config::DEFAULT
    };
    let b = Arc::new(TestBridge::new(config, Tracer::etw()));
    b.channel_opened();
    b.channel_started();
    b
}

fn packet(counter: &Arc<AtomicUsize>) -> Pkt {
    Pkt {
        payload: *b"payload!",
        completions: Arc::clone(counter),
    }
}

/// KMCL's teardown: Suspend (completes held packets), Closed (fails parked requests), then
/// the handle closes.
fn teardown(b: &TestBridge) {
    b.channel_suspended();
    b.channel_closed();
    b.close(F1);
    let s = b.stats();
    assert_eq!(
        (
            s.queue_depth,
            s.held_for_response,
            s.pending_reads,
            s.pending_sends
        ),
        (0, 0, 0, 0),
        "{s:?}"
    );
}

/// Runs `f` under loom; returns how many interleavings were explored.
fn model(f: impl Fn() + Sync + Send + 'static) -> usize {
    let runs = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = std::sync::Arc::clone(&runs);
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(PREEMPTIONS);
    builder.check(move || {
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        f();
    });
    let n = runs.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!("loom explored {n} interleavings");
    n
}

/// The read/arrival/cancel race with `broken` claim semantics.
fn read_arrival_cancel(broken: bool) {
    let b = bridge();
    let pc = Arc::new(AtomicUsize::new(0));
    let (req, h) = request_with(1, AlignedBuf::zeroed(0), 64, broken);
    b.read(F1, req);
    let (b1, p) = (Arc::clone(&b), packet(&pc));
    let t1 = thread::spawn(move || b1.packet_arrived(p));
    let (b2, h2) = (Arc::clone(&b), Arc::clone(&h));
    let t2 = thread::spawn(move || h2.cancel(&b2));
    t1.join().expect("arrival");
    t2.join().expect("cancel");
    // The packet went to the read or was queued: Suspend completes a queued one.
    teardown(&b);
    assert_eq!(h.completions.load(Ordering::SeqCst), 1, "read completions");
    assert_eq!(pc.load(Ordering::SeqCst), 1, "packet completions");
    let read = b.stats().packets_read;
    let st = h.status.lock().expect("status").expect("completed");
    assert_eq!(
        st == NtStatus::SUCCESS,
        read == 1,
        "status {st:?} vs packets_read {read}"
    );
}

#[test]
fn parked_read_vs_packet_arrival_vs_cancel_completes_each_once() {
    assert!(model(|| read_arrival_cancel(false)) > 1);
}

#[test]
#[should_panic(expected = "read completions")]
fn model_finds_a_claim_that_ignores_cancellation() {
    model(|| read_arrival_cancel(true));
}

#[test]
fn send_completion_vs_cancel_vs_issuer_completes_once() {
    model(|| {
        let b = bridge();
        let sender = Arc::new(Sender::default());
        let input = build_send(VMBRIDGE_SEND_FLAG_WAIT_FOR_COMPLETION, b"request!");
        let (req, h) = request(2, input, 64);
        let issued = Arc::new(AtomicUsize::new(0));
        let (b1, s1, i1) = (Arc::clone(&b), Arc::clone(&sender), Arc::clone(&issued));
        let t1 = thread::spawn(move || {
            b1.device_control(F1, IOCTL_VMBRIDGE_SEND, req, &*s1);
            i1.store(1, Ordering::SeqCst);
        });
        // KMCL's completion routine: may run as soon as the packet is in the ring. A send
        // cancelled before it was parked is never sent: no completion is owed then.
        let (b2, s2, i2) = (Arc::clone(&b), Arc::clone(&sender), Arc::clone(&issued));
        let t2 = thread::spawn(move || {
            loop {
                let tag = *s2.tag.lock().expect("tag");
                if let Some(tag) = tag {
                    b2.send_completed(tag, NtStatus::SUCCESS, b"response");
                    return;
                }
                if i2.load(Ordering::SeqCst) == 1 && s2.tag.lock().expect("tag").is_none() {
                    return;
                }
                thread::yield_now();
            }
        });
        let (b3, h3) = (Arc::clone(&b), Arc::clone(&h));
        let t3 = thread::spawn(move || h3.cancel(&b3));
        t1.join().expect("issuer");
        t2.join().expect("completion");
        t3.join().expect("cancel");
        teardown(&b);
        assert_eq!(h.completions.load(Ordering::SeqCst), 1, "send completions");
        let s = b.stats();
        let sent = sender.tag.lock().expect("tag").is_some();
        assert_eq!(
            sent,
            s.sends_completed + s.orphaned_completions == 1,
            "a completion is owed exactly when the packet was sent: {s:?}"
        );
    });
}

#[test]
fn respond_vs_handle_close_vs_suspend_completes_the_held_packet_once() {
    model(|| {
        let b = bridge();
        let pc = Arc::new(AtomicUsize::new(0));
        b.packet_arrived(packet(&pc));
        let (hold, hh) = request(3, build_read(VMBRIDGE_READ_FLAG_HOLD_FOR_RESPONSE), 64);
        b.device_control(F1, IOCTL_VMBRIDGE_READ, hold, &Sender::default());
        assert_eq!(
            hh.status.lock().expect("status").expect("read"),
            NtStatus::SUCCESS
        );
        let (resp, hr) = request(4, build_respond(1, b"answer"), 0);
        let b1 = Arc::clone(&b);
        let t1 = thread::spawn(move || {
            b1.device_control(F1, IOCTL_VMBRIDGE_RESPOND, resp, &Sender::default());
        });
        let b2 = Arc::clone(&b);
        let t2 = thread::spawn(move || b2.close(F1));
        let b3 = Arc::clone(&b);
        let t3 = thread::spawn(move || b3.channel_suspended());
        t1.join().expect("respond");
        t2.join().expect("close");
        t3.join().expect("suspend");
        teardown(&b);
        assert_eq!(pc.load(Ordering::SeqCst), 1, "packet completions");
        assert_eq!(
            hr.completions.load(Ordering::SeqCst),
            1,
            "respond completions"
        );
        assert_eq!(hh.completions.load(Ordering::SeqCst), 1, "read completions");
    });
}

#[test]
fn two_packets_and_two_parked_reads_pair_up_without_loss() {
    model(|| {
        let b = bridge();
        let pc = Arc::new(AtomicUsize::new(0));
        let (r1, h1) = request(5, AlignedBuf::zeroed(0), 64);
        let (r2, h2) = request(6, AlignedBuf::zeroed(0), 64);
        b.read(F1, r1);
        b.read(F1, r2);
        let (b1, p1) = (Arc::clone(&b), packet(&pc));
        let t1 = thread::spawn(move || b1.packet_arrived(p1));
        let (b2, p2) = (Arc::clone(&b), packet(&pc));
        let t2 = thread::spawn(move || b2.packet_arrived(p2));
        t1.join().expect("arrival 1");
        t2.join().expect("arrival 2");
        for h in [&h1, &h2] {
            assert_eq!(h.completions.load(Ordering::SeqCst), 1);
            assert_eq!(*h.status.lock().expect("status"), Some(NtStatus::SUCCESS));
        }
        assert_eq!(
            pc.load(Ordering::SeqCst),
            2,
            "both packets completed when read"
        );
        let s = b.stats();
        assert_eq!((s.packets_read, s.queue_depth), (2, 0), "{s:?}");
        // The two sequence numbers differ (each packet read once).
        teardown(&b);
    });
}
