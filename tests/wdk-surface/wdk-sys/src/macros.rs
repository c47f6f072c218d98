//! `call_unsafe_wdf_function_binding!`, with the contract of wdk-sys 0.5.2's (generated
//! in its build script, implemented by wdk-macros 0.5.2): `(WdfXxx, args...)` calls the
//! table entry of `WdfXxx` with `WdfDriverGlobals` prepended. It expands to a call of the
//! typed `unsafe fn` of `crate::wdf::__functions`, so the name, the number and the types
//! of the arguments are checked by the compiler, and the call needs an `unsafe` block.

/// Calls a WDF function by name through the WDF function table (see the module docs).
#[macro_export]
macro_rules! call_unsafe_wdf_function_binding {
    ($function:ident $(, $argument:expr)* $(,)?) => {
        $crate::wdf::__functions::$function($($argument),*)
    };
}
