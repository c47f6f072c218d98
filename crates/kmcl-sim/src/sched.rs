//! Execution contexts: simulated IRQL, KMCL's threads, and their work queues.
//!
//! C header: `vmbuskernelmodeclientlibapi.h` (callback IRQL annotations); `docs/irql.md`, `docs/simulator.md`.
//!
//! KMCL runs driver code in three contexts: its own passive thread for state-change
//! callbacks (`Kmcl`), a DPC at DISPATCH_LEVEL for incoming packets and send
//! completions (`Dpc`), and a passive worker for deferred or passive-mode packets
//! (`Worker`). The built-in host endpoint gets a fourth queue (`Host`).
//!
//! In deterministic mode every queue is drained by whichever thread steps the
//! simulation (`Sim::run_until_idle`, or a blocking KMCL call); a seeded splitmix64
//! picks the next queue and the batch sizes. In threaded mode each context is a
//! real thread that sleeps on a condition variable.
#![forbid(unsafe_code)]

use std::cell::Cell;
use std::collections::VecDeque;

/// `PASSIVE_LEVEL`.
pub const PASSIVE_LEVEL: u8 = 0;
/// `DISPATCH_LEVEL`.
pub const DISPATCH_LEVEL: u8 = 2;

thread_local! {
    static IRQL: Cell<u8> = const { Cell::new(PASSIVE_LEVEL) };
    static CONTEXT: Cell<Option<Ctx>> = const { Cell::new(None) };
}

/// This thread's simulated IRQL: 0 = `PASSIVE_LEVEL`, 2 = `DISPATCH_LEVEL`.
///
/// Test threads run at `PASSIVE_LEVEL`; the simulator raises it while it runs a
/// DISPATCH_LEVEL callback on the thread. Install it into the safe layer with
/// `kmcl::irql::set_host_irql_source(kmcl_sim::current_irql)`.
#[must_use]
pub fn current_irql() -> u8 {
    IRQL.with(Cell::get)
}

/// The KMCL execution context a piece of simulated work runs in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Ctx {
    /// KMCL's passive thread: state-change callbacks (PASSIVE_LEVEL).
    Kmcl,
    /// The channel DPC: packet delivery and send completions (DISPATCH_LEVEL).
    Dpc,
    /// The passive worker: passive-mode and deferred packets (PASSIVE_LEVEL).
    Worker,
    /// The built-in host endpoint (not driver code; PASSIVE_LEVEL).
    Host,
}

impl Ctx {
    pub(crate) const ALL: [Ctx; 4] = [Ctx::Kmcl, Ctx::Dpc, Ctx::Worker, Ctx::Host];

    pub(crate) const fn index(self) -> usize {
        match self {
            Ctx::Kmcl => 0,
            Ctx::Dpc => 1,
            Ctx::Worker => 2,
            Ctx::Host => 3,
        }
    }

    pub(crate) const fn irql(self) -> u8 {
        match self {
            Ctx::Dpc => DISPATCH_LEVEL,
            Ctx::Kmcl | Ctx::Worker | Ctx::Host => PASSIVE_LEVEL,
        }
    }

    pub(crate) const fn thread_name(self) -> &'static str {
        match self {
            Ctx::Kmcl => "kmcl-sim-kmcl",
            Ctx::Dpc => "kmcl-sim-dpc",
            Ctx::Worker => "kmcl-sim-worker",
            Ctx::Host => "kmcl-sim-host",
        }
    }
}

/// The context the current thread is executing simulated work in (`None` = a test thread).
pub(crate) fn current_ctx() -> Option<Ctx> {
    CONTEXT.with(Cell::get)
}

/// Restores the thread's previous IRQL and context when dropped.
pub(crate) struct ContextGuard {
    irql: u8,
    ctx: Option<Ctx>,
}

impl Drop for ContextGuard {
    fn drop(&mut self) {
        IRQL.with(|c| c.set(self.irql));
        CONTEXT.with(|c| c.set(self.ctx));
    }
}

/// Enters `ctx` on this thread (sets its IRQL) until the guard is dropped.
pub(crate) fn enter(ctx: Ctx) -> ContextGuard {
    let g = ContextGuard {
        irql: current_irql(),
        ctx: current_ctx(),
    };
    IRQL.with(|c| c.set(ctx.irql()));
    CONTEXT.with(|c| c.set(Some(ctx)));
    g
}

/// Raises (or lowers) the IRQL alone until the guard is dropped.
pub(crate) fn set_irql(irql: u8) -> ContextGuard {
    let g = ContextGuard {
        irql: current_irql(),
        ctx: current_ctx(),
    };
    IRQL.with(|c| c.set(irql));
    g
}

/// splitmix64: a tiny seeded generator; identical seeds give identical runs.
#[derive(Clone, Debug)]
pub(crate) struct SplitMix64(u64);

impl SplitMix64 {
    pub(crate) const fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value in `1..=max` (`max >= 1`).
    pub(crate) fn one_to(&mut self, max: u32) -> u32 {
        let m = u64::from(max.max(1));
        u32::try_from(self.next_u64() % m).map_or(1, |v| v + 1)
    }
}

