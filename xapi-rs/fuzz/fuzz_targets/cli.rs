//! libFuzzer target: arbitrary bytes as a /cli request (head and body), checked by
//! `xapi_rs::fuzzing::check_cli`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    xapi_rs::fuzzing::check_cli(data);
});
