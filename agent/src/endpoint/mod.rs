//! The kubelet's HTTP endpoints: the read-only API (`/pods`, `/healthz`, logs), the secure
//! kubelet endpoint (exec, attach, port-forward and logs for the API server), the Summary API
//! and resource metrics metrics-server reads, `/metrics`, and `/configz` and `/logs/` for
//! debugging.

pub mod kubelet;
pub mod logs;
pub mod metrics;
pub mod read_only;
pub mod resource_metrics;
pub mod summary;
pub mod var_log;