/// A unit of simulated work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Task {
    /// Open a channel after `VmbChannelEnable`: Opened, Started, PostStarted.
    Open { ch: u64 },
    /// Close a channel initiated by the host (rescind) or by a ring fault.
    HostClose { ch: u64 },
    /// The guest was signalled (or has queued work): run the channel DPC.
    Dpc { ch: u64 },
    /// Deliver one incoming packet at PASSIVE_LEVEL.
    Passive { ch: u64, pkt: u64 },
    /// Run the completion routine of an outgoing packet at DISPATCH_LEVEL.
    SendDone { ch: u64, pkt: u64 },
    /// The host was signalled: the built-in host reads its ring.
    Host { ch: u64 },
}

impl Task {
    pub(crate) const fn ctx(self) -> Ctx {
        match self {
            Task::Open { .. } | Task::HostClose { .. } => Ctx::Kmcl,
            Task::Dpc { .. } | Task::SendDone { .. } => Ctx::Dpc,
            Task::Passive { .. } => Ctx::Worker,
            Task::Host { .. } => Ctx::Host,
        }
    }
}

/// The four work queues.
#[derive(Debug, Default)]
pub(crate) struct Queues {
    q: [VecDeque<Task>; 4],
    /// The DPC and host wake-ups now queued (one per channel at most; a handful in all): the
    /// de-duplication in [`push`](Self::push) looks here instead of scanning a queue that
    /// also holds every pending `SendDone`.
    wakeups: Vec<Task>,
    /// Whether a thread is currently running a task of each context (threaded mode).
    pub(crate) busy: [bool; 4],
}

impl Queues {
    #[inline(always)]
    pub(crate) fn push(&mut self, t: Task) {
        // A DPC or host wake-up already queued covers this one (like KeInsertQueueDpc).
        if is_wakeup(t) {
            if self.wakeups.contains(&t) {
                return;
            }
            self.wakeups.push(t);
        }
        self.q[t.ctx().index()].push_back(t);
    }

    pub(crate) fn pop(&mut self, ctx: Ctx) -> Option<Task> {
        let t = self.q[ctx.index()].pop_front()?;
        if is_wakeup(t)
            && let Some(i) = self.wakeups.iter().position(|w| *w == t)
        {
            self.wakeups.swap_remove(i);
        }
        Some(t)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.q.iter().all(VecDeque::is_empty)
    }

    #[cfg(test)]
    pub(crate) fn len(&self, ctx: Ctx) -> usize {
        self.q[ctx.index()].len()
    }

    /// Deterministic pick: a non-empty queue other than `exclude`, chosen by `rng`.
    pub(crate) fn pick(&mut self, rng: &mut SplitMix64, exclude: Option<Ctx>) -> Option<Task> {
        // On the stack (a step allocates nothing); same order and draw as ever.
        let mut ready = Ctx::ALL;
        let mut count = 0;
        for c in Ctx::ALL {
            if Some(c) != exclude && !self.q[c.index()].is_empty() {
                ready[count] = c;
                count += 1;
            }
        }
        if count == 0 {
            return None;
        }
        let n = u32::try_from(count).unwrap_or(1);
        let i = usize::try_from(rng.one_to(n) - 1).unwrap_or(0);
        self.pop(ready[i])
    }

    /// Drops every task of channel `ch`.
    pub(crate) fn forget_channel(&mut self, ch: u64) {
        for q in &mut self.q {
            q.retain(|t| task_channel(*t) != ch);
        }
        self.wakeups.retain(|t| task_channel(*t) != ch);
    }
}

/// A task [`Queues::push`] queues at most once at a time (per channel).
const fn is_wakeup(t: Task) -> bool {
    matches!(t, Task::Dpc { .. } | Task::Host { .. })
}

const fn task_channel(t: Task) -> u64 {
    match t {
        Task::Open { ch }
        | Task::HostClose { ch }
        | Task::Dpc { ch }
        | Task::Passive { ch, .. }
        | Task::SendDone { ch, .. }
        | Task::Host { ch } => ch,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn irql_is_per_thread_and_restored() {
        assert_eq!(current_irql(), PASSIVE_LEVEL);
        {
            let _g = enter(Ctx::Dpc);
            assert_eq!(current_irql(), DISPATCH_LEVEL);
            let other = std::thread::spawn(current_irql).join().unwrap_or(99);
            assert_eq!(other, PASSIVE_LEVEL);
        }
        assert_eq!(current_irql(), PASSIVE_LEVEL);
    }

    #[test]
    fn same_seed_gives_same_sequence() {
        let mut a = SplitMix64::new(7);
        let mut b = SplitMix64::new(7);
        let mut c = SplitMix64::new(8);
        let va: Vec<u64> = (0..8).map(|_| a.next_u64()).collect();
        let vb: Vec<u64> = (0..8).map(|_| b.next_u64()).collect();
        let vc: Vec<u64> = (0..8).map(|_| c.next_u64()).collect();
        assert_eq!(va, vb);
        assert_ne!(va, vc);
    }

    #[test]
    fn dpc_wakeups_coalesce() {
        let mut q = Queues::default();
        q.push(Task::Dpc { ch: 1 });
        q.push(Task::Dpc { ch: 1 });
        q.push(Task::Dpc { ch: 2 });
        assert_eq!(q.len(Ctx::Dpc), 2);
        // Once run, a DPC can be queued again.
        assert_eq!(q.pop(Ctx::Dpc), Some(Task::Dpc { ch: 1 }));
        q.push(Task::Dpc { ch: 1 });
        assert_eq!(q.len(Ctx::Dpc), 2);
        q.forget_channel(2);
        q.push(Task::Dpc { ch: 2 });
        assert_eq!(q.len(Ctx::Dpc), 2);
    }
}
