//! Classification of a merged device record: a pure function of the record and the
//! knowledge base, so every node that applied the same log index gives the same answer
//! (decision 0011). No per-node memory of earlier answers takes part.

use crate::state::DeviceRecord;
use wardline_common::Evidence;
use wardline_intel::{classify, Classification, DeviceFacts, KnowledgeBase};

/// What the knowledge base makes of everything the cluster merged about one device.
pub fn classify_record(kb: &KnowledgeBase, record: &DeviceRecord) -> Classification {
    classify(kb, &facts_of(record))
}

/// The classifier's input for a merged record: each distinct (field, value) once, dated by
/// its latest sighting.
pub fn facts_of(record: &DeviceRecord) -> DeviceFacts {
    let evidence = record
        .evidence
        .iter()
        .map(|((field, value), seen)| Evidence::new(*field, value.clone(), seen.proto, seen.last_ts_us))
        .collect();
    DeviceFacts::from_evidence(record.mac, evidence)
}
