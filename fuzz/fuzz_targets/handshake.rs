//! `cargo fuzz run handshake`: see `lumen::fuzzing::handshake`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = lumen::fuzzing::handshake(data);
});
