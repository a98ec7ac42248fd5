use super::Exporter;
use crate::error::ExportError;
use crate::model::ResolvedPolicy;

pub struct Iptables;

impl Exporter for Iptables {
    fn name(&self) -> &'static str {
        "iptables"
    }
    fn file_name(&self) -> &'static str {
        "iptables"
    }
    fn render(&self, _policy: &ResolvedPolicy) -> Result<Vec<u8>, ExportError> {
        Err(ExportError::unsupported("iptables", "anything yet".into()))
    }
}
