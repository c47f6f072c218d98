//! A scripted host: send these packets, expect these completions, rescind here, inject
//! that fault; then read the verifier's report.
//!
//! C header: `vmbuskernelmodeclientlibapi.h` (`VmbChannelPacketComplete` carries the
//! response the host reads as a completion packet); `docs/simulator.md`.
//!
//! A [`Script`] is the test of a driver seen from the host: the steps run in order
//! against an offer's [`HostEndpoint`], in both simulation modes (deterministic mode
//! steps KMCL's contexts while it waits; threaded mode waits for them).
//! [`Script::run`] returns a [`Report`] (every completion, the verifier's violations,
//! the counters) or a [`ScriptError`] naming the step that did not go as scripted.
//! [`for_each_seed`] runs one test over many deterministic interleavings.
//!
//! # Examples
//!
//! ```
//! use kmcl_sim::script::Script;
//! use kmcl_sim::{OfferConfig, Sim, SimConfig};
//!
//! let sim = Sim::new(SimConfig::deterministic(7));
//! let offer = sim.offer(OfferConfig::default());
//! // No driver opened the offer: the first send fails, naming its step.
//! let err = Script::new().send(b"ping").run(&sim, &offer.host()).unwrap_err();
//! assert_eq!(err.step(), 0);
//! assert!(err.to_string().contains("no channel open"));
//! ```
//!
//! With a driver bound (the echo driver's tests, `examples/echo-driver/tests/`):
//!
//! ```text
//! let report = Script::new()
//!     .send(b"ping").expect_response(b"ping")
//!     .send_no_completion(b"fire and forget")
//!     .inject(Fault::RescindDuringDelivery)
//!     .send(b"last")
//!     .expect_closed()
//!     .run(&sim, &offer.host())?;
//! report.assert_clean();
//! ```
#![forbid(unsafe_code)]

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::time::{Duration, Instant};

use crate::{Fault, HostEndpoint, Mode, Rule, SendError, Sim, Stats, Violation};

/// What a scripted send expects back.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Expect {
    /// No completion was requested: none may arrive.
    Nothing,
    /// A completion, with any response.
    AnyResponse,
    /// A completion whose response is these bytes (VMBus may add zero padding to 8).
    Response(Vec<u8>),
}

/// One step of a [`Script`].
#[derive(Clone, Debug)]
enum Step {
    Send { payload: Vec<u8>, expect: Expect },
    Settle,
    Inject(Fault),
    Rescind,
    ExpectClosed,
}

/// A host-side test script: the steps run in order by [`run`](Self::run).
///
/// Sends are written into the guest-inbound ring without waiting for their completions
/// (a full ring is retried while the simulation runs), so several packets can be in
/// flight; [`settle`](Self::settle) and the end of the script wait for every completion
/// expected so far and check it.
#[derive(Clone, Debug)]
#[must_use]
pub struct Script {
    steps: Vec<Step>,
    timeout: Duration,
}

impl Default for Script {
    fn default() -> Self {
        Self::new()
    }
}

impl Script {
    /// An empty script; waits give up after 10 s (threaded mode) or when nothing can run
    /// any more (deterministic mode).
    pub fn new() -> Self {
        Self {
            steps: Vec::new(),
            timeout: Duration::from_secs(10),
        }
    }

    /// How long a threaded-mode wait (a completion, ring space, the close) may take.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sends an in-band packet asking for a completion (`completion_requested`); by
    /// default any response is accepted, [`expect_response`](Self::expect_response)
    /// says which.
    pub fn send(mut self, payload: &[u8]) -> Self {
        self.steps.push(Step::Send {
            payload: payload.to_vec(),
            expect: Expect::AnyResponse,
        });
        self
    }

    /// Sends an in-band packet that asks for no completion; none may arrive for it.
    pub fn send_no_completion(mut self, payload: &[u8]) -> Self {
        self.steps.push(Step::Send {
            payload: payload.to_vec(),
            expect: Expect::Nothing,
        });
        self
    }

    /// The previous [`send`](Self::send) must be completed with exactly `response`. The
    /// host reads completions in 8-byte units, so the bytes it gets may be `response`
    /// followed by zero padding up to the next multiple of 8; both match.
    ///
    /// # Panics
    /// If the previous step is not a [`send`](Self::send) (a mistake in the script).
    pub fn expect_response(mut self, response: &[u8]) -> Self {
        match self.steps.last_mut() {
            Some(Step::Send { expect, .. }) if *expect != Expect::Nothing => {
                *expect = Expect::Response(response.to_vec());
            }
            _ => panic!("Script::expect_response must follow Script::send"),
        }
        self
    }

