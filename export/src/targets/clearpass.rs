use super::Exporter;
use crate::error::ExportError;
use crate::model::ResolvedPolicy;

pub struct ClearPass;

impl Exporter for ClearPass {
    fn name(&self) -> &'static str {
        "clearpass"
    }
    fn file_name(&self) -> &'static str {
        "clearpass"
    }
    fn render(&self, _policy: &ResolvedPolicy) -> Result<Vec<u8>, ExportError> {
        Err(ExportError::unsupported("clearpass", "anything yet".into()))
    }
}
