//! Device risk at read time (decision 0027): like classification (decision 0011), a pure
//! function of what the cluster replicated — the merged device, the imported feeds — plus
//! the device's flows from the flow sink, so every node at the same applied index answers
//! the same. The score is for the day of the device's last packet (`as_of`), not the
//! wall clock: two nodes asked a second apart across midnight still agree.

use super::classify::classify_record;
use super::devices::{DeviceSnapshot, NO_MAC};
use super::flows::place_device;
use super::{QueryError, QueryService};
use crate::risk::{day_of_us, CompiledFeeds};
use crate::state::{DeviceId, DeviceRecord};
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use wardline_common::{Evidence, MacAddr};
use wardline_intel::risk::{summarize_flows, FactorScore, Impact, IsoDate, RiskInput, RiskScore};
use wardline_intel::vuln::VulnMatch;
use wardline_intel::{assess, Classification, DeviceQuery, KnowledgeBase};

/// Newest flow rows of a device read for its risk (summarised per peer and service).
pub const DEVICE_RISK_FLOW_ROWS: u32 = 1_000;
/// Peers of one device given a base score for `risky_peer` (the first by address); further
/// peers count without one.
pub const RISK_SCORED_PEERS: usize = 64;
/// Factor reasons listed per device in roll-ups and reports.
pub const REASONS_PER_DEVICE: usize = 3;

/// Which flows went into a device's risk.
#[derive(Clone, Debug, Serialize)]
pub struct FlowInput {
    /// Flows were read (false when the flow store could not answer; `error` says why).
    pub included: bool,
    /// Flow rows read (the newest, at most `limit`).
    pub rows: usize,
    pub limit: u32,
    /// Distinct (peer, transport, port, direction, app) summaries scored.
    pub summaries: usize,
    pub error: Option<String>,
}

/// `GET /api/v1/devices/{id}/risk`.
#[derive(Clone, Debug, Serialize)]
pub struct DeviceRiskView {
    pub id: String,
    pub mac: Option<String>,
    pub class: String,
    pub category: String,
    pub criticality: String,
    pub vendor: Option<String>,
    pub model: Option<String>,
    pub os: Option<String>,
    pub os_end_of_support: Option<String>,
    pub sites: Vec<String>,
    /// Capture time of the device's last packet; `as_of` is its UTC day.
    pub last_seen_us: u64,
    pub as_of: IsoDate,
    /// 0–100.
    pub score: f64,
    pub exposure: f64,
    pub impact: Impact,
    pub factors: Vec<FactorScore>,
    /// Matched advisories (one per advisory and CVE) with CVSS, KEV flag, remediation and
    /// confidence (`confirmed`, `version_unclear`, `version_unknown`).
    pub vulnerabilities: Vec<VulnMatch>,
    pub flows: FlowInput,
    /// The replicated feed version matched against.
    pub feeds_version: u64,
    /// The score explained in words.
    pub explain: String,
}

/// One device's risk in roll-ups and reports (evidence and vulnerabilities, no flows).
#[derive(Clone, Debug, Serialize)]
pub struct DeviceRiskRow {
    pub id: String,
    pub mac: Option<String>,
    /// The device's first site (sites sort by name).
    pub site: String,
    pub class: String,
    pub category: String,
    pub criticality: String,
    pub vendor: Option<String>,
    pub model: Option<String>,
    pub os: Option<String>,
    pub os_end_of_support: Option<String>,
    pub os_unsupported: bool,
    pub ips: Vec<IpAddr>,
    /// The active policy's groups the device is a member of (the replicated membership),
    /// sorted; empty without a policy or for a device known only by address.
    pub groups: Vec<String>,
    pub last_seen_us: u64,
    pub score: f64,
    /// The largest factors as "factor (+points): strongest evidence".
    pub reasons: Vec<String>,
    pub vulnerabilities: Vec<VulnMatch>,
    /// Every fired factor with its points (what the risk history explains changes by).
    #[serde(skip)]
    pub factor_points: Vec<crate::state::risk_history::FactorPoints>,
    /// The day scored for (the day of the last packet).
    #[serde(skip)]
    pub as_of: IsoDate,
}

