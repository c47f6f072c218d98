//! Type-level promises of the safe layer, as trybuild compile-fail cases.
//!
//! C header: `vmbuskernelmodeclientlibapi.h` (`VmbChannelPacketComplete` exactly once;
//! `VmbChannelSendSynchronousRequest` at PASSIVE_LEVEL); reference `docs/irql.md`.

#[test]
fn type_level_promises_do_not_compile_when_broken() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/compile_fail/*.rs");
}
