// A packet cannot be used after it is retired: `complete` takes `self`.
use kmcl::irql::Level;
use kmcl::packet::{Packet, PacketHandler};

struct Handler;

impl PacketHandler for Handler {
    fn process(&self, packet: Packet<'_>, _level: Level) {
        packet.complete();
        let _again = packet.payload();
    }
}

fn main() {}
