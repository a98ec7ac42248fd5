//! Enforcement exports: a [`ResolvedPolicy`] rendered into the configuration language of a
//! packet filter, firewall or NAC system. One [`Exporter`] per target, one file per target
//! under `targets/`; see docs/exports.md and docs/decisions/0021-one-exporter-trait.md.
//!
//! Every output is a pure function of the policy: the same policy gives the same bytes
//! (input order does not matter; [`ResolvedPolicy::canonical`] sorts first), and each output
//! names the policy and its version.

pub mod error;
pub mod model;
pub mod names;
pub mod targets;

pub use error::ExportError;
pub use model::{
    Action, Destination, Flow, FlowProtocol, Group, IpCidr, Member, PortRange, Protocol, ResolvedPolicy, Rule, Segment,
    Verdict,
};
pub use targets::{all_exporters, ExportFile, Exporter};
