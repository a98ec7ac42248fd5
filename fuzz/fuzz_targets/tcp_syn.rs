//! cargo fuzz run tcp_syn — p0f-style SYN signature from a TCP header; byte 0 is the TTL, byte 1 picks IPv4/IPv6.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let _ = wardline_sensor::dissect::tcp_syn::syn_signature(data[0], if data[1] & 1 == 0 { 4 } else { 6 }, &data[2..]);
});