/// The vulnerability matcher's question about a classified device: the KB vendor and model
/// family, and the OS name. Firmware is not among the evidence fields yet, so matches of
/// version-specific advisories come back `version_unknown`.
pub fn device_query(c: &Classification) -> DeviceQuery<'_> {
    DeviceQuery {
        vendor: c.vendor.as_ref().map(|a| a.value.as_str()),
        model: c.model.as_ref().map(|a| a.value.as_str()),
        firmware: None,
        os: c.os_info.as_ref().map(|o| o.name.as_str()),
    }
}

/// Every distinct (field, value) of the merged record, dated by its latest sighting.
fn evidence_of(record: &DeviceRecord) -> Vec<Evidence> {
    record
        .evidence
        .iter()
        .map(|((field, value), seen)| Evidence::new(*field, value.clone(), seen.proto, seen.last_ts_us))
        .collect()
}

fn reasons(score: &RiskScore) -> Vec<String> {
    score
        .factors
        .iter()
        .take(REASONS_PER_DEVICE)
        .map(|f| match f.evidence.first() {
            Some(e) => format!("{} (+{:.1}): {}", f.factor, f.points, e.detail),
            None => format!("{} (+{:.1})", f.factor, f.points),
        })
        .collect()
}

fn os_unsupported(c: &Classification, as_of: IsoDate) -> bool {
    c.os_info.as_ref().and_then(|o| o.end_of_support.as_deref()).is_some_and(|d| d <= as_of.to_string().as_str())
}

/// A device's base score: evidence and vulnerabilities, no flows (hence no peers), at the
/// day of its last packet; what `risky_peer` reads for a peer.
fn base_score(kb: &KnowledgeBase, feeds: &CompiledFeeds, record: &DeviceRecord, class: &Classification) -> f64 {
    let vulns = feeds.index.match_device(&device_query(class));
    let risk_vulns: Vec<wardline_intel::VulnMatch> = vulns.iter().map(Into::into).collect();
    let evidence = evidence_of(record);
    let input = RiskInput {
        classification: class,
        evidence: &evidence,
        flows: &[],
        vulnerabilities: &risk_vulns,
        as_of: day_of_us(record.last_seen_us),
    };
    assess(kb, &input).score
}

/// Score devices from evidence and vulnerabilities (the roll-up path; no flows); `groups`
/// gives each MAC its policy groups.
pub fn score_rows(
    kb: &KnowledgeBase,
    feeds: &CompiledFeeds,
    snapshots: &[DeviceSnapshot],
    groups: &BTreeMap<MacAddr, Vec<String>>,
) -> Vec<DeviceRiskRow> {
    let records: Vec<DeviceRecord> = snapshots.iter().map(DeviceSnapshot::merged).collect();
    let classes: Vec<Classification> = records.iter().map(|r| classify_record(kb, r)).collect();
    let queries: Vec<DeviceQuery> = classes.iter().map(device_query).collect();
    let matches = feeds.index.match_inventory(&queries);
    snapshots
        .iter()
        .zip(records.iter().zip(classes.iter()))
        .zip(matches)
        .map(|((snap, (record, class)), vulns)| {
            let as_of = day_of_us(record.last_seen_us);
            let evidence = evidence_of(record);
            let risk_vulns: Vec<wardline_intel::VulnMatch> = vulns.iter().map(Into::into).collect();
            let score = assess(
                kb,
                &RiskInput {
                    classification: class,
                    evidence: &evidence,
                    flows: &[],
                    vulnerabilities: &risk_vulns,
                    as_of,
                },
            );
            DeviceRiskRow {
                id: snap.id.to_string(),
                mac: snap.mac().map(|m| m.to_string()),
                site: record.sites.iter().next().cloned().unwrap_or_default(),
                class: class.class.value.clone(),
                category: class.category.value.as_str().to_string(),
                criticality: class.criticality.value.as_str().to_string(),
                vendor: class.vendor.as_ref().map(|a| a.value.clone()),
                model: class.model.as_ref().map(|a| a.value.clone()),
                os: class.os_info.as_ref().map(|o| o.name.clone()),
                os_end_of_support: class.os_info.as_ref().and_then(|o| o.end_of_support.clone()),
                os_unsupported: os_unsupported(class, as_of),
                ips: record.ips.keys().collect(),
                groups: snap.mac().and_then(|m| groups.get(&m)).cloned().unwrap_or_default(),
                last_seen_us: record.last_seen_us,
                score: score.score,
                reasons: reasons(&score),
                vulnerabilities: vulns,
                factor_points: score
                    .factors
                    .iter()
                    .map(|f| crate::state::risk_history::FactorPoints { factor: f.factor.clone(), points: f.points })
                    .collect(),
                as_of,
            }
        })
        .collect()
}

