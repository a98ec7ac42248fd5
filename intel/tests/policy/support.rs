//! Devices and policies for the policy tests.

use std::net::IpAddr;
use wardline_common::MacAddr;
use wardline_intel::policy::{parse_policy, Policy, PolicyDevice};
use wardline_intel::{Category, Criticality, KnowledgeBase};

pub fn kb() -> &'static KnowledgeBase {
    KnowledgeBase::shared_builtin().expect("builtin KB")
}

pub fn mac(n: u32) -> MacAddr {
    let b = n.to_be_bytes();
    MacAddr([0x00, 0x1b, b[0], b[1], b[2], b[3]])
}

/// A device of a knowledge-base class, category and criticality from the KB.
pub fn device(n: u32, class: &str, ip: &str) -> PolicyDevice {
    let c = kb().class(class).unwrap_or_else(|| panic!("class {class} in the KB"));
    let mut d = PolicyDevice::new(mac(n), class, c.category, c.criticality);
    if !ip.is_empty() {
        d.ips.push(ip.parse::<IpAddr>().expect("ip"));
    }
    d
}

/// A device with made-up class and no KB lookup (evaluator tests).
pub fn plain(n: u32, class: &str) -> PolicyDevice {
    PolicyDevice::new(mac(n), class, Category::It, Criticality::NonClinical)
}

pub fn policy(text: &str) -> Policy {
    parse_policy("test.toml", text).unwrap_or_else(|e| panic!("{e}"))
}
