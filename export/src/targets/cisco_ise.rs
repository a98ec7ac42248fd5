use super::Exporter;
use crate::error::ExportError;
use crate::model::ResolvedPolicy;

pub struct CiscoIse;

impl Exporter for CiscoIse {
    fn name(&self) -> &'static str {
        "cisco_ise"
    }
    fn file_name(&self) -> &'static str {
        "cisco_ise"
    }
    fn render(&self, _policy: &ResolvedPolicy) -> Result<Vec<u8>, ExportError> {
        Err(ExportError::unsupported("cisco_ise", "anything yet".into()))
    }
}
