//! Roll-ups: a set of scored devices summarised per site, class, category or any key.

use super::RiskScore;
use crate::classify::Classification;
use crate::model::{Category, Criticality};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Display;
use wardline_common::MacAddr;

/// One scored device with the attributes roll-ups group by.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeviceRisk {
    pub mac: MacAddr,
    pub site: String,
    pub class: String,
    pub category: Category,
    pub criticality: Criticality,
    pub score: f64,
}

impl DeviceRisk {
    pub fn new(site: impl Into<String>, c: &Classification, score: &RiskScore) -> DeviceRisk {
        DeviceRisk {
            mac: c.mac,
            site: site.into(),
            class: c.class.value.clone(),
            category: c.category.value,
            criticality: c.criticality.value,
            score: score.score,
        }
    }
}

/// How many devices score at or above one threshold.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ThresholdCount {
    pub threshold: f64,
    pub devices: usize,
}

/// The devices sharing one key, summarised.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RiskRollUp {
    pub key: String,
    pub devices: usize,
    pub max: f64,
    /// The highest-scoring device (ties: smallest MAC).
    pub max_device: MacAddr,
    /// Mean score, one decimal.
    pub mean: f64,
    /// One entry per threshold, in the order given.
    pub above: Vec<ThresholdCount>,
}

/// Group `devices` by `key` and summarise each group; groups come in key order.
pub fn roll_up<K: Ord + Display>(
    devices: &[DeviceRisk],
    thresholds: &[f64],
    key: impl Fn(&DeviceRisk) -> K,
) -> Vec<RiskRollUp> {
    let mut groups: BTreeMap<K, Vec<&DeviceRisk>> = BTreeMap::new();
    for d in devices {
        groups.entry(key(d)).or_default().push(d);
    }
    groups
        .into_iter()
        .map(|(k, members)| {
            let mut top = members[0];
            for d in &members[1..] {
                if d.score > top.score || (d.score == top.score && d.mac < top.mac) {
                    top = d;
                }
            }
            let sum: f64 = members.iter().map(|d| d.score).sum();
            RiskRollUp {
                key: k.to_string(),
                devices: members.len(),
                max: top.score,
                max_device: top.mac,
                mean: (sum / members.len() as f64 * 10.0).round() / 10.0,
                above: thresholds
                    .iter()
                    .map(|&t| ThresholdCount { threshold: t, devices: members.iter().filter(|d| d.score >= t).count() })
                    .collect(),
            }
        })
        .collect()
}

pub fn by_site(devices: &[DeviceRisk], thresholds: &[f64]) -> Vec<RiskRollUp> {
    roll_up(devices, thresholds, |d| d.site.clone())
}

pub fn by_class(devices: &[DeviceRisk], thresholds: &[f64]) -> Vec<RiskRollUp> {
    roll_up(devices, thresholds, |d| d.class.clone())
}

pub fn by_category(devices: &[DeviceRisk], thresholds: &[f64]) -> Vec<RiskRollUp> {
    roll_up(devices, thresholds, |d| d.category)
}