    /// Waits for every completion expected so far, checks them, then lets the
    /// simulation run until idle.
    pub fn settle(mut self) -> Self {
        self.steps.push(Step::Settle);
        self
    }

    /// Arms a fault ([`Sim::inject`]) at this point of the script.
    pub fn inject(mut self, fault: Fault) -> Self {
        self.steps.push(Step::Inject(fault));
        self
    }

    /// The host rescinds the offer here ([`HostEndpoint::rescind`]). Completions still
    /// expected from earlier sends become optional (the channel may close before the
    /// driver answers them); those that do arrive are still checked.
    pub fn rescind(mut self) -> Self {
        self.steps.push(Step::Rescind);
        self
    }

    /// The channel must be closed by now (after a rescind, or a fault that closes it),
    /// once the simulation has run.
    pub fn expect_closed(mut self) -> Self {
        self.steps.push(Step::ExpectClosed);
        self
    }

    /// Runs the script against `host` (an offer of `sim` on which a driver enabled a
    /// channel). First waits for the host's open to finish (KMCL opens asynchronously
    /// after `VmbChannelEnable`); ends like [`settle`](Self::settle), then collects the
    /// verifier's report.
    ///
    /// With the verifier in [`VerifierMode::Bugcheck`](crate::VerifierMode::Bugcheck) a
    /// violation panics at the next safe point, as a bugcheck would; use
    /// [`SimConfig::collect`](crate::SimConfig::collect) to read it from the
    /// [`Report`] instead.
    ///
    /// # Errors
    /// The first step that did not go as scripted ([`ScriptError`]).
    pub fn run(&self, sim: &Sim, host: &HostEndpoint) -> Result<Report, ScriptError> {
        let mut run = Run {
            sim,
            host,
            timeout: self.timeout,
            expected: Vec::new(),
            arrived: HashMap::new(),
            late: HashSet::new(),
            completions: Vec::new(),
        };
        // A channel that never opens fails the first send with `SendError::NotOpen`.
        host.wait_open(self.timeout);
        for (step, s) in self.steps.iter().enumerate() {
            match s {
                Step::Send { payload, expect } => run.send(step, payload, expect)?,
                Step::Settle => run.settle(step)?,
                Step::Inject(f) => sim.inject(*f),
                Step::Rescind => {
                    host.rescind();
                    for e in &mut run.expected {
                        e.optional = true;
                    }
                }
                Step::ExpectClosed => run.expect_closed(step)?,
            }
        }
        run.settle(self.steps.len())?;
        Ok(Report {
            completions: run.completions,
            violations: sim.violations(),
            stats: sim.stats(),
        })
    }
}

/// A completion the script still waits for.
#[derive(Debug)]
struct Pending {
    step: usize,
    trans_id: u64,
    expect: Expect,
    optional: bool,
}

/// The state of one [`Script::run`].
struct Run<'a> {
    sim: &'a Sim,
    host: &'a HostEndpoint,
    timeout: Duration,
    expected: Vec<Pending>,
    /// Completions taken from the host that no expectation claimed yet.
    arrived: HashMap<u64, Vec<u8>>,
    /// Optional completions (sent before a rescind) that had not arrived when their
    /// settle ran: they may still arrive later and are then ignored.
    late: HashSet<u64>,
    completions: Vec<Completion>,
}

