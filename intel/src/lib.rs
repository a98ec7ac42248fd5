//! What Wardline knows about medical devices and what it concludes from evidence.
//!
//! Knowledge lives in human-readable TOML files (`intel/kb/*.toml`, embedded at build time)
//! that a site extends or overrides with its own files at start-up, without rebuilding:
//! vendors (IEEE OUI blocks, medical manufacturers marked), device classes, operating
//! systems with end-of-support dates, device profiles with their matching rules and
//! expected communications, generic rules, and operator overrides keyed by MAC.
//! See docs/knowledge-base.md for the formats and a worked example.
//!
//! Modules, each depending only on those listed before it:
//! - [`oui`]: the IEEE MAC block registry (who a MAC address was assigned to).
//! - [`model`]: the domain types — [`KnowledgeBase`], vendors, classes, profiles, rules,
//!   expected communications, operating systems, overrides. No file format, no I/O.
//! - [`load`]: the TOML input structs and the loaders that turn the embedded defaults plus a
//!   site's `--kb-dir` overlay into the model (merge by id, `[[remove]]`, reference checks).
//! - [`classify`](mod@classify): the explainable classifier ([`classify()`], [`classify_stable`]) over
//!   [`DeviceFacts`]; it reads the model, never the loaders.
//! - [`flow_context`](mod@flow_context): labels a flow required, acceptable, risky or unknown
//!   for the device's clinical function.
//! - [`risk`](mod@risk): the per-device risk score (impact from the clinical function ×
//!   exposure factors), explained, with roll-ups and a bounded history; weights in
//!   `kb/risk.toml` (docs/risk.md).
//! - [`policy`]: segmentation — device groups, policy files, the compiled evaluator, the
//!   life-sustaining safety check and least-privilege recommendations (docs/segmentation.md).
//! - [`vuln`]: offline vulnerability feeds (CISA CSAF medical advisories, KEV catalog) and
//!   matching devices against them (docs/vulnerabilities.md).
//!
//! Exporters that render a compiled policy for firewalls and NAC systems get their own crate
//! (`export/`, decision 0012); the aggregator serves and pushes what they render.
//!
//! Both the sensor (locally) and the aggregator (after merging inventories) run the same
//! [`classify()`] over the same [`wardline_common::Evidence`] vocabulary, so they agree.

pub mod classify;
pub mod flow_context;
pub mod load;
pub mod model;
pub mod oui;
pub mod policy;
pub mod risk;
pub mod vuln;

pub use classify::{classify, classify_stable, Attribute, Because, Classification, DeviceFacts, PortRef};
pub use flow_context::{flow_context, FlowContext, FlowSpec};
pub use load::KbError;
pub use model::{Category, Criticality, Direction, FlowTag, KnowledgeBase, OsEntry, OsInfo, Transport};
pub use risk::{assess, FlowSummary, RiskInput, RiskScore, VulnConfidence, VulnMatch};
pub use vuln::{Confidence, DeviceQuery, VulnIndex};
