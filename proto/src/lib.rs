//! CRI v1 (`runtime.v1`) protocol definitions shared by the runtime's gRPC server, the agent's
//! remote-runtime client and the benchmark harness.
//!
//! The generated services arrive with the CRI runtime; until then this crate only names the API
//! version it will speak, so that every caller agrees on it from the start.

/// The CRI API version Capstan serves and expects from remote runtimes.
pub const CRI_API_VERSION: &str = "v1";
