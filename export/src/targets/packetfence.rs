use super::Exporter;
use crate::error::ExportError;
use crate::model::ResolvedPolicy;

pub struct PacketFence;

impl Exporter for PacketFence {
    fn name(&self) -> &'static str {
        "packetfence"
    }
    fn file_name(&self) -> &'static str {
        "packetfence"
    }
    fn render(&self, _policy: &ResolvedPolicy) -> Result<Vec<u8>, ExportError> {
        Err(ExportError::unsupported("packetfence", "anything yet".into()))
    }
}
