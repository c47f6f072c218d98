//! Measures `Endpoint::handle` per message (heartbeat, time sync, negotiate) and prints type sizes.
//!
//! Reference: `docs/ic.md` ("How the driver uses it"). Run with
//! `cargo run --release -p hv-ic --example ic_timing`.

use std::hint::black_box;
use std::time::Instant;

use hv_ic::endpoint::{Endpoint, Outcome, Service};
use hv_ic::host::{self, HeartbeatLayout};
use hv_ic::negotiate::{FRAMEWORK_VERSIONS, SHUTDOWN_VERSIONS, TIMESYNC_VERSIONS};
use hv_ic::parse::Framing;
use hv_ic::response::{MAX_RESPONSE_LEN, ResponseTicket};
use hv_ic::timesync::TimeSample;
use hv_ic::wire::TimeSyncFlags;

const N: u32 = 2_000_000;

fn time(label: &str, ep: &mut Endpoint, msg: &[u8]) {
    let mut out = vec![0u8; MAX_RESPONSE_LEN];
    let start = Instant::now();
    for _ in 0..N {
        let o = ep.handle(black_box(msg), &mut out);
        if let Outcome::Drop(r) = o {
            panic!("{label}: dropped {r:?}");
        }
        black_box(o);
    }
    let ns = start.elapsed().as_nanos() as f64 / f64::from(N);
    println!("{label:<32} {ns:>7.1} ns/message ({} bytes in)", msg.len());
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut req = vec![0u8; 4096];
    let mut out = vec![0u8; MAX_RESPONSE_LEN];

    let mut hb = Endpoint::new(Service::Heartbeat, Framing::Pipe);
    let n = host::write_negotiate_request(
        &mut req,
        Framing::Pipe,
        FRAMEWORK_VERSIONS,
        hv_ic::negotiate::HEARTBEAT_VERSIONS,
        0,
    )?;
    let Outcome::Respond(len) = hb.handle(&req[..n], &mut out) else {
        return Err("negotiate".into());
    };
    let v = host::parse_negotiate_response(
        &out[..len],
        Framing::Pipe,
        0,
        FRAMEWORK_VERSIONS,
        hv_ic::negotiate::HEARTBEAT_VERSIONS,
    )?;
    let n = host::write_heartbeat_request(
        &mut req,
        Framing::Pipe,
        v,
        0,
        1,
        HeartbeatLayout::Reserved40,
    )?;
    let heartbeat = req[..n].to_vec();
    time("heartbeat (40 B body)", &mut hb, &heartbeat);

    let mut ts = Endpoint::new(Service::TimeSync, Framing::Pipe);
    let n = host::write_negotiate_request(
        &mut req,
        Framing::Pipe,
        FRAMEWORK_VERSIONS,
        TIMESYNC_VERSIONS,
        0,
    )?;
    let Outcome::Respond(len) = ts.handle(&req[..n], &mut out) else {
        return Err("negotiate".into());
    };
    let v = host::parse_negotiate_response(
        &out[..len],
        Framing::Pipe,
        0,
        FRAMEWORK_VERSIONS,
        TIMESYNC_VERSIONS,
    )?;
    let s = TimeSample::V4 {
        parent_time: 1,
        vm_reference_time: 2,
        flags: TimeSyncFlags::SAMPLE,
        leap_indicator: 0,
        stratum: 0,
    };
    let n = host::write_timesync_request(&mut req, Framing::Pipe, v, 0, &s)?;
    let timesync = req[..n].to_vec();
    time("time sync 4.0 (forward)", &mut ts, &timesync);

    let mut sd = Endpoint::new(Service::Shutdown, Framing::Pipe);
    let n = host::write_negotiate_request(
        &mut req,
        Framing::Pipe,
        FRAMEWORK_VERSIONS,
        SHUTDOWN_VERSIONS,
        0,
    )?;
    let negotiate = req[..n].to_vec();
    time("negotiate shutdown (2+4 versions)", &mut sd, &negotiate);

    println!(
        "size_of::<ResponseTicket>() = {}",
        size_of::<ResponseTicket>()
    );
    println!("size_of::<TimeSample>()     = {}", size_of::<TimeSample>());
    println!("size_of::<Outcome>()        = {}", size_of::<Outcome>());
    println!("size_of::<Endpoint>()       = {}", size_of::<Endpoint>());
    Ok(())
}
