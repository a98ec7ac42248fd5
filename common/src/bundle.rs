//! Sneakernet bundles: a sensor's spooled batches in one file, for sites with no link at all
//! (`wardline-sensor spool export`, `wardline-aggregator admin import-bundle`).
//!
//! Layout (all integers big-endian):
//!
//! ```text
//! "WLBUNDLE" | u32 manifest length | manifest (JSON) | u16 signature length | signature
//! then per batch:  u32 frame length | batch frame (wire::encode_frame) | u16 signature length | signature
//! then the end:    u32 0xFFFF_FFFF | u64 record count
//! ```
//!
//! The manifest names the sensor, carries its certificate chain (PEM) and how many batches
//! follow. Every record is signed on its own with the sensor's key, over
//! [`record_message`] (which binds it to the manifest and to its position), so an importer
//! verifies and applies a bundle record by record with bounded memory, and a truncated
//! bundle's intact records still verify. This module only frames bytes; signing and
//! verification are the binaries' (ECDSA P-256 with SHA-256, `ring`). The parser never
//! panics on arbitrary input (fuzz target `bundle`, property tests below).

use crate::wire::{self, Batch, MAX_FRAME_BYTES};
use serde::{Deserialize, Serialize};

pub const MAGIC: &[u8; 8] = b"WLBUNDLE";
/// Version of the manifest's fields and of the layout.
pub const BUNDLE_FORMAT: u32 = 1;
/// Largest manifest accepted (it holds a certificate chain, not data).
pub const MAX_MANIFEST_BYTES: usize = 64 * 1024;
/// Largest signature accepted (an ASN.1 ECDSA P-256 signature is at most 72 bytes).
pub const MAX_SIGNATURE_BYTES: usize = 512;
const END_MARK: u32 = u32::MAX;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub sensor_id: String,
    pub site: String,
    /// The exporting spool's epoch (ULID).
    pub epoch: String,
    pub created_at_ms: u64,
    /// Records that follow.
    pub batches: u64,
    pub first_seq: u64,
    pub last_seq: u64,
    /// The sensor certificate (and any intermediates), PEM: the importer checks it chains
    /// to the fleet CA and verifies every signature with its key.
    pub certificate_pem: String,
}

/// What a bundle is made of, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum Item {
    /// The manifest, its raw bytes (what the signature covers) and its signature.
    Manifest { manifest: Manifest, raw: Vec<u8>, signature: Vec<u8> },
    /// One batch: its index (0-based), the frame bytes, and the frame's signature.
    Record { index: u64, frame: Vec<u8>, signature: Vec<u8> },
    /// The end mark with the record count the writer wrote.
    End { records: u64 },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BundleError {
    #[error("not a Wardline bundle (it does not start with WLBUNDLE)")]
    NotABundle,
    #[error("bundle format {0} is not one this version reads ({BUNDLE_FORMAT})")]
    Format(u32),
    #[error("the manifest at byte 12 is {0} bytes, over the {MAX_MANIFEST_BYTES}-byte limit")]
    ManifestTooLarge(usize),
    #[error("the manifest is not valid: {0}")]
    Manifest(String),
    #[error("record {index} at byte {offset}: {detail}")]
    Record { index: u64, offset: u64, detail: String },
    #[error("the bundle ends with {found} records but its end mark says {said}")]
    CountMismatch { found: u64, said: u64 },
    #[error("the manifest says {said} records but the bundle holds {found}")]
    ManifestCount { found: u64, said: u64 },
    #[error("bytes after the end mark at byte {0}")]
    Trailing(u64),
    #[error(
        "the bundle is truncated at byte {offset} (after {records} complete records): it was cut short in copying"
    )]
    Truncated { offset: u64, records: u64 },
}

/// The bytes a manifest signature covers.
pub fn manifest_message(raw_manifest: &[u8]) -> Vec<u8> {
    let mut m = b"wardline-bundle-manifest-v1\0".to_vec();
    m.extend_from_slice(raw_manifest);
    m
}

