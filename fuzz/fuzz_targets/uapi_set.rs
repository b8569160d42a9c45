//! Feeds arbitrary bytes to the UAPI `set` parser: it must never panic, and
//! whatever it accepts must survive a format/parse round trip of its keys.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(update) = netconnect::uapi::parse_set(text.lines(), 2) {
        for p in &update.peers {
            let line = format!("public_key={}", p.public_key.to_hex());
            let again = netconnect::uapi::parse_set([line.as_str()], 2).expect("own output parses");
            assert_eq!(again.peers[0].public_key, p.public_key);
        }
    }
});
