// The payload borrow cannot escape the packet: it is tied to `&self`, not to `'a`.
use kmcl::packet::Packet;

fn keep<'a>(packet: &Packet<'a>) -> &'a [u8] {
    packet.payload()
}

fn main() {}