/// The bytes a record signature covers: the record's frame bound to its bundle (the
/// manifest's signature) and its position, so records cannot be moved between bundles or
/// reordered without failing verification.
pub fn record_message(manifest_signature: &[u8], index: u64, frame: &[u8]) -> Vec<u8> {
    let mut m = b"wardline-bundle-record-v1\0".to_vec();
    m.extend_from_slice(&(manifest_signature.len() as u16).to_be_bytes());
    m.extend_from_slice(manifest_signature);
    m.extend_from_slice(&index.to_be_bytes());
    m.extend_from_slice(frame);
    m
}

fn push_signed(out: &mut Vec<u8>, body: &[u8], len32: bool, signature: &[u8]) {
    if len32 {
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    }
    out.extend_from_slice(body);
    out.extend_from_slice(&(signature.len() as u16).to_be_bytes());
    out.extend_from_slice(signature);
}

/// Writes a bundle; `sign` signs a message with the sensor's key.
pub struct BundleWriter<W: std::io::Write, S: FnMut(&[u8]) -> Vec<u8>> {
    out: W,
    sign: S,
    manifest_signature: Vec<u8>,
    written: u64,
}

impl<W: std::io::Write, S: FnMut(&[u8]) -> Vec<u8>> BundleWriter<W, S> {
    pub fn start(mut out: W, manifest: &Manifest, mut sign: S) -> std::io::Result<Self> {
        let raw = serde_json::to_vec(manifest).map_err(std::io::Error::other)?;
        let signature = sign(&manifest_message(&raw));
        let mut head = MAGIC.to_vec();
        push_signed(&mut head, &raw, true, &signature);
        out.write_all(&head)?;
        Ok(BundleWriter { out, sign, manifest_signature: signature, written: 0 })
    }

    pub fn record(&mut self, batch: &Batch) -> std::io::Result<()> {
        let frame = wire::encode_frame(batch).map_err(std::io::Error::other)?;
        let signature = (self.sign)(&record_message(&self.manifest_signature, self.written, &frame));
        let mut rec = Vec::with_capacity(frame.len() + signature.len() + 6);
        push_signed(&mut rec, &frame, true, &signature);
        self.out.write_all(&rec)?;
        self.written += 1;
        Ok(())
    }

    /// Write the end mark; returns the writer and the record count.
    pub fn finish(mut self) -> std::io::Result<(W, u64)> {
        self.out.write_all(&END_MARK.to_be_bytes())?;
        self.out.write_all(&self.written.to_be_bytes())?;
        self.out.flush()?;
        Ok((self.out, self.written))
    }
}

/// Incremental parser: feed bytes as they arrive (`push`), take items (`next_item`). Memory
/// is bounded by one record (at most the frame limit).
#[derive(Default)]
pub struct BundleParser {
    buf: Vec<u8>,
    /// Bytes of the bundle consumed before `buf`.
    offset: u64,
    state: State,
    records: u64,
    said: Option<u64>,
}

#[derive(Default, Clone, Copy, PartialEq, Eq)]
enum State {
    #[default]
    Head,
    Records,
    Done,
}

impl BundleParser {
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Records parsed so far.
    pub fn records(&self) -> u64 {
        self.records
    }

    fn take(&mut self, n: usize) -> Vec<u8> {
        self.offset += n as u64;
        let rest = self.buf.split_off(n);
        std::mem::replace(&mut self.buf, rest)
    }

    /// `u16`-length-prefixed signature starting at `at`, if complete: (signature, end).
    fn signature_at(&self, at: usize) -> Result<Option<(Vec<u8>, usize)>, String> {
        let Some(len) = self.buf.get(at..at + 2) else { return Ok(None) };
        let len = u16::from_be_bytes([len[0], len[1]]) as usize;
        if len == 0 || len > MAX_SIGNATURE_BYTES {
            return Err(format!("signature of {len} bytes (1 to {MAX_SIGNATURE_BYTES} expected)"));
        }
        Ok(self.buf.get(at + 2..at + 2 + len).map(|s| (s.to_vec(), at + 2 + len)))
    }

