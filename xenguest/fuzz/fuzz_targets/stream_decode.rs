//! libFuzzer target: decode arbitrary bytes as a migration stream (libxc,
//! libxl or xl save file; options chosen by the last byte) and check the
//! properties in `xenguest::stream::fuzzing::check_input`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    xenguest::stream::fuzzing::check_input(data);
});
