// A packet cannot be retired twice: the second `complete` uses a moved value.
use kmcl::irql::Level;
use kmcl::packet::{Packet, PacketHandler};

struct Handler;

impl PacketHandler for Handler {
    fn process(&self, packet: Packet<'_>, _level: Level) {
        packet.complete_with(b"first");
        packet.fail();
    }
}

fn main() {}