/// Each member's groups (sorted) from the replicated membership of the active policy.
pub fn groups_by_mac(membership: &[crate::state::policy::GroupMembers]) -> BTreeMap<MacAddr, Vec<String>> {
    let mut by_mac: BTreeMap<MacAddr, Vec<String>> = BTreeMap::new();
    for g in membership {
        for m in &g.members {
            by_mac.entry(*m).or_default().push(g.group.clone());
        }
    }
    for groups in by_mac.values_mut() {
        groups.sort();
        groups.dedup();
    }
    by_mac
}

impl QueryService {
    /// The replicated feeds compiled, from this node's cache when the feed version is the
    /// one compiled last.
    pub async fn compiled_feeds(&self) -> Arc<CompiledFeeds> {
        let version = self.raft.read_state(|s| s.vulnfeeds().version()).await;
        if let Some(c) = self.feeds.get(version) {
            return c;
        }
        // Copy the texts out under the lock, compile after releasing it.
        let (version, advisories, kev) = self
            .raft
            .read_state(|s| {
                let f = s.vulnfeeds();
                (f.version(), f.advisories().values().cloned().collect::<Vec<_>>(), f.kev().cloned())
            })
            .await;
        let compiled = tokio::task::spawn_blocking(move || CompiledFeeds::compile(version, &advisories, kev.as_ref()))
            .await
            .map(Arc::new)
            .unwrap_or_else(|_| Arc::new(CompiledFeeds::compile(version, &[], None)));
        self.feeds.put(compiled.clone());
        compiled
    }

