//! `cargo fuzz run frames`: see `lumen::fuzzing::frames`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = lumen::fuzzing::frames(data);
});
