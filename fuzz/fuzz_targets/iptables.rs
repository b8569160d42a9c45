//! `netconnect::helper::fuzzing::iptables`: the property lives there, shared with the
//! stable driver CI runs (src/fuzzing.rs; this target's property is in src/helper/fuzzing.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| netconnect::helper::fuzzing::iptables(data));
