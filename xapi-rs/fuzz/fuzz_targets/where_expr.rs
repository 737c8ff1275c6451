//! libFuzzer target: arbitrary bytes as a get_all_records_where expression, checked by
//! `xapi_rs::fuzzing::check_expr`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    xapi_rs::fuzzing::check_expr(data);
});
