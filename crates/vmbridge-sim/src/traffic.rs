//! A simulated host that talks to the driver: answers its waiting sends, drains its other
//! packets, and sends packets of its own (a few, or a flood).
//!
//! C header: none (the host side of the channel, `kmcl_sim::HostEndpoint`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use kmcl_sim::{HostEndpoint, SendError};

/// What the simulated host does besides answering.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrafficPlan {
    /// Only answer: every driver packet that asks for a completion gets its own payload
    /// back (an echo); the others are drained.
    Answer,
    /// Also send `count` packets (0: until stopped) of `size` bytes, one per `interval`;
    /// every second one asks for a completion when `ask` is set.
    Chatter {
        /// Packets to send (0: endless).
        count: u64,
        /// Payload bytes (text, `host packet #N`, cut or padded with '.').
        size: usize,
        /// Pause between packets.
        interval: Duration,
        /// Ask for completions (every second packet).
        ask: bool,
    },
    /// Also send `count` packets of `size` bytes as fast as the ring takes them.
    Flood {
        /// Packets to send.
        count: u64,
        /// Payload bytes.
        size: usize,
        /// Every packet asks for a completion.
        ask: bool,
    },
}

/// What the host did (a snapshot).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrafficStats {
    /// Packets the host sent.
    pub sent: u64,
    /// Fire-and-forget packets the host received from the driver.
    pub received: u64,
    /// Completions (user-mode responses) the host received for its packets.
    pub completions: u64,
    /// Times the host found the ring full.
    pub ring_full: u64,
}

#[derive(Debug, Default)]
struct Counters {
    sent: AtomicU64,
    received: AtomicU64,
    completions: AtomicU64,
    ring_full: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> TrafficStats {
        TrafficStats {
            sent: self.sent.load(Ordering::Relaxed),
            received: self.received.load(Ordering::Relaxed),
            completions: self.completions.load(Ordering::Relaxed),
            ring_full: self.ring_full.load(Ordering::Relaxed),
        }
    }
}

/// The running host threads; [`HostTraffic::stop`] (or drop) ends them.
#[derive(Debug)]
pub struct HostTraffic {
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
    threads: Vec<JoinHandle<()>>,
}

/// The payload of host packet `n`: `host packet #n` cut or padded with '.' to `size`.
#[must_use]
pub fn host_payload(n: u64, size: usize) -> Vec<u8> {
    let mut p = format!("host packet #{n}").into_bytes();
    p.resize(size, b'.');
    p
}

const POLL: Duration = Duration::from_millis(5);

impl HostTraffic {
    /// Starts the host's threads on `host`: it answers from now on.
    #[must_use]
    pub fn start(host: &HostEndpoint, plan: TrafficPlan) -> Self {
        host.set_responder(|p| Some(p.payload.clone()));
        let stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(Counters::default());
        let mut threads = Vec::new();
        {
            let (host, stop, c) = (host.clone(), stop.clone(), counters.clone());
            threads.push(std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if host.recv_timeout(POLL).is_some() {
                        c.received.fetch_add(1, Ordering::Relaxed);
                    }
                    while host.take_completion().is_some() {
                        c.completions.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
        let sender = match plan {
            TrafficPlan::Answer => None,
            TrafficPlan::Chatter {
                count,
                size,
                interval,
                ask,
            } => Some((count, size, Some(interval), ask, false)),
            TrafficPlan::Flood { count, size, ask } => Some((count, size, None, false, ask)),
        };
        if let Some((count, size, interval, ask_alternate, ask_all)) = sender {
            let (host, stop, c) = (host.clone(), stop.clone(), counters.clone());
            threads.push(std::thread::spawn(move || {
                let mut n = 0u64;
                while (count == 0 || n < count) && !stop.load(Ordering::Relaxed) {
                    let ask = ask_all || (ask_alternate && n % 2 == 1);
                    match host.send_inband(&host_payload(n, size), ask) {
                        Ok(_) => {
                            c.sent.fetch_add(1, Ordering::Relaxed);
                            n += 1;
                            if let Some(i) = interval {
                                std::thread::sleep(i);
                            }
                        }
                        Err(SendError::Full) => {
                            c.ring_full.fetch_add(1, Ordering::Relaxed);
                            std::thread::sleep(Duration::from_micros(20));
                        }
                        Err(_) => break,
                    }
                }
            }));
        }
        Self {
            stop,
            counters,
            threads,
        }
    }

    /// What the host did so far.
    #[must_use]
    pub fn stats(&self) -> TrafficStats {
        self.counters.snapshot()
    }

    /// Stops the host's threads and returns what it did.
    #[must_use]
    pub fn stop(mut self) -> TrafficStats {
        self.halt();
        self.counters.snapshot()
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for HostTraffic {
    fn drop(&mut self) {
        self.halt();
    }
}
