//! `cargo fuzz run message`: see `lumen::fuzzing::message`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = lumen::fuzzing::message(data);
});
