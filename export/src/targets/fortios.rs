use super::Exporter;
use crate::error::ExportError;
use crate::model::ResolvedPolicy;

pub struct FortiOs;

impl Exporter for FortiOs {
    fn name(&self) -> &'static str {
        "fortios"
    }
    fn file_name(&self) -> &'static str {
        "fortios"
    }
    fn render(&self, _policy: &ResolvedPolicy) -> Result<Vec<u8>, ExportError> {
        Err(ExportError::unsupported("fortios", "anything yet".into()))
    }
}
