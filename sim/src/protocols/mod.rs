//! Payload builders, one module per protocol. Each returns the exact bytes a real
//! implementation puts on the wire for the fields the sensor's dissectors read.

pub mod bacnet;
pub mod dhcp;
pub mod dicom;
pub mod dns;
pub mod hl7;
pub mod http;
pub mod lldp;
pub mod netbios;
pub mod smb;
pub mod snmp;
pub mod tls;
pub mod vendor;
