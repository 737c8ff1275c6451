//! libFuzzer target: arbitrary bytes as a template's provision document,
//! checked by `xapi_rs::fuzzing::check_provision`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    xapi_rs::fuzzing::check_provision(data);
});
