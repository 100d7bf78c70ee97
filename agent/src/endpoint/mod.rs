//! The kubelet's HTTP endpoints: the read-only API (`/pods`, `/healthz`, logs), the secure
//! kubelet endpoint (exec, attach, port-forward and logs for the API server), the Summary API
//! metrics-server reads, and `/metrics`.

pub mod kubelet;
pub mod logs;
pub mod metrics;
pub mod read_only;
pub mod summary;