    /// The next complete item; `Ok(None)` when more bytes are needed.
    pub fn next_item(&mut self) -> Result<Option<Item>, BundleError> {
        match self.state {
            State::Done => {
                if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(BundleError::Trailing(self.offset))
                }
            }
            State::Head => {
                if self.buf.len() < 12 {
                    if !MAGIC.starts_with(&self.buf[..self.buf.len().min(8)]) {
                        return Err(BundleError::NotABundle);
                    }
                    return Ok(None);
                }
                if &self.buf[..8] != MAGIC {
                    return Err(BundleError::NotABundle);
                }
                let len = u32::from_be_bytes(self.buf[8..12].try_into().unwrap()) as usize;
                if len > MAX_MANIFEST_BYTES {
                    return Err(BundleError::ManifestTooLarge(len));
                }
                if self.buf.len() < 12 + len {
                    return Ok(None);
                }
                let sig = self.signature_at(12 + len).map_err(BundleError::Manifest)?;
                let Some((signature, end)) = sig else { return Ok(None) };
                let raw = self.buf[12..12 + len].to_vec();
                let manifest: Manifest =
                    serde_json::from_slice(&raw).map_err(|e| BundleError::Manifest(e.to_string()))?;
                if manifest.format != BUNDLE_FORMAT {
                    return Err(BundleError::Format(manifest.format));
                }
                self.said = Some(manifest.batches);
                self.take(end);
                self.state = State::Records;
                Ok(Some(Item::Manifest { manifest, raw, signature }))
            }
            State::Records => {
                let Some(len) = self.buf.get(..4) else { return Ok(None) };
                let len = u32::from_be_bytes(len.try_into().unwrap());
                let err = |s: &Self, detail: String| BundleError::Record { index: s.records, offset: s.offset, detail };
                if len == END_MARK {
                    let Some(count) = self.buf.get(4..12) else { return Ok(None) };
                    let said = u64::from_be_bytes(count.try_into().unwrap());
                    if said != self.records {
                        return Err(BundleError::CountMismatch { found: self.records, said });
                    }
                    if self.said != Some(said) {
                        return Err(BundleError::ManifestCount { found: said, said: self.said.unwrap_or(0) });
                    }
                    self.take(12);
                    self.state = State::Done;
                    return self.next_item().map(|_| Some(Item::End { records: said }));
                }
                let len = len as usize;
                if len == 0 || len > MAX_FRAME_BYTES {
                    return Err(err(self, format!("frame of {len} bytes (1 to {MAX_FRAME_BYTES} expected)")));
                }
                if self.buf.len() < 4 + len {
                    return Ok(None);
                }
                let sig = self.signature_at(4 + len).map_err(|d| err(self, d))?;
                let Some((signature, end)) = sig else { return Ok(None) };
                let frame = self.buf[4..4 + len].to_vec();
                let index = self.records;
                self.take(end);
                self.records += 1;
                Ok(Some(Item::Record { index, frame, signature }))
            }
        }
    }

    /// Call when the input has ended: an error if the bundle stopped before its end mark.
    pub fn finish(&self) -> Result<(), BundleError> {
        match self.state {
            State::Done => Ok(()),
            State::Head if self.buf.len() < 8 && MAGIC.starts_with(&self.buf) && self.offset == 0 => {
                Err(BundleError::Truncated { offset: self.buf.len() as u64, records: 0 })
            }
            _ => Err(BundleError::Truncated { offset: self.offset + self.buf.len() as u64, records: self.records }),
        }
    }
}