impl Run<'_> {
    fn deterministic(&self) -> bool {
        matches!(self.sim.config().mode, Mode::Deterministic { .. })
    }

    fn send(&mut self, step: usize, payload: &[u8], expect: &Expect) -> Result<(), ScriptError> {
        let completion = *expect != Expect::Nothing;
        let deadline = Instant::now() + self.timeout;
        loop {
            match self.host.send_inband(payload, completion) {
                Ok(trans_id) => {
                    self.expected.push(Pending {
                        step,
                        trans_id,
                        expect: expect.clone(),
                        optional: false,
                    });
                    return Ok(());
                }
                // The driver still holds earlier packets: let it run, then retry.
                Err(SendError::Full) if Instant::now() < deadline => {
                    let before = self.sim.stats();
                    self.sim.run_until_idle();
                    self.drain();
                    if self.deterministic() && self.sim.stats() == before {
                        return Err(ScriptError::new(step, ErrorKind::Send(SendError::Full)));
                    }
                    if !self.deterministic() {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
                Err(e) => return Err(ScriptError::new(step, ErrorKind::Send(e))),
            }
        }
    }

    /// Moves every completion the host holds into `arrived`.
    fn drain(&mut self) {
        while let Some((t, bytes)) = self.host.take_completion() {
            self.arrived.insert(t, bytes);
        }
    }

    fn settle(&mut self, step: usize) -> Result<(), ScriptError> {
        self.sim.run_until_idle();
        self.drain();
        for p in std::mem::take(&mut self.expected) {
            let got = self.arrived.remove(&p.trans_id).or_else(|| {
                if p.expect == Expect::Nothing || p.optional {
                    return None;
                }
                self.wait_for(p.trans_id)
            });
            match (&p.expect, got) {
                (Expect::Nothing, None) => {}
                (Expect::Nothing, Some(response)) => {
                    return Err(ScriptError::new(
                        p.step,
                        ErrorKind::UnexpectedCompletion { response },
                    ));
                }
                (_, None) if p.optional => {
                    self.late.insert(p.trans_id);
                }
                (_, None) => return Err(ScriptError::new(p.step, ErrorKind::NoCompletion)),
                (Expect::Response(want), Some(got)) if !response_matches(want, &got) => {
                    return Err(ScriptError::new(
                        p.step,
                        ErrorKind::WrongResponse {
                            expected: want.clone(),
                            got,
                        },
                    ));
                }
                (_, Some(response)) => self.completions.push(Completion {
                    step: p.step,
                    trans_id: p.trans_id,
                    response,
                }),
            }
        }
        let late = &self.late;
        self.arrived.retain(|t, _| !late.contains(t));
        if let Some((&trans_id, _)) = self.arrived.iter().next() {
            return Err(ScriptError::new(
                step,
                ErrorKind::UnknownCompletion { trans_id },
            ));
        }
        Ok(())
    }

    /// Waits (threaded) or steps (deterministic) until `trans_id` is completed.
    fn wait_for(&mut self, trans_id: u64) -> Option<Vec<u8>> {
        let deadline = Instant::now() + self.timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let (t, bytes) = self.host.take_completion_timeout(left)?;
            if t == trans_id {
                return Some(bytes);
            }
            self.arrived.insert(t, bytes);
        }
    }

    fn expect_closed(&mut self, step: usize) -> Result<(), ScriptError> {
        let deadline = Instant::now() + self.timeout;
        loop {
            self.sim.run_until_idle();
            if !self.host.is_open() {
                return Ok(());
            }
            if self.deterministic() || Instant::now() >= deadline {
                return Err(ScriptError::new(step, ErrorKind::StillOpen));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// Whether `got` is `want`, possibly zero-padded to the next multiple of 8.
fn response_matches(want: &[u8], got: &[u8]) -> bool {
    got.len() >= want.len()
        && got.len() <= want.len().next_multiple_of(8)
        && got[..want.len()] == *want
        && got[want.len()..].iter().all(|b| *b == 0)
}

/// A completion the driver sent for a scripted packet.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Completion {
    /// The index of the [`Script::send`] step it answers.
    pub step: usize,
    /// The packet's transaction id.
    pub trans_id: u64,
    /// The response bytes as the host read them (zero-padded to 8).
    pub response: Vec<u8>,
}

/// What a [`Script::run`] observed: the completions, the verifier's report, the counters.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Report {
    /// Every completion of a scripted send, in the order of the steps.
    pub completions: Vec<Completion>,
    /// Every violation the verifier recorded in this simulation so far.
    pub violations: Vec<Violation>,
    /// The simulation's counters at the end of the script.
    pub stats: Stats,
}

impl Report {
    /// Whether the verifier recorded a violation of `rule`.
    #[must_use]
    pub fn violated(&self, rule: Rule) -> bool {
        self.violations.iter().any(|v| v.rule == rule)
    }

    /// The rules broken, in the order first broken, each once.
    #[must_use]
    pub fn rules(&self) -> Vec<Rule> {
        let mut rules = Vec::new();
        for v in &self.violations {
            if !rules.contains(&v.rule) {
                rules.push(v.rule);
            }
        }
        rules
    }

    /// Panics listing the violations unless there are none.
    ///
    /// # Panics
    /// When the verifier recorded any violation.
    pub fn assert_clean(&self) {
        self.assert_rules(&[]);
    }

    /// Panics unless the rules broken are exactly `rules` (in any order).
    ///
    /// # Panics
    /// When a rule of `rules` was not broken, or another one was.
    pub fn assert_rules(&self, rules: &[Rule]) {
        let got = self.rules();
        let missing: Vec<&Rule> = rules.iter().filter(|r| !got.contains(r)).collect();
        let extra: Vec<&Rule> = got.iter().filter(|r| !rules.contains(r)).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "verifier report: expected rules {rules:?}, missing {missing:?}, unexpected {extra:?}; violations: {}",
            self.violations
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        );
    }
}

/// What went wrong at a step.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The host could not send the packet.
    Send(SendError),
    /// No completion arrived for a send that asked for one.
    NoCompletion,
    /// The completion's response is not the expected one.
    WrongResponse {
        /// The scripted response.
        expected: Vec<u8>,
        /// What the host read.
        got: Vec<u8>,
    },
    /// A completion arrived for a send that asked for none.
    UnexpectedCompletion {
        /// What the host read.
        response: Vec<u8>,
    },
    /// A completion for a transaction the script never sent.
    UnknownCompletion {
        /// Its transaction id.
        trans_id: u64,
    },
    /// [`Script::expect_closed`]: the channel is still open.
    StillOpen,
}

