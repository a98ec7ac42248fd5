//! Segmentation policy: groups of devices, policy as code, the compiled evaluator, the
//! life-sustaining safety check and least-privilege recommendations.
//!
//! Everything here is a pure function of its inputs (policy text, device attributes,
//! knowledge base, observed flows): no clock, no randomness, no I/O, and iteration in
//! sorted order, so every aggregator node and every replay test computes the same groups,
//! verdicts and proposals. See docs/segmentation.md and decision 0020.
//!
//! - [`cidr`]: IP networks.
//! - [`device`]: [`PolicyDevice`], the attributes groups and rules look at.
//! - [`expr`]: the membership expression language (`class == "infusion_pump" and vulnerable`).
//! - [`groups`]: [`Group`], [`members`], [`Membership`], [`membership_diff`].
//! - [`model`] and [`parse`](mod@parse): the policy and its TOML format with line-precise errors.
//! - [`lint`]: group conditions naming ids the knowledge base lacks.
//! - [`canonical`]: canonical text and the diff between versions.
//! - [`compiled`]: [`CompiledPolicy::evaluate`] and hit counters.
//! - [`safety`]: rules that would cut a life-sustaining device off a required peer.
//! - [`recommend`](mod@recommend): a least-privilege proposal from expected communications and observed flows.

pub mod blast;
pub mod canonical;
pub mod cidr;
pub mod compiled;
pub mod device;
pub mod expr;
pub mod groups;
pub mod lint;
pub mod model;
pub mod parse;
pub mod recommend;
pub mod safety;

pub use canonical::{diff, Change, PolicyDiff};
pub use cidr::Cidr;
pub use compiled::{CompiledPolicy, DecidedBy, DeviceId, Flow, FlowEnd, HitCounts, Verdict};
pub use device::PolicyDevice;
pub use expr::{Expr, ExprError};
pub use groups::{members, membership_diff, Group, GroupChange, Membership};
pub use lint::kb_warnings;
pub use model::{Action, Endpoint, Policy, PortRange, Rule, Scope};
pub use parse::{parse_policy, PolicyError, PolicyErrors};
pub use recommend::{
    recommend, Coverage, Justification, LeftOut, ObservedEnd, ObservedFlow, ProposedRule, Recommendation,
};
pub use safety::{check as safety_check, SafetyFinding, SafetyReport};