/// Decode a record's frame into a batch (after its signature verified).
pub fn decode_record(index: u64, frame: &[u8]) -> Result<Batch, String> {
    wire::decode_frame::<Batch>(frame).map_err(|e| format!("record {index}: the batch does not decode: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn manifest(n: u64) -> Manifest {
        Manifest {
            format: BUNDLE_FORMAT,
            sensor_id: "s1".into(),
            site: "north".into(),
            epoch: "01J0000000000000000000000".into(),
            created_at_ms: 1,
            batches: n,
            first_seq: 1,
            last_seq: n,
            certificate_pem: "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n".into(),
        }
    }

    fn batch(seq: u64) -> Batch {
        Batch { id: ulid::Ulid::from_parts(seq, 7), sensor_id: "s1".into(), site: "north".into(), seq, events: vec![] }
    }

    /// A toy "signature": the message length and first bytes (the tests here check framing).
    fn sign(m: &[u8]) -> Vec<u8> {
        let mut s = (m.len() as u32).to_be_bytes().to_vec();
        s.extend_from_slice(&m[..m.len().min(8)]);
        s
    }

    fn bundle(n: u64) -> Vec<u8> {
        let mut w = BundleWriter::start(Vec::new(), &manifest(n), sign).unwrap();
        for seq in 1..=n {
            w.record(&batch(seq)).unwrap();
        }
        w.finish().unwrap().0
    }

    fn parse_all(bytes: &[u8], chunk: usize) -> Result<Vec<Item>, BundleError> {
        let mut p = BundleParser::default();
        let mut items = Vec::new();
        for c in bytes.chunks(chunk.max(1)) {
            p.push(c);
            while let Some(item) = p.next_item()? {
                items.push(item);
            }
        }
        p.finish()?;
        Ok(items)
    }

    #[test]
    fn round_trip_in_any_chunking_and_signatures_bind_position() {
        let bytes = bundle(5);
        for chunk in [1, 3, 64, bytes.len()] {
            let items = parse_all(&bytes, chunk).unwrap();
            assert_eq!(items.len(), 7);
            let Item::Manifest { manifest: m, raw, signature } = &items[0] else { panic!() };
            assert_eq!(m, &manifest(5));
            assert_eq!(signature, &sign(&manifest_message(raw)));
            for (i, item) in items[1..6].iter().enumerate() {
                let Item::Record { index, frame, signature: s } = item else { panic!() };
                assert_eq!(*index, i as u64);
                assert_eq!(s, &sign(&record_message(signature, i as u64, frame)));
                assert_eq!(decode_record(*index, frame).unwrap(), batch(i as u64 + 1));
            }
            assert_eq!(items[6], Item::End { records: 5 });
        }
        assert_ne!(record_message(b"sig", 0, b"f"), record_message(b"sig", 1, b"f"));
    }

    #[test]
    fn truncation_is_reported_with_the_complete_records() {
        let bytes = bundle(3);
        let items = parse_all(&bytes[..bytes.len() - 5], 7);
        assert!(matches!(items, Err(BundleError::Truncated { records: 3, .. })), "{items:?}");
        let cut = parse_all(&bytes[..bytes.len() - 40], 7);
        assert!(matches!(cut, Err(BundleError::Truncated { records: 2, .. })), "{cut:?}");
        assert!(matches!(parse_all(b"WLBUN", 2), Err(BundleError::Truncated { records: 0, .. })));
        assert_eq!(parse_all(b"PK\x03\x04 zip file", 4), Err(BundleError::NotABundle));
        let mut extra = bytes.clone();
        extra.push(0);
        assert!(matches!(parse_all(&extra, 9), Err(BundleError::Trailing(_))));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        /// Arbitrary bytes, or a valid bundle with bytes flipped, never panic the parser.
        #[test]
        fn parser_never_panics(data in proptest::collection::vec(any::<u8>(), 0..2048), chunk in 1usize..64) {
            let _ = parse_all(&data, chunk);
        }

        #[test]
        fn corrupted_bundles_never_panic_and_never_invent_records(
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6), chunk in 1usize..128
        ) {
            let mut bytes = bundle(4);
            for (at, x) in flips {
                let at = at % bytes.len();
                bytes[at] ^= x.max(1);
            }
            if let Ok(items) = parse_all(&bytes, chunk) {
                prop_assert!(items.len() <= 6);
            }
        }
    }
}
