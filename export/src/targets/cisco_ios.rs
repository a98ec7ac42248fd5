use super::Exporter;
use crate::error::ExportError;
use crate::model::ResolvedPolicy;

pub struct CiscoIos;

impl Exporter for CiscoIos {
    fn name(&self) -> &'static str {
        "cisco_ios"
    }
    fn file_name(&self) -> &'static str {
        "cisco_ios"
    }
    fn render(&self, _policy: &ResolvedPolicy) -> Result<Vec<u8>, ExportError> {
        Err(ExportError::unsupported("cisco_ios", "anything yet".into()))
    }
}
