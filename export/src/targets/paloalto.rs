use super::Exporter;
use crate::error::ExportError;
use crate::model::ResolvedPolicy;

pub struct PaloAlto;

impl Exporter for PaloAlto {
    fn name(&self) -> &'static str {
        "paloalto"
    }
    fn file_name(&self) -> &'static str {
        "paloalto"
    }
    fn render(&self, _policy: &ResolvedPolicy) -> Result<Vec<u8>, ExportError> {
        Err(ExportError::unsupported("paloalto", "anything yet".into()))
    }
}
