//! Alerts' HTTP routes (decision 0024). The alerts themselves live in the replicated state
//! (`crate::state::alerts`, detectors in `crate::state::anomaly`); SIEM forwarding is
//! `crate::siem`. The leader's sensor-silence tick is `sensor_watch`.

pub mod api;
pub mod sensor_watch;
