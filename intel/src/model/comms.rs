//! Expected communications: which conversations a device class or profile needs for its
//! clinical function, tolerates, or should not have. [`crate::flow_context`] labels flows
//! with them; the policy engine will turn them into segmentation rules.

use super::entries::Loc;
use super::{Category, Direction, FlowTag, Transport};
use std::fmt;

/// Who is on the other end of an expected communication.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerRole {
    Any,
    External,
    Internal,
    Class(String),
    Category(Category),
}

impl fmt::Display for PeerRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerRole::Any => f.write_str("any"),
            PeerRole::External => f.write_str("external"),
            PeerRole::Internal => f.write_str("internal"),
            PeerRole::Class(c) => f.write_str(c),
            PeerRole::Category(c) => write!(f, "category:{c}"),
        }
    }
}

/// One expected communication of a profile, a class, or every device (global).
#[derive(Clone, Debug)]
pub struct Comm {
    pub id: String,
    pub peers: Vec<PeerRole>,
    pub transport: Transport,
    /// Empty with no range means any port.
    pub ports: Vec<u16>,
    pub port_range: Option<(u16, u16)>,
    pub direction: Direction,
    pub tag: FlowTag,
    pub reason: String,
    pub source: Option<String>,
    pub origin: Loc,
}

impl Comm {
    pub fn matches_port(&self, port: u16) -> bool {
        match self.port_range {
            Some((lo, hi)) => (lo..=hi).contains(&port) || self.ports.contains(&port),
            None => self.ports.is_empty() || self.ports.contains(&port),
        }
    }
}
