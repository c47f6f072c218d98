//! IRQL tokens against the simulator's levels: a wrong claim is recorded, never panicked on.
//!
//! C header: `wdm.h` (`KeGetCurrentIrql`); `vmbuskernelmodeclientlibapi.h` SAL
//! (`_IRQL_requires_(PASSIVE_LEVEL)`); reference `docs/irql.md`. In its own test binary
//! because the mismatch counter is process-wide.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};

use common::{Bench, passive};
use kmcl::irql::{Level, Passive};
use kmcl::packet::{Packet, PacketHandler};
use kmcl::state::StateHandler;

static HOOK_CALLS: AtomicU32 = AtomicU32::new(0);

fn hook(claimed: u8, actual: u8) {
    assert_eq!((claimed, actual), (0, 2));
    HOOK_CALLS.fetch_add(1, Ordering::Relaxed);
}

/// A buggy handler: claims PASSIVE_LEVEL while KMCL delivers at DISPATCH_LEVEL.
struct Liar;
impl PacketHandler for Liar {
    fn process(&self, packet: Packet<'_>, level: Level) {
        assert!(matches!(level, Level::Dispatch(_)));
        assert!(
            Passive::try_current().is_none(),
            "no Passive token at DISPATCH_LEVEL"
        );
        // SAFETY: deliberately false (the bug under test); the token is never used.
        let _wrong = unsafe { Passive::assume() };
        packet.complete();
    }
}
impl StateHandler for Liar {}

#[test]
fn passive_claim_at_dispatch_level_is_recorded_not_panicked() {
    kmcl::irql::set_mismatch_hook(hook);
    let b = Bench::deterministic(61);
    let p = passive();
    let before = kmcl::irql::mismatches();
    let ch = b
        .kmcl
        .channel(b.parent(), Liar, p)
        .unwrap()
        .enable(p)
        .unwrap();
    b.idle();
    assert_eq!(
        kmcl::irql::mismatches(),
        before,
        "state callbacks run at PASSIVE_LEVEL"
    );
    b.offer.host().send_inband(b"tick", true).unwrap();
    b.idle();
    if cfg!(debug_assertions) {
        assert_eq!(kmcl::irql::mismatches(), before + 1);
        assert_eq!(HOOK_CALLS.load(Ordering::Relaxed), 1);
    }
    assert!(b.offer.host().take_completion().is_some());
    ch.close(p);
    b.sim.assert_clean();
}
