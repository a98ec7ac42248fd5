//! Flow sink in a sled database on the node, for nodes without ClickHouse (demos, small or
//! air-gapped sites).
//!
//! Key = 16-byte batch ULID followed by the row index (u32 big-endian), so writing a batch
//! again overwrites the same keys instead of adding rows. Values are bincode-encoded
//! [`FlowRow`]s. Queries and totals scan the whole tree: fine for demo sizes (thousands to a
//! few million rows); sites with real volume use ClickHouse.

use super::{FlowQuery, FlowRow, FlowSink, FlowTotals, SinkError, SinkFuture};
use std::path::{Path, PathBuf};
use ulid::Ulid;
use wardline_common::FlowRecord;

const TREE: &str = "flows";

/// Flow sink stored in sled under a directory of its own.
#[derive(Clone)]
pub struct EmbeddedSink {
    db: sled::Db,
    flows: sled::Tree,
    dir: PathBuf,
}

fn row_key(batch_id: Ulid, idx: u32) -> [u8; 20] {
    let mut key = [0u8; 20];
    key[..16].copy_from_slice(&batch_id.to_bytes());
    key[16..].copy_from_slice(&idx.to_be_bytes());
    key
}

fn bincode_config() -> impl bincode::config::Config {
    bincode::config::standard()
}

impl EmbeddedSink {
    /// Open (or create) the store in `dir`. sled allows one process per directory; a second
    /// opener gets a clear error naming the directory.
    pub fn open(dir: &Path) -> Result<Self, SinkError> {
        let err = |operation: &str, e: &dyn std::fmt::Display| SinkError::Embedded {
            dir: dir.display().to_string(),
            operation: operation.to_string(),
            detail: e.to_string(),
        };
        std::fs::create_dir_all(dir).map_err(|e| err("creating the directory", &e))?;
        let db = sled::open(dir).map_err(|e| err("opening (is another aggregator using this directory?)", &e))?;
        let flows = db.open_tree(TREE).map_err(|e| err("opening the flows tree", &e))?;
        Ok(EmbeddedSink { db, flows, dir: dir.to_path_buf() })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn error(&self, operation: impl Into<String>, detail: impl std::fmt::Display) -> SinkError {
        SinkError::Embedded {
            dir: self.dir.display().to_string(),
            operation: operation.into(),
            detail: detail.to_string(),
        }
    }

    async fn write_rows(
        &self,
        batch_id: Ulid,
        sensor_id: &str,
        site: &str,
        flows: &[FlowRecord],
    ) -> Result<(), SinkError> {
        if flows.is_empty() {
            return Ok(());
        }
        let n = u32::try_from(flows.len())
            .map_err(|_| self.error(format!("writing batch {batch_id}"), "more than u32::MAX flows"))?;
        let mut batch = sled::Batch::default();
        for (idx, f) in (0..n).zip(flows) {
            let row = FlowRow::from_record(batch_id, idx, sensor_id, site, f);
            let value = bincode::serde::encode_to_vec(&row, bincode_config())
                .map_err(|e| self.error(format!("encoding flow {idx} of batch {batch_id}"), e))?;
            batch.insert(&row_key(batch_id, idx)[..], value);
        }
        // One sled batch: the rows of a batch appear all together or not at all.
        self.flows.apply_batch(batch).map_err(|e| self.error(format!("writing batch {batch_id}"), e))?;
        // Durable before returning: the caller acks the sensor next.
        // Blocking flush on the blocking pool: sled 0.34's flush_async can hang
        // (spacejam/sled#1308), the same reason the Raft store avoids it.
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || db.flush())
            .await
            .map_err(|e| self.error(format!("flushing batch {batch_id} to disk"), e))?
            .map_err(|e| self.error(format!("flushing batch {batch_id} to disk"), e))?;
        Ok(())
    }

    async fn store_rows(&self, rows: &[FlowRow]) -> Result<(), SinkError> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut batch = sled::Batch::default();
        for row in rows {
            let batch_id: Ulid = row
                .batch_id
                .parse()
                .map_err(|e| self.error(format!("writing a row of batch {:?}", row.batch_id), e))?;
            let value = bincode::serde::encode_to_vec(row, bincode_config())
                .map_err(|e| self.error(format!("encoding flow {} of batch {batch_id}", row.idx), e))?;
            batch.insert(&row_key(batch_id, row.idx)[..], value);
        }
        self.flows.apply_batch(batch).map_err(|e| self.error(format!("writing {} outbox rows", rows.len()), e))?;
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || db.flush())
            .await
            .map_err(|e| self.error("flushing outbox rows to disk", e))?
            .map_err(|e| self.error("flushing outbox rows to disk", e))?;
        Ok(())
    }

    /// Every stored row, decoded. A value that does not decode is an error naming its key.
    pub(crate) fn scan(&self) -> impl Iterator<Item = Result<FlowRow, SinkError>> + '_ {
        self.flows.iter().map(move |item| {
            let (key, value) = item.map_err(|e| self.error("reading flows", e))?;
            bincode::serde::decode_from_slice::<FlowRow, _>(&value, bincode_config()).map(|(row, _)| row).map_err(|e| {
                let operation = format!(
                    "decoding stored flow {} (a store from an incompatible Wardline version? \
                         move the directory aside to start an empty one)",
                    hex::encode(&key)
                );
                self.error(operation, e)
            })
        })
    }

    fn fetch_flows(&self, q: &FlowQuery) -> Result<Vec<FlowRow>, SinkError> {
        let q = q.normalize()?;
        let mut rows = Vec::new();
        for row in self.scan() {
            let row = row?;
            if q.matches(&row) {
                rows.push(row);
            }
        }
        // Same order as the ClickHouse sink: newest first, ties by row key.
        rows.sort_by(|a, b| (b.first_seen_us, &b.batch_id, b.idx).cmp(&(a.first_seen_us, &a.batch_id, a.idx)));
        rows.truncate(q.limit as usize);
        Ok(rows)
    }

    fn fetch_totals(&self) -> Result<FlowTotals, SinkError> {
        let mut t = FlowTotals::default();
        for row in self.scan() {
            let row = row?;
            t.rows += 1;
            t.packets = t.packets.wrapping_add(row.packets());
            t.bytes = t.bytes.wrapping_add(row.bytes());
        }
        Ok(t)
    }
}

impl FlowSink for EmbeddedSink {
    fn write_batch<'a>(
        &'a self,
        batch_id: Ulid,
        sensor_id: &'a str,
        site: &'a str,
        flows: &'a [FlowRecord],
    ) -> SinkFuture<'a, ()> {
        Box::pin(self.write_rows(batch_id, sensor_id, site, flows))
    }

    fn write_rows<'a>(&'a self, rows: &'a [FlowRow]) -> SinkFuture<'a, ()> {
        Box::pin(self.store_rows(rows))
    }

    fn query_flows<'a>(&'a self, q: &'a FlowQuery) -> SinkFuture<'a, Vec<FlowRow>> {
        // Scans are synchronous sled reads; small enough for demo sizes to run inline.
        Box::pin(async move { self.fetch_flows(q) })
    }

    fn totals(&self) -> SinkFuture<'_, FlowTotals> {
        Box::pin(async move { self.fetch_totals() })
    }

    fn describe(&self) -> String {
        format!("embedded flow store at {}", self.dir.display())
    }
}
