// Deferral to PASSIVE_LEVEL only exists for a DISPATCH_LEVEL delivery: a Passive token is refused.
use kmcl::irql::Level;
use kmcl::packet::{Packet, PacketHandler};

struct Handler;

impl PacketHandler for Handler {
    fn process(&self, packet: Packet<'_>, level: Level) {
        if let Level::Passive(passive) = level {
            packet.defer(passive);
        }
    }
}

fn main() {}