    /// One device's risk: evidence, vulnerabilities and its newest flows.
    pub async fn device_risk(&self, id: &DeviceId) -> Result<DeviceRiskView, QueryError> {
        let snapshot = self.snapshot(id, false).await?;
        let device = snapshot.merged();
        let feeds = self.compiled_feeds().await;
        let class = classify_record(&self.kb, &device);
        let vulns = feeds.index.match_device(&device_query(&class));
        let as_of = day_of_us(device.last_seen_us);

        let mut flow_input =
            FlowInput { included: false, rows: 0, limit: DEVICE_RISK_FLOW_ROWS, summaries: 0, error: None };
        let mut summaries = Vec::new();
        match self.rows_of(&device, DEVICE_RISK_FLOW_ROWS).await {
            Ok(rows) => {
                let records: Vec<Option<wardline_common::FlowRecord>> =
                    rows.iter().map(|row| row.to_record().map(|rec| place_device(rec, &device))).collect();
                let peers = self.peers_of(&device, &records).await;
                let mut peer_classes: BTreeMap<IpAddr, Classification> = BTreeMap::new();
                let mut peer_records: BTreeMap<IpAddr, &DeviceRecord> = BTreeMap::new();
                for (rec, peer) in records.iter().zip(&peers) {
                    if let (Some(rec), Some(peer)) = (rec, peer) {
                        let ip = if rec.a_mac == device.mac { rec.b_ip } else { rec.a_ip };
                        peer_classes.entry(ip).or_insert_with(|| classify_record(&self.kb, peer));
                        peer_records.entry(ip).or_insert(peer);
                    }
                }
                // `risky_peer`, one hop: each known peer's base score (evidence and
                // vulnerabilities, no flows, as in the roll-up), never its final score, so
                // two devices talking to each other cannot feed each other (decision 0033).
                let peer_scores: BTreeMap<IpAddr, f64> = peer_records
                    .iter()
                    .take(RISK_SCORED_PEERS)
                    .filter_map(|(ip, peer)| {
                        let class = peer_classes.get(ip)?;
                        Some((*ip, base_score(&self.kb, &feeds, peer, class)))
                    })
                    .collect();
                let records: Vec<_> = records.into_iter().flatten().collect();
                let is_device = |mac: &wardline_common::MacAddr, ip: &IpAddr| {
                    (*mac == device.mac && device.mac != NO_MAC) || device.ips.contains_key(ip)
                };
                summaries = summarize_flows(&self.kb, &class, &records, is_device, |_, ip| {
                    (peer_classes.get(ip), peer_scores.get(ip).copied())
                });
                flow_input.included = true;
                flow_input.rows = rows.len();
                flow_input.summaries = summaries.len();
            }
            Err(e) => flow_input.error = Some(e.to_string()),
        }

        let evidence = evidence_of(&device);
        let risk_vulns: Vec<wardline_intel::VulnMatch> = vulns.iter().map(Into::into).collect();
        let input = RiskInput {
            classification: &class,
            evidence: &evidence,
            flows: &summaries,
            vulnerabilities: &risk_vulns,
            as_of,
        };
        let score = assess(&self.kb, &input);
        Ok(DeviceRiskView {
            id: id.to_string(),
            mac: snapshot.mac().map(|m| m.to_string()),
            class: class.class.value.clone(),
            category: class.category.value.as_str().to_string(),
            criticality: class.criticality.value.as_str().to_string(),
            vendor: class.vendor.as_ref().map(|a| a.value.clone()),
            model: class.model.as_ref().map(|a| a.value.clone()),
            os: class.os_info.as_ref().map(|o| o.name.clone()),
            os_end_of_support: class.os_info.as_ref().and_then(|o| o.end_of_support.clone()),
            sites: device.sites.iter().cloned().collect(),
            last_seen_us: device.last_seen_us,
            as_of,
            // An IP-keyed device is scored under the group address NO_MAC: name it by its id.
            explain: match snapshot.mac() {
                Some(_) => score.explain(),
                None => score.explain().replacen(&NO_MAC.to_string(), &id.to_string(), 1),
            },
            score: score.score,
            exposure: score.exposure,
            impact: score.impact,
            factors: score.factors,
            vulnerabilities: vulns,
            flows: flow_input,
            feeds_version: feeds.version,
        })
    }

    /// Every device scored from evidence and vulnerabilities (no flows: one flow query per
    /// device would make a roll-up of a large inventory slow), highest score first, ties by
    /// id, so every node lists the same order.
    pub async fn risk_rows(&self) -> Vec<DeviceRiskRow> {
        let (snapshots, groups): (Vec<DeviceSnapshot>, BTreeMap<MacAddr, Vec<String>>) = self
            .raft
            .read_state(|s| {
                let macs = s.devices().keys().map(|m| DeviceId::Mac(*m));
                let hosts = s.hosts().values().filter(|h| h.has_unowned()).map(|h| DeviceId::Host(h.key.clone()));
                let snapshots = macs.chain(hosts).filter_map(|id| DeviceSnapshot::take(s, &id, false)).collect();
                (snapshots, groups_by_mac(s.policy().membership()))
            })
            .await;
        let feeds = self.compiled_feeds().await;
        let kb = self.kb.clone();
        let mut rows =
            tokio::task::spawn_blocking(move || score_rows(&kb, &feeds, &snapshots, &groups)).await.unwrap_or_default();
        rows.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.id.cmp(&b.id)));
        rows
    }
}
