//! libFuzzer target: arbitrary bytes as a JSON-RPC request body, checked by
//! `xapi_rs::fuzzing::check_json`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    xapi_rs::fuzzing::check_json(data);
});
