// The payload borrow ends before retirement: completing while it is borrowed fails.
use kmcl::irql::Level;
use kmcl::packet::{Packet, PacketHandler};

struct Handler;

impl PacketHandler for Handler {
    fn process(&self, packet: Packet<'_>, _level: Level) {
        let payload = packet.payload();
        packet.complete();
        assert_eq!(payload.len(), 0);
    }
}

fn main() {}
