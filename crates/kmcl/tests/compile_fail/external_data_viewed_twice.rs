// Rule EXTERNAL_MDL_LIVES_UNTIL_COMPLETE: at most one view of an external-data or GPADL
// MDL lives at a time. A writable view lends `&mut [u8]` over the MDL's pages
// (`as_mut_slice`), so two views of the same MDL would be two aliasing `&mut [u8]`.
use kmcl::external::{Access, ExternalData};
use kmcl::packet::Packet;
use kmcl::server::GpadlMapping;

fn packet_viewed_twice(packet: &mut Packet<'_>) {
    let (Ok(mut a), Ok(mut b)) = (
        packet.external_data(Access::Writable),
        packet.external_data(Access::Writable),
    ) else {
        return;
    };
    let (Ok(x), Ok(y)) = (a.as_mut_slice(), b.as_mut_slice()) else {
        return;
    };
    core::mem::swap(&mut x[0], &mut y[0]);
}

fn next_viewed_twice(view: &mut ExternalData<'_>) {
    let (Some(Ok(mut a)), Some(Ok(mut b))) = (view.next(), view.next()) else {
        return;
    };
    let (Ok(x), Ok(y)) = (a.as_mut_slice(), b.as_mut_slice()) else {
        return;
    };
    core::mem::swap(&mut x[0], &mut y[0]);
}

fn gpadl_viewed_twice(mapping: &mut GpadlMapping<'_>) {
    let (Ok(mut a), Ok(mut b)) = (mapping.view(), mapping.view()) else {
        return;
    };
    let (Ok(x), Ok(y)) = (a.as_mut_slice(), b.as_mut_slice()) else {
        return;
    };
    core::mem::swap(&mut x[0], &mut y[0]);
}

fn main() {
    let _ = (packet_viewed_twice, next_viewed_twice, gpadl_viewed_twice);
}
