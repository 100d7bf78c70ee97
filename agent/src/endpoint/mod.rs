//! The kubelet's HTTP endpoints: the read-only API (`/pods`, `/healthz`, logs), the Summary
//! API metrics-server reads, and `/metrics`.

pub mod metrics;
pub mod read_only;
pub mod summary;
