//! `netconnect::fuzzing::dns`: the property lives there, shared with the
//! stable driver CI runs (src/fuzzing.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| netconnect::fuzzing::dns(data));