/// The step of a [`Script`] that did not go as scripted, and how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScriptError {
    step: usize,
    kind: ErrorKind,
}

impl ScriptError {
    const fn new(step: usize, kind: ErrorKind) -> Self {
        Self { step, kind }
    }

    /// The index of the step (0-based, in the order the builder methods were called;
    /// [`expect_response`](Script::expect_response) belongs to its send; the end of the
    /// script is the index after the last step).
    #[must_use]
    pub const fn step(&self) -> usize {
        self.step
    }

    /// What went wrong.
    #[must_use]
    pub const fn kind(&self) -> &ErrorKind {
        &self.kind
    }
}

impl fmt::Display for ScriptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "script step {}: ", self.step)?;
        match &self.kind {
            ErrorKind::Send(e) => write!(f, "send failed: {e}"),
            ErrorKind::NoCompletion => f.write_str("no completion arrived"),
            ErrorKind::WrongResponse { expected, got } => {
                write!(f, "response {got:02x?}, expected {expected:02x?}")
            }
            ErrorKind::UnexpectedCompletion { response } => {
                write!(
                    f,
                    "completion {response:02x?} for a packet that asked for none"
                )
            }
            ErrorKind::UnknownCompletion { trans_id } => {
                write!(f, "completion for unknown transaction {trans_id:#x}")
            }
            ErrorKind::StillOpen => f.write_str("the channel is still open"),
        }
    }
}

impl std::error::Error for ScriptError {}

/// The environment variable that makes [`for_each_seed`] run one seed only.
pub const SEED_VAR: &str = "KMCL_SIM_SEED";

/// Runs `test` once per seed (each a different deterministic interleaving of KMCL's
/// contexts, for [`SimConfig::deterministic`](crate::SimConfig::deterministic)). When
/// one fails, its panic goes on with a line naming the seed; setting
/// `KMCL_SIM_SEED=<seed>` then runs that seed alone.
///
/// # Panics
/// With the panic of the first failing seed; or when `KMCL_SIM_SEED` is not a number.
pub fn for_each_seed(seeds: impl IntoIterator<Item = u64>, mut test: impl FnMut(u64)) {
    let only = std::env::var(SEED_VAR).ok().map(|s| {
        s.trim()
            .parse::<u64>()
            .unwrap_or_else(|_| panic!("{SEED_VAR}={s:?} is not a u64"))
    });
    let seeds: Vec<u64> = match only {
        Some(s) => vec![s],
        None => seeds.into_iter().collect(),
    };
    for seed in seeds {
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| test(seed))) {
            eprintln!("kmcl-sim: seed {seed} failed; rerun it alone with {SEED_VAR}={seed}");
            resume_unwind(panic);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_matches_exact_and_zero_padded_only() {
        assert!(response_matches(b"ping", b"ping"));
        assert!(response_matches(b"ping", b"ping\0\0\0\0"));
        assert!(!response_matches(b"ping", b"ping\0\0\0\x01"));
        assert!(!response_matches(b"ping", b"pong\0\0\0\0"));
        assert!(!response_matches(b"ping", b"ping\0\0\0\0\0\0\0\0"));
        assert!(!response_matches(b"ping", b"pin"));
        assert!(response_matches(b"", b""));
    }

    #[test]
    fn for_each_seed_names_the_failing_seed() {
        let mut ran = Vec::new();
        let r = catch_unwind(AssertUnwindSafe(|| {
            for_each_seed(1..5, |s| {
                ran.push(s);
                assert_ne!(s, 3);
            });
        }));
        assert!(r.is_err());
        assert_eq!(ran, [1, 2, 3]);
    }

    #[test]
    #[should_panic(expected = "must follow Script::send")]
    fn expect_response_without_send_is_a_script_bug() {
        let _ = Script::new().send_no_completion(b"x").expect_response(b"x");
    }
}
