//! What the client does with sizes the driver reports: it does not trust them.
//!
//! A scripted transport answers each request with a chosen completion (as a driver of
//! another ABI version, or a buggy one, could) and records the output length of every
//! request the client submits.
//!
//! Reference: `docs/user-mode.md` (retries after `STATUS_BUFFER_OVERFLOW` and
//! `STATUS_BUFFER_TOO_SMALL`); `DeviceIoControl`'s `nOutBufferSize` is a `DWORD`
//! (`ioapiset.h`), so no output a driver can fill is larger than `u32::MAX` bytes.

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use vmbridge_client::abi::{NtStatus, VMBRIDGE_BATCH_HEADER, VMBRIDGE_PACKET_HEADER};
use vmbridge_client::{BatchOptions, Completion, Device, Pending, Request, Transport};

/// Answers requests in order with the completions it was given; records the output
/// length each request asked for.
struct Scripted {
    answers: Mutex<VecDeque<Completion>>,
    asked: Arc<Mutex<Vec<usize>>>,
    waits: Waits,
    /// How long each request takes to complete once waited for.
    latency: Duration,
}

/// The timeout of every wait for a request's completion, in order.
type Waits = Arc<Mutex<Vec<Option<Duration>>>>;

/// A request that completes after its latency; its wait is recorded.
struct Done(Completion, Waits, Duration);

impl Pending for Done {
    fn wait(&mut self, timeout: Option<Duration>) -> io::Result<Option<Completion>> {
        self.1.lock().unwrap().push(timeout);
        std::thread::sleep(self.2);
        Ok(Some(self.0.clone()))
    }

    fn cancel(&mut self) {}
}

