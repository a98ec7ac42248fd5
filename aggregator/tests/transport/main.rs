//! Fleet PKI and the QUIC ingest with mutual TLS.
//!
//! One test binary per area keeps link time and disk use down; each module below
//! was its own binary before.

mod compression;
mod limits;
mod pki;
mod quic;
mod reload;
mod revocation;
