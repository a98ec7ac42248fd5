//! Dissector tests: one module per protocol, each on real captures with property tests.
//!
//! One test binary per area keeps link time and disk use down; each module below
//! was its own binary before.

#[path = "../corpus/mod.rs"]
mod corpus;
#[path = "../dataplane_support/mod.rs"]
mod dataplane_support;
#[path = "../dissect_common/mod.rs"]
mod dissect_common;
#[path = "../dissect_medical_support/mod.rs"]
mod dissect_medical_support;

mod cdp;
mod dhcp;
mod dicom;
mod dns;
mod ftp;
mod hl7;
mod http;
mod lldp;
mod netbios;
mod rdp;
mod registry;
mod smb;
mod snmp;
mod ssdp;
mod ssh;
mod telnet;
mod tls;
mod vendor;
mod vnc;
