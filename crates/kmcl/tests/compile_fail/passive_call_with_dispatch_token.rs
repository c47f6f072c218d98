// A routine that blocks (a synchronous request) does not accept a Dispatch token.
use kmcl::irql::Level;
use kmcl::packet::{Packet, PacketHandler};

struct Handler;

impl PacketHandler for Handler {
    fn process(&self, packet: Packet<'_>, level: Level) {
        if let Level::Dispatch(dispatch) = level {
            let mut response = [0u64; 2];
            let _ = packet.endpoint().send_sync(b"negotiate", &mut response, None, dispatch);
        }
        packet.complete();
    }
}

fn main() {}