impl Transport for Scripted {
    fn submit(&self, req: Request<'_>) -> io::Result<Box<dyn Pending + '_>> {
        let out_len = match req {
            Request::Read { out_len } | Request::Ioctl { out_len, .. } => out_len,
            Request::Write { .. } => 0,
        };
        self.asked.lock().unwrap().push(out_len);
        let c = self
            .answers
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or_else(|| completion(NtStatus::DEVICE_NOT_CONNECTED, 0, Vec::new()));
        Ok(Box::new(Done(c, self.waits.clone(), self.latency)))
    }
}

fn completion(status: NtStatus, information: usize, output: Vec<u8>) -> Completion {
    Completion {
        status,
        information,
        output,
        win32: None,
    }
}

/// A device whose driver answers with `answers`, and the output lengths it was asked for.
fn device(answers: Vec<Completion>) -> (Device<'static>, Arc<Mutex<Vec<usize>>>) {
    let (d, asked, _) = device_and_waits(answers, Duration::ZERO);
    (d, asked)
}

/// As [`device`], each request taking `latency`, with the timeouts the client waited with.
fn device_and_waits(
    answers: Vec<Completion>,
    latency: Duration,
) -> (Device<'static>, Arc<Mutex<Vec<usize>>>, Waits) {
    let asked = Arc::new(Mutex::new(Vec::new()));
    let waits = Waits::default();
    let d = Device::new(Box::new(Scripted {
        answers: Mutex::new(answers.into()),
        asked: asked.clone(),
        waits: waits.clone(),
        latency,
    }));
    d.set_read_capacity(64);
    (d, asked, waits)
}

fn packet_header(payload_length: u32) -> Vec<u8> {
    let mut b = vec![0u8; size_of::<VMBRIDGE_PACKET_HEADER>()];
    VMBRIDGE_PACKET_HEADER::new(0, 0, payload_length, 1).write_to(&mut b);
    b
}

fn assert_asked_within_a_dword(asked: &Mutex<Vec<usize>>) {
    for &n in asked.lock().unwrap().iter() {
        assert!(
            u32::try_from(n).is_ok(),
            "the client asked for an output of {n} bytes on the driver's word"
        );
    }
}

#[test]
fn driver_reported_sizes_above_a_dword_are_bad_output_read_batch() {
    for need in [usize::MAX, u32::MAX as usize + 1] {
        let (d, asked) = device(vec![completion(
            NtStatus::BUFFER_TOO_SMALL,
            need,
            Vec::new(),
        )]);
        let e = d
            .read_batch(BatchOptions::default(), None)
            .expect_err("a size no DWORD holds is not believed");
        assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{need}: {e}");
        assert_asked_within_a_dword(&asked);
    }
}

#[test]
fn driver_reported_sizes_above_a_dword_are_bad_output_read() {
    let (d, asked) = device(vec![completion(
        NtStatus::BUFFER_OVERFLOW,
        size_of::<VMBRIDGE_PACKET_HEADER>(),
        packet_header(u32::MAX),
    )]);
    let e = d.read(None).expect_err("a packet no DWORD output holds");
    assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
    assert_asked_within_a_dword(&asked);
}

#[test]
fn driver_reported_sizes_within_a_dword_are_retried() {
    // The oldest packet needs 100,000 bytes: the batch is asked again with that size.
    let mut batch = vec![0u8; size_of::<VMBRIDGE_BATCH_HEADER>()];
    VMBRIDGE_BATCH_HEADER::new(0, 16).write_to(&mut batch);
    let (d, asked) = device(vec![
        completion(NtStatus::BUFFER_TOO_SMALL, 100_000, Vec::new()),
        completion(NtStatus::SUCCESS, batch.len(), batch),
    ]);
    assert_eq!(d.read_batch(BatchOptions::default(), None).unwrap(), vec![]);
    assert_eq!(asked.lock().unwrap().last(), Some(&100_000));

    // A packet of 1000 bytes: the read is asked again for header + 1000.
    let mut full = packet_header(1000);
    full.resize(full.len() + 1000, 7);
    let (d, asked) = device(vec![
        completion(NtStatus::BUFFER_OVERFLOW, 32, packet_header(1000)),
        completion(NtStatus::SUCCESS, full.len(), full),
    ]);
    let p = d.read(None).unwrap();
    assert_eq!(p.payload, vec![7; 1000]);
    assert_eq!(
        asked.lock().unwrap().last(),
        Some(&(size_of::<VMBRIDGE_PACKET_HEADER>() + 1000))
    );
}

/// A driver that names a larger size on every answer (a bug, or another ABI version):
/// the client gives up after a bounded number of tries with the driver's status, instead
/// of asking again forever with ever larger buffers.
#[test]
fn driver_reported_sizes_that_keep_growing_end_in_an_error_read() {
    let answers = (1..=100u32)
        .map(|i| {
            completion(
                NtStatus::BUFFER_OVERFLOW,
                size_of::<VMBRIDGE_PACKET_HEADER>(),
                packet_header(1000 * i),
            )
        })
        .collect();
    let (d, asked) = device(answers);
    let e = d.read(None).expect_err("the packet never fits");
    assert_eq!(
        vmbridge_client::ntstatus(&e),
        Some(NtStatus::BUFFER_OVERFLOW),
        "{e}"
    );
    let asked = asked.lock().unwrap().len();
    assert!((2..=3).contains(&asked), "asked {asked} times");
}

/// As `driver_reported_sizes_that_keep_growing_end_in_an_error_read`, for a batched read.
#[test]
fn driver_reported_sizes_that_keep_growing_end_in_an_error_read_batch() {
    let answers = (1..=100usize)
        .map(|i| completion(NtStatus::BUFFER_TOO_SMALL, 100_000 * i, Vec::new()))
        .collect();
    let (d, asked) = device(answers);
    let e = d
        .read_batch(BatchOptions::default(), None)
        .expect_err("the oldest packet never fits");
    assert_eq!(
        vmbridge_client::ntstatus(&e),
        Some(NtStatus::BUFFER_TOO_SMALL),
        "{e}"
    );
    let asked = asked.lock().unwrap().len();
    assert!((2..=3).contains(&asked), "asked {asked} times");
}

/// A retry with the size the driver named waits for what is left of the caller's
/// timeout, not for a fresh one: `read(Some(t))` returns within `t` however often it
/// retries. (Each scripted request takes 20 ms, so the retry's wait must be at least that
/// much shorter than `t`.)
#[test]
fn a_retry_with_the_named_size_does_not_restart_the_timeout() {
    let latency = Duration::from_millis(20);
    let t = Duration::from_secs(3600);
    let retry_within = |waits: &[Option<Duration>]| {
        assert_eq!(waits.len(), 2, "{waits:?}");
        assert!(waits[0].is_some_and(|w| w <= t), "{waits:?}");
        assert!(waits[1].is_some_and(|w| w <= t - latency), "{waits:?}");
    };

    let mut full = packet_header(1000);
    full.resize(full.len() + 1000, 7);
    let (d, _, waits) = device_and_waits(
        vec![
            completion(NtStatus::BUFFER_OVERFLOW, 32, packet_header(1000)),
            completion(NtStatus::SUCCESS, full.len(), full),
        ],
        latency,
    );
    d.read(Some(t)).unwrap();
    retry_within(&waits.lock().unwrap());

    let mut batch = vec![0u8; size_of::<VMBRIDGE_BATCH_HEADER>()];
    VMBRIDGE_BATCH_HEADER::new(0, 16).write_to(&mut batch);
    let (d, _, waits) = device_and_waits(
        vec![
            completion(NtStatus::BUFFER_TOO_SMALL, 100_000, Vec::new()),
            completion(NtStatus::SUCCESS, batch.len(), batch),
        ],
        latency,
    );
    d.read_batch(BatchOptions::default(), Some(t)).unwrap();
    retry_within(&waits.lock().unwrap());
}
