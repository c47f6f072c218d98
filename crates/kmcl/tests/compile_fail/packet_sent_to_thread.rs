// A `Packet` stays in its callback; only a `PendingPacket` may travel to another thread.
use kmcl::irql::Level;
use kmcl::packet::{Packet, PacketHandler};

struct Handler;

impl PacketHandler for Handler {
    fn process(&self, packet: Packet<'_>, _level: Level) {
        std::thread::spawn(move || packet.complete());
    }
}

fn main() {}
