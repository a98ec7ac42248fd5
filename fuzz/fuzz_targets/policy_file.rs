//! cargo fuzz run policy_file — a segmentation policy file as an operator (or an API
//! client) submits it: parse and validate; when it loads, its canonical text must load
//! again to the same text, and compiling and evaluating it must not panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wardline_intel::policy::{parse_policy, CompiledPolicy, Expr, Flow, FlowEnd};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = Expr::parse(text);
    let Ok(policy) = parse_policy("fuzz", text) else { return };
    let canonical = policy.to_canonical();
    let again = parse_policy("canonical", &canonical).expect("canonical text of a valid policy parses");
    assert_eq!(again.to_canonical(), canonical);
    let compiled = CompiledPolicy::compile(&policy, &[]);
    for (proto, port) in [(6u8, 443u16), (17, 53), (1, 0)] {
        let _ = compiled.evaluate(&Flow {
            src: FlowEnd { device: None, ip: Some([10, 0, 0, 1].into()) },
            dst: FlowEnd { device: None, ip: Some([203, 0, 113, 5].into()) },
            ip_proto: proto,
            dst_port: port,
            app: Some("hl7"),
            dst_domain: Some("updates.vendor.example"),
        });
    }
});
