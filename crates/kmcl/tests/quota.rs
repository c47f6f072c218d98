//! `VmbChannelSetTransactionQuota` through `Endpoint::set_transaction_quota`.
//!
//! C header: `vmbuskernelmodeclientlibapi.h` (`VmbChannelSetTransactionQuota`); its DDI page:
//! at the quota KMCL stops delivering until completions catch up.

mod common;

use std::sync::Mutex;

use common::{Bench, passive};
use kmcl::NtStatus;
use kmcl::channel::Endpoint;
use kmcl::irql::{Level, Passive};
use kmcl::packet::{Packet, PacketHandler, PendingPacket};
use kmcl::state::StateHandler;

/// Holds every packet (as a pending packet) and sets the quota when the channel opens.
#[derive(Default)]
struct Holder {
    quota: u32,
    held: Mutex<Vec<PendingPacket>>,
    opened_status: Mutex<Option<kmcl::Result>>,
}

impl PacketHandler for Holder {
    fn process(&self, packet: Packet<'_>, _level: Level) {
        self.held.lock().unwrap().push(packet.into_pending());
    }
}

impl StateHandler for Holder {
    fn opened(&self, channel: Endpoint<'_>, _irql: Passive) -> kmcl::Result {
        *self.opened_status.lock().unwrap() = Some(channel.set_transaction_quota(self.quota));
        Ok(())
    }
}

#[test]
fn transaction_quota_limits_outstanding_incoming_packets() {
    let b = Bench::deterministic(31);
    let p = passive();
    let holder = Holder {
        quota: 3,
        ..Holder::default()
    };
    let ch = b
        .kmcl
        .channel(b.parent(), holder, p)
        .unwrap()
        .enable(p)
        .unwrap();
    b.idle();
    assert_eq!(*ch.handler().opened_status.lock().unwrap(), Some(Ok(())));
    let host = b.offer.host();
    for i in 0..8u8 {
        host.send_inband(&[i; 8], false).expect("host send");
    }
    b.idle();
    assert_eq!(
        ch.handler().held.lock().unwrap().len(),
        3,
        "KMCL stops at the quota"
    );
    // Completing the held packets lets KMCL deliver the rest, three at a time.
    let mut delivered = 0;
    for _ in 0..8 {
        let batch: Vec<PendingPacket> = ch.handler().held.lock().unwrap().drain(..).collect();
        delivered += batch.len();
        for pkt in batch {
            pkt.complete();
        }
        b.idle();
        if delivered == 8 {
            break;
        }
        assert!(ch.handler().held.lock().unwrap().len() <= 3);
    }
    assert_eq!(
        delivered, 8,
        "every packet delivered once the quota allowed it"
    );
    ch.close(p);
    b.sim.assert_clean();
}

#[test]
fn transaction_quota_of_zero_is_rejected() {
    let b = Bench::deterministic(32);
    let p = passive();
    let ch = b
        .kmcl
        .channel(b.parent(), Holder::default(), p)
        .unwrap()
        .enable(p)
        .unwrap();
    b.idle();
    assert_eq!(
        *ch.handler().opened_status.lock().unwrap(),
        Some(Err(NtStatus::INVALID_PARAMETER))
    );
    assert_eq!(
        ch.endpoint().set_transaction_quota(0),
        Err(NtStatus::INVALID_PARAMETER)
    );
    assert_eq!(ch.endpoint().set_transaction_quota(16), Ok(()));
    ch.close(p);
    b.sim.assert_clean();
}
